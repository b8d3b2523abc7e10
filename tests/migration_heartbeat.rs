//! The lease heartbeat: a step whose driver call takes three times the lease keeps its lease
//! (another worker gets `LeaseHeld` throughout) and completes, taking in an operator's command
//! that landed meanwhile; a worker whose heartbeat cannot reach the registry abandons its step
//! before its lease runs out and another worker takes over; a killed worker's migration is
//! taken over once its lease runs out. On the in-memory registry under tokio's paused clock
//! (exact), and on PostgreSQL in real time (ordering only: no timed assertions).

#![cfg(all(feature = "tokio", feature = "test-util"))]

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::*;
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::testing::FaultyRegistry;
use stamps::*;

/// Time that follows tokio's clock (paused in the in-memory tests, real on PostgreSQL), so
/// lease expiries and heartbeat periods are measured on the same clock.
#[derive(Debug, Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(1_000_000) + self.start.elapsed()
    }
}

/// The reference data plane whose imports take `delay`.
#[derive(Debug)]
struct SlowImport {
    inner: ReferenceDataPlane,
    delay: Duration,
}

#[stamps::async_trait]
impl MigrationDriver for SlowImport {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        self.inner.snapshot(ctx).await
    }
    async fn import(&self, ctx: &MigrationContext, snap: &SnapshotInfo) -> Result<(), DriverError> {
        tokio::time::sleep(self.delay).await;
        self.inner.import(ctx, snap).await
    }
    async fn catch_up(&self, ctx: &MigrationContext, snap: &SnapshotInfo) -> Result<(), DriverError> {
        self.inner.catch_up(ctx, snap).await
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

struct World {
    registry: Arc<FaultyRegistry<Arc<DynRegistry>>>,
    inner: Arc<DynRegistry>,
    clock: TokioClock,
    plane: ReferenceDataPlane,
    lease: Duration,
    _keep: Option<pg::SchemaGuard>,
}

impl World {
    async fn new(inner: Arc<DynRegistry>, lease: Duration, keep: Option<pg::SchemaGuard>) -> World {
        for id in [1, 2] {
            let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
            let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
            inner.put_active_stamp(spec).await.unwrap();
        }
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        World {
            registry: Arc::new(FaultyRegistry::new(inner.clone())),
            inner,
            plane: ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone()),
            clock,
            lease,
            _keep: keep,
        }
    }

    /// A migrator over `registry` whose imports take `import` (lease as the world's).
    fn migrator(&self, registry: Arc<DynRegistry>, import: Duration, name: &str) -> Migrator {
        let driver = SlowImport {
            inner: self.plane.clone(),
            delay: import,
        };
        let config = MigrationConfig::default()
            .lease(self.lease)
            .step_timeout(self.lease * 20)
            .soak_window(Duration::ZERO);
        Migrator::new(registry, Arc::new(driver))
            .clock(self.clock.clone())
            .config(config)
            .unwrap()
            .worker_name(name)
    }

    /// A migration of `tenant` stepped to `Importing` by a worker on the faulty registry.
    async fn importing(&self, tenant: &str, import: Duration) -> Migration {
        let t = TenantId::new(tenant).unwrap();
        self.inner
            .assign(&TenantSpec::new(t.clone()), StampId(1))
            .await
            .unwrap();
        self.plane.write_via(&*self.inner, &t, "k", "v").await.unwrap();
        let migrator = self.migrator(self.registry.clone() as Arc<DynRegistry>, import, "a");
        let mut m = migrator
            .start(&migrator.plan(&t, StampId(2)).await.unwrap(), "op")
            .await
            .unwrap();
        while m.state() != MigrationState::Importing {
            m.step().await.unwrap();
        }
        m
    }

    async fn lease_until(&self, id: MigrationId) -> Option<Timestamp> {
        let rec = self.inner.migration(id).await.unwrap().unwrap();
        Progress::read(&rec).unwrap().lease.map(|l| l.until)
    }
}

/// A step whose import takes three leases keeps its lease, is not disturbed by a second
/// worker, takes in an operator's command landed meanwhile, and completes.
async fn a_long_step_keeps_its_lease(w: World) {
    let mut a = w.importing("long", w.lease * 3).await;
    let id = a.id();
    let running = tokio::spawn(async move {
        let out = a.step().await;
        (a, out)
    });
    let other = w.migrator(w.inner.clone(), Duration::ZERO, "b");
    let mut b = other.load(id).await.unwrap();
    let mut refused = 0;
    let mut command_queued = false;
    while !running.is_finished() {
        tokio::time::sleep(w.lease / 4).await;
        if running.is_finished() {
            break;
        }
        b.reload().await.unwrap();
        match b.step().await {
            Err(Error::LeaseHeld { holder, .. }) => {
                assert!(holder.starts_with("a#"), "{holder}");
                refused += 1;
            }
            other => panic!("a second worker must be kept out while the heartbeat runs, got {other:?}"),
        }
        if refused == 3 && !command_queued {
            // An operator's rollback lands without the lease while the step runs.
            assert_eq!(
                b.rollback("oncall", "latency").await.unwrap(),
                MigrationState::Importing
            );
            command_queued = true;
        }
    }
    let (mut a, out) = running.await.unwrap();
    assert_eq!(
        out.unwrap(),
        StepOutcome::Advanced {
            from: MigrationState::Importing,
            to: MigrationState::DualWrite
        }
    );
    assert!(refused >= 4, "the step outlived several quarter-leases ({refused})");
    assert!(a.progress().lease.is_none(), "released at the commit");
    assert_eq!(
        a.pending_command().map(|c| c.by.as_str()),
        Some("oncall"),
        "the command survived the renewals"
    );
    assert_eq!(
        a.step().await.unwrap(),
        StepOutcome::Advanced {
            from: MigrationState::DualWrite,
            to: MigrationState::RollingBack
        }
    );
}

/// A worker cut off from the registry abandons its step before its lease runs out; another
/// worker takes over after it and completes the step.
async fn a_cut_off_worker_abandons_in_time(w: World, exact: bool) {
    let mut a = w.importing("cutoff", w.lease * 10).await;
    let id = a.id();
    let registry = w.registry.clone();
    let running = tokio::spawn(async move {
        let out = a.step().await;
        (a, out)
    });
    // Wait for the claim, then cut A off.
    let until = loop {
        if let Some(until) = w.lease_until(id).await {
            break until;
        }
        tokio::task::yield_now().await;
    };
    registry.set_unavailable(true);
    let (_a, out) = running.await.unwrap();
    let abandoned_at = w.clock.now();
    assert!(matches!(out, Err(Error::Unavailable { .. })), "{out:?}");
    if exact {
        // On tokio's paused clock the order is exact; in real time only the lease's own
        // record (below: still held, by the same `until`) is checked.
        assert!(abandoned_at < until, "abandoned at {abandoned_at}, lease until {until}");
    }
    let _ = abandoned_at;
    // B, on a registry it can reach, is kept out until the lease runs out, then takes over.
    assert_eq!(
        w.lease_until(id).await,
        Some(until),
        "A wrote nothing after it was cut off"
    );
    let mut b = w.migrator(w.inner.clone(), Duration::ZERO, "b").load(id).await.unwrap();
    if exact {
        assert!(matches!(b.step().await, Err(Error::LeaseHeld { .. })));
    }
    tokio::time::sleep(until.saturating_since(w.clock.now()) + w.lease / 10).await;
    assert_eq!(
        b.step().await.unwrap(),
        StepOutcome::Advanced {
            from: MigrationState::Importing,
            to: MigrationState::DualWrite
        }
    );
}

/// A killed worker (its step dropped mid-import) is taken over once its lease runs out.
async fn a_killed_worker_is_taken_over_after_one_lease(w: World, exact: bool) {
    let mut a = w.importing("killed", w.lease * 10).await;
    let id = a.id();
    let running = tokio::spawn(async move { a.step().await });
    let until = loop {
        if let Some(until) = w.lease_until(id).await {
            break until;
        }
        tokio::task::yield_now().await;
    };
    running.abort();
    let killed_at = w.clock.now();
    let mut b = w.migrator(w.inner.clone(), Duration::ZERO, "b").load(id).await.unwrap();
    let poll = w.lease / 10;
    let took_over_at = loop {
        b.reload().await.unwrap();
        match b.step().await {
            Ok(StepOutcome::Advanced { .. }) => break w.clock.now(),
            Err(Error::LeaseHeld { until: held, .. }) => assert_eq!(held, until, "no one renewed the dead lease"),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(poll).await;
    };
    assert!(took_over_at >= until, "taken over before the lease ran out");
    if exact {
        // On tokio's paused clock: within one lease (from the claim) and one poll.
        assert!(took_over_at.saturating_since(killed_at) <= w.lease + poll);
    }
    assert_eq!(b.state(), MigrationState::DualWrite);
}

async fn memory(lease: Duration) -> World {
    World::new(Arc::new(InMemoryRegistry::new()), lease, None).await
}

async fn postgres(hint: &str, lease: Duration) -> World {
    let schema = pg::unique_schema(&format!("heartbeat_{hint}"));
    let guard = pg::SchemaGuard(schema.clone());
    let config = PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(4);
    let registry = PgRegistry::connect(config).await.unwrap();
    registry.migrate().await.unwrap();
    World::new(Arc::new(registry), lease, Some(guard)).await
}

#[tokio::test(start_paused = true)]
async fn memory_a_long_step_keeps_its_lease() {
    a_long_step_keeps_its_lease(memory(Duration::from_secs(10)).await).await;
}

#[tokio::test(start_paused = true)]
async fn memory_a_cut_off_worker_abandons_in_time() {
    a_cut_off_worker_abandons_in_time(memory(Duration::from_secs(10)).await, true).await;
}

#[tokio::test(start_paused = true)]
async fn memory_a_killed_worker_is_taken_over_after_one_lease() {
    a_killed_worker_is_taken_over_after_one_lease(memory(Duration::from_secs(10)).await, true).await;
}

/// Real time on PostgreSQL: leases of 1.5 s (renewed every 0.5 s).
const PG_LEASE: Duration = Duration::from_millis(1_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_long_step_keeps_its_lease() {
    a_long_step_keeps_its_lease(postgres("long", PG_LEASE).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_cut_off_worker_abandons_in_time() {
    a_cut_off_worker_abandons_in_time(postgres("cutoff", PG_LEASE).await, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_worker_is_taken_over_after_one_lease() {
    a_killed_worker_is_taken_over_after_one_lease(postgres("killed", PG_LEASE).await, false).await;
}
