//! Metrics (feature `metrics`): each family is recorded where the docs say, with the labels
//! they say, every name recorded is one of `telemetry::names::ALL`, and no label ever carries a
//! tenant. A `metrics-util` debugging recorder is installed for each test's thread, and the
//! test runs on a current-thread runtime on that thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use stamps::capacity::{SignalPolicy, TenantsPerDay};
use stamps::health::{HealthMonitor, HealthReport, Hysteresis, StaticHealth};
use stamps::integrations::FleetOverview;
use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{MigrationConfig, Migrator, RunOutcome};
use stamps::placement::policies;
use stamps::registry::{place_and_assign, Observed};
use stamps::telemetry::names;
use stamps::*;

#[cfg(feature = "postgres")]
#[path = "support/pg.rs"]
mod pg;

/// One recorded series: name, labels, value.
#[derive(Debug)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: DebugValue,
}

fn collect(snapshotter: &Snapshotter) -> Vec<Series> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let k = key.key();
            Series {
                name: k.name().to_string(),
                labels: k
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect(),
                value,
            }
        })
        .collect()
}

/// Runs `body` with a fresh recorder on this thread; returns what it recorded.
fn recorded<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) -> Vec<Series> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(body());
    });
    collect(&snapshotter)
}

fn find<'a>(all: &'a [Series], name: &str, labels: &[(&str, &str)]) -> Option<&'a Series> {
    all.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn counter(all: &[Series], name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(all, name, labels).map(|s| &s.value) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn gauge(all: &[Series], name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(all, name, labels).map(|s| &s.value) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn histogram_len(all: &[Series], name: &str, labels: &[(&str, &str)]) -> usize {
    match find(all, name, labels).map(|s| &s.value) {
        Some(DebugValue::Histogram(v)) => v.len(),
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

/// Every series is a documented name, and no label carries a tenant (neither a `tenant` key
/// nor any of `tenants` as a value).
fn check_hygiene(all: &[Series], tenants: &[&str]) {
    let documented: Vec<&str> = names::ALL.iter().map(|(n, _, _)| *n).collect();
    for s in all {
        assert!(documented.contains(&s.name.as_str()), "undocumented metric {}", s.name);
        assert!(!s.labels.contains_key("tenant"), "{} has a tenant label", s.name);
        for v in s.labels.values() {
            assert!(
                !tenants.contains(&v.as_str()),
                "{} carries tenant {v} as a label",
                s.name
            );
        }
    }
}

async fn two_stamps<R: Registry + ?Sized>(registry: &R, tenants: f64) {
    for id in [1, 2] {
        let cap = Capacity::new([(Resource::Tenants, tenants)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
        registry.put_active_stamp(spec).await.unwrap();
    }
}

#[test]
fn the_router_exports_its_counters_and_feed_lag_on_scrape() {
    let all = recorded(|| async {
        let registry = InMemoryRegistry::new();
        two_stamps(&registry, 10.0).await;
        let router = Router::new(registry.clone());
        router.sync().await.unwrap();
        router
            .preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])
            .unwrap();
        for _ in 0..5 {
            router.route("acme").unwrap();
        }
        let _ = router.route("globex");
        let _ = router.route("Not A Tenant!");
        assert_eq!(router.resolve("nobody").await, Err(RouteError::UnknownTenant));
        let _ = router.route("nobody");
        registry
            .assign(&TenantSpec::new(TenantId::new("late").unwrap()), StampId(2))
            .await
            .unwrap();
        router.export_metrics(); // behind by one change
        router.export_metrics(); // twice: totals, never double-counted
    });
    assert_eq!(counter(&all, names::ROUTER_HITS, &[]), 5);
    assert_eq!(counter(&all, names::ROUTER_MISSES, &[]), 2); // globex, and nobody before its resolve
    assert_eq!(
        counter(&all, names::ROUTER_REJECTIONS, &[("reason", "invalid_tenant")]),
        1
    );
    assert_eq!(
        counter(&all, names::ROUTER_REJECTIONS, &[("reason", "unknown_tenant")]),
        1
    );
    assert_eq!(gauge(&all, names::ROUTER_FEED_LAG_VERSIONS, &[]), 1.0);
    assert_eq!(gauge(&all, names::ROUTER_FEED_STUCK, &[]), 0.0);
    assert_eq!(
        histogram_len(&all, names::ROUTER_RESOLVE_DURATION, &[("outcome", "unknown_tenant")]),
        1
    );
    check_hygiene(&all, &["acme", "globex", "nobody", "late"]);
}

#[test]
fn an_observed_registry_times_and_counts_calls_by_method_and_error_kind() {
    let all = recorded(|| async {
        let registry = Observed::new(InMemoryRegistry::new());
        two_stamps(&registry, 10.0).await;
        let t = TenantSpec::new(TenantId::new("acme").unwrap());
        registry.assign(&t, StampId(1)).await.unwrap();
        assert!(registry.assign(&t, StampId(2)).await.is_err()); // already assigned
        assert!(registry
            .assign(&TenantSpec::new(TenantId::new("b").unwrap()), StampId(9))
            .await
            .is_err());
        registry.assignment(t.id()).await.unwrap();
    });
    assert_eq!(counter(&all, names::REGISTRY_CALLS, &[("method", "assign")]), 3);
    assert_eq!(counter(&all, names::REGISTRY_CALLS, &[("method", "put_stamp")]), 2);
    assert_eq!(counter(&all, names::REGISTRY_CALLS, &[("method", "assignment")]), 1);
    assert_eq!(
        counter(
            &all,
            names::REGISTRY_ERRORS,
            &[("method", "assign"), ("kind", "already_assigned")]
        ),
        1
    );
    assert_eq!(
        counter(
            &all,
            names::REGISTRY_ERRORS,
            &[("method", "assign"), ("kind", "not_found")]
        ),
        1
    );
    assert_eq!(
        histogram_len(&all, names::REGISTRY_CALL_DURATION, &[("method", "assign")]),
        3
    );
    check_hygiene(&all, &["acme", "b"]);
}

#[test]
fn placement_decisions_count_outcomes_rejections_and_provision_requests() {
    let all = recorded(|| async {
        let registry = InMemoryRegistry::new();
        two_stamps(&registry, 1.0).await;
        let policy = policies::least_loaded();
        for t in ["a", "b", "c"] {
            let _ = place_and_assign(&registry, &policy, &TenantSpec::new(TenantId::new(t).unwrap())).await;
        }
    });
    assert_eq!(counter(&all, names::PLACEMENT_DECISIONS, &[("outcome", "placed")]), 2);
    assert_eq!(counter(&all, names::PLACEMENT_DECISIONS, &[("outcome", "no_fit")]), 1);
    assert_eq!(counter(&all, names::PLACEMENT_REJECTIONS, &[("reason", "headroom")]), 2);
    assert_eq!(counter(&all, names::PLACEMENT_PROVISION_REQUESTS, &[]), 1);
    check_hygiene(&all, &["a", "b", "c"]);
}

#[test]
fn a_migration_records_transitions_steps_and_its_freeze() {
    let all = recorded(|| async {
        let registry = Arc::new(InMemoryRegistry::new());
        two_stamps(&*registry, 10.0).await;
        let t = TenantId::new("acme").unwrap();
        registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await.unwrap();
        let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
        let migrator = Migrator::new(registry.clone(), Arc::new(plane))
            .config(MigrationConfig::default().soak_window(Duration::ZERO))
            .unwrap();
        let mut m = migrator
            .start(&migrator.plan(&t, StampId(2)).await.unwrap(), "ops")
            .await
            .unwrap();
        assert_eq!(m.run().await.unwrap(), RunOutcome::Finished(MigrationState::Completed));
    });
    for (from, to) in [
        ("planned", "snapshotting"),
        ("cut_over", "soaking"),
        ("cleaning_up", "completed"),
    ] {
        assert_eq!(
            counter(&all, names::MIGRATION_TRANSITIONS, &[("from", from), ("to", to)]),
            1
        );
    }
    assert!(histogram_len(&all, names::MIGRATION_STEP_DURATION, &[("state", "cut_over")]) >= 1);
    assert_eq!(counter(&all, names::MIGRATION_FREEZES, &[]), 1);
    assert_eq!(
        histogram_len(&all, names::MIGRATION_FREEZE_DURATION, &[("outcome", "cut_over")]),
        1
    );
    check_hygiene(&all, &["acme"]);
}

#[test]
fn health_transitions_and_status_are_recorded_per_stamp() {
    let all = recorded(|| async {
        let monitor = HealthMonitor::builder(StaticHealth::new())
            .hysteresis(Hysteresis::new(1, 1).unwrap())
            .build();
        let now = Timestamp::from_millis(1);
        for status in [HealthStatus::Healthy, HealthStatus::Unhealthy, HealthStatus::Healthy] {
            monitor.observe(&HealthReport::new(StampId(4), status, None, now));
        }
    });
    assert_eq!(
        counter(&all, names::HEALTH_TRANSITIONS, &[("stamp", "4"), ("to", "unhealthy")]),
        1
    );
    assert_eq!(
        counter(&all, names::HEALTH_TRANSITIONS, &[("stamp", "4"), ("to", "healthy")]),
        1
    );
    assert_eq!(
        gauge(&all, names::STAMP_HEALTH, &[("stamp", "4"), ("status", "healthy")]),
        1.0
    );
    assert_eq!(
        gauge(&all, names::STAMP_HEALTH, &[("stamp", "4"), ("status", "unhealthy")]),
        0.0
    );
}

#[test]
fn the_fleet_overview_exports_utilisation_signals_and_migrations() {
    let all = recorded(|| async {
        let registry = InMemoryRegistry::new();
        two_stamps(&registry, 4.0).await;
        for t in ["a", "b", "c"] {
            registry
                .assign(&TenantSpec::new(TenantId::new(t).unwrap()), StampId(1))
                .await
                .unwrap();
        }
        let policy = SignalPolicy::new(0.7, TenantsPerDay(1.0), Duration::from_secs(86_400));
        let view = FleetOverview::collect(&registry, &policy, None).await.unwrap();
        view.export_metrics();
    });
    assert_eq!(gauge(&all, names::STAMP_TENANTS, &[("stamp", "1")]), 3.0);
    assert_eq!(
        gauge(
            &all,
            names::STAMP_UTILIZATION,
            &[("stamp", "1"), ("resource", "tenants")]
        ),
        0.75
    );
    assert_eq!(gauge(&all, names::STAMP_ABOVE_TRIGGER, &[("stamp", "1")]), 1.0);
    assert_eq!(gauge(&all, names::STAMP_ABOVE_TRIGGER, &[("stamp", "2")]), 0.0);
    assert_eq!(
        gauge(&all, names::STAMP_STATE, &[("stamp", "2"), ("state", "active")]),
        1.0
    );
    assert_eq!(gauge(&all, names::MIGRATIONS, &[("state", "planned")]), 0.0);
    assert_eq!(gauge(&all, names::MIGRATION_FROZEN_SECONDS, &[]), 0.0);
    check_hygiene(&all, &["a", "b", "c"]);
}

#[test]
fn every_documented_name_follows_prometheus_conventions() {
    for (name, kind, help) in names::ALL {
        assert!(name.starts_with("stamps_"), "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
        assert!(!help.is_empty());
        match kind {
            names::Kind::Counter => assert!(name.ends_with("_total"), "{name}"),
            names::Kind::Histogram => assert!(name.ends_with("_seconds"), "{name}"),
            _ => assert!(!name.ends_with("_total"), "{name}"),
        }
    }
    let mut sorted: Vec<&str> = names::ALL.iter().map(|(n, _, _)| *n).collect();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names::ALL.len(), "a name is listed twice");
}

/// The same calls, some failing, through `Observed`: the counts by method and error kind.
async fn calls_and_failures(registry: &dyn Registry) {
    two_stamps(registry, 10.0).await;
    let t = TenantSpec::new(TenantId::new("acme").unwrap());
    let a = registry.assign(&t, StampId(1)).await.unwrap();
    assert!(registry.assign(&t, StampId(2)).await.is_err()); // already assigned
    assert!(registry
        .assign(&TenantSpec::new(TenantId::new("b").unwrap()), StampId(9))
        .await
        .is_err()); // no such stamp
    let moved = registry
        .compare_and_set(t.id(), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    assert!(moved.epoch > a.epoch);
    assert!(registry
        .compare_and_set(t.id(), a.epoch, AssignmentChange::move_to(StampId(1)))
        .await
        .is_err()); // stale epoch
    registry.changes_since(Version::ZERO, 100).await.unwrap();
}

fn by_method_and_kind(all: &[Series]) -> BTreeMap<(String, String, String), u64> {
    all.iter()
        .filter(|s| s.name == names::REGISTRY_CALLS || s.name == names::REGISTRY_ERRORS)
        .filter_map(|s| match s.value {
            DebugValue::Counter(n) => Some((
                (
                    s.name.clone(),
                    s.labels.get("method").cloned().unwrap_or_default(),
                    s.labels.get("kind").cloned().unwrap_or_default(),
                ),
                n,
            )),
            _ => None,
        })
        .collect()
}

/// `Observed` records the same calls and the same error kinds on PostgreSQL as in memory.
#[cfg(feature = "postgres")]
#[test]
fn an_observed_postgres_registry_records_what_the_in_memory_one_does() {
    use stamps::registry::postgres::{PgConfig, PgRegistry};
    let memory = recorded(|| async {
        calls_and_failures(&Observed::new(InMemoryRegistry::new())).await;
    });
    let schema = pg::unique_schema("observed");
    let _guard = pg::SchemaGuard(schema.clone());
    let postgres = recorded(|| async {
        let config = PgConfig::from_url(pg::database_url()).unwrap().schema(&schema).unwrap();
        let pg = PgRegistry::connect(config).await.unwrap();
        pg.migrate().await.unwrap();
        calls_and_failures(&Observed::new(pg)).await;
    });
    let (m, p) = (by_method_and_kind(&memory), by_method_and_kind(&postgres));
    assert_eq!(m, p);
    assert_eq!(
        m.get(&(
            names::REGISTRY_ERRORS.to_string(),
            "compare_and_set".to_string(),
            "conflict".to_string()
        )),
        Some(&1)
    );
    assert_eq!(
        histogram_len(&postgres, names::REGISTRY_CALL_DURATION, &[("method", "assign")]),
        3
    );
}
