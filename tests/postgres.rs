//! `PgRegistry` against a real PostgreSQL server: the whole conformance suite (each case in
//! its own schema), plus races, change-feed ordering, faults and schema migrations.
//!
//! The server: `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`, else a
//! throwaway server started from the installed binaries (see `tests/support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pg::{blocked_backend, database_url, kill_blocked_backend, raw_client, unique_schema, SchemaGuard};
use stamps::registry::postgres::{PgConfig, PgRegistry, SchemaError, SCHEMA_VERSION};
use stamps::testing::conformance::{run_all, CASES};
use stamps::*;

fn config(schema: &str) -> PgConfig {
    PgConfig::from_url(database_url())
        .unwrap()
        .schema(schema)
        .unwrap()
        .pool_size(4)
        .clock(FakeClock::new())
}

/// A migrated registry in a fresh schema, and the guard that drops the schema.
async fn fresh(hint: &str, cfg: impl FnOnce(PgConfig) -> PgConfig) -> (PgRegistry, SchemaGuard) {
    let schema = unique_schema(hint);
    let guard = SchemaGuard(schema.clone());
    let registry = PgRegistry::connect(cfg(config(&schema))).await.unwrap();
    assert_eq!(
        registry.migrate().await.unwrap(),
        (1..=SCHEMA_VERSION).collect::<Vec<u32>>()
    );
    (registry, guard)
}

fn stamp_spec(id: u32, limits: &[(Resource, f64)]) -> StampSpec {
    StampSpec::new(
        StampId(id),
        format!("s{id}"),
        Region::new("eu-west").unwrap(),
        Capacity::new(limits.iter().cloned(), 0.0).unwrap(),
    )
    .unwrap()
}

fn tenant(name: &str) -> TenantSpec {
    TenantSpec::new(TenantId::new(name).unwrap())
}

// ---------------------------------------------------------------------------------------------
// The conformance suite, whole, each case in its own schema.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_each_case_in_its_own_schema() {
    let guards = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let g = guards.clone();
    run_all(move || {
        let g = g.clone();
        async move {
            let (registry, guard) = fresh("conf", |c| c.pool_size(8)).await;
            g.lock().push(guard);
            Arc::new(registry) as Arc<DynRegistry>
        }
    })
    .await;
    assert_eq!(guards.lock().len(), CASES.len(), "one schema per case");
}

/// The configuration for engines without `LISTEN/NOTIFY` passes the whole suite too: followers
/// are woken by polling only. Group commit is off here, so the races also run with every
/// `assign` in its own transaction (the other run has it on, the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_without_notify_or_group_commit() {
    let guards = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let g = guards.clone();
    run_all(move || {
        let g = g.clone();
        async move {
            let (registry, guard) = fresh("conf_poll", |c| {
                c.pool_size(8)
                    .notify(false)
                    .poll_interval(Duration::from_millis(50))
                    .group_commit(false)
            })
            .await;
            g.lock().push(guard);
            Arc::new(registry) as Arc<DynRegistry>
        }
    })
    .await;
    assert_eq!(guards.lock().len(), CASES.len());
}

// ---------------------------------------------------------------------------------------------
// Races.

/// 32 clients (four registries of eight connections, as four processes would be) race for the
/// last 5 tenant slots of a stamp: exactly 5 win, the rest see `CapacityExceeded`, the stamp
/// ends exactly full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_race_for_the_last_slots() {
    let (first, _guard) = fresh("race32", |c| c.pool_size(8)).await;
    first
        .put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 40.0)]))
        .await
        .unwrap();
    for i in 0..35 {
        first.assign(&tenant(&format!("pre{i:02}")), StampId(1)).await.unwrap();
    }
    let mut registries = vec![first.clone()];
    for _ in 0..3 {
        registries.push(PgRegistry::connect(config(first.schema()).pool_size(8)).await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let r = registries[i % 4].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                r.assign(&tenant(&format!("racer{i:02}")), StampId(1)).await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::CapacityExceeded {
                resource: Resource::Tenants,
                ..
            }) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(wins, 5, "exactly the free slots win");
    let fleet = first.fleet().await.unwrap();
    assert_eq!(fleet.get(StampId(1)).unwrap().tenants(), 40);
    assert_eq!(first.all_assignments().await.unwrap().len(), 40);
    // Every write has exactly one change, gap-free.
    let batch = first.changes_since(Version::ZERO, 10_000).await.unwrap();
    let versions: Vec<u64> = batch.changes.iter().map(|c| c.version.0).collect();
    assert_eq!(versions, (1..=batch.head.0).collect::<Vec<_>>());
}

/// Concurrent first registrations of one stamp id: every call succeeds (the losers of the
/// insert race retry as updates), one stamp exists, one change per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_put_stamp_of_a_new_id_all_succeed() {
    let (r, _guard) = fresh("putrace", |c| c.pool_size(8)).await;
    let results =
        futures_util::future::join_all((0..8).map(|_| r.put_stamp(stamp_spec(7, &[(Resource::Tenants, 5.0)])))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(r.fleet().await.unwrap().stamps.len(), 1);
    assert_eq!(r.changes_since(Version::ZERO, 100).await.unwrap().changes.len(), 8);
}

// ---------------------------------------------------------------------------------------------
// The change feed.

/// Many writers (two registries, sixteen tasks, each moving its tenant between its own two
/// stamps so that only the feed counter is shared) and one poller reading small pages while
/// they write: the poller sees every version exactly once, in order, with no gap, and every
/// write a writer got acknowledged appears at its epoch. (With versions from a sequence taken
/// before commit instead of the counter row, this test fails: the poller sees a version before
/// a smaller one commits.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_poller_sees_every_change_once_in_order() {
    const WRITERS: u32 = 16;
    const ROUNDS: u32 = 25;
    let (a, _guard) = fresh("feed", |c| c.pool_size(8)).await;
    let b = PgRegistry::connect(config(a.schema()).pool_size(8)).await.unwrap();
    for s in 1..=2 * WRITERS {
        a.put_active_stamp(stamp_spec(s, &[(Resource::Tenants, 1000.0)]))
            .await
            .unwrap();
    }
    let start = a.head().await.unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let r = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let t = tenant(&format!("w{w:02}"));
                let home = [StampId(1 + 2 * w), StampId(2 + 2 * w)];
                let mut cur = r.assign(&t, home[0]).await.unwrap();
                acked.push((cur.epoch.0, t.id.clone()));
                for i in 0..ROUNDS {
                    let to = home[((i + 1) % 2) as usize];
                    cur = r
                        .compare_and_set(&t.id, cur.epoch, AssignmentChange::move_to(to))
                        .await
                        .unwrap();
                    acked.push((cur.epoch.0, t.id.clone()));
                }
                acked
            })
        })
        .collect();
    let total = (WRITERS * (ROUNDS + 1)) as usize;
    let poller = {
        let r = a.clone();
        tokio::spawn(async move {
            let mut cursor = start;
            let mut seen = Vec::new();
            let mut polls = 0u32;
            while seen.len() < total {
                let batch = r.changes_since(cursor, 7).await.unwrap();
                polls += 1;
                for c in &batch.changes {
                    assert_eq!(c.version.0, cursor.0 + 1, "no gap, no reordering");
                    cursor = c.version;
                    seen.push(c.clone());
                }
                assert!(polls < 1_000_000, "poller did not converge");
            }
            (seen, polls)
        })
    };
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let (seen, polls) = poller.await.unwrap();
    assert!(polls > 1);
    assert_eq!(seen.len(), total);
    let versions: BTreeSet<u64> = seen.iter().map(|c| c.version.0).collect();
    assert_eq!(versions.len(), total, "each change exactly once");
    for (epoch, t) in &acked {
        let c = seen
            .iter()
            .find(|c| c.version.0 == *epoch)
            .expect("acknowledged write in the feed");
        assert_eq!(c.tenant(), Some(t));
        match &c.kind {
            ChangeKind::Assignment {
                assignment: Some(a), ..
            } => assert_eq!(a.epoch.0, *epoch),
            other => panic!("unexpected change {other:?}"),
        }
    }
    assert_eq!(a.head().await.unwrap().0, start.0 + total as u64);
}

/// A write by one registry wakes another registry's signal through NOTIFY (its polling
/// fallback is set to an hour, so only the notification can wake it), and a registry without
/// NOTIFY is woken by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_other_processes_and_polling_is_the_fallback() {
    let (writer, _guard) = fresh("notify", |c| c).await;
    let listener = PgRegistry::connect(config(writer.schema()).poll_interval(Duration::from_secs(3600)))
        .await
        .unwrap();
    let poller = PgRegistry::connect(
        config(writer.schema())
            .notify(false)
            .poll_interval(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    // The listener's LISTEN is issued by its background task; wait until it is registered.
    let client = raw_client().await;
    for _ in 0..500 {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stamps-listener' \
                 AND query LIKE 'LISTEN%' AND query LIKE $1",
                &[&format!("%{}%", listener.notify_channel())],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_l = listener.change_signal().head();
    let before_p = poller.change_signal().head();
    let stamp = writer
        .put_stamp(stamp_spec(1, &[(Resource::Tenants, 1.0)]))
        .await
        .unwrap();
    assert_eq!(stamp.state, StampState::Provisioning);
    let head = writer.head().await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(30), listener.change_signal().changed(before_l)).await;
    assert_eq!(woke.ok(), Some(head), "NOTIFY woke the other registry");
    let woke = tokio::time::timeout(Duration::from_secs(30), poller.change_signal().changed(before_p)).await;
    assert_eq!(woke.ok(), Some(head), "polling woke the registry without NOTIFY");
}

/// Pruned feeds report truncation to followers that fell behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_change_feed_reports_truncation() {
    let (r, _guard) = fresh("prune", |c| c).await;
    for s in 1..=5 {
        r.put_stamp(stamp_spec(s, &[(Resource::Tenants, 1.0)])).await.unwrap();
    }
    assert_eq!(r.prune_changes(Version(3)).await.unwrap(), 3);
    assert!(matches!(
        r.changes_since(Version(1), 10).await,
        Err(Error::ChangeFeedTruncated { oldest: 4, .. })
    ));
    let batch = r.changes_since(Version(3), 10).await.unwrap();
    assert_eq!(batch.changes.len(), 2);
    // The newest change is always kept.
    assert_eq!(r.prune_changes(Version(100)).await.unwrap(), 1);
    assert_eq!(r.changes_since(Version(4), 10).await.unwrap().changes.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// Everything an assignment write touches, to compare before and after a failed write.
async fn snapshot(r: &PgRegistry) -> (Fleet, Vec<Assignment>, ChangeBatch, Vec<HistoryEntry>) {
    let mut fleet = r.fleet().await.unwrap();
    fleet.at = Timestamp::ZERO;
    (
        fleet,
        r.all_assignments().await.unwrap(),
        r.changes_since(Version::ZERO, 10_000).await.unwrap(),
        r.history(&TenantId::new("victim").unwrap()).await.unwrap(),
    )
}

/// A connection killed (`pg_terminate_backend`) in the middle of an assignment transaction,
/// after it locked the stamp and while it waits for the feed counter: the call returns
/// `Unavailable`, nothing of it is visible, and the pool serves the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_mid_transaction_leaves_no_partial_state() {
    let app = format!("stamps-kill-{}", std::process::id());
    let (r, _guard) = fresh("kill", |c| c.application_name(&app).pool_size(2)).await;
    r.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 10.0)]))
        .await
        .unwrap();
    r.assign(&tenant("bystander"), StampId(1)).await.unwrap();
    let before = snapshot(&r).await;

    // Hold the feed counter so the write stops mid-transaction.
    let mut blocker = raw_client().await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute(&format!("SELECT head FROM \"{}\".feed FOR UPDATE", r.schema()))
        .await
        .unwrap();
    let write = {
        let r = r.clone();
        tokio::spawn(async move { r.assign(&tenant("victim"), StampId(1)).await })
    };
    let admin = raw_client().await;
    assert!(kill_blocked_backend(&admin, &app).await);
    let err = write.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    tx.rollback().await.unwrap();

    assert_eq!(snapshot(&r).await, before, "no partial state");
    // The pool recovers: the same call now succeeds.
    let a = r.assign(&tenant("victim"), StampId(1)).await.unwrap();
    assert_eq!(a.epoch.0, before.2.head.0 + 1);
    assert_eq!(r.fleet().await.unwrap().get(StampId(1)).unwrap().tenants(), 2);
}

/// Idle pooled connections killed by the server (a failover, an idle timeout): calls recover
/// without the caller doing anything beyond retrying an `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_after_its_connections_are_killed() {
    let app = format!("stamps-idle-{}", std::process::id());
    let (r, _guard) = fresh("idle", |c| c.application_name(&app).pool_size(3)).await;
    r.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 10.0)]))
        .await
        .unwrap();
    let admin = raw_client().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) k",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    let mut failures = 0;
    let mut ok = None;
    for _ in 0..10 {
        match r.stamp(StampId(1)).await {
            Ok(s) => {
                ok = s;
                break;
            }
            Err(e) => {
                assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
                failures += 1;
            }
        }
    }
    assert!(ok.is_some(), "the pool recovered");
    assert!(
        failures <= 3,
        "at most one failure per dead pooled connection, got {failures}"
    );
}

/// A statement timeout while the write waits: `Unavailable`, and nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_returns_unavailable_without_effect() {
    let (r, _guard) = fresh("timeout", |c| c.statement_timeout(Duration::from_millis(200))).await;
    r.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 10.0)]))
        .await
        .unwrap();
    let before = snapshot(&r).await;
    let mut blocker = raw_client().await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute(&format!("SELECT head FROM \"{}\".feed FOR UPDATE", r.schema()))
        .await
        .unwrap();
    let err = r.assign(&tenant("victim"), StampId(1)).await.unwrap_err();
    tx.rollback().await.unwrap();
    match &err {
        Error::Unavailable { reason, .. } => assert!(reason.contains("57014"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(snapshot(&r).await, before);
}

/// A call cancelled while its transaction waits (its future dropped by a timeout): the
/// connection it used is not handed to the next caller (who would queue behind the stuck
/// statement), and nothing of the cancelled write becomes visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_call_does_not_leak_its_connection_or_partial_state() {
    let (r, _guard) = fresh("cancel", |c| c.pool_size(1).statement_timeout(None)).await;
    r.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 10.0)]))
        .await
        .unwrap();
    let before = snapshot(&r).await;
    let mut blocker = raw_client().await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute(&format!("SELECT head FROM \"{}\".feed FOR UPDATE", r.schema()))
        .await
        .unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(300), r.assign(&tenant("victim"), StampId(1))).await;
    assert!(cancelled.is_err(), "the write waits for the counter and is cancelled");
    // The only pooled connection was abandoned mid-transaction: a read must get a fresh one and
    // answer while the blocker still holds the counter.
    let fleet = tokio::time::timeout(Duration::from_secs(20), r.fleet()).await;
    assert!(matches!(fleet, Ok(Ok(_))), "{fleet:?}");
    tx.rollback().await.unwrap();
    assert_eq!(snapshot(&r).await, before, "the cancelled write left nothing");
    r.assign(&tenant("victim"), StampId(1)).await.unwrap();
}

/// Calls that fail on a rule (conflict, capacity, state, not found) or change nothing end
/// their transaction: the pooled connection is kept (same backend) and never left idle in a
/// transaction holding locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_end_their_transaction_and_keep_the_connection() {
    let app = format!("stamps-refused-{}", std::process::id());
    let (r, _guard) = fresh("refused", |c| c.application_name(&app).pool_size(1)).await;
    r.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 1.0)]))
        .await
        .unwrap();
    r.put_active_stamp(stamp_spec(2, &[(Resource::Tenants, 1.0)]))
        .await
        .unwrap();
    let a = r.assign(&tenant("a"), StampId(1)).await.unwrap();
    let admin = raw_client().await;
    let backends = || async {
        admin
            .query(
                "SELECT pid, state FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
                &[&app],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, i32>(0), row.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };
    let before = backends().await;
    assert_eq!(before.len(), 1);
    let refusals = [
        format!("{:?}", r.assign(&tenant("a"), StampId(2)).await),
        format!("{:?}", r.assign(&tenant("b"), StampId(1)).await),
        format!(
            "{:?}",
            r.compare_and_set(a.tenant(), Epoch(1), AssignmentChange::move_to(StampId(2)))
                .await
        ),
        format!(
            "{:?}",
            r.compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(9)))
                .await
        ),
        format!("{:?}", r.unassign(&TenantId::new("nobody").unwrap(), Epoch(1)).await),
        format!("{:?}", r.set_stamp_state(StampId(1), StampState::Provisioning).await),
        format!("{:?}", r.set_stamp_state(StampId(1), StampState::Decommissioned).await),
        format!("{:?}", r.put_stamp(stamp_spec(1, &[(Resource::Tenants, 0.5)])).await),
    ];
    for (i, refusal) in refusals.iter().enumerate() {
        assert!(refusal.starts_with("Err("), "call {i} should be refused: {refusal}");
    }
    // A no-op state change succeeds without writing.
    let head = r.head().await.unwrap();
    r.set_stamp_state(StampId(1), StampState::Active).await.unwrap();
    assert_eq!(r.head().await.unwrap(), head);
    let after = backends().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, before[0].0, "the same connection served every call");
    assert_eq!(after[0].1, "idle", "no transaction left open");
}

/// An unreachable server is `Unavailable` at connect, not a panic or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = PgConfig::from_url(&format!("postgres://postgres@127.0.0.1:{port}/x"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .pool_wait_timeout(Duration::from_secs(2));
    let err = PgRegistry::connect(cfg).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Schema and migrations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_twice_is_a_no_op() {
    let (r, _guard) = fresh("migrate2", |c| c).await;
    let objects = |schema: String| async move {
        let c = raw_client().await;
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = $1::text::regnamespace),
                        (SELECT count(*) FROM pg_proc WHERE pronamespace = $1::text::regnamespace)",
                &[&format!("\"{schema}\"")],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    r.put_stamp(stamp_spec(1, &[(Resource::Tenants, 1.0)])).await.unwrap();
    let first = objects(r.schema().to_string()).await;
    // Functions: the history guard and the five of the stamp-reference checks.
    assert!(first.0 >= 12 && first.1 == 6, "{first:?}");
    assert_eq!(r.migrate().await.unwrap(), Vec::<u32>::new());
    assert_eq!(r.migrate().await.unwrap(), Vec::<u32>::new());
    assert_eq!(objects(r.schema().to_string()).await, first);
    assert_eq!(r.schema_version().await.unwrap(), Some(SCHEMA_VERSION));
    assert!(r.stamp(StampId(1)).await.unwrap().is_some(), "data kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_apply_each_version_once() {
    let schema = unique_schema("migrate_race");
    let _guard = SchemaGuard(schema.clone());
    let mut registries = Vec::new();
    for _ in 0..4 {
        registries.push(PgRegistry::connect(config(&schema)).await.unwrap());
    }
    assert_eq!(registries[0].schema_version().await.unwrap(), None);
    let results = futures_util::future::join_all(registries.iter().map(|r| r.migrate())).await;
    let applied: Vec<u32> = results.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_eq!(
        applied,
        (1..=SCHEMA_VERSION).collect::<Vec<u32>>(),
        "one migrator applied each version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused_with_a_clear_error() {
    let (r, _guard) = fresh("newer", |c| c).await;
    let c = raw_client().await;
    c.execute(
        &format!(
            "INSERT INTO \"{}\".schema_migrations (version, name, checksum) VALUES ($1, 'from the future', 0)",
            r.schema()
        ),
        &[&((SCHEMA_VERSION + 1) as i32)],
    )
    .await
    .unwrap();
    let check = |e: Error| {
        let msg = e.to_string();
        match e {
            Error::Backend { source } => {
                let found = source.downcast_ref::<SchemaError>().cloned();
                assert!(
                    matches!(found, Some(SchemaError::TooNew { found, supported, .. }) if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
                    "{msg}"
                );
                assert!(msg.contains("upgrade the stamps crate"), "{msg}");
            }
            other => panic!("expected a schema error, got {other:?}"),
        }
    };
    check(r.migrate().await.unwrap_err());
    check(r.schema_version().await.unwrap_err());
    check(PgRegistry::connect(config(r.schema())).await.unwrap_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_migration_is_refused() {
    let (r, _guard) = fresh("edited", |c| c).await;
    let c = raw_client().await;
    c.execute(
        &format!(
            "UPDATE \"{}\".schema_migrations SET checksum = 42 WHERE version = 1",
            r.schema()
        ),
        &[],
    )
    .await
    .unwrap();
    match r.migrate().await {
        Err(Error::Backend { source }) => assert!(matches!(
            source.downcast_ref::<SchemaError>(),
            Some(SchemaError::Modified { version: 1, .. })
        )),
        other => panic!("expected Modified, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmigrated_schema_says_to_migrate() {
    let schema = unique_schema("unmigrated");
    let r = PgRegistry::connect(config(&schema)).await.unwrap();
    let err = r.fleet().await.unwrap_err();
    assert!(err.to_string().contains("migrate"), "{err}");
}

/// Schemas are separate registries in one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_isolate_fleets() {
    let (a, _ga) = fresh("iso_a", |c| c).await;
    let (b, _gb) = fresh("iso_b", |c| c).await;
    a.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 1.0)]))
        .await
        .unwrap();
    a.assign(&tenant("acme"), StampId(1)).await.unwrap();
    assert!(b.fleet().await.unwrap().stamps.is_empty());
    assert!(b.assignment(&TenantId::new("acme").unwrap()).await.unwrap().is_none());
    assert_eq!(b.head().await.unwrap(), Version::ZERO);
}

/// The history table refuses updates, deletes and truncation at the database level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_table_is_append_only_in_the_database() {
    let (r, _guard) = fresh("append", |c| c).await;
    r.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 1.0)]))
        .await
        .unwrap();
    r.assign(&tenant("acme"), StampId(1)).await.unwrap();
    let c = raw_client().await;
    let s = r.schema();
    for sql in [
        format!("UPDATE \"{s}\".assignment_history SET actor = 'x'"),
        format!("DELETE FROM \"{s}\".assignment_history"),
        format!("TRUNCATE \"{s}\".assignment_history"),
    ] {
        let err = c.batch_execute(&sql).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}"
        );
    }
    assert_eq!(r.history(&TenantId::new("acme").unwrap()).await.unwrap().len(), 1);
}

/// Active stamps `ids`, each with room for `tenants` tenants.
async fn put_active_stamps(r: &PgRegistry, ids: &[u32], tenants: f64) {
    for &id in ids {
        r.put_active_stamp(stamp_spec(id, &[(Resource::Tenants, tenants)]))
            .await
            .unwrap();
    }
}

/// The error's SQLSTATE, for statements run by hand.
fn sqlstate(r: Result<(), tokio_postgres::Error>) -> Option<tokio_postgres::error::SqlState> {
    r.err().and_then(|e| e.code().cloned())
}

/// Assignments name stamps that exist, enforced by the database (set-based triggers since
/// schema version 9): rows naming a missing stamp are refused whether inserted alone, among
/// good rows or by an update, and a named stamp cannot be deleted or renumbered, while the
/// registry's own writes pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamp_references_are_enforced_in_the_database() {
    use tokio_postgres::error::SqlState;
    let (r, _guard) = fresh("stamp_refs", |c| c).await;
    put_active_stamps(&r, &[1, 2], 10.0).await;
    r.assign(&tenant("acme"), StampId(1)).await.unwrap();
    let rows: Vec<ImportRow> = (0..5)
        .map(|i| ImportRow::new(tenant(&format!("bulk-{i}")), StampId(1 + i % 2)))
        .collect();
    assert_eq!(r.assign_many(&rows).await.unwrap().assigned(), 5);
    let s = r.schema();
    let mut c = raw_client().await;
    let fk = Some(SqlState::FOREIGN_KEY_VIOLATION);
    // Each statement in its own transaction, rolled back: the refusal must come from the
    // statement itself.
    let cases = [
        format!(
            "CREATE TEMP TABLE ghost ON COMMIT DROP AS SELECT * FROM \"{s}\".assignments WHERE tenant = 'acme';
             UPDATE ghost SET tenant = 'ghost', stamp_id = 99;
             INSERT INTO \"{s}\".assignments SELECT * FROM ghost"
        ),
        format!(
            "CREATE TEMP TABLE ghost ON COMMIT DROP AS SELECT * FROM \"{s}\".assignments WHERE tenant LIKE 'bulk-%';
             UPDATE ghost SET tenant = tenant || '-copy';
             UPDATE ghost SET stamp_id = 99 WHERE tenant = 'bulk-3-copy';
             INSERT INTO \"{s}\".assignments SELECT * FROM ghost"
        ),
        format!("UPDATE \"{s}\".assignments SET stamp_id = 99 WHERE tenant = 'acme'"),
        format!("UPDATE \"{s}\".assignments SET mode = 'dual_write', shadow_id = 99 WHERE tenant = 'acme'"),
        format!("DELETE FROM \"{s}\".stamps WHERE id = 2"),
        format!("UPDATE \"{s}\".stamps SET id = 7 WHERE id = 1"),
        format!("TRUNCATE \"{s}\".stamps CASCADE"),
    ];
    for sql in &cases {
        let tx = c.transaction().await.unwrap();
        assert_eq!(sqlstate(tx.batch_execute(sql).await), fk, "{sql}");
        tx.rollback().await.unwrap();
    }
    // Deleting a stamp that no assignment names is accepted (and rolled back).
    let tx = c.transaction().await.unwrap();
    r.put_active_stamp(stamp_spec(9, &[(Resource::Tenants, 1.0)]))
        .await
        .unwrap();
    let deleted = tx
        .execute(&format!("DELETE FROM \"{s}\".stamps WHERE id = 9"), &[])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    tx.rollback().await.unwrap();
    // A shadow on a stamp that exists is accepted (and rolled back).
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "UPDATE \"{s}\".assignments SET mode = 'dual_write', shadow_id = 2 WHERE tenant = 'acme'"
    ))
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(r.assignments(None, 100).await.unwrap().len(), 6);
    assert_eq!(r.fleet().await.unwrap().stamps.len(), 3);

    // A deletion racing an insert that names the stamp (an insert by hand, which takes no lock
    // on the stamp) waits for the insert and then sees it.
    r.put_active_stamp(stamp_spec(3, &[(Resource::Tenants, 10.0)]))
        .await
        .unwrap();
    let mut writer = raw_client().await;
    let tx = writer.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE late ON COMMIT DROP AS SELECT * FROM \"{s}\".assignments WHERE tenant = 'acme';
         UPDATE late SET tenant = 'late', stamp_id = 3;
         INSERT INTO \"{s}\".assignments SELECT * FROM late"
    ))
    .await
    .unwrap();
    c.batch_execute("SET application_name = 'stamp_refs_deleter'")
        .await
        .unwrap();
    let sql = format!("DELETE FROM \"{s}\".stamps WHERE id = 3");
    let deleter = tokio::spawn(async move { sqlstate(c.batch_execute(&sql).await) });
    // The deletion is seen waiting on a lock (the writer's), not merely not done yet.
    blocked_backend(&raw_client().await, "stamp_refs_deleter").await;
    assert!(!deleter.is_finished(), "the deletion waits for the writer");
    tx.commit().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), deleter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, fk);
    assert!(r.stamp(StampId(3)).await.unwrap().is_some());
}

/// A populated schema at version 8 (row-level foreign keys, `jsonb` change payloads) upgrades to
/// the current version in place: the feed written before the upgrade still decodes, writes
/// after it go on, and the stamp references are enforced by the new checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_version_8_schema_upgrades_in_place() {
    use tokio_postgres::error::SqlState;
    let (r, _guard) = fresh("upgrade8", |c| c).await;
    put_active_stamps(&r, &[1, 2], 100.0).await;
    for i in 0..20 {
        r.assign(
            &tenant(&format!("t{i:02}")).label("n", i.to_string()),
            StampId(1 + i % 2),
        )
        .await
        .unwrap();
    }
    let before = r.changes_since(Version::ZERO, 1000).await.unwrap();
    // Back to what version 8 left: its foreign keys, `jsonb` payloads, no set-based checks.
    let s = r.schema();
    let c = raw_client().await;
    c.batch_execute(&format!(
        "DROP TRIGGER assignments_stamps_exist_on_insert ON \"{s}\".assignments;
         DROP TRIGGER assignments_stamps_exist_on_update ON \"{s}\".assignments;
         DROP TRIGGER stamps_deletion_waits_for_writers ON \"{s}\".stamps;
         DROP TRIGGER stamps_named_not_deleted ON \"{s}\".stamps;
         DROP TRIGGER stamps_ids_fixed ON \"{s}\".stamps;
         DROP TRIGGER stamps_not_truncated_under_assignments ON \"{s}\".stamps;
         DROP FUNCTION \"{s}\".check_inserted_assignment_stamps(), \"{s}\".check_updated_assignment_stamps(),
             \"{s}\".lock_assignments_for_stamp_deletion(), \"{s}\".keep_named_stamps(),
             \"{s}\".keep_stamps_of_assignments();
         ALTER TABLE \"{s}\".assignments
             ADD CONSTRAINT assignments_stamp_id_fkey FOREIGN KEY (stamp_id) REFERENCES \"{s}\".stamps (id),
             ADD CONSTRAINT assignments_shadow_id_fkey FOREIGN KEY (shadow_id) REFERENCES \"{s}\".stamps (id);
         ALTER TABLE \"{s}\".changes ALTER COLUMN payload TYPE jsonb USING payload::jsonb;
         DELETE FROM \"{s}\".schema_migrations WHERE version > 8;"
    ))
    .await
    .unwrap();
    let fresh_client = PgRegistry::connect(config(s)).await.unwrap();
    assert_eq!(fresh_client.schema_version().await.unwrap(), Some(8));
    assert_eq!(
        fresh_client.migrate().await.unwrap(),
        (9..=SCHEMA_VERSION).collect::<Vec<u32>>()
    );
    let after = fresh_client.changes_since(Version::ZERO, 1000).await.unwrap();
    assert_eq!(after.changes, before.changes, "the feed decodes as before");
    let rows: Vec<ImportRow> = (0..10)
        .map(|i| ImportRow::new(tenant(&format!("u{i:02}")), StampId(2)))
        .collect();
    assert_eq!(fresh_client.assign_many(&rows).await.unwrap().assigned(), 10);
    assert_eq!(fresh_client.assignments(None, 100).await.unwrap().len(), 30);
    let deleted = c
        .batch_execute(&format!("DELETE FROM \"{s}\".stamps WHERE id = 1"))
        .await
        .err()
        .and_then(|e| e.code().cloned());
    assert_eq!(deleted, Some(SqlState::FOREIGN_KEY_VIOLATION));
}

/// A column type changed under warm connections (as a schema migration does): statements
/// those connections prepared fail with "cached plan must not change result type"; the
/// registry drops such a connection and runs the call again on a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_type_changed_under_warm_connections_is_survived() {
    let (r, _guard) = fresh("staleplan", |c| c.pool_size(2)).await;
    put_active_stamps(&r, &[1], 10.0).await;
    r.assign(&tenant("acme"), StampId(1)).await.unwrap();
    // Warm both connections with the feed's and the assignment's prepared statements.
    let (a, b) = tokio::join!(r.changes_since(Version::ZERO, 10), r.changes_since(Version::ZERO, 10));
    let before = a.unwrap();
    assert_eq!(b.unwrap().changes, before.changes);
    let s = r.schema();
    let c = raw_client().await;
    c.batch_execute(&format!(
        "ALTER TABLE \"{s}\".changes ALTER COLUMN tenant TYPE varchar COLLATE \"C\";
         ALTER TABLE \"{s}\".assignments ALTER COLUMN region TYPE varchar"
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            r.changes_since(Version::ZERO, 10).await.unwrap().changes,
            before.changes
        );
        assert!(r.assignment(&TenantId::new("acme").unwrap()).await.unwrap().is_some());
    }
}

/// With every optional feature off (`LOCK TABLE`, the `TRUNCATE` trigger, one transaction for
/// all migrations), `migrate()` builds the same schema minus the trigger, the registry works,
/// history still refuses updates and deletes, and a later default `migrate()` (of the same
/// shipped migrations) recognises the schema as up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_without_the_optional_features() {
    use stamps::registry::postgres::Portability;
    let minimal = Portability::default()
        .lock_table(false)
        .truncate_trigger(false)
        .transactional_ddl(false);
    let (r, _guard) = fresh("portable", |c| c.portability(minimal).notify(false).timelines(false)).await;
    assert!(r.migrate().await.unwrap().is_empty());
    r.put_active_stamp(stamp_spec(1, &[(Resource::Tenants, 2.0)]))
        .await
        .unwrap();
    let a = r.assign(&tenant("acme"), StampId(1)).await.unwrap();
    assert_eq!(r.assignment(a.tenant()).await.unwrap().map(|x| x.epoch), Some(a.epoch));
    let c = raw_client().await;
    let s = r.schema();
    for sql in [
        format!("UPDATE \"{s}\".assignment_history SET actor = 'x'"),
        format!("DELETE FROM \"{s}\".assignment_history"),
    ] {
        assert!(c.batch_execute(&sql).await.is_err(), "{sql}");
    }
    let triggers = c
        .query_one(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class k ON k.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = k.relnamespace WHERE n.nspname = $1 AND t.tgname LIKE 'assignment_history_%'",
            &[&s],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(triggers, 1, "the row trigger only");
    let default = PgRegistry::connect(config(s)).await.unwrap();
    assert!(
        default.migrate().await.unwrap().is_empty(),
        "the same migrations, recognised"
    );
}

/// Every spec field survives the round trip through the columns and the change payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_round_trip_through_columns_and_the_feed() {
    let (r, _guard) = fresh("roundtrip", |c| c).await;
    let spec = stamp_spec(9, &[(Resource::Connections, 5000.5), (Resource::Tenants, 10.0)])
        .residency(Residency::new("eu").unwrap())
        .tier(Tier::Custom(Name::new("gold").unwrap()))
        .label("az", "b")
        .version("2026.11-ring1")
        .endpoint("https://s9.internal");
    let stamp = r.put_active_stamp(spec.clone()).await.unwrap();
    assert_eq!(stamp.spec, spec);
    let t = TenantSpec::new(TenantId::new("acme.eu-1_x").unwrap())
        .demand(
            Demand::of([
                (Resource::Connections, 25.125),
                (Resource::Custom(Name::new("gpu").unwrap()), 2.0),
            ])
            .unwrap(),
        )
        .region(Region::new("eu-west").unwrap())
        .residency(Residency::new("eu").unwrap())
        .tier(Tier::Dedicated)
        .pin(StampId(9))
        .label("plan", "enterprise");
    // A dedicated tenant on a `gold` stamp breaks the tier rule: the override round-trips too.
    let o = Override::new(ConstraintKind::Tier, "round trip of every field").and(ConstraintKind::Residency);
    let a = r.assign_overriding(&t, StampId(9), &o, "ops").await.unwrap();
    let h = r.history(&t.id).await.unwrap();
    assert_eq!((h[0].overrode.as_ref(), h[0].actor.as_deref()), (Some(&o), Some("ops")));
    assert_eq!(a.spec, t);
    assert_eq!(r.assignment(&t.id).await.unwrap(), Some(a.clone()));
    let until = Timestamp::from_millis(1_767_225_700_000);
    let frozen = r
        .compare_and_set(
            &t.id,
            a.epoch,
            AssignmentChange::set_mode(AssignmentMode::Frozen { shadow: None, until }).by("ops"),
        )
        .await
        .unwrap();
    let feed = r.changes_since(Version::ZERO, 100).await.unwrap();
    match &feed.changes.last().unwrap().kind {
        ChangeKind::Assignment {
            assignment: Some(x), ..
        } => assert_eq!(**x, frozen),
        other => panic!("{other:?}"),
    }
    match &feed.changes[1].kind {
        ChangeKind::Stamp(s) => assert_eq!(s.spec, spec),
        other => panic!("{other:?}"),
    }
    let h = r.history(&t.id).await.unwrap();
    assert_eq!(h.last().unwrap().actor.as_deref(), Some("ops"));
    assert_eq!(h.last().unwrap().mode, AssignmentMode::Frozen { shadow: None, until });
}

// ---------------------------------------------------------------------------------------------
// Model-based: random operation sequences against PgRegistry and InMemoryRegistry agree.

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub enum Op {
        PutStamp { id: u32, tenants: u32, conns: u32 },
        SetState { id: u32, state: StampState },
        Assign { tenant: u8, stamp: u32, conns: u16 },
        Move { tenant: u8, to: u32, stale: bool },
        DualWrite { tenant: u8, shadow: u32 },
        Freeze { tenant: u8 },
        Resize { tenant: u8, conns: u16 },
        Unassign { tenant: u8, stale: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        let stamp = 1u32..=3;
        let t = 0u8..5;
        prop_oneof![
            (stamp.clone(), 1u32..6, 10u32..200).prop_map(|(id, tenants, conns)| Op::PutStamp { id, tenants, conns }),
            (stamp.clone(), prop::sample::select(StampState::ALL.to_vec()))
                .prop_map(|(id, state)| Op::SetState { id, state }),
            (t.clone(), stamp.clone(), 0u16..120).prop_map(|(tenant, stamp, conns)| Op::Assign {
                tenant,
                stamp,
                conns
            }),
            (t.clone(), 1u32..=4, any::<bool>()).prop_map(|(tenant, to, stale)| Op::Move { tenant, to, stale }),
            (t.clone(), stamp.clone()).prop_map(|(tenant, shadow)| Op::DualWrite { tenant, shadow }),
            t.clone().prop_map(|tenant| Op::Freeze { tenant }),
            (t.clone(), 0u16..150).prop_map(|(tenant, conns)| Op::Resize { tenant, conns }),
            (t, any::<bool>()).prop_map(|(tenant, stale)| Op::Unassign { tenant, stale }),
        ]
    }

    fn name(t: u8) -> TenantId {
        TenantId::new(&format!("t{t}")).unwrap()
    }

    fn demand(conns: u16) -> Demand {
        Demand::of([(Resource::Connections, f64::from(conns) + 0.5)]).unwrap()
    }

    /// Applies one operation; the outcome as text so both registries' results compare.
    async fn apply(r: &DynRegistry, op: &Op) -> String {
        let epoch = |a: Option<Assignment>, stale: bool| {
            a.map(|a| {
                if stale {
                    Epoch(a.epoch.0.saturating_sub(1))
                } else {
                    a.epoch
                }
            })
            .unwrap_or(Epoch(1))
        };
        let out = match op.clone() {
            Op::PutStamp { id, tenants, conns } => r
                .put_stamp(stamp_spec(
                    id,
                    &[
                        (Resource::Tenants, f64::from(tenants)),
                        (Resource::Connections, f64::from(conns)),
                    ],
                ))
                .await
                .map(|s| format!("{s:?}")),
            Op::SetState { id, state } => r.set_stamp_state(StampId(id), state).await.map(|s| format!("{s:?}")),
            Op::Assign { tenant, stamp, conns } => r
                .assign(&TenantSpec::new(name(tenant)).demand(demand(conns)), StampId(stamp))
                .await
                .map(|a| format!("{a:?}")),
            Op::Move { tenant, to, stale } => {
                let e = epoch(r.assignment(&name(tenant)).await.unwrap(), stale);
                r.compare_and_set(&name(tenant), e, AssignmentChange::move_to(StampId(to)).by("model"))
                    .await
                    .map(|a| format!("{a:?}"))
            }
            Op::DualWrite { tenant, shadow } => {
                let e = epoch(r.assignment(&name(tenant)).await.unwrap(), false);
                r.compare_and_set(
                    &name(tenant),
                    e,
                    AssignmentChange::set_mode(AssignmentMode::DualWrite {
                        shadow: StampId(shadow),
                    }),
                )
                .await
                .map(|a| format!("{a:?}"))
            }
            Op::Freeze { tenant } => {
                let current = r.assignment(&name(tenant)).await.unwrap();
                let shadow = current.as_ref().and_then(|a| a.mode.shadow());
                let e = epoch(current, false);
                r.compare_and_set(
                    &name(tenant),
                    e,
                    AssignmentChange::set_mode(AssignmentMode::Frozen {
                        shadow,
                        until: Timestamp::from_millis(1_767_225_600_000 + 30_000),
                    }),
                )
                .await
                .map(|a| format!("{a:?}"))
            }
            Op::Resize { tenant, conns } => {
                let e = epoch(r.assignment(&name(tenant)).await.unwrap(), false);
                r.compare_and_set(&name(tenant), e, AssignmentChange::resize(demand(conns)))
                    .await
                    .map(|a| format!("{a:?}"))
            }
            Op::Unassign { tenant, stale } => {
                let e = epoch(r.assignment(&name(tenant)).await.unwrap(), stale);
                r.unassign(&name(tenant), e).await.map(|()| "unassigned".to_string())
            }
        };
        match out {
            Ok(s) => s,
            Err(e) => format!("error: {e:?}"),
        }
    }

    async fn state(r: &DynRegistry) -> (Fleet, Vec<Assignment>, ChangeBatch, Vec<Vec<HistoryEntry>>) {
        let mut fleet = r.fleet().await.unwrap();
        fleet.at = Timestamp::ZERO;
        let mut history = Vec::new();
        for t in 0..5 {
            history.push(r.history(&name(t)).await.unwrap());
        }
        (
            fleet,
            r.all_assignments().await.unwrap(),
            r.changes_since(Version::ZERO, 100_000).await.unwrap(),
            history,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

        /// Every operation has the same outcome (value or error) on both registries, and after
        /// every step the fleet, the assignments, the whole change feed and the histories are
        /// equal: the PostgreSQL registry implements the in-memory registry's semantics.
        #[test]
        fn pg_registry_agrees_with_the_in_memory_model(ops in prop::collection::vec(op(), 1..30)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let (pg, _guard) = fresh("model", |c| c).await;
                let mem = InMemoryRegistry::builder().clock(FakeClock::new()).build();
                for (i, op) in ops.iter().enumerate() {
                    let a = apply(&pg, op).await;
                    let b = apply(&mem, op).await;
                    assert_eq!(a, b, "step {i}: {op:?}");
                    assert_eq!(state(&pg).await, state(&mem).await, "state after step {i}: {op:?}");
                }
            });
        }
    }
}

/// Two routers over one PostgreSQL registry learn a routing override from the feed (with the
/// follower task, woken by NOTIFY), and a router started later reads it from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_overrides_reach_routers_through_the_feed() {
    let (r, _guard) = fresh("route_overrides", |c| c.poll_interval(Duration::from_millis(20))).await;
    for id in [1, 2] {
        r.put_active_stamp(stamp_spec(id, &[(Resource::Tenants, 10.0)]).endpoint(format!("https://s{id}")))
            .await
            .unwrap();
    }
    r.assign(&TenantSpec::new(TenantId::new("pay").unwrap()), StampId(1))
        .await
        .unwrap();
    let routers: Vec<_> = (0..2).map(|_| stamps::router::Router::new(r.clone())).collect();
    let mut followers = Vec::new();
    for router in &routers {
        router.warm_up().await.unwrap();
        followers.push(router.spawn_follower());
        assert_eq!(router.route("pay").unwrap().stamp, StampId(1));
    }
    let why = Decision::new("ops", "stamp 1 restore").unwrap();
    let redirect = Redirect::new(StampId(2), RedirectWhen::Always);
    r.set_route_override(StampId(1), Some(redirect), &why).await.unwrap();
    for router in &routers {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while router.route("pay").unwrap().stamp != StampId(2) {
            assert!(
                std::time::Instant::now() < deadline,
                "the override did not reach a router"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(router.route("pay").unwrap().endpoint, Some("https://s2"));
    }
    let late = stamps::router::Router::new(r.clone());
    late.warm_up().await.unwrap();
    assert_eq!(late.route("pay").unwrap().failed_over_from, Some(StampId(1)));
    drop(followers);
}
