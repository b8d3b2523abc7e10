//! [`Registry::assign_many`](crate::Registry::assign_many) in PostgreSQL: one transaction per
//! call, set-based.
//!
//! The transaction locks the call's tenants (their advisory-lock buckets in shared mode, in
//! key order: a pin write or single `assign` of one of them, which takes its bucket
//! exclusively, waits for the import, while imports do not wait for each other), reads their
//! assignments and pins and locks the call's stamps (in id order, as every write does), all in
//! one round trip. The assignments are read `FOR SHARE`, in tenant order: a `compare_and_set`
//! or `unassign` of one of them (which locks its row, not its bucket) has either committed
//! before the read, which then returns the row as it left it, or waits for the import. So a
//! row reported [`Imported::Unchanged`] is the tenant's assignment at the report's head, and a
//! tenant unassigned meanwhile is imported, not reported as assigned. Row locks before stamp
//! locks is the order every write takes them in.
//!
//! Two imports of one tenant meet on the primary key: the later one waits for the first to
//! commit, fails on the unique index and is retried whole, and then finds the tenant
//! assigned. The rows are then admitted in Rust with the same rules as `assign`
//! ([`constraints::check`], [`admission::check`]) against the stamps' usage as the earlier rows
//! left it. The admitted rows are written by one statement (assignments, pins, usage, one
//! history entry and one change each, the versions taken together from the feed counter),
//! pipelined with the counter's increment and the `COMMIT`.

use std::collections::HashMap;

use deadpool_postgres::Object;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::codec::{self, amounts_json, version_of, AssignmentParams};
use super::connection::mark_commit_sent;
use super::directives::{tenant_lock_key, PIN_COLS};
use super::fault::{corrupt, Fault};
use super::schema::quoted;
use super::sql::{ASSIGNMENT_COLS, GUARD, HISTORY_COLS};
use super::PgRegistry;
use crate::error::Error;
use crate::model::{admission, constraints, directive};
use crate::model::{Assignment, AssignmentMode, Epoch, StampId, StampLoad, TenantId, Tier, Version};
use crate::registry::import;
use crate::registry::{ImportReport, ImportRow, Imported};
use crate::time::Timestamp;

/// The statements of a bulk import.
#[derive(Debug)]
pub(crate) struct ImportSql {
    /// Locks the buckets of the tenants in `$1`, shared, in key order.
    lock: String,
    /// The assignments of the tenants in `$1`, locked `FOR SHARE` in tenant order.
    existing: String,
    /// The pins of the tenants in `$1`.
    pins: String,
    /// The feed's head.
    head: String,
    /// Writes the admitted rows (see [`PgRegistry::assign_many_once`] for the parameters).
    write: String,
}

impl ImportSql {
    pub(crate) fn new(schema: &str, notify_col: &str) -> ImportSql {
        let s = quoted(schema);
        let key = tenant_lock_key(schema, "u.t");
        ImportSql {
            lock: format!(
                "SELECT count(pg_advisory_xact_lock_shared(k)) FROM
                 (SELECT DISTINCT {key} AS k FROM unnest($1::text[]) AS u(t) ORDER BY k) d"
            ),
            existing: format!(
                "SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE tenant = ANY($1::text[])
                 ORDER BY tenant FOR SHARE"
            ),
            pins: format!("SELECT {PIN_COLS} FROM {s}.pins WHERE tenant = ANY($1::text[])"),
            head: format!("SELECT head FROM {s}.feed WHERE id = 1"),
            // $1 at, $2 rows, $3..$12 one array per column, $13 usage ({stamp id: usage}),
            // $14 the actor of pins the rows bring. The k-th row (1-based) takes version
            // head - rows + k: the increment pipelined before this statement took them all.
            write: format!(
                "WITH src AS (
                    SELECT * FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                                         $8::bigint[], $9::jsonb[], $10::jsonb[], $11::bool[], $12::bigint[])
                        WITH ORDINALITY AS r(tenant, stamp_id, region, residency, tier, pin, demand, labels,
                                             ephemeral, new_pin, ord)
                ), ins AS (
                    INSERT INTO {s}.assignments ({ASSIGNMENT_COLS})
                    SELECT src.tenant, src.stamp_id, f.head - $2 + src.ord, 'serving', NULL, NULL, src.region,
                           src.residency, src.tier, src.pin, src.demand, src.labels, $1, $1, src.ephemeral
                    FROM src, {s}.feed f WHERE f.id = 1
                    ORDER BY src.ord
                    RETURNING *
                ), pin_ins AS (
                    INSERT INTO {s}.pins (tenant, stamp_id, actor, reason, at, version)
                    SELECT src.tenant, src.new_pin, $14::text, 'pinned by its assignment', $1, f.head - $2 + src.ord
                    FROM src, {s}.feed f WHERE f.id = 1 AND src.new_pin IS NOT NULL
                    RETURNING tenant
                ), usage_upd AS (
                    UPDATE {s}.stamps st SET usage_milli = u.value
                    FROM jsonb_each($13::jsonb) u WHERE st.id = u.key::bigint
                    RETURNING st.id
                ), hist AS (
                    INSERT INTO {s}.assignment_history ({HISTORY_COLS})
                    SELECT ins.epoch, ins.tenant, $1, 'assigned', NULL, ins.stamp_id, ins.epoch, ins.mode,
                           ins.shadow_id, ins.frozen_until, NULL, NULL, NULL, NULL
                    FROM ins
                    RETURNING version
                ), chg AS (
                    INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                    SELECT ins.epoch, $1, 'assignment', ins.tenant, NULL, row_to_json(ins) FROM ins
                    RETURNING version
                )
                SELECT (SELECT count(*) FROM chg) AS changes, (SELECT max(version) FROM chg) AS version,
                       (SELECT count(*) FROM hist) AS history_rows, (SELECT count(*) FROM pin_ins) AS pins,
                       (SELECT count(*) FROM usage_upd) AS stamps_updated, g.written{notify_col}
                FROM {GUARD}"
            ),
        }
    }
}

/// The call's stamps, locked, with their usage as the admitted rows leave it.
struct Stamps {
    loads: Vec<StampLoad>,
    index: HashMap<StampId, usize>,
    touched: Vec<bool>,
    /// A tenant on each dedicated stamp that has one (from the database or this call).
    holders: Vec<(StampId, TenantId)>,
}

impl Stamps {
    fn load(&self, s: StampId) -> Option<&StampLoad> {
        self.index.get(&s).map(|&i| &self.loads[i])
    }

    /// Admits `row` as `assign` would on these stamps; on success counts it in their usage.
    /// Returns the assignment (epoch still 0) and the pin it brings, if not recorded yet.
    fn admit(
        &mut self,
        row: &ImportRow,
        recorded: Option<StampId>,
        now: Timestamp,
    ) -> Result<(Assignment, Option<StampId>), Error> {
        let spec = directive::spec_with_pin(&row.tenant, recorded)?;
        let new_pin = spec.pin.filter(|_| recorded.is_none());
        let new = Assignment::new(spec, row.stamp, Epoch(0), AssignmentMode::Serving, now, now);
        let holder = |s: StampId| self.holders.iter().find(|(x, _)| *x == s).map(|(_, t)| t.clone());
        constraints::check(None, &new, |s| self.load(s), holder, None)?;
        admission::check(None, Some(&new), |s| self.load(s))?;
        // Compute every stamp's next usage before changing any.
        let mut next: Vec<(usize, crate::model::Amounts)> = Vec::new();
        let mut overflow = None;
        admission::apply(None, Some(&new), |s, demand, plus| {
            if let Some(&i) = self.index.get(&s) {
                match self.loads[i].usage.with_demand(demand, plus) {
                    Ok(u) => next.push((i, u)),
                    Err(resource) => overflow = Some(Error::CapacityExceeded { stamp: s, resource }),
                }
            }
        });
        if let Some(e) = overflow {
            return Err(e);
        }
        for (i, u) in next {
            self.loads[i].usage = u;
            self.touched[i] = true;
        }
        if self
            .load(row.stamp)
            .is_some_and(|l| l.stamp.spec.tier == Tier::Dedicated)
        {
            self.holders.push((row.stamp, row.tenant.id.clone()));
        }
        Ok((new, new_pin))
    }

    /// `{stamp id: usage}` of the stamps the admitted rows changed.
    fn usage_json(&self) -> Value {
        Value::Object(
            self.loads
                .iter()
                .zip(&self.touched)
                .filter(|(_, t)| **t)
                .map(|(l, _)| (l.id().0.to_string(), amounts_json(l.usage.iter())))
                .collect(),
        )
    }
}

impl PgRegistry {
    /// One attempt at a bulk import (run by `on_conn!`, which retries it whole).
    pub(super) async fn assign_many_once(&self, c: &mut Object, rows: &[ImportRow]) -> Result<ImportReport, Fault> {
        self.import_once(c, rows, None)
            .await?
            .ok_or_else(|| Fault::from(Error::unavailable("the import was abandoned before its commit")))
    }

    /// One attempt at an import. With `before_commit`, the write is sent without the `COMMIT`,
    /// then `before_commit` decides: `true` commits, `false` rolls back and answers `None`
    /// (group commit: a member gave up).
    pub(super) async fn import_once(
        &self,
        c: &mut Object,
        rows: &[ImportRow],
        before_commit: Option<BeforeCommit<'_>>,
    ) -> Result<Option<ImportReport>, Fault> {
        let now = self.now();
        let sql = &self.inner.sql;
        let screened = import::screen(rows);
        let tenants: Vec<&str> = rows
            .iter()
            .zip(&screened)
            .filter(|(_, refused)| refused.is_none())
            .map(|(r, _)| r.tenant.id.as_str())
            .collect();
        let ids = super::writes::stamp_ids(rows.iter().map(|r| r.stamp));
        let lock = c.prepare_cached(&sql.import.lock).await?;
        let existing = c.prepare_cached(&sql.import.existing).await?;
        let pins = c.prepare_cached(&sql.import.pins).await?;
        let head = c.prepare_cached(&sql.import.head).await?;
        let stamps = c.prepare_cached(&sql.stamps_lock).await?;
        let (by_tenants, by_ids): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([&tenants], [&ids]);
        // The tenants' locks first (as `assign` and pin writes take them), then what they guard.
        let ((), _, existing, pins, stamps, head) = futures_util::try_join!(
            c.batch_execute("BEGIN"),
            c.query_one(&lock, &by_tenants),
            c.query(&existing, &by_tenants),
            c.query(&pins, &by_tenants),
            c.query(&stamps, &by_ids),
            c.query_one(&head, &[]),
        )?;
        let seen_head = version_of(head.try_get(0)?)?;
        let existing: HashMap<TenantId, Assignment> = existing
            .iter()
            .map(|r| codec::assignment(r).map(|a| (a.tenant().clone(), a)))
            .collect::<Result<_, _>>()?;
        let pins: HashMap<TenantId, Option<StampId>> = pins
            .iter()
            .map(|r| codec::pin(r).map(|p| (p.tenant, p.stamp)))
            .collect::<Result<_, _>>()?;
        let loads = stamps.iter().map(codec::stamp_load).collect::<Result<Vec<_>, _>>()?;
        let mut stamps = Stamps {
            index: loads.iter().enumerate().map(|(i, l)| (l.id(), i)).collect(),
            touched: vec![false; loads.len()],
            holders: Vec::new(),
            loads,
        };
        self.read_holders(c, &mut stamps).await?;

        let mut outcomes = Vec::with_capacity(rows.len());
        let mut new_pins: Vec<Option<i64>> = Vec::new();
        for (row, refused) in rows.iter().zip(screened) {
            let outcome = if let Some(e) = refused {
                Imported::Refused(e)
            } else if let Some(current) = existing.get(&row.tenant.id) {
                import::existing(current, row)
            } else {
                let recorded = pins.get(&row.tenant.id).copied().flatten();
                match stamps.admit(row, recorded, now) {
                    Ok((a, pin)) => {
                        new_pins.push(pin.map(|p| i64::from(p.0)));
                        Imported::Assigned(a)
                    }
                    Err(e) => Imported::Refused(e),
                }
            };
            outcomes.push(outcome);
        }
        if new_pins.is_empty() {
            c.batch_execute("ROLLBACK").await?;
            return Ok(Some(ImportReport::new(outcomes, seen_head)));
        }
        let Some(head) = self
            .write_admitted(c, &outcomes, &new_pins, &stamps, now, before_commit)
            .await?
        else {
            return Ok(None);
        };
        // The k-th admitted row took version head - n + 1 + k.
        let mut version = head.0 + 1 - new_pins.len() as u64;
        for o in &mut outcomes {
            if let Imported::Assigned(a) = o {
                a.epoch = Epoch(version);
                version += 1;
            }
        }
        Ok(Some(ImportReport::new(outcomes, head)))
    }

    /// Reads a tenant of each dedicated stamp that holds one: under the stamps' locks, the set
    /// of tenants on them cannot change until this transaction ends.
    async fn read_holders(&self, c: &Object, stamps: &mut Stamps) -> Result<(), Fault> {
        let dedicated: Vec<StampId> = stamps
            .loads
            .iter()
            .filter(|l| l.stamp.spec.tier == Tier::Dedicated && l.tenants() > 0)
            .map(StampLoad::id)
            .collect();
        if dedicated.is_empty() {
            return Ok(());
        }
        let stmt = c.prepare_cached(&self.inner.sql.stamp_holder).await?;
        for s in dedicated {
            if let Some(row) = c.query_opt(&stmt, &[&i64::from(s.0), &""]).await? {
                let t: &str = row.try_get(0)?;
                let t = TenantId::new(t).map_err(|_| corrupt("assignments.tenant"))?;
                stamps.holders.push((s, t));
            }
        }
        Ok(())
    }

    /// Writes the admitted rows (the `Assigned` outcomes, in order) and commits; returns the
    /// new head, the version of the last row (`None` when `before_commit` said no).
    async fn write_admitted(
        &self,
        c: &Object,
        outcomes: &[Imported],
        new_pins: &[Option<i64>],
        stamps: &Stamps,
        now: Timestamp,
        before_commit: Option<BeforeCommit<'_>>,
    ) -> Result<Option<Version>, Fault> {
        let n = new_pins.len();
        let mut cols = Columns::with_capacity(n);
        for o in outcomes {
            if let Imported::Assigned(a) = o {
                cols.push(AssignmentParams::new(a, now)?);
            }
        }
        let at = codec::millis(now)?;
        let count = i64::try_from(n).map_err(|_| corrupt("import size"))?;
        let usage = stamps.usage_json();
        let pin_actor = directive::pin_by_assignment(None).actor;
        let params: [&(dyn ToSql + Sync); 14] = [
            &at,
            &count,
            &cols.tenant,
            &cols.stamp,
            &cols.region,
            &cols.residency,
            &cols.tier,
            &cols.pin,
            &cols.demand,
            &cols.labels,
            &cols.ephemeral,
            &new_pins,
            &usage,
            &pin_actor,
        ];
        let sql = &self.inner.sql;
        let Some(check) = before_commit else {
            let (head, written) = self
                .bump_by_write_commit(c, Some(count), &sql.import.write, &params)
                .await?;
            self.inner.signal.notify(head);
            check_written(&written, count, head)?;
            return Ok(Some(head));
        };
        // Group commit: the write goes out first (it may wait for the feed counter), then the
        // last look at the members decides whether the `COMMIT` follows. A member that gives up
        // while the write waits is left out; one that gives up later is where a call is that
        // gave up after sending its own `COMMIT`.
        let bump = c.prepare_cached(&sql.bump_many).await?;
        let write = c.prepare_cached(&sql.import.write).await?;
        let bump_params: [&(dyn ToSql + Sync); 2] = [&at, &count];
        let (head, written) = futures_util::try_join!(c.query_one(&bump, &bump_params), c.query(&write, &params))?;
        let head = version_of(head.try_get(0)?)?;
        check_written(&written, count, head)?;
        let written: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Imported::Assigned(_)))
            .map(|(i, _)| i)
            .collect();
        Ok(self.commit_if(c, head, &written, check).await?.then_some(head))
    }

    /// Commits a group's transaction, whose writes (of the members `written`) are done and
    /// leave the feed at `head`, if `before_commit` says so; otherwise rolls it back. Whether
    /// it committed.
    pub(super) async fn commit_if(
        &self,
        c: &Object,
        head: Version,
        written: &[usize],
        before_commit: BeforeCommit<'_>,
    ) -> Result<bool, Fault> {
        if !before_commit(written) {
            c.batch_execute("ROLLBACK").await?;
            return Ok(false);
        }
        mark_commit_sent();
        c.batch_execute("COMMIT").await?;
        self.saw(head);
        self.inner.signal.notify(head);
        Ok(true)
    }
}

/// Decides, once the write is done and before the `COMMIT` is sent, whether to commit; it is
/// told which rows (by index in the call) the transaction wrote.
pub(super) type BeforeCommit<'a> = &'a (dyn Fn(&[usize]) -> bool + Send + Sync);

/// Checks that an import's (or a group of changes') statement wrote one change and one
/// history row per row, the last change at `head`.
pub(super) fn check_written(written: &[Row], count: i64, head: Version) -> Result<(), Fault> {
    let row = written
        .first()
        .ok_or_else(|| corrupt("changes (a group write returned no row)"))?;
    let changes: i64 = row.try_get("changes")?;
    let history: i64 = row.try_get("history_rows")?;
    let last = version_of(row.try_get("version")?)?;
    if changes != count || history != count || last != head {
        return Err(corrupt("changes.version"));
    }
    Ok(())
}

/// Assignments as one array per column (a bulk import; a group of changes adds its own).
pub(super) struct Columns<'a> {
    pub(super) tenant: Vec<&'a str>,
    pub(super) stamp: Vec<i64>,
    pub(super) region: Vec<Option<&'a str>>,
    pub(super) residency: Vec<Option<&'a str>>,
    pub(super) tier: Vec<&'a str>,
    pub(super) pin: Vec<Option<i64>>,
    pub(super) demand: Vec<Value>,
    pub(super) labels: Vec<Value>,
    pub(super) ephemeral: Vec<bool>,
}

impl<'a> Columns<'a> {
    pub(super) fn with_capacity(n: usize) -> Self {
        Columns {
            tenant: Vec::with_capacity(n),
            stamp: Vec::with_capacity(n),
            region: Vec::with_capacity(n),
            residency: Vec::with_capacity(n),
            tier: Vec::with_capacity(n),
            pin: Vec::with_capacity(n),
            demand: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            ephemeral: Vec::with_capacity(n),
        }
    }

    pub(super) fn push(&mut self, p: AssignmentParams<'a>) {
        self.tenant.push(p.tenant);
        self.stamp.push(p.stamp);
        self.region.push(p.region);
        self.residency.push(p.residency);
        self.tier.push(p.tier);
        self.pin.push(p.pin);
        self.demand.push(p.demand);
        self.labels.push(p.labels);
        self.ephemeral.push(p.ephemeral);
    }
}
