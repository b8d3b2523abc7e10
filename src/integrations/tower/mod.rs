//! A `tower` layer that routes `http` requests to their tenant's stamp.
//!
//! [`RouteLayer`] wraps any `tower` service over [`http::Request`]s (an axum `Router`, a hyper
//! 1 service made with `service_fn`, a proxy): it takes the tenant from the request (a
//! [`TenantSource`]), asks the [`Router`] for the route, and either calls the inner service
//! with a [`ResolvedRoute`] in the request extensions or answers the request itself.
//!
//! # Answers
//! Rejections have an empty body (`ResB::default()`) and an `x-stamps-error` header with a
//! short reason, so clients and logs can tell them from the stamps' own answers:
//!
//! | status | `x-stamps-error` | when |
//! | --- | --- | --- |
//! | 400 | `missing-tenant` | no host, header or path segment to read the tenant from (with [`TenantSource::RoutingToken`]: no token) |
//! | 400 | `invalid-tenant` | the tenant text is not a valid [`TenantId`], the host is malformed, or the request names its tenant ambiguously: two Host or tenant headers, or a Host header and a URI authority naming different tenants ([`ExtractError`], [`RouteError::InvalidTenant`]) |
//! | 404 | `unknown-tenant` | no stamp serves the tenant ([`RouteError::UnknownTenant`]) |
//! | 503 + `Retry-After` | `stamp-unavailable` | the tenant's stamp is unhealthy ([`RouteError::StampUnavailable`]) |
//! | 503 + `Retry-After` | `registry-unavailable` | the registry is unreachable and no route is known ([`RouteError::Unavailable`]), or (feature `tokio`) it did not answer within [`RouteLayer::resolve_timeout`] |
//! | 503 + `Retry-After` | `tenant-frozen` | a write (any method but `GET`, `HEAD`, `OPTIONS`) to a tenant whose route is frozen for a cutover; reads pass |
//! | 400 | `malformed-token` | (feature `token`) the routing token is not a token, or the request carries two |
//! | 401 | `bad-token-signature`, `unknown-token-key`, `expired-token` | (feature `token`) the token is forged or altered, signed with a key not held, or expired |
//! | 400 | `token-tenant-mismatch` | (feature `token`) the token names another tenant than the request |
//! | 401 | `stale-token` | (feature `token`) the router knows the tenant at a newer epoch on another stamp than the token names: fetch a fresh token |
//! | 404 | `unknown-tenant` | (feature `token`) also with a valid token, when the router knows the tenant is unassigned: a token never revives an offboarded tenant |
//! | 500 | `token-source-without-keys` | (feature `token`) the layer takes the tenant from [`TenantSource::RoutingToken`] but was given no keys ([`RouteLayer::tokens`]): a configuration error |
//!
//! `Retry-After` is in whole seconds, rounded up, at least 1: for a freeze, the time left until
//! the freeze ends on the router's clock ([`Router::now`]); otherwise
//! [`RouteLayer::unavailable_retry_after`] (default 5 s).
//!
//! # Costs
//! On a router hit the layer does no registry I/O and takes no lock; the response future is
//! the inner service's future in an enum (not boxed). It makes no allocation of its own for a
//! tenant id of up to 22 bytes (the [`TenantId`] is inline; a longer one is one shared
//! allocation); the one allocation per hit is `http`'s, boxing the extension entry
//! (`tests/tower_alloc.rs` counts it against the same work by hand). A request without any
//! extension also gets its extension map allocated by `http`. A
//! miss awaits [`Router::resolve`] (concurrent misses for one tenant share one registry read)
//! in a boxed future, for as long as the registry takes unless a resolve timeout is set
//! (`RouteLayer::resolve_timeout`, feature `tokio`). With a routing token, verification decodes the token (two small
//! buffers) and reads no registry.
//!
//! # Routing tokens
//! With the `token` feature and [`RouteLayer::tokens`], a request carrying the token
//! header is routed by the token — but a token never outranks what the router knows:
//! - the token is verified without any registry lookup; a rejected token is answered (above);
//! - the token must name the tenant taken from the request (else 400); with
//!   [`TenantSource::RoutingToken`] the tenant is the one the verified token names, so clients
//!   can carry their routing in the token alone;
//! - if the router knows the tenant is unassigned (an unassignment applied from the change
//!   feed, or a negative-cache entry), the request is 404 `unknown-tenant`, as without the
//!   token;
//! - if the router has a route for the tenant with a newer epoch on another stamp, the token
//!   is stale: 401 `stale-token` (the client fetches a fresh token); with a newer epoch on the
//!   token's stamp, or the same epoch, the router's route is used (it carries the mode, such as
//!   a freeze, and the failover decision);
//! - otherwise (router miss, unreachable registry, or an older cached epoch) the request goes
//!   to the token's stamp at the token's epoch, with the endpoint from the router's stamp view
//!   ([`Router::stamp_endpoint`]); if the router's health table marks that stamp unavailable,
//!   503 `stamp-unavailable`. Pass the epoch on to the stamp: its fencing is the last word.
//!
//! A token is still what routes a tenant the router has no entry for: that is what tokens are
//! for. It cannot see an unassignment the router has not learned yet (a router that does not
//! follow the change feed, or an entry the negative cache has let go); keep token lifetimes
//! short and let stamps refuse epochs they no longer serve.
//!
//! # Example
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use http::{Request, Response, StatusCode};
//! use stamps::integrations::tower::{ResolvedRoute, RouteLayer};
//! use stamps::integrations::TenantSource;
//! use stamps::router::Router;
//! use stamps::*;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry: Arc<dyn Registry> = Arc::new(InMemoryRegistry::new());
//! let router = Arc::new(Router::from_arc(registry));
//! router.preload([("acme", StampId(2), Epoch(7), AssignmentMode::Serving)])?;
//!
//! let app = service_fn(|req: Request<String>| async move {
//!     let route = req.extensions().get::<ResolvedRoute>().map(|r| r.route.stamp);
//!     Ok::<_, Infallible>(Response::new(format!("{route:?}")))
//! });
//! let svc = RouteLayer::new(router, TenantSource::header()).layer(app);
//!
//! let req = Request::get("/orders").header("x-tenant-id", "acme").body(String::new())?;
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.into_body(), "Some(StampId(2))");
//!
//! let req = Request::get("/orders").header("x-tenant-id", "Not A Tenant").body(String::new())?;
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(res.headers()["x-stamps-error"], "invalid-tenant");
//! # Ok(()) }
//! ```
//!
//! [`Router`]: crate::router::Router
//! [`Router::now`]: crate::router::Router::now
//! [`Router::resolve`]: crate::router::Router::resolve
//! [`Router::stamp_endpoint`]: crate::router::Router::stamp_endpoint
//! [`RouteError::InvalidTenant`]: crate::router::RouteError::InvalidTenant
//! [`RouteError::UnknownTenant`]: crate::router::RouteError::UnknownTenant
//! [`RouteError::StampUnavailable`]: crate::router::RouteError::StampUnavailable
//! [`RouteError::Unavailable`]: crate::router::RouteError::Unavailable
//! [`TenantSource`]: crate::integrations::TenantSource
//! [`ExtractError`]: crate::integrations::ExtractError
// The two setters exist only with their features; without them the links go to the type.
#![cfg_attr(
    feature = "tokio",
    doc = "[`RouteLayer::resolve_timeout`]: RouteLayer::resolve_timeout"
)]
#![cfg_attr(not(feature = "tokio"), doc = "[`RouteLayer::resolve_timeout`]: RouteLayer")]
#![cfg_attr(feature = "token", doc = "[`RouteLayer::tokens`]: RouteLayer::tokens")]
#![cfg_attr(not(feature = "token"), doc = "[`RouteLayer::tokens`]: RouteLayer")]
#![cfg_attr(
    feature = "token",
    doc = "[`TenantSource::RoutingToken`]: crate::integrations::TenantSource::RoutingToken"
)]
#![cfg_attr(
    not(feature = "token"),
    doc = "[`TenantSource::RoutingToken`]: crate::integrations::TenantSource"
)]

mod decide;
mod future;
mod layer;
mod reject;
mod service;

use crate::model::TenantId;
use crate::router::Route;

pub use future::RouteFuture;
pub use layer::RouteLayer;
pub use service::RouteService;

/// The header carrying the layer's rejection reason.
///
/// ```
/// assert_eq!(stamps::integrations::tower::ERROR_HEADER, "x-stamps-error");
/// ```
pub const ERROR_HEADER: &str = "x-stamps-error";

/// What the layer puts in the request extensions before calling the inner service: the tenant
/// and where to send it.
///
/// ```
/// use stamps::integrations::tower::ResolvedRoute;
/// use stamps::router::Route;
/// use stamps::{Epoch, StampId, TenantId};
/// let r = ResolvedRoute { tenant: TenantId::new("acme")?, route: Route::new(StampId(1), Epoch(3)) };
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(r);
/// assert_eq!(req.extensions().get::<ResolvedRoute>().map(|r| r.route.stamp), Some(StampId(1)));
/// # Ok::<(), stamps::TenantIdError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResolvedRoute {
    /// The tenant taken from the request.
    pub tenant: TenantId,
    /// Its route (stamp, endpoint, epoch, mode).
    pub route: Route,
}
