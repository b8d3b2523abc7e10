//! The registry on a replicated PostgreSQL cluster: a throwaway primary and hot standby
//! started from the installed binaries (see `tests/support/cluster.rs`), the standby streaming
//! through a loopback link the tests cut. Never skips.
//!
//! - the conformance suite passes with reads served by a replica;
//! - a lagging replica never makes an assigned tenant unknown, and a route read from a replica
//!   is never older than what the caller already applied;
//! - with synchronous replication, a failover loses no acknowledged write, writes resume
//!   through the same configuration and routers keep serving;
//! - with asynchronous replication, the writes a failover loses are detected by followers
//!   (`Error::HistoryDiverged`), which resynchronise; versions are never re-issued.

#[path = "support/pg.rs"]
mod pg;

#[path = "support/cluster.rs"]
mod cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Cluster, Replication};
use pg::unique_schema;
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::router::{RouteError, Router};
use stamps::testing::conformance::{run_all, CASES};
use stamps::*;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn stamp_spec(id: u32) -> StampSpec {
    StampSpec::new(
        StampId(id),
        format!("s{id}"),
        Region::new("eu-west").unwrap(),
        Capacity::new([(Resource::Tenants, 100_000.0)], 0.0).unwrap(),
    )
    .unwrap()
}

fn tenant(name: &str) -> TenantSpec {
    TenantSpec::new(TenantId::new(name).unwrap())
}

fn tid(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

/// Settings for a registry on `url` (the primary, or every node) in `schema`, failing fast.
fn config(url: &str, schema: &str) -> PgConfig {
    PgConfig::from_url(url)
        .unwrap()
        .schema(schema)
        .unwrap()
        .pool_size(4)
        .poll_interval(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(1))
        .pool_wait_timeout(Duration::from_secs(2))
        .call_timeout(Duration::from_secs(3))
}

/// Waits until the registry's replica `i` is usable (probed, caught up).
async fn replica_usable(r: &PgRegistry, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.replicas()[i].usable {
        assert!(Instant::now() < deadline, "replica never usable: {:?}", r.replicas());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_reading_through_a_replica() {
    let cluster = Arc::new(blocking(|| Cluster::start(Replication::Asynchronous, 1)));
    // (cases made, reads the replica answered, reads offered to it the primary answered), and
    // the registry of the running case (the previous one is dropped when the next is made).
    let tally = Arc::new(parking_lot::Mutex::new((0usize, 0u64, 0u64, None::<PgRegistry>)));
    let (c, t) = (cluster.clone(), tally.clone());
    run_all(move || {
        let (c, t) = (c.clone(), t.clone());
        async move {
            let previous = t.lock().3.take();
            if let Some(done) = previous {
                let s = &done.replicas()[0];
                let mut t = t.lock();
                t.1 += s.reads;
                t.2 += s.fallbacks;
            }
            let schema = unique_schema("replica_conf");
            let cfg = config(&c.nodes[0].url(), &schema)
                .pool_size(8)
                .replica(&c.nodes[1].url())
                .unwrap();
            let registry = PgRegistry::connect(cfg).await.unwrap();
            registry.migrate().await.unwrap();
            c.wait_caught_up(0, 1).await;
            replica_usable(&registry, 0).await;
            let mut t = t.lock();
            t.0 += 1;
            t.3 = Some(registry.clone());
            Arc::new(registry) as Arc<DynRegistry>
        }
    })
    .await;
    let (cases, served, fallbacks, _) = &*tally.lock();
    assert_eq!(*cases, CASES.len());
    println!("the replica answered {served} reads; the primary answered {fallbacks} reads offered to it");
    // Most reads of the suite follow the case's own writes, which only the primary has for
    // certain (read-your-writes); the rest must have gone to the replica.
    assert!(*served > 0, "the replica answered no read");
}

/// The replica is cut off (its lag limit set high so it stays in use): a tenant assigned since
/// is never unknown, through the registry or a router, and a router that applied a move never
/// reads the older route back from the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_never_gives_a_false_unknown_or_an_older_route() {
    let mut cluster = blocking(|| Cluster::start(Replication::Asynchronous, 1));
    let schema = unique_schema("replica_lag");
    let writer = PgRegistry::connect(config(&cluster.nodes[0].url(), &schema))
        .await
        .unwrap();
    writer.migrate().await.unwrap();
    for id in [1, 2] {
        writer.put_active_stamp(stamp_spec(id)).await.unwrap();
    }
    let early = writer.assign(&tenant("early"), StampId(1)).await.unwrap();
    let mover = writer.assign(&tenant("mover"), StampId(1)).await.unwrap();
    cluster.wait_caught_up(0, 1).await;

    let reader = PgRegistry::connect(
        config(&cluster.nodes[0].url(), &schema)
            .replica(&cluster.nodes[1].url())
            .unwrap()
            .max_replica_lag(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    replica_usable(&reader, 0).await;
    // Served by the replica while it is current.
    let before = reader.replicas()[0].reads;
    assert_eq!(
        reader.assignment(&tid("early")).await.unwrap().map(|a| a.epoch),
        Some(early.epoch)
    );
    assert_eq!(reader.replicas()[0].reads, before + 1, "{:?}", reader.replicas());

    // The router tracks "mover" (its entry is the route before the move).
    let router = Router::new(reader.clone());
    router.sync().await.unwrap();
    assert_eq!(router.resolve("mover").await.map(|r| r.epoch), Ok(mover.epoch));

    blocking(|| cluster.links[0].cut());
    let late = writer.assign(&tenant("late"), StampId(2)).await.unwrap();
    let moved = writer
        .compare_and_set(&tid("mover"), mover.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    assert!(reader.replicas()[0].usable, "still within the lag limit");

    // The replica has no "late": only the primary may say a tenant is unknown.
    let got = reader.assignment(&tid("late")).await.unwrap();
    assert_eq!(got.map(|a| (a.stamp, a.epoch)), Some((StampId(2), late.epoch)));
    for _ in 0..3 {
        assert_eq!(router.resolve("late").await.map(|r| r.stamp), Ok(StampId(2)));
        router.invalidate_all();
    }

    // While the replica is down, the router follows the feed (from the primary) past the move.
    blocking(|| cluster.kill(1));
    router.sync().await.unwrap();
    assert_eq!(router.route("mover").map(|r| r.epoch), Ok(moved.epoch));
    // Back up, still cut off, still within the lag limit: a miss after the move is answered by
    // the primary, never with the route before it.
    blocking(|| cluster.start_node(1));
    replica_usable(&reader, 0).await;
    router.invalidate_all();
    let route = router.resolve("mover").await.unwrap();
    assert_eq!((route.stamp, route.epoch), (StampId(2), moved.epoch));
    let fleet = reader.fleet().await.unwrap();
    assert!(
        fleet.version >= Version(moved.epoch.0),
        "fleet at {} before the move",
        fleet.version
    );
    let status = reader.replicas()[0].clone();
    assert!(status.fallbacks >= 3, "{status:?}");
    assert!(status.lag.is_some_and(|l| l > Duration::ZERO));

    // Restored: the replica catches up and answers again.
    blocking(|| cluster.links[0].restore());
    cluster.wait_caught_up(0, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = reader.replicas()[0].reads;
    assert_eq!(
        reader.assignment(&tid("late")).await.unwrap().map(|a| a.epoch),
        Some(late.epoch)
    );
    assert_eq!(reader.replicas()[0].reads, before + 1, "{:?}", reader.replicas());
}

/// A replica past the lag limit is not used; one that is down is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_too_far_behind_or_down_is_skipped() {
    let mut cluster = blocking(|| Cluster::start(Replication::Asynchronous, 1));
    let schema = unique_schema("replica_skip");
    let registry = PgRegistry::connect(
        config(&cluster.nodes[0].url(), &schema)
            .replica(&cluster.nodes[1].url())
            .unwrap()
            .max_replica_lag(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    registry.migrate().await.unwrap();
    registry.put_active_stamp(stamp_spec(1)).await.unwrap();
    cluster.wait_caught_up(0, 1).await;
    replica_usable(&registry, 0).await;
    blocking(|| cluster.links[0].cut());
    let other = PgRegistry::connect(config(&cluster.nodes[0].url(), &schema))
        .await
        .unwrap();
    other.assign(&tenant("t"), StampId(1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.replicas()[0].usable {
        assert!(Instant::now() < deadline, "a replica cut off for 10 s is still used");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let offered = registry.replicas()[0].reads + registry.replicas()[0].fallbacks;
    assert!(registry.assignment(&tid("t")).await.unwrap().is_some());
    registry.fleet().await.unwrap();
    assert_eq!(
        registry.replicas()[0].reads + registry.replicas()[0].fallbacks,
        offered,
        "reads went to a replica past the lag limit"
    );
    // Down: reads still answered, by the primary.
    blocking(|| cluster.links[0].restore());
    blocking(|| cluster.kill(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = &registry.replicas()[0];
        if !s.reachable {
            break;
        }
        assert!(Instant::now() < deadline, "a stopped replica is still reachable: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registry.assignment(&tid("t")).await.unwrap().is_some());
}

/// Asynchronous replication: the standby is cut off, the primary acknowledges more writes and a
/// router applies them, the primary dies and the standby is promoted. The first write there
/// opens a new term; the router is told its history was lost, drops what it had and follows
/// the new history: lost tenants are unknown again, a lost move is undone, new writes appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_failover_lost_writes_are_detected_and_followers_resynchronise() {
    let mut cluster = blocking(|| Cluster::start(Replication::Asynchronous, 1));
    let schema = unique_schema("failover_async");
    let registry = PgRegistry::connect(config(&cluster.multi_host_url(), &schema))
        .await
        .unwrap();
    registry.migrate().await.unwrap();
    for id in [1, 2] {
        registry.put_active_stamp(stamp_spec(id)).await.unwrap();
    }
    for i in 0..5 {
        registry.assign(&tenant(&format!("kept{i}")), StampId(1)).await.unwrap();
    }
    let kept0 = registry.assignment(&tid("kept0")).await.unwrap().unwrap();
    let common = registry.head().await.unwrap();
    cluster.wait_caught_up(0, 1).await;
    let router = Router::new(registry.clone());
    router.warm_up().await.unwrap();
    router.sync().await.unwrap();

    blocking(|| cluster.links[0].cut());
    let mut lost = Vec::new();
    for i in 0..3 {
        lost.push(registry.assign(&tenant(&format!("lost{i}")), StampId(2)).await.unwrap());
    }
    let lost_move = registry
        .compare_and_set(&tid("kept0"), kept0.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    router.sync().await.unwrap();
    assert_eq!(router.route("lost0").map(|r| r.stamp), Ok(StampId(2)));
    assert_eq!(router.route("kept0").map(|r| r.stamp), Ok(StampId(2)));
    let lost_cursor = registry.head().await.unwrap();
    assert!(lost_cursor > common);

    blocking(|| cluster.kill(0));
    // The router keeps serving what it has while no primary answers.
    assert!(router.route("kept1").is_ok());
    blocking(|| cluster.promote(1));
    let killed = Instant::now();
    let after = loop {
        match registry.assign(&tenant("after0"), StampId(1)).await {
            Ok(a) => break a,
            Err(e) => {
                assert!(e.is_retryable() || matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
                assert!(
                    killed.elapsed() < Duration::from_secs(60),
                    "no write succeeded in 60 s: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    println!(
        "first write on the promoted standby {:?} after promotion",
        killed.elapsed()
    );
    let term = registry.feed_term().await.unwrap();
    assert_eq!(term.term, 1, "{term:?}");
    assert_eq!(term.base, common, "the new term shares exactly what the standby had");
    assert_eq!(Version(after.epoch.0), term.start);
    // Versions and epochs issued now exceed everything the lost history issued.
    assert!(after.epoch > lost_move.epoch && term.start > lost_cursor);
    for l in &lost {
        assert!(after.epoch > l.epoch);
    }

    // A follower holding a lost version is told so, never given the new history past it.
    match registry.changes_since(lost_cursor, 100).await {
        Err(Error::HistoryDiverged { cursor, head, term }) => {
            assert_eq!((cursor, term), (lost_cursor, 1));
            assert!(head >= Version(after.epoch.0));
        }
        other => panic!("a cursor of the lost history must be refused, got {other:?}"),
    }
    // A follower at the last common version continues into the new term without a gap.
    let batch = registry.changes_since(common, 100).await.unwrap();
    assert_eq!(batch.changes.first().map(|c| c.version), Some(term.start));

    router.sync().await.unwrap();
    let stats = router.stats();
    assert_eq!(stats.history_resets, 1, "{stats:?}");
    for i in 0..3 {
        assert_eq!(
            router.resolve(&format!("lost{i}")).await.map(|r| r.stamp),
            Err(RouteError::UnknownTenant)
        );
    }
    let route = router.resolve("kept0").await.unwrap();
    assert_eq!(
        (route.stamp, route.epoch),
        (StampId(1), kept0.epoch),
        "the lost move is undone"
    );
    assert_eq!(router.resolve("after0").await.map(|r| r.stamp), Ok(StampId(1)));
    assert_eq!(
        registry.changes_since(Version::ZERO, 1000).await.unwrap().head,
        Version(after.epoch.0)
    );
}

/// Synchronous replication: writers run while the primary is killed and the standby promoted.
/// Every acknowledged write is on the new primary; writes resume through the same
/// configuration; the router keeps serving during the gap and follows afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_failover_loses_no_acknowledged_write() {
    let mut cluster = blocking(|| Cluster::start(Replication::Synchronous, 1));
    let schema = unique_schema("failover_sync");
    let registry = PgRegistry::connect(config(&cluster.multi_host_url(), &schema).pool_size(8))
        .await
        .unwrap();
    registry.migrate().await.unwrap();
    registry.put_active_stamp(stamp_spec(1)).await.unwrap();
    registry.assign(&tenant("warm"), StampId(1)).await.unwrap();
    let router = Router::new(registry.clone());
    router.warm_up().await.unwrap();
    router.sync().await.unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<(String, Epoch)>::new()));
    let unknown = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (registry, stop, acked, unknown) = (registry.clone(), stop.clone(), acked.clone(), unknown.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let name = format!("w{w}-{i}");
                i += 1;
                match registry.assign(&tenant(&name), StampId(1)).await {
                    Ok(a) => acked.lock().push((name, a.epoch)),
                    Err(Error::OutcomeUnknown { .. }) => unknown.lock().push(name),
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("writer {w}: {e:?}"),
                }
            }
        }));
    }
    let follower = {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            let mut served = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let _ = router.sync().await;
                if router.route("warm").is_ok() {
                    served += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            served
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_kill = acked.lock().len();
    blocking(|| cluster.kill(0));
    let killed = Instant::now();
    blocking(|| cluster.promote(1));
    let resumed = loop {
        let n = acked.lock().len();
        if n > before_kill + 20 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "writes did not resume within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("writes resumed {resumed:?} after the primary was killed (promotion included)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    let served = follower.await.unwrap();
    assert!(served > 0);
    assert!(before_kill > 0, "writers never got going before the kill");

    let acked = acked.lock().clone();
    let mut missing = Vec::new();
    for (name, epoch) in &acked {
        match registry.assignment(&tid(name)).await.unwrap() {
            Some(a) if a.epoch == *epoch => {}
            other => missing.push((name.clone(), *epoch, other.map(|a| a.epoch))),
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost: {missing:?}",
        missing.len()
    );
    println!(
        "{} acknowledged writes all present after failover; {} with unknown outcome",
        acked.len(),
        unknown.lock().len()
    );
    // The router follows the new primary: every acknowledged tenant routes to its stamp.
    router.sync().await.unwrap();
    for (name, epoch) in acked.iter().rev().take(50) {
        let route = router.resolve(name).await.unwrap();
        assert_eq!(route.epoch, *epoch);
    }
}

/// A migration in flight when the primary dies: after the standby is promoted, stepping the
/// same migration (as its worker does, retrying `Unavailable` and `OutcomeUnknown`) resumes
/// from the stored progress and completes; every acknowledged data write is on the
/// destination, and the tenant routes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_in_flight_resumes_after_a_failover() {
    use stamps::migration::reference::{ReferenceDataPlane, WriteError};
    use stamps::migration::{MigrationConfig, Migrator};

    let mut cluster = blocking(|| Cluster::start(Replication::Synchronous, 1));
    let schema = unique_schema("failover_migration");
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    let registry = PgRegistry::connect(config(&cluster.multi_host_url(), &schema).clock(clock.clone()))
        .await
        .unwrap();
    registry.migrate().await.unwrap();
    for id in [1, 2] {
        registry.put_active_stamp(stamp_spec(id)).await.unwrap();
    }
    let acme = tid("acme");
    registry.assign(&tenant("acme"), StampId(1)).await.unwrap();
    let registry: Arc<DynRegistry> = Arc::new(registry);
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone());
    let migrator = Migrator::new(registry.clone(), Arc::new(plane.clone()))
        .clock(clock.clone())
        .config(MigrationConfig::default().soak_window(Duration::ZERO))
        .unwrap();
    let mut acked: Vec<String> = Vec::new();
    let write = |acked: &mut Vec<String>, route: Option<Assignment>| {
        if let Some(route) = route {
            let key = format!("k{}", acked.len());
            match plane.write(&route, &key, "v") {
                Ok(_) => acked.push(key),
                Err(WriteError::Frozen { .. } | WriteError::Fenced { .. }) => {}
                Err(e) => panic!("write refused: {e}"),
            }
        }
    };
    for _ in 0..3 {
        let route = registry.assignment(&acme).await.unwrap();
        write(&mut acked, route);
    }
    let plan = migrator.plan(&acme, StampId(2)).await.unwrap();
    let mut m = migrator.start(&plan, "ops").await.unwrap();
    for _ in 0..3 {
        m.step().await.unwrap();
        clock.advance(Duration::from_millis(10));
        let route = registry.assignment(&acme).await.unwrap();
        write(&mut acked, route);
    }
    let mid = m.state();
    assert!(!mid.is_terminal(), "the migration finished before the failover");

    blocking(|| cluster.kill(0));
    blocking(|| cluster.promote(1));
    let mut errors = 0;
    for _ in 0..400 {
        if m.state().is_terminal() {
            break;
        }
        match m.step().await {
            Ok(_) => {}
            Err(e @ (Error::Unavailable { .. } | Error::OutcomeUnknown { .. })) => {
                errors += 1;
                assert!(errors < 200, "the migration never resumed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("step after the failover (from {mid}): {e}"),
        }
        clock.advance(Duration::from_millis(10));
        if let Ok(route) = registry.assignment(&acme).await {
            write(&mut acked, route);
        }
    }
    assert_eq!(m.state(), MigrationState::Completed, "from {mid} across the failover");
    let a = registry.assignment(&acme).await.unwrap().unwrap();
    assert_eq!((a.stamp, a.mode), (StampId(2), AssignmentMode::Serving));
    let rows = plane.dump(StampId(2), &acme);
    for k in &acked {
        assert!(rows.contains_key(k), "acknowledged {k} missing on the destination");
    }
    println!(
        "migration resumed from {mid} after the failover ({errors} steps refused meanwhile); {} writes kept",
        acked.len()
    );
}
