//! Route freshness (a router never serves an epoch older than a change it has applied, and
//! never serves a route past its TTL unless the registry is failing) as a property test with
//! a fake clock: random interleavings
//! of assignments, moves, unassignments, change-feed syncs, registry outages, clock advances,
//! lookups and resolves. Checked after every step:
//! - no route carries an epoch older than the newest change the router has applied for the
//!   tenant;
//! - every route names the stamp the registry gave the tenant at that epoch;
//! - no fresh (non-stale) route is served past its TTL;
//! - stale routes appear only while the registry is failing the router's calls.
#![cfg(feature = "test-util")]

mod router_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use router_common::{fails_in_outage, registry_with_stamps, test_registry, tid, TestRegistry};
use stamps::router::{Route, RouteError, Router};
use stamps::testing::Call;
use stamps::*;

const TENANTS: usize = 4;
const TTL_MS: u64 = 10_000;

#[derive(Debug, Clone)]
enum Op {
    Assign(usize, u32),
    Move(usize, u32),
    Unassign(usize),
    Sync,
    Advance(u64),
    Resolve(usize),
    Route(usize),
    Failing(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS;
    prop_oneof![
        2 => (t.clone(), 1u32..=3).prop_map(|(t, s)| Op::Assign(t, s)),
        3 => (t.clone(), 1u32..=3).prop_map(|(t, s)| Op::Move(t, s)),
        1 => t.clone().prop_map(Op::Unassign),
        3 => Just(Op::Sync),
        3 => (0u64..8_000).prop_map(Op::Advance),
        4 => t.clone().prop_map(Op::Resolve),
        5 => t.prop_map(Op::Route),
        1 => any::<bool>().prop_map(Op::Failing),
    ]
}

struct Model {
    /// (tenant, epoch) → stamp, from every registry write.
    stamp_at: HashMap<(usize, u64), u32>,
    /// Latest time at which the router can have (re)loaded the tenant's entry.
    refreshed: [u64; TENANTS],
}

fn name(t: usize) -> String {
    format!("tenant-{t}")
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = FakeClock::new();
    let inner = registry_with_stamps(&clock, 3).await;
    let registry = test_registry(inner.clone());
    // Whether the outage was on at the last call it could fail.
    let outage = Arc::new(AtomicBool::new(false));
    let last_call_failed = Arc::new(AtomicBool::new(false));
    for call in Call::ALL.into_iter().filter(|c| fails_in_outage(*c)) {
        let (outage, last) = (outage.clone(), last_call_failed.clone());
        registry.before(call, move |_| {
            last.store(outage.load(Ordering::SeqCst), Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        });
    }
    let router = Router::builder(registry.clone())
        .config(
            stamps::RouterConfig::default()
                .ttl(Duration::from_millis(TTL_MS))
                .negative_ttl(Duration::from_secs(2))
                .stale_if_error(Duration::from_secs(30)),
        )
        .clock(clock.clone())
        .build()
        .unwrap();
    router.sync().await.unwrap();
    let pinned = router.cursor();
    let mut model = Model {
        stamp_at: HashMap::new(),
        refreshed: [0; TENANTS],
    };
    let now = |c: &FakeClock| c.now().as_millis();

    for op in ops {
        match op {
            Op::Assign(t, s) => {
                if let Ok(a) = inner.assign(&TenantSpec::new(tid(&name(t))), StampId(s)).await {
                    model.stamp_at.insert((t, a.epoch.0), s);
                }
            }
            Op::Move(t, s) => {
                if let Ok(Some(a)) = inner.assignment(&tid(&name(t))).await {
                    let change = AssignmentChange::move_to(StampId(s));
                    if let Ok(b) = inner.compare_and_set(a.tenant(), a.epoch, change).await {
                        model.stamp_at.insert((t, b.epoch.0), s);
                    }
                }
            }
            Op::Unassign(t) => {
                if let Ok(Some(a)) = inner.assignment(&tid(&name(t))).await {
                    let _ = inner.unassign(a.tenant(), a.epoch).await;
                }
            }
            Op::Sync => {
                let before = router.cursor();
                if router.sync().await.is_ok() {
                    let applied = inner.changes_since(before, 100_000).await.unwrap();
                    for c in applied.changes.iter().filter(|c| c.version <= router.cursor()) {
                        if let Some(tenant) = c.tenant() {
                            if let Some(t) = (0..TENANTS).find(|t| tenant.as_str() == name(*t)) {
                                model.refreshed[t] = now(&clock);
                            }
                        }
                    }
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Resolve(t) => {
                model.refreshed[t] = now(&clock);
                let r = router.resolve(&name(t)).await;
                check(&router, &inner, &last_call_failed, &model, pinned, t, r, now(&clock)).await?;
            }
            Op::Route(t) => {
                let r = router.route(&name(t));
                check(&router, &inner, &last_call_failed, &model, pinned, t, r, now(&clock)).await?;
            }
            Op::Failing(on) => {
                outage.store(on, Ordering::SeqCst);
                registry.set_unavailable(on);
            }
        }
    }
    Ok(())
}

/// The newest epoch (or unassignment version) among the changes the router has applied.
async fn newest_applied(inner: &InMemoryRegistry, pinned: Version, cursor: Version, t: usize) -> u64 {
    let feed = inner.changes_since(pinned, 100_000).await.unwrap();
    feed.changes
        .iter()
        .filter(|c| c.version <= cursor && c.tenant().is_some_and(|x| x.as_str() == name(t)))
        .map(|c| match &c.kind {
            ChangeKind::Assignment {
                assignment: Some(a), ..
            } => a.epoch.0,
            _ => c.version.0,
        })
        .max()
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
async fn check(
    router: &Router<TestRegistry>,
    inner: &InMemoryRegistry,
    last_call_failed: &AtomicBool,
    model: &Model,
    pinned: Version,
    t: usize,
    r: Result<Route, RouteError>,
    now: u64,
) -> Result<(), TestCaseError> {
    let Ok(route) = r else { return Ok(()) };
    let floor = newest_applied(inner, pinned, router.cursor(), t).await;
    prop_assert!(
        route.epoch.0 >= floor,
        "tenant {t}: route epoch {} is older than applied {floor}",
        route.epoch
    );
    prop_assert_eq!(
        model.stamp_at.get(&(t, route.epoch.0)).copied(),
        Some(route.stamp.0),
        "tenant {}: route {:?} names a stamp the registry never gave at that epoch",
        t,
        route
    );
    if route.stale {
        prop_assert!(
            last_call_failed.load(Ordering::SeqCst),
            "stale route while the registry answers"
        );
    } else {
        prop_assert!(
            now < model.refreshed[t] + TTL_MS,
            "tenant {t}: fresh route served {} ms after its last possible refresh (ttl {TTL_MS})",
            now - model.refreshed[t]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn routes_are_never_older_than_applied_changes_nor_past_their_ttl(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
