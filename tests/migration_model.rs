//! Model-based property tests of the migration state machine.
//!
//! 1. The transition table against an independently written model: random sequences of
//!    requested transitions are accepted exactly when the model allows them, and paths keep
//!    their invariants (nothing after a terminal state, no cancel after cutover, completion
//!    only through cleanup).
//! 2. The engine against the model: random operation sequences (step, cancel, rollback,
//!    crash-and-resume, injected driver failures, clock jumps, soak verdicts, corruption) on a
//!    real `Migration` over the reference data plane, with writes between operations. After
//!    every operation the observed transition is legal in the model, the assignment is one the
//!    state allows, and every acknowledged write is on the serving stamp.
#![cfg(feature = "test-util")]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use stamps::migration::reference::WriteError;
use stamps::migration::StepOutcome;
use stamps::{AssignmentMode, Error, MigrationState as S, RegistryExt};

/// The model: the runbook's transitions, written out pair by pair.
fn model() -> BTreeSet<(S, S)> {
    let forward = [
        (S::Planned, S::Snapshotting),
        (S::Snapshotting, S::Importing),
        (S::Importing, S::DualWrite),
        (S::DualWrite, S::Validating),
        (S::Validating, S::CutOver),
        (S::CutOver, S::Soaking),
        (S::Soaking, S::CleaningUp),
        (S::CleaningUp, S::Completed),
    ];
    let mut m: BTreeSet<(S, S)> = forward.into_iter().collect();
    m.insert((S::CutOver, S::Validating)); // refused cutover
    m.insert((S::Planned, S::Cancelled));
    for s in [
        S::Snapshotting,
        S::Importing,
        S::DualWrite,
        S::Validating,
        S::CutOver,
        S::Soaking,
    ] {
        m.insert((s, S::RollingBack));
    }
    m.insert((S::RollingBack, S::RolledBack));
    m.insert((S::RollingBack, S::Cancelled));
    for s in S::ALL {
        if !matches!(s, S::Completed | S::Cancelled | S::RolledBack | S::Failed) {
            m.insert((s, S::Failed));
        }
    }
    m
}

fn any_state() -> impl Strategy<Value = S> {
    (0..S::ALL.len()).prop_map(|i| S::ALL[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_transition_table_matches_the_model(requests in proptest::collection::vec(any_state(), 1..40)) {
        let model = model();
        let mut state = S::Planned;
        let mut path = vec![state];
        for next in requests {
            let allowed = model.contains(&(state, next));
            prop_assert_eq!(state.can_transition_to(next), allowed, "{} -> {}", state, next);
            prop_assert_eq!(state.next_states().any(|n| n == next), allowed);
            match state.transition(next) {
                Ok(n) => {
                    prop_assert!(allowed);
                    prop_assert_eq!(n, next);
                    state = n;
                    path.push(n);
                }
                Err(Error::InvalidTransition { from, to, .. }) => {
                    prop_assert!(!allowed);
                    prop_assert_eq!((from, to), (state.as_str(), next.as_str()));
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
        // Path invariants.
        if let Some(i) = path.iter().position(|s| s.is_terminal()) {
            prop_assert_eq!(i, path.len() - 1, "nothing after a terminal state: {:?}", path);
        }
        if let Some(cut) = path.iter().position(|s| *s == S::Soaking) {
            // Once serving from the destination, the only ways out are forward or rollback.
            prop_assert!(!path[cut..].contains(&S::Cancelled) || path[cut..].contains(&S::RollingBack));
        }
        if path.contains(&S::Completed) {
            let i = path.iter().position(|s| *s == S::Completed).unwrap_or(0);
            prop_assert_eq!(path[i - 1], S::CleaningUp);
        }
        if let Some(c) = path.iter().position(|s| *s == S::CleaningUp) {
            prop_assert!(!path[c..].contains(&S::RollingBack), "no rollback once cleanup starts");
        }
    }
}

#[test]
fn every_state_can_reach_a_terminal_state_and_terminal_states_are_sinks() {
    for s in S::ALL {
        assert!(!s.can_transition_to(s));
        if s.is_terminal() {
            assert_eq!(s.next_states().count(), 0, "{s}");
        } else {
            assert!(s.can_transition_to(S::Failed), "{s}");
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Step,
    Cancel,
    Rollback,
    /// Drop this worker and resume from the registry once its lease has expired.
    Crash,
    /// The next driver call fails.
    Fault {
        retryable: bool,
    },
    AdvanceClock {
        minutes: u16,
    },
    Unhealthy(bool),
    Corrupt,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => Just(Op::Step),
        1 => Just(Op::Cancel),
        1 => Just(Op::Rollback),
        2 => Just(Op::Crash),
        2 => any::<bool>().prop_map(|retryable| Op::Fault { retryable }),
        1 => (0u16..200).prop_map(|minutes| Op::AdvanceClock { minutes }),
        1 => any::<bool>().prop_map(Op::Unhealthy),
        1 => Just(Op::Corrupt),
    ]
}

/// The assignments a state allows (source, destination, mode), as the module docs promise.
fn allowed(state: S, a: &stamps::Assignment) -> bool {
    let fwd = AssignmentMode::DualWrite { shadow: DST };
    let rev = AssignmentMode::DualWrite { shadow: SRC };
    let on_src = a.stamp == SRC;
    let on_dst = a.stamp == DST;
    let frozen = matches!(a.mode, AssignmentMode::Frozen { shadow: Some(s), .. } if s == DST);
    match state {
        S::Planned | S::Snapshotting | S::Importing | S::RolledBack | S::Cancelled => {
            on_src && a.mode == AssignmentMode::Serving
        }
        S::DualWrite => on_src && (a.mode == AssignmentMode::Serving || a.mode == fwd),
        S::Validating => on_src && a.mode == fwd,
        S::CutOver => (on_src && (a.mode == fwd || frozen)) || (on_dst && a.mode == rev),
        S::Soaking => on_dst && a.mode == rev,
        S::CleaningUp => on_dst && (a.mode == rev || a.mode == AssignmentMode::Serving),
        S::Completed => on_dst && a.mode == AssignmentMode::Serving,
        S::RollingBack => !(on_dst && a.mode == AssignmentMode::Serving),
        S::Failed => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_engine_follows_the_model_and_loses_no_write(ops in proptest::collection::vec(op(), 1..50)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let model = model();
            let world = World::new("modelled").await;
            let mut m = world.start().await;
            let mut acked: Vec<(String, String)> = Vec::new();
            let mut seq = 0u64;
            let mut visited = vec![m.state()];
            let finish = std::iter::repeat_n(Op::Step, 40);
            for op in ops.into_iter().chain(finish) {
                let before = m.state();
                match op {
                    Op::Step => match m.step().await {
                        Ok(StepOutcome::Waiting { .. }) => world.clock.advance(Duration::from_secs(3600)),
                        Ok(_) => {}
                        Err(e) => panic!("step: {e}"),
                    },
                    Op::Cancel => {
                        let r = m.cancel("prop", "test").await;
                        assert_eq!(r.is_ok(), before.is_cancellable(), "cancel in {before}: {r:?}");
                    }
                    Op::Rollback => {
                        let r = m.rollback("prop", "test").await;
                        assert_eq!(r.is_ok(), before.can_roll_back(), "rollback in {before}: {r:?}");
                    }
                    Op::Crash => {
                        world.clock.advance(world.migrator.settings().lease);
                        m = world.migrator.load(m.id()).await.unwrap();
                    }
                    Op::Fault { retryable } => world.switch.fault_at(1, retryable),
                    Op::AdvanceClock { minutes } => world.clock.advance(Duration::from_secs(60 * u64::from(minutes))),
                    Op::Unhealthy(on) => world.unhealthy.store(on, Ordering::SeqCst),
                    Op::Corrupt => world.plane.corrupt(DST, &world.tenant, "corrupt", "x"),
                }
                let after = m.state();
                if after != before {
                    assert!(model.contains(&(before, after)), "illegal transition {before} -> {after}");
                    visited.push(after);
                }
                let a = world.registry.require_assignment(&world.tenant).await.unwrap();
                assert!(allowed(after, &a), "state {after} with assignment on {} ({})", a.stamp, a.mode);
                // Write through the current route, then check every acknowledged write is on
                // the serving stamp.
                seq += 1;
                let (k, v) = (format!("k{seq}"), format!("v{seq}"));
                match world.plane.write(&a, &k, &v) {
                    Ok(_) => acked.push((k, v)),
                    Err(WriteError::Frozen { .. }) => {}
                    Err(e) => panic!("fresh route refused: {e}"),
                }
                let rows = world.plane.dump(a.stamp, &world.tenant);
                for (k, v) in &acked {
                    assert_eq!(rows.get(k), Some(v), "acknowledged write {k} missing on {} in {after}", a.stamp);
                }
                if after.is_terminal() {
                    break;
                }
            }
            // Every run ends (the finishing steps drive it through the soak).
            let end = m.state();
            if !end.is_terminal() {
                // Only a blocked validation (corruption) may remain: a person rolls back.
                assert_eq!(end, S::Validating, "{visited:?}");
                m.rollback("prop", "corrupt").await.unwrap();
                while !m.state().is_terminal() {
                    m.step().await.unwrap();
                }
            }
            let a = world.registry.require_assignment(&world.tenant).await.unwrap();
            assert_eq!(a.mode, AssignmentMode::Serving, "ended {} with {}", m.state(), a.mode);
            let rows = world.plane.dump(a.stamp, &world.tenant);
            for (k, v) in &acked {
                assert_eq!(rows.get(k), Some(v));
            }
        });
    }
}

#[derive(Debug, Clone)]
enum FenceOp {
    Raise { tenant: u8, epoch: u64, holds: bool },
    Admit { tenant: u8, stamp: u32, epoch: u64 },
}

fn fence_op() -> impl Strategy<Value = FenceOp> {
    prop_oneof![
        (0u8..3, 0u64..20, any::<bool>()).prop_map(|(tenant, epoch, holds)| FenceOp::Raise { tenant, epoch, holds }),
        (0u8..3, 1u32..3, 0u64..20).prop_map(|(tenant, stamp, epoch)| FenceOp::Admit { tenant, stamp, epoch }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The fence against a model: per tenant the newest epoch and whether the stamp holds it;
    /// a token is admitted iff it is addressed here and newer, or equal while held; epochs
    /// never go down.
    #[test]
    fn the_fence_matches_its_model(ops in proptest::collection::vec(fence_op(), 1..60)) {
        use stamps::migration::{Fence, FenceRejection, FenceToken};
        use stamps::{Epoch, StampId, TenantId};
        let mut fence = Fence::new(StampId(1));
        let mut model: std::collections::BTreeMap<u8, (u64, bool)> = Default::default();
        let tid = |t: u8| TenantId::new(&format!("t{t}")).unwrap();
        for op in ops {
            match op {
                FenceOp::Raise { tenant, epoch, holds } => {
                    fence.raise(&tid(tenant), Epoch(epoch), holds);
                    let e = model.entry(tenant).or_insert((epoch, holds));
                    if epoch > e.0 {
                        *e = (epoch, holds);
                    } else if epoch == e.0 {
                        e.1 = e.1 && holds;
                    }
                }
                FenceOp::Admit { tenant, stamp, epoch } => {
                    let token = FenceToken::new(tid(tenant), StampId(stamp), Epoch(epoch));
                    let got = fence.admit(&token);
                    let expected = if stamp != 1 {
                        Err(FenceRejection::WrongStamp { this: StampId(1), token: StampId(stamp) })
                    } else {
                        match model.get(&tenant).copied() {
                            None => Ok(()),
                            Some((e, _)) if epoch > e => Ok(()),
                            Some((e, true)) if epoch == e => Ok(()),
                            Some((e, false)) if epoch == e => Err(FenceRejection::NotHeld { since: Epoch(e) }),
                            Some((e, _)) => Err(FenceRejection::Stale { token: Epoch(epoch), current: Epoch(e) }),
                        }
                    };
                    prop_assert_eq!(got, expected);
                    if got.is_ok() {
                        let e = model.entry(tenant).or_insert((epoch, true));
                        if epoch > e.0 {
                            *e = (epoch, true);
                        }
                    }
                }
            }
            for (t, (e, h)) in &model {
                prop_assert_eq!(fence.current(&tid(*t)), Some((Epoch(*e), *h)));
            }
        }
    }
}
