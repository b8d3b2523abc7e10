//! The miss path: [`Router::resolve`] joins the tenant's single flight, reads the registry
//! once, caches the answer (or "unknown tenant"), and falls back to a stale route when the
//! registry fails.

use std::sync::atomic::Ordering;

use super::flight::Join;
use super::shared::Shared;
use super::stats::Counter;
use super::table::{Key, SlotData, Upsert, TOMBSTONE};
use super::writes::Writes;
use super::{Route, RouteError, Router};
use crate::model::{Assignment, AssignmentMode, Epoch, StampId, TenantId};
use crate::registry::Registry;
use crate::telemetry::{self, names, Value};

impl<R: Registry + ?Sized> Router<R> {
    /// Routes a tenant, reading the registry on a miss.
    ///
    /// Concurrent calls for one uncached tenant make one registry call (single-flight); the
    /// others wait for its answer. A tenant without an assignment is remembered in the
    /// negative cache for the negative TTL. When the registry fails, the last known route is
    /// served flagged stale if stale-if-error allows, else [`RouteError::Unavailable`]. While
    /// routes are served stale, `resolve` tries the registry again at most once per
    /// `poll_interval` (one caller does, the others get the stale route at once), so a
    /// recovered registry is noticed even without the follower task.
    /// Cancel-safe: if the caller that performs the read is dropped, a waiter takes over.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// let a = registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
    /// let router = Router::new(registry);
    /// assert_eq!(router.resolve("acme").await?.epoch, a.epoch);
    /// assert_eq!(router.stats().misses, 1);
    /// # Ok(()) }
    /// ```
    pub async fn resolve(&self, tenant: &str) -> Result<Route, RouteError> {
        let revalidate = match self.route(tenant) {
            Err(RouteError::Miss) => false,
            Ok(route) if route.stale && self.shared.may_retry_registry() => true,
            other => return other,
        };
        loop {
            match self.shared.flights.join(tenant) {
                Join::Lead(leader) => {
                    // A previous leader publishes into the table before it leaves the flight
                    // map, so a caller that leads now sees its answer here.
                    let outcome = match self.shared.lookup(tenant, false) {
                        Err(RouteError::Miss) => self.timed_load(tenant).await,
                        Ok(route) if revalidate && route.stale => self.timed_load(tenant).await,
                        other => other,
                    };
                    leader.finish(outcome);
                    return outcome;
                }
                Join::Follow(wait) => {
                    if let Some(outcome) = wait.await {
                        return outcome;
                    }
                }
            }
        }
    }

    /// [`Router::load`] in a `stamps.router.resolve` span (feature `tracing`), timed into
    /// [`names::ROUTER_RESOLVE_DURATION`] by outcome (feature `metrics`).
    async fn timed_load(&self, tenant: &str) -> Result<Route, RouteError> {
        let started = std::time::Instant::now();
        #[cfg(feature = "tracing")]
        let outcome = {
            use tracing::Instrument;
            let span = tracing::debug_span!("stamps.router.resolve", router = self.shared.id, tenant);
            self.load(tenant).instrument(span).await
        };
        #[cfg(not(feature = "tracing"))]
        let outcome = self.load(tenant).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(RouteError::UnknownTenant) => "unknown_tenant",
            Err(RouteError::Unavailable) => "unavailable",
            Err(_) => "error",
        };
        telemetry::seconds(
            names::ROUTER_RESOLVE_DURATION,
            &[("outcome", Value::Str(label))],
            started.elapsed(),
        );
        outcome
    }

    /// Reads the registry for `tenant` and caches the answer (the single-flight leader).
    async fn load(&self, tenant: &str) -> Result<Route, RouteError> {
        let sh = &*self.shared;
        let id = TenantId::new(tenant)?;
        let key = Key::parse(tenant)?;
        // The entry as it was before the read: if the feed moves it while the read is in
        // flight, the read may predate that change and must not undo it.
        let before = {
            let _w = sh.writer.lock();
            Writes::new(sh).get(&key).map(|d| d.epoch)
        };
        if before.is_some() {
            // The miss may have come while a writer held the table (a rebuild moves entries):
            // if the entry is usable now, no registry read is needed. A stale route is not: the
            // read is what revalidates it.
            match sh.lookup(tenant, false) {
                Ok(route) if !route.stale => return Ok(route),
                Ok(_) | Err(RouteError::Miss) => {}
                Err(e) => return Err(e),
            }
        }
        let read = self.registry.assignment(&id).await;
        match read {
            Ok(Some(a)) => {
                sh.mark_up();
                self.learn_stamps(&a).await;
                let now = sh.clock.now().as_millis();
                {
                    let _w = sh.writer.lock();
                    let mut neg = sh.negative.batch();
                    neg.remove(tenant, &key);
                    neg.commit();
                    let mut b = Writes::new(sh);
                    let up = b.upsert(tenant, &key, sh.slot_for(&a, now), a.mode);
                    b.commit();
                    sh.count_upsert(up, false);
                }
                match sh.lookup(tenant, false) {
                    Err(RouteError::Miss) => sh.make_route(a.stamp, a.epoch, a.mode, false),
                    other => other,
                }
            }
            Ok(None) => {
                sh.mark_up();
                let now = sh.clock.now().as_millis();
                let generation = sh.generation.load(Ordering::Acquire);
                {
                    let _w = sh.writer.lock();
                    let mut b = Writes::new(sh);
                    match b.get(&key) {
                        // The feed changed this entry while the read was in flight, so the
                        // read may predate that change: keep the entry (a later unassignment
                        // reaches it through the feed too).
                        Some(old) if Some(old.epoch) != before => {}
                        Some(old) if !old.is_tombstone() => {
                            // Unassigned since we cached it: record that, above the old epoch
                            // (a re-assignment always gets a larger epoch than the unassign).
                            let data = SlotData {
                                epoch: old.epoch.saturating_add(1),
                                fetched: now,
                                stamp: 0,
                                meta: generation | TOMBSTONE,
                            };
                            let up = b.upsert(tenant, &key, data, AssignmentMode::Serving);
                            b.commit();
                            sh.count_upsert(up, false);
                        }
                        Some(_) => {}
                        None => {
                            let mut neg = sh.negative.batch();
                            let data = SlotData {
                                epoch: 0,
                                fetched: now,
                                stamp: 0,
                                meta: generation | TOMBSTONE,
                            };
                            if let Upsert::Inserted { evicted: true } =
                                neg.upsert(tenant, &key, data, AssignmentMode::Serving)
                            {
                                sh.stats.incr(Counter::Eviction);
                            }
                            neg.commit();
                        }
                    }
                }
                match sh.lookup(tenant, false) {
                    Err(RouteError::Miss) => Err(RouteError::UnknownTenant),
                    other => other,
                }
            }
            Err(_) => {
                sh.stats.incr(Counter::RegistryError);
                let now = sh.clock.now().as_millis();
                sh.mark_down(now);
                sh.stale_route(tenant, &key, now)
            }
        }
    }

    /// Learns the endpoints of the stamps an assignment names, if not known yet.
    async fn learn_stamps(&self, a: &Assignment) {
        for stamp in a.stamps() {
            if self.shared.stamps.load().map.contains_key(&stamp) {
                continue;
            }
            if let Ok(Some(s)) = self.registry.stamp(stamp).await {
                self.shared.set_stamp(stamp, s.spec.endpoint.as_deref());
            }
        }
    }
}

impl Shared {
    /// The route after a failed registry read: the cached entry, flagged stale, if allowed.
    pub(super) fn stale_route(&self, tenant: &str, key: &Key<'_>, now: u64) -> Result<Route, RouteError> {
        let entry = match key {
            Key::Short(k) => self.fast_entry(tenant, k),
            Key::Long(_) => self.long_entry(tenant, key),
        };
        match entry {
            Some((d, mode)) if !d.is_tombstone() && self.may_serve_stale(d.fetched, now) => {
                let r = self.make_route(StampId(d.stamp), Epoch(d.epoch), mode, true);
                if r.is_ok() {
                    self.stats.incr(Counter::StaleServe);
                }
                r
            }
            _ => Err(RouteError::Unavailable),
        }
    }
}
