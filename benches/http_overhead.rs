//! Routing overhead over HTTP on loopback: the same `GET` sent straight to a stamp server, through
//! a plain proxy that forwards to that stamp without routing (the same hyper client and
//! forwarding code: the cost of the extra hop alone), and through the tenant routes of
//! `examples/http_router/` (its Host middleware, tower `RouteLayer` on a warm router, so a
//! cache hit, then its read proxy), measured in one run. The bench starts the stamps and the
//! router as the example does, from the example's `wire`, `stamp` and `proxy` modules.
//!
//! * Latency: one keep-alive connection, one request at a time; the two paths alternate in
//!   blocks so drift (CPU frequency, other processes) hits both alike. Percentiles per path.
//! * Throughput: `--concurrency` closed-loop clients (one connection each), in six alternating
//!   windows per path.
//!
//! Run: `cargo bench --bench http_overhead --features tokio,tower,http-health`
//! (options after `--`: `--blocks N`, `--block-size N`, `--seconds S` of throughput per path,
//! `--concurrency N`).
//! A custom harness (`harness = false`): criterion's per-iteration timing of an async round
//! trip through two servers would measure the harness as much as the router, and percentiles
//! are what the figure needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::MethodRouter;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use stamps::health::{HealthMonitor, Hysteresis};
use stamps::integrations::http_health::HttpHealthSource;
use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::FenceToken;
use stamps::placement::policies;
use stamps::registry::place_and_assign;
use stamps::router::{Follower, Router};
use stamps::*;

#[path = "../examples/http_router/proxy.rs"]
pub mod proxy;
#[path = "../examples/http_router/stamp.rs"]
pub mod stamp;
#[path = "../examples/http_router/wire.rs"]
pub mod wire;

use proxy::{tenant_routes, Upstreams};
use wire::{http_client, relay, upstream, HttpClient, EPOCH_HEADER, TENANT_HEADER};

/// The routed path's state: what the example's read proxy needs.
struct Front {
    client: HttpClient,
}

impl Upstreams for Arc<Front> {
    fn client(&self) -> &HttpClient {
        &self.client
    }
}

/// The stamps and the router, started as the example starts them: three stamp servers over one
/// reference data plane, `tenant_count` tenants placed least-loaded, and the example's tenant
/// routes on a warm router with a change-feed follower and a health monitor probing every
/// `probe_every`.
struct Setup {
    registry: InMemoryRegistry,
    router: Arc<Router<InMemoryRegistry>>,
    plane: ReferenceDataPlane,
    endpoints: BTreeMap<StampId, String>,
    tenants: Vec<TenantId>,
    router_addr: SocketAddr,
    _health: stamps::health::HealthTask,
    _follower: Follower,
}

async fn start(tenant_count: usize, probe_every: Duration) -> Result<Setup, Box<dyn std::error::Error>> {
    let registry = InMemoryRegistry::new();
    let plane = ReferenceDataPlane::new((1..=3).map(StampId));
    let mut endpoints = BTreeMap::new();
    for id in 1..=3 {
        let (addr, _node) = stamp::start_stamp(StampId(id), plane.clone()).await?;
        let endpoint = format!("http://{addr}");
        let cap = Capacity::new([(Resource::Tenants, 1000.0)], 0.1)?;
        let spec =
            StampSpec::new(StampId(id), format!("stamp-{id}"), Region::new("local")?, cap)?.endpoint(endpoint.clone());
        registry.put_active_stamp(spec).await?;
        endpoints.insert(StampId(id), endpoint);
    }
    let policy = policies::least_loaded();
    let mut tenants = Vec::new();
    for i in 0..tenant_count {
        let spec = TenantSpec::new(TenantId::new(&format!("tenant-{i:02}"))?);
        place_and_assign(&registry, &policy, &spec).await?;
        tenants.push(spec.id);
    }
    let monitor = Arc::new(
        HealthMonitor::builder(HttpHealthSource::new().timeout(Duration::from_millis(500)))
            .hysteresis(Hysteresis::new(2, 2)?)
            .build(),
    );
    let router = Router::builder(registry.clone())
        .config(stamps::RouterConfig::default().ttl(Duration::from_secs(60)))
        .health(monitor.table().clone())
        .build()?;
    router.load_stamps().await?;
    router.warm_up().await?;
    let follower = router.spawn_follower();
    let health_task = monitor.clone().spawn(Arc::new(registry.clone()), probe_every);
    let router = Arc::new(router);

    let front = Arc::new(Front { client: http_client() });
    let app = tenant_routes(router.clone(), MethodRouter::new()).with_state(front);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let router_addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Setup {
        registry,
        router,
        plane,
        endpoints,
        tenants,
        router_addr,
        _health: health_task,
        _follower: follower,
    })
}

/// The plain proxy: forwards `GET /kv/{key}` to one fixed stamp and tenant, with no tenant
/// extraction and no route lookup.
#[derive(Clone)]
struct Plain {
    client: HttpClient,
    base: String,
    epoch: String,
}

async fn plain_get(State(p): State<Plain>, Path(key): Path<String>) -> Response {
    let uri = format!("{}/kv/{key}", p.base);
    match upstream(
        &p.client,
        hyper::Method::GET,
        uri,
        &[(EPOCH_HEADER, p.epoch.clone())],
        Bytes::new(),
    )
    .await
    {
        Ok((status, headers, body)) => relay(status, &headers, body),
        Err(e) => Response::new(axum::body::Body::from(e)),
    }
}

async fn start_plain(p: Plain) -> std::io::Result<std::net::SocketAddr> {
    let app = axum::Router::new()
        .route("/kv/{key}", axum::routing::get(plain_get))
        .with_state(p);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// One request to time: a URI and its headers.
#[derive(Clone)]
struct Target {
    uri: String,
    headers: Vec<(&'static str, String)>,
}

async fn send(client: &HttpClient, t: &Target) -> Result<usize, String> {
    let mut b = hyper::Request::get(t.uri.as_str());
    for (k, v) in &t.headers {
        b = b.header(*k, v.as_str());
    }
    let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != hyper::StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(body.len())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx.min(sorted.len() - 1)).copied().unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Closed-loop load for `secs`: requests completed and seconds elapsed.
async fn throughput(target: &Target, concurrency: usize, secs: f64) -> Result<(f64, f64), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (stop, done, target) = (stop.clone(), done.clone(), target.clone());
        // One client (so one connection) per task: each task is one closed-loop user.
        let client = http_client();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                send(&client, &target).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok((n as f64, elapsed))
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok())
        // Negative, NaN or infinite values would panic in `Duration::from_secs_f64`.
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(default)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let blocks = arg("--blocks", 20.0) as usize;
    let block_size = arg("--block-size", 1000.0) as usize;
    let secs = arg("--seconds", 3.0);
    let concurrency = arg("--concurrency", 8.0) as usize;

    let sys = start(12, Duration::from_secs(1)).await?;
    let tenant = sys.tenants.first().ok_or("no tenants")?.clone();
    let home = sys.registry.require_assignment(&tenant).await?;
    let endpoint = sys.endpoints.get(&home.stamp).ok_or("no endpoint")?.clone();
    let client = http_client();

    // One row to read, written on the tenant's stamp.
    let token = FenceToken::new(tenant.clone(), home.stamp, home.epoch);
    sys.plane
        .apply(&token, "bench", "0123456789abcdef0123456789abcdef", None)?;

    let direct = Target {
        uri: format!("{endpoint}/t/{tenant}/kv/bench"),
        headers: vec![(EPOCH_HEADER, home.epoch.0.to_string())],
    };
    let plain_addr = start_plain(Plain {
        client: http_client(),
        base: format!("{endpoint}/t/{tenant}"),
        epoch: home.epoch.0.to_string(),
    })
    .await?;
    let plain = Target {
        uri: format!("http://{plain_addr}/kv/bench"),
        headers: vec![],
    };
    let routed = Target {
        uri: format!("http://{}/kv/bench", sys.router_addr),
        headers: vec![(TENANT_HEADER, tenant.to_string())],
    };

    // Warm-up: connections, allocator, caches.
    for _ in 0..2_000 {
        for t in [&direct, &plain, &routed] {
            send(&client, t).await?;
        }
    }
    let misses_before = sys.router.stats().misses;

    let paths = [&direct, &plain, &routed];
    let mut lat: [Vec<Duration>; 3] = Default::default();
    for b in 0..blocks {
        for k in 0..paths.len() {
            let i = (b + k) % paths.len();
            let (Some(target), Some(out)) = (paths.get(i), lat.get_mut(i)) else {
                continue;
            };
            for _ in 0..block_size {
                let t0 = Instant::now();
                send(&client, target).await?;
                out.push(t0.elapsed());
            }
        }
    }
    for l in &mut lat {
        l.sort_unstable();
    }
    let misses_after = sys.router.stats().misses;

    // Throughput in alternating windows too, so a burst of outside load hits every path alike.
    let rounds = 6usize;
    let mut served = [0.0f64; 3];
    let mut busy = [0.0f64; 3];
    for r in 0..rounds {
        for k in 0..paths.len() {
            let i = (r + k) % paths.len();
            let Some(target) = paths.get(i) else { continue };
            let (n, elapsed) = throughput(target, concurrency, secs / rounds as f64).await?;
            if let (Some(a), Some(b)) = (served.get_mut(i), busy.get_mut(i)) {
                *a += n;
                *b += elapsed;
            }
        }
    }
    let tp = [served[0] / busy[0], served[1] / busy[1], served[2] / busy[2]];
    let [lat_direct, lat_plain, lat_routed] = lat;
    let [tp_direct, tp_plain, tp_routed] = tp;

    println!(
        "HTTP routing overhead, loopback, GET of a 32-byte value; {} sequential requests per path \
         (alternating blocks of {block_size}); router misses during timing: {}",
        lat_direct.len(),
        misses_after - misses_before
    );
    println!("| path | p50 µs | p90 µs | p99 µs | p99.9 µs | throughput ({concurrency} connections) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, lat, tp) in [
        ("straight to the stamp", &lat_direct, tp_direct),
        ("plain proxy, no routing (the hop alone)", &lat_plain, tp_plain),
        ("through the router (RouteLayer + proxy)", &lat_routed, tp_routed),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} req/s |",
            us(percentile(lat, 0.50)),
            us(percentile(lat, 0.90)),
            us(percentile(lat, 0.99)),
            us(percentile(lat, 0.999)),
            tp
        );
    }
    let added = |a: &[Duration], b: &[Duration], p: f64| us(percentile(a, p)) - us(percentile(b, p));
    println!(
        "router vs direct: p50 {:+.1} µs, p99 {:+.1} µs, throughput ratio {:.2}",
        added(&lat_routed, &lat_direct, 0.50),
        added(&lat_routed, &lat_direct, 0.99),
        tp_routed / tp_direct
    );
    println!(
        "router vs plain proxy (routing alone): p50 {:+.1} µs, p99 {:+.1} µs, throughput ratio {:.2}",
        added(&lat_routed, &lat_plain, 0.50),
        added(&lat_routed, &lat_plain, 0.99),
        tp_routed / tp_plain
    );
    Ok(())
}

fn main() {
    // `cargo bench --no-run` compiles only; `cargo test --benches` runs with `--test`: skip.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("http_overhead failed: {e}");
        std::process::exit(1);
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}
