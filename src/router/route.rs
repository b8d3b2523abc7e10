//! What a lookup returns: [`Route`] and [`RouteError`].

use std::fmt;
use std::time::Duration;

use crate::model::{AssignmentMode, Epoch, StampId, TenantIdError};
use crate::time::Timestamp;

/// Where to send a tenant's request. Small and `Copy`: producing one never allocates.
///
/// - `stamp` and `endpoint`: where requests go (the endpoint comes from the stamp's
///   [`StampSpec::endpoint`](crate::StampSpec::endpoint); `None` if the stamp declares none or
///   the router has not loaded the stamp yet).
/// - `epoch`: the assignment's fencing number; pass it to the stamp (a header, say) so the
///   stamp can refuse requests routed by an older assignment.
/// - `mode`: [`AssignmentMode::Serving`]; [`AssignmentMode::DualWrite`] (also write to
///   `shadow`, whose endpoint is `shadow_endpoint`); or [`AssignmentMode::Frozen`] (writes are
///   paused during a cutover: answer "retry after [`Route::retry_after`]").
/// - `stale`: the registry could not be reached and this is the last known route, served under
///   stale-if-error.
/// - `failed_over_from`: the tenant's own stamp is unhealthy and this route points at its
///   standby stamp (only with failover configured).
///
/// ```
/// use stamps::router::Route;
/// use stamps::{AssignmentMode, Epoch, StampId, Timestamp};
/// use std::time::Duration;
/// let r = Route::new(StampId(1), Epoch(7)).with_endpoint(Some("https://s1.internal"));
/// assert_eq!(r.stamp, StampId(1));
/// assert!(!r.stale && r.writes_allowed_at(Timestamp::from_millis(4_000)));
/// let frozen = r.with_mode(AssignmentMode::Frozen { shadow: Some(StampId(2)), until: Timestamp::from_millis(5_000) });
/// assert_eq!(frozen.retry_after(Timestamp::from_millis(4_000)), Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The stamp serving the tenant (or its standby, see `failed_over_from`).
    pub stamp: StampId,
    /// The stamp's endpoint, if known.
    pub endpoint: Option<&'static str>,
    /// The assignment epoch (fencing token).
    pub epoch: Epoch,
    /// The serving mode.
    pub mode: AssignmentMode,
    /// The endpoint of the mode's shadow stamp (dual-write, frozen), if any and known.
    pub shadow_endpoint: Option<&'static str>,
    /// Served from an expired entry because the registry is unreachable.
    pub stale: bool,
    /// The tenant's own stamp, when this route fails over to a standby.
    pub failed_over_from: Option<StampId>,
}

impl Route {
    /// A serving, fresh route without endpoint (for tests and custom routers).
    pub const fn new(stamp: StampId, epoch: Epoch) -> Route {
        Route {
            stamp,
            endpoint: None,
            epoch,
            mode: AssignmentMode::Serving,
            shadow_endpoint: None,
            stale: false,
            failed_over_from: None,
        }
    }

    /// Sets the endpoint.
    pub const fn with_endpoint(mut self, endpoint: Option<&'static str>) -> Route {
        self.endpoint = endpoint;
        self
    }

    /// Sets the mode.
    pub const fn with_mode(mut self, mode: AssignmentMode) -> Route {
        self.mode = mode;
        self
    }

    /// The shadow stamp that also receives writes (dual-write) or holds the other side of a
    /// cutover (frozen).
    pub fn shadow(&self) -> Option<StampId> {
        self.mode.shadow()
    }

    /// Whether the host may send writes at `now`: not frozen, or frozen with its `until`
    /// reached ([`AssignmentMode::is_frozen_at`]). A freeze is bounded whatever happens to the
    /// worker that set it: from `until` on writes go to the stamp and its shadow, as in
    /// dual-write (the migration freezes and validates again before it cuts over).
    ///
    /// ```
    /// use stamps::router::Route;
    /// use stamps::{AssignmentMode, Epoch, StampId, Timestamp};
    /// let frozen = Route::new(StampId(1), Epoch(4))
    ///     .with_mode(AssignmentMode::Frozen { shadow: Some(StampId(2)), until: Timestamp::from_millis(5_000) });
    /// assert!(!frozen.writes_allowed_at(Timestamp::from_millis(4_999)));
    /// assert!(frozen.writes_allowed_at(Timestamp::from_millis(5_000)));
    /// ```
    pub fn writes_allowed_at(&self, now: Timestamp) -> bool {
        !self.mode.is_frozen_at(now)
    }

    /// For a tenant frozen at `now`, how long until the freeze ends at the latest; `None`
    /// when writes are allowed (including once a freeze expired). Hosts put it in
    /// `Retry-After`.
    ///
    /// ```
    /// use stamps::router::Route;
    /// use stamps::{AssignmentMode, Epoch, StampId, Timestamp};
    /// use std::time::Duration;
    /// let frozen = Route::new(StampId(1), Epoch(4))
    ///     .with_mode(AssignmentMode::Frozen { shadow: None, until: Timestamp::from_millis(5_000) });
    /// assert_eq!(frozen.retry_after(Timestamp::from_millis(4_000)), Some(Duration::from_secs(1)));
    /// assert_eq!(frozen.retry_after(Timestamp::from_millis(5_000)), None);
    /// ```
    pub fn retry_after(&self, now: Timestamp) -> Option<Duration> {
        match self.mode {
            AssignmentMode::Frozen { until, .. } if now < until => Some(until.saturating_since(now)),
            _ => None,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.stamp, self.epoch, self.mode)?;
        if let Some(e) = self.endpoint {
            write!(f, " at {e}")?;
        }
        if self.stale {
            f.write_str(", stale")?;
        }
        if let Some(p) = self.failed_over_from {
            write!(f, ", failed over from {p}")?;
        }
        Ok(())
    }
}

/// Why a tenant could not be routed. Small and `Copy`: rejecting a request never allocates.
///
/// ```
/// use stamps::router::RouteError;
/// use stamps::{StampId, Timestamp};
/// let e = RouteError::StampUnavailable { stamp: StampId(3), since: Timestamp::from_millis(1_000) };
/// assert!(e.to_string().contains("stamp-003"));
/// assert!(!RouteError::Miss.is_final());
/// assert!(RouteError::UnknownTenant.is_final());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The tenant text is not a valid tenant id (answer 400 or 404).
    #[error("invalid tenant id: {0}")]
    InvalidTenant(#[from] TenantIdError),
    /// Not in the local table (or expired): call [`Router::resolve`](super::Router::resolve).
    #[error("tenant not cached; resolve it from the registry")]
    Miss,
    /// The registry has no assignment for this tenant (possibly a cached answer).
    #[error("unknown tenant: no stamp serves it")]
    UnknownTenant,
    /// The tenant's stamp is unhealthy (since `since`); only that stamp's tenants are affected.
    #[error("{stamp} is unavailable since {since}; retry later")]
    StampUnavailable {
        /// The unhealthy stamp.
        stamp: StampId,
        /// When it was marked unhealthy.
        since: Timestamp,
    },
    /// The registry cannot be reached and no route is known within the staleness limit.
    #[error("the registry is unreachable and no route within the staleness limit is known; retry later")]
    Unavailable,
}

impl RouteError {
    /// Whether retrying the same request cannot help until something changes in the registry
    /// (invalid or unknown tenant).
    pub fn is_final(&self) -> bool {
        matches!(self, RouteError::InvalidTenant(_) | RouteError::UnknownTenant)
    }
}
