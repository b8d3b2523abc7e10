//! The migration kit (`stamps::testing::migration`) over `PgRegistry` on the test server
//! (each host in a fresh schema, dropped afterwards), with the reference data plane.
#![cfg(all(feature = "postgres", feature = "test-util"))]

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;

use pg::{database_url, unique_schema, SchemaGuard};
use stamps::migration::reference::ReferenceDataPlane;
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::testing::migration::{late_effect_after_takeover, run_all, Host, LateEnd};
use stamps::*;

async fn host(hint: &str) -> (Host, SchemaGuard) {
    let schema = unique_schema(hint);
    let guard = SchemaGuard(schema.clone());
    let clock = FakeClock::new();
    let config = PgConfig::from_url(database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(4)
        .clock(clock.clone());
    let registry = PgRegistry::connect(config).await.unwrap();
    registry.migrate().await.unwrap();
    for id in [StampId(1), StampId(2)] {
        let cap = Capacity::new([(Resource::Tenants, 10_000.0)], 0.0).unwrap();
        let spec = StampSpec::new(id, format!("s{}", id.0), Region::new("eu").unwrap(), cap).unwrap();
        registry.put_active_stamp(spec).await.unwrap();
    }
    // The plane judges freezes by the kit's clock.
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone());
    let host = Host::new(
        Arc::new(registry),
        Arc::new(plane.clone()),
        Arc::new(plane),
        clock,
        StampId(1),
        StampId(2),
    );
    (host, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_leaves_nothing_after_cancelled() {
    let (host, _schema) = host("kit_late_cancel").await;
    let r = late_effect_after_takeover(&host, "late-cancelled", LateEnd::Cancelled).await;
    assert_eq!(
        (r.state, r.destination_rows_after, r.lost),
        (MigrationState::Cancelled, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_leaves_nothing_after_rolled_back() {
    let (host, _schema) = host("kit_late_rollback").await;
    let r = late_effect_after_takeover(&host, "late-rolled-back", LateEnd::RolledBack).await;
    assert_eq!(
        (r.state, r.destination_rows_after, r.lost),
        (MigrationState::RolledBack, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_changes_nothing_after_completed() {
    let (host, _schema) = host("kit_late_complete").await;
    let r = late_effect_after_takeover(&host, "late-completed", LateEnd::Completed).await;
    assert_eq!((r.state, r.lost), (MigrationState::Completed, 0));
    assert!(r.late_refusal.is_some());
}

/// Every scenario of the kit with the default settings, on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_kit_passes_with_default_settings() {
    let (host, _guard) = host("kit_all").await;
    let report = run_all(&host).await;
    println!("[kit] postgres:\n{report}");
    assert_eq!(report.lost(), 0);
    assert!(report.scenarios.iter().all(|s| s.runs > 0));
    let bound = stamps::migration::MigrationConfig::default().max_freeze + std::time::Duration::from_millis(250);
    assert!(report.longest_refusal() <= bound, "{report}");
}
