//! [`PgTableMover`]'s [`MigrationDriver`] implementation: snapshot, fences, server-side
//! validation, cleanup and rollback (the copies are in `copy`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio_postgres::Transaction;

use super::catalog::TableInfo;
use super::copy;
use super::ops::{
    bounded, connect, delete_tenant, forget, pg_err, snapshot_of, snapshot_tx, update_fence, Cols, FenceUpdate,
};
use super::PgTableMover;
use crate::migration::driver::{
    DriverError, MigrationContext, MigrationDriver, SideSummary, SnapshotInfo, TableCheck, ValidationReport,
};
use crate::model::{Epoch, MigrationState, StampId};

/// How many differing keys a failed validation names per table.
const SAMPLE: usize = 5;

impl PgTableMover {
    /// Runs one driver call under the mover's overall bound.
    async fn call<T>(
        &self,
        what: &str,
        ctx: &MigrationContext,
        fut: impl Future<Output = Result<T, DriverError>>,
    ) -> Result<T, DriverError> {
        let limit = self.settings().call_timeout;
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::retryable(format!(
                "{what} of {} did not finish within {limit:?}",
                ctx.id
            ))),
        }
    }

    /// Row count and sum of row hashes (an order-independent hash) of the tenant's rows of
    /// `t` in `tx`'s snapshot; with `only`, of the rows whose keys it lists.
    async fn sums(
        &self,
        tx: &Transaction<'_>,
        t: &TableInfo,
        tenant: &str,
        only: Option<&serde_json::Value>,
    ) -> Result<(i64, i128), DriverError> {
        let filter = match only {
            Some(_) => format!(
                " AND EXISTS (SELECT 1 FROM jsonb_array_elements($1::jsonb) e \
                   WHERE {})",
                t.key_is("x.", "ARRAY(SELECT jsonb_array_elements_text(e))")
            ),
            None => String::new(),
        };
        let sql = format!(
            "SELECT count(*), coalesce(sum({h}::numeric), 0)::text FROM {tbl} x WHERE {of}{filter}",
            h = t.row_hash("x."),
            tbl = t.table(),
            of = t.of_tenant("x.", tenant),
        );
        let what = format!("summing {}", t.decl.table());
        let row = match only {
            Some(keys) => bounded(self, &what, tx.query_one(&sql, &[keys])).await?,
            None => bounded(self, &what, tx.query_one(&sql, &[])).await?,
        };
        let sum: String = row.col(1)?;
        let sum: i128 = sum
            .parse()
            .map_err(|_| DriverError::permanent(format!("the row hash sum {sum:?} is not an integer")))?;
        Ok((row.col(0)?, sum))
    }

    /// The keys (per table) `stamp`'s change log recorded for the tenant in transactions not
    /// visible in `snapshot`: rows written while a comparison ran.
    async fn written_since(
        &self,
        stamp: StampId,
        tenant: &str,
        snapshot: &str,
    ) -> Result<BTreeMap<String, BTreeSet<Vec<String>>>, DriverError> {
        let client = connect(self, stamp).await?;
        let rows = bounded(
            self,
            "reading the keys written during validation",
            client.query(
                "SELECT DISTINCT table_name, key FROM stamps_mover.changes \
                 WHERE tenant = $1 AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)",
                &[&tenant, &snapshot],
            ),
        )
        .await?;
        let mut out: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        for r in rows {
            out.entry(r.col(0)?).or_default().insert(r.col(1)?);
        }
        Ok(out)
    }

    /// The first keys (in byte order of their text) whose rows differ between the two sides.
    async fn differing_keys(&self, ctx: &MigrationContext, t: &TableInfo) -> Result<Vec<String>, DriverError> {
        let tenant = ctx.tenant.as_str();
        let sql = format!(
            "SELECT {kt}, {h} FROM {tbl} x WHERE {of} ORDER BY {ord}",
            kt = t.key_text("x."),
            h = t.row_hash("x."),
            tbl = t.table(),
            of = t.of_tenant("x.", tenant),
            ord = t
                .decl
                .key()
                .iter()
                .map(|k| format!("x.\"{k}\"::text COLLATE \"C\""))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let (a, b) = (connect(self, ctx.source).await?, connect(self, ctx.destination).await?);
        let walk = async {
            let none: [&str; 0] = [];
            let sa = a.query_raw(&sql, none).await?;
            let sb = b.query_raw(&sql, none).await?;
            let (mut sa, mut sb) = (pin!(sa), pin!(sb));
            let read = |r: tokio_postgres::Row| -> Result<(Vec<String>, i64), tokio_postgres::Error> {
                Ok((r.try_get(0)?, r.try_get(1)?))
            };
            let mut x = match sa.next().await {
                Some(r) => Some(read(r?)?),
                None => None,
            };
            let mut y = match sb.next().await {
                Some(r) => Some(read(r?)?),
                None => None,
            };
            let mut out = Vec::new();
            while out.len() < SAMPLE {
                let (adv_a, adv_b) = match (&x, &y) {
                    (None, None) => break,
                    (Some((k, _)), None) => {
                        out.push(k.join(","));
                        (true, false)
                    }
                    (None, Some((k, _))) => {
                        out.push(k.join(","));
                        (false, true)
                    }
                    (Some((ka, ha)), Some((kb, hb))) => match ka.cmp(kb) {
                        std::cmp::Ordering::Equal => {
                            if ha != hb {
                                out.push(ka.join(","));
                            }
                            (true, true)
                        }
                        std::cmp::Ordering::Less => {
                            out.push(ka.join(","));
                            (true, false)
                        }
                        std::cmp::Ordering::Greater => {
                            out.push(kb.join(","));
                            (false, true)
                        }
                    },
                };
                if adv_a {
                    x = match sa.next().await {
                        Some(r) => Some(read(r?)?),
                        None => None,
                    };
                }
                if adv_b {
                    y = match sb.next().await {
                        Some(r) => Some(read(r?)?),
                        None => None,
                    };
                }
            }
            Ok(out)
        };
        bounded(self, &format!("finding differing rows of {}", t.decl.table()), walk).await
    }

    /// One comparison: both sides in a `REPEATABLE READ` snapshot each, taken together.
    /// Rows written while it ran (a dual-write between its two commits, say) are left out of
    /// both sides: they are in one side's change log after its snapshot. Under the freeze
    /// nothing is written, so every row counts.
    async fn validate_once(&self, ctx: &MigrationContext, sample: bool) -> Result<ValidationReport, DriverError> {
        let (src, dst) = (ctx.source, ctx.destination);
        let tables = self.catalog(dst).await?;
        let tenant = ctx.tenant.as_str();
        let (mut sc, mut dc) = (connect(self, src).await?, connect(self, dst).await?);
        let fail = |e| pg_err("starting the validation snapshots", e);
        let (stx, dtx) = futures_util::future::join(snapshot_tx(&mut sc), snapshot_tx(&mut dc)).await;
        let (stx, dtx) = (stx.map_err(fail)?, dtx.map_err(fail)?);
        let (s_snap, d_snap) = futures_util::future::join(snapshot_of(&stx), snapshot_of(&dtx)).await;
        let (s_snap, d_snap) = (s_snap.map_err(fail)?, d_snap.map_err(fail)?);
        let mut totals = Vec::with_capacity(tables.len());
        for t in tables.iter() {
            let (a, b) =
                futures_util::future::join(self.sums(&stx, t, tenant, None), self.sums(&dtx, t, tenant, None)).await;
            totals.push((a?, b?));
        }
        let all_equal = totals.iter().all(|(a, b)| a == b);
        let mut skip: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        if !all_equal {
            // Let dual-writes in flight land, then read what both sides wrote meanwhile.
            tokio::time::sleep(Duration::from_millis(100)).await;
            for (stamp, snapshot) in [(src, &s_snap), (dst, &d_snap)] {
                for (table, keys) in self.written_since(stamp, tenant, snapshot).await? {
                    skip.entry(table).or_default().extend(keys);
                }
            }
        }
        let mut checks = Vec::with_capacity(tables.len());
        for (t, (mut a, mut b)) in tables.iter().zip(totals) {
            let skipped = skip.get(t.decl.table()).filter(|k| !k.is_empty() && a != b);
            if let Some(keys) = skipped {
                let json = serde_json::Value::from(
                    keys.iter()
                        .map(|k| serde_json::Value::from(k.clone()))
                        .collect::<Vec<_>>(),
                );
                let (x, y) = futures_util::future::join(
                    self.sums(&stx, t, tenant, Some(&json)),
                    self.sums(&dtx, t, tenant, Some(&json)),
                )
                .await;
                let (x, y) = (x?, y?);
                a = (a.0 - x.0, a.1 - x.1);
                b = (b.0 - y.0, b.1 - y.1);
            }
            let side = |(n, sum): (i64, i128)| SideSummary::new(u64::try_from(n).unwrap_or(0), sum as u64);
            let mut check = TableCheck::new(t.decl.table(), side(a), side(b));
            if sample && !check.matches() {
                let keys = self.differing_keys(ctx, t).await?;
                let left_out = |k: &String| skipped.is_some_and(|s| s.iter().any(|x| &x.join(",") == k));
                check = check.mismatches(keys.into_iter().filter(|k| !left_out(k)));
            }
            checks.push(check);
        }
        let fail = |e| pg_err("ending the validation snapshots", e);
        stx.commit().await.map_err(fail)?;
        dtx.commit().await.map_err(fail)?;
        Ok(ValidationReport::new(checks))
    }
}

#[async_trait]
impl MigrationDriver for PgTableMover {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        self.call("snapshot", ctx, async {
            let src = ctx.source;
            let tables = self.catalog(src).await?;
            // Track first (draining writers in flight): every change not in the snapshot is
            // then in the change log.
            update_fence(self, ctx, src, FenceUpdate::Track).await?;
            let mut client = connect(self, src).await?;
            let fail = |e| pg_err(&format!("taking a snapshot on {src}"), e);
            let tx = snapshot_tx(&mut client).await.map_err(fail)?;
            let id = snapshot_of(&tx).await.map_err(fail)?;
            let mut rows = 0u64;
            for t in tables.iter() {
                let sql = format!(
                    "SELECT count(*) FROM {} x WHERE {}",
                    t.table(),
                    t.of_tenant("x.", ctx.tenant.as_str())
                );
                let n: i64 = bounded(self, "counting rows", tx.query_one(&sql, &[])).await?.col(0)?;
                rows += u64::try_from(n).unwrap_or(0);
            }
            tx.commit().await.map_err(fail)?;
            Ok(SnapshotInfo::new(id, rows))
        })
        .await
    }

    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        self.call("import", ctx, copy::import(self, ctx, snapshot)).await
    }

    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        self.call("catch-up", ctx, copy::catch_up(self, ctx, snapshot))
            .await
            .map(|_| ())
    }

    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> Result<(), DriverError> {
        self.call(
            "fence",
            ctx,
            update_fence(self, ctx, stamp, FenceUpdate::Raise(epoch, holds)),
        )
        .await
    }

    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        self.call("validate", ctx, async {
            let attempts = self.settings().validate_attempts;
            for _ in 1..attempts {
                let report = self.validate_once(ctx, false).await?;
                if report.passed() {
                    return Ok(report);
                }
                // A dual-write between the two commits is not a difference: look again.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.validate_once(ctx, true).await
        })
        .await
    }

    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError> {
        self.call("cleanup", ctx, async {
            delete_tenant(self, ctx, ctx.source, None).await?;
            forget(self, ctx, ctx.source).await?;
            forget(self, ctx, ctx.destination).await
        })
        .await
    }

    async fn rollback(&self, ctx: &MigrationContext, from: MigrationState) -> Result<(), DriverError> {
        let _ = from;
        self.call("rollback", ctx, async {
            // What the destination changed (dual-writes, and the writes it served after a
            // cutover) goes back to the source first, merged by version; then its copy goes.
            copy::copy_changes(self, ctx, ctx.destination, ctx.source, None, false).await?;
            delete_tenant(self, ctx, ctx.destination, Some(ctx.id)).await?;
            forget(self, ctx, ctx.destination).await?;
            forget(self, ctx, ctx.source).await
        })
        .await
    }
}
