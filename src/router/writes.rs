//! Writes to the route table: [`Writes`] (fast-table writes land at once, long-id writes
//! are published together), and the host's direct writes ([`Router::preload`],
//! [`Router::invalidate`], [`Router::invalidate_all`], [`Router::clear`]).

use std::sync::atomic::Ordering;

use super::shared::Shared;
use super::stats::Counter;
use super::table::{self, Key, SlotData, Upsert, GEN_MASK, HAS_MODE};
use super::Router;
use crate::model::{Assignment, AssignmentMode, Epoch, StampId, TenantIdError};
use crate::registry::Registry;

impl<R: Registry + ?Sized> Router<R> {
    /// Caches routes the host already has (a snapshot, a test fixture), as fresh entries
    /// (never replacing a larger epoch). Stops at the first invalid tenant id and returns its
    /// error (the entries before it stay). Returns the entries written.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::{AssignmentMode, Epoch, InMemoryRegistry, StampId};
    /// let router = Router::new(InMemoryRegistry::new());
    /// let n = router.preload((0..100).map(|i| (format!("t{i}"), StampId(i % 4), Epoch(1), AssignmentMode::Serving)))?;
    /// assert_eq!(n, 100);
    /// assert!(router.preload([("Bad Id", StampId(1), Epoch(1), AssignmentMode::Serving)]).is_err());
    /// # Ok::<(), stamps::TenantIdError>(())
    /// ```
    pub fn preload<T, I>(&self, routes: I) -> Result<usize, TenantIdError>
    where
        T: AsRef<str>,
        I: IntoIterator<Item = (T, StampId, Epoch, AssignmentMode)>,
    {
        let sh = &*self.shared;
        let now = sh.clock.now().as_millis();
        let generation = sh.generation.load(Ordering::Acquire);
        let _w = sh.writer.lock();
        let mut b = Writes::new(sh);
        let mut n = 0;
        let mut result = Ok(());
        for (tenant, stamp, epoch, mode) in routes {
            let text = tenant.as_ref();
            let key = match Key::parse(text) {
                Ok(k) => k,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let data = SlotData {
                epoch: epoch.0,
                fetched: now,
                stamp: stamp.0,
                meta: generation,
            };
            let up = b.upsert(text, &key, data, mode);
            sh.count_upsert(up, false);
            if up != Upsert::Kept {
                n += 1;
            }
        }
        b.commit();
        result.map(|()| n)
    }

    /// Forgets one tenant's entry (positive or negative); the next lookup is a miss.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// router.preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])?;
    /// assert!(router.invalidate("acme")?);
    /// assert_eq!(router.route("acme"), Err(stamps::router::RouteError::Miss));
    /// # Ok::<(), TenantIdError>(())
    /// ```
    pub fn invalidate(&self, tenant: &str) -> Result<bool, TenantIdError> {
        let sh = &*self.shared;
        let key = Key::parse(tenant)?;
        let _w = sh.writer.lock();
        let mut b = Writes::new(sh);
        let removed = b.remove(tenant, &key);
        b.commit();
        let mut neg = sh.negative.batch();
        let removed_neg = neg.remove(tenant, &key);
        neg.commit();
        if removed || removed_neg {
            sh.stats.incr(Counter::Invalidation);
        }
        Ok(removed || removed_neg)
    }

    /// Invalidates every entry in O(1): entries loaded before this call are misses from now
    /// on (they remain usable for stale-if-error). The memory is reclaimed as entries are
    /// replaced or evicted, or by [`Router::clear`].
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// router.preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])?;
    /// router.invalidate_all();
    /// assert_eq!(router.route("acme"), Err(stamps::router::RouteError::Miss));
    /// # Ok::<(), TenantIdError>(())
    /// ```
    pub fn invalidate_all(&self) {
        let sh = &*self.shared;
        let _w = sh.writer.lock();
        let next = (sh.generation.load(Ordering::Acquire) + 1) & GEN_MASK;
        sh.generation.store(next, Ordering::Release);
        sh.stats.incr(Counter::Invalidation);
    }

    /// Drops every entry, positive and negative.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// router.preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])?;
    /// router.clear();
    /// assert!(router.is_empty());
    /// # Ok::<(), TenantIdError>(())
    /// ```
    pub fn clear(&self) {
        let sh = &*self.shared;
        let _w = sh.writer.lock();
        sh.fast.clear();
        sh.modes.clear();
        sh.table.clear();
        sh.negative.clear();
    }
}

/// Route-table writes in progress (the writer lock is held): fast-table writes land at once,
/// long-id writes are published by [`Writes::commit`].
pub(super) struct Writes<'a> {
    sh: &'a Shared,
    long: table::Batch<'a>,
}

impl<'a> Writes<'a> {
    pub(super) fn new(sh: &'a Shared) -> Self {
        Writes {
            sh,
            long: sh.table.batch(),
        }
    }

    pub(super) fn get(&mut self, key: &Key<'_>) -> Option<SlotData> {
        match key {
            Key::Short(k) => {
                let w = *k;
                self.sh.fast.get(&w, self.sh.fast_hash(&w))
            }
            Key::Long(_) => self.long.get(key),
        }
    }

    pub(super) fn upsert(&mut self, tenant: &str, key: &Key<'_>, mut data: SlotData, mode: AssignmentMode) -> Upsert {
        let Key::Short(k) = key else {
            return self.long.upsert(tenant, key, data, mode);
        };
        let sh = self.sh;
        let w = *k;
        let hash = sh.fast_hash(&w);
        let old = sh.fast.get(&w, hash);
        if old.is_some_and(|o| o.epoch > data.epoch) {
            return Upsert::Kept;
        }
        data.meta &= !HAS_MODE;
        if mode != AssignmentMode::Serving {
            // The mode first, then the flag that sends readers to it.
            sh.set_mode(tenant, Some((data.epoch, mode)));
            data.meta |= HAS_MODE;
        }
        let up = sh.fast.upsert(&w, hash, data);
        if mode == AssignmentMode::Serving && old.is_some_and(|o| o.has_mode()) {
            sh.set_mode(tenant, None);
        }
        if let Upsert::Inserted { evicted: true } = up {
            // Evictions at the bound may leave graves too.
            sh.fast.rebuild_if_full_of_graves(|w| sh.fast_hash(w));
        }
        up
    }

    pub(super) fn remove(&mut self, tenant: &str, key: &Key<'_>) -> bool {
        let Key::Short(k) = key else {
            return self.long.remove(tenant, key);
        };
        let w = *k;
        let removed = self.sh.fast.remove(&w, self.sh.fast_hash(&w));
        if removed {
            self.sh.set_mode(tenant, None);
            self.sh.fast.rebuild_if_full_of_graves(|w| self.sh.fast_hash(w));
        }
        removed
    }

    pub(super) fn commit(self) {
        self.long.commit();
    }
}

impl Shared {
    pub(super) fn slot_for(&self, a: &Assignment, now: u64) -> SlotData {
        SlotData {
            epoch: a.epoch.0,
            fetched: now,
            stamp: a.stamp.0,
            meta: self.generation.load(Ordering::Acquire),
        }
    }

    pub(super) fn count_upsert(&self, up: Upsert, from_feed: bool) {
        match up {
            Upsert::Inserted { evicted: true } => self.stats.incr(Counter::Eviction),
            Upsert::Replaced if from_feed => self.stats.incr(Counter::Invalidation),
            _ => {}
        }
    }
}
