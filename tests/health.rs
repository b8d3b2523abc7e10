//! Health: hysteresis with a fake clock (as a model-based property test and by example), the
//! lock-free table, the router failing fast for an unhealthy stamp only, and the sources.

mod router_common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use router_common::{registry_with_stamps, tid};
use stamps::health::{
    AggregateHealth, HealthMonitor, HealthReport, HealthSource, HealthTable, Hysteresis, StaticHealth,
};
use stamps::router::{RouteError, Router};
use stamps::*;

/// The reference: a counter-based state machine written the obvious way.
fn model(fall: u32, rise: u32, reports: &[HealthStatus]) -> Vec<HealthStatus> {
    let mut published = HealthStatus::Healthy;
    let (mut fails, mut oks) = (0, 0);
    let mut out = Vec::new();
    for &r in reports {
        if r == HealthStatus::Unhealthy {
            fails += 1;
            oks = 0;
            if published != HealthStatus::Unhealthy && fails >= fall {
                published = HealthStatus::Unhealthy;
                fails = 0;
            }
        } else {
            fails = 0;
            if published == HealthStatus::Unhealthy {
                oks += 1;
                if oks >= rise {
                    published = r;
                    oks = 0;
                }
            } else {
                published = r;
            }
        }
        out.push(published);
    }
    out
}

fn status() -> impl Strategy<Value = HealthStatus> {
    prop_oneof![
        Just(HealthStatus::Healthy),
        Just(HealthStatus::Degraded),
        Just(HealthStatus::Unhealthy),
    ]
}

proptest! {
    /// The monitor publishes exactly what the reference state machine says, and `since` is the
    /// fake-clock time of the last transition (or of the first healthy report, which is
    /// announced).
    #[test]
    fn hysteresis_matches_the_reference(
        fall in 1u32..5,
        rise in 1u32..5,
        reports in proptest::collection::vec((status(), 0u64..5_000), 1..60),
    ) {
        let clock = FakeClock::new();
        let monitor = HealthMonitor::builder(StaticHealth::new())
            .hysteresis(Hysteresis::new(fall, rise).unwrap())
            .clock(clock.clone())
            .build();
        let statuses: Vec<_> = reports.iter().map(|(s, _)| *s).collect();
        let expected = model(fall, rise, &statuses);
        let mut last = HealthStatus::Healthy;
        let mut since = None;
        for ((s, dt), want) in reports.iter().zip(expected) {
            clock.advance(Duration::from_millis(*dt));
            let got = monitor.observe(&HealthReport::new(StampId(1), *s, Some("probe"), clock.now()));
            prop_assert_eq!(got, want);
            prop_assert_eq!(monitor.table().status(StampId(1)), want);
            // A transition, or the first report that is not `Unhealthy` (the monitor announces
            // a checked stamp's status at once).
            if want != last || (since.is_none() && *s != HealthStatus::Unhealthy) {
                since = Some(clock.now());
                last = want;
            }
            prop_assert_eq!(monitor.since(StampId(1)), since);
            let unavailable = monitor.table().unavailable_since(StampId(1));
            prop_assert_eq!(unavailable.is_some(), want == HealthStatus::Unhealthy);
        }
    }
}

#[tokio::test]
async fn an_unhealthy_stamp_fails_only_its_own_tenants() {
    let clock = FakeClock::new();
    let registry = Arc::new(registry_with_stamps(&clock, 3).await);
    for (t, s) in [("a", 1), ("b", 2), ("c", 3)] {
        registry.assign(&TenantSpec::new(tid(t)), StampId(s)).await.unwrap();
    }
    let probes = StaticHealth::with_clock(clock.clone());
    let monitor = HealthMonitor::builder(probes.clone())
        .hysteresis(Hysteresis::new(3, 2).unwrap())
        .clock(clock.clone())
        .build();
    let router = Router::builder(registry.clone())
        .clock(clock.clone())
        .health(monitor.table().clone())
        .build()
        .unwrap();
    for t in ["a", "b", "c"] {
        router.resolve(t).await.unwrap();
    }
    let fleet = registry.fleet().await.unwrap();

    probes.set(StampId(2), HealthStatus::Unhealthy, "connection refused");
    for round in 1..=3 {
        clock.advance(Duration::from_secs(5));
        monitor.check_fleet(&fleet).await;
        let expect_down = round == 3;
        assert_eq!(router.route("b").is_err(), expect_down, "round {round}");
    }
    let since = clock.now();
    assert_eq!(
        router.route("b"),
        Err(RouteError::StampUnavailable {
            stamp: StampId(2),
            since
        })
    );
    assert_eq!(router.route("a").unwrap().stamp, StampId(1));
    assert_eq!(router.route("c").unwrap().stamp, StampId(3));
    assert_eq!(
        monitor.table().get(StampId(2)).unwrap().reason.as_deref(),
        Some("connection refused")
    );

    // Recovery takes two good checks in a row; a relapse in between resets the count.
    probes.clear(StampId(2));
    clock.advance(Duration::from_secs(5));
    monitor.check_fleet(&fleet).await;
    probes.set(StampId(2), HealthStatus::Unhealthy, "flapping");
    monitor.check_fleet(&fleet).await;
    probes.clear(StampId(2));
    monitor.check_fleet(&fleet).await;
    assert!(router.route("b").is_err());
    monitor.check_fleet(&fleet).await;
    assert_eq!(router.route("b").unwrap().stamp, StampId(2));
}

#[tokio::test]
async fn aggregate_reports_the_worst_source() {
    let a = StaticHealth::new();
    let b = StaticHealth::new();
    let all = AggregateHealth::new().with(a.clone()).with(Arc::new(b.clone()));
    let spec = StampSpec::new(
        StampId(4),
        "s4",
        Region::new("eu").unwrap(),
        Capacity::new([(Resource::Tenants, 1.0)], 0.0).unwrap(),
    )
    .unwrap();
    let stamp = Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO);
    assert_eq!(all.check(&stamp).await.status, HealthStatus::Healthy);
    b.set(StampId(4), HealthStatus::Degraded, "slow");
    assert_eq!(all.check(&stamp).await.status, HealthStatus::Degraded);
    a.set(StampId(4), HealthStatus::Unhealthy, "down");
    let r = all.check(&stamp).await;
    assert_eq!((r.status, r.reason.as_deref()), (HealthStatus::Unhealthy, Some("down")));
    assert_eq!(AggregateHealth::new().check(&stamp).await.status, HealthStatus::Healthy);
    let boxed: Box<dyn HealthSource> = Box::new(all);
    assert_eq!(boxed.check(&stamp).await.stamp, StampId(4));
}

#[test]
fn the_table_is_shared_and_readable_from_many_threads() {
    let table = HealthTable::new();
    let writer = {
        let table = table.clone();
        std::thread::spawn(move || {
            for i in 0..2_000u64 {
                let status = if i % 2 == 0 {
                    HealthStatus::Unhealthy
                } else {
                    HealthStatus::Healthy
                };
                table.set(StampId((i % 8) as u32), status, Timestamp::from_millis(i), None);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let table = table.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let s = StampId(i % 8);
                    // Whatever the moment, the view is one of the published states.
                    let st = table.status(s);
                    assert!(matches!(st, HealthStatus::Healthy | HealthStatus::Unhealthy));
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    // The last write for each stamp wins.
    for s in 0..8u32 {
        let last = (0..2_000u64).filter(|i| i % 8 == u64::from(s)).max().unwrap();
        let want = if last % 2 == 0 {
            HealthStatus::Unhealthy
        } else {
            HealthStatus::Healthy
        };
        assert_eq!(table.status(StampId(s)), want);
    }
    table.remove(StampId(0));
    assert!(table.get(StampId(0)).is_none());
    assert_eq!(table.snapshot().len(), 7);
}

#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn the_monitor_task_checks_the_fleet_periodically() {
    let clock = FakeClock::new();
    let registry = Arc::new(registry_with_stamps(&clock, 2).await);
    let probes = StaticHealth::with_clock(clock.clone());
    probes.set(StampId(1), HealthStatus::Unhealthy, "down");
    let monitor = Arc::new(
        HealthMonitor::builder(probes)
            .hysteresis(Hysteresis::new(2, 1).unwrap())
            .clock(clock.clone())
            .build(),
    );
    let task = monitor.clone().spawn(registry, Duration::from_secs(10));
    // Paused tokio time: sleeping advances the runtime's clock instantly, no real waiting.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(monitor.table().status(StampId(1)), HealthStatus::Unhealthy);
    assert_eq!(monitor.table().status(StampId(2)), HealthStatus::Healthy);
    task.stop();
}

#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn dropping_the_monitor_task_stops_the_checks_and_detach_keeps_them() {
    let clock = FakeClock::new();
    let registry = Arc::new(registry_with_stamps(&clock, 1).await);
    let source = Arc::new(CountingSource::default());
    let monitor = Arc::new(HealthMonitor::builder(source.clone()).clock(clock.clone()).build());
    let checks = || source.checks.lock().get(&StampId(1)).copied().unwrap_or(0);

    let task = monitor.clone().spawn(registry.clone(), Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(25)).await;
    let while_held = checks();
    assert!(
        while_held >= 2,
        "the task checks while its handle lives ({while_held} checks)"
    );
    drop(task);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(checks(), while_held, "no check after the handle was dropped");

    monitor.clone().spawn(registry, Duration::from_secs(10)).detach();
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        checks() >= while_held + 2,
        "a detached task keeps checking ({} checks)",
        checks()
    );
}

/// Counts checks per stamp and reports a fixed status.
#[derive(Debug, Default)]
struct CountingSource {
    checks: parking_lot::Mutex<std::collections::HashMap<StampId, usize>>,
}

#[async_trait::async_trait]
impl HealthSource for CountingSource {
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        *self.checks.lock().entry(stamp.id()).or_default() += 1;
        HealthReport::unhealthy(stamp.id(), "down", Timestamp::ZERO)
    }
}

#[tokio::test]
async fn decommissioned_and_removed_stamps_are_forgotten() {
    let clock = FakeClock::new();
    let registry = Arc::new(registry_with_stamps(&clock, 3).await);
    let source = Arc::new(CountingSource::default());
    let monitor = HealthMonitor::builder(source.clone())
        .hysteresis(Hysteresis::new(1, 1).unwrap())
        .clock(clock.clone())
        .build();
    monitor.check_fleet(&registry.fleet().await.unwrap()).await;
    for s in 1..=3 {
        assert_eq!(
            monitor.table().unavailable_since(StampId(s)),
            Some(clock.now()),
            "stamp {s}"
        );
    }

    // Stamp 2 is retired: its unhealthy entry goes, and it is not probed any more.
    registry
        .set_stamp_state(StampId(2), StampState::Draining)
        .await
        .unwrap();
    registry
        .set_stamp_state(StampId(2), StampState::Decommissioned)
        .await
        .unwrap();
    monitor.check_fleet(&registry.fleet().await.unwrap()).await;
    monitor.check_fleet(&registry.fleet().await.unwrap()).await;
    assert_eq!(monitor.table().get(StampId(2)), None);
    let checks = source.checks.lock().clone();
    assert_eq!(
        (checks[&StampId(1)], checks[&StampId(2)], checks[&StampId(3)]),
        (3, 1, 3)
    );

    // A fleet snapshot without stamp 3 (a registry that dropped it) forgets it too; stamp 1 stays.
    let mut fleet = registry.fleet().await.unwrap();
    fleet.stamps.retain(|l| l.stamp.id() != StampId(3));
    monitor.check_fleet(&fleet).await;
    assert_eq!(monitor.table().get(StampId(3)), None);
    assert!(monitor.table().unavailable_since(StampId(1)).is_some());

    // Forgetting is explicit too, and a new report starts the stamp afresh.
    assert!(monitor.forget(StampId(1)));
    assert!(!monitor.forget(StampId(1)));
    assert_eq!(monitor.table().get(StampId(1)), None);
    monitor.observe(&HealthReport::unhealthy(StampId(1), "down again", clock.now()));
    assert!(monitor.table().unavailable_since(StampId(1)).is_some());
}
