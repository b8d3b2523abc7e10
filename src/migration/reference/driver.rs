//! The reference data plane's [`MigrationDriver`] implementation: snapshot, import and
//! catch-up merging by row version, fences, gated validation, cleanup and rollback, each effect
//! checked against the migration's lease generation on its stamp.

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{ReferenceDataPlane, Row, StampStore, TenantRows};
use crate::migration::driver::{
    DriverError, MigrationContext, MigrationDriver, SnapshotInfo, TableCheck, ValidationReport,
};
use crate::model::{Epoch, MigrationState, StampId};

/// The driver operations, for fault injection and call counts.
///
/// ```
/// use stamps::migration::reference::{DriverOp, ReferenceDataPlane};
/// let plane = ReferenceDataPlane::new([]);
/// assert!(DriverOp::ALL.iter().all(|op| plane.calls(*op) == 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DriverOp {
    /// [`MigrationDriver::snapshot`](crate::migration::MigrationDriver::snapshot).
    Snapshot,
    /// [`MigrationDriver::import`](crate::migration::MigrationDriver::import).
    Import,
    /// [`MigrationDriver::catch_up`](crate::migration::MigrationDriver::catch_up).
    CatchUp,
    /// [`MigrationDriver::fence`](crate::migration::MigrationDriver::fence).
    Fence,
    /// [`MigrationDriver::validate`](crate::migration::MigrationDriver::validate).
    Validate,
    /// [`MigrationDriver::cleanup_source`](crate::migration::MigrationDriver::cleanup_source).
    CleanupSource,
    /// [`MigrationDriver::rollback`](crate::migration::MigrationDriver::rollback).
    Rollback,
}

impl DriverOp {
    /// Every operation.
    pub const ALL: [DriverOp; 7] = [
        DriverOp::Snapshot,
        DriverOp::Import,
        DriverOp::CatchUp,
        DriverOp::Fence,
        DriverOp::Validate,
        DriverOp::CleanupSource,
        DriverOp::Rollback,
    ];
}

impl StampStore {
    /// Admits a driver effect of `ctx` on this stamp: refused if a newer lease generation of
    /// the same migration was seen here; otherwise its generation is remembered.
    fn admit(&mut self, stamp: StampId, ctx: &MigrationContext) -> Result<(), DriverError> {
        let seen = self.generations.entry(ctx.id).or_insert(ctx.generation);
        if ctx.generation < *seen {
            return Err(DriverError::permanent(format!(
                "{} on {stamp}: lease generation {} is older than {} seen here; a newer worker took the migration over",
                ctx.id, ctx.generation, *seen
            )));
        }
        *seen = ctx.generation;
        Ok(())
    }
}

impl ReferenceDataPlane {
    fn driver_store(&self, stamp: StampId) -> Result<&Mutex<StampStore>, DriverError> {
        self.inner
            .stamps
            .get(&stamp)
            .ok_or_else(|| DriverError::permanent(format!("{stamp} is not part of this data plane")))
    }

    fn merge_into(&self, ctx: &MigrationContext, rows: Vec<(String, Row)>) -> Result<(), DriverError> {
        let stamp = ctx.destination;
        let mut st = self.driver_store(stamp)?.lock();
        st.admit(stamp, ctx)?;
        let dest = st.tenants.entry(ctx.tenant.clone()).or_default();
        for (k, r) in rows {
            dest.merge(&k, r);
        }
        Ok(())
    }

    fn snapshot_rows(&self, id: &str) -> Result<Vec<(String, Row)>, DriverError> {
        self.inner
            .snapshots
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| DriverError::permanent(format!("snapshot {id} does not exist")))
    }
}

#[async_trait]
impl MigrationDriver for ReferenceDataPlane {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        self.enter(DriverOp::Snapshot)?;
        let rows: Vec<(String, Row)> = {
            let st = self.driver_store(ctx.source)?.lock();
            st.tenants
                .get(&ctx.tenant)
                .map(|t| t.rows.iter().map(|(k, r)| (k.clone(), r.clone())).collect())
                .unwrap_or_default()
        };
        let n = {
            let mut next = self.inner.next_snapshot.lock();
            *next += 1;
            *next
        };
        let id = format!("{}/snapshot-{n}", ctx.id);
        let count = rows.len() as u64;
        self.inner.snapshots.lock().insert(id.clone(), rows);
        Ok(SnapshotInfo::new(id, count))
    }

    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        self.enter(DriverOp::Import)?;
        // Refuse a stale worker before looking for its snapshot (a takeover may have dropped
        // it); merge_into checks again, atomically with the merge.
        self.driver_store(ctx.destination)?.lock().admit(ctx.destination, ctx)?;
        let rows = self.snapshot_rows(&snapshot.id)?;
        self.merge_into(ctx, rows)
    }

    /// Copies the rows whose version is newer than the snapshot's newest row.
    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        self.enter(DriverOp::CatchUp)?;
        let high_water = self
            .snapshot_rows(&snapshot.id)?
            .iter()
            .map(|(_, r)| r.version)
            .max()
            .unwrap_or_default();
        let delta: Vec<(String, Row)> = {
            let st = self.driver_store(ctx.source)?.lock();
            st.tenants
                .get(&ctx.tenant)
                .map(|t| {
                    t.rows
                        .iter()
                        .filter(|(_, r)| r.version > high_water)
                        .map(|(k, r)| (k.clone(), r.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        self.merge_into(ctx, delta)
    }

    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> Result<(), DriverError> {
        self.enter(DriverOp::Fence)?;
        let mut st = self.driver_store(stamp)?.lock();
        st.admit(stamp, ctx)?;
        st.fence.raise(&ctx.tenant, epoch, holds);
        Ok(())
    }

    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        self.enter(DriverOp::Validate)?;
        self.inner.gate.validate(&ctx.tenant, || self.validate_gated(ctx))
    }

    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError> {
        self.enter(DriverOp::CleanupSource)?;
        let mut st = self.driver_store(ctx.source)?.lock();
        st.admit(ctx.source, ctx)?;
        st.tenants.remove(&ctx.tenant);
        Ok(())
    }

    async fn rollback(&self, ctx: &MigrationContext, _from: MigrationState) -> Result<(), DriverError> {
        self.enter(DriverOp::Rollback)?;
        {
            let mut st = self.driver_store(ctx.destination)?.lock();
            st.admit(ctx.destination, ctx)?;
            st.tenants.remove(&ctx.tenant);
        }
        let prefix = format!("{}/", ctx.id);
        self.inner.snapshots.lock().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }
}

impl ReferenceDataPlane {
    fn validate_gated(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        let (src_store, dst_store) = (self.driver_store(ctx.source)?, self.driver_store(ctx.destination)?);
        // Both stores are locked in stamp order, whatever the direction of the move, so two
        // validations of opposite moves between the same two stamps cannot deadlock.
        let (src, dst) = if ctx.source <= ctx.destination {
            let src = src_store.lock();
            (src, dst_store.lock())
        } else {
            let dst = dst_store.lock();
            (src_store.lock(), dst)
        };
        let empty = TenantRows::default();
        let s = src.tenants.get(&ctx.tenant).unwrap_or(&empty);
        let d = dst.tenants.get(&ctx.tenant).unwrap_or(&empty);
        let mut mismatches: Vec<String> = Vec::new();
        for (k, r) in &s.rows {
            if d.rows.get(k).map(|x| &x.value) != Some(&r.value) {
                mismatches.push(k.clone());
            }
        }
        for k in d.rows.keys() {
            if !s.rows.contains_key(k) {
                mismatches.push(k.clone());
            }
        }
        mismatches.sort();
        mismatches.truncate(5);
        Ok(ValidationReport::new(vec![TableCheck::new(
            "kv",
            s.summary(),
            d.summary(),
        )
        .mismatches(mismatches)]))
    }
}
