//! The host's write loop: [`write_with_route`] routes a write, hands the host its fence
//! tokens, and on a fenced write refreshes the route and retries, a bounded number of times.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::fence::{FenceRejection, FenceToken, RouteTokens};
use crate::model::TenantId;
use crate::registry::Registry;
use crate::router::{Route, RouteError, Router};

/// Why one attempt of a write did not land, as the host's write function reports it to
/// [`write_with_route`].
///
/// ```
/// use stamps::migration::{FenceRejection, StampRefusal};
/// use stamps::Epoch;
/// let fenced: StampRefusal<std::io::Error> = StampRefusal::Fenced(Some(FenceRejection::Stale { token: Epoch(3), current: Epoch(4) }));
/// assert!(fenced.to_string().contains("refresh the route"));
/// ```
#[derive(Debug)]
pub enum StampRefusal<E> {
    /// A stamp's fence refused a token (the route is older than the stamp knows): refresh
    /// the route and retry. The rejection, if the stamp said which (an HTTP 409 may not).
    Fenced(Option<FenceRejection>),
    /// Anything else (a timeout, a constraint of the host's own): not retried here.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for StampRefusal<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StampRefusal::Fenced(Some(r)) => write!(f, "fenced: {r}"),
            StampRefusal::Fenced(None) => f.write_str("fenced: refresh the route and retry"),
            StampRefusal::Failed(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for StampRefusal<E> {}

/// Why [`write_with_route`] gave up. Nothing was acknowledged; a write that reached only some
/// stamps of its route may or may not be visible later, as with any unacknowledged write.
///
/// ```
/// use stamps::migration::RoutedWriteError;
/// use std::time::Duration;
/// let e: RoutedWriteError<String> = RoutedWriteError::Frozen { retry_after: Duration::from_secs(2) };
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
/// assert!(e.to_string().contains("frozen"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RoutedWriteError<E> {
    /// The router could not route the tenant (unknown, invalid, its stamp unavailable, the
    /// registry unreachable).
    Route(RouteError),
    /// The tenant is frozen for a cutover: retry after `retry_after` (at most `max_freeze`).
    Frozen {
        /// How long until the freeze ends at the latest.
        retry_after: Duration,
    },
    /// Every attempt was fenced: the route kept changing (a migration moving the tenant back
    /// and forth), or the registry serves an older assignment than the stamps know.
    KeptFenced {
        /// Attempts made.
        attempts: u32,
        /// The last stamp's refusal, if it said.
        last: Option<FenceRejection>,
    },
    /// The host's write failed otherwise.
    Write(E),
}

impl<E> RoutedWriteError<E> {
    /// When a retry of the whole write may succeed: the freeze's remainder for
    /// [`Frozen`](Self::Frozen), `None` otherwise (the host picks its own back-off).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RoutedWriteError::Frozen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RoutedWriteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutedWriteError::Route(e) => write!(f, "cannot route the write: {e}"),
            RoutedWriteError::Frozen { retry_after } => {
                write!(f, "tenant is frozen for a cutover; retry in {retry_after:?}")
            }
            RoutedWriteError::KeptFenced { attempts, last } => {
                write!(f, "write fenced on all {attempts} attempts")?;
                match last {
                    Some(r) => write!(f, " (last: {r})"),
                    None => Ok(()),
                }
            }
            RoutedWriteError::Write(e) => write!(f, "write failed: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RoutedWriteError<E> {}

/// The write loop of a host's data path, once: route `tenant` (resolving a miss from the
/// registry), refuse while it is frozen, call `write` with the route and its fence tokens
/// ([`FenceToken::for_route`], allocation-free; an expired freeze gives dual-write's), and when
/// `write` reports [`StampRefusal::Fenced`], invalidate the tenant, resolve it again (one
/// registry read) and retry, at most `attempts` times in all.
///
/// `write` applies the write on every token's stamp (the serving stamp first, then the
/// dual-write shadow, with the serving stamp's row version) and returns `Ok` only once all of
/// them applied it: that is the acknowledgement.
///
/// ```
/// use stamps::migration::reference::{ReferenceDataPlane, WriteError};
/// use stamps::migration::{write_with_route, StampRefusal};
/// use stamps::router::Router;
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = InMemoryRegistry::new();
/// # registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
/// #     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// # registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
/// let router = Router::new(registry);
/// let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]); // stands for the stamps
/// let tenant = TenantId::new("acme")?;
/// let version = write_with_route(&router, &tenant, 3, |_route, tokens| {
///     let plane = plane.clone();
///     async move {
///         let mut seq = None; // the serving stamp's version, reused on the shadow
///         for token in tokens {
///             match plane.apply(&token, "greeting", "hello", seq) {
///                 Ok(v) => seq = Some(v.seq),
///                 Err(WriteError::Fenced { rejection, .. }) => return Err(StampRefusal::Fenced(Some(rejection))),
///                 Err(other) => return Err(StampRefusal::Failed(other)),
///             }
///         }
///         Ok(seq)
///     }
/// })
/// .await?;
/// assert!(version.is_some());
/// # Ok(()) }
/// ```
pub async fn write_with_route<R, T, E, F, Fut>(
    router: &Router<R>,
    tenant: &TenantId,
    attempts: u32,
    mut write: F,
) -> Result<T, RoutedWriteError<E>>
where
    R: Registry + ?Sized,
    F: FnMut(Route, RouteTokens) -> Fut,
    Fut: Future<Output = Result<T, StampRefusal<E>>>,
{
    let name = tenant.as_str();
    let mut route = match router.route(name) {
        Err(RouteError::Miss) => router.resolve(name).await,
        other => other,
    }
    .map_err(RoutedWriteError::Route)?;
    let attempts = attempts.max(1);
    let mut last = None;
    for attempt in 1..=attempts {
        let now = router.now();
        if let Some(retry_after) = route.retry_after(now) {
            return Err(RoutedWriteError::Frozen { retry_after });
        }
        match write(route, FenceToken::for_route(tenant, &route, now)).await {
            Ok(acked) => return Ok(acked),
            Err(StampRefusal::Failed(e)) => return Err(RoutedWriteError::Write(e)),
            Err(StampRefusal::Fenced(rejection)) => last = rejection,
        }
        if attempt < attempts {
            // The tenant id is valid (it is a `TenantId`), so invalidating cannot fail.
            let _ = router.invalidate(name);
            route = router.resolve(name).await.map_err(RoutedWriteError::Route)?;
        }
    }
    Err(RoutedWriteError::KeptFenced { attempts, last })
}
