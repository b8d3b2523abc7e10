//! The health monitor: hysteresis between sources and the table.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{HealthReport, HealthSource, HealthTable, StampHealth};
use crate::error::{Error, InvalidInput};
use crate::model::{Fleet, HealthStatus, Stamp, StampId, StampState};
use crate::telemetry::{self, names, Value};
use crate::time::{Clock, SystemClock, Timestamp};

/// How many consecutive reports it takes to change a stamp's availability, as load balancers
/// count health checks: `fall` unhealthy reports in a row mark an available stamp unhealthy;
/// `rise` available (healthy or degraded) reports in a row bring it back. Between available
/// states (healthy ↔ degraded) the latest report applies at once.
///
/// ```
/// use stamps::health::Hysteresis;
/// let h = Hysteresis::new(3, 2)?;
/// assert_eq!((h.fall(), h.rise()), (3, 2));
/// assert!(Hysteresis::new(0, 1).is_err());
/// assert_eq!(Hysteresis::default(), Hysteresis::new(3, 2)?);
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
}

impl Hysteresis {
    /// `fall` failures to mark unhealthy, `rise` successes to recover; both at least 1.
    pub fn new(fall: u32, rise: u32) -> Result<Self, Error> {
        if fall == 0 || rise == 0 {
            return Err(InvalidInput::new("hysteresis", "fall and rise must be at least 1").into());
        }
        Ok(Hysteresis { fall, rise })
    }

    /// Consecutive failures that mark a stamp unhealthy.
    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// Consecutive successes that recover an unhealthy stamp.
    pub fn rise(&self) -> u32 {
        self.rise
    }
}

impl Default for Hysteresis {
    /// Three failures down, two successes up.
    fn default() -> Self {
        Hysteresis { fall: 3, rise: 2 }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Track {
    published: HealthStatus,
    fails: u32,
    oks: u32,
    /// Whether the table has an entry for the stamp yet: the first report that is not
    /// `Unhealthy` is published at once, so the table says "healthy" for a stamp that was
    /// checked (not only for one that recovered).
    announced: bool,
}

/// Checks stamps with a [`HealthSource`], applies [`Hysteresis`], and publishes transitions
/// into a [`HealthTable`] (stamped with the monitor's clock).
///
/// Drive it from anywhere: [`HealthMonitor::observe`] takes one report (push-style sources),
/// [`HealthMonitor::check_stamps`] checks a list, and with the `tokio` feature
/// `HealthMonitor::spawn` checks the registry's fleet periodically.
///
/// ```
/// use stamps::health::{HealthMonitor, HealthReport, Hysteresis, StaticHealth};
/// use stamps::{Clock, FakeClock, HealthStatus, HealthView, StampId};
/// use std::time::Duration;
/// let clock = FakeClock::new();
/// let monitor = HealthMonitor::builder(StaticHealth::new())
///     .hysteresis(Hysteresis::new(1, 2)?)
///     .clock(clock.clone())
///     .build();
/// monitor.observe(&HealthReport::unhealthy(StampId(1), "down", clock.now()));
/// let since = clock.now();
/// assert_eq!(monitor.table().unavailable_since(StampId(1)), Some(since));
/// clock.advance(Duration::from_secs(5));
/// monitor.observe(&HealthReport::healthy(StampId(1), clock.now()));
/// assert_eq!(monitor.table().status(StampId(1)), HealthStatus::Unhealthy); // 1 of 2
/// monitor.observe(&HealthReport::healthy(StampId(1), clock.now()));
/// assert_eq!(monitor.table().status(StampId(1)), HealthStatus::Healthy);
/// # Ok::<(), stamps::Error>(())
/// ```
pub struct HealthMonitor<S> {
    source: S,
    table: HealthTable,
    clock: Arc<dyn Clock>,
    hysteresis: Hysteresis,
    tracks: Mutex<HashMap<StampId, Track>>,
}

impl<S: fmt::Debug> fmt::Debug for HealthMonitor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("source", &self.source)
            .field("hysteresis", &self.hysteresis)
            .field("table", &self.table)
            .finish()
    }
}

/// Builds a [`HealthMonitor`].
///
/// ```
/// use stamps::health::{HealthMonitor, HealthTable, StaticHealth};
/// let table = HealthTable::new();
/// let monitor = HealthMonitor::builder(StaticHealth::new()).table(table.clone()).build();
/// table.set(stamps::StampId(1), stamps::HealthStatus::Degraded, stamps::Timestamp::ZERO, None);
/// assert!(monitor.table().get(stamps::StampId(1)).is_some()); // shared
/// ```
#[derive(Debug)]
pub struct HealthMonitorBuilder<S> {
    source: S,
    table: Option<HealthTable>,
    clock: Option<Arc<dyn Clock>>,
    hysteresis: Hysteresis,
}

impl<S: HealthSource> HealthMonitorBuilder<S> {
    /// Publishes into `table` (share it with the router) instead of a new one.
    pub fn table(mut self, table: HealthTable) -> Self {
        self.table = Some(table);
        self
    }

    /// Times transitions with `clock` (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Sets the hysteresis (default: 3 down, 2 up).
    pub fn hysteresis(mut self, h: Hysteresis) -> Self {
        self.hysteresis = h;
        self
    }

    /// The monitor.
    pub fn build(self) -> HealthMonitor<S> {
        HealthMonitor {
            source: self.source,
            table: self.table.unwrap_or_default(),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            hysteresis: self.hysteresis,
            tracks: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: HealthSource> HealthMonitor<S> {
    /// A monitor over `source` with defaults.
    pub fn new(source: S) -> Self {
        Self::builder(source).build()
    }

    /// A builder.
    pub fn builder(source: S) -> HealthMonitorBuilder<S> {
        HealthMonitorBuilder {
            source,
            table: None,
            clock: None,
            hysteresis: Hysteresis::default(),
        }
    }

    /// The table the monitor publishes into (clones share it): give it to the router.
    pub fn table(&self) -> &HealthTable {
        &self.table
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Applies one report; returns the stamp's published status afterwards.
    pub fn observe(&self, report: &HealthReport) -> HealthStatus {
        let now = self.clock.now();
        let mut tracks = self.tracks.lock();
        let t = tracks.entry(report.stamp).or_default();
        let publish: Option<HealthStatus> = if report.status == HealthStatus::Unhealthy {
            t.oks = 0;
            t.fails = t.fails.saturating_add(1);
            (t.published != HealthStatus::Unhealthy && t.fails >= self.hysteresis.fall)
                .then_some(HealthStatus::Unhealthy)
        } else {
            t.fails = 0;
            if t.published == HealthStatus::Unhealthy {
                t.oks = t.oks.saturating_add(1);
                (t.oks >= self.hysteresis.rise).then_some(report.status)
            } else {
                t.oks = 0;
                (t.published != report.status || !t.announced).then_some(report.status)
            }
        };
        if let Some(status) = publish {
            t.announced = true;
            let stamp = ("stamp", Value::Stamp(report.stamp.0));
            if t.published != status {
                telemetry::count(
                    names::HEALTH_TRANSITIONS,
                    &[stamp, ("to", Value::Str(status.as_str()))],
                    1,
                );
                #[cfg(feature = "tracing")]
                tracing::info!(stamp = report.stamp.0, from = %t.published, to = %status, reason = report.reason.as_deref(), "stamps.health: transition");
            }
            for s in [HealthStatus::Healthy, HealthStatus::Degraded, HealthStatus::Unhealthy] {
                telemetry::gauge(
                    names::STAMP_HEALTH,
                    &[stamp, ("status", Value::Str(s.as_str()))],
                    f64::from(u8::from(s == status)),
                );
            }
            t.published = status;
            t.oks = 0;
            t.fails = 0;
            self.table.publish(
                report.stamp,
                StampHealth {
                    status,
                    since: now,
                    reason: report.reason.clone(),
                },
            );
        }
        t.published
    }

    /// Checks each stamp once (one after another) and applies the reports.
    pub async fn check_stamps(&self, stamps: &[Stamp]) {
        for stamp in stamps {
            let report = self.source.check(stamp).await;
            self.observe(&report);
        }
    }

    /// Checks every stamp of a fleet snapshot once, except decommissioned ones. Stamps the
    /// monitor was tracking that are no longer in the fleet, or are now decommissioned, are
    /// [forgotten](HealthMonitor::forget) first: a retired stamp neither keeps its last status
    /// in the table nor costs a probe each round.
    ///
    /// ```
    /// use stamps::health::{HealthMonitor, StaticHealth};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// let probes = StaticHealth::new();
    /// let monitor = HealthMonitor::new(probes.clone());
    /// probes.set(StampId(1), HealthStatus::Degraded, "slow disk");
    /// monitor.check_fleet(&registry.fleet().await?).await;
    /// assert_eq!(monitor.table().get(StampId(1)).map(|h| h.status), Some(HealthStatus::Degraded));
    ///
    /// registry.set_stamp_state(StampId(1), StampState::Draining).await?;
    /// registry.set_stamp_state(StampId(1), StampState::Decommissioned).await?;
    /// monitor.check_fleet(&registry.fleet().await?).await;
    /// assert_eq!(monitor.table().get(StampId(1)), None);
    /// # Ok(()) }
    /// ```
    pub async fn check_fleet(&self, fleet: &Fleet) {
        let live = |s: &Stamp| s.state != StampState::Decommissioned;
        let keep: HashSet<StampId> = fleet
            .stamps
            .iter()
            .filter(|l| live(&l.stamp))
            .map(|l| l.stamp.id())
            .collect();
        let gone: Vec<StampId> = self
            .tracks
            .lock()
            .keys()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        for stamp in gone {
            self.forget(stamp);
        }
        for load in fleet.stamps.iter().filter(|l| live(&l.stamp)) {
            let report = self.source.check(&load.stamp).await;
            self.observe(&report);
        }
    }

    /// Stops tracking `stamp` and removes its entry from the table (routes to it are no longer
    /// refused for health). Returns whether the monitor was tracking it. A later report about
    /// the stamp starts it afresh, as if never seen.
    ///
    /// ```
    /// use stamps::health::{HealthMonitor, HealthReport, StaticHealth};
    /// use stamps::{StampId, Timestamp};
    /// let monitor = HealthMonitor::new(StaticHealth::new());
    /// monitor.observe(&HealthReport::degraded(StampId(3), "slow disk", Timestamp::ZERO));
    /// assert!(monitor.table().get(StampId(3)).is_some());
    /// assert!(monitor.forget(StampId(3)));
    /// assert!(monitor.table().get(StampId(3)).is_none());
    /// assert!(!monitor.forget(StampId(3)));
    /// ```
    pub fn forget(&self, stamp: StampId) -> bool {
        let mut tracks = self.tracks.lock();
        let known = tracks.remove(&stamp).is_some();
        if known {
            // Under the tracks lock, so a concurrent `observe` cannot publish in between.
            self.table.remove(stamp);
        }
        known
    }

    /// When the stamp's current published status began, if it was ever published.
    pub fn since(&self, stamp: StampId) -> Option<Timestamp> {
        self.table.get(stamp).map(|h| h.since)
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<S: HealthSource> HealthMonitor<S> {
    /// Spawns a task that reads the registry's fleet and checks every stamp each `interval`
    /// (a failed fleet read skips that round).
    ///
    /// Like every `spawn*` in this crate, it returns a handle that owns the work: **dropping the
    /// [`HealthTask`] stops the checks** (the task is aborted); call [`HealthTask::detach`] to
    /// leave them running until the runtime shuts down.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use stamps::health::{HealthMonitor, StaticHealth};
    /// use stamps::InMemoryRegistry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let monitor = Arc::new(HealthMonitor::new(StaticHealth::new()));
    /// let task = monitor.clone().spawn(Arc::new(InMemoryRegistry::new()), Duration::from_secs(5));
    /// // ... serve; the checks run while `task` lives.
    /// drop(task); // stops them
    /// # }
    /// ```
    pub fn spawn<R>(self: Arc<Self>, registry: Arc<R>, interval: std::time::Duration) -> HealthTask
    where
        R: crate::registry::Registry + ?Sized,
    {
        HealthTask {
            handle: Some(tokio::spawn(async move {
                loop {
                    if let Ok(fleet) = registry.fleet().await {
                        self.check_fleet(&fleet).await;
                    }
                    tokio::time::sleep(interval).await;
                }
            })),
        }
    }
}

/// The periodic health checks started by [`HealthMonitor::spawn`]. Dropping it stops them;
/// [`detach`](HealthTask::detach) keeps them running until the runtime shuts down.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stamps::health::{HealthMonitor, StaticHealth};
/// use stamps::InMemoryRegistry;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let monitor = Arc::new(HealthMonitor::new(StaticHealth::new()));
/// monitor.clone().spawn(Arc::new(InMemoryRegistry::new()), Duration::from_secs(5)).detach();
/// # }
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug)]
#[must_use = "dropping a HealthTask stops the health checks; call .detach() to keep them running"]
pub struct HealthTask {
    handle: Option<tokio::task::JoinHandle<()>>,
}

#[cfg(feature = "tokio")]
impl HealthTask {
    /// A handle owning `handle` (the crate's other health tasks).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn from_handle(handle: tokio::task::JoinHandle<()>) -> Self {
        HealthTask { handle: Some(handle) }
    }

    /// Leaves the checks running until the runtime shuts down.
    pub fn detach(mut self) {
        self.handle.take();
    }

    /// Stops the checks (the same as dropping the handle).
    pub fn stop(self) {}

    /// Whether the task has ended (it only ends when stopped or when its runtime shuts down).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

#[cfg(feature = "tokio")]
impl Drop for HealthTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}
