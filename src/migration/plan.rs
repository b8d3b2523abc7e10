//! The dry run: [`Migrator::plan`] and the [`MigrationPlan`] it returns, with its checks and
//! the steps each state will take.

use std::fmt;

use super::{MigrationConfig, Migrator};
use crate::error::{Error, Result, Subject};
use crate::model::{admission, constraints};
use crate::model::{AssignmentMode, Epoch, MigrationId, MigrationState, StampId, StampState, TenantId};
use crate::registry::RegistryExt;

use MigrationState as S;

impl Migrator {
    /// The dry run: checks whether `tenant` can move to `destination` and lists what each step
    /// will do, without writing anything. Fails only if the tenant has no assignment or the
    /// registry cannot be read; failed checks are in the plan ([`MigrationPlan::is_feasible`]).
    pub async fn plan(&self, tenant: &TenantId, destination: StampId) -> Result<MigrationPlan> {
        let assignment = self
            .registry
            .assignment(tenant)
            .await?
            .ok_or_else(|| Error::NotFound(Subject::Tenant(tenant.clone())))?;
        let fleet = self.registry.fleet().await?;
        let source = assignment.stamp;
        let mut checks = Vec::new();
        checks.push(PlanCheck::new(
            "destination differs from the source",
            destination != source,
            format!("{source} -> {destination}"),
        ));
        let dest = fleet.get(destination);
        checks.push(PlanCheck::new(
            "destination is registered and active",
            dest.is_some_and(|l| l.stamp.state == StampState::Active),
            dest.map_or_else(|| "not registered".to_string(), |l| l.stamp.state.to_string()),
        ));
        checks.push(PlanCheck::new(
            "tenant is serving (no migration mode in place)",
            assignment.mode == AssignmentMode::Serving,
            assignment.mode.to_string(),
        ));
        let history = self.registry.migrations(Some(tenant)).await?;
        let active: Vec<MigrationId> = history
            .iter()
            .filter(|m| !m.state.is_terminal())
            .map(|m| m.id)
            .collect();
        // A failed migration may have left copies on both stamps (a cleanup or rollback that
        // stopped halfway): a new one would merge stale rows back. An operator closes it first.
        let unresolved: Vec<MigrationId> = history
            .iter()
            .filter(|m| m.state == S::Failed && super::resolve::resolution_of(m).is_none())
            .map(|m| m.id)
            .collect();
        checks.push(PlanCheck::new(
            "no other migration in progress for the tenant",
            active.is_empty(),
            if active.is_empty() {
                "none".to_string()
            } else {
                active.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            },
        ));
        checks.push(PlanCheck::new(
            "no failed migration of the tenant left unresolved (Migration::resolve_failed)",
            unresolved.is_empty(),
            if unresolved.is_empty() {
                "none".to_string()
            } else {
                unresolved
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ));
        if destination != source {
            let mut shadowed = assignment.clone();
            shadowed.mode = AssignmentMode::DualWrite { shadow: destination };
            // The registry's hard constraints (residency, pin, tier, dedicated): the same
            // error `create_migration` would give, reported as a failed check.
            let holder = match constraints::dedicated_targets(Some(&assignment), &shadowed, |s| fleet.get(s)).next() {
                Some(_) => self
                    .registry
                    .all_assignments()
                    .await?
                    .into_iter()
                    .find(|a| a.tenant() != tenant && a.stamps().any(|s| s == destination))
                    .map(|a| a.tenant().clone()),
                None => None,
            };
            let allowed = constraints::check(Some(&assignment), &shadowed, |s| fleet.get(s), |_| holder.clone(), None);
            checks.push(PlanCheck::new(
                "destination meets the tenant's constraints (pin, residency, tier, dedicated)",
                allowed.is_ok(),
                match allowed {
                    Ok(()) => "all hold".to_string(),
                    Err(e) => e.to_string(),
                },
            ));
            let fit = admission::check(Some(&assignment), Some(&shadowed), |s| fleet.get(s));
            checks.push(PlanCheck::new(
                "destination has room for the tenant's demand",
                fit.is_ok(),
                match fit {
                    Ok(()) => "fits within hard limits".to_string(),
                    Err(e) => e.to_string(),
                },
            ));
        }
        Ok(MigrationPlan {
            tenant: tenant.clone(),
            source,
            destination,
            epoch: assignment.epoch,
            checks,
            config: self.config.clone(),
        })
    }
}

/// One check of a [`MigrationPlan`].
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::migration::*;
/// # use stamps::*;
/// # use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = Arc::new(InMemoryRegistry::new());
/// # for id in [1, 2] {
/// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
/// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
/// # }
/// # let t = TenantId::new("umbrella")?;
/// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
/// let plan = migrator.plan(&t, StampId(1)).await?; // the stamp it is already on
/// let failed: Vec<_> = plan.checks.iter().filter(|c| !c.ok).map(|c| c.what).collect();
/// assert_eq!(failed, ["destination differs from the source"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanCheck {
    /// What was checked.
    pub what: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl PlanCheck {
    fn new(what: &'static str, ok: bool, detail: String) -> Self {
        PlanCheck { what, ok, detail }
    }
}

/// The dry run of a migration: the checks and the steps, printable with `{}`.
/// Made by [`Migrator::plan`], consumed by [`Migrator::start`].
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::migration::*;
/// # use stamps::*;
/// # use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = Arc::new(InMemoryRegistry::new());
/// # for id in [1, 2] {
/// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
/// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
/// # }
/// # let t = TenantId::new("umbrella")?;
/// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
/// let plan = migrator.plan(&t, StampId(2)).await?;
/// assert!(plan.is_feasible());
/// assert_eq!(plan.steps().len(), 9);
/// assert!(plan.to_string().starts_with("migration plan: tenant umbrella from stamp-001 to stamp-002"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationPlan {
    /// The tenant.
    pub tenant: TenantId,
    /// Its current stamp.
    pub source: StampId,
    /// Where it would go.
    pub destination: StampId,
    /// Its assignment epoch when planned (start refuses if it changed).
    pub epoch: Epoch,
    /// Preconditions.
    pub checks: Vec<PlanCheck>,
    /// The configuration the migration would run with.
    pub config: MigrationConfig,
}

impl MigrationPlan {
    /// Whether every check passed.
    pub fn is_feasible(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The steps, each a state and what its work does.
    pub fn steps(&self) -> Vec<(MigrationState, String)> {
        let (t, s, d) = (&self.tenant, self.source, self.destination);
        let c = &self.config;
        vec![
            (S::Planned, format!("check that {t} is serving on {s} and {d} exists")),
            (S::Snapshotting, format!("snapshot {t}'s data on {s}")),
            (S::Importing, format!("import the snapshot into {d}")),
            (
                S::DualWrite,
                format!("route writes to {s} and {d} (dual-write), fence both stamps, copy what changed since the snapshot"),
            ),
            (S::Validating, "compare row counts and checksums on both stamps".to_string()),
            (
                S::CutOver,
                format!(
                    "freeze writes (at most {:?}), drain through the fences, copy what is left, validate again{}, point {t} at {d} with reverse dual-write to {s}; refused if validation failed or is older than {:?}",
                    c.max_freeze,
                    if c.validate_under_freeze { "" } else { " (disabled)" },
                    c.max_validation_age
                ),
            ),
            (
                S::Soaking,
                format!("serve from {d} for {:?}, checking health; an unhealthy verdict rolls back to {s}", c.soak_window),
            ),
            (S::CleaningUp, format!("stop reverse dual-write, fence {s} off, delete {t}'s data on {s}")),
            (S::Completed, "done".to_string()),
        ]
    }
}

impl fmt::Display for MigrationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "migration plan: tenant {} from {} to {} (assignment epoch {})",
            self.tenant, self.source, self.destination, self.epoch
        )?;
        writeln!(f, "checks:")?;
        for c in &self.checks {
            writeln!(f, "  [{}] {}: {}", if c.ok { "ok" } else { "FAILED" }, c.what, c.detail)?;
        }
        writeln!(f, "steps:")?;
        for (i, (state, what)) in self.steps().iter().enumerate() {
            writeln!(f, "  {}. {:<13} {}", i + 1, state.as_str(), what)?;
        }
        write!(
            f,
            "rollback: possible until cleaning_up starts; cancel: possible before cut_over. {}",
            if self.is_feasible() {
                "feasible: start it with Migrator::start"
            } else {
                "NOT feasible"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::migration::reference::ReferenceDataPlane;
    use crate::model::{Capacity, Region, Residency, Resource, StampSpec, TenantSpec, Tier};
    use crate::registry::{InMemoryRegistry, Registry, RegistryExt};

    const CHECK: &str = "destination meets the tenant's constraints (pin, residency, tier, dedicated)";

    async fn stamp(r: &InMemoryRegistry, id: u32, residency: &str, tier: Tier) {
        let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("r").unwrap(), cap)
            .unwrap()
            .residency(Residency::new(residency).unwrap())
            .tier(tier);
        r.put_active_stamp(spec).await.unwrap();
    }

    /// A plan to a stamp outside the tenant's residency, of another tier, or dedicated and
    /// held by another tenant fails the constraint check, naming the rule; `start` refuses it.
    #[tokio::test]
    async fn plan_reports_broken_constraints() {
        let registry = Arc::new(InMemoryRegistry::new());
        stamp(&registry, 1, "eu", Tier::Dedicated).await;
        stamp(&registry, 2, "us", Tier::Dedicated).await;
        stamp(&registry, 3, "eu", Tier::Shared).await;
        stamp(&registry, 4, "eu", Tier::Dedicated).await;
        stamp(&registry, 5, "eu", Tier::Dedicated).await;
        let dedicated = |n: &str| {
            TenantSpec::new(TenantId::new(n).unwrap())
                .residency(Residency::new("eu").unwrap())
                .tier(Tier::Dedicated)
        };
        registry.assign(&dedicated("a"), StampId(1)).await.unwrap();
        registry.assign(&dedicated("holder"), StampId(4)).await.unwrap();
        let data = Arc::new(ReferenceDataPlane::new((1..=5).map(StampId)));
        let migrator = Migrator::new(registry.clone(), data);
        let tenant = TenantId::new("a").unwrap();
        let failed = |plan: &MigrationPlan| -> Option<String> {
            plan.checks
                .iter()
                .find(|c| c.what == CHECK)
                .filter(|c| !c.ok)
                .map(|c| c.detail.clone())
        };
        for (to, words) in [(2, "residency"), (3, "tier"), (4, "held by tenant holder")] {
            let plan = migrator.plan(&tenant, StampId(to)).await.unwrap();
            let detail = failed(&plan).unwrap_or_else(|| panic!("plan to {to} passed the constraint check: {plan}"));
            assert!(detail.contains(words), "{detail}");
            assert!(!plan.is_feasible());
            assert!(migrator.start(&plan, "test").await.is_err());
        }
        let ok = migrator.plan(&tenant, StampId(5)).await.unwrap();
        assert!(failed(&ok).is_none() && ok.is_feasible(), "{ok}");
    }
}
