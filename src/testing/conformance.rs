//! The registry conformance suite: every [`Registry`](crate::Registry) implementation, the crate's own and
//! yours, runs the same list of cases.
//!
//! Each case is a `pub async fn` taking a fresh, empty registry as `&DynRegistry` and panicking
//! (like `assert!`) when the registry breaks the [`Registry`](crate::Registry) contract. [`CASES`] lists them
//! all with their names; [`run_all`] runs each against a new registry from your factory.
//!
//! Races run as many concurrent futures on one task: for a registry whose calls suspend on
//! I/O (a database), the calls really overlap at the server. The crate's own tests add
//! multi-threaded stress for the in-memory registry.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use stamps::{DynRegistry, InMemoryRegistry};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! stamps::testing::conformance::run_all(|| async {
//!     Arc::new(InMemoryRegistry::new()) as Arc<DynRegistry>
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::{ConflictKind, Error};
use crate::model::*;
use crate::registry::{DynRegistry, RegistryExt};

/// A boxed case future.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
/// A conformance case.
pub type Case = for<'a> fn(&'a DynRegistry) -> CaseFuture<'a>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |r| Box::pin($name(r)))),*
        ];
    };
}

cases!(
    put_stamp_starts_provisioning,
    put_stamp_updates_spec_and_keeps_state,
    put_stamp_refuses_shrinking_below_usage,
    put_stamp_rejects_invalid_spec,
    unknown_stamp_is_none_or_not_found,
    stamp_lifecycle_follows_legal_transitions,
    stamp_lifecycle_refuses_illegal_transitions,
    decommission_refused_while_tenants_remain,
    assign_and_lookup,
    assign_requires_an_active_stamp,
    assign_unknown_stamp_is_not_found,
    assign_twice_is_already_assigned,
    hard_limit_is_enforced_per_resource,
    tenant_slots_are_counted,
    fleet_reports_usage_and_unassign_releases_it,
    move_changes_epoch_and_usage,
    stale_epoch_is_a_conflict,
    change_of_unknown_tenant_is_not_found,
    move_to_full_stamp_fails_without_effect,
    move_to_draining_stamp_is_refused,
    dual_write_reserves_the_shadow,
    shadow_equal_to_serving_stamp_is_invalid,
    epoch_grows_across_unassign_and_reassign,
    unassign_with_stale_epoch_is_a_conflict,
    resize_is_capacity_checked,
    history_is_append_only_and_complete,
    change_feed_is_complete_and_ordered,
    change_feed_pages_by_limit,
    change_signal_is_notified,
    assignments_page_in_tenant_order,
    migration_records_round_trip,
    migration_revision_is_compare_and_set,
    one_active_migration_per_tenant,
    migration_states_only_move_forward,
    invalid_migrations_are_refused,
    race_for_last_slots_admits_exactly_the_free_number,
    race_of_compare_and_set_has_one_winner,
    race_to_assign_one_tenant_has_one_winner,
);

/// Runs every case in [`CASES`], each against a new registry from `make`, printing each name.
/// Panics on the first failing case, naming it.
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<DynRegistry>>,
{
    for (name, case) in CASES {
        let registry = make().await;
        println!("conformance: {name}");
        case(&*registry).await;
    }
    println!("conformance: {} cases passed", CASES.len());
}

// ---------------------------------------------------------------------------------------------
// helpers

fn tid(s: &str) -> TenantId {
    TenantId::new(s).expect("valid test tenant id")
}

fn region(s: &str) -> Region {
    Region::new(s).expect("valid test region")
}

fn spec(id: u32, limits: &[(Resource, f64)]) -> StampSpec {
    StampSpec::new(
        StampId(id),
        format!("stamp-{id}"),
        region("us-east"),
        Capacity::new(limits.iter().cloned(), 0.25).expect("valid test capacity"),
    )
    .expect("valid test stamp")
}

fn tenant(name: &str, connections: f64) -> TenantSpec {
    TenantSpec::new(tid(name)).with_demand(Demand::of([(Resource::Connections, connections)]).expect("valid demand"))
}

async fn active(r: &DynRegistry, id: u32, limits: &[(Resource, f64)]) -> Stamp {
    r.put_active_stamp(spec(id, limits)).await.expect("put active stamp")
}

fn usage(fleet: &Fleet, id: u32, res: Resource) -> f64 {
    fleet.get(StampId(id)).expect("stamp in fleet").usage.get(&res).as_f64()
}

async fn all_changes(r: &DynRegistry) -> Vec<Change> {
    let mut out = Vec::new();
    let mut cursor = Version::ZERO;
    loop {
        let batch = r.changes_since(cursor, 1000).await.expect("changes_since");
        let n = batch.changes.len();
        cursor = batch.next_cursor(cursor);
        let more = batch.has_more(cursor);
        out.extend(batch.changes);
        if n == 0 || !more {
            return out;
        }
    }
}

/// Polls all futures concurrently on the current task; returns their outputs in order.
pub async fn join_all<T, F: Future<Output = T>>(futures: Vec<F>) -> Vec<T> {
    struct JoinAll<F: Future> {
        futs: Vec<Option<Pin<Box<F>>>>,
        out: Vec<Option<F::Output>>,
    }
    impl<F: Future> Future for JoinAll<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.get_mut();
            let mut pending = false;
            for (slot, out) in this.futs.iter_mut().zip(this.out.iter_mut()) {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            *out = Some(v);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(this.out.iter_mut().filter_map(Option::take).collect())
            }
        }
    }
    // The futures are boxed, so JoinAll never needs pinning.
    impl<F: Future> Unpin for JoinAll<F> {}
    let n = futures.len();
    JoinAll {
        futs: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        out: (0..n).map(|_| None).collect(),
    }
    .await
}

// ---------------------------------------------------------------------------------------------
// stamps

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
    let updated = spec(1, &[(Resource::Tenants, 20.0)]).with_version("v2");
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
        matches!(err, Error::NotFound(crate::Subject::Stamp(StampId(42)))),
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

// ---------------------------------------------------------------------------------------------
// assignments

/// `assign` stores the spec, serving mode and a positive epoch; `assignment` reads it back.
pub async fn assign_and_lookup(r: &DynRegistry) {
    active(r, 1, &[(Resource::Connections, 100.0)]).await;
    let t = tenant("acme", 25.0).with_label("plan", "pro");
    let a = r.assign(&t, StampId(1)).await.expect("assign");
    assert_eq!(a.stamp, StampId(1));
    assert_eq!(a.mode, AssignmentMode::Serving);
    assert!(a.epoch > Epoch(0));
    assert_eq!(a.spec, t);
    let read = r.assignment(&tid("acme")).await.expect("lookup").expect("present");
    assert_eq!(read, a);
    assert!(r.assignment(&tid("nobody")).await.expect("lookup").is_none());
}

/// Provisioning, draining and decommissioned stamps accept no tenant.
pub async fn assign_requires_an_active_stamp(r: &DynRegistry) {
    r.put_stamp(spec(1, &[(Resource::Tenants, 5.0)])).await.expect("put");
    let err = r.assign(&tenant("a", 1.0), StampId(1)).await.expect_err("provisioning");
    assert!(
        matches!(
            err,
            Error::NotAccepting {
                stamp: StampId(1),
                state: StampState::Provisioning
            }
        ),
        "{err:?}"
    );
    r.set_stamp_state(StampId(1), StampState::Active)
        .await
        .expect("activate");
    r.set_stamp_state(StampId(1), StampState::Draining)
        .await
        .expect("drain");
    let err = r.assign(&tenant("a", 1.0), StampId(1)).await.expect_err("draining");
    assert!(
        matches!(
            err,
            Error::NotAccepting {
                state: StampState::Draining,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(r.assignment(&tid("a")).await.expect("lookup").is_none());
}

/// Assigning to an unknown stamp is `NotFound`.
pub async fn assign_unknown_stamp_is_not_found(r: &DynRegistry) {
    let err = r
        .assign(&tenant("a", 1.0), StampId(9))
        .await
        .expect_err("unknown stamp");
    assert!(
        matches!(err, Error::NotFound(crate::Subject::Stamp(StampId(9)))),
        "{err:?}"
    );
}

/// One home: a second `assign` of the same tenant fails, wherever it targets.
pub async fn assign_twice_is_already_assigned(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let err = r.assign(&tenant("a", 1.0), StampId(2)).await.expect_err("twice");
    assert!(
        matches!(err, Error::AlreadyAssigned { stamp: StampId(1), .. }),
        "{err:?}"
    );
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(fleet.get(StampId(2)).expect("s2").tenants(), 0);
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
    r.assign(&tenant("c", 20.0), StampId(1))
        .await
        .expect("exactly at the limit");
    let heavy =
        TenantSpec::new(tid("d")).with_demand(Demand::of([(Resource::RequestsPerSecond, 51.0)]).expect("demand"));
    let err = r.assign(&heavy, StampId(1)).await.expect_err("over rps");
    assert!(matches!(err, Error::CapacityExceeded { .. }), "{err:?}");
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(usage(&fleet, 1, Resource::Connections), 100.0);
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
    assert!(
        matches!(
            err,
            Error::CapacityExceeded {
                resource: Resource::Tenants,
                ..
            }
        ),
        "{err:?}"
    );
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(fleet.get(StampId(1)).expect("s1").tenants(), 2);
    assert_eq!(fleet.tenants(), 2);
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
    assert_eq!(usage(&fleet, 1, Resource::Connections), 125.0);
    let load = fleet.get(StampId(1)).expect("s1");
    assert_eq!(load.tenants(), 10);
    let (res, util) = load.bottleneck().expect("limited");
    assert_eq!(res, &Resource::Connections);
    assert!((util - 0.125).abs() < 1e-9);
    for (t, e) in epochs {
        r.unassign(&t, e).await.expect("unassign");
    }
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(usage(&fleet, 1, Resource::Connections), 0.0);
    assert_eq!(fleet.get(StampId(1)).expect("s1").tenants(), 0);
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
    assert_eq!(b.stamp, StampId(2));
    assert!(b.epoch > a.epoch);
    assert_eq!(b.assigned_at, a.assigned_at);
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(usage(&fleet, 1, Resource::Connections), 0.0);
    assert_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
    let err = r
        .compare_and_set(a.tenant(), b.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .expect_err("move to the serving stamp");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
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
        Error::Conflict { kind, expected, actual } => {
            assert_eq!(kind, ConflictKind::Epoch);
            assert_eq!(expected, a.epoch.0);
            assert_eq!(actual, b.epoch.0);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(r.assignment(a.tenant()).await.expect("lookup").expect("present"), b);
}

/// Changing or unassigning an unknown tenant is `NotFound`.
pub async fn change_of_unknown_tenant_is_not_found(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let err = r
        .compare_and_set(&tid("ghost"), Epoch(1), AssignmentChange::move_to(StampId(1)))
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(crate::Subject::Tenant(_))), "{err:?}");
    let err = r.unassign(&tid("ghost"), Epoch(1)).await.expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
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
    assert!(
        matches!(err, Error::CapacityExceeded { stamp: StampId(2), .. }),
        "{err:?}"
    );
    assert_eq!(r.assignment(a.tenant()).await.expect("lookup"), Some(a.clone()));
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(usage(&fleet, 1, Resource::Connections), 50.0);
    assert_eq!(usage(&fleet, 2, Resource::Connections), 0.0);
    assert_eq!(r.changes_since(Version::ZERO, 1).await.expect("feed").head, head);
    assert_eq!(r.history(a.tenant()).await.expect("history").len(), 1);
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
    assert!(matches!(err, Error::NotAccepting { stamp: StampId(2), .. }), "{err:?}");
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
    assert_eq!(usage(&fleet, 1, Resource::Connections), 30.0);
    assert_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
    assert_eq!(fleet.get(StampId(2)).expect("s2").tenants(), 1);
    let cut = r
        .compare_and_set(
            a.tenant(),
            dw.epoch,
            AssignmentChange::move_with_mode(StampId(2), AssignmentMode::DualWrite { shadow: StampId(1) }),
        )
        .await
        .expect("cutover with reverse dual-write");
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(usage(&fleet, 1, Resource::Connections), 30.0);
    assert_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
    r.compare_and_set(
        a.tenant(),
        cut.epoch,
        AssignmentChange::set_mode(AssignmentMode::Serving),
    )
    .await
    .expect("finish");
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(usage(&fleet, 1, Resource::Connections), 0.0);
    assert_eq!(usage(&fleet, 2, Resource::Connections), 30.0);
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
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
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
        assert!(a.epoch > last, "epoch {} after {}", a.epoch, last);
        let b = r
            .compare_and_set(a.tenant(), a.epoch, AssignmentChange::set_mode(AssignmentMode::Serving))
            .await
            .expect("touch");
        assert!(b.epoch > a.epoch);
        r.unassign(b.tenant(), b.epoch).await.expect("unassign");
        last = b.epoch;
    }
}

/// Unassign with a stale epoch is a conflict and keeps the assignment.
pub async fn unassign_with_stale_epoch_is_a_conflict(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let err = r.unassign(a.tenant(), Epoch(a.epoch.0 + 1)).await.expect_err("stale");
    assert!(
        matches!(
            err,
            Error::Conflict {
                kind: ConflictKind::Epoch,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(r.assignment(a.tenant()).await.expect("lookup").is_some());
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
    assert!(matches!(err, Error::CapacityExceeded { .. }), "{err:?}");
    let ok = Demand::of([(Resource::Connections, 70.0)]).expect("demand");
    let b = r
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::resize(ok.clone()))
        .await
        .expect("fits");
    assert_eq!(b.spec.demand, ok);
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(usage(&fleet, 1, Resource::Connections), 100.0);
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
    assert_eq!(
        actions,
        [
            HistoryAction::Assigned,
            HistoryAction::Moved,
            HistoryAction::ModeChanged,
            HistoryAction::Unassigned
        ]
    );
    assert_eq!((h[0].from, h[0].to), (None, Some(StampId(1))));
    assert_eq!((h[1].from, h[1].to), (Some(StampId(1)), Some(StampId(2))));
    assert_eq!(h[1].actor.as_deref(), Some("operator:ann"));
    assert_eq!(h[1].epoch, b.epoch);
    assert_eq!(h[2].mode, AssignmentMode::DualWrite { shadow: StampId(1) });
    assert_eq!((h[3].from, h[3].to), (Some(StampId(2)), None));
    assert!(h.windows(2).all(|w| w[0].version < w[1].version && w[0].at <= w[1].at));
    assert!(r.history(&tid("nobody")).await.expect("history").is_empty());
}

// ---------------------------------------------------------------------------------------------
// change feed

/// Every stamp and assignment write appears exactly once, in strictly increasing version
/// order, with the state after the write.
pub async fn change_feed_is_complete_and_ordered(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 50.0)]).await; // 2 changes
    active(r, 2, &[(Resource::Tenants, 50.0)]).await; // 2 changes
    let mut expected_tenant_changes = 0;
    for i in 0..20 {
        let a = r
            .assign(&tenant(&format!("t{i:02}"), 1.0), StampId(1))
            .await
            .expect("assign");
        expected_tenant_changes += 1;
        if i % 2 == 0 {
            r.compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
                .await
                .expect("move");
            expected_tenant_changes += 1;
        }
        if i % 5 == 0 {
            let cur = r.require_assignment(a.tenant()).await.expect("current");
            r.unassign(a.tenant(), cur.epoch).await.expect("unassign");
            expected_tenant_changes += 1;
        }
    }
    let changes = all_changes(r).await;
    assert_eq!(changes.len(), 4 + expected_tenant_changes);
    assert!(
        changes.windows(2).all(|w| w[0].version < w[1].version),
        "strictly increasing"
    );
    let head = r.changes_since(Version::ZERO, 1).await.expect("feed").head;
    assert_eq!(changes.last().map(|c| c.version), Some(head));
    // Replaying the feed gives the registry's current assignments.
    let mut model = std::collections::BTreeMap::new();
    for c in &changes {
        if let ChangeKind::Assignment { tenant, assignment } = &c.kind {
            match assignment {
                Some(a) => {
                    assert_eq!(a.epoch.0, c.version.0, "epoch is the change version");
                    model.insert(tenant.clone(), (**a).clone());
                }
                None => {
                    model.remove(tenant);
                }
            }
        }
    }
    let actual: std::collections::BTreeMap<_, _> = r
        .all_assignments()
        .await
        .expect("all")
        .into_iter()
        .map(|a| (a.tenant().clone(), a))
        .collect();
    assert_eq!(model, actual);
    // Stamp changes carry the stamp after the write.
    let states: Vec<_> = changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Stamp(s) if s.id() == StampId(1) => Some(s.state),
            _ => None,
        })
        .collect();
    assert_eq!(states, [StampState::Provisioning, StampState::Active]);
}

/// `changes_since` honours `limit`, and pages cover the feed without gaps or repeats.
pub async fn change_feed_pages_by_limit(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 100.0)]).await;
    for i in 0..23 {
        r.assign(&TenantSpec::new(tid(&format!("t{i}"))), StampId(1))
            .await
            .expect("assign");
    }
    let mut cursor = Version::ZERO;
    let mut seen = Vec::new();
    loop {
        let batch = r.changes_since(cursor, 5).await.expect("page");
        assert!(batch.changes.len() <= 5);
        if batch.changes.is_empty() {
            assert!(!batch.has_more(cursor));
            break;
        }
        seen.extend(batch.changes.iter().map(|c| c.version.0));
        cursor = batch.next_cursor(cursor);
    }
    let first = seen[0];
    assert_eq!(seen, (first..first + 25).collect::<Vec<_>>(), "gapless, in order");
    let past = r.changes_since(cursor, 5).await.expect("at head");
    assert!(past.changes.is_empty());
    assert_eq!(past.head, cursor);
}

/// The change signal is notified after a write, and waiting past the head times out.
pub async fn change_signal_is_notified(r: &DynRegistry) {
    let signal = r.change_signal();
    let before = r.changes_since(Version::ZERO, 1).await.expect("feed").head;
    r.put_stamp(spec(1, &[(Resource::Tenants, 1.0)])).await.expect("put");
    // The signal may lag a backend's notification path; give it a bounded time.
    let mut got = None;
    for _ in 0..200 {
        if let Some(v) = signal.wait_timeout(before, Duration::ZERO) {
            got = Some(v);
            break;
        }
        tokio_free_yield(Duration::from_millis(10)).await;
    }
    let v = got.expect("signal notified within 2 s");
    assert!(v > before);
    let head = r.changes_since(Version::ZERO, 1).await.expect("feed").head;
    assert!(signal.wait_timeout(head, Duration::from_millis(5)).is_none() || signal.head() > head);
}

/// Waits without a runtime dependency: a timer thread wakes the task.
async fn tokio_free_yield(d: Duration) {
    let signal = crate::registry::ChangeSignal::new();
    let s2 = signal.clone();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        s2.notify(Version(1));
    });
    signal.changed(Version::ZERO).await;
}

/// `assignments` pages in tenant-id order.
pub async fn assignments_page_in_tenant_order(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 100.0)]).await;
    let mut names: Vec<String> = (0..30).map(|i| format!("t{:02}", (i * 7) % 30)).collect();
    for n in &names {
        r.assign(&TenantSpec::new(tid(n)), StampId(1)).await.expect("assign");
    }
    names.sort();
    let mut got = Vec::new();
    let mut after: Option<TenantId> = None;
    loop {
        let page = r.assignments(after.as_ref(), 7).await.expect("page");
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|a| a.tenant().clone());
        got.extend(page.into_iter().map(|a| a.tenant().as_str().to_string()));
    }
    assert_eq!(got, names);
}

// ---------------------------------------------------------------------------------------------
// migration records

/// A created record gets an id and revision 1, and reads back equal.
pub async fn migration_records_round_trip(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let mut rec = MigrationRecord::planned(tid("a"), StampId(1), StampId(2));
    rec.data.insert("note".into(), "rebalance ticket 42".into());
    let created = r.create_migration(rec).await.expect("create");
    assert!(created.id.0 > 0);
    assert_eq!(created.revision, 1);
    assert_eq!(created.state, MigrationState::Planned);
    let read = r.migration(created.id).await.expect("read").expect("present");
    assert_eq!(read, created);
    let mut next = read.clone();
    next.state = MigrationState::Snapshotting;
    next.data.insert("snapshot".into(), "snap-1".into());
    let saved = r.save_migration(&next).await.expect("save");
    assert_eq!(saved.revision, 2);
    assert_eq!(saved.state, MigrationState::Snapshotting);
    assert_eq!(saved.data.get("snapshot").map(String::as_str), Some("snap-1"));
    assert_eq!(r.migration(created.id).await.expect("read"), Some(saved.clone()));
    assert_eq!(r.migrations(Some(&tid("a"))).await.expect("list"), vec![saved]);
    assert!(r.migrations(Some(&tid("b"))).await.expect("list").is_empty());
    assert!(r.migration(MigrationId(9999)).await.expect("read").is_none());
}

/// Saving with a stale revision is a conflict; two workers cannot both advance a record.
pub async fn migration_revision_is_compare_and_set(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let created = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect("create");
    let mut w1 = created.clone();
    let mut w2 = created.clone();
    w1.state = MigrationState::Snapshotting;
    w2.state = MigrationState::Cancelled;
    r.save_migration(&w1).await.expect("first worker");
    let err = r.save_migration(&w2).await.expect_err("second worker");
    assert!(
        matches!(
            err,
            Error::Conflict {
                kind: ConflictKind::Revision,
                expected: 1,
                actual: 2
            }
        ),
        "{err:?}"
    );
    let read = r.migration(created.id).await.expect("read").expect("present");
    assert_eq!(read.state, MigrationState::Snapshotting);
    let mut ghost = created.clone();
    ghost.id = MigrationId(created.id.0 + 100);
    assert!(matches!(r.save_migration(&ghost).await, Err(Error::NotFound(_))));
}

/// At most one non-terminal migration per tenant.
pub async fn one_active_migration_per_tenant(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let m = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect("create");
    let err = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect_err("second active");
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    r.create_migration(MigrationRecord::planned(tid("b"), StampId(1), StampId(2)))
        .await
        .expect("other tenant");
    let mut done = m.clone();
    done.state = MigrationState::Cancelled;
    r.save_migration(&done).await.expect("cancel");
    r.create_migration(MigrationRecord::planned(tid("a"), StampId(2), StampId(1)))
        .await
        .expect("after the first ended");
    assert_eq!(r.migrations(None).await.expect("list").len(), 3);
}

/// A save moves the record's state only along a legal transition (or keeps it); a finished
/// migration cannot be reopened, so it cannot become a second active one either.
pub async fn migration_states_only_move_forward(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let m = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect("create");
    let mut skip = m.clone();
    skip.state = MigrationState::CutOver;
    let err = r.save_migration(&skip).await.expect_err("planned to cut-over");
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err:?}");
    let mut same = m.clone();
    same.data.insert("note".into(), "kept".into());
    let m = r.save_migration(&same).await.expect("same state, new data");
    let mut done = m.clone();
    done.state = MigrationState::Cancelled;
    let done = r.save_migration(&done).await.expect("cancel");
    let next = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(2), StampId(1)))
        .await
        .expect("after the first ended");
    for state in [
        MigrationState::Planned,
        MigrationState::Snapshotting,
        MigrationState::Completed,
    ] {
        let mut reopen = done.clone();
        reopen.state = state;
        let err = r
            .save_migration(&reopen)
            .await
            .expect_err("reopen a cancelled migration");
        assert!(matches!(err, Error::InvalidTransition { .. }), "{state}: {err:?}");
    }
    let read = r.migration(done.id).await.expect("read").expect("present");
    assert_eq!(read, done);
    let active: Vec<_> = r
        .migrations(Some(&tid("a")))
        .await
        .expect("list")
        .into_iter()
        .filter(|x| !x.state.is_terminal())
        .map(|x| x.id)
        .collect();
    assert_eq!(active, vec![next.id]);
}

/// Same source and destination, unknown stamps, and non-planned records are refused.
pub async fn invalid_migrations_are_refused(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let err = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(1)))
        .await
        .expect_err("same stamp");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let err = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(7)))
        .await
        .expect_err("unknown destination");
    assert!(
        matches!(err, Error::NotFound(crate::Subject::Stamp(StampId(7)))),
        "{err:?}"
    );
    let mut rec = MigrationRecord::planned(tid("a"), StampId(1), StampId(1));
    rec.state = MigrationState::CutOver;
    assert!(matches!(r.create_migration(rec).await, Err(Error::InvalidInput(_))));
    assert!(r.migrations(None).await.expect("list").is_empty());
}

// ---------------------------------------------------------------------------------------------
// races

/// 64 concurrent `assign` calls for the last 10 slots of a stamp: exactly 10 win, the others
/// get `CapacityExceeded`, and usage equals the limit.
pub async fn race_for_last_slots_admits_exactly_the_free_number(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 30.0), (Resource::Connections, 3000.0)]).await;
    for i in 0..20 {
        r.assign(&tenant(&format!("pre{i}"), 10.0), StampId(1))
            .await
            .expect("prefill");
    }
    let specs: Vec<TenantSpec> = (0..64).map(|i| tenant(&format!("racer{i}"), 10.0)).collect();
    let results = join_all(specs.iter().map(|s| r.assign(s, StampId(1))).collect()).await;
    let wins = results.iter().filter(|x| x.is_ok()).count();
    assert_eq!(wins, 10, "exactly the free slots win");
    for e in results.into_iter().filter_map(Result::err) {
        assert!(
            matches!(
                e,
                Error::CapacityExceeded {
                    resource: Resource::Tenants,
                    ..
                }
            ),
            "losers see CapacityExceeded, got {e:?}"
        );
    }
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(fleet.get(StampId(1)).expect("s1").tenants(), 30);
    assert_eq!(usage(&fleet, 1, Resource::Connections), 300.0);
}

/// 16 concurrent compare-and-sets on one tenant with the same expected epoch: exactly one
/// wins, the rest get `Conflict`.
pub async fn race_of_compare_and_set_has_one_winner(r: &DynRegistry) {
    for s in 1..=4 {
        active(r, s, &[(Resource::Tenants, 10.0)]).await;
    }
    let a = r.assign(&tenant("a", 1.0), StampId(1)).await.expect("assign");
    let results = join_all(
        (0..16)
            .map(|i| {
                let to = StampId(2 + (i % 3));
                r.compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(to).by(format!("w{i}")))
            })
            .collect(),
    )
    .await;
    let winners: Vec<_> = results.iter().filter_map(|x| x.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one compare-and-set wins");
    let winner = winners[0].clone();
    for e in results.into_iter().filter_map(Result::err) {
        assert!(
            matches!(
                e,
                Error::Conflict {
                    kind: ConflictKind::Epoch,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    assert_eq!(r.require_assignment(a.tenant()).await.expect("lookup"), winner);
    let fleet = r.fleet().await.expect("fleet");
    assert_eq!(fleet.tenants(), 1, "usage moved once");
}

/// 32 concurrent `assign` calls for one tenant to different stamps: exactly one wins.
pub async fn race_to_assign_one_tenant_has_one_winner(r: &DynRegistry) {
    for s in 1..=4 {
        active(r, s, &[(Resource::Tenants, 100.0)]).await;
    }
    let t = tenant("solo", 1.0);
    let results = join_all((0..32).map(|i| r.assign(&t, StampId(1 + i % 4))).collect()).await;
    assert_eq!(results.iter().filter(|x| x.is_ok()).count(), 1);
    for e in results.into_iter().filter_map(Result::err) {
        assert!(matches!(e, Error::AlreadyAssigned { .. }), "{e:?}");
    }
    assert_eq!(r.fleet().await.expect("fleet").tenants(), 1);
    assert_eq!(r.history(t.id()).await.expect("history").len(), 1);
}
