//! [`RouterBuilder`]: the router's configuration, clock and health table, and the
//! constructors that build a [`Router`] from them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

use super::endpoints::{StampView, DENSE_STAMPS};
use super::fast::{self, FastTable};
use super::flight::Flights;
use super::modes::Modes;
use super::shared::Shared;
use super::stats::Stats;
use super::table::Table;
use super::{Router, RouterConfig};
use crate::error::Error;
use crate::health::HealthTable;
use crate::registry::Registry;
use crate::time::{Clock, SystemClock};

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

static NEXT_ROUTER_ID: AtomicU64 = AtomicU64::new(1);

/// Builds a [`Router`].
///
/// ```
/// use stamps::health::HealthTable;
/// use stamps::router::{Router, RouterConfig};
/// use stamps::{FakeClock, InMemoryRegistry};
/// use std::time::Duration;
/// let router = Router::builder(InMemoryRegistry::new())
///     .config(
///         RouterConfig::default()
///             .ttl(Duration::from_secs(60))
///             .negative_ttl(Duration::from_secs(2))
///             .max_entries(10_000)
///             .stale_if_error(Duration::from_secs(300)),
///     )
///     .health(HealthTable::new())
///     .clock(FakeClock::new())
///     .build()?;
/// assert_eq!(router.config().max_entries, 10_000);
/// # Ok::<(), stamps::Error>(())
/// ```
pub struct RouterBuilder<R: Registry + ?Sized> {
    registry: Arc<R>,
    config: RouterConfig,
    clock: Option<Arc<dyn Clock>>,
    health: Option<HealthTable>,
}

impl<R: Registry + ?Sized> fmt::Debug for RouterBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder").field("config", &self.config).finish()
    }
}

impl<R: Registry + ?Sized> RouterBuilder<R> {
    /// Replaces the whole configuration (every setting of [`RouterConfig`], set with its own
    /// bare-named setters: `RouterConfig::default().ttl(d).max_entries(n)`).
    pub fn config(mut self, config: RouterConfig) -> Self {
        self.config = config;
        self
    }

    /// Reads time from `clock` (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Fails routes to stamps that `health` marks unhealthy (share the monitor's table).
    pub fn health(mut self, health: HealthTable) -> Self {
        self.health = Some(health);
        self
    }

    /// The router, or [`Error::InvalidInput`] for a bad configuration.
    pub fn build(self) -> Result<Router<R>, Error> {
        self.config.validate()?;
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> Router<R> {
        let c = self.config;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let shared = Shared {
            fast: FastTable::new(c.max_entries),
            fast_seeds: fast::Seeds::random(),
            modes: Modes::new(),
            table: Table::new(c.max_entries.div_ceil(16).max(1024), c.shards),
            negative: Table::new(c.max_negative, None),
            ttl_ms: millis(c.ttl),
            negative_ttl_ms: millis(c.negative_ttl),
            stale_ms: c.stale_if_error.map(millis),
            tick_ms: millis(c.tick),
            coarse: AtomicU64::new(clock.now().as_millis()),
            clock,
            tickers: AtomicUsize::new(0),
            generation: AtomicU32::new(0),
            down_since: AtomicU64::new(0),
            retry_at: AtomicU64::new(0),
            stamps: ArcSwap::from_pointee(StampView::default()),
            stamps_version: AtomicU64::new(0),
            endpoints: (0..DENSE_STAMPS).map(|_| AtomicU32::new(0)).collect(),
            id: NEXT_ROUTER_ID.fetch_add(1, Ordering::Relaxed),
            health: self.health,
            redirects: RwLock::new(HashMap::new()),
            always_redirects: AtomicBool::new(false),
            writer: Mutex::new(()),
            stamps_writer: Mutex::new(()),
            flights: Flights::default(),
            stats: Stats::default(),
            cursor: AtomicU64::new(0),
            cursor_set: AtomicBool::new(false),
            warmed: AtomicBool::new(false),
            feed_head: AtomicU64::new(0),
            behind_since: AtomicU64::new(u64::MAX),
            config: c,
        };
        Router {
            registry: self.registry,
            shared: Arc::new(shared),
        }
    }

    /// A builder over a shared registry (also `Arc<dyn Registry>`).
    pub fn from_arc(registry: Arc<R>) -> Self {
        RouterBuilder {
            registry,
            config: RouterConfig::default(),
            clock: None,
            health: None,
        }
    }
}

impl<R: Registry> Router<R> {
    /// A router over `registry` with the default configuration.
    pub fn new(registry: R) -> Self {
        Self::from_arc(Arc::new(registry))
    }

    /// A builder over `registry`.
    pub fn builder(registry: R) -> RouterBuilder<R> {
        RouterBuilder::from_arc(Arc::new(registry))
    }
}

impl<R: Registry + ?Sized> Router<R> {
    /// A router over a shared registry (also `Arc<dyn Registry>`), default configuration.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::router::Router;
    /// use stamps::{InMemoryRegistry, Registry};
    /// let shared: Arc<dyn Registry> = Arc::new(InMemoryRegistry::new());
    /// let a: Router<dyn Registry> = Router::from_arc(shared.clone());
    /// let b: Router<Arc<dyn Registry>> = Router::new(shared);
    /// # let _ = (a, b);
    /// ```
    pub fn from_arc(registry: Arc<R>) -> Self {
        RouterBuilder::from_arc(registry).build_unchecked()
    }
}
