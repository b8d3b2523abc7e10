//! The lock-free health table routing reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::model::{HealthStatus, HealthView, StampId};
use crate::time::Timestamp;

/// A stamp's published health: status, since when, and why.
///
/// ```
/// use stamps::health::StampHealth;
/// use stamps::{HealthStatus, Timestamp};
/// let h = StampHealth::new(HealthStatus::Unhealthy, Timestamp::from_millis(5), Some("db down"));
/// assert_eq!(h.reason.as_deref(), Some("db down"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StampHealth {
    /// The status.
    pub status: HealthStatus,
    /// When the stamp entered this status.
    pub since: Timestamp,
    /// Why (for degraded or unhealthy).
    pub reason: Option<Arc<str>>,
}

impl StampHealth {
    /// A published health entry.
    pub fn new(status: HealthStatus, since: Timestamp, reason: Option<&str>) -> Self {
        StampHealth {
            status,
            since,
            reason: reason.map(Arc::from),
        }
    }
}

type Map = HashMap<StampId, StampHealth, foldhash::fast::RandomState>;

struct Inner {
    map: ArcSwap<Map>,
    unhealthy: AtomicUsize,
    writer: Mutex<()>,
}

/// Per-stamp health with lock-free, allocation-free reads; clones share the table.
///
/// Readers load an immutable snapshot (touching only a per-thread slot, never a shared
/// counter); writers, which are rare (health transitions), copy and publish. While no stamp is
/// unhealthy, [`HealthTable::unavailable_since`] answers from one atomic load, so a healthy
/// fleet costs routing nothing. Unknown stamps are healthy.
///
/// ```
/// use stamps::health::HealthTable;
/// use stamps::{HealthStatus, HealthView, StampId, Timestamp};
/// let table = HealthTable::new();
/// table.set(StampId(3), HealthStatus::Unhealthy, Timestamp::from_millis(9), Some("probe timeout"));
/// assert_eq!(table.status(StampId(3)), HealthStatus::Unhealthy);
/// assert_eq!(table.unavailable_since(StampId(3)), Some(Timestamp::from_millis(9)));
/// assert_eq!(table.status(StampId(4)), HealthStatus::Healthy);
/// ```
#[derive(Clone)]
pub struct HealthTable {
    inner: Arc<Inner>,
}

impl Default for HealthTable {
    fn default() -> Self {
        HealthTable {
            inner: Arc::new(Inner {
                map: ArcSwap::from_pointee(Map::default()),
                unhealthy: AtomicUsize::new(0),
                writer: Mutex::new(()),
            }),
        }
    }
}

impl fmt::Debug for HealthTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.inner.map.load().iter()).finish()
    }
}

impl HealthTable {
    /// An empty table (every stamp healthy).
    pub fn new() -> Self {
        Self::default()
    }

    /// The stamp's published health, if any was published.
    pub fn get(&self, stamp: StampId) -> Option<StampHealth> {
        self.inner.map.load().get(&stamp).cloned()
    }

    /// Since when the stamp is unhealthy, or `None` if it is available. Allocation-free; one
    /// atomic load while every stamp is available.
    #[inline]
    pub fn unavailable_since(&self, stamp: StampId) -> Option<Timestamp> {
        if self.inner.unhealthy.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.inner
            .map
            .load()
            .get(&stamp)
            .filter(|h| h.status == HealthStatus::Unhealthy)
            .map(|h| h.since)
    }

    /// Publishes a stamp's health.
    pub fn set(&self, stamp: StampId, status: HealthStatus, since: Timestamp, reason: Option<&str>) {
        self.publish(stamp, StampHealth::new(status, since, reason));
    }

    /// Publishes a stamp's health entry.
    pub fn publish(&self, stamp: StampId, health: StampHealth) {
        let _w = self.inner.writer.lock();
        let mut map = Map::clone(&self.inner.map.load());
        map.insert(stamp, health);
        self.store(map);
    }

    /// Forgets a stamp (it becomes healthy by default).
    pub fn remove(&self, stamp: StampId) {
        let _w = self.inner.writer.lock();
        let mut map = Map::clone(&self.inner.map.load());
        if map.remove(&stamp).is_some() {
            self.store(map);
        }
    }

    /// Every published entry.
    pub fn snapshot(&self) -> Vec<(StampId, StampHealth)> {
        let mut v: Vec<_> = self.inner.map.load().iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    fn store(&self, map: Map) {
        let unhealthy = map.values().filter(|h| h.status == HealthStatus::Unhealthy).count();
        // Map first, then the count: for a moment a reader may still see the previous state of
        // the stamp that just changed, never a wrong state of another stamp.
        self.inner.map.store(Arc::new(map));
        self.inner.unhealthy.store(unhealthy, Ordering::Release);
    }
}

impl HealthView for HealthTable {
    fn status(&self, stamp: StampId) -> HealthStatus {
        self.inner
            .map
            .load()
            .get(&stamp)
            .map_or(HealthStatus::Healthy, |h| h.status)
    }
}
