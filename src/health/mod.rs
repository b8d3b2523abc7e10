//! Stamp health: sources report, a monitor applies hysteresis, a lock-free table publishes.
//!
//! - [`HealthSource`]: checks one stamp and reports [`HealthStatus`] with a reason and time.
//!   [`StaticHealth`] is set by hand (tests, operators' kill switch); [`AggregateHealth`]
//!   combines several sources (the worst report wins).
//! - [`HealthMonitor`]: applies hysteresis like a load balancer (`fall` consecutive failures
//!   mark a stamp unhealthy, `rise` consecutive successes recover it) and publishes into a
//!   [`HealthTable`].
//! - [`HealthTable`]: lock-free reads ([`HealthView`](crate::HealthView)); the router consults it on every route
//!   and fails fast with [`RouteError::StampUnavailable`](crate::router::RouteError) for
//!   tenants of an unhealthy stamp, leaving every other stamp's tenants untouched.
//!
//! ```
//! use stamps::health::{HealthMonitor, HealthReport, Hysteresis, StaticHealth};
//! use stamps::{FakeClock, HealthStatus, HealthView, StampId};
//! let clock = FakeClock::new();
//! let monitor = HealthMonitor::builder(StaticHealth::new())
//!     .hysteresis(Hysteresis::new(2, 1)?)
//!     .clock(clock.clone())
//!     .build();
//! let down = HealthReport::unhealthy(StampId(1), "db down", clock.now());
//! monitor.observe(&down);
//! assert_eq!(monitor.table().status(StampId(1)), HealthStatus::Healthy); // one failure
//! monitor.observe(&down);
//! assert_eq!(monitor.table().status(StampId(1)), HealthStatus::Unhealthy); // two in a row
//! # use stamps::Clock;
//! # Ok::<(), stamps::Error>(())
//! ```

mod monitor;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod shared;
mod sources;
mod table;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

#[cfg(feature = "tokio")]
pub use monitor::HealthTask;
pub use monitor::{HealthMonitor, HealthMonitorBuilder, Hysteresis};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use shared::{OnExpired, PgHealth};
pub use sources::{AggregateHealth, StaticHealth};
pub use table::{HealthTable, StampHealth};

use crate::model::{HealthStatus, Stamp, StampId};
use crate::time::Timestamp;

/// One observation of a stamp's health.
///
/// ```
/// use stamps::health::HealthReport;
/// use stamps::{HealthStatus, StampId, Timestamp};
/// let r = HealthReport::unhealthy(StampId(2), "503 from /healthz", Timestamp::from_millis(10));
/// assert_eq!(r.status, HealthStatus::Unhealthy);
/// assert_eq!(r.reason.as_deref(), Some("503 from /healthz"));
/// assert!(HealthReport::healthy(StampId(2), Timestamp::ZERO).reason.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// The stamp checked.
    pub stamp: StampId,
    /// What the check found.
    pub status: HealthStatus,
    /// Why, for degraded or unhealthy reports.
    pub reason: Option<Arc<str>>,
    /// When the check ran.
    pub at: Timestamp,
}

impl HealthReport {
    /// A report.
    pub fn new(stamp: StampId, status: HealthStatus, reason: Option<&str>, at: Timestamp) -> Self {
        HealthReport {
            stamp,
            status,
            reason: reason.map(Arc::from),
            at,
        }
    }

    /// A healthy report.
    pub fn healthy(stamp: StampId, at: Timestamp) -> Self {
        Self::new(stamp, HealthStatus::Healthy, None, at)
    }

    /// A degraded report with its reason.
    pub fn degraded(stamp: StampId, reason: &str, at: Timestamp) -> Self {
        Self::new(stamp, HealthStatus::Degraded, Some(reason), at)
    }

    /// An unhealthy report with its reason.
    pub fn unhealthy(stamp: StampId, reason: &str, at: Timestamp) -> Self {
        Self::new(stamp, HealthStatus::Unhealthy, Some(reason), at)
    }
}

/// Checks the health of one stamp (an HTTP probe, a metrics query, a synthetic transaction).
///
/// # Contract
/// `check` always returns a report: a probe that fails, times out or cannot be made is an
/// [`HealthStatus::Unhealthy`] report with the reason, never a panic. It should bound its own
/// running time (the monitor checks stamps one after another). Reports for one stamp are
/// independent; hysteresis belongs to [`HealthMonitor`], not to sources.
///
/// # Implementing
/// Implement `check` with `#[async_trait]`. Take time from a [`Clock`](crate::Clock) so tests
/// can use [`FakeClock`](crate::FakeClock). Combine sources with [`AggregateHealth`].
///
/// # Example
/// ```
/// use async_trait::async_trait;
/// use stamps::health::{HealthReport, HealthSource};
/// use stamps::*;
///
/// /// Unhealthy while the stamp declares no endpoint to probe.
/// #[derive(Debug)]
/// struct NeedsEndpoint;
///
/// #[async_trait]
/// impl HealthSource for NeedsEndpoint {
///     async fn check(&self, stamp: &Stamp) -> HealthReport {
///         match &stamp.spec.endpoint {
///             Some(_) => HealthReport::healthy(stamp.id(), Timestamp::ZERO),
///             None => HealthReport::unhealthy(stamp.id(), "no endpoint", Timestamp::ZERO),
///         }
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let spec = StampSpec::new(StampId(2), "s2", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// let stamp = Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO);
/// assert_eq!(NeedsEndpoint.check(&stamp).await.status, HealthStatus::Unhealthy);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait HealthSource: Debug + Send + Sync + 'static {
    /// Checks one stamp.
    async fn check(&self, stamp: &Stamp) -> HealthReport;
}

#[async_trait]
impl<S: HealthSource + ?Sized> HealthSource for Arc<S> {
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        (**self).check(stamp).await
    }
}

#[async_trait]
impl<S: HealthSource + ?Sized> HealthSource for Box<S> {
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        (**self).check(stamp).await
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn HealthSource) {}
