//! `RouteLayer` in process: a request through the layer on a router hit, against the same
//! inner service called directly, and against the work a host would write by hand (read the
//! header, validate the id, `Router::route`, insert the extension). No sockets: this is the
//! layer's own cost; the end-to-end proxy overhead is measured by the HTTP router bench.
//!
//! ```text
//! cargo bench --features tower --bench tower_layer -- --warm-up-time 1 --measurement-time 3
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use stamps::integrations::tower::{ResolvedRoute, RouteLayer};
use stamps::integrations::TenantSource;
use stamps::router::Router;
use stamps::{AssignmentMode, Epoch, InMemoryRegistry, StampId, TenantId};
use tower::{service_fn, Layer, Service};

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn ready<F: Future>(fut: F, cx: &mut Context<'_>) -> Option<F::Output> {
    match pin!(fut).poll(cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

fn request(tenant: &str) -> Request<()> {
    let mut req = Request::get("/orders").header("x-tenant-id", tenant).body(()).unwrap();
    req.extensions_mut().insert(7u32); // as hyper's requests carry extensions
    req
}

fn bench(c: &mut Criterion) {
    let router = Arc::new(
        Router::builder(InMemoryRegistry::new())
            .config(stamps::RouterConfig::default().max_entries(100_000))
            .build()
            .unwrap(),
    );
    let tenants: Vec<String> = (0..10_000).map(|i| format!("tenant-{i:09}")).collect();
    router
        .preload(
            tenants
                .iter()
                .map(|t| (t.as_str(), StampId(1), Epoch(1), AssignmentMode::Serving)),
        )
        .unwrap();
    router.set_endpoint(StampId(1), Some("http://s1"));
    let inner = service_fn(|req: Request<()>| {
        let hit = req.extensions().get::<ResolvedRoute>().map(|r| r.route.stamp);
        std::future::ready(Ok::<_, Infallible>(Response::new(hit)))
    });
    let mut direct = inner;
    let mut layered = RouteLayer::new(router.clone(), TenantSource::header()).layer(inner);
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);

    let mut group = c.benchmark_group("tower_layer_hit");
    let mut i = 0usize;
    group.bench_function("inner service alone", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % tenants.len();
                request(&tenants[i])
            },
            |req| black_box(ready(direct.call(req), &mut cx)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("inner + bare Router::route of the header", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % tenants.len();
                request(&tenants[i])
            },
            |req| {
                let raw = req
                    .headers()
                    .get("x-tenant-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                black_box(router.route(raw).ok());
                black_box(ready(direct.call(req), &mut cx))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("by hand (header, TenantId, route, extension)", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % tenants.len();
                request(&tenants[i])
            },
            |mut req| {
                let raw = req
                    .headers()
                    .get("x-tenant-id")
                    .map(|v| v.as_bytes())
                    .unwrap_or_default();
                let tenant = TenantId::from_bytes(raw).unwrap();
                let route = router.route(tenant.as_str()).unwrap();
                req.extensions_mut().insert(ResolvedRoute { tenant, route });
                black_box(ready(direct.call(req), &mut cx))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("RouteLayer", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % tenants.len();
                request(&tenants[i])
            },
            |req| black_box(ready(layered.call(req), &mut cx)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
