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

/// Moves acme from stamp 1 to stamp 2 with `mover`, stepping the migration to its end with
/// `pause` between steps (printing each step and how long it took).
async fn move_acme(
    registry: &Arc<InMemoryRegistry>,
    mover: &PgTableMover,
    soak: Duration,
    pause: Duration,
) -> stamps::migration::Migration {
    let migrator = Migrator::new(registry.clone(), Arc::new(mover.clone()))
        .config(MigrationConfig::default().soak_window(soak))
        .unwrap();
    let plan = migrator
        .plan(&TenantId::new("acme").unwrap(), StampId(2))
        .await
        .unwrap();
    let mut m = migrator.start(&plan, "test").await.unwrap();
    let started = std::time::Instant::now();
    while !m.state().is_terminal() {
        let (from, t) = (m.state(), std::time::Instant::now());
        let out = m.step().await.unwrap();
        println!("{from} took {:?}: {out:?}", t.elapsed());
        tokio::time::sleep(pause).await;
    }
    println!("the migration took {:?}", started.elapsed());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_completes_and_the_rows_arrive() {
    let dbs = Databases::create("simple", 2, "").await;
    let registry = registry().await;
    let mover = mover(&dbs, 100).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    let acme = TenantId::new("acme").unwrap();
    let a = registry
        .assign(&TenantSpec::new(acme.clone()), StampId(1))
        .await
        .unwrap();
    for i in 0..250 {
        plane.put(&a, &format!("k{i}"), Some(&format!("v{i}"))).await.unwrap();
    }
    let m = move_acme(&registry, &mover, Duration::ZERO, Duration::ZERO).await;
    assert_eq!(m.state(), MigrationState::Completed, "{:?}", m.record());
    assert_eq!(plane.rows(StampId(2), "acme").await.len(), 250);
    assert!(plane.rows(StampId(1), "acme").await.is_empty());
}

use pg_kv::KvError;
use stamps::migration::postgres::{MovedTable, PgTableMover};
use stamps::migration::{FenceToken, MigrationContext, MigrationDriver, SnapshotInfo};

fn ctx(state: MigrationState, generation: u64) -> MigrationContext {
    MigrationContext::new(
        MigrationId(7),
        TenantId::new("acme").unwrap(),
        StampId(1),
        StampId(2),
        state,
        1,
    )
    .generation(generation)
}

fn token(stamp: u32, epoch: u64) -> FenceToken {
    FenceToken::new(TenantId::new("acme").unwrap(), StampId(stamp), Epoch(epoch))
}

/// Seeds `n` rows of `tenant` on stamp 1 (a tenant the mover never fenced: no token needed).
async fn seed(plane: &PgKv, tenant: &str, n: usize) {
    let t = FenceToken::new(TenantId::new(tenant).unwrap(), StampId(1), Epoch(1));
    for i in 0..n {
        plane
            .put_token(&t, &format!("k{i:04}"), Some(&format!("{tenant}-v{i}")))
            .await
            .unwrap();
    }
}

/// Writers keep writing through the registry's current assignment (refreshing the route
/// when fenced or frozen) while the migration runs with the system clock; every
/// acknowledged write is on the destination at the end, with its last acknowledged value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_with_live_writers_loses_no_acknowledged_write() {
    let dbs = Databases::create("live", 2, "").await;
    let registry = registry().await;
    let mover = mover(&dbs, 500).await;
    let plane = Arc::new(PgKv::new(&dbs, SystemClock).await);
    let acme = TenantId::new("acme").unwrap();
    registry
        .assign(&TenantSpec::new(acme.clone()), StampId(1))
        .await
        .unwrap();
    seed_via(&registry, &plane, 2_000).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (registry, plane, stop, acme) = (registry.clone(), plane.clone(), stop.clone(), acme.clone());
        writers.push(tokio::spawn(async move {
            // Per key of this writer: the last acknowledged value, and the values attempted
            // after it (an unacknowledged write may or may not be visible later).
            let mut keys: std::collections::BTreeMap<String, (Option<String>, Vec<String>)> = Default::default();
            let (mut refused, mut n) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let key = format!("w{w}-{:03}", n % 300);
                let value = format!("w{w}-{n}");
                let route = registry.require_assignment(&acme).await.unwrap();
                let entry = keys.entry(key.clone()).or_default();
                match plane.put(&route, &key, Some(&value)).await {
                    Ok(()) => *entry = (Some(value), Vec::new()),
                    Err(KvError::Frozen) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(KvError::Fenced(_)) => {
                        entry.1.push(value);
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(KvError::Other(e)) => panic!("write failed: {e}"),
                }
            }
            (keys, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = move_acme(&registry, &mover, Duration::from_millis(200), Duration::from_millis(20)).await;
    assert_eq!(m.state(), MigrationState::Completed, "{:?}", m.record());
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rows = plane.rows(StampId(2), "acme").await;
    let (mut acked, mut lost, mut refused) = (0, 0, 0);
    for w in writers {
        let (keys, r) = w.await.unwrap();
        refused += r;
        for (k, (last, after)) in keys {
            let Some(last) = last else { continue };
            acked += 1;
            let now = rows.get(&k);
            if now != Some(&last) && !after.iter().any(|v| Some(v) == now) {
                lost += 1;
            }
        }
    }
    println!("keys acknowledged {acked}, writes refused {refused}, lost writes: {lost}");
    assert!(acked > 100, "the writers acknowledged only {acked} keys");
    assert_eq!(lost, 0, "lost writes");
    for i in 0..2_000 {
        assert!(rows.contains_key(&format!("k{i:04}")), "seed row k{i:04} missing");
    }
    assert!(
        plane.rows(StampId(1), "acme").await.is_empty(),
        "the source was cleaned up"
    );
}

async fn seed_via(registry: &InMemoryRegistry, plane: &PgKv, n: usize) {
    let route = registry
        .require_assignment(&TenantId::new("acme").unwrap())
        .await
        .unwrap();
    for i in 0..n {
        plane
            .put(&route, &format!("k{i:04}"), Some(&format!("seed-{i}")))
            .await
            .unwrap();
    }
}

/// After cutover the old stamp's database refuses a write routed by the old assignment, even
/// from a host that does not look at the registry: the trigger checks the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_in_the_database_refuses_a_stale_write_after_cutover() {
    let dbs = Databases::create("fence", 2, "").await;
    let registry = registry().await;
    let mover = mover(&dbs, 100).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    let acme = TenantId::new("acme").unwrap();
    let before = registry
        .assign(&TenantSpec::new(acme.clone()), StampId(1))
        .await
        .unwrap();
    plane.put(&before, "k", Some("v0")).await.unwrap();
    let m = move_acme(&registry, &mover, Duration::ZERO, Duration::ZERO).await;
    assert_eq!(m.state(), MigrationState::Completed, "{:?}", m.record());
    let after = registry.require_assignment(&acme).await.unwrap();
    // A router with a stale cache still routes to stamp 1 at the old epoch: refused there.
    match plane.put(&before, "k", Some("stale")).await {
        Err(KvError::Fenced(why)) => assert!(why.contains("refresh the route"), "{why}"),
        other => panic!("a stale write must be fenced, got {other:?}"),
    }
    // Even at the newest epoch, stamp 1 gave the tenant up.
    match plane
        .put_token(&FenceToken::new(acme.clone(), StampId(1), after.epoch), "k", Some("x"))
        .await
    {
        Err(KvError::Fenced(why)) => assert!(why.contains("gave the tenant up"), "{why}"),
        other => panic!("stamp 1 no longer holds acme, got {other:?}"),
    }
    // A write addressed to stamp 2 that reaches stamp 1's database is refused as misrouted.
    {
        let mut c1 = pg_kv::connect(&dbs.url(0)).await;
        let tx = c1.transaction().await.unwrap();
        let to_2 = FenceToken::new(acme.clone(), StampId(2), after.epoch);
        stamps::migration::postgres::set_write_token(&tx, &to_2).await.unwrap();
        let e = tx
            .execute("INSERT INTO kv (tenant, k, v) VALUES ('acme', 'm', 'x')", &[])
            .await
            .unwrap_err();
        assert_eq!(
            stamps::migration::postgres::fence_rejection(&e),
            Some(stamps::migration::FenceRejection::WrongStamp {
                this: StampId(1),
                token: StampId(2)
            }),
            "{e}"
        );
    }
    // On stamp 2, the old epoch is refused too, and the current route writes.
    let old_on_2 = FenceToken::new(acme.clone(), StampId(2), before.epoch);
    assert!(matches!(
        plane.put_token(&old_on_2, "k", Some("x")).await,
        Err(KvError::Fenced(_))
    ));
    plane.put(&after, "k", Some("v1")).await.unwrap();
    assert_eq!(
        plane.rows(StampId(2), "acme").await.get("k").map(String::as_str),
        Some("v1")
    );
    assert!(plane.rows(StampId(1), "acme").await.is_empty());

    // A host that forgets the token entirely is refused for a fenced tenant, with SF428…
    let c = pg_kv::connect(&dbs.url(1)).await;
    let e = c
        .execute("INSERT INTO kv (tenant, k, v) VALUES ('acme', 'n', 'x')", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("SF428"), "{e}");
    // …while a tenant the mover never touched is written as before.
    c.execute("INSERT INTO kv (tenant, k, v) VALUES ('other', 'n', 'x')", &[])
        .await
        .unwrap();
    // And a row cannot be moved to another tenant behind the fence's back.
    let e = c
        .execute("UPDATE kv SET tenant = 'acme' WHERE tenant = 'other'", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("SF400"), "{e}");
}

/// Rows deleted on the source after the snapshot are deleted on the destination by the
/// catch-up; a row the destination holds at a newer version survives a stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_travel_and_newer_rows_survive() {
    let dbs = Databases::create("deletes", 2, "").await;
    let mover = mover(&dbs, 10).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    seed(&plane, "acme", 50).await;
    let snap = mover.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    assert_eq!(snap.rows, 50);
    // The source is tracked now: writes need the token.
    plane.put_token(&token(1, 1), "k0001", None).await.unwrap();
    plane.put_token(&token(1, 1), "k0002", Some("changed")).await.unwrap();
    plane.put_token(&token(1, 1), "new", Some("n")).await.unwrap();
    mover.import(&ctx(MigrationState::Importing, 1), &snap).await.unwrap();
    // Dual-write era: a delete on both sides, then a source-only change of another key.
    for s in [1, 2] {
        plane.put_token(&token(s, 2), "k0003", None).await.unwrap();
    }
    plane.put_token(&token(1, 2), "k0004", Some("late")).await.unwrap();
    // The destination holds k0005 at a newer version than the source.
    plane
        .put_token(&token(2, 2), "k0005", Some("newer-on-destination"))
        .await
        .unwrap();
    mover.catch_up(&ctx(MigrationState::DualWrite, 1), &snap).await.unwrap();
    let dst = plane.rows(StampId(2), "acme").await;
    assert!(!dst.contains_key("k0001"), "deleted on the source after the snapshot");
    assert!(!dst.contains_key("k0003"), "deleted on both sides");
    assert_eq!(dst.get("k0002").map(String::as_str), Some("changed"));
    assert_eq!(dst.get("k0004").map(String::as_str), Some("late"));
    assert_eq!(dst.get("new").map(String::as_str), Some("n"));
    assert_eq!(dst.get("k0005").map(String::as_str), Some("newer-on-destination"));
    // A second catch-up is a delta: nothing new, nothing changes.
    let before = mover.progress(StampId(2), MigrationId(7)).await.unwrap().unwrap();
    mover.catch_up(&ctx(MigrationState::DualWrite, 1), &snap).await.unwrap();
    let after = mover.progress(StampId(2), MigrationId(7)).await.unwrap().unwrap();
    assert_eq!(before.caught_up, after.caught_up, "{before:?} {after:?}");
    assert_eq!(plane.rows(StampId(2), "acme").await, dst);
}

/// An import cut off mid-way resumes from its last committed batch, not from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_where_it_stopped() {
    let dbs = Databases::create("resume", 2, "").await;
    let mover = mover(&dbs, 50).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    seed(&plane, "acme", 3_000).await;
    let snap = mover.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    let c = ctx(MigrationState::Importing, 1);
    let (m2, c2, s2) = (mover.clone(), c.clone(), snap.clone());
    let task = tokio::spawn(async move { m2.import(&c2, &s2).await });
    // Let a few batches commit, then kill the import mid-flight.
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Some(p) = mover.progress(StampId(2), MigrationId(7)).await.unwrap() {
            if p.imported >= 200 {
                break;
            }
        }
    }
    task.abort();
    let _ = task.await;
    let cut = mover.progress(StampId(2), MigrationId(7)).await.unwrap().unwrap();
    assert!(cut.imported < 3_000, "the import finished before it was cut: {cut:?}");
    mover.import(&c, &snap).await.unwrap();
    let done = mover.progress(StampId(2), MigrationId(7)).await.unwrap().unwrap();
    assert_eq!(done.table, 1, "{done:?}");
    // Rows copied twice are at most one batch (the one in flight when cut).
    assert!(done.imported <= 3_000 + 50, "{done:?}");
    assert_eq!(
        plane.rows(StampId(2), "acme").await,
        plane.rows(StampId(1), "acme").await
    );
    let report = mover.validate(&ctx(MigrationState::Validating, 1)).await.unwrap();
    assert!(report.passed(), "{}", report.summary());
}

/// Validation compares server-side hashes and names the first differing keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_names_the_differing_keys() {
    let dbs = Databases::create("validate", 2, "").await;
    let mover = mover(&dbs, 100).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    seed(&plane, "acme", 200).await;
    let snap = mover.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    mover.import(&ctx(MigrationState::Importing, 1), &snap).await.unwrap();
    let ok = mover.validate(&ctx(MigrationState::Validating, 1)).await.unwrap();
    assert!(ok.passed(), "{}", ok.summary());
    assert_eq!(ok.rows(), (200, 200));
    // Damage the destination behind the mover's back (as the mover, so no fence applies).
    let c = pg_kv::connect(&dbs.url(1)).await;
    c.batch_execute(
        "BEGIN; SET LOCAL stamps.mover = 'on'; UPDATE kv SET v = 'bad' WHERE tenant = 'acme' AND k = 'k0042'; \
         DELETE FROM kv WHERE tenant = 'acme' AND k = 'k0100'; COMMIT",
    )
    .await
    .unwrap();
    let bad = mover.validate(&ctx(MigrationState::Validating, 1)).await.unwrap();
    assert!(!bad.passed());
    let summary = bad.summary();
    assert!(
        summary.contains("acme,k0042") && summary.contains("acme,k0100"),
        "{summary}"
    );
}

/// Cleanup deletes only the moved tenant's rows on the source; rollback only its rows on the
/// destination; other tenants' rows on both stamps stay byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_and_rollback_never_touch_another_tenant() {
    let dbs = Databases::create("others", 2, "").await;
    let mover = mover(&dbs, 7).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    seed(&plane, "acme", 120).await;
    for other in ["acme2", "acm", "globex"] {
        seed(&plane, other, 40).await;
        let t = FenceToken::new(TenantId::new(other).unwrap(), StampId(2), Epoch(1));
        for i in 0..30 {
            plane
                .put_token(&t, &format!("d{i}"), Some("on-destination"))
                .await
                .unwrap();
        }
    }
    let before = others(&plane).await;
    let snap = mover.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    mover.import(&ctx(MigrationState::Importing, 1), &snap).await.unwrap();
    mover
        .rollback(&ctx(MigrationState::RollingBack, 2), MigrationState::Importing)
        .await
        .unwrap();
    assert!(plane.rows(StampId(2), "acme").await.is_empty());
    assert_eq!(plane.rows(StampId(1), "acme").await.len(), 120);
    assert_eq!(others(&plane).await, before);
    // A second move, completed this time: the source loses acme only.
    let c = |state| {
        MigrationContext::new(
            MigrationId(8),
            TenantId::new("acme").unwrap(),
            StampId(1),
            StampId(2),
            state,
            1,
        )
    };
    let snap = mover.snapshot(&c(MigrationState::Snapshotting)).await.unwrap();
    mover.import(&c(MigrationState::Importing), &snap).await.unwrap();
    mover.cleanup_source(&c(MigrationState::CleaningUp)).await.unwrap();
    assert!(plane.rows(StampId(1), "acme").await.is_empty());
    assert_eq!(plane.rows(StampId(2), "acme").await.len(), 120);
    assert_eq!(others(&plane).await, before);
}

async fn others(p: &PgKv) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut all = Vec::new();
    for s in [StampId(1), StampId(2)] {
        for o in ["acme2", "acm", "globex"] {
            all.push(p.rows(s, o).await);
        }
    }
    all
}

/// Installation checks what it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_refuses_what_it_cannot_move_safely() {
    let dbs = Databases::create(
        "install",
        3,
        "CREATE TABLE nokey (tenant text NOT NULL, k text NOT NULL, ver bigint NOT NULL DEFAULT 0); \
         CREATE TABLE intver (tenant text NOT NULL, k text PRIMARY KEY, ver int NOT NULL DEFAULT 0)",
    )
    .await;
    let build = |tables: Vec<MovedTable>, a: usize, b: usize| {
        PgTableMover::builder(tables)
            .stamp_url(StampId(1), &dbs.url(a))
            .unwrap()
            .stamp_url(StampId(2), &dbs.url(b))
            .unwrap()
            .build()
            .unwrap()
    };
    let kv = pg_kv::kv_table();
    build(vec![kv.clone()], 0, 1).install().await.unwrap();
    // The same database given as another stamp: refused (a cleanup could delete the only copy).
    let e = build(vec![kv.clone()], 1, 0).install().await.unwrap_err();
    assert!(e.message().contains("two stamps cannot share a database"), "{e}");
    let e = build(
        vec![MovedTable::new("nokey", "tenant", &["tenant", "k"], "ver").unwrap()],
        0,
        2,
    )
    .install()
    .await
    .unwrap_err();
    assert!(e.message().contains("no unique index"), "{e}");
    let e = build(vec![MovedTable::new("intver", "tenant", &["k"], "ver").unwrap()], 0, 2)
        .install()
        .await
        .unwrap_err();
    assert!(e.message().contains("must be bigint"), "{e}");
    let e = build(vec![MovedTable::new("missing", "tenant", &["k"], "ver").unwrap()], 0, 2)
        .install()
        .await
        .unwrap_err();
    assert!(e.message().contains("does not exist"), "{e}");
    assert!(!e.is_retryable());
    let _ = SnapshotInfo::new("x", 0);
}

/// An import into a destination that already holds some of the tenant's rows merges: the
/// rows it holds at a newer version stay, the rest arrive, batch by batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_merges_into_rows_the_destination_already_holds() {
    let dbs = Databases::create("merge", 2, "").await;
    let mover = mover(&dbs, 16).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    seed(&plane, "acme", 100).await;
    let snap = mover.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    // Written on the destination after the source's rows: newer versions.
    let on_2 = FenceToken::new(TenantId::new("acme").unwrap(), StampId(2), Epoch(1));
    for k in ["k0000", "k0050", "k0099"] {
        plane.put_token(&on_2, k, Some("newer")).await.unwrap();
    }
    mover.import(&ctx(MigrationState::Importing, 1), &snap).await.unwrap();
    let dst = plane.rows(StampId(2), "acme").await;
    assert_eq!(dst.len(), 100);
    for k in ["k0000", "k0050", "k0099"] {
        assert_eq!(dst.get(k).map(String::as_str), Some("newer"), "{k}");
    }
    assert_eq!(dst.get("k0051").map(String::as_str), Some("acme-v51"));
    let p = mover.progress(StampId(2), MigrationId(7)).await.unwrap().unwrap();
    assert_eq!((p.table, p.imported), (1, 100), "{p:?}");
}

/// The fence is the drain: raising it waits for a write already admitted under the old epoch
/// (its transaction still open), and once it returned, the old epoch is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_fence_waits_for_writes_in_flight() {
    let dbs = Databases::create("drain", 2, "").await;
    let mover = mover(&dbs, 100).await;
    let plane = PgKv::new(&dbs, SystemClock).await;
    seed(&plane, "acme", 10).await;
    let _ = mover.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    mover
        .fence(&ctx(MigrationState::DualWrite, 1), StampId(1), Epoch(3), true)
        .await
        .unwrap();
    // A writer at epoch 3 is admitted and keeps its transaction open.
    let mut w = pg_kv::connect(&dbs.url(0)).await;
    let tx = w.transaction().await.unwrap();
    stamps::migration::postgres::set_write_token(&tx, &token(1, 3))
        .await
        .unwrap();
    tx.execute(
        "UPDATE kv SET v = 'in-flight' WHERE tenant = 'acme' AND k = 'k0001'",
        &[],
    )
    .await
    .unwrap();
    // The raise to epoch 4 cannot finish while that write is in flight.
    let (m, c) = (mover.clone(), ctx(MigrationState::CutOver, 1));
    let raise = tokio::spawn(async move { m.fence(&c, StampId(1), Epoch(4), true).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !raise.is_finished(),
        "the fence returned while a write under the old epoch was in flight"
    );
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), raise)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        plane.rows(StampId(1), "acme").await.get("k0001").map(String::as_str),
        Some("in-flight")
    );
    // After the raise, the old epoch is refused and the new one admitted.
    assert!(matches!(
        plane.put_token(&token(1, 3), "k0002", Some("late")).await,
        Err(KvError::Fenced(_))
    ));
    plane.put_token(&token(1, 4), "k0002", Some("current")).await.unwrap();
    // A REPEATABLE READ writer whose snapshot predates a raise cannot slip through either.
    let mut rr = pg_kv::connect(&dbs.url(0)).await;
    let rtx = rr
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    stamps::migration::postgres::set_write_token(&rtx, &token(1, 4))
        .await
        .unwrap();
    rtx.query("SELECT count(*) FROM kv", &[]).await.unwrap(); // takes the snapshot
    mover
        .fence(&ctx(MigrationState::CutOver, 1), StampId(1), Epoch(5), false)
        .await
        .unwrap();
    let e = rtx
        .execute(
            "UPDATE kv SET v = 'stale-snapshot' WHERE tenant = 'acme' AND k = 'k0003'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e}");
}
