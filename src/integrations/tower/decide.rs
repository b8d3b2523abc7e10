//! How the layer decides a request: the tenant it names, its route from the router (or from a
//! routing token), and the write freeze. The layer's settings live here too, shared by the
//! layer and every service it makes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::{Method, Request, StatusCode};

use super::reject::{extract_reject, Reject};
use crate::integrations::{ExtractError, TenantSource};
use crate::model::TenantId;
use crate::registry::Registry;
use crate::router::{Route, RouteError, Router};

#[cfg(feature = "token")]
use super::reject::token_reject;
#[cfg(feature = "token")]
use crate::integrations::token::{RoutingClaims, RoutingTokens};

/// The value of a header that must appear at most once.
fn single<K: http::header::AsHeaderName>(headers: &http::HeaderMap, name: K) -> Result<Option<&[u8]>, ExtractError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ExtractError::Ambiguous);
    }
    Ok(first.map(HeaderValue::as_bytes))
}

/// Whether a method only reads (passes through a cutover freeze).
fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}

pub(super) struct Shared<R: Registry + ?Sized> {
    pub(super) router: Arc<Router<R>>,
    pub(super) source: TenantSource,
    pub(super) unavailable_retry: Duration,
    #[cfg(feature = "tokio")]
    pub(super) resolve_timeout: Option<Duration>,
    #[cfg(feature = "token")]
    pub(super) tokens: Option<(RoutingTokens, &'static str)>,
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
    pub(super) fn extract<B>(&self, req: &Request<B>) -> Result<TenantId, ExtractError> {
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
    pub(super) async fn resolve(&self, tenant: &str) -> Result<Route, RouteError> {
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
    pub(super) fn route_error(&self, e: RouteError) -> Reject {
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
    pub(super) fn admit(&self, route: Route, method: &Method) -> Result<Route, Reject> {
        if is_read(method) {
            return Ok(route);
        }
        match route.retry_after(self.router.now()) {
            Some(left) => Err(Reject::unavailable("tenant-frozen", left)),
            None => Ok(route),
        }
    }

    /// Decides a request from the local table and the routing token only (no registry I/O):
    /// the tenant it names and either its route or that the router missed and the tenant must
    /// be resolved.
    pub(super) fn decide<B>(&self, req: &Request<B>) -> Result<Decision, Reject> {
        #[cfg(feature = "token")]
        if matches!(self.source, TenantSource::RoutingToken) {
            return self.decide_token_source(req);
        }
        let tenant = self.extract(req).map_err(extract_reject)?;
        #[cfg(feature = "token")]
        if let Some((tokens, header)) = &self.tokens {
            if let Some(value) = token_header(req, header)? {
                let claims = tokens.verify(value).map_err(token_reject)?;
                if claims.tenant != tenant {
                    return Err(Reject::new(StatusCode::BAD_REQUEST, "token-tenant-mismatch"));
                }
                let route = self.decide_claims(&claims, req.method())?;
                return Ok(Decision::Routed(tenant, route));
            }
        }
        match self.router.route(tenant.as_str()) {
            Ok(route) => Ok(Decision::Routed(tenant, self.admit(route, req.method())?)),
            Err(RouteError::Miss) => Ok(Decision::Resolve(tenant)),
            Err(e) => Err(self.route_error(e)),
        }
    }

    /// [`TenantSource::RoutingToken`]: the tenant is the one the verified token names.
    #[cfg(feature = "token")]
    fn decide_token_source<B>(&self, req: &Request<B>) -> Result<Decision, Reject> {
        let Some((tokens, header)) = &self.tokens else {
            // A configuration error of the host, not of the client.
            return Err(Reject::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "token-source-without-keys",
            ));
        };
        let value = token_header(req, header)?.ok_or(Reject::new(StatusCode::BAD_REQUEST, "missing-tenant"))?;
        let claims = tokens.verify(value).map_err(token_reject)?;
        let route = self.decide_claims(&claims, req.method())?;
        Ok(Decision::Routed(claims.tenant, route))
    }

    /// Routes by verified claims, never against what the router knows: a tenant the router
    /// knows to be unassigned is 404 `unknown-tenant`; a tenant it knows at a newer epoch on
    /// another stamp is 401 `stale-token`; a route at the token's epoch or newer on the
    /// token's stamp is used as the router has it (with its mode). Only where the router knows
    /// nothing newer (a miss, an unreachable registry, an older entry) does the token decide.
    #[cfg(feature = "token")]
    fn decide_claims(&self, claims: &RoutingClaims, method: &Method) -> Result<Route, Reject> {
        match self.router.route(claims.tenant.as_str()) {
            Ok(route) if route.epoch >= claims.epoch => {
                // The tenant's own stamp, also when the route fails over to its standby.
                let home = route.failed_over_from.unwrap_or(route.stamp);
                if route.epoch > claims.epoch && home != claims.stamp {
                    return Err(Reject::new(StatusCode::UNAUTHORIZED, "stale-token"));
                }
                return self.admit(route, method);
            }
            Ok(_) | Err(RouteError::Miss | RouteError::Unavailable) => {}
            // `UnknownTenant` included: a token never revives an offboarded tenant.
            Err(e) => return Err(self.route_error(e)),
        }
        let stamp = claims.stamp;
        if let Some(since) = self.router.health().and_then(|h| h.unavailable_since(stamp)) {
            return Err(self.route_error(RouteError::StampUnavailable { stamp, since }));
        }
        Ok(Route::new(stamp, claims.epoch).with_endpoint(self.router.stamp_endpoint(stamp)))
    }
}

/// What [`Shared::decide`] found without I/O.
pub(super) enum Decision {
    /// The route to call the inner service with.
    Routed(TenantId, Route),
    /// The router missed: resolve the tenant.
    Resolve(TenantId),
}

/// The routing token's value, if the request carries one. Two tokens are ambiguous (a stamp
/// reading the other one would act on another assignment than the one routed): refused as
/// malformed.
#[cfg(feature = "token")]
fn token_header<'r, B>(req: &'r Request<B>, header: &str) -> Result<Option<&'r [u8]>, Reject> {
    single(req.headers(), header).map_err(|_| Reject::new(StatusCode::BAD_REQUEST, "malformed-token"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
