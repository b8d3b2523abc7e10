//! Lock-free router counters, striped per thread so readers never share a written cache line.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Stripes owned by one thread each; one more, shared, for threads beyond them.
const STRIPES: usize = 64;

#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Hit = 0,
    Miss = 1,
    NegativeHit = 2,
    StaleServe = 3,
    Invalidation = 4,
    RegistryError = 5,
    Eviction = 6,
    StampUnavailable = 7,
    FeedError = 8,
    HistoryReset = 9,
    InvalidTenant = 10,
}

/// Number of counters.
const COUNTERS: usize = 11;

/// `stuck_at` when the feed is not stuck.
const NOT_STUCK: u64 = u64::MAX;

#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    counts: [AtomicU64; COUNTERS],
}

/// Counters striped by thread: each thread adds to its own cache line.
pub(crate) struct Stats {
    stripes: Box<[Stripe]>,
    /// The cursor the change feed failed to read past (`NOT_STUCK` when the last read
    /// succeeded); written by the feed only, off the lookup path.
    stuck_at: AtomicU64,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
static FREE_STRIPES: Mutex<Vec<usize>> = parking_lot::const_mutex(Vec::new());

/// A thread's stripe index, owned until the thread exits (then returned for reuse).
struct Owned(usize);

impl Owned {
    fn acquire() -> Owned {
        if let Some(i) = FREE_STRIPES.lock().pop() {
            return Owned(i);
        }
        let i = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
        Owned(if i < STRIPES { i } else { STRIPES })
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.0 < STRIPES {
            // Anything this thread still counts (from other thread-local destructors) goes to
            // the shared stripe: the index may be handed to a new thread now.
            let _ = STRIPE.try_with(|s| s.set(STRIPES));
            FREE_STRIPES.lock().push(self.0);
        }
    }
}

/// Not yet assigned (the thread has not counted anything yet).
const UNSET: usize = usize::MAX;

thread_local! {
    /// The thread's stripe index: a `const` thread-local without destructor, so reading it is
    /// one load (no lazy-initialization or destructor state to check on the hot path).
    static STRIPE: std::cell::Cell<usize> = const { std::cell::Cell::new(UNSET) };
    /// Owns the stripe and returns it when the thread exits.
    static OWNER: std::cell::RefCell<Option<Owned>> = const { std::cell::RefCell::new(None) };
}

/// The calling thread's stripe: below `STRIPES` it is owned by this thread alone.
#[inline(always)]
fn stripe_index() -> usize {
    match STRIPE.try_with(std::cell::Cell::get) {
        Ok(UNSET) => assign_stripe(),
        Ok(i) => i,
        Err(_) => STRIPES,
    }
}

/// Takes a stripe for the calling thread (first count on this thread).
#[cold]
#[inline(never)]
fn assign_stripe() -> usize {
    let owned = Owned::acquire();
    let i = owned.0;
    // If the owner cannot be stored (the thread is exiting), count on the shared stripe.
    let kept = OWNER
        .try_with(|o| match o.try_borrow_mut() {
            Ok(mut o) => {
                *o = Some(owned);
                true
            }
            Err(_) => false,
        })
        .unwrap_or(false);
    let i = if kept { i } else { STRIPES };
    let _ = STRIPE.try_with(|s| s.set(i));
    i
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            stripes: (0..=STRIPES).map(|_| Stripe::default()).collect(),
            stuck_at: AtomicU64::new(NOT_STUCK),
        }
    }
}

impl Stats {
    /// Adds to the calling thread's stripe. A thread that owns its stripe adds with a plain
    /// load and store: no locked instruction, which would stall the hot path's memory
    /// parallelism; only the owner writes it, so no update is lost.
    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        let i = stripe_index();
        if let Some(cell) = self.stripes.get(i).and_then(|s| s.counts.get(c as usize)) {
            if i < STRIPES {
                cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            } else {
                cell.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    pub(crate) fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Records a failed change-feed read at `cursor` (counted, and reported as stuck there).
    pub(crate) fn feed_failed(&self, cursor: u64) {
        self.add(Counter::FeedError, 1);
        self.stuck_at.store(cursor, Ordering::Relaxed);
    }

    /// Records a successful change-feed read: the feed is no longer stuck.
    pub(crate) fn feed_ok(&self) {
        if self.stuck_at.load(Ordering::Relaxed) != NOT_STUCK {
            self.stuck_at.store(NOT_STUCK, Ordering::Relaxed);
        }
    }

    fn sum(&self, c: Counter) -> u64 {
        self.stripes
            .iter()
            .filter_map(|s| s.counts.get(c as usize))
            .map(|a| a.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    pub(crate) fn snapshot(&self) -> RouterStats {
        RouterStats {
            hits: self.sum(Counter::Hit),
            misses: self.sum(Counter::Miss),
            negative_hits: self.sum(Counter::NegativeHit),
            stale_serves: self.sum(Counter::StaleServe),
            invalidations: self.sum(Counter::Invalidation),
            registry_errors: self.sum(Counter::RegistryError),
            evictions: self.sum(Counter::Eviction),
            stamp_unavailable: self.sum(Counter::StampUnavailable),
            feed_errors: self.sum(Counter::FeedError),
            history_resets: self.sum(Counter::HistoryReset),
            invalid_tenants: self.sum(Counter::InvalidTenant),
            feed_stuck_at: match self.stuck_at.load(Ordering::Relaxed) {
                NOT_STUCK => None,
                v => Some(crate::model::Version(v)),
            },
        }
    }
}

/// A snapshot of a router's counters, read without locks ([`Router::stats`](super::Router::stats)).
///
/// Counters only grow; subtract two snapshots for rates.
///
/// ```
/// use stamps::router::RouterStats;
/// let s = RouterStats::default();
/// assert_eq!(s.hits + s.misses, 0);
/// assert_eq!(s.hit_ratio(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Lookups answered from a fresh entry.
    pub hits: u64,
    /// Lookups that found no usable entry (each is followed by a registry read when the host
    /// calls `resolve`).
    pub misses: u64,
    /// Lookups answered "unknown tenant" from the negative cache.
    pub negative_hits: u64,
    /// Routes served stale under stale-if-error.
    pub stale_serves: u64,
    /// Entries replaced or removed by change events, plus invalidate-all calls.
    pub invalidations: u64,
    /// Failed registry calls (lookups, warm-up, change feed).
    pub registry_errors: u64,
    /// Entries evicted by the size bounds.
    pub evictions: u64,
    /// Lookups refused because the tenant's stamp is unhealthy.
    pub stamp_unavailable: u64,
    /// Failed change-feed reads (also counted in `registry_errors`): an unreachable registry,
    /// or a change it cannot read back ([`Error::Corrupt`](crate::Error::Corrupt)). The
    /// router keeps serving what it has meanwhile (stale-if-error).
    pub feed_errors: u64,
    /// Times the change feed reported that the changes this router had applied belong to a
    /// history the registry lost ([`Error::HistoryDiverged`](crate::Error::HistoryDiverged):
    /// a failover without synchronous replication, a restore). Each time the router dropped
    /// every entry, re-read the stamps (and everything, if it was warmed up) and followed the
    /// feed from its new head. Alert on any increase: acknowledged writes were lost.
    pub history_resets: u64,
    /// Lookups refused because the text is not a valid tenant id.
    pub invalid_tenants: u64,
    /// The cursor (the last version applied) the change feed could not read past, while it
    /// cannot; `None` once a read succeeds. A follower stuck here retries with backoff and
    /// never skips the change it cannot read.
    pub feed_stuck_at: Option<crate::model::Version>,
}

impl RouterStats {
    /// Hits over hits plus misses, if there was any lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}
