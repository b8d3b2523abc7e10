//! [`RouteService`]: the service the layer makes, deciding each request on a router hit
//! without I/O and resolving a miss in a boxed future.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::decide::{Decision, Shared};
use super::future::RouteFuture;
use super::ResolvedRoute;
use crate::registry::{DynRegistry, Registry};

/// The service [`RouteLayer`](super::RouteLayer) makes: see the [module docs](super).
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
    pub(super) inner: S,
    pub(super) shared: Arc<Shared<R>>,
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
        match self.shared.decide(&req) {
            Ok(Decision::Routed(tenant, route)) => {
                req.extensions_mut().insert(ResolvedRoute { tenant, route });
                RouteFuture::inner(self.inner.call(req))
            }
            Err(reject) => RouteFuture::reject(reject),
            Ok(Decision::Resolve(tenant)) => {
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
