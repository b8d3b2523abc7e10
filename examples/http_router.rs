//! A real HTTP stamp router: an axum front end that routes each request by tenant to one of
//! three in-process stamp servers, with health probing, fencing, live migrations and a
//! scatter-gather admin endpoint. Everything listens on loopback.
//!
//! ```text
//!   client ──HTTP──▶ router (axum)                  ──hyper──▶ stamp 1 (axum, own key-value data)
//!                    · tenant: x-tenant-id, or the   ──hyper──▶ stamp 2
//!                      Host subdomain copied into it ──hyper──▶ stamp 3
//!                    · RouteLayer (stamps::router::Router)  ▲
//!                    · HealthMonitor + HttpHealthSource ────┘ GET /healthz
//!                    · POST /admin/migrations (Migrator; the stamps' data plane is the driver)
//!                    · GET /admin/tenants (scatter-gather over healthy stamps)
//! ```
//!
//! * Each stamp keeps its own data: a per-tenant key-value store whose rows carry a version
//!   `(epoch, sequence)` and merge last-writer-wins by version, and a [`Fence`] under the same
//!   lock. Every write carries the epoch of the route it was sent by (`x-stamp-epoch`), and the
//!   stamp admits it through the fence before applying it, so a router with a stale route
//!   cannot write after a cutover: it gets 409, refreshes the route and retries.
//! * [`RouteLayer`] resolves each request's route (400 bad tenant, 404 unknown tenant, 503 with
//!   `Retry-After` for an unhealthy stamp or a write during a cutover freeze); the handlers
//!   proxy with hyper. In dual-write the router writes the serving stamp first, then the shadow
//!   (with the same row version), and acknowledges only when both applied.
//! * The stamps' data plane implements [`MigrationDriver`], so `POST /admin/migrations` runs the
//!   library's migration engine against the live stamps while traffic flows.
//!
//! Run it: `cargo run --example http_router --features tokio,tower,http-health` (prints URLs and
//! curl commands; Ctrl-C stops it), or add `-- --self-test`: it starts everything, sends
//! traffic, migrates a tenant under load through the admin endpoint, takes a stamp out through
//! its health endpoint, checks that only that stamp's tenants get 503 and that every
//! acknowledged write is readable, prints a summary and exits 0 only if every check held
//! (within an overall 45 s timeout).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Path, Request, State};
use axum::http::header::HOST;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::{json, Value};

use stamps::health::{HealthMonitor, Hysteresis};
use stamps::integrations::http_health::HttpHealthSource;
use stamps::integrations::scatter::{scatter_gather, ScatterOptions, StampOutcome};
use stamps::integrations::tower::{ResolvedRoute, RouteLayer, ERROR_HEADER};
use stamps::integrations::{tenant_from_host, TenantSource};
use stamps::migration::{
    DriverError, Fence, FenceToken, MigrationConfig, MigrationContext, MigrationDriver, Migrator, SideSummary,
    SnapshotInfo, StepOutcome, TableCheck, ValidationReport,
};
use stamps::placement::policies;
use stamps::registry::place_and_assign;
use stamps::router::{Route, RouteError, Router};
use stamps::*;

/// The base domain for tenant subdomains: `acme.stamps.localhost` is tenant `acme`.
pub const BASE_DOMAIN: &str = "stamps.localhost";
/// The header carrying the assignment epoch a write was routed by (the fence token).
pub const EPOCH_HEADER: &str = "x-stamp-epoch";
/// The header carrying a row version `epoch.seq` (shadow writes reuse the primary's version).
pub const VERSION_HEADER: &str = "x-row-version";
/// The header naming the stamp that served a request.
pub const SERVED_BY_HEADER: &str = "x-served-by";
/// The header naming the tenant (the host subdomain is copied into it when absent).
pub const TENANT_HEADER: &str = "x-tenant-id";
/// Largest accepted value.
const MAX_BODY: usize = 64 * 1024;
/// Longest wait for one upstream request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP client used for proxying, probing and the self-test.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1 client.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

// ---------------------------------------------------------------------------------------------
// The stamps: each an axum server over its own key-value store.
// ---------------------------------------------------------------------------------------------

/// A row version: the epoch of the route the write came by, then the serving stamp's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Version {
    epoch: u64,
    seq: u64,
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        let (e, s) = text.split_once('.')?;
        Some(Version {
            epoch: e.parse().ok()?,
            seq: s.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    value: Bytes,
    version: Version,
}

#[derive(Debug, Default)]
struct TenantRows {
    rows: BTreeMap<String, Row>,
    seq: u64,
}

impl TenantRows {
    /// Last-writer-wins by version.
    fn merge(&mut self, key: &str, row: Row) {
        match self.rows.get(key) {
            Some(existing) if existing.version >= row.version => {}
            _ => {
                self.rows.insert(key.to_string(), row);
            }
        }
    }

    fn summary(&self) -> SideSummary {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, r) in &self.rows {
            for b in k.bytes().chain([0]).chain(r.value.iter().copied()).chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        SideSummary::new(self.rows.len() as u64, h)
    }
}

/// One stamp's data: the fence and the rows under one lock, so admitting a write and applying it
/// is one critical section (and raising the fence is also the drain).
#[derive(Debug)]
struct Store {
    fence: Fence,
    tenants: HashMap<TenantId, TenantRows>,
}

/// One stamp server's state.
#[derive(Debug)]
pub struct StampNode {
    id: StampId,
    store: Mutex<Store>,
    healthy: AtomicBool,
}

impl StampNode {
    fn new(id: StampId) -> Self {
        StampNode {
            id,
            store: Mutex::new(Store {
                fence: Fence::new(id),
                tenants: HashMap::new(),
            }),
            healthy: AtomicBool::new(true),
        }
    }

    /// Makes `/healthz` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// The stamp's id.
    pub fn id(&self) -> StampId {
        self.id
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn served_by(node: &StampNode, mut r: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&node.id.0.to_string()) {
        r.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    r
}

async fn stamp_healthz(State(node): State<Arc<StampNode>>) -> Response {
    if node.healthy.load(Ordering::SeqCst) {
        text(StatusCode::OK, "ok")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining")
    }
}

async fn stamp_get(State(node): State<Arc<StampNode>>, Path((tenant, key)): Path<(String, String)>) -> Response {
    let Ok(tenant) = TenantId::new(&tenant) else {
        return text(StatusCode::BAD_REQUEST, "invalid tenant id");
    };
    let found = {
        let st = node.store.lock();
        st.tenants.get(&tenant).and_then(|t| t.rows.get(&key)).cloned()
    };
    let r = match found {
        Some(row) => {
            let mut r = (StatusCode::OK, row.value).into_response();
            if let Ok(v) = HeaderValue::from_str(&row.version.to_string()) {
                r.headers_mut().insert(VERSION_HEADER, v);
            }
            r
        }
        None => text(StatusCode::NOT_FOUND, "no such key"),
    };
    served_by(&node, r)
}

async fn stamp_put(
    State(node): State<Arc<StampNode>>,
    Path((tenant, key)): Path<(String, String)>,
    headers: HeaderMap,
    value: Bytes,
) -> Response {
    let Ok(tenant) = TenantId::new(&tenant) else {
        return text(StatusCode::BAD_REQUEST, "invalid tenant id");
    };
    let Some(epoch) = headers
        .get(EPOCH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("writes need a numeric {EPOCH_HEADER} header"),
        );
    };
    let given = match headers
        .get(VERSION_HEADER)
        .map(|v| v.to_str().ok().and_then(Version::parse))
    {
        None => None,
        Some(Some(v)) if v.epoch == epoch => Some(v),
        Some(_) => return text(StatusCode::BAD_REQUEST, format!("malformed {VERSION_HEADER} header")),
    };
    let token = FenceToken::new(tenant.clone(), node.id, Epoch(epoch));
    let version = {
        let mut st = node.store.lock();
        if let Err(rejection) = st.fence.admit(&token) {
            return served_by(&node, text(StatusCode::CONFLICT, rejection.to_string()));
        }
        let rows = st.tenants.entry(tenant).or_default();
        let version = given.unwrap_or_else(|| {
            rows.seq += 1;
            Version { epoch, seq: rows.seq }
        });
        rows.merge(&key, Row { value, version });
        version
    };
    let mut r = text(StatusCode::OK, "stored");
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        r.headers_mut().insert(VERSION_HEADER, v);
    }
    served_by(&node, r)
}

/// How many tenants (with at least one row) and rows the stamp holds: the scatter-gather target.
async fn stamp_tenants(State(node): State<Arc<StampNode>>) -> Json<Value> {
    let st = node.store.lock();
    let tenants = st.tenants.values().filter(|t| !t.rows.is_empty()).count();
    let rows: usize = st.tenants.values().map(|t| t.rows.len()).sum();
    Json(json!({ "stamp": node.id.0, "tenants": tenants, "rows": rows }))
}

/// Starts one stamp server on an ephemeral loopback port.
pub async fn start_stamp(id: StampId) -> std::io::Result<(SocketAddr, Arc<StampNode>)> {
    let node = Arc::new(StampNode::new(id));
    let app = axum::Router::new()
        .route("/healthz", get(stamp_healthz))
        .route("/t/{tenant}/kv/{key}", get(stamp_get).put(stamp_put))
        .route("/internal/tenants", get(stamp_tenants))
        .with_state(node.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("stamp {id} server stopped: {e}");
        }
    });
    Ok((addr, node))
}

// ---------------------------------------------------------------------------------------------
// The stamps' data plane as a MigrationDriver.
// ---------------------------------------------------------------------------------------------

/// The migration driver over the stamps' stores (in process here; over each stamp's admin API or
/// database in a real deployment).
#[derive(Debug)]
pub struct StampsDataPlane {
    nodes: BTreeMap<StampId, Arc<StampNode>>,
    snapshots: Mutex<HashMap<String, Vec<(String, Row)>>>,
    next_snapshot: AtomicU64,
}

impl StampsDataPlane {
    fn new(nodes: impl IntoIterator<Item = Arc<StampNode>>) -> Self {
        StampsDataPlane {
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            snapshots: Mutex::new(HashMap::new()),
            next_snapshot: AtomicU64::new(0),
        }
    }

    fn node(&self, stamp: StampId) -> Result<&Arc<StampNode>, DriverError> {
        self.nodes
            .get(&stamp)
            .ok_or_else(|| DriverError::permanent(format!("{stamp} is not part of this data plane")))
    }

    fn rows_of(&self, stamp: StampId, tenant: &TenantId) -> Result<Vec<(String, Row)>, DriverError> {
        let st = self.node(stamp)?.store.lock();
        Ok(st
            .tenants
            .get(tenant)
            .map(|t| t.rows.iter().map(|(k, r)| (k.clone(), r.clone())).collect())
            .unwrap_or_default())
    }

    fn merge_into(&self, stamp: StampId, tenant: &TenantId, rows: Vec<(String, Row)>) -> Result<(), DriverError> {
        let mut st = self.node(stamp)?.store.lock();
        let dest = st.tenants.entry(tenant.clone()).or_default();
        for (k, r) in rows {
            dest.merge(&k, r);
        }
        Ok(())
    }

    fn snapshot_rows(&self, id: &str) -> Result<Vec<(String, Row)>, DriverError> {
        self.snapshots
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| DriverError::permanent(format!("snapshot {id} does not exist")))
    }
}

#[async_trait]
impl MigrationDriver for StampsDataPlane {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        let rows = self.rows_of(ctx.source, &ctx.tenant)?;
        let n = self.next_snapshot.fetch_add(1, Ordering::SeqCst) + 1;
        let id = format!("{}/snapshot-{n}", ctx.id);
        let count = rows.len() as u64;
        self.snapshots.lock().insert(id.clone(), rows);
        Ok(SnapshotInfo::new(id, count))
    }

    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        let rows = self.snapshot_rows(&snapshot.id)?;
        self.merge_into(ctx.destination, &ctx.tenant, rows)
    }

    /// A delta: the source's rows newer than the snapshot's newest row.
    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        let high_water = self
            .snapshot_rows(&snapshot.id)?
            .iter()
            .map(|(_, r)| r.version)
            .max()
            .unwrap_or_default();
        let mut delta = self.rows_of(ctx.source, &ctx.tenant)?;
        delta.retain(|(_, r)| r.version > high_water);
        self.merge_into(ctx.destination, &ctx.tenant, delta)
    }

    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> Result<(), DriverError> {
        self.node(stamp)?.store.lock().fence.raise(&ctx.tenant, epoch, holds);
        Ok(())
    }

    /// Compares both sides with both stores locked (in stamp order, so two migrations in
    /// opposite directions cannot deadlock). A dual-write in flight (applied on the serving
    /// stamp, not yet on the shadow) shows as a mismatch: the admin runner re-validates.
    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        let (a, b) = (self.node(ctx.source)?, self.node(ctx.destination)?);
        let (first, second) = if a.id <= b.id { (a, b) } else { (b, a) };
        let g1 = first.store.lock();
        let g2 = (first.id != second.id).then(|| second.store.lock());
        let side = |id: StampId| {
            let st = if id == first.id {
                &*g1
            } else {
                g2.as_deref().unwrap_or(&*g1)
            };
            st.tenants.get(&ctx.tenant)
        };
        let empty = TenantRows::default();
        let s = side(ctx.source).unwrap_or(&empty);
        let d = side(ctx.destination).unwrap_or(&empty);
        let mut mismatches: Vec<String> = s
            .rows
            .iter()
            .filter(|(k, r)| d.rows.get(*k).map(|x| &x.value) != Some(&r.value))
            .map(|(k, _)| k.clone())
            .chain(d.rows.keys().filter(|k| !s.rows.contains_key(*k)).cloned())
            .collect();
        mismatches.sort();
        mismatches.truncate(5);
        Ok(ValidationReport::new(vec![TableCheck::new(
            "kv",
            s.summary(),
            d.summary(),
        )
        .with_mismatches(mismatches)]))
    }

    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError> {
        self.node(ctx.source)?.store.lock().tenants.remove(&ctx.tenant);
        Ok(())
    }

    async fn rollback(&self, ctx: &MigrationContext, _from: MigrationState) -> Result<(), DriverError> {
        self.node(ctx.destination)?.store.lock().tenants.remove(&ctx.tenant);
        let prefix = format!("{}/", ctx.id);
        self.snapshots.lock().retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The router: tenant resolution, proxying, admin endpoints.
// ---------------------------------------------------------------------------------------------

/// A migration started through the admin endpoint, as the runner last saw it.
#[derive(Debug, Clone)]
struct Job {
    tenant: TenantId,
    from: StampId,
    to: StampId,
    state: MigrationState,
    log: Vec<String>,
    done: bool,
}

/// Everything the router's handlers share.
#[derive(Debug)]
pub struct Gateway {
    router: Arc<Router<InMemoryRegistry>>,
    registry: InMemoryRegistry,
    monitor: Arc<HealthMonitor<HttpHealthSource>>,
    migrator: Migrator,
    client: HttpClient,
    jobs: Mutex<BTreeMap<u64, Job>>,
    /// Writes acknowledged by two stamps (dual-write during a migration).
    dual_writes: AtomicU64,
    /// Writes a stamp refused by its fence, retried on a refreshed route.
    fence_refreshes: AtomicU64,
}

fn unavailable(reason: &'static str, retry_after: Duration, body: impl Into<String>) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, body);
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static(reason));
    r
}

fn route_error(e: RouteError) -> Response {
    match e {
        RouteError::InvalidTenant(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        RouteError::UnknownTenant => text(StatusCode::NOT_FOUND, e.to_string()),
        RouteError::StampUnavailable { .. } => unavailable("stamp-unavailable", Duration::from_secs(5), e.to_string()),
        _ => unavailable("registry-unavailable", Duration::from_secs(1), e.to_string()),
    }
}

/// The `RouteLayer` reads the tenant from one source (`x-tenant-id` here). To accept the Host
/// subdomain too, this middleware runs in front of it: a request without the header gets it from
/// its Host (`acme.stamps.localhost` → `acme`); a Host that is not a tenant subdomain is 400.
async fn tenant_from_host_header(mut req: Request, next: Next) -> Response {
    if req.headers().contains_key(TENANT_HEADER) {
        return next.run(req).await;
    }
    let host = req.headers().get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    match tenant_from_host(host, BASE_DOMAIN) {
        Ok(tenant) => {
            if let Ok(v) = HeaderValue::from_str(tenant.as_str()) {
                req.headers_mut().insert(TENANT_HEADER, v);
            }
            next.run(req).await
        }
        Err(e) => {
            let mut r = text(StatusCode::BAD_REQUEST, e.to_string());
            r.headers_mut()
                .insert(ERROR_HEADER, HeaderValue::from_static("invalid-tenant"));
            r
        }
    }
}

/// Sends one request to a stamp and returns its status, headers and body.
pub async fn upstream(
    client: &HttpClient,
    method: Method,
    uri: String,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let mut b = hyper::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(UPSTREAM_TIMEOUT, client.request(req))
        .await
        .map_err(|_| "stamp timed out".to_string())?
        .map_err(|e| format!("stamp unreachable: {e}"))?;
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(UPSTREAM_TIMEOUT, body.collect())
        .await
        .map_err(|_| "stamp body timed out".to_string())?
        .map_err(|e| format!("stamp body failed: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// The stamp's answer as the router's response (status, body, stamp headers).
pub fn relay(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut r = (status, body).into_response();
    for name in [SERVED_BY_HEADER, VERSION_HEADER] {
        if let Some(v) = headers.get(name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// The stamp URL of a key. The key arrives percent-decoded (axum's `Path`), so it is encoded
/// again as one path segment: a key holding `/`, `?`, `#` or `%` must not become other path
/// segments or a query at the stamp (`a%3Fb` stored as `a`, `..%2F..%2Fother%2Fkv%2Fx` read
/// from another tenant behind a path-normalizing proxy).
fn kv_uri(endpoint: &str, tenant: &TenantId, key: &str) -> String {
    let mut uri = format!("{endpoint}/t/{tenant}/kv/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// Refuses the dot segments `.` and `..` as keys: a stamp or proxy that normalizes the path
/// would resolve them out of the tenant's prefix.
fn key_rejected(key: &str) -> Option<Response> {
    matches!(key, "." | "..").then(|| text(StatusCode::BAD_REQUEST, "key must not be `.` or `..`"))
}

/// `GET /kv/{key}`: read from the serving stamp.
async fn proxy_get(State(gw): State<Arc<Gateway>>, Path(key): Path<String>, req: Request) -> Response {
    if let Some(r) = key_rejected(&key) {
        return r;
    }
    let Some(ResolvedRoute { tenant, route }) = req.extensions().get::<ResolvedRoute>().cloned() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "route missing");
    };
    let Some(endpoint) = route.endpoint else {
        return unavailable(
            "stamp-endpoint-unknown",
            Duration::from_secs(1),
            "stamp endpoint unknown",
        );
    };
    let epoch = [(EPOCH_HEADER, route.epoch.0.to_string())];
    match upstream(
        &gw.client,
        Method::GET,
        kv_uri(endpoint, &tenant, &key),
        &epoch,
        Bytes::new(),
    )
    .await
    {
        Ok((status, headers, body)) => relay(status, &headers, body),
        Err(e) => text(StatusCode::BAD_GATEWAY, e),
    }
}

/// `PUT /kv/{key}`: write to the serving stamp, then (dual-write) to the shadow with the same
/// row version; acknowledge only when every stamp of the route applied it. A fence rejection
/// means the route is stale: refresh it and retry (bounded).
async fn proxy_put(State(gw): State<Arc<Gateway>>, Path(key): Path<String>, req: Request) -> Response {
    if let Some(r) = key_rejected(&key) {
        return r;
    }
    let Some(ResolvedRoute { tenant, mut route }) = req.extensions().get::<ResolvedRoute>().cloned() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "route missing");
    };
    let value = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
    };
    for _attempt in 0..4 {
        match write_once(&gw, &tenant, &route, &key, &value).await {
            WriteResult::Done(r) => return r,
            WriteResult::Fenced => {
                gw.fence_refreshes.fetch_add(1, Ordering::Relaxed);
                // The stamp knows a newer epoch than our route: refresh and retry.
                let _ = gw.router.invalidate(tenant.as_str());
                route = match gw.router.resolve(tenant.as_str()).await {
                    Ok(r) => r,
                    Err(e) => return route_error(e),
                };
                if let Some(wait) = route.retry_after(SystemClock.now()) {
                    return unavailable("tenant-frozen", wait, "tenant is frozen for a cutover; retry");
                }
            }
        }
    }
    unavailable("fenced", Duration::from_secs(1), "the route kept changing; retry")
}

enum WriteResult {
    Done(Response),
    Fenced,
}

async fn write_once(gw: &Gateway, tenant: &TenantId, route: &Route, key: &str, value: &Bytes) -> WriteResult {
    let Some(endpoint) = route.endpoint else {
        return WriteResult::Done(unavailable(
            "stamp-endpoint-unknown",
            Duration::from_secs(1),
            "stamp endpoint unknown",
        ));
    };
    let epoch = route.epoch.0.to_string();
    let primary = upstream(
        &gw.client,
        Method::PUT,
        kv_uri(endpoint, tenant, key),
        &[(EPOCH_HEADER, epoch.clone())],
        value.clone(),
    )
    .await;
    let (status, headers, body) = match primary {
        Ok(x) => x,
        Err(e) => return WriteResult::Done(text(StatusCode::BAD_GATEWAY, e)),
    };
    if status == StatusCode::CONFLICT {
        return WriteResult::Fenced;
    }
    if status != StatusCode::OK {
        return WriteResult::Done(relay(status, &headers, body));
    }
    let Some(shadow) = route
        .mode
        .shadow()
        .filter(|_| matches!(route.mode, AssignmentMode::DualWrite { .. }))
    else {
        return WriteResult::Done(relay(status, &headers, body));
    };
    let Some(shadow_endpoint) = route.shadow_endpoint else {
        return WriteResult::Done(unavailable(
            "registry",
            Duration::from_secs(1),
            format!("endpoint of shadow {shadow} unknown"),
        ));
    };
    let version = headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let second = upstream(
        &gw.client,
        Method::PUT,
        kv_uri(shadow_endpoint, tenant, key),
        &[(EPOCH_HEADER, epoch), (VERSION_HEADER, version)],
        value.clone(),
    )
    .await;
    match second {
        Ok((StatusCode::OK, _, _)) => {
            gw.dual_writes.fetch_add(1, Ordering::Relaxed);
            WriteResult::Done(relay(status, &headers, body))
        }
        Ok((StatusCode::CONFLICT, _, _)) => WriteResult::Fenced,
        Ok((s, h, b)) => WriteResult::Done(relay(s, &h, b)),
        Err(e) => WriteResult::Done(text(StatusCode::BAD_GATEWAY, e)),
    }
}

/// `POST /admin/migrations` with `{"tenant": "acme", "to": 2}`: plans and starts a migration
/// (a person starts it: the record says "admin-api"), and drives it in the background.
async fn admin_start_migration(State(gw): State<Arc<Gateway>>, Json(body): Json<Value>) -> Response {
    let (Some(tenant), Some(to)) = (body["tenant"].as_str(), body["to"].as_u64()) else {
        return text(
            StatusCode::BAD_REQUEST,
            r#"expected {"tenant": "...", "to": <stamp number>}"#,
        );
    };
    let Ok(to) = u32::try_from(to).map(StampId) else {
        return text(StatusCode::BAD_REQUEST, "stamp number out of range");
    };
    let tenant = match TenantId::new(tenant) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let plan = match gw.migrator.plan(&tenant, to).await {
        Ok(p) if p.is_feasible() => p,
        Ok(p) => return text(StatusCode::CONFLICT, p.to_string()),
        Err(e) => return text(StatusCode::CONFLICT, e.to_string()),
    };
    let migration = match gw.migrator.start(&plan, "admin-api").await {
        Ok(m) => m,
        Err(e) => return text(StatusCode::CONFLICT, e.to_string()),
    };
    let id = migration.id();
    let from = migration.record().source;
    gw.jobs.lock().insert(
        id.0,
        Job {
            tenant: tenant.clone(),
            from,
            to,
            state: migration.state(),
            log: Vec::new(),
            done: false,
        },
    );
    tokio::spawn(drive_migration(gw.clone(), migration));
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id.0, "tenant": tenant.as_str(), "from": from.0, "to": to.0 })),
    )
        .into_response()
}

/// Steps a migration to its end. A validation that saw a dual-write in flight blocks; it is
/// re-validated a bounded number of times before the migration is left for a person.
async fn drive_migration(gw: Arc<Gateway>, mut m: Migration) {
    let mut blocked = 0u32;
    let note = |gw: &Gateway, m: &Migration, line: String, done: bool| {
        if let Some(job) = gw.jobs.lock().get_mut(&m.id().0) {
            job.state = m.state();
            job.log.push(line);
            job.done = done;
        }
    };
    loop {
        let outcome = tokio::time::timeout(Duration::from_secs(10), m.step()).await;
        match outcome {
            Ok(Ok(StepOutcome::Advanced { from, to })) => {
                note(&gw, &m, format!("{from} -> {to}"), to.is_terminal());
                if to.is_terminal() {
                    return;
                }
            }
            Ok(Ok(StepOutcome::Waiting { until, .. })) => {
                let left = until.saturating_since(SystemClock.now());
                tokio::time::sleep(left.min(Duration::from_millis(50))).await;
            }
            Ok(Ok(StepOutcome::Blocked { reason, .. } | StepOutcome::Refused { reason })) if blocked < 50 => {
                blocked += 1;
                note(&gw, &m, format!("re-validating ({reason})"), false);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Ok(StepOutcome::Retry { reason, .. })) => {
                note(&gw, &m, format!("retrying: {reason}"), false);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Ok(StepOutcome::Finished { state })) => {
                note(&gw, &m, format!("finished {state}"), true);
                return;
            }
            Ok(Ok(other)) => {
                note(&gw, &m, format!("needs a person: {other:?}"), true);
                return;
            }
            Ok(Err(e)) => {
                note(&gw, &m, format!("error: {e}"), true);
                return;
            }
            Err(_) => {
                note(&gw, &m, "step timed out".to_string(), true);
                return;
            }
        }
    }
}

/// `GET /admin/migrations/{id}`.
async fn admin_migration(State(gw): State<Arc<Gateway>>, Path(id): Path<u64>) -> Response {
    match gw.jobs.lock().get(&id) {
        Some(job) => Json(json!({
            "id": id,
            "tenant": job.tenant.as_str(),
            "from": job.from.0,
            "to": job.to.0,
            "state": job.state.to_string(),
            "done": job.done,
            "log": job.log,
        }))
        .into_response(),
        None => text(StatusCode::NOT_FOUND, "no such migration"),
    }
}

/// `GET /admin/tenants`: tenant counts per stamp, gathered from every healthy stamp in parallel
/// (bounded), with failures and skipped stamps reported, never hidden.
async fn admin_tenants(State(gw): State<Arc<Gateway>>) -> Response {
    let fleet = match gw.registry.fleet().await {
        Ok(f) => f,
        Err(e) => return unavailable("registry-unavailable", Duration::from_secs(1), e.to_string()),
    };
    let stamps: Vec<Stamp> = fleet.stamps.into_iter().map(|l| l.stamp).collect();
    let options = ScatterOptions::default()
        .concurrency(4)
        .per_stamp_timeout(Duration::from_secs(1));
    let client = &gw.client;
    let report = scatter_gather(&stamps, gw.monitor.table(), options, |stamp| async move {
        let endpoint = stamp.spec.endpoint.clone().ok_or("no endpoint")?;
        let (status, _, body) = upstream(
            client,
            Method::GET,
            format!("{endpoint}/internal/tenants"),
            &[],
            Bytes::new(),
        )
        .await
        .map_err(|_| "unreachable")?;
        if status != StatusCode::OK {
            return Err("bad status");
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| "bad body")?;
        v["tenants"].as_u64().ok_or("bad body")
    })
    .await;
    let complete = report.is_complete();
    let per_stamp: Vec<Value> = report
        .outcomes
        .iter()
        .map(|(id, o)| match o {
            StampOutcome::Ok(n) => json!({ "stamp": id.0, "tenants": n }),
            StampOutcome::Failed(e) => json!({ "stamp": id.0, "error": e }),
            StampOutcome::TimedOut => json!({ "stamp": id.0, "error": "timed out" }),
            StampOutcome::Skipped(why) => json!({ "stamp": id.0, "skipped": format!("{why:?}") }),
            _ => json!({ "stamp": id.0, "error": "unknown outcome" }),
        })
        .collect();
    Json(json!({ "complete": complete, "stamps": per_stamp })).into_response()
}

/// Starts the router on an ephemeral loopback port.
pub async fn start_router(gw: Arc<Gateway>) -> std::io::Result<SocketAddr> {
    let route_layer = RouteLayer::new(gw.router.clone(), TenantSource::header());
    let tenant_routes = axum::Router::new()
        .route("/kv/{key}", get(proxy_get).put(proxy_put))
        .route_layer(route_layer)
        .route_layer(axum::middleware::from_fn(tenant_from_host_header));
    let admin = axum::Router::new()
        .route("/admin/migrations", post(admin_start_migration))
        .route("/admin/migrations/{id}", get(admin_migration))
        .route("/admin/tenants", get(admin_tenants));
    let app = tenant_routes.merge(admin).with_state(gw);
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
    /// Stamp endpoints (`http://127.0.0.1:port`), by id.
    pub endpoints: BTreeMap<StampId, String>,
    /// The router's address.
    pub router_addr: SocketAddr,
    /// The shared state.
    pub gateway: Arc<Gateway>,
    /// The tenants, in creation order.
    pub tenants: Vec<TenantId>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
    _follower: stamps::router::Follower,
}

/// Starts three stamps, places `tenant_count` tenants on them (least loaded) and starts the
/// router with a change-feed follower and a health monitor probing every `probe_every`.
pub async fn start_system(tenant_count: usize, probe_every: Duration) -> Result<System, Box<dyn std::error::Error>> {
    let registry = InMemoryRegistry::new();
    let mut nodes = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for id in 1..=3 {
        let (addr, node) = start_stamp(StampId(id)).await?;
        let endpoint = format!("http://{addr}");
        let cap = Capacity::new([(Resource::Tenants, 1000.0)], 0.1)?;
        let spec = StampSpec::new(StampId(id), format!("stamp-{id}"), Region::new("local")?, cap)?
            .with_endpoint(endpoint.clone());
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
        .ttl(Duration::from_secs(60))
        .health(monitor.table().clone())
        .build()?;
    router.load_stamps().await?;
    router.warm_up().await?;
    let follower = router.spawn_follower();
    let health_task = monitor.clone().spawn(Arc::new(registry.clone()), probe_every);

    let plane = Arc::new(StampsDataPlane::new(nodes.values().cloned()));
    let migrator = Migrator::new(Arc::new(registry.clone()), plane).with_config(
        MigrationConfig::default()
            .with_soak_window(Duration::from_millis(300))
            .with_soak_poll(Duration::from_millis(50))
            .with_backoff(Duration::from_millis(10), Duration::from_millis(100)),
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
        endpoints,
        router_addr,
        gateway,
        tenants,
        _tasks: vec![health_task],
        _follower: follower,
    })
}

impl Drop for System {
    fn drop(&mut self) {
        for t in &self._tasks {
            t.abort();
        }
    }
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

// ---------------------------------------------------------------------------------------------
// The self-test.
// ---------------------------------------------------------------------------------------------

/// A client of the router, for the self-test.
#[derive(Debug, Clone)]
struct TestClient {
    client: HttpClient,
    base: String,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl TestClient {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Reply, String> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| "request timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .map_err(|_| "body timed out".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn get(&self, tenant: &str, key: &str) -> Result<Reply, String> {
        self.send(
            Method::GET,
            &format!("/kv/{key}"),
            &[(TENANT_HEADER, tenant)],
            Bytes::new(),
        )
        .await
    }

    async fn put(&self, tenant: &str, key: &str, value: &str) -> Result<Reply, String> {
        self.send(
            Method::PUT,
            &format!("/kv/{key}"),
            &[(TENANT_HEADER, tenant)],
            Bytes::copy_from_slice(value.as_bytes()),
        )
        .await
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), String> {
        let (headers, bytes): (&[(&str, &str)], Bytes) = match body {
            Some(v) => (&[("content-type", "application/json")], Bytes::from(v.to_string())),
            None => (&[], Bytes::new()),
        };
        let r = self.send(method, path, headers, bytes).await?;
        let v =
            serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into()));
        Ok((r.status, v))
    }
}

/// The checks' results.
#[derive(Debug, Default)]
struct Checks {
    results: Vec<(String, bool, String)>,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!("[{}] {name}: {detail}", if ok { "PASS" } else { "FAIL" });
        self.results.push((name.to_string(), ok, detail));
    }

    fn all_passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|(_, ok, _)| *ok)
    }
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct LoadReport {
    acked: Vec<(String, String, String)>,
    requests: u64,
    frozen_retries: u64,
    other_retries: u64,
    unacked: u64,
    errors: Vec<String>,
}

/// One load worker: writes unique keys, every other one to `hot` (the tenant being migrated),
/// retrying 503s (bounded), until `stop` or `max_writes`.
async fn load_worker(
    client: TestClient,
    worker: usize,
    tenants: Vec<TenantId>,
    hot: TenantId,
    stop: Arc<AtomicBool>,
    max_writes: usize,
) -> LoadReport {
    let mut report = LoadReport::default();
    for i in 0..max_writes {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let tenant = if i % 2 == 0 {
            hot.clone()
        } else {
            match tenants.get((worker + i) % tenants.len().max(1)) {
                Some(t) => t.clone(),
                None => hot.clone(),
            }
        };
        let key = format!("w{worker}-{i:05}");
        let value = format!("{tenant}/{key}/v");
        let mut acked = false;
        for _ in 0..200 {
            report.requests += 1;
            match client.put(tenant.as_str(), &key, &value).await {
                Ok(r) if r.status == StatusCode::OK => {
                    acked = true;
                    break;
                }
                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                    let reason = r.headers.get(ERROR_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                    if reason == "tenant-frozen" {
                        report.frozen_retries += 1;
                    } else {
                        report.other_retries += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(r) => {
                    report.errors.push(format!(
                        "{tenant} {key}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                    break;
                }
                Err(e) => {
                    report.errors.push(format!("{tenant} {key}: {e}"));
                    break;
                }
            }
        }
        if acked {
            report.acked.push((tenant.to_string(), key, value));
        } else {
            report.unacked += 1;
        }
    }
    report
}

async fn wait_for<F, Fut>(deadline: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn self_test() -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let sys = start_system(12, Duration::from_millis(50)).await?;
    let client = TestClient {
        client: http_client(),
        base: format!("http://{}", sys.router_addr),
    };
    let mut checks = Checks::default();
    println!(
        "router at http://{}, stamps at {}",
        sys.router_addr,
        sys.endpoints.values().cloned().collect::<Vec<_>>().join(", ")
    );

    // 1. Routing basics: Host subdomain and header, 404 for unknown tenants, 400 for bad ones.
    let first = sys.tenants.first().ok_or("no tenants")?.clone();
    let home = sys.home(&first).await?.stamp;
    let host = format!("{first}.{BASE_DOMAIN}");
    let put = client
        .send(
            Method::PUT,
            "/kv/hello",
            &[("host", host.as_str())],
            Bytes::from_static(b"world"),
        )
        .await?;
    let got = client.get(first.as_str(), "hello").await?;
    let served = got
        .headers
        .get(SERVED_BY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    checks.check(
        "routes by Host subdomain and by x-tenant-id",
        put.status == StatusCode::OK
            && got.status == StatusCode::OK
            && got.body == "world"
            && served == home.0.to_string(),
        format!(
            "PUT via {host}: {}, GET via header: {} {:?} from stamp {served} (home {home})",
            put.status, got.status, got.body
        ),
    );
    let unknown = client.get("nobody-here", "k").await?;
    let bad = client.get("Not A Tenant!", "k").await?;
    let foreign = client
        .send(Method::GET, "/kv/k", &[("host", "acme.evil.example")], Bytes::new())
        .await?;
    checks.check(
        "unknown tenant 404, malformed tenant 400",
        unknown.status == StatusCode::NOT_FOUND
            && bad.status == StatusCode::BAD_REQUEST
            && foreign.status == StatusCode::BAD_REQUEST,
        format!(
            "unknown: {}, bad id: {}, foreign host: {}",
            unknown.status, bad.status, foreign.status
        ),
    );

    // Keys are one path segment at the stamp too: an encoded `?` or `/` in a key does not
    // become a query or other segments upstream, and dot segments are refused.
    let odd = client.put(first.as_str(), "q%3Fx", "odd").await?;
    let odd_back = client.get(first.as_str(), "q%3Fx").await?;
    let truncated = client.get(first.as_str(), "q").await?;
    let slashed = client.put(first.as_str(), "a%2Fb", "slashed").await?;
    let slashed_back = client.get(first.as_str(), "a%2Fb").await?;
    let dots = client.get(first.as_str(), "%2E%2E").await?;
    checks.check(
        "keys with encoded ?, / and dot segments stay inside the tenant's key",
        odd.status == StatusCode::OK
            && odd_back.status == StatusCode::OK
            && odd_back.body == "odd"
            && truncated.body != "odd"
            && slashed.status == StatusCode::OK
            && slashed_back.body == "slashed"
            && dots.status == StatusCode::BAD_REQUEST,
        format!(
            "PUT q?x: {}, GET q?x: {} {:?}, GET q: {} {:?}, PUT a/b: {}, GET a/b: {:?}, GET ..: {}",
            odd.status,
            odd_back.status,
            odd_back.body,
            truncated.status,
            truncated.body,
            slashed.status,
            slashed_back.body,
            dots.status
        ),
    );

    // 2. Traffic, and a migration of a tenant under load through the admin endpoint.
    let hot = sys
        .tenants
        .iter()
        .find(|t| **t != first)
        .ok_or("need two tenants")?
        .clone();
    let before = sys.home(&hot).await?;
    let dest = StampId(before.stamp.0 % 3 + 1);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(load_worker(
                client.clone(),
                w,
                sys.tenants.clone(),
                hot.clone(),
                stop.clone(),
                3_000,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, started_m) = client
        .json(
            Method::POST,
            "/admin/migrations",
            Some(json!({ "tenant": hot.as_str(), "to": dest.0 })),
        )
        .await?;
    let id = started_m["id"].as_u64().unwrap_or(0);
    let mut last = Value::Null;
    let mut finished = false;
    let polling = Instant::now();
    while polling.elapsed() < Duration::from_secs(15) {
        if let Ok((_, v)) = client.json(Method::GET, &format!("/admin/migrations/{id}"), None).await {
            finished = v["done"].as_bool().unwrap_or(false);
            last = v;
            if finished {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // traffic after the migration too
    stop.store(true, Ordering::SeqCst);
    let mut load = LoadReport::default();
    for w in workers {
        let r = w.await?;
        load.acked.extend(r.acked);
        load.requests += r.requests;
        load.frozen_retries += r.frozen_retries;
        load.other_retries += r.other_retries;
        load.unacked += r.unacked;
        load.errors.extend(r.errors);
    }
    let after = sys.home(&hot).await?;
    let log: Vec<String> = last["log"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    println!("migration {id} of {hot}: {}", log.join("; "));
    checks.check(
        "migration under load completes through the admin endpoint",
        status == StatusCode::ACCEPTED
            && finished
            && last["state"] == "completed"
            && after.stamp == dest
            && after.mode == AssignmentMode::Serving,
        format!(
            "{hot}: {} -> {} ({}), state {}, now on {} ({})",
            before.stamp, dest, status, last["state"], after.stamp, after.mode
        ),
    );
    let hot_acked = load.acked.iter().filter(|(t, _, _)| t == hot.as_str()).count();
    let dual = sys.gateway.dual_writes.load(Ordering::Relaxed);
    let refreshed = sys.gateway.fence_refreshes.load(Ordering::Relaxed);
    checks.check(
        "traffic flowed during the migration (dual-writes acknowledged by both stamps); every write was eventually acknowledged",
        load.errors.is_empty() && load.unacked == 0 && hot_acked > 0 && dual > 0,
        format!(
            "{} requests, {} acknowledged writes ({hot_acked} to {hot}, {dual} dual-written), {refreshed} fence refusals retried on a fresh route, {} retries on the cutover freeze, {} other retries, {} unacknowledged, errors: {:?}",
            load.requests,
            load.acked.len(),
            load.frozen_retries,
            load.other_retries,
            load.unacked,
            load.errors.iter().take(3).collect::<Vec<_>>()
        ),
    );

    // 3. A stale router cannot write: the old stamp refuses the old epoch.
    let stale = TestClient {
        client: client.client.clone(),
        base: sys.endpoints.get(&before.stamp).cloned().unwrap_or_default(),
    };
    let epoch = before.epoch.0.to_string();
    let refused = stale
        .send(
            Method::PUT,
            &format!("/t/{hot}/kv/stale-write"),
            &[(EPOCH_HEADER, epoch.as_str())],
            Bytes::from_static(b"stale"),
        )
        .await?;
    checks.check(
        "the old stamp refuses a write routed by the pre-migration epoch",
        refused.status == StatusCode::CONFLICT,
        format!(
            "PUT to {} with {} = {}: {} {}",
            before.stamp,
            EPOCH_HEADER,
            before.epoch,
            refused.status,
            String::from_utf8_lossy(&refused.body)
        ),
    );

    // 4. Every acknowledged write is readable through the router.
    let mut lost = Vec::new();
    for chunk in load.acked.chunks(64) {
        let mut reads = Vec::new();
        for (t, k, v) in chunk {
            let c = client.clone();
            let (t, k, v) = (t.clone(), k.clone(), v.clone());
            reads.push(tokio::spawn(async move {
                match c.get(&t, &k).await {
                    Ok(r) if r.status == StatusCode::OK && r.body == v.as_bytes() => None,
                    Ok(r) => Some(format!("{t}/{k}: {} {:?}", r.status, r.body)),
                    Err(e) => Some(format!("{t}/{k}: {e}")),
                }
            }));
        }
        for r in reads {
            if let Some(miss) = r.await? {
                lost.push(miss);
            }
        }
    }
    checks.check(
        "every acknowledged write is readable afterwards",
        lost.is_empty() && !load.acked.is_empty(),
        format!(
            "{} acknowledged, {} missing {:?}",
            load.acked.len(),
            lost.len(),
            lost.iter().take(3).collect::<Vec<_>>()
        ),
    );
    let source_copy = sys
        .nodes
        .get(&before.stamp)
        .map(|n| n.store.lock().tenants.contains_key(&hot))
        .unwrap_or(true);
    checks.check(
        "the source copy was cleaned up",
        !source_copy,
        format!("{} holds {hot}: {source_copy}", before.stamp),
    );

    // 5. Scatter-gather: tenant counts per stamp.
    let (_, gathered) = client.json(Method::GET, "/admin/tenants", None).await?;
    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    for t in &sys.tenants {
        *expected.entry(sys.home(t).await?.stamp.0).or_default() += 1;
    }
    let got_counts: BTreeMap<u32, u64> = gathered["stamps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((u32::try_from(s["stamp"].as_u64()?).ok()?, s["tenants"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    checks.check(
        "scatter-gather counts every stamp's tenants",
        gathered["complete"] == true && got_counts == expected,
        format!("gathered {got_counts:?}, registry says {expected:?}"),
    );

    // 6. One stamp goes unhealthy: only its tenants get 503.
    let sick = StampId(3);
    let probe_key = |t: &TenantId| {
        load.acked
            .iter()
            .find(|(x, _, _)| x == t.as_str())
            .map(|(_, k, _)| k.clone())
    };
    let mut homes = Vec::new();
    for t in &sys.tenants {
        homes.push((
            t.clone(),
            sys.home(t).await?.stamp,
            probe_key(t).unwrap_or_else(|| "none".into()),
        ));
    }
    if let Some(node) = sys.nodes.get(&sick) {
        node.set_healthy(false);
    }
    let sick_tenant = homes
        .iter()
        .find(|(_, s, _)| *s == sick)
        .map(|(t, _, k)| (t.clone(), k.clone()));
    let marked = match &sick_tenant {
        Some((t, k)) => wait_for(Duration::from_secs(5), || {
            let c = client.clone();
            let (t, k) = (t.clone(), k.clone());
            async move { matches!(c.get(t.as_str(), &k).await, Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE) }
        })
        .await,
        None => false,
    };
    let mut wrong = Vec::new();
    let (mut n503, mut n200) = (0, 0);
    for (t, stamp, key) in &homes {
        let r = client.get(t.as_str(), key).await?;
        let want = if *stamp == sick {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            n503 += 1;
        } else if r.status == StatusCode::OK {
            n200 += 1;
        }
        let retry_after = r.headers.contains_key("retry-after");
        if r.status != want || (want == StatusCode::SERVICE_UNAVAILABLE && !retry_after) {
            wrong.push(format!("{t} on {stamp}: {}", r.status));
        }
    }
    checks.check(
        "an unhealthy stamp: only its tenants get 503 (with Retry-After), the others 200",
        marked && wrong.is_empty() && n503 > 0 && n200 > 0,
        format!("{sick} /healthz answers 503; {n503} tenants got 503, {n200} got 200; wrong: {wrong:?}"),
    );
    let (_, gathered) = client.json(Method::GET, "/admin/tenants", None).await?;
    let skipped = gathered["stamps"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s["stamp"] == sick.0 && s.get("skipped").is_some()));
    checks.check(
        "scatter-gather reports the unhealthy stamp as skipped",
        gathered["complete"] == false && skipped,
        format!("{gathered}"),
    );
    if let Some(node) = sys.nodes.get(&sick) {
        node.set_healthy(true);
    }
    let recovered = match &sick_tenant {
        Some((t, k)) => {
            wait_for(Duration::from_secs(5), || {
                let c = client.clone();
                let (t, k) = (t.clone(), k.clone());
                async move { matches!(c.get(t.as_str(), &k).await, Ok(r) if r.status == StatusCode::OK) }
            })
            .await
        }
        None => false,
    };
    checks.check(
        "the stamp recovers after healthy probes",
        recovered,
        format!("{sick} back in rotation: {recovered}"),
    );

    let stats = sys.gateway.router.stats();
    println!(
        "\nrouter: {} hits, {} misses, {} refused (unhealthy stamp); self-test took {:.1?}",
        stats.hits,
        stats.misses,
        stats.stamp_unavailable,
        started.elapsed()
    );
    let passed = checks.results.iter().filter(|(_, ok, _)| *ok).count();
    println!("{passed}/{} checks passed", checks.results.len());
    Ok(checks.all_passed())
}

async fn serve_forever() -> Result<(), Box<dyn std::error::Error>> {
    let sys = start_system(6, Duration::from_secs(1)).await?;
    let r = sys.router_addr;
    println!("router:  http://{r}");
    for (id, e) in &sys.endpoints {
        println!("{id}: {e}");
    }
    let t = sys.tenants.first().map(|t| t.to_string()).unwrap_or_default();
    println!(
        "\ntenants: {}",
        sys.tenants.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
    );
    println!("\ntry:");
    println!("  curl -X PUT -H 'x-tenant-id: {t}' --data hello http://{r}/kv/greeting");
    println!("  curl -H 'Host: {t}.{BASE_DOMAIN}' http://{r}/kv/greeting");
    println!("  curl -X POST -H 'content-type: application/json' --data '{{\"tenant\":\"{t}\",\"to\":2}}' http://{r}/admin/migrations");
    println!("  curl http://{r}/admin/migrations/1");
    println!("  curl http://{r}/admin/tenants");
    println!("\nCtrl-C stops (the default SIGINT action ends the process).");
    std::future::pending::<()>().await;
    Ok(())
}

fn main() -> ExitCode {
    let testing = std::env::args().any(|a| a == "--self-test");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        if testing {
            match tokio::time::timeout(Duration::from_secs(45), self_test()).await {
                Ok(Ok(true)) => ExitCode::SUCCESS,
                Ok(Ok(false)) => {
                    eprintln!("self-test FAILED");
                    ExitCode::FAILURE
                }
                Ok(Err(e)) => {
                    eprintln!("self-test error: {e}");
                    ExitCode::FAILURE
                }
                Err(_) => {
                    eprintln!("self-test timed out after 45 s");
                    ExitCode::FAILURE
                }
            }
        } else {
            match serve_forever().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}
