//! Place and assign: the decision plus the registry's atomic capacity check, with retries.

use std::fmt;

use super::Registry;
use crate::error::{Error, Subject};
use crate::model::{AllHealthy, Assignment, Demand, HealthView, Region, Residency, TenantSpec, Tier};
use crate::placement::{FilterKind, FleetView, Placement, PlacementError};
use crate::telemetry::{self, names, Value};

/// Options for [`place_and_assign_with`].
///
/// ```
/// use std::collections::HashMap;
/// use stamps::registry::AssignOptions;
/// use stamps::{HealthStatus, StampId};
/// let health = HashMap::from([(StampId(2), HealthStatus::Unhealthy)]);
/// let opts = AssignOptions::default().max_attempts(5).health(&health);
/// assert_eq!(opts.max_attempts, 5);
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct AssignOptions<'a> {
    /// Stamp health for the placement decisions (default: all healthy).
    pub health: &'a dyn HealthView,
    /// Attempts (fleet read, decision, assign) before giving up on lost races; at least 1
    /// (default 3).
    pub max_attempts: u32,
}

impl Default for AssignOptions<'_> {
    fn default() -> Self {
        AssignOptions {
            health: &AllHealthy,
            max_attempts: 3,
        }
    }
}

impl fmt::Debug for AssignOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssignOptions")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl<'a> AssignOptions<'a> {
    /// Sets the attempt limit (at least 1).
    pub fn max_attempts(self, n: u32) -> Self {
        AssignOptions {
            max_attempts: n.max(1),
            ..self
        }
    }

    /// Uses `health` for the decisions.
    pub fn health(self, health: &'a dyn HealthView) -> Self {
        AssignOptions { health, ..self }
    }
}

/// What a new stamp should look like for a tenant that fits nowhere: a signal for the host's
/// provisioning (the library provisions nothing).
///
/// ```
/// use stamps::registry::ProvisionRequest;
/// use stamps::*;
/// let t = TenantSpec::new(TenantId::new("acme")?).residency(Residency::new("eu")?);
/// let p = ProvisionRequest::for_tenant(&t);
/// assert_eq!(p.to_string(), "provision a shared stamp with residency eu");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvisionRequest {
    /// The tier the stamp needs.
    pub tier: Tier,
    /// The residency the stamp needs, if the tenant has one.
    pub residency: Option<Residency>,
    /// The tenant's region, if it has one.
    pub region: Option<Region>,
    /// The demand of the tenant that did not fit.
    pub demand: Demand,
}

impl ProvisionRequest {
    /// A stamp that `tenant` could go to.
    pub fn for_tenant(tenant: &TenantSpec) -> ProvisionRequest {
        ProvisionRequest {
            tier: tenant.tier.clone(),
            residency: tenant.residency.clone(),
            region: tenant.region.clone(),
            demand: tenant.demand.clone(),
        }
    }
}

impl fmt::Display for ProvisionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "provision a {} stamp", self.tier)?;
        if let Some(r) = &self.region {
            write!(f, " in region {r}")?;
        }
        if let Some(r) = &self.residency {
            write!(f, " with residency {r}")?;
        }
        Ok(())
    }
}

/// Why [`place_and_assign`] did not assign the tenant.
///
/// ```
/// use stamps::registry::PlaceAndAssignError;
/// fn next_step(e: &PlaceAndAssignError) -> &'static str {
///     match e {
///         PlaceAndAssignError::NoFit { provision: Some(_), .. } => "provision a stamp",
///         PlaceAndAssignError::NoFit { .. } => "fix the pin, health or policy",
///         PlaceAndAssignError::LostRaces { .. } => "retry later",
///         _ => "check the registry",
///     }
/// }
/// # let _ = next_step;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceAndAssignError {
    /// The policy found no stamp. `provision` is set when a new stamp like it would let the
    /// tenant be placed (the fleet is full for this tenant).
    #[error("{error}{}", provision.as_ref().map(|p| format!("; {p}")).unwrap_or_default())]
    NoFit {
        /// The policy's reason.
        error: PlacementError,
        /// The stamp to provision, if that would help.
        provision: Option<ProvisionRequest>,
    },
    /// Every attempt lost a race: the chosen stamp filled up or stopped accepting between the
    /// fleet read and the assignment.
    #[error("lost the race for capacity {attempts} times (last: {last}); retry later or add capacity")]
    LostRaces {
        /// Attempts made.
        attempts: u32,
        /// The registry's last refusal.
        last: Error,
    },
    /// The registry failed (unavailable, tenant already assigned, ...).
    #[error(transparent)]
    Registry(#[from] Error),
}

impl PlaceAndAssignError {
    /// The stamp to provision, when the fleet is full for this tenant.
    pub fn provision(&self) -> Option<&ProvisionRequest> {
        match self {
            PlaceAndAssignError::NoFit { provision, .. } => provision.as_ref(),
            _ => None,
        }
    }
}

/// Places `tenant` with `policy` on a fresh fleet snapshot, then assigns it through the
/// registry's atomic capacity check; if another writer took the room first (the stamp is now
/// full, or no longer active), re-reads the fleet and tries again, up to 3 attempts. All stamps
/// are taken as healthy; see [`place_and_assign_with`]. The tenant's recorded pin
/// ([`Registry::pin`]) constrains the placement as it will constrain the `assign`.
///
/// ```
/// use stamps::placement::policies;
/// use stamps::registry::{place_and_assign, PlaceAndAssignError};
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu-west")?,
///     Capacity::new([(Resource::Tenants, 1.0)], 0.0)?)?).await?;
/// let policy = policies::least_loaded();
/// let a = place_and_assign(&registry, &policy, &TenantSpec::new(TenantId::new("a")?)).await?;
/// assert_eq!(a.stamp, StampId(1));
/// let full = place_and_assign(&registry, &policy, &TenantSpec::new(TenantId::new("b")?)).await;
/// let err = full.unwrap_err();
/// assert!(err.provision().is_some()); // the fleet is full: provision a stamp
/// # Ok(()) }
/// ```
pub async fn place_and_assign<R, P>(
    registry: &R,
    policy: &P,
    tenant: &TenantSpec,
) -> Result<Assignment, PlaceAndAssignError>
where
    R: Registry + ?Sized,
    P: Placement + ?Sized,
{
    place_and_assign_with(registry, policy, tenant, AssignOptions::default()).await
}

/// [`place_and_assign`] with a health view and an attempt limit.
///
/// ```
/// use std::collections::HashMap;
/// use stamps::placement::policies;
/// use stamps::registry::{place_and_assign_with, AssignOptions};
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// for id in [1, 2] {
///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
///         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// }
/// let health = HashMap::from([(StampId(1), HealthStatus::Unhealthy)]);
/// let opts = AssignOptions::default().health(&health);
/// let t = TenantSpec::new(TenantId::new("a")?);
/// let a = place_and_assign_with(&registry, &policies::least_loaded(), &t, opts).await?;
/// assert_eq!(a.stamp, StampId(2));
/// # Ok(()) }
/// ```
pub async fn place_and_assign_with<R, P>(
    registry: &R,
    policy: &P,
    tenant: &TenantSpec,
    options: AssignOptions<'_>,
) -> Result<Assignment, PlaceAndAssignError>
where
    R: Registry + ?Sized,
    P: Placement + ?Sized,
{
    #[cfg(feature = "tracing")]
    let out = {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "stamps.placement",
            tenant = tenant.id.as_str(),
            outcome = tracing::field::Empty
        );
        let out = place_and_assign_inner(registry, policy, tenant, options)
            .instrument(span.clone())
            .await;
        span.record("outcome", decision_label(&out));
        out
    };
    #[cfg(not(feature = "tracing"))]
    let out = place_and_assign_inner(registry, policy, tenant, options).await;
    record_decision(&out);
    out
}

/// The outcome of a placement, as the `outcome` label of [`names::PLACEMENT_DECISIONS`].
fn decision_label(out: &Result<Assignment, PlaceAndAssignError>) -> &'static str {
    match out {
        Ok(_) => "placed",
        Err(PlaceAndAssignError::NoFit { .. }) => "no_fit",
        Err(PlaceAndAssignError::LostRaces { .. }) => "lost_races",
        Err(_) => "error",
    }
}

/// Counts a placement decision, the stamps rejected on the way by filter, and a request for a
/// new stamp.
fn record_decision(out: &Result<Assignment, PlaceAndAssignError>) {
    telemetry::count(
        names::PLACEMENT_DECISIONS,
        &[("outcome", Value::Str(decision_label(out)))],
        1,
    );
    if let Err(PlaceAndAssignError::NoFit { error, provision }) = out {
        #[cfg(feature = "tracing")]
        tracing::debug!(explanation = %error, provision = provision.is_some(), "stamps.placement: no stamp fits");
        let reason = |r: &'static str| [("reason", Value::Str(r))];
        match error {
            PlacementError::NoEligibleStamp(fit) => {
                for kind in FilterKind::all() {
                    let n = fit.rejected_by(kind);
                    if n > 0 {
                        telemetry::count(names::PLACEMENT_REJECTIONS, &reason(kind.as_str()), u64::from(n));
                    }
                }
            }
            PlacementError::NoStamps => telemetry::count(names::PLACEMENT_REJECTIONS, &reason("no_stamps"), 1),
            PlacementError::PinnedStampMissing { .. } | PlacementError::PinnedStampRejected { .. } => {
                telemetry::count(names::PLACEMENT_REJECTIONS, &reason("pin"), 1)
            }
            _ => telemetry::count(names::PLACEMENT_REJECTIONS, &reason("policy"), 1),
        }
        if provision.is_some() {
            telemetry::count(names::PLACEMENT_PROVISION_REQUESTS, &[], 1);
        }
    }
    #[cfg(feature = "tracing")]
    if let Ok(a) = out {
        tracing::debug!(stamp = a.stamp.0, epoch = a.epoch.0, "stamps.placement: placed");
    }
}

async fn place_and_assign_inner<R, P>(
    registry: &R,
    policy: &P,
    tenant: &TenantSpec,
    options: AssignOptions<'_>,
) -> Result<Assignment, PlaceAndAssignError>
where
    R: Registry + ?Sized,
    P: Placement + ?Sized,
{
    let attempts = options.max_attempts.max(1);
    let mut last = None;
    // The tenant's recorded pin constrains placement as the registry will (a spec naming
    // another pin is refused by `assign` itself).
    let recorded = registry.pin(&tenant.id).await?.and_then(|p| p.stamp);
    let pinned;
    let tenant = match recorded {
        Some(p) if tenant.pin.is_none() => {
            pinned = tenant.clone().pin(p);
            &pinned
        }
        _ => tenant,
    };
    for _ in 0..attempts {
        let fleet = registry.fleet().await?;
        let chosen = policy.place(tenant, &FleetView::new(&fleet).with_health(options.health));
        let stamp = match chosen {
            Ok(s) => s,
            Err(error) => {
                // An assigned tenant is not "unplaceable": say what is really wrong.
                if let Some(a) = registry.assignment(&tenant.id).await? {
                    return Err(Error::AlreadyAssigned {
                        tenant: tenant.id.clone(),
                        stamp: a.stamp,
                    }
                    .into());
                }
                let provision =
                    (error.needs_new_stamp() && tenant.pin.is_none()).then(|| ProvisionRequest::for_tenant(tenant));
                return Err(PlaceAndAssignError::NoFit { error, provision });
            }
        };
        match registry.assign(tenant, stamp).await {
            Ok(a) => return Ok(a),
            Err(
                e @ (Error::CapacityExceeded { .. } | Error::NotAccepting { .. } | Error::NotFound(Subject::Stamp(_))),
            ) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    match last {
        Some(last) => Err(PlaceAndAssignError::LostRaces { attempts, last }),
        // Unreachable: every loop iteration returns or sets `last`, and there is at least one.
        None => Err(Error::unavailable("no placement attempt was made").into()),
    }
}
