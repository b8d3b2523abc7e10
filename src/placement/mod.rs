//! Placement: choosing a stamp for a new tenant.
//!
//! A [`Placement`] policy is a pure, sync function from a tenant and a fleet snapshot
//! ([`FleetView`]) to a [`StampId`]. The built-in policies are [`Pipeline`]s in the manner of
//! the Kubernetes scheduler framework:
//!
//! 1. **filters** ([`StampFilter`]) remove ineligible stamps. Every pipeline starts with the
//!    hard constraints: the **pin** override, **residency**, **tier** (dedicated tenants get an
//!    empty dedicated stamp; shared tenants never land on a dedicated one), **state** (only
//!    `Active`), **health** (no `Unhealthy` stamp) and, last, **headroom** (the tenant's demand
//!    fits under `capacity × (1 − headroom)` on every resource). You add more (region, labels,
//!    affinity, your own);
//! 2. **scorers** ([`Scorer`]) rank the survivors, combined by weight;
//! 3. the **selector** picks the highest total score; ties go to the lowest [`StampId`] (or the
//!    rendezvous hash, see [`TieBreak`]), so decisions are deterministic.
//!
//! Combinators ([`PlacementExt`]) wrap any policy: `filter`, `prefer`, `or_else`, [`Either`]
//! and `boxed`. [`Placement::explain`] says, for each stamp, which filter rejected it or what it
//! scored; [`dry_run`] places a list of tenants on a simulated copy of the fleet;
//! [`place_and_assign`] places and assigns through a [`Registry`](crate::Registry), retrying
//! lost races; [`plan_rebalance`] proposes moves for a person to review.
//!
//! # Cost
//! A decision reads the snapshot and allocates nothing, on success and on rejection (a test
//! with a counting global allocator checks every built-in policy and combinator over 1,000
//! stamps). It is linear in the number of stamps; see `docs/performance.md` for figures.
//!
//! # Example
//! ```
//! use stamps::placement::{policies, FleetView, Placement, PlacementExt};
//! use stamps::*;
//!
//! # fn stamp(id: u32, region: &str, residency: &str, used: f64) -> stamps::Result<StampLoad> {
//! #     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new(region)?,
//! #         Capacity::new([(Resource::Connections, 5000.0)], 0.25)?)?
//! #         .with_residency(Residency::new(residency)?);
//! #     let mut usage = Amounts::default();
//! #     registry::admission::add(&mut usage, &Demand::of([(Resource::Connections, used)])?, true);
//! #     Ok(StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage))
//! # }
//! let fleet = Fleet::new(vec![
//!     stamp(1, "eu-west", "eu", 3000.0)?,
//!     stamp(2, "eu-west", "eu", 1000.0)?,
//!     stamp(3, "us-east", "us", 0.0)?,
//! ], Version(1), Timestamp::ZERO);
//! let view = FleetView::new(&fleet);
//!
//! let acme = TenantSpec::new(TenantId::new("acme")?)
//!     .with_residency(Residency::new("eu")?)
//!     .with_demand(Demand::of([(Resource::Connections, 25.0)])?);
//!
//! // Residency is a hard constraint: stamp 3 is empty but in the US.
//! let policy = policies::least_loaded();
//! assert_eq!(policy.place(&acme, &view)?, StampId(2));
//!
//! // Compose: only stamps labelled for production... none are, so fall back.
//! let composed = policies::least_loaded()
//!     .filter(|_: &TenantSpec, s: &StampLoad| s.stamp.spec.labels.contains_key("prod"))
//!     .or_else(policies::bin_packing());
//! assert_eq!(composed.place(&acme, &view)?, StampId(1));
//! println!("{}", composed.explain(&acme, &view));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod assign;
mod combinators;
mod explain;
mod filters;
pub mod policies;
mod rebalance;
mod scorers;

use std::fmt;

pub use assign::{place_and_assign, place_and_assign_with, AssignOptions, PlaceAndAssignError, ProvisionRequest};
pub use combinators::{BoxPlacement, Either, Fallback, Filter, PlacementExt, Prefer};
pub use explain::{dry_run, DryRun, Explanation, StampVerdict, Verdict};
pub use filters::{
    named, Active, Affinity, AntiAffinity, FitsHeadroom, Healthy, InRegion, Named, Pinned, RequireLabel,
    ResidencyMatch, StampFilter, TierMatch, AFFINITY_PREFIX, ANTI_AFFINITY_PREFIX,
};
pub use rebalance::{plan_rebalance, Move, RebalancePlan};
pub use scorers::{BinPacking, LeastLoaded, MostAvailable, RegionProximity, Rendezvous, Scorer, Weighted};

use crate::model::{
    AllHealthy, Amount, Fleet, Headroom as HeadroomFraction, HealthStatus, HealthView, Residency, Resource, StampId,
    StampLoad, TenantSpec, Tier,
};

/// A placement policy: picks the stamp a new tenant should go to.
///
/// # Contract
/// - **Pure and sync**: the result depends only on the tenant and the snapshot; no I/O, no
///   clock, no randomness. The same inputs give the same stamp.
/// - The result is a stamp of [`FleetView::stamps`] (which honours the filters of enclosing
///   combinators).
/// - Hard constraints hold: the stamp is `Active`, not unhealthy, in the tenant's residency,
///   of the tenant's tier (empty and dedicated for a dedicated tenant), the tenant's pin if it
///   has one, and the tenant's demand fits under every limit with headroom. Policies built on
///   [`Pipeline`] get all of this; check your own with
///   `stamps::testing::check_placement_invariants` (feature `proptest`).
/// - When no stamp fits, a [`PlacementError`] says why; returning it must not allocate.
///
/// # Implementing
/// Closures `Fn(&TenantSpec, &FleetView<'_>) -> Result<StampId, PlacementError>` implement it
/// (use [`from_fn`] when type inference needs help); so do `&dyn Placement`,
/// `Box<dyn Placement>` and `Arc<P>`.
/// Iterate [`FleetView::stamps`], never `fleet.fleet().stamps`, so that `filter` and `prefer`
/// wrappers apply. Override [`explain`](Placement::explain) to say more than which stamp was
/// chosen.
///
/// # Example
/// ```
/// use stamps::placement::{from_fn, FleetView, Placement, PlacementError};
/// use stamps::*;
/// // "The stamp with the fewest tenants", by hand (no hard constraints: don't do this).
/// let fewest = from_fn(|_t: &TenantSpec, fleet: &FleetView<'_>| {
///     fleet.stamps().min_by_key(|s| (s.tenants(), s.id())).map(|s| s.id())
///         .ok_or(PlacementError::Policy { reason: "empty fleet" })
/// });
/// let fleet = Fleet::default();
/// assert!(fewest.place(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Placement: Send + Sync {
    /// Chooses a stamp for `tenant`.
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError>;

    /// Explains the decision: the outcome and, for each stamp, the filter that rejected it or
    /// its score. Allocates (it is for people); the default says only which stamp was chosen.
    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        Explanation::opaque(tenant, fleet, self.place(tenant, fleet))
    }
}

/// Helps closure type inference: returns `f` unchanged, as a [`Placement`].
///
/// ```
/// use stamps::placement::{from_fn, Placement, PlacementError};
/// let p = from_fn(|_, fleet| fleet.stamps().next().map(|s| s.id())
///     .ok_or(PlacementError::Policy { reason: "no stamps" }));
/// fn takes(_: &dyn Placement) {}
/// takes(&p);
/// ```
pub fn from_fn<F>(f: F) -> F
where
    F: Fn(&TenantSpec, &FleetView<'_>) -> Result<StampId, PlacementError> + Send + Sync,
{
    f
}

impl<F> Placement for F
where
    F: Fn(&TenantSpec, &FleetView<'_>) -> Result<StampId, PlacementError> + Send + Sync,
{
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        self(tenant, fleet)
    }
}

impl Placement for &dyn Placement {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        (**self).place(tenant, fleet)
    }
    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        (**self).explain(tenant, fleet)
    }
}

impl Placement for Box<dyn Placement> {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        (**self).place(tenant, fleet)
    }
    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        (**self).explain(tenant, fleet)
    }
}

impl<P: Placement + ?Sized> Placement for std::sync::Arc<P> {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        (**self).place(tenant, fleet)
    }
    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        (**self).explain(tenant, fleet)
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn Placement, _: &dyn StampFilter, _: &dyn Scorer) {}

/// Calls `f(resource, hard limit, usage, tenant's demand incl. its slot)` for each limited
/// resource of `load`, in resource order, stopping at the first `Err`. One merge pass over the
/// three sorted lists instead of a binary search per lookup: this is the decision's inner loop.
#[inline]
pub(crate) fn try_each_limit<'s, E>(
    load: &'s StampLoad,
    demand: &crate::model::Demand,
    mut f: impl FnMut(&'s Resource, Amount, Amount, Amount) -> Result<(), E>,
) -> Result<(), E> {
    let mut usage = load.usage.iter().peekable();
    let mut wants = demand.iter().peekable();
    for (r, limit) in load.stamp.spec.capacity.limits().iter() {
        let mut used = Amount::ZERO;
        while let Some((ur, ua)) = usage.peek() {
            match (*ur).cmp(r) {
                std::cmp::Ordering::Less => {
                    usage.next();
                }
                std::cmp::Ordering::Equal => {
                    used = *ua;
                    usage.next();
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        let wanted = if *r == Resource::Tenants {
            Amount::units(1)
        } else {
            let mut w = Amount::ZERO;
            while let Some((dr, da)) = wants.peek() {
                match (*dr).cmp(r) {
                    std::cmp::Ordering::Less => {
                        wants.next();
                    }
                    std::cmp::Ordering::Equal => {
                        w = *da;
                        wants.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            w
        };
        f(r, limit, used, wanted)?;
    }
    Ok(())
}

/// `limit × (1 − headroom)` rounded down, as [`HeadroomFraction::soft_limit`], without the
/// 128-bit division when the product fits in 64 bits.
#[inline]
pub(crate) fn soft_limit(headroom: HeadroomFraction, limit: Amount) -> Amount {
    let keep = u64::from(1_000_000 - headroom.as_ppm());
    match limit.as_milli().checked_mul(keep) {
        Some(p) => Amount::from_milli(p / 1_000_000),
        None => headroom.soft_limit(limit),
    }
}

/// A restriction an enclosing combinator puts on the stamps a policy may choose.
pub(crate) trait Mask: Send + Sync {
    /// `Ok` if `load` may be chosen, else the rejection of the filter that excludes it.
    fn check<'s>(&self, load: &'s StampLoad) -> Result<(), Rejection<'s>>;
}

/// What a placement decision reads: a fleet snapshot, a health view, and the restrictions of
/// enclosing combinators. `Copy`; borrows everything, so making one allocates nothing.
///
/// ```
/// use std::collections::HashMap;
/// use stamps::placement::FleetView;
/// use stamps::*;
/// let fleet = Fleet::default();
/// let mut health = HashMap::new();
/// health.insert(StampId(3), HealthStatus::Unhealthy);
/// let view = FleetView::new(&fleet).with_health(&health);
/// assert_eq!(view.health(StampId(3)), HealthStatus::Unhealthy);
/// assert_eq!(view.stamps().count(), 0);
/// ```
#[derive(Clone, Copy)]
pub struct FleetView<'a> {
    fleet: &'a Fleet,
    health: &'a dyn HealthView,
    mask: Option<&'a dyn Mask>,
}

impl fmt::Debug for FleetView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetView")
            .field("stamps", &self.fleet.stamps.len())
            .field("version", &self.fleet.version)
            .field("masked", &self.mask.is_some())
            .finish()
    }
}

impl<'a> FleetView<'a> {
    /// A view of `fleet` in which every stamp is healthy.
    pub fn new(fleet: &'a Fleet) -> FleetView<'a> {
        FleetView {
            fleet,
            health: &AllHealthy,
            mask: None,
        }
    }

    /// The same view with health from `health`.
    pub fn with_health(self, health: &'a dyn HealthView) -> FleetView<'a> {
        FleetView { health, ..self }
    }

    pub(crate) fn with_mask<'b>(&self, mask: &'b dyn Mask) -> FleetView<'b>
    where
        'a: 'b,
    {
        FleetView {
            fleet: self.fleet,
            health: self.health,
            mask: Some(mask),
        }
    }

    /// The whole snapshot, including stamps that enclosing combinators exclude.
    pub fn fleet(&self) -> &'a Fleet {
        self.fleet
    }

    /// The health view.
    pub fn health_view(&self) -> &'a dyn HealthView {
        self.health
    }

    /// A stamp's health.
    pub fn health(&self, stamp: StampId) -> HealthStatus {
        self.health.status(stamp)
    }

    /// The stamps a policy may choose from, in id order: every stamp of the snapshot that no
    /// enclosing combinator excludes.
    pub fn stamps(&self) -> impl Iterator<Item = &'a StampLoad> + '_ {
        self.fleet.stamps.iter().filter(move |l| self.admits(l).is_ok())
    }

    /// The stamp with `id`, if it is in the snapshot and not excluded.
    pub fn get(&self, id: StampId) -> Option<&'a StampLoad> {
        self.fleet.get(id).filter(|l| self.admits(l).is_ok())
    }

    /// `Ok` if no enclosing combinator excludes `load`, else the rejection of the filter that
    /// does.
    pub fn admits<'s>(&self, load: &'s StampLoad) -> Result<(), Rejection<'s>> {
        match self.mask {
            Some(m) => m.check(load),
            None => Ok(()),
        }
    }

    /// Number of stamps in the snapshot (excluded ones included).
    pub fn len(&self) -> usize {
        self.fleet.stamps.len()
    }

    /// Whether the snapshot has no stamps.
    pub fn is_empty(&self) -> bool {
        self.fleet.stamps.is_empty()
    }
}

/// Which filter rejected a stamp.
///
/// ```
/// use stamps::placement::FilterKind;
/// assert_eq!(FilterKind::Headroom.as_str(), "headroom");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FilterKind {
    /// The tenant is pinned to another stamp.
    Pin,
    /// The stamp is outside the tenant's residency.
    Residency,
    /// The stamp is of another tier, or dedicated and occupied.
    Tier,
    /// The stamp is not `Active`.
    State,
    /// The stamp is unhealthy.
    Health,
    /// The stamp is outside the tenant's region.
    Region,
    /// The stamp lacks a label the policy requires.
    Label,
    /// The stamp does not match the tenant's affinity labels.
    Affinity,
    /// The stamp matches one of the tenant's anti-affinity labels.
    AntiAffinity,
    /// A combinator's filter or a user-defined filter.
    Custom,
    /// The tenant's demand does not fit under a limit with headroom.
    Headroom,
}

impl FilterKind {
    const COUNT: usize = 11;
    const ALL: [FilterKind; FilterKind::COUNT] = [
        FilterKind::Pin,
        FilterKind::Residency,
        FilterKind::Tier,
        FilterKind::State,
        FilterKind::Health,
        FilterKind::Region,
        FilterKind::Label,
        FilterKind::Affinity,
        FilterKind::AntiAffinity,
        FilterKind::Custom,
        FilterKind::Headroom,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The filter's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FilterKind::Pin => "pin",
            FilterKind::Residency => "residency",
            FilterKind::Tier => "tier",
            FilterKind::State => "state",
            FilterKind::Health => "health",
            FilterKind::Region => "region",
            FilterKind::Label => "label",
            FilterKind::Affinity => "affinity",
            FilterKind::AntiAffinity => "anti-affinity",
            FilterKind::Custom => "custom",
            FilterKind::Headroom => "headroom",
        }
    }
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a filter rejected one stamp: small and `Copy`, borrowed from the stamp.
///
/// ```
/// use stamps::placement::{FilterKind, Rejection};
/// let r = Rejection::custom("eu-only");
/// assert_eq!((r.kind, r.name), (FilterKind::Custom, "eu-only"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection<'s> {
    /// The kind of filter.
    pub kind: FilterKind,
    /// The filter's name (for custom filters, the name the user gave).
    pub name: &'static str,
    /// For headroom, the first resource that does not fit.
    pub resource: Option<&'s Resource>,
}

impl<'s> Rejection<'s> {
    /// A rejection by a built-in filter kind.
    pub const fn new(kind: FilterKind) -> Rejection<'s> {
        Rejection {
            kind,
            name: kind.as_str(),
            resource: None,
        }
    }

    /// A rejection by a user-defined filter called `name`.
    pub const fn custom(name: &'static str) -> Rejection<'s> {
        Rejection {
            kind: FilterKind::Custom,
            name,
            resource: None,
        }
    }

    /// A headroom rejection on `resource`.
    pub const fn headroom(resource: &'s Resource) -> Rejection<'s> {
        Rejection {
            kind: FilterKind::Headroom,
            name: "headroom",
            resource: Some(resource),
        }
    }
}

/// A summary of why no stamp fitted: how many stamps each filter rejected (each stamp counted
/// once, under the first filter that rejected it), built during the decision without
/// allocating.
///
/// ```
/// use stamps::placement::{policies, FilterKind, FleetView, Placement, PlacementError};
/// use stamps::*;
/// let fleet = Fleet::default();
/// let err = policies::least_loaded()
///     .place(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet))
///     .unwrap_err();
/// assert!(matches!(err, PlacementError::NoStamps));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoFit {
    counts: [u32; FilterKind::COUNT],
    residency: Option<Residency>,
    dedicated: bool,
    headroom_resource: Option<Resource>,
    headroom: HeadroomFraction,
    custom: Option<&'static str>,
}

impl NoFit {
    pub(crate) fn for_tenant(tenant: &TenantSpec) -> NoFit {
        NoFit {
            residency: tenant.residency.clone(),
            dedicated: tenant.tier == Tier::Dedicated,
            ..NoFit::default()
        }
    }

    pub(crate) fn record(&mut self, r: &Rejection<'_>, load: &StampLoad) {
        if let Some(c) = self.counts.get_mut(r.kind.index()) {
            *c = c.saturating_add(1);
        }
        match r.kind {
            FilterKind::Headroom if self.headroom_resource.is_none() => {
                if let Some(res) = r.resource {
                    self.headroom_resource = Some(res.clone());
                    self.headroom = load.stamp.spec.capacity.headroom();
                }
            }
            FilterKind::Custom if self.custom.is_none() => self.custom = Some(r.name),
            _ => {}
        }
    }

    /// Stamps looked at.
    pub fn considered(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, c| a.saturating_add(*c))
    }

    /// Stamps rejected by filters of `kind`.
    pub fn rejected_by(&self, kind: FilterKind) -> u32 {
        self.counts.get(kind.index()).copied().unwrap_or(0)
    }

    /// The first resource that did not fit under headroom, with that stamp's headroom.
    pub fn headroom_resource(&self) -> Option<(&Resource, HeadroomFraction)> {
        self.headroom_resource.as_ref().map(|r| (r, self.headroom))
    }

    /// Whether adding a stamp matching the tenant would let it be placed: every stamp in the
    /// tenant's scope was full, occupied (dedicated) or of another tier or residency, and none
    /// was merely unhealthy, inactive, excluded by the policy, or the pin's only candidate.
    pub fn needs_new_stamp(&self) -> bool {
        let transient = [
            FilterKind::Pin,
            FilterKind::State,
            FilterKind::Health,
            FilterKind::Label,
            FilterKind::Affinity,
            FilterKind::AntiAffinity,
            FilterKind::Custom,
        ];
        transient.iter().all(|k| self.rejected_by(*k) == 0)
    }

    fn reason(kind: FilterKind) -> &'static str {
        match kind {
            FilterKind::Pin => "not the pinned stamp",
            FilterKind::Residency => "outside the tenant's residency",
            FilterKind::Tier => "of another tier or a dedicated stamp already in use",
            FilterKind::State => "not active",
            FilterKind::Health => "unhealthy",
            FilterKind::Region => "outside the tenant's region",
            FilterKind::Label => "missing a required label",
            FilterKind::Affinity => "not matching the tenant's affinity",
            FilterKind::AntiAffinity => "excluded by the tenant's anti-affinity",
            FilterKind::Custom => "excluded by the policy",
            FilterKind::Headroom => "full",
        }
    }

    fn write_reason(&self, f: &mut fmt::Formatter<'_>, kind: FilterKind) -> fmt::Result {
        match (kind, &self.headroom_resource, self.custom) {
            (FilterKind::Headroom, Some(res), _) => {
                let h = self.headroom;
                let keep = 1_000_000 - h.as_ppm();
                if keep % 10_000 == 0 {
                    write!(f, "above {}% {res}", keep / 10_000)
                } else {
                    write!(f, "above {:.1}% {res}", f64::from(keep) / 10_000.0)
                }
            }
            (FilterKind::Custom, _, Some(name)) => write!(f, "excluded by {name}"),
            (FilterKind::Tier, _, _) if self.dedicated => f.write_str("not an empty dedicated stamp"),
            _ => f.write_str(Self::reason(kind)),
        }
    }
}

impl fmt::Display for NoFit {
    /// For example `3 stamps in residency eu, all above 75% connections`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut scope = self.considered();
        let plural = |n: u32| if n == 1 { "stamp" } else { "stamps" };
        match &self.residency {
            Some(r) => {
                scope = scope.saturating_sub(self.rejected_by(FilterKind::Residency));
                write!(f, "{scope} {} in residency {r}", plural(scope))?;
            }
            None => write!(f, "{scope} {}", plural(scope))?,
        }
        if scope == 0 {
            return Ok(());
        }
        let kinds = FilterKind::ALL
            .iter()
            .filter(|k| !(self.residency.is_some() && **k == FilterKind::Residency))
            .filter(|k| self.rejected_by(**k) > 0);
        let mut n_kinds = 0;
        let mut only = None;
        for k in kinds.clone() {
            n_kinds += 1;
            only = Some(*k);
        }
        match only {
            Some(k) if n_kinds == 1 && self.rejected_by(k) == scope => {
                f.write_str(if scope == 1 { ", " } else { ", all " })?;
                self.write_reason(f, k)
            }
            _ => {
                f.write_str(":")?;
                for (i, k) in kinds.enumerate() {
                    write!(f, "{} {} ", if i == 0 { "" } else { "," }, self.rejected_by(*k))?;
                    self.write_reason(f, *k)?;
                }
                Ok(())
            }
        }
    }
}

/// Why a policy found no stamp. Small; building one never allocates (names it holds are
/// reference-counted).
///
/// ```
/// use stamps::placement::{policies, FleetView, Placement, PlacementError};
/// use stamps::*;
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu-west")?,
///     Capacity::new([(Resource::Connections, 100.0)], 0.25)?)?
///     .with_residency(Residency::new("eu")?);
/// let mut usage = Amounts::default();
/// registry::admission::add(&mut usage, &Demand::of([(Resource::Connections, 70.0)])?, true);
/// let fleet = Fleet::new(vec![StampLoad::new(
///     Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage)],
///     Version(1), Timestamp::ZERO);
/// let t = TenantSpec::new(TenantId::new("a")?).with_residency(Residency::new("eu")?)
///     .with_demand(Demand::of([(Resource::Connections, 10.0)])?);
/// let err = policies::least_loaded().place(&t, &FleetView::new(&fleet)).unwrap_err();
/// assert_eq!(err.to_string(),
///     "no stamp fits the tenant: 1 stamp in residency eu, above 75% connections");
/// assert!(err.needs_new_stamp());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// The fleet has no stamps at all.
    #[error("the fleet has no stamps; provision one")]
    NoStamps,
    /// Every stamp was rejected by some filter.
    #[error("no stamp fits the tenant: {0}")]
    NoEligibleStamp(NoFit),
    /// The tenant is pinned to a stamp that is not in the fleet (or that a combinator excludes).
    #[error("the tenant is pinned to {stamp}, which is not in the fleet or is excluded by the policy; fix or remove the pin")]
    PinnedStampMissing {
        /// The pinned stamp.
        stamp: StampId,
    },
    /// The tenant is pinned to a stamp that a hard constraint rejects; it is never placed
    /// elsewhere.
    #[error("the tenant is pinned to {stamp}, which the {kind} filter rejects; fix that stamp or remove the pin")]
    PinnedStampRejected {
        /// The pinned stamp.
        stamp: StampId,
        /// The filter that rejected it.
        kind: FilterKind,
        /// For headroom, the resource that does not fit.
        resource: Option<Resource>,
    },
    /// A user policy declined, for the reason given.
    #[error("the placement policy declined: {reason}")]
    Policy {
        /// Why.
        reason: &'static str,
    },
}

impl PlacementError {
    /// Whether provisioning a stamp for this tenant (its residency, region and tier) would let
    /// it be placed: the fleet is empty, or every stamp in scope is full or occupied.
    pub fn needs_new_stamp(&self) -> bool {
        match self {
            PlacementError::NoStamps => true,
            PlacementError::NoEligibleStamp(n) => n.needs_new_stamp(),
            _ => false,
        }
    }

    /// The per-filter summary, when every stamp was rejected.
    pub fn no_fit(&self) -> Option<&NoFit> {
        match self {
            PlacementError::NoEligibleStamp(n) => Some(n),
            _ => None,
        }
    }
}

/// How the selector breaks ties between equal scores.
///
/// ```
/// use stamps::placement::{policies, TieBreak};
/// let p = policies::least_loaded().tie_break(TieBreak::Rendezvous);
/// # let _ = p;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TieBreak {
    /// The lowest stamp id wins.
    #[default]
    LowestId,
    /// The highest rendezvous hash of (tenant, stamp) wins, which spreads tenants across equal
    /// stamps while staying deterministic.
    Rendezvous,
}

/// A filter → score → select pipeline: the built-in policy type.
///
/// Filters run in this order: the pin (only the pinned stamp is looked at), residency, tier,
/// state, health, the filters of enclosing combinators (`filter`, `prefer`), the filters you
/// add (in the order added), and headroom last. A stamp counts
/// once in a [`NoFit`], under the first filter that rejects it. Eligible stamps are scored by
/// the weighted sum of the scorers; the highest total wins; ties go by [`TieBreak`]. A score
/// that is NaN counts as the lowest possible.
///
/// ```
/// use stamps::placement::{InRegion, LeastLoaded, Pipeline, Rendezvous, RequireLabel};
/// use stamps::Resource;
/// let p = Pipeline::new()
///     .filter(InRegion)
///     .filter(RequireLabel::new("ring", "1"))
///     .score(LeastLoaded::on(Resource::Connections), 1.0)
///     .score(Rendezvous, 0.1);
/// # let _ = p;
/// ```
pub struct Pipeline {
    residency: ResidencyMatch,
    tier: TierMatch,
    active: Active,
    healthy: Healthy,
    filters: Vec<Box<dyn StampFilter>>,
    headroom: FitsHeadroom,
    scorers: Weighted,
    tie_break: TieBreak,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.filters.iter().map(|x| x.name()).collect();
        f.debug_struct("Pipeline")
            .field("filters", &names)
            .field("scorers", &self.scorers)
            .field("tie_break", &self.tie_break)
            .finish()
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline with the hard constraints and no scorer (so the lowest eligible id wins).
    pub fn new() -> Pipeline {
        Pipeline {
            residency: ResidencyMatch,
            tier: TierMatch,
            active: Active,
            healthy: Healthy::default(),
            filters: Vec::new(),
            headroom: FitsHeadroom,
            scorers: Weighted::new(),
            tie_break: TieBreak::LowestId,
        }
    }

    /// Adds a filter, run after the built-in hard constraints and before headroom.
    pub fn filter(mut self, filter: impl StampFilter + 'static) -> Pipeline {
        self.filters.push(Box::new(filter));
        self
    }

    /// Adds a scorer with a weight.
    pub fn score(mut self, scorer: impl Scorer + 'static, weight: f64) -> Pipeline {
        self.scorers = self.scorers.with(scorer, weight);
        self
    }

    /// Excludes `Degraded` stamps too, not only `Unhealthy` ones.
    pub fn avoid_degraded(mut self) -> Pipeline {
        self.healthy = Healthy::strict();
        self
    }

    /// Sets the tie-break.
    pub fn tie_break(mut self, tie_break: TieBreak) -> Pipeline {
        self.tie_break = tie_break;
        self
    }

    /// Runs every filter on one stamp: `Ok` if eligible, else the first rejection.
    ///
    /// ```
    /// use stamps::placement::{FilterKind, FleetView, Pipeline};
    /// use stamps::*;
    /// # let s = |id: u32, st: StampState| -> stamps::Result<StampLoad> { Ok(StampLoad::new(Stamp::new(
    /// #     StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu-west")?,
    /// #         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?, st, Timestamp::ZERO, Timestamp::ZERO),
    /// #     Amounts::default())) };
    /// let fleet = Fleet::default();
    /// let view = FleetView::new(&fleet);
    /// let t = TenantSpec::new(TenantId::new("a")?);
    /// let draining = s(1, StampState::Draining)?;
    /// assert_eq!(Pipeline::new().check(&t, &draining, &view).unwrap_err().kind, FilterKind::State);
    /// assert!(Pipeline::new().check(&t, &s(2, StampState::Active)?, &view).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check<'s>(
        &self,
        tenant: &TenantSpec,
        load: &'s StampLoad,
        fleet: &FleetView<'_>,
    ) -> Result<(), Rejection<'s>> {
        if let Some(pin) = tenant.pin {
            if pin != load.id() {
                return Err(Rejection::new(FilterKind::Pin));
            }
        }
        self.residency.check(tenant, load, fleet)?;
        self.tier.check(tenant, load, fleet)?;
        self.active.check(tenant, load, fleet)?;
        self.healthy.check(tenant, load, fleet)?;
        fleet.admits(load)?;
        for f in &self.filters {
            f.check(tenant, load, fleet)?;
        }
        self.headroom.check(tenant, load, fleet)
    }

    /// The weighted score of an eligible stamp (NaN becomes negative infinity).
    ///
    /// ```
    /// use stamps::placement::{FleetView, Pipeline};
    /// use stamps::*;
    /// # let s = |id: u32, st: StampState| -> stamps::Result<StampLoad> { Ok(StampLoad::new(Stamp::new(
    /// #     StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu-west")?,
    /// #         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?, st, Timestamp::ZERO, Timestamp::ZERO),
    /// #     Amounts::default())) };
    /// let fleet = Fleet::default();
    /// let t = TenantSpec::new(TenantId::new("a")?);
    /// let p = Pipeline::new().score(|_: &TenantSpec, s: &StampLoad| f64::from(s.id().0), 2.0);
    /// assert_eq!(p.total_score(&t, &s(3, StampState::Active)?, &FleetView::new(&fleet)), 6.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn total_score(&self, tenant: &TenantSpec, load: &StampLoad, fleet: &FleetView<'_>) -> f64 {
        let s = self.scorers.score(tenant, load, fleet);
        if s.is_nan() {
            f64::NEG_INFINITY
        } else {
            s
        }
    }

    pub(crate) fn scorers(&self) -> &Weighted {
        &self.scorers
    }

    fn better(&self, tenant: &TenantSpec, a: (f64, StampId), b: (f64, StampId)) -> bool {
        match a.0.total_cmp(&b.0) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => match self.tie_break {
                TieBreak::LowestId => a.1 < b.1,
                TieBreak::Rendezvous => {
                    let (ha, hb) = (
                        scorers::rendezvous_hash(tenant, a.1),
                        scorers::rendezvous_hash(tenant, b.1),
                    );
                    ha > hb || (ha == hb && a.1 < b.1)
                }
            },
        }
    }
}

impl Placement for Pipeline {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        if let Some(pin) = tenant.pin {
            let Some(load) = fleet.get(pin) else {
                return Err(PlacementError::PinnedStampMissing { stamp: pin });
            };
            return match self.check(tenant, load, fleet) {
                Ok(()) => Ok(pin),
                Err(r) => Err(PlacementError::PinnedStampRejected {
                    stamp: pin,
                    kind: r.kind,
                    resource: r.resource.cloned(),
                }),
            };
        }
        if fleet.is_empty() {
            return Err(PlacementError::NoStamps);
        }
        let mut best: Option<(f64, StampId)> = None;
        let mut nofit: Option<NoFit> = None;
        for load in &fleet.fleet().stamps {
            match self.check(tenant, load, fleet) {
                Ok(()) => {
                    let cand = (self.total_score(tenant, load, fleet), load.id());
                    if best.map_or(true, |b| self.better(tenant, cand, b)) {
                        best = Some(cand);
                    }
                }
                Err(r) => {
                    if best.is_none() {
                        nofit.get_or_insert_with(|| NoFit::for_tenant(tenant)).record(&r, load);
                    }
                }
            }
        }
        match best {
            Some((_, id)) => Ok(id),
            None => Err(PlacementError::NoEligibleStamp(
                nofit.unwrap_or_else(|| NoFit::for_tenant(tenant)),
            )),
        }
    }

    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        Explanation::of_pipeline(self, tenant, fleet)
    }
}

/// The guide `docs/placement.md`, compiled and run as doctests.
#[cfg(all(doctest, feature = "proptest"))]
#[doc = include_str!("../../docs/placement.md")]
pub struct PlacementGuide;
