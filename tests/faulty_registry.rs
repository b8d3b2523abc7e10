//! `stamps::testing::FaultyRegistry`: transparent without faults (the conformance suite runs
//! through it), injected failures, per-method counters and filters, held calls, and a router
//! serving stale routes through an outage.
#![cfg(feature = "test-util")]

mod router_common;

use std::sync::Arc;
use std::time::Duration;

use router_common::{registry_with_stamps, tid};
use stamps::router::{RouteError, Router};
use stamps::testing::conformance::run_all;
use stamps::testing::faulty::{After, Request};
use stamps::testing::{Call, FaultyRegistry};
use stamps::*;

fn is_unavailable<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(Error::Unavailable { .. }))
}

#[tokio::test]
async fn without_faults_it_passes_the_conformance_suite() {
    run_all(|| async { Arc::new(FaultyRegistry::new(InMemoryRegistry::new())) as Arc<DynRegistry> }).await;
}

#[tokio::test]
async fn through_arc_dyn_it_passes_the_conformance_suite() {
    run_all(|| async {
        let inner: Arc<DynRegistry> = Arc::new(InMemoryRegistry::new());
        Arc::new(FaultyRegistry::new(inner)) as Arc<DynRegistry>
    })
    .await;
}

#[tokio::test]
async fn fail_next_fails_exactly_n_calls_without_effect() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 1).await);
    let version = registry.inner().fleet().await.unwrap().version;
    registry.fail_next(3);
    let acme = TenantSpec::new(tid("acme"));
    for _ in 0..3 {
        assert!(is_unavailable(registry.assign(&acme, StampId(1)).await));
    }
    // Failed writes never reached the inner registry.
    assert_eq!(registry.inner().assignment(&tid("acme")).await.unwrap(), None);
    assert_eq!(registry.inner().fleet().await.unwrap().version, version);
    // The fourth call goes through, and so do the ones after.
    registry.assign(&acme, StampId(1)).await.unwrap();
    assert!(registry.assignment(&tid("acme")).await.unwrap().is_some());
    assert_eq!(registry.calls(Call::Assign), 4);
    assert_eq!(registry.injected_failures(), 3);
}

#[tokio::test]
async fn fail_next_is_exact_under_concurrency() {
    let registry = FaultyRegistry::new(InMemoryRegistry::new());
    registry.fail_next(7);
    let results = stamps::testing::conformance::join_all((0..20).map(|_| registry.fleet()).collect()).await;
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 7);
    assert_eq!(registry.injected_failures(), 7);
}

#[tokio::test]
async fn set_unavailable_fails_everything_until_recovery() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 1).await);
    registry.set_unavailable(true);
    assert!(registry.is_unavailable());
    assert!(is_unavailable(registry.fleet().await));
    assert!(is_unavailable(registry.stamp(StampId(1)).await));
    assert!(is_unavailable(
        registry.assign(&TenantSpec::new(tid("acme")), StampId(1)).await
    ));
    assert!(is_unavailable(registry.changes_since(Version(0), 10).await));
    assert!(is_unavailable(registry.migrations(None).await));
    // The outage does not spend a fail_next budget.
    registry.fail_next(1);
    assert!(is_unavailable(registry.fleet().await));
    registry.set_unavailable(false);
    assert!(is_unavailable(registry.fleet().await)); // the budget
    let a = registry
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .unwrap();
    assert_eq!(registry.assignment(&tid("acme")).await.unwrap(), Some(a));
    assert_eq!(registry.injected_failures(), 7);
}

#[tokio::test]
async fn counters_count_per_method_and_clones_share_them() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 2).await);
    let other = registry.clone();
    let a = registry
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .unwrap();
    other.assignment(&tid("acme")).await.unwrap();
    other.assignment(&tid("nobody")).await.unwrap();
    let b = registry
        .compare_and_set(&tid("acme"), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    registry.unassign(&tid("acme"), b.epoch).await.unwrap();
    registry.history(&tid("acme")).await.unwrap();
    registry.changes_since(Version(0), 100).await.unwrap();
    let _ = registry.change_signal(); // not counted
    other.set_unavailable(true);
    assert!(registry.fleet().await.is_err()); // failed calls count too

    let expected = [
        (Call::Assign, 1),
        (Call::Assignment, 2),
        (Call::CompareAndSet, 1),
        (Call::Unassign, 1),
        (Call::History, 1),
        (Call::ChangesSince, 1),
        (Call::Fleet, 1),
    ];
    for call in Call::ALL {
        let want = expected.iter().find(|(c, _)| *c == call).map_or(0, |(_, n)| *n);
        assert_eq!(registry.calls(call), want, "{call}");
        assert_eq!(other.calls(call), want, "{call}");
    }
    assert_eq!(registry.total_calls(), 8);
    other.reset_counts();
    assert_eq!(registry.total_calls(), 0);
    assert_eq!(registry.injected_failures(), 0);
    assert!(registry.is_unavailable()); // faults are kept
}

#[tokio::test]
async fn fail_only_restricts_faults_to_selected_methods() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 1).await);
    registry.fail_only(|call| call == Call::ChangesSince);
    registry.fail_next(1);
    // Unselected calls neither fail nor spend the budget.
    registry.fleet().await.unwrap();
    registry
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .unwrap();
    assert!(is_unavailable(registry.changes_since(Version(0), 10).await));
    registry.changes_since(Version(0), 10).await.unwrap();

    registry.fail_only(Call::is_read);
    registry.set_unavailable(true);
    assert!(is_unavailable(registry.assignment(&tid("acme")).await));
    registry
        .assign(&TenantSpec::new(tid("beta")), StampId(1))
        .await
        .unwrap();
    registry.fail_all();
    assert!(is_unavailable(
        registry.assign(&TenantSpec::new(tid("gamma")), StampId(1)).await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_calls_wait_for_permits() {
    let registry = FaultyRegistry::new(InMemoryRegistry::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    registry.fail_only(|call| call == Call::Fleet);
    registry.hold(gate.clone());
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.fleet().await })
        })
        .collect();
    while registry.calls(Call::Fleet) < 3 {
        tokio::task::yield_now().await;
    }
    // Unselected calls are not held.
    registry.migrations(None).await.unwrap();
    assert!(tasks.iter().all(|t| !t.is_finished()));
    gate.add_permits(1); // one permit, returned after each call, lets all three through in turn
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // A closed gate fails the waiting calls.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    registry.hold(gate.clone());
    let task = tokio::spawn({
        let registry = registry.clone();
        async move { registry.fleet().await }
    });
    while registry.calls(Call::Fleet) < 4 {
        tokio::task::yield_now().await;
    }
    gate.close();
    assert!(is_unavailable(task.await.unwrap()));
    registry.release_hold();
    registry.fleet().await.unwrap();
}

#[tokio::test]
async fn router_serves_stale_through_an_outage_and_recovers() {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 2).await;
    inner.assign(&TenantSpec::new(tid("acme")), StampId(1)).await.unwrap();
    let registry = FaultyRegistry::new(inner);
    let router = Router::builder(registry.clone())
        .config(stamps::RouterConfig::default().stale_if_error(Duration::from_secs(300)))
        .clock(clock.clone())
        .build()
        .unwrap();
    router.resolve("acme").await.unwrap();
    assert_eq!(registry.calls(Call::Assignment), 1);

    registry.set_unavailable(true);
    clock.advance(Duration::from_secs(61));
    let stale = router.resolve("acme").await.unwrap();
    assert!(stale.stale);
    assert_eq!(stale.stamp, StampId(1));
    assert!(router.route("acme").unwrap().stale);
    assert_eq!(router.resolve("other").await, Err(RouteError::Unavailable));
    assert!(router.sync().await.is_err()); // the change feed is down too
    assert!(registry.injected_failures() >= 3);

    // While down, the tenant moves (written straight to the inner registry).
    let a = registry.inner().assignment(&tid("acme")).await.unwrap().unwrap();
    registry
        .inner()
        .compare_and_set(&tid("acme"), a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    assert_eq!(router.resolve("acme").await.unwrap().stamp, StampId(1)); // still stale

    // Recovery: the feed and lookups work again and the route is fresh.
    registry.set_unavailable(false);
    router.sync().await.unwrap();
    let fresh = router.resolve("acme").await.unwrap();
    assert!(!fresh.stale);
    assert_eq!(fresh.stamp, StampId(2));
    let s = router.stats();
    assert!(s.stale_serves >= 2 && s.registry_errors >= 3, "{s:?}");
}

#[tokio::test]
async fn change_signal_is_the_inner_registrys() {
    let registry = FaultyRegistry::new(InMemoryRegistry::new());
    let signal = registry.change_signal();
    let seen = signal.head();
    registry.set_unavailable(true);
    let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
    registry
        .inner()
        .put_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu").unwrap(), cap).unwrap())
        .await
        .unwrap();
    // The signal fires for writes to the inner registry while the wrapper is "down".
    assert_ne!(signal.head(), seen);
    assert_eq!(registry.total_calls(), 0);
}

#[tokio::test]
async fn a_before_hook_fails_a_call_with_the_chosen_error_and_without_effect() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 1).await);
    let version = registry.inner().fleet().await.unwrap().version;
    registry.before(Call::Assign, |request| {
        let refused = matches!(request, Request::Assign(spec, _) if spec.id.as_str() == "acme");
        Box::pin(async move {
            if refused {
                Err(Error::epoch_conflict(Epoch(1), Epoch(2)))
            } else {
                Ok(())
            }
        })
    });
    let err = registry
        .assign(&TenantSpec::new(tid("acme")), StampId(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict(Conflict::Epoch {
                expected: Epoch(1),
                actual: Epoch(2)
            })
        ),
        "{err}"
    );
    assert_eq!(registry.inner().fleet().await.unwrap().version, version);
    // Other arguments pass; the hook's errors are not counted as injected failures.
    registry
        .assign(&TenantSpec::new(tid("globex")), StampId(1))
        .await
        .unwrap();
    assert_eq!(registry.calls(Call::Assign), 2);
    assert_eq!(registry.injected_failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_before_hook_delays_a_call_and_ignores_the_filter() {
    let registry = FaultyRegistry::new(InMemoryRegistry::new());
    registry.fail_only(|call| call == Call::Assign);
    registry.before(Call::Fleet, |_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
    });
    let start = tokio::time::Instant::now();
    registry.fleet().await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(5));
    // Other methods have no hook.
    let start = tokio::time::Instant::now();
    registry.stamp(StampId(1)).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_before_hook_can_change_the_inner_registry_first() {
    // A rival takes the last slot just before our assign reaches the registry.
    let clock = FakeClock::new();
    let inner = InMemoryRegistry::builder().clock(clock.clone()).build();
    let cap = Capacity::new([(Resource::Tenants, 1.0)], 0.0).unwrap();
    inner
        .put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu").unwrap(), cap).unwrap())
        .await
        .unwrap();
    let registry = FaultyRegistry::new(inner.clone());
    registry.before(Call::Assign, move |request| {
        let Request::Assign(_, stamp) = *request else {
            return Box::pin(async { Ok(()) });
        };
        let inner = inner.clone();
        Box::pin(async move {
            inner.assign(&TenantSpec::new(tid("rival")), stamp).await?;
            Ok(())
        })
    });
    let err = registry
        .assign(&TenantSpec::new(tid("mine")), StampId(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CapacityExceeded { .. }), "{err}");
    assert!(registry.inner().assignment(&tid("rival")).await.unwrap().is_some());
    assert!(registry.inner().assignment(&tid("mine")).await.unwrap().is_none());
}

#[tokio::test]
async fn an_after_hook_sees_the_outcome_and_can_lose_the_acknowledgement() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 1).await);
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = seen.clone();
    registry.after(Call::Assign, move |request, outcome| {
        let tenant = match request {
            Request::Assign(spec, _) => spec.id.to_string(),
            _ => String::new(),
        };
        log.lock().push((tenant, outcome.is_ok()));
        let committed = outcome.is_ok();
        Box::pin(async move {
            if committed {
                After::lose_ack()
            } else {
                After::Keep
            }
        })
    });
    let acme = TenantSpec::new(tid("acme"));
    // Committed, but the caller hears `Unavailable`.
    let err = registry.assign(&acme, StampId(1)).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let stored = registry.inner().assignment(&tid("acme")).await.unwrap().unwrap();
    assert_eq!(stored.stamp, StampId(1));
    // The retry gets the inner registry's own refusal, unchanged.
    let err = registry.assign(&acme, StampId(1)).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyAssigned { .. }), "{err}");
    assert_eq!(
        *seen.lock(),
        vec![("acme".to_string(), true), ("acme".to_string(), false)]
    );
    // Calls failed before the inner registry do not run the after hook.
    registry.fail_next(1);
    assert!(is_unavailable(registry.assign(&acme, StampId(1)).await));
    assert_eq!(seen.lock().len(), 2);
    // Cleared hooks: the wrapper is transparent again.
    registry.clear_hooks();
    registry
        .assign(&TenantSpec::new(tid("globex")), StampId(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_after_hook_can_hold_the_answer_and_replace_it() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 1).await);
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let h = hold.clone();
    registry.after(Call::Assignment, move |_, _| {
        let h = h.clone();
        Box::pin(async move {
            let _ = h.acquire().await;
            After::Replace(Error::unavailable("answer dropped"))
        })
    });
    let read = tokio::spawn({
        let registry = registry.clone();
        async move { registry.assignment(&tid("acme")).await }
    });
    // The answer waits in the hook until the test releases it.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!read.is_finished());
    hold.add_permits(1);
    let answer = read.await.unwrap();
    assert!(
        matches!(answer, Err(Error::Unavailable { ref reason, .. }) if reason.contains("answer dropped")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn lose_ack_next_commits_then_fails_exactly_n_selected_calls() {
    let clock = FakeClock::new();
    let registry = FaultyRegistry::new(registry_with_stamps(&clock, 1).await);
    registry.fail_only(|call| call == Call::Assign);
    registry.lose_ack_next(2);
    // Reads are not selected: they pass and keep the budget.
    assert!(registry.fleet().await.is_ok());
    for name in ["a", "b"] {
        assert!(is_unavailable(
            registry.assign(&TenantSpec::new(tid(name)), StampId(1)).await
        ));
        assert!(registry.inner().assignment(&tid(name)).await.unwrap().is_some());
    }
    registry.assign(&TenantSpec::new(tid("c")), StampId(1)).await.unwrap();
    assert_eq!(registry.injected_failures(), 2);
    assert_eq!(registry.inner().fleet().await.unwrap().tenants(), 3);
    // lose_ack_next(0) cancels a budget.
    registry.lose_ack_next(5);
    registry.lose_ack_next(0);
    registry.assign(&TenantSpec::new(tid("d")), StampId(1)).await.unwrap();
}
