//! With the `metrics` feature on and a Prometheus recorder installed, `Router::route` on a hit
//! still allocates nothing: the hit path counts in the router's per-thread stripes and the
//! recorder only sees totals when `Router::export_metrics` runs (on scrape). Proved with a
//! counting global allocator; this binary holds only this test, so nothing else allocates
//! while it counts.

use metrics_exporter_prometheus::PrometheusBuilder;
use stamps::router::Router;
use stamps::{AssignmentMode, Epoch, InMemoryRegistry, StampId};

#[path = "support/alloc.rs"]
mod alloc;

use alloc::count;

#[test]
fn route_hit_allocates_nothing_with_metrics_on() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("install the recorder");
    stamps::telemetry::describe();

    let router = Router::new(InMemoryRegistry::new());
    let tenants: Vec<String> = (0..1_000).map(|i| format!("tenant-{i:09}")).collect();
    router
        .preload(
            tenants
                .iter()
                .enumerate()
                .map(|(i, t)| (t.as_str(), StampId((i % 3) as u32), Epoch(1), AssignmentMode::Serving)),
        )
        .unwrap();
    for t in &tenants {
        router.route(t).unwrap();
    }
    // A scrape before counting: every series exists in the recorder from here on.
    router.export_metrics();

    let (hits, allocs, bytes) = count(|| {
        let mut hits = 0usize;
        for _ in 0..20 {
            for t in &tenants {
                router.route(t).unwrap();
                hits += 1;
            }
        }
        hits
    });
    assert_eq!(hits, 20_000);
    assert_eq!((allocs, bytes), (0, 0), "the hit path allocated with metrics on");

    // The scrape sees every hit.
    router.export_metrics();
    let text = handle.render();
    assert!(text.contains("stamps_router_hits_total 21000"), "{text}");
}
