//! [`Shared`]: the state every clone of a [`Router`](super::Router) shares (the tables,
//! the stamp view, the clocks, the locks and the counters), and whether the registry is
//! currently answering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

use super::endpoints::StampView;
use super::fast::{self, FastTable};
use super::flight::Flights;
use super::modes::Modes;
use super::stats::Stats;
use super::table::Table;
use super::RouterConfig;
use crate::health::HealthTable;
use crate::model::{Redirect, StampId};
use crate::time::Clock;

pub(super) struct Shared {
    /// Tenant ids up to 24 bytes.
    pub(super) fast: FastTable,
    pub(super) fast_seeds: fast::Seeds,
    /// Modes of fast-table tenants that are not simply serving.
    pub(super) modes: Modes,
    /// Longer tenant ids.
    pub(super) table: Table,
    pub(super) negative: Table,
    pub(super) ttl_ms: u64,
    pub(super) negative_ttl_ms: u64,
    pub(super) stale_ms: Option<u64>,
    pub(super) tick_ms: u64,
    pub(super) config: RouterConfig,
    pub(super) clock: Arc<dyn Clock>,
    /// The coarse clock (ms) and how many tickers keep it current.
    pub(super) coarse: AtomicU64,
    pub(super) tickers: AtomicUsize,
    pub(super) generation: AtomicU32,
    /// When the registry was first seen failing since it last answered (0: it answers).
    pub(super) down_since: AtomicU64,
    /// While the registry is down: when `resolve` may next try it for a tenant served stale
    /// (clock ms), so a recovered registry is noticed without a flood of reads while it is not.
    pub(super) retry_at: AtomicU64,
    pub(super) stamps: ArcSwap<StampView>,
    /// Bumped after every store to `stamps`; cold paths (stamp ids of 1,024 and above,
    /// failover) keep a per-thread copy of the view.
    pub(super) stamps_version: AtomicU64,
    /// Endpoint handles ([`intern::Handle`]) of stamps with ids below [`DENSE_STAMPS`],
    /// indexed by stamp id: the route path reads an endpoint with two plain loads and no
    /// branch that depends on which stamp it is (a mispredicted branch there would discard
    /// the work the CPU had started on the next request while this one waits for memory).
    pub(super) endpoints: Box<[AtomicU32]>,
    /// Identifies this router in the per-thread caches.
    pub(super) id: u64,
    pub(super) health: Option<HealthTable>,
    /// The registry's routing overrides, by stamp ([`super::redirect`]).
    pub(super) redirects: RwLock<HashMap<StampId, Redirect>>,
    /// Whether any override is [`RedirectWhen::Always`](crate::RedirectWhen::Always): the
    /// hit path reads only this flag while none is.
    pub(super) always_redirects: AtomicBool,
    pub(super) writer: Mutex<()>,
    pub(super) stamps_writer: Mutex<()>,
    pub(super) flights: Flights,
    pub(super) stats: Stats,
    pub(super) cursor: AtomicU64,
    pub(super) cursor_set: AtomicBool,
    pub(super) warmed: AtomicBool,
    /// The newest registry version the feed has seen (a batch's head).
    pub(super) feed_head: AtomicU64,
    /// When the router was first seen behind that head, in clock milliseconds; `u64::MAX`
    /// while it is caught up.
    pub(super) behind_since: AtomicU64,
}

impl Shared {
    pub(super) fn mark_up(&self) {
        if self.down_since.load(Ordering::Relaxed) != 0 {
            self.down_since.store(0, Ordering::Release);
        }
    }

    /// Whether a `resolve` that got a stale route may try the registry now (at most once per
    /// `poll_interval` across all tenants).
    pub(super) fn may_retry_registry(&self) -> bool {
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

    pub(super) fn mark_down(&self, now: u64) {
        let _ = self
            .down_since
            .compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Relaxed);
    }
}
