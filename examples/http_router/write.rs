//! The router's write path (`PUT /kv/{key}`): the serving stamp first, then the shadow in
//! dual-write with the same row version; a fence refusal refreshes the route and retries.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use stamps::integrations::tower::ResolvedRoute;
use stamps::migration::{write_with_route, RoutedWriteError, StampRefusal};
use stamps::router::{Route, RouteError};
use stamps::TenantId;

use super::proxy::key_rejected;
use super::system::Gateway;
use super::wire::{kv_uri, relay, text, unavailable, upstream, EPOCH_HEADER, VERSION_HEADER};

/// Largest accepted value.
const MAX_BODY: usize = 64 * 1024;

fn route_error(e: RouteError) -> Response {
    match e {
        RouteError::InvalidTenant(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        RouteError::UnknownTenant => text(StatusCode::NOT_FOUND, e.to_string()),
        RouteError::StampUnavailable { .. } => unavailable("stamp-unavailable", Duration::from_secs(5), e.to_string()),
        _ => unavailable("registry-unavailable", Duration::from_secs(1), e.to_string()),
    }
}

/// `PUT /kv/{key}`: write to the serving stamp, then (dual-write) to the shadow with the same
/// row version; acknowledge only when every stamp of the route applied it. A fence rejection
/// (409 from a stamp) means the route is stale: `write_with_route` refreshes it and retries
/// (bounded).
pub(crate) async fn proxy_put(State(gw): State<Arc<Gateway>>, Path(key): Path<String>, req: Request) -> Response {
    if let Some(r) = key_rejected(&key) {
        return r;
    }
    let Some(ResolvedRoute { tenant, .. }) = req.extensions().get::<ResolvedRoute>().cloned() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "route missing");
    };
    let value = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
    };
    let (gw, tenant, key, value) = (&*gw, &tenant, key.as_str(), &value);
    let written = write_with_route(&gw.router, tenant, 4, |route, tokens| async move {
        // Two tokens: dual-write (or a freeze that expired), so the shadow gets the write too.
        match write_once(gw, tenant, &route, tokens.len() > 1, key, value).await {
            WriteResult::Done(response) => Ok(response),
            WriteResult::Fenced => {
                gw.fence_refreshes.fetch_add(1, Ordering::Relaxed);
                Err(StampRefusal::<std::convert::Infallible>::Fenced(None))
            }
        }
    })
    .await;
    match written {
        Ok(response) => response,
        Err(RoutedWriteError::Route(e)) => route_error(e),
        Err(RoutedWriteError::Frozen { retry_after }) => {
            unavailable("tenant-frozen", retry_after, "tenant is frozen for a cutover; retry")
        }
        Err(_) => unavailable("fenced", Duration::from_secs(1), "the route kept changing; retry"),
    }
}

enum WriteResult {
    Done(Response),
    Fenced,
}

async fn write_once(
    gw: &Gateway,
    tenant: &TenantId,
    route: &Route,
    dual: bool,
    key: &str,
    value: &Bytes,
) -> WriteResult {
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
    let Some(shadow) = route.mode.shadow().filter(|_| dual) else {
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
