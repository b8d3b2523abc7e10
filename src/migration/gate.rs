//! [`WriteGate`]: the per-tenant gate that lets a driver validate "at a consistent point"
//! while dual-writes are in flight.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::model::TenantId;

/// A per-tenant reader–writer gate between a host's writes and
/// [`MigrationDriver::validate`](super::MigrationDriver::validate).
///
/// During dual-write a write lands on the serving stamp, then on the shadow. A validation
/// that compares both stamps between those two applications sees a row on one side only and
/// reports a mismatch, so the cutover is refused (safe, but it never converges under a steady
/// write load). The gate closes that window: a writer holds the tenant's gate **shared** for
/// the whole write (every stamp of its route), and validation holds it **exclusively** while
/// it reads both sides. Writers never wait for each other; a validation waits for the writes
/// in flight and holds new ones back only while it compares.
///
/// Use it when your host applies a dual-write to both stamps from one process (as
/// [`ReferenceDataPlane`](super::reference::ReferenceDataPlane) does). The gate lives in one
/// process: if writers and the driver run in different processes, compare at a consistent
/// point another way (a snapshot at one replication position on each side, or validate again
/// on a mismatch: the engine refuses the cutover and validates again). The closures run
/// while the gate is held: keep them short and never block on another tenant's gate inside
/// one (a validation inside a write of the same tenant deadlocks).
///
/// # Example
/// ```
/// use stamps::migration::WriteGate;
/// use stamps::TenantId;
/// use std::collections::BTreeMap;
/// use parking_lot::Mutex;
///
/// let gate = WriteGate::new();
/// let acme = TenantId::new("acme")?;
/// let (source, shadow) = (Mutex::new(BTreeMap::new()), Mutex::new(BTreeMap::new()));
/// // A dual-write: both stamps under one shared hold of the tenant's gate.
/// gate.write(&acme, || {
///     source.lock().insert("k", "v");
///     shadow.lock().insert("k", "v");
/// });
/// // Validation: no write is between its two stamps while this runs.
/// let same = gate.validate(&acme, || *source.lock() == *shadow.lock());
/// assert!(same);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct WriteGate {
    gates: Mutex<HashMap<TenantId, Arc<RwLock<()>>>>,
}

impl fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGate")
            .field("tenants", &self.gates.lock().len())
            .finish()
    }
}

impl WriteGate {
    /// A gate with no tenant yet (each tenant's lock is made on first use).
    pub fn new() -> Self {
        WriteGate::default()
    }

    fn lock_for(&self, tenant: &TenantId) -> Arc<RwLock<()>> {
        self.gates.lock().entry(tenant.clone()).or_default().clone()
    }

    /// Runs one write of `tenant` (to every stamp of its route) holding the tenant's gate
    /// shared: other writes run concurrently, a validation of the tenant waits for it.
    pub fn write<R>(&self, tenant: &TenantId, f: impl FnOnce() -> R) -> R {
        let lock = self.lock_for(tenant);
        let _shared = lock.read();
        f()
    }

    /// Runs a validation of `tenant` holding the tenant's gate exclusively: it starts once
    /// the writes in flight finished, and no write of the tenant starts until it returns.
    pub fn validate<R>(&self, tenant: &TenantId, f: impl FnOnce() -> R) -> R {
        let lock = self.lock_for(tenant);
        let _exclusive = lock.write();
        f()
    }

    /// Forgets `tenant`'s lock (after the tenant left this host for good). A write or
    /// validation in progress keeps its own hold; the next one makes a new lock, so call it
    /// only once no writer of the tenant is left.
    pub fn forget(&self, tenant: &TenantId) {
        self.gates.lock().remove(tenant);
    }
}
