//! [`PgTableMover`]'s [`MigrationDriver`] implementation: snapshot, fences, server-side
//! validation, cleanup and rollback (the copies are in `copy`).

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio_postgres::IsolationLevel;

use super::catalog::TableInfo;
use super::copy;
use super::ops::{bounded, connect, delete_tenant, forget, pg_err, update_fence, FenceUpdate};
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

    /// Row count and order-independent hash of the tenant's rows of `t` on `stamp`, in one
    /// statement (one snapshot).
    async fn summary(&self, stamp: StampId, t: &TableInfo, tenant: &str) -> Result<SideSummary, DriverError> {
        let client = connect(self, stamp).await?;
        let sql = format!(
            "SELECT count(*), coalesce(sum({h}::numeric), 0)::text FROM {tbl} x WHERE {of}",
            h = t.row_hash("x."),
            tbl = t.table(),
            of = t.of_tenant("x.", tenant),
        );
        let row = bounded(self, &format!("summing {} on {stamp}", t.decl.table()), client.query_one(&sql, &[])).await?;
        let rows = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let sum: String = row.get(1);
        let sum: i128 = sum
            .parse()
            .map_err(|_| DriverError::permanent(format!("the row hash sum {sum:?} is not an integer")))?;
        // The sum of 64-bit hashes, wrapped to 64 bits: order-independent.
        Ok(SideSummary::new(rows, sum as u64))
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

    async fn validate_once(&self, ctx: &MigrationContext, sample: bool) -> Result<ValidationReport, DriverError> {
        let tables = self.catalog(ctx.destination).await?;
        let tenant = ctx.tenant.as_str();
        let mut checks = Vec::with_capacity(tables.len());
        for t in tables.iter() {
            let (s, d) = futures_util::future::join(
                self.summary(ctx.source, t, tenant),
                self.summary(ctx.destination, t, tenant),
            )
            .await;
            let mut check = TableCheck::new(t.decl.table(), s?, d?);
            if sample && !check.matches() {
                check = check.mismatches(self.differing_keys(ctx, t).await?);
            }
            checks.push(check);
        }
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
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(fail)?;
            let id: String = tx
                .query_one("SELECT pg_current_snapshot()::text", &[])
                .await
                .map_err(fail)?
                .get(0);
            let mut rows = 0u64;
            for t in tables.iter() {
                let sql = format!("SELECT count(*) FROM {} x WHERE {}", t.table(), t.of_tenant("x.", ctx.tenant.as_str()));
                let n: i64 = bounded(self, "counting rows", tx.query_one(&sql, &[])).await?.get(0);
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
        self.call("catch-up", ctx, copy::catch_up(self, ctx, snapshot)).await.map(|_| ())
    }

    async fn fence(&self, ctx: &MigrationContext, stamp: StampId, epoch: Epoch, holds: bool) -> Result<(), DriverError> {
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
