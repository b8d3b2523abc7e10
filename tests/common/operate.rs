//! Scenarios of running migrations as an operator does: transient errors late in the soak, a
//! crash inside the cutover, a crash during the freeze, and commands from another process while
//! a worker holds the lease. Run by every backend's test binary.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use stamps::migration::*;
use stamps::testing::{Call, FaultyRegistry};
use stamps::{MigrationState as S, *};
use tokio::sync::Semaphore;

use super::{lost_writes, step_to, Backend, World, DST, SRC};

fn quick(cfg: MigrationConfig) -> MigrationConfig {
    cfg.backoff(Duration::ZERO, Duration::ZERO)
        .soak_window(Duration::from_secs(3600))
        .soak_poll(Duration::from_secs(60))
}

/// Steps `m` to a terminal state on the fake clock; panics on `Blocked`/`Refused` (hand repair).
async fn finish(world: &World, m: &mut Migration) -> S {
    for _ in 0..200 {
        match m.step().await.unwrap() {
            StepOutcome::Finished { state } => return state,
            StepOutcome::Advanced { to, .. } if to.is_terminal() => return to,
            StepOutcome::Advanced { .. } | StepOutcome::Retry { .. } => {}
            StepOutcome::Refused { reason } => eprintln!("refused (the engine recovers): {reason}"),
            StepOutcome::Waiting { .. } => world.clock.advance(Duration::from_secs(600)),
            other => panic!("needs a person: {other:?}"),
        }
    }
    panic!("no terminal state after 200 steps");
}

/// S1: after six healthy soak polls, one failed `assignment` read is retried, not rolled back.
pub async fn a_transient_error_late_in_the_soak_is_retried_not_rolled_back(b: &Backend) {
    let world = b.world_with_config("soak-transient", quick(super::config())).await;
    let faulty = Arc::new(FaultyRegistry::new(world.registry.clone()));
    let migrator = Migrator::new(faulty.clone(), Arc::new(world.plane.clone()))
        .clock(world.clock.clone())
        .config(quick(super::config()))
        .unwrap();
    let plan = migrator.plan(&world.tenant, DST).await.unwrap();
    let mut m = migrator.start(&plan, "test-operator").await.unwrap();
    for _ in 0..20 {
        if m.state() == S::Soaking {
            break;
        }
        m.step().await.unwrap();
    }
    assert_eq!(m.state(), S::Soaking);
    for poll in 0..6 {
        let o = m.step().await.unwrap();
        assert!(matches!(o, StepOutcome::Waiting { .. }), "poll {poll}: {o:?}");
        world.clock.advance(Duration::from_secs(60));
    }
    faulty.fail_only(|c| c == Call::Assignment);
    faulty.fail_next(1);
    let o = m.step().await.unwrap();
    assert!(
        matches!(
            o,
            StepOutcome::Retry {
                state: S::Soaking,
                attempt: 1,
                ..
            }
        ),
        "a single failed read is one failure, not the seventh: {o:?}"
    );
    assert_eq!(m.state(), S::Soaking);
    faulty.fail_all();
    assert!(matches!(m.step().await.unwrap(), StepOutcome::Waiting { .. }));
    assert_eq!(finish(&world, &mut m).await, S::Completed);
}

/// S2: a dual-write reaches the source but not the destination, the worker dies inside the
/// cutover before the freeze-time catch-up, and its lease outlives the validation: the resumed
/// migration catches up before validating again and completes without hand repair.
pub async fn a_crash_inside_the_cutover_never_needs_hand_repair(b: &Backend) {
    // The settings under which the issue was seen: a lease as long as `max_validation_age`
    // (now refused by `MigrationConfig::validate`; the longest allowed is just below it).
    let cfg = quick(MigrationConfig::default())
        .step_timeout(Duration::from_secs(600))
        .lease(Duration::from_secs(599))
        .max_validation_age(Duration::from_secs(600));
    let world = b.world_with_config("cutover-crash", cfg).await;
    let mut m = world.start().await;
    step_to(&mut m, &world, S::CutOver).await;
    // A dual-write that reached the source only: the freeze fence refused it on the destination.
    let a = world.registry.require_assignment(&world.tenant).await.unwrap();
    let mut source_only = a.clone();
    source_only.mode = AssignmentMode::Serving;
    world.plane.write(&source_only, "half-written", "v1").unwrap();
    // Claim (1), freeze (2), fence the source (3), fence the destination (4): die there,
    // before the catch-up.
    world.switch.crash_at(4);
    tokio::select! {
        o = m.step() => panic!("the step should have crashed: {o:?}"),
        () = world.switch.tripped() => {}
    }
    drop(m);
    world.clock.advance(Duration::from_secs(601));
    let mut resumed = load_as(&world, "resumer").await;
    assert_eq!(finish(&world, &mut resumed).await, S::Completed);
    assert_eq!(
        world
            .plane
            .dump(DST, &world.tenant)
            .get("half-written")
            .map(String::as_str),
        Some("v1")
    );
    assert_eq!(lost_writes(&world, &[]).await, 0);
}

/// S4: a worker dies right after freezing writes. Writes are accepted again once `max_freeze`
/// passed; an operator's rollback and a fresh worker's step get no bogus `Conflict`; the fresh
/// worker finishes the rollback once the dead worker's lease expired. Returns the longest write
/// refusal seen (fake clock).
pub async fn a_crash_during_the_freeze_refuses_writes_only_for_max_freeze(b: &Backend) -> Duration {
    let cfg = quick(MigrationConfig::default());
    let world = b.world_with_config("freeze-crash", cfg.clone()).await;
    let mut m = world.start().await;
    step_to(&mut m, &world, S::CutOver).await;
    // Claim (1), freeze (2): die with writes frozen.
    world.switch.crash_at(2);
    tokio::select! {
        o = m.step() => panic!("the step should have crashed: {o:?}"),
        () = world.switch.tripped() => {}
    }
    drop(m);
    let frozen_at = world.clock.now();
    let mut acked = vec![];
    // Write every 100 ms of fake time until a write is accepted.
    let refused_for = loop {
        match world
            .plane
            .write_via(world.registry.as_ref(), &world.tenant, "during-freeze", "v1")
            .await
        {
            Ok(_) => break world.clock.now().saturating_since(frozen_at),
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
        assert!(world.clock.now().saturating_since(frozen_at) <= cfg.max_freeze + cfg.soak_poll);
        world.clock.advance(Duration::from_millis(100));
    };
    acked.push(("during-freeze".to_string(), "v1".to_string()));
    assert!(
        refused_for <= cfg.max_freeze + Duration::from_millis(100),
        "{refused_for:?}"
    );
    // The dead worker's lease is still live: a fresh worker waits, typed; the operator's
    // rollback is recorded for whoever holds the lease next.
    let mut fresh = load_as(&world, "fresh").await;
    match fresh.step().await {
        Err(Error::LeaseHeld { .. }) => {}
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    let mut ops = load_as(&world, "ops").await;
    assert_eq!(
        ops.rollback("oncall", "worker died mid-cutover").await.unwrap(),
        S::CutOver
    );
    assert_eq!(
        ops.pending_command().map(|c| (c.kind.as_str(), c.by.as_str())),
        Some(("rollback", "oncall"))
    );
    world.clock.advance(cfg.lease);
    fresh.reload().await.unwrap();
    assert_eq!(finish(&world, &mut fresh).await, S::RolledBack);
    assert_eq!(
        world.registry.require_assignment(&world.tenant).await.unwrap().stamp,
        SRC
    );
    assert_eq!(lost_writes(&world, &acked).await, 0);
    refused_for
}

/// Operator commands: while a worker holds the lease in a long soak check, a rollback from
/// another process is recorded at once, and the holder rolls back at its next step.
pub async fn a_command_lands_while_a_worker_holds_the_lease(b: &Backend) {
    let world = b.world_with_config("command-lease", quick(super::config())).await;
    let gate = Arc::new(Semaphore::new(0));
    let checks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (g, c) = (gate.clone(), checks.clone());
    let migrator = world
        .migrator
        .clone()
        .soak_check(soak_check_fn(move |_: &MigrationContext| {
            // The third check is slow: it waits for the gate (a long soak check holding the lease).
            if c.fetch_add(1, Ordering::SeqCst) == 2 {
                // A synchronous wait: hand this worker thread's queued tasks (a database
                // connection's, say) to another thread first, or they would wait with it.
                tokio::task::block_in_place(|| {
                    while g.try_acquire().is_err() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                });
            }
            SoakVerdict::Healthy
        }));
    let plan = migrator.plan(&world.tenant, DST).await.unwrap();
    let mut holder = migrator.start(&plan, "test-operator").await.unwrap();
    step_to(&mut holder, &world, S::Soaking).await;
    assert!(matches!(holder.step().await.unwrap(), StepOutcome::Waiting { .. }));
    assert!(matches!(holder.step().await.unwrap(), StepOutcome::Waiting { .. }));
    let id = holder.id();
    let running = tokio::spawn(async move {
        let o = holder.step().await;
        (holder, o)
    });
    while !world
        .registry
        .migration(id)
        .await
        .unwrap()
        .unwrap()
        .data
        .contains_key("lease.owner")
    {
        tokio::task::yield_now().await;
    }
    let mut ops = migrator.clone().worker_name("ops").load(id).await.unwrap();
    let landed = tokio::time::timeout(Duration::from_secs(5), ops.rollback("oncall", "error budget"))
        .await
        .expect("the command lands at once")
        .unwrap();
    assert_eq!(landed, S::Soaking);
    assert_eq!(
        ops.pending_command().map(|c| (c.kind.as_str(), c.by.as_str())),
        Some(("rollback", "oncall"))
    );
    gate.add_permits(1);
    let (mut holder, o) = running.await.unwrap();
    assert!(matches!(o.unwrap(), StepOutcome::Waiting { .. }));
    assert_eq!(
        holder.step().await.unwrap(),
        StepOutcome::Advanced {
            from: S::Soaking,
            to: S::RollingBack
        }
    );
    assert_eq!(finish(&world, &mut holder).await, S::RolledBack);
    assert_eq!(holder.progress().rollback_by.as_deref(), Some("oncall"));
}

/// The tenant's active migration, loaded by a worker named `name`.
async fn load_as(world: &World, name: &str) -> Migration {
    let id = world.load_active().await.id();
    world.migrator.clone().worker_name(name).load(id).await.unwrap()
}
