//! The reads a replica may answer: change-feed pages, fleet snapshots, assignments and pages
//! of assignments. Each tries a usable replica first (`on_replica!`) and takes its answer only
//! when the replica's feed head, read in the same snapshot, is at least every version this
//! registry has handed out (so a caller never sees older state than it already had) and the
//! answer is one a replica may give (never "unknown tenant", never a cursor it has not
//! replayed); otherwise the primary answers.

use std::sync::atomic::Ordering;

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use super::codec::{self, change_of, change_version, version_of};
use super::connection::{on_conn, Lease};
use super::fault::{corrupt, Fault};
use super::history::{diverged, position, NextTerm, Position};
use super::replicas::on_replica;
use super::sql::Sql;
use super::PgRegistry;
use crate::error::{Error, Result};
use crate::model::{Assignment, Change, ChangeBatch, Fleet, StampId, StampLoad, TenantId, Version};

use std::time::Duration;

/// A fleet snapshot as read: head, readable stamps, unreadable ones.
type FleetRead = (Version, Vec<StampLoad>, Vec<(StampId, String)>);

/// One read of the change feed.
struct FeedRead {
    head: Version,
    term: u32,
    next: Option<NextTerm>,
    first: Option<Version>,
    changes: Vec<Change>,
    corrupt: Option<Error>,
}

impl FeedRead {
    fn position(&self, after: u64) -> Position {
        position(after, self.head.0, self.next)
    }
}

/// Cursors at or past this are beyond anything stored: they read nothing (every backend alike).
const PAST_ANY: u64 = i64::MAX as u64;

impl PgRegistry {
    /// Records a version handed out to a caller: replica reads must be at least this new.
    pub(super) fn saw(&self, version: Version) {
        self.inner.seen.fetch_max(version.0, Ordering::AcqRel);
    }

    fn floor(&self) -> u64 {
        self.inner.seen.load(Ordering::Acquire)
    }

    pub(super) async fn read_fleet(&self) -> Result<Fleet> {
        let floor = self.floor();
        let from_replica = on_replica!(self, |c| async {
            let read = fleet_on(c, &self.inner.sql).await?;
            Ok((read.0 .0 >= floor).then_some(read))
        });
        let (head, loads, skipped) = match from_replica {
            Some(read) => read,
            None => on_conn!(self, retry_unique = false, |c| fleet_on(c, &self.inner.sql))?,
        };
        self.saw(head);
        Ok(Fleet::new(loads, head, self.now()).with_skipped(skipped))
    }

    pub(super) async fn read_assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        let floor = self.floor();
        let from_replica = on_replica!(self, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignment_at).await?;
            let row = c.query_one(&stmt, &[&tenant.as_str()]).await?;
            if version_of(row.try_get("feed_head")?)?.0 < floor {
                return Ok(None);
            }
            // Not there: maybe not replayed yet. Only the primary may say "unknown".
            match row.try_get::<_, Option<&str>>("tenant")? {
                Some(_) => Ok(Some(codec::assignment(&row)?)),
                None => Ok(None),
            }
        });
        if let Some(a) = from_replica {
            return Ok(Some(a));
        }
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignment_get).await?;
            match c.query_opt(&stmt, &[&tenant.as_str()]).await? {
                Some(row) => Ok(Some(codec::assignment(&row)?)),
                None => Ok(None),
            }
        })
    }

    pub(super) async fn read_assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        let after = after.map_or("", TenantId::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let floor = self.floor();
        let from_replica = on_replica!(self, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignments_page_at).await?;
            let rows = c.query(&stmt, &[&after, &limit]).await?;
            let head = version_of(rows.first().ok_or_else(|| corrupt("feed"))?.try_get("feed_head")?)?;
            if head.0 < floor {
                return Ok(None);
            }
            let mut page = Vec::with_capacity(rows.len());
            for row in &rows {
                if row.try_get::<_, Option<&str>>("tenant")?.is_some() {
                    page.push(codec::assignment(row)?);
                }
            }
            Ok(Some(page))
        });
        if let Some(page) = from_replica {
            return Ok(page);
        }
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignments_page).await?;
            let rows = c.query(&stmt, &[&after, &limit]).await?;
            rows.iter().map(codec::assignment).collect::<Result<Vec<_>, _>>()
        })
    }

    pub(super) async fn read_changes(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        // No version is stored beyond 2^63 - 1, so a cursor past it reads nothing (as in memory).
        let after_param = i64::try_from(after.0).unwrap_or(i64::MAX);
        // At least one row, so a cursor behind the retained range is reported even with
        // `limit == 0` (as in memory); the extra change is dropped below.
        let limit_param = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let floor = self.floor();
        let from_replica = on_replica!(self, |c| async {
            let read = feed_on(c, &self.inner.sql, after_param, limit_param).await?;
            let usable =
                read.head.0 >= floor && (after.0 >= PAST_ANY || matches!(read.position(after.0), Position::Next(_)));
            Ok(usable.then_some(read))
        });
        let read = match from_replica {
            Some(read) => read,
            None => on_conn!(self, retry_unique = false, |c| feed_on(
                c,
                &self.inner.sql,
                after_param,
                limit_param
            ))?,
        };
        self.saw(read.head);
        batch(after, limit, read)
    }
}

/// The batch a feed read answers for `after`, or why it cannot.
fn batch(after: Version, limit: usize, read: FeedRead) -> Result<ChangeBatch> {
    let head = read.head;
    if after.0 >= PAST_ANY {
        return Ok(ChangeBatch::new(Vec::new(), head));
    }
    let next = match read.position(after.0) {
        Position::Next(next) => next,
        Position::Ahead | Position::Lost => return Err(diverged(after.0, head.0, read.term)),
    };
    if head > after {
        let first = read.first.unwrap_or(head);
        if first.0 > next {
            return Err(Error::ChangeFeedTruncated {
                requested: after,
                oldest: first.0,
            });
        }
    }
    let mut changes = read.changes;
    changes.truncate(limit);
    match read.corrupt {
        Some(e) if changes.is_empty() && limit > 0 => Err(e),
        _ => Ok(ChangeBatch::new(changes, head)),
    }
}

async fn fleet_on(c: &Object, sql: &Sql) -> Result<FleetRead, Fault> {
    let stmt = c.prepare_cached(&sql.fleet).await?;
    let rows = c.query(&stmt, &[]).await?;
    let head = version_of(rows.first().ok_or_else(|| corrupt("feed"))?.try_get("head")?)?;
    let mut loads = Vec::with_capacity(rows.len());
    let mut skipped = Vec::new();
    for row in &rows {
        if let Some(id) = row.try_get::<_, Option<i64>>("id")? {
            // A stamp whose row is unreadable is left out and reported, not fatal.
            match codec::stamp_load(row) {
                Ok(load) => loads.push(load),
                Err(Fault::Crate(Error::Corrupt { reason, .. })) => {
                    let id = u32::try_from(id).map(StampId).map_err(|_| corrupt("stamps.id"))?;
                    skipped.push((id, reason));
                }
                Err(other) => return Err(other),
            }
        }
    }
    Ok((head, loads, skipped))
}

async fn feed_on(c: &Object, sql: &Sql, after: i64, limit: i64) -> Result<FeedRead, Fault> {
    let stmt = c.prepare_cached(&sql.changes).await?;
    let rows = c.query(&stmt, &[&after, &limit]).await?;
    let top = rows.first().ok_or_else(|| corrupt("feed"))?;
    let head = version_of(top.try_get("head")?)?;
    let term = u32::try_from(top.try_get::<_, i32>("term")?).map_err(|_| corrupt("feed.term"))?;
    let next = match (
        top.try_get::<_, Option<i64>>("next_base")?,
        top.try_get::<_, Option<i64>>("next_start")?,
    ) {
        (Some(base), Some(start)) => Some(NextTerm {
            base: version_of(base)?.0,
            start: version_of(start)?.0,
        }),
        _ => None,
    };
    let first = change_version(top)?;
    // A corrupt change ends the batch before it; read first, it is the error.
    let mut changes = Vec::with_capacity(rows.len());
    let mut corrupt_change = None;
    for row in &rows {
        match change_of(row) {
            Ok(Some(change)) => changes.push(change),
            Ok(None) => {}
            Err(Fault::Crate(e @ Error::Corrupt { .. })) => {
                corrupt_change = Some(e);
                break;
            }
            Err(other) => return Err(other),
        }
    }
    Ok(FeedRead {
        head,
        term,
        next,
        first,
        changes,
        corrupt: corrupt_change,
    })
}
