//! Why placement refused: the filter that rejected one stamp ([`FilterKind`], [`Rejection`]),
//! the per-filter summary when no stamp fitted ([`NoFit`]), and [`PlacementError`]. All small;
//! building them never allocates.

use std::fmt;

use crate::model::{Headroom as HeadroomFraction, Residency, Resource, StampId, StampLoad, TenantSpec, Tier};

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
    /// The stamp does not run the desired configuration (see
    /// [`OnDesiredConfig`](super::OnDesiredConfig)).
    Config,
    /// The stamp's deployed version is below the policy's minimum (see
    /// [`MinVersion`](super::MinVersion)).
    Version,
    /// The stamp is ephemeral and the tenant is not (see
    /// [`LifetimeMatch`](super::LifetimeMatch)).
    Lifetime,
}

impl FilterKind {
    const COUNT: usize = 14;
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
        FilterKind::Config,
        FilterKind::Version,
        FilterKind::Lifetime,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Every filter kind, in declaration order.
    ///
    /// ```
    /// use stamps::placement::FilterKind;
    /// assert!(FilterKind::all().any(|k| k == FilterKind::Headroom));
    /// ```
    pub fn all() -> impl Iterator<Item = FilterKind> {
        FilterKind::ALL.into_iter()
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
            FilterKind::Config => "config",
            FilterKind::Version => "version",
            FilterKind::Lifetime => "lifetime",
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
    /// A rejection by a built-in filter kind under a name of its own (the tier filter says
    /// `"dedicated"` for a dedicated stamp already in use).
    pub const fn named(kind: FilterKind, name: &'static str) -> Rejection<'s> {
        Rejection {
            kind,
            name,
            resource: None,
        }
    }

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

/// The name of the tier filter's rejection of a dedicated stamp that already holds a tenant.
pub(crate) const DEDICATED_IN_USE: &str = "dedicated";

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
    /// Per filter kind; saturates at 65,535 stamps (two bytes each keep errors small).
    counts: [u16; FilterKind::COUNT],
    residency: Option<Residency>,
    dedicated: bool,
    headroom_resource: Option<Resource>,
    headroom: HeadroomFraction,
    custom: Option<&'static str>,
    /// Of the tier rejections, dedicated stamps that already hold a tenant.
    occupied: u32,
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
                    self.headroom = load.stamp.spec.capacity.headroom_for(res);
                }
            }
            FilterKind::Custom if self.custom.is_none() => self.custom = Some(r.name),
            FilterKind::Tier if r.name == DEDICATED_IN_USE => self.occupied = self.occupied.saturating_add(1),
            _ => {}
        }
    }

    /// Stamps looked at.
    pub fn considered(&self) -> u32 {
        self.counts.iter().fold(0u32, |a, c| a.saturating_add(u32::from(*c)))
    }

    /// Stamps rejected by filters of `kind`.
    pub fn rejected_by(&self, kind: FilterKind) -> u32 {
        self.counts.get(kind.index()).map_or(0, |c| u32::from(*c))
    }

    /// The first resource that did not fit under headroom, with that stamp's headroom.
    pub fn headroom_resource(&self) -> Option<(&Resource, HeadroomFraction)> {
        self.headroom_resource.as_ref().map(|r| (r, self.headroom))
    }

    /// Whether adding a stamp matching the tenant would let it be placed: is there room for
    /// the tenant among the stamps that could take it?
    ///
    /// Counted are the stamps that take tenants (`Active`), that the policy's own filters
    /// (user filters, version gates) let through and that are not ephemeral (for a long-lived
    /// tenant), in the tenant's scope: the signal is on
    /// when every one of them is full, occupied (dedicated) or of another tier or residency
    /// (or there is none). Stamps that are not active (draining, provisioning, retired),
    /// ephemeral stamps (for a long-lived tenant) and stamps the policy excludes are **not
    /// counted**: they neither take the tenant nor
    /// silence the signal. It is off while a stamp that could take the tenant is merely
    /// unhealthy, off the desired configuration or missing a label the policy or the tenant
    /// asks for, and for a pinned tenant (only its pin can take it).
    pub fn needs_new_stamp(&self) -> bool {
        let silencing = [
            FilterKind::Pin,
            FilterKind::Health,
            FilterKind::Label,
            FilterKind::Affinity,
            FilterKind::AntiAffinity,
            FilterKind::Config,
        ];
        silencing.iter().all(|k| self.rejected_by(*k) == 0)
    }

    /// The stamps [`needs_new_stamp`](Self::needs_new_stamp) counted: those looked at, less
    /// the inactive and ephemeral ones and those the policy's own filters excluded.
    pub fn counted(&self) -> u32 {
        [
            FilterKind::State,
            FilterKind::Custom,
            FilterKind::Version,
            FilterKind::Lifetime,
        ]
        .iter()
        .fold(self.considered(), |n, k| n.saturating_sub(self.rejected_by(*k)))
    }

    /// Of the stamps the tier filter rejected, the dedicated ones already holding a tenant.
    pub fn dedicated_in_use(&self) -> u32 {
        self.occupied
    }

    fn reason(kind: FilterKind) -> &'static str {
        match kind {
            FilterKind::Pin => "not the pinned stamp",
            FilterKind::Residency => "outside the tenant's residency",
            FilterKind::Tier => "of another tier",
            FilterKind::State => "not active",
            FilterKind::Health => "unhealthy",
            FilterKind::Region => "outside the tenant's region",
            FilterKind::Label => "missing a required label",
            FilterKind::Affinity => "not matching the tenant's affinity",
            FilterKind::AntiAffinity => "excluded by the tenant's anti-affinity",
            FilterKind::Custom => "excluded by the policy",
            FilterKind::Headroom => "full",
            FilterKind::Config => "not on the desired configuration",
            FilterKind::Version => "below the minimum version",
            FilterKind::Lifetime => "ephemeral",
        }
    }

    fn write_reason(&self, f: &mut fmt::Formatter<'_>, kind: FilterKind) -> fmt::Result {
        match (kind, &self.headroom_resource, self.custom) {
            (FilterKind::Headroom, Some(res), _) => {
                let h = self.headroom;
                let keep = 1_000_000 - h.as_ppm();
                if keep.is_multiple_of(10_000) {
                    write!(f, "above {}% {res}", keep / 10_000)
                } else {
                    write!(f, "above {:.1}% {res}", f64::from(keep) / 10_000.0)
                }
            }
            (FilterKind::Custom, _, Some(name)) => write!(f, "excluded by {name}"),
            (FilterKind::Tier, _, _) => {
                let other = self.rejected_by(FilterKind::Tier).saturating_sub(self.occupied);
                let other_reason = if self.dedicated {
                    "not dedicated"
                } else {
                    "of another tier"
                };
                match (other, self.occupied) {
                    (_, 0) => f.write_str(other_reason),
                    (0, _) => f.write_str("dedicated and already in use"),
                    (n, m) => write!(f, "{n} {other_reason}, {m} dedicated and already in use"),
                }
            }
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
            Some(k)
                if n_kinds == 1
                    && self.rejected_by(k) == scope
                    && !(k == FilterKind::Tier && self.occupied > 0 && self.occupied < scope) =>
            {
                f.write_str(if scope == 1 { ", " } else { ", all " })?;
                self.write_reason(f, k)
            }
            _ => {
                f.write_str(":")?;
                for (i, k) in kinds.enumerate() {
                    f.write_str(if i == 0 { " " } else { ", " })?;
                    let split_tier = *k == FilterKind::Tier
                        && self.occupied > 0
                        && self.occupied < self.rejected_by(FilterKind::Tier);
                    if !split_tier {
                        write!(f, "{} ", self.rejected_by(*k))?;
                    }
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
///     .residency(Residency::new("eu")?);
/// let mut usage = Amounts::default();
/// model::admission::add(&mut usage, &Demand::of([(Resource::Connections, 70.0)])?, true);
/// let fleet = Fleet::new(vec![StampLoad::new(
///     Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage)],
///     Version(1), Timestamp::ZERO);
/// let t = TenantSpec::new(TenantId::new("a")?).residency(Residency::new("eu")?)
///     .demand(Demand::of([(Resource::Connections, 10.0)])?);
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
