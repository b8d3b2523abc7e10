//! Router settings.

use std::time::Duration;

use crate::error::{Error, InvalidInput};

/// The largest `max_entries` accepted: the table is allocated when the router is built.
///
/// ```
/// use stamps::router::{RouterConfig, MAX_ENTRIES};
/// assert!(RouterConfig::default().max_entries(MAX_ENTRIES + 1).validate().is_err());
/// ```
pub const MAX_ENTRIES: usize = 1 << 30;

/// How a [`Router`](super::Router) caches. Build with [`RouterConfig::default`] and its
/// setters, and hand it to [`RouterBuilder::config`](super::RouterBuilder::config).
///
/// | setting | default | meaning |
/// | --- | --- | --- |
/// | `ttl` | 60 s | a route is served at most this long after it was loaded or confirmed |
/// | `negative_ttl` | 5 s | how long "unknown tenant" is remembered |
/// | `max_entries` | 1,000,000 | size bound of the whole router's route table for ids of up to 24 bytes (see below) |
/// | `max_negative` | 100,000 | size bound of the negative cache |
/// | `stale_if_error` | off | serve expired routes, flagged stale, while the registry is unreachable, up to this age |
/// | `failover` | off | route tenants with a standby stamp there while their stamp is unhealthy |
/// | `tick` | 10 ms | resolution of the coarse clock kept by a ticker |
/// | `feed_batch` | 1,000 | changes read per change-feed call |
/// | `poll_interval` | 1 s | the follower re-reads the feed at least this often even without a signal |
/// | `page_size` | 10,000 | assignments per page during warm-up |
///
/// The table for tenant ids of up to 24 bytes is allocated when the router is built:
/// `⌈max_entries × 4/3⌉` slots of 56 bytes, plus a tag byte per slot up to about three
/// million entries (about 76 bytes per tenant at the bound). When it holds `max_entries`
/// tenants, an insert evicts the entry loaded longest ago among the slots it probes. Longer
/// ids live in a copy-on-write table of `shards` shards bounded to `⌈max_entries / 16⌉` (at
/// least 1,024) entries in all, divided evenly over its shards; the negative cache works the
/// same way.
///
/// ```
/// use stamps::router::RouterConfig;
/// use std::time::Duration;
/// let c = RouterConfig::default().ttl(Duration::from_secs(30)).stale_if_error(Duration::from_secs(600));
/// assert_eq!(c.ttl, Duration::from_secs(30));
/// assert!(c.validate().is_ok());
/// assert!(RouterConfig::default().ttl(Duration::ZERO).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Time to live of a cached route.
    pub ttl: Duration,
    /// Time to live of a cached "unknown tenant".
    pub negative_ttl: Duration,
    /// Bound of the route table.
    pub max_entries: usize,
    /// Bound of the negative cache.
    pub max_negative: usize,
    /// Number of shards of the long-id table (default: one per 192 entries of its bound).
    pub shards: Option<usize>,
    /// Maximum age of a route served stale while the registry is unreachable (`None`: off).
    pub stale_if_error: Option<Duration>,
    /// Whether tenants with a standby stamp fail over to it while their stamp is unhealthy.
    pub failover: bool,
    /// Resolution of the coarse clock.
    pub tick: Duration,
    /// Changes per change-feed read.
    pub feed_batch: usize,
    /// Longest wait between change-feed reads without a signal.
    pub poll_interval: Duration,
    /// Assignments per warm-up page.
    pub page_size: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_entries: 1_000_000,
            max_negative: 100_000,
            shards: None,
            stale_if_error: None,
            failover: false,
            tick: Duration::from_millis(10),
            feed_batch: 1_000,
            poll_interval: Duration::from_secs(1),
            page_size: 10_000,
        }
    }
}

impl RouterConfig {
    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the negative TTL.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Sets the route table bound.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Sets the negative cache bound.
    pub fn max_negative(mut self, n: usize) -> Self {
        self.max_negative = n;
        self
    }

    /// Sets the shard count.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Serves expired routes, flagged stale, up to `max_age` after they were loaded, while the
    /// registry is unreachable.
    pub fn stale_if_error(mut self, max_age: Duration) -> Self {
        self.stale_if_error = Some(max_age);
        self
    }

    /// Turns per-tenant failover to standby stamps on or off.
    pub fn failover(mut self, on: bool) -> Self {
        self.failover = on;
        self
    }

    /// Sets the coarse clock resolution.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// Sets how many changes one feed read asks for.
    pub fn feed_batch(mut self, n: usize) -> Self {
        self.feed_batch = n;
        self
    }

    /// Sets how often a follower polls the feed when no change signal wakes it.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets how many assignments one page of a warm-up reads.
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason| Err(InvalidInput::new(field, reason).into());
        if self.ttl.is_zero() {
            return bad("ttl", "must be positive");
        }
        if self.negative_ttl.is_zero() {
            return bad("negative_ttl", "must be positive");
        }
        if self.max_entries == 0 || self.max_negative == 0 {
            return bad("max_entries", "bounds must be at least 1");
        }
        if self.max_entries > MAX_ENTRIES || self.max_negative > MAX_ENTRIES {
            return bad(
                "max_entries",
                "bounds must be at most 2^30 (the table is allocated up front)",
            );
        }
        if self.shards == Some(0) {
            return bad("shards", "must be at least 1");
        }
        if let Some(s) = self.stale_if_error {
            if s < self.ttl {
                return bad("stale_if_error", "must be at least the ttl");
            }
        }
        if self.tick.is_zero() || self.tick > self.ttl {
            return bad("tick", "must be positive and at most the ttl");
        }
        if self.feed_batch == 0 || self.page_size == 0 {
            return bad("feed_batch", "batch and page sizes must be at least 1");
        }
        Ok(())
    }
}
