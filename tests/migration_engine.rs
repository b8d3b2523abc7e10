//! The migration engine's guarantees one by one: fencing against stale routers, racing
//! workers, leases, the dry run, who may cancel or roll back when, `run()` with timeouts and
//! retries, the bounded freeze, and stopping on assignments changed behind its back.
#![cfg(feature = "test-util")]

mod common;

#[cfg(feature = "tokio")]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use stamps::migration::reference::{DriverOp, ReferenceDataPlane};
use stamps::migration::*;
use stamps::{MigrationState as S, *};

#[tokio::test]
async fn a_stale_router_cannot_write_to_the_old_stamp_after_cutover() {
    scenarios::a_stale_router_cannot_write_to_the_old_stamp_after_cutover(&Backend::memory()).await;
}

#[tokio::test]
async fn two_workers_racing_one_wins_the_other_gets_conflict_before_any_effect() {
    scenarios::two_workers_racing_one_wins_the_other_gets_conflict_before_any_effect(&Backend::memory()).await;
}

#[tokio::test]
async fn the_dry_run_writes_nothing_and_infeasible_plans_cannot_start() {
    let world = World::new("plan").await;
    let plan = world.migrator.plan(&world.tenant, DST).await.unwrap();
    let text = plan.to_string();
    for state in [
        "snapshotting",
        "importing",
        "dual_write",
        "validating",
        "cut_over",
        "soaking",
        "cleaning_up",
    ] {
        assert!(text.contains(state), "{text}");
    }
    assert!(text.contains("feasible"));
    assert!(world.registry.migrations(None).await.unwrap().is_empty());
    assert!(matches!(
        world.migrator.start(&plan, "  ").await,
        Err(Error::InvalidInput(_))
    ));

    // Same stamp, an unknown stamp, a draining stamp, a full stamp: failed checks, no start.
    let same = world.migrator.plan(&world.tenant, SRC).await.unwrap();
    assert!(!same.is_feasible());
    assert!(same.to_string().contains("FAILED"));
    assert!(matches!(
        world.migrator.start(&same, "op").await,
        Err(Error::InvalidInput(_))
    ));
    let unknown = world.migrator.plan(&world.tenant, StampId(99)).await.unwrap();
    assert!(!unknown.is_feasible());
    world.registry.set_stamp_state(DST, StampState::Draining).await.unwrap();
    assert!(!world.migrator.plan(&world.tenant, DST).await.unwrap().is_feasible());
    assert!(matches!(
        world.migrator.plan(&TenantId::new("nobody").unwrap(), DST).await,
        Err(Error::NotFound(_))
    ));

    // A plan made before the assignment changed is refused at start.
    let world = World::new("plan2").await;
    let plan = world.migrator.plan(&world.tenant, DST).await.unwrap();
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    world
        .registry
        .compare_and_set(&world.tenant, a.epoch, AssignmentChange::resize(Demand::default()))
        .await
        .unwrap();
    assert!(matches!(
        world.migrator.start(&plan, "op").await,
        Err(Error::Conflict { .. })
    ));
    // One migration per tenant at a time.
    let plan = world.migrator.plan(&world.tenant, DST).await.unwrap();
    let m = world.migrator.start(&plan, "op").await.unwrap();
    assert_eq!(m.progress().initiated_by.as_deref(), Some("op"));
    let again = world.migrator.plan(&world.tenant, DST).await.unwrap();
    assert!(!again.is_feasible());
    assert!(matches!(
        world
            .registry
            .create_migration(MigrationRecord::planned(world.tenant.clone(), SRC, DST))
            .await,
        Err(Error::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn cancel_and_rollback_are_only_legal_where_the_table_says() {
    // Planned: cancel goes straight to Cancelled; rollback is illegal.
    let world = World::new("legal").await;
    let mut m = world.start().await;
    assert!(matches!(
        m.rollback("op", "x").await,
        Err(Error::InvalidTransition { .. })
    ));
    assert_eq!(m.cancel("op", "not today").await.unwrap(), S::Cancelled);
    assert_eq!(m.step().await.unwrap(), StepOutcome::Finished { state: S::Cancelled });

    // After cutover: cancel is illegal, rollback fine; once cleaning up, neither.
    let world = World::new("legal2").await;
    let mut m = world.start().await;
    step_to(&mut m, &world, S::Soaking).await;
    assert!(matches!(
        m.cancel("op", "x").await,
        Err(Error::InvalidTransition { .. })
    ));
    step_to(&mut m, &world, S::CleaningUp).await;
    assert!(matches!(
        m.rollback("op", "x").await,
        Err(Error::InvalidTransition { .. })
    ));
    assert!(matches!(
        m.cancel("op", "x").await,
        Err(Error::InvalidTransition { .. })
    ));
    step_to(&mut m, &world, S::Completed).await;
    assert!(matches!(
        m.rollback("op", "x").await,
        Err(Error::InvalidTransition { .. })
    ));
    assert_eq!(m.state(), S::Completed);
}

#[tokio::test]
async fn an_assignment_changed_behind_the_migration_stops_it_in_failed_without_touching_anything() {
    let world = World::new("meddled").await;
    let mut m = world.start().await;
    step_to(&mut m, &world, S::Importing).await;
    // Someone moves the tenant by hand.
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    let moved = world
        .registry
        .compare_and_set(&world.tenant, a.epoch, AssignmentChange::move_to(DST))
        .await
        .unwrap();
    let out = m.step().await.unwrap();
    assert_eq!(
        out,
        StepOutcome::Advanced {
            from: S::Importing,
            to: S::Failed
        }
    );
    assert_eq!(m.failure().map(|f| f.0), Some(MigrationState::Importing));
    assert!(m.failure().is_some_and(|f| f.1.contains("does not expect")));
    assert_eq!(world.registry.require_assignment(&world.tenant).await.unwrap(), moved);
    assert_eq!(world.plane.calls(DriverOp::Rollback), 0);
}

/// A driver whose `validate` during cutover takes longer than the freeze allows.
#[derive(Debug)]
struct SlowFinalValidation {
    inner: ReferenceDataPlane,
    clock: FakeClock,
    slow: AtomicBool,
}

#[async_trait]
impl MigrationDriver for SlowFinalValidation {
    async fn snapshot(&self, ctx: &MigrationContext) -> std::result::Result<SnapshotInfo, DriverError> {
        self.inner.snapshot(ctx).await
    }
    async fn import(&self, ctx: &MigrationContext, s: &SnapshotInfo) -> std::result::Result<(), DriverError> {
        self.inner.import(ctx, s).await
    }
    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> std::result::Result<(), DriverError> {
        self.inner.fence(ctx, stamp, epoch, holds).await
    }
    async fn validate(&self, ctx: &MigrationContext) -> std::result::Result<ValidationReport, DriverError> {
        if ctx.state == S::CutOver && self.slow.swap(false, Ordering::SeqCst) {
            self.clock.advance(Duration::from_secs(6));
        }
        self.inner.validate(ctx).await
    }
    async fn cleanup_source(&self, ctx: &MigrationContext) -> std::result::Result<(), DriverError> {
        self.inner.cleanup_source(ctx).await
    }
    async fn rollback(&self, ctx: &MigrationContext, from: S) -> std::result::Result<(), DriverError> {
        self.inner.rollback(ctx, from).await
    }
}

#[tokio::test]
async fn a_freeze_that_would_overrun_its_bound_is_refused_and_unfrozen() {
    let world = World::new("slow").await;
    let driver = Arc::new(SlowFinalValidation {
        inner: world.plane.clone(),
        clock: world.clock.clone(),
        slow: AtomicBool::new(true),
    });
    let migrator = Migrator::new(world.registry.clone(), driver)
        .clock(world.clock.clone())
        .config(config())
        .unwrap();
    let plan = migrator.plan(&world.tenant, DST).await.unwrap();
    let mut m = migrator.start(&plan, "op").await.unwrap();
    for _ in 0..5 {
        m.step().await.unwrap();
    }
    assert_eq!(m.state(), S::CutOver);
    let out = m.step().await.unwrap();
    assert!(
        matches!(out, StepOutcome::Refused { ref reason } if reason.contains("overrun")),
        "{out:?}"
    );
    assert_eq!(m.state(), S::Validating);
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(
        (a.stamp, a.mode),
        (SRC, AssignmentMode::DualWrite { shadow: DST }),
        "unfrozen"
    );
    world.plane.write(&a, "after", "unfreeze").unwrap();
    // The next attempt is quick and goes through.
    m.step().await.unwrap();
    assert_eq!(
        m.step().await.unwrap(),
        StepOutcome::Advanced {
            from: S::CutOver,
            to: S::Soaking
        }
    );
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        DST
    );
}

#[tokio::test]
async fn the_soak_waits_for_its_window_on_the_injected_clock() {
    let world = World::new("soak").await;
    let mut m = world.start().await;
    step_to(&mut m, &world, S::Soaking).await;
    let out = m.step().await.unwrap();
    let StepOutcome::Waiting { until, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(until, world.clock.now() + Duration::from_secs(2 * 3600));
    world.clock.advance(Duration::from_secs(2 * 3600 - 1));
    assert!(matches!(m.step().await.unwrap(), StepOutcome::Waiting { .. }));
    world.clock.advance(Duration::from_secs(1));
    assert_eq!(
        m.step().await.unwrap(),
        StepOutcome::Advanced {
            from: S::Soaking,
            to: S::CleaningUp
        }
    );
}

/// Takes one from a counter if it is positive.
#[cfg(feature = "tokio")]
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[cfg(feature = "tokio")]
/// A driver that hangs on its first `import` (a stuck data plane) and fails `snapshot` twice.
#[derive(Debug)]
#[cfg(feature = "tokio")]
struct Flaky {
    inner: ReferenceDataPlane,
    hangs: AtomicU32,
    snapshot_failures: AtomicU32,
}

#[cfg(feature = "tokio")]
#[async_trait]
impl MigrationDriver for Flaky {
    async fn snapshot(&self, ctx: &MigrationContext) -> std::result::Result<SnapshotInfo, DriverError> {
        if take_one(&self.snapshot_failures) {
            return Err(DriverError::retryable("source replica lagging"));
        }
        self.inner.snapshot(ctx).await
    }
    async fn import(&self, ctx: &MigrationContext, s: &SnapshotInfo) -> std::result::Result<(), DriverError> {
        if take_one(&self.hangs) {
            std::future::pending::<()>().await;
        }
        self.inner.import(ctx, s).await
    }
    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> std::result::Result<(), DriverError> {
        self.inner.fence(ctx, stamp, epoch, holds).await
    }
    async fn validate(&self, ctx: &MigrationContext) -> std::result::Result<ValidationReport, DriverError> {
        self.inner.validate(ctx).await
    }
    async fn cleanup_source(&self, ctx: &MigrationContext) -> std::result::Result<(), DriverError> {
        self.inner.cleanup_source(ctx).await
    }
    async fn rollback(&self, ctx: &MigrationContext, from: S) -> std::result::Result<(), DriverError> {
        self.inner.rollback(ctx, from).await
    }
}

#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn run_times_out_stuck_steps_retries_with_backoff_and_completes() {
    let world = World::new("run").await;
    let driver = Arc::new(Flaky {
        inner: world.plane.clone(),
        hangs: AtomicU32::new(1),
        snapshot_failures: AtomicU32::new(2),
    });
    let cfg = config()
        .soak_window(Duration::ZERO)
        .step_timeout(Duration::from_secs(10))
        .backoff(Duration::from_millis(100), Duration::from_secs(1));
    let migrator = Migrator::new(world.registry.clone(), driver.clone())
        .clock(world.clock.clone())
        .config(cfg)
        .unwrap();
    let plan = migrator.plan(&world.tenant, DST).await.unwrap();
    let mut m = migrator.start(&plan, "op").await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(
        m.run().await.unwrap(),
        RunOutcome::Finished(S::Completed),
        "{:?}",
        m.failure()
    );
    // The paused tokio clock shows the timeout and the backoffs were waited for.
    assert!(started.elapsed() >= Duration::from_millis(10_000 + 100 + 200));
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        DST
    );
    // The retried states persisted their attempts while in progress; none remain afterwards.
    assert_eq!(m.progress().attempt, 0);
}

#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn run_gives_up_retrying_after_max_attempts_and_rolls_back() {
    let world = World::new("run-fail").await;
    let driver = Arc::new(Flaky {
        inner: world.plane.clone(),
        hangs: AtomicU32::new(0),
        snapshot_failures: AtomicU32::new(100),
    });
    let migrator = Migrator::new(world.registry.clone(), driver)
        .clock(world.clock.clone())
        .config(config())
        .unwrap();
    let plan = migrator.plan(&world.tenant, DST).await.unwrap();
    let mut m = migrator.start(&plan, "op").await.unwrap();
    assert_eq!(m.run().await.unwrap(), RunOutcome::Finished(S::RolledBack));
    assert_eq!(m.failure().map(|f| f.0), Some(MigrationState::Snapshotting));
    assert!(m.failure().is_some_and(|f| f.1.contains("lagging")));
}

#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn run_stops_for_a_person_on_a_validation_mismatch_and_rolls_back_on_an_unhealthy_soak() {
    let world = World::new("run-mismatch").await;
    world.plane.corrupt(DST, &world.tenant, "junk", "1");
    let mut m = world.start().await;
    let out = m.run().await.unwrap();
    assert!(
        matches!(
            out,
            RunOutcome::Blocked {
                state: S::Validating,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        SRC
    );

    let world = World::with_config("run-soak", config().soak_poll(Duration::from_secs(60))).await;
    let mut m = world.start().await;
    world.unhealthy.store(true, Ordering::SeqCst);
    assert_eq!(m.run().await.unwrap(), RunOutcome::Finished(S::RolledBack));
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        SRC
    );
}

#[test]
fn config_validation_rejects_nonsense() {
    assert!(MigrationConfig::default().validate().is_ok());
    assert!(MigrationConfig::default().max_attempts(0).validate().is_err());
    assert!(MigrationConfig::default()
        .max_freeze(Duration::ZERO)
        .validate()
        .is_err());
    // The heartbeat lets a step outlive its lease; a lease as long as the validation may be
    // old would let a resumed migration find its validation stale.
    let long_step = MigrationConfig::default()
        .step_timeout(Duration::from_secs(60))
        .lease(Duration::from_secs(5));
    assert!(long_step.validate().is_ok());
    for lease in [Duration::ZERO, Duration::from_secs(600), Duration::from_secs(601)] {
        assert!(MigrationConfig::default().lease(lease).validate().is_err(), "{lease:?}");
    }
    let backoff = MigrationConfig::default().backoff(Duration::from_secs(2), Duration::from_secs(1));
    assert!(backoff.validate().is_err());
}

#[tokio::test]
async fn a_dual_write_split_by_the_cutover_fence_is_copied_under_the_freeze() {
    let world = World::new("split").await;
    let mut m = world.start().await;
    step_to(&mut m, &world, S::CutOver).await;
    let route = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(route.mode, AssignmentMode::DualWrite { shadow: DST });
    // The first half of a dual-write: applied on the source under the dual-write epoch, its
    // second half (to the destination) never made it before the cutover fenced it off.
    let half = Assignment::new(
        route.spec.clone(),
        SRC,
        route.epoch,
        AssignmentMode::Serving,
        route.assigned_at,
        route.updated_at,
    );
    world.plane.write(&half, "split", "source only").unwrap();
    assert_eq!(world.plane.get(DST, &world.tenant, "split"), None);
    // The cutover drains, copies the leftover, validates equal data and moves.
    assert_eq!(
        m.step().await.unwrap(),
        StepOutcome::Advanced {
            from: S::CutOver,
            to: S::Soaking
        }
    );
    assert_eq!(
        world.plane.get(DST, &world.tenant, "split").as_deref(),
        Some("source only")
    );
    assert_eq!(m.last_validation().map(|v| v.0), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_two_threads_racing_for_every_step_never_both_win() {
    scenarios::workers_on_two_threads_racing_for_every_step_never_both_win(&Backend::memory()).await;
}

#[tokio::test]
async fn s1_a_transient_error_late_in_the_soak_is_retried_not_rolled_back() {
    common::operate::a_transient_error_late_in_the_soak_is_retried_not_rolled_back(&Backend::memory()).await;
}

#[tokio::test]
async fn s2_a_crash_inside_the_cutover_never_needs_hand_repair() {
    common::operate::a_crash_inside_the_cutover_never_needs_hand_repair(&Backend::memory()).await;
}

#[tokio::test]
async fn s4_a_crash_during_the_freeze_refuses_writes_only_for_max_freeze() {
    let refused =
        common::operate::a_crash_during_the_freeze_refuses_writes_only_for_max_freeze(&Backend::memory()).await;
    println!("longest write refusal, crash during the freeze, default settings (fake clock): {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_lands_while_a_worker_holds_the_lease() {
    // Bounded: a regression (a command that never lands) fails here instead of hanging CI.
    let backend = Backend::memory();
    let run = common::operate::a_command_lands_while_a_worker_holds_the_lease(&backend);
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the scenario finished within 120 s");
}
