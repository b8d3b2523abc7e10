//! Assignments (tenant → stamp), epochs, modes and changes.

use std::fmt;

use super::error::{Error, InvalidInput};
use super::{ConstraintKind, Demand, Override, StampId, TenantId, TenantSpec};
use crate::time::Timestamp;

/// A position in the registry's change feed. Every write gets the next version; versions only
/// grow.
///
/// ```
/// use stamps::Version;
/// assert!(Version(2) > Version(1));
/// assert_eq!(Version::ZERO.next(), Version(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Version(pub u64);

impl Version {
    /// Before the first change.
    pub const ZERO: Version = Version(0);

    /// The following version.
    pub const fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A fencing number on an assignment. It only grows for a tenant, across moves, mode changes
/// and even unassign/reassign (registries take it from the change-feed version of the write).
/// Compare-and-set operations name the epoch they expect; stamps reject writes carrying an
/// older epoch than they know.
///
/// ```
/// use stamps::Epoch;
/// assert!(Epoch(5) > Epoch(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// How a tenant is being served.
///
/// ```
/// use stamps::{AssignmentMode, StampId};
/// let m = AssignmentMode::DualWrite { shadow: StampId(2) };
/// assert_eq!(m.shadow(), Some(StampId(2)));
/// assert!(!m.is_frozen());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum AssignmentMode {
    /// Reads and writes go to the assigned stamp only.
    Serving,
    /// Reads go to the assigned stamp; writes go to it **and** to `shadow` (a migration's other
    /// side). The shadow stamp's capacity is reserved for the tenant.
    DualWrite {
        /// The other stamp receiving writes.
        shadow: StampId,
    },
    /// Writes are paused (cutover): callers retry after `until`. Capacity stays reserved on
    /// `shadow`, if any.
    Frozen {
        /// The stamp on the other side of the cutover, if any.
        shadow: Option<StampId>,
        /// When the freeze ends at the latest.
        until: Timestamp,
    },
}

impl AssignmentMode {
    /// The other stamp holding a copy of the tenant's data, if any.
    pub fn shadow(&self) -> Option<StampId> {
        match *self {
            AssignmentMode::Serving => None,
            AssignmentMode::DualWrite { shadow } => Some(shadow),
            AssignmentMode::Frozen { shadow, .. } => shadow,
        }
    }

    /// Whether the mode is a freeze, ignoring the time. Writes are paused only until the
    /// freeze's `until`: see [`is_frozen_at`](Self::is_frozen_at).
    pub fn is_frozen(&self) -> bool {
        matches!(self, AssignmentMode::Frozen { .. })
    }

    /// Whether writes are paused at `now`: a freeze whose `until` has not come yet. A freeze
    /// is bounded whatever happens to the worker that set it: from `until` on, writes flow as
    /// in dual-write (see [`at`](Self::at)), and a later cutover freezes and validates again.
    ///
    /// ```
    /// use stamps::{AssignmentMode, StampId, Timestamp};
    /// let m = AssignmentMode::Frozen { shadow: Some(StampId(2)), until: Timestamp::from_millis(5_000) };
    /// assert!(m.is_frozen_at(Timestamp::from_millis(4_999)));
    /// assert!(!m.is_frozen_at(Timestamp::from_millis(5_000)));
    /// assert!(!AssignmentMode::Serving.is_frozen_at(Timestamp::ZERO));
    /// ```
    pub fn is_frozen_at(&self, now: Timestamp) -> bool {
        matches!(self, AssignmentMode::Frozen { until, .. } if now < *until)
    }

    /// The mode writes follow at `now`: the mode itself, except that an expired freeze is
    /// dual-write to its shadow (or serving if it has none). The one rule every write path
    /// (router, fence tokens, data planes) applies, so they agree to the millisecond.
    ///
    /// ```
    /// use stamps::{AssignmentMode, StampId, Timestamp};
    /// let m = AssignmentMode::Frozen { shadow: Some(StampId(2)), until: Timestamp::from_millis(5_000) };
    /// assert_eq!(m.at(Timestamp::from_millis(4_000)), m);
    /// assert_eq!(m.at(Timestamp::from_millis(5_000)), AssignmentMode::DualWrite { shadow: StampId(2) });
    /// ```
    pub fn at(&self, now: Timestamp) -> AssignmentMode {
        match *self {
            AssignmentMode::Frozen { shadow, until } if now >= until => {
                shadow.map_or(AssignmentMode::Serving, |shadow| AssignmentMode::DualWrite { shadow })
            }
            mode => mode,
        }
    }

    /// Checks what every stored mode must satisfy: a freeze's `until` fits a signed 64-bit
    /// millisecond count (what every registry can store and read back). Registries call it
    /// through [`Assignment::validate`] and [`AssignmentChange::validate`].
    ///
    /// ```
    /// use stamps::{AssignmentMode, StampId, Timestamp};
    /// let ok = AssignmentMode::Frozen { shadow: Some(StampId(2)), until: Timestamp::from_millis(5_000) };
    /// assert!(ok.validate().is_ok());
    /// let far = AssignmentMode::Frozen { shadow: None, until: Timestamp::from_millis(u64::MAX) };
    /// assert!(far.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            AssignmentMode::Frozen { until, .. } if i64::try_from(until.as_millis()).is_err() => {
                Err(InvalidInput::new(
                    "until",
                    "a freeze must end before 2^63 ms after the Unix epoch (freezes are bounded by max_freeze)",
                )
                .into())
            }
            _ => Ok(()),
        }
    }

    /// The mode's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            AssignmentMode::Serving => "serving",
            AssignmentMode::DualWrite { .. } => "dual_write",
            AssignmentMode::Frozen { .. } => "frozen",
        }
    }
}

impl fmt::Display for AssignmentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignmentMode::Serving => f.write_str("serving"),
            AssignmentMode::DualWrite { shadow } => write!(f, "dual-write to {shadow}"),
            AssignmentMode::Frozen { shadow: Some(s), until } => write!(f, "frozen (with {s}) until {until}"),
            AssignmentMode::Frozen { shadow: None, until } => write!(f, "frozen until {until}"),
        }
    }
}

/// Where a tenant lives: the stamp serving it, the epoch fencing it, and its mode.
///
/// ```
/// # use stamps::*;
/// # async fn demo() -> stamps::Result<()> {
/// # let registry = InMemoryRegistry::new();
/// # registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us")?,
/// #     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// let a = registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
/// assert_eq!(a.stamp, StampId(1));
/// assert_eq!(a.mode, AssignmentMode::Serving);
/// assert_eq!(a.tenant().as_str(), "acme");
/// # Ok(()) }
/// ```
///
/// With `serde`, deserialization runs [`Assignment::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "AssignmentRaw"))]
#[non_exhaustive]
pub struct Assignment {
    /// The tenant's spec as admitted (its demand is what the stamp's usage counts).
    pub spec: TenantSpec,
    /// The stamp serving the tenant.
    pub stamp: StampId,
    /// Fencing epoch.
    pub epoch: Epoch,
    /// Serving mode.
    pub mode: AssignmentMode,
    /// When the tenant was first assigned.
    pub assigned_at: Timestamp,
    /// When the assignment last changed.
    pub updated_at: Timestamp,
}

/// [`Assignment`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct AssignmentRaw {
    spec: TenantSpec,
    stamp: StampId,
    epoch: Epoch,
    mode: AssignmentMode,
    assigned_at: Timestamp,
    updated_at: Timestamp,
}

#[cfg(feature = "serde")]
impl TryFrom<AssignmentRaw> for Assignment {
    type Error = Error;

    fn try_from(r: AssignmentRaw) -> Result<Assignment, Error> {
        let a = Assignment::new(r.spec, r.stamp, r.epoch, r.mode, r.assigned_at, r.updated_at);
        a.validate()?;
        Ok(a)
    }
}

/// The error for a mode whose shadow is the serving stamp itself.
pub(super) fn shadow_is_serving() -> Error {
    InvalidInput::new("mode", "shadow stamp must differ from the serving stamp").into()
}

impl Assignment {
    /// Checks the spec ([`TenantSpec::validate`]) and that the mode's shadow, if any, is not
    /// the serving stamp. Deserialization calls it.
    ///
    /// ```
    /// use stamps::*;
    /// let mut a = Assignment::new(TenantSpec::new(TenantId::new("a")?), StampId(1), Epoch(1),
    ///     AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
    /// assert!(a.validate().is_ok());
    /// a.mode = AssignmentMode::DualWrite { shadow: StampId(1) };
    /// assert!(a.validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        self.spec.validate()?;
        self.mode.validate()?;
        if self.mode.shadow() == Some(self.stamp) {
            return Err(shadow_is_serving());
        }
        Ok(())
    }

    /// Assembles an assignment (for registry implementations).
    pub fn new(
        spec: TenantSpec,
        stamp: StampId,
        epoch: Epoch,
        mode: AssignmentMode,
        assigned_at: Timestamp,
        updated_at: Timestamp,
    ) -> Assignment {
        Assignment {
            spec,
            stamp,
            epoch,
            mode,
            assigned_at,
            updated_at,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.spec.id
    }

    /// Stamps holding (or reserving) the tenant's data: the serving stamp and the shadow, if any.
    pub fn stamps(&self) -> impl Iterator<Item = StampId> {
        let shadow = self.mode.shadow().filter(|s| *s != self.stamp);
        std::iter::once(self.stamp).chain(shadow)
    }
}

/// What a compare-and-set does to an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ChangeAction {
    /// Point the tenant at another stamp, with the given mode (cutover, rollback).
    Move {
        /// New serving stamp.
        to: StampId,
        /// Mode after the move (for example dual-write back to the source during a soak).
        mode: AssignmentMode,
    },
    /// Change only the mode (enter dual-write, freeze, unfreeze).
    SetMode(AssignmentMode),
    /// Change the tenant's recorded demand (capacity-checked on every stamp it occupies).
    Resize(Demand),
}

/// A compare-and-set request: an action and, for the audit history, who asked.
///
/// ```
/// use stamps::{AssignmentChange, AssignmentMode, StampId};
/// let c = AssignmentChange::move_to(StampId(2)).by("migration-17");
/// assert_eq!(c.actor.as_deref(), Some("migration-17"));
/// let d = AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(2) });
/// assert!(d.actor.is_none());
/// ```
///
/// With `serde`, deserialization runs [`AssignmentChange::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "AssignmentChangeRaw"))]
#[non_exhaustive]
pub struct AssignmentChange {
    /// What to do.
    pub action: ChangeAction,
    /// Who or what asked (recorded in the history).
    pub actor: Option<String>,
    /// Constraints the operator explicitly lets this change break, with the reason (recorded
    /// in the history); see [`AssignmentChange::overriding`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub overrides: Option<Override>,
}

/// [`AssignmentChange`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct AssignmentChangeRaw {
    action: ChangeAction,
    actor: Option<String>,
    #[serde(default)]
    overrides: Option<Override>,
}

#[cfg(feature = "serde")]
impl TryFrom<AssignmentChangeRaw> for AssignmentChange {
    type Error = Error;

    fn try_from(r: AssignmentChangeRaw) -> Result<AssignmentChange, Error> {
        let c = AssignmentChange {
            action: r.action,
            actor: r.actor,
            overrides: r.overrides,
        };
        c.validate()?;
        Ok(c)
    }
}

impl AssignmentChange {
    /// Checks what can be checked without the assignment: a move's mode does not shadow the
    /// destination itself, and the actor has no NUL character. Registries call it on every
    /// compare-and-set; deserialization calls it too.
    ///
    /// ```
    /// use stamps::{AssignmentChange, AssignmentMode, StampId};
    /// assert!(AssignmentChange::move_to(StampId(2)).validate().is_ok());
    /// let bad = AssignmentChange::move_with_mode(StampId(2), AssignmentMode::DualWrite { shadow: StampId(2) });
    /// assert!(bad.validate().is_err());
    /// assert!(AssignmentChange::move_to(StampId(2)).by("a\0").validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        match &self.action {
            ChangeAction::Move { to, mode } => {
                mode.validate()?;
                if mode.shadow() == Some(*to) {
                    return Err(shadow_is_serving());
                }
            }
            ChangeAction::SetMode(mode) => mode.validate()?,
            ChangeAction::Resize(_) => {}
        }
        if let Some(actor) = &self.actor {
            super::names::validate_text("actor", actor)?;
        }
        if let Some(o) = &self.overrides {
            o.validate()?;
        }
        Ok(())
    }

    /// Moves the tenant to `to`, serving there.
    pub fn move_to(to: StampId) -> Self {
        Self::new(ChangeAction::Move {
            to,
            mode: AssignmentMode::Serving,
        })
    }

    /// Moves the tenant to `to` with `mode`.
    pub fn move_with_mode(to: StampId, mode: AssignmentMode) -> Self {
        Self::new(ChangeAction::Move { to, mode })
    }

    /// Changes the mode.
    pub fn set_mode(mode: AssignmentMode) -> Self {
        Self::new(ChangeAction::SetMode(mode))
    }

    /// Changes the recorded demand.
    pub fn resize(demand: Demand) -> Self {
        Self::new(ChangeAction::Resize(demand))
    }

    /// A change from an action.
    pub fn new(action: ChangeAction) -> Self {
        AssignmentChange {
            action,
            actor: None,
            overrides: None,
        }
    }

    /// Records who asked.
    pub fn by(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Lets this change break `constraint` (an operator's explicit decision, with a reason),
    /// recorded in the tenant's history with the actor. Call it again to name another
    /// constraint; the last reason given is kept. Without it, registries refuse a change that
    /// breaks a constraint with [`Error::ConstraintViolated`](crate::model::error::Error::ConstraintViolated).
    ///
    /// ```
    /// use stamps::{AssignmentChange, ConstraintKind, StampId};
    /// let c = AssignmentChange::move_to(StampId(7))
    ///     .overriding(ConstraintKind::Residency, "legal approved transfer #123")
    ///     .by("alice");
    /// let o = c.overrides.as_ref().expect("override set");
    /// assert!(o.allows(ConstraintKind::Residency));
    /// assert_eq!(o.reason, "legal approved transfer #123");
    /// ```
    pub fn overriding(mut self, constraint: ConstraintKind, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        self.overrides = Some(match self.overrides.take() {
            Some(o) => {
                let mut o = o.and(constraint);
                o.reason = reason;
                o
            }
            None => Override::new(constraint, reason),
        });
        self
    }
}
