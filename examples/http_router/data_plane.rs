//! The stamps' data plane as a [`MigrationDriver`]: snapshot, import, catch-up, fences,
//! validation and clean-up over the stamps' stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use stamps::migration::{DriverError, MigrationContext, MigrationDriver, SnapshotInfo, TableCheck, ValidationReport};
use stamps::{Epoch, MigrationState, StampId, TenantId};

use super::stamp::{Row, StampNode, TenantRows};

/// The migration driver over the stamps' stores (in process here; over each stamp's admin API or
/// database in a real deployment).
#[derive(Debug)]
pub struct StampsDataPlane {
    nodes: BTreeMap<StampId, Arc<StampNode>>,
    snapshots: Mutex<HashMap<String, Vec<(String, Row)>>>,
    next_snapshot: AtomicU64,
}

impl StampsDataPlane {
    pub(crate) fn new(nodes: impl IntoIterator<Item = Arc<StampNode>>) -> Self {
        StampsDataPlane {
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            snapshots: Mutex::new(HashMap::new()),
            next_snapshot: AtomicU64::new(0),
        }
    }

    fn node(&self, stamp: StampId) -> Result<&Arc<StampNode>, DriverError> {
        self.nodes
            .get(&stamp)
            .ok_or_else(|| DriverError::permanent(format!("{stamp} is not part of this data plane")))
    }

    fn rows_of(&self, stamp: StampId, tenant: &TenantId) -> Result<Vec<(String, Row)>, DriverError> {
        let st = self.node(stamp)?.store.lock();
        Ok(st
            .tenants
            .get(tenant)
            .map(|t| t.rows.iter().map(|(k, r)| (k.clone(), r.clone())).collect())
            .unwrap_or_default())
    }

    fn merge_into(&self, stamp: StampId, tenant: &TenantId, rows: Vec<(String, Row)>) -> Result<(), DriverError> {
        let mut st = self.node(stamp)?.store.lock();
        let dest = st.tenants.entry(tenant.clone()).or_default();
        for (k, r) in rows {
            dest.merge(&k, r);
        }
        Ok(())
    }

    fn snapshot_rows(&self, id: &str) -> Result<Vec<(String, Row)>, DriverError> {
        self.snapshots
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| DriverError::permanent(format!("snapshot {id} does not exist")))
    }
}

#[async_trait]
impl MigrationDriver for StampsDataPlane {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        let rows = self.rows_of(ctx.source, &ctx.tenant)?;
        let n = self.next_snapshot.fetch_add(1, Ordering::SeqCst) + 1;
        let id = format!("{}/snapshot-{n}", ctx.id);
        let count = rows.len() as u64;
        self.snapshots.lock().insert(id.clone(), rows);
        Ok(SnapshotInfo::new(id, count))
    }

    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        let rows = self.snapshot_rows(&snapshot.id)?;
        self.merge_into(ctx.destination, &ctx.tenant, rows)
    }

    /// A delta: the source's rows newer than the snapshot's newest row.
    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        let high_water = self
            .snapshot_rows(&snapshot.id)?
            .iter()
            .map(|(_, r)| r.version)
            .max()
            .unwrap_or_default();
        let mut delta = self.rows_of(ctx.source, &ctx.tenant)?;
        delta.retain(|(_, r)| r.version > high_water);
        self.merge_into(ctx.destination, &ctx.tenant, delta)
    }

    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> Result<(), DriverError> {
        self.node(stamp)?.store.lock().fence.raise(&ctx.tenant, epoch, holds);
        Ok(())
    }

    /// Compares both sides with both stores locked (in stamp order, so two migrations in
    /// opposite directions cannot deadlock). A dual-write in flight (applied on the serving
    /// stamp, not yet on the shadow) shows as a mismatch: the admin runner re-validates.
    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        let (a, b) = (self.node(ctx.source)?, self.node(ctx.destination)?);
        let (first, second) = if a.id <= b.id { (a, b) } else { (b, a) };
        let g1 = first.store.lock();
        let g2 = (first.id != second.id).then(|| second.store.lock());
        let side = |id: StampId| {
            let st = if id == first.id {
                &*g1
            } else {
                g2.as_deref().unwrap_or(&*g1)
            };
            st.tenants.get(&ctx.tenant)
        };
        let empty = TenantRows::default();
        let s = side(ctx.source).unwrap_or(&empty);
        let d = side(ctx.destination).unwrap_or(&empty);
        let mut mismatches: Vec<String> = s
            .rows
            .iter()
            .filter(|(k, r)| d.rows.get(*k).map(|x| &x.value) != Some(&r.value))
            .map(|(k, _)| k.clone())
            .chain(d.rows.keys().filter(|k| !s.rows.contains_key(*k)).cloned())
            .collect();
        mismatches.sort();
        mismatches.truncate(5);
        Ok(ValidationReport::new(vec![TableCheck::new(
            "kv",
            s.summary(),
            d.summary(),
        )
        .with_mismatches(mismatches)]))
    }

    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError> {
        self.node(ctx.source)?.store.lock().tenants.remove(&ctx.tenant);
        Ok(())
    }

    async fn rollback(&self, ctx: &MigrationContext, _from: MigrationState) -> Result<(), DriverError> {
        self.node(ctx.destination)?.store.lock().tenants.remove(&ctx.tenant);
        let prefix = format!("{}/", ctx.id);
        self.snapshots.lock().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }
}
