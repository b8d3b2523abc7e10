//! The kit's fault scenarios: a crash at every call, a driver failure at every call, two
//! workers racing, a rollback after cutover; and [`run_all`] with its [`KitReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::faults::{faulty_registry, tenant_name, Fault, FaultyDriver, Switch, Writer};
use super::Host;
use crate::error::Error;
use crate::migration::{Migration, Migrator, StepOutcome};
use crate::model::MigrationState;
use crate::registry::DynRegistry;
use crate::time::Clock;

/// How finely the kit moves its clock while it waits (a lease to expire, a soak to end),
/// writing at every tick: the resolution of [`ScenarioReport::longest_refusal`].
const TICK: Duration = Duration::from_millis(250);

/// What one scenario saw over all its runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScenarioReport {
    /// The scenario.
    pub name: &'static str,
    /// Migrations run (one per fault point and kind).
    pub runs: u32,
    /// Writes acknowledged, over all runs.
    pub acknowledged: u64,
    /// Acknowledged writes missing from the owning stamp at the end (the kit panics unless 0).
    pub lost: u64,
    /// The longest stretch, on the kit's clock, during which every write to a migrating
    /// tenant was refused (the freeze, and what a crash leaves of it).
    pub longest_refusal: Duration,
    /// How the runs ended.
    pub outcomes: BTreeMap<MigrationState, u32>,
}

impl ScenarioReport {
    fn new(name: &'static str) -> ScenarioReport {
        ScenarioReport {
            name,
            ..ScenarioReport::default()
        }
    }

    async fn finish_run(&mut self, host: &Host, writer: &Writer, state: MigrationState, what: &str) {
        let lost = writer.lost(host).await;
        self.runs += 1;
        self.acknowledged += writer.acked.len() as u64;
        self.lost += lost;
        self.longest_refusal = self.longest_refusal.max(writer.longest_refusal);
        *self.outcomes.entry(state).or_default() += 1;
        assert_eq!(lost, 0, "kit: {}: {what}: {lost} acknowledged writes lost", self.name);
    }
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} runs, {} writes acknowledged, {} lost, longest refusal {:?}, outcomes",
            self.name, self.runs, self.acknowledged, self.lost, self.longest_refusal
        )?;
        for (state, n) in &self.outcomes {
            write!(f, " {state}={n}")?;
        }
        Ok(())
    }
}

/// Every scenario's report ([`run_all`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KitReport {
    /// One per scenario, in the order run.
    pub scenarios: Vec<ScenarioReport>,
}

impl KitReport {
    /// The longest write refusal over every scenario.
    pub fn longest_refusal(&self) -> Duration {
        self.scenarios
            .iter()
            .map(|s| s.longest_refusal)
            .max()
            .unwrap_or_default()
    }

    /// Acknowledged writes lost over every scenario (0, or the kit would have panicked).
    pub fn lost(&self) -> u64 {
        self.scenarios.iter().map(|s| s.lost).sum()
    }
}

impl fmt::Display for KitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.scenarios {
            writeln!(f, "{s}")?;
        }
        write!(f, "longest write refusal: {:?}", self.longest_refusal())
    }
}

fn migrator(
    host: &Host,
    registry: Arc<DynRegistry>,
    driver: Arc<crate::migration::DynMigrationDriver>,
    name: &str,
) -> Migrator {
    Migrator::new(registry, driver)
        .clock(host.clock.clone())
        .config(host.config.clone())
        .unwrap_or_else(|e| panic!("kit: migration settings: {e}"))
        .worker_name(name)
}

/// One step, with what the kit does around it: a write after it, the clock moved through a
/// wait or past a live lease (writing at every tick). `Err` for a step error the caller
/// judges.
async fn step_once(m: &mut Migration, host: &Host, writer: &mut Writer) -> Result<StepOutcome, Error> {
    let out = m.step().await;
    writer.write(host).await;
    match &out {
        // A soak: a few writes on the way (writes flow there; refusals are measured in ticks
        // where they can happen, while a lease runs out).
        Ok(StepOutcome::Waiting { until, .. }) => {
            let tick = TICK.max(until.saturating_since(host.clock.now()) / 8);
            writer.wait_until(host, *until, tick).await;
        }
        Err(Error::LeaseHeld { until, .. }) => writer.wait_until(host, *until + TICK, TICK).await,
        _ => {}
    }
    out
}

/// Drives `m` to a terminal state; a `Failed` migration is resolved keeping its serving stamp
/// (so exactly one owner remains). Returns the terminal state.
async fn finish(m: &mut Migration, host: &Host, writer: &mut Writer, what: &str) -> MigrationState {
    for _ in 0..10_000 {
        if m.state().is_terminal() {
            break;
        }
        match step_once(m, host, writer).await {
            Ok(StepOutcome::Blocked { state, reason }) => panic!("kit: {what}: blocked in {state}: {reason}"),
            Ok(_) => {}
            Err(
                e @ (Error::LeaseHeld { .. }
                | Error::Unavailable { .. }
                | Error::Conflict(_)
                | Error::OutcomeUnknown { .. }),
            ) => {
                let _ = e;
                m.reload().await.unwrap_or_else(|e| panic!("kit: {what}: reload: {e}"));
            }
            Err(e) => panic!("kit: {what}: step in {} failed: {e}", m.state()),
        }
    }
    let state = m.state();
    assert!(
        state.is_terminal(),
        "kit: {what}: not finished after 10,000 steps ({state})"
    );
    if state == MigrationState::Failed {
        let serving = host
            .registry
            .assignment(&writer_tenant(writer))
            .await
            .ok()
            .flatten()
            .map(|a| a.stamp)
            .unwrap_or_else(|| panic!("kit: {what}: the tenant lost its assignment"));
        m.resolve_failed(serving, "kit", "the kit's fault run")
            .await
            .unwrap_or_else(|e| panic!("kit: {what}: resolving the failed migration: {e}"));
    }
    state
}

fn writer_tenant(w: &Writer) -> crate::model::TenantId {
    w.tenant().clone()
}

/// Seeds a tenant and starts its migration on `migrator`.
async fn start(host: &Host, migrator: &Migrator, scenario: &str) -> (Migration, Writer) {
    let (tenant, seeded) = host.seed(&tenant_name(scenario), 10).await;
    let plan = migrator
        .plan(&tenant, host.destination)
        .await
        .unwrap_or_else(|e| panic!("kit: planning {tenant}: {e}"));
    let m = migrator
        .start(&plan, "kit")
        .await
        .unwrap_or_else(|e| panic!("kit: starting {tenant}: {e}"));
    (m, Writer::new(tenant, seeded))
}

/// A worker dies at every call of a migration in turn (each driver call and each registry
/// write: the call takes effect, the worker never hears back), with writes between steps; a
/// fresh worker resumes once the dead one's lease expired. Every run must complete with no
/// acknowledged write lost; the report's longest refusal is what a crash costs writers (with
/// the default settings: at most `max_freeze` plus one tick).
pub async fn crash_at_every_call(host: &Host) -> ScenarioReport {
    let mut report = ScenarioReport::new("crash at every call");
    for point in 1u64.. {
        let switch = Arc::new(Switch::default());
        let registry = faulty_registry(host, &switch);
        let driver = Arc::new(FaultyDriver {
            inner: host.driver.clone(),
            switch: switch.clone(),
        });
        let dying = migrator(host, registry, driver, "dying");
        let (mut m, mut writer) = start(host, &dying, "crash").await;
        let what = format!("crash at call {point}");
        switch.arm(point, Fault::Crash);
        let id = m.id();
        loop {
            if m.state().is_terminal() {
                break;
            }
            let crashed = tokio::select! {
                out = step_once(&mut m, host, &mut writer) => {
                    if let Err(e) = out {
                        if !(e.is_retryable() || matches!(e, Error::Conflict(_) | Error::OutcomeUnknown { .. })) {
                            panic!("kit: {what}: step failed: {e}");
                        }
                    }
                    false
                }
                () = switch.tripped.notified() => true,
            };
            if crashed {
                break;
            }
        }
        switch.disarm();
        if !switch.fired() {
            // The migration needed fewer calls than `point`: every point was covered.
            let state = m.state();
            report.finish_run(host, &writer, state, &what).await;
            assert_eq!(state, MigrationState::Completed, "kit: {what}: {state}");
            break;
        }
        drop(m);
        let resumer = migrator(host, host.registry.clone(), host.driver.clone(), "resumer");
        let mut m = resumer
            .load(id)
            .await
            .unwrap_or_else(|e| panic!("kit: {what}: load: {e}"));
        let state = finish(&mut m, host, &mut writer, &what).await;
        assert_eq!(state, MigrationState::Completed, "kit: {what}: ended {state}");
        report.finish_run(host, &writer, state, &what).await;
        assert!(point < 500, "kit: more than 500 calls in one migration");
    }
    report
}

/// Every driver call fails in turn, once retryably and once for good, before taking effect.
/// A retryable failure is retried and the migration completes; a permanent one rolls back (or
/// stops in `Failed` where it cannot, which the kit resolves); nothing acknowledged is lost.
pub async fn driver_failure_at_every_call(host: &Host) -> ScenarioReport {
    let mut report = ScenarioReport::new("driver failure at every call");
    for fault in [Fault::Retryable, Fault::Permanent] {
        for point in 1u64.. {
            let switch = Arc::new(Switch::default());
            let driver = Arc::new(FaultyDriver {
                inner: host.driver.clone(),
                switch: switch.clone(),
            });
            let m = migrator(host, host.registry.clone(), driver, "failing");
            let (mut m, mut writer) = start(host, &m, "fail").await;
            // Registry writes are not counted here: only driver calls (the hooks are absent).
            switch.arm(point, fault);
            let what = format!("{fault:?} driver failure at call {point}");
            let state = finish(&mut m, host, &mut writer, &what).await;
            let fired = switch.fired();
            report.finish_run(host, &writer, state, &what).await;
            match (fault, fired) {
                (_, false) => {
                    assert_eq!(state, MigrationState::Completed, "kit: {what}");
                    break;
                }
                (Fault::Retryable, true) => assert_eq!(state, MigrationState::Completed, "kit: {what}"),
                _ => assert!(
                    matches!(state, MigrationState::RolledBack | MigrationState::Failed),
                    "kit: {what}: ended {state}"
                ),
            }
            assert!(point < 500, "kit: more than 500 driver calls in one migration");
        }
    }
    report
}

/// Two workers step the same migration at once, every step: at most one wins each claim (the
/// other gets `LeaseHeld` or `Conflict` before any effect), and the migration completes with
/// nothing lost.
pub async fn concurrent_workers(host: &Host) -> ScenarioReport {
    let mut report = ScenarioReport::new("two workers racing");
    let a = migrator(host, host.registry.clone(), host.driver.clone(), "racer-a");
    let b = migrator(host, host.registry.clone(), host.driver.clone(), "racer-b");
    let (mut ma, mut writer) = start(host, &a, "race").await;
    let mut mb = b.load(ma.id()).await.unwrap_or_else(|e| panic!("kit: load: {e}"));
    for _ in 0..10_000 {
        if ma.state().is_terminal() && mb.state().is_terminal() {
            break;
        }
        let (ra, rb) = tokio::join!(ma.step(), mb.step());
        let advanced = |r: &Result<StepOutcome, Error>| matches!(r, Ok(StepOutcome::Advanced { .. }));
        if let (Ok(StepOutcome::Advanced { from: fa, to: ta }), Ok(StepOutcome::Advanced { from: fb, to: tb })) =
            (&ra, &rb)
        {
            assert!(
                (fa, ta) != (fb, tb),
                "kit: both workers made the transition {fa} -> {ta}"
            );
        }
        for (m, r) in [(&mut ma, &ra), (&mut mb, &rb)] {
            match r {
                Ok(StepOutcome::Blocked { state, reason }) => panic!("kit: race: blocked in {state}: {reason}"),
                Ok(_) => {}
                Err(Error::LeaseHeld { .. } | Error::Conflict(_) | Error::Unavailable { .. }) => {
                    m.reload().await.unwrap_or_else(|e| panic!("kit: race: reload: {e}"));
                }
                Err(e) => panic!("kit: race: step failed: {e}"),
            }
        }
        let _ = (advanced(&ra), advanced(&rb));
        writer.write(host).await;
        let waiting = [&ra, &rb].into_iter().find_map(|r| match r {
            Ok(StepOutcome::Waiting { until, .. }) => Some(*until),
            Err(Error::LeaseHeld { until, .. }) => Some(*until + TICK),
            _ => None,
        });
        if let Some(until) = waiting {
            let tick = TICK.max(until.saturating_since(host.clock.now()) / 8);
            writer.wait_until(host, until, tick).await;
        }
        if ma.state() != mb.state() {
            // The loser catches up with the record before the next round.
            let _ = ma.reload().await;
            let _ = mb.reload().await;
        }
    }
    let state = ma.state();
    assert_eq!(state, MigrationState::Completed, "kit: race ended {state}");
    report.finish_run(host, &writer, state, "race").await;
    report
}

/// Cutover, writes on the destination during the soak, then an operator's rollback: the
/// source serves again with every acknowledged write, the destination's copy is gone.
pub async fn rollback_after_cutover(host: &Host) -> ScenarioReport {
    let mut report = ScenarioReport::new("rollback after cutover");
    let mg = migrator(host, host.registry.clone(), host.driver.clone(), "rollback");
    let (mut m, mut writer) = start(host, &mg, "rollback").await;
    for _ in 0..1_000 {
        if m.state() == MigrationState::Soaking {
            break;
        }
        let out = step_once(&mut m, host, &mut writer).await;
        out.unwrap_or_else(|e| panic!("kit: rollback: step failed: {e}"));
    }
    assert_eq!(
        m.state(),
        MigrationState::Soaking,
        "kit: rollback: never reached the soak"
    );
    for _ in 0..20 {
        writer.write(host).await;
    }
    m.rollback("kit", "rollback after cutover")
        .await
        .unwrap_or_else(|e| panic!("kit: rollback refused during the soak: {e}"));
    let state = finish(&mut m, host, &mut writer, "rollback").await;
    assert_eq!(state, MigrationState::RolledBack, "kit: rollback ended {state}");
    let tenant = writer_tenant(&writer);
    let a = host
        .registry
        .assignment(&tenant)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("kit: {tenant} lost its assignment"));
    assert_eq!(
        a.stamp, host.source,
        "kit: after the rollback {tenant} is on {}",
        a.stamp
    );
    assert!(
        host.plane.read_all(host.destination, &tenant).await.is_empty(),
        "kit: the destination kept rows after the rollback"
    );
    report.finish_run(host, &writer, state, "rollback").await;
    report
}

/// Runs every scenario of the kit, in order; panics naming the broken invariant.
pub async fn run_all(host: &Host) -> KitReport {
    let mut report = KitReport::default();
    report.scenarios.push(crash_at_every_call(host).await);
    report.scenarios.push(driver_failure_at_every_call(host).await);
    report.scenarios.push(concurrent_workers(host).await);
    report.scenarios.push(rollback_after_cutover(host).await);
    let mut late = ScenarioReport::new("late effect after takeover");
    for end in [
        super::LateEnd::Cancelled,
        super::LateEnd::RolledBack,
        super::LateEnd::Completed,
    ] {
        let r = super::late_effect_after_takeover(host, &tenant_name("late"), end).await;
        late.runs += 1;
        late.acknowledged += r.acknowledged as u64;
        late.lost += r.lost;
        *late.outcomes.entry(r.state).or_default() += 1;
    }
    report.scenarios.push(late);
    report
}
