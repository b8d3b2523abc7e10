//! Property-testing kit for placement policies: proptest strategies for fleets, stamps and
//! tenants, and an invariant checker for any [`Placement`].
//!
//! The strategies produce what breaks policies: residencies and tiers that rarely match,
//! dedicated stamps already in use, pins to stamps that are missing or full, stamps near or at
//! their headroom, inactive and unhealthy stamps, affinity labels, and empty fleets.
//!
//! # Example: property-test your own policy
//! ```
//! use stamps::placement::{policies, InRegion, PlacementExt};
//! use stamps::testing::{check_placement_invariants, PlacementInvariants};
//!
//! // A policy of your own: in-region if possible, then the emptiest stamp.
//! let mine = policies::least_loaded().prefer(InRegion).or_else(policies::most_available());
//! check_placement_invariants(&mine).unwrap();
//!
//! // A policy with a hard constraint of its own: say so, and the checker holds it to it.
//! let geo = policies::geographic();
//! PlacementInvariants::new().cases(200).constraint(InRegion).check(&geo).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fmt;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

use crate::model::{
    Amount, Amounts, Capacity, Demand, Fleet, HealthStatus, Labels, Name, Region, Residency, Resource, Stamp, StampId,
    StampLoad, StampSpec, StampState, TenantId, TenantSpec, Tier, Version,
};
use crate::placement::{FleetView, Placement, StampFilter, AFFINITY_PREFIX, ANTI_AFFINITY_PREFIX};
use crate::time::Timestamp;

const REGIONS: [&str; 4] = ["eu-west", "eu-central", "us-east", "us-west"];
const AZS: [&str; 3] = ["a", "b", "c"];

fn region(i: usize) -> Option<Region> {
    Region::new(REGIONS.get(i % REGIONS.len()).copied().unwrap_or("eu-west")).ok()
}

fn area_residency(r: &Region) -> Option<Residency> {
    Residency::new(r.as_str().split('-').next().unwrap_or("eu")).ok()
}

fn tier(roll: u8) -> Tier {
    match roll {
        0..=6 => Tier::Shared,
        7 | 8 => Tier::Dedicated,
        _ => Name::new("gold").map(Tier::Custom).unwrap_or_default(),
    }
}

fn fill() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..0.6f64, 0.6..0.8f64, 0.8..=1.0f64]
}

/// Raw parameters of one stamp, turned into a [`StampLoad`] once its id is known.
#[derive(Debug, Clone)]
struct StampParams {
    region: usize,
    residency_roll: u8,
    tier_roll: u8,
    az: usize,
    state_roll: u8,
    connections: u32,
    tenant_limit: Option<u32>,
    headroom_roll: u8,
    conn_fill: f64,
    tenants: u32,
    health_roll: u8,
}

fn stamp_params() -> impl Strategy<Value = StampParams> {
    (
        (0..REGIONS.len(), 0..5u8, 0..10u8, 0..AZS.len(), 0..9u8),
        (
            50..5000u32,
            proptest::option::weighted(0.5, 1..100u32),
            0..4u8,
            fill(),
            0..120u32,
            0..10u8,
        ),
    )
        .prop_map(
            |(
                (region, residency_roll, tier_roll, az, state_roll),
                (connections, tenant_limit, headroom_roll, conn_fill, tenants, health_roll),
            )| StampParams {
                region,
                residency_roll,
                tier_roll,
                az,
                state_roll,
                connections,
                tenant_limit,
                headroom_roll,
                conn_fill,
                tenants,
                health_roll,
            },
        )
}

fn build_stamp(id: StampId, p: &StampParams) -> Option<(StampLoad, HealthStatus)> {
    let region = region(p.region)?;
    let headroom = [0.0, 0.1, 0.25, 0.3]
        .get(usize::from(p.headroom_roll))
        .copied()
        .unwrap_or(0.25);
    let mut limits = vec![(Resource::Connections, f64::from(p.connections))];
    if let Some(t) = p.tenant_limit {
        limits.push((Resource::Tenants, f64::from(t)));
    }
    let capacity = Capacity::new(limits, headroom).ok()?;
    let tier = tier(p.tier_roll);
    let mut spec = StampSpec::new(id, format!("s{}", id.0), region.clone(), capacity)
        .ok()?
        .tier(tier.clone())
        .label("az", AZS.get(p.az).copied().unwrap_or("a"));
    if p.residency_roll > 0 {
        spec = spec.residency(area_residency(&region)?);
    }
    let state = match p.state_roll {
        0..=5 => StampState::Active,
        6 => StampState::Provisioning,
        7 => StampState::Draining,
        _ => StampState::Decommissioned,
    };
    let mut tenants = p.tenants;
    if let Some(t) = p.tenant_limit {
        tenants = tenants.min(t);
    }
    if tier == Tier::Dedicated {
        tenants %= 2;
    }
    if state == StampState::Provisioning || state == StampState::Decommissioned {
        tenants = 0;
    }
    let conn = if tenants == 0 {
        0
    } else {
        (p.conn_fill * f64::from(p.connections)).floor() as u32
    };
    let mut usage = Amounts::default();
    if tenants > 0 {
        usage.set(Resource::Tenants, Amount::units(tenants));
        usage.set(Resource::Connections, Amount::units(conn));
    }
    let health = match p.health_roll {
        0..=6 => HealthStatus::Healthy,
        7 | 8 => HealthStatus::Degraded,
        _ => HealthStatus::Unhealthy,
    };
    Some((
        StampLoad::new(Stamp::new(spec, state, Timestamp::ZERO, Timestamp::ZERO), usage),
        health,
    ))
}

/// Fleets of up to `max_stamps` stamps (ids 1, 2, ...) with the health of each stamp: mixed
/// regions (`eu-west`, `eu-central`, `us-east`, `us-west`), residencies (`eu`, `us`, or none),
/// tiers (shared, dedicated, `gold`), states, fills from empty to full, and about one stamp in
/// ten unhealthy.
///
/// ```
/// use proptest::prelude::*;
/// use stamps::testing::placement::fleet_with_health;
/// proptest!(|((fleet, health) in fleet_with_health(8))| {
///     prop_assert!(fleet.stamps.len() <= 8);
///     prop_assert!(health.len() == fleet.stamps.len());
/// });
/// ```
pub fn fleet_with_health(max_stamps: usize) -> impl Strategy<Value = (Fleet, BTreeMap<StampId, HealthStatus>)> {
    prop::collection::vec(stamp_params(), 0..=max_stamps).prop_map(|params| {
        let mut stamps = Vec::with_capacity(params.len());
        let mut health = BTreeMap::new();
        for (i, p) in params.iter().enumerate() {
            let id = StampId(u32::try_from(i).unwrap_or(u32::MAX - 1).saturating_add(1));
            if let Some((load, h)) = build_stamp(id, p) {
                stamps.push(load);
                health.insert(id, h);
            }
        }
        (Fleet::new(stamps, Version(1), Timestamp::ZERO), health)
    })
}

/// Fleets of up to `max_stamps` stamps, as [`fleet_with_health`] without the health.
///
/// ```
/// use proptest::prelude::*;
/// use stamps::testing::placement::fleet;
/// proptest!(|(f in fleet(5))| { prop_assert!(f.stamps.len() <= 5); });
/// ```
pub fn fleet(max_stamps: usize) -> impl Strategy<Value = Fleet> {
    fleet_with_health(max_stamps).prop_map(|(f, _)| f)
}

/// One stamp with id `id` (any state, tier, residency and fill).
///
/// ```
/// use proptest::prelude::*;
/// use stamps::testing::placement::stamp;
/// use stamps::StampId;
/// proptest!(|(s in stamp(StampId(4)))| { prop_assert_eq!(s.id(), StampId(4)); });
/// ```
pub fn stamp(id: StampId) -> impl Strategy<Value = StampLoad> {
    stamp_params().prop_filter_map("valid stamp", move |p| build_stamp(id, &p).map(|(l, _)| l))
}

/// Tenants: valid ids, connection demands from none to large, optional region and residency
/// (`eu`, `us`), tiers (mostly shared), a pin to a stamp id in `1..=max_stamp_id + 2` about one
/// time in ten (so sometimes to a missing stamp), and affinity / anti-affinity labels on `az`.
///
/// ```
/// use proptest::prelude::*;
/// use stamps::testing::placement::tenant;
/// proptest!(|(t in tenant(10))| { prop_assert!(!t.id.as_str().is_empty()); });
/// ```
pub fn tenant(max_stamp_id: u32) -> impl Strategy<Value = TenantSpec> {
    let top = max_stamp_id.saturating_add(2).max(1);
    (
        "[a-z][a-z0-9-]{0,12}",
        prop_oneof![Just(0u32), 0..50u32, 50..800u32],
        proptest::option::of(0..REGIONS.len()),
        0..3u8,
        0..10u8,
        proptest::option::weighted(0.1, 1..=top),
        proptest::option::weighted(0.15, 0..AZS.len()),
        proptest::option::weighted(0.15, 0..AZS.len()),
    )
        .prop_filter_map(
            "valid tenant",
            |(id, conns, region_i, residency_roll, tier_roll, pin, aff, anti)| {
                let demand = if conns == 0 {
                    Demand::default()
                } else {
                    Demand::of([(Resource::Connections, f64::from(conns))]).ok()?
                };
                let mut t = TenantSpec::new(TenantId::new(&id).ok()?)
                    .demand(demand)
                    .tier(tier(tier_roll));
                if let Some(i) = region_i {
                    t = t.region(region(i)?);
                }
                match residency_roll {
                    1 => t = t.residency(Residency::new("eu").ok()?),
                    2 => t = t.residency(Residency::new("us").ok()?),
                    _ => {}
                }
                if let Some(p) = pin {
                    t = t.pin(StampId(p));
                }
                let mut labels = Labels::new();
                if let Some(a) = aff {
                    labels.insert(
                        format!("{AFFINITY_PREFIX}az"),
                        AZS.get(a).copied().unwrap_or("a").to_string(),
                    );
                }
                if let Some(a) = anti {
                    labels.insert(
                        format!("{ANTI_AFFINITY_PREFIX}az"),
                        AZS.get(a).copied().unwrap_or("a").to_string(),
                    );
                }
                for (k, v) in labels {
                    t = t.label(k, v);
                }
                Some(t)
            },
        )
}

/// One placement problem: a fleet, its health and a tenant.
///
/// ```
/// use std::collections::BTreeMap;
/// use stamps::placement::policies;
/// use stamps::testing::{PlacementInvariants, Scenario};
/// use stamps::*;
/// // Replay a case by hand (say, one a failure report printed).
/// let s = Scenario::new(Fleet::default(), BTreeMap::new(), TenantSpec::new(TenantId::new("a")?));
/// PlacementInvariants::new().check_scenario(&policies::least_loaded(), &s)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Scenario {
    /// The fleet.
    pub fleet: Fleet,
    /// Health per stamp (absent stamps are healthy).
    pub health: BTreeMap<StampId, HealthStatus>,
    /// The tenant to place.
    pub tenant: TenantSpec,
}

impl Scenario {
    /// A scenario.
    pub fn new(fleet: Fleet, health: BTreeMap<StampId, HealthStatus>, tenant: TenantSpec) -> Scenario {
        Scenario { fleet, health, tenant }
    }

    /// The view a policy decides on.
    pub fn view(&self) -> FleetView<'_> {
        FleetView::new(&self.fleet).with_health(&self.health)
    }
}

/// Scenarios with fleets of up to `max_stamps` stamps.
///
/// ```
/// use proptest::prelude::*;
/// use stamps::placement::{policies, Placement};
/// use stamps::testing::placement::scenario;
/// proptest!(|(s in scenario(12))| {
///     let _ = policies::least_loaded().place(&s.tenant, &s.view());
/// });
/// ```
pub fn scenario(max_stamps: usize) -> impl Strategy<Value = Scenario> {
    let top = u32::try_from(max_stamps).unwrap_or(u32::MAX);
    (fleet_with_health(max_stamps), tenant(top)).prop_map(|((fleet, health), tenant)| Scenario {
        fleet,
        health,
        tenant,
    })
}

/// A broken invariant, with the smallest failing scenario proptest found.
///
/// ```
/// use stamps::placement::{from_fn, PlacementError};
/// use stamps::testing::PlacementInvariants;
/// let never = from_fn(|_, _| Err(PlacementError::Policy { reason: "never" }));
/// let v = PlacementInvariants::new().cases(50).check(&never).unwrap_err();
/// assert!(v.to_string().contains("eligible and has room"));
/// ```
#[derive(Debug, Clone)]
pub struct InvariantViolation {
    /// What broke, with the scenario.
    pub message: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvariantViolation {}

/// The hard constraint `load` breaks for `tenant`, if any, checked from first principles (not
/// through the crate's filters).
fn core_violation(tenant: &TenantSpec, load: &StampLoad, view: &FleetView<'_>) -> Option<String> {
    let spec = &load.stamp.spec;
    if let Some(p) = tenant.pin {
        if p != load.id() {
            return Some(format!("the tenant is pinned to {p}"));
        }
    }
    if load.stamp.state != StampState::Active {
        return Some(format!("the stamp is {}", load.stamp.state));
    }
    if view.health(load.id()) == HealthStatus::Unhealthy {
        return Some("the stamp is unhealthy".into());
    }
    if let Some(r) = &tenant.residency {
        if spec.residency.as_ref() != Some(r) {
            return Some(format!("the stamp is outside residency {r}"));
        }
    }
    match tenant.tier {
        Tier::Dedicated => {
            if spec.tier != Tier::Dedicated || load.tenants() != 0 {
                return Some("a dedicated tenant needs an empty dedicated stamp".into());
            }
        }
        ref t => {
            if &spec.tier != t {
                return Some(format!("a {t} tenant landed on a {} stamp", spec.tier));
            }
        }
    }
    for (r, limit) in spec.capacity.limits().iter() {
        let soft = u128::from(limit.as_milli()) * u128::from(1_000_000 - spec.capacity.headroom().as_ppm()) / 1_000_000;
        let after = u128::from(load.usage.get(r).as_milli()) + u128::from(tenant.demand.get_with_slot(r).as_milli());
        if after > soft {
            return Some(format!("{r} would exceed the limit with headroom"));
        }
    }
    None
}

/// The invariant checker, with options. [`check_placement_invariants`] is the default.
///
/// For each generated [`Scenario`] it asserts:
/// 1. a chosen stamp is a stamp of the fleet;
/// 2. it breaks no hard constraint: the pin, `Active` state, health, residency, tier (an empty
///    dedicated stamp for a dedicated tenant, the same tier otherwise), capacity with headroom,
///    and every [`constraint`](PlacementInvariants::constraint) declared for the policy;
/// 3. the same inputs give the same result (twice on one snapshot, and on a copy);
/// 4. if some stamp satisfies all of those, the policy does not fail (turn off with
///    [`allow_failure`](PlacementInvariants::allow_failure) for a policy that documents why);
/// 5. a failure has a non-empty message.
///
/// ```
/// use stamps::placement::{policies, InRegion};
/// use stamps::testing::PlacementInvariants;
/// PlacementInvariants::new().cases(100).max_stamps(6).constraint(InRegion)
///     .check(&policies::geographic()).unwrap();
/// ```
pub struct PlacementInvariants {
    cases: u32,
    max_stamps: usize,
    constraints: Vec<Box<dyn StampFilter>>,
    liveness: bool,
    persist: Option<&'static str>,
}

impl fmt::Debug for PlacementInvariants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlacementInvariants")
            .field("cases", &self.cases)
            .field("max_stamps", &self.max_stamps)
            .field(
                "constraints",
                &self.constraints.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("liveness", &self.liveness)
            .finish()
    }
}

impl Default for PlacementInvariants {
    fn default() -> Self {
        Self::new()
    }
}

impl PlacementInvariants {
    /// 1,000 cases, fleets of up to 16 stamps, liveness required, no extra constraint.
    pub fn new() -> PlacementInvariants {
        PlacementInvariants {
            cases: 1000,
            max_stamps: 16,
            constraints: Vec::new(),
            liveness: true,
            persist: None,
        }
    }

    /// Number of generated cases.
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases.max(1);
        self
    }

    /// Largest fleet generated.
    pub fn max_stamps(mut self, n: usize) -> Self {
        self.max_stamps = n;
        self
    }

    /// A hard constraint the policy adds (region, labels, your own filter): the chosen stamp
    /// must pass it, and liveness only counts stamps that pass it.
    pub fn constraint(mut self, filter: impl StampFilter + 'static) -> Self {
        self.constraints.push(Box::new(filter));
        self
    }

    /// Do not require the policy to find a stamp when one is eligible.
    pub fn allow_failure(mut self) -> Self {
        self.liveness = false;
        self
    }

    /// Saves failing cases to `path` (relative to the working directory; `cargo test` runs in
    /// the package root) and replays them first on later runs. Commit the file.
    pub fn persist_failures_to(mut self, path: &'static str) -> Self {
        self.persist = Some(path);
        self
    }

    fn violation(&self, tenant: &TenantSpec, load: &StampLoad, view: &FleetView<'_>) -> Option<String> {
        core_violation(tenant, load, view).or_else(|| {
            self.constraints
                .iter()
                .find(|c| c.check(tenant, load, view).is_err())
                .map(|c| format!("the policy's own constraint `{}` rejects it", c.name()))
        })
    }

    /// Checks one scenario; `Err` says which invariant broke.
    pub fn check_scenario<P: Placement + ?Sized>(&self, policy: &P, s: &Scenario) -> Result<(), String> {
        let view = s.view();
        let out = policy.place(&s.tenant, &view);
        let again = policy.place(&s.tenant, &view);
        if out != again {
            return Err(format!("not deterministic: {out:?} then {again:?}"));
        }
        let copy = s.fleet.clone();
        let third = policy.place(&s.tenant, &FleetView::new(&copy).with_health(&s.health));
        if out != third {
            return Err(format!(
                "not deterministic across equal snapshots: {out:?} then {third:?}"
            ));
        }
        match &out {
            Ok(id) => {
                let Some(load) = s.fleet.get(*id) else {
                    return Err(format!("chose {id}, which is not in the fleet"));
                };
                if let Some(v) = self.violation(&s.tenant, load, &view) {
                    return Err(format!("chose {id}, but {v}"));
                }
            }
            Err(e) => {
                if self.liveness {
                    if let Some(ok) = s
                        .fleet
                        .stamps
                        .iter()
                        .find(|l| self.violation(&s.tenant, l, &view).is_none())
                    {
                        return Err(format!("failed ({e}) although {} is eligible and has room", ok.id()));
                    }
                }
                if e.to_string().is_empty() {
                    return Err("the error message is empty".into());
                }
            }
        }
        Ok(())
    }

    /// Runs the cases against `policy`.
    pub fn check<P: Placement + ?Sized>(&self, policy: &P) -> Result<(), InvariantViolation> {
        let config = Config {
            cases: self.cases,
            failure_persistence: self.persist.map(|p| {
                Box::new(FileFailurePersistence::Direct(p)) as Box<dyn proptest::test_runner::FailurePersistence>
            }),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&scenario(self.max_stamps), |s| {
            self.check_scenario(policy, &s).map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => Ok(()),
            Err(TestError::Fail(why, s)) => Err(InvariantViolation {
                message: format!(
                    "placement invariant broken: {why}\ntenant: {:?}\nhealth: {:?}\nfleet:\n{}",
                    s.tenant, s.health, s.fleet
                ),
            }),
            Err(TestError::Abort(why)) => Err(InvariantViolation {
                message: format!("property test aborted: {why}"),
            }),
        }
    }
}

/// Checks `policy` against the placement invariants on 1,000 generated scenarios (see
/// [`PlacementInvariants`] for the list and for options). `Err` carries the smallest failing
/// scenario.
///
/// ```
/// use stamps::placement::{from_fn, policies, PlacementError};
/// use stamps::testing::check_placement_invariants;
/// check_placement_invariants(&policies::least_loaded()).unwrap();
///
/// // A policy that ignores the hard constraints is caught.
/// let careless = from_fn(|_, fleet| fleet.stamps().next().map(|s| s.id())
///     .ok_or(PlacementError::Policy { reason: "no stamps" }));
/// assert!(check_placement_invariants(&careless).is_err());
/// ```
pub fn check_placement_invariants<P: Placement + ?Sized>(policy: &P) -> Result<(), InvariantViolation> {
    PlacementInvariants::new().check(policy)
}
