//! Built-in health sources: set by hand, and aggregated.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{HealthReport, HealthSource};
use crate::model::{HealthStatus, Stamp, StampId};
use crate::time::{Clock, SystemClock};

/// What each stamp was set to, with the reason.
type Settings = HashMap<StampId, (HealthStatus, Option<Arc<str>>)>;

/// A health source whose answers are set by hand: for tests and for operators who need a kill
/// switch ("take stamp 7 out of rotation now"). Unset stamps are healthy. Clones share state.
///
/// ```
/// use stamps::health::{HealthSource, StaticHealth};
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let source = StaticHealth::new();
/// source.set(StampId(1), HealthStatus::Unhealthy, "maintenance");
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// let stamp = Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO);
/// let report = source.check(&stamp).await;
/// assert_eq!(report.status, HealthStatus::Unhealthy);
/// source.clear(StampId(1));
/// assert_eq!(source.check(&stamp).await.status, HealthStatus::Healthy);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StaticHealth {
    map: Arc<RwLock<Settings>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for StaticHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticHealth")
            .field("stamps", &*self.map.read())
            .finish()
    }
}

impl Default for StaticHealth {
    fn default() -> Self {
        Self::with_clock(SystemClock)
    }
}

impl StaticHealth {
    /// Every stamp healthy until set; reports are timed by the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports are timed by `clock`.
    pub fn with_clock(clock: impl Clock) -> Self {
        StaticHealth {
            map: Arc::default(),
            clock: Arc::new(clock),
        }
    }

    /// Sets what checks of `stamp` report.
    pub fn set(&self, stamp: StampId, status: HealthStatus, reason: &str) {
        let reason = (!reason.is_empty()).then(|| Arc::from(reason));
        self.map.write().insert(stamp, (status, reason));
    }

    /// Reverts `stamp` to healthy.
    pub fn clear(&self, stamp: StampId) {
        self.map.write().remove(&stamp);
    }
}

#[async_trait]
impl HealthSource for StaticHealth {
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        let (status, reason) = self
            .map
            .read()
            .get(&stamp.id())
            .cloned()
            .unwrap_or((HealthStatus::Healthy, None));
        HealthReport {
            stamp: stamp.id(),
            status,
            reason,
            at: self.clock.now(),
        }
    }
}

/// Several sources checked in order; the worst status wins (unhealthy over degraded over
/// healthy), with the first worst source's reason. With no sources, every stamp is healthy.
///
/// ```
/// use stamps::health::{AggregateHealth, HealthSource, StaticHealth};
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let probes = StaticHealth::new();
/// let operators = StaticHealth::new();
/// let all = AggregateHealth::new().with(probes.clone()).with(operators.clone());
/// operators.set(StampId(1), HealthStatus::Degraded, "deploying");
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// let stamp = Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO);
/// assert_eq!(all.check(&stamp).await.status, HealthStatus::Degraded);
/// probes.set(StampId(1), HealthStatus::Unhealthy, "timeout");
/// assert_eq!(all.check(&stamp).await.reason.as_deref(), Some("timeout"));
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct AggregateHealth {
    sources: Vec<Box<dyn HealthSource>>,
}

impl AggregateHealth {
    /// No sources yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source.
    pub fn with(mut self, source: impl HealthSource) -> Self {
        self.sources.push(Box::new(source));
        self
    }

    /// Adds a boxed source.
    pub fn push(&mut self, source: Box<dyn HealthSource>) {
        self.sources.push(source);
    }
}

#[async_trait]
impl HealthSource for AggregateHealth {
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        let mut worst: Option<HealthReport> = None;
        for s in &self.sources {
            let r = s.check(stamp).await;
            let replace = match &worst {
                None => true,
                Some(w) => r.status > w.status || (r.status == w.status && r.at > w.at && w.reason.is_none()),
            };
            if replace {
                worst = Some(r);
            }
        }
        worst.unwrap_or_else(|| HealthReport::healthy(stamp.id(), crate::time::Timestamp::ZERO))
    }
}
