//! Closing a `Failed` migration (`Migration::resolve_failed`) on both registries: the copy
//! that goes is fenced before it is deleted, exactly one stamp owns the tenant afterwards with
//! every acknowledged write, writers on old routes (dual-write, reverse dual-write) are
//! refused everywhere, the decision is recorded, and a new migration can be planned only once
//! the failed one is resolved.
//!
//! The PostgreSQL variants need the test server (`DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`); an unreachable server fails, never skips.

#[path = "support/pg.rs"]
mod pg;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use stamps::migration::reference::{DriverOp, ReferenceDataPlane, WriteError};
use stamps::migration::{DriverError, FenceToken, Migration, MigrationConfig, Migrator, ResolveError};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

struct World {
    clock: FakeClock,
    registry: Arc<DynRegistry>,
    plane: ReferenceDataPlane,
    migrator: Migrator,
    tenant: TenantId,
    /// Every acknowledged write: key, value.
    acked: Vec<(String, String)>,
    _keep: Option<Box<dyn Any + Send>>,
}

async fn memory() -> (Arc<DynRegistry>, FakeClock, Option<Box<dyn Any + Send>>) {
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    let registry = InMemoryRegistry::builder().clock(clock.clone()).build();
    (Arc::new(registry), clock, None)
}

async fn postgres(hint: &str) -> (Arc<DynRegistry>, FakeClock, Option<Box<dyn Any + Send>>) {
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    let schema = pg::unique_schema(&format!("resolve_{hint}"));
    let guard = pg::SchemaGuard(schema.clone());
    let config = PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(4)
        .clock(clock.clone());
    let registry = PgRegistry::connect(config).await.unwrap();
    registry.migrate().await.unwrap();
    (Arc::new(registry), clock, Some(Box::new(guard)))
}

impl World {
    async fn new((registry, clock, keep): (Arc<DynRegistry>, FakeClock, Option<Box<dyn Any + Send>>)) -> World {
        for id in [1, 2] {
            let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
            let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
            registry.put_active_stamp(spec).await.unwrap();
        }
        let tenant = TenantId::new("acme").unwrap();
        registry
            .assign(&TenantSpec::new(tenant.clone()), StampId(1))
            .await
            .unwrap();
        let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone());
        let config = MigrationConfig::default().soak_window(Duration::ZERO).max_attempts(1);
        let migrator = Migrator::new(registry.clone(), Arc::new(plane.clone()))
            .clock(clock.clone())
            .config(config)
            .unwrap();
        World {
            clock,
            registry,
            plane,
            migrator,
            tenant,
            acked: Vec::new(),
            _keep: keep,
        }
    }

    /// One write routed by the tenant's current assignment; remembered if acknowledged.
    async fn write(&mut self) {
        let key = format!("k{}", self.acked.len());
        let a = self.registry.require_assignment(&self.tenant).await.unwrap();
        match self.plane.write(&a, &key, "v") {
            Ok(_) => self.acked.push((key, "v".into())),
            Err(WriteError::Frozen { .. }) => {}
            Err(e) => panic!("write routed by the current assignment refused: {e}"),
        }
    }

    async fn start(&mut self) -> Migration {
        for _ in 0..3 {
            self.write().await;
        }
        let plan = self.migrator.plan(&self.tenant, StampId(2)).await.unwrap();
        self.migrator.start(&plan, "ops").await.unwrap()
    }

    /// Steps (writing after every step) until `stop` holds or the migration ended.
    async fn step_until(&mut self, m: &mut Migration, stop: impl Fn(MigrationState) -> bool) {
        for _ in 0..100 {
            if stop(m.state()) || m.state().is_terminal() {
                return;
            }
            m.step().await.unwrap();
            self.clock.advance(Duration::from_millis(10));
            self.write().await;
        }
        panic!("stuck in {}", m.state());
    }

    async fn unresolved_blocks_planning(&self, to: StampId) -> bool {
        let plan = self.migrator.plan(&self.tenant, to).await.unwrap();
        plan.checks.iter().any(|c| c.what.contains("unresolved") && !c.ok)
    }

    /// Exactly one owner: `kept` serves alone with every acknowledged write; `dropped` holds
    /// nothing and refuses every write up to the resolution's epoch (a newer epoch would be a
    /// new assignment routing the tenant there again); so does `kept` for routes older than
    /// the resolution.
    async fn check_one_owner(&self, kept: StampId, dropped: StampId, epoch: Epoch, old_routes: &[Assignment]) {
        let a = self.registry.require_assignment(&self.tenant).await.unwrap();
        assert_eq!((a.stamp, a.mode, a.epoch), (kept, AssignmentMode::Serving, epoch));
        let rows = self.plane.dump(kept, &self.tenant);
        for (k, v) in &self.acked {
            assert_eq!(rows.get(k), Some(v), "acknowledged {k} missing on the kept {kept}");
        }
        assert!(
            self.plane.dump(dropped, &self.tenant).is_empty(),
            "{dropped} still has rows"
        );
        assert!(!self.plane.holds(dropped, &self.tenant));
        assert_eq!(self.plane.fence_state(dropped, &self.tenant), Some((epoch, false)));
        for e in [Epoch(1), Epoch(epoch.0 - 1), epoch] {
            let token = FenceToken::new(self.tenant.clone(), dropped, e);
            assert!(
                matches!(
                    self.plane.apply(&token, "ghost", "x", None),
                    Err(WriteError::Fenced { .. })
                ),
                "{dropped} admitted a write at {e}"
            );
        }
        for old in old_routes {
            assert!(
                matches!(self.plane.write(old, "stale", "x"), Err(WriteError::Fenced { .. })),
                "a writer on the old route {} ({}) was admitted",
                old.stamp,
                old.mode
            );
        }
        assert!(
            self.plane.dump(dropped, &self.tenant).is_empty(),
            "an old route recreated rows on {dropped}"
        );
    }
}

/// Cleanup fails for good after the cutover: the destination serves, the source copy is half
/// there. Resolution keeps the destination, fences the source, deletes its copy.
async fn cleanup_failed_keeps_the_destination(mut w: World) {
    let mut m = w.start().await;
    w.step_until(&mut m, |s| s == MigrationState::Soaking).await;
    let reverse = w.registry.require_assignment(&w.tenant).await.unwrap();
    assert_eq!(reverse.mode, AssignmentMode::DualWrite { shadow: StampId(1) });
    w.plane
        .fail_next(DriverOp::CleanupSource, DriverError::permanent("volume is read-only"));
    w.step_until(&mut m, |_| false).await;
    assert_eq!(m.state(), MigrationState::Failed);
    assert!(m.resolution().is_none());
    assert!(w.unresolved_blocks_planning(StampId(1)).await);

    // The operator names the wrong stamp: refused, nothing touched.
    let wrong = m.resolve_failed(StampId(1), "ops", "keep the old one").await;
    assert!(
        matches!(
            wrong,
            Err(ResolveError::NotServing {
                keep: StampId(1),
                serving: StampId(2)
            })
        ),
        "{wrong:?}"
    );
    assert!(w.plane.holds(StampId(1), &w.tenant) || !w.plane.dump(StampId(1), &w.tenant).is_empty());

    let done = m.resolve_failed(StampId(2), "ops", "volume repaired").await.unwrap();
    assert_eq!(
        (done.kept, done.dropped, done.by.as_str()),
        (StampId(2), StampId(1), "ops")
    );
    w.check_one_owner(StampId(2), StampId(1), done.epoch, &[reverse]).await;
    assert_eq!(m.state(), MigrationState::Failed, "the history stays");

    // Recorded: another worker reading the record sees it; resolving again is idempotent.
    let mut other = w.migrator.load(m.id()).await.unwrap();
    assert_eq!(other.resolution(), Some(done.clone()));
    assert_eq!(other.resolve_failed(StampId(2), "ops", "again").await.unwrap(), done);
    let again = other.resolve_failed(StampId(1), "ops", "changed my mind").await;
    assert!(matches!(again, Err(ResolveError::AlreadyResolved(_))), "{again:?}");
    assert!(!w.unresolved_blocks_planning(StampId(1)).await);
    assert!(w.migrator.plan(&w.tenant, StampId(1)).await.unwrap().is_feasible());
}

/// A rollback during dual-write fails for good at its fence: the tenant serves from the
/// source at a new epoch, but the destination's fence still admits the dual-write epoch (a
/// writer on the old route would put rows there). Resolution keeps the source.
async fn rollback_failed_keeps_the_source(mut w: World) {
    let mut m = w.start().await;
    w.step_until(&mut m, |s| s == MigrationState::Validating).await;
    let dual = w.registry.require_assignment(&w.tenant).await.unwrap();
    assert_eq!(dual.mode, AssignmentMode::DualWrite { shadow: StampId(2) });
    m.rollback("ops", "destination latency").await.unwrap();
    w.plane
        .fail_next(DriverOp::Fence, DriverError::permanent("fence table locked"));
    w.step_until(&mut m, |_| false).await;
    assert_eq!(m.state(), MigrationState::Failed);
    let token = FenceToken::new(w.tenant.clone(), StampId(2), dual.epoch);
    assert!(
        w.plane.apply(&token, "orphan", "x", None).is_ok(),
        "before resolution the destination still admits the dual-write epoch"
    );
    assert!(w.unresolved_blocks_planning(StampId(2)).await);

    let wrong = m.resolve_failed(StampId(3), "ops", "typo").await;
    assert!(
        matches!(wrong, Err(ResolveError::NotInMigration { keep: StampId(3) })),
        "{wrong:?}"
    );
    let done = m.resolve_failed(StampId(1), "ops", "stay on the source").await.unwrap();
    assert_eq!((done.kept, done.dropped), (StampId(1), StampId(2)));
    w.check_one_owner(StampId(1), StampId(2), done.epoch, &[dual]).await;
    assert!(w.migrator.plan(&w.tenant, StampId(2)).await.unwrap().is_feasible());
}

/// Only a `Failed` migration can be resolved.
async fn only_a_failed_migration_is_resolved(mut w: World) {
    let mut m = w.start().await;
    m.step().await.unwrap();
    let e = m.resolve_failed(StampId(1), "ops", "too early").await;
    assert!(
        matches!(e, Err(ResolveError::Registry(Error::InvalidTransition { .. }))),
        "{e:?}"
    );
    assert!(!w.registry.require_assignment(&w.tenant).await.unwrap().mode.is_frozen());
}

#[tokio::test]
async fn memory_cleanup_failed_keeps_the_destination() {
    cleanup_failed_keeps_the_destination(World::new(memory().await).await).await;
}

#[tokio::test]
async fn memory_rollback_failed_keeps_the_source() {
    rollback_failed_keeps_the_source(World::new(memory().await).await).await;
}

#[tokio::test]
async fn memory_only_a_failed_migration_is_resolved() {
    only_a_failed_migration_is_resolved(World::new(memory().await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cleanup_failed_keeps_the_destination() {
    cleanup_failed_keeps_the_destination(World::new(postgres("cleanup").await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rollback_failed_keeps_the_source() {
    rollback_failed_keeps_the_source(World::new(postgres("rollback").await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_only_a_failed_migration_is_resolved() {
    only_a_failed_migration_is_resolved(World::new(postgres("early").await).await).await;
}
