//! Scorers: rank eligible stamps (higher is better).

use std::fmt;

use super::FleetView;
use crate::model::{Amount, Region, Resource, StampId, StampLoad, TenantSpec};

/// Ranks an eligible stamp for a tenant: higher is better.
///
/// # Contract
/// `score` is pure, sync and allocation-free, and finite for every eligible stamp unless
/// documented (a NaN total counts as the lowest score). The built-in scorers return values in
/// `[0, 1]`, except [`MostAvailable`], which returns free units; weigh accordingly.
///
/// # Implementing
/// Closures `Fn(&TenantSpec, &StampLoad) -> f64` implement it (named `"score"`); implement the
/// trait to name the scorer in explanations or to read the health view.
///
/// # Example
/// ```
/// use stamps::placement::{LeastLoaded, Pipeline};
/// use stamps::{StampLoad, TenantSpec};
/// // Prefer newer stamps a little, mostly by load.
/// let newer = |_: &TenantSpec, s: &StampLoad| f64::from(s.id().0) / 1000.0;
/// let p = Pipeline::new().score(LeastLoaded::bottleneck(), 1.0).score(newer, 0.1);
/// # let _ = p;
/// ```
pub trait Scorer: Send + Sync {
    /// The scorer's name, for explanations.
    fn name(&self) -> &'static str;

    /// The score of `load` for `tenant`; higher is better.
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, fleet: &FleetView<'_>) -> f64;
}

impl<F> Scorer for F
where
    F: Fn(&TenantSpec, &StampLoad) -> f64 + Send + Sync,
{
    fn name(&self) -> &'static str {
        "score"
    }
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, _: &FleetView<'_>) -> f64 {
        self(tenant, load)
    }
}

fn ratio(used: Amount, wanted: Amount, limit: Amount) -> f64 {
    let after = used.checked_add(wanted).unwrap_or(Amount::from_milli(u64::MAX));
    after.as_milli() as f64 / limit.as_milli().max(1) as f64
}

/// Utilization after placement on `resource`, or on the bottleneck (the highest) when `None`.
/// Zero for a stamp without limits.
fn utilization(tenant: &TenantSpec, load: &StampLoad, resource: Option<&Resource>) -> f64 {
    match resource {
        Some(r) => load
            .stamp
            .spec
            .capacity
            .limit(r)
            .map_or(0.0, |l| ratio(load.usage.get(r), tenant.demand.get_with_slot(r), l)),
        None => {
            let mut max = 0.0f64;
            let _ = super::try_each_limit(load, &tenant.demand, |_, limit, used, wanted| {
                max = max.max(ratio(used, wanted, limit));
                Ok::<(), ()>(())
            });
            max
        }
    }
}

/// Least loaded: `1 − utilization` after placing the tenant, on one resource or on the
/// stamp's bottleneck (its most utilized resource). Spreads tenants evenly.
///
/// ```
/// use stamps::placement::{FleetView, LeastLoaded, Pipeline, Placement};
/// use stamps::*;
/// # let load = |id: u32, tenants: u32| -> stamps::Result<StampLoad> {
/// #     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
/// #         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// #     let mut usage = Amounts::default();
/// #     for _ in 0..tenants { stamps::model::admission::add(&mut usage, &Demand::default(), true); }
/// #     Ok(StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage))
/// # };
/// let fleet = Fleet::new(vec![load(1, 6)?, load(2, 2)?], Version(1), Timestamp::ZERO); // 6 and 2 of 10
/// let t = TenantSpec::new(TenantId::new("acme")?);
/// let by_bottleneck = Pipeline::new().score(LeastLoaded::bottleneck(), 1.0);
/// assert_eq!(by_bottleneck.place(&t, &FleetView::new(&fleet))?, StampId(2)); // the emptier one
/// let by_tenants = Pipeline::new().score(LeastLoaded::on(Resource::Tenants), 1.0);
/// assert_eq!(by_tenants.place(&t, &FleetView::new(&fleet))?, StampId(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeastLoaded {
    resource: Option<Resource>,
}

impl LeastLoaded {
    /// On the bottleneck resource of each stamp.
    pub fn bottleneck() -> LeastLoaded {
        LeastLoaded { resource: None }
    }

    /// On one resource (stamps without a limit on it score 1).
    pub fn on(resource: Resource) -> LeastLoaded {
        LeastLoaded {
            resource: Some(resource),
        }
    }
}

impl Scorer for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, _: &FleetView<'_>) -> f64 {
        1.0 - utilization(tenant, load, self.resource.as_ref())
    }
}

/// Bin packing: utilization after placing the tenant (bottleneck or one resource), so the
/// fullest stamp that still fits wins. Fills stamps one by one, for cost.
///
/// ```
/// use stamps::placement::{BinPacking, FleetView, Pipeline, Placement};
/// use stamps::*;
/// # let load = |id: u32, tenants: u32| -> stamps::Result<StampLoad> {
/// #     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
/// #         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// #     let mut usage = Amounts::default();
/// #     for _ in 0..tenants { stamps::model::admission::add(&mut usage, &Demand::default(), true); }
/// #     Ok(StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage))
/// # };
/// let fleet = Fleet::new(vec![load(1, 6)?, load(2, 2)?], Version(1), Timestamp::ZERO); // 6 and 2 of 10
/// let t = TenantSpec::new(TenantId::new("acme")?);
/// let p = Pipeline::new().score(BinPacking::bottleneck(), 1.0);
/// assert_eq!(p.place(&t, &FleetView::new(&fleet))?, StampId(1)); // the fuller one
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BinPacking {
    resource: Option<Resource>,
}

impl BinPacking {
    /// On the bottleneck resource of each stamp.
    pub fn bottleneck() -> BinPacking {
        BinPacking { resource: None }
    }

    /// On one resource.
    pub fn on(resource: Resource) -> BinPacking {
        BinPacking {
            resource: Some(resource),
        }
    }
}

impl Scorer for BinPacking {
    fn name(&self) -> &'static str {
        "bin-packing"
    }
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, _: &FleetView<'_>) -> f64 {
        utilization(tenant, load, self.resource.as_ref())
    }
}

/// Most available capacity: prefers the stamp with the most room left.
/// Absolute, so a big stamp beats a small one at the same utilization:
///
/// - [`MostAvailable::room`] (the default): how many more tenants with this tenant's demand
///   fit under headroom (the fewest over the limited resources the tenant uses); `+∞` when
///   nothing limits it;
/// - [`MostAvailable::on`]: the units of one resource left under its soft limit after placing
///   the tenant; `+∞` for stamps without a limit on it.
///
/// ```
/// use stamps::placement::{MostAvailable, Pipeline};
/// use stamps::Resource;
/// let by_room = Pipeline::new().score(MostAvailable::room(), 1.0);
/// let by_connections = Pipeline::new().score(MostAvailable::on(Resource::Connections), 1.0);
/// # let _ = (by_room, by_connections);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MostAvailable {
    resource: Option<Resource>,
}

impl MostAvailable {
    /// Room for more tenants like this one.
    pub fn room() -> MostAvailable {
        MostAvailable { resource: None }
    }

    /// Units of one resource left.
    pub fn on(resource: Resource) -> MostAvailable {
        MostAvailable {
            resource: Some(resource),
        }
    }
}

impl Scorer for MostAvailable {
    fn name(&self) -> &'static str {
        "most-available"
    }
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, _: &FleetView<'_>) -> f64 {
        let cap = &load.stamp.spec.capacity;
        match &self.resource {
            Some(r) => {
                let Some(soft) = cap.soft_limit(r) else {
                    return f64::INFINITY;
                };
                let used = load
                    .usage
                    .get(r)
                    .checked_add(tenant.demand.get_with_slot(r))
                    .unwrap_or(Amount::from_milli(u64::MAX));
                soft.as_milli() as f64 / 1000.0 - used.as_milli() as f64 / 1000.0
            }
            None => {
                let mut room = f64::INFINITY;
                let _ = super::try_each_limit(load, &tenant.demand, |r, limit, used, wanted| {
                    if !wanted.is_zero() {
                        let free = super::soft_limit(cap.headroom_for(r), limit).saturating_sub(used);
                        room = room.min((free.as_milli() / wanted.as_milli()) as f64);
                    }
                    Ok::<(), ()>(())
                });
                room
            }
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous (highest-random-weight) hash of a tenant on a stamp: FNV-1a of the tenant id
/// mixed with the stamp id by splitmix64. Fixed across processes, platforms and releases.
pub(crate) fn rendezvous_hash(tenant: &TenantSpec, stamp: StampId) -> u64 {
    let h = crate::hash::fnv1a_64(tenant.id.as_str().as_bytes());
    splitmix(h ^ splitmix(u64::from(stamp.0)))
}

/// Rendezvous hashing: a pseudo-random score in `[0, 1)` from the tenant id and the stamp id,
/// the same in every process. A tenant's choice among the same eligible stamps never changes,
/// and adding or removing a stamp moves only the tenants that hash highest to it.
///
/// ```
/// use stamps::placement::{FleetView, Pipeline, Placement, Rendezvous, Scorer};
/// use stamps::*;
/// # let load = |id: u32, tenants: u32| -> stamps::Result<StampLoad> {
/// #     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
/// #         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// #     let mut usage = Amounts::default();
/// #     for _ in 0..tenants { stamps::model::admission::add(&mut usage, &Demand::default(), true); }
/// #     Ok(StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage))
/// # };
/// let fleet = Fleet::new(vec![load(1, 6)?, load(2, 2)?], Version(1), Timestamp::ZERO); // 6 and 2 of 10
/// let t = TenantSpec::new(TenantId::new("acme")?);
/// let view = FleetView::new(&fleet);
/// let p = Pipeline::new().score(Rendezvous, 1.0);
/// // The stamp whose hash with the tenant is highest, whatever the load.
/// let best = fleet.stamps.iter()
///     .max_by(|a, b| Rendezvous.score(&t, a, &view).total_cmp(&Rendezvous.score(&t, b, &view)))
///     .map(StampLoad::id);
/// assert_eq!(Some(p.place(&t, &view)?), best);
/// let s = Rendezvous.score(&t, &fleet.stamps[0], &view);
/// assert!((0.0..1.0).contains(&s));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Rendezvous;

impl Scorer for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, _: &FleetView<'_>) -> f64 {
        (rendezvous_hash(tenant, load.id()) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Region proximity: 1 in the tenant's region, 0.5 in the same area (the region name up to its
/// first `-`: `eu-west` and `eu-central`), 0 elsewhere or when the tenant has no region. Or a
/// distance function of your own.
///
/// ```
/// use stamps::placement::{LeastLoaded, Pipeline, RegionProximity};
/// use stamps::Region;
/// let hybrid = Pipeline::new()
///     .score(RegionProximity::default(), 10.0)
///     .score(LeastLoaded::bottleneck(), 1.0);
/// let custom = RegionProximity::with(|tenant: &Region, stamp: &Region| {
///     if tenant == stamp { 1.0 } else { 0.0 }
/// });
/// # let _ = (hybrid, custom);
/// ```
#[derive(Clone, Copy, Default)]
pub struct RegionProximity {
    closeness: Option<fn(&Region, &Region) -> f64>,
}

impl fmt::Debug for RegionProximity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionProximity")
            .field("custom", &self.closeness.is_some())
            .finish()
    }
}

impl RegionProximity {
    /// Uses `closeness(tenant_region, stamp_region)` (higher is closer).
    pub fn with(closeness: fn(&Region, &Region) -> f64) -> RegionProximity {
        RegionProximity {
            closeness: Some(closeness),
        }
    }

    fn default_closeness(t: &Region, s: &Region) -> f64 {
        if t == s {
            return 1.0;
        }
        fn area(r: &Region) -> &str {
            let s = r.as_str();
            s.split('-').next().unwrap_or(s)
        }
        if area(t) == area(s) {
            0.5
        } else {
            0.0
        }
    }
}

impl Scorer for RegionProximity {
    fn name(&self) -> &'static str {
        "region-proximity"
    }
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, _: &FleetView<'_>) -> f64 {
        let Some(t) = &tenant.region else { return 0.0 };
        let f = self.closeness.unwrap_or(Self::default_closeness);
        f(t, &load.stamp.spec.region)
    }
}

/// A weighted sum of scorers. [`Pipeline::score`](super::Pipeline::score) builds one; use it
/// directly to nest a combination as one scorer.
///
/// ```
/// use stamps::placement::{LeastLoaded, Rendezvous, Scorer, Weighted};
/// let w = Weighted::new().with(LeastLoaded::bottleneck(), 1.0).with(Rendezvous, 0.01);
/// assert_eq!(w.len(), 2);
/// assert_eq!(w.name(), "weighted");
/// ```
#[derive(Default)]
pub struct Weighted {
    parts: Vec<(Box<dyn Scorer>, f64)>,
}

impl fmt::Debug for Weighted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.parts.iter().map(|(s, w)| (s.name(), *w)))
            .finish()
    }
}

impl Weighted {
    /// No scorers (every stamp scores 0).
    pub fn new() -> Weighted {
        Weighted { parts: Vec::new() }
    }

    /// Adds `scorer` with `weight`.
    pub fn with(mut self, scorer: impl Scorer + 'static, weight: f64) -> Weighted {
        self.parts.push((Box::new(scorer), weight));
        self
    }

    /// Number of scorers.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether there is no scorer.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Each scorer's name, weight and (unweighted) score for `load`.
    pub fn parts<'a>(
        &'a self,
        tenant: &'a TenantSpec,
        load: &'a StampLoad,
        fleet: &'a FleetView<'_>,
    ) -> impl Iterator<Item = (&'static str, f64, f64)> + 'a {
        self.parts
            .iter()
            .map(move |(s, w)| (s.name(), *w, s.score(tenant, load, fleet)))
    }
}

impl Scorer for Weighted {
    fn name(&self) -> &'static str {
        "weighted"
    }
    fn score(&self, tenant: &TenantSpec, load: &StampLoad, fleet: &FleetView<'_>) -> f64 {
        self.parts
            .iter()
            .filter(|(_, w)| *w != 0.0)
            .map(|(s, w)| {
                let x = s.score(tenant, load, fleet) * w;
                if x.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    x
                }
            })
            .sum()
    }
}

/// Version preference: 1 for a stamp on `version` or later ([`version_at_least`](crate::model::version_at_least)), 0 for one
/// below it or without a version label. Blend it with a load scorer to send new tenants to
/// updated stamps while old ones still take them when the new ones are full (where
/// [`MinVersion`](super::MinVersion) would refuse).
///
/// ```
/// use stamps::placement::{AtLeastVersion, LeastLoaded, Pipeline, Placement, FleetView};
/// use stamps::*;
/// let stamp = |id: u32, v: &str| {
///     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
///     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap().version(v);
///     StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default())
/// };
/// let fleet = Fleet::new(vec![stamp(1, "41"), stamp(2, "42")], Version(0), Timestamp::ZERO);
/// let policy = Pipeline::new().score(AtLeastVersion::new("42"), 10.0).score(LeastLoaded::bottleneck(), 1.0);
/// assert_eq!(policy.place(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet))?, StampId(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtLeastVersion {
    version: String,
    /// `version` packed, when it is a plain dotted release.
    key: Option<u64>,
}

impl AtLeastVersion {
    /// Prefers stamps on `version` or later.
    pub fn new(version: impl Into<String>) -> AtLeastVersion {
        let version = version.into();
        let key = crate::model::stamp_version_key(&version);
        AtLeastVersion { version, key }
    }
}

impl Scorer for AtLeastVersion {
    fn name(&self) -> &'static str {
        "at-least-version"
    }
    fn score(&self, _: &TenantSpec, load: &StampLoad, _: &FleetView<'_>) -> f64 {
        let Some(v) = load.stamp.spec.version.as_deref() else {
            return 0.0;
        };
        let at_least = match (self.key, crate::model::stamp_version_key(v)) {
            (Some(min), Some(have)) => have >= min,
            _ => crate::model::version_at_least(v, &self.version),
        };
        if at_least {
            1.0
        } else {
            0.0
        }
    }
}
