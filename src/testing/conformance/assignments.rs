//! Cases on assignments: admission against hard limits, moves, epochs, dual-write,
//! unassignment and history.

use crate::error::{Conflict, Error};
use crate::model::*;
use crate::registry::DynRegistry;

use super::fixtures::*;

/// `assign` stores the spec, serving mode and a positive epoch; `assignment` reads it back.
pub async fn assign_and_lookup(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    let t = tenant("acme", 25.0).label("plan", "pro");
    let a = r.assign(&t, StampId(1)).await.expect("assign");
    check_eq!(a.stamp, StampId(1));
    check_eq!(a.mode, AssignmentMode::Serving);
    check!(a.epoch > Epoch(0));
    check_eq!(a.spec, t);
    let read = r.assignment(&tid("acme")).await.expect("lookup").expect("present");
    check_eq!(read, a);
    check!(r.assignment(&tid("nobody")).await.expect("lookup").is_none());
}

/// Provisioning, draining and decommissioned stamps accept no tenant.
pub async fn assign_requires_an_active_stamp(r: &DynRegistry) {
    r.put_stamp(spec(1, &[(Resource::Tenants, 5.0)])).await.expect("put");
    let err = r.assign(&tenant("a", 1.0), StampId(1)).await.expect_err("provisioning");
    check_matches!(
        err,
        Error::NotAccepting {
            stamp: StampId(1),
            state: StampState::Provisioning
        }
    );
    r.set_stamp_state(StampId(1), StampState::Active)
        .await
        .expect("activate");
    r.set_stamp_state(StampId(1), StampState::Draining)
        .await
        .expect("drain");
    let err = r.assign(&tenant("a", 1.0), StampId(1)).await.expect_err("draining");
    check_matches!(
        err,
        Error::NotAccepting {
            state: StampState::Draining,
            ..
        }
    );
    check!(r.assignment(&tid("a")).await.expect("lookup").is_none());
}

/// Assigning to an unknown stamp is `NotFound`.
pub async fn assign_unknown_stamp_is_not_found(r: &DynRegistry) {
    let err = r
        .assign(&tenant("a", 1.0), StampId(9))
        .await
        .expect_err("unknown stamp");
    check_matches!(err, Error::NotFound(crate::error::Subject::Stamp(StampId(9))));
}

/// One home: a second `assign` of the same tenant fails, wherever it targets.
pub async fn assign_twice_is_already_assigned(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let err = r.assign(&tenant("a", 1.0), StampId(2)).await.expect_err("twice");
    check_matches!(err, Error::AlreadyAssigned { stamp: StampId(1), .. });
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(fleet.get(StampId(2)).expect("s2").tenants(), 0);
}

/// The hard limit (not the headroom) bounds every limited resource.
pub async fn hard_limit_is_enforced_per_resource(r: &DynRegistry) {
    active(
        r,
        1,
        &[(Resource::Connections, 100.0), (Resource::RequestsPerSecond, 50.0)],
    )
    .await;
    // 25% headroom: placement would stop at 75, the registry admits up to 100.
    r.assign(&tenant("a", 80.0), StampId(1))
        .await
        .expect("under hard limit");
    let err = r
        .assign(&tenant("b", 25.0), StampId(1))
        .await
        .expect_err("over connections");
    check_matches!(
        err,
        Error::CapacityExceeded {
            stamp: StampId(1),
            resource: Resource::Connections
        }
    );
    r.assign(&tenant("c", 20.0), StampId(1))
        .await
        .expect("exactly at the limit");
    let heavy = TenantSpec::new(tid("d")).demand(Demand::of([(Resource::RequestsPerSecond, 51.0)]).expect("demand"));
    let err = r.assign(&heavy, StampId(1)).await.expect_err("over rps");
    check_matches!(err, Error::CapacityExceeded { .. });
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 100.0);
}

/// Every tenant takes one `Tenants` slot.
pub async fn tenant_slots_are_counted(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 2.0)]).await;
    r.assign(&TenantSpec::new(tid("a")), StampId(1)).await.expect("a");
    r.assign(&TenantSpec::new(tid("b")), StampId(1)).await.expect("b");
    let err = r
        .assign(&TenantSpec::new(tid("c")), StampId(1))
        .await
        .expect_err("full");
    check_matches!(
        err,
        Error::CapacityExceeded {
            resource: Resource::Tenants,
            ..
        }
    );
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(fleet.get(StampId(1)).expect("s1").tenants(), 2);
    check_eq!(fleet.tenants(), 2);
}

/// The fleet shows usage per resource and unassign releases it exactly.
pub async fn fleet_reports_usage_and_unassign_releases_it(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 1000.0)]).await;
    let mut epochs = Vec::new();
    for i in 0..10 {
        let a = r
            .assign(&tenant(&format!("t{i}"), 12.5), StampId(1))
            .await
            .expect("assign");
        epochs.push((a.tenant().clone(), a.epoch));
    }
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 125.0);
    let load = fleet.get(StampId(1)).expect("s1");
    check_eq!(load.tenants(), 10);
    let (res, util) = load.bottleneck().expect("limited");
    check_eq!(res, &Resource::Connections);
    check!((util - 0.125).abs() < 1e-9);
    for (t, e) in epochs {
        r.unassign(&t, e).await.expect("unassign");
    }
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 0.0);
    check_eq!(fleet.get(StampId(1)).expect("s1").tenants(), 0);
}

/// A move gives a larger epoch and moves usage from source to destination.
pub async fn move_changes_epoch_and_usage(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    active(r, 2, &[(Resource::Connections, 100.0)]).await;
    let a = r.assign(&tenant("a", 30.0), StampId(1)).await.expect("assign");
    let b = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)).by("test"))
        .await
        .expect("move");
    check_eq!(b.stamp, StampId(2));
    check!(b.epoch > a.epoch);
    check_eq!(b.assigned_at, a.assigned_at);
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 0.0);
    check_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
    let err = r
        .compare_and_set(a.tenant(), b.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .expect_err("move to the serving stamp");
    check_matches!(err, Error::InvalidInput(_));
}

/// A compare-and-set with a stale epoch is a `Conflict` naming both epochs, without effect.
pub async fn stale_epoch_is_a_conflict(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let b = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .expect("move");
    let err = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(1)))
        .await
        .expect_err("stale");
    match err {
        Error::Conflict(Conflict::Epoch { expected, actual }) => {
            check_eq!(expected, a.epoch);
            check_eq!(actual, b.epoch);
        }
        other => fail!("expected a conflict, got {other:?}"),
    }
    check_eq!(r.assignment(a.tenant()).await.expect("lookup").expect("present"), b);
}

/// Changing or unassigning an unknown tenant is `NotFound`.
pub async fn change_of_unknown_tenant_is_not_found(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let err = r
        .compare_and_set(&tid("ghost"), Epoch(1), AssignmentChange::move_to(StampId(1)))
        .await
        .expect_err("unknown");
    check_matches!(err, Error::NotFound(crate::error::Subject::Tenant(_)));
    let err = r.unassign(&tid("ghost"), Epoch(1)).await.expect_err("unknown");
    check_matches!(err, Error::NotFound(_));
}

/// A move to a stamp without room fails and changes nothing: not the assignment, not the
/// usage, not the change feed.
pub async fn move_to_full_stamp_fails_without_effect(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    active(r, 2, &[(Resource::Connections, 40.0)]).await;
    let a = r.assign(&tenant("a", 50.0), StampId(1)).await.expect("assign");
    let head = r.changes_since(Version::ZERO, 1).await.expect("feed").head;
    let err = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .expect_err("no room");
    check_matches!(err, Error::CapacityExceeded { stamp: StampId(2), .. });
    check_eq!(r.assignment(a.tenant()).await.expect("lookup"), Some(a.clone()));
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 50.0);
    check_eq!(usage(&fleet, 2, Resource::Connections), 0.0);
    check_eq!(r.changes_since(Version::ZERO, 1).await.expect("feed").head, head);
    check_eq!(r.history(a.tenant()).await.expect("history").len(), 1);
}

/// Tenants cannot move onto a draining stamp, but a draining stamp keeps and releases its own.
pub async fn move_to_draining_stamp_is_refused(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    r.set_stamp_state(StampId(2), StampState::Draining)
        .await
        .expect("drain 2");
    let err = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .expect_err("draining");
    check_matches!(err, Error::NotAccepting { stamp: StampId(2), .. });
    r.set_stamp_state(StampId(2), StampState::Active)
        .await
        .expect("undrain 2");
    r.set_stamp_state(StampId(1), StampState::Draining)
        .await
        .expect("drain 1");
    let b = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::set_mode(AssignmentMode::Serving))
        .await
        .expect("a draining stamp still serves its tenants");
    r.compare_and_set(a.tenant(), b.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .expect("move off the draining stamp");
}

/// Dual-write reserves the tenant's demand on the shadow stamp; a cutover with reverse
/// dual-write keeps both; serving on one side releases the other.
pub async fn dual_write_reserves_the_shadow(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    active(r, 2, &[(Resource::Connections, 100.0)]).await;
    let a = r.assign(&tenant("a", 30.0), StampId(1)).await.expect("assign");
    let dw = r
        .compare_and_set(
            a.tenant(),
            a.epoch,
            AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(2) }),
        )
        .await
        .expect("dual write");
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 30.0);
    check_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
    check_eq!(fleet.get(StampId(2)).expect("s2").tenants(), 1);
    let cut = r
        .compare_and_set(
            a.tenant(),
            dw.epoch,
            AssignmentChange::move_with_mode(StampId(2), AssignmentMode::DualWrite { shadow: StampId(1) }),
        )
        .await
        .expect("cutover with reverse dual-write");
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 30.0);
    check_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
    r.compare_and_set(
        a.tenant(),
        cut.epoch,
        AssignmentChange::set_mode(AssignmentMode::Serving),
    )
    .await
    .expect("finish");
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 0.0);
    check_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
}

/// A shadow equal to the serving stamp is invalid input.
pub async fn shadow_equal_to_serving_stamp_is_invalid(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let err = r
        .compare_and_set(
            a.tenant(),
            a.epoch,
            AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(1) }),
        )
        .await
        .expect_err("shadow = serving");
    check_matches!(err, Error::InvalidInput(_));
}

/// Epochs keep growing across unassign and reassign (fencing survives re-creation).
pub async fn epoch_grows_across_unassign_and_reassign(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let mut last = Epoch(0);
    for round in 0..3 {
        let a = r
            .assign(&tenant("a", 1.0), StampId(1 + round % 2))
            .await
            .expect("assign");
        check!(a.epoch > last, "epoch {} after {}", a.epoch, last);
        let b = r
            .compare_and_set(a.tenant(), a.epoch, AssignmentChange::set_mode(AssignmentMode::Serving))
            .await
            .expect("touch");
        check!(b.epoch > a.epoch);
        r.unassign(b.tenant(), b.epoch).await.expect("unassign");
        last = b.epoch;
    }
}

/// Unassign with a stale epoch is a conflict and keeps the assignment.
pub async fn unassign_with_stale_epoch_is_a_conflict(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let err = r.unassign(a.tenant(), Epoch(a.epoch.0 + 1)).await.expect_err("stale");
    check_matches!(err, Error::Conflict(Conflict::Epoch { .. }));
    check!(r.assignment(a.tenant()).await.expect("lookup").is_some());
}

/// Resizing checks capacity on every stamp the tenant occupies.
pub async fn resize_is_capacity_checked(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    let a = r.assign(&tenant("a", 30.0), StampId(1)).await.expect("assign");
    r.assign(&tenant("b", 30.0), StampId(1)).await.expect("assign b");
    let bigger = Demand::of([(Resource::Connections, 70.5)]).expect("demand");
    let err = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::resize(bigger))
        .await
        .expect_err("no room to grow");
    check_matches!(err, Error::CapacityExceeded { .. });
    let ok = Demand::of([(Resource::Connections, 70.0)]).expect("demand");
    let b = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::resize(ok.clone()))
        .await
        .expect("fits");
    check_eq!(b.spec.demand, ok);
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(usage(&fleet, 1, Resource::Connections), 100.0);
}

/// History records every write in order with action, stamps, epoch and actor; failed writes
/// add nothing.
pub async fn history_is_append_only_and_complete(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let b = r
        .compare_and_set(
            a.tenant(),
            a.epoch,
            AssignmentChange::move_to(StampId(2)).by("operator:ann"),
        )
        .await
        .expect("move");
    let _ = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(1)))
        .await
        .expect_err("stale");
    let c = r
        .compare_and_set(
            a.tenant(),
            b.epoch,
            AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(1) }),
        )
        .await
        .expect("mode");
    r.unassign(a.tenant(), c.epoch).await.expect("unassign");
    let h = r.history(a.tenant()).await.expect("history");
    let actions: Vec<_> = h.iter().map(|e| e.action).collect();
    check_eq!(
        actions,
        [
            HistoryAction::Assigned,
            HistoryAction::Moved,
            HistoryAction::ModeChanged,
            HistoryAction::Unassigned
        ]
    );
    check_eq!((h[0].from, h[0].to), (None, Some(StampId(1))));
    check_eq!((h[1].from, h[1].to), (Some(StampId(1)), Some(StampId(2))));
    check_eq!(h[1].actor.as_deref(), Some("operator:ann"));
    check_eq!(h[1].epoch, b.epoch);
    check_eq!(h[2].mode, AssignmentMode::DualWrite { shadow: StampId(1) });
    check_eq!((h[3].from, h[3].to), (Some(StampId(2)), None));
    check!(h.windows(2).all(|w| w[0].version < w[1].version && w[0].at <= w[1].at));
    check!(r.history(&tid("nobody")).await.expect("history").is_empty());
}
