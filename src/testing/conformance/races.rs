//! Cases that race concurrent calls: the last free slots, one compare-and-set winner, one
//! home per tenant.

use crate::error::{Conflict, Error};
use crate::model::*;
use crate::registry::{DynRegistry, RegistryExt};

use super::fixtures::*;
use super::join_all;

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
    check_eq!(wins, 10, "exactly the free slots win");
    for e in results.into_iter().filter_map(Result::err) {
        check_matches!(
            e,
            Error::CapacityExceeded {
                resource: Resource::Tenants,
                ..
            },
            "the error of an assign that lost the race"
        );
    }
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(fleet.get(StampId(1)).expect("s1").tenants(), 30);
    check_eq!(usage(&fleet, 1, Resource::Connections), 300.0);
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
    check_eq!(winners.len(), 1, "exactly one compare-and-set wins");
    let winner = winners[0].clone();
    for e in results.into_iter().filter_map(Result::err) {
        check_matches!(
            e,
            Error::Conflict(Conflict::Epoch { .. }),
            "the error of a compare-and-set that lost the race"
        );
    }
    check_eq!(r.require_assignment(a.tenant()).await.expect("lookup"), winner);
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(fleet.tenants(), 1, "usage moved once");
}

/// 32 concurrent `assign` calls for one tenant to different stamps: exactly one wins.
pub async fn race_to_assign_one_tenant_has_one_winner(r: &DynRegistry) {
    for s in 1..=4 {
        active(r, s, &[(Resource::Tenants, 100.0)]).await;
    }
    let t = tenant("solo", 1.0);
    let results = join_all((0..32).map(|i| r.assign(&t, StampId(1 + i % 4))).collect()).await;
    check_eq!(results.iter().filter(|x| x.is_ok()).count(), 1);
    for e in results.into_iter().filter_map(Result::err) {
        check_matches!(
            e,
            Error::AlreadyAssigned { .. },
            "the error of an assign that lost the race"
        );
    }
    check_eq!(r.fleet().await.expect("fleet").tenants(), 1);
    check_eq!(r.history(t.id()).await.expect("history").len(), 1);
}
