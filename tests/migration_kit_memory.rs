//! The migration kit (`stamps::testing::migration`) over `InMemoryRegistry`, with the
//! reference data plane as driver and data plane: its first user.
#![cfg(feature = "test-util")]

use std::sync::Arc;

use stamps::migration::reference::ReferenceDataPlane;
use stamps::testing::migration::{late_effect_after_takeover, run_all, Host, LateEnd};
use stamps::*;

async fn host() -> Host {
    let clock = FakeClock::new();
    let registry = Arc::new(InMemoryRegistry::builder().clock(clock.clone()).build());
    for id in [StampId(1), StampId(2)] {
        let cap = Capacity::new([(Resource::Tenants, 10_000.0)], 0.0).unwrap();
        let spec = StampSpec::new(id, format!("s{}", id.0), Region::new("eu").unwrap(), cap).unwrap();
        registry.put_active_stamp(spec).await.unwrap();
    }
    // The plane judges freezes by the kit's clock.
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone());
    Host::new(
        registry,
        Arc::new(plane.clone()),
        Arc::new(plane),
        clock,
        StampId(1),
        StampId(2),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_leaves_nothing_after_cancelled() {
    let r = late_effect_after_takeover(&host().await, "late-cancelled", LateEnd::Cancelled).await;
    assert_eq!(
        (r.state, r.destination_rows_after, r.lost),
        (MigrationState::Cancelled, 0, 0)
    );
    let refusal = r.late_refusal.unwrap_or_default();
    assert!(refusal.contains("lease generation"), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_leaves_nothing_after_rolled_back() {
    let r = late_effect_after_takeover(&host().await, "late-rolled-back", LateEnd::RolledBack).await;
    assert_eq!(
        (r.state, r.destination_rows_after, r.lost),
        (MigrationState::RolledBack, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_changes_nothing_after_completed() {
    let r = late_effect_after_takeover(&host().await, "late-completed", LateEnd::Completed).await;
    assert_eq!((r.state, r.lost), (MigrationState::Completed, 0));
    assert_eq!(r.destination_rows_after, r.acknowledged);
    assert!(r.late_refusal.is_some());
}

/// Every scenario of the kit with the default settings: a crash at every call, a driver
/// failure at every call, two workers racing, a rollback after cutover, late effects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_kit_passes_with_default_settings() {
    let report = run_all(&host().await).await;
    println!("[kit] memory:\n{report}");
    assert_eq!(report.lost(), 0);
    assert!(report.scenarios.iter().all(|s| s.runs > 0));
    // A crash never refuses writes longer than the freeze bound plus one tick of the kit.
    let bound = stamps::migration::MigrationConfig::default().max_freeze + std::time::Duration::from_millis(250);
    assert!(report.longest_refusal() <= bound, "{report}");
}
