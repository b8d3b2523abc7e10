//! `RouteLayer` on a router hit allocates nothing beyond what the request carries: the tenant
//! id and the extension entry. Proved with a counting global allocator against the same work
//! done by hand (this test binary holds only this test, so nothing else allocates while it
//! counts).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use http::{Request, Response};
use stamps::integrations::tower::{ResolvedRoute, RouteLayer};
use stamps::integrations::TenantSource;
use stamps::router::{Route, Router};
use stamps::{AssignmentMode, Epoch, InMemoryRegistry, StampId, TenantId};
use tower::{service_fn, Layer, Service};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let a0 = ALLOCS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCS.load(Ordering::SeqCst) - a0)
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn poll_once<F: Future>(fut: F, cx: &mut Context<'_>) -> F::Output {
    match pin!(fut).poll(cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the hit path must be ready at once"),
    }
}

/// A request as a server hands it over: headers, and (like hyper's upgrade handle) one
/// extension already present.
fn request(tenant: &str) -> Request<()> {
    let mut req = Request::get("/orders").header("x-tenant-id", tenant).body(()).unwrap();
    req.extensions_mut().insert(7u32);
    req
}

#[test]
fn a_hit_allocates_only_the_tenant_id_and_the_extension_entry() {
    let router = Arc::new(
        Router::builder(InMemoryRegistry::new())
            .max_entries(1_024)
            .build()
            .unwrap(),
    );
    router
        .preload([("acme", StampId(2), Epoch(7), AssignmentMode::Serving)])
        .unwrap();
    router.set_endpoint(StampId(2), Some("http://s2"));
    let inner = service_fn(|req: Request<()>| {
        let ok = req.extensions().get::<ResolvedRoute>().is_some();
        std::future::ready(Ok::<_, Infallible>(Response::new(ok)))
    });
    let mut svc = RouteLayer::new(router.clone(), TenantSource::header()).layer(inner);
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);

    // Warm the per-thread state (counter stripe, stamp view copy).
    for _ in 0..3 {
        let res = poll_once(svc.call(request("acme")), &mut cx).unwrap();
        assert!(*res.body());
    }

    // The same work by hand: validate the id, look up, insert the extension.
    let reqs: Vec<_> = (0..100).map(|_| request("acme")).collect();
    let (_, by_hand) = count(|| {
        for mut req in reqs {
            let raw = req.headers().get("x-tenant-id").unwrap().as_bytes();
            let tenant = TenantId::from_bytes(raw).unwrap();
            let route: Route = router.route(tenant.as_str()).unwrap();
            req.extensions_mut().insert(ResolvedRoute { tenant, route });
            drop(req);
        }
    });

    let reqs: Vec<_> = (0..100).map(|_| request("acme")).collect();
    let (served, through_layer) = count(|| {
        let mut served = 0;
        for req in reqs {
            let res = poll_once(svc.call(req), &mut cx).unwrap();
            served += usize::from(*res.body());
        }
        served
    });
    assert_eq!(served, 100);
    // Per request: the tenant id (one `Arc<str>`) and the boxed extension value.
    assert_eq!(by_hand, 200, "the count must see the tenant id and the extension box");
    assert_eq!(
        through_layer, by_hand,
        "the layer allocated {through_layer} times in 100 hits; the work by hand {by_hand}"
    );
}
