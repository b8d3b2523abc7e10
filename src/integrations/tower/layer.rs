//! [`RouteLayer`]: the layer and its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::decide::Shared;
use super::service::RouteService;
use crate::integrations::TenantSource;
use crate::registry::{DynRegistry, Registry};
use crate::router::Router;

#[cfg(feature = "token")]
use crate::integrations::token::RoutingTokens;

/// A [`Layer`] that routes each request to its tenant's stamp: see the [module
/// docs](super) for the answers and costs. Cheap to clone.
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
    /// docs](super#routing-tokens). A `header` that is not a valid header name matches no request.
    /// With [`TenantSource::RoutingToken`] the token is also where the tenant comes from (a
    /// request without one is 400 `missing-tenant`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::integrations::token::{KeyId, RoutingTokens, TokenKeys};
    /// use stamps::integrations::tower::RouteLayer;
    /// use stamps::integrations::TenantSource;
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let keys = TokenKeys::new(KeyId(1), vec![7; 32])?;
    /// let router = Arc::new(Router::new(InMemoryRegistry::new()));
    /// // The tenant from a header; a token, when present, must name the same tenant.
    /// let layer = RouteLayer::new(router.clone(), TenantSource::header())
    ///     .tokens(RoutingTokens::with_system_clock(keys.clone()), "x-stamps-token");
    /// // The tenant from the token alone.
    /// let by_token = RouteLayer::new(router, TenantSource::RoutingToken)
    ///     .tokens(RoutingTokens::with_system_clock(keys), "x-stamps-token");
    /// # let _ = (layer, by_token);
    /// # Ok::<(), stamps::Error>(())
    /// ```
    #[cfg(feature = "token")]
    #[cfg_attr(docsrs, doc(cfg(feature = "token")))]
    pub fn tokens(mut self, tokens: RoutingTokens, header: &'static str) -> Self {
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
