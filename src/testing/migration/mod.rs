//! A kit of migration scenarios that hosts run against their own [`MigrationDriver`], data
//! plane and registry, the way [`conformance`](super::conformance) serves registries.
//!
//! The host describes its data plane through [`DataPlane`] (write a key through an
//! assignment, read all keys of a tenant on a stamp) and hands the kit a [`Host`]: a registry
//! holding two active stamps, the driver, the data plane and the [`FakeClock`] the kit moves.
//! Each scenario assigns its own tenant, seeds rows, migrates, and checks the invariants a
//! host relies on; it panics with a message naming the broken invariant (like the
//! conformance suite, it is meant to run inside a test) and returns a report.
//!
//! Scenarios ([`run_all`] runs them all and returns a [`KitReport`]: runs, writes
//! acknowledged, writes lost, the longest write refusal on the kit's clock, outcomes):
//! - [`crash_at_every_call`]: the worker dies at each driver call and each registry write in
//!   turn (the call takes effect, no answer comes back); a fresh worker resumes once the
//!   lease ran out; every run completes, nothing acknowledged is lost, and writers are
//!   refused at most `max_freeze` (plus the kit's 250 ms tick).
//! - [`driver_failure_at_every_call`]: each driver call fails in turn, retryably (retried,
//!   completes) and permanently (rolls back, or stops in `Failed`, which the kit resolves with
//!   `Migration::resolve_failed`); nothing acknowledged is lost.
//! - [`concurrent_workers`]: two workers step the same migration at once, every step; never
//!   both win a transition.
//! - [`rollback_after_cutover`]: writes on the destination during the soak, then a rollback:
//!   the source serves with every acknowledged write, the destination keeps nothing.
//! - [`late_effect_after_takeover`]: a worker's import outlives its lease, another worker
//!   takes the migration over and ends it (cancelled, rolled back or completed), then the
//!   first import lands. The driver must refuse it (it carries an older
//!   [`MigrationContext::generation`]) and leave nothing behind.
//!
//! Writes go through the registry's current assignment between steps; give the data plane the
//! kit's clock, so freezes expire on it.
//!
//! ```no_run
//! use stamps::migration::reference::ReferenceDataPlane;
//! use stamps::testing::migration::{late_effect_after_takeover, Host, LateEnd};
//! use stamps::*;
//! use std::sync::Arc;
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = FakeClock::new();
//! let registry = Arc::new(InMemoryRegistry::builder().clock(clock.clone()).build());
//! for id in [StampId(1), StampId(2)] {
//!     let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0)?;
//!     registry.put_active_stamp(StampSpec::new(id, format!("s{}", id.0), Region::new("eu")?, cap)?).await?;
//! }
//! let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
//! let host = Host::new(registry, Arc::new(plane.clone()), Arc::new(plane), clock, StampId(1), StampId(2));
//! let report = late_effect_after_takeover(&host, "late-cancel", LateEnd::Cancelled).await;
//! assert!(report.late_refusal.is_some());
//! # Ok(()) }
//! ```

mod faults;
mod scenarios;

pub use scenarios::{
    concurrent_workers, crash_at_every_call, driver_failure_at_every_call, rollback_after_cutover, run_all, KitReport,
    ScenarioReport,
};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::migration::reference::ReferenceDataPlane;
use crate::migration::{
    DriverError, DynMigrationDriver, Migration, MigrationConfig, MigrationContext, MigrationDriver, Migrator,
    SnapshotInfo, StepOutcome, ValidationReport,
};
use crate::model::{Assignment, Epoch, MigrationState, StampId, TenantId, TenantSpec};
use crate::registry::DynRegistry;
use crate::time::{Clock, FakeClock};

/// The host's data plane, as the kit drives it.
///
/// # Contract
/// - [`write`](Self::write) applies one write as the host's write path does: refused while
///   the assignment is frozen, otherwise on every stamp of the assignment with its fence
///   tokens ([`FenceToken::for_write`](crate::migration::FenceToken::for_write)); `Ok` means
///   acknowledged.
/// - [`read_all`](Self::read_all) reads every row the stamp holds for the tenant, straight
///   from the stamp (not through a route).
///
/// # Implementing
/// Call your own write endpoint and a direct query of each stamp's store. The reference data
/// plane implements it below.
#[async_trait]
pub trait DataPlane: fmt::Debug + Send + Sync + 'static {
    /// Writes `key = value` for the assignment's tenant, routed by `route`.
    async fn write(&self, route: &Assignment, key: &str, value: &str) -> Result<(), String>;

    /// Every row of `tenant` on `stamp`.
    async fn read_all(&self, stamp: StampId, tenant: &TenantId) -> BTreeMap<String, String>;
}

#[async_trait]
impl DataPlane for ReferenceDataPlane {
    async fn write(&self, route: &Assignment, key: &str, value: &str) -> Result<(), String> {
        ReferenceDataPlane::write(self, route, key, value)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn read_all(&self, stamp: StampId, tenant: &TenantId) -> BTreeMap<String, String> {
        self.dump(stamp, tenant)
    }
}

/// What a scenario runs against: a registry with `source` and `destination` active (the kit
/// assigns its own tenants), the host's driver and data plane over those stamps, and the
/// clock the registry and the kit's migrator share.
#[derive(Clone)]
pub struct Host {
    registry: Arc<DynRegistry>,
    driver: Arc<DynMigrationDriver>,
    plane: Arc<dyn DataPlane>,
    clock: FakeClock,
    source: StampId,
    destination: StampId,
    config: MigrationConfig,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("driver", &self.driver)
            .field("plane", &self.plane)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .finish()
    }
}

impl Host {
    /// A host; scenarios run with [`MigrationConfig::default`] unless [`config`](Self::config)
    /// says otherwise.
    pub fn new(
        registry: Arc<DynRegistry>,
        driver: Arc<DynMigrationDriver>,
        plane: Arc<dyn DataPlane>,
        clock: FakeClock,
        source: StampId,
        destination: StampId,
    ) -> Self {
        Host {
            registry,
            driver,
            plane,
            clock,
            source,
            destination,
            config: MigrationConfig::default(),
        }
    }

    /// The migration settings the scenarios use.
    pub fn config(mut self, config: MigrationConfig) -> Self {
        self.config = config;
        self
    }

    async fn seed(&self, tenant: &str, rows: usize) -> (TenantId, Vec<(String, String)>) {
        let tenant = TenantId::new(tenant).unwrap_or_else(|e| panic!("kit: tenant name {tenant:?}: {e}"));
        let a = self
            .registry
            .assign(&TenantSpec::new(tenant.clone()), self.source)
            .await
            .unwrap_or_else(|e| panic!("kit: assigning {tenant} to {}: {e}", self.source));
        let mut acked = Vec::with_capacity(rows);
        for i in 0..rows {
            let (k, v) = (format!("seed-{i}"), format!("v{i}"));
            self.plane
                .write(&a, &k, &v)
                .await
                .unwrap_or_else(|e| panic!("kit: seeding {tenant}/{k} on {}: {e}", self.source));
            acked.push((k, v));
        }
        (tenant, acked)
    }

    async fn lost(&self, tenant: &TenantId, acked: &[(String, String)]) -> u64 {
        let owner = match self.registry.assignment(tenant).await {
            Ok(Some(a)) => a.stamp,
            other => panic!("kit: {tenant} must stay assigned, got {other:?}"),
        };
        let rows = self.plane.read_all(owner, tenant).await;
        acked.iter().filter(|(k, v)| rows.get(k) != Some(v)).count() as u64
    }
}

/// Which way the worker that took over ends the migration in [`late_effect_after_takeover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateEnd {
    /// An operator cancels it (before cutover).
    Cancelled,
    /// An operator rolls it back (before cutover).
    RolledBack,
    /// It runs to completion.
    Completed,
}

/// What [`late_effect_after_takeover`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LateEffectReport {
    /// The terminal state the migration reached.
    pub state: MigrationState,
    /// The late import's refusal by the driver (`None` if it was applied).
    pub late_refusal: Option<String>,
    /// Rows of the tenant on the destination when the migration ended.
    pub destination_rows_at_end: usize,
    /// Rows of the tenant on the destination after the late import.
    pub destination_rows_after: usize,
    /// Writes acknowledged before the migration.
    pub acknowledged: usize,
    /// Acknowledged writes missing from the stamp that owns the tenant at the end: must be 0.
    pub lost: u64,
}

/// Holds the first import until released, then runs it and keeps its result.
#[derive(Debug)]
struct HeldImport {
    inner: Arc<DynMigrationDriver>,
    armed: Mutex<bool>,
    entered: Notify,
    release: Notify,
    result: Mutex<Option<Result<(), DriverError>>>,
}

#[async_trait]
impl MigrationDriver for HeldImport {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        self.inner.snapshot(ctx).await
    }
    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        let hold = std::mem::replace(&mut *self.armed.lock(), false);
        if !hold {
            return self.inner.import(ctx, snapshot).await;
        }
        self.entered.notify_one();
        self.release.notified().await;
        let r = self.inner.import(ctx, snapshot).await;
        *self.result.lock() = Some(r.clone());
        r
    }
    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        self.inner.catch_up(ctx, snapshot).await
    }
    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> Result<(), DriverError> {
        self.inner.fence(ctx, stamp, epoch, holds).await
    }
    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        self.inner.validate(ctx).await
    }
    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError> {
        self.inner.cleanup_source(ctx).await
    }
    async fn rollback(&self, ctx: &MigrationContext, from: MigrationState) -> Result<(), DriverError> {
        self.inner.rollback(ctx, from).await
    }
}

/// Steps `m` until `done(state)` (moving the clock past every wait), at most 1000 steps.
async fn step_until(m: &mut Migration, clock: &FakeClock, done: impl Fn(MigrationState) -> bool) {
    for _ in 0..1000 {
        if done(m.state()) {
            return;
        }
        match m.step().await {
            Ok(StepOutcome::Waiting { until, .. }) => {
                if until > clock.now() {
                    clock.set(until);
                }
            }
            Ok(StepOutcome::Blocked { state, reason }) => panic!("kit: migration blocked in {state}: {reason}"),
            Ok(_) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("kit: step in {} failed: {e}", m.state()),
        }
    }
    panic!("kit: the migration did not get past {} in 1000 steps", m.state());
}

/// A worker's import outlives its lease; a second worker
/// takes the migration over and ends it as `end` says; then the first import lands. Checks
/// that the driver refused the late import, that it changed nothing on the destination (after
/// `Cancelled` and `RolledBack` the destination holds no row of the tenant), and that no
/// acknowledged write was lost.
pub async fn late_effect_after_takeover(host: &Host, tenant: &str, end: LateEnd) -> LateEffectReport {
    let (tenant, acked) = host.seed(tenant, 20).await;
    let held = Arc::new(HeldImport {
        inner: host.driver.clone(),
        armed: Mutex::new(true),
        entered: Notify::new(),
        release: Notify::new(),
        result: Mutex::new(None),
    });
    let migrator = Migrator::new(host.registry.clone(), held.clone())
        .clock(host.clock.clone())
        .config(host.config.clone())
        .unwrap_or_else(|e| panic!("kit: migration settings: {e}"));
    let plan = migrator
        .plan(&tenant, host.destination)
        .await
        .unwrap_or_else(|e| panic!("kit: planning {tenant}: {e}"));
    let mut a = migrator
        .start(&plan, "kit")
        .await
        .unwrap_or_else(|e| panic!("kit: starting {tenant}: {e}"));
    let id = a.id();
    step_until(&mut a, &host.clock, |s| s == MigrationState::Importing).await;
    // Worker A's import starts and hangs past its lease.
    let slow = tokio::spawn(async move { a.step().await.map(|_| ()) });
    if tokio::time::timeout(Duration::from_secs(10), held.entered.notified())
        .await
        .is_err()
    {
        panic!("kit: worker A's import never started");
    }
    host.clock.advance(host.config.lease + Duration::from_secs(1));
    let mut b = migrator
        .load(id)
        .await
        .unwrap_or_else(|e| panic!("kit: loading {id}: {e}"));
    match end {
        LateEnd::Cancelled => {
            b.cancel("kit", "late effect scenario")
                .await
                .unwrap_or_else(|e| panic!("kit: cancel after the lease expired: {e}"));
        }
        LateEnd::RolledBack => {
            b.rollback("kit", "late effect scenario")
                .await
                .unwrap_or_else(|e| panic!("kit: rollback after the lease expired: {e}"));
        }
        LateEnd::Completed => {}
    }
    step_until(&mut b, &host.clock, MigrationState::is_terminal).await;
    let state = b.state();
    let at_end = host.plane.read_all(host.destination, &tenant).await;
    held.release.notify_one();
    match tokio::time::timeout(Duration::from_secs(10), slow).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("kit: worker A's task panicked: {e}"),
        Err(_) => panic!("kit: worker A's step did not return within 10 s of the release"),
    }
    let late = held.result.lock().take();
    let after = host.plane.read_all(host.destination, &tenant).await;
    let report = LateEffectReport {
        state,
        late_refusal: match late {
            Some(Err(e)) => Some(e.to_string()),
            Some(Ok(())) => None,
            None => panic!("kit: worker A's import never ran"),
        },
        destination_rows_at_end: at_end.len(),
        destination_rows_after: after.len(),
        acknowledged: acked.len(),
        lost: host.lost(&tenant, &acked).await,
    };
    let expected = match end {
        LateEnd::Cancelled => MigrationState::Cancelled,
        LateEnd::RolledBack => MigrationState::RolledBack,
        LateEnd::Completed => MigrationState::Completed,
    };
    assert_eq!(state, expected, "kit: {report:?}");
    assert!(
        report.late_refusal.is_some(),
        "kit: the driver applied an import from a worker whose lease was taken over (generation fencing missing): {report:?}"
    );
    assert_eq!(
        after, at_end,
        "kit: the late import changed the destination: {report:?}"
    );
    if end != LateEnd::Completed {
        assert!(
            after.is_empty(),
            "kit: rows left on the destination after {state}: {report:?}"
        );
    }
    assert_eq!(report.lost, 0, "kit: acknowledged writes lost: {report:?}");
    report
}
