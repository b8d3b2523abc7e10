//! Cases on operators' directives: pins as a table (set, read, enforced by every write,
//! recorded in the history and the feed, outliving an unassign), routing overrides (set,
//! replaced, cleared, never chained, fed to routers, kept in their own history) and repair
//! records.

use crate::error::Error;
use crate::model::*;
use crate::registry::DynRegistry;

use super::fixtures::*;
use super::join2;

fn decision(actor: &str, reason: &str) -> Decision {
    Decision::new(actor, reason).expect("valid test decision")
}

/// The changes after `before`, asserting there is exactly one, of the expected kind.
async fn one_change(r: &DynRegistry, before: Version, case: &str, write: &str) -> Change {
    let batch = r.changes_since(before, 16).await.expect("changes_since");
    assert_eq!(
        batch.changes.len(),
        1,
        "{case}: {write} must append exactly one change, found {:?}",
        batch.changes
    );
    batch.changes.into_iter().next().expect("one change")
}

async fn head(r: &DynRegistry) -> Version {
    r.changes_since(Version::ZERO, 1).await.expect("changes_since").head
}

/// A pin set with `set_pin` is read back, constrains `assign`, `compare_and_set` and
/// `create_migration`, is carried by the assignment, appears once in the feed and in the
/// history with who and why, outlives an unassign, and is cleared the same way.
pub async fn pins_are_a_table_enforced_by_every_write(r: &DynRegistry) {
    let case = "pins_are_a_table_enforced_by_every_write";
    let cap = [(Resource::Tenants, 10.0)];
    for id in [1, 2, 3] {
        active(r, id, &cap).await;
    }
    let acme = tid("acme");
    let why = decision("alice", "contract keeps acme on stamp 2");
    let before = head(r).await;
    let pin = r
        .set_pin(&acme, Some(StampId(2)), &why)
        .await
        .expect("pin an unassigned tenant");
    assert_eq!(
        (pin.stamp, &pin.decision),
        (Some(StampId(2)), &why),
        "{case}: the pin written"
    );
    let change = one_change(r, before, case, "set_pin").await;
    assert_eq!(
        change.kind,
        ChangeKind::Pin(Box::new(pin.clone())),
        "{case}: the pin change"
    );
    assert_eq!(pin.version, change.version, "{case}: a pin's version is its change's");
    assert_eq!(
        r.pin(&acme).await.expect("pin"),
        Some(pin.clone()),
        "{case}: pin read back"
    );
    assert_eq!(
        r.pins(None, 10).await.expect("pins"),
        vec![pin.clone()],
        "{case}: pins listed"
    );

    // assign: elsewhere refused, there accepted and carrying the pin.
    let spec = TenantSpec::new(acme.clone());
    match r.assign(&spec, StampId(1)).await {
        Err(Error::ConstraintViolated(v)) => assert_eq!(v.constraint, Constraint::Pin { pinned: StampId(2) }),
        other => panic!("{case}: assign away from the recorded pin must be refused, got {other:?}"),
    }
    match r.assign(&spec.clone().pin(StampId(3)), StampId(3)).await {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("{case}: a spec naming another pin than the recorded one is InvalidInput, got {other:?}"),
    }
    let a = r.assign(&spec, StampId(2)).await.expect("assign onto the pin");
    assert_eq!(
        a.spec.pin,
        Some(StampId(2)),
        "{case}: the assignment carries the recorded pin"
    );
    // compare_and_set and create_migration enforce it.
    match r
        .compare_and_set(&acme, a.epoch, AssignmentChange::move_to(StampId(1)))
        .await
    {
        Err(Error::ConstraintViolated(_)) => {}
        other => panic!("{case}: a move away from the pin must be refused, got {other:?}"),
    }
    let shadow = AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(3) });
    assert!(
        matches!(
            r.compare_and_set(&acme, a.epoch, shadow).await,
            Err(Error::ConstraintViolated(_))
        ),
        "{case}: a shadow away from the pin must be refused"
    );
    let planned = MigrationRecord::planned(acme.clone(), StampId(2), StampId(1));
    assert!(
        matches!(r.create_migration(planned).await, Err(Error::ConstraintViolated(_))),
        "{case}: a migration away from the pin must be refused"
    );
    // A pin the current placement breaks is refused.
    match r.set_pin(&acme, Some(StampId(1)), &why).await {
        Err(Error::ConstraintViolated(v)) => assert_eq!(v.stamp, StampId(2), "{case}: names the held stamp"),
        other => panic!("{case}: pinning an assigned tenant away from its stamp must be refused, got {other:?}"),
    }
    // Unknown stamps and invalid decisions are refused.
    assert!(
        matches!(r.set_pin(&acme, Some(StampId(99)), &why).await, Err(Error::NotFound(_))),
        "{case}: a pin to an unknown stamp is NotFound"
    );
    let mut bad = why.clone();
    bad.reason = String::new();
    assert!(
        matches!(r.set_pin(&acme, None, &bad).await, Err(Error::InvalidInput(_))),
        "{case}: an empty reason is InvalidInput"
    );
    assert_eq!(
        r.pin(&acme).await.expect("pin"),
        Some(pin.clone()),
        "{case}: refusals change nothing"
    );

    // The pin outlives an unassign and holds for the next assignment.
    let current = r.assignment(&acme).await.expect("assignment").expect("assigned");
    r.unassign(&acme, current.epoch).await.expect("unassign");
    assert!(
        r.pin(&acme).await.expect("pin").is_some(),
        "{case}: a pin outlives an unassign"
    );
    assert!(
        matches!(r.assign(&spec, StampId(1)).await, Err(Error::ConstraintViolated(_))),
        "{case}: the next assignment is still pinned"
    );
    // Cleared: the pin is gone, assignments are free, and clearing twice is refused.
    let a = r.assign(&spec, StampId(2)).await.expect("assign onto the pin");
    let before = head(r).await;
    let cleared = r
        .set_pin(&acme, None, &decision("bob", "contract ended"))
        .await
        .expect("unpin");
    assert_eq!(cleared.stamp, None, "{case}: the clearing record");
    let change = one_change(r, before, case, "set_pin(None)").await;
    assert_eq!(
        change.kind,
        ChangeKind::Pin(Box::new(cleared)),
        "{case}: the clearing change"
    );
    assert_eq!(r.pin(&acme).await.expect("pin"), None, "{case}: no pin after clearing");
    let now = r.assignment(&acme).await.expect("assignment").expect("assigned");
    assert_eq!(
        (now.spec.pin, now.epoch),
        (None, a.epoch),
        "{case}: unpinning moves no epoch"
    );
    r.compare_and_set(&acme, now.epoch, AssignmentChange::move_to(StampId(1)))
        .await
        .expect("an unpinned tenant moves");
    assert!(
        matches!(r.set_pin(&acme, None, &why).await, Err(Error::InvalidInput(_))),
        "{case}: clearing a tenant without pin is InvalidInput"
    );
    // The history tells who pinned and unpinned, and why.
    let history = r.history(&acme).await.expect("history");
    type PinEntry<'a> = (HistoryAction, Option<StampId>, Option<&'a str>, Option<&'a str>);
    let pins: Vec<PinEntry<'_>> = history
        .iter()
        .filter(|e| matches!(e.action, HistoryAction::Pinned | HistoryAction::Unpinned))
        .map(|e| (e.action, e.to, e.actor.as_deref(), e.reason.as_deref()))
        .collect();
    assert_eq!(
        pins,
        vec![
            (
                HistoryAction::Pinned,
                Some(StampId(2)),
                Some("alice"),
                Some("contract keeps acme on stamp 2")
            ),
            (HistoryAction::Unpinned, None, Some("bob"), Some("contract ended")),
        ],
        "{case}: pin history"
    );
    assert!(
        history.iter().all(|e| e.validate().is_ok()),
        "{case}: every history entry is valid"
    );
}

/// An `assign` whose spec carries a pin records it in the pin table, so the pin holds for
/// later writes and reads back from `pin`; pins page in tenant order.
pub async fn a_pin_in_an_assigned_spec_is_recorded(r: &DynRegistry) {
    let case = "a_pin_in_an_assigned_spec_is_recorded";
    let cap = [(Resource::Tenants, 10.0)];
    for id in [1, 2] {
        active(r, id, &cap).await;
    }
    for name in ["c", "a", "b"] {
        r.assign(&TenantSpec::new(tid(name)).pin(StampId(1)), StampId(1))
            .await
            .expect("assign pinned");
    }
    let pin = r.pin(&tid("a")).await.expect("pin").expect("recorded");
    assert_eq!(pin.stamp, Some(StampId(1)), "{case}: the spec's pin is recorded");
    let a = r.assignment(&tid("a")).await.expect("assignment").expect("assigned");
    assert_eq!(pin.version.0, a.epoch.0, "{case}: recorded by the assigning write");
    r.unassign(&tid("a"), a.epoch).await.expect("unassign");
    assert!(
        matches!(
            r.assign(&TenantSpec::new(tid("a")), StampId(2)).await,
            Err(Error::ConstraintViolated(_))
        ),
        "{case}: the recorded pin holds after an unassign"
    );
    let mut seen = Vec::new();
    let mut after: Option<TenantId> = None;
    for _ in 0..10 {
        let page = r.pins(after.as_ref(), 1).await.expect("pins");
        let Some(p) = page.into_iter().next() else { break };
        after = Some(p.tenant.clone());
        seen.push(p.tenant.to_string());
    }
    assert_eq!(seen, ["a", "b", "c"], "{case}: pins page by one in tenant order");
}

/// `set_route_override` sets, replaces and clears a stamp's redirect, appending one change
/// each; refuses unknown stamps, self-redirects, decommissioned targets and chains; and keeps
/// every write in the stamp's override history.
pub async fn route_overrides_are_a_table_without_chains(r: &DynRegistry) {
    let case = "route_overrides_are_a_table_without_chains";
    let cap = [(Resource::Tenants, 10.0)];
    for id in [1, 2, 3, 4] {
        active(r, id, &cap).await;
    }
    let why = decision("alice", "stamp 1 restore");
    let to = |s: u32, when| Some(Redirect::new(StampId(s), when));
    let before = head(r).await;
    let set = r
        .set_route_override(StampId(1), to(2, RedirectWhen::Always), &why)
        .await
        .expect("set override");
    let change = one_change(r, before, case, "set_route_override").await;
    assert_eq!(
        change.kind,
        ChangeKind::RouteOverride(Box::new(set.clone())),
        "{case}: the change"
    );
    assert_eq!(set.version, change.version, "{case}: its version is its change's");
    assert_eq!(
        r.route_overrides().await.expect("overrides"),
        vec![set.clone()],
        "{case}: in force"
    );
    let refused = [
        (StampId(9), to(2, RedirectWhen::Always), "an unknown stamp"),
        (StampId(3), to(9, RedirectWhen::Always), "an unknown target"),
        (StampId(3), to(3, RedirectWhen::Always), "a redirect to itself"),
        (
            StampId(2),
            to(3, RedirectWhen::Always),
            "a redirect of a target (a chain)",
        ),
        (
            StampId(3),
            to(1, RedirectWhen::Always),
            "a redirect to a redirected stamp (a chain)",
        ),
        (StampId(3), None, "clearing a stamp without override"),
    ];
    for (stamp, redirect, what) in refused {
        let before = head(r).await;
        let out = r.set_route_override(stamp, redirect, &why).await;
        assert!(
            matches!(out, Err(Error::NotFound(_) | Error::InvalidInput(_))),
            "{case}: {what} must be refused, got {out:?}"
        );
        assert_eq!(head(r).await, before, "{case}: {what} appended a change");
    }
    r.set_stamp_state(StampId(4), StampState::Draining)
        .await
        .expect("drain");
    r.set_stamp_state(StampId(4), StampState::Decommissioned)
        .await
        .expect("decommission");
    assert!(
        matches!(
            r.set_route_override(StampId(3), to(4, RedirectWhen::Always), &why)
                .await,
            Err(Error::InvalidInput(_))
        ),
        "{case}: a decommissioned target is refused"
    );
    // Replaced, then cleared.
    let replaced = r
        .set_route_override(
            StampId(1),
            to(3, RedirectWhen::WhileUnhealthy),
            &decision("bob", "pair 1 with 3"),
        )
        .await
        .expect("replace override");
    assert_eq!(
        r.route_overrides().await.expect("overrides"),
        vec![replaced.clone()],
        "{case}: replaced"
    );
    let cleared = r
        .set_route_override(StampId(1), None, &decision("bob", "restored"))
        .await
        .expect("clear override");
    assert!(
        r.route_overrides().await.expect("overrides").is_empty(),
        "{case}: cleared"
    );
    assert_eq!(
        r.route_override_history(StampId(1)).await.expect("history"),
        vec![set, replaced, cleared],
        "{case}: every write in order"
    );
    assert!(
        r.route_override_history(StampId(2)).await.expect("history").is_empty(),
        "{case}: another stamp's history is its own"
    );
    // A stamp an override redirects to cannot be retired until the override is cleared.
    r.set_route_override(StampId(3), to(2, RedirectWhen::Always), &why)
        .await
        .expect("set override");
    r.set_stamp_state(StampId(2), StampState::Draining)
        .await
        .expect("drain");
    assert!(
        matches!(
            r.set_stamp_state(StampId(2), StampState::Decommissioned).await,
            Err(Error::InvalidInput(_))
        ),
        "{case}: a redirect target cannot be decommissioned"
    );
    r.set_route_override(StampId(3), None, &why)
        .await
        .expect("clear override");
    r.set_stamp_state(StampId(2), StampState::Decommissioned)
        .await
        .expect("decommission once no override targets it");
}

/// `record_repair` appends a `Repaired` history entry with actor and reason, and one change,
/// for assigned and unassigned tenants alike, and refuses unknown stamps.
pub async fn repairs_are_recorded_in_the_history(r: &DynRegistry) {
    let case = "repairs_are_recorded_in_the_history";
    active(r, 1, &[(Resource::Tenants, 10.0)]).await;
    let a = r
        .assign(&TenantSpec::new(tid("kept")), StampId(1))
        .await
        .expect("assign");
    for (tenant, epoch) in [("kept", a.epoch), ("gone", Epoch(0))] {
        let why = decision("bob", "reconcile run 41: deleted the orphan copy");
        let before = head(r).await;
        let entry = r
            .record_repair(&tid(tenant), StampId(1), &why)
            .await
            .expect("record repair");
        let change = one_change(r, before, case, "record_repair").await;
        assert_eq!(
            change.kind,
            ChangeKind::Repaired {
                tenant: tid(tenant),
                stamp: StampId(1)
            },
            "{case}: the change"
        );
        assert_eq!(
            (entry.version, entry.action, entry.to, entry.epoch),
            (change.version, HistoryAction::Repaired, Some(StampId(1)), epoch),
            "{case}: the entry"
        );
        assert_eq!(entry.actor.as_deref(), Some("bob"), "{case}: who");
        assert_eq!(entry.reason.as_deref(), Some(why.reason.as_str()), "{case}: why");
        let history = r.history(&tid(tenant)).await.expect("history");
        assert_eq!(history.last(), Some(&entry), "{case}: the entry reads back");
    }
    let why = decision("bob", "x");
    assert!(
        matches!(
            r.record_repair(&tid("kept"), StampId(7), &why).await,
            Err(Error::NotFound(_))
        ),
        "{case}: an unknown stamp is NotFound"
    );
    let after = r.assignment(&tid("kept")).await.expect("assignment").expect("assigned");
    assert_eq!(after.epoch, a.epoch, "{case}: a repair record changes no placement");
}

/// An `assign` and a `set_pin` to another stamp, racing for the same unassigned tenant: exactly
/// one wins (the pin then forbids the assignment, or the assignment the pin), never both.
pub async fn race_of_pin_and_assign_has_one_winner(r: &DynRegistry) {
    let case = "race_of_pin_and_assign_has_one_winner";
    for id in [1, 2] {
        active(r, id, &[(Resource::Tenants, 100.0)]).await;
    }
    let why = decision("ops", "race");
    for round in 0..16 {
        let t = tid(&format!("t{round:02}"));
        let spec = TenantSpec::new(t.clone());
        let (assigned, pinned) = if round % 2 == 0 {
            let (a, p) = join2(r.assign(&spec, StampId(1)), r.set_pin(&t, Some(StampId(2)), &why)).await;
            (a.is_ok(), p.is_ok())
        } else {
            let (p, a) = join2(r.set_pin(&t, Some(StampId(2)), &why), r.assign(&spec, StampId(1))).await;
            (a.is_ok(), p.is_ok())
        };
        assert!(
            assigned != pinned,
            "{case}: round {round}: assign won = {assigned}, pin won = {pinned}; exactly one must win"
        );
        let a = r.assignment(&t).await.expect("assignment");
        let p = r.pin(&t).await.expect("pin");
        assert_eq!(
            (a.is_some(), p.is_some()),
            (assigned, pinned),
            "{case}: round {round}: what was stored"
        );
    }
}
