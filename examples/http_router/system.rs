//! The whole system: the router's shared state, the router server, and starting three stamps,
//! the registry, the health monitor and the router together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::routing::{get, post, put};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use stamps::admin::{Access, AdminApi, Caller, Denied};
use stamps::capacity::{SignalPolicy, TenantsPerDay};
use stamps::health::{HealthMonitor, Hysteresis};
use stamps::integrations::http_health::HttpHealthSource;
use stamps::integrations::FleetOverview;
use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{MigrationConfig, Migrator};
use stamps::placement::policies;
use stamps::registry::{place_and_assign, Observed};
use stamps::router::Router;
use stamps::*;

use super::admin::{admin_migration, admin_start_migration, admin_tenants, Job};
use super::proxy::{tenant_routes, Upstreams};
use super::stamp::{start_stamp, StampNode};
use super::wire::{http_client, HttpClient};
use super::write::proxy_put;

/// The registry every part uses: in memory, observed (each call timed and counted into the
/// metrics `/metrics` serves, and traced).
pub type FleetRegistry = Observed<InMemoryRegistry>;

/// The token an operator presents (`Authorization: Bearer ...`) to change anything through
/// the mounted admin API; reads are open on this loopback demo. `STAMPS_ADMIN_TOKEN` overrides it.
pub fn operator_token() -> String {
    std::env::var("STAMPS_ADMIN_TOKEN").unwrap_or_else(|_| "demo-operator-token".to_string())
}

/// Where the library's admin API and dashboard are mounted on the router.
pub const ADMIN_PREFIX: &str = "/ops";

/// The signal policy the dashboard and `/metrics` compute provisioning signals under: a new
/// stamp is due at 75 % of the soft limit, ten tenants a day arrive, a stamp takes a day.
pub fn signal_policy() -> SignalPolicy {
    SignalPolicy::new(0.75, TenantsPerDay(10.0), Duration::from_secs(86_400))
}

/// The process's Prometheus recorder (installed once; every system in the process shares it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness): then this one stays
        // empty, and `/metrics` serves only what it renders.
        let _ = metrics::set_global_recorder(recorder);
        stamps::telemetry::describe();
        handle
    })
}

/// Everything the router's handlers share.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) router: Arc<Router<FleetRegistry>>,
    pub(crate) registry: FleetRegistry,
    pub(crate) monitor: Arc<HealthMonitor<HttpHealthSource>>,
    pub(crate) migrator: Migrator,
    pub(crate) client: HttpClient,
    pub(crate) jobs: Mutex<BTreeMap<u64, Job>>,
    /// Writes acknowledged by two stamps (dual-write during a migration).
    pub(crate) dual_writes: AtomicU64,
    /// Writes a stamp refused by its fence, retried on a refreshed route.
    pub(crate) fence_refreshes: AtomicU64,
}

impl Upstreams for Arc<Gateway> {
    fn client(&self) -> &HttpClient {
        &self.client
    }
}

/// `GET /metrics`: the router's counters and the fleet's gauges, exported now, then everything
/// the recorder holds in the Prometheus text format.
async fn metrics_handler(axum::extract::State(gw): axum::extract::State<Arc<Gateway>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    gw.router.export_metrics();
    match FleetOverview::collect(&gw.registry, &signal_policy(), Some(gw.monitor.table())).await {
        Ok(view) => view.with_feed(gw.router.feed_lag()).export_metrics(),
        Err(e) => eprintln!("fleet metrics skipped: {e}"),
    }
    let handle = prometheus();
    handle.run_upkeep();
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

/// The library's admin API for this system: reads for anyone (a loopback demo), changes only
/// with the operator token, recorded under the name `operator`.
fn admin_api(gw: &Gateway) -> axum::Router {
    let token = format!("Bearer {}", operator_token());
    AdminApi::new(Arc::new(gw.registry.clone()))
        .router((*gw.router).clone())
        .migrator(Arc::new(gw.migrator.clone()))
        .health(gw.monitor.table().clone())
        .signal_policy(signal_policy())
        .title("stamps example fleet")
        .authorize(move |parts: &axum::http::request::Parts, access: Access| {
            let presented = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
            match (access, presented) {
                (_, Some(t)) if t == token => Ok(Caller::new("operator")),
                (_, Some(_)) => Err(Denied::Forbidden),
                (Access::Read, None) => Ok(Caller::new("viewer")),
                (_, None) => Err(Denied::Unauthenticated),
            }
        })
        .into_router()
}

/// Starts the router on an ephemeral loopback port.
pub async fn start_router(gw: Arc<Gateway>) -> std::io::Result<SocketAddr> {
    prometheus();
    let tenant_routes = tenant_routes(gw.router.clone(), put(proxy_put));
    let admin = axum::Router::new()
        .route("/admin/migrations", post(admin_start_migration))
        .route("/admin/migrations/{id}", get(admin_migration))
        .route("/admin/tenants", get(admin_tenants))
        .route("/metrics", get(metrics_handler));
    let ops = admin_api(&gw);
    let app = tenant_routes.merge(admin).with_state(gw).nest(ADMIN_PREFIX, ops);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("router stopped: {e}");
        }
    });
    Ok(addr)
}

/// A running system: three stamps, the registry, the router.
#[derive(Debug)]
pub struct System {
    /// The stamp servers' state, by id.
    pub nodes: BTreeMap<StampId, Arc<StampNode>>,
    /// The stamps' data: the library's reference data plane, which the stamp servers write and
    /// the migrator drives.
    pub plane: ReferenceDataPlane,
    /// Stamp endpoints (`http://127.0.0.1:port`), by id.
    pub endpoints: BTreeMap<StampId, String>,
    /// The router's address.
    pub router_addr: SocketAddr,
    /// The shared state.
    pub gateway: Arc<Gateway>,
    /// The tenants, in creation order.
    pub tenants: Vec<TenantId>,
    _health: stamps::health::HealthTask,
    _follower: stamps::router::Follower,
}

/// Starts three stamps, places `tenant_count` tenants on them (least loaded) and starts the
/// router with a change-feed follower and a health monitor probing every `probe_every`.
pub async fn start_system(tenant_count: usize, probe_every: Duration) -> Result<System, Box<dyn std::error::Error>> {
    let registry = Observed::new(InMemoryRegistry::new());
    let plane = ReferenceDataPlane::new((1..=3).map(StampId));
    let mut nodes = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for id in 1..=3 {
        let (addr, node) = start_stamp(StampId(id), plane.clone()).await?;
        let endpoint = format!("http://{addr}");
        let cap = Capacity::new([(Resource::Tenants, 1000.0)], 0.1)?;
        let spec =
            StampSpec::new(StampId(id), format!("stamp-{id}"), Region::new("local")?, cap)?.endpoint(endpoint.clone());
        registry.put_active_stamp(spec).await?;
        nodes.insert(StampId(id), node);
        endpoints.insert(StampId(id), endpoint);
    }
    let policy = policies::least_loaded();
    let mut tenants = Vec::new();
    for i in 0..tenant_count {
        let spec = TenantSpec::new(TenantId::new(&format!("tenant-{i:02}"))?);
        place_and_assign(&registry, &policy, &spec).await?;
        tenants.push(spec.id);
    }

    let client = http_client();
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

    let migrator = Migrator::new(Arc::new(registry.clone()), Arc::new(plane.clone())).config(
        MigrationConfig::default()
            .soak_window(Duration::from_millis(300))
            .soak_poll(Duration::from_millis(50))
            .backoff(Duration::from_millis(10), Duration::from_millis(100)),
    )?;
    let gateway = Arc::new(Gateway {
        router: Arc::new(router),
        registry,
        monitor,
        migrator,
        client,
        jobs: Mutex::new(BTreeMap::new()),
        dual_writes: AtomicU64::new(0),
        fence_refreshes: AtomicU64::new(0),
    });
    let router_addr = start_router(gateway.clone()).await?;
    Ok(System {
        nodes,
        plane,
        endpoints,
        router_addr,
        gateway,
        tenants,
        _health: health_task,
        _follower: follower,
    })
}

impl System {
    /// The stamp serving `tenant` now, from the registry.
    pub async fn home(&self, tenant: &TenantId) -> Result<Assignment, Error> {
        self.gateway.registry.require_assignment(tenant).await
    }

    /// The router's counters.
    pub fn router_stats(&self) -> stamps::router::RouterStats {
        self.gateway.router.stats()
    }
}
