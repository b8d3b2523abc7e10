//! Zero allocations per placement decision over 1,000 stamps, for every built-in policy and
//! combinator, on the success path and on the rejection path. A counting global allocator
//! counts this thread's allocations.
#![allow(unsafe_code)]

use std::collections::HashMap;

use stamps::placement::*;
use stamps::*;

#[path = "support/alloc.rs"]
mod alloc;

use alloc::count;

/// 1,000 stamps in 4 regions, residencies eu/us, 5% dedicated, some draining, varied load.
fn fleet(n: u32) -> Fleet {
    let regions = ["eu-west", "eu-central", "us-east", "us-west"];
    let stamps = (1..=n)
        .map(|i| {
            let region = regions[(i % 4) as usize];
            let mut spec = StampSpec::new(
                StampId(i),
                format!("s{i}"),
                Region::new(region).unwrap(),
                Capacity::new([(Resource::Connections, 5000.0), (Resource::Tenants, 200.0)], 0.25).unwrap(),
            )
            .unwrap()
            .residency(Residency::new(&region[..2]).unwrap())
            .label("az", ["a", "b", "c"][(i % 3) as usize]);
            if i % 20 == 0 {
                spec = spec.tier(Tier::Dedicated);
            }
            let state = if i % 17 == 0 {
                StampState::Draining
            } else {
                StampState::Active
            };
            let mut usage = Amounts::default();
            if i % 20 != 0 {
                let d = Demand::of([(Resource::Connections, f64::from((i * 37) % 3700))]).unwrap();
                model::admission::add(&mut usage, &d, true);
            }
            StampLoad::new(Stamp::new(spec, state, Timestamp::ZERO, Timestamp::ZERO), usage)
        })
        .collect();
    Fleet::new(stamps, Version(1), Timestamp::ZERO)
}

fn policies_under_test() -> Vec<(&'static str, BoxPlacement)> {
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
        (
            "filter",
            policies::least_loaded()
                .boxed()
                .filter(|_: &TenantSpec, s: &StampLoad| s.id().0.is_multiple_of(2))
                .boxed(),
        ),
        ("prefer", policies::least_loaded().prefer(InRegion).boxed()),
        (
            "or_else",
            policies::geographic().or_else(policies::least_loaded()).boxed(),
        ),
        (
            "either",
            Either::<Pipeline, Pipeline>::Right(policies::bin_packing()).boxed(),
        ),
        (
            "closure",
            from_fn(|_, f| {
                f.stamps()
                    .next()
                    .map(|s| s.id())
                    .ok_or(PlacementError::Policy { reason: "none" })
            })
            .boxed(),
        ),
    ]
}

#[test]
fn a_decision_over_1000_stamps_allocates_nothing() {
    let f = fleet(1000);
    let health: HashMap<StampId, HealthStatus> = (1..=1000)
        .filter(|i| i % 13 == 0)
        .map(|i| (StampId(i), HealthStatus::Unhealthy))
        .collect();
    let view = FleetView::new(&f).with_health(&health);
    let fits = TenantSpec::new(TenantId::new("acme").unwrap())
        .residency(Residency::new("eu").unwrap())
        .region(Region::new("eu-central").unwrap())
        .label("affinity/az", "b")
        .demand(Demand::of([(Resource::Connections, 25.0)]).unwrap());
    let dedicated = fits.clone().tier(Tier::Dedicated);
    let pinned = fits.clone().pin(StampId(2));
    let too_big = fits
        .clone()
        .demand(Demand::of([(Resource::Connections, 4000.0)]).unwrap());
    let pinned_full = too_big.clone().pin(StampId(2));
    let nowhere = fits.clone().residency(Residency::new("ap").unwrap());
    for (name, p) in policies_under_test() {
        // Warm up (lazy statics, first-touch paths), then count.
        let _ = p.place(&fits, &view);
        for t in [&fits, &dedicated, &pinned, &too_big, &pinned_full, &nowhere] {
            let (out, n, _) = count(|| p.place(t, &view));
            assert_eq!(n, 0, "{name} allocated {n} times placing {} ({out:?})", t.id);
        }
        // The success path really succeeded and the rejection path really rejected.
        assert!(p.place(&fits, &view).is_ok(), "{name}");
        assert!(p.place(&too_big, &view).is_err() || name == "closure", "{name}");
    }
}

#[test]
fn explain_allocates_and_that_is_fine_but_place_matches_it() {
    let f = fleet(100);
    let view = FleetView::new(&f);
    let t = TenantSpec::new(TenantId::new("acme").unwrap());
    let p = policies::least_loaded();
    let (e, n, _) = count(|| p.explain(&t, &view));
    assert!(n > 0);
    assert_eq!(e.outcome, p.place(&t, &view));
}

/// The day-two configuration (a headroom of its own on a resource of every stamp, versions,
/// ephemeral stamps, a version gate and preference) still decides without allocating.
#[test]
fn a_day_two_decision_allocates_nothing() {
    use stamps::placement::{AtLeastVersion, LeastLoaded, MinVersion};
    let mut f = fleet(1000);
    for l in &mut f.stamps {
        let i = l.id().0;
        let spec = &mut l.stamp.spec;
        spec.capacity = spec.capacity.clone().headroom_on(Resource::Tenants, 0.10).unwrap();
        spec.version = Some(if i % 2 == 0 { "42.1.0" } else { "41.9.2" }.to_string());
        if i % 11 == 0 {
            spec.expires_at = Some(Timestamp::from_millis(1));
        }
    }
    let view = FleetView::new(&f);
    let gated = Pipeline::new()
        .filter(MinVersion::new("42"))
        .score(LeastLoaded::bottleneck(), 1.0)
        .score(AtLeastVersion::new("42.1"), 0.1);
    let t = TenantSpec::new(TenantId::new("acme").unwrap())
        .residency(Residency::new("eu").unwrap())
        .demand(Demand::of([(Resource::Connections, 25.0)]).unwrap());
    let too_big = t.clone().demand(Demand::of([(Resource::Connections, 4000.0)]).unwrap());
    let _ = gated.place(&t, &view);
    for tenant in [&t, &t.clone().ephemeral(), &too_big] {
        let (out, n, _) = count(|| gated.place(tenant, &view));
        assert_eq!(n, 0, "allocated {n} times ({out:?})");
    }
    assert!(gated.place(&t, &view).is_ok());
}
