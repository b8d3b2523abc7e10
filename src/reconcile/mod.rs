//! Fleet consistency: compare the registry with what each stamp actually holds.
//!
//! After a crashed cleanup, a manual fix, a restore from backup or a bug in a host's driver, a
//! stamp can hold a tenant the registry does not place there (an orphan), lack a tenant that
//! is assigned to it (missing), or keep a copy after its migration ended (a leftover shadow).
//! The host implements [`StampInventory`] per stamp; [`reconcile`] walks the registry's
//! assignments and every stamp's inventory as one sorted merge, reading the stamps
//! concurrently (a bounded number at a time, each call under its own timeout), with memory
//! bounded by the page size and the number of stamps, not by the fleet. It returns a
//! [`ReconcileReport`]: each [`Finding`] proposes a [`Repair`]; nothing is repaired here.
//! Applying one is an explicit call, [`apply_repair`], that re-checks the finding, runs the
//! host's action and records who and why in the tenant's history.
//!
//! The same module collects configuration drift: [`collect_drift`] asks each stamp what it
//! runs through the host's [`ConfigSource`] and groups the fleet against a desired
//! configuration ([`DriftReport`](crate::model::DriftReport)).
//!
//! ```
//! use stamps::reconcile::{reconcile, InMemoryInventory, ReconcileOptions, StampInventory};
//! use stamps::*;
//! use std::sync::Arc;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = InMemoryRegistry::new();
//! for id in [1, 2] {
//!     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
//!     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?, cap)?).await?;
//! }
//! registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
//! registry.assign(&TenantSpec::new(TenantId::new("globex")?), StampId(2)).await?;
//! let (s1, s2) = (InMemoryInventory::new(), InMemoryInventory::new());
//! s1.hold("acme", None);
//! s1.hold("initech", None); // offboarded long ago, still on disk
//! // stamp 2 lost globex
//! let inventories: Vec<(StampId, Arc<dyn StampInventory>)> = vec![(StampId(1), Arc::new(s1)), (StampId(2), Arc::new(s2))];
//! let report = reconcile(&registry, &inventories, &ReconcileOptions::default()).await?;
//! let kinds: Vec<_> = report.findings.iter().map(|f| (f.tenant.as_str(), f.kind.as_str())).collect();
//! assert_eq!(kinds, [("globex", "missing"), ("initech", "orphan")]);
//! # Ok(()) }
//! ```

mod drift;
mod inventory;
mod merge;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
mod repair;
mod report;

/// The day-two operations guide (`docs/operations.md`): when to reconcile, how to read the
/// report, what each repair does.
#[doc = include_str!("../../docs/operations.md")]
pub mod operations {}

use std::sync::Arc;
use std::time::Duration;

pub use drift::{collect_drift, ConfigSource};
pub use inventory::{Fingerprint, Held, InMemoryInventory, InventoryError, ReferenceInventory, StampInventory};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PgInventory, TenantTable};
pub use repair::{apply_repair, RepairError, REPAIR_ACTION_TIMEOUT};
pub use report::{Finding, FindingKind, ReconcileReport, Repair, Unreadable};

use crate::error::Result;
use crate::model::StampId;
use crate::registry::Registry;

/// How [`reconcile`] reads. The defaults: pages of 1,000, 8 stamps read at a time, 30 s per
/// inventory call.
///
/// ```
/// use stamps::reconcile::ReconcileOptions;
/// use std::time::Duration;
/// let o = ReconcileOptions::default().page_size(100).concurrency(4).stamp_timeout(Duration::from_secs(5));
/// assert_eq!(o.page_size, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileOptions {
    /// Entries per page, from the registry and from each inventory (at least 1).
    pub page_size: usize,
    /// Inventory calls in flight at once, across stamps (at least 1).
    pub concurrency: usize,
    /// The bound on each inventory call; a stamp that exceeds it is reported unreadable.
    pub stamp_timeout: Duration,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            page_size: 1_000,
            concurrency: 8,
            stamp_timeout: Duration::from_secs(30),
        }
    }
}

impl ReconcileOptions {
    /// Sets the page size (0 is taken as 1).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Sets how many inventory calls run at once (0 is taken as 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the bound on each inventory call.
    pub fn stamp_timeout(mut self, d: Duration) -> Self {
        self.stamp_timeout = d;
        self
    }
}

/// Compares the registry with every stamp's inventory and reports the differences, in tenant
/// order. Reads only.
///
/// Fails only if the registry cannot be read; a stamp whose inventory fails or times out is
/// reported in [`ReconcileReport::unreadable`] (its tenants are not judged missing). Copies on
/// a migration's source and destination while it runs are expected and not reported. Runs
/// on the tokio runtime (each stamp's pages are fetched by a task of their own, a page ahead
/// of the merge; dropping the future stops them).
pub async fn reconcile<R: Registry + ?Sized>(
    registry: &R,
    inventories: &[(StampId, Arc<dyn StampInventory>)],
    options: &ReconcileOptions,
) -> Result<ReconcileReport> {
    merge::run(registry, inventories, options).await
}
