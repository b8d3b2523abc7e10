//! The router's tenant-facing front: the tenant routes (`/kv/{key}` behind the `RouteLayer`
//! and a Host-to-tenant middleware), the key checks, and the read proxy (`GET`). Writes are in
//! `write`. Self-contained apart from `http`, so the HTTP overhead bench routes through it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::header::HOST;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;
use bytes::Bytes;
use stamps::integrations::tenant_from_host;
use stamps::integrations::tower::{ResolvedRoute, RouteLayer, ERROR_HEADER};
use stamps::integrations::TenantSource;
use stamps::router::Router;
use stamps::Registry;

use super::wire::{kv_uri, relay, text, unavailable, upstream, HttpClient, BASE_DOMAIN, EPOCH_HEADER, TENANT_HEADER};

/// What the tenant routes need from the router's state: the client that reaches the stamps.
pub trait Upstreams: Clone + Send + Sync + 'static {
    /// The client for requests to the stamps.
    fn client(&self) -> &HttpClient;
}

/// The tenant routes: `/kv/{key}` answering `GET` with the read proxy and the other methods
/// with `kv`, behind the `RouteLayer` (tenant from `x-tenant-id`) and, in front of it, the
/// middleware that copies a Host subdomain into that header.
pub fn tenant_routes<S: Upstreams, R: Registry>(router: Arc<Router<R>>, kv: MethodRouter<S>) -> axum::Router<S> {
    axum::Router::new()
        .route("/kv/{key}", kv.get(proxy_get::<S>))
        .route_layer(RouteLayer::new(router, TenantSource::header()))
        .route_layer(axum::middleware::from_fn(tenant_from_host_header))
}

/// The `RouteLayer` reads the tenant from one source (`x-tenant-id` here). To accept the Host
/// subdomain too, this middleware runs in front of it: a request without the header gets it from
/// its Host (`acme.stamps.localhost` → `acme`); a Host that is not a tenant subdomain is 400.
pub(crate) async fn tenant_from_host_header(mut req: Request, next: Next) -> Response {
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

/// Refuses the dot segments `.` and `..` as keys: a stamp or proxy that normalizes the path
/// would resolve them out of the tenant's prefix.
pub(crate) fn key_rejected(key: &str) -> Option<Response> {
    matches!(key, "." | "..").then(|| text(StatusCode::BAD_REQUEST, "key must not be `.` or `..`"))
}

/// `GET /kv/{key}`: read from the serving stamp.
pub(crate) async fn proxy_get<S: Upstreams>(State(gw): State<S>, Path(key): Path<String>, req: Request) -> Response {
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
        gw.client(),
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
