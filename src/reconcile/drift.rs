//! Collecting what every stamp runs ([`ConfigSource`], [`collect_drift`]) for the drift report
//! ([`drift_report`](crate::model::drift_report)).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{InventoryError, ReconcileOptions};
use crate::model::{drift_report, DesiredConfig, DriftReport, Fleet, RunningConfig, Stamp, StampId, StampState};

/// Where a stamp's running configuration is read from: the host implements it over whatever
/// the stamp exposes (a `/version` endpoint, its deployment tool, a config table).
///
/// # Contract
/// - [`running`](Self::running) returns what the stamp runs **now**, read from the stamp
///   itself (not from the registry's label, which is what drift is measured against), or an
///   error when it cannot tell; it changes nothing.
/// - It may be called for many stamps at once.
///
/// # Implementing
/// Build the fingerprint from the settings that must be identical across stamps (for example
/// with [`RunningConfig::from_settings`]), leaving out what legitimately differs per stamp
/// (its name, endpoint, region).
///
/// ```
/// use stamps::reconcile::{ConfigSource, InventoryError};
/// use stamps::{RunningConfig, Stamp};
///
/// struct FromLabels;
///
/// #[stamps::async_trait]
/// impl ConfigSource for FromLabels {
///     async fn running(&self, stamp: &Stamp) -> Result<RunningConfig, InventoryError> {
///         // A real source asks the stamp; this one reads what a deploy tool wrote on it.
///         let version = stamp.spec.version.clone().ok_or_else(|| InventoryError::new("no version"))?;
///         Ok(RunningConfig::from_settings(version, stamp.spec.labels.iter()))
///     }
/// }
/// ```
#[async_trait]
pub trait ConfigSource: Send + Sync {
    /// What `stamp` runs.
    async fn running(&self, stamp: &Stamp) -> Result<RunningConfig, InventoryError>;
}

/// Asks every stamp of the fleet (not decommissioned) what it runs, `options.concurrency` at a
/// time, each call bounded by `options.stamp_timeout`, and reports the drift against
/// `desired`. A stamp whose source fails or times out is listed in
/// [`DriftReport::unreported`] with the reason; the run itself never fails.
///
/// ```
/// use stamps::reconcile::{collect_drift, ConfigSource, InventoryError, ReconcileOptions};
/// use stamps::*;
///
/// struct Fixed;
/// #[stamps::async_trait]
/// impl ConfigSource for Fixed {
///     async fn running(&self, stamp: &Stamp) -> Result<RunningConfig, InventoryError> {
///         let gc = if stamp.spec.id == StampId(3) { "zgc" } else { "g1" };
///         Ok(RunningConfig::from_settings("v7", [("gc", gc)]))
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// for id in 1..=3 {
///     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?, cap)?).await?;
/// }
/// let desired = DesiredConfig::new(RunningConfig::from_settings("v7", [("gc", "g1")]));
/// let report = collect_drift(&registry.fleet().await?, std::sync::Arc::new(Fixed), &desired, &ReconcileOptions::default()).await;
/// assert_eq!(report.drifted().collect::<Vec<_>>(), [StampId(3)]);
/// assert_eq!(report.groups[1].differs, ["fingerprint"]);
/// # Ok(()) }
/// ```
pub async fn collect_drift(
    fleet: &Fleet,
    source: Arc<dyn ConfigSource>,
    desired: &DesiredConfig,
    options: &ReconcileOptions,
) -> DriftReport {
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let timeout = options.stamp_timeout;
    // Dropping the set (the caller's future dropped) aborts the calls still running.
    let mut asks = JoinSet::new();
    for load in fleet
        .stamps
        .iter()
        .filter(|s| s.stamp.state != StampState::Decommissioned)
    {
        let (permits, source, stamp) = (permits.clone(), source.clone(), load.stamp.clone());
        asks.spawn(async move {
            let id = stamp.spec.id;
            let Ok(_permit) = permits.acquire().await else {
                return (id, Err("the collection was stopped".to_string()));
            };
            match tokio::time::timeout(timeout, source.running(&stamp)).await {
                Ok(Ok(config)) => (id, Ok(config)),
                Ok(Err(e)) => (id, Err(e.reason)),
                Err(_) => (id, Err(format!("no answer within {timeout:?}"))),
            }
        });
    }
    let mut running = Vec::new();
    let mut unreported = Vec::new();
    while let Some(done) = asks.join_next().await {
        match done {
            Ok((id, Ok(config))) => running.push((id, config)),
            Ok((id, Err(why))) => unreported.push((id, why)),
            // A source that panicked: its stamp is reported below.
            Err(_) => {}
        }
    }
    running.sort_by_key(|(id, _)| *id);
    let answered: BTreeSet<StampId> = running
        .iter()
        .map(|(id, _)| *id)
        .chain(unreported.iter().map(|(id, _)| *id))
        .collect();
    for load in &fleet.stamps {
        let id = load.id();
        if load.stamp.state != StampState::Decommissioned && !answered.contains(&id) {
            unreported.push((id, "its configuration source panicked".to_string()));
        }
    }
    drift_report(fleet, &running, &unreported, desired)
}
