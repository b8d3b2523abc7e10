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
//! [`plan_rebalance`] proposes moves for a person to review. Placing and then assigning through
//! a registry, retrying lost races, is `stamps::registry::place_and_assign`, beside the
//! registry: this module reads snapshots and does no I/O.
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
//! #         .residency(Residency::new(residency)?);
//! #     let mut usage = Amounts::default();
//! #     model::admission::add(&mut usage, &Demand::of([(Resource::Connections, used)])?, true);
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
//!     .residency(Residency::new("eu")?)
//!     .demand(Demand::of([(Resource::Connections, 25.0)])?);
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

mod combinators;
mod error;
mod explain;
mod filters;
mod pipeline;
pub mod policies;
mod rebalance;
mod scorers;

use std::fmt;

pub use combinators::{BoxPlacement, Either, Fallback, Filter, PlacementExt, Prefer};
pub use error::{FilterKind, NoFit, PlacementError, Rejection};
pub use explain::{dry_run, DryRun, Explanation, StampVerdict, Verdict};
pub use filters::{
    named, Active, Affinity, AntiAffinity, FitsHeadroom, Healthy, InRegion, LifetimeMatch, MinVersion, Named,
    OnDesiredConfig, Pinned, RequireLabel, ResidencyMatch, StampFilter, TierMatch, AFFINITY_PREFIX,
    ANTI_AFFINITY_PREFIX,
};
pub use pipeline::{Pipeline, TieBreak};
pub use rebalance::{plan_rebalance, Move, RebalancePlan};
pub use scorers::{
    AtLeastVersion, BinPacking, LeastLoaded, MostAvailable, RegionProximity, Rendezvous, Scorer, Weighted,
};

use crate::model::{
    AllHealthy, Amount, Fleet, Headroom as HeadroomFraction, HealthStatus, HealthView, Resource, StampId, StampLoad,
    TenantSpec,
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

/// The guide `docs/placement.md`, compiled and run as doctests.
#[cfg(all(doctest, feature = "proptest"))]
#[doc = include_str!("../../docs/placement.md")]
pub struct PlacementGuide;
