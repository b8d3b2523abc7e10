//! The migration scenarios, written once and run by every backend's test binary
//! (`migration_no_lost_writes.rs` and `migration_engine.rs` on the in-memory registry,
//! `migration_postgres.rs` on PostgreSQL). Each takes the [`Backend`] whose fresh registries
//! its worlds live on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use stamps::migration::reference::WriteError;
use stamps::migration::StepOutcome;
use stamps::MigrationState as S;

/// One migration with live writers; returns (final stop, acked, lost).
pub async fn one(world: &World, until_rollback: Option<S>) -> (Stop, usize, u64) {
    let writers = Writers::start(world);
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

pub async fn full_migration_with_concurrent_writers_loses_nothing(b: &Backend) {
    let mut totals = Totals::default();
    let world = b.world("acme").await;
    let (stop, acked, lost) = one(&world, None).await;
    assert_eq!(stop, Stop::Terminal(S::Completed));
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(a.stamp, DST);
    assert!(!world.plane.holds(SRC, &world.tenant), "source cleaned up");
    assert!(acked > 0);
    assert_eq!(lost, 0);
    totals.add(acked, lost);
    b.report(&totals, "full migration");
}

pub async fn a_crash_at_every_registry_write_and_driver_call_resumes_without_loss(b: &Backend) {
    // Count the crash points of a clean run (forward path), then crash at each in turn.
    let probe = b.world("probe").await;
    let (stop, _, _) = one(&probe, None).await;
    assert_eq!(stop, Stop::Terminal(S::Completed));
    let points = probe.switch.calls();
    assert!(points >= 30, "expected at least 30 crash points, saw {points}");
    let mut totals = Totals::default();
    for k in 1..=points {
        let world = b.world(&format!("crash-{k}")).await;
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
    b.report(&totals, &format!("crash at each of {points} points, forward path"));

    // And the rollback path: crash at every point of a soak-triggered rollback.
    let probe = b.world("probe-rb").await;
    probe.unhealthy.store(true, Ordering::SeqCst);
    let (stop, _, _) = one(&probe, None).await;
    assert_eq!(stop, Stop::Terminal(S::RolledBack));
    let points = probe.switch.calls();
    let mut totals = Totals::default();
    for k in 1..=points {
        let world = b.world(&format!("crash-rb-{k}")).await;
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
    b.report(
        &totals,
        &format!("crash at each of {points} points, rollback after cutover"),
    );
}

/// Steps `m` to its end as `Migration::step` tells hosts to: an `Unavailable` is stepped again.
/// Returns the stop and how many steps answered `Unavailable`.
pub async fn step_through_unavailable(world: &World, m: &mut Migration, writers: &Writers) -> (Stop, u32) {
    let mut unavailable = 0;
    for _ in 0..500 {
        if m.state().is_terminal() {
            return (Stop::Terminal(m.state()), unavailable);
        }
        writers.progress(10).await;
        match m.step().await {
            Ok(StepOutcome::Waiting { .. }) => world.clock.advance(Duration::from_secs(1800)),
            Ok(StepOutcome::Blocked { reason, .. }) => return (Stop::Blocked(reason), unavailable),
            Ok(StepOutcome::Refused { reason }) => return (Stop::Refused(reason), unavailable),
            Ok(_) => {}
            Err(e @ Error::Unavailable { .. }) => {
                unavailable += 1;
                assert!(unavailable <= 3, "unavailable again and again: {e}");
            }
            Err(e) => panic!("step failed: {e} in {:?}", m.record()),
        }
    }
    panic!("migration does not converge: {:?}", m.record());
}

/// A registry write that took effect but answered `Unavailable` (on a database: the
/// connection broke after the commit). Stepping again, as the docs say, must re-read the
/// record rather than act on a stale one: at each registry write of a migration in turn, it
/// still completes without loss; and a cancel or rollback after one acts on the fresh record.
pub async fn a_lost_acknowledgement_at_every_registry_write_is_stepped_through(b: &Backend) {
    let probe = b.world("ack-probe").await;
    let writers = Writers::start(&probe);
    let mut m = probe.start().await;
    let (stop, _) = step_through_unavailable(&probe, &mut m, &writers).await;
    writers.stop().await;
    assert_eq!(stop, Stop::Terminal(S::Completed));
    let points = probe.switch.registry_writes();
    assert!(points >= 15, "expected at least 15 registry writes, saw {points}");
    let mut totals = Totals::default();
    for k in 1..=points {
        let world = b.world(&format!("ack-{k}")).await;
        let writers = Writers::start(&world);
        writers.progress(20).await;
        let mut m = world.start().await;
        world.switch.lose_ack_at(k);
        let (stop, unavailable) = step_through_unavailable(&world, &mut m, &writers).await;
        assert_eq!(world.switch.lost_acks.load(Ordering::SeqCst), 1, "write {k} reached");
        assert_eq!(stop, Stop::Terminal(S::Completed), "lost acknowledgement at write {k}");
        assert!(unavailable <= 1, "write {k}");
        let acked = writers.stop().await;
        let lost = lost_writes(&world, &acked).await;
        assert_eq!(lost, 0, "lost acknowledgement at write {k} lost writes");
        assert_eq!(
            world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
            DST
        );
        totals.add(acked.len(), lost);
    }
    b.report(
        &totals,
        &format!("lost acknowledgement at each of {points} registry writes"),
    );

    // A rollback right after a claim whose acknowledgement was lost: it acts on the record as
    // saved (this worker's lease), not the one it had.
    let world = b.world("ack-rollback").await;
    let mut m = world.start().await;
    step_to(&mut m, &world, S::DualWrite).await;
    world.switch.lose_ack_at(1);
    assert!(matches!(m.step().await, Err(Error::Unavailable { .. })));
    assert_eq!(
        m.rollback("test-operator", "after a lost acknowledgement")
            .await
            .unwrap(),
        S::RollingBack
    );
    let writers = Writers::start(&world);
    let (stop, _) = step_through_unavailable(&world, &mut m, &writers).await;
    writers.stop().await;
    assert_eq!(stop, Stop::Terminal(S::RolledBack));
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        SRC
    );
}

pub async fn a_driver_failure_at_every_call_is_retried_or_rolled_back_without_loss(b: &Backend) {
    let probe = b.world("probe").await;
    one(&probe, None).await;
    let calls = probe.switch.driver_calls();
    assert!(calls >= 10, "expected at least 10 driver calls, saw {calls}");
    let mut totals = Totals::default();
    for k in 1..=calls {
        for retryable in [true, false] {
            let world = b.world(&format!("fault-{k}-{retryable}")).await;
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
    b.report(
        &totals,
        &format!("driver failure at each of {calls} calls, retryable and permanent"),
    );
}

pub async fn validation_mismatch_refuses_cutover_and_a_rollback_loses_nothing(b: &Backend) {
    let mut totals = Totals::default();
    // Mismatch found by the live validation: blocked in Validating, tenant stays on the source.
    let world = b.world("mismatch").await;
    let writers = Writers::start(&world);
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
    let world = b.world("mismatch-late").await;
    let writers = Writers::start(&world);
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
    let world = b.world("stale").await;
    let writers = Writers::start(&world);
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
    b.report(&totals, "validation mismatch and staleness");
}

pub async fn rollback_before_cutover_from_every_state_loses_nothing(b: &Backend) {
    let mut totals = Totals::default();
    for state in [S::Snapshotting, S::Importing, S::DualWrite, S::Validating, S::CutOver] {
        let world = b.world(&format!("rb-{}", state.as_str())).await;
        let (stop, acked, lost) = one(&world, Some(state)).await;
        assert_eq!(stop, Stop::Terminal(S::RolledBack), "rollback from {state}");
        let a = world.registry.require_assignment(&world.tenant).await.unwrap();
        assert_eq!(a.stamp, SRC);
        assert!(!world.plane.holds(DST, &world.tenant));
        assert_eq!(lost, 0, "rollback from {state}");
        totals.add(acked, lost);
    }
    b.report(&totals, "rollback before cutover");
}

pub async fn rollback_after_cutover_during_soak_loses_nothing(b: &Backend) {
    let mut totals = Totals::default();
    // Triggered by the host's soak check.
    let world = b.world("soak-unhealthy").await;
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
    let world = b.world("soak-manual").await;
    let writers = Writers::start(&world);
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
    b.report(&totals, "rollback after cutover during soak");
}

pub async fn a_stale_router_cannot_write_to_the_old_stamp_after_cutover(b: &Backend) {
    let world = b.world("acme").await;
    let serving_route = world.registry.require_assignment(&world.tenant).await.unwrap();
    let mut m = world.start().await;
    step_to(&mut m, &world, S::Validating).await;
    let dual_write_route = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(dual_write_route.mode, AssignmentMode::DualWrite { shadow: DST });
    // A router that cached the pre-migration route is refused once dual-write fenced the source.
    let err = world.plane.write(&serving_route, "k", "stale").unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::Fenced {
                stamp: SRC,
                rejection: FenceRejection::Stale { .. }
            }
        ),
        "{err}"
    );
    world.plane.write(&dual_write_route, "k", "v1").unwrap();

    step_to(&mut m, &world, S::Soaking).await;
    let reverse = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(
        (reverse.stamp, reverse.mode),
        (DST, AssignmentMode::DualWrite { shadow: SRC })
    );
    // The router still holding the dual-write route writes "to the source": refused there.
    let err = world.plane.write(&dual_write_route, "k", "lost?").unwrap_err();
    assert!(
        matches!(err, WriteError::Fenced { stamp: SRC, rejection: FenceRejection::Stale { token, current } }
            if token == dual_write_route.epoch && current == reverse.epoch),
        "{err}"
    );
    assert_eq!(world.plane.get(SRC, &world.tenant, "k").as_deref(), Some("v1"));
    assert_eq!(world.plane.get(DST, &world.tenant, "k").as_deref(), Some("v1"));
    // A fresh route writes to both (reverse dual-write).
    world.plane.write(&reverse, "k", "v2").unwrap();
    assert_eq!(world.plane.get(SRC, &world.tenant, "k").as_deref(), Some("v2"));

    step_to(&mut m, &world, S::Completed).await;
    let done = world.registry.require_assignment(&world.tenant).await.unwrap();
    assert_eq!(done.mode, AssignmentMode::Serving);
    // After cleanup the source has given the tenant up: even a route naming the source at the
    // newest epoch is refused (a token forged or mis-built for the old stamp).
    let forged = FenceToken::new(world.tenant.clone(), SRC, done.epoch);
    assert_eq!(world.plane.fence_state(SRC, &world.tenant), Some((done.epoch, false)));
    for stale in [&serving_route, &dual_write_route, &reverse] {
        let err = world.plane.write(stale, "k", "stale").unwrap_err();
        assert!(matches!(err, WriteError::Fenced { .. }), "{err}");
    }
    let mut fence = Fence::new(SRC);
    fence.raise(&world.tenant, done.epoch, false);
    assert_eq!(fence.admit(&forged), Err(FenceRejection::NotHeld { since: done.epoch }));
    assert_eq!(world.plane.get(DST, &world.tenant, "k").as_deref(), Some("v2"));
    assert!(!world.plane.holds(SRC, &world.tenant));
}

pub async fn two_workers_racing_one_wins_the_other_gets_conflict_before_any_effect(b: &Backend) {
    let world = b.world("race").await;
    let m = world.start().await;
    let id = m.id();
    for _ in 0..4 {
        // Both load the same revision and step at once.
        let mut a = world.migrator.load(id).await.unwrap();
        let mut b = world.migrator.load(id).await.unwrap();
        let calls_before = world.switch.driver_calls();
        let (ra, rb) = tokio::join!(a.step(), b.step());
        let conflicts = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(Error::Conflict { .. } | Error::LeaseHeld { .. })))
            .count();
        let wins = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Ok(StepOutcome::Advanced { .. })))
            .count();
        assert_eq!((wins, conflicts), (1, 1), "{ra:?} {rb:?}");
        // Only the winner's step reached the driver (at most the calls of one state's work).
        assert!(world.switch.driver_calls() - calls_before <= 3);
    }
    // A worker that loads while another holds a live lease is refused too.
    let mut holder = world.migrator.load(id).await.unwrap();
    let snapshot = world.registry.migration(id).await.unwrap().unwrap();
    let mut claimed = snapshot.clone();
    // Another worker's claim, written the way the engine stores it.
    claimed.data.insert("lease.owner".into(), "someone-else#1".into());
    let lease_until = world.clock.now() + Duration::from_secs(30);
    claimed
        .data
        .insert("lease.until".into(), lease_until.as_millis().to_string());
    world.registry.save_migration(&claimed).await.unwrap();
    holder.reload().await.unwrap();
    match holder.step().await {
        Err(Error::LeaseHeld { holder, until, .. }) => {
            assert_eq!((holder.as_str(), until), ("someone-else#1", lease_until));
        }
        other => panic!("a live lease of another worker must be LeaseHeld, got {other:?}"),
    }
    // An operator's rollback needs no lease: it is queued for the holder, not refused.
    let state = holder.state();
    assert_eq!(holder.rollback("op", "x").await.unwrap(), state);
    assert_eq!(
        holder.pending_command().map(|c| (c.kind.as_str(), c.by.as_str())),
        Some(("rollback", "op"))
    );
    // Once the lease expires, the migration can be resumed by anyone, who honours the command.
    world.clock.advance(Duration::from_secs(31));
    assert!(matches!(
        holder.step().await,
        Ok(StepOutcome::Advanced { to: S::RollingBack, .. })
    ));
}

pub async fn workers_on_two_threads_racing_for_every_step_never_both_win(b: &Backend) {
    let world = b.world("race-mt").await;
    let id = world.start().await.id();
    let mut rounds = 0;
    loop {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (migrator, barrier) = (world.migrator.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut m = migrator.load(id).await.unwrap();
                    barrier.wait().await;
                    m.step().await
                })
            })
            .collect();
        let mut wins = 0;
        let mut conflicts = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(StepOutcome::Advanced { .. } | StepOutcome::Waiting { .. }) => wins += 1,
                Err(Error::Conflict { .. } | Error::LeaseHeld { .. }) => conflicts += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((wins, conflicts), (1, 1), "round {rounds}");
        rounds += 1;
        let state = world.migrator.load(id).await.unwrap().state();
        if state == S::Soaking {
            world.clock.advance(Duration::from_secs(3 * 3600));
        }
        if state.is_terminal() {
            break;
        }
    }
    assert!(rounds >= 8, "one round per step of the forward path, saw {rounds}");
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        DST
    );
}
