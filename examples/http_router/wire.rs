//! The wire between the router and the stamps: the header names, the keep-alive HTTP client,
//! one upstream request, relaying a stamp's answer, a key's stamp URL, and the plain-text and
//! 503 answers both sides give.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stamps::integrations::tower::ERROR_HEADER;
use stamps::TenantId;

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

/// Longest wait for one upstream request.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP client used for proxying, probing and the end-to-end test.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP/1 client.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

pub(crate) fn unavailable(reason: &'static str, retry_after: Duration, body: impl Into<String>) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, body);
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r.headers_mut().insert(ERROR_HEADER, HeaderValue::from_static(reason));
    r
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
pub(crate) fn kv_uri(endpoint: &str, tenant: &TenantId, key: &str) -> String {
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
