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
//! use stamps::registry::admission;
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

use crate::error::{Error, InvalidInput, Result, Subject};
use crate::model::{Amount, Amounts, Assignment, Demand, Resource, StampId, StampLoad};

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
            if grows && after.map_or(true, |a| a > limit) {
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

/// Adds (or subtracts) `demand` plus one tenant slot to `usage`.
pub fn add(usage: &mut Amounts, demand: &Demand, plus: bool) {
    let slot = std::iter::once((&Resource::Tenants, Amount::units(1)));
    for (r, a) in slot.chain(demand.iter()) {
        let cur = usage.get(r);
        let next = if plus {
            cur.checked_add(a).unwrap_or(Amount::from_milli(u64::MAX))
        } else {
            cur.saturating_sub(a)
        };
        usage.set(r.clone(), next);
    }
}
