//! Stamp endpoints: the dense endpoint array the hit path reads, the [`StampView`] of every
//! known stamp (with per-thread copies for cold paths), and how endpoints are learnt
//! ([`Router::load_stamps`], [`Router::set_endpoint`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::intern;
use super::shared::Shared;
use super::stats::Counter;
use super::Router;
use crate::error::Error;
use crate::model::StampId;
use crate::registry::Registry;

/// Stamps with ids below this have their endpoint in `Shared::endpoints` (4 KiB per router);
/// larger ids are found in the stamp view.
pub(super) const DENSE_STAMPS: u32 = 1024;

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

/// Known stamps and their endpoints.
#[derive(Default)]
pub(super) struct StampView {
    pub(super) map: HashMap<StampId, Option<&'static str>>,
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
    pub(super) fn endpoint(&self, id: StampId) -> Option<&'static str> {
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

impl<R: Registry + ?Sized> Router<R> {
    /// Reads every stamp's endpoint from the registry's fleet, and its routing overrides
    /// ([`Router::route_overrides`]).
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.endpoint("https://s1")).await?;
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
        if let Err(e) = self.load_overrides().await {
            self.shared.stats.incr(Counter::RegistryError);
            return Err(e);
        }
        Ok(fleet.stamps.len())
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
}

impl Shared {
    pub(super) fn set_stamp(&self, stamp: StampId, endpoint: Option<&str>) {
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

    pub(super) fn remove_stamp(&self, stamp: StampId) {
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
    pub(super) fn endpoint(&self, stamp: StampId) -> Option<&'static str> {
        match self.endpoints.get(stamp.0 as usize) {
            Some(word) => intern::resolve(word.load(Ordering::Acquire)),
            None => self.sparse_endpoint(stamp),
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn sparse_endpoint(&self, stamp: StampId) -> Option<&'static str> {
        self.with_stamps(|v| v.endpoint(stamp))
    }

    /// Runs `f` on this router's stamp view, from the thread's copy when it is current (no
    /// atomic read-modify-write on the way).
    #[inline(always)]
    pub(super) fn with_stamps<T>(&self, f: impl Fn(&StampView) -> T) -> T {
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
}
