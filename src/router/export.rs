//! The router's view of its own lag ([`Router::feed_lag`]) and its metrics, exported on
//! scrape ([`Router::export_metrics`]): the hit path keeps counting in per-thread stripes and
//! never calls the metrics recorder.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Router;
use crate::model::Version;
use crate::registry::Registry;
use crate::telemetry::{self, names, Value};

/// How far a router is behind the registry's change feed ([`Router::feed_lag`]).
///
/// ```
/// use stamps::router::FeedLag;
/// let lag = FeedLag::default();
/// assert!(lag.is_caught_up());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedLag {
    /// The newest version the router knows the registry has: the head of the last batch it
    /// read, or the registry's change signal, whichever is newer.
    pub head: Version,
    /// The last version the router applied.
    pub cursor: Version,
    /// `head − cursor`: changes the router has not applied.
    pub versions: u64,
    /// How long the router has been behind `head` (zero while caught up). It starts when the
    /// router first sees a newer head, in a feed read or a call to `feed_lag`.
    pub behind_for: Duration,
}

impl FeedLag {
    /// Whether the router has applied everything it knows of.
    ///
    /// ```
    /// use stamps::router::FeedLag;
    /// assert!(FeedLag::default().is_caught_up());
    /// ```
    pub fn is_caught_up(&self) -> bool {
        self.versions == 0
    }
}

impl<R: Registry + ?Sized> Router<R> {
    /// How far this router is behind the registry's change feed.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// let router = Router::new(registry.clone());
    /// router.sync().await?;
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// assert!(router.feed_lag().versions > 0);  // the signal says the registry moved on
    /// router.sync().await?;
    /// assert!(router.feed_lag().is_caught_up());
    /// # Ok(()) }
    /// ```
    pub fn feed_lag(&self) -> FeedLag {
        let sh = &*self.shared;
        let cursor = self.cursor();
        let head = Version(sh.feed_head.load(Ordering::Acquire)).max(self.registry.change_signal().head());
        let versions = head.0.saturating_sub(cursor.0);
        let behind_for = if versions == 0 {
            sh.behind_since.store(u64::MAX, Ordering::Release);
            Duration::ZERO
        } else {
            let now = sh.clock.now().as_millis();
            let since = match sh
                .behind_since
                .compare_exchange(u64::MAX, now, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => now,
                Err(since) => since,
            };
            Duration::from_millis(now.saturating_sub(since))
        };
        FeedLag {
            head: head.max(cursor),
            cursor,
            versions,
            behind_for,
        }
    }

    /// Exports the router's counters and gauges to the installed `metrics` recorder (feature
    /// `metrics`; without it, this does nothing): call it from the scrape handler before
    /// rendering, or on a timer. Counters are set to the router's running totals
    /// ([`Router::stats`]), so several calls never double-count; gauges are the table size,
    /// the feed lag ([`Router::feed_lag`]) and whether the feed is stuck. The names are in
    /// [`crate::telemetry::names`]. Several routers in one process export
    /// onto the same series: export one of them.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let router = Router::new(InMemoryRegistry::new());
    /// let _ = router.route("acme");
    /// router.export_metrics(); // stamps_router_misses_total 1, with a recorder installed
    /// ```
    pub fn export_metrics(&self) {
        let s = self.stats();
        let none: &[(&str, Value<'_>)] = &[];
        telemetry::absolute(names::ROUTER_HITS, none, s.hits);
        telemetry::absolute(names::ROUTER_MISSES, none, s.misses);
        telemetry::absolute(names::ROUTER_STALE_SERVES, none, s.stale_serves);
        for (reason, n) in [
            ("unknown_tenant", s.negative_hits),
            ("stamp_unavailable", s.stamp_unavailable),
            ("invalid_tenant", s.invalid_tenants),
        ] {
            telemetry::absolute(names::ROUTER_REJECTIONS, &[("reason", Value::Str(reason))], n);
        }
        telemetry::absolute(names::ROUTER_INVALIDATIONS, none, s.invalidations);
        telemetry::absolute(names::ROUTER_EVICTIONS, none, s.evictions);
        telemetry::absolute(names::ROUTER_REGISTRY_ERRORS, none, s.registry_errors);
        telemetry::absolute(names::ROUTER_FEED_ERRORS, none, s.feed_errors);
        telemetry::absolute(names::ROUTER_HISTORY_RESETS, none, s.history_resets);
        telemetry::gauge(names::ROUTER_ENTRIES, none, self.len() as f64);
        let lag = self.feed_lag();
        telemetry::gauge(names::ROUTER_FEED_LAG_VERSIONS, none, lag.versions as f64);
        telemetry::gauge(names::ROUTER_FEED_LAG_SECONDS, none, lag.behind_for.as_secs_f64());
        telemetry::gauge(
            names::ROUTER_FEED_STUCK,
            none,
            f64::from(u8::from(s.feed_stuck_at.is_some())),
        );
    }
}
