//! Explanations and dry runs: placement decisions for people to read.

use std::collections::BTreeMap;
use std::fmt;

use super::{FilterKind, FleetView, Pipeline, Placement, PlacementError, Rejection};
use crate::model::admission;
use crate::model::{Fleet, HealthStatus, Region, StampId, StampLoad, StampState, TenantId, TenantSpec, Tier};

/// What happened to one stamp in a decision.
///
/// ```
/// use stamps::placement::{FilterKind, Verdict};
/// fn why(v: &Verdict) -> String {
///     match v {
///         Verdict::Rejected { kind: FilterKind::Headroom, detail, .. } => format!("full: {detail}"),
///         Verdict::Rejected { filter, .. } => format!("rejected by {filter}"),
///         Verdict::Eligible { score, .. } => format!("eligible, score {score:.3}"),
///         _ => "no detail".to_string(),
///     }
/// }
/// assert_eq!(why(&Verdict::Unexplained), "no detail");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Verdict {
    /// A filter rejected the stamp.
    Rejected {
        /// The kind of filter.
        kind: FilterKind,
        /// The filter's name.
        filter: &'static str,
        /// What did not match, with figures.
        detail: String,
    },
    /// The stamp passed every filter and got this total score.
    Eligible {
        /// The weighted total.
        score: f64,
        /// Each scorer's name, weight and unweighted score.
        parts: Vec<(&'static str, f64, f64)>,
    },
    /// The policy does not explain itself (a closure, say); the stamp was not chosen, or was.
    Unexplained,
}

/// One stamp's row in an [`Explanation`].
///
/// ```
/// use stamps::placement::{policies, FleetView, Placement};
/// use stamps::*;
/// # let s = |id: u32, st: StampState| -> stamps::Result<StampLoad> { Ok(StampLoad::new(Stamp::new(
/// #     StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu-west")?,
/// #         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?, st, Timestamp::ZERO, Timestamp::ZERO),
/// #     Amounts::default())) };
/// let fleet = Fleet::new(vec![s(1, StampState::Active)?], Version(1), Timestamp::ZERO);
/// let e = policies::least_loaded().explain(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet));
/// let row = e.row(StampId(1)).unwrap();
/// assert_eq!((row.state, row.health, row.tenants), (StampState::Active, HealthStatus::Healthy, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StampVerdict {
    /// The stamp.
    pub stamp: StampId,
    /// Its name (what name-based filters and people read).
    pub name: String,
    /// Its region.
    pub region: Region,
    /// Its state.
    pub state: StampState,
    /// Its health.
    pub health: HealthStatus,
    /// Tenants on it.
    pub tenants: u64,
    /// Its bottleneck utilization before placement, in `[0, 1]` (`None` without limits).
    pub utilization: Option<f64>,
    /// What happened to it.
    pub verdict: Verdict,
}

/// The outcome of a decision and, for each stamp, why it was rejected or what it scored.
/// `Display` prints a table; the chosen stamp is marked `*`.
///
/// ```
/// use stamps::placement::{policies, FleetView, Placement, Verdict};
/// use stamps::*;
/// # let mk = |id: u32, st: StampState| -> stamps::Result<StampLoad> { Ok(StampLoad::new(Stamp::new(
/// #     StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu-west")?,
/// #         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?, st, Timestamp::ZERO, Timestamp::ZERO),
/// #     Amounts::default())) };
/// let fleet = Fleet::new(vec![mk(1, StampState::Draining)?, mk(2, StampState::Active)?],
///     Version(1), Timestamp::ZERO);
/// let e = policies::least_loaded().explain(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet));
/// assert_eq!(e.outcome, Ok(StampId(2)));
/// assert!(matches!(e.rows[0].verdict, Verdict::Rejected { filter: "state", .. }));
/// println!("{e}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Explanation {
    /// The tenant.
    pub tenant: TenantId,
    /// What the policy decided.
    pub outcome: Result<StampId, PlacementError>,
    /// One row per stamp of the snapshot, in id order.
    pub rows: Vec<StampVerdict>,
    /// Notes from combinators (preferences met or not, fallbacks taken, filters applied).
    pub notes: Vec<String>,
}

fn row(load: &StampLoad, fleet: &FleetView<'_>, verdict: Verdict) -> StampVerdict {
    StampVerdict {
        stamp: load.id(),
        name: load.stamp.spec.name.clone(),
        region: load.stamp.spec.region.clone(),
        state: load.stamp.state,
        health: fleet.health(load.id()),
        tenants: load.tenants(),
        utilization: load.bottleneck().map(|(_, u)| u),
        verdict,
    }
}

fn opt<T: fmt::Display>(x: &Option<T>) -> String {
    x.as_ref().map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// Words and figures for a rejection.
pub(crate) fn describe(r: &Rejection<'_>, tenant: &TenantSpec, load: &StampLoad, fleet: &FleetView<'_>) -> String {
    let spec = &load.stamp.spec;
    match r.kind {
        FilterKind::Pin => format!("tenant is pinned to {}", opt(&tenant.pin)),
        FilterKind::Residency => format!(
            "stamp residency {} is not the tenant's {}",
            opt(&spec.residency),
            opt(&tenant.residency)
        ),
        FilterKind::Tier if r.name == super::error::DEDICATED_IN_USE => {
            format!("dedicated stamp already holds {} tenant(s)", load.tenants())
        }
        FilterKind::Tier => format!("stamp tier {} is not the tenant's {}", spec.tier, tenant.tier),
        FilterKind::State => format!("stamp is {}", load.stamp.state),
        FilterKind::Health => format!("stamp is {}", fleet.health(load.id())),
        FilterKind::Region => format!(
            "stamp region {} is not the tenant's {}",
            spec.region,
            opt(&tenant.region)
        ),
        FilterKind::Headroom => match r.resource {
            Some(res) => {
                let usage = load.usage.get(res);
                let demand = tenant.demand.get_with_slot(res);
                let limit = spec.capacity.limit(res).unwrap_or_default();
                let soft = spec.capacity.soft_limit(res).unwrap_or_default();
                format!(
                    "{res}: {usage} used + {demand} wanted > {soft} ({:.0}% of {limit})",
                    (1.0 - spec.capacity.headroom_for(res).as_fraction()) * 100.0
                )
            }
            None => "does not fit under headroom".to_string(),
        },
        FilterKind::Config => "stamp does not run the desired configuration (drift report)".to_string(),
        FilterKind::Version => format!("stamp version {} is below the minimum", opt(&spec.version)),
        FilterKind::Lifetime => format!(
            "stamp is ephemeral (teardown at {}) and the tenant is not",
            opt(&spec.expires_at)
        ),
        _ => format!("rejected by `{}`", r.name),
    }
}

/// A hint for a tenant left on the default tier in a fleet without a stamp of that tier.
pub(crate) fn tier_hint(
    tenant: &TenantSpec,
    fleet: &FleetView<'_>,
    outcome: &Result<StampId, PlacementError>,
) -> Option<String> {
    let shared = fleet.fleet().stamps.iter().any(|l| l.stamp.spec.tier == tenant.tier);
    (outcome.is_err() && !shared && !fleet.fleet().stamps.is_empty()).then(|| {
        if tenant.tier == Tier::Shared {
            "no stamp in the fleet is of the tenant's tier, shared (the default of TenantSpec::new): \
             give the tenant its tier with TenantSpec::tier"
                .to_string()
        } else {
            format!("no stamp in the fleet is of the tenant's tier, {}", tenant.tier)
        }
    })
}

impl Explanation {
    /// An explanation for a policy that says nothing but its outcome: stamps that enclosing
    /// combinators exclude are shown rejected, the rest [`Verdict::Unexplained`].
    pub fn opaque(tenant: &TenantSpec, fleet: &FleetView<'_>, outcome: Result<StampId, PlacementError>) -> Explanation {
        let rows = fleet
            .fleet()
            .stamps
            .iter()
            .map(|load| {
                let verdict = match fleet.admits(load) {
                    Err(r) => Verdict::Rejected {
                        kind: r.kind,
                        filter: r.name,
                        detail: describe(&r, tenant, load, fleet),
                    },
                    Ok(()) => Verdict::Unexplained,
                };
                row(load, fleet, verdict)
            })
            .collect();
        let mut notes = vec!["the policy does not explain its choice; only the outcome is known".to_string()];
        notes.extend(tier_hint(tenant, fleet, &outcome));
        Explanation {
            tenant: tenant.id.clone(),
            outcome,
            rows,
            notes,
        }
    }

    pub(crate) fn of_pipeline(p: &Pipeline, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        let rows = fleet
            .fleet()
            .stamps
            .iter()
            .map(|load| {
                let verdict = match p.check(tenant, load, fleet) {
                    Err(r) => Verdict::Rejected {
                        kind: r.kind,
                        filter: r.name,
                        detail: describe(&r, tenant, load, fleet),
                    },
                    Ok(()) => Verdict::Eligible {
                        score: p.total_score(tenant, load, fleet),
                        parts: p.scorers().parts(tenant, load, fleet).collect(),
                    },
                };
                row(load, fleet, verdict)
            })
            .collect();
        let outcome = p.place(tenant, fleet);
        let notes = tier_hint(tenant, fleet, &outcome).into_iter().collect();
        Explanation {
            tenant: tenant.id.clone(),
            outcome,
            rows,
            notes,
        }
    }

    /// The row of `stamp`.
    pub fn row(&self, stamp: StampId) -> Option<&StampVerdict> {
        self.rows.iter().find(|r| r.stamp == stamp)
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(id) => writeln!(f, "tenant {} -> {id}", self.tenant)?,
            Err(e) => writeln!(f, "tenant {}: not placed: {e}", self.tenant)?,
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        let width = self
            .rows
            .iter()
            .map(|r| r.name.as_str().len())
            .max()
            .unwrap_or(0)
            .clamp(4, 24);
        writeln!(
            f,
            "  {:<10} {:<width$} {:<12} {:<14} {:<9} {:>7} {:>6}  {:<16} {:>8}  detail",
            "stamp", "name", "region", "state", "health", "tenants", "util", "verdict", "score"
        )?;
        for r in &self.rows {
            let mark = if self.outcome.as_ref().ok() == Some(&r.stamp) {
                '*'
            } else {
                ' '
            };
            let util = r
                .utilization
                .map_or_else(|| "-".to_string(), |u| format!("{:.1}%", u * 100.0));
            let (verdict, score, detail) = match &r.verdict {
                Verdict::Rejected { filter, detail, .. } => (format!("x {filter}"), String::new(), detail.clone()),
                Verdict::Eligible { score, parts } => {
                    let d = parts
                        .iter()
                        .map(|(n, w, s)| format!("{n} {s:.3}×{w}"))
                        .collect::<Vec<_>>()
                        .join(" + ");
                    ("eligible".to_string(), format!("{score:.4}"), d)
                }
                Verdict::Unexplained => ("?".to_string(), String::new(), String::new()),
            };
            writeln!(
                f,
                "{mark} {:<10} {:<width$} {:<12} {:<14} {:<9} {:>7} {:>6}  {:<16} {:>8}  {}",
                r.stamp.to_string(),
                r.name.as_str(),
                r.region.as_str(),
                r.state.as_str(),
                r.health.as_str(),
                r.tenants,
                util,
                verdict,
                score,
                detail
            )?;
        }
        Ok(())
    }
}

/// Where each tenant of a list would land, placed one after another on a simulated copy of the
/// fleet (each placement adds its demand to the copy), without touching any registry.
///
/// ```
/// use stamps::placement::{dry_run, policies, FleetView};
/// use stamps::*;
/// # let mk = |id: u32| -> stamps::Result<StampLoad> { Ok(StampLoad::new(Stamp::new(
/// #     StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu-west")?,
/// #         Capacity::new([(Resource::Tenants, 2.0)], 0.0)?)?, StampState::Active,
/// #     Timestamp::ZERO, Timestamp::ZERO), Amounts::default())) };
/// let fleet = Fleet::new(vec![mk(1)?, mk(2)?], Version(1), Timestamp::ZERO);
/// let tenants: Vec<TenantSpec> = (0..5)
///     .map(|i| Ok(TenantSpec::new(TenantId::new(&format!("t{i}"))?)))
///     .collect::<Result<_, TenantIdError>>()?;
/// let run = dry_run(&policies::least_loaded(), &tenants, &FleetView::new(&fleet));
/// assert_eq!(run.placed(), 4); // two slots on each stamp
/// assert_eq!(run.failed(), 1);
/// println!("{run}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn dry_run<P: Placement + ?Sized>(policy: &P, tenants: &[TenantSpec], fleet: &FleetView<'_>) -> DryRun {
    let mut sim = fleet.fleet().clone();
    let mut placements = Vec::with_capacity(tenants.len());
    for t in tenants {
        let outcome = policy.place(t, &FleetView::new(&sim).with_health(fleet.health_view()));
        if let Ok(id) = outcome {
            if let Ok(i) = sim.stamps.binary_search_by_key(&id, StampLoad::id) {
                if let Some(l) = sim.stamps.get_mut(i) {
                    admission::add(&mut l.usage, &t.demand, true);
                }
            }
        }
        placements.push((t.id.clone(), outcome));
    }
    DryRun { placements, fleet: sim }
}

/// The result of [`dry_run`]. `Display` prints the distribution and the failures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DryRun {
    /// Each tenant with its outcome, in input order.
    pub placements: Vec<(TenantId, Result<StampId, PlacementError>)>,
    /// The simulated fleet after every placement.
    pub fleet: Fleet,
}

impl DryRun {
    /// Tenants placed.
    pub fn placed(&self) -> usize {
        self.placements.iter().filter(|(_, o)| o.is_ok()).count()
    }

    /// Tenants not placed.
    pub fn failed(&self) -> usize {
        self.placements.len() - self.placed()
    }

    /// Tenants placed per stamp.
    pub fn distribution(&self) -> BTreeMap<StampId, usize> {
        let mut m = BTreeMap::new();
        for id in self.placements.iter().filter_map(|(_, o)| o.as_ref().ok()) {
            *m.entry(*id).or_insert(0) += 1;
        }
        m
    }
}

impl fmt::Display for DryRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dry run: {} tenants, {} placed, {} not placed",
            self.placements.len(),
            self.placed(),
            self.failed()
        )?;
        let dist = self.distribution();
        for l in &self.fleet.stamps {
            writeln!(
                f,
                "  {:<10} {:<16} {:<12} +{:<6} now {} tenants",
                l.id().to_string(),
                l.stamp.spec.name.as_str(),
                l.stamp.spec.region.as_str(),
                dist.get(&l.id()).copied().unwrap_or(0),
                l.tenants()
            )?;
        }
        for (t, o) in &self.placements {
            if let Err(e) = o {
                writeln!(f, "  {t}: {e}")?;
            }
        }
        Ok(())
    }
}
