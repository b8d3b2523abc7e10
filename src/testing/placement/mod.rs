//! Property-testing kit for placement policies: proptest strategies for fleets, stamps and
//! tenants, and an invariant checker for any [`Placement`](crate::placement::Placement).
//!
//! The strategies produce what breaks policies: residencies and tiers that rarely match,
//! dedicated stamps already in use, pins to stamps that are missing or full, stamps near or at
//! their headroom, inactive and unhealthy stamps, affinity labels, and empty fleets.
//!
//! # What the generators produce
//! - **Stamps** ([`stamp`], [`fleet`], [`fleet_with_health`]): ids 1, 2, …; names in the
//!   styles real fleets use, so name-based policies are exercised: `s7`, `eu-west-7`,
//!   `eu-west-canary-7`, `eu-west-ring2-7`, `gold-eu-west-007`; regions `eu-west`,
//!   `eu-central`, `us-east`, `us-west`, with the residency of their area (`eu`, `us`) four
//!   times in five; tiers shared (7 in 10), dedicated (2 in 10, holding 0 or 1 tenant) and
//!   `gold`; states active (6 in 9), provisioning, draining, decommissioned; labels `az`
//!   (`a`–`c`) and `ring` (`0`–`3`); a deployed version among `41.2.0`, `42.0.0`,
//!   `42.1.0-rc.1`, `42.1.0` or none; one stamp in six ephemeral (with an expiry); 50–5,000
//!   connections and, one time in two, a tenant
//!   limit; headroom 0, 10, 25 or 30%; fills from empty to full; about one stamp in ten
//!   unhealthy and two degraded.
//! - **Tenants** ([`tenant`]): valid ids; connection demands from none to large; optional
//!   region, residency and tier; a pin one time in ten (sometimes to a missing stamp);
//!   one tenant in four ephemeral; affinity and anti-affinity labels on `az`.
//! - **Scenarios** ([`scenario`]): a fleet, its health and a tenant.
//!
//! [`PlacementInvariants::scenarios`] takes a strategy of your own instead, and
//! [`PlacementInvariants::transform`] reshapes each built-in scenario (rename stamps the way
//! your gate expects, add your labels), so a policy's own rules meet the cases that break
//! them. A failure prints the scenario as a table with names, residency, tier, state, health,
//! headroom, version and usage in units.
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

mod invariants;

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::model::{
    Amount, Amounts, Capacity, Demand, Fleet, HealthStatus, Labels, Name, Region, Residency, Resource, Stamp, StampId,
    StampLoad, StampSpec, StampState, TenantId, TenantSpec, Tier, Version,
};
use crate::placement::{FleetView, AFFINITY_PREFIX, ANTI_AFFINITY_PREFIX};

use crate::time::Timestamp;
pub use invariants::{check_placement_invariants, scenario_table, InvariantViolation, PlacementInvariants};

const REGIONS: [&str; 4] = ["eu-west", "eu-central", "us-east", "us-west"];
const AZS: [&str; 3] = ["a", "b", "c"];
const VERSIONS: [&str; 4] = ["41.2.0", "42.0.0", "42.1.0-rc.1", "42.1.0"];

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
    name_roll: u8,
    ring: u8,
    version_roll: u8,
    ephemeral_roll: u8,
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
        (0..5u8, 0..4u8, 0..5u8, 0..6u8),
    )
        .prop_map(
            |(
                (region, residency_roll, tier_roll, az, state_roll),
                (connections, tenant_limit, headroom_roll, conn_fill, tenants, health_roll),
                (name_roll, ring, version_roll, ephemeral_roll),
            )| StampParams {
                name_roll,
                ring,
                version_roll,
                ephemeral_roll,
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
    let name = match p.name_roll {
        0 => format!("s{}", id.0),
        1 => format!("{region}-{}", id.0),
        2 => format!("{region}-canary-{}", id.0),
        3 => format!("{region}-ring{}-{}", p.ring, id.0),
        _ => format!("{tier}-{region}-{:03}", id.0),
    };
    let mut spec = StampSpec::new(id, name, region.clone(), capacity)
        .ok()?
        .tier(tier.clone())
        .label("az", AZS.get(p.az).copied().unwrap_or("a"))
        .label("ring", p.ring.to_string());
    if let Some(v) = VERSIONS.get(usize::from(p.version_roll)) {
        spec = spec.version(*v);
    }
    if p.ephemeral_roll == 0 {
        spec = spec.expires_at(Timestamp::from_millis(86_400_000));
    }
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
        usage.set(&Resource::Tenants, Amount::units(tenants));
        usage.set(&Resource::Connections, Amount::units(conn));
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

/// Fleets of up to `max_stamps` stamps (ids 1, 2, ...) with the health of each stamp: varied
/// names, mixed regions (`eu-west`, `eu-central`, `us-east`, `us-west`), residencies (`eu`,
/// `us`, or none), tiers (shared, dedicated, `gold`), states, rings and versions, fills from
/// empty to full, and about one stamp in ten unhealthy (the module docs list it all).
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
        0..4u8,
    )
        .prop_filter_map(
            "valid tenant",
            |(id, conns, region_i, residency_roll, tier_roll, pin, aff, anti, ephemeral_roll)| {
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
                if ephemeral_roll == 0 {
                    t = t.ephemeral();
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
