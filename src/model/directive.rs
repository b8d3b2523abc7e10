//! Operators' standing directives the registry keeps as tables: per-tenant [`Pin`]s and
//! per-stamp [`RouteOverride`]s, each written with a [`Decision`] (who and why).

use std::fmt;

use super::constraints::{Constraint, ConstraintViolation};
use super::error::{Error, InvalidInput};
use super::{Assignment, StampId, TenantId, TenantSpec, Version};
use crate::time::Timestamp;

/// Longest actor name a [`Decision`] may carry, in bytes.
pub const DECISION_ACTOR_MAX_LEN: usize = 128;
/// Longest reason a [`Decision`] may carry, in bytes.
pub const DECISION_REASON_MAX_LEN: usize = 1024;

/// Who took an operator's decision and why: recorded with every pin, routing override and
/// applied repair.
///
/// ```
/// use stamps::Decision;
/// let d = Decision::new("alice", "stamp-007 restore, ticket OPS-12")?;
/// assert_eq!(d.actor, "alice");
/// assert!(Decision::new("", "why").is_err());
/// assert!(Decision::new("alice", " ").is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "DecisionRaw"))]
#[non_exhaustive]
pub struct Decision {
    /// Who decided (a person or a tool).
    pub actor: String,
    /// Why.
    pub reason: String,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct DecisionRaw {
    actor: String,
    reason: String,
}

#[cfg(feature = "serde")]
impl TryFrom<DecisionRaw> for Decision {
    type Error = Error;

    fn try_from(r: DecisionRaw) -> Result<Decision, Error> {
        Decision::new(r.actor, r.reason)
    }
}

impl Decision {
    /// A checked decision ([`Decision::validate`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or over-long actor or reason, or one holding
    /// control characters.
    pub fn new(actor: impl Into<String>, reason: impl Into<String>) -> Result<Decision, Error> {
        let d = Decision {
            actor: actor.into(),
            reason: reason.into(),
        };
        d.validate()?;
        Ok(d)
    }

    /// Checks the actor (1 to 128 bytes) and the reason (1 to 1024 bytes, not blank), neither
    /// with control characters.
    ///
    /// ```
    /// let mut d = stamps::Decision::new("bob", "drill")?;
    /// d.reason = "a\nb".into();
    /// assert!(d.validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        check_text("actor", &self.actor, DECISION_ACTOR_MAX_LEN)?;
        check_text("reason", &self.reason, DECISION_REASON_MAX_LEN)?;
        Ok(())
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), InvalidInput> {
    if text.trim().is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if text.len() > max {
        return Err(InvalidInput::new(field, "is too long"));
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidInput::new(field, "contains control characters"));
    }
    Ok(())
}

/// A tenant's pin as the registry records it: the stamp the tenant may live on (`None` once
/// cleared), and the decision behind the write.
///
/// A pin belongs to the tenant, not to an assignment: it outlives an unassign and constrains
/// the next `assign`. The registry enforces it in `assign`, `compare_and_set` and
/// `create_migration` ([`ConstraintKind::Pin`](crate::ConstraintKind::Pin)).
///
/// ```
/// use stamps::*;
/// let p = Pin::new(TenantId::new("acme")?, Some(StampId(7)), Decision::new("alice", "GDPR audit")?,
///     Timestamp::ZERO, Version(3));
/// assert_eq!(p.to_string(), "acme pinned to stamp-007 by alice: GDPR audit");
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "PinRaw"))]
#[non_exhaustive]
pub struct Pin {
    /// The tenant.
    pub tenant: TenantId,
    /// The stamp it is pinned to; `None` when this write cleared the pin.
    pub stamp: Option<StampId>,
    /// Who pinned (or unpinned) it, and why.
    pub decision: Decision,
    /// When.
    pub at: Timestamp,
    /// The change-feed version of the write.
    pub version: Version,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct PinRaw {
    tenant: TenantId,
    stamp: Option<StampId>,
    decision: Decision,
    at: Timestamp,
    version: Version,
}

#[cfg(feature = "serde")]
impl TryFrom<PinRaw> for Pin {
    type Error = Error;

    fn try_from(r: PinRaw) -> Result<Pin, Error> {
        let p = Pin::new(r.tenant, r.stamp, r.decision, r.at, r.version);
        p.decision.validate()?;
        Ok(p)
    }
}

impl Pin {
    /// Assembles a pin record (for registry implementations).
    pub fn new(tenant: TenantId, stamp: Option<StampId>, decision: Decision, at: Timestamp, version: Version) -> Pin {
        Pin {
            tenant,
            stamp,
            decision,
            at,
            version,
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stamp {
            Some(s) => write!(f, "{} pinned to {s}", self.tenant)?,
            None => write!(f, "{} unpinned", self.tenant)?,
        }
        write!(f, " by {}: {}", self.decision.actor, self.decision.reason)
    }
}

/// When a [`Redirect`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum RedirectWhen {
    /// Always: the stamp's tenants are routed to the target whatever the stamp's health (a
    /// stamp being restored, or drained by hand).
    Always,
    /// While the stamp is unhealthy and the target healthy, on routers with failover on (a
    /// standby stamp for an active-active pair).
    WhileUnhealthy,
}

impl RedirectWhen {
    /// `always` or `while_unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectWhen::Always => "always",
            RedirectWhen::WhileUnhealthy => "while_unhealthy",
        }
    }

    /// Parses a name written by [`RedirectWhen::as_str`].
    pub fn parse(s: &str) -> Option<RedirectWhen> {
        [RedirectWhen::Always, RedirectWhen::WhileUnhealthy]
            .into_iter()
            .find(|w| w.as_str() == s)
    }
}

/// Where a stamp's tenants are routed instead, and when.
///
/// ```
/// use stamps::{Redirect, RedirectWhen, StampId};
/// let r = Redirect::new(StampId(9), RedirectWhen::WhileUnhealthy);
/// assert_eq!(r.to_string(), "to stamp-009 while unhealthy");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Redirect {
    /// The stamp that serves instead.
    pub to: StampId,
    /// When.
    pub when: RedirectWhen,
}

impl Redirect {
    /// A redirect to `to`.
    pub fn new(to: StampId, when: RedirectWhen) -> Redirect {
        Redirect { to, when }
    }
}

impl fmt::Display for Redirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.when {
            RedirectWhen::Always => write!(f, "to {}", self.to),
            RedirectWhen::WhileUnhealthy => write!(f, "to {} while unhealthy", self.to),
        }
    }
}

/// A per-stamp routing override as the registry records it: "route stamp 7's tenants to
/// stamp 9 while 7 is restored". Every router applies it from the change feed.
///
/// ```
/// use stamps::*;
/// let o = RouteOverride::new(StampId(7), Some(Redirect::new(StampId(9), RedirectWhen::Always)),
///     Decision::new("alice", "restore of stamp-007")?, Timestamp::ZERO, Version(12));
/// assert_eq!(o.to_string(), "stamp-007 routed to stamp-009 by alice: restore of stamp-007");
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RouteOverrideRaw"))]
#[non_exhaustive]
pub struct RouteOverride {
    /// The stamp whose tenants are redirected.
    pub stamp: StampId,
    /// Where to, and when; `None` when this write cleared the override.
    pub redirect: Option<Redirect>,
    /// Who set (or cleared) it, and why.
    pub decision: Decision,
    /// When.
    pub at: Timestamp,
    /// The change-feed version of the write.
    pub version: Version,
}

#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct RouteOverrideRaw {
    stamp: StampId,
    redirect: Option<Redirect>,
    decision: Decision,
    at: Timestamp,
    version: Version,
}

#[cfg(feature = "serde")]
impl TryFrom<RouteOverrideRaw> for RouteOverride {
    type Error = Error;

    fn try_from(r: RouteOverrideRaw) -> Result<RouteOverride, Error> {
        let o = RouteOverride::new(r.stamp, r.redirect, r.decision, r.at, r.version);
        o.validate()?;
        Ok(o)
    }
}

impl RouteOverride {
    /// Assembles an override record (for registry implementations).
    pub fn new(
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: Decision,
        at: Timestamp,
        version: Version,
    ) -> RouteOverride {
        RouteOverride {
            stamp,
            redirect,
            decision,
            at,
            version,
        }
    }

    /// Checks the decision and that the redirect does not point at the stamp itself.
    ///
    /// ```
    /// use stamps::*;
    /// let o = RouteOverride::new(StampId(7), Some(Redirect::new(StampId(7), RedirectWhen::Always)),
    ///     Decision::new("a", "b")?, Timestamp::ZERO, Version(1));
    /// assert!(o.validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        self.decision.validate()?;
        if self.redirect.is_some_and(|r| r.to == self.stamp) {
            return Err(InvalidInput::new("redirect", "points at the stamp itself").into());
        }
        Ok(())
    }
}

impl fmt::Display for RouteOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.redirect {
            Some(Redirect {
                to,
                when: RedirectWhen::Always,
            }) => write!(f, "{} routed to {to}", self.stamp)?,
            Some(Redirect {
                to,
                when: RedirectWhen::WhileUnhealthy,
            }) => write!(f, "{} fails over to {to}", self.stamp)?,
            None => write!(f, "{} routed to itself again", self.stamp)?,
        }
        write!(f, " by {}: {}", self.decision.actor, self.decision.reason)
    }
}

/// Checks a redirect a registry is asked to set for `stamp`, against the overrides in force
/// (`in_force`: stamp → its redirect): the target is another stamp, the target is not itself
/// redirected, and no stamp redirects to `stamp` (a router follows one hop, so chains are
/// refused rather than silently cut). Clearing (`None`) always passes. Both registries call it
/// under the lock or in the transaction of the write.
///
/// ```
/// use stamps::*;
/// use stamps::model::directive::check_redirect;
/// let in_force = [(StampId(1), Redirect::new(StampId(2), RedirectWhen::Always))];
/// let lookup = |s: StampId| in_force.iter().find(|(x, _)| *x == s).map(|(_, r)| *r);
/// let targets = |s: StampId| in_force.iter().any(|(_, r)| r.to == s);
/// assert!(check_redirect(StampId(3), Some(Redirect::new(StampId(4), RedirectWhen::Always)), lookup, targets).is_ok());
/// // 2 is a target: redirecting it would make a chain 1 → 2 → 4.
/// assert!(check_redirect(StampId(2), Some(Redirect::new(StampId(4), RedirectWhen::Always)), lookup, targets).is_err());
/// // 1 → 2 is in force; 3 → 1 would chain.
/// assert!(check_redirect(StampId(3), Some(Redirect::new(StampId(1), RedirectWhen::Always)), lookup, targets).is_err());
/// ```
pub fn check_redirect(
    stamp: StampId,
    redirect: Option<Redirect>,
    in_force: impl Fn(StampId) -> Option<Redirect>,
    is_target: impl Fn(StampId) -> bool,
) -> Result<(), Error> {
    let Some(r) = redirect else {
        return Ok(());
    };
    if r.to == stamp {
        return Err(InvalidInput::new("redirect", "points at the stamp itself").into());
    }
    if in_force(r.to).is_some() {
        return Err(InvalidInput::new("redirect", "its target is itself redirected (routers follow one hop)").into());
    }
    if is_target(stamp) {
        return Err(InvalidInput::new(
            "redirect",
            "other stamps are redirected to this one (routers follow one hop)",
        )
        .into());
    }
    Ok(())
}

/// The spec an `assign` stores, given the tenant's recorded pin: the recorded pin replaces
/// the spec's (so the assignment carries it and every later write enforces it). A spec naming
/// a pin other than the recorded one is refused: change pins with `set_pin`.
///
/// ```
/// use stamps::*;
/// use stamps::model::directive::spec_with_pin;
/// let spec = TenantSpec::new(TenantId::new("a")?);
/// assert_eq!(spec_with_pin(&spec, Some(StampId(2)))?.pin, Some(StampId(2)));
/// assert!(spec_with_pin(&spec.clone().pin(StampId(1)), Some(StampId(2))).is_err());
/// assert_eq!(spec_with_pin(&spec.clone().pin(StampId(1)), None)?.pin, Some(StampId(1)));
/// # Ok::<(), stamps::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] (field `pin`) when the spec's pin differs from the recorded one.
pub fn spec_with_pin(spec: &TenantSpec, recorded: Option<StampId>) -> Result<TenantSpec, Error> {
    let Some(q) = recorded else {
        return Ok(spec.clone());
    };
    if spec.pin.is_some_and(|p| p != q) {
        return Err(InvalidInput::new(
            "pin",
            "differs from the tenant's recorded pin (change the pin with set_pin first)",
        )
        .into());
    }
    let mut out = spec.clone();
    out.pin = Some(q);
    Ok(out)
}

/// The decision recorded for a pin that arrived in an `assign`'s spec: the write's actor
/// (or `assign`), with the reason "pinned by its assignment".
pub fn pin_by_assignment(actor: Option<&str>) -> Decision {
    Decision {
        actor: actor
            .filter(|a| !a.trim().is_empty())
            .unwrap_or("assign")
            .chars()
            .take(DECISION_ACTOR_MAX_LEN)
            .collect(),
        reason: "pinned by its assignment".into(),
    }
}

/// Checks that pinning a tenant to `stamp` does not contradict where it lives: an assigned
/// tenant holds (serving, and as a migration's shadow) no stamp but `stamp`. Clearing a pin
/// always passes.
///
/// ```
/// use stamps::*;
/// use stamps::model::directive::check_pin;
/// let a = Assignment::new(TenantSpec::new(TenantId::new("a")?), StampId(1), Epoch(3),
///     AssignmentMode::DualWrite { shadow: StampId(2) }, Timestamp::ZERO, Timestamp::ZERO);
/// assert!(check_pin(None, Some(StampId(5))).is_ok());
/// assert!(matches!(check_pin(Some(&a), Some(StampId(1))), Err(Error::ConstraintViolated(_))));
/// # Ok::<(), stamps::Error>(())
/// ```
///
/// # Errors
/// [`Error::ConstraintViolated`] naming a held stamp other than `stamp`.
pub fn check_pin(assignment: Option<&Assignment>, stamp: Option<StampId>) -> Result<(), Error> {
    let (Some(a), Some(pinned)) = (assignment, stamp) else {
        return Ok(());
    };
    match a.stamps().find(|s| *s != pinned) {
        Some(other) => Err(Error::ConstraintViolated(ConstraintViolation::new(
            a.tenant().clone(),
            other,
            Constraint::Pin { pinned },
        ))),
        None => Ok(()),
    }
}
