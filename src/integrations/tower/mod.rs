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
//! | 400 | `missing-tenant` | no host, header or path segment to read the tenant from |
//! | 400 | `invalid-tenant` | the tenant text is not a valid [`TenantId`], the host is malformed, or the request names its tenant ambiguously: two Host or tenant headers, or a Host header and a URI authority naming different tenants ([`ExtractError`], [`RouteError::InvalidTenant`]) |
//! | 404 | `unknown-tenant` | no stamp serves the tenant ([`RouteError::UnknownTenant`]) |
//! | 503 + `Retry-After` | `stamp-unavailable` | the tenant's stamp is unhealthy ([`RouteError::StampUnavailable`]) |
//! | 503 + `Retry-After` | `registry-unavailable` | the registry is unreachable and no route is known ([`RouteError::Unavailable`]), or (feature `tokio`) it did not answer within [`RouteLayer::resolve_timeout`] |
//! | 503 + `Retry-After` | `tenant-frozen` | a write (any method but `GET`, `HEAD`, `OPTIONS`) to a tenant whose route is frozen for a cutover; reads pass |
//! | 400 | `malformed-token` | (feature `token`) the routing token is not a token, or the request carries two |
//! | 401 | `bad-token-signature`, `unknown-token-key`, `expired-token` | (feature `token`) the token is forged or altered, signed with a key not held, or expired |
//! | 400 | `token-tenant-mismatch` | (feature `token`) the token names another tenant than the request |
//!
//! `Retry-After` is in whole seconds, rounded up, at least 1: for a freeze, the time left until
//! the freeze ends on the router's clock ([`Router::now`]); otherwise
//! [`RouteLayer::unavailable_retry_after`] (default 5 s).
//!
//! # Costs
//! On a router hit the layer does no registry I/O and takes no lock; the response future is
//! the inner service's future in an enum (not boxed). What it allocates per request is what
//! the request carries: the [`TenantId`] (one shared allocation) and the extension entry
//! (`http::Extensions` boxes each value) — two allocations per hit for a request that already
//! has extensions, as hyper's do (`tests/tower_alloc.rs` counts them against the same work by
//! hand); a request without any extension also gets its extension map allocated by `http`. A
//! miss awaits [`Router::resolve`] (concurrent misses for one tenant share one registry read)
//! in a boxed future, for as long as the registry takes unless a resolve timeout is set
//! (`RouteLayer::resolve_timeout`, feature `tokio`). With a routing token, verification decodes the token (two small
//! buffers) and reads no registry.
//!
//! # Routing tokens
//! With the `token` feature and [`RouteLayer::with_tokens`], a request carrying the token
//! header is routed by the token when it is at least as new as what the router knows:
//! - the token is verified without any registry lookup; a rejected token is answered (above);
//! - the token must name the tenant taken from the request (else 400);
//! - if the router has a route for the tenant with a newer epoch, the token is stale and the
//!   router's route is used; with the same epoch, the router's route is used too (it carries
//!   the mode, such as a freeze, and the failover decision);
//! - otherwise (router miss, negative-cache entry, or an older cached epoch) the request goes to
//!   the token's stamp at the token's epoch, with the endpoint from the router's stamp view
//!   ([`Router::stamp_endpoint`]); if the router's health table marks that stamp unavailable,
//!   503 `stamp-unavailable`. Pass the epoch on to the stamp: its fencing is the last word.
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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, HOST, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::{ExtractError, TenantSource};
use crate::model::TenantId;
use crate::registry::{DynRegistry, Registry};
use crate::router::{Route, RouteError, Router};

#[cfg(feature = "token")]
use super::token::{RoutingTokens, TokenError};

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

/// A rejection the layer answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reject {
    status: StatusCode,
    reason: &'static str,
    retry_after: Option<u64>,
}

impl Reject {
    const fn new(status: StatusCode, reason: &'static str) -> Reject {
        Reject {
            status,
            reason,
            retry_after: None,
        }
    }

    fn unavailable(reason: &'static str, after: Duration) -> Reject {
        Reject {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason,
            retry_after: Some(retry_secs(after)),
        }
    }

    fn response<B: Default>(self) -> Response<B> {
        let mut res = Response::new(B::default());
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(
            HeaderName::from_static(ERROR_HEADER),
            HeaderValue::from_static(self.reason),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_secs(d: Duration) -> u64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    secs.max(1)
}

fn extract_reject(e: ExtractError) -> Reject {
    match e {
        ExtractError::Missing => Reject::new(StatusCode::BAD_REQUEST, "missing-tenant"),
        _ => Reject::new(StatusCode::BAD_REQUEST, "invalid-tenant"),
    }
}

/// The value of a header that must appear at most once.
fn single<K: http::header::AsHeaderName>(headers: &http::HeaderMap, name: K) -> Result<Option<&[u8]>, ExtractError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ExtractError::Ambiguous);
    }
    Ok(first.map(HeaderValue::as_bytes))
}

#[cfg(feature = "token")]
fn token_reject(e: TokenError) -> Reject {
    match e {
        TokenError::BadSignature => Reject::new(StatusCode::UNAUTHORIZED, "bad-token-signature"),
        TokenError::UnknownKey(_) => Reject::new(StatusCode::UNAUTHORIZED, "unknown-token-key"),
        TokenError::Expired { .. } => Reject::new(StatusCode::UNAUTHORIZED, "expired-token"),
        other => match other.http_status() {
            401 => Reject::new(StatusCode::UNAUTHORIZED, "invalid-token"),
            _ => Reject::new(StatusCode::BAD_REQUEST, "malformed-token"),
        },
    }
}

/// Whether a method only reads (passes through a cutover freeze).
fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}

struct Shared<R: Registry + ?Sized> {
    router: Arc<Router<R>>,
    source: TenantSource,
    unavailable_retry: Duration,
    #[cfg(feature = "tokio")]
    resolve_timeout: Option<Duration>,
    #[cfg(feature = "token")]
    tokens: Option<(RoutingTokens, &'static str)>,
}

impl<R: Registry + ?Sized> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared {
            router: self.router.clone(),
            source: self.source.clone(),
            unavailable_retry: self.unavailable_retry,
            #[cfg(feature = "tokio")]
            resolve_timeout: self.resolve_timeout,
            #[cfg(feature = "token")]
            tokens: self.tokens.clone(),
        }
    }
}

impl<R: Registry + ?Sized> fmt::Debug for Shared<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RouteLayer");
        d.field("router", &self.router)
            .field("source", &self.source)
            .field("unavailable_retry", &self.unavailable_retry);
        #[cfg(feature = "tokio")]
        d.field("resolve_timeout", &self.resolve_timeout);
        #[cfg(feature = "token")]
        d.field("token_header", &self.tokens.as_ref().map(|(_, h)| *h));
        d.finish()
    }
}

impl<R: Registry + ?Sized> Shared<R> {
    /// Takes the tenant from the request. The tenant must be named once: two Host headers, two
    /// tenant headers, or a Host header and a URI authority (absolute-form, HTTP/2
    /// `:authority`) naming different tenants are [`ExtractError::Ambiguous`] — a service or
    /// proxy behind the layer that reads the other one would otherwise act for another tenant
    /// than the one routed.
    fn extract<B>(&self, req: &Request<B>) -> Result<TenantId, ExtractError> {
        let path = req.uri().path();
        match &self.source {
            TenantSource::Subdomain { .. } => {
                // Non-UTF-8 bytes are not a host name; report them as non-ASCII.
                let host = single(req.headers(), HOST)?
                    .map(|b| std::str::from_utf8(b).map_err(|_| ExtractError::NonAsciiHost))
                    .transpose()?;
                // `host()` leaves out any userinfo and the port.
                let authority = req.uri().authority().map(http::uri::Authority::host);
                match (host, authority) {
                    (Some(h), Some(a)) => {
                        let tenant = self.source.extract(Some(h), None, path)?;
                        if self.source.extract(Some(a), None, path)? != tenant {
                            return Err(ExtractError::Ambiguous);
                        }
                        Ok(tenant)
                    }
                    (h, a) => self.source.extract(h.or(a), None, path),
                }
            }
            TenantSource::Header { name } => {
                let header = single(req.headers(), name.as_str())?;
                self.source.extract(None, header, path)
            }
            _ => self.source.extract(None, None, path),
        }
    }

    /// Resolves a router miss, within the resolve timeout if one is set.
    async fn resolve(&self, tenant: &str) -> Result<Route, RouteError> {
        #[cfg(feature = "tokio")]
        if let Some(limit) = self.resolve_timeout {
            return match tokio::time::timeout(limit, self.router.resolve(tenant)).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => Err(RouteError::Unavailable),
            };
        }
        self.router.resolve(tenant).await
    }

    /// Maps a router error to the answer.
    fn route_error(&self, e: RouteError) -> Reject {
        match e {
            RouteError::InvalidTenant(_) => Reject::new(StatusCode::BAD_REQUEST, "invalid-tenant"),
            RouteError::UnknownTenant => Reject::new(StatusCode::NOT_FOUND, "unknown-tenant"),
            RouteError::StampUnavailable { .. } => Reject::unavailable("stamp-unavailable", self.unavailable_retry),
            // `Miss` only reaches here if the router answers it from `resolve`; and any future
            // variant is treated as "not available now".
            _ => Reject::unavailable("registry-unavailable", self.unavailable_retry),
        }
    }

    /// Applies the write freeze to a route.
    fn admit(&self, route: Route, method: &Method) -> Result<Route, Reject> {
        if is_read(method) {
            return Ok(route);
        }
        match route.retry_after(self.router.now()) {
            Some(left) => Err(Reject::unavailable("tenant-frozen", left)),
            None => Ok(route),
        }
    }

    /// Decides from the local table and the token only (no registry I/O). `Ok(None)` means
    /// the router missed and the tenant must be resolved.
    fn decide_sync<B>(&self, tenant: &TenantId, req: &Request<B>) -> Result<Option<Route>, Reject> {
        #[cfg(feature = "token")]
        if let Some((tokens, header)) = &self.tokens {
            // Two tokens are ambiguous (a stamp reading the other one would act on another
            // assignment than the one routed): refused as malformed.
            let token =
                single(req.headers(), *header).map_err(|_| Reject::new(StatusCode::BAD_REQUEST, "malformed-token"))?;
            if let Some(value) = token {
                return self.decide_token(tokens, value, tenant, req.method()).map(Some);
            }
        }
        match self.router.route(tenant.as_str()) {
            Ok(route) => self.admit(route, req.method()).map(Some),
            Err(RouteError::Miss) => Ok(None),
            Err(e) => Err(self.route_error(e)),
        }
    }

    #[cfg(feature = "token")]
    fn decide_token(
        &self,
        tokens: &RoutingTokens,
        token: &[u8],
        tenant: &TenantId,
        method: &Method,
    ) -> Result<Route, Reject> {
        let claims = tokens.verify(token).map_err(token_reject)?;
        if claims.tenant != *tenant {
            return Err(Reject::new(StatusCode::BAD_REQUEST, "token-tenant-mismatch"));
        }
        match self.router.route(tenant.as_str()) {
            // The router knows this assignment or a newer one: its route carries the mode.
            Ok(route) if route.epoch >= claims.epoch => return self.admit(route, method),
            Ok(_) | Err(RouteError::Miss | RouteError::UnknownTenant | RouteError::Unavailable) => {}
            Err(e) => return Err(self.route_error(e)),
        }
        let stamp = claims.stamp;
        if let Some(since) = self.router.health().and_then(|h| h.unavailable_since(stamp)) {
            return Err(self.route_error(RouteError::StampUnavailable { stamp, since }));
        }
        Ok(Route::new(stamp, claims.epoch).with_endpoint(self.router.stamp_endpoint(stamp)))
    }
}

/// A [`Layer`] that routes each request to its tenant's stamp: see the [module
/// docs](self) for the answers and costs. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stamps::integrations::tower::RouteLayer;
/// use stamps::integrations::TenantSource;
/// use stamps::router::Router;
/// use stamps::InMemoryRegistry;
/// let router = Arc::new(Router::new(InMemoryRegistry::new()));
/// let layer = RouteLayer::new(router, TenantSource::Subdomain { base_domain: "app.example".into() })
///     .unavailable_retry_after(Duration::from_secs(10));
/// # let _ = layer;
/// ```
pub struct RouteLayer<R: Registry + ?Sized = DynRegistry> {
    shared: Arc<Shared<R>>,
}

impl<R: Registry + ?Sized> Clone for RouteLayer<R> {
    fn clone(&self) -> Self {
        RouteLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<R: Registry + ?Sized> fmt::Debug for RouteLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl<R: Registry + ?Sized> RouteLayer<R> {
    /// Routes through `router`, taking the tenant from `source`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::integrations::tower::RouteLayer;
    /// use stamps::integrations::TenantSource;
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let layer = RouteLayer::new(Arc::new(Router::new(InMemoryRegistry::new())), TenantSource::header());
    /// assert!(layer.router().is_empty());
    /// ```
    pub fn new(router: Arc<Router<R>>, source: TenantSource) -> Self {
        RouteLayer {
            shared: Arc::new(Shared {
                router,
                source,
                unavailable_retry: Duration::from_secs(5),
                #[cfg(feature = "tokio")]
                resolve_timeout: None,
                #[cfg(feature = "token")]
                tokens: None,
            }),
        }
    }

    /// The `Retry-After` for an unhealthy stamp or an unreachable registry (default 5 s;
    /// rounded up to whole seconds, at least 1).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use stamps::integrations::tower::RouteLayer;
    /// use stamps::integrations::TenantSource;
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let layer = RouteLayer::new(Arc::new(Router::new(InMemoryRegistry::new())), TenantSource::header())
    ///     .unavailable_retry_after(Duration::from_millis(2_500)); // answers `Retry-After: 3`
    /// # let _ = layer;
    /// ```
    pub fn unavailable_retry_after(mut self, after: Duration) -> Self {
        Arc::make_mut(&mut self.shared).unavailable_retry = after;
        self
    }

    /// Bounds how long a router miss waits for the registry: past `limit` the request is
    /// answered 503 `registry-unavailable` with `Retry-After` (as for an unreachable registry).
    /// Without it (the default) a miss waits as long as the registry takes to answer or fail, so
    /// a registry that hangs holds the request until an outer timeout. Needs a tokio runtime
    /// (the timer is tokio's).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use stamps::integrations::tower::RouteLayer;
    /// use stamps::integrations::TenantSource;
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let layer = RouteLayer::new(Arc::new(Router::new(InMemoryRegistry::new())), TenantSource::header())
    ///     .resolve_timeout(Duration::from_secs(2));
    /// # let _ = layer;
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn resolve_timeout(mut self, limit: Duration) -> Self {
        Arc::make_mut(&mut self.shared).resolve_timeout = Some(limit);
        self
    }

    /// Routes requests that carry a routing token in `header` (such as `"x-stamps-token"`;
    /// matched case-insensitively) by the token, verified with `tokens`: see the [module
    /// docs](self#routing-tokens). A `header` that is not a valid header name matches no request.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::integrations::token::{KeyId, RoutingTokens, TokenKeys};
    /// use stamps::integrations::tower::RouteLayer;
    /// use stamps::integrations::TenantSource;
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let tokens = RoutingTokens::with_system_clock(TokenKeys::new(KeyId(1), vec![7; 32])?);
    /// let layer = RouteLayer::new(Arc::new(Router::new(InMemoryRegistry::new())), TenantSource::header())
    ///     .with_tokens(tokens, "x-stamps-token");
    /// # let _ = layer;
    /// # Ok::<(), stamps::Error>(())
    /// ```
    #[cfg(feature = "token")]
    #[cfg_attr(docsrs, doc(cfg(feature = "token")))]
    pub fn with_tokens(mut self, tokens: RoutingTokens, header: &'static str) -> Self {
        Arc::make_mut(&mut self.shared).tokens = Some((tokens, header));
        self
    }

    /// The router.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::integrations::tower::RouteLayer;
    /// use stamps::integrations::TenantSource;
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let router = Arc::new(Router::new(InMemoryRegistry::new()));
    /// let layer = RouteLayer::new(router.clone(), TenantSource::header());
    /// assert!(Arc::ptr_eq(layer.router(), &router));
    /// ```
    pub fn router(&self) -> &Arc<Router<R>> {
        &self.shared.router
    }
}

impl<S, R: Registry + ?Sized> Layer<S> for RouteLayer<R> {
    type Service = RouteService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`RouteLayer`] makes: see the [module docs](self).
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use stamps::integrations::tower::{RouteLayer, RouteService};
/// use stamps::integrations::TenantSource;
/// use stamps::router::Router;
/// use stamps::InMemoryRegistry;
/// use tower::{service_fn, Layer};
/// let inner = service_fn(|_req: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
/// let svc: RouteService<_, InMemoryRegistry> =
///     RouteLayer::new(Arc::new(Router::new(InMemoryRegistry::new())), TenantSource::header()).layer(inner);
/// # let _ = svc;
/// ```
pub struct RouteService<S, R: Registry + ?Sized = DynRegistry> {
    inner: S,
    shared: Arc<Shared<R>>,
}

impl<S: Clone, R: Registry + ?Sized> Clone for RouteService<S, R> {
    fn clone(&self) -> Self {
        RouteService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, R: Registry + ?Sized> fmt::Debug for RouteService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteService")
            .field("inner", &self.inner)
            .field("layer", &self.shared)
            .finish()
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, R, B, ResB> Service<Request<B>> for RouteService<S, R>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Registry + ?Sized,
    B: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RouteFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let tenant = match self.shared.extract(&req) {
            Ok(t) => t,
            Err(e) => return RouteFuture::reject(extract_reject(e)),
        };
        match self.shared.decide_sync(&tenant, &req) {
            Ok(Some(route)) => {
                req.extensions_mut().insert(ResolvedRoute { tenant, route });
                RouteFuture::inner(self.inner.call(req))
            }
            Err(reject) => RouteFuture::reject(reject),
            Ok(None) => {
                // Take the service that was polled ready; leave a clone in its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                RouteFuture::boxed(Box::pin(async move {
                    let outcome = shared.resolve(tenant.as_str()).await;
                    let decided = match outcome {
                        Ok(route) => shared.admit(route, req.method()),
                        Err(e) => Err(shared.route_error(e)),
                    };
                    match decided {
                        Ok(route) => {
                            req.extensions_mut().insert(ResolvedRoute { tenant, route });
                            inner.call(req).await
                        }
                        Err(reject) => Ok(reject.response()),
                    }
                }))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RouteService`]: the inner service's future on a router hit
    /// (not boxed), a ready rejection, or a boxed resolve-then-call on a miss.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::sync::Arc;
    /// use stamps::integrations::tower::RouteLayer;
    /// use stamps::integrations::TenantSource;
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// use tower::{service_fn, Layer, Service};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let inner = service_fn(|_req: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
    /// let mut svc = RouteLayer::new(Arc::new(Router::new(InMemoryRegistry::new())), TenantSource::header()).layer(inner);
    /// let future = svc.call(http::Request::new(())); // no tenant header: a ready 400
    /// assert_eq!(future.await.map(|r| r.status().as_u16()), Ok(400));
    /// # }
    /// ```
    pub struct RouteFuture<F, ResB, E> {
        #[pin]
        state: State<F, ResB, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, ResB, E> {
        Inner { #[pin] fut: F },
        Reject { response: Option<Response<ResB>> },
        Boxed { fut: BoxFuture<Response<ResB>, E> },
    }
}

impl<F, ResB, E> RouteFuture<F, ResB, E> {
    fn inner(fut: F) -> Self {
        RouteFuture {
            state: State::Inner { fut },
        }
    }

    fn reject(reject: Reject) -> Self
    where
        ResB: Default,
    {
        RouteFuture {
            state: State::Reject {
                response: Some(reject.response()),
            },
        }
    }

    fn boxed(fut: BoxFuture<Response<ResB>, E>) -> Self {
        RouteFuture {
            state: State::Boxed { fut },
        }
    }
}

impl<F, ResB, E> fmt::Debug for RouteFuture<F, ResB, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "inner",
            State::Reject { .. } => "reject",
            State::Boxed { .. } => "resolving",
        };
        f.debug_struct("RouteFuture").field("state", &state).finish()
    }
}

impl<F, ResB, E> Future for RouteFuture<F, ResB, E>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: Default,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { fut } => fut.poll(cx),
            // Polled again after completion: answer an empty 500 rather than panic.
            StateProj::Reject { response } => Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "polled-after-completion").response()
            }))),
            StateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn only_get_head_options_are_reads() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(is_read(&m));
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::TRACE] {
            assert!(!is_read(&m));
        }
    }
}
