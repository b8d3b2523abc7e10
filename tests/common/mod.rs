//! Shared harness for the migration tests: a two-stamp world, writer tasks, and wrappers that
//! inject crashes and driver failures at the N-th call.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::*;
use stamps::*;
use tokio::sync::Notify;

pub const SRC: StampId = StampId(1);
pub const DST: StampId = StampId(2);

pub fn config() -> MigrationConfig {
    MigrationConfig::default()
        .with_step_timeout(Duration::from_secs(30))
        .with_lease(Duration::from_secs(30))
        .with_max_validation_age(Duration::from_secs(600))
        .with_max_freeze(Duration::from_secs(5))
        .with_soak_window(Duration::from_secs(2 * 3600))
        .with_max_attempts(3)
        .with_backoff(Duration::ZERO, Duration::ZERO)
}

/// Counts calls and, when armed, trips at the N-th: a crash (the call takes effect, then never
/// returns) or a driver failure (the call fails before taking effect).
#[derive(Debug, Default)]
pub struct Switch {
    calls: AtomicU64,
    crash_countdown: AtomicI64,
    fault_countdown: AtomicI64,
    fault_retryable: AtomicBool,
    driver_calls: AtomicU64,
    tripped: Notify,
    pub crashes: AtomicU64,
    pub faults: AtomicU64,
}

impl Switch {
    pub fn new() -> Arc<Switch> {
        Arc::new(Switch {
            crash_countdown: AtomicI64::new(-1),
            fault_countdown: AtomicI64::new(-1),
            ..Default::default()
        })
    }
    pub fn crash_at(&self, n: u64) {
        self.crash_countdown.store(n as i64, Ordering::SeqCst);
    }
    pub fn fault_at(&self, n: u64, retryable: bool) {
        self.fault_retryable.store(retryable, Ordering::SeqCst);
        self.fault_countdown.store(n as i64, Ordering::SeqCst);
    }
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn driver_calls(&self) -> u64 {
        self.driver_calls.load(Ordering::SeqCst)
    }
    /// After a call took effect: whether to crash now.
    fn crash_now(&self) -> bool {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.crash_countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.crashes.fetch_add(1, Ordering::SeqCst);
            self.tripped.notify_one();
            return true;
        }
        false
    }
    /// Before a driver call: an injected failure, if due.
    fn fault_now(&self) -> Option<DriverError> {
        self.driver_calls.fetch_add(1, Ordering::SeqCst);
        if self.fault_countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.faults.fetch_add(1, Ordering::SeqCst);
            return Some(if self.fault_retryable.load(Ordering::SeqCst) {
                DriverError::retryable("injected transient failure")
            } else {
                DriverError::permanent("injected permanent failure")
            });
        }
        None
    }
    pub async fn tripped(&self) {
        self.tripped.notified().await
    }
}

async fn hang() -> ! {
    std::future::pending::<()>().await;
    unreachable!()
}

/// A registry whose migration writes and assignment compare-and-sets can crash.
#[derive(Debug, Clone)]
pub struct CrashRegistry {
    pub inner: Arc<DynRegistry>,
    pub switch: Arc<Switch>,
}

#[async_trait]
impl Registry for CrashRegistry {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        self.inner.put_stamp(spec).await
    }
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        self.inner.stamp(id).await
    }
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        self.inner.set_stamp_state(id, state).await
    }
    async fn fleet(&self) -> Result<Fleet> {
        self.inner.fleet().await
    }
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        self.inner.assignment(tenant).await
    }
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        self.inner.assignments(after, limit).await
    }
    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        self.inner.assign(tenant, stamp).await
    }
    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        let r = self.inner.compare_and_set(tenant, expected, change).await;
        if self.switch.crash_now() {
            hang().await
        }
        r
    }
    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        self.inner.unassign(tenant, expected).await
    }
    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        self.inner.history(tenant).await
    }
    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        self.inner.changes_since(after, limit).await
    }
    fn change_signal(&self) -> ChangeSignal {
        self.inner.change_signal()
    }
    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        self.inner.create_migration(record).await
    }
    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        self.inner.migration(id).await
    }
    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        let r = self.inner.save_migration(record).await;
        if self.switch.crash_now() {
            hang().await
        }
        r
    }
    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        self.inner.migrations(tenant).await
    }
}

/// The reference data plane behind a switch: driver calls can fail or crash.
#[derive(Debug, Clone)]
pub struct CrashDriver {
    pub inner: ReferenceDataPlane,
    pub switch: Arc<Switch>,
}

macro_rules! guarded {
    ($self:ident, $call:expr) => {{
        if let Some(e) = $self.switch.fault_now() {
            return Err(e);
        }
        let r = $call;
        if $self.switch.crash_now() {
            hang().await
        }
        r
    }};
}

#[async_trait]
impl MigrationDriver for CrashDriver {
    async fn snapshot(&self, ctx: &MigrationContext) -> std::result::Result<SnapshotInfo, DriverError> {
        guarded!(self, self.inner.snapshot(ctx).await)
    }
    async fn import(&self, ctx: &MigrationContext, s: &SnapshotInfo) -> std::result::Result<(), DriverError> {
        guarded!(self, self.inner.import(ctx, s).await)
    }
    async fn catch_up(&self, ctx: &MigrationContext, s: &SnapshotInfo) -> std::result::Result<(), DriverError> {
        guarded!(self, self.inner.catch_up(ctx, s).await)
    }
    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> std::result::Result<(), DriverError> {
        guarded!(self, self.inner.fence(ctx, stamp, epoch, holds).await)
    }
    async fn validate(&self, ctx: &MigrationContext) -> std::result::Result<ValidationReport, DriverError> {
        guarded!(self, self.inner.validate(ctx).await)
    }
    async fn cleanup_source(&self, ctx: &MigrationContext) -> std::result::Result<(), DriverError> {
        guarded!(self, self.inner.cleanup_source(ctx).await)
    }
    async fn rollback(&self, ctx: &MigrationContext, from: MigrationState) -> std::result::Result<(), DriverError> {
        guarded!(self, self.inner.rollback(ctx, from).await)
    }
}

/// Two active stamps, one tenant on the source with seed rows, a data plane, switches.
pub struct World {
    pub clock: FakeClock,
    /// Any registry: the scenarios run against every implementation handed to `World::on`.
    pub registry: Arc<DynRegistry>,
    pub plane: ReferenceDataPlane,
    pub switch: Arc<Switch>,
    pub tenant: TenantId,
    pub unhealthy: Arc<AtomicBool>,
    pub migrator: Migrator,
}

impl World {
    pub async fn new(tenant: &str) -> World {
        Self::with_config(tenant, config()).await
    }

    pub async fn with_config(tenant: &str, cfg: MigrationConfig) -> World {
        let clock = FakeClock::new();
        let registry = Arc::new(InMemoryRegistry::builder().clock(clock.clone()).build());
        Self::on(registry, clock, tenant, cfg).await
    }

    /// A world on `registry` (empty of stamps 1 and 2 and of `tenant`).
    pub async fn on(registry: Arc<DynRegistry>, clock: FakeClock, tenant: &str, cfg: MigrationConfig) -> World {
        for id in [SRC, DST] {
            let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0).unwrap();
            let spec = StampSpec::new(id, format!("s{}", id.0), Region::new("eu").unwrap(), cap).unwrap();
            registry.put_active_stamp(spec).await.unwrap();
        }
        let tenant = TenantId::new(tenant).unwrap();
        registry.assign(&TenantSpec::new(tenant.clone()), SRC).await.unwrap();
        let plane = ReferenceDataPlane::new([SRC, DST]);
        for i in 0..50 {
            plane
                .write_via(registry.as_ref(), &tenant, &format!("seed-{i}"), &format!("s{i}"))
                .await
                .unwrap();
        }
        let switch = Switch::new();
        let unhealthy = Arc::new(AtomicBool::new(false));
        let flag = unhealthy.clone();
        let crash_registry = Arc::new(CrashRegistry {
            inner: registry.clone(),
            switch: switch.clone(),
        });
        let driver = Arc::new(CrashDriver {
            inner: plane.clone(),
            switch: switch.clone(),
        });
        let migrator = Migrator::new(crash_registry, driver)
            .with_clock(clock.clone())
            .with_soak_check(soak_check_fn(move |_: &MigrationContext| {
                if flag.load(Ordering::SeqCst) {
                    SoakVerdict::unhealthy("error rate above threshold")
                } else {
                    SoakVerdict::Healthy
                }
            }))
            .with_config(cfg)
            .unwrap();
        World {
            clock,
            registry,
            plane,
            switch,
            tenant,
            unhealthy,
            migrator,
        }
    }

    pub async fn start(&self) -> Migration {
        let plan = self.migrator.plan(&self.tenant, DST).await.unwrap();
        assert!(plan.is_feasible(), "{plan}");
        self.migrator.start(&plan, "test-operator").await.unwrap()
    }
}

/// Concurrent writer tasks writing unique keys (and one overwritten counter key each) through
/// the registry's current route, retrying frozen and fenced writes.
pub struct Writers {
    stop: Arc<AtomicBool>,
    pub acked: Arc<AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<Vec<(String, String)>>>,
}

impl Writers {
    pub fn spawn(world: &World, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let handles = (0..n)
            .map(|w| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let (registry, plane, tenant) = (world.registry.clone(), world.plane.clone(), world.tenant.clone());
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    let mut seq: u64 = 0;
                    'writes: while !stop.load(Ordering::SeqCst) {
                        seq += 1;
                        for (key, value) in [
                            (format!("w{w}-{seq:06}"), format!("value-{w}-{seq}")),
                            (format!("w{w}-counter"), format!("{seq:06}")),
                        ] {
                            loop {
                                match plane.write_via(registry.as_ref(), &tenant, &key, &value).await {
                                    Ok(_) => {
                                        acked.fetch_add(1, Ordering::SeqCst);
                                        done.push((key, value));
                                        break;
                                    }
                                    Err(e) if e.is_retryable() => {
                                        if stop.load(Ordering::SeqCst) {
                                            break 'writes;
                                        }
                                        tokio::task::yield_now().await;
                                    }
                                    Err(e) => panic!("write failed: {e}"),
                                }
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                    done
                })
            })
            .collect();
        Writers { stop, acked, handles }
    }

    /// Lets the writers make some progress (bounded: they may be frozen).
    pub async fn progress(&self, n: u64) {
        let start = self.acked.load(Ordering::SeqCst);
        for _ in 0..20_000 {
            if self.acked.load(Ordering::SeqCst) >= start + n {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Waits until the writers acknowledged `n` more writes (they must not be frozen); a
    /// liveness guard fails the test after a minute instead of hanging it.
    pub async fn must_progress(&self, n: u64) {
        let start = self.acked.load(Ordering::SeqCst);
        let wait = async {
            while self.acked.load(Ordering::SeqCst) < start + n {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("writers made no progress in a minute");
    }

    pub async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for h in self.handles {
            all.extend(h.await.unwrap());
        }
        all
    }
}

/// Checks every acknowledged write against the stamp now serving the tenant; returns the
/// number lost. Unique keys must hold their value; counter keys at least the last acked one.
pub async fn lost_writes(world: &World, acked: &[(String, String)]) -> u64 {
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(
        a.mode,
        AssignmentMode::Serving,
        "the migration must end with a plain serving assignment"
    );
    let rows = world.plane.dump(a.stamp, &world.tenant);
    let mut last_counter: BTreeMap<&str, &str> = BTreeMap::new();
    let mut lost = 0;
    for (k, v) in acked {
        if k.ends_with("-counter") {
            last_counter.insert(k, v);
        } else if rows.get(k) != Some(v) {
            lost += 1;
        }
    }
    for (k, v) in last_counter {
        if rows.get(k).map_or(true, |have| have.as_str() < v) {
            lost += 1;
        }
    }
    for i in 0..50 {
        if rows.get(&format!("seed-{i}")) != Some(&format!("s{i}")) {
            lost += 1;
        }
    }
    lost
}

/// What stopped `drive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Terminal(MigrationState),
    Blocked(String),
    Refused(String),
    /// The state named was reached (for tests that act there).
    Reached(MigrationState),
}

/// Steps `m` until it ends, blocks, is refused, or reaches `until`, letting the writers progress
/// between steps, crashing and resuming whenever the switch trips, advancing the fake clock
/// through the soak.
pub async fn drive(world: &World, m: &mut Migration, writers: &Writers, until: Option<MigrationState>) -> Stop {
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 500, "migration does not converge: {:?}", m.record());
        if m.state().is_terminal() {
            return Stop::Terminal(m.state());
        }
        if Some(m.state()) == until {
            return Stop::Reached(m.state());
        }
        writers.progress(10).await;
        let crashed = tokio::select! {
            r = m.step() => Some(r),
            _ = world.switch.tripped() => None,
        };
        match crashed {
            None => {
                // Crash: this worker is gone. Another resumes after its lease expires.
                world
                    .clock
                    .advance(world.migrator.config().lease + Duration::from_secs(1));
                *m = world.migrator.load(m.id()).await.unwrap();
            }
            Some(Ok(StepOutcome::Waiting { .. })) => world.clock.advance(Duration::from_secs(1800)),
            Some(Ok(StepOutcome::Blocked { reason, .. })) => return Stop::Blocked(reason),
            Some(Ok(StepOutcome::Refused { reason })) => return Stop::Refused(reason),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("step failed: {e} in {:?}", m.record()),
        }
    }
}

/// Totals of a test, printed where `cargo test` shows them (straight to stderr, not captured).
#[derive(Debug, Default)]
pub struct Totals {
    pub migrations: u64,
    pub acked: u64,
    pub lost: u64,
}

impl Totals {
    pub fn add(&mut self, acked: usize, lost: u64) {
        self.migrations += 1;
        self.acked += acked as u64;
        self.lost += lost;
    }
    pub fn report(&self, name: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "[migration] {name}: migrations run: {}, writes acknowledged: {}, writes lost: {}",
            self.migrations,
            self.acked,
            self.lost
        );
    }
}
