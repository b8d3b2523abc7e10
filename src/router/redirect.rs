//! Routing overrides: the registry's per-stamp redirects
//! ([`Registry::set_route_override`](crate::Registry::set_route_override)), which every router
//! learns from the feed (and from [`Router::load_stamps`]), and the route they give.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::endpoints::StampView;
use super::shared::Shared;
use super::{Route, RouteError, Router};
use crate::error::Error;
use crate::health::HealthTable;
use crate::model::{AssignmentMode, Epoch, Redirect, RedirectWhen, StampId};
use crate::registry::Registry;

impl<R: Registry + ?Sized> Router<R> {
    /// The routing overrides this router applies, by stamp: its view of the registry's table
    /// ([`Registry::route_overrides`]), kept current from
    /// the change feed.
    ///
    /// An [`RedirectWhen::Always`] redirect sends every route of the stamp's tenants to the
    /// target (with `failed_over_from` naming the tenant's own stamp); a
    /// [`RedirectWhen::WhileUnhealthy`] one does so only while the stamp is unhealthy and the
    /// target is not, and only with failover on
    /// ([`RouterConfig::failover`](super::RouterConfig::failover)).
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// for id in [7, 9] {
    ///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
    ///         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.endpoint(format!("https://s{id}"))).await?;
    /// }
    /// registry.assign(&TenantSpec::new(TenantId::new("pay")?), StampId(7)).await?;
    /// let router = Router::new(registry.clone());
    /// router.warm_up().await?;
    /// registry.set_route_override(StampId(7), Some(Redirect::new(StampId(9), RedirectWhen::Always)),
    ///     &Decision::new("alice", "stamp-007 restore")?).await?;
    /// router.sync().await?;
    /// assert_eq!(router.route_overrides().get(&StampId(7)).map(|r| r.to), Some(StampId(9)));
    /// let r = router.route("pay")?;
    /// assert_eq!((r.stamp, r.failed_over_from), (StampId(9), Some(StampId(7))));
    /// # Ok(()) }
    /// ```
    pub fn route_overrides(&self) -> HashMap<StampId, Redirect> {
        self.shared.redirects.read().clone()
    }

    /// Reads the registry's routing overrides, replacing the router's view (called by
    /// [`Router::load_stamps`]).
    pub(super) async fn load_overrides(&self) -> Result<usize, Error> {
        let overrides = self.registry.route_overrides().await?;
        let map: HashMap<StampId, Redirect> = overrides
            .iter()
            .filter_map(|o| o.redirect.map(|r| (o.stamp, r)))
            .collect();
        let n = map.len();
        self.shared.replace_redirects(map);
        Ok(n)
    }
}

impl Shared {
    /// Sets (or clears) one stamp's redirect, from a feed change.
    pub(super) fn set_redirect(&self, stamp: StampId, redirect: Option<Redirect>) {
        let mut map = self.redirects.write();
        match redirect {
            Some(r) => {
                map.insert(stamp, r);
            }
            None => {
                map.remove(&stamp);
            }
        }
        self.publish_redirects(&map);
    }

    pub(super) fn replace_redirects(&self, next: HashMap<StampId, Redirect>) {
        let mut map = self.redirects.write();
        *map = next;
        self.publish_redirects(&map);
    }

    fn publish_redirects(&self, map: &HashMap<StampId, Redirect>) {
        let any = map.values().any(|r| r.when == RedirectWhen::Always);
        self.always_redirects.store(any, Ordering::Release);
    }

    /// The route an [`RedirectWhen::Always`] redirect of `stamp` gives, if it has one.
    #[cold]
    pub(super) fn redirected(
        &self,
        health: Option<&HealthTable>,
        stamp: StampId,
        epoch: Epoch,
        stale: bool,
    ) -> Option<Result<Route, RouteError>> {
        let r = self.redirects.read().get(&stamp).copied()?;
        if r.when != RedirectWhen::Always {
            return None;
        }
        if let Some(since) = health.and_then(|h| h.unavailable_since(r.to)) {
            return Some(Err(RouteError::StampUnavailable { stamp: r.to, since }));
        }
        Some(Ok(Route {
            stamp: r.to,
            endpoint: self.endpoint(r.to),
            epoch,
            mode: AssignmentMode::Serving,
            shadow_endpoint: None,
            stale,
            failed_over_from: Some(stamp),
        }))
    }

    /// The route while `stamp` is unhealthy: its [`RedirectWhen::WhileUnhealthy`] target if
    /// failover is on and the target is healthy, else [`RouteError::StampUnavailable`].
    #[cold]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail_over(
        &self,
        stamps: &StampView,
        health: &HealthTable,
        stamp: StampId,
        since: crate::time::Timestamp,
        epoch: Epoch,
        stale: bool,
    ) -> Result<Route, RouteError> {
        let unavailable = Err(RouteError::StampUnavailable { stamp, since });
        if !self.config.failover {
            return unavailable;
        }
        let Some(r) = self.redirects.read().get(&stamp).copied() else {
            return unavailable;
        };
        if r.when != RedirectWhen::WhileUnhealthy || health.unavailable_since(r.to).is_some() {
            return unavailable;
        }
        Ok(Route {
            stamp: r.to,
            endpoint: stamps.endpoint(r.to),
            epoch,
            mode: AssignmentMode::Serving,
            shadow_endpoint: None,
            stale,
            failed_over_from: Some(stamp),
        })
    }
}
