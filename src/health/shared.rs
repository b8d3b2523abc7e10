//! [`PgHealth`]: the health view routers share through the registry database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::monitor::{HealthMonitor, HealthTask};
use super::{HealthReport, HealthSource, HealthTable};
use crate::error::Result;
use crate::model::{HealthStatus, Stamp, StampId, Version};
use crate::registry::postgres::{PgRegistry, SharedHealth};
use crate::registry::Registry;
use crate::time::{Clock, SystemClock, Timestamp};

/// What a stamp whose reports have all expired counts as (see [`PgHealth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnExpired {
    /// Unknown: removed from the table, so routers treat it as available.
    #[default]
    Unknown,
    /// Unhealthy, with the reason "health report expired".
    Unhealthy,
}

/// One health view shared by every router through the registry's PostgreSQL
/// database (feature `postgres`). Stamps, or one central prober, publish reports with an
/// expiry ([`PgRegistry::publish_health`]); every router follows the same table into its
/// [`HealthTable`], woken by `NOTIFY` and polling as a fallback, so routers agree on which
/// stamp is down and the stamps are probed once instead of once per router.
///
/// **Several reports for one stamp** (several probers, or the stamp's own agent and a prober):
/// the worst live one counts (unhealthy over degraded over healthy).
///
/// **Expiry.** A report counts until its `expires_at`. A stamp whose reports have all expired
/// is *unknown*, and [`OnExpired`] says what unknown means:
/// - [`OnExpired::Unknown`] (the default) removes the stamp from the table, so routers treat it
///   as available, as they treat a stamp nobody has checked. A dead prober then does not take
///   the fleet down; alert on the prober's own health instead.
/// - [`OnExpired::Unhealthy`] marks it unhealthy ("health report expired"), for fleets that
///   would rather refuse than route blind.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stamps::health::{HealthMonitor, HealthTable, PgHealth, StaticHealth};
/// use stamps::registry::postgres::{PgConfig, PgRegistry};
/// # async fn demo() -> stamps::Result<()> {
/// let registry = PgRegistry::connect(PgConfig::from_url("postgres://postgres@127.0.0.1/test")?).await?;
/// let shared = Arc::new(PgHealth::new(registry.clone()));
/// // One prober for the fleet publishes what it sees (an `HttpHealthSource` in production)...
/// let monitor = Arc::new(HealthMonitor::new(StaticHealth::new()));
/// shared.clone().spawn_prober(monitor, "prober-1", Duration::from_secs(2)).detach();
/// // ...and every router follows the same view into the table it routes by.
/// let table = HealthTable::new();
/// shared.spawn_follower(table.clone()).detach();
/// # Ok(()) }
/// ```
pub struct PgHealth {
    registry: PgRegistry,
    poll: Duration,
    expired: OnExpired,
    clock: Arc<dyn Clock>,
    /// The last read of the table: every report, by stamp.
    view: Mutex<BTreeMap<StampId, Vec<SharedHealth>>>,
}

impl std::fmt::Debug for PgHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHealth")
            .field("poll", &self.poll)
            .field("expired", &self.expired)
            .field("stamps", &self.view.lock().len())
            .finish_non_exhaustive()
    }
}

/// A stamp's status from its reports at `now`: the worst live one, or `None` when none is live.
fn judge(reports: &[SharedHealth], now: Timestamp) -> Option<(HealthStatus, Option<&str>)> {
    let rank = |s: HealthStatus| match s {
        HealthStatus::Unhealthy => 2,
        HealthStatus::Degraded => 1,
        _ => 0,
    };
    reports
        .iter()
        .filter(|r| r.is_live(now))
        .max_by_key(|r| rank(r.status))
        .map(|r| (r.status, r.reason.as_deref()))
}

impl PgHealth {
    /// The view over `registry`'s health table: polled every second (as well as woken by
    /// `NOTIFY`), expired stamps unknown.
    ///
    /// ```no_run
    /// # fn f(registry: stamps::registry::postgres::PgRegistry) {
    /// let shared = stamps::health::PgHealth::new(registry);
    /// # }
    /// ```
    pub fn new(registry: PgRegistry) -> Self {
        PgHealth {
            registry,
            poll: Duration::from_secs(1),
            expired: OnExpired::Unknown,
            clock: Arc::new(SystemClock),
            view: Mutex::new(BTreeMap::new()),
        }
    }

    /// How often followers read the table when no `NOTIFY` wakes them (at least 10 ms).
    ///
    /// ```no_run
    /// # fn f(registry: stamps::registry::postgres::PgRegistry) {
    /// let shared = stamps::health::PgHealth::new(registry).poll(std::time::Duration::from_millis(250));
    /// # }
    /// ```
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// What a stamp whose reports all expired counts as.
    ///
    /// ```no_run
    /// # fn f(registry: stamps::registry::postgres::PgRegistry) {
    /// use stamps::health::{OnExpired, PgHealth};
    /// let shared = PgHealth::new(registry).on_expired(OnExpired::Unhealthy);
    /// # }
    /// ```
    pub fn on_expired(mut self, policy: OnExpired) -> Self {
        self.expired = policy;
        self
    }

    /// The clock expiry is judged by (by default the system clock; give the registry's).
    ///
    /// ```no_run
    /// # fn f(registry: stamps::registry::postgres::PgRegistry) {
    /// let shared = stamps::health::PgHealth::new(registry).clock(stamps::FakeClock::new());
    /// # }
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Publishes a report for its stamp on behalf of `reporter`, valid for `ttl`.
    ///
    /// ```no_run
    /// # async fn demo(shared: stamps::health::PgHealth) -> stamps::Result<()> {
    /// use stamps::health::HealthReport;
    /// use stamps::*;
    /// let report = HealthReport::new(StampId(2), HealthStatus::Unhealthy, Some("disk full"), Timestamp::from_millis(0));
    /// shared.publish("stamp-2-agent", &report, std::time::Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, reporter: &str, report: &HealthReport, ttl: Duration) -> Result<SharedHealth> {
        self.registry
            .publish_health(report.stamp, report.status, report.reason.as_deref(), reporter, ttl)
            .await
    }

    /// Reads the table now; returns how many reports it holds.
    ///
    /// ```no_run
    /// # async fn demo(shared: stamps::health::PgHealth) -> stamps::Result<()> {
    /// let n = shared.refresh().await?;
    /// # let _ = n; Ok(()) }
    /// ```
    pub async fn refresh(&self) -> Result<usize> {
        let reports = self.registry.health_reports().await?;
        let n = reports.len();
        let mut view: BTreeMap<StampId, Vec<SharedHealth>> = BTreeMap::new();
        for r in reports {
            view.entry(r.stamp).or_default().push(r);
        }
        *self.view.lock() = view;
        Ok(n)
    }

    /// A stamp's status in the last read, judged now: `None` when unknown (no report, or all
    /// expired under [`OnExpired::Unknown`]).
    ///
    /// ```no_run
    /// # fn f(shared: stamps::health::PgHealth) {
    /// let status = shared.status(stamps::StampId(2));
    /// # }
    /// ```
    pub fn status(&self, stamp: StampId) -> Option<HealthStatus> {
        self.judged(stamp).map(|(s, _)| s)
    }

    fn judged(&self, stamp: StampId) -> Option<(HealthStatus, Option<String>)> {
        let now = self.clock.now();
        let view = self.view.lock();
        let reports = view.get(&stamp)?;
        match judge(reports, now) {
            Some((s, reason)) => Some((s, reason.map(str::to_string))),
            None => match self.expired {
                OnExpired::Unknown => None,
                OnExpired::Unhealthy => Some((HealthStatus::Unhealthy, Some("health report expired".to_string()))),
            },
        }
    }

    /// Writes the view into `table`: stamps whose status changed are set (with `since` = now),
    /// stamps that became unknown are removed; `managed` holds the stamps this follower set.
    fn apply(&self, table: &HealthTable, managed: &mut BTreeSet<StampId>) {
        let now = self.clock.now();
        let stamps: Vec<StampId> = self.view.lock().keys().copied().collect();
        let mut seen = BTreeSet::new();
        for stamp in stamps {
            if let Some((status, reason)) = self.judged(stamp) {
                seen.insert(stamp);
                let current = table.get(stamp);
                let same = current
                    .as_ref()
                    .is_some_and(|h| h.status == status && h.reason.as_deref() == reason.as_deref());
                if !same {
                    let since = match &current {
                        Some(h) if h.status == status => h.since,
                        _ => now,
                    };
                    table.set(stamp, status, since, reason.as_deref());
                }
            }
        }
        for gone in managed.difference(&seen) {
            table.remove(*gone);
        }
        *managed = seen;
    }

    /// Follows the shared table into `table` until the handle is dropped: reads it when a
    /// publication's `NOTIFY` arrives and at least every `poll`, and re-judges expiry at each
    /// read. A failed read keeps the table as it is (stale reports expire on the next good
    /// read) and is retried at the next poll.
    ///
    /// ```no_run
    /// # async fn demo(shared: std::sync::Arc<stamps::health::PgHealth>) {
    /// let table = stamps::HealthTable::new();
    /// let follower = shared.spawn_follower(table.clone());
    /// # drop(follower); }
    /// ```
    pub fn spawn_follower(self: Arc<Self>, table: HealthTable) -> HealthTask {
        let handle = tokio::spawn(async move {
            let signal = self.registry.health_signal();
            let mut managed = BTreeSet::new();
            let mut seen = Version::ZERO;
            loop {
                if self.refresh().await.is_ok() {
                    self.apply(&table, &mut managed);
                }
                if let Ok(v) = tokio::time::timeout(self.poll, signal.changed(seen)).await {
                    seen = v;
                }
            }
        });
        HealthTask::from_handle(handle)
    }

    /// One prober for the fleet: every `interval`, checks every stamp of the registry's fleet
    /// with `monitor` (its source and hysteresis) and publishes each stamp's status from the
    /// monitor's table under `reporter`, valid for three intervals (so one missed round does
    /// not expire it). Stops when the handle is dropped.
    ///
    /// ```no_run
    /// # async fn demo(shared: std::sync::Arc<stamps::health::PgHealth>) {
    /// use std::sync::Arc;
    /// use stamps::health::{HealthMonitor, StaticHealth};
    /// let monitor = Arc::new(HealthMonitor::new(StaticHealth::new()));
    /// let prober = shared.spawn_prober(monitor, "prober-1", std::time::Duration::from_secs(2));
    /// # drop(prober); }
    /// ```
    pub fn spawn_prober<S: HealthSource>(
        self: Arc<Self>,
        monitor: Arc<HealthMonitor<S>>,
        reporter: &str,
        interval: Duration,
    ) -> HealthTask {
        let reporter = reporter.to_string();
        let interval = interval.max(Duration::from_millis(10));
        let ttl = (interval * 3).min(crate::registry::postgres::MAX_HEALTH_TTL);
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Ok(fleet) = self.registry.fleet().await else {
                    continue;
                };
                monitor.check_fleet(&fleet).await;
                for load in &fleet.stamps {
                    let stamp = load.stamp.spec.id;
                    let (status, reason) = match monitor.table().get(stamp) {
                        Some(h) => (h.status, h.reason),
                        None => continue,
                    };
                    let report = HealthReport::new(stamp, status, reason.as_deref(), self.clock.now());
                    let _ = self.publish(&reporter, &report, ttl).await;
                }
            }
        });
        HealthTask::from_handle(handle)
    }
}

#[async_trait]
impl HealthSource for PgHealth {
    /// The stamp's shared status: reads the table, then judges (a failed read judges the last
    /// view). An unknown stamp reports healthy with the reason "no live report", as an
    /// unchecked stamp would.
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        let _ = self.refresh().await;
        let id = stamp.spec.id;
        match self.judged(id) {
            Some((status, reason)) => HealthReport::new(id, status, reason.as_deref(), self.clock.now()),
            None => HealthReport::new(id, HealthStatus::Healthy, Some("no live report"), self.clock.now()),
        }
    }
}
