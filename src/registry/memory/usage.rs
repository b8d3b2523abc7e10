//! Stamp usage in the in-memory registry: what an assignment write adds to and releases from
//! its stamps, with checked sums (a sum that would overflow refuses the write instead of
//! saturating and drifting later).

use super::State;
use crate::error::{Error, Result};
use crate::model::{admission, Amounts, Assignment, Resource, StampId};

impl State {
    /// Moves usage from `old`'s stamps to `new`'s (after admission passed). Every sum is
    /// checked before any stamp changes, so an error leaves usage as it was.
    pub(super) fn apply_usage(&mut self, old: Option<&Assignment>, new: Option<&Assignment>) -> Result<()> {
        match (old, new) {
            (None, Some(n)) => self.add_fresh(n),
            _ => self.move_usage(old, new),
        }
    }

    /// A tenant's first assignment (an `assign`, every imported row): additions only, to
    /// distinct stamps, so each stamp is checked where it is and then added to in place.
    fn add_fresh(&mut self, new: &Assignment) -> Result<()> {
        let demand = &new.spec.demand;
        for s in new.stamps() {
            if let Some(l) = self.stamps.get(&s) {
                l.usage
                    .check_add(demand)
                    .map_err(|resource| Error::CapacityExceeded { stamp: s, resource })?;
            }
        }
        for s in new.stamps() {
            if let Some(l) = self.stamps.get_mut(&s) {
                l.usage.apply_demand(demand, true);
            }
        }
        Ok(())
    }

    /// Any other write: releases and additions may meet on one stamp (a mode change), so the
    /// usage after the write is computed on copies, in order, then stored.
    fn move_usage(&mut self, old: Option<&Assignment>, new: Option<&Assignment>) -> Result<()> {
        let mut usage: Vec<(StampId, Amounts)> = Vec::new();
        let mut overflow: Option<(StampId, Resource)> = None;
        admission::apply(old, new, |s, demand, plus| {
            if overflow.is_some() {
                return;
            }
            let mut next = match usage.iter().position(|(id, _)| *id == s) {
                Some(i) => usage.swap_remove(i).1,
                None => match self.stamps.get(&s) {
                    Some(l) => l.usage.clone(),
                    None => return,
                },
            };
            match next.add_demand(demand, plus) {
                Ok(()) => usage.push((s, next)),
                Err(resource) => overflow = Some((s, resource)),
            }
        });
        if let Some((stamp, resource)) = overflow {
            return Err(Error::CapacityExceeded { stamp, resource });
        }
        for (s, u) in usage {
            if let Some(l) = self.stamps.get_mut(&s) {
                l.usage = u;
            }
        }
        Ok(())
    }
}
