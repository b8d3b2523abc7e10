//! A tenant's append-only history: [`HistoryEntry`] and its [`HistoryAction`]s.

use super::assignment::shadow_is_serving;
use super::error::{Error, InvalidInput};
use super::{AssignmentMode, Epoch, Override, StampId, TenantId, Version};
use crate::time::Timestamp;

/// Kinds of entries in a tenant's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum HistoryAction {
    /// First assignment (or re-assignment after an unassign).
    Assigned,
    /// Serving stamp changed.
    Moved,
    /// Mode changed.
    ModeChanged,
    /// Demand changed.
    Resized,
    /// Assignment removed.
    Unassigned,
    /// Pinned to a stamp ([`Registry::set_pin`](crate::Registry::set_pin), or an `assign`
    /// whose spec carries a pin): `to` is the pin, `from` the pin it replaced.
    Pinned,
    /// Pin cleared: `from` is the pin it had.
    Unpinned,
    /// An operator applied a repair to the tenant's copy on `to`
    /// ([`Registry::record_repair`](crate::Registry::record_repair)); `reason` says what and why.
    Repaired,
}

impl HistoryAction {
    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryAction::Assigned => "assigned",
            HistoryAction::Moved => "moved",
            HistoryAction::ModeChanged => "mode_changed",
            HistoryAction::Resized => "resized",
            HistoryAction::Unassigned => "unassigned",
            HistoryAction::Pinned => "pinned",
            HistoryAction::Unpinned => "unpinned",
            HistoryAction::Repaired => "repaired",
        }
    }

    /// Parses a name written by [`HistoryAction::as_str`].
    pub fn parse(s: &str) -> Option<HistoryAction> {
        [
            HistoryAction::Assigned,
            HistoryAction::Moved,
            HistoryAction::ModeChanged,
            HistoryAction::Resized,
            HistoryAction::Unassigned,
            HistoryAction::Pinned,
            HistoryAction::Unpinned,
            HistoryAction::Repaired,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One entry of a tenant's append-only assignment history (what, when, who).
///
/// With `serde`, deserialization runs [`HistoryEntry::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "HistoryEntryRaw"))]
#[non_exhaustive]
pub struct HistoryEntry {
    /// Change-feed version of the write.
    pub version: Version,
    /// When.
    pub at: Timestamp,
    /// The tenant.
    pub tenant: TenantId,
    /// What happened.
    pub action: HistoryAction,
    /// Serving stamp before (none for `Assigned`).
    pub from: Option<StampId>,
    /// Serving stamp after (none for `Unassigned`).
    pub to: Option<StampId>,
    /// Epoch after the write (for `Unassigned`, the epoch of the write that removed it).
    pub epoch: Epoch,
    /// Mode after the write.
    pub mode: AssignmentMode,
    /// Who asked, if recorded.
    pub actor: Option<String>,
    /// The operator override the write used, if any: which constraints it let the write
    /// break, and why.
    #[cfg_attr(feature = "serde", serde(default))]
    pub overrode: Option<Override>,
    /// Why, for operators' writes (pins, repairs): the reason of their
    /// [`Decision`](crate::Decision).
    #[cfg_attr(feature = "serde", serde(default))]
    pub reason: Option<String>,
}

/// [`HistoryEntry`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct HistoryEntryRaw {
    version: Version,
    at: Timestamp,
    tenant: TenantId,
    action: HistoryAction,
    from: Option<StampId>,
    to: Option<StampId>,
    epoch: Epoch,
    mode: AssignmentMode,
    actor: Option<String>,
    #[serde(default)]
    overrode: Option<Override>,
    #[serde(default)]
    reason: Option<String>,
}

#[cfg(feature = "serde")]
impl TryFrom<HistoryEntryRaw> for HistoryEntry {
    type Error = Error;

    fn try_from(r: HistoryEntryRaw) -> Result<HistoryEntry, Error> {
        let e = HistoryEntry::new(
            r.version, r.at, r.tenant, r.action, r.from, r.to, r.epoch, r.mode, r.actor,
        )
        .overriding(r.overrode)
        .because(r.reason);
        e.validate()?;
        Ok(e)
    }
}

impl HistoryEntry {
    /// Checks that the entry is one a registry writes: `Assigned` has no `from` and a `to`,
    /// `Unassigned` a `from` and no `to`, `Moved`, `ModeChanged` and `Resized` both (and
    /// `Moved` two different stamps), `Pinned` a `to` other than its `from`, `Unpinned` a
    /// `from` and no `to`, `Repaired` a `to` and a reason; for assignment writes the mode's
    /// shadow is not the `to` stamp; the actor and reason have no control character.
    /// Deserialization calls it.
    ///
    /// ```
    /// use stamps::*;
    /// let e = |from, to| HistoryEntry::new(Version(1), Timestamp::ZERO, TenantId::new("a").unwrap(),
    ///     HistoryAction::Moved, from, to, Epoch(1), AssignmentMode::Serving, None);
    /// assert!(e(Some(StampId(1)), Some(StampId(2))).validate().is_ok());
    /// assert!(e(Some(StampId(1)), Some(StampId(1))).validate().is_err());
    /// assert!(e(None, Some(StampId(2))).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let ok = match self.action {
            HistoryAction::Assigned => self.from.is_none() && self.to.is_some(),
            HistoryAction::Unassigned => self.from.is_some() && self.to.is_none(),
            HistoryAction::Moved => self.from.is_some() && self.to.is_some() && self.from != self.to,
            HistoryAction::ModeChanged | HistoryAction::Resized => self.from.is_some() && self.to.is_some(),
            HistoryAction::Pinned => self.to.is_some() && self.from != self.to,
            HistoryAction::Unpinned => self.from.is_some() && self.to.is_none(),
            HistoryAction::Repaired => self.to.is_some() && self.reason.is_some(),
        };
        if !ok {
            return Err(InvalidInput::new("from", "the stamps before and after do not fit the action").into());
        }
        let assignment_write = !matches!(
            self.action,
            HistoryAction::Pinned | HistoryAction::Unpinned | HistoryAction::Repaired
        );
        if assignment_write && self.to.is_some() && self.mode.shadow() == self.to {
            return Err(shadow_is_serving());
        }
        if let Some(reason) = &self.reason {
            if reason.chars().any(char::is_control) || reason.len() > super::directive::DECISION_REASON_MAX_LEN {
                return Err(InvalidInput::new("reason", "holds control characters or is too long").into());
            }
        }
        if let Some(actor) = &self.actor {
            super::names::validate_text("actor", actor)?;
        }
        if let Some(o) = &self.overrode {
            o.validate()?;
        }
        Ok(())
    }

    /// Assembles an entry (for registry implementations).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        version: Version,
        at: Timestamp,
        tenant: TenantId,
        action: HistoryAction,
        from: Option<StampId>,
        to: Option<StampId>,
        epoch: Epoch,
        mode: AssignmentMode,
        actor: Option<String>,
    ) -> Self {
        HistoryEntry {
            version,
            at,
            tenant,
            action,
            from,
            to,
            epoch,
            mode,
            actor,
            overrode: None,
            reason: None,
        }
    }

    /// Records the override the write used (for registry implementations).
    ///
    /// ```
    /// use stamps::*;
    /// let e = HistoryEntry::new(Version(1), Timestamp::ZERO, TenantId::new("a")?, HistoryAction::Assigned,
    ///     None, Some(StampId(1)), Epoch(1), AssignmentMode::Serving, Some("alice".into()))
    ///     .overriding(Some(Override::new(ConstraintKind::Pin, "incident 7")));
    /// assert!(e.overrode.is_some_and(|o| o.allows(ConstraintKind::Pin)));
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn overriding(mut self, overrode: Option<Override>) -> Self {
        self.overrode = overrode;
        self
    }

    /// Records why (for registry implementations: an operator's pin or repair).
    ///
    /// ```
    /// use stamps::*;
    /// let e = HistoryEntry::new(Version(4), Timestamp::ZERO, TenantId::new("a")?, HistoryAction::Repaired,
    ///     None, Some(StampId(3)), Epoch(2), AssignmentMode::Serving, Some("bob".into()))
    ///     .because(Some("deleted the orphan copy".into()));
    /// assert!(e.validate().is_ok());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn because(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }
}
