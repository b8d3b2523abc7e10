//! Standby failover: per-tenant standby stamps ([`Router::set_standby`]) and the route to
//! the standby while a tenant's own stamp is unhealthy.

use super::endpoints::StampView;
use super::shared::Shared;
use super::{Route, RouteError, Router};
use crate::health::HealthTable;
use crate::model::{AssignmentMode, Epoch, StampId, TenantId, TenantIdError};
use crate::registry::Registry;

impl<R: Registry + ?Sized> Router<R> {
    /// Names a standby stamp for an active-active tenant: while the tenant's own stamp is
    /// unhealthy and failover is on
    /// ([`RouterConfig::failover`](super::RouterConfig::failover)), routes go to the
    /// standby (if it is healthy) with `failed_over_from` set. `None` removes the standby. The
    /// standby's endpoint is known once the router has read the stamps
    /// ([`Router::load_stamps`], [`Router::warm_up`] or [`Router::sync`]).
    ///
    /// ```
    /// use stamps::health::HealthTable;
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let health = HealthTable::new();
    /// let router = Router::builder(InMemoryRegistry::new()).config(stamps::RouterConfig::default().failover(true)).health(health.clone()).build()?;
    /// router.preload([("pay", StampId(1), Epoch(4), AssignmentMode::Serving)])?;
    /// router.set_standby("pay", Some(StampId(2)))?;
    /// health.set(StampId(1), HealthStatus::Unhealthy, Timestamp::ZERO, Some("down"));
    /// let r = router.route("pay")?;
    /// assert_eq!((r.stamp, r.failed_over_from), (StampId(2), Some(StampId(1))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_standby(&self, tenant: &str, standby: Option<StampId>) -> Result<(), TenantIdError> {
        TenantId::validate(tenant)?;
        let mut map = self.shared.standby.write();
        match standby {
            Some(s) => {
                map.insert(Box::from(tenant), s);
            }
            None => {
                map.remove(tenant);
            }
        }
        Ok(())
    }
}

impl Shared {
    #[cold]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail_over(
        &self,
        stamps: &StampView,
        health: &HealthTable,
        tenant: &str,
        stamp: StampId,
        since: crate::time::Timestamp,
        epoch: Epoch,
        stale: bool,
    ) -> Result<Route, RouteError> {
        let unavailable = Err(RouteError::StampUnavailable { stamp, since });
        if !self.config.failover {
            return unavailable;
        }
        let Some(standby) = self.standby.read().get(tenant).copied() else {
            return unavailable;
        };
        if standby == stamp || health.unavailable_since(standby).is_some() {
            return unavailable;
        }
        Ok(Route {
            stamp: standby,
            endpoint: stamps.endpoint(standby),
            epoch,
            mode: AssignmentMode::Serving,
            shadow_endpoint: None,
            stale,
            failed_over_from: Some(stamp),
        })
    }
}
