//! One placement decision over 10, 100, 1,000 and 10,000 stamps, for each built-in policy,
//! with the naive baseline a user would otherwise write (collect the eligible stamps into a
//! `Vec`, sort by load, take the first) in the same group.
//!
//! `cargo bench --bench placement -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use stamps::placement::{
    policies, AtLeastVersion, BoxPlacement, FleetView, LeastLoaded, MinVersion, Pipeline, Placement, PlacementExt,
};
use stamps::*;

/// The same fleet with a headroom of its own on tenants (10%) and a deployed version on every
/// stamp (half on 41, half on 42): the day-two configuration.
fn day_two(n: u32) -> Fleet {
    let mut f = fleet(n);
    for l in &mut f.stamps {
        let i = l.id().0;
        let spec = &mut l.stamp.spec;
        spec.capacity = spec.capacity.clone().headroom_on(Resource::Tenants, 0.10).unwrap();
        spec.version = Some(if i % 2 == 0 { "42.1.0" } else { "41.9.2" }.to_string());
    }
    f
}

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
            .residency(Residency::new(&region[..2]).unwrap());
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

/// What a user would write without the crate's pipeline: the same hard constraints and the
/// least-loaded rule, with the candidates collected and sorted.
fn naive(tenant: &TenantSpec, fleet: &Fleet) -> Option<StampId> {
    let mut c: Vec<(f64, StampId)> = fleet
        .stamps
        .iter()
        .filter(|l| l.stamp.state == StampState::Active)
        .filter(|l| tenant.residency.is_none() || l.stamp.spec.residency == tenant.residency)
        .filter(|l| l.stamp.spec.tier == tenant.tier)
        .filter(|l| l.fits_with_headroom(&tenant.demand).is_ok())
        .map(|l| (l.bottleneck().map_or(0.0, |(_, u)| u), l.id()))
        .collect();
    c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    c.first().map(|(_, id)| *id)
}

fn bench(c: &mut Criterion) {
    let tenant = TenantSpec::new(TenantId::new("acme").unwrap())
        .residency(Residency::new("eu").unwrap())
        .region(Region::new("eu-west").unwrap())
        .demand(Demand::of([(Resource::Connections, 25.0)]).unwrap());
    let all: Vec<(&str, BoxPlacement)> = vec![
        ("least_loaded", policies::least_loaded().boxed()),
        ("most_available", policies::most_available().boxed()),
        ("bin_packing", policies::bin_packing().boxed()),
        ("rendezvous", policies::rendezvous().boxed()),
        ("geographic", policies::geographic().boxed()),
        ("hybrid", policies::hybrid().boxed()),
        ("dedicated_for_enterprise", policies::dedicated_for_enterprise().boxed()),
        ("nearest", policies::nearest().boxed()),
    ];
    for n in [10u32, 100, 1_000, 10_000] {
        let f = fleet(n);
        let view = FleetView::new(&f);
        let mut group = c.benchmark_group(format!("place/{n}"));
        group.bench_function(BenchmarkId::new("naive_vec_sort", n), |b| {
            b.iter(|| naive(black_box(&tenant), black_box(&f)))
        });
        for (name, p) in &all {
            group.bench_function(BenchmarkId::new(*name, n), |b| {
                b.iter(|| p.place(black_box(&tenant), black_box(&view)))
            });
        }
        // The day-two configuration in the same group, against `least_loaded` above: a
        // headroom of its own on a resource of every stamp and a version gate; then also a
        // version preference.
        let d = day_two(n);
        let day_view = FleetView::new(&d);
        let gated = Pipeline::new()
            .filter(MinVersion::new("42"))
            .score(LeastLoaded::bottleneck(), 1.0);
        group.bench_function(BenchmarkId::new("least_loaded_day_two", n), |b| {
            b.iter(|| gated.place(black_box(&tenant), black_box(&day_view)))
        });
        let preferring = Pipeline::new()
            .filter(MinVersion::new("42"))
            .score(LeastLoaded::bottleneck(), 1.0)
            .score(AtLeastVersion::new("42.1"), 0.1);
        group.bench_function(BenchmarkId::new("least_loaded_day_two_prefer_version", n), |b| {
            b.iter(|| preferring.place(black_box(&tenant), black_box(&day_view)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
