//! [`RouteFuture`]: the response future of the layer's service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Response, StatusCode};

use super::reject::Reject;

pub(super) type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

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
    pub(super) fn inner(fut: F) -> Self {
        RouteFuture {
            state: State::Inner { fut },
        }
    }

    pub(super) fn reject(reject: Reject) -> Self
    where
        ResB: Default,
    {
        RouteFuture {
            state: State::Reject {
                response: Some(reject.response()),
            },
        }
    }

    pub(super) fn boxed(fut: BoxFuture<Response<ResB>, E>) -> Self {
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
