//! Every built-in policy and combinator against `check_placement_invariants`, 1,000 cases
//! each, plus the headline safety properties on random fleets.
#![cfg(feature = "proptest")]

use std::sync::Arc;

use proptest::prelude::*;
use stamps::placement::{
    dry_run, from_fn, named, policies, Affinity, AntiAffinity, BoxPlacement, Either, Healthy, InRegion, Pipeline,
    Placement, PlacementExt, RequireLabel, TieBreak,
};
use stamps::testing::placement::{fleet_with_health, scenario, tenant};
use stamps::testing::{check_placement_invariants, PlacementInvariants};
use stamps::*;

const REGRESSIONS: &str = "tests/placement_invariants.proptest-regressions";

fn inv() -> PlacementInvariants {
    PlacementInvariants::new().cases(1000).persist_failures_to(REGRESSIONS)
}

fn check<P: Placement + ?Sized>(p: &P) {
    if let Err(e) = inv().check(p) {
        panic!("{e}");
    }
}

#[test]
fn least_loaded() {
    // The plain entry point, as users call it (1,000 cases by default).
    check_placement_invariants(&policies::least_loaded()).unwrap();
    check(&policies::least_loaded());
}

#[test]
fn most_available() {
    check(&policies::most_available());
}

#[test]
fn bin_packing() {
    check(&policies::bin_packing());
}

#[test]
fn rendezvous() {
    check(&policies::rendezvous());
}

#[test]
fn tenant_based() {
    check(&policies::tenant_based());
}

#[test]
fn nearest() {
    check(&policies::nearest());
}

#[test]
fn hybrid() {
    check(&policies::hybrid());
}

#[test]
fn geographic_declares_region_as_hard() {
    inv().constraint(InRegion).check(&policies::geographic()).unwrap();
}

#[test]
fn dedicated_for_enterprise_declares_affinity() {
    inv()
        .constraint(Affinity)
        .constraint(AntiAffinity)
        .check(&policies::dedicated_for_enterprise())
        .unwrap();
}

#[test]
fn pipeline_without_scorers_and_with_options() {
    check(&Pipeline::new());
    check(&policies::least_loaded().tie_break(TieBreak::Rendezvous));
    inv()
        .constraint(Healthy::strict())
        .check(&policies::least_loaded().avoid_degraded())
        .unwrap();
    inv()
        .constraint(RequireLabel::new("az", "b"))
        .check(&Pipeline::new().filter(RequireLabel::new("az", "b")))
        .unwrap();
}

#[test]
fn combinator_filter() {
    let only_a = named("az-a", |_: &TenantSpec, s: &StampLoad| {
        s.stamp.spec.labels.get("az").map(String::as_str) == Some("a")
    });
    let only_a2 = named("az-a", |_: &TenantSpec, s: &StampLoad| {
        s.stamp.spec.labels.get("az").map(String::as_str) == Some("a")
    });
    // Through the combinator (on a boxed policy, so the pipeline's own `filter` is not used).
    let p = policies::least_loaded().boxed().filter(only_a);
    inv().constraint(only_a2).check(&p).unwrap();
}

#[test]
fn combinator_prefer() {
    check(&policies::least_loaded().prefer(InRegion));
    check(&policies::bin_packing().boxed().prefer(Healthy::strict()));
}

#[test]
fn combinator_or_else() {
    check(&policies::geographic().or_else(policies::least_loaded()));
    check(
        &policies::least_loaded()
            .filter(InRegion)
            .or_else(policies::rendezvous()),
    );
}

#[test]
fn combinator_either_and_boxed() {
    let left: Either<Pipeline, Pipeline> = Either::Left(policies::bin_packing());
    let right: Either<Pipeline, Pipeline> = Either::Right(policies::rendezvous());
    check(&left);
    check(&right);
    let boxed: BoxPlacement = policies::hybrid().boxed();
    check(&boxed);
    let shared: Arc<dyn Placement> = Arc::new(policies::most_available());
    check(&shared);
    let by_ref: &dyn Placement = &*boxed;
    check(&by_ref);
}

#[test]
fn closures_delegating_to_a_pipeline() {
    let inner = policies::least_loaded();
    check(&from_fn(move |t, f| inner.place(t, f)));
}

#[test]
fn the_checker_catches_a_careless_policy() {
    let careless = from_fn(|_, fleet| {
        fleet
            .stamps()
            .next()
            .map(|s| s.id())
            .ok_or(stamps::placement::PlacementError::Policy { reason: "no stamps" })
    });
    let err = PlacementInvariants::new().cases(200).check(&careless).unwrap_err();
    assert!(err.message.contains("placement invariant broken"), "{err}");
    // And one that gives up although a stamp is eligible.
    let lazy = from_fn(|_, _| Err(stamps::placement::PlacementError::Policy { reason: "lazy" }));
    let err = PlacementInvariants::new().cases(200).check(&lazy).unwrap_err();
    assert!(err.message.contains("eligible and has room"), "{err}");
    assert!(PlacementInvariants::new()
        .cases(200)
        .allow_failure()
        .check(&lazy)
        .is_ok());
}

fn all_builtins() -> Vec<(&'static str, BoxPlacement)> {
    vec![
        ("least_loaded", policies::least_loaded().boxed()),
        ("most_available", policies::most_available().boxed()),
        ("bin_packing", policies::bin_packing().boxed()),
        ("rendezvous", policies::rendezvous().boxed()),
        ("geographic", policies::geographic().boxed()),
        ("tenant_based", policies::tenant_based().boxed()),
        ("hybrid", policies::hybrid().boxed()),
        ("dedicated_for_enterprise", policies::dedicated_for_enterprise().boxed()),
        ("nearest", policies::nearest().boxed()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// A residency-eu tenant is never placed outside eu; a pinned tenant goes to its pin or
    /// nowhere; a dedicated tenant lands only on an empty dedicated stamp; a shared tenant never
    /// on a dedicated one. Every built-in policy, on random fleets.
    #[test]
    fn residency_pin_and_tier_hold_on_random_fleets(s in scenario(16)) {
        let eu = Residency::new("eu").unwrap();
        for (name, p) in all_builtins() {
            if let Ok(id) = p.place(&s.tenant, &s.view()) {
                let load = s.fleet.get(id).unwrap();
                if s.tenant.residency.as_ref() == Some(&eu) {
                    prop_assert_eq!(load.stamp.spec.residency.as_ref(), Some(&eu), "{}", name);
                }
                if let Some(pin) = s.tenant.pin {
                    prop_assert_eq!(id, pin, "{}", name);
                }
                if s.tenant.tier == Tier::Dedicated {
                    prop_assert_eq!(&load.stamp.spec.tier, &Tier::Dedicated, "{}", name);
                    prop_assert_eq!(load.tenants(), 0, "{}", name);
                } else {
                    prop_assert_ne!(&load.stamp.spec.tier, &Tier::Dedicated, "{}", name);
                }
            }
        }
    }

    /// Placing many tenants one after another (a dry run updates the simulated fleet): no
    /// dedicated stamp ever holds two tenants, and no shared tenant joins a dedicated stamp.
    #[test]
    fn dedicated_never_shares_over_many_placements(
        (fleet, health) in fleet_with_health(10),
        tenants in prop::collection::vec(tenant(10), 1..40),
    ) {
        let view = stamps::placement::FleetView::new(&fleet).with_health(&health);
        for (name, p) in all_builtins() {
            let run = dry_run(&p, &tenants, &view);
            for l in &run.fleet.stamps {
                if l.stamp.spec.tier == Tier::Dedicated {
                    prop_assert!(l.tenants() <= 1 || fleet.get(l.id()).map(|b| b.tenants()) == Some(l.tenants()),
                        "{}: dedicated {} holds {}", name, l.id(), l.tenants());
                }
            }
            for (t, o) in tenants.iter().zip(run.placements.iter()) {
                if let Ok(id) = &o.1 {
                    let stamp_tier = &run.fleet.get(*id).unwrap().stamp.spec.tier;
                    prop_assert_eq!(stamp_tier == &Tier::Dedicated, t.tier == Tier::Dedicated, "{}", name);
                    if let Some(pin) = t.pin {
                        prop_assert_eq!(*id, pin);
                    }
                }
            }
        }
    }

    /// Rendezvous hashing is stable: adding a stamp moves a tenant only onto the new stamp.
    #[test]
    fn rendezvous_moves_tenants_only_to_a_new_stamp(s in scenario(12)) {
        let p = policies::rendezvous();
        let before = p.place(&s.tenant, &s.view());
        let mut grown = s.fleet.clone();
        let next = grown.stamps.last().map_or(1, |l| l.id().0 + 1);
        let mut extra = grown.stamps.first().cloned();
        if let Some(e) = extra.as_mut() {
            e.stamp.spec.id = StampId(next);
            grown.stamps.push(e.clone());
        }
        let after = p.place(&s.tenant, &stamps::placement::FleetView::new(&grown).with_health(&s.health));
        if let (Ok(b), Ok(a)) = (before, after) {
            prop_assert!(a == b || a == StampId(next), "moved from {} to {}", b, a);
        }
    }
}

/// The generated scenarios exercise both outcomes, and every kind of rejection, so the
/// invariant runs above are not vacuous.
#[test]
fn scenarios_cover_success_and_every_rejection() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use stamps::placement::{FilterKind, PlacementError};
    let mut runner = TestRunner::deterministic();
    let strategy = scenario(16);
    let p = policies::least_loaded();
    let (mut ok, mut failed, mut pinned) = (0, 0, 0);
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        match p.place(&s.tenant, &s.view()) {
            Ok(_) => ok += 1,
            Err(PlacementError::NoEligibleStamp(n)) => {
                failed += 1;
                for k in [
                    FilterKind::Residency,
                    FilterKind::Tier,
                    FilterKind::State,
                    FilterKind::Health,
                    FilterKind::Headroom,
                ] {
                    if n.rejected_by(k) > 0 {
                        kinds.insert(k);
                    }
                }
            }
            Err(PlacementError::PinnedStampRejected { .. } | PlacementError::PinnedStampMissing { .. }) => pinned += 1,
            Err(_) => failed += 1,
        }
    }
    assert!(ok > 400, "only {ok} of 2000 placed");
    assert!(failed > 100, "only {failed} of 2000 failed");
    assert!(pinned > 20, "only {pinned} pinned failures");
    assert_eq!(kinds.len(), 5, "rejections seen: {kinds:?}");
}

fn eligible_core(t: &TenantSpec, l: &StampLoad, view: &stamps::placement::FleetView<'_>) -> bool {
    l.stamp.state == StampState::Active
        && view.health(l.id()) != HealthStatus::Unhealthy
        && (t.residency.is_none() || l.stamp.spec.residency == t.residency)
        && l.stamp.spec.tier == t.tier
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// `explain` agrees with `place`: same outcome; the chosen stamp is eligible with the top
    /// score; every other stamp is either rejected or scores no higher.
    #[test]
    fn explain_agrees_with_place(s in scenario(16)) {
        use stamps::placement::Verdict;
        for (name, p) in all_builtins() {
            let e = p.explain(&s.tenant, &s.view());
            prop_assert_eq!(&e.outcome, &p.place(&s.tenant, &s.view()), "{}", name);
            prop_assert_eq!(e.rows.len(), s.fleet.stamps.len());
            prop_assert!(!e.to_string().is_empty());
            if let Ok(id) = e.outcome {
                if let Some(Verdict::Eligible { score: best, .. }) = e.row(id).map(|r| &r.verdict) {
                    for r in &e.rows {
                        if let Verdict::Eligible { score, .. } = &r.verdict {
                            prop_assert!(score <= best, "{}: {} scores {} > chosen {}", name, r.stamp, score, best);
                        }
                    }
                } else if name != "hybrid" {
                    // hybrid's row is from the preferred (in-region) pass, where it is eligible too
                    prop_assert!(false, "{}: chosen {} is not eligible in the explanation", name, id);
                }
            }
        }
    }

    /// The rebalance planner: moves only movable tenants from where they are, to stamps that
    /// satisfy the hard constraints; never moves a tenant twice; and leaves every stamp it does
    /// not list as unresolved at or under the target.
    #[test]
    fn rebalance_plans_honour_constraints_and_target(
        (fleet, health) in fleet_with_health(8),
        tenants in prop::collection::vec(tenant(8), 1..60),
        target in 0.3f64..0.9,
    ) {
        use stamps::placement::{plan_rebalance, FleetView};
        let view = FleetView::new(&fleet).with_health(&health);
        // Tenant ids are unique in a registry.
        let mut seen = std::collections::BTreeSet::new();
        let tenants: Vec<TenantSpec> = tenants.into_iter().filter(|t| seen.insert(t.id.clone())).collect();
        // Fill the fleet by placing tenants with bin packing (which piles them up), so some
        // stamps end above target; their assignments are what the planner may move.
        let run = dry_run(&policies::bin_packing(), &tenants, &view);
        let assignments: Vec<Assignment> = tenants
            .iter()
            .zip(run.placements.iter())
            .filter_map(|(t, (_, o))| o.as_ref().ok().map(|id| Assignment::new(
                t.clone(), *id, Epoch(1), AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO)))
            .collect();
        let filled = run.fleet.clone();
        let fview = FleetView::new(&filled).with_health(&health);
        let plan = plan_rebalance(&fview, &assignments, target, &policies::least_loaded()).unwrap();
        let mut moved = std::collections::BTreeSet::new();
        for m in &plan.moves {
            prop_assert!(moved.insert(m.tenant.clone()), "{} moved twice", m.tenant);
            let a = assignments.iter().find(|a| a.tenant() == &m.tenant).unwrap();
            prop_assert_eq!(a.stamp, m.from);
            prop_assert!(a.spec.pin.is_none() && a.spec.tier != Tier::Dedicated);
            let dest = filled.get(m.to).unwrap();
            prop_assert!(eligible_core(&a.spec, dest, &fview), "{} -> {} breaks a hard constraint", m.tenant, m.to);
        }
        for l in &plan.after.stamps {
            if plan.unresolved.contains(&l.id()) {
                continue;
            }
            let before = filled.get(l.id()).unwrap();
            for (r, _) in l.stamp.spec.capacity.limits().iter() {
                let u = l.utilization(r).unwrap();
                let was = before.utilization(r).unwrap();
                // Stamps the planner touched end at or under target; others did not grow.
                prop_assert!(u <= target + 1e-9 || u <= was + 1e-9, "{}: {} at {} > {}", l.id(), r, u, target);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The pipeline's one-pass headroom check agrees with `StampLoad::fits_with_headroom`,
    /// including which resource does not fit.
    #[test]
    fn headroom_filter_agrees_with_the_model(
        load in stamps::testing::placement::stamp(StampId(1)),
        t in tenant(1),
    ) {
        use stamps::placement::{FitsHeadroom, FleetView, StampFilter};
        let fleet = Fleet::default();
        let view = FleetView::new(&fleet);
        let ours = FitsHeadroom.check(&t, &load, &view).map_err(|r| r.resource.cloned());
        let model = load.fits_with_headroom(&t.demand).map_err(|r| Some(r.clone()));
        prop_assert_eq!(ours, model);
    }
}

/// Generated stamps carry varied names (canaries among them), so a fallback that forgets a
/// name-based gate is caught by the default generator, and the failure names the stamps.
#[test]
fn a_fallback_that_forgets_a_name_gate_is_caught() {
    let no_canary = |_: &TenantSpec, l: &StampLoad| !l.stamp.spec.name.contains("canary");
    let gated = policies::least_loaded().filter(named("no-canary", no_canary));
    PlacementInvariants::new()
        .cases(500)
        .constraint(named("no-canary", no_canary))
        .check(&gated)
        .unwrap();
    let leaky = policies::least_loaded()
        .filter(named("no-canary", no_canary))
        .or_else(policies::most_available());
    let err = PlacementInvariants::new()
        .cases(1000)
        .constraint(named("no-canary", no_canary))
        .check(&leaky)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-canary") && err.contains("canary-"), "{err}");
    assert!(err.contains("usage / limit") && err.contains("tenant "), "{err}");
}

/// A policy of one's own that forgets lifetimes (it checks everything else) is caught: the
/// generated fleets hold ephemeral stamps and the checker holds every policy to the rule.
#[test]
fn a_policy_that_ignores_lifetimes_is_caught() {
    use stamps::model::constraints;
    let forgetful = from_fn(|t: &TenantSpec, fleet: &stamps::placement::FleetView<'_>| {
        fleet
            .stamps()
            .filter(|l| {
                l.stamp.state == StampState::Active
                    && fleet.health(l.id()) != HealthStatus::Unhealthy
                    && t.pin.is_none_or(|p| p == l.id())
                    && constraints::residency_matches(t, &l.stamp.spec)
                    && constraints::tier_allows(t, &l.stamp.spec)
                    && constraints::dedicated_free(&l.stamp.spec, l.tenants())
                    && l.fits_with_headroom(&t.demand).is_ok()
            })
            .map(|l| l.id())
            .next()
            .ok_or(stamps::placement::PlacementError::Policy { reason: "nothing fits" })
    });
    let err = PlacementInvariants::new()
        .cases(1000)
        .allow_failure()
        .check(&forgetful)
        .unwrap_err();
    assert!(err.to_string().contains("ephemeral"), "{err}");
}
