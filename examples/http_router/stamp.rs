//! The stamps: each an axum server over its own per-tenant key-value store, admitting every
//! write through its fence.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value};
use stamps::migration::{Fence, FenceToken, SideSummary};
use stamps::{Epoch, StampId, TenantId};

use super::http::{text, EPOCH_HEADER, SERVED_BY_HEADER, VERSION_HEADER};

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
pub(crate) struct Row {
    pub(crate) value: Bytes,
    pub(crate) version: Version,
}

#[derive(Debug, Default)]
pub(crate) struct TenantRows {
    pub(crate) rows: BTreeMap<String, Row>,
    seq: u64,
}

impl TenantRows {
    /// Last-writer-wins by version.
    pub(crate) fn merge(&mut self, key: &str, row: Row) {
        match self.rows.get(key) {
            Some(existing) if existing.version >= row.version => {}
            _ => {
                self.rows.insert(key.to_string(), row);
            }
        }
    }

    pub(crate) fn summary(&self) -> SideSummary {
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
pub(crate) struct Store {
    pub(crate) fence: Fence,
    pub(crate) tenants: HashMap<TenantId, TenantRows>,
}

/// One stamp server's state.
#[derive(Debug)]
pub struct StampNode {
    pub(crate) id: StampId,
    pub(crate) store: Mutex<Store>,
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
