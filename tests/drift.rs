//! Configuration drift: the report groups every stamp exactly once, against the desired
//! configuration; collecting it from live stamps survives failing and hanging sources; the
//! placement filter keeps new tenants off drifted stamps.
#![cfg(feature = "tokio")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stamps::placement::{OnDesiredConfig, Pipeline, Placement};
use stamps::reconcile::{collect_drift, ConfigSource, InventoryError, ReconcileOptions};
use stamps::*;

fn load(id: u32, state: StampState, version: Option<&str>) -> StampLoad {
    let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
    let mut spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
    spec.version = version.map(str::to_string);
    StampLoad::new(
        Stamp::new(spec, state, Timestamp::ZERO, Timestamp::ZERO),
        Amounts::default(),
    )
}

fn config(version: &str, gc: &str) -> RunningConfig {
    RunningConfig::from_settings(version, [("gc", gc), ("pool", "64")])
}

proptest! {
    /// Whatever stamps report: every live stamp is in exactly one group or unreported, each
    /// group's stamps reported its configuration, a group is on the desired configuration
    /// exactly when its configuration is the desired one, and decommissioned or unknown stamps
    /// never appear.
    #[test]
    fn every_live_stamp_is_grouped_once(
        stamps in proptest::collection::vec((0u8..3, any::<bool>()), 0..20),
        reports in proptest::collection::vec((0u32..25, 0u8..3, 0u8..3), 0..30),
    ) {
        let versions = ["v1", "v2", "v3"];
        let gcs = ["g1", "zgc", "shenandoah"];
        let fleet_stamps: Vec<StampLoad> = stamps
            .iter()
            .enumerate()
            .map(|(i, &(v, decommissioned))| {
                let state = if decommissioned { StampState::Decommissioned } else { StampState::Active };
                load(i as u32, state, Some(versions[v as usize]))
            })
            .collect();
        let fleet = Fleet::new(fleet_stamps.clone(), Version(0), Timestamp::ZERO);
        let running: Vec<(StampId, RunningConfig)> = reports
            .iter()
            .map(|&(id, v, g)| (StampId(id), config(versions[v as usize], gcs[g as usize])))
            .collect();
        let desired = DesiredConfig::new(config("v2", "g1"));
        let report = drift_report(&fleet, &running, &[], &desired);
        let live: BTreeSet<StampId> = fleet_stamps
            .iter()
            .filter(|s| s.stamp.state != StampState::Decommissioned)
            .map(|s| s.id())
            .collect();
        let mut seen = BTreeSet::new();
        for g in &report.groups {
            prop_assert_eq!(g.on_desired(), g.running == desired.config);
            for id in &g.stamps {
                prop_assert!(live.contains(id), "{} is not a live stamp", id);
                prop_assert!(seen.insert(*id), "{} in two groups", id);
                let first = running.iter().find(|(s, _)| s == id).map(|(_, c)| c);
                prop_assert_eq!(first, Some(&g.running), "the first report of a stamp counts");
            }
        }
        for (id, _) in &report.unreported {
            prop_assert!(live.contains(id));
            prop_assert!(seen.insert(*id), "{} both grouped and unreported", id);
        }
        prop_assert_eq!(seen, live);
        prop_assert_eq!(report.is_clean(), report.groups.iter().all(|g| g.on_desired()) && report.unreported.is_empty());
        let on: BTreeSet<StampId> = report.conforming().collect();
        let off: BTreeSet<StampId> = report.drifted().collect();
        prop_assert!(on.is_disjoint(&off));
    }
}

/// A source with a fixed answer per stamp, one that fails and one that never answers.
struct Fleetwide;

#[stamps::async_trait]
impl ConfigSource for Fleetwide {
    async fn running(&self, stamp: &Stamp) -> Result<RunningConfig, InventoryError> {
        match stamp.spec.id.0 {
            4 => Err(InventoryError::new("connection refused")),
            5 => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                unreachable!("the collection times out first")
            }
            6 => panic!("a buggy source"),
            3 => Ok(config("v2", "zgc")),
            2 => Ok(config("v1", "g1")),
            _ => Ok(config("v2", "g1")),
        }
    }
}

#[tokio::test]
async fn collected_drift_names_what_differs_and_who_did_not_answer() {
    let registry = InMemoryRegistry::new();
    for id in 1..=7 {
        let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
        let mut spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
        spec.version = Some("v2".into());
        registry.put_active_stamp(spec).await.unwrap();
    }
    registry
        .set_stamp_state(StampId(7), StampState::Draining)
        .await
        .unwrap();
    registry
        .set_stamp_state(StampId(7), StampState::Decommissioned)
        .await
        .unwrap();
    let fleet = registry.fleet().await.unwrap();
    let desired = DesiredConfig::new(config("v2", "g1"));
    let options = ReconcileOptions::default()
        .concurrency(2)
        .stamp_timeout(Duration::from_millis(200));
    let report = collect_drift(&fleet, Arc::new(Fleetwide), &desired, &options).await;
    println!("{report}");
    assert_eq!(report.conforming().collect::<Vec<_>>(), [StampId(1)]);
    let drifted: Vec<(Vec<StampId>, Vec<&str>)> = report
        .groups
        .iter()
        .filter(|g| !g.on_desired())
        .map(|g| (g.stamps.clone(), g.differs.clone()))
        .collect();
    assert!(drifted.contains(&(vec![StampId(2)], vec!["version"])), "{drifted:?}");
    assert!(
        drifted.contains(&(vec![StampId(3)], vec!["fingerprint"])),
        "{drifted:?}"
    );
    let unreported: Vec<(u32, &str)> = report.unreported.iter().map(|(id, w)| (id.0, w.as_str())).collect();
    assert_eq!(unreported.len(), 3, "{unreported:?}");
    assert!(unreported.contains(&(4, "connection refused")));
    assert!(unreported
        .iter()
        .any(|(id, w)| *id == 5 && w.contains("no answer within")));
    assert!(unreported.iter().any(|(id, w)| *id == 6 && w.contains("panicked")));
    assert_eq!(
        report.label_mismatch,
        [StampId(2)],
        "stamp 2 runs v1 but the registry says v2"
    );
    assert!(!report.is_clean());

    // Placement keeps new tenants off everything but stamp 1.
    let policy = Pipeline::new().filter(OnDesiredConfig::from_report(&report));
    for i in 0..5 {
        let t = TenantSpec::new(TenantId::new(&format!("t{i}")).unwrap());
        let chosen = stamps::registry::place_and_assign(&registry, &policy, &t)
            .await
            .unwrap();
        assert_eq!(chosen.stamp, StampId(1));
    }
    let explained = policy.explain(&TenantSpec::new(TenantId::new("x").unwrap()), &FleetView::new(&fleet));
    println!("{explained}");
    assert!(explained.to_string().contains("desired configuration"), "{explained}");
}
