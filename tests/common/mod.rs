//! Shared harness for the migration tests: a two-stamp world on any registry ([`Backend`]),
//! writer tasks, and faults at the N-th call (registry writes that crash or lose their
//! acknowledgement, through `FaultyRegistry` hooks; driver calls that crash or fail). The
//! scenarios themselves are in [`scenarios`], run by every backend's test binary.
#![allow(dead_code)]

pub mod operate;
pub mod scenarios;

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::*;
use stamps::testing::faulty::After;
use stamps::testing::{Call, FaultyRegistry};
use stamps::*;
use tokio::sync::{watch, Notify, Semaphore};

pub const SRC: StampId = StampId(1);
pub const DST: StampId = StampId(2);

pub fn config() -> MigrationConfig {
    MigrationConfig::default()
        .step_timeout(Duration::from_secs(30))
        .lease(Duration::from_secs(30))
        .max_validation_age(Duration::from_secs(600))
        .max_freeze(Duration::from_secs(5))
        .soak_window(Duration::from_secs(2 * 3600))
        .max_attempts(3)
        .backoff(Duration::ZERO, Duration::ZERO)
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
    registry_writes: AtomicU64,
    lost_ack_countdown: AtomicI64,
    pub lost_acks: AtomicU64,
    tripped: Notify,
    pub crashes: AtomicU64,
    pub faults: AtomicU64,
}

impl Switch {
    pub fn new() -> Arc<Switch> {
        Arc::new(Switch {
            crash_countdown: AtomicI64::new(-1),
            fault_countdown: AtomicI64::new(-1),
            lost_ack_countdown: AtomicI64::new(-1),
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
    /// The `n`-th registry write from now takes effect but answers `Unavailable`, as a
    /// database does when the connection breaks after the commit.
    pub fn lose_ack_at(&self, n: u64) {
        self.lost_ack_countdown.store(n as i64, Ordering::SeqCst);
    }
    pub fn registry_writes(&self) -> u64 {
        self.registry_writes.load(Ordering::SeqCst)
    }
    /// After a registry write took effect: whether to lose its acknowledgement.
    fn lose_ack_now(&self) -> bool {
        self.registry_writes.fetch_add(1, Ordering::SeqCst);
        if self.lost_ack_countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.lost_acks.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        false
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

/// Something a world keeps alive until it is dropped (a database schema guard, say).
pub type Keep = Box<dyn Any + Send + Sync>;

/// A fresh registry for one world, and what must live as long as it.
pub type Fresh = Pin<Box<dyn Future<Output = (Arc<DynRegistry>, Option<Keep>)> + Send>>;

/// Makes a fresh registry for a world: `(hint, clock)`, the hint unique per world.
pub type MakeRegistry = dyn Fn(&str, FakeClock) -> Fresh + Send + Sync;

/// How writer tasks are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Free-running: write as fast as the registry answers, retry refused writes at once. For
    /// the in-memory registry, where a route lookup costs nanoseconds.
    Free,
    /// Budgeted: each acknowledged write takes a permit from a budget that
    /// [`Writers::progress`] tops up to twice what it waits for (so about as many writes again
    /// overlap the next step), and a refused write waits for the registry's change signal
    /// before it retries. For a database registry, where each route lookup is a query and
    /// free-running writers would load the server instead of the migration.
    Budget,
}

/// Where the scenarios' worlds live: each world gets a fresh registry from the backend.
#[derive(Clone)]
pub struct Backend {
    /// Put before the totals' names ("" for the in-memory registry).
    pub label: &'static str,
    /// Writer tasks per scenario.
    pub writers: usize,
    pub pace: Pace,
    fresh: Arc<MakeRegistry>,
}

impl Backend {
    /// The in-memory registry, free-running writers (the original scenarios).
    pub fn memory() -> Backend {
        Backend::new("", 3, Pace::Free, |_, clock| {
            Box::pin(async move {
                let registry = Arc::new(InMemoryRegistry::builder().clock(clock).build()) as Arc<DynRegistry>;
                (registry, None)
            })
        })
    }

    /// A backend making a registry per world with `fresh(hint, clock)`.
    pub fn new(
        label: &'static str,
        writers: usize,
        pace: Pace,
        fresh: impl Fn(&str, FakeClock) -> Fresh + Send + Sync + 'static,
    ) -> Backend {
        Backend {
            label,
            writers,
            pace,
            fresh: Arc::new(fresh),
        }
    }

    /// A world on a fresh registry of this backend.
    pub async fn world(&self, tenant: &str) -> World {
        self.world_with_config(tenant, config()).await
    }

    /// A world on a fresh registry of this backend, with `cfg`.
    pub async fn world_with_config(&self, tenant: &str, cfg: MigrationConfig) -> World {
        let clock = FakeClock::new();
        let (registry, keep) = (self.fresh)(tenant, clock.clone()).await;
        let mut world = World::on(registry, clock, tenant, cfg).await;
        world.pace = self.pace;
        world.writers = self.writers;
        world.keep = keep;
        world
    }

    /// Prints `totals` under `name`, labelled with the backend.
    pub fn report(&self, totals: &Totals, name: &str) {
        totals.report(&format!("{}{name}", self.label));
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
    /// How [`Writers::start`] paces its writers, and how many it starts.
    pub pace: Pace,
    pub writers: usize,
    /// Dropped last, after the registry (a schema guard drops the schema).
    keep: Option<Keep>,
}

impl World {
    pub async fn new(tenant: &str) -> World {
        Self::with_config(tenant, config()).await
    }

    pub async fn with_config(tenant: &str, cfg: MigrationConfig) -> World {
        Backend::memory().world_with_config(tenant, cfg).await
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
        let plane = ReferenceDataPlane::new([SRC, DST]).clock(clock.clone());
        for i in 0..50 {
            plane
                .write_via(registry.as_ref(), &tenant, &format!("seed-{i}"), &format!("s{i}"))
                .await
                .unwrap();
        }
        let switch = Switch::new();
        let unhealthy = Arc::new(AtomicBool::new(false));
        let flag = unhealthy.clone();
        // Migration writes and assignment compare-and-sets can crash (take effect, then never
        // return) or lose their acknowledgement (take effect, then answer `Unavailable`).
        let crash_registry = FaultyRegistry::new(registry.clone());
        for call in [Call::CompareAndSet, Call::SaveMigration] {
            let switch = switch.clone();
            crash_registry.after(call, move |_, _| {
                if switch.crash_now() {
                    return Box::pin(std::future::pending());
                }
                let lost = switch.lose_ack_now();
                Box::pin(async move {
                    if lost {
                        After::Replace(Error::unavailable("injected: connection lost after the commit"))
                    } else {
                        After::Keep
                    }
                })
            });
        }
        let crash_registry = Arc::new(crash_registry);
        let driver = Arc::new(CrashDriver {
            inner: plane.clone(),
            switch: switch.clone(),
        });
        let migrator = Migrator::new(crash_registry, driver)
            .clock(clock.clone())
            .soak_check(soak_check_fn(move |_: &MigrationContext| {
                if flag.load(Ordering::SeqCst) {
                    SoakVerdict::unhealthy("error rate above threshold")
                } else {
                    SoakVerdict::Healthy
                }
            }))
            .config(cfg)
            .unwrap();
        World {
            clock,
            registry,
            plane,
            switch,
            tenant,
            unhealthy,
            migrator,
            pace: Pace::Free,
            writers: 3,
            keep: None,
        }
    }

    /// Loads the tenant's migration that has not ended (as a crashed worker's successor does).
    pub async fn load_active(&self) -> Migration {
        let rec = self
            .registry
            .migrations(Some(&self.tenant))
            .await
            .unwrap()
            .into_iter()
            .find(|r| !r.state.is_terminal())
            .expect("an active migration");
        self.migrator.load(rec.id).await.unwrap()
    }

    pub async fn start(&self) -> Migration {
        let plan = self.migrator.plan(&self.tenant, DST).await.unwrap();
        assert!(plan.is_feasible(), "{plan}");
        self.migrator.start(&plan, "test-operator").await.unwrap()
    }
}

/// Concurrent writer tasks writing unique keys (and one overwritten counter key each) through
/// the registry's current route, retrying frozen and fenced writes; paced as the world says.
pub struct Writers {
    stop: Arc<AtomicBool>,
    stopped: watch::Sender<bool>,
    pub acked: Arc<AtomicU64>,
    pace: Pace,
    writers: usize,
    /// [`Pace::Budget`]: one permit per acknowledged write.
    budget: Arc<Semaphore>,
    /// [`Pace::Budget`]: writers waiting for the registry to change before a retry.
    waiting: Arc<AtomicUsize>,
    /// Notified on every acknowledged write and every writer that starts waiting.
    event: Arc<Notify>,
    handles: Vec<tokio::task::JoinHandle<Vec<(String, String)>>>,
}

/// One writer task: a write waits for a permit (budgeted), a refused write for a change.
struct Writer {
    w: usize,
    stop: Arc<AtomicBool>,
    stopped: watch::Receiver<bool>,
    acked: Arc<AtomicU64>,
    pace: Pace,
    budget: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    event: Arc<Notify>,
    registry: Arc<DynRegistry>,
    plane: ReferenceDataPlane,
    tenant: TenantId,
}

impl Writer {
    async fn run(mut self) -> Vec<(String, String)> {
        let w = self.w;
        let signal = self.registry.change_signal();
        let mut done = Vec::new();
        let mut seq: u64 = 0;
        'writes: while !self.stop.load(Ordering::SeqCst) {
            seq += 1;
            for (key, value) in [
                (format!("w{w}-{seq:06}"), format!("value-{w}-{seq}")),
                (format!("w{w}-counter"), format!("{seq:06}")),
            ] {
                let permit = match self.pace {
                    Pace::Free => None,
                    // Closed when the writers stop.
                    Pace::Budget => match self.budget.acquire().await {
                        Ok(p) => Some(p),
                        Err(_) => break 'writes,
                    },
                };
                loop {
                    // Read before the route: a change after it wakes the retry below.
                    let seen = signal.head();
                    match self
                        .plane
                        .write_via(self.registry.as_ref(), &self.tenant, &key, &value)
                        .await
                    {
                        Ok(_) => {
                            if let Some(p) = permit {
                                p.forget();
                            }
                            self.acked.fetch_add(1, Ordering::SeqCst);
                            self.event.notify_waiters();
                            done.push((key, value));
                            break;
                        }
                        Err(e) if e.is_retryable() => {
                            if self.stop.load(Ordering::SeqCst) {
                                break 'writes;
                            }
                            match self.pace {
                                Pace::Free => tokio::task::yield_now().await,
                                Pace::Budget => {
                                    // A frozen or fenced route changes only by a registry
                                    // write; the timeout is a liveness net for a missed wake-up.
                                    self.waiting.fetch_add(1, Ordering::SeqCst);
                                    self.event.notify_waiters();
                                    tokio::select! {
                                        _ = signal.changed(seen) => {}
                                        _ = self.stopped.changed() => {}
                                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                                    }
                                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                                }
                            }
                        }
                        Err(e) => panic!("write failed: {e}"),
                    }
                }
            }
            tokio::task::yield_now().await;
        }
        done
    }
}

impl Writers {
    /// The world's number of writers, paced as the world says.
    pub fn start(world: &World) -> Writers {
        Self::spawn(world, world.writers)
    }

    pub fn spawn(world: &World, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, stopped_rx) = watch::channel(false);
        let acked = Arc::new(AtomicU64::new(0));
        let budget = Arc::new(Semaphore::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        let event = Arc::new(Notify::new());
        let handles = (0..n)
            .map(|w| {
                let writer = Writer {
                    w,
                    stop: stop.clone(),
                    stopped: stopped_rx.clone(),
                    acked: acked.clone(),
                    pace: world.pace,
                    budget: budget.clone(),
                    waiting: waiting.clone(),
                    event: event.clone(),
                    registry: world.registry.clone(),
                    plane: world.plane.clone(),
                    tenant: world.tenant.clone(),
                };
                tokio::spawn(writer.run())
            })
            .collect();
        Writers {
            stop,
            stopped,
            acked,
            pace: world.pace,
            writers: n,
            budget,
            waiting,
            event,
            handles,
        }
    }

    /// Waits (without spinning) until `done` holds; it is re-checked at every writer event.
    async fn until(&self, done: impl Fn() -> bool) {
        loop {
            let event = self.event.notified();
            tokio::pin!(event);
            event.as_mut().enable();
            if done() {
                return;
            }
            event.await;
        }
    }

    /// Lets the writers make some progress (bounded: they may be frozen).
    pub async fn progress(&self, n: u64) {
        let start = self.acked.load(Ordering::SeqCst);
        match self.pace {
            Pace::Free => {
                for _ in 0..20_000 {
                    if self.acked.load(Ordering::SeqCst) >= start + n {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            }
            Pace::Budget => {
                let top_up = usize::try_from(2 * n).unwrap_or(usize::MAX);
                let have = self.budget.available_permits();
                if have < top_up {
                    self.budget.add_permits(top_up - have);
                }
                // Until `n` more are acknowledged, or every writer waits for a change (frozen
                // or fenced: only the next step can unblock them); bounded either way.
                let wait = self.until(|| {
                    self.acked.load(Ordering::SeqCst) >= start + n
                        || self.waiting.load(Ordering::SeqCst) >= self.writers
                });
                let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
            }
        }
    }

    /// Waits until the writers acknowledged `n` more writes (they must not be frozen); a
    /// liveness guard fails the test after a minute instead of hanging it.
    pub async fn must_progress(&self, n: u64) {
        let start = self.acked.load(Ordering::SeqCst);
        let reached = || self.acked.load(Ordering::SeqCst) >= start + n;
        let made = match self.pace {
            Pace::Free => {
                let wait = async {
                    while !reached() {
                        tokio::task::yield_now().await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(60), wait).await
            }
            Pace::Budget => {
                self.budget.add_permits(usize::try_from(n).unwrap_or(usize::MAX));
                tokio::time::timeout(Duration::from_secs(60), self.until(reached)).await
            }
        };
        made.expect("writers made no progress in a minute");
    }

    pub async fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stopped.send(true);
        self.budget.close();
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
        if rows.get(k).is_none_or(|have| have.as_str() < v) {
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

/// Steps `m` (no writers, no crashes) until it reaches `state`, through the soak on the fake clock.
pub async fn step_to(m: &mut Migration, world: &World, state: MigrationState) {
    for _ in 0..50 {
        if m.state() == state {
            return;
        }
        match m.step().await.unwrap() {
            StepOutcome::Waiting { .. } => world.clock.advance(Duration::from_secs(1800)),
            StepOutcome::Advanced { .. } => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    panic!("never reached {state}");
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
                    .advance(world.migrator.settings().lease + Duration::from_secs(1));
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
