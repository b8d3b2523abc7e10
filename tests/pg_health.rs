//! `PgHealth`: one health view shared by every router through the registry database, on the
//! machine's PostgreSQL (never skipped). Three routers, each with its own connection pool and
//! health table, follow the view; a prober publishes; the routers refuse the unhealthy stamp's
//! tenants together, recover together, treat expired reports by their policy, and the stamps
//! are probed once per round instead of once per router.

#[path = "support/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg::{database_url, raw_client, unique_schema, SchemaGuard};
use stamps::health::{HealthMonitor, HealthReport, HealthSource, HealthTable, OnExpired, PgHealth, StaticHealth};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::router::{RouteError, Router};
use stamps::*;

async fn connect(schema: &str) -> PgRegistry {
    let config = PgConfig::from_url(database_url()).unwrap().schema(schema).unwrap();
    PgRegistry::connect(config).await.unwrap()
}

/// A migrated schema with stamps 1–3 and tenants `t1`, `t2`, `t3` on them.
async fn fleet(schema: &str) -> PgRegistry {
    let pg = connect(schema).await;
    pg.migrate().await.unwrap();
    for id in 1..=3u32 {
        let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
        pg.put_active_stamp(spec).await.unwrap();
        let t = TenantSpec::new(TenantId::new(&format!("t{id}")).unwrap());
        pg.assign(&t, StampId(id)).await.unwrap();
    }
    pg
}

/// Waits until `f` holds, up to `limit`; returns how long it took.
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

fn report(stamp: u32, status: HealthStatus, reason: Option<&str>) -> HealthReport {
    HealthReport::new(StampId(stamp), status, reason, Timestamp::from_millis(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_refuse_and_recover_together_woken_by_notify() {
    let schema = unique_schema("pghealth");
    let _guard = SchemaGuard(schema.clone());
    let prober = Arc::new(PgHealth::new(fleet(&schema).await));
    // Each router: its own registry connection, table and follower. The poll interval is
    // far longer than the test allows, so only the NOTIFY wake-up can deliver in time.
    let mut routers = Vec::new();
    let mut followers = Vec::new();
    for _ in 0..3 {
        let pg = connect(&schema).await;
        let table = HealthTable::new();
        let router = Router::builder(pg.clone()).health(table.clone()).build().unwrap();
        router.warm_up().await.unwrap();
        let shared = Arc::new(PgHealth::new(pg).poll(Duration::from_secs(60)));
        followers.push(shared.spawn_follower(table));
        routers.push(router);
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the listeners connect
    for r in &routers {
        assert!(r.route("t2").is_ok());
    }

    prober
        .publish(
            "prober",
            &report(2, HealthStatus::Unhealthy, Some("503 from /healthz")),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let down = until(Duration::from_secs(10), || {
        routers
            .iter()
            .all(|r| matches!(r.route("t2"), Err(RouteError::StampUnavailable { .. })))
    })
    .await;
    for r in &routers {
        assert!(
            r.route("t1").is_ok() && r.route("t3").is_ok(),
            "only stamp 2's tenants are refused"
        );
        let h = r.health().unwrap().get(StampId(2)).unwrap();
        assert_eq!(h.reason.as_deref(), Some("503 from /healthz"));
    }

    prober
        .publish(
            "prober",
            &report(2, HealthStatus::Healthy, None),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let up = until(Duration::from_secs(10), || {
        routers.iter().all(|r| r.route("t2").is_ok())
    })
    .await;
    println!("shared health: 3 routers refused stamp 2's tenants {down:?} after the publication, and served them again {up:?} after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reports_follow_the_policy_and_the_worst_live_report_wins() {
    let schema = unique_schema("pghealth_exp");
    let _guard = SchemaGuard(schema.clone());
    let pg = fleet(&schema).await;
    let shared = Arc::new(PgHealth::new(pg.clone()));
    let unknown = HealthTable::new();
    let strict = HealthTable::new();
    let _a = Arc::new(PgHealth::new(pg.clone()).poll(Duration::from_millis(20))).spawn_follower(unknown.clone());
    let _b = Arc::new(
        PgHealth::new(pg.clone())
            .poll(Duration::from_millis(20))
            .on_expired(OnExpired::Unhealthy),
    )
    .spawn_follower(strict.clone());

    // Two reporters on stamp 1: the worst live one counts.
    shared
        .publish(
            "agent",
            &report(1, HealthStatus::Healthy, None),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    shared
        .publish(
            "prober",
            &report(1, HealthStatus::Degraded, Some("slow")),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    until(Duration::from_secs(5), || {
        unknown.status(StampId(1)) == HealthStatus::Degraded
    })
    .await;

    // Stamp 3: unhealthy for 400 ms, then nobody reports again.
    shared
        .publish(
            "prober",
            &report(3, HealthStatus::Unhealthy, Some("down")),
            Duration::from_millis(400),
        )
        .await
        .unwrap();
    until(Duration::from_secs(5), || {
        unknown.status(StampId(3)) == HealthStatus::Unhealthy && strict.status(StampId(3)) == HealthStatus::Unhealthy
    })
    .await;
    // Expired: unknown (removed) under the default policy; unhealthy under the strict one.
    until(Duration::from_secs(5), || unknown.get(StampId(3)).is_none()).await;
    until(Duration::from_secs(5), || {
        strict
            .get(StampId(3))
            .is_some_and(|h| h.reason.as_deref() == Some("health report expired"))
    })
    .await;
    let h = strict.get(StampId(3)).unwrap();
    assert_eq!(
        (h.status, h.reason.as_deref()),
        (HealthStatus::Unhealthy, Some("health report expired"))
    );
    // As a source: the shared view answers for the stamp.
    let stamp3 = pg.stamp(StampId(3)).await.unwrap().unwrap();
    assert_eq!(shared.check(&stamp3).await.reason.as_deref(), Some("no live report"));
    let stamp1 = pg.stamp(StampId(1)).await.unwrap().unwrap();
    assert_eq!(shared.check(&stamp1).await.status, HealthStatus::Degraded);

    // Withdrawn reports are gone from every view.
    assert!(pg.withdraw_health(StampId(1), "prober").await.unwrap());
    until(Duration::from_secs(5), || {
        unknown.status(StampId(1)) == HealthStatus::Healthy
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_refused_and_unreadable_rows_are_reported() {
    let schema = unique_schema("pghealth_bad");
    let _guard = SchemaGuard(schema.clone());
    let pg = fleet(&schema).await;
    let long = "x".repeat(1_025);
    for (reporter, reason, ttl, field) in [
        ("", None, Duration::from_secs(1), "reporter"),
        ("bad\nname", None, Duration::from_secs(1), "reporter"),
        ("ok", Some(long.as_str()), Duration::from_secs(1), "reason"),
        ("ok", None, Duration::ZERO, "ttl"),
        ("ok", None, Duration::from_secs(7_200), "ttl"),
    ] {
        let err = pg
            .publish_health(StampId(1), HealthStatus::Unhealthy, reason, reporter, ttl)
            .await
            .unwrap_err();
        assert!(matches!(&err, Error::InvalidInput(i) if i.field == field), "{err:?}");
    }
    assert!(
        pg.health_reports().await.unwrap().is_empty(),
        "a refused report was stored"
    );

    // A row written by another program that this build cannot read back.
    let raw = raw_client().await;
    raw.batch_execute(&format!(
        "INSERT INTO \"{schema}\".health_reports VALUES (1, E'bad\\x01reporter', 'healthy', NULL, 1, 2, 1)"
    ))
    .await
    .unwrap();
    let err = pg.health_reports().await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { what, .. } if what.contains("stamp 1")),
        "{err:?}"
    );
}

/// Counts the probes a health source answers.
#[derive(Debug, Default)]
struct Counting {
    probes: AtomicU64,
    inner: StaticHealth,
}

#[async_trait]
impl HealthSource for Counting {
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        self.probes.fetch_add(1, Ordering::Relaxed);
        self.inner.check(stamp).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prober_probes_each_stamp_once_per_round_whatever_the_number_of_routers() {
    let schema = unique_schema("pghealth_load");
    let _guard = SchemaGuard(schema.clone());
    let pg = fleet(&schema).await;
    let source = Arc::new(Counting::default());
    source.inner.set(StampId(2), HealthStatus::Unhealthy, "down");
    let monitor = Arc::new(
        HealthMonitor::builder(source.clone())
            .hysteresis(stamps::health::Hysteresis::new(1, 1).unwrap())
            .build(),
    );
    let interval = Duration::from_millis(100);
    let prober = Arc::new(PgHealth::new(pg.clone())).spawn_prober(monitor, "prober", interval);
    let tables: Vec<HealthTable> = (0..3).map(|_| HealthTable::new()).collect();
    let _followers: Vec<_> = tables
        .iter()
        .map(|t| Arc::new(PgHealth::new(pg.clone()).poll(Duration::from_millis(50))).spawn_follower(t.clone()))
        .collect();
    until(Duration::from_secs(10), || {
        tables.iter().all(|t| t.status(StampId(2)) == HealthStatus::Unhealthy)
    })
    .await;
    let started = Instant::now();
    let before = source.probes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let probes = source.probes.load(Ordering::Relaxed) - before;
    drop(prober);
    let rounds = started.elapsed().as_secs_f64() / interval.as_secs_f64();
    // Each round probes the 3 stamps once; 3 routers probing themselves would make 9.
    assert_eq!(probes % 3, 0, "a round probed a stamp twice or skipped one: {probes}");
    assert!(
        probes as f64 <= 3.0 * (rounds + 1.0),
        "{probes} probes in {rounds:.1} rounds"
    );
    println!(
        "shared health: {probes} probes in {rounds:.0} rounds of 3 stamps with 3 routers following (per-router probing: {:.0})",
        9.0 * rounds
    );
}
