//! Cases on stamps: creation, re-spec, lookups and the lifecycle.

use crate::error::Error;
use crate::model::*;
use crate::registry::DynRegistry;

use super::fixtures::*;

/// A new stamp starts in `Provisioning`, is readable, and appears in the fleet.
pub async fn put_stamp_starts_provisioning(r: &DynRegistry) {
    let s = r.put_stamp(spec(1, &[(Resource::Tenants, 10.0)])).await.expect("put");
    assert_eq!(s.state, StampState::Provisioning);
    assert_eq!(s.id(), StampId(1));
    let read = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    assert_eq!(read.spec, s.spec);
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(fleet.stamps.len(), 1);
    assert!(
        !fleet.stamps[0].accepts_new_tenants(),
        "provisioning stamps accept nobody"
    );
}

/// Putting an existing stamp updates its spec and keeps its state.
pub async fn put_stamp_updates_spec_and_keeps_state(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 10.0)]).await;
    let updated = spec(1, &[(Resource::Tenants, 20.0)]).version("v2");
    let s = r.put_stamp(updated).await.expect("update");
    assert_eq!(s.state, StampState::Active);
    assert_eq!(s.spec.version.as_deref(), Some("v2"));
    assert_eq!(s.spec.capacity.limit(&Resource::Tenants), Some(Amount::units(20)));
}

/// Shrinking a limit below current usage fails and leaves the spec unchanged.
pub async fn put_stamp_refuses_shrinking_below_usage(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    r.assign(&tenant("a", 60.0), StampId(1)).await.expect("assign");
    let err = r
        .put_stamp(spec(1, &[(Resource::Connections, 50.0)]))
        .await
        .expect_err("shrink below usage");
    assert!(
        matches!(
            err,
            Error::CapacityExceeded {
                stamp: StampId(1),
                resource: Resource::Connections
            }
        ),
        "{err:?}"
    );
    let s = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    assert_eq!(s.spec.capacity.limit(&Resource::Connections), Some(Amount::units(100)));
}

/// A spec with an invalid field (set directly on the public struct) is refused.
pub async fn put_stamp_rejects_invalid_spec(r: &DynRegistry) {
    let mut bad = spec(1, &[(Resource::Tenants, 1.0)]);
    bad.name = "../etc".to_string();
    let err = r.put_stamp(bad).await.expect_err("invalid name");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let mut bad = spec(2, &[(Resource::Tenants, 1.0)]);
    bad.endpoint = Some(String::new());
    assert!(matches!(r.put_stamp(bad).await, Err(Error::InvalidInput(_))));
    assert!(r.stamp(StampId(1)).await.expect("stamp").is_none());
}

/// Unknown stamps read as `None` and state changes on them are `NotFound`.
pub async fn unknown_stamp_is_none_or_not_found(r: &DynRegistry) {
    assert!(r.stamp(StampId(42)).await.expect("stamp").is_none());
    let err = r
        .set_stamp_state(StampId(42), StampState::Active)
        .await
        .expect_err("unknown");
    assert!(
        matches!(err, Error::NotFound(crate::error::Subject::Stamp(StampId(42)))),
        "{err:?}"
    );
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
        assert_eq!(s.state, st);
    }
    r.put_stamp(spec(2, &[(Resource::Tenants, 1.0)])).await.expect("put");
    let s = r
        .set_stamp_state(StampId(2), StampState::Decommissioned)
        .await
        .expect("abandon provisioning");
    assert_eq!(s.state, StampState::Decommissioned);
}

/// Illegal lifecycle transitions fail with `InvalidTransition` and change nothing.
pub async fn stamp_lifecycle_refuses_illegal_transitions(r: &DynRegistry) {
    r.put_stamp(spec(1, &[(Resource::Tenants, 1.0)])).await.expect("put");
    let err = r
        .set_stamp_state(StampId(1), StampState::Draining)
        .await
        .expect_err("prov→draining");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err:?}");
    r.set_stamp_state(StampId(1), StampState::Active)
        .await
        .expect("activate");
    let err = r
        .set_stamp_state(StampId(1), StampState::Provisioning)
        .await
        .expect_err("active→provisioning");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err:?}");
    let err = r
        .set_stamp_state(StampId(1), StampState::Decommissioned)
        .await
        .expect_err("active→decommissioned skips draining");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err:?}");
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
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err:?}");
    let s = r.stamp(StampId(1)).await.expect("stamp").expect("present");
    assert_eq!(s.state, StampState::Decommissioned);
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
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    r.unassign(a.tenant(), a.epoch).await.expect("unassign");
    r.set_stamp_state(StampId(1), StampState::Decommissioned)
        .await
        .expect("now empty");
}
