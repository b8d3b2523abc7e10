//! Cases on stamps: creation, re-spec, lookups and the lifecycle.

use crate::error::Error;
use crate::model::*;
use crate::registry::DynRegistry;

use super::fixtures::*;

/// A new stamp starts in `Provisioning`, is readable, and appears in the fleet.
pub async fn put_stamp_starts_provisioning(r: &DynRegistry) {
    let s = r.put_stamp(spec(1, &[(Resource::Tenants, 10.0)])).await.expect("put");
    check_eq!(s.state, StampState::Provisioning);
    check_eq!(s.id(), StampId(1));
    let read = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    check_eq!(read.spec, s.spec);
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(fleet.stamps.len(), 1);
    check!(
        !fleet.stamps[0].accepts_new_tenants(),
        "provisioning stamps accept nobody"
    );
}

/// Putting an existing stamp updates its spec and keeps its state.
pub async fn put_stamp_updates_spec_and_keeps_state(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 10.0)]).await;
    let mut updated = spec(1, &[(Resource::Tenants, 20.0), (Resource::Storage, 500.0)]).version("v2");
    updated.capacity = updated
        .capacity
        .clone()
        .headroom_on(Resource::Storage, 0.1)
        .expect("valid headroom");
    let s = r.put_stamp(updated.clone()).await.expect("update");
    check_eq!(s.state, StampState::Active);
    check_eq!(s.spec.version.as_deref(), Some("v2"));
    check_eq!(s.spec.capacity.limit(&Resource::Tenants), Some(Amount::units(20)));
    // Every part of the spec reads back, a resource's own headroom included.
    check_eq!(s.spec, updated.clone());
    let read = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    check_eq!(read.spec, updated.clone());
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(fleet.get(StampId(1)).map(|l| l.stamp.spec.clone()), Some(updated));
}

/// Shrinking a limit below current usage fails and leaves the spec unchanged.
pub async fn put_stamp_refuses_shrinking_below_usage(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    r.assign(&tenant("a", 60.0), StampId(1)).await.expect("assign");
    let err = r
        .put_stamp(spec(1, &[(Resource::Connections, 50.0)]))
        .await
        .expect_err("shrink below usage");
    check_matches!(
        err,
        Error::CapacityExceeded {
            stamp: StampId(1),
            resource: Resource::Connections
        }
    );
    let s = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    check_eq!(s.spec.capacity.limit(&Resource::Connections), Some(Amount::units(100)));
}

/// A spec with an invalid field (set directly on the public struct) is refused.
pub async fn put_stamp_rejects_invalid_spec(r: &DynRegistry) {
    let mut bad = spec(1, &[(Resource::Tenants, 1.0)]);
    bad.name = "../etc".to_string();
    let err = r.put_stamp(bad).await.expect_err("invalid name");
    check_matches!(err, Error::InvalidInput(_));
    let mut bad = spec(2, &[(Resource::Tenants, 1.0)]);
    bad.endpoint = Some(String::new());
    check_matches!(r.put_stamp(bad).await, Err(Error::InvalidInput(_)));
    check!(r.stamp(StampId(1)).await.expect("stamp").is_none());
}

/// Unknown stamps read as `None` and state changes on them are `NotFound`.
pub async fn unknown_stamp_is_none_or_not_found(r: &DynRegistry) {
    check!(r.stamp(StampId(42)).await.expect("stamp").is_none());
    let err = r
        .set_stamp_state(StampId(42), StampState::Active)
        .await
        .expect_err("unknown");
    check_matches!(err, Error::NotFound(crate::error::Subject::Stamp(StampId(42))));
}

/// Provisioning → Active → Draining → Active → Draining → Decommissioned; repeating a state
/// is a no-op.
pub async fn stamp_lifecycle_follows_legal_transitions(r: &DynRegistry) {
    r.put_stamp(spec(1, &[(Resource::Tenants, 1.0)])).await.expect("put");
    for st in [
        StampState::Active,
        StampState::Active,
        StampState::Draining,
        StampState::Active,
        StampState::Draining,
        StampState::Decommissioned,
    ] {
        let s = r.set_stamp_state(StampId(1), st).await.expect("legal transition");
        check_eq!(s.state, st);
    }
    r.put_stamp(spec(2, &[(Resource::Tenants, 1.0)])).await.expect("put");
    let s = r
        .set_stamp_state(StampId(2), StampState::Decommissioned)
        .await
        .expect("abandon provisioning");
    check_eq!(s.state, StampState::Decommissioned);
}

/// Illegal lifecycle transitions fail with `InvalidTransition` and change nothing.
pub async fn stamp_lifecycle_refuses_illegal_transitions(r: &DynRegistry) {
    r.put_stamp(spec(1, &[(Resource::Tenants, 1.0)])).await.expect("put");
    let err = r
        .set_stamp_state(StampId(1), StampState::Draining)
        .await
        .expect_err("prov→draining");
    check_matches!(err, Error::InvalidTransition { .. });
    r.set_stamp_state(StampId(1), StampState::Active)
        .await
        .expect("activate");
    let err = r
        .set_stamp_state(StampId(1), StampState::Provisioning)
        .await
        .expect_err("active→provisioning");
    check_matches!(err, Error::InvalidTransition { .. });
    let err = r
        .set_stamp_state(StampId(1), StampState::Decommissioned)
        .await
        .expect_err("active→decommissioned skips draining");
    check_matches!(err, Error::InvalidTransition { .. });
    r.set_stamp_state(StampId(1), StampState::Draining)
        .await
        .expect("drain");
    r.set_stamp_state(StampId(1), StampState::Decommissioned)
        .await
        .expect("retire");
    let err = r
        .set_stamp_state(StampId(1), StampState::Active)
        .await
        .expect_err("decommissioned is terminal");
    check_matches!(err, Error::InvalidTransition { .. });
    let s = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    check_eq!(s.state, StampState::Decommissioned);
}

/// A stamp with tenants cannot be decommissioned.
pub async fn decommission_refused_while_tenants_remain(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    r.set_stamp_state(StampId(1), StampState::Draining)
        .await
        .expect("drain");
    let err = r
        .set_stamp_state(StampId(1), StampState::Decommissioned)
        .await
        .expect_err("tenants remain");
    match &err {
        Error::StampNotEmpty { stamp, tenants, first } => {
            check_eq!((*stamp, *tenants), (StampId(1), 1));
            check_eq!(first.clone(), vec![a.tenant().clone()]);
        }
        other => {
            panic!("decommission_refused_while_tenants_remain: expected StampNotEmpty naming the tenant, got {other:?}")
        }
    }
    r.unassign(a.tenant(), a.epoch).await.expect("unassign");
    r.set_stamp_state(StampId(1), StampState::Decommissioned)
        .await
        .expect("now empty");
}

/// Every stamp write appends exactly one change carrying the stamp after the write: creating a
/// stamp, re-specifying it (`put_stamp` on an existing stamp: a router learns a new endpoint
/// only from this change) and changing its state. A refused write appends none.
pub async fn stamp_writes_append_exactly_one_change(r: &DynRegistry) {
    let before = feed_head(r).await;
    let created = r
        .put_stamp(spec(1, &[(Resource::Tenants, 5.0)]).endpoint("https://old.internal"))
        .await
        .expect("put a new stamp");
    if let Err(e) = one_stamp_change(r, before, &created, "creating stamp 1 with put_stamp").await {
        fail!("{e}");
    }

    let before = feed_head(r).await;
    let respec = spec(1, &[(Resource::Tenants, 8.0)])
        .endpoint("https://new.internal")
        .version("v2");
    let updated = r.put_stamp(respec).await.expect("re-spec stamp 1");
    check_eq!(
        updated.spec.endpoint.as_deref(),
        Some("https://new.internal"),
        "the endpoint put_stamp returned after a re-spec"
    );
    if let Err(e) = one_stamp_change(r, before, &updated, "re-specifying stamp 1 with put_stamp").await {
        fail!("{e}");
    }

    let before = feed_head(r).await;
    let active = r
        .set_stamp_state(StampId(1), StampState::Active)
        .await
        .expect("activate stamp 1");
    if let Err(e) = one_stamp_change(r, before, &active, "set_stamp_state(1, Active)").await {
        fail!("{e}");
    }

    let before = feed_head(r).await;
    let refused = r.set_stamp_state(StampId(1), StampState::Provisioning).await;
    check!(
        refused.is_err(),
        "set_stamp_state(1, Provisioning) on an active stamp succeeded: {refused:?}"
    );
    let mut bad = spec(1, &[(Resource::Tenants, 5.0)]);
    bad.name = String::new();
    let refused = r.put_stamp(bad).await;
    check!(refused.is_err(), "put_stamp with an empty name succeeded: {refused:?}");
    let after = feed_head(r).await;
    check_eq!(after, before, "the feed head after two refused stamp writes");
}

/// The feed's head version.
async fn feed_head(r: &DynRegistry) -> Version {
    r.changes_since(Version::ZERO, 1).await.expect("changes_since").head
}

/// Checks that exactly one change follows `before`, and that it carries `stamp` as written;
/// fails the calling case otherwise.
async fn one_stamp_change(r: &DynRegistry, before: Version, stamp: &Stamp, write: &str) -> Result<(), String> {
    let batch = r.changes_since(before, 16).await.expect("changes_since");
    let found: Vec<String> = batch
        .changes
        .iter()
        .map(|c| match &c.kind {
            ChangeKind::Stamp(s) => format!("{}: stamp {} ({:?}, {:?})", c.version, s.id(), s.state, s.spec.endpoint),
            ChangeKind::Assignment { tenant, .. } => format!("{}: assignment of {tenant}", c.version),
            other => format!("{}: {other:?}", c.version),
        })
        .collect();
    if batch.changes.len() != 1 {
        return Err(format!(
            "{write} appended {} changes after version {before}, expected exactly one: {found:?}",
            batch.changes.len()
        ));
    }
    match batch.changes.first().map(|c| &c.kind) {
        Some(ChangeKind::Stamp(s)) if **s == *stamp => Ok(()),
        Some(ChangeKind::Stamp(s)) => Err(format!(
            "the change {write} appended carries {s:?}, expected the stamp as written, {stamp:?}"
        )),
        other => Err(format!("{write} appended {other:?}, expected a stamp change")),
    }
}
