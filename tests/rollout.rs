//! Rollout planning (`stamps::rollout`): property tests over generated fleets and policies
//! (every stamp not on the target in exactly one wave; every wave within its size, region and
//! tenant-share limits; canaries from the shared tier), and a rollout where a stamp turns
//! unhealthy mid-wave and the judgement says roll back.
#![cfg(feature = "proptest")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use stamps::rollout::{judge_wave, plan_rollout, RolloutPolicy, WaveVerdict};
use stamps::testing::placement::fleet;
use stamps::*;

fn policy() -> impl Strategy<Value = RolloutPolicy> {
    (1usize..4, 1.0f64..4.0, 1usize..3, 0.05f64..=1.0).prop_map(|(c, g, r, s)| {
        RolloutPolicy::default()
            .canaries(c)
            .growth(g)
            .per_region(r)
            .max_tenant_share(s)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
    #[test]
    fn waves_cover_every_stamp_once_within_their_limits(f in fleet(24), p in policy()) {
        let plan = plan_rollout(&f, "42.1.0", &p).unwrap();
        let pending: BTreeSet<StampId> = f
            .stamps
            .iter()
            .filter(|l| l.stamp.state != StampState::Decommissioned)
            .filter(|l| !l.stamp.spec.version.as_deref().is_some_and(|v| version_at_least(v, "42.1.0")))
            .map(|l| l.id())
            .collect();
        let mut seen = BTreeSet::new();
        let total: u64 = f.stamps.iter().map(StampLoad::tenants).sum();
        let share_limit = ((total as f64 * p.max_tenant_share).floor() as u64).max(1);
        let mut cap = p.canaries;
        for w in &plan.waves {
            prop_assert!(!w.stamps.is_empty(), "empty wave {}", w.index);
            prop_assert!(w.stamps.len() <= cap, "wave {} has {} stamps, limit {cap}", w.index, w.stamps.len());
            let mut regions: BTreeMap<String, usize> = BTreeMap::new();
            let mut tenants = 0;
            for s in &w.stamps {
                prop_assert!(seen.insert(*s), "{s} in two waves");
                let l = f.get(*s).unwrap();
                *regions.entry(l.stamp.spec.region.to_string()).or_default() += 1;
                tenants += l.tenants();
            }
            prop_assert!(regions.values().all(|n| *n <= p.per_region), "wave {}: {regions:?}", w.index);
            prop_assert_eq!(tenants, w.tenants);
            prop_assert!(tenants <= share_limit || w.stamps.len() == 1, "wave {}: {tenants} > {share_limit}", w.index);
            cap = ((cap as f64 * p.growth).ceil() as usize).max(cap);
        }
        prop_assert_eq!(seen, pending);
        // Canaries come from the shared tier whenever a pending shared stamp exists.
        if let Some(first) = plan.waves.first() {
            let any_shared = f.stamps.iter().any(|l| {
                l.stamp.spec.tier == Tier::Shared && plan.waves.iter().any(|w| w.stamps.contains(&l.id()))
            });
            if any_shared {
                for s in &first.stamps {
                    prop_assert_eq!(&f.get(*s).unwrap().stamp.spec.tier, &Tier::Shared);
                }
            }
        }
    }
}

#[test]
fn bad_policies_are_refused() {
    let f = Fleet::default();
    for p in [
        RolloutPolicy::default().canaries(0),
        RolloutPolicy::default().growth(f64::NAN),
        RolloutPolicy::default().per_region(0),
        RolloutPolicy::default().max_tenant_share(0.0),
        RolloutPolicy::default().max_tenant_share(1.5),
    ] {
        assert!(plan_rollout(&f, "1", &p).is_err(), "{p:?}");
    }
    assert!(plan_rollout(&f, " ", &RolloutPolicy::default()).is_err());
    assert!(plan_rollout(&f, "1", &RolloutPolicy::default())
        .unwrap()
        .waves
        .is_empty());
}

#[test]
fn a_stamp_turning_unhealthy_mid_wave_stops_the_rollout() {
    let stamp = |id: u32, region: &str, tenants: u32, version: &str| {
        let cap = Capacity::new([(Resource::Tenants, 1000.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("{region}-{id}"), Region::new(region).unwrap(), cap)
            .unwrap()
            .version(version);
        let mut usage = Amounts::default();
        for _ in 0..tenants {
            model::admission::add(&mut usage, &Demand::default(), true);
        }
        StampLoad::new(
            Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO),
            usage,
        )
    };
    let f = Fleet::new(
        vec![
            stamp(1, "eu-west", 120, "41.9.2"),
            stamp(2, "us-east", 40, "41.9.2"),
            stamp(3, "eu-west", 80, "41.9.2"),
            stamp(4, "us-east", 200, "41.9.2"),
            stamp(5, "ap-south", 60, "42.1.0"),
        ],
        Version(1),
        Timestamp::ZERO,
    );
    let plan = plan_rollout(&f, "42.1.0", &RolloutPolicy::default().max_tenant_share(0.5)).unwrap();
    assert_eq!(plan.up_to_date, [StampId(5)]);
    assert_eq!(plan.waves[0].stamps, [StampId(2)], "{plan}");
    let bake = Duration::from_secs(900);
    let mut health: HashMap<StampId, HealthStatus> = HashMap::new();
    let mut deployed = Vec::new();
    let mut outcome = None;
    for wave in &plan.waves {
        deployed.extend(wave.stamps.iter().copied());
        // The second wave's first stamp turns unhealthy during its bake.
        if wave.index == 1 {
            health.insert(wave.stamps[0], HealthStatus::Unhealthy);
        }
        match judge_wave(wave, &health, bake, bake) {
            WaveVerdict::Proceed => continue,
            other => {
                outcome = Some((wave.index, other));
                break;
            }
        }
    }
    let (index, verdict) = outcome.expect("the rollout stopped");
    assert_eq!(index, 1);
    match verdict {
        WaveVerdict::RollBack { reasons } => assert!(reasons[0].contains("unhealthy"), "{reasons:?}"),
        other => panic!("{other:?}"),
    }
    assert!(
        deployed.len() < 4,
        "the rollout stopped before the last wave: {deployed:?}"
    );
}

/// A deploy hook that records every call, and fails the next `fail` deploys.
#[derive(Debug, Default)]
struct Recorder {
    calls: parking_lot::Mutex<Vec<(String, Vec<StampId>)>>,
    fail: std::sync::atomic::AtomicUsize,
}

#[stamps::async_trait]
impl stamps::rollout::DeployHook for Recorder {
    async fn deploy(&self, stamps: &[StampId], version: &str) -> Result<(), String> {
        if self
            .fail
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err("pipeline timed out".into());
        }
        self.calls.lock().push((format!("deploy {version}"), stamps.to_vec()));
        Ok(())
    }
    async fn roll_back(&self, stamps: &[StampId], version: &str) -> Result<(), String> {
        self.calls
            .lock()
            .push((format!("roll back {version}"), stamps.to_vec()));
        Ok(())
    }
}

/// A rollout driven through the registry's record survives controller crashes (a new
/// controller resumes from the record), a deploy whose save was lost is deployed again
/// (idempotent hook), two controllers never both act on one step, and an unhealthy stamp
/// rolls its wave back.
async fn controller_resumes_from_the_record(
    registry: std::sync::Arc<dyn Registry>,
    faulty: Option<&stamps::testing::FaultyRegistry<std::sync::Arc<dyn Registry>>>,
) {
    use stamps::rollout::RolloutController;
    let r: std::sync::Arc<dyn Registry> = match faulty {
        Some(f) => std::sync::Arc::new(f.clone()),
        None => registry.clone(),
    };
    for (id, region, tenants) in [
        (1, "eu-west", 30),
        (2, "us-east", 10),
        (3, "eu-west", 20),
        (4, "us-east", 40),
    ] {
        r.put_active_stamp(
            StampSpec::new(
                StampId(id),
                format!("s{id}"),
                Region::new(region).unwrap(),
                Capacity::new([(Resource::Tenants, 100.0)], 0.0).unwrap(),
            )
            .unwrap()
            .version("41"),
        )
        .await
        .unwrap();
        for t in 0..tenants {
            r.assign(
                &TenantSpec::new(TenantId::new(&format!("t{id}-{t}")).unwrap()),
                StampId(id),
            )
            .await
            .unwrap();
        }
    }
    let plan = plan_rollout(
        &r.fleet().await.unwrap(),
        "42",
        &RolloutPolicy::default().max_tenant_share(0.5),
    )
    .unwrap();
    let hook = std::sync::Arc::new(Recorder::default());
    let bake = Duration::from_secs(600);
    let at = |s: u64| Timestamp::from_millis(s * 1000);
    let first = RolloutController::new(r.clone(), hook.clone(), bake);
    let rec = first.start(&plan).await.unwrap();
    assert!(first.start(&plan).await.is_err(), "one rollout at a time");
    // A failing deploy leaves the record where it was.
    hook.fail.store(1, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        first.step(rec.id, &AllHealthy, at(0)).await,
        Err(Error::Unavailable { .. })
    ));
    assert_eq!(r.rollout(rec.id).await.unwrap().unwrap().state, RolloutState::Deploying);
    if let Some(f) = faulty {
        // The deploy runs, then the save is lost: the next step deploys the wave again.
        f.fail_only(|c| c == stamps::testing::Call::SaveRollout);
        f.fail_next(1);
        assert!(first.step(rec.id, &AllHealthy, at(0)).await.is_err());
        f.fail_all();
    }
    let rec = first.step(rec.id, &AllHealthy, at(0)).await.unwrap();
    assert_eq!(rec.state, RolloutState::Baking);
    drop(first); // the controller crashes
    let second = RolloutController::new(r.clone(), hook.clone(), bake);
    // Still baking: held, nothing saved twice.
    let held = second.step(rec.id, &AllHealthy, at(60)).await.unwrap();
    assert_eq!((held.state, held.wave), (RolloutState::Baking, 0));
    assert!(held.note.as_deref().unwrap().starts_with("holding"));
    // Two controllers stepping the same record at once: a step is applied once. Either one
    // saves and the other loses the revision, or (run one after the other) the second takes
    // the next step; wave 0 is judged once and wave 1 deployed at most once.
    let third = RolloutController::new(r.clone(), hook.clone(), bake);
    let (a, b) = tokio::join!(
        second.step(rec.id, &AllHealthy, at(700)),
        third.step(rec.id, &AllHealthy, at(700))
    );
    for x in [&a, &b] {
        assert!(x.is_ok() || matches!(x, Err(Error::Conflict(_))), "{x:?}");
    }
    assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
    let mut rec = r.rollout(rec.id).await.unwrap().unwrap();
    assert_eq!(rec.wave, 1, "{rec:?}");
    if rec.state == RolloutState::Deploying {
        rec = second.step(rec.id, &AllHealthy, at(800)).await.unwrap();
    }
    assert_eq!(rec.state, RolloutState::Baking);
    let wave1_deploys = hook
        .calls
        .lock()
        .iter()
        .filter(|(_, s)| *s == plan.waves[1].stamps)
        .count();
    assert_eq!(wave1_deploys, 1);
    // A stamp of wave 1 turns unhealthy: rolled back.
    let bad = rec.current_wave().unwrap()[0];
    let health = HashMap::from([(bad, HealthStatus::Unhealthy)]);
    let rec = second.step(rec.id, &health, at(1500)).await.unwrap();
    assert_eq!(rec.state, RolloutState::RolledBack);
    assert!(rec.note.as_deref().unwrap().contains("unhealthy"), "{:?}", rec.note);
    let calls = hook.calls.lock().clone();
    let deploys_of_wave0 = calls
        .iter()
        .filter(|(k, s)| k == "deploy 42" && *s == plan.waves[0].stamps)
        .count();
    assert_eq!(deploys_of_wave0, if faulty.is_some() { 2 } else { 1 }, "{calls:?}");
    assert_eq!(calls.last().map(|(k, _)| k.as_str()), Some("roll back 42"), "{calls:?}");
    // Terminal: further steps change nothing; a new rollout may start.
    assert_eq!(
        second.step(rec.id, &AllHealthy, at(2000)).await.unwrap().revision,
        rec.revision
    );
    assert!(second.start(&plan).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_controller_resumes_from_the_record() {
    let inner: std::sync::Arc<dyn Registry> = std::sync::Arc::new(InMemoryRegistry::new());
    controller_resumes_from_the_record(inner.clone(), None).await;
    let inner: std::sync::Arc<dyn Registry> = std::sync::Arc::new(InMemoryRegistry::new());
    let faulty = stamps::testing::FaultyRegistry::new(inner.clone());
    controller_resumes_from_the_record(inner, Some(&faulty)).await;
}

#[path = "support/pg.rs"]
mod pg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_controller_resumes_from_the_record() {
    use stamps::registry::postgres::{PgConfig, PgRegistry};
    let schema = pg::unique_schema("rollout");
    let _guard = pg::SchemaGuard(schema.clone());
    let config = PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(4);
    let registry = PgRegistry::connect(config).await.unwrap();
    registry.migrate().await.unwrap();
    let inner: std::sync::Arc<dyn Registry> = std::sync::Arc::new(registry);
    let faulty = stamps::testing::FaultyRegistry::new(inner.clone());
    controller_resumes_from_the_record(inner, Some(&faulty)).await;
}
