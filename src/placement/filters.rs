//! Filters: hard constraints that remove ineligible stamps.

use super::{FilterKind, FleetView, Rejection};
use crate::model::constraints;
use std::collections::BTreeSet;

use crate::model::{version_at_least, Amount, DriftReport, StampId, StampLoad, TenantSpec};

/// Tenant label prefix for affinity: a tenant label `affinity/KEY = VALUE` requires the stamp
/// to carry the label `KEY = VALUE` (see [`Affinity`]).
pub const AFFINITY_PREFIX: &str = "affinity/";

/// Tenant label prefix for anti-affinity: a tenant label `anti-affinity/KEY = VALUE` excludes
/// stamps carrying the label `KEY = VALUE` (see [`AntiAffinity`]).
pub const ANTI_AFFINITY_PREFIX: &str = "anti-affinity/";

/// A hard constraint on the stamps a tenant may land on.
///
/// # Contract
/// `check` is pure, sync and allocation-free; it returns `Err` with a [`Rejection`] naming the
/// filter (and, for capacity, the resource) when `load` is not eligible for `tenant`.
///
/// # Implementing
/// Closures `Fn(&TenantSpec, &StampLoad) -> bool` implement it (`true` keeps the stamp; the
/// rejection is [`FilterKind::Custom`] named `"filter"`); [`named`] gives one a name for
/// explanations and error messages. Implement the trait for a filter that needs the health
/// view or reports a built-in [`FilterKind`].
///
/// # Example
/// ```
/// use stamps::placement::{named, FleetView, Pipeline, Rejection, StampFilter};
/// use stamps::*;
/// struct Ring1;
/// impl StampFilter for Ring1 {
///     fn name(&self) -> &'static str { "ring-1" }
///     fn check<'s>(&self, _: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>)
///         -> Result<(), Rejection<'s>> {
///         if load.stamp.spec.version.as_deref() == Some("ring1") { Ok(()) }
///         else { Err(Rejection::custom("ring-1")) }
///     }
/// }
/// let p = Pipeline::new()
///     .filter(Ring1)
///     .filter(named("small-tenants", |t: &TenantSpec, _: &StampLoad| {
///         t.demand.get(&Resource::Connections).as_f64() < 100.0
///     }));
/// # let _ = p;
/// ```
pub trait StampFilter: Send + Sync {
    /// The filter's name, for explanations.
    fn name(&self) -> &'static str;

    /// `Ok` if `load` is eligible for `tenant`.
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, fleet: &FleetView<'_>) -> Result<(), Rejection<'s>>;
}

impl<F> StampFilter for F
where
    F: Fn(&TenantSpec, &StampLoad) -> bool + Send + Sync,
{
    fn name(&self) -> &'static str {
        "filter"
    }

    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if self(tenant, load) {
            Ok(())
        } else {
            Err(Rejection::custom("filter"))
        }
    }
}

/// A closure filter with a name (returned by [`named`]).
///
/// ```
/// use stamps::placement::{named, Named, StampFilter};
/// use stamps::{StampLoad, TenantSpec};
/// let f: Named<_> = named("ring-1", |_: &TenantSpec, s: &StampLoad| s.stamp.spec.version.is_some());
/// assert_eq!(f.name(), "ring-1");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Named<F> {
    name: &'static str,
    f: F,
}

/// Names a closure filter, so explanations and errors say which filter rejected a stamp.
///
/// ```
/// use stamps::placement::{named, StampFilter};
/// use stamps::{StampLoad, TenantSpec};
/// let f = named("has-az", |_: &TenantSpec, s: &StampLoad| s.stamp.spec.labels.contains_key("az"));
/// assert_eq!(f.name(), "has-az");
/// ```
pub fn named<F>(name: &'static str, f: F) -> Named<F>
where
    F: Fn(&TenantSpec, &StampLoad) -> bool + Send + Sync,
{
    Named { name, f }
}

impl<F> StampFilter for Named<F>
where
    F: Fn(&TenantSpec, &StampLoad) -> bool + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if (self.f)(tenant, load) {
            Ok(())
        } else {
            Err(Rejection::custom(self.name))
        }
    }
}

macro_rules! unit_filter_doc_example {
    ($ty:ident, $setup:literal, $assert:literal) => {
        concat!(
            "```\n",
            "use stamps::placement::{FleetView, StampFilter, ",
            stringify!($ty),
            "};\n",
            "use stamps::*;\n",
            "# let mk = |st: StampState| -> stamps::Result<StampLoad> { Ok(StampLoad::new(Stamp::new(\n",
            "#     StampSpec::new(StampId(1), \"s1\", Region::new(\"eu-west\")?,\n",
            "#         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.residency(Residency::new(\"eu\")?),\n",
            "#     st, Timestamp::ZERO, Timestamp::ZERO), Amounts::default())) };\n",
            "let fleet = Fleet::default();\n",
            "let view = FleetView::new(&fleet);\n",
            $setup,
            "\n",
            $assert,
            "\n# Ok::<(), Box<dyn std::error::Error>>(())\n```"
        )
    };
}

/// Only `Active` stamps accept tenants.
#[doc = unit_filter_doc_example!(
    Active,
    "let (t, s) = (TenantSpec::new(TenantId::new(\"a\")?), mk(StampState::Draining)?);",
    "assert!(Active.check(&t, &s, &view).is_err());"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Active;

impl StampFilter for Active {
    fn name(&self) -> &'static str {
        "state"
    }
    fn check<'s>(&self, _: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if load.stamp.state.accepts_tenants() {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::State))
        }
    }
}

/// Excludes stamps the health view reports `Unhealthy` (and, when strict, `Degraded`).
///
/// ```
/// use std::collections::HashMap;
/// use stamps::placement::{FleetView, Healthy, StampFilter};
/// use stamps::*;
/// # let s = StampLoad::new(Stamp::new(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
/// #     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?, StampState::Active,
/// #     Timestamp::ZERO, Timestamp::ZERO), Amounts::default());
/// let fleet = Fleet::default();
/// let health = HashMap::from([(StampId(1), HealthStatus::Degraded)]);
/// let view = FleetView::new(&fleet).with_health(&health);
/// let t = TenantSpec::new(TenantId::new("a")?);
/// assert!(Healthy::default().check(&t, &s, &view).is_ok());
/// assert!(Healthy::strict().check(&t, &s, &view).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Healthy {
    strict: bool,
}

impl Healthy {
    /// Also excludes `Degraded` stamps.
    pub fn strict() -> Healthy {
        Healthy { strict: true }
    }
}

impl StampFilter for Healthy {
    fn name(&self) -> &'static str {
        "health"
    }
    fn check<'s>(&self, _: &TenantSpec, load: &'s StampLoad, fleet: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        let h = fleet.health(load.id());
        let ok = if self.strict {
            h == crate::model::HealthStatus::Healthy
        } else {
            h.is_available()
        };
        if ok {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::Health))
        }
    }
}

/// A tenant with a residency lands only on stamps with the same residency. Tenants without one
/// may land anywhere.
#[doc = unit_filter_doc_example!(
    ResidencyMatch,
    "let s = mk(StampState::Active)?; // residency eu\nlet us = TenantSpec::new(TenantId::new(\"a\")?).residency(Residency::new(\"us\")?);",
    "assert!(ResidencyMatch.check(&us, &s, &view).is_err());"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ResidencyMatch;

impl StampFilter for ResidencyMatch {
    fn name(&self) -> &'static str {
        "residency"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if constraints::residency_matches(tenant, &load.stamp.spec) {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::Residency))
        }
    }
}

/// Region as a hard constraint: a tenant with a region lands only in that region. For a soft
/// preference, use `prefer(InRegion)` or the [`RegionProximity`](super::RegionProximity) scorer.
#[doc = unit_filter_doc_example!(
    InRegion,
    "let s = mk(StampState::Active)?; // eu-west\nlet t = TenantSpec::new(TenantId::new(\"a\")?).region(Region::new(\"us-east\")?);",
    "assert!(InRegion.check(&t, &s, &view).is_err());"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct InRegion;

impl StampFilter for InRegion {
    fn name(&self) -> &'static str {
        "region"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        match &tenant.region {
            Some(r) if &load.stamp.spec.region != r => Err(Rejection::new(FilterKind::Region)),
            _ => Ok(()),
        }
    }
}

/// Tiers: a dedicated tenant gets an empty dedicated stamp and nothing else; every other tenant
/// lands only on a stamp of its own tier (so never on a dedicated stamp).
#[doc = unit_filter_doc_example!(
    TierMatch,
    "let s = mk(StampState::Active)?; // shared\nlet t = TenantSpec::new(TenantId::new(\"a\")?).tier(Tier::Dedicated);",
    "assert!(TierMatch.check(&t, &s, &view).is_err());"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TierMatch;

impl StampFilter for TierMatch {
    fn name(&self) -> &'static str {
        "tier"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        // The registry's rules: same tier, and a dedicated stamp holds one tenant.
        let spec = &load.stamp.spec;
        if !constraints::tier_allows(tenant, spec) {
            Err(Rejection::new(FilterKind::Tier))
        } else if !constraints::dedicated_free(spec, load.tenants()) {
            Err(Rejection::named(FilterKind::Tier, super::error::DEDICATED_IN_USE))
        } else {
            Ok(())
        }
    }
}

/// Lifetimes: an ephemeral stamp ([`StampSpec::expires_at`](crate::StampSpec::expires_at))
/// takes only ephemeral tenants ([`TenantSpec::ephemeral`]); long-lived tenants never land on
/// one. Part of every [`Pipeline`](super::Pipeline).
#[doc = unit_filter_doc_example!(
    LifetimeMatch,
    "let mut s = mk(StampState::Active)?;\ns.stamp.spec = s.stamp.spec.clone().expires_at(Timestamp::from_millis(1));\nlet t = TenantSpec::new(TenantId::new(\"a\")?);",
    "assert!(LifetimeMatch.check(&t, &s, &view).is_err());\nassert!(LifetimeMatch.check(&t.clone().ephemeral(), &s, &view).is_ok());"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct LifetimeMatch;

impl StampFilter for LifetimeMatch {
    fn name(&self) -> &'static str {
        "lifetime"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if constraints::lifetime_allows(tenant, &load.stamp.spec) {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::Lifetime))
        }
    }
}

/// The tenant's demand (plus its tenant slot) fits under `limit × (1 − headroom)` on every
/// limited resource of the stamp ([`StampLoad::fits_with_headroom`]).
#[doc = unit_filter_doc_example!(
    FitsHeadroom,
    "let s = mk(StampState::Active)?; // 10 tenant slots, none used\nlet t = TenantSpec::new(TenantId::new(\"a\")?);",
    "assert!(FitsHeadroom.check(&t, &s, &view).is_ok());"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FitsHeadroom;

impl StampFilter for FitsHeadroom {
    fn name(&self) -> &'static str {
        "headroom"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        // The same rule as `StampLoad::fits_with_headroom`, in one merge pass.
        let capacity = &load.stamp.spec.capacity;
        super::try_each_limit(load, &tenant.demand, |r, limit, used, wanted| {
            let after = used.checked_add(wanted).unwrap_or(Amount::from_milli(u64::MAX));
            if after > super::soft_limit(capacity.headroom_for(r), limit) {
                Err(Rejection::headroom(r))
            } else {
                Ok(())
            }
        })
    }
}

/// The pin as a filter: a pinned tenant's only candidate is its stamp. [`Pipeline`](super::Pipeline)
/// applies it already; this is for your own policies.
#[doc = unit_filter_doc_example!(
    Pinned,
    "let s = mk(StampState::Active)?; // stamp 1\nlet t = TenantSpec::new(TenantId::new(\"a\")?).pin(StampId(2));",
    "assert!(Pinned.check(&t, &s, &view).is_err());"
)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Pinned;

impl StampFilter for Pinned {
    fn name(&self) -> &'static str {
        "pin"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if constraints::pin_allows(tenant, load.id()) {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::Pin))
        }
    }
}

/// Only stamps running the desired configuration, as of a drift report
/// ([`drift_report`](crate::model::drift_report), or `stamps::reconcile::collect_drift` from
/// live stamps): new tenants stay off drifted stamps and stamps that did not report until they
/// are brought back in line and the report is taken again.
///
/// ```
/// use stamps::placement::{OnDesiredConfig, Pipeline};
/// use stamps::*;
/// let stamp = |id: u32| {
///     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
///     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
///     StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default())
/// };
/// let fleet = Fleet::new(vec![stamp(1), stamp(2)], Version(0), Timestamp::ZERO);
/// let desired = DesiredConfig::new(RunningConfig::from_settings("v7", [("gc", "g1")]));
/// let running = [
///     (StampId(1), RunningConfig::from_settings("v7", [("gc", "g1")])),
///     (StampId(2), RunningConfig::from_settings("v7", [("gc", "zgc")])),
/// ];
/// let report = drift_report(&fleet, &running, &[], &desired);
/// let policy = Pipeline::new().filter(OnDesiredConfig::from_report(&report));
/// let chosen = policy.place(&TenantSpec::new(TenantId::new("acme")?), &FleetView::new(&fleet))?;
/// assert_eq!(chosen, StampId(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDesiredConfig {
    conforming: BTreeSet<StampId>,
}

impl OnDesiredConfig {
    /// The stamps the report found on the desired configuration.
    pub fn from_report(report: &DriftReport) -> OnDesiredConfig {
        OnDesiredConfig {
            conforming: report.conforming().collect(),
        }
    }
}

impl StampFilter for OnDesiredConfig {
    fn name(&self) -> &'static str {
        "config"
    }
    fn check<'s>(&self, _: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if self.conforming.contains(&load.id()) {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::Config))
        }
    }
}

/// The stamp must carry the label `key = value` (a policy-wide requirement).
///
/// ```
/// use stamps::placement::{Pipeline, RequireLabel};
/// let only_ring1 = Pipeline::new().filter(RequireLabel::new("ring", "1"));
/// # let _ = only_ring1;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireLabel {
    key: String,
    value: String,
}

impl RequireLabel {
    /// Requires `key = value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> RequireLabel {
        RequireLabel {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl StampFilter for RequireLabel {
    fn name(&self) -> &'static str {
        "label"
    }
    fn check<'s>(&self, _: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        if load.stamp.spec.labels.get(&self.key) == Some(&self.value) {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::Label))
        }
    }
}

/// Tenant-declared affinity: for every tenant label `affinity/KEY = VALUE`, the stamp must
/// carry `KEY = VALUE`.
///
/// ```
/// use stamps::placement::{Affinity, FleetView, StampFilter};
/// use stamps::*;
/// # let s = StampLoad::new(Stamp::new(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
/// #     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.label("az", "b"), StampState::Active,
/// #     Timestamp::ZERO, Timestamp::ZERO), Amounts::default());
/// let fleet = Fleet::default();
/// let view = FleetView::new(&fleet);
/// let t = TenantSpec::new(TenantId::new("a")?).label("affinity/az", "b");
/// assert!(Affinity.check(&t, &s, &view).is_ok()); // s is labelled az=b
/// let t = TenantSpec::new(TenantId::new("a")?).label("affinity/az", "c");
/// assert!(Affinity.check(&t, &s, &view).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Affinity;

impl StampFilter for Affinity {
    fn name(&self) -> &'static str {
        "affinity"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        for (k, v) in &tenant.labels {
            if let Some(key) = k.strip_prefix(AFFINITY_PREFIX) {
                if load.stamp.spec.labels.get(key) != Some(v) {
                    return Err(Rejection::new(FilterKind::Affinity));
                }
            }
        }
        Ok(())
    }
}

/// Tenant-declared anti-affinity: for every tenant label `anti-affinity/KEY = VALUE`, the stamp
/// must not carry `KEY = VALUE`.
///
/// ```
/// use stamps::placement::{AntiAffinity, FleetView, StampFilter};
/// use stamps::*;
/// # let s = StampLoad::new(Stamp::new(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
/// #     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.label("az", "b"), StampState::Active,
/// #     Timestamp::ZERO, Timestamp::ZERO), Amounts::default());
/// let fleet = Fleet::default();
/// let view = FleetView::new(&fleet);
/// let t = TenantSpec::new(TenantId::new("a")?).label("anti-affinity/az", "b");
/// assert!(AntiAffinity.check(&t, &s, &view).is_err()); // s is labelled az=b
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AntiAffinity;

impl StampFilter for AntiAffinity {
    fn name(&self) -> &'static str {
        "anti-affinity"
    }
    fn check<'s>(&self, tenant: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        for (k, v) in &tenant.labels {
            if let Some(key) = k.strip_prefix(ANTI_AFFINITY_PREFIX) {
                if load.stamp.spec.labels.get(key) == Some(v) {
                    return Err(Rejection::new(FilterKind::AntiAffinity));
                }
            }
        }
        Ok(())
    }
}

/// The stamp's deployed version ([`StampSpec::version`](crate::StampSpec::version)) is at
/// least `min` ([`version_at_least`]): new tenants go to updated stamps while old ones stay
/// where they are until migrated. A stamp without a version label is rejected.
///
/// ```
/// use stamps::placement::{MinVersion, Pipeline, Placement, FleetView};
/// use stamps::*;
/// let stamp = |id: u32, v: &str| {
///     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
///     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap().version(v);
///     StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default())
/// };
/// let fleet = Fleet::new(vec![stamp(1, "1.9.3"), stamp(2, "1.10.0")], Version(0), Timestamp::ZERO);
/// let policy = Pipeline::new().filter(MinVersion::new("1.10"));
/// assert_eq!(policy.place(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet))?, StampId(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinVersion {
    min: String,
    /// `min` packed, when it is a plain dotted release (the common case).
    key: Option<u64>,
}

impl MinVersion {
    /// Stamps on `min` or later.
    pub fn new(min: impl Into<String>) -> MinVersion {
        let min = min.into();
        let key = crate::model::stamp_version_key(&min);
        MinVersion { min, key }
    }

    /// The minimum.
    pub fn min(&self) -> &str {
        &self.min
    }
}

impl StampFilter for MinVersion {
    fn name(&self) -> &'static str {
        "version"
    }
    fn check<'s>(&self, _: &TenantSpec, load: &'s StampLoad, _: &FleetView<'_>) -> Result<(), Rejection<'s>> {
        let ok = match load.stamp.spec.version.as_deref() {
            Some(v) => match (self.key, crate::model::stamp_version_key(v)) {
                (Some(min), Some(have)) => have >= min,
                _ => version_at_least(v, &self.min),
            },
            None => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Rejection::new(FilterKind::Version))
        }
    }
}
