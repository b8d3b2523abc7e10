//! The routing hot path: tenant → [`Route`] from a local table.
//!
//! [`Router::route`] is sync and allocation-free for a cached tenant: it hashes the tenant
//! text, finds its slot in an open-addressing table of atomic words (readers only load memory,
//! so they never contend), checks the entry's TTL against a coarse clock and its generation
//! against a global one, consults the lock-free [`HealthTable`], and returns a `Copy` route.
//! Text that is not a cached id is validated in full (a hit needs no validation: only a valid
//! id can equal a cached one), so bad text always gets [`RouteError::InvalidTenant`].
//! On [`RouteError::Miss`] the host awaits [`Router::resolve`], which reads the registry once
//! per tenant however many requests wait (single-flight) and caches the answer, including
//! "unknown tenant" in a separate, bounded negative cache.
//!
//! Freshness: a change event applied with [`Router::apply`] (or by the follower task,
//! `Router::spawn_follower`, feature `tokio`) replaces the tenant's entry before `apply`
//! returns, and entries only ever move to larger epochs, so once a change has been applied the
//! older route is never returned again. Without events, no entry is served
//! past its TTL unless the registry is unreachable and stale-if-error is configured, and then
//! the route says `stale: true`.
//!
//! ```
//! use std::sync::Arc;
//! use stamps::router::{Router, RouteError};
//! use stamps::*;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(InMemoryRegistry::new());
//! let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0)?;
//! registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?, cap)?
//!     .endpoint("https://s1.internal")).await?;
//! registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
//!
//! let router: Router<dyn Registry> = Router::from_arc(registry.clone() as Arc<dyn Registry>);
//! assert_eq!(router.route("acme"), Err(RouteError::Miss));     // not cached yet
//! let route = router.resolve("acme").await?;                   // one registry read
//! assert_eq!(route.endpoint, Some("https://s1.internal"));
//! assert_eq!(router.route("acme")?, route);                    // now a sync hit
//! assert_eq!(router.resolve("nobody").await, Err(RouteError::UnknownTenant));
//! assert!(router.route("../etc").is_err());                     // validated in place
//! # Ok(()) }
//! ```

#[doc = include_str!("../../docs/routing.md")]
pub mod guide {}

// The modules in the order a tenant id meets them: `lookup` (the hit path, `Router::route`)
// reads `fast` (ids of up to 24 bytes) or `table` (longer ids and the negative cache), then
// `modes` for tenants in dual-write or frozen mode, `endpoints` for the stamp's endpoint, and
// `failover` when the stamp is unhealthy. On a miss, `resolve` (`Router::resolve`) joins the
// tenant's single `flight`, reads the registry and stores the answer through `writes`. `feed`
// applies the change feed through `writes` too; `clock` keeps the coarse time that `lookup`
// reads; `follower` runs `feed` and the clock on tokio. `shared` holds the state all of them
// share and `builder` makes it.
mod builder;
mod clock;
mod config;
mod endpoints;
mod export;
mod fast;
mod feed;
mod flight;
#[cfg(feature = "tokio")]
mod follower;
mod intern;
mod lookup;
mod modes;
mod redirect;
mod resolve;
mod route;
mod shared;
mod stats;
mod table;
mod writes;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use builder::RouterBuilder;
pub use clock::ClockThread;
pub use config::{RouterConfig, MAX_ENTRIES};
pub use export::FeedLag;
#[cfg(feature = "tokio")]
pub use follower::Follower;
pub use route::{Route, RouteError};
pub use stats::RouterStats;

use self::shared::Shared;
use crate::health::HealthTable;
use crate::model::Version;
use crate::registry::{DynRegistry, Registry};

/// The tenant → stamp router. Cheap to clone (clones share the table); `Send + Sync`.
///
/// Generic over the registry: `Router<InMemoryRegistry>`, `Router<Arc<dyn Registry>>` and
/// `Router<dyn Registry>` (the default parameter, built with [`Router::from_arc`]) all work.
///
/// # Costs
/// - [`Router::route`] on a hit: no allocation, no lock, no write to memory another reader
///   writes (counters are striped per thread); see `docs/performance.md` for figures.
/// - Ids of up to 24 bytes are stored inline in 56-byte slots of a table allocated at build
///   time for `max_entries` (about 75 bytes per tenant at the bound); longer ids cost an
///   allocation each in a second table.
/// - [`Router::apply`] updates slots in place under the writer lock (no copying); readers
///   never wait for it.
///
/// ```
/// use stamps::router::{Router, RouterConfig};
/// use stamps::{InMemoryRegistry, StampId, Epoch, AssignmentMode};
/// use std::time::Duration;
/// let router = Router::builder(InMemoryRegistry::new())
///     .config(RouterConfig::default().ttl(Duration::from_secs(30)))
///     .build()?;
/// router.preload([("acme", StampId(1), Epoch(3), AssignmentMode::Serving)])?;
/// assert_eq!(router.route("acme")?.epoch, Epoch(3));
/// assert_eq!(router.stats().hits, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Router<R: Registry + ?Sized = DynRegistry> {
    registry: Arc<R>,
    shared: Arc<Shared>,
}

impl<R: Registry + ?Sized> Clone for Router<R> {
    fn clone(&self) -> Self {
        Router {
            registry: self.registry.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<R: Registry + ?Sized> fmt::Debug for Router<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("registry", &self.registry)
            .field("config", &self.shared.config)
            .field("shards", &self.shared.table.shard_count())
            .field("cursor", &self.cursor())
            .field("stats", &self.shared.stats)
            .finish()
    }
}

impl<R: Registry + ?Sized> Router<R> {
    /// The registry.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// assert_eq!(format!("{:?}", router.registry()).contains("InMemoryRegistry"), true);
    /// ```
    pub fn registry(&self) -> &Arc<R> {
        &self.registry
    }

    /// The configuration.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// assert_eq!(router.config().ttl, std::time::Duration::from_secs(60));
    /// ```
    pub fn config(&self) -> &RouterConfig {
        &self.shared.config
    }

    /// The counters, read without locks.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// let _ = router.route("acme");
    /// assert_eq!(router.stats().misses, 1);
    /// ```
    pub fn stats(&self) -> RouterStats {
        self.shared.stats.snapshot()
    }

    /// Entries in the route table (positive entries and "unassigned" records; walks the
    /// shards, so not for the hot path).
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// router.preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])?;
    /// assert_eq!(router.len(), 1);
    /// # Ok::<(), TenantIdError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.shared.fast.len() + self.shared.table.len()
    }

    /// Whether the route table is empty.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// assert!(Router::new(InMemoryRegistry::new()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The change-feed version applied so far.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// assert_eq!(router.cursor(), Version::ZERO);
    /// ```
    pub fn cursor(&self) -> Version {
        Version(self.shared.cursor.load(Ordering::Acquire))
    }

    /// The health table the router consults, if one was configured
    /// ([`RouterBuilder::health`]).
    ///
    /// ```
    /// use stamps::health::HealthTable;
    /// use stamps::router::Router;
    /// use stamps::*;
    /// assert!(Router::new(InMemoryRegistry::new()).health().is_none());
    /// let router = Router::builder(InMemoryRegistry::new()).health(HealthTable::new()).build()?;
    /// assert!(router.health().is_some());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn health(&self) -> Option<&HealthTable> {
        self.shared.health.as_ref()
    }
}
