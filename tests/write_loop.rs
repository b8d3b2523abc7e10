//! The host's write loop (`stamps::migration::write_with_route`) and the one rule every write
//! path applies to a freeze (`AssignmentMode::at`): a fenced write refreshes its route and
//! lands on the tenant's new stamp; retries are bounded; a freeze refuses writes until its
//! `until` and from then on writes flow as in dual-write, in the router, the fence tokens and
//! the reference data plane alike.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stamps::migration::reference::{ReferenceDataPlane, WriteError};
use stamps::migration::{
    write_with_route, FenceRejection, FenceToken, MigrationContext, MigrationDriver, RoutedWriteError, StampRefusal,
};
use stamps::router::{Route, RouteError, Router};
use stamps::*;

struct Fixture {
    clock: FakeClock,
    registry: Arc<InMemoryRegistry>,
    router: Router<Arc<InMemoryRegistry>>,
    plane: ReferenceDataPlane,
    tenant: TenantId,
}

async fn fixture() -> Fixture {
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    let registry = Arc::new(InMemoryRegistry::builder().clock(clock.clone()).build());
    for id in [1, 2] {
        let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
        registry.put_active_stamp(spec).await.unwrap();
    }
    let tenant = TenantId::new("acme").unwrap();
    registry
        .assign(&TenantSpec::new(tenant.clone()), StampId(1))
        .await
        .unwrap();
    let router = Router::builder(registry.clone()).clock(clock.clone()).build().unwrap();
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone());
    Fixture {
        clock,
        registry,
        router,
        plane,
        tenant,
    }
}

/// Applies `key = value` on every token's stamp (serving first, the shadow with its version).
async fn apply_all(
    plane: &ReferenceDataPlane,
    tokens: impl Iterator<Item = FenceToken>,
    key: &str,
) -> Result<Vec<StampId>, StampRefusal<WriteError>> {
    let (mut seq, mut stamps) = (None, Vec::new());
    for token in tokens {
        match plane.apply(&token, key, "v", seq) {
            Ok(v) => seq = Some(v.seq),
            Err(WriteError::Fenced { rejection, .. }) => return Err(StampRefusal::Fenced(Some(rejection))),
            Err(other) => return Err(StampRefusal::Failed(other)),
        }
        stamps.push(token.stamp);
    }
    Ok(stamps)
}

#[tokio::test]
async fn a_fenced_write_refreshes_the_route_and_lands_on_the_new_stamp() {
    let f = fixture().await;
    let cached = f.router.resolve("acme").await.unwrap();
    assert_eq!(cached.stamp, StampId(1));
    // The tenant moves to stamp 2; stamp 1 gives it up at the new epoch. The router's cache
    // still says stamp 1.
    let a = f.registry.require_assignment(&f.tenant).await.unwrap();
    let moved = f
        .registry
        .compare_and_set(&f.tenant, a.epoch, AssignmentChange::move_to(StampId(2)))
        .await
        .unwrap();
    let ctx = MigrationContext::new(
        MigrationId(1),
        f.tenant.clone(),
        StampId(1),
        StampId(2),
        MigrationState::CutOver,
        1,
    );
    f.plane.fence(&ctx, StampId(1), moved.epoch, false).await.unwrap();
    assert_eq!(f.router.route("acme").unwrap().stamp, StampId(1), "the cache is stale");

    let calls = AtomicU32::new(0);
    let landed = write_with_route(&f.router, &f.tenant, 3, |route, tokens| {
        calls.fetch_add(1, Ordering::Relaxed);
        let plane = f.plane.clone();
        async move { apply_all(&plane, tokens, "k").await.map(|stamps| (route, stamps)) }
    })
    .await
    .unwrap();
    assert_eq!(calls.load(Ordering::Relaxed), 2, "one fenced attempt, one refresh");
    assert_eq!(landed.0.epoch, moved.epoch);
    assert_eq!(landed.1, [StampId(2)]);
    assert_eq!(f.plane.get(StampId(2), &f.tenant, "k").as_deref(), Some("v"));
    assert_eq!(
        f.plane.get(StampId(1), &f.tenant, "k"),
        None,
        "nothing landed on the old stamp"
    );
    assert_eq!(
        f.router.route("acme").unwrap().stamp,
        StampId(2),
        "the router's cache was refreshed"
    );
}

#[tokio::test]
async fn retries_are_bounded_and_only_a_fenced_write_is_retried() {
    let f = fixture().await;
    let calls = AtomicU32::new(0);
    let rejection = FenceRejection::Stale {
        token: Epoch(1),
        current: Epoch(9),
    };
    let out = write_with_route(&f.router, &f.tenant, 3, |_, _| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move { Err::<(), _>(StampRefusal::<String>::Fenced(Some(rejection))) }
    })
    .await;
    assert!(
        matches!(out, Err(RoutedWriteError::KeptFenced { attempts: 3, last: Some(r) }) if r == rejection),
        "{out:?}"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 3);

    // The host's own failure is returned at once, not retried.
    calls.store(0, Ordering::Relaxed);
    let out = write_with_route(&f.router, &f.tenant, 3, |_, _| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move { Err::<(), _>(StampRefusal::Failed("disk full".to_string())) }
    })
    .await;
    assert!(
        matches!(&out, Err(RoutedWriteError::Write(e)) if e == "disk full"),
        "{out:?}"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);

    // A tenant nobody serves never reaches the write function.
    let ghost = TenantId::new("ghost").unwrap();
    let out = write_with_route(&f.router, &ghost, 3, |_, _| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<(), StampRefusal<String>>(()) }
    })
    .await;
    assert!(
        matches!(out, Err(RoutedWriteError::Route(RouteError::UnknownTenant))),
        "{out:?}"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_freeze_refuses_writes_until_it_expires_then_they_reach_both_stamps() {
    let f = fixture().await;
    let a = f.registry.require_assignment(&f.tenant).await.unwrap();
    let until = f.clock.now() + Duration::from_secs(5);
    let frozen = f
        .registry
        .compare_and_set(
            &f.tenant,
            a.epoch,
            AssignmentChange::set_mode(AssignmentMode::Frozen {
                shadow: Some(StampId(2)),
                until,
            }),
        )
        .await
        .unwrap();
    let calls = AtomicU32::new(0);
    let out = frozen_write(&f, &calls, "early").await;
    assert!(
        matches!(out, Err(RoutedWriteError::Frozen { retry_after }) if retry_after == Duration::from_secs(5)),
        "{out:?}"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0, "nothing is written while frozen");
    // The data plane refuses the same route for the same reason.
    assert!(matches!(
        f.plane.write(&frozen, "early", "v"),
        Err(WriteError::Frozen { .. })
    ));

    // The worker that froze is gone: at `until` the freeze is over for every write path.
    f.clock.advance(Duration::from_secs(5));
    f.router.tick();
    assert_eq!(
        frozen_write(&f, &calls, "late").await.unwrap(),
        [StampId(1), StampId(2)]
    );
    for stamp in [StampId(1), StampId(2)] {
        assert_eq!(f.plane.get(stamp, &f.tenant, "late").as_deref(), Some("v"), "{stamp}");
    }
    let ack = f.plane.write(&frozen, "late2", "v").unwrap();
    assert_eq!(f.plane.get(StampId(2), &f.tenant, "late2").as_deref(), Some("v"));
    let _ = ack;
}

async fn frozen_write(
    f: &Fixture,
    calls: &AtomicU32,
    key: &'static str,
) -> Result<Vec<StampId>, RoutedWriteError<WriteError>> {
    write_with_route(&f.router, &f.tenant, 3, |_, tokens| {
        calls.fetch_add(1, Ordering::Relaxed);
        let plane = f.plane.clone();
        async move { apply_all(&plane, tokens, key).await }
    })
    .await
}

fn mode_strategy() -> impl Strategy<Value = AssignmentMode> {
    prop_oneof![
        Just(AssignmentMode::Serving),
        (2u32..4).prop_map(|s| AssignmentMode::DualWrite { shadow: StampId(s) }),
        (proptest::option::of(2u32..4), 0u64..10_000).prop_map(|(s, until)| AssignmentMode::Frozen {
            shadow: s.map(StampId),
            until: Timestamp::from_millis(until),
        }),
    ]
}

proptest! {
    /// The router's admission, its `Retry-After`, the fence tokens and the reference data
    /// plane agree on every mode at every instant: writes wait exactly while the mode is
    /// frozen at `now`, and otherwise go to the stamp and the shadow of `mode.at(now)`.
    #[test]
    fn every_write_path_applies_the_same_freeze_rule(mode in mode_strategy(), now in 0u64..12_000) {
        let now = Timestamp::from_millis(now);
        let tenant = TenantId::new("acme").unwrap();
        let route = Route::new(StampId(1), Epoch(7)).with_mode(mode);
        let tokens: Vec<StampId> = FenceToken::for_route(&tenant, &route, now).map(|t| t.stamp).collect();
        let waits = mode.is_frozen_at(now);
        prop_assert_eq!(!route.writes_allowed_at(now), waits);
        prop_assert_eq!(route.retry_after(now).is_some(), waits);
        if waits {
            prop_assert!(tokens.is_empty());
        } else {
            let mut expected = vec![StampId(1)];
            expected.extend(mode.at(now).shadow());
            prop_assert_eq!(&tokens, &expected);
            prop_assert!(!mode.at(now).is_frozen());
        }
        let assignment = Assignment::new(TenantSpec::new(tenant.clone()), StampId(1), Epoch(7), mode, Timestamp::ZERO, Timestamp::ZERO);
        let by_assignment: Vec<StampId> = FenceToken::for_write(&assignment, now).map(|t| t.stamp).collect();
        prop_assert_eq!(&by_assignment, &tokens);
        let plane = ReferenceDataPlane::new([StampId(1), StampId(2), StampId(3)]).clock(FakeClock::starting_at(now));
        match plane.write(&assignment, "k", "v") {
            Err(WriteError::Frozen { .. }) => prop_assert!(waits),
            Ok(_) => {
                prop_assert!(!waits);
                for s in &tokens {
                    let got = plane.get(*s, &tenant, "k");
                    prop_assert_eq!(got.as_deref(), Some("v"));
                }
            }
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}
