//! Pins, routing overrides and repair records in the in-memory registry.

use std::ops::Bound;
use std::sync::Arc;

use super::State;
use crate::error::{Error, InvalidInput, Result, Subject};
use crate::model::directive::{check_pin, check_redirect};
use crate::model::{
    AssignmentMode, ChangeKind, Decision, Epoch, HistoryAction, HistoryEntry, Pin, Redirect, RouteOverride, StampId,
    StampState, TenantId,
};
use crate::time::Timestamp;

impl State {
    /// The body of `set_pin`, under the write lock.
    pub(super) fn set_pin(
        &mut self,
        tenant: &TenantId,
        stamp: Option<StampId>,
        decision: &Decision,
        now: Timestamp,
        retention: usize,
    ) -> Result<Pin> {
        if let Some(s) = stamp {
            if !self.stamps.contains_key(&s) {
                return Err(Error::NotFound(Subject::Stamp(s)));
            }
        }
        let previous = self.pins.get(tenant).and_then(|p| p.stamp);
        if stamp.is_none() && previous.is_none() {
            return Err(InvalidInput::new("pin", "the tenant has no pin to clear").into());
        }
        let assignment = self.assignments.get(tenant).map(|a| &**a);
        check_pin(assignment, stamp)?;
        let (epoch, mode) = assignment.map_or((Epoch(0), AssignmentMode::Serving), |a| (a.epoch, a.mode));
        let version = self.head.next();
        let pin = Pin::new(tenant.clone(), stamp, decision.clone(), now, version);
        let action = if stamp.is_some() {
            HistoryAction::Pinned
        } else {
            HistoryAction::Unpinned
        };
        let entry = HistoryEntry::new(
            version,
            now,
            tenant.clone(),
            action,
            previous,
            stamp,
            epoch,
            mode,
            Some(decision.actor.clone()),
        )
        .because(Some(decision.reason.clone()));
        self.history.push(entry);
        if let Some(a) = self.assignments.get_mut(tenant) {
            // A copy when the assignment's change still shares it: that change keeps its value.
            Arc::make_mut(a).spec.pin = stamp;
        }
        match stamp {
            Some(_) => self.pins.insert(tenant.clone(), pin.clone()),
            None => self.pins.remove(tenant),
        };
        self.push_change(now, ChangeKind::Pin(Box::new(pin.clone())), retention);
        Ok(pin)
    }

    /// Pins in force after `after`, at most `limit`.
    pub(super) fn pins_page(&self, after: Option<&TenantId>, limit: usize) -> Vec<Pin> {
        let lower = match after {
            Some(t) => Bound::Excluded(t.clone()),
            None => Bound::Unbounded,
        };
        self.pins
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The body of `set_route_override`, under the write lock.
    pub(super) fn set_override(
        &mut self,
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: &Decision,
        now: Timestamp,
        retention: usize,
    ) -> Result<RouteOverride> {
        if !self.stamps.contains_key(&stamp) {
            return Err(Error::NotFound(Subject::Stamp(stamp)));
        }
        if let Some(r) = redirect {
            let target = self.stamps.get(&r.to).ok_or(Error::NotFound(Subject::Stamp(r.to)))?;
            if target.stamp.state == StampState::Decommissioned {
                return Err(InvalidInput::new("redirect", "its target is decommissioned").into());
            }
        } else if !self.overrides.contains_key(&stamp) {
            return Err(InvalidInput::new("redirect", "the stamp has no override to clear").into());
        }
        check_redirect(
            stamp,
            redirect,
            |s| self.overrides.get(&s).and_then(|o| o.redirect),
            |s| {
                self.overrides
                    .values()
                    .any(|o| o.stamp != stamp && o.redirect.is_some_and(|r| r.to == s))
            },
        )?;
        let version = self.head.next();
        let record = RouteOverride::new(stamp, redirect, decision.clone(), now, version);
        match redirect {
            Some(_) => self.overrides.insert(stamp, record.clone()),
            None => self.overrides.remove(&stamp),
        };
        self.override_log.push(record.clone());
        self.push_change(now, ChangeKind::RouteOverride(Box::new(record.clone())), retention);
        Ok(record)
    }

    /// Whether an override in force redirects some stamp to `stamp`.
    pub(super) fn redirect_target(&self, stamp: StampId) -> bool {
        self.overrides
            .values()
            .any(|o| o.redirect.is_some_and(|r| r.to == stamp))
    }

    /// The body of `record_repair`, under the write lock.
    pub(super) fn record_repair(
        &mut self,
        tenant: &TenantId,
        stamp: StampId,
        decision: &Decision,
        now: Timestamp,
        retention: usize,
    ) -> Result<HistoryEntry> {
        if !self.stamps.contains_key(&stamp) {
            return Err(Error::NotFound(Subject::Stamp(stamp)));
        }
        let (epoch, mode) = self
            .assignments
            .get(tenant)
            .map_or((Epoch(0), AssignmentMode::Serving), |a| (a.epoch, a.mode));
        let version = self.head.next();
        let entry = HistoryEntry::new(
            version,
            now,
            tenant.clone(),
            HistoryAction::Repaired,
            None,
            Some(stamp),
            epoch,
            mode,
            Some(decision.actor.clone()),
        )
        .because(Some(decision.reason.clone()));
        self.history.push(entry.clone());
        let kind = ChangeKind::Repaired {
            tenant: tenant.clone(),
            stamp,
        };
        self.push_change(now, kind, retention);
        Ok(entry)
    }
}
