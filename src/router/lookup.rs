//! The hit path: [`Router::route`] and the table lookup behind it, from the tenant text to
//! a [`Route`] (fast table, long-id table, negative cache, TTL and generation checks, modes,
//! health).

use std::sync::atomic::Ordering;

use super::fast;
use super::shared::Shared;
use super::stats::Counter;
use super::table::{self, Key, SlotData};
use super::{Route, RouteError, Router};
use crate::model::{AssignmentMode, Epoch, StampId};
use crate::registry::Registry;

impl<R: Registry + ?Sized> Router<R> {
    /// Routes a tenant from the local table: sync, allocation-free, lock-free.
    ///
    /// `tenant` is untrusted text (a subdomain, a header): only text equal to a cached id is
    /// answered from the table, and anything else is validated like
    /// [`TenantId::validate`](crate::model::TenantId::validate) before it is looked up
    /// further. Answers:
    /// - `Ok(route)` for a fresh entry, or a stale one (`route.stale`) while the registry is
    ///   unreachable and stale-if-error allows;
    /// - [`RouteError::Miss`] when the tenant is not cached or expired: await
    ///   [`Router::resolve`];
    /// - [`RouteError::UnknownTenant`] from the negative cache;
    /// - [`RouteError::StampUnavailable`] when the tenant's stamp is unhealthy (and no standby
    ///   applies);
    /// - [`RouteError::InvalidTenant`] for bad text.
    ///
    /// ```
    /// use stamps::router::{Router, RouteError};
    /// use stamps::{AssignmentMode, Epoch, InMemoryRegistry, StampId};
    /// let router = Router::new(InMemoryRegistry::new());
    /// router.preload([("acme", StampId(2), Epoch(9), AssignmentMode::Serving)])?;
    /// let r = router.route("acme")?;
    /// assert_eq!((r.stamp, r.epoch, r.stale), (StampId(2), Epoch(9), false));
    /// assert_eq!(router.route("globex"), Err(RouteError::Miss));
    /// assert!(matches!(router.route("Acme!"), Err(RouteError::InvalidTenant(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn route(&self, tenant: &str) -> Result<Route, RouteError> {
        self.shared.lookup(tenant, true)
    }
}

impl Shared {
    /// The table lookup behind `route`; `count` records hits and negative hits.
    ///
    /// The hit path for ids of up to 24 bytes does not validate the text: only a valid id can
    /// equal a key the table holds (see [`table::inline_words`]). Everything else, including
    /// every invalid id, goes through [`Shared::lookup_slow`], which validates in full.
    ///
    /// `count` records the outcome in the counters (hit, miss, negative hit, stale serve,
    /// stamp unavailable).
    #[inline(always)]
    pub(super) fn lookup(&self, tenant: &str, count: bool) -> Result<Route, RouteError> {
        if let Some(k) = table::inline_words(tenant) {
            let hash = self.fast_hash(&k);
            if let Some(d) = self.fast.get(&k, hash) {
                let now = self.now_ms();
                // A fresh serving entry of the current generation (no flag set): the hot case,
                // decided with one comparison of `meta` and one of the time.
                if d.meta == self.generation.load(Ordering::Relaxed) && now < d.fetched.saturating_add(self.ttl_ms) {
                    return self.serve(d, count);
                }
                return self.answer_fast_slow(tenant, &k, hash, d, now, count);
            }
        }
        self.lookup_slow(tenant, count)
    }

    /// A fresh, serving route from `d`, counted as a hit.
    #[inline(always)]
    pub(super) fn serve(&self, d: SlotData, count: bool) -> Result<Route, RouteError> {
        let r = self.make_route(StampId(d.stamp), Epoch(d.epoch), AssignmentMode::Serving, false);
        if count {
            match r {
                Ok(_) => self.stats.incr(Counter::Hit),
                Err(_) => self.stats.incr(Counter::StampUnavailable),
            }
        }
        r
    }

    /// `lookup` for a fast-table entry that is not a fresh serving one: a tombstone, a mode,
    /// an expired entry, or an entry of an older generation.
    #[inline(never)]
    pub(super) fn answer_fast_slow(
        &self,
        tenant: &str,
        k: &fast::Words,
        hash: u64,
        d: SlotData,
        now: u64,
        count: bool,
    ) -> Result<Route, RouteError> {
        let r = if d.has_mode() {
            self.answer_with_mode(tenant, k, hash, d, now, count)
        } else {
            self.answer(AssignmentMode::Serving, d, now, count)
        };
        self.count_miss(&r, count);
        r
    }

    /// `lookup` for long ids, ids the fast table does not hold, and invalid text.
    #[inline(never)]
    pub(super) fn lookup_slow(&self, tenant: &str, count: bool) -> Result<Route, RouteError> {
        let key = match Key::parse(tenant) {
            Ok(key) => key,
            Err(e) => {
                if count {
                    self.stats.incr(Counter::InvalidTenant);
                }
                return Err(e.into());
            }
        };
        let now = self.now_ms();
        let r = match key {
            Key::Long(_) => match self.long_entry(tenant, &key) {
                Some((d, mode)) => self.answer(mode, d, now, count),
                None => self.negative_lookup(&key, now, count),
            },
            Key::Short(_) => self.negative_lookup(&key, now, count),
        };
        self.count_miss(&r, count);
        r
    }

    #[inline]
    pub(super) fn count_miss(&self, r: &Result<Route, RouteError>, count: bool) {
        if count && matches!(r, Err(RouteError::Miss)) {
            self.stats.incr(Counter::Miss);
        }
    }

    /// A consistent entry of the fast table: slot and mode of the same write. Only tenants in
    /// dual-write or frozen mode look further than the slot; one that keeps racing writes to
    /// that very tenant (a writer descheduled between the two stores) finally reads under the
    /// writer lock, which no write holds for long.
    #[inline(always)]
    pub(super) fn fast_entry(&self, tenant: &str, w: &fast::Words) -> Option<(SlotData, AssignmentMode)> {
        let hash = self.fast_hash(w);
        let d = self.fast.get(w, hash)?;
        if !d.has_mode() {
            return Some((d, AssignmentMode::Serving));
        }
        self.fast_entry_with_mode(tenant, w, hash, d)
    }

    /// `lookup` for a tenant in dual-write or frozen mode.
    #[cold]
    #[inline(never)]
    pub(super) fn answer_with_mode(
        &self,
        tenant: &str,
        w: &fast::Words,
        hash: u64,
        d: SlotData,
        now: u64,
        count: bool,
    ) -> Result<Route, RouteError> {
        match self.fast_entry_with_mode(tenant, w, hash, d) {
            Some((d, mode)) => self.answer(mode, d, now, count),
            None => Err(RouteError::Miss),
        }
    }

    #[cold]
    pub(super) fn fast_entry_with_mode(
        &self,
        tenant: &str,
        w: &fast::Words,
        hash: u64,
        mut d: SlotData,
    ) -> Option<(SlotData, AssignmentMode)> {
        for _ in 0..64 {
            if !d.has_mode() {
                return Some((d, AssignmentMode::Serving));
            }
            match self.modes.get(tenant) {
                Some((epoch, mode)) if epoch == d.epoch => return Some((d, mode)),
                _ => std::hint::spin_loop(),
            }
            d = self.fast.get(w, hash)?;
        }
        let _w = self.writer.lock();
        let d = self.fast.get(w, hash)?;
        let mode = match self.modes.get(tenant) {
            Some((epoch, mode)) if d.has_mode() && epoch == d.epoch => mode,
            _ => AssignmentMode::Serving,
        };
        Some((d, mode))
    }

    /// An entry of the long-id table (slot and mode come from one shard snapshot).
    pub(super) fn long_entry(&self, tenant: &str, key: &Key<'_>) -> Option<(SlotData, AssignmentMode)> {
        let hash = self.table.hash(key);
        let shard = self.table.load(self.table.index(hash))?;
        let d = shard.get(key, hash)?;
        let mode = if d.has_mode() {
            shard.mode(tenant)
        } else {
            AssignmentMode::Serving
        };
        Some((d, mode))
    }

    #[inline]
    pub(super) fn fast_hash(&self, w: &fast::Words) -> u64 {
        self.fast_seeds.hash(w)
    }

    #[cold]
    pub(super) fn negative_lookup(&self, key: &Key<'_>, now: u64, count: bool) -> Result<Route, RouteError> {
        let hash = self.negative.hash(key);
        let hit = self
            .negative
            .load(self.negative.index(hash))
            .and_then(|s| s.get(key, hash))
            .is_some_and(|d| {
                d.generation() == self.generation.load(Ordering::Relaxed)
                    && now < d.fetched.saturating_add(self.negative_ttl_ms)
            });
        if hit {
            if count {
                self.stats.incr(Counter::NegativeHit);
            }
            Err(RouteError::UnknownTenant)
        } else {
            Err(RouteError::Miss)
        }
    }

    #[inline(always)]
    pub(super) fn answer(&self, mode: AssignmentMode, d: SlotData, now: u64, count: bool) -> Result<Route, RouteError> {
        let current = d.generation() == self.generation.load(Ordering::Relaxed);
        if d.is_tombstone() {
            let fresh = current && now < d.fetched.saturating_add(self.ttl_ms);
            if fresh {
                if count {
                    self.stats.incr(Counter::NegativeHit);
                }
                return Err(RouteError::UnknownTenant);
            }
            return Err(RouteError::Miss);
        }
        let stale = if current && now < d.fetched.saturating_add(self.ttl_ms) {
            false
        } else if self.may_serve_stale(d.fetched, now) {
            true
        } else {
            return Err(RouteError::Miss);
        };
        let r = self.make_route(StampId(d.stamp), Epoch(d.epoch), mode, stale);
        if count {
            match r {
                Ok(ref route) if route.stale => self.stats.incr(Counter::StaleServe),
                Ok(_) => self.stats.incr(Counter::Hit),
                Err(_) => self.stats.incr(Counter::StampUnavailable),
            }
        }
        r
    }

    #[inline]
    pub(super) fn may_serve_stale(&self, fetched: u64, now: u64) -> bool {
        match self.stale_ms {
            Some(max) => self.down_since.load(Ordering::Relaxed) != 0 && now < fetched.saturating_add(max),
            None => false,
        }
    }

    #[inline(always)]
    pub(super) fn make_route(
        &self,
        stamp: StampId,
        epoch: Epoch,
        mode: AssignmentMode,
        stale: bool,
    ) -> Result<Route, RouteError> {
        if self.always_redirects.load(Ordering::Relaxed) {
            if let Some(r) = self.redirected(self.health.as_ref(), stamp, epoch, stale) {
                return r;
            }
        }
        if let Some(health) = &self.health {
            if let Some(since) = health.unavailable_since(stamp) {
                return self.with_stamps(|stamps| self.fail_over(stamps, health, stamp, since, epoch, stale));
            }
        }
        let endpoint = self.endpoint(stamp);
        let shadow_endpoint = match mode {
            AssignmentMode::Serving => None,
            _ => mode.shadow().and_then(|s| self.endpoint(s)),
        };
        Ok(Route {
            stamp,
            endpoint,
            epoch,
            mode,
            shadow_endpoint,
            stale,
            failed_over_from: None,
        })
    }
}
