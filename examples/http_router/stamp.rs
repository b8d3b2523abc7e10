//! The stamps: each an axum server over its share of the library's reference data plane
//! ([`ReferenceDataPlane`]): a per-tenant key-value store whose rows carry a version
//! `(epoch, sequence)` and whose writes the stamp's fence admits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use stamps::migration::reference::{ReferenceDataPlane, RowVersion, WriteError};
use stamps::migration::FenceToken;
use stamps::{Epoch, StampId, TenantId};

use super::wire::{text, EPOCH_HEADER, SERVED_BY_HEADER, VERSION_HEADER};

/// A row version as the `x-row-version` header carries it: `epoch.seq`.
fn version_text(v: RowVersion) -> String {
    format!("{}.{}", v.epoch.0, v.seq)
}

/// Parses an `x-row-version` header: `(epoch, seq)`.
fn parse_version(text: &str) -> Option<(u64, u64)> {
    let (e, s) = text.split_once('.')?;
    Some((e.parse().ok()?, s.parse().ok()?))
}

/// One stamp server's state: its id, the data plane holding its rows and fence (shared by all
/// stamps here, as they run in one process; each stamp touches only its own share), and
/// whether `/healthz` answers 200.
#[derive(Debug)]
pub struct StampNode {
    pub(crate) id: StampId,
    pub(crate) plane: ReferenceDataPlane,
    healthy: AtomicBool,
}

impl StampNode {
    fn new(id: StampId, plane: ReferenceDataPlane) -> Self {
        StampNode {
            id,
            plane,
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
    let r = match node.plane.row(node.id, &tenant, &key) {
        Some((value, version)) => {
            let mut r = (StatusCode::OK, value).into_response();
            if let Ok(v) = HeaderValue::from_str(&version_text(version)) {
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
    let seq = match headers
        .get(VERSION_HEADER)
        .map(|v| v.to_str().ok().and_then(parse_version))
    {
        None => None,
        Some(Some((e, seq))) if e == epoch => Some(seq),
        Some(_) => return text(StatusCode::BAD_REQUEST, format!("malformed {VERSION_HEADER} header")),
    };
    let Ok(value) = std::str::from_utf8(&value) else {
        return text(StatusCode::BAD_REQUEST, "values must be UTF-8 text");
    };
    let token = FenceToken::new(tenant, node.id, Epoch(epoch));
    let version = match node.plane.apply(&token, &key, value, seq) {
        Ok(version) => version,
        Err(WriteError::Fenced { rejection, .. }) => {
            return served_by(&node, text(StatusCode::CONFLICT, rejection.to_string()))
        }
        Err(e) => return served_by(&node, text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let mut r = text(StatusCode::OK, "stored");
    if let Ok(v) = HeaderValue::from_str(&version_text(version)) {
        r.headers_mut().insert(VERSION_HEADER, v);
    }
    served_by(&node, r)
}

/// How many tenants (with at least one row) and rows the stamp holds: the scatter-gather target.
async fn stamp_tenants(State(node): State<Arc<StampNode>>) -> Json<Value> {
    let counts = node.plane.row_counts(node.id);
    let tenants = counts.len();
    let rows: usize = counts.values().sum();
    Json(json!({ "stamp": node.id.0, "tenants": tenants, "rows": rows }))
}

/// Starts the server of stamp `id` (one of `plane`'s stamps) on an ephemeral loopback port.
pub async fn start_stamp(id: StampId, plane: ReferenceDataPlane) -> std::io::Result<(SocketAddr, Arc<StampNode>)> {
    let node = Arc::new(StampNode::new(id, plane));
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
