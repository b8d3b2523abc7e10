//! `Router::route` on a hit allocates nothing: proved with a counting global allocator (this
//! test binary holds only this test, so nothing else allocates while it counts).

use stamps::health::HealthTable;
use stamps::router::Router;
use stamps::{AssignmentMode, Epoch, HealthStatus, InMemoryRegistry, StampId, Timestamp};

#[path = "support/alloc.rs"]
mod alloc;

use alloc::count;

#[test]
fn route_hit_allocates_nothing() {
    let health = HealthTable::new();
    let router = Router::builder(InMemoryRegistry::new())
        .config(stamps::RouterConfig::default().failover(true))
        .health(health.clone())
        .build()
        .unwrap();
    let long_id = "a-tenant-id-that-is-longer-than-twenty-four-bytes";
    let tenants: Vec<String> = (0..1_000).map(|i| format!("tenant-{i:09}")).collect();
    router
        .preload(tenants.iter().enumerate().map(|(i, t)| {
            let mode = if i % 10 == 0 {
                AssignmentMode::DualWrite { shadow: StampId(2) }
            } else {
                AssignmentMode::Serving
            };
            (t.as_str(), StampId((i % 2) as u32), Epoch(i as u64 + 1), mode)
        }))
        .unwrap();
    router
        .preload([(long_id, StampId(1), Epoch(1), AssignmentMode::Serving)])
        .unwrap();
    router.set_endpoint(StampId(0), Some("https://s0.internal"));
    router.set_endpoint(StampId(1), Some("https://s1.internal"));
    router.set_endpoint(StampId(2), Some("https://s2.internal"));
    // One stamp unhealthy elsewhere, so the health check takes its slow path too.
    health.set(StampId(9), HealthStatus::Unhealthy, Timestamp::ZERO, Some("down"));

    // Warm the per-thread state (counter stripe, stamp view copy).
    for t in &tenants {
        router.route(t).unwrap();
    }
    router.route(long_id).unwrap();

    let (hits, allocs, bytes) = count(|| {
        let mut hits = 0usize;
        for _ in 0..10 {
            for t in &tenants {
                let r = router.route(t).unwrap();
                assert!(r.endpoint.is_some());
                hits += 1;
            }
            let r = router.route(long_id).unwrap();
            assert_eq!(r.endpoint, Some("https://s1.internal"));
            hits += 1;
        }
        hits
    });
    assert_eq!(hits, 10_010);
    assert_eq!(
        (allocs, bytes),
        (0, 0),
        "route allocated {allocs} times ({bytes} bytes) in {hits} hits"
    );

    // Rejections allocate nothing either: bad text, unhealthy stamp.
    health.set(StampId(0), HealthStatus::Unhealthy, Timestamp::ZERO, Some("down"));
    router.route("tenant-000000000").unwrap_err();
    let (errors, allocs, bytes) = count(|| {
        let mut errors = 0;
        for t in tenants.iter().step_by(2) {
            if router.route(t).is_err() {
                errors += 1;
            }
        }
        for bad in ["", "UPPER", "../etc", "a\u{0}b"] {
            if router.route(bad).is_err() {
                errors += 1;
            }
        }
        errors
    });
    assert_eq!(errors, 504);
    assert_eq!((allocs, bytes), (0, 0), "rejections allocated");
    // The counting allocator itself works.
    let (_, allocs, bytes) = count(|| String::from("x").repeat(100));
    assert!(allocs >= 1 && bytes >= 100);
}
