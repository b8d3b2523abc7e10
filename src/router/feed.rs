//! Following the change feed: [`Router::apply`] and [`Router::apply_batch`], the warm-up
//! ([`Router::warm_up`]), the feed cursor and [`Router::sync`].

use std::sync::atomic::Ordering;
use std::task::Poll;

use super::stats::Counter;
use super::table::{Key, SlotData, Upsert, GEN_MASK, TOMBSTONE};
use super::writes::Writes;
use super::Router;
use crate::error::Error;
use crate::model::{Assignment, AssignmentMode, Change, ChangeKind, TenantId, Version};
use crate::registry::{check_page, Registry};

impl<R: Registry + ?Sized> Router<R> {
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
                ChangeKind::RouteOverride(o) => sh.set_redirect(o.stamp, o.redirect),
                // Pins and repair records change no route.
                _ => {}
            }
        }
        b.commit();
        neg.commit();
        sh.cursor.fetch_max(max_version, Ordering::AcqRel);
        changed
    }

    /// Loads every assignment (page by page, [`Registry::assignments`]) and every stamp's
    /// endpoint, for fleets whose tenants fit in memory. Afterwards the router tracks every
    /// tenant's changes from the feed, not only cached ones. Returns the entries loaded. A
    /// page that does not advance (a tenant not after the one before it, more assignments
    /// than asked) fails the warm-up with [`Error::Corrupt`] instead of looping.
    ///
    /// Call it before `Router::spawn_follower` (feature `tokio`; or before following the feed yourself): it
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

    /// Loads every assignment, page by page. The next page is requested before the current
    /// one is inserted (its cursor is the current page's last tenant), so the registry reads
    /// and sends it while this thread fills the table instead of the two taking turns.
    async fn load_all(&self) -> Result<usize, Error> {
        let sh = &*self.shared;
        let generation = sh.generation.load(Ordering::Acquire);
        let size = sh.config.page_size;
        let mut n = 0;
        let mut page = self.page(None).await?;
        loop {
            let done = page.len() < size;
            let after = page.last().map(|a| a.tenant().clone());
            // `async_trait` methods return boxed, pinned futures: polled in place below.
            let mut next = match (&after, done) {
                (Some(t), false) => Some(self.registry.assignments(Some(t), size)),
                _ => None,
            };
            // Start the next read (a networked registry sends its request on the first poll).
            let early = match next.as_mut() {
                Some(f) => std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).map(Some))).await,
                None => Poll::Ready(None),
            };
            n += self.insert_page(&page, generation);
            let fetched = match early {
                Poll::Ready(r) => r,
                Poll::Pending => match next {
                    Some(f) => Some(f.await),
                    None => None,
                },
            };
            page = match fetched {
                None => break,
                Some(r) => self.page_result(r, after.as_ref())?,
            };
        }
        sh.mark_up();
        Ok(n)
    }

    /// One page of assignments after `after`, counting a failure against the registry.
    async fn page(&self, after: Option<&TenantId>) -> Result<Vec<Assignment>, Error> {
        let r = self.registry.assignments(after, self.shared.config.page_size).await;
        self.page_result(r, after)
    }

    /// The registry's answer for the page after `after`, checked to advance
    /// ([`check_page`]); a failure is counted against the registry.
    fn page_result(
        &self,
        r: Result<Vec<Assignment>, Error>,
        after: Option<&TenantId>,
    ) -> Result<Vec<Assignment>, Error> {
        let sh = &*self.shared;
        r.and_then(|page| check_page(&page, after, sh.config.page_size).map(|()| page))
            .inspect_err(|_| {
                sh.stats.incr(Counter::RegistryError);
                sh.mark_down(sh.clock.now().as_millis());
            })
    }

    /// Inserts a page into the table under the writer lock; returns how many routes it added
    /// or changed.
    fn insert_page(&self, page: &[Assignment], generation: u32) -> usize {
        let sh = &*self.shared;
        let now = sh.clock.now().as_millis();
        let mut n = 0;
        let _w = sh.writer.lock();
        let mut b = Writes::new(sh);
        for a in page {
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
        n
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
    /// When the changes it applied belong to a history the registry lost
    /// ([`Error::HistoryDiverged`], after a failover without synchronous replication), it drops
    /// every entry ([`Router::clear`](super::Router::clear): a lost entry's epoch may exceed
    /// the surviving one's), follows from the new history's head, re-reads the stamps (and
    /// everything, if it was warmed up) and counts it in
    /// [`RouterStats::history_resets`](super::RouterStats::history_resets).
    /// Any other error (the registry unreachable, or a change it cannot read back,
    /// [`Error::Corrupt`]) leaves the cursor where it is, counts in
    /// [`RouterStats::feed_errors`](super::RouterStats::feed_errors) and sets
    /// [`RouterStats::feed_stuck_at`](super::RouterStats::feed_stuck_at) until a read
    /// succeeds; the router keeps serving what it has.
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
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            let span = tracing::debug_span!("stamps.router.sync", router = self.shared.id, cursor = self.cursor().0);
            self.sync_inner().instrument(span).await
        }
        #[cfg(not(feature = "tracing"))]
        {
            self.sync_inner().await
        }
    }

    async fn sync_inner(&self) -> Result<usize, Error> {
        let sh = &*self.shared;
        self.pin_cursor().await?;
        let mut read = 0;
        loop {
            let cursor = self.cursor();
            match self.registry.changes_since(cursor, sh.config.feed_batch).await {
                Ok(batch) => {
                    sh.mark_up();
                    sh.stats.feed_ok();
                    let n = batch.changes.len();
                    read += n;
                    self.apply_batch(&batch.changes);
                    let next = batch.next_cursor(cursor);
                    sh.cursor.fetch_max(next.0, Ordering::AcqRel);
                    sh.feed_head.fetch_max(batch.head.0, Ordering::AcqRel);
                    if n == 0 || !batch.has_more(next) {
                        if next >= batch.head {
                            sh.behind_since.store(u64::MAX, Ordering::Release);
                        }
                        #[cfg(feature = "tracing")]
                        tracing::debug!(read, cursor = next.0, head = batch.head.0, "feed applied");
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
                Err(Error::HistoryDiverged { head, .. }) => {
                    // What was applied after the last common version is lost: every entry goes
                    // (an entry of the lost history may carry a larger epoch than the surviving
                    // assignment, and would shadow it), the cursor goes back to the new
                    // history's head, and everything is read again.
                    sh.stats.incr(Counter::HistoryReset);
                    self.clear();
                    sh.cursor.store(head.0, Ordering::Release);
                    self.load_stamps().await?;
                    if sh.warmed.load(Ordering::Acquire) {
                        self.load_all().await?;
                    }
                }
                Err(e) => {
                    // Keep the cursor: the change that failed (unreachable registry, or a
                    // corrupt row) is read again on the next call, never skipped.
                    sh.stats.incr(Counter::RegistryError);
                    sh.stats.feed_failed(cursor.0);
                    sh.mark_down(sh.clock.now().as_millis());
                    return Err(e);
                }
            }
        }
    }
}
