//! `InMemoryRegistry` beyond the conformance suite: a model-based property test over random
//! operation sequences, and multi-threaded races.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use stamps::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const STAMPS: u32 = 3;
const LIMIT: f64 = 100.0;

#[derive(Debug, Clone)]
enum Op {
    Assign { tenant: u8, stamp: u32, conns: u8 },
    Move { tenant: u8, stamp: u32 },
    DualWrite { tenant: u8, shadow: u32 },
    Serve { tenant: u8 },
    Unassign { tenant: u8 },
    StaleMove { tenant: u8, stamp: u32 },
    SetState { stamp: u32, state: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0u8..12;
    let s = 1u32..=STAMPS;
    prop_oneof![
        4 => (t.clone(), s.clone(), 0u8..40).prop_map(|(tenant, stamp, conns)| Op::Assign { tenant, stamp, conns }),
        2 => (t.clone(), s.clone()).prop_map(|(tenant, stamp)| Op::Move { tenant, stamp }),
        1 => (t.clone(), s.clone()).prop_map(|(tenant, shadow)| Op::DualWrite { tenant, shadow }),
        1 => t.clone().prop_map(|tenant| Op::Serve { tenant }),
        1 => t.clone().prop_map(|tenant| Op::Unassign { tenant }),
        1 => (t, s.clone()).prop_map(|(tenant, stamp)| Op::StaleMove { tenant, stamp }),
        1 => (s, 0u8..4).prop_map(|(stamp, state)| Op::SetState { stamp, state }),
    ]
}

fn name(t: u8) -> TenantId {
    TenantId::new(&format!("t{t}")).unwrap()
}

/// Checks the registry against invariants 1–3 after every operation.
fn check(reg: &InMemoryRegistry, rt: &tokio::runtime::Runtime, last_epoch: &mut BTreeMap<TenantId, Epoch>) {
    let fleet = rt.block_on(reg.fleet()).unwrap();
    let all = rt.block_on(reg.all_assignments()).unwrap();
    // Recompute usage from assignments: every stamp's usage is the sum of what it holds.
    let mut expected: BTreeMap<StampId, (u64, u64)> = BTreeMap::new();
    for a in &all {
        for s in a.stamps() {
            let e = expected.entry(s).or_default();
            e.0 += 1;
            e.1 += a.spec.demand.get(&Resource::Connections).as_milli();
        }
        // Fencing: the epoch never went backwards for this tenant.
        let prev = last_epoch.insert(a.tenant().clone(), a.epoch);
        assert!(prev.is_none_or(|p| p <= a.epoch), "epoch went backwards");
    }
    for load in &fleet.stamps {
        let (n, c) = expected.get(&load.id()).copied().unwrap_or_default();
        assert_eq!(load.tenants(), n, "tenant count of {}", load.id());
        assert_eq!(load.usage.get(&Resource::Connections).as_milli(), c);
        // No overbooking.
        assert!(c <= Amount::from_f64(LIMIT).unwrap().as_milli());
    }
    // One home: assignments are keyed by tenant, and the feed replays to the same state.
    let mut replay: BTreeMap<TenantId, Assignment> = BTreeMap::new();
    let batch = rt.block_on(reg.changes_since(Version::ZERO, usize::MAX)).unwrap();
    for c in batch.changes {
        if let ChangeKind::Assignment { tenant, assignment } = c.kind {
            match assignment {
                Some(a) => replay.insert(tenant, std::sync::Arc::unwrap_or_clone(a)),
                None => replay.remove(&tenant),
            };
        }
    }
    let now: BTreeMap<TenantId, Assignment> = all.into_iter().map(|a| (a.tenant().clone(), a)).collect();
    assert_eq!(replay, now);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_operation_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = rt();
        let reg = InMemoryRegistry::new();
        for s in 1..=STAMPS {
            let spec = StampSpec::new(StampId(s), format!("s{s}"), Region::new("r").unwrap(),
                Capacity::new([(Resource::Connections, LIMIT)], 0.25).unwrap()).unwrap();
            rt.block_on(reg.put_active_stamp(spec)).unwrap();
        }
        let mut epochs = BTreeMap::new();
        for op in ops {
            let r = &reg;
            let cur = |t: u8| rt.block_on(r.assignment(&name(t))).unwrap();
            let _ = match op {
                Op::Assign { tenant, stamp, conns } => {
                    let spec = TenantSpec::new(name(tenant))
                        .demand(Demand::of([(Resource::Connections, f64::from(conns))]).unwrap());
                    rt.block_on(reg.assign(&spec, StampId(stamp))).map(|_| ())
                }
                Op::Move { tenant, stamp } => match cur(tenant) {
                    Some(a) => rt.block_on(reg.compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(stamp)))).map(|_| ()),
                    None => Ok(()),
                },
                Op::DualWrite { tenant, shadow } => match cur(tenant) {
                    Some(a) => rt.block_on(reg.compare_and_set(a.tenant(), a.epoch,
                        AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(shadow) }))).map(|_| ()),
                    None => Ok(()),
                },
                Op::Serve { tenant } => match cur(tenant) {
                    Some(a) => rt.block_on(reg.compare_and_set(a.tenant(), a.epoch,
                        AssignmentChange::set_mode(AssignmentMode::Serving))).map(|_| ()),
                    None => Ok(()),
                },
                Op::Unassign { tenant } => match cur(tenant) {
                    Some(a) => rt.block_on(reg.unassign(a.tenant(), a.epoch)),
                    None => Ok(()),
                },
                Op::StaleMove { tenant, stamp } => match cur(tenant) {
                    Some(a) if a.epoch.0 > 0 => {
                        let r = rt.block_on(reg.compare_and_set(a.tenant(), Epoch(a.epoch.0 - 1), AssignmentChange::move_to(StampId(stamp))));
                        prop_assert!(matches!(r, Err(Error::Conflict { .. })), "stale epoch must conflict: {:?}", r);
                        Ok(())
                    }
                    _ => Ok(()),
                },
                Op::SetState { stamp, state } => {
                    let st = StampState::ALL[usize::from(state) % 4];
                    rt.block_on(reg.set_stamp_state(StampId(stamp), st)).map(|_| ())
                }
            };
            check(&reg, &rt, &mut epochs);
        }
    }
}

#[test]
fn threads_racing_for_the_last_slots_admit_exactly_the_free_number() {
    let reg = InMemoryRegistry::new();
    let rt = rt();
    let spec = StampSpec::new(
        StampId(1),
        "s1",
        Region::new("r").unwrap(),
        Capacity::new([(Resource::Tenants, 50.0)], 0.0).unwrap(),
    )
    .unwrap();
    rt.block_on(reg.put_active_stamp(spec)).unwrap();
    for i in 0..40 {
        rt.block_on(reg.assign(&TenantSpec::new(name(i)), StampId(1))).unwrap();
    }
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for th in 0..8u32 {
            let reg = reg.clone();
            let wins = &wins;
            scope.spawn(move || {
                let rt = self::rt();
                for i in 0..16u32 {
                    let t = TenantSpec::new(TenantId::new(&format!("racer-{th}-{i}")).unwrap());
                    match rt.block_on(reg.assign(&t, StampId(1))) {
                        Ok(_) => {
                            wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(Error::CapacityExceeded { .. }) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 10);
    let fleet = rt.block_on(reg.fleet()).unwrap();
    assert_eq!(fleet.get(StampId(1)).unwrap().tenants(), 50);
}

#[test]
fn threads_racing_compare_and_set_have_one_winner_per_epoch() {
    let reg = Arc::new(InMemoryRegistry::new());
    let rt = rt();
    for s in 1..=2 {
        let spec = StampSpec::new(
            StampId(s),
            format!("s{s}"),
            Region::new("r").unwrap(),
            Capacity::new([(Resource::Tenants, 5.0)], 0.0).unwrap(),
        )
        .unwrap();
        rt.block_on(reg.put_active_stamp(spec)).unwrap();
    }
    let a = rt.block_on(reg.assign(&TenantSpec::new(name(0)), StampId(1))).unwrap();
    // Each round: 4 threads race to flip the tenant with the epoch they read; one wins per round.
    let mut epoch = a.epoch;
    for round in 0..50 {
        let to = StampId(if round % 2 == 0 { 2 } else { 1 });
        let results: Vec<_> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let reg = reg.clone();
                    scope.spawn(move || rt_block(reg.compare_and_set(&name(0), epoch, AssignmentChange::move_to(to))))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}");
        assert!(winners[0].epoch > epoch);
        epoch = winners[0].epoch;
    }
    assert_eq!(rt.block_on(reg.history(&name(0))).unwrap().len(), 51);
}

fn rt_block<T>(f: impl std::future::Future<Output = T>) -> T {
    rt().block_on(f)
}

/// A cursor past the head (up to `u64::MAX`, which the caller controls) never panics nor
/// reports a truncated feed: a storable one this registry never issued is `HistoryDiverged`
/// naming the head, one past anything storable reads an empty batch.
#[test]
fn a_cursor_past_the_head_is_refused_or_empty_even_at_the_largest_version() {
    let reg = InMemoryRegistry::builder().change_retention(2).build();
    let spec = StampSpec::new(
        StampId(1),
        "s1",
        Region::new("eu").unwrap(),
        Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap(),
    )
    .unwrap();
    rt_block(reg.put_active_stamp(spec)).unwrap();
    rt_block(reg.assign(&TenantSpec::new(name(0)), StampId(1))).unwrap();
    let head = rt_block(reg.changes_since(Version::ZERO, 0)).unwrap_err();
    assert!(matches!(head, Error::ChangeFeedTruncated { .. }), "{head:?}");
    match rt_block(reg.changes_since(Version(1_000), 10)) {
        Err(Error::HistoryDiverged { cursor, head, term: 0 }) => {
            assert_eq!((cursor, head), (Version(1_000), Version(3)));
        }
        other => panic!("a cursor past the head must be refused, got {other:?}"),
    }
    for after in [
        Version(3),
        Version(i64::MAX as u64),
        Version(u64::MAX - 1),
        Version(u64::MAX),
    ] {
        let batch = rt_block(reg.changes_since(after, 10)).unwrap();
        assert!(batch.changes.is_empty(), "{after}: {batch:?}");
        assert_eq!(batch.head, Version(3));
    }
}

// ---------------------------------------------------------------------------------------------
// Usage arithmetic: never saturates, never drifts from the sum of the remaining demands.

/// The largest demand a tenant may have, on a custom resource no stamp limits.
fn huge() -> Demand {
    Demand::of([(Resource::Custom(Name::new("gpu").unwrap()), AMOUNT_MAX_UNITS)]).unwrap()
}

/// Usage of every stamp recomputed from the assignments, per resource (the implicit tenant
/// slot included), against what the registry stores.
fn assert_usage_is_the_sum(reg: &InMemoryRegistry, rt: &tokio::runtime::Runtime) {
    let fleet = rt.block_on(reg.fleet()).unwrap();
    let all = rt.block_on(reg.all_assignments()).unwrap();
    let mut expected: BTreeMap<(StampId, Resource), u128> = BTreeMap::new();
    for a in &all {
        for s in a.stamps() {
            *expected.entry((s, Resource::Tenants)).or_default() += 1000;
            for (r, x) in a.spec.demand.iter() {
                *expected.entry((s, r.clone())).or_default() += u128::from(x.as_milli());
            }
        }
    }
    for load in &fleet.stamps {
        for (r, used) in load.usage.iter() {
            let want = expected.get(&(load.id(), r.clone())).copied().unwrap_or(0);
            assert_eq!(u128::from(used.as_milli()), want, "usage of {r} on {}", load.id());
        }
        for ((s, r), want) in &expected {
            if *s == load.id() {
                assert_eq!(u128::from(load.usage.get(r).as_milli()), *want, "usage of {r} on {s}");
            }
        }
    }
}

/// Without checked sums, the 18,447th tenant of the largest demand saturated the stamp's usage
/// at `u64::MAX`; after the unassigns the stamp kept a phantom usage. Now that tenant is
/// refused with `CapacityExceeded` and the usage returns to zero.
#[test]
fn usage_never_saturates_and_returns_to_zero() {
    let rt = rt();
    let reg = InMemoryRegistry::new();
    let spec = StampSpec::new(
        StampId(1),
        "s1",
        Region::new("eu").unwrap(),
        Capacity::new([(Resource::Connections, 10.0)], 0.0).unwrap(),
    )
    .unwrap();
    rt.block_on(reg.put_active_stamp(spec)).unwrap();
    let fits = u64::MAX / huge().iter().next().unwrap().1.as_milli();
    let mut epochs = Vec::new();
    for i in 0..=fits {
        let t = TenantSpec::new(TenantId::new(&format!("t{i}")).unwrap()).demand(huge());
        match rt.block_on(reg.assign(&t, StampId(1))) {
            Ok(a) => epochs.push((a.tenant().clone(), a.epoch)),
            Err(e) => {
                assert_eq!(i, fits, "refused too early: {e}");
                assert!(matches!(e, Error::CapacityExceeded { stamp: StampId(1), .. }), "{e}");
            }
        }
    }
    assert_eq!(epochs.len() as u64, fits);
    assert_usage_is_the_sum(&reg, &rt);
    for (t, e) in epochs {
        rt.block_on(reg.unassign(&t, e)).unwrap();
    }
    let fleet = rt.block_on(reg.fleet()).unwrap();
    let load = fleet.get(StampId(1)).unwrap();
    assert!(load.usage.iter().all(|(_, a)| a.is_zero()), "{:?}", load.usage);
}

#[derive(Debug, Clone)]
enum UsageOp {
    Assign { tenant: u8, stamp: u32, big: bool },
    Move { tenant: u8, stamp: u32 },
    DualWrite { tenant: u8, shadow: u32 },
    Serve { tenant: u8 },
    Resize { tenant: u8, big: bool },
    Unassign { tenant: u8 },
}

fn usage_op() -> impl Strategy<Value = UsageOp> {
    let t = 0u8..8;
    let s = 1u32..=3;
    prop_oneof![
        4 => (t.clone(), s.clone(), any::<bool>()).prop_map(|(tenant, stamp, big)| UsageOp::Assign { tenant, stamp, big }),
        2 => (t.clone(), s.clone()).prop_map(|(tenant, stamp)| UsageOp::Move { tenant, stamp }),
        2 => (t.clone(), s).prop_map(|(tenant, shadow)| UsageOp::DualWrite { tenant, shadow }),
        1 => t.clone().prop_map(|tenant| UsageOp::Serve { tenant }),
        2 => (t.clone(), any::<bool>()).prop_map(|(tenant, big)| UsageOp::Resize { tenant, big }),
        2 => t.prop_map(|tenant| UsageOp::Unassign { tenant }),
    ]
}

fn small() -> Demand {
    Demand::of([
        (Resource::Connections, 1.5),
        (Resource::Custom(Name::new("gpu").unwrap()), 0.001),
    ])
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After any sequence of assigns, moves, dual-writes, resizes and unassigns (refused or
    /// not), every stamp's stored usage equals the sum of the demands it still holds.
    #[test]
    fn usage_equals_the_sum_of_remaining_demands(ops in prop::collection::vec(usage_op(), 1..60)) {
        let rt = rt();
        let reg = InMemoryRegistry::new();
        for id in 1..=3u32 {
            let spec = StampSpec::new(
                StampId(id),
                format!("s{id}"),
                Region::new("eu").unwrap(),
                Capacity::new([(Resource::Connections, 20.0)], 0.0).unwrap(),
            )
            .unwrap();
            rt.block_on(reg.put_active_stamp(spec)).unwrap();
        }
        for op in ops {
            let current = |t: u8| rt.block_on(reg.assignment(&name(t))).unwrap();
            let demand = |big: bool| if big { huge() } else { small() };
            // Refusals (capacity, same stamp, unknown tenant) are part of the sequence.
            let _ = match op {
                UsageOp::Assign { tenant, stamp, big } => rt
                    .block_on(reg.assign(&TenantSpec::new(name(tenant)).demand(demand(big)), StampId(stamp)))
                    .map(|_| ()),
                UsageOp::Move { tenant, stamp } => match current(tenant) {
                    Some(a) => rt
                        .block_on(reg.compare_and_set(&name(tenant), a.epoch, AssignmentChange::move_to(StampId(stamp))))
                        .map(|_| ()),
                    None => Ok(()),
                },
                UsageOp::DualWrite { tenant, shadow } => match current(tenant) {
                    Some(a) => rt
                        .block_on(reg.compare_and_set(
                            &name(tenant),
                            a.epoch,
                            AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(shadow) }),
                        ))
                        .map(|_| ()),
                    None => Ok(()),
                },
                UsageOp::Serve { tenant } => match current(tenant) {
                    Some(a) => rt
                        .block_on(reg.compare_and_set(&name(tenant), a.epoch, AssignmentChange::set_mode(AssignmentMode::Serving)))
                        .map(|_| ()),
                    None => Ok(()),
                },
                UsageOp::Resize { tenant, big } => match current(tenant) {
                    Some(a) => rt
                        .block_on(reg.compare_and_set(&name(tenant), a.epoch, AssignmentChange::resize(demand(big))))
                        .map(|_| ()),
                    None => Ok(()),
                },
                UsageOp::Unassign { tenant } => match current(tenant) {
                    Some(a) => rt.block_on(reg.unassign(&name(tenant), a.epoch)),
                    None => Ok(()),
                },
            };
            assert_usage_is_the_sum(&reg, &rt);
        }
    }
}
