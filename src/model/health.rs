//! The read side of stamp health, shared by placement and routing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::StampId;

/// A stamp's health as routing and placement see it.
///
/// ```
/// use stamps::HealthStatus;
/// assert!(HealthStatus::Degraded.is_available());
/// assert!(!HealthStatus::Unhealthy.is_available());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HealthStatus {
    /// Serving normally.
    #[default]
    Healthy,
    /// Serving, with impairment (still routable; placement may avoid it).
    Degraded,
    /// Not serving: routes to it fail fast and placement excludes it.
    Unhealthy,
}

impl HealthStatus {
    /// Whether requests may be sent to a stamp in this state.
    pub fn is_available(self) -> bool {
        self != HealthStatus::Unhealthy
    }

    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read access to per-stamp health: what placement filters and routing consult.
///
/// # Contract
/// `status` is cheap, sync and allocation-free (it is called per stamp per placement decision
/// and per route); unknown stamps are [`HealthStatus::Healthy`] unless the implementation
/// documents otherwise.
///
/// # Implementing
/// Implemented for [`AllHealthy`], maps from [`StampId`] to [`HealthStatus`], closures, and
/// references. The health monitor's lock-free table implements it too.
///
/// # Example
/// ```
/// use std::collections::HashMap;
/// use stamps::{HealthStatus, HealthView, StampId};
/// let mut m = HashMap::new();
/// m.insert(StampId(2), HealthStatus::Unhealthy);
/// assert_eq!(m.status(StampId(2)), HealthStatus::Unhealthy);
/// assert_eq!(m.status(StampId(1)), HealthStatus::Healthy);
/// let f = |s: StampId| if s.0 == 3 { HealthStatus::Degraded } else { HealthStatus::Healthy };
/// assert_eq!(f.status(StampId(3)), HealthStatus::Degraded);
/// ```
pub trait HealthView: Send + Sync {
    /// The stamp's health.
    fn status(&self, stamp: StampId) -> HealthStatus;
}

/// A [`HealthView`] in which every stamp is healthy.
///
/// ```
/// use stamps::{AllHealthy, HealthStatus, HealthView, StampId};
/// assert_eq!(AllHealthy.status(StampId(9)), HealthStatus::Healthy);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AllHealthy;

impl HealthView for AllHealthy {
    fn status(&self, _: StampId) -> HealthStatus {
        HealthStatus::Healthy
    }
}

impl<S: std::hash::BuildHasher + Send + Sync> HealthView for HashMap<StampId, HealthStatus, S> {
    fn status(&self, stamp: StampId) -> HealthStatus {
        self.get(&stamp).copied().unwrap_or_default()
    }
}

impl HealthView for BTreeMap<StampId, HealthStatus> {
    fn status(&self, stamp: StampId) -> HealthStatus {
        self.get(&stamp).copied().unwrap_or_default()
    }
}

impl<F: Fn(StampId) -> HealthStatus + Send + Sync> HealthView for F {
    fn status(&self, stamp: StampId) -> HealthStatus {
        self(stamp)
    }
}

impl<H: HealthView + ?Sized> HealthView for std::sync::Arc<H> {
    fn status(&self, stamp: StampId) -> HealthStatus {
        (**self).status(stamp)
    }
}
