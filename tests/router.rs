//! Router behaviour: single-flight, TTL, negative cache, stale-if-error, change-feed
//! invalidation, warm-up, the follower task and resynchronisation after feed truncation.
#![cfg(feature = "test-util")]

mod router_common;

use std::sync::Arc;
use std::time::Duration;

use router_common::{gated, held_after_read, registry_with_stamps, test_registry, tid};
use stamps::router::{RouteError, Router};
use stamps::testing::{Call, FaultyRegistry};
use stamps::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_resolves_make_one_registry_call() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 1).await;
    let a = inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let registry = gated(inner, gate.clone());
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();

    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move { router.resolve("acme").await })
        })
        .collect();
    // Let the callers pile up behind the held registry read, then release it.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1_000);
    for t in tasks {
        let route = t.await.unwrap().unwrap();
        assert_eq!((route.stamp, route.epoch), (StampId(1), a.epoch));
        assert_eq!(route.endpoint, Some("https://s1.internal"));
    }
    assert_eq!(registry.calls(Call::Assignment), 1);
    let s = router.stats();
    assert_eq!(s.misses + s.hits, 100, "{s:?}"); // late callers find it cached
    assert!(s.misses >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 1).await;
    inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let registry = gated(inner, gate.clone());
    let router = Router::builder(registry.clone()).clock(clock).build().unwrap();

    let leader = {
        let router = router.clone();
        tokio::spawn(async move { router.resolve("acme").await })
    };
    while registry.calls(Call::Assignment) == 0 {
        tokio::task::yield_now().await;
    }
    let waiter = {
        let router = router.clone();
        tokio::spawn(async move { router.resolve("acme").await })
    };
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    leader.abort();
    let _ = leader.await;
    gate.add_permits(10);
    let route = waiter.await.unwrap().unwrap();
    assert_eq!(route.stamp, StampId(1));
    assert_eq!(registry.calls(Call::Assignment), 2);
}

#[tokio::test]
async fn routes_expire_after_the_ttl() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 1).await;
    inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let registry = test_registry(inner);
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    assert_eq!(router.config().ttl, Duration::from_secs(60));

    router.resolve("acme").await.unwrap();
    clock.advance(Duration::from_millis(59_999));
    assert!(router.route("acme").is_ok());
    clock.advance(Duration::from_millis(1));
    assert_eq!(router.route("acme"), Err(RouteError::Miss));
    router.resolve("acme").await.unwrap();
    assert_eq!(registry.calls(Call::Assignment), 2);
    let s = router.stats();
    assert_eq!((s.hits, s.misses), (1, 3));
}

#[tokio::test]
async fn unknown_tenants_are_cached_briefly_and_bounded() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 1).await;
    let registry = test_registry(inner.clone());
    let router = Router::builder(registry.clone())
        .config(
            stamps::RouterConfig::default()
                .negative_ttl(Duration::from_secs(5))
                .max_negative(100),
        )
        .clock(clock.clone())
        .build()
        .unwrap();

    assert_eq!(router.resolve("ghost").await, Err(RouteError::UnknownTenant));
    assert_eq!(router.route("ghost"), Err(RouteError::UnknownTenant));
    assert_eq!(router.resolve("ghost").await, Err(RouteError::UnknownTenant));
    assert_eq!(registry.calls(Call::Assignment), 1);
    assert_eq!(router.stats().negative_hits, 2);

    // The tenant appears: the negative entry lives out its TTL, then the route is found.
    inner.assign(&TenantSpec::new(tid("ghost")), StampId(1)).await.unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(router.resolve("ghost").await.unwrap().stamp, StampId(1));

    // A flood of random ids stays within the bound.
    for i in 0..1_000 {
        let _ = router.resolve(&format!("random-{i}")).await;
    }
    assert!(router.stats().evictions >= 800, "{:?}", router.stats());
}

#[tokio::test]
async fn stale_if_error_serves_flagged_routes_up_to_the_limit() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 1).await;
    inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let registry = test_registry(inner);
    let router = Router::builder(registry.clone())
        .config(stamps::RouterConfig::default().stale_if_error(Duration::from_secs(300)))
        .clock(clock.clone())
        .build()
        .unwrap();
    router.resolve("acme").await.unwrap();

    registry.set_unavailable(true);
    clock.advance(Duration::from_secs(61));
    assert_eq!(router.route("acme"), Err(RouteError::Miss)); // not known to be down yet
    let stale = router.resolve("acme").await.unwrap();
    assert!(stale.stale);
    assert_eq!(stale.stamp, StampId(1));
    // Now known to be down: the sync path serves stale too, flagged.
    assert!(router.route("acme").unwrap().stale);
    // An unknown tenant cannot be served at all.
    assert_eq!(router.resolve("other").await, Err(RouteError::Unavailable));
    // Past the maximum staleness: unavailable.
    clock.advance(Duration::from_secs(240));
    assert_eq!(router.resolve("acme").await, Err(RouteError::Unavailable));
    // Recovery: fresh again.
    registry.set_unavailable(false);
    let fresh = router.resolve("acme").await.unwrap();
    assert!(!fresh.stale);
    let s = router.stats();
    assert!(s.stale_serves >= 2 && s.registry_errors >= 3, "{s:?}");
}

#[tokio::test]
async fn without_stale_if_error_a_down_registry_means_unavailable() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 1).await;
    inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let registry = test_registry(inner);
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    router.resolve("acme").await.unwrap();
    registry.set_unavailable(true);
    clock.advance(Duration::from_secs(60));
    assert_eq!(router.resolve("acme").await, Err(RouteError::Unavailable));
}

#[tokio::test]
async fn change_events_replace_entries_at_once_and_never_go_back() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 3).await;
    let a = registry
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .unwrap();
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    router.sync().await.unwrap();
    router.resolve("acme").await.unwrap();

    // Dual-write, then cutover: each change shows up as soon as it is applied.
    let b = registry
        .compare_and_set(
            a.tenant(),
            a.epoch,
            AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(2) }),
        )
        .await
        .unwrap();
    router.sync().await.unwrap();
    let r = router.route("acme").unwrap();
    assert_eq!(
        (r.epoch, r.shadow(), r.shadow_endpoint),
        (b.epoch, Some(StampId(2)), Some("https://s2.internal"))
    );
    let until = clock.now() + Duration::from_secs(2);
    let c = registry
        .compare_and_set(
            a.tenant(),
            b.epoch,
            AssignmentChange::set_mode(AssignmentMode::Frozen {
                shadow: Some(StampId(2)),
                until,
            }),
        )
        .await
        .unwrap();
    router.sync().await.unwrap();
    let r = router.route("acme").unwrap();
    assert!(!r.writes_allowed_at(clock.now()));
    assert_eq!(r.retry_after(clock.now()), Some(Duration::from_secs(2)));
    let d = registry
        .compare_and_set(a.tenant(), c.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    router.sync().await.unwrap();
    let r = router.route("acme").unwrap();
    assert_eq!(
        (r.stamp, r.epoch, r.mode, r.endpoint),
        (
            StampId(2),
            d.epoch,
            AssignmentMode::Serving,
            Some("https://s2.internal")
        )
    );

    // Replaying old changes does not bring an older epoch back.
    let old = registry.changes_since(Version::ZERO, 100).await.unwrap();
    router.apply_batch(&old.changes);
    assert_eq!(router.route("acme").unwrap().epoch, d.epoch);

    // Unassignment: the tenant becomes unknown.
    registry.unassign(a.tenant(), d.epoch).await.unwrap();
    router.sync().await.unwrap();
    assert_eq!(router.route("acme"), Err(RouteError::UnknownTenant));
    assert!(router.stats().invalidations >= 4);
}

#[tokio::test]
async fn an_assignment_ends_a_negative_entry() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 1).await;
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    router.sync().await.unwrap();
    assert_eq!(router.resolve("newco").await, Err(RouteError::UnknownTenant));
    registry
        .assign(&TenantSpec::new(tid("newco")), StampId(1))
        .await
        .unwrap();
    router.sync().await.unwrap();
    assert_eq!(router.route("newco").unwrap().stamp, StampId(1));
}

#[tokio::test]
async fn warm_up_loads_everything_and_tracks_new_tenants() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 2).await;
    for i in 0..2_500 {
        registry
            .assign(&TenantSpec::new(tid(&format!("t{i}"))), StampId(1 + i % 2))
            .await
            .unwrap();
    }
    let long = "a-tenant-with-an-id-longer-than-twenty-four-bytes";
    registry.assign(&TenantSpec::new(tid(long)), StampId(2)).await.unwrap();
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    assert_eq!(router.warm_up().await.unwrap(), 2_501);
    assert_eq!(router.len(), 2_501);
    for i in (0..2_500).step_by(97) {
        assert_eq!(router.route(&format!("t{i}")).unwrap().stamp, StampId(1 + i % 2));
    }
    assert_eq!(router.route(long).unwrap().endpoint, Some("https://s2.internal"));
    // A warmed router tracks tenants it never saw once their change is applied.
    registry
        .assign(&TenantSpec::new(tid("fresh")), StampId(2))
        .await
        .unwrap();
    router.sync().await.unwrap();
    assert_eq!(router.route("fresh").unwrap().stamp, StampId(2));
}

/// The warm-up asks for the next page before it inserts the current one: a failure of that
/// read, answered at once or after the registry waited, fails the warm-up with the registry's
/// error, keeps the pages inserted before it, and a retry loads every tenant.
#[tokio::test]
async fn a_warm_up_whose_later_page_fails_reports_it_and_a_retry_loads_everything() {
    for delayed in [false, true] {
        let clock = FakeClock::new();
        let inner = registry_with_stamps(&clock, 2).await;
        for i in 0..2_500 {
            inner
                .assign(&TenantSpec::new(tid(&format!("t{i:04}"))), StampId(1 + i % 2))
                .await
                .unwrap();
        }
        let registry = FaultyRegistry::new(inner);
        // The third page read fails once (the first two pages are in by then, or in flight).
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = reads.clone();
        registry.before(Call::Assignments, move |_| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if delayed {
                    tokio::task::yield_now().await;
                }
                match n {
                    2 => Err(Error::unavailable("injected: page read")),
                    _ => Ok(()),
                }
            })
        });
        let config = RouterConfig::default().page_size(1_000);
        let router = Router::builder(registry.clone())
            .config(config)
            .clock(clock.clone())
            .build()
            .unwrap();
        let err = router.warm_up().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "delayed {delayed}: {err}");
        assert_eq!(router.stats().registry_errors, 1, "delayed {delayed}");
        // The pages read before the failure are in the table, and nothing else.
        assert_eq!(router.len(), 2_000, "delayed {delayed}");
        // The retry reads every page again (the first two refresh their entries).
        assert_eq!(router.warm_up().await.unwrap(), 2_500, "delayed {delayed}");
        assert_eq!(router.len(), 2_500, "delayed {delayed}");
        for i in (0..2_500).step_by(61) {
            assert_eq!(
                router.route(&format!("t{i:04}")).unwrap().stamp,
                StampId(1 + i % 2),
                "delayed {delayed}"
            );
        }
        assert_eq!(registry.calls(Call::Assignments), 3 + 3, "delayed {delayed}");
    }
}

#[tokio::test]
async fn a_truncated_feed_invalidates_everything_and_resynchronises() {
    let clock = FakeClock::new();
    let registry = InMemoryRegistry::builder()
        .clock(clock.clone())
        .change_retention(4)
        .build();
    let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0).unwrap();
    for id in 1..=2 {
        registry
            .put_active_stamp(
                StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap.clone()).unwrap(),
            )
            .await
            .unwrap();
    }
    let a = registry
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .unwrap();
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    router.sync().await.unwrap();
    router.resolve("acme").await.unwrap();
    // More changes than the feed retains, among them a move of acme.
    let moved = registry
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    for i in 0..10 {
        registry
            .assign(&TenantSpec::new(tid(&format!("filler{i}"))), StampId(1))
            .await
            .unwrap();
    }
    router.sync().await.unwrap();
    assert_eq!(router.route("acme"), Err(RouteError::Miss)); // invalidated, not stale
    let r = router.resolve("acme").await.unwrap();
    assert_eq!((r.stamp, r.epoch), (StampId(2), moved.epoch));
}

#[tokio::test]
async fn unhealthy_stamp_fails_fast_and_others_are_unaffected() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 2).await;
    registry.assign(&TenantSpec::new(tid("a1")), StampId(1)).await.unwrap();
    registry.assign(&TenantSpec::new(tid("b2")), StampId(2)).await.unwrap();
    let health = stamps::health::HealthTable::new();
    let router = Router::builder(registry)
        .clock(clock.clone())
        .health(health.clone())
        .build()
        .unwrap();
    router.resolve("a1").await.unwrap();
    router.resolve("b2").await.unwrap();
    let since = clock.now();
    health.set(StampId(1), HealthStatus::Unhealthy, since, Some("db down"));
    assert_eq!(
        router.route("a1"),
        Err(RouteError::StampUnavailable {
            stamp: StampId(1),
            since
        })
    );
    assert_eq!(
        router.resolve("a1").await,
        Err(RouteError::StampUnavailable {
            stamp: StampId(1),
            since
        })
    );
    assert_eq!(router.route("b2").unwrap().stamp, StampId(2));
    // Degraded is still routable.
    health.set(StampId(1), HealthStatus::Degraded, since, Some("slow"));
    assert!(router.route("a1").is_ok());
    assert_eq!(router.stats().stamp_unavailable, 2);
}

#[tokio::test]
async fn failover_to_a_standby_stamp_is_opt_in_and_comes_from_the_registry() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 3).await;
    registry.assign(&TenantSpec::new(tid("pay")), StampId(1)).await.unwrap();
    registry
        .assign(&TenantSpec::new(tid("shop")), StampId(2))
        .await
        .unwrap();
    let why = stamps::Decision::new("ops", "stamp 1 pairs with stamp 3").unwrap();
    let standby = stamps::Redirect::new(StampId(3), stamps::RedirectWhen::WhileUnhealthy);
    registry
        .set_route_override(StampId(1), Some(standby), &why)
        .await
        .unwrap();
    let health = stamps::health::HealthTable::new();
    let off = Router::builder(registry.clone())
        .clock(clock.clone())
        .health(health.clone())
        .build()
        .unwrap();
    let on = Router::builder(registry)
        .config(stamps::RouterConfig::default().failover(true))
        .clock(clock.clone())
        .health(health.clone())
        .build()
        .unwrap();
    for r in [&off, &on] {
        r.load_stamps().await.unwrap();
        r.resolve("pay").await.unwrap();
        r.resolve("shop").await.unwrap();
        assert_eq!(r.route_overrides().get(&StampId(1)), Some(&standby));
    }
    // Healthy: a standby changes nothing.
    assert_eq!(on.route("pay").unwrap().stamp, StampId(1));
    health.set(StampId(1), HealthStatus::Unhealthy, clock.now(), None);
    health.set(StampId(2), HealthStatus::Unhealthy, clock.now(), None);
    assert!(matches!(off.route("pay"), Err(RouteError::StampUnavailable { .. })));
    let r = on.route("pay").unwrap();
    assert_eq!(
        (r.stamp, r.failed_over_from, r.endpoint),
        (StampId(3), Some(StampId(1)), Some("https://s3.internal"))
    );
    // Stamp 2 has no standby.
    assert!(matches!(on.route("shop"), Err(RouteError::StampUnavailable { .. })));
    // An unhealthy standby is no escape.
    health.set(StampId(3), HealthStatus::Unhealthy, clock.now(), None);
    assert!(matches!(on.route("pay"), Err(RouteError::StampUnavailable { .. })));
}

#[tokio::test]
async fn a_routing_override_reaches_every_router_through_the_feed() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 3).await;
    for (t, s) in [("pay", 1), ("shop", 2)] {
        registry.assign(&TenantSpec::new(tid(t)), StampId(s)).await.unwrap();
    }
    let routers: Vec<_> = (0..2)
        .map(|_| Router::builder(registry.clone()).clock(clock.clone()).build().unwrap())
        .collect();
    for r in &routers {
        r.warm_up().await.unwrap();
        assert_eq!(r.route("pay").unwrap().stamp, StampId(1));
    }
    let restore = stamps::Decision::new("alice", "stamp 1 restored from backup, OPS-12").unwrap();
    let always = stamps::Redirect::new(StampId(3), stamps::RedirectWhen::Always);
    registry
        .set_route_override(StampId(1), Some(always), &restore)
        .await
        .unwrap();
    for r in &routers {
        r.sync().await.unwrap();
        let route = r.route("pay").unwrap();
        assert_eq!((route.stamp, route.failed_over_from), (StampId(3), Some(StampId(1))));
        assert_eq!(route.endpoint, Some("https://s3.internal"));
        // Other stamps' tenants are untouched.
        assert_eq!(r.route("shop").unwrap().stamp, StampId(2));
    }
    // A router started now learns it from the registry, not from its own memory.
    let late = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    late.warm_up().await.unwrap();
    assert_eq!(late.route("pay").unwrap().stamp, StampId(3));
    // Clearing it goes through the feed too.
    let done = stamps::Decision::new("alice", "restore verified").unwrap();
    registry.set_route_override(StampId(1), None, &done).await.unwrap();
    for r in routers.iter().chain([&late]) {
        r.sync().await.unwrap();
        let route = r.route("pay").unwrap();
        assert_eq!((route.stamp, route.failed_over_from), (StampId(1), None));
        assert!(r.route_overrides().is_empty());
    }
    let log = registry.route_override_history(StampId(1)).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].decision, restore);
    assert_eq!((log[1].redirect, &log[1].decision), (None, &done));
}

#[tokio::test]
async fn invalid_text_is_rejected_without_touching_the_registry() {
    let clock = FakeClock::new();
    let registry = test_registry(registry_with_stamps(&clock, 1).await);
    let router = Router::builder(registry.clone()).clock(clock).build().unwrap();
    for bad in ["", "Acme", "../x", "a b", &"a".repeat(129), "-lead", "tab\t"] {
        assert!(
            matches!(router.route(bad), Err(RouteError::InvalidTenant(_))),
            "{bad:?}"
        );
        assert!(
            matches!(router.resolve(bad).await, Err(RouteError::InvalidTenant(_))),
            "{bad:?}"
        );
    }
    assert_eq!(registry.calls(Call::Assignment), 0);
}

#[tokio::test]
async fn the_size_bound_evicts() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 1).await;
    let router = Router::builder(registry)
        .config(stamps::RouterConfig::default().max_entries(100))
        .clock(clock)
        .build()
        .unwrap();
    router
        .preload((0..1_000).map(|i| (format!("t{i}"), StampId(1), Epoch(1), AssignmentMode::Serving)))
        .unwrap();
    assert!(router.len() <= 100, "{}", router.len());
    assert!(router.route("t999").is_ok());
    assert!(router.stats().evictions >= 900);
}

#[test]
fn configuration_is_validated() {
    let bad = [
        RouterConfig::default().ttl(Duration::ZERO),
        RouterConfig::default().negative_ttl(Duration::ZERO),
        RouterConfig::default().max_entries(0),
        RouterConfig::default().stale_if_error(Duration::from_secs(1)),
        RouterConfig::default().tick(Duration::from_secs(3600)),
    ];
    for c in bad {
        assert!(
            Router::builder(InMemoryRegistry::new())
                .config(c.clone())
                .build()
                .is_err(),
            "{c:?}"
        );
    }
    assert!(RouterConfig::default().validate().is_ok());
}

#[test]
fn router_works_over_trait_objects() {
    let shared: Arc<dyn Registry> = Arc::new(InMemoryRegistry::new());
    let a: Router<dyn Registry> = Router::from_arc(shared.clone());
    let b: Router<Arc<dyn Registry>> = Router::new(shared);
    a.preload([("x", StampId(1), Epoch(1), AssignmentMode::Serving)])
        .unwrap();
    b.preload([("x", StampId(2), Epoch(1), AssignmentMode::Serving)])
        .unwrap();
    assert_eq!(a.route("x").unwrap().stamp, StampId(1));
    assert_eq!(b.route("x").unwrap().stamp, StampId(2));
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn the_follower_applies_changes_without_being_asked() {
    let clock = FakeClock::new();
    let registry = registry_with_stamps(&clock, 2).await;
    let a = registry
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .unwrap();
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    router.warm_up().await.unwrap();
    let follower = router.spawn_follower();
    let moved = registry
        .compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    // Wait (bounded) for the follower to apply it; no timing is asserted.
    for _ in 0..10_000 {
        if router.cursor() >= Version(moved.epoch.0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(router.route("acme").unwrap().epoch, moved.epoch);
    drop(follower);
}

/// A miss whose registry read predates an assignment must not undo that assignment once the
/// router has applied its change event (freshness: never older than an applied change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_predates_an_applied_assignment_does_not_undo_it() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 1).await;
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let (registry, reads_done) = held_after_read(inner.clone(), hold.clone());
    let router = Router::builder(registry.clone()).clock(clock).build().unwrap();

    let miss = {
        let router = router.clone();
        tokio::spawn(async move { router.resolve("acme").await })
    };
    // The read has seen "not assigned"; the answer is held back.
    while reads_done.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let a = inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let batch = inner.changes_since(Version::ZERO, 1_000).await.unwrap();
    router.apply_batch(&batch.changes);
    assert_eq!(router.route("acme").unwrap().epoch, a.epoch);

    hold.add_permits(1);
    let answered = miss.await.unwrap().unwrap();
    assert_eq!((answered.stamp, answered.epoch), (StampId(1), a.epoch));
    let route = router.route("acme").unwrap();
    assert_eq!((route.stamp, route.epoch), (StampId(1), a.epoch));
}

/// Invalidating tenant after tenant makes the route table rebuild itself (graves are
/// reclaimed); every entry that was not invalidated keeps its epoch, stamp and mode through
/// the rebuilds.
#[test]
fn invalidation_churn_keeps_every_other_entry() {
    let router = Router::builder(InMemoryRegistry::new())
        .config(stamps::RouterConfig::default().max_entries(2_000))
        .build()
        .unwrap();
    let name = |i: u32| format!("churn-{i:05}");
    let mode = |i: u32| {
        if i.is_multiple_of(10) {
            AssignmentMode::DualWrite { shadow: StampId(99) }
        } else {
            AssignmentMode::Serving
        }
    };
    let put = |i: u32| {
        router
            .preload([(name(i).as_str(), StampId(i % 7), Epoch(u64::from(i) + 1), mode(i))])
            .unwrap();
    };
    for i in 0..1_000 {
        put(i);
    }
    // Replace the oldest tenant with a new one, 20,000 times: far more graves than slots.
    for i in 1_000..21_000 {
        assert!(router.invalidate(&name(i - 1_000)).unwrap(), "{i}");
        put(i);
    }
    for i in 20_000..21_000 {
        let r = router.route(&name(i)).unwrap();
        assert_eq!(
            (r.stamp, r.epoch, r.mode),
            (StampId(i % 7), Epoch(u64::from(i) + 1), mode(i))
        );
    }
    assert_eq!(router.route(&name(19_999)), Err(RouteError::Miss));
    assert_eq!(router.len(), 1_000);
}

/// `route` counts exactly one outcome per call on every path, for inline and long ids;
/// invalid text counts nothing.
#[test]
fn route_counts_each_outcome_once() {
    let clock = FakeClock::new();
    let router = Router::builder(InMemoryRegistry::new())
        .config(stamps::RouterConfig::default().max_entries(1_000))
        .clock(clock.clone())
        .build()
        .expect("config");
    let long = "l".repeat(40);
    router
        .preload([
            ("acme", StampId(1), Epoch(1), AssignmentMode::Serving),
            (long.as_str(), StampId(2), Epoch(1), AssignmentMode::Serving),
            (
                "dual",
                StampId(1),
                Epoch(1),
                AssignmentMode::DualWrite { shadow: StampId(2) },
            ),
        ])
        .expect("ids");
    let base = router.stats();
    // Hits: inline, long, with mode.
    assert!(router.route("acme").is_ok());
    assert!(router.route(&long).is_ok());
    assert!(router.route("dual").is_ok());
    // Misses: unknown inline, unknown long.
    assert_eq!(router.route("nobody"), Err(RouteError::Miss));
    assert_eq!(router.route(&"m".repeat(30)), Err(RouteError::Miss));
    // Invalid text: nothing counted.
    assert!(matches!(router.route("ACME"), Err(RouteError::InvalidTenant(_))));
    assert!(matches!(router.route("acme\0"), Err(RouteError::InvalidTenant(_))));
    assert!(matches!(router.route(""), Err(RouteError::InvalidTenant(_))));
    let s = router.stats();
    assert_eq!(
        (
            s.hits - base.hits,
            s.misses - base.misses,
            s.negative_hits - base.negative_hits
        ),
        (3, 2, 0),
        "{s:?}"
    );
    // Expired: misses (counted once each).
    clock.advance(Duration::from_secs(61));
    assert_eq!(router.route("acme"), Err(RouteError::Miss));
    assert_eq!(router.route(&long), Err(RouteError::Miss));
    assert_eq!(router.route("dual"), Err(RouteError::Miss));
    let s2 = router.stats();
    assert_eq!((s2.hits - s.hits, s2.misses - s.misses), (0, 3), "{s2:?}");
}

/// Route endpoints follow `set_endpoint` for dense (below 1,024) and sparse stamp ids.
#[test]
fn endpoints_follow_updates_dense_and_sparse() {
    let router = Router::builder(InMemoryRegistry::new())
        .config(stamps::RouterConfig::default().max_entries(1_000))
        .build()
        .expect("config");
    for id in [0u32, 3, 1023, 1024, 5000, u32::MAX] {
        let s = StampId(id);
        let t = format!("t{id}");
        router
            .preload([(
                t.as_str(),
                s,
                Epoch(1),
                AssignmentMode::DualWrite { shadow: StampId(7) },
            )])
            .expect("id");
        assert_eq!(router.route(&t).expect("hit").endpoint, None);
        router.set_endpoint(s, Some("http://a"));
        router.set_endpoint(StampId(7), Some("http://shadow"));
        let r = router.route(&t).expect("hit");
        assert_eq!(
            (r.endpoint, r.shadow_endpoint),
            (Some("http://a"), Some("http://shadow")),
            "{id}"
        );
        assert_eq!(router.stamp_endpoint(s), Some("http://a"));
        router.set_endpoint(s, Some("http://b"));
        assert_eq!(router.route(&t).expect("hit").endpoint, Some("http://b"));
        router.set_endpoint(s, None);
        assert_eq!(router.route(&t).expect("hit").endpoint, None, "{id}");
        assert_eq!(router.stamp_endpoint(s), None);
        router.set_endpoint(s, Some("http://a"));
        assert_eq!(router.route(&t).expect("hit").endpoint, Some("http://a"));
    }
}

/// While routes are served stale, `resolve` tries the registry again at most once per
/// `poll_interval`, so a recovered registry is noticed without the follower task, and a down
/// one is not flooded.
#[tokio::test]
async fn resolve_revalidates_stale_routes_once_per_poll_interval() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 2).await;
    inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let registry = test_registry(inner.clone());
    let mut config = stamps::router::RouterConfig::default();
    config.poll_interval = Duration::from_secs(5);
    let router = Router::builder(registry.clone())
        .config(config.stale_if_error(Duration::from_secs(300)))
        .clock(clock.clone())
        .build()
        .unwrap();
    router.resolve("acme").await.unwrap();

    registry.set_unavailable(true);
    clock.advance(Duration::from_secs(61));
    assert!(router.resolve("acme").await.unwrap().stale); // the failed read marks it down
    let calls = registry.calls(Call::Assignment);
    // Within one poll interval: at most one more registry read, however many callers.
    for _ in 0..20 {
        assert!(router.resolve("acme").await.unwrap().stale);
    }
    assert!(
        registry.calls(Call::Assignment) <= calls + 1,
        "{} > {}",
        registry.calls(Call::Assignment),
        calls + 1
    );
    let calls = registry.calls(Call::Assignment);

    // The registry comes back, and the tenant moved meanwhile: after the interval, the next
    // resolve reads it and serves the fresh route.
    registry.set_unavailable(false);
    let a = inner.assignment(&tid("acme")).await.unwrap().unwrap();
    let moved = inner
        .compare_and_set(&tid("acme"), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(5));
    let fresh = router.resolve("acme").await.unwrap();
    assert!(!fresh.stale);
    assert_eq!((fresh.stamp, fresh.epoch), (StampId(2), moved.epoch));
    assert_eq!(registry.calls(Call::Assignment), calls + 1);
    assert!(!router.route("acme").unwrap().stale);
}
