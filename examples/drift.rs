//! Configuration drift across a fleet: six stamps report what they run (deployed version and a
//! fingerprint of the settings that must be identical everywhere); one has a hand-changed GC
//! setting, one is still on the previous release, one does not answer. The report groups the
//! fleet against the desired configuration, and placement keeps new tenants off every stamp
//! that is not on it.
//!
//! ```text
//! cargo run --features tokio --example drift
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stamps::placement::{policies, OnDesiredConfig, Placement};
use stamps::reconcile::{collect_drift, ConfigSource, InventoryError, ReconcileOptions};
use stamps::registry::place_and_assign;
use stamps::*;

/// The settings each stamp reports (as its `/config` endpoint would), by stamp.
struct Stamps {
    settings: BTreeMap<StampId, (String, BTreeMap<&'static str, &'static str>)>,
}

#[stamps::async_trait]
impl ConfigSource for Stamps {
    async fn running(&self, stamp: &Stamp) -> Result<RunningConfig, InventoryError> {
        let (version, settings) = self
            .settings
            .get(&stamp.spec.id)
            .ok_or_else(|| InventoryError::new("connection refused"))?;
        Ok(RunningConfig::from_settings(version.clone(), settings.iter()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = InMemoryRegistry::new();
    for id in 1..=6 {
        let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.2)?;
        let mut spec = StampSpec::new(StampId(id), format!("eu-{id}"), Region::new("eu-west")?, cap)?;
        spec.version = Some("2026.11.3".into());
        registry.put_active_stamp(spec).await?;
    }
    let baseline: BTreeMap<&str, &str> = [("gc", "g1"), ("pool_size", "64"), ("tls", "1.3")].into();
    let mut settings = BTreeMap::new();
    for id in [1, 2, 3] {
        settings.insert(StampId(id), ("2026.11.3".to_string(), baseline.clone()));
    }
    let mut hand_tuned = baseline.clone();
    hand_tuned.insert("gc", "zgc"); // someone "fixed" a latency spike by hand
    settings.insert(StampId(4), ("2026.11.3".to_string(), hand_tuned));
    settings.insert(StampId(5), ("2026.10.1".to_string(), baseline.clone())); // missed the rollout
                                                                              // Stamp 6 does not answer.

    let desired = DesiredConfig::new(RunningConfig::from_settings("2026.11.3", baseline.iter()));
    let fleet = registry.fleet().await?;
    let options = ReconcileOptions::default().stamp_timeout(Duration::from_secs(2));
    let report = collect_drift(&fleet, Arc::new(Stamps { settings }), &desired, &options).await;
    print!("{report}");

    let policy = policies::least_loaded().filter(OnDesiredConfig::from_report(&report));
    let mut placed = BTreeMap::new();
    for i in 0..12 {
        let tenant = TenantSpec::new(TenantId::new(&format!("tenant-{i:02}"))?);
        let a = place_and_assign(&registry, &policy, &tenant).await?;
        *placed.entry(a.stamp.0).or_insert(0) += 1;
    }
    println!("new tenants placed per stamp (drifted stamps excluded): {placed:?}");
    let why = policy.explain(
        &TenantSpec::new(TenantId::new("next")?),
        &FleetView::new(&registry.fleet().await?),
    );
    println!("{why}");
    assert!(placed.keys().all(|s| [1, 2, 3].contains(s)));
    assert_eq!(report.drifted().count(), 2);
    assert_eq!(report.unreported.len(), 1);
    Ok(())
}
