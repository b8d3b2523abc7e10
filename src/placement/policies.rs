//! Built-in policies: each a few lines over [`Pipeline`], covering the usual stamp layouts
//! (most available capacity, geographic, tenant-based, hybrid, dedicated for enterprise).
//!
//! Every policy here enforces the hard constraints of [`Pipeline::new`] (pin, residency, tier,
//! state, health, headroom) and is checked by `stamps::testing::check_placement_invariants`
//! in the crate's own tests. The examples share one fleet:
//!
//! | stamp | region | residency | tier | used (of 100 connections, 25% headroom) |
//! | --- | --- | --- | --- | --- |
//! | 1 | eu-west | eu | shared | 50 |
//! | 2 | eu-central | eu | shared | 10 |
//! | 3 | us-east | us | shared | 0 |
//! | 4 | eu-west | eu | dedicated | 0 |

use super::{
    Affinity, AntiAffinity, BinPacking, InRegion, LeastLoaded, MostAvailable, Pipeline, PlacementExt, Prefer,
    RegionProximity, Rendezvous,
};

macro_rules! policy_example {
    ($call:literal, $tenant:literal, $expect:literal) => {
        concat!(
            "```\n",
            "use stamps::placement::{policies, FleetView, Placement};\n",
            "use stamps::*;\n",
            "# let mk = |id: u32, region: &str, tier: Tier, used: f64| -> stamps::Result<StampLoad> {\n",
            "#     let spec = StampSpec::new(StampId(id), format!(\"s{id}\"), Region::new(region)?,\n",
            "#         Capacity::new([(Resource::Connections, 100.0)], 0.25)?)?\n",
            "#         .residency(Residency::new(&region[..2])?).tier(tier);\n",
            "#     let mut usage = Amounts::default();\n",
            "#     if used > 0.0 { model::admission::add(&mut usage, &Demand::of([(Resource::Connections, used)])?, true); }\n",
            "#     Ok(StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage))\n",
            "# };\n",
            "# let fleet = Fleet::new(vec![mk(1, \"eu-west\", Tier::Shared, 50.0)?, mk(2, \"eu-central\", Tier::Shared, 10.0)?,\n",
            "#     mk(3, \"us-east\", Tier::Shared, 0.0)?, mk(4, \"eu-west\", Tier::Dedicated, 0.0)?], Version(1), Timestamp::ZERO);\n",
            "let view = FleetView::new(&fleet);\n",
            "let policy = policies::",
            $call,
            ";\n",
            "let tenant = TenantSpec::new(TenantId::new(\"acme\")?)",
            $tenant,
            ";\n",
            "assert_eq!(policy.place(&tenant, &view)?, StampId(",
            $expect,
            "));\n",
            "# Ok::<(), Box<dyn std::error::Error>>(())\n",
            "```"
        )
    };
}

/// Least loaded on each stamp's bottleneck resource: spreads tenants evenly.
#[doc = policy_example!("least_loaded()", ".residency(Residency::new(\"eu\")?)", "2")]
pub fn least_loaded() -> Pipeline {
    Pipeline::new().score(LeastLoaded::bottleneck(), 1.0)
}

/// The stamp with the most available capacity: room for the most tenants like this one under
/// headroom (the simplest approach). Ties go to the lowest id.
#[doc = policy_example!("most_available()", ".demand(Demand::of([(Resource::Connections, 5.0)])?)", "3")]
pub fn most_available() -> Pipeline {
    Pipeline::new().score(MostAvailable::room(), 1.0)
}

/// Bin packing: the fullest stamp that still fits, to keep the number of stamps (and cost)
/// down.
#[doc = policy_example!("bin_packing()", ".residency(Residency::new(\"eu\")?)", "1")]
pub fn bin_packing() -> Pipeline {
    Pipeline::new().score(BinPacking::bottleneck(), 1.0)
}

/// Rendezvous hashing: a stable, pseudo-random stamp per tenant among the eligible ones.
#[doc = policy_example!("rendezvous()", ".residency(Residency::new(\"us\")?)", "3")]
pub fn rendezvous() -> Pipeline {
    Pipeline::new().score(Rendezvous, 1.0)
}

/// Geographic stamps: a tenant with a region lands only in that region (a hard constraint, on
/// top of residency), least loaded first.
#[doc = policy_example!("geographic()", ".region(Region::new(\"eu-west\")?)", "1")]
pub fn geographic() -> Pipeline {
    Pipeline::new().filter(InRegion).score(LeastLoaded::bottleneck(), 1.0)
}

/// Tenant-based stamps: by tier and capacity regardless of geography. Dedicated tenants get an
/// empty dedicated stamp (the tier filter of every pipeline); shared tenants go to the stamp
/// with the most available capacity.
#[doc = policy_example!("tenant_based()", ".tier(Tier::Dedicated)", "4")]
pub fn tenant_based() -> Pipeline {
    most_available()
}

/// Hybrid stamps: within the tenant's region by capacity (least loaded) if any stamp there
/// fits, else the closest region that does.
#[doc = policy_example!("hybrid()", ".region(Region::new(\"eu-west\")?)", "1")]
pub fn hybrid() -> Prefer<Pipeline, InRegion> {
    Pipeline::new()
        .score(RegionProximity::default(), 10.0)
        .score(LeastLoaded::bottleneck(), 1.0)
        .prefer(InRegion)
}

/// Dedicated for enterprise: dedicated-tier tenants get an empty dedicated stamp (the lowest
/// id), and everyone else shares, least loaded first, honouring the tenants' affinity and
/// anti-affinity labels.
#[doc = policy_example!("dedicated_for_enterprise()", ".tier(Tier::Dedicated).residency(Residency::new(\"eu\")?)", "4")]
pub fn dedicated_for_enterprise() -> Pipeline {
    Pipeline::new()
        .filter(Affinity)
        .filter(AntiAffinity)
        .score(LeastLoaded::bottleneck(), 1.0)
}

/// Nearest region first (region proximity, heavily weighted), then least loaded; no stamp is
/// ruled out for being far.
#[doc = policy_example!("nearest()", ".region(Region::new(\"eu-central\")?)", "2")]
pub fn nearest() -> Pipeline {
    Pipeline::new()
        .score(RegionProximity::default(), 10.0)
        .score(LeastLoaded::bottleneck(), 1.0)
}
