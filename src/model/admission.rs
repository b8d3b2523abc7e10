//! Capacity admission shared by registry implementations.
//!
//! A write turns a tenant's old assignment (or none) into a new one (or none). The tenant's
//! demand (plus one tenant slot) is held on every stamp of [`Assignment::stamps`]: the serving
//! stamp and the shadow of a migration. [`check`] decides whether the write is admissible
//! against the stamps' current usage and hard limits; [`apply`] updates the usage. A registry
//! calls both under the same lock or transaction, which is what makes admission atomic.
//!
//! Public so that users implementing [`Registry`](crate::Registry) on their own store get the
//! same rules.
//!
//! ```
//! use stamps::model::admission;
//! use stamps::*;
//! let spec = StampSpec::new(StampId(1), "s1", Region::new("us")?,
//!     Capacity::new([(Resource::Tenants, 1.0)], 0.0)?)?;
//! let load = StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO),
//!     Amounts::default());
//! let tenant = TenantSpec::new(TenantId::new("a")?);
//! let new = Assignment::new(tenant, StampId(1), Epoch(1), AssignmentMode::Serving,
//!     Timestamp::ZERO, Timestamp::ZERO);
//! admission::check(None, Some(&new), |_| Some(&load))?;
//! # Ok::<(), stamps::Error>(())
//! ```

use super::error::{Error, InvalidInput, Result, Subject};
use crate::model::constraints::{self, Constraint, ConstraintViolation};
use crate::model::{
    Amount, Amounts, Assignment, ChangeAction, Demand, HistoryAction, StampId, StampLoad, StampSpec, StampState, Tier,
};

/// Checks that replacing `old` with `new` keeps every stamp within its hard limits, that every
/// stamp newly taking the tenant exists and is `Active`, and that the assignment is well formed
/// (the shadow differs from the serving stamp).
pub fn check<'a>(
    old: Option<&Assignment>,
    new: Option<&Assignment>,
    load: impl Fn(StampId) -> Option<&'a StampLoad>,
) -> Result<()> {
    let Some(new) = new else { return Ok(()) };
    if new.mode.shadow() == Some(new.stamp) {
        return Err(InvalidInput::new("mode", "shadow stamp must differ from the serving stamp").into());
    }
    for stamp in new.stamps() {
        let l = load(stamp).ok_or(Error::NotFound(Subject::Stamp(stamp)))?;
        let held = old.filter(|o| o.stamps().any(|s| s == stamp));
        if held.is_none() && !l.stamp.state.accepts_tenants() {
            return Err(Error::NotAccepting {
                stamp,
                state: l.stamp.state,
            });
        }
        let cap = &l.stamp.spec.capacity;
        for (resource, limit) in cap.limits().iter() {
            let current = l.usage.get(resource);
            let released = held.map_or(Amount::ZERO, |o| o.spec.demand.get_with_slot(resource));
            let after = current
                .saturating_sub(released)
                .checked_add(new.spec.demand.get_with_slot(resource));
            let grows = held.is_none() || new.spec.demand.get_with_slot(resource) > released;
            if grows && after.is_none_or(|a| a > limit) {
                return Err(Error::CapacityExceeded {
                    stamp,
                    resource: resource.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Updates usage for replacing `old` with `new` (after [`check`] passed): calls
/// `update(stamp, demand, plus)` to release the old assignment's demand from each of its stamps
/// (`plus == false`) and to add the new one's (`plus == true`); [`add`] does the arithmetic.
pub fn apply(old: Option<&Assignment>, new: Option<&Assignment>, mut update: impl FnMut(StampId, &Demand, bool)) {
    if let Some(o) = old {
        for s in o.stamps() {
            update(s, &o.spec.demand, false);
        }
    }
    if let Some(n) = new {
        for s in n.stamps() {
            update(s, &n.spec.demand, true);
        }
    }
}

/// Adds (or subtracts) `demand` plus one tenant slot to `usage`; an addition that would
/// overflow stops at the counter's top (after [`check`] passed it cannot).
pub fn add(usage: &mut Amounts, demand: &Demand, plus: bool) {
    usage.apply_demand(demand, plus);
}

/// The assignment a compare-and-set turns `old` into, and the history action it records. The
/// caller sets the epoch and timestamps, then runs [`check`].
///
/// A move to the stamp already serving the tenant is [`Error::InvalidInput`].
///
/// ```
/// use stamps::model::admission;
/// use stamps::*;
/// let a = Assignment::new(TenantSpec::new(TenantId::new("a")?), StampId(1), Epoch(1),
///     AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
/// let (moved, action) = admission::change(&a, &ChangeAction::Move { to: StampId(2), mode: AssignmentMode::Serving })?;
/// assert_eq!((moved.stamp, action), (StampId(2), HistoryAction::Moved));
/// assert!(admission::change(&a, &ChangeAction::Move { to: StampId(1), mode: AssignmentMode::Serving }).is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
pub fn change(old: &Assignment, action: &ChangeAction) -> Result<(Assignment, HistoryAction)> {
    let mut new = old.clone();
    let action = match action {
        ChangeAction::Move { to, mode } => {
            if *to == old.stamp {
                return Err(InvalidInput::new("to", "is the stamp already serving the tenant").into());
            }
            new.stamp = *to;
            new.mode = *mode;
            HistoryAction::Moved
        }
        ChangeAction::SetMode(mode) => {
            new.mode = *mode;
            HistoryAction::ModeChanged
        }
        ChangeAction::Resize(demand) => {
            new.spec.demand = demand.clone();
            HistoryAction::Resized
        }
    };
    Ok((new, action))
}

/// Checks a new spec for a registered stamp: no hard limit may fall below the stamp's current
/// usage ([`Error::CapacityExceeded`]).
///
/// ```
/// use stamps::model::admission;
/// use stamps::*;
/// let spec = |n: f64| StampSpec::new(StampId(1), "s1", Region::new("us")?,
///     Capacity::new([(Resource::Tenants, n)], 0.0)?);
/// let mut usage = Amounts::default();
/// for _ in 0..3 {
///     admission::add(&mut usage, &Demand::default(), true); // three tenants
/// }
/// let load = StampLoad::new(Stamp::new(spec(10.0)?, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage);
/// assert!(admission::check_respec(&load, &spec(3.0)?).is_ok());
/// assert!(matches!(admission::check_respec(&load, &spec(2.0)?), Err(Error::CapacityExceeded { .. })));
/// # Ok::<(), stamps::Error>(())
/// ```
pub fn check_respec(load: &StampLoad, spec: &StampSpec) -> Result<()> {
    for (r, used) in load.usage.iter() {
        if let Some(limit) = spec.capacity.limit(r) {
            if used > limit {
                return Err(Error::CapacityExceeded {
                    stamp: spec.id,
                    resource: r.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Whether re-specifying `load`'s stamp as `spec` changes what its tenants' constraints are
/// checked against (its residency or its tier): then the registry reads the stamp's tenants
/// (under the stamp's lock) for [`check_respec_constraints`]. Other changes (name, labels,
/// endpoint, capacity, version) need no tenant.
///
/// ```
/// use stamps::model::admission;
/// use stamps::*;
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu")?, Capacity::new([(Resource::Tenants, 9.0)], 0.0)?)?;
/// let load = StampLoad::new(Stamp::new(spec.clone(), StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default());
/// assert!(!admission::respec_touches_constraints(&load, &spec.clone().label("ring", "1")));
/// assert!(admission::respec_touches_constraints(&load, &spec.tier(Tier::Dedicated)));
/// # Ok::<(), stamps::Error>(())
/// ```
pub fn respec_touches_constraints(load: &StampLoad, spec: &StampSpec) -> bool {
    let old = &load.stamp.spec;
    old.residency != spec.residency || old.tier != spec.tier || (old.expires_at.is_none() && spec.expires_at.is_some())
}

/// Checks that re-specifying `load`'s stamp as `spec` breaks no constraint of a tenant it holds
/// (serving or as a migration's shadow) that the current spec did not already break: a
/// tenant whose residency the stamp no longer has, whose tier it no longer is, or a stamp made
/// dedicated while holding several tenants. A tenant placed against a rule by an operator
/// override (so already breaking it) does not block a re-spec that keeps breaking it the same
/// way. `tenants` are the stamp's tenants, read under the same lock or transaction.
///
/// Fails with [`Error::ConstraintViolated`] naming the first tenant (in the order given).
///
/// ```
/// use stamps::model::admission;
/// use stamps::*;
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu")?, Capacity::new([(Resource::Tenants, 9.0)], 0.0)?)?
///     .residency(Residency::new("eu")?);
/// let load = StampLoad::new(Stamp::new(spec.clone(), StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default());
/// let tenant = TenantSpec::new(TenantId::new("acme")?).residency(Residency::new("eu")?);
/// let a = Assignment::new(tenant, StampId(1), Epoch(1), AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
/// let moved = spec.clone().residency(Residency::new("us")?);
/// assert!(matches!(admission::check_respec_constraints(&load, &moved, [&a]), Err(Error::ConstraintViolated(_))));
/// assert!(admission::check_respec_constraints(&load, &spec.label("ring", "2"), [&a]).is_ok());
/// # Ok::<(), stamps::Error>(())
/// ```
pub fn check_respec_constraints<'a>(
    load: &StampLoad,
    spec: &StampSpec,
    tenants: impl IntoIterator<Item = &'a Assignment>,
) -> Result<()> {
    let old = &load.stamp.spec;
    let tenants: Vec<&Assignment> = tenants.into_iter().collect();
    for a in &tenants {
        let t = &a.spec;
        let broken = if !constraints::residency_matches(t, spec) && constraints::residency_matches(t, old) {
            t.residency.clone().map(|required| Constraint::Residency {
                required,
                stamp_has: spec.residency.clone(),
            })
        } else if !constraints::tier_allows(t, spec) && constraints::tier_allows(t, old) {
            Some(Constraint::Tier {
                tenant: t.tier.clone(),
                stamp: spec.tier.clone(),
            })
        } else if !constraints::lifetime_allows(t, spec) && constraints::lifetime_allows(t, old) {
            spec.expires_at.map(|expires_at| Constraint::Lifetime { expires_at })
        } else if spec.tier == Tier::Dedicated && old.tier != Tier::Dedicated {
            tenants
                .iter()
                .find(|other| other.tenant() != a.tenant())
                .map(|other| Constraint::Dedicated {
                    holder: other.tenant().clone(),
                })
        } else {
            None
        };
        if let Some(constraint) = broken {
            return Err(Error::ConstraintViolated(ConstraintViolation::new(
                a.tenant().clone(),
                spec.id,
                constraint,
            )));
        }
    }
    Ok(())
}

/// Checks a stamp state change: the transition must be legal ([`StampState::can_become`]) and a
/// stamp that still holds tenants cannot be decommissioned ([`Error::StampNotEmpty`], whose
/// `first` list the registry fills with the tenants it holds). Returns whether the state
/// actually changes (`false`: nothing to write).
///
/// ```
/// use stamps::model::admission;
/// use stamps::*;
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("us")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// let load = StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO),
///     Amounts::default());
/// assert!(admission::check_state_change(&load, StampState::Draining)?);
/// assert!(!admission::check_state_change(&load, StampState::Active)?);
/// # Ok::<(), stamps::Error>(())
/// ```
pub fn check_state_change(load: &StampLoad, state: StampState) -> Result<bool> {
    let current = load.stamp.state;
    current.transition(state)?;
    if current == state {
        return Ok(false);
    }
    if state == StampState::Decommissioned && load.tenants() > 0 {
        return Err(Error::StampNotEmpty {
            stamp: load.id(),
            tenants: load.tenants(),
            first: Vec::new(),
        });
    }
    Ok(true)
}
