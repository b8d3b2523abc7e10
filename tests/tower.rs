//! `RouteLayer`: routing `http` requests through the router, with plain `tower` services, with
//! axum 0.8 (in-process and on a real loopback socket), and with signed routing tokens.
#![cfg(feature = "test-util")]

mod router_common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use proptest::prelude::*;
use router_common::{gated, registry_with_stamps, test_registry, tid, TestRegistry};
use stamps::health::HealthTable;
use stamps::integrations::tower::{ResolvedRoute, RouteLayer};
use stamps::integrations::TenantSource;
use stamps::router::Router;
use stamps::testing::Call;
use stamps::*;
use tower::{service_fn, Layer, Service, ServiceExt};

/// A plain service that answers `stamp/epoch/tenant/mode` from the extension, or 599 if the
/// layer did not insert one.
fn echo() -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send> + Clone + Send
{
    service_fn(|req: Request<String>| async move {
        let res = match req.extensions().get::<ResolvedRoute>() {
            Some(r) => Response::new(format!(
                "{}/{}/{}/{}/{}",
                r.route.stamp.0,
                r.route.epoch.0,
                r.tenant,
                r.route.mode,
                r.route.endpoint.unwrap_or("-")
            )),
            None => {
                let mut res = Response::new(String::new());
                *res.status_mut() = StatusCode::from_u16(599).unwrap();
                res
            }
        };
        Ok::<_, Infallible>(res)
    })
}

fn get(tenant: &str) -> Request<String> {
    Request::get("/orders")
        .header("x-tenant-id", tenant)
        .body(String::new())
        .unwrap()
}

fn with_method(method: Method, tenant: &str) -> Request<String> {
    Request::builder()
        .method(method)
        .uri("/orders")
        .header("x-tenant-id", tenant)
        .body(String::new())
        .unwrap()
}

async fn send<S>(svc: &S, req: Request<String>) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone,
{
    svc.clone().oneshot(req).await.unwrap()
}

fn reason(res: &Response<String>) -> &str {
    res.headers()
        .get("x-stamps-error")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

fn retry_after(res: &Response<String>) -> Option<&str> {
    res.headers().get("retry-after").map(|v| v.to_str().unwrap())
}

struct Fixture {
    clock: FakeClock,
    registry: TestRegistry,
    health: HealthTable,
    router: Arc<Router<TestRegistry>>,
}

async fn fixture() -> Fixture {
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    let inner = registry_with_stamps(&clock, 3).await;
    let registry = test_registry(inner);
    let health = HealthTable::new();
    let router = Router::builder(registry.clone())
        .clock(clock.clone())
        .health(health.clone())
        .build()
        .unwrap();
    router.load_stamps().await.unwrap();
    Fixture {
        clock,
        registry,
        health,
        router: Arc::new(router),
    }
}

#[tokio::test]
async fn a_hit_routes_without_registry_io_and_inserts_the_route() {
    let f = fixture().await;
    f.router
        .preload([("acme", StampId(2), Epoch(7), AssignmentMode::Serving)])
        .unwrap();
    f.router.set_endpoint(StampId(2), Some("http://s2"));
    let svc = RouteLayer::new(f.router.clone(), TenantSource::header()).layer(echo());
    for _ in 0..3 {
        let res = send(&svc, get("acme")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.body(), "2/7/acme/serving/http://s2");
    }
    assert_eq!(f.registry.calls(Call::Assignment), 0);
    assert_eq!(f.router.stats().hits, 3);
}

#[tokio::test]
async fn a_miss_resolves_once_then_hits() {
    let f = fixture().await;
    let a = f
        .registry
        .inner()
        .assign(&TenantSpec::new(tid("globex")), StampId(3))
        .await
        .unwrap();
    let svc = RouteLayer::new(f.router.clone(), TenantSource::header()).layer(echo());
    let first = send(&svc, get("globex")).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        first.body(),
        &format!("3/{}/globex/serving/https://s3.internal", a.epoch.0)
    );
    let second = send(&svc, get("globex")).await;
    assert_eq!(second.body(), first.body());
    assert_eq!(f.registry.calls(Call::Assignment), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_through_the_layer_make_one_registry_read() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 2).await;
    let a = inner.assign(&TenantSpec::new(tid("acme")), StampId(2)).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let registry = gated(inner, gate.clone());
    let router = Arc::new(Router::builder(registry.clone()).clock(clock).build().unwrap());
    let svc = RouteLayer::new(router, TenantSource::header()).layer(echo());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(get("acme")).await.unwrap() })
        })
        .collect();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1_000);
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.body().starts_with(&format!("2/{}/acme", a.epoch.0)),
            "{}",
            res.body()
        );
    }
    assert_eq!(registry.calls(Call::Assignment), 1);
}

#[tokio::test]
async fn tenant_sources_subdomain_header_and_path() {
    let f = fixture().await;
    f.router
        .preload([("acme", StampId(1), Epoch(4), AssignmentMode::Serving)])
        .unwrap();

    let sub = RouteLayer::new(
        f.router.clone(),
        TenantSource::Subdomain {
            base_domain: "app.example".into(),
        },
    )
    .layer(echo());
    let req = Request::get("/")
        .header("host", "ACME.app.example:8443")
        .body(String::new())
        .unwrap();
    assert_eq!(send(&sub, req).await.body(), "1/4/acme/serving/https://s1.internal");
    // HTTP/2 style: no Host header, the authority is in the URI.
    let req = Request::get("http://acme.app.example/x").body(String::new()).unwrap();
    assert_eq!(send(&sub, req).await.status(), StatusCode::OK);
    let req = Request::get("/")
        .header("host", "acme.evil.example")
        .body(String::new())
        .unwrap();
    let res = send(&sub, req).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "invalid-tenant")
    );
    let res = send(&sub, Request::get("/").body(String::new()).unwrap()).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "missing-tenant")
    );
    let req = Request::get("/")
        .header("host", &b"acme\xff.app.example"[..])
        .body(String::new())
        .unwrap();
    assert_eq!(send(&sub, req).await.status(), StatusCode::BAD_REQUEST);

    let path = RouteLayer::new(f.router.clone(), TenantSource::PathPrefix { prefix: "/t/".into() }).layer(echo());
    let res = send(&path, Request::get("/t/acme/orders?x=1").body(String::new()).unwrap()).await;
    assert_eq!(res.body(), "1/4/acme/serving/https://s1.internal");
    let res = send(&path, Request::get("/other/acme").body(String::new()).unwrap()).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "invalid-tenant")
    );

    let header = RouteLayer::new(f.router.clone(), TenantSource::header()).layer(echo());
    let res = send(&header, Request::get("/").body(String::new()).unwrap()).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "missing-tenant")
    );
    let res = send(&header, get("Acme!")).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "invalid-tenant")
    );
    assert!(res.body().is_empty());
    assert_eq!(f.registry.calls(Call::Assignment), 0);
}

#[tokio::test]
async fn host_and_uri_authority_that_name_different_tenants_are_400() {
    let f = fixture().await;
    f.router
        .preload([
            ("acme", StampId(1), Epoch(4), AssignmentMode::Serving),
            ("evil", StampId(2), Epoch(4), AssignmentMode::Serving),
        ])
        .unwrap();
    let sub = RouteLayer::new(
        f.router.clone(),
        TenantSource::Subdomain {
            base_domain: "app.example".into(),
        },
    )
    .layer(echo());
    // Absolute-form (or HTTP/2 `:authority`) naming one tenant, Host naming another: a proxy
    // behind the layer that forwards by the URI would send the request to the wrong tenant.
    let req = Request::get("http://evil.app.example/orders")
        .header("host", "acme.app.example")
        .body(String::new())
        .unwrap();
    let res = send(&sub, req).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "invalid-tenant")
    );
    // The same tenant in both (case and port aside) is routed.
    let req = Request::get("http://ACME.app.example:443/orders")
        .header("host", "acme.app.example")
        .body(String::new())
        .unwrap();
    assert_eq!(send(&sub, req).await.status(), StatusCode::OK);
    // Two Host headers are ambiguous (RFC 9112 section 3.2: answer 400).
    let req = Request::get("/orders")
        .header("host", "acme.app.example")
        .header("host", "evil.app.example")
        .body(String::new())
        .unwrap();
    let res = send(&sub, req).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "invalid-tenant")
    );
}

/// Whatever Host header and URI authority a request carries, the layer routes only a tenant
/// that every one of them names; when they name different tenants it answers 400.
#[test]
fn host_and_authority_never_route_a_tenant_one_of_them_does_not_name() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = Arc::new(Router::builder(InMemoryRegistry::new()).build().unwrap());
    router
        .preload([
            ("acme", StampId(1), Epoch(1), AssignmentMode::Serving),
            ("beta", StampId(2), Epoch(1), AssignmentMode::Serving),
        ])
        .unwrap();
    let svc = RouteLayer::new(
        router,
        TenantSource::Subdomain {
            base_domain: "app.example".into(),
        },
    )
    .layer(echo());
    let host = || {
        (
            prop_oneof![Just("acme"), Just("ACME"), Just("beta"), Just("gamma")],
            prop_oneof![Just(""), Just(":443"), Just(":8080")],
        )
            .prop_map(|(label, port)| format!("{label}.app.example{port}"))
    };
    let strategy = (proptest::option::of(host()), proptest::option::of(host()));
    let mut runner = TestRunner::new(Config::with_cases(256));
    runner
        .run(&strategy, |(header, authority)| {
            let uri = match &authority {
                Some(a) => format!("http://{a}/orders"),
                None => "/orders".to_string(),
            };
            let mut req = Request::get(uri).body(String::new()).unwrap();
            if let Some(h) = &header {
                req.headers_mut().insert("host", h.parse().unwrap());
            }
            let res = rt.block_on(send(&svc, req));
            let label = |h: &Option<String>| {
                h.as_deref()
                    .and_then(|h| h.split('.').next())
                    .map(str::to_ascii_lowercase)
            };
            let named: Vec<String> = [label(&header), label(&authority)].into_iter().flatten().collect();
            let disagree = named.windows(2).any(|w| w[0] != w[1]);
            match res.status().as_u16() {
                200 => {
                    let routed = res.body().split('/').nth(2).unwrap_or_default().to_string();
                    prop_assert!(!disagree);
                    prop_assert!(named.iter().all(|n| *n == routed), "routed {} for {:?}", routed, named);
                }
                400 => prop_assert!(disagree || named.is_empty(), "400 for {:?}", named),
                404 => prop_assert!(!disagree && named.iter().all(|n| n == "gamma")),
                s => prop_assert!(false, "status {}", s),
            }
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn two_tenant_headers_are_400_not_the_first_one() {
    let f = fixture().await;
    f.router
        .preload([
            ("acme", StampId(1), Epoch(4), AssignmentMode::Serving),
            ("evil", StampId(2), Epoch(4), AssignmentMode::Serving),
        ])
        .unwrap();
    let svc = RouteLayer::new(f.router.clone(), TenantSource::header()).layer(echo());
    let req = Request::get("/orders")
        .header("x-tenant-id", "acme")
        .header("x-tenant-id", "evil")
        .body(String::new())
        .unwrap();
    let res = send(&svc, req).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::BAD_REQUEST, "invalid-tenant")
    );
}

/// A registry that never answers: with a resolve timeout, a miss is a 503, not a hung request.
#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn a_miss_on_a_hanging_registry_is_503_after_the_resolve_timeout() {
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    let inner = registry_with_stamps(&clock, 3).await;
    let registry = gated(inner, Arc::new(tokio::sync::Semaphore::new(0)));
    let router = Arc::new(Router::builder(registry.clone()).clock(clock.clone()).build().unwrap());
    let svc = RouteLayer::new(router, TenantSource::header())
        .resolve_timeout(Duration::from_secs(2))
        .unavailable_retry_after(Duration::from_secs(7))
        .layer(echo());
    let res = send(&svc, get("tenant-0")).await;
    assert_eq!(
        (res.status(), reason(&res), retry_after(&res)),
        (StatusCode::SERVICE_UNAVAILABLE, "registry-unavailable", Some("7"))
    );
    assert_eq!(registry.calls(Call::Assignment), 1);
}

#[tokio::test]
async fn unknown_tenant_is_404_and_cached() {
    let f = fixture().await;
    let svc = RouteLayer::new(f.router.clone(), TenantSource::header()).layer(echo());
    for _ in 0..2 {
        let res = send(&svc, get("nobody")).await;
        assert_eq!((res.status(), reason(&res)), (StatusCode::NOT_FOUND, "unknown-tenant"));
        assert_eq!(retry_after(&res), None);
    }
    assert_eq!(f.registry.calls(Call::Assignment), 1); // the second answer came from the negative cache
}

#[tokio::test]
async fn unhealthy_stamp_is_503_with_retry_after_for_its_tenants_only() {
    let f = fixture().await;
    f.router
        .preload([
            ("acme", StampId(1), Epoch(1), AssignmentMode::Serving),
            ("globex", StampId(2), Epoch(1), AssignmentMode::Serving),
        ])
        .unwrap();
    f.health
        .set(StampId(1), HealthStatus::Unhealthy, f.clock.now(), Some("down"));
    let svc = RouteLayer::new(f.router.clone(), TenantSource::header())
        .unavailable_retry_after(Duration::from_millis(1_500))
        .layer(echo());
    let res = send(&svc, get("acme")).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::SERVICE_UNAVAILABLE, "stamp-unavailable")
    );
    assert_eq!(retry_after(&res), Some("2"));
    assert_eq!(send(&svc, get("globex")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unreachable_registry_on_a_miss_is_503() {
    let f = fixture().await;
    f.registry.set_unavailable(true);
    let svc = RouteLayer::new(f.router.clone(), TenantSource::header()).layer(echo());
    let res = send(&svc, get("acme")).await;
    assert_eq!(
        (res.status(), reason(&res)),
        (StatusCode::SERVICE_UNAVAILABLE, "registry-unavailable")
    );
    assert_eq!(retry_after(&res), Some("5"));
}

#[tokio::test]
async fn a_freeze_refuses_writes_with_retry_after_until_it_expires_and_passes_reads() {
    let f = fixture().await;
    let until = f.clock.now() + Duration::from_millis(2_500);
    let frozen = AssignmentMode::Frozen {
        shadow: Some(StampId(2)),
        until,
    };
    f.router.preload([("acme", StampId(1), Epoch(9), frozen)]).unwrap();
    let svc = RouteLayer::new(f.router.clone(), TenantSource::header()).layer(echo());
    for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let res = send(&svc, with_method(m, "acme")).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::SERVICE_UNAVAILABLE, "tenant-frozen")
        );
        assert_eq!(retry_after(&res), Some("3"));
    }
    for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
        let res = send(&svc, with_method(m, "acme")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.body().starts_with("1/9/acme/frozen"), "{}", res.body());
    }
    // One millisecond before the deadline writes still wait (Retry-After rounds up to 1 s).
    f.clock.advance(Duration::from_millis(2_499));
    f.router.tick();
    let res = send(&svc, with_method(Method::POST, "acme")).await;
    assert_eq!(
        (res.status(), reason(&res), retry_after(&res)),
        (StatusCode::SERVICE_UNAVAILABLE, "tenant-frozen", Some("1"))
    );
    // From the deadline on the freeze is over whatever the worker that set it does: writes
    // pass (the host writes as in dual-write, `FenceToken::for_route` gives both tokens).
    f.clock.advance(Duration::from_millis(1));
    f.router.tick();
    for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let res = send(&svc, with_method(m, "acme")).await;
        assert_eq!(res.status(), StatusCode::OK, "{}", res.body());
    }
}

#[tokio::test]
async fn works_inside_axum_in_process() {
    use axum::extract::Extension;
    use axum::routing::{get as axum_get, post};

    let f = fixture().await;
    f.router
        .preload([("acme", StampId(2), Epoch(5), AssignmentMode::Serving)])
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/t/{tenant}/orders",
            axum_get(
                |Extension(r): Extension<ResolvedRoute>| async move { format!("{}@{}", r.tenant, r.route.stamp.0) },
            ),
        )
        .route("/t/{tenant}/pay", post(|| async { "paid" }))
        .layer(RouteLayer::new(
            f.router.clone(),
            TenantSource::PathPrefix { prefix: "/t/".into() },
        ));

    let res = app
        .clone()
        .oneshot(Request::get("/t/acme/orders").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"acme@2");

    let res = app
        .oneshot(
            Request::get("/t/nobody/orders")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-stamps-error"], "unknown-tenant");
}

#[tokio::test]
async fn works_with_axum_serve_on_a_loopback_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = fixture().await;
    f.router
        .preload([("acme", StampId(3), Epoch(2), AssignmentMode::Serving)])
        .unwrap();
    f.health
        .set(StampId(1), HealthStatus::Unhealthy, f.clock.now(), Some("down"));
    f.router
        .preload([("initech", StampId(1), Epoch(2), AssignmentMode::Serving)])
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(
                |axum::extract::Extension(r): axum::extract::Extension<ResolvedRoute>| async move {
                    format!("stamp={}", r.route.stamp.0)
                },
            ),
        )
        .layer(RouteLayer::new(f.router.clone(), TenantSource::header()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    async fn raw(addr: std::net::SocketAddr, tenant: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: {tenant}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.to_ascii_lowercase()
    }
    let ok = raw(addr, "acme").await;
    assert!(ok.starts_with("http/1.1 200"), "{ok}");
    assert!(ok.ends_with("stamp=3"), "{ok}");
    let down = raw(addr, "initech").await;
    assert!(down.starts_with("http/1.1 503"), "{down}");
    assert!(down.contains("x-stamps-error: stamp-unavailable"), "{down}");
    assert!(down.contains("retry-after: 5"), "{down}");
    server.abort();
}

/// Any header bytes: the layer answers 400 or routes; never a panic, never a 5xx, never the
/// inner service without a route. (One runtime and router for all cases: building a router
/// allocates its table up front.)
#[test]
fn arbitrary_tenant_headers_are_routed_or_400() {
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = Arc::new(
        Router::builder(InMemoryRegistry::new())
            .config(stamps::RouterConfig::default().max_entries(1_024))
            .build()
            .unwrap(),
    );
    router
        .preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])
        .unwrap();
    let svc = RouteLayer::new(router, TenantSource::header()).layer(echo());
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[ \t]{0,2}[a-zA-Z0-9._-]{0,12}[ \t]{0,2}".prop_map(String::into_bytes),
        Just(b" acme\t".to_vec()),
    ];
    let mut runner = TestRunner::new(Config::with_cases(5_000));
    runner
        .run(&strategy, |value| {
            let Ok(value) = http::HeaderValue::from_bytes(&value) else {
                return Ok(());
            };
            let mut req = Request::new(String::new());
            req.headers_mut().insert("x-tenant-id", value.clone());
            let res = rt.block_on(send(&svc, req));
            let trimmed = value.as_bytes().trim_ascii();
            match res.status().as_u16() {
                200 => prop_assert_eq!(trimmed, b"acme"),
                400 => prop_assert!(stamps::TenantId::from_bytes(trimmed).is_err()),
                404 => prop_assert!(stamps::TenantId::from_bytes(trimmed).is_ok()),
                s => prop_assert!(false, "status {}", s),
            }
            Ok(())
        })
        .unwrap();
}

#[cfg(feature = "token")]
mod tokens {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use stamps::integrations::token::{KeyId, RoutingTokens, TokenKeys};

    const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    fn tokens(clock: &FakeClock) -> RoutingTokens {
        RoutingTokens::new(TokenKeys::new(KeyId(1), KEY.to_vec()).unwrap(), clock.clone())
    }

    fn with_token(tenant: &str, method: Method, token: &str) -> Request<String> {
        Request::builder()
            .method(method)
            .uri("/orders")
            .header("x-tenant-id", tenant)
            .header("X-Stamps-Token", token)
            .body(String::new())
            .unwrap()
    }

    fn layer(f: &Fixture) -> RouteLayer<TestRegistry> {
        RouteLayer::new(f.router.clone(), TenantSource::header()).tokens(tokens(&f.clock), "x-stamps-token")
    }

    #[tokio::test]
    async fn a_current_token_routes_by_its_stamp_without_registry_io() {
        let f = fixture().await;
        f.router.set_endpoint(StampId(2), Some("http://s2"));
        let svc = layer(&f).layer(echo());
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(2), Epoch(11), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("acme", Method::POST, &t)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.body(), "2/11/acme/serving/http://s2");
        // A token newer than the router's entry wins too.
        f.router
            .preload([("acme", StampId(1), Epoch(3), AssignmentMode::Serving)])
            .unwrap();
        assert_eq!(
            send(&svc, with_token("acme", Method::GET, &t)).await.body(),
            "2/11/acme/serving/http://s2"
        );
        // The configured header name is matched case-insensitively.
        let upper = RouteLayer::new(f.router.clone(), TenantSource::header())
            .tokens(tokens(&f.clock), "X-Stamps-Token")
            .layer(echo());
        assert_eq!(
            send(&upper, with_token("acme", Method::GET, &t)).await.body(),
            "2/11/acme/serving/http://s2"
        );
        assert_eq!(f.registry.calls(Call::Assignment), 0);
    }

    #[tokio::test]
    async fn two_token_headers_are_400_not_the_first_one() {
        let f = fixture().await;
        let svc = layer(&f).layer(echo());
        let first = tokens(&f.clock)
            .issue(&tid("acme"), StampId(2), Epoch(11), Duration::from_secs(60))
            .unwrap();
        let second = tokens(&f.clock)
            .issue(&tid("acme"), StampId(3), Epoch(12), Duration::from_secs(60))
            .unwrap();
        let mut req = with_token("acme", Method::GET, &first);
        req.headers_mut().append("x-stamps-token", second.parse().unwrap());
        let res = send(&svc, req).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::BAD_REQUEST, "malformed-token")
        );
        assert_eq!(f.registry.calls(Call::Assignment), 0);
    }

    #[tokio::test]
    async fn a_token_older_than_the_routers_route_on_another_stamp_is_refused() {
        let f = fixture().await;
        // The tenant moved to stamp 3 at epoch 20; the client still holds an epoch-10 token for stamp 1.
        f.router
            .preload([("acme", StampId(3), Epoch(20), AssignmentMode::Serving)])
            .unwrap();
        let svc = layer(&f).layer(echo());
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(1), Epoch(10), Duration::from_secs(60))
            .unwrap();
        for method in [Method::GET, Method::POST] {
            let res = send(&svc, with_token("acme", method, &t)).await;
            assert_eq!((res.status(), reason(&res)), (StatusCode::UNAUTHORIZED, "stale-token"));
            assert!(res.body().is_empty());
        }
        // Without the token the router routes the request: the client can drop or refresh it.
        assert_eq!(
            send(&svc, get("acme")).await.body(),
            "3/20/acme/serving/https://s3.internal"
        );
        // An older token for the stamp the tenant is on: the router's route, at its epoch.
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(3), Epoch(10), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("acme", Method::GET, &t)).await;
        assert_eq!(res.body(), "3/20/acme/serving/https://s3.internal");
        // Same epoch: the router's route (with its mode) is used, so a freeze still holds writes.
        let until = f.clock.now() + Duration::from_secs(4);
        let frozen = AssignmentMode::Frozen { shadow: None, until };
        f.router.preload([("acme", StampId(3), Epoch(21), frozen)]).unwrap();
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(3), Epoch(21), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("acme", Method::POST, &t)).await;
        assert_eq!(
            (res.status(), reason(&res), retry_after(&res)),
            (StatusCode::SERVICE_UNAVAILABLE, "tenant-frozen", Some("4"))
        );
        assert_eq!(f.registry.calls(Call::Assignment), 0);
    }

    #[tokio::test]
    async fn a_token_never_revives_an_offboarded_tenant() {
        let f = fixture().await;
        let a = f
            .registry
            .inner()
            .assign(&TenantSpec::new(tid("acme")), StampId(2))
            .await
            .unwrap();
        f.router.sync().await.unwrap();
        let svc = layer(&f).layer(echo());
        // Issued while the tenant was on stamp 2, still valid for an hour.
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(2), a.epoch, Duration::from_secs(3_600))
            .unwrap();
        let served = format!("2/{}/acme/serving/https://s2.internal", a.epoch.0);
        assert_eq!(send(&svc, get("acme")).await.body(), &served);
        assert_eq!(send(&svc, with_token("acme", Method::GET, &t)).await.body(), &served);

        // Offboarded: unassigned, and the router has applied the change feed.
        f.registry.inner().unassign(&tid("acme"), a.epoch).await.unwrap();
        f.router.sync().await.unwrap();
        assert_eq!(f.router.route("acme"), Err(stamps::router::RouteError::UnknownTenant));
        let res = send(&svc, get("acme")).await;
        assert_eq!((res.status(), reason(&res)), (StatusCode::NOT_FOUND, "unknown-tenant"));
        for method in [Method::GET, Method::POST] {
            let res = send(&svc, with_token("acme", method, &t)).await;
            assert_eq!(
                (res.status(), reason(&res)),
                (StatusCode::NOT_FOUND, "unknown-tenant"),
                "a token must not route a tenant the router knows is unassigned"
            );
        }

        // A negative-cache entry (the registry said "no such tenant") refuses tokens too.
        let res = send(&svc, get("nobody")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let reads = f.registry.calls(Call::Assignment);
        let t = tokens(&f.clock)
            .issue(&tid("nobody"), StampId(1), Epoch(3), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("nobody", Method::GET, &t)).await;
        assert_eq!((res.status(), reason(&res)), (StatusCode::NOT_FOUND, "unknown-tenant"));
        assert_eq!(
            f.registry.calls(Call::Assignment),
            reads,
            "decided without registry I/O"
        );

        // What tokens are for: a router with no entry at all follows the token.
        let fresh = Arc::new(
            Router::builder(f.registry.clone())
                .clock(f.clock.clone())
                .build()
                .unwrap(),
        );
        let svc = RouteLayer::new(fresh, TenantSource::header())
            .tokens(tokens(&f.clock), "x-stamps-token")
            .layer(echo());
        let t = tokens(&f.clock)
            .issue(&tid("globex"), StampId(1), Epoch(8), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("globex", Method::GET, &t)).await;
        assert_eq!(
            (res.status(), res.body().as_str()),
            (StatusCode::OK, "1/8/globex/serving/-")
        );
    }

    #[tokio::test]
    async fn the_tenant_can_come_from_the_token_alone() {
        let f = fixture().await;
        f.router.set_endpoint(StampId(2), Some("http://s2"));
        let svc = RouteLayer::new(f.router.clone(), TenantSource::RoutingToken)
            .tokens(tokens(&f.clock), "x-stamps-token")
            .layer(echo());
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(2), Epoch(11), Duration::from_secs(60))
            .unwrap();
        let only_token = |token: &str| {
            Request::post("/orders")
                .header("x-stamps-token", token)
                .body(String::new())
                .unwrap()
        };
        let res = send(&svc, only_token(&t)).await;
        assert_eq!(
            (res.status(), res.body().as_str()),
            (StatusCode::OK, "2/11/acme/serving/http://s2")
        );
        // A tenant header is not the source here: the verified token decides the tenant.
        let mut req = only_token(&t);
        req.headers_mut().insert("x-tenant-id", "globex".parse().unwrap());
        assert_eq!(send(&svc, req).await.body(), "2/11/acme/serving/http://s2");
        assert_eq!(f.registry.calls(Call::Assignment), 0);

        // No token: no tenant. A bad token: refused as with any source.
        let res = send(&svc, get("acme")).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::BAD_REQUEST, "missing-tenant")
        );
        let res = send(&svc, only_token("not-a-token")).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::BAD_REQUEST, "malformed-token")
        );
        let foreign = RoutingTokens::new(TokenKeys::new(KeyId(9), vec![9; 32]).unwrap(), f.clock.clone())
            .issue(&tid("acme"), StampId(2), Epoch(11), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, only_token(&foreign)).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::UNAUTHORIZED, "unknown-token-key")
        );
        let mut req = only_token(&t);
        req.headers_mut().append("x-stamps-token", t.parse().unwrap());
        let res = send(&svc, req).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::BAD_REQUEST, "malformed-token")
        );

        // The router still outranks the token: newer elsewhere, then offboarded.
        f.router
            .preload([("acme", StampId(3), Epoch(12), AssignmentMode::Serving)])
            .unwrap();
        let res = send(&svc, only_token(&t)).await;
        assert_eq!((res.status(), reason(&res)), (StatusCode::UNAUTHORIZED, "stale-token"));
        let change = Change::new(
            Version(1_000),
            f.clock.now(),
            ChangeKind::Assignment {
                tenant: tid("acme"),
                assignment: None,
            },
        );
        f.router.apply(&change);
        let res = send(&svc, only_token(&t)).await;
        assert_eq!((res.status(), reason(&res)), (StatusCode::NOT_FOUND, "unknown-tenant"));
    }

    #[tokio::test]
    async fn a_token_source_without_keys_is_a_500_not_a_route() {
        let f = fixture().await;
        f.router
            .preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])
            .unwrap();
        let svc = RouteLayer::new(f.router.clone(), TenantSource::RoutingToken).layer(echo());
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(1), Epoch(1), Duration::from_secs(60))
            .unwrap();
        let mut req = get("acme");
        req.headers_mut().insert("x-stamps-token", t.parse().unwrap());
        let res = send(&svc, req).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::INTERNAL_SERVER_ERROR, "token-source-without-keys")
        );
    }

    #[tokio::test]
    async fn expired_tampered_unknown_key_and_malformed_tokens_are_refused() {
        let f = fixture().await;
        f.router
            .preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])
            .unwrap();
        let svc = layer(&f).layer(echo());
        let issuer = tokens(&f.clock);
        let good = issuer
            .issue(&tid("acme"), StampId(2), Epoch(5), Duration::from_secs(60))
            .unwrap();

        // Tampered: flip the stamp byte of the payload, keep the signature.
        let (p64, sig) = good.split_once('.').unwrap();
        let mut payload = URL_SAFE_NO_PAD.decode(p64).unwrap();
        payload[8] ^= 1; // low byte of the stamp id
        let tampered = format!("{}.{sig}", URL_SAFE_NO_PAD.encode(&payload));
        let res = send(&svc, with_token("acme", Method::GET, &tampered)).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::UNAUTHORIZED, "bad-token-signature")
        );

        // Unknown key: signed by a key this layer does not hold.
        let foreign = RoutingTokens::new(TokenKeys::new(KeyId(9), vec![9; 32]).unwrap(), f.clock.clone())
            .issue(&tid("acme"), StampId(2), Epoch(5), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("acme", Method::GET, &foreign)).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::UNAUTHORIZED, "unknown-token-key")
        );

        let res = send(&svc, with_token("acme", Method::GET, "not-a-token")).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::BAD_REQUEST, "malformed-token")
        );

        // Expired.
        f.clock.advance(Duration::from_secs(61));
        let res = send(&svc, with_token("acme", Method::GET, &good)).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::UNAUTHORIZED, "expired-token")
        );
        assert!(res.body().is_empty());
    }

    #[tokio::test]
    async fn a_token_for_another_tenant_is_400() {
        let f = fixture().await;
        f.router
            .preload([
                ("acme", StampId(1), Epoch(1), AssignmentMode::Serving),
                ("globex", StampId(2), Epoch(1), AssignmentMode::Serving),
            ])
            .unwrap();
        let svc = layer(&f).layer(echo());
        let t = tokens(&f.clock)
            .issue(&tid("globex"), StampId(2), Epoch(1), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("acme", Method::GET, &t)).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::BAD_REQUEST, "token-tenant-mismatch")
        );
    }

    #[tokio::test]
    async fn a_token_for_an_unhealthy_stamp_is_503() {
        let f = fixture().await;
        f.health
            .set(StampId(2), HealthStatus::Unhealthy, f.clock.now(), Some("down"));
        let svc = layer(&f).layer(echo());
        let t = tokens(&f.clock)
            .issue(&tid("acme"), StampId(2), Epoch(5), Duration::from_secs(60))
            .unwrap();
        let res = send(&svc, with_token("acme", Method::GET, &t)).await;
        assert_eq!(
            (res.status(), reason(&res)),
            (StatusCode::SERVICE_UNAVAILABLE, "stamp-unavailable")
        );
    }

    #[tokio::test]
    async fn without_the_header_the_router_decides() {
        let f = fixture().await;
        f.router
            .preload([("acme", StampId(3), Epoch(2), AssignmentMode::Serving)])
            .unwrap();
        let svc = layer(&f).layer(echo());
        assert_eq!(
            send(&svc, get("acme")).await.body(),
            "3/2/acme/serving/https://s3.internal"
        );
    }
}
