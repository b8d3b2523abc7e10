//! Placement behaviour: error messages, pins, explanations, combinators, dry runs,
//! place_and_assign (including concurrent races) and the rebalance planner.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use stamps::placement::*;
use stamps::registry::{self, place_and_assign, place_and_assign_with, AssignOptions, PlaceAndAssignError};
#[cfg(feature = "test-util")]
use stamps::testing::{faulty::Request, Call, FaultyRegistry};
use stamps::*;

struct S {
    id: u32,
    region: &'static str,
    residency: Option<&'static str>,
    tier: Tier,
    state: StampState,
    connections: f64,
    used: f64,
    tenants: u32,
    headroom: f64,
}

impl S {
    fn new(id: u32, region: &'static str) -> S {
        S {
            id,
            region,
            residency: Some(&region[..2]),
            tier: Tier::Shared,
            state: StampState::Active,
            connections: 100.0,
            used: 0.0,
            tenants: 0,
            headroom: 0.25,
        }
    }
    fn used(mut self, used: f64, tenants: u32) -> S {
        self.used = used;
        self.tenants = tenants;
        self
    }
    fn tier(mut self, t: Tier) -> S {
        self.tier = t;
        self
    }
    fn state(mut self, s: StampState) -> S {
        self.state = s;
        self
    }
    fn build(self) -> StampLoad {
        let mut spec = StampSpec::new(
            StampId(self.id),
            format!("s{}", self.id),
            Region::new(self.region).unwrap(),
            Capacity::new([(Resource::Connections, self.connections)], self.headroom).unwrap(),
        )
        .unwrap()
        .tier(self.tier);
        if let Some(r) = self.residency {
            spec = spec.residency(Residency::new(r).unwrap());
        }
        let mut usage = Amounts::default();
        for i in 0..self.tenants {
            let per = if i == 0 { self.used } else { 0.0 };
            model::admission::add(&mut usage, &Demand::of([(Resource::Connections, per)]).unwrap(), true);
        }
        StampLoad::new(Stamp::new(spec, self.state, Timestamp::ZERO, Timestamp::ZERO), usage)
    }
}

fn fleet(stamps: Vec<S>) -> Fleet {
    Fleet::new(stamps.into_iter().map(S::build).collect(), Version(1), Timestamp::ZERO)
}

fn tenant(id: &str, conns: f64) -> TenantSpec {
    TenantSpec::new(TenantId::new(id).unwrap()).demand(Demand::of([(Resource::Connections, conns)]).unwrap())
}

fn eu(t: TenantSpec) -> TenantSpec {
    t.residency(Residency::new("eu").unwrap())
}

#[test]
fn error_says_why_nothing_fits() {
    let f = fleet(vec![
        S::new(1, "eu-west").used(71.0, 3),
        S::new(2, "eu-west").used(74.0, 3),
        S::new(3, "eu-central").used(72.0, 3),
        S::new(4, "us-east"),
    ]);
    let err = policies::least_loaded()
        .place(&eu(tenant("a", 5.0)), &FleetView::new(&f))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no stamp fits the tenant: 3 stamps in residency eu, all above 75% connections"
    );
    let nofit = err.no_fit().unwrap();
    assert_eq!(nofit.rejected_by(FilterKind::Residency), 1);
    assert_eq!(nofit.rejected_by(FilterKind::Headroom), 3);
    assert_eq!(
        nofit.headroom_resource().map(|(r, _)| r.clone()),
        Some(Resource::Connections)
    );
    assert!(err.needs_new_stamp());
}

#[test]
fn error_lists_mixed_reasons() {
    let f = fleet(vec![
        S::new(1, "eu-west").used(74.0, 3),
        S::new(2, "eu-west").state(StampState::Draining),
        S::new(3, "eu-west"),
        S::new(4, "eu-west").tier(Tier::Dedicated).used(0.0, 1),
    ]);
    let health = HashMap::from([(StampId(3), HealthStatus::Unhealthy)]);
    let view = FleetView::new(&f).with_health(&health);
    let err = policies::least_loaded()
        .place(&eu(tenant("a", 5.0)), &view)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no stamp fits the tenant: 4 stamps in residency eu: 1 of another tier, \
         1 not active, 1 unhealthy, 1 above 75% connections"
    );
    // An unhealthy stamp is not "full": provisioning is not the answer.
    assert!(!err.needs_new_stamp());
    assert!(matches!(
        policies::least_loaded().place(&tenant("a", 1.0), &FleetView::new(&Fleet::default())),
        Err(PlacementError::NoStamps)
    ));
}

#[test]
fn pinned_tenant_goes_to_its_stamp_or_nowhere() {
    let f = fleet(vec![
        S::new(1, "eu-west"),
        S::new(2, "eu-west").used(74.0, 1),
        S::new(3, "eu-west"),
    ]);
    let view = FleetView::new(&f);
    for p in [
        policies::least_loaded(),
        policies::bin_packing(),
        policies::rendezvous(),
    ] {
        assert_eq!(p.place(&tenant("a", 1.0).pin(StampId(3)), &view), Ok(StampId(3)));
        let err = p.place(&tenant("a", 5.0).pin(StampId(2)), &view).unwrap_err();
        assert_eq!(
            err,
            PlacementError::PinnedStampRejected {
                stamp: StampId(2),
                kind: FilterKind::Headroom,
                resource: Some(Resource::Connections)
            }
        );
        assert!(!err.needs_new_stamp());
        assert_eq!(
            p.place(&tenant("a", 1.0).pin(StampId(9)), &view),
            Err(PlacementError::PinnedStampMissing { stamp: StampId(9) })
        );
    }
    // A fallback cannot move a pinned tenant either: every policy honours the pin.
    let p = policies::least_loaded().or_else(policies::rendezvous());
    assert!(p.place(&tenant("a", 5.0).pin(StampId(2)), &view).is_err());
}

#[test]
fn dedicated_and_shared_tiers_never_mix() {
    let f = fleet(vec![
        S::new(1, "eu-west").tier(Tier::Dedicated).used(0.0, 1),
        S::new(2, "eu-west").tier(Tier::Dedicated),
        S::new(3, "eu-west"),
    ]);
    let view = FleetView::new(&f);
    let p = policies::dedicated_for_enterprise();
    assert_eq!(
        p.place(&tenant("big", 1.0).tier(Tier::Dedicated), &view),
        Ok(StampId(2))
    );
    assert_eq!(p.place(&tenant("small", 1.0), &view), Ok(StampId(3)));
    let full = fleet(vec![
        S::new(1, "eu-west").tier(Tier::Dedicated).used(0.0, 1),
        S::new(3, "eu-west"),
    ]);
    let err = p
        .place(&tenant("big", 1.0).tier(Tier::Dedicated), &FleetView::new(&full))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no stamp fits the tenant: 2 stamps: 1 not dedicated, 1 dedicated and already in use"
    );
    assert_eq!(err.no_fit().map(NoFit::dedicated_in_use), Some(1));
    assert!(err.needs_new_stamp());
}

#[test]
fn scorers_choose_as_documented_and_ties_are_deterministic() {
    let f = fleet(vec![
        S::new(1, "eu-west").used(50.0, 2),
        S::new(2, "eu-west").used(10.0, 2),
        S::new(3, "eu-west").used(10.0, 2),
    ]);
    let view = FleetView::new(&f);
    let t = tenant("acme", 1.0);
    assert_eq!(policies::least_loaded().place(&t, &view), Ok(StampId(2))); // tie 2/3: lowest id
    assert_eq!(policies::bin_packing().place(&t, &view), Ok(StampId(1)));
    let r = policies::least_loaded().tie_break(TieBreak::Rendezvous);
    let first = r.place(&t, &view).unwrap();
    assert!(first == StampId(2) || first == StampId(3));
    for _ in 0..10 {
        assert_eq!(r.place(&t, &view), Ok(first));
    }
    // Rendezvous spreads tenants over equal stamps.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..50 {
        seen.insert(r.place(&tenant(&format!("t{i}"), 1.0), &view).unwrap());
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn region_filters_and_preferences() {
    let f = fleet(vec![
        S::new(1, "eu-west").used(74.0, 1),
        S::new(2, "eu-central"),
        S::new(3, "us-east"),
    ]);
    let view = FleetView::new(&f);
    let t = tenant("a", 5.0).region(Region::new("eu-west").unwrap());
    // Hard: only eu-west, which is full.
    let err = policies::geographic().place(&t, &view).unwrap_err();
    assert!(err.to_string().contains("outside the tenant's region"), "{err}");
    // Soft: the nearest region with room.
    assert_eq!(policies::hybrid().place(&t, &view), Ok(StampId(2)));
    assert_eq!(policies::nearest().place(&t, &view), Ok(StampId(2)));
    // Fallback: geographic, else anywhere.
    let p = policies::geographic().or_else(policies::least_loaded());
    assert_eq!(p.place(&t, &view), Ok(StampId(2)));
}

#[test]
fn affinity_labels() {
    let mk = |id: u32, az: &str| {
        let mut l = S::new(id, "eu-west").build();
        l.stamp.spec.labels.insert("az".into(), az.into());
        l
    };
    let f = Fleet::new(vec![mk(1, "a"), mk(2, "b"), mk(3, "c")], Version(1), Timestamp::ZERO);
    let view = FleetView::new(&f);
    let p = policies::dedicated_for_enterprise();
    let t = tenant("a", 1.0).label("affinity/az", "b");
    assert_eq!(p.place(&t, &view), Ok(StampId(2)));
    let t = tenant("a", 1.0).label("anti-affinity/az", "a");
    assert_eq!(p.place(&t, &view), Ok(StampId(2)));
    let t = tenant("a", 1.0).label("affinity/az", "z");
    let err = p.place(&t, &view).unwrap_err();
    assert!(err.to_string().contains("affinity"), "{err}");
    assert_eq!(
        Pipeline::new().filter(RequireLabel::new("az", "c")).place(&t, &view),
        Ok(StampId(3))
    );
}

#[test]
fn filter_combinator_holds_even_when_the_inner_policy_ignores_the_view() {
    let f = fleet(vec![S::new(1, "eu-west"), S::new(2, "eu-west")]);
    let view = FleetView::new(&f);
    let odd = |_: &TenantSpec, s: &StampLoad| s.id().0 % 2 == 1;
    // Ignores FleetView::stamps and always picks stamp 2.
    let rogue = from_fn(|_, _| Ok(StampId(2)));
    let p = rogue.filter(odd);
    assert!(matches!(
        p.place(&tenant("a", 1.0), &view),
        Err(PlacementError::Policy { .. })
    ));
    // A well-behaved closure sees only the filtered stamps.
    let polite = from_fn(|_, f| {
        f.stamps()
            .last()
            .map(|s| s.id())
            .ok_or(PlacementError::Policy { reason: "none" })
    });
    assert_eq!(polite.filter(odd).place(&tenant("a", 1.0), &view), Ok(StampId(1)));
    // Nested filters compose.
    let none = polite.filter(odd).filter(|_: &TenantSpec, s: &StampLoad| s.id().0 == 2);
    assert!(none.place(&tenant("a", 1.0), &view).is_err());
    // Prefer falls back when the preference cannot be met.
    let pref = policies::least_loaded().prefer(|_: &TenantSpec, s: &StampLoad| s.id().0 == 7);
    assert_eq!(pref.place(&tenant("a", 1.0), &view), Ok(StampId(1)));
}

#[test]
fn explain_prints_a_table_an_operator_can_read() {
    let f = fleet(vec![
        S::new(1, "eu-west").used(74.0, 2),
        S::new(2, "eu-west").state(StampState::Draining),
        S::new(3, "eu-central").used(10.0, 1),
        S::new(4, "us-east"),
    ]);
    let health = BTreeMap::from([(StampId(3), HealthStatus::Degraded)]);
    let view = FleetView::new(&f).with_health(&health);
    let t = eu(tenant("acme", 5.0));
    let e = policies::least_loaded().explain(&t, &view);
    assert_eq!(e.outcome, Ok(StampId(3)));
    assert_eq!(e.rows.len(), 4);
    assert!(matches!(&e.row(StampId(1)).unwrap().verdict,
        Verdict::Rejected { kind: FilterKind::Headroom, detail, .. } if detail == "connections: 74 used + 5 wanted > 75 (75% of 100)"));
    assert!(matches!(
        &e.row(StampId(4)).unwrap().verdict,
        Verdict::Rejected {
            kind: FilterKind::Residency,
            ..
        }
    ));
    assert!(
        matches!(&e.row(StampId(3)).unwrap().verdict, Verdict::Eligible { score, .. } if (*score - 0.85).abs() < 1e-9)
    );
    let table = e.to_string();
    assert!(table.starts_with("tenant acme -> stamp-003\n"), "{table}");
    assert!(table.contains("* stamp-003"), "{table}");
    assert!(table.contains("x state"), "{table}");
    assert!(table.contains("stamp is draining"), "{table}");
    assert!(table.contains("least-loaded 0.850×1"), "{table}");

    // Combinators add notes; a rejected tenant's explanation carries the reason.
    let e = policies::geographic()
        .or_else(policies::least_loaded())
        .explain(&eu(tenant("big", 70.0)), &view);
    assert!(e.outcome.is_err());
    assert!(e.to_string().contains("not placed: no stamp fits"), "{e}");
    assert!(e.notes[0].starts_with("primary policy found no stamp"), "{:?}", e.notes);

    // Closures explain only their outcome.
    let e = from_fn(|_, _| Ok(StampId(4))).explain(&t, &view);
    assert!(e.rows.iter().all(|r| r.verdict == Verdict::Unexplained));
    let e = policies::least_loaded()
        .prefer(InRegion)
        .explain(&t.clone().region(Region::new("eu-west").unwrap()), &view);
    assert!(
        e.notes.iter().any(|n| n.contains("preference `region` not met")),
        "{:?}",
        e.notes
    );
}

#[test]
fn dry_run_fills_a_simulated_fleet_without_a_registry() {
    let f = fleet(vec![S::new(1, "eu-west"), S::new(2, "eu-west")]);
    let tenants: Vec<_> = (0..20).map(|i| tenant(&format!("t{i}"), 10.0)).collect();
    let run = dry_run(&policies::least_loaded(), &tenants, &FleetView::new(&f));
    // 75 connections under headroom, 10 each: 7 per stamp.
    assert_eq!(run.placed(), 14);
    assert_eq!(run.failed(), 6);
    assert_eq!(run.distribution(), BTreeMap::from([(StampId(1), 7), (StampId(2), 7)]));
    assert_eq!(f.stamps[0].tenants(), 0, "the input fleet is untouched");
    let text = run.to_string();
    assert!(
        text.starts_with("dry run: 20 tenants, 14 placed, 6 not placed"),
        "{text}"
    );
}

async fn registry_with(stamps: &[(u32, &str, f64)]) -> InMemoryRegistry {
    let r = InMemoryRegistry::new();
    for (id, region, tenants) in stamps {
        let spec = StampSpec::new(
            StampId(*id),
            format!("s{id}"),
            Region::new(region).unwrap(),
            Capacity::new([(Resource::Tenants, *tenants)], 0.0).unwrap(),
        )
        .unwrap();
        r.put_active_stamp(spec).await.unwrap();
    }
    r
}

#[tokio::test]
async fn place_and_assign_reports_a_full_fleet_with_a_provision_signal() {
    let r = registry_with(&[(1, "eu-west", 1.0)]).await;
    let p = policies::least_loaded();
    let a = place_and_assign(&r, &p, &tenant("a", 0.0)).await.unwrap();
    assert_eq!(a.stamp, StampId(1));
    let err = place_and_assign(&r, &p, &tenant("b", 0.0).region(Region::new("eu-west").unwrap()))
        .await
        .unwrap_err();
    let prov = err.provision().unwrap();
    assert_eq!(prov.tier, Tier::Shared);
    assert_eq!(prov.to_string(), "provision a shared stamp in region eu-west");
    assert!(err.to_string().contains("; provision a shared stamp"), "{err}");
    // Already assigned is the registry's error, not a placement one.
    let again = place_and_assign(&r, &p, &tenant("a", 0.0)).await.unwrap_err();
    assert!(matches!(
        again,
        PlaceAndAssignError::Registry(Error::AlreadyAssigned { .. })
    ));
    // A pinned tenant that does not fit gets no provisioning signal.
    let pinned = place_and_assign(&r, &p, &tenant("c", 0.0).pin(StampId(1)))
        .await
        .unwrap_err();
    assert!(pinned.provision().is_none());
}

/// Eight tasks race for eight slots on four stamps. Each decision reads a snapshot in which
/// the least-loaded stamp is the same for everyone, so assignments collide; retries re-read
/// the fleet, and with one attempt per competitor every tenant lands. No stamp is overbooked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_and_assign_retries_lost_races() {
    for round in 0..20 {
        let r = Arc::new(registry_with(&[(1, "eu", 2.0), (2, "eu", 2.0), (3, "eu", 2.0), (4, "eu", 2.0)]).await);
        let p = Arc::new(policies::least_loaded());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (r, p) = (r.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                let opts = AssignOptions::default().max_attempts(8);
                place_and_assign_with(&*r, &*p, &tenant(&format!("r{round}-t{i}"), 0.0), opts).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let fleet = r.fleet().await.unwrap();
        for l in &fleet.stamps {
            assert_eq!(l.tenants(), 2, "round {round}: {fleet}");
        }
        // The ninth finds the fleet full.
        let err = place_and_assign(&*r, &*p, &tenant("late", 0.0)).await.unwrap_err();
        assert!(err.provision().is_some());
    }
}

#[tokio::test]
async fn rebalance_proposes_moves_that_honour_constraints() {
    let r = InMemoryRegistry::new();
    let spec = |id: u32, res: &str, tier: Tier| {
        StampSpec::new(
            StampId(id),
            format!("s{id}"),
            Region::new(&format!("{res}-west")).unwrap(),
            Capacity::new([(Resource::Connections, 100.0)], 0.0).unwrap(),
        )
        .unwrap()
        .residency(Residency::new(res).unwrap())
        .tier(tier)
    };
    r.put_active_stamp(spec(1, "eu", Tier::Shared)).await.unwrap();
    r.put_active_stamp(spec(2, "eu", Tier::Shared)).await.unwrap();
    r.put_active_stamp(spec(3, "us", Tier::Shared)).await.unwrap();
    r.put_active_stamp(spec(4, "eu", Tier::Dedicated)).await.unwrap();
    // Stamp 1 at 90%: 30 + 20 + 20 + 10 + 10 (pinned).
    for (name, c) in [("a", 30.0), ("b", 20.0), ("c", 20.0), ("d", 10.0)] {
        r.assign(&eu(tenant(name, c)), StampId(1)).await.unwrap();
    }
    r.assign(&eu(tenant("pinned", 10.0)).pin(StampId(1)), StampId(1))
        .await
        .unwrap();
    // Stamp 2 at 40%.
    r.assign(&eu(tenant("e", 40.0)), StampId(2)).await.unwrap();
    let fleet = r.fleet().await.unwrap();
    let all = r.all_assignments().await.unwrap();
    let plan = plan_rebalance(&FleetView::new(&fleet), &all, 0.7, &policies::least_loaded()).unwrap();
    // One move of the biggest tenant brings stamp 1 from 90% to 60%, onto stamp 2 (eu, shared).
    assert_eq!(plan.moves.len(), 1, "{plan}");
    assert_eq!(
        (plan.moves[0].tenant.as_str(), plan.moves[0].from, plan.moves[0].to),
        ("a", StampId(1), StampId(2))
    );
    assert!(plan.unresolved.is_empty());
    for l in &plan.after.stamps {
        assert!(l.utilization(&Resource::Connections).unwrap() <= 0.7, "{}", plan.after);
    }
    assert!(plan.to_string().contains("move a"), "{plan}");
    // Nothing changed in the registry (the snapshot's own time aside).
    let again = r.fleet().await.unwrap();
    assert_eq!((&again.stamps, again.version), (&fleet.stamps, fleet.version));

    // A target nothing can meet: stamp 2 would exceed it; us and dedicated stamps are off limits.
    let plan = plan_rebalance(&FleetView::new(&fleet), &all, 0.35, &policies::least_loaded()).unwrap();
    assert!(plan.unresolved.contains(&StampId(1)), "{plan}");
    for m in &plan.moves {
        assert_ne!(m.tenant.as_str(), "pinned");
        assert!(m.to != StampId(3) && m.to != StampId(4), "{plan}");
    }
    for bad in [0.0, -1.0, 1.5, f64::NAN] {
        assert!(matches!(
            plan_rebalance(&FleetView::new(&fleet), &all, bad, &policies::least_loaded()),
            Err(Error::InvalidInput(_))
        ));
    }
}

#[test]
fn placement_errors_are_small_values() {
    // Returned by value on the rejection path: a few words, no heap (see placement_alloc).
    let size = std::mem::size_of::<PlacementError>();
    assert!(size <= 112, "PlacementError is {size} bytes");
    assert!(std::mem::size_of::<Result<StampId, PlacementError>>() <= 112);
    assert!(std::mem::size_of::<FleetView<'_>>() <= 48);
}

#[tokio::test]
async fn plain_closures_are_policies() {
    let r = registry_with(&[(1, "eu-west", 5.0), (2, "eu-west", 5.0)]).await;
    // No helper: an annotated closure is a Placement.
    let last = |_: &TenantSpec, f: &FleetView<'_>| -> Result<StampId, PlacementError> {
        f.stamps()
            .last()
            .map(|s| s.id())
            .ok_or(PlacementError::Policy { reason: "empty" })
    };
    let a = place_and_assign(&r, &last, &tenant("a", 0.0)).await.unwrap();
    assert_eq!(a.stamp, StampId(2));
    let boxed: BoxPlacement = Box::new(last);
    assert_eq!(
        boxed.place(&tenant("b", 0.0), &FleetView::new(&r.fleet().await.unwrap())),
        Ok(StampId(2))
    );
}

/// A registry that lets another writer win the race: before each of the first `steals`
/// `assign` calls, a rival tenant takes the room on the stamp being assigned.
#[cfg(feature = "test-util")]
fn rival_first(inner: InMemoryRegistry, steals: u32) -> FaultyRegistry<InMemoryRegistry> {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    let registry = FaultyRegistry::new(inner.clone());
    let steals = Arc::new(AtomicU32::new(steals));
    let rivals = Arc::new(AtomicU32::new(0));
    registry.before(Call::Assign, move |request| {
        let Request::Assign(_, stamp) = *request else {
            return Box::pin(async { Ok(()) });
        };
        let steal = steals.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
        let rival = steal.then(|| rivals.fetch_add(1, SeqCst));
        let inner = inner.clone();
        Box::pin(async move {
            if let Some(n) = rival {
                inner.assign(&tenant_rival(n), stamp).await?;
            }
            Ok(())
        })
    });
    registry
}

#[cfg(feature = "test-util")]
fn tenant_rival(n: u32) -> TenantSpec {
    tenant(&format!("rival-{n}"), 0.0)
}

#[cfg(feature = "test-util")]
#[tokio::test]
async fn a_lost_race_is_retried_on_a_fresh_fleet() {
    // Three stamps with one slot each. The first two attempts lose their stamp to a rival;
    // the third re-reads the fleet, sees the last free stamp, and wins.
    let racy = rival_first(
        registry_with(&[(1, "eu", 1.0), (2, "eu", 1.0), (3, "eu", 1.0)]).await,
        2,
    );
    let a = place_and_assign(&racy, &policies::least_loaded(), &tenant("mine", 0.0))
        .await
        .unwrap();
    assert_eq!(a.stamp, StampId(3));
    assert_eq!(
        racy.inner()
            .history(&TenantId::new("mine").unwrap())
            .await
            .unwrap()
            .len(),
        1
    );

    // Losing every attempt ends in LostRaces after the bound, with the registry's refusal.
    let opts = AssignOptions::default().max_attempts(2);
    let full = rival_first(registry_with(&[(1, "eu", 1.0), (2, "eu", 1.0)]).await, 100);
    let err = place_and_assign_with(&full, &policies::least_loaded(), &tenant("mine", 0.0), opts)
        .await
        .unwrap_err();
    match err {
        PlaceAndAssignError::LostRaces { attempts, last } => {
            assert_eq!(attempts, 2);
            assert!(matches!(last, Error::CapacityExceeded { .. }), "{last}");
        }
        other => panic!("expected LostRaces, got {other}"),
    }
    // Two attempts, two rivals placed, and nothing for the loser.
    assert_eq!(full.inner().fleet().await.unwrap().tenants(), 2);
    assert!(full
        .inner()
        .assignment(&TenantId::new("mine").unwrap())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn place_and_assign_follows_the_registry_s_recorded_pin() {
    let r = registry_with(&[(1, "eu-west", 100.0), (2, "eu-west", 100.0)]).await;
    // Stamp 2 is the fuller one: least-loaded alone would pick 1.
    for i in 0..5 {
        r.assign(&tenant(&format!("busy{i}"), 10.0), StampId(2)).await.unwrap();
    }
    let why = Decision::new("ops", "data stays on 2").unwrap();
    r.set_pin(&TenantId::new("p").unwrap(), Some(StampId(2)), &why)
        .await
        .unwrap();
    let a = place_and_assign(&r, &policies::least_loaded(), &tenant("p", 1.0))
        .await
        .unwrap();
    assert_eq!((a.stamp, a.spec.pin), (StampId(2), Some(StampId(2))));
    let free = place_and_assign(&r, &policies::least_loaded(), &tenant("q", 1.0))
        .await
        .unwrap();
    assert_eq!(free.stamp, StampId(1));
}

#[test]
fn stamps_that_cannot_take_tenants_do_not_silence_the_provisioning_signal() {
    let full = || S::new(1, "eu-west").used(75.0, 3);
    let p = policies::least_loaded();
    // A draining stamp (and a provisioning one) beside a full active stamp.
    for other in [
        StampState::Draining,
        StampState::Provisioning,
        StampState::Decommissioned,
    ] {
        let f = fleet(vec![full(), S::new(2, "eu-west").state(other)]);
        let err = p.place(&tenant("a", 5.0), &FleetView::new(&f)).unwrap_err();
        assert!(err.needs_new_stamp(), "{other}: {err}");
        assert_eq!(err.no_fit().map(NoFit::counted), Some(1), "{other}");
        assert_eq!(
            err.to_string(),
            "no stamp fits the tenant: 2 stamps: 1 not active, 1 above 75% connections"
        );
    }
    // Every stamp inactive: no stamp can take the tenant, so one is needed.
    let f = fleet(vec![S::new(1, "eu-west").state(StampState::Draining)]);
    assert!(p
        .place(&tenant("a", 1.0), &FleetView::new(&f))
        .unwrap_err()
        .needs_new_stamp());
    // A stamp the policy's own filter excludes (a name-based canary gate).
    let f = fleet(vec![full(), S::new(2, "eu-west")]);
    let gated = Pipeline::new()
        .filter(Active)
        .filter(named("no-canary", |_: &TenantSpec, l: &StampLoad| l.id() != StampId(2)))
        .filter(FitsHeadroom)
        .score(LeastLoaded::bottleneck(), 1.0);
    let err = gated.place(&tenant("a", 5.0), &FleetView::new(&f)).unwrap_err();
    assert!(err.needs_new_stamp(), "{err}");
    assert_eq!(
        err.to_string(),
        "no stamp fits the tenant: 2 stamps: 1 excluded by no-canary, 1 above 75% connections"
    );
    // A stamp below the policy's minimum version.
    let versioned = |id: u32, v: &str, used: f64| {
        let mut l = S::new(id, "eu-west").used(used, 3).build();
        l.stamp.spec.version = Some(v.to_string());
        l
    };
    let f = Fleet::new(
        vec![versioned(1, "42.1", 75.0), versioned(2, "41.9", 0.0)],
        Version(1),
        Timestamp::ZERO,
    );
    let new_only = Pipeline::new()
        .filter(Active)
        .filter(MinVersion::new("42"))
        .filter(FitsHeadroom);
    let err = new_only.place(&tenant("a", 5.0), &FleetView::new(&f)).unwrap_err();
    assert!(err.needs_new_stamp(), "{err}");
    assert!(err.to_string().contains("1 below the minimum version"), "{err}");
    // Still silenced by what a new stamp would not fix: an unhealthy stamp that would fit.
    let f = fleet(vec![full(), S::new(2, "eu-west")]);
    let health = HashMap::from([(StampId(2), HealthStatus::Unhealthy)]);
    let err = p
        .place(&tenant("a", 5.0), &FleetView::new(&f).with_health(&health))
        .unwrap_err();
    assert!(!err.needs_new_stamp());
}

#[test]
fn explanations_name_stamps_and_hint_at_a_forgotten_tier() {
    let named_stamp = |id: u32, name: &str, tier: Tier| {
        let mut l = S::new(id, "eu-west").tier(tier).build();
        l.stamp.spec.name = name.to_string();
        l
    };
    let gold = Tier::Custom(Name::new("gold").unwrap());
    let f = Fleet::new(
        vec![
            named_stamp(1, "eu-gold-1", gold.clone()),
            named_stamp(2, "eu-gold-canary", gold.clone()),
        ],
        Version(1),
        Timestamp::ZERO,
    );
    let e = policies::least_loaded().explain(&tenant("a", 1.0), &FleetView::new(&f));
    let text = e.to_string();
    assert!(text.contains("eu-gold-canary") && text.contains("eu-gold-1"), "{text}");
    assert_eq!(e.row(StampId(2)).map(|r| r.name.as_str()), Some("eu-gold-canary"));
    assert!(
        e.notes.iter().any(|n| n.contains("TenantSpec::tier")),
        "a tenant left on the default tier gets a hint: {:?}",
        e.notes
    );
    // With its tier, it is placed and there is no hint.
    let e = policies::least_loaded().explain(&tenant("a", 1.0).tier(gold), &FleetView::new(&f));
    assert!(e.outcome.is_ok() && e.notes.is_empty(), "{e}");
}

#[test]
fn version_filter_and_preference() {
    let versioned = |id: u32, v: Option<&str>| {
        let mut l = S::new(id, "eu-west").build();
        l.stamp.spec.version = v.map(str::to_string);
        l
    };
    let f = Fleet::new(
        vec![
            versioned(1, Some("1.9.3")),
            versioned(2, Some("1.10.0-rc.1")),
            versioned(3, Some("1.10.0")),
            versioned(4, None),
        ],
        Version(1),
        Timestamp::ZERO,
    );
    let view = FleetView::new(&f);
    let t = tenant("a", 1.0);
    let only_new = Pipeline::new()
        .filter(MinVersion::new("1.10"))
        .score(LeastLoaded::bottleneck(), 1.0);
    assert_eq!(only_new.place(&t, &view), Ok(StampId(3)));
    let e = only_new.explain(&t, &view);
    for id in [1, 2, 4] {
        assert!(
            matches!(
                e.row(StampId(id)).map(|r| &r.verdict),
                Some(Verdict::Rejected {
                    kind: FilterKind::Version,
                    ..
                })
            ),
            "{e}"
        );
    }
    // The preference blends: stamp 3 wins while it fits, the others still take tenants.
    let prefer = Pipeline::new()
        .filter(FitsHeadroom)
        .score(AtLeastVersion::new("1.10"), 10.0)
        .score(LeastLoaded::bottleneck(), 1.0);
    assert_eq!(prefer.place(&t, &view), Ok(StampId(3)));
    let without_3 = Fleet::new(
        vec![versioned(1, Some("1.9.3")), versioned(4, None)],
        Version(1),
        Timestamp::ZERO,
    );
    assert!(prefer.place(&t, &FleetView::new(&without_3)).is_ok());
}

proptest::proptest! {
    /// `compare_versions` is a total order (antisymmetric, transitive, reflexive) on any
    /// labels, and agrees with numeric order on dotted numbers.
    #[test]
    fn compare_versions_is_a_total_order(
        a in "[0-9a-z.+-]{0,12}",
        b in "[0-9a-z.+-]{0,12}",
        c in "[0-9a-z.+-]{0,12}",
        x in proptest::collection::vec(0u32..30, 1..4),
        y in proptest::collection::vec(0u32..30, 1..4),
    ) {
        use std::cmp::Ordering::*;
        proptest::prop_assert_eq!(compare_versions(&a, &a), Equal);
        proptest::prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
        if compare_versions(&a, &b) != Greater && compare_versions(&b, &c) != Greater {
            proptest::prop_assert_ne!(compare_versions(&a, &c), Greater);
        }
        proptest::prop_assert_eq!(compare_versions(&a, &b) == Equal, a == b);
        let dotted = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
        let pad = |v: &[u32]| { let mut v = v.to_vec(); v.resize(4, 0); v };
        proptest::prop_assert_eq!(
            version_at_least(&dotted(&x), &dotted(&y)),
            pad(&x) >= pad(&y)
        );
    }
}

#[test]
fn each_resource_can_keep_its_own_headroom() {
    // 25% on connections (the common headroom), 10% on storage.
    let cap = Capacity::new([(Resource::Connections, 100.0), (Resource::Storage, 1000.0)], 0.25)
        .unwrap()
        .headroom_on(Resource::Storage, 0.10)
        .unwrap();
    let spec = StampSpec::new(StampId(1), "eu-1", Region::new("eu-west").unwrap(), cap).unwrap();
    let mut usage = Amounts::default();
    let used = Demand::of([(Resource::Connections, 10.0), (Resource::Storage, 800.0)]).unwrap();
    model::admission::add(&mut usage, &used, true);
    let f = Fleet::new(
        vec![StampLoad::new(
            Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO),
            usage,
        )],
        Version(1),
        Timestamp::ZERO,
    );
    let view = FleetView::new(&f);
    let t = |storage: f64| {
        TenantSpec::new(TenantId::new("a").unwrap()).demand(Demand::of([(Resource::Storage, storage)]).unwrap())
    };
    let p = policies::least_loaded();
    // 800 + 90 = 890 <= 900 (90% of 1000): fits, although 890 is above 75%.
    assert_eq!(p.place(&t(90.0), &view), Ok(StampId(1)));
    let err = p.place(&t(110.0), &view).unwrap_err();
    assert_eq!(err.to_string(), "no stamp fits the tenant: 1 stamp, above 90% storage");
    assert!(err.needs_new_stamp());
    let e = p.explain(&t(110.0), &view);
    assert!(e.to_string().contains("(90% of 1000)"), "{e}");
    // The fleet's utilization and the provisioning signals read the same soft limit.
    assert_eq!(f.stamps[0].fits_with_headroom(&t(90.0).demand), Ok(()));
    assert!(f.stamps[0].fits_with_headroom(&t(110.0).demand).is_err());
}

#[tokio::test]
async fn ephemeral_stamps_take_only_ephemeral_tenants_and_report_their_expiry() {
    use std::time::Duration;
    let r = InMemoryRegistry::new();
    let cap = || Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
    r.put_active_stamp(StampSpec::new(StampId(1), "prod-1", Region::new("eu").unwrap(), cap()).unwrap())
        .await
        .unwrap();
    let expiry = Timestamp::from_millis(10_000);
    r.put_active_stamp(
        StampSpec::new(StampId(2), "demo-2", Region::new("eu").unwrap(), cap())
            .unwrap()
            .expires_at(expiry),
    )
    .await
    .unwrap();
    // Placement: a long-lived tenant never lands on the ephemeral stamp, even when the
    // long-lived one is full; an ephemeral tenant may.
    let p = policies::least_loaded();
    for i in 0..10 {
        let a = place_and_assign(&r, &p, &TenantSpec::new(TenantId::new(&format!("t{i}")).unwrap()))
            .await
            .unwrap();
        assert_eq!(a.stamp, StampId(1));
    }
    let err = place_and_assign(&r, &p, &TenantSpec::new(TenantId::new("late").unwrap()))
        .await
        .unwrap_err();
    // The ephemeral stamp is not counted: the long-lived fleet is full, provision a stamp.
    assert!(err.provision().is_some(), "{err}");
    let demo = place_and_assign(&r, &p, &TenantSpec::new(TenantId::new("demo").unwrap()).ephemeral())
        .await
        .unwrap();
    assert_eq!(demo.stamp, StampId(2));
    // The expiry report lists the stamp with the tenant still on it.
    let before = registry::expiry_report_from(&r, Timestamp::from_millis(5_000), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(before.due.is_empty(), "{before}");
    let report = registry::expiry_report_from(&r, Timestamp::from_millis(5_000), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.due.len(), 1);
    assert!(!report.due[0].overdue);
    assert_eq!(report.due[0].tenants, [TenantId::new("demo").unwrap()]);
    let overdue = registry::expiry_report_from(&r, Timestamp::from_millis(20_000), Duration::ZERO)
        .await
        .unwrap();
    assert!(overdue.due[0].overdue && overdue.ready().count() == 0, "{overdue}");
    assert!(
        overdue.to_string().contains("demo-2") && overdue.to_string().contains("demo"),
        "{overdue}"
    );
    // Retiring it is refused, naming the tenant.
    r.set_stamp_state(StampId(2), StampState::Draining).await.unwrap();
    match r.set_stamp_state(StampId(2), StampState::Decommissioned).await {
        Err(Error::StampNotEmpty { stamp, tenants, first }) => {
            assert_eq!(
                (stamp, tenants, first),
                (StampId(2), 1, vec![TenantId::new("demo").unwrap()])
            );
        }
        other => panic!("{other:?}"),
    }
    r.unassign(demo.tenant(), demo.epoch).await.unwrap();
    let empty = registry::expiry_report_from(&r, Timestamp::from_millis(20_000), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(empty.ready().count(), 1);
    r.set_stamp_state(StampId(2), StampState::Decommissioned).await.unwrap();
}

proptest::proptest! {
    /// The packed fast path of `version_at_least` agrees with the general precedence rules,
    /// on dotted releases short and long (past the four components the fast path takes).
    #[test]
    fn version_fast_path_agrees_with_the_rules(
        a in "[0-9]{1,6}(\\.[0-9]{1,6}){0,5}",
        b in "[0-9]{1,6}(\\.[0-9]{1,6}){0,5}",
    ) {
        use std::cmp::Ordering::*;
        let (ab, ba) = (version_at_least(&a, &b), version_at_least(&b, &a));
        match compare_versions(&a, &b) {
            Greater | Equal => proptest::prop_assert!(ab),
            Less => proptest::prop_assert!(!ab || ba, "{a} < {b} but at least it, and not the reverse"),
        }
        proptest::prop_assert!(ab || ba, "one of {a}, {b} is at least the other");
        let pad = |v: &str| {
            let mut p: Vec<u128> = v.split('.').map(|x| x.parse().unwrap()).collect();
            while p.last() == Some(&0) { p.pop(); }
            p
        };
        proptest::prop_assert_eq!(ab, pad(&a) >= pad(&b));
    }
}
