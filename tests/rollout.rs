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
