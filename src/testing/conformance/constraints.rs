//! Cases on hard constraints at the registry: residency, pin, tier and dedicated stamps are
//! refused on `assign`, `compare_and_set` (move and dual-write shadow) and `create_migration`;
//! an explicit override lets a write through and is recorded in the history.

use crate::error::Error;
use crate::model::*;
use crate::registry::{DynRegistry, RegistryExt};

use super::fixtures::*;
use super::join_all;

fn residency(s: &str) -> Residency {
    Residency::new(s).expect("valid test residency")
}

/// Registers the stamps the cases use, all active with room for 10 tenants: 1 is EU, 2 is US,
/// 3 is EU and dedicated, 4 is EU and dedicated.
async fn stamps(r: &DynRegistry) {
    let cap = [(Resource::Tenants, 10.0)];
    for (id, res, tier) in [
        (1, "eu", Tier::Shared),
        (2, "us", Tier::Shared),
        (3, "eu", Tier::Dedicated),
        (4, "eu", Tier::Dedicated),
    ] {
        r.put_active_stamp(spec(id, &cap).residency(residency(res)).tier(tier))
            .await
            .expect("put active stamp");
    }
}

fn eu(name: &str) -> TenantSpec {
    TenantSpec::new(tid(name)).residency(residency("eu"))
}

/// Asserts `result` is `ConstraintViolated` for `kind` on `stamp`, naming the case.
fn assert_violation<T: std::fmt::Debug>(case: &str, result: crate::error::Result<T>, kind: ConstraintKind, stamp: u32) {
    match result {
        Err(Error::ConstraintViolated(v)) => {
            assert_eq!(
                (v.constraint.kind(), v.stamp),
                (kind, StampId(stamp)),
                "{case}: the registry refused with the wrong constraint or stamp: {v}"
            );
        }
        other => panic!(
            "{case}: a write breaking the {kind} constraint on stamp {stamp} must fail with \
             Error::ConstraintViolated, got {other:?}"
        ),
    }
}

/// `assign` refuses a stamp outside the tenant's residency, away from its pin, of another
/// tier, or dedicated and held by another tenant, and has no effect.
pub async fn assign_refuses_broken_constraints(r: &DynRegistry) {
    stamps(r).await;
    let case = "assign_refuses_broken_constraints";
    assert_violation(case, r.assign(&eu("a"), StampId(2)).await, ConstraintKind::Residency, 2);
    let pinned = eu("b").pin(StampId(1));
    assert_violation(case, r.assign(&pinned, StampId(3)).await, ConstraintKind::Pin, 3);
    assert_violation(case, r.assign(&eu("c"), StampId(3)).await, ConstraintKind::Tier, 3);
    let dedicated = |n: &str| eu(n).tier(Tier::Dedicated);
    assert_violation(
        case,
        r.assign(&dedicated("d"), StampId(1)).await,
        ConstraintKind::Tier,
        1,
    );
    r.assign(&dedicated("e"), StampId(3))
        .await
        .expect("a dedicated tenant on an empty dedicated stamp");
    match r.assign(&dedicated("f"), StampId(3)).await {
        Err(Error::ConstraintViolated(v)) => assert_eq!(
            v.constraint,
            Constraint::Dedicated { holder: tid("e") },
            "{case}: a second tenant on a dedicated stamp must name the holder"
        ),
        other => panic!("{case}: a second tenant on a dedicated stamp must be refused, got {other:?}"),
    }
    // Refusals have no effect: no assignment, no usage, no history.
    for t in ["a", "b", "c", "d", "f"] {
        assert!(
            r.assignment(&tid(t)).await.expect("read").is_none(),
            "{case}: refused tenant {t} was assigned"
        );
        assert!(
            r.history(&tid(t)).await.expect("history").is_empty(),
            "{case}: refused tenant {t} has history"
        );
    }
    let fleet = r.fleet().await.expect("fleet");
    let used: Vec<f64> = (1..=4).map(|s| usage(&fleet, s, Resource::Tenants)).collect();
    assert_eq!(used, [0.0, 0.0, 1.0, 0.0], "{case}: refused writes changed usage");
    // Tenants without constraints keep landing anywhere of their tier.
    r.assign(&TenantSpec::new(tid("free")), StampId(2))
        .await
        .expect("an unconstrained tenant");
}

/// `compare_and_set` refuses a move or a dual-write shadow that breaks a constraint, and
/// leaves the assignment unchanged.
pub async fn compare_and_set_refuses_broken_constraints(r: &DynRegistry) {
    stamps(r).await;
    let case = "compare_and_set_refuses_broken_constraints";
    let a = r.assign(&eu("a"), StampId(1)).await.expect("assign");
    let moved = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await;
    assert_violation(case, moved, ConstraintKind::Residency, 2);
    let shadow = AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(2) });
    assert_violation(
        case,
        r.compare_and_set(a.tenant(), a.epoch, shadow).await,
        ConstraintKind::Residency,
        2,
    );
    let frozen = AssignmentChange::set_mode(AssignmentMode::Frozen {
        shadow: Some(StampId(3)),
        until: crate::time::Timestamp::ZERO,
    });
    assert_violation(
        case,
        r.compare_and_set(a.tenant(), a.epoch, frozen).await,
        ConstraintKind::Tier,
        3,
    );
    let back = AssignmentChange::move_with_mode(StampId(2), AssignmentMode::DualWrite { shadow: StampId(1) });
    assert_violation(
        case,
        r.compare_and_set(a.tenant(), a.epoch, back).await,
        ConstraintKind::Residency,
        2,
    );
    // A dedicated tenant cannot take a second tenant's dedicated stamp as its shadow.
    let d1 = r
        .assign(&eu("d1").tier(Tier::Dedicated), StampId(3))
        .await
        .expect("assign d1");
    r.assign(&eu("d2").tier(Tier::Dedicated), StampId(4))
        .await
        .expect("assign d2");
    let shadow = AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(4) });
    assert_violation(
        case,
        r.compare_and_set(d1.tenant(), d1.epoch, shadow).await,
        ConstraintKind::Dedicated,
        4,
    );
    let pinned = r
        .assign(&eu("p").pin(StampId(1)), StampId(1))
        .await
        .expect("assign pinned");
    let shadow = AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(2) });
    assert_violation(
        case,
        r.compare_and_set(pinned.tenant(), pinned.epoch, shadow).await,
        ConstraintKind::Pin,
        2,
    );
    assert_eq!(
        r.assignment(a.tenant()).await.expect("read"),
        Some(a.clone()),
        "{case}: a refused change had effect"
    );
    assert_eq!(
        r.history(a.tenant()).await.expect("history").len(),
        1,
        "{case}: a refused change was recorded"
    );
    // Changes that take no new stamp are not re-checked; allowed moves still work.
    let resized = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::resize(Demand::default()))
        .await
        .expect("a resize takes no new stamp");
    let shadow = AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(1) });
    let d = r
        .assign(&TenantSpec::new(tid("free")), StampId(2))
        .await
        .expect("assign free");
    r.compare_and_set(d.tenant(), d.epoch, shadow)
        .await
        .expect("an unconstrained shadow");
    let _ = resized;
}

/// `create_migration` refuses a destination that breaks the tenant's constraints (it would be
/// the tenant's shadow) and accepts one that does not.
pub async fn create_migration_refuses_broken_constraints(r: &DynRegistry) {
    stamps(r).await;
    let case = "create_migration_refuses_broken_constraints";
    r.assign(&eu("a"), StampId(1)).await.expect("assign");
    let planned = |to: u32| MigrationRecord::planned(tid("a"), StampId(1), StampId(to));
    assert_violation(case, r.create_migration(planned(2)).await, ConstraintKind::Residency, 2);
    assert_violation(case, r.create_migration(planned(3)).await, ConstraintKind::Tier, 3);
    assert!(
        r.migrations(Some(&tid("a"))).await.expect("list").is_empty(),
        "{case}: a refused migration was stored"
    );
    r.put_active_stamp(spec(5, &[(Resource::Tenants, 10.0)]).residency(residency("eu")))
        .await
        .expect("put stamp 5");
    r.create_migration(planned(5))
        .await
        .expect("a migration within the tenant's residency");
}

/// `put_stamp` refuses a re-spec that would break a constraint of a tenant the stamp holds
/// (serving or as a migration's shadow): a residency the tenant needs, a tier it needs, or a
/// stamp made dedicated while holding two tenants; the spec stays as it was. A tenant placed
/// against a rule by an override does not block a re-spec that breaks it the same way, and
/// changes that touch no constraint (labels, capacity) go through.
pub async fn put_stamp_refuses_a_respec_breaking_its_tenants(r: &DynRegistry) {
    stamps(r).await;
    let case = "put_stamp_refuses_a_respec_breaking_its_tenants";
    let cap = [(Resource::Tenants, 10.0)];
    let eu_spec = |id: u32| spec(id, &cap).residency(residency("eu"));
    r.assign(&eu("a"), StampId(1)).await.expect("assign a");
    r.assign(&TenantSpec::new(tid("b")), StampId(1))
        .await
        .expect("assign b");
    assert_violation(
        case,
        r.put_stamp(spec(1, &cap).residency(residency("us"))).await,
        ConstraintKind::Residency,
        1,
    );
    assert_violation(case, r.put_stamp(spec(1, &cap)).await, ConstraintKind::Residency, 1);
    assert_violation(
        case,
        r.put_stamp(eu_spec(1).tier(Tier::Dedicated)).await,
        ConstraintKind::Tier,
        1,
    );
    let s = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    assert_eq!(
        (s.spec.residency.as_ref().map(|x| x.as_str()), &s.spec.tier),
        (Some("eu"), &Tier::Shared),
        "{case}: a refused re-spec changed the stamp"
    );
    r.put_stamp(eu_spec(1).label("ring", "2"))
        .await
        .expect("a re-spec touching no constraint");
    // A migration's shadow counts: "c" (EU) dual-writes to stamp 5, which may not leave the EU.
    r.put_active_stamp(eu_spec(5)).await.expect("put stamp 5");
    let c = r.assign(&eu("c"), StampId(1)).await.expect("assign c");
    r.compare_and_set(
        c.tenant(),
        c.epoch,
        AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(5) }),
    )
    .await
    .expect("dual-write to 5");
    assert_violation(
        case,
        r.put_stamp(spec(5, &cap).residency(residency("us"))).await,
        ConstraintKind::Residency,
        5,
    );
    // Two dedicated tenants may not end up sharing a stamp made dedicated: stamp 6 holds two.
    r.put_active_stamp(eu_spec(6)).await.expect("put stamp 6");
    for t in ["d", "e"] {
        r.assign(&eu(t), StampId(6)).await.expect("assign to 6");
    }
    match r.put_stamp(eu_spec(6).tier(Tier::Dedicated)).await {
        Err(Error::ConstraintViolated(v)) => assert!(
            matches!(v.constraint.kind(), ConstraintKind::Tier | ConstraintKind::Dedicated),
            "{case}: {v}"
        ),
        other => panic!("{case}: making a stamp with two tenants dedicated must be refused, got {other:?}"),
    }
    // An override-placed tenant: "f" needs the EU but lives on US stamp 2 by an override; moving
    // stamp 2 to another non-EU residency breaks nothing new.
    let o = Override::new(ConstraintKind::Residency, "approved transfer");
    r.assign_overriding(&eu("f"), StampId(2), &o, "alice")
        .await
        .expect("overridden assign");
    r.put_stamp(spec(2, &cap).residency(residency("ca")))
        .await
        .expect("a re-spec that breaks no rule the override did not already break");
}

/// An override naming the broken constraint lets `assign` and `compare_and_set` through and is
/// recorded (constraints, reason, actor) in the history; rules it does not name still hold, and
/// an override without a reason is invalid input.
pub async fn override_is_explicit_and_recorded(r: &DynRegistry) {
    stamps(r).await;
    let case = "override_is_explicit_and_recorded";
    let o = Override::new(ConstraintKind::Residency, "legal approved transfer #123");
    let wrong = Override::new(ConstraintKind::Pin, "not the broken rule");
    assert_violation(
        case,
        r.assign_overriding(&eu("a"), StampId(2), &wrong, "alice").await,
        ConstraintKind::Residency,
        2,
    );
    match r
        .assign_overriding(
            &eu("a"),
            StampId(2),
            &Override::new(ConstraintKind::Residency, " "),
            "alice",
        )
        .await
    {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("{case}: an override without a reason must be InvalidInput, got {other:?}"),
    }
    let a = r
        .assign_overriding(&eu("a"), StampId(2), &o, "alice")
        .await
        .expect("overridden assign");
    assert_eq!(a.stamp, StampId(2));
    let b = r.assign(&eu("b"), StampId(1)).await.expect("assign b");
    let change = AssignmentChange::move_to(StampId(2))
        .overriding(ConstraintKind::Residency, "customer asked, ticket 9")
        .by("bob");
    let moved = r
        .compare_and_set(b.tenant(), b.epoch, change)
        .await
        .expect("overridden move");
    assert_eq!(moved.stamp, StampId(2));
    let ha = r.history(&tid("a")).await.expect("history a");
    assert_eq!(ha.len(), 1, "{case}: one history entry for the overridden assign");
    assert_eq!(
        ha[0].overrode.as_ref(),
        Some(&o),
        "{case}: the history must record the override"
    );
    assert_eq!(
        ha[0].actor.as_deref(),
        Some("alice"),
        "{case}: the history must record who overrode"
    );
    let hb = r.history(&tid("b")).await.expect("history b");
    assert_eq!(hb.len(), 2);
    assert!(hb[0].overrode.is_none(), "{case}: a plain assign records no override");
    let ob = hb[1].overrode.as_ref().expect("the move's override in the history");
    assert_eq!(
        (ob.constraints.as_slice(), ob.reason.as_str(), hb[1].actor.as_deref()),
        (
            &[ConstraintKind::Residency][..],
            "customer asked, ticket 9",
            Some("bob")
        ),
        "{case}: the move's history entry"
    );
    // Every registry write after the override is checked as usual.
    let plain = r
        .compare_and_set(&tid("b"), moved.epoch, AssignmentChange::move_to(StampId(3)))
        .await;
    assert_violation(case, plain, ConstraintKind::Tier, 3);
}

/// Eight dedicated tenants race for one empty dedicated stamp: exactly one wins, the others get
/// the `Dedicated` constraint naming the winner, and the stamp holds one tenant.
pub async fn race_for_a_dedicated_stamp_has_one_winner(r: &DynRegistry) {
    stamps(r).await;
    let case = "race_for_a_dedicated_stamp_has_one_winner";
    let specs: Vec<TenantSpec> = (0..8).map(|i| eu(&format!("d{i}")).tier(Tier::Dedicated)).collect();
    let results = join_all(specs.iter().map(|t| r.assign(t, StampId(4))).collect()).await;
    let winners: Vec<&Assignment> = results.iter().filter_map(|x| x.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "{case}: {} tenants took one dedicated stamp",
        winners.len()
    );
    let holder = winners[0].tenant().clone();
    for res in &results {
        match res {
            Ok(_) => {}
            Err(Error::ConstraintViolated(v)) => assert_eq!(
                v.constraint,
                Constraint::Dedicated { holder: holder.clone() },
                "{case}: a loser must be told who holds the stamp"
            ),
            Err(e) => panic!("{case}: a loser must get ConstraintViolated, got {e:?}"),
        }
    }
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(
        usage(&fleet, 4, Resource::Tenants),
        1.0,
        "{case}: the dedicated stamp's tenant count"
    );
    assert_eq!(
        r.all_assignments().await.expect("all").len(),
        1,
        "{case}: assignments after the race"
    );
}

/// An ephemeral stamp (one with an expiry) takes only ephemeral tenants: `assign` and a move
/// of a long-lived tenant onto it are refused with the lifetime rule; an ephemeral tenant is
/// taken, and its flag and the stamp's expiry read back; making a stamp that holds long-lived
/// tenants ephemeral is refused.
pub async fn lifetimes_keep_long_lived_tenants_off_ephemeral_stamps(r: &DynRegistry) {
    let case = "lifetimes_keep_long_lived_tenants_off_ephemeral_stamps";
    let cap = [(Resource::Tenants, 10.0)];
    let expiry = crate::time::Timestamp::from_millis(1_900_000_000_000);
    r.put_active_stamp(spec(1, &cap)).await.expect("long-lived stamp");
    r.put_active_stamp(spec(2, &cap).expires_at(expiry))
        .await
        .expect("ephemeral stamp");
    let read = r.stamp(StampId(2)).await.expect("stamp").expect("present");
    assert_eq!(read.spec.expires_at, Some(expiry), "{case}: the expiry reads back");
    assert_violation(
        case,
        r.assign(&TenantSpec::new(tid("acme")), StampId(2)).await,
        ConstraintKind::Lifetime,
        2,
    );
    let acme = r
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .expect("long-lived on long-lived");
    assert_violation(
        case,
        r.compare_and_set(acme.tenant(), acme.epoch, AssignmentChange::move_to(StampId(2)))
            .await,
        ConstraintKind::Lifetime,
        2,
    );
    let demo = r
        .assign(&TenantSpec::new(tid("demo")).ephemeral(), StampId(2))
        .await
        .expect("ephemeral on ephemeral");
    let back = r
        .assignment(demo.tenant())
        .await
        .expect("assignment")
        .expect("assigned");
    assert!(back.spec.ephemeral, "{case}: the ephemeral flag reads back");
    // An ephemeral tenant may live on a long-lived stamp too.
    r.assign(&TenantSpec::new(tid("trial")).ephemeral(), StampId(1))
        .await
        .expect("ephemeral on long-lived");
    // Stamp 1 holds acme (long-lived): it cannot become ephemeral.
    assert_violation(
        case,
        r.put_stamp(spec(1, &cap).expires_at(expiry)).await,
        ConstraintKind::Lifetime,
        1,
    );
    let one = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    assert_eq!(one.spec.expires_at, None, "{case}: a refused re-spec changes nothing");
}
