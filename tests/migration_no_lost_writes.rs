//! Invariant 7, no lost writes: concurrent writer tasks write to a tenant through the
//! registry's current route and the reference data plane while it migrates; at the end every
//! acknowledged write is on the stamp that serves the tenant. Repeated with a crash injected
//! at every registry write and driver call, a driver failure injected at every driver call,
//! validation mismatches, rollback before cutover and rollback after cutover during the soak.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use stamps::migration::StepOutcome;
use stamps::{MigrationState as S, Registry, RegistryExt};

const WRITERS: usize = 3;

/// One migration with live writers; returns (final stop, acked, lost).
async fn one(world: &World, until_rollback: Option<S>) -> (Stop, usize, u64) {
    let writers = Writers::spawn(world, WRITERS);
    writers.progress(20).await;
    let mut m = world.start().await;
    let mut stop = drive(world, &mut m, &writers, until_rollback).await;
    if let Stop::Reached(_) = stop {
        m.rollback("test-operator", "testing rollback").await.unwrap();
        stop = drive(world, &mut m, &writers, None).await;
    }
    // A crash long in the cutover freeze is refused when resumed (the dead worker's lease
    // outlived max_freeze): writes were unfrozen, validation runs again, the cutover retried.
    let mut refusals = 0;
    while let Stop::Refused(_) = stop {
        refusals += 1;
        assert!(refusals <= 2, "cutover refused repeatedly");
        stop = drive(world, &mut m, &writers, None).await;
    }
    writers.progress(20).await;
    let acked = writers.stop().await;
    let lost = lost_writes(world, &acked).await;
    (stop, acked.len(), lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_migration_with_concurrent_writers_loses_nothing() {
    let mut totals = Totals::default();
    let world = World::new("acme").await;
    let (stop, acked, lost) = one(&world, None).await;
    assert_eq!(stop, Stop::Terminal(S::Completed));
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(a.stamp, DST);
    assert!(!world.plane.holds(SRC, &world.tenant), "source cleaned up");
    assert!(acked > 0);
    assert_eq!(lost, 0);
    totals.add(acked, lost);
    totals.report("full migration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_registry_write_and_driver_call_resumes_without_loss() {
    // Count the crash points of a clean run (forward path), then crash at each in turn.
    let probe = World::new("probe").await;
    let (stop, _, _) = one(&probe, None).await;
    assert_eq!(stop, Stop::Terminal(S::Completed));
    let points = probe.switch.calls();
    assert!(points >= 30, "expected at least 30 crash points, saw {points}");
    let mut totals = Totals::default();
    for k in 1..=points {
        let world = World::new(&format!("crash-{k}")).await;
        world.switch.crash_at(k);
        let (stop, acked, lost) = one(&world, None).await;
        assert_eq!(
            world.switch.crashes.load(Ordering::SeqCst),
            1,
            "crash point {k} was reached"
        );
        assert_eq!(stop, Stop::Terminal(S::Completed), "crash point {k}");
        assert_eq!(lost, 0, "crash point {k} lost writes");
        totals.add(acked, lost);
    }
    totals.report(&format!("crash at each of {points} points, forward path"));

    // And the rollback path: crash at every point of a soak-triggered rollback.
    let probe = World::new("probe-rb").await;
    probe.unhealthy.store(true, Ordering::SeqCst);
    let (stop, _, _) = one(&probe, None).await;
    assert_eq!(stop, Stop::Terminal(S::RolledBack));
    let points = probe.switch.calls();
    let mut totals = Totals::default();
    for k in 1..=points {
        let world = World::new(&format!("crash-rb-{k}")).await;
        world.unhealthy.store(true, Ordering::SeqCst);
        world.switch.crash_at(k);
        let (stop, acked, lost) = one(&world, None).await;
        assert_eq!(stop, Stop::Terminal(S::RolledBack), "crash point {k}");
        assert_eq!(lost, 0, "crash point {k} lost writes");
        let a = world.registry.require_assignment(&world.tenant).await.unwrap();
        assert_eq!(a.stamp, SRC);
        assert!(!world.plane.holds(DST, &world.tenant), "destination copy removed");
        totals.add(acked, lost);
    }
    totals.report(&format!("crash at each of {points} points, rollback after cutover"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_failure_at_every_call_is_retried_or_rolled_back_without_loss() {
    let probe = World::new("probe").await;
    one(&probe, None).await;
    let calls = probe.switch.driver_calls();
    assert!(calls >= 10, "expected at least 10 driver calls, saw {calls}");
    let mut totals = Totals::default();
    for k in 1..=calls {
        for retryable in [true, false] {
            let world = World::new(&format!("fault-{k}-{retryable}")).await;
            world.switch.fault_at(k, retryable);
            let (stop, acked, lost) = one(&world, None).await;
            assert_eq!(world.switch.faults.load(Ordering::SeqCst), 1);
            let rec = world.registry.migrations(Some(&world.tenant)).await.unwrap().remove(0);
            let a = world.registry.require_assignment(&world.tenant).await.unwrap();
            if retryable {
                assert_eq!(stop, Stop::Terminal(S::Completed), "retryable fault at call {k}");
                assert_eq!(a.stamp, DST);
            } else {
                let failed_in = rec.data.get("failure.state").cloned().unwrap_or_default();
                match stop {
                    // Cleanup failures stop for a person, with the tenant safely on the destination.
                    Stop::Terminal(S::Failed) => {
                        assert_eq!(failed_in, "cleaning_up", "call {k}");
                        assert_eq!(a.stamp, DST);
                    }
                    Stop::Terminal(S::RolledBack) => {
                        assert_eq!(a.stamp, SRC);
                        assert!(!world.plane.holds(DST, &world.tenant));
                    }
                    other => panic!("permanent fault at call {k}: {other:?}"),
                }
                assert!(rec.data.contains_key("failure.error"));
            }
            assert_eq!(lost, 0, "fault at call {k} (retryable: {retryable}) lost writes");
            totals.add(acked, lost);
        }
    }
    totals.report(&format!(
        "driver failure at each of {calls} calls, retryable and permanent"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_mismatch_refuses_cutover_and_a_rollback_loses_nothing() {
    let mut totals = Totals::default();
    // Mismatch found by the live validation: blocked in Validating, tenant stays on the source.
    let world = World::new("mismatch").await;
    let writers = Writers::spawn(&world, WRITERS);
    let mut m = world.start().await;
    assert_eq!(
        drive(&world, &mut m, &writers, Some(S::Validating)).await,
        Stop::Reached(S::Validating)
    );
    world.plane.corrupt(DST, &world.tenant, "phantom", "not on the source");
    let stop = drive(&world, &mut m, &writers, None).await;
    assert!(
        matches!(stop, Stop::Blocked(ref r) if r.contains("MISMATCH") && r.contains("phantom")),
        "{stop:?}"
    );
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(a.stamp, SRC, "cutover refused");
    // Stepping again re-validates and stays blocked.
    assert!(matches!(m.step().await.unwrap(), StepOutcome::Blocked { .. }));
    assert_eq!(m.last_validation().map(|v| v.0), Some(false));
    m.rollback("test-operator", "destination copy is corrupt")
        .await
        .unwrap();
    assert_eq!(
        drive(&world, &mut m, &writers, None).await,
        Stop::Terminal(S::RolledBack)
    );
    let acked = writers.stop().await;
    let lost = lost_writes(&world, &acked).await;
    assert_eq!(lost, 0);
    totals.add(acked.len(), lost);

    // Mismatch that appears after the live validation: the final validation under the freeze
    // refuses the cutover, unfreezes, and the tenant never leaves the source.
    let world = World::new("mismatch-late").await;
    let writers = Writers::spawn(&world, WRITERS);
    let mut m = world.start().await;
    assert_eq!(
        drive(&world, &mut m, &writers, Some(S::CutOver)).await,
        Stop::Reached(S::CutOver)
    );
    world.plane.corrupt(DST, &world.tenant, "late-phantom", "x");
    let stop = drive(&world, &mut m, &writers, None).await;
    assert!(
        matches!(stop, Stop::Refused(ref r) if r.contains("under the freeze")),
        "{stop:?}"
    );
    assert_eq!(m.state(), S::Validating);
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(
        (a.stamp, a.mode),
        (SRC, stamps::AssignmentMode::DualWrite { shadow: DST })
    );
    m.cancel("test-operator", "giving up").await.unwrap();
    assert_eq!(
        drive(&world, &mut m, &writers, None).await,
        Stop::Terminal(S::Cancelled)
    );
    let acked = writers.stop().await;
    let lost = lost_writes(&world, &acked).await;
    assert_eq!(lost, 0);
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        SRC
    );
    totals.add(acked.len(), lost);

    // Stale validation: too old by the time the cutover runs; refused, re-validated, completed.
    let world = World::new("stale").await;
    let writers = Writers::spawn(&world, WRITERS);
    let mut m = world.start().await;
    assert_eq!(
        drive(&world, &mut m, &writers, Some(S::CutOver)).await,
        Stop::Reached(S::CutOver)
    );
    world.clock.advance(Duration::from_secs(601));
    let stop = drive(&world, &mut m, &writers, None).await;
    assert!(matches!(stop, Stop::Refused(ref r) if r.contains("old")), "{stop:?}");
    assert_eq!(
        drive(&world, &mut m, &writers, None).await,
        Stop::Terminal(S::Completed)
    );
    let acked = writers.stop().await;
    let lost = lost_writes(&world, &acked).await;
    assert_eq!(lost, 0);
    totals.add(acked.len(), lost);
    totals.report("validation mismatch and staleness");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_before_cutover_from_every_state_loses_nothing() {
    let mut totals = Totals::default();
    for state in [S::Snapshotting, S::Importing, S::DualWrite, S::Validating, S::CutOver] {
        let world = World::new(&format!("rb-{}", state.as_str())).await;
        let (stop, acked, lost) = one(&world, Some(state)).await;
        assert_eq!(stop, Stop::Terminal(S::RolledBack), "rollback from {state}");
        let a = world.registry.require_assignment(&world.tenant).await.unwrap();
        assert_eq!(a.stamp, SRC);
        assert!(!world.plane.holds(DST, &world.tenant));
        assert_eq!(lost, 0, "rollback from {state}");
        totals.add(acked, lost);
    }
    totals.report("rollback before cutover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_cutover_during_soak_loses_nothing() {
    let mut totals = Totals::default();
    // Triggered by the host's soak check.
    let world = World::new("soak-unhealthy").await;
    world.unhealthy.store(true, Ordering::SeqCst);
    let (stop, acked, lost) = one(&world, None).await;
    assert_eq!(stop, Stop::Terminal(S::RolledBack));
    let rec = world.registry.migrations(Some(&world.tenant)).await.unwrap().remove(0);
    assert_eq!(rec.data.get("rollback.from").map(String::as_str), Some("soaking"));
    assert!(rec.data["rollback.reason"].contains("error rate"));
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        SRC
    );
    assert_eq!(lost, 0);
    totals.add(acked, lost);

    // Asked for by a person, after writes were served from the destination for a while.
    let world = World::new("soak-manual").await;
    let writers = Writers::spawn(&world, WRITERS);
    let mut m = world.start().await;
    assert_eq!(
        drive(&world, &mut m, &writers, Some(S::Soaking)).await,
        Stop::Reached(S::Soaking)
    );
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(a.stamp, DST, "cut over");
    // Writes are served by the destination (and reverse dual-written to the source).
    writers.must_progress(200).await;
    m.rollback("test-operator", "customer reports slowness").await.unwrap();
    assert_eq!(
        drive(&world, &mut m, &writers, None).await,
        Stop::Terminal(S::RolledBack)
    );
    let acked = writers.stop().await;
    let lost = lost_writes(&world, &acked).await;
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        SRC
    );
    assert!(!world.plane.holds(DST, &world.tenant));
    assert_eq!(lost, 0);
    totals.add(acked.len(), lost);
    totals.report("rollback after cutover during soak");
}
