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
//! Freshness (DESIGN invariant 6): a change event applied with [`Router::apply`] (or by the
//! follower task, [`Router::spawn_follower`], feature `tokio`) replaces the tenant's entry
//! before `apply` returns, and entries only ever move to larger epochs, so once a change has
//! been applied the older route is never returned again. Without events, no entry is served
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
//!     .with_endpoint("https://s1.internal")).await?;
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

mod config;
mod fast;
mod flight;
mod intern;
mod route;
mod stats;
mod table;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

pub use config::{RouterConfig, MAX_ENTRIES};
pub use route::{Route, RouteError};
pub use stats::RouterStats;

use self::fast::FastTable;
use self::flight::{Flights, Join};
use self::stats::{Counter, Stats};
use self::table::{Key, SlotData, Table, Upsert, GEN_MASK, HAS_MODE, TOMBSTONE};
use crate::error::Error;
use crate::health::HealthTable;
use crate::model::{Assignment, AssignmentMode, Change, ChangeKind, Epoch, StampId, TenantId, TenantIdError, Version};
use crate::registry::{DynRegistry, Registry};
use crate::time::{Clock, SystemClock};

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

static NEXT_ROUTER_ID: AtomicU64 = AtomicU64::new(1);

/// Stamps with ids below this have their endpoint in `Shared::endpoints` (4 KiB per router);
/// larger ids are found in the stamp view.
const DENSE_STAMPS: u32 = 1024;

/// A thread's copy of one router's stamp view.
struct CachedView {
    router: u64,
    version: u64,
    view: Arc<StampView>,
}

thread_local! {
    /// Per-thread copies of stamp views, so a route reads endpoints without any atomic
    /// read-modify-write (which would stall the lookup's memory parallelism).
    static STAMP_VIEWS: std::cell::RefCell<Vec<CachedView>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Modes of tenants whose slot has the `HAS_MODE` flag, with the epoch they belong to (a
/// reader uses the mode only if its epoch is the slot's, so it never pairs one write's
/// epoch with another write's mode).
type ModeMap = HashMap<Box<str>, (u64, AssignmentMode), foldhash::fast::RandomState>;

/// Shards of the mode map: a change copies one shard, so moving many tenants at once (a bulk
/// migration puts each in dual-write, then frozen, then back to serving) costs a 64th of a
/// copy of the map per change instead of a whole one.
const MODE_SHARDS: usize = 64;

/// The mode map, sharded by tenant id.
struct Modes {
    shards: Box<[ArcSwap<ModeMap>]>,
    hasher: foldhash::fast::FixedState,
}

impl Modes {
    fn new() -> Modes {
        Modes {
            shards: (0..MODE_SHARDS)
                .map(|_| ArcSwap::from_pointee(ModeMap::default()))
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x6d6f_6465),
        }
    }

    fn shard(&self, tenant: &str) -> Option<&ArcSwap<ModeMap>> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(tenant);
        self.shards.get((h % MODE_SHARDS as u64) as usize)
    }

    /// The mode recorded for `tenant`, with the epoch it belongs to.
    fn get(&self, tenant: &str) -> Option<(u64, AssignmentMode)> {
        self.shard(tenant)?.load().get(tenant).copied()
    }

    /// Records or clears `tenant`'s mode (writer lock held).
    fn set(&self, tenant: &str, mode: Option<(u64, AssignmentMode)>) {
        let Some(shard) = self.shard(tenant) else { return };
        let current = shard.load();
        if current.get(tenant).copied() == mode {
            return;
        }
        let mut next = ModeMap::clone(&current);
        match mode {
            Some(m) => {
                next.insert(Box::from(tenant), m);
            }
            None => {
                next.remove(tenant);
            }
        }
        shard.store(Arc::new(next));
    }

    /// Forgets every mode (writer lock held).
    fn clear(&self) {
        for shard in self.shards.iter() {
            if !shard.load().is_empty() {
                shard.store(Arc::new(ModeMap::default()));
            }
        }
    }
}

impl fmt::Debug for Modes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n: usize = self.shards.iter().map(|s| s.load().len()).sum();
        f.debug_struct("Modes").field("tenants", &n).finish()
    }
}

/// Known stamps and their endpoints.
#[derive(Default)]
struct StampView {
    map: HashMap<StampId, Option<&'static str>>,
    /// `(stamp id + 1, endpoint)`, open addressing, for the route path.
    slots: Box<[(u64, Option<&'static str>)]>,
}

impl StampView {
    fn from_map(map: HashMap<StampId, Option<&'static str>>) -> StampView {
        let cap = (map.len() * 2).next_power_of_two().max(8);
        let mut slots = vec![(0u64, None); cap].into_boxed_slice();
        for (id, endpoint) in &map {
            let mut i = Self::home(*id, cap);
            while let Some(slot) = slots.get_mut(i) {
                if slot.0 == 0 {
                    *slot = (u64::from(id.0) + 1, *endpoint);
                    break;
                }
                i = (i + 1) & (cap - 1);
            }
        }
        StampView { map, slots }
    }

    #[inline]
    fn home(id: StampId, cap: usize) -> usize {
        (id.0.wrapping_mul(0x9e37_79b9) as usize) & (cap - 1)
    }

    /// The stamp's endpoint (`None` if unknown or without one).
    #[inline]
    fn endpoint(&self, id: StampId) -> Option<&'static str> {
        let cap = self.slots.len();
        if cap == 0 {
            return None;
        }
        let key = u64::from(id.0) + 1;
        let mut i = Self::home(id, cap);
        for _ in 0..cap {
            let (k, e) = self.slots.get(i)?;
            if *k == key {
                return *e;
            }
            if *k == 0 {
                return None;
            }
            i = (i + 1) & (cap - 1);
        }
        None
    }
}

struct Shared {
    /// Tenant ids up to 24 bytes.
    fast: FastTable,
    fast_seeds: fast::Seeds,
    /// Modes of fast-table tenants that are not simply serving.
    modes: Modes,
    /// Longer tenant ids.
    table: Table,
    negative: Table,
    ttl_ms: u64,
    negative_ttl_ms: u64,
    stale_ms: Option<u64>,
    tick_ms: u64,
    config: RouterConfig,
    clock: Arc<dyn Clock>,
    /// The coarse clock (ms) and how many tickers keep it current.
    coarse: AtomicU64,
    tickers: AtomicUsize,
    generation: AtomicU32,
    /// When the registry was first seen failing since it last answered (0: it answers).
    down_since: AtomicU64,
    /// While the registry is down: when `resolve` may next try it for a tenant served stale
    /// (clock ms), so a recovered registry is noticed without a flood of reads while it is not.
    retry_at: AtomicU64,
    stamps: ArcSwap<StampView>,
    /// Bumped after every store to `stamps`; cold paths (stamp ids of 1,024 and above,
    /// failover) keep a per-thread copy of the view.
    stamps_version: AtomicU64,
    /// Endpoint handles ([`intern::Handle`]) of stamps with ids below [`DENSE_STAMPS`],
    /// indexed by stamp id: the route path reads an endpoint with two plain loads and no
    /// branch that depends on which stamp it is (a mispredicted branch there would discard
    /// the work the CPU had started on the next request while this one waits for memory).
    endpoints: Box<[AtomicU32]>,
    /// Identifies this router in the per-thread caches.
    id: u64,
    health: Option<HealthTable>,
    standby: RwLock<HashMap<Box<str>, StampId>>,
    writer: Mutex<()>,
    stamps_writer: Mutex<()>,
    flights: Flights,
    stats: Stats,
    cursor: AtomicU64,
    cursor_set: AtomicBool,
    warmed: AtomicBool,
}

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
///     .config(RouterConfig::default().with_ttl(Duration::from_secs(30)))
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

/// Builds a [`Router`].
///
/// ```
/// use stamps::health::HealthTable;
/// use stamps::router::Router;
/// use stamps::{FakeClock, InMemoryRegistry};
/// use std::time::Duration;
/// let router = Router::builder(InMemoryRegistry::new())
///     .ttl(Duration::from_secs(60))
///     .negative_ttl(Duration::from_secs(2))
///     .max_entries(10_000)
///     .stale_if_error(Duration::from_secs(300))
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
    /// Replaces the whole configuration.
    pub fn config(mut self, config: RouterConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the TTL of routes (default 60 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Sets the TTL of "unknown tenant" answers (default 5 s).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = ttl;
        self
    }

    /// Sets the route table bound (default 1,000,000).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.config.max_entries = n;
        self
    }

    /// Sets the negative cache bound (default 100,000).
    pub fn max_negative(mut self, n: usize) -> Self {
        self.config.max_negative = n;
        self
    }

    /// Serves expired routes (flagged stale) up to `max_age` while the registry is unreachable.
    pub fn stale_if_error(mut self, max_age: Duration) -> Self {
        self.config.stale_if_error = Some(max_age);
        self
    }

    /// Turns failover to per-tenant standby stamps on ([`Router::set_standby`]).
    pub fn failover(mut self, on: bool) -> Self {
        self.config.failover = on;
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
            standby: RwLock::new(HashMap::new()),
            writer: Mutex::new(()),
            stamps_writer: Mutex::new(()),
            flights: Flights::default(),
            stats: Stats::default(),
            cursor: AtomicU64::new(0),
            cursor_set: AtomicBool::new(false),
            warmed: AtomicBool::new(false),
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

    /// Routes a tenant from the local table: sync, allocation-free, lock-free.
    ///
    /// `tenant` is untrusted text (a subdomain, a header): only text equal to a cached id is
    /// answered from the table, and anything else is validated like [`TenantId::validate`]
    /// before it is looked up further. Answers:
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
                        Err(RouteError::Miss) => self.load(tenant).await,
                        Ok(route) if revalidate && route.stale => self.load(tenant).await,
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
                    Err(RouteError::Miss) => sh.make_route(tenant, a.stamp, a.epoch, a.mode, false),
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

    /// Applies one change-feed entry (for hosts that follow the feed themselves, without
    /// tokio). See [`Router::apply_batch`].
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// for id in [1, 2] {
    ///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
    ///         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// }
    /// let a = registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
    /// let router = Router::new(registry.clone());
    /// router.resolve("acme").await?;
    /// let cursor = router.cursor();
    /// registry.compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2))).await?;
    /// for change in registry.changes_since(cursor, 100).await?.changes {
    ///     router.apply(&change);
    /// }
    /// assert_eq!(router.route("acme")?.stamp, StampId(2));
    /// # Ok(()) }
    /// ```
    pub fn apply(&self, change: &Change) -> usize {
        self.apply_batch(std::slice::from_ref(change))
    }

    /// Applies change-feed entries in order and publishes them together; returns how many
    /// entries of the table changed.
    ///
    /// An assignment change replaces the tenant's entry if the tenant is cached, negatively
    /// cached, being resolved right now, or the router was warmed up (then every tenant is
    /// tracked); entries only move to larger epochs, so replaying old changes is harmless. An
    /// unassignment leaves an "unknown tenant" record. Stamp changes update endpoints. The
    /// cursor moves to the largest version seen.
    pub fn apply_batch(&self, changes: &[Change]) -> usize {
        let sh = &*self.shared;
        let now = sh.clock.now().as_millis();
        let generation = sh.generation.load(Ordering::Acquire);
        let warmed = sh.warmed.load(Ordering::Acquire);
        let mut changed = 0;
        let mut max_version = 0;
        let _w = sh.writer.lock();
        let mut b = Writes::new(sh);
        let mut neg = sh.negative.batch();
        for c in changes {
            max_version = max_version.max(c.version.0);
            match &c.kind {
                ChangeKind::Assignment { tenant, assignment } => {
                    let text = tenant.as_str();
                    let Ok(key) = Key::parse(text) else { continue };
                    let was_negative = neg.remove(text, &key);
                    let tracked = warmed || was_negative || b.get(&key).is_some() || sh.flights.contains(text);
                    if !tracked {
                        continue;
                    }
                    let (data, mode) = match assignment {
                        Some(a) => (sh.slot_for(a, now), a.mode),
                        None => (
                            SlotData {
                                epoch: c.version.0,
                                fetched: now,
                                stamp: 0,
                                meta: generation | TOMBSTONE,
                            },
                            AssignmentMode::Serving,
                        ),
                    };
                    let up = b.upsert(text, &key, data, mode);
                    if up != Upsert::Kept {
                        changed += 1;
                    }
                    sh.count_upsert(up, true);
                }
                ChangeKind::Stamp(stamp) => {
                    let keep = stamp.state != crate::model::StampState::Decommissioned;
                    if keep {
                        sh.set_stamp(stamp.id(), stamp.spec.endpoint.as_deref());
                    } else {
                        sh.remove_stamp(stamp.id());
                    }
                }
            }
        }
        b.commit();
        neg.commit();
        sh.cursor.fetch_max(max_version, Ordering::AcqRel);
        changed
    }

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

    /// Loads every assignment (page by page, [`Registry::assignments`]) and every stamp's
    /// endpoint, for fleets whose tenants fit in memory. Afterwards the router tracks every
    /// tenant's changes from the feed, not only cached ones. Returns the entries loaded.
    ///
    /// Call it before [`Router::spawn_follower`] (or before following the feed yourself): it
    /// pins the feed cursor first, so changes made during the warm-up are applied afterwards.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// for t in ["a", "b", "c"] {
    ///     registry.assign(&TenantSpec::new(TenantId::new(t)?), StampId(1)).await?;
    /// }
    /// let router = Router::new(registry);
    /// assert_eq!(router.warm_up().await?, 3);
    /// assert!(router.route("b").is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn warm_up(&self) -> Result<usize, Error> {
        self.pin_cursor().await?;
        self.shared.warmed.store(true, Ordering::Release);
        self.load_all().await
    }

    async fn load_all(&self) -> Result<usize, Error> {
        let sh = &*self.shared;
        let generation = sh.generation.load(Ordering::Acquire);
        let mut after: Option<TenantId> = None;
        let mut n = 0;
        loop {
            let page = match self.registry.assignments(after.as_ref(), sh.config.page_size).await {
                Ok(p) => p,
                Err(e) => {
                    sh.stats.incr(Counter::RegistryError);
                    sh.mark_down(sh.clock.now().as_millis());
                    return Err(e);
                }
            };
            let now = sh.clock.now().as_millis();
            {
                let _w = sh.writer.lock();
                let mut b = Writes::new(sh);
                for a in &page {
                    let text = a.tenant().as_str();
                    if let Ok(key) = Key::parse(text) {
                        let mut data = sh.slot_for(a, now);
                        data.meta = (data.meta & !GEN_MASK) | generation;
                        let up = b.upsert(text, &key, data, a.mode);
                        sh.count_upsert(up, false);
                        if up != Upsert::Kept {
                            n += 1;
                        }
                    }
                }
                b.commit();
            }
            let done = page.len() < sh.config.page_size;
            after = page.last().map(|a| a.tenant().clone());
            if done || after.is_none() {
                break;
            }
        }
        sh.mark_up();
        Ok(n)
    }

    /// Reads every stamp's endpoint from the registry's fleet.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.with_endpoint("https://s1")).await?;
    /// let router = Router::new(registry);
    /// assert_eq!(router.load_stamps().await?, 1);
    /// # Ok(()) }
    /// ```
    pub async fn load_stamps(&self) -> Result<usize, Error> {
        let fleet = match self.registry.fleet().await {
            Ok(f) => f,
            Err(e) => {
                self.shared.stats.incr(Counter::RegistryError);
                return Err(e);
            }
        };
        for load in &fleet.stamps {
            self.shared.set_stamp(load.id(), load.stamp.spec.endpoint.as_deref());
        }
        Ok(fleet.stamps.len())
    }

    /// Sets the cursor to the feed's head the first time the router follows the feed, reads
    /// the stamps' endpoints, and invalidates whatever was cached before (those entries were
    /// loaded without the feed).
    async fn pin_cursor(&self) -> Result<(), Error> {
        let sh = &*self.shared;
        if sh.cursor_set.load(Ordering::Acquire) {
            return Ok(());
        }
        let start = match self.registry.changes_since(Version::ZERO, 0).await {
            Ok(batch) => batch.head.0,
            Err(Error::ChangeFeedTruncated { oldest, .. }) => oldest.saturating_sub(1),
            Err(e) => {
                sh.stats.incr(Counter::RegistryError);
                sh.mark_down(sh.clock.now().as_millis());
                return Err(e);
            }
        };
        // Stamp changes after `start` come through the feed; the rest from the fleet.
        self.load_stamps().await?;
        sh.cursor.fetch_max(start, Ordering::AcqRel);
        sh.cursor_set.store(true, Ordering::Release);
        self.invalidate_all();
        Ok(())
    }

    /// Reads the change feed from the cursor up to its head and applies it; returns the number
    /// of changes read. Runtime-agnostic (the follower task calls it in a loop).
    ///
    /// When the feed no longer holds the cursor ([`Error::ChangeFeedTruncated`]), the router
    /// invalidates every entry in O(1) (so each tenant is re-read on its next request),
    /// re-loads everything if it was warmed up, and continues from the oldest retained change.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// let router = Router::new(registry.clone());
    /// router.sync().await?;
    /// let a = registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
    /// router.resolve("acme").await?;
    /// registry.unassign(a.tenant(), a.epoch).await?;
    /// router.sync().await?;
    /// assert_eq!(router.route("acme"), Err(stamps::router::RouteError::UnknownTenant));
    /// # Ok(()) }
    /// ```
    pub async fn sync(&self) -> Result<usize, Error> {
        let sh = &*self.shared;
        self.pin_cursor().await?;
        let mut read = 0;
        loop {
            let cursor = self.cursor();
            match self.registry.changes_since(cursor, sh.config.feed_batch).await {
                Ok(batch) => {
                    sh.mark_up();
                    let n = batch.changes.len();
                    read += n;
                    self.apply_batch(&batch.changes);
                    let next = batch.next_cursor(cursor);
                    sh.cursor.fetch_max(next.0, Ordering::AcqRel);
                    if n == 0 || !batch.has_more(next) {
                        return Ok(read);
                    }
                }
                Err(Error::ChangeFeedTruncated { oldest, .. }) => {
                    self.invalidate_all();
                    sh.cursor.fetch_max(oldest.saturating_sub(1), Ordering::AcqRel);
                    if sh.warmed.load(Ordering::Acquire) {
                        self.load_all().await?;
                    }
                }
                Err(e) => {
                    sh.stats.incr(Counter::RegistryError);
                    sh.mark_down(sh.clock.now().as_millis());
                    return Err(e);
                }
            }
        }
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

    /// Sets (or clears) a stamp's endpoint by hand.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// router.preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])?;
    /// router.set_endpoint(StampId(1), Some("10.0.0.7:443"));
    /// assert_eq!(router.route("acme")?.endpoint, Some("10.0.0.7:443"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_endpoint(&self, stamp: StampId, endpoint: Option<&str>) {
        self.shared.set_stamp(stamp, endpoint);
    }

    /// The endpoint the router knows for `stamp` (from [`Router::load_stamps`],
    /// [`Router::warm_up`], [`Router::sync`] or [`Router::set_endpoint`]); `None` if the stamp
    /// is unknown or declares none. Reads the router's stamp view: no registry I/O, no
    /// allocation. Hosts that route by something other than the route table (a signed routing
    /// token, say) take the endpoint from here.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// assert_eq!(router.stamp_endpoint(StampId(4)), None);
    /// router.set_endpoint(StampId(4), Some("http://10.0.0.4:8080"));
    /// assert_eq!(router.stamp_endpoint(StampId(4)), Some("http://10.0.0.4:8080"));
    /// ```
    pub fn stamp_endpoint(&self, stamp: StampId) -> Option<&'static str> {
        self.shared.endpoint(stamp)
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

    /// The current time on the router's clock ([`RouterBuilder::clock`]): hosts compute
    /// `Retry-After` from it so a [`FakeClock`](crate::FakeClock) drives them too.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let clock = FakeClock::starting_at(Timestamp::from_millis(5_000));
    /// let router = Router::builder(InMemoryRegistry::new()).clock(clock).build()?;
    /// assert_eq!(router.now(), Timestamp::from_millis(5_000));
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn now(&self) -> crate::Timestamp {
        self.shared.clock.now()
    }

    /// Names a standby stamp for an active-active tenant: while the tenant's own stamp is
    /// unhealthy and failover is on ([`RouterBuilder::failover`]), routes go to the standby
    /// (if it is healthy) with `failed_over_from` set. `None` removes the standby. The
    /// standby's endpoint is known once the router has read the stamps
    /// ([`Router::load_stamps`], [`Router::warm_up`] or [`Router::sync`]).
    ///
    /// ```
    /// use stamps::health::HealthTable;
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let health = HealthTable::new();
    /// let router = Router::builder(InMemoryRegistry::new()).health(health.clone()).failover(true).build()?;
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

    /// Refreshes the coarse clock from the router's clock. The tickers
    /// ([`spawn_clock_thread`](Self::spawn_clock_thread), [`spawn_follower`](Self::spawn_follower))
    /// call this; `route` reads the coarse clock only while one of them runs, and reads the
    /// router's clock itself otherwise, so a call without a ticker changes nothing but is
    /// harmless. TTLs hold either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stamps::router::{RouteError, Router};
    /// use stamps::*;
    /// let clock = FakeClock::new();
    /// let router = Router::builder(InMemoryRegistry::new()).clock(clock.clone())
    ///     .ttl(Duration::from_secs(30)).build()?;
    /// router.preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])?;
    /// router.tick();
    /// assert_eq!(router.route("acme")?.stamp, StampId(1));
    /// clock.advance(Duration::from_secs(31));
    /// router.tick();
    /// assert_eq!(router.route("acme"), Err(RouteError::Miss)); // past its TTL
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tick(&self) {
        self.shared.tick();
    }

    /// Starts a plain thread that keeps the coarse clock current (every `tick`), so `route`
    /// reads one atomic instead of the clock. Without a ticker, `route` reads the clock
    /// directly (correct, a little slower). Dropping the handle stops the thread.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let router = Router::new(InMemoryRegistry::new());
    /// let ticker = router.spawn_clock_thread()?;
    /// drop(ticker);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_clock_thread(&self) -> std::io::Result<ClockThread> {
        let shared = self.shared.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        shared.tick();
        shared.tickers.fetch_add(1, Ordering::AcqRel);
        let guard = TickerGuard(shared.clone());
        let period = shared.config.tick;
        let handle = std::thread::Builder::new()
            .name("stamps-router-clock".into())
            .spawn(move || {
                let _guard = guard;
                while !stop2.load(Ordering::Acquire) {
                    _guard.0.tick();
                    std::thread::sleep(period);
                }
            });
        match handle {
            Ok(h) => Ok(ClockThread { stop, handle: Some(h) }),
            Err(e) => Err(e),
        }
    }
}

/// Route-table writes in progress (the writer lock is held): fast-table writes land at once,
/// long-id writes are published by [`Writes::commit`].
struct Writes<'a> {
    sh: &'a Shared,
    long: table::Batch<'a>,
}

impl<'a> Writes<'a> {
    fn new(sh: &'a Shared) -> Self {
        Writes {
            sh,
            long: sh.table.batch(),
        }
    }

    fn get(&mut self, key: &Key<'_>) -> Option<SlotData> {
        match key {
            Key::Short(k) => {
                let w = *k;
                self.sh.fast.get(&w, self.sh.fast_hash(&w))
            }
            Key::Long(_) => self.long.get(key),
        }
    }

    fn upsert(&mut self, tenant: &str, key: &Key<'_>, mut data: SlotData, mode: AssignmentMode) -> Upsert {
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

    fn remove(&mut self, tenant: &str, key: &Key<'_>) -> bool {
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

    fn commit(self) {
        self.long.commit();
    }
}

/// Decrements the ticker count when a ticker ends.
struct TickerGuard(Arc<Shared>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.0.tickers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A thread keeping a router's coarse clock current; dropping it stops the thread.
///
/// ```
/// use stamps::router::Router;
/// let router = Router::new(stamps::InMemoryRegistry::new());
/// let ticker = router.spawn_clock_thread()?;
/// drop(ticker); // stops and joins the thread
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ClockThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ClockThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Shared {
    #[inline]
    fn now_ms(&self) -> u64 {
        if self.tickers.load(Ordering::Relaxed) > 0 {
            // The coarse clock lags real time by up to one tick: add it, so that TTLs are never
            // overrun (an entry may expire up to one tick early instead).
            self.coarse.load(Ordering::Relaxed).saturating_add(self.tick_ms)
        } else {
            self.clock.now().as_millis()
        }
    }

    fn tick(&self) {
        self.coarse.fetch_max(self.clock.now().as_millis(), Ordering::Relaxed);
    }

    fn mark_up(&self) {
        if self.down_since.load(Ordering::Relaxed) != 0 {
            self.down_since.store(0, Ordering::Release);
        }
    }

    /// Whether a `resolve` that got a stale route may try the registry now (at most once per
    /// `poll_interval` across all tenants).
    fn may_retry_registry(&self) -> bool {
        let now = self.clock.now().as_millis();
        let at = self.retry_at.load(Ordering::Acquire);
        if now < at {
            return false;
        }
        let every = u64::try_from(self.config.poll_interval.as_millis()).unwrap_or(u64::MAX);
        self.retry_at
            .compare_exchange(
                at,
                now.saturating_add(every.max(1)),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    fn mark_down(&self, now: u64) {
        let _ = self
            .down_since
            .compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Relaxed);
    }

    fn slot_for(&self, a: &Assignment, now: u64) -> SlotData {
        SlotData {
            epoch: a.epoch.0,
            fetched: now,
            stamp: a.stamp.0,
            meta: self.generation.load(Ordering::Acquire),
        }
    }

    fn count_upsert(&self, up: Upsert, from_feed: bool) {
        match up {
            Upsert::Inserted { evicted: true } => self.stats.incr(Counter::Eviction),
            Upsert::Replaced if from_feed => self.stats.incr(Counter::Invalidation),
            _ => {}
        }
    }

    fn set_stamp(&self, stamp: StampId, endpoint: Option<&str>) {
        let (handle, endpoint) = match endpoint.map(intern::intern) {
            Some((h, text)) => (h, Some(text)),
            None => (0, None),
        };
        let current = self.stamps.load();
        if current.map.get(&stamp) == Some(&endpoint) {
            return;
        }
        let _w = self.stamps_writer.lock();
        let current = self.stamps.load();
        let mut next = current.map.clone();
        next.insert(stamp, endpoint);
        self.stamps.store(Arc::new(StampView::from_map(next)));
        self.stamps_version.fetch_add(1, Ordering::AcqRel);
        if let Some(word) = self.endpoints.get(stamp.0 as usize) {
            word.store(handle, Ordering::Release);
        }
    }

    fn remove_stamp(&self, stamp: StampId) {
        let _w = self.stamps_writer.lock();
        let current = self.stamps.load();
        if current.map.contains_key(&stamp) {
            let mut next = current.map.clone();
            next.remove(&stamp);
            self.stamps.store(Arc::new(StampView::from_map(next)));
            self.stamps_version.fetch_add(1, Ordering::AcqRel);
            if let Some(word) = self.endpoints.get(stamp.0 as usize) {
                word.store(0, Ordering::Release);
            }
        }
    }

    /// The endpoint of `stamp` (`None` if unknown or without one), without locks,
    /// thread-locals or allocation.
    #[inline(always)]
    fn endpoint(&self, stamp: StampId) -> Option<&'static str> {
        match self.endpoints.get(stamp.0 as usize) {
            Some(word) => intern::resolve(word.load(Ordering::Acquire)),
            None => self.sparse_endpoint(stamp),
        }
    }

    #[cold]
    #[inline(never)]
    fn sparse_endpoint(&self, stamp: StampId) -> Option<&'static str> {
        self.with_stamps(|v| v.endpoint(stamp))
    }

    /// The table lookup behind `route`; `count` records hits and negative hits.
    ///
    /// The hit path for ids of up to 24 bytes does not validate the text: only a valid id can
    /// equal a key the table holds (see [`table::inline_words`]). Everything else, including
    /// every invalid id, goes through [`Shared::lookup_slow`], which validates in full.
    ///
    /// `count` records the outcome in the counters (hit, miss, negative hit, stale serve,
    /// stamp unavailable).
    #[inline(always)]
    fn lookup(&self, tenant: &str, count: bool) -> Result<Route, RouteError> {
        if let Some(k) = table::inline_words(tenant) {
            let hash = self.fast_hash(&k);
            if let Some(d) = self.fast.get(&k, hash) {
                let now = self.now_ms();
                // A fresh serving entry of the current generation (no flag set): the hot case,
                // decided with one comparison of `meta` and one of the time.
                if d.meta == self.generation.load(Ordering::Relaxed) && now < d.fetched.saturating_add(self.ttl_ms) {
                    return self.serve(tenant, d, count);
                }
                return self.answer_fast_slow(tenant, &k, hash, d, now, count);
            }
        }
        self.lookup_slow(tenant, count)
    }

    /// A fresh, serving route from `d`, counted as a hit.
    #[inline(always)]
    fn serve(&self, tenant: &str, d: SlotData, count: bool) -> Result<Route, RouteError> {
        let r = self.make_route(tenant, StampId(d.stamp), Epoch(d.epoch), AssignmentMode::Serving, false);
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
    fn answer_fast_slow(
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
            self.answer(AssignmentMode::Serving, tenant, d, now, count)
        };
        self.count_miss(&r, count);
        r
    }

    /// `lookup` for long ids, ids the fast table does not hold, and invalid text.
    #[inline(never)]
    fn lookup_slow(&self, tenant: &str, count: bool) -> Result<Route, RouteError> {
        let key = Key::parse(tenant)?;
        let now = self.now_ms();
        let r = match key {
            Key::Long(_) => match self.long_entry(tenant, &key) {
                Some((d, mode)) => self.answer(mode, tenant, d, now, count),
                None => self.negative_lookup(&key, now, count),
            },
            Key::Short(_) => self.negative_lookup(&key, now, count),
        };
        self.count_miss(&r, count);
        r
    }

    #[inline]
    fn count_miss(&self, r: &Result<Route, RouteError>, count: bool) {
        if count && matches!(r, Err(RouteError::Miss)) {
            self.stats.incr(Counter::Miss);
        }
    }

    /// A consistent entry of the fast table: slot and mode of the same write. Only tenants in
    /// dual-write or frozen mode look further than the slot; one that keeps racing writes to
    /// that very tenant (a writer descheduled between the two stores) finally reads under the
    /// writer lock, which no write holds for long.
    #[inline(always)]
    fn fast_entry(&self, tenant: &str, w: &fast::Words) -> Option<(SlotData, AssignmentMode)> {
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
    fn answer_with_mode(
        &self,
        tenant: &str,
        w: &fast::Words,
        hash: u64,
        d: SlotData,
        now: u64,
        count: bool,
    ) -> Result<Route, RouteError> {
        match self.fast_entry_with_mode(tenant, w, hash, d) {
            Some((d, mode)) => self.answer(mode, tenant, d, now, count),
            None => Err(RouteError::Miss),
        }
    }

    #[cold]
    fn fast_entry_with_mode(
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
    fn long_entry(&self, tenant: &str, key: &Key<'_>) -> Option<(SlotData, AssignmentMode)> {
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
    fn fast_hash(&self, w: &fast::Words) -> u64 {
        self.fast_seeds.hash(w)
    }

    /// Records (or clears) a fast-table tenant's mode (writer lock held).
    fn set_mode(&self, tenant: &str, mode: Option<(u64, AssignmentMode)>) {
        self.modes.set(tenant, mode);
    }

    #[cold]
    fn negative_lookup(&self, key: &Key<'_>, now: u64, count: bool) -> Result<Route, RouteError> {
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
    fn answer(
        &self,
        mode: AssignmentMode,
        tenant: &str,
        d: SlotData,
        now: u64,
        count: bool,
    ) -> Result<Route, RouteError> {
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
        let r = self.make_route(tenant, StampId(d.stamp), Epoch(d.epoch), mode, stale);
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
    fn may_serve_stale(&self, fetched: u64, now: u64) -> bool {
        match self.stale_ms {
            Some(max) => self.down_since.load(Ordering::Relaxed) != 0 && now < fetched.saturating_add(max),
            None => false,
        }
    }

    /// The route after a failed registry read: the cached entry, flagged stale, if allowed.
    fn stale_route(&self, tenant: &str, key: &Key<'_>, now: u64) -> Result<Route, RouteError> {
        let entry = match key {
            Key::Short(k) => self.fast_entry(tenant, k),
            Key::Long(_) => self.long_entry(tenant, key),
        };
        match entry {
            Some((d, mode)) if !d.is_tombstone() && self.may_serve_stale(d.fetched, now) => {
                let r = self.make_route(tenant, StampId(d.stamp), Epoch(d.epoch), mode, true);
                if r.is_ok() {
                    self.stats.incr(Counter::StaleServe);
                }
                r
            }
            _ => Err(RouteError::Unavailable),
        }
    }

    #[inline(always)]
    fn make_route(
        &self,
        tenant: &str,
        stamp: StampId,
        epoch: Epoch,
        mode: AssignmentMode,
        stale: bool,
    ) -> Result<Route, RouteError> {
        if let Some(health) = &self.health {
            if let Some(since) = health.unavailable_since(stamp) {
                return self.with_stamps(|stamps| self.fail_over(stamps, health, tenant, stamp, since, epoch, stale));
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

    /// Runs `f` on this router's stamp view, from the thread's copy when it is current (no
    /// atomic read-modify-write on the way).
    #[inline(always)]
    fn with_stamps<T>(&self, f: impl Fn(&StampView) -> T) -> T {
        let version = self.stamps_version.load(Ordering::Acquire);
        let cached = STAMP_VIEWS.try_with(|views| {
            let mut views = views.try_borrow_mut().ok()?;
            let pos = match views.iter().position(|c| c.router == self.id) {
                Some(i) => i,
                None => {
                    if views.len() >= 8 {
                        views.remove(0);
                    }
                    views.push(CachedView {
                        router: self.id,
                        version: version.wrapping_sub(1),
                        view: self.stamps.load_full(),
                    });
                    views.len() - 1
                }
            };
            let c = views.get_mut(pos)?;
            if c.version != version {
                c.view = self.stamps.load_full();
                c.version = version;
            }
            Some(f(&c.view))
        });
        match cached {
            Ok(Some(v)) => v,
            _ => f(&self.stamps.load()),
        }
    }

    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn fail_over(
        &self,
        stamps: &StampView,
        health: &HealthTable,
        tenant: &str,
        stamp: StampId,
        since: crate::Timestamp,
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

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<R: Registry + ?Sized> Router<R> {
    /// Spawns the change-feed follower on the current tokio runtime: it calls
    /// [`Router::sync`], then waits for the registry's [`change_signal`](Registry::change_signal)
    /// (or `poll_interval`), forever; registry errors back off and retry. It also keeps the
    /// coarse clock current. Dropping the returned handle stops both tasks.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// let router = Router::new(registry.clone());
    /// router.warm_up().await?;
    /// let follower = router.spawn_follower();
    /// drop(follower); // stops following
    /// # Ok(()) }
    /// ```
    pub fn spawn_follower(&self) -> Follower {
        let ticker = {
            let shared = self.shared.clone();
            shared.tick();
            shared.tickers.fetch_add(1, Ordering::AcqRel);
            let guard = TickerGuard(shared);
            tokio::spawn(async move {
                let guard = guard;
                let period = guard.0.config.tick;
                loop {
                    guard.0.tick();
                    tokio::time::sleep(period).await;
                }
            })
        };
        let me = self.clone();
        let follower = tokio::spawn(async move {
            let signal = me.registry.change_signal();
            let poll = me.shared.config.poll_interval;
            let mut backoff = Duration::from_millis(50);
            loop {
                match me.sync().await {
                    Ok(_) => {
                        backoff = Duration::from_millis(50);
                        let _ = tokio::time::timeout(poll, signal.changed(me.cursor())).await;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(poll.max(Duration::from_millis(50)));
                    }
                }
            }
        });
        Follower {
            tasks: vec![follower, ticker],
        }
    }
}

/// The follower's tasks; dropping the handle aborts them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let router = stamps::router::Router::new(stamps::InMemoryRegistry::new());
/// let follower = router.spawn_follower();
/// follower.abort();
/// # }
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug)]
pub struct Follower {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[cfg(feature = "tokio")]
impl Follower {
    /// Stops the follower (the same as dropping the handle).
    pub fn abort(self) {
        drop(self);
    }
}

#[cfg(feature = "tokio")]
impl Drop for Follower {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
