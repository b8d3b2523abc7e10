//! [`Pipeline`]: the filter → score → select policy every built-in policy is made of, and
//! [`TieBreak`], how its selector breaks ties.

use std::fmt;

use super::scorers;
use super::{
    Active, Explanation, FilterKind, FitsHeadroom, FleetView, Healthy, LifetimeMatch, NoFit, Placement, PlacementError,
    Rejection, ResidencyMatch, Scorer, StampFilter, TierMatch, Weighted,
};
use crate::model::{StampId, StampLoad, TenantSpec};

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
    lifetime: LifetimeMatch,
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
            lifetime: LifetimeMatch,
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
        self.lifetime.check(tenant, load, fleet)?;
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
                    if best.is_none_or(|b| self.better(tenant, cand, b)) {
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
