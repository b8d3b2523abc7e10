//! Scatter-gather over the fleet, for admin tools: run an async operation on every serving,
//! healthy stamp with a concurrency limit and a per-stamp timeout, and report every stamp's
//! outcome, failures and skipped stamps included. This is the pattern
//! *Deployment Stamps for Availability: Multi-Region Guide* gives for cross-stamp admin
//! operations that need current data: query the stamps in parallel and aggregate the results.
//! Such calls are expensive (the guide rate-limits them); they are not for per-request traffic.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::model::{HealthStatus, HealthView, Stamp, StampId, StampState};

/// Options for [`scatter_gather`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScatterOptions {
    /// Most operations in flight at once (at least 1).
    pub concurrency: usize,
    /// Deadline for each stamp's operation.
    pub per_stamp_timeout: Duration,
    /// Whether degraded stamps are queried (unhealthy ones never are).
    pub include_degraded: bool,
}

impl Default for ScatterOptions {
    /// 8 at a time, 5 s per stamp, degraded stamps included.
    fn default() -> Self {
        ScatterOptions {
            concurrency: 8,
            per_stamp_timeout: Duration::from_secs(5),
            include_degraded: true,
        }
    }
}

impl ScatterOptions {
    /// Sets the concurrency limit.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the per-stamp timeout.
    pub fn per_stamp_timeout(mut self, d: Duration) -> Self {
        self.per_stamp_timeout = d;
        self
    }
}

/// What happened on one stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StampOutcome<T, E> {
    /// The operation succeeded.
    Ok(T),
    /// The operation failed.
    Failed(E),
    /// The operation did not finish within the per-stamp timeout.
    TimedOut,
    /// Not queried: the stamp is unhealthy (or degraded, when excluded) or not serving.
    Skipped(SkipReason),
}

/// Why a stamp was not queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Health excluded it.
    Health(HealthStatus),
    /// It serves no tenants in this state.
    State(StampState),
}

/// Every stamp's outcome, in the order the stamps were given. Partial failure is visible:
/// [`ScatterReport::is_complete`] is false unless every stamp answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScatterReport<T, E> {
    /// One entry per stamp.
    pub outcomes: Vec<(StampId, StampOutcome<T, E>)>,
}

impl<T, E> ScatterReport<T, E> {
    /// Successful results.
    pub fn successes(&self) -> impl Iterator<Item = (StampId, &T)> + '_ {
        self.outcomes.iter().filter_map(|(s, o)| match o {
            StampOutcome::Ok(t) => Some((*s, t)),
            _ => None,
        })
    }

    /// Stamps that failed, timed out or were skipped.
    pub fn incomplete(&self) -> impl Iterator<Item = (StampId, &StampOutcome<T, E>)> + '_ {
        self.outcomes
            .iter()
            .filter(|(_, o)| !matches!(o, StampOutcome::Ok(_)))
            .map(|(s, o)| (*s, o))
    }

    /// Whether every stamp answered successfully.
    pub fn is_complete(&self) -> bool {
        self.incomplete().next().is_none()
    }
}

type Boxed<'a, T, E> = Pin<Box<dyn Future<Output = (usize, StampOutcome<T, E>)> + Send + 'a>>;

/// Runs `op` on every serving stamp (`Active` or `Draining`) that `health` allows, at most
/// `options.concurrency` at a time, each bounded by `options.per_stamp_timeout`.
///
/// Runs on the current task (no spawning), so `op` may borrow.
///
/// ```
/// use std::time::Duration;
/// use stamps::integrations::scatter::{scatter_gather, ScatterOptions, StampOutcome};
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// for id in 1..=3 {
///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?,
///         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// }
/// let stamps: Vec<Stamp> = registry.fleet().await?.stamps.into_iter().map(|l| l.stamp).collect();
/// let health = |s: StampId| if s == StampId(2) { HealthStatus::Unhealthy } else { HealthStatus::Healthy };
/// let report = scatter_gather(&stamps, &health, ScatterOptions::default(), |stamp| async move {
///     if stamp.id() == StampId(3) { Err("search index offline") } else { Ok(stamp.id().0 * 10) }
/// }).await;
/// assert_eq!(report.successes().collect::<Vec<_>>(), vec![(StampId(1), &10)]);
/// assert!(!report.is_complete());
/// assert!(matches!(report.outcomes[1].1, StampOutcome::Skipped(_)));
/// assert!(matches!(report.outcomes[2].1, StampOutcome::Failed("search index offline")));
/// # Ok(()) }
/// ```
pub async fn scatter_gather<'a, T, E, F, Fut>(
    stamps: &'a [Stamp],
    health: &dyn HealthView,
    options: ScatterOptions,
    op: F,
) -> ScatterReport<T, E>
where
    F: Fn(Stamp) -> Fut + 'a,
    Fut: Future<Output = Result<T, E>> + Send + 'a,
    T: Send + 'a,
    E: Send + 'a,
{
    let mut outcomes: Vec<Option<StampOutcome<T, E>>> = (0..stamps.len()).map(|_| None).collect();
    let mut queue: Vec<(usize, Stamp)> = Vec::new();
    for (i, stamp) in stamps.iter().enumerate() {
        let serving = matches!(stamp.state, StampState::Active | StampState::Draining);
        let status = health.status(stamp.id());
        let skip = if !serving {
            Some(SkipReason::State(stamp.state))
        } else if status == HealthStatus::Unhealthy || (status == HealthStatus::Degraded && !options.include_degraded) {
            Some(SkipReason::Health(status))
        } else {
            None
        };
        match (skip, outcomes.get_mut(i)) {
            (Some(reason), Some(slot)) => *slot = Some(StampOutcome::Skipped(reason)),
            _ => queue.push((i, stamp.clone())),
        }
    }
    queue.reverse();
    let limit = options.concurrency.max(1);
    let timeout = options.per_stamp_timeout;
    let mut in_flight: Vec<Boxed<'a, T, E>> = Vec::new();
    loop {
        while in_flight.len() < limit {
            let Some((i, stamp)) = queue.pop() else { break };
            let fut = op(stamp);
            in_flight.push(Box::pin(async move {
                match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(t)) => (i, StampOutcome::Ok(t)),
                    Ok(Err(e)) => (i, StampOutcome::Failed(e)),
                    Err(_) => (i, StampOutcome::TimedOut),
                }
            }));
        }
        if in_flight.is_empty() {
            break;
        }
        let (k, (i, outcome)) = poll_fn(|cx| {
            for (k, f) in in_flight.iter_mut().enumerate() {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    return Poll::Ready((k, v));
                }
            }
            Poll::Pending
        })
        .await;
        drop(in_flight.swap_remove(k));
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }
    ScatterReport {
        outcomes: stamps
            .iter()
            .zip(outcomes)
            .map(|(s, o)| (s.id(), o.unwrap_or(StampOutcome::TimedOut)))
            .collect(),
    }
}
