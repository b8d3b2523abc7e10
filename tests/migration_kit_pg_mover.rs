//! The migration kit (`stamps::testing::migration`) over `PgTableMover` moving `kv` rows
//! between two real stamp databases (throwaway databases on the test server), written the
//! way a host's write path does.
#![cfg(all(feature = "postgres", feature = "test-util"))]

#[path = "support/pg.rs"]
mod pg;
#[path = "support/pg_kv.rs"]
mod pg_kv;

use std::sync::Arc;

use pg_kv::{mover, Databases, PgKv};
use stamps::testing::migration::{late_effect_after_takeover, run_all, Host, LateEnd};
use stamps::*;

async fn host(hint: &str) -> (Host, Databases) {
    let dbs = Databases::create(hint, 2, "").await;
    let clock = FakeClock::new();
    let registry = InMemoryRegistry::builder().clock(clock.clone()).build();
    for id in [StampId(1), StampId(2)] {
        let cap = Capacity::new([(Resource::Tenants, 10_000.0)], 0.0).unwrap();
        let spec = StampSpec::new(id, format!("s{}", id.0), Region::new("eu").unwrap(), cap).unwrap();
        registry.put_active_stamp(spec).await.unwrap();
    }
    let mover = mover(&dbs, 7).await;
    let plane = PgKv::new(&dbs, clock.clone()).await;
    let host = Host::new(
        Arc::new(registry),
        Arc::new(mover),
        Arc::new(plane),
        clock,
        StampId(1),
        StampId(2),
    );
    (host, dbs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_leaves_nothing_after_cancelled() {
    let (host, _dbs) = host("late_cancel").await;
    let r = late_effect_after_takeover(&host, "late-cancelled", LateEnd::Cancelled).await;
    assert_eq!(
        (r.state, r.destination_rows_after, r.lost),
        (MigrationState::Cancelled, 0, 0)
    );
    assert!(r.late_refusal.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_leaves_nothing_after_rolled_back() {
    let (host, _dbs) = host("late_rollback").await;
    let r = late_effect_after_takeover(&host, "late-rolled-back", LateEnd::RolledBack).await;
    assert_eq!(
        (r.state, r.destination_rows_after, r.lost),
        (MigrationState::RolledBack, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_import_after_takeover_changes_nothing_after_completed() {
    let (host, _dbs) = host("late_complete").await;
    let r = late_effect_after_takeover(&host, "late-completed", LateEnd::Completed).await;
    assert_eq!((r.state, r.lost), (MigrationState::Completed, 0));
    assert!(r.late_refusal.is_some());
}

/// Every scenario of the kit: crash at every call, failure at every call, concurrent
/// workers, rollback after cutover; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_kit_passes_on_two_stamp_databases() {
    let (host, _dbs) = host("kit_all").await;
    let report = run_all(&host).await;
    println!("[kit] PgTableMover:\n{report}");
    assert_eq!(report.lost(), 0);
    assert!(report.scenarios.iter().all(|s| s.runs > 0), "{report}");
    let bound = stamps::migration::MigrationConfig::default().max_freeze + std::time::Duration::from_millis(250);
    assert!(report.longest_refusal() <= bound, "{report}");
}
