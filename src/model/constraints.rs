//! Hard constraints on where a tenant may live: residency, pin, tier and dedicated stamps.
//!
//! One definition, used by placement's filters (to choose a stamp) and by every registry (to
//! refuse a write that breaks them, whoever computed it). A write places a tenant on each stamp
//! of [`Assignment::stamps`] it did not already hold (the serving stamp and a migration's
//! shadow); [`check`] refuses the first broken rule on such a stamp with
//! [`Error::ConstraintViolated`], unless the write carries an [`Override`] naming that rule.
//! Stamps the tenant already holds are not re-checked, so a tenant placed before a rule existed
//! (or by an override) can still be resized, frozen or moved away.
//!
//! The rules, in the order they are checked:
//! - **pin** ([`pin_allows`]): a pinned tenant lives only on its pinned stamp;
//! - **residency** ([`residency_matches`]): a tenant with a residency lives only on stamps
//!   declaring the same residency; a tenant without one may live anywhere;
//! - **tier** ([`tier_allows`]): a tenant lives only on stamps of its own tier (so a dedicated
//!   tenant never on a shared stamp, a shared tenant never on a dedicated one);
//! - **lifetime** ([`lifetime_allows`]): an ephemeral stamp (one with an expiry) takes only
//!   ephemeral tenants, so a long-lived tenant never lands where it will be torn down;
//! - **dedicated** ([`dedicated_free`]): a dedicated stamp holds at most one tenant.
//!
//! ```
//! use stamps::model::constraints;
//! use stamps::*;
//! let us = StampSpec::new(StampId(1), "s1", Region::new("us-east")?,
//!     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.residency(Residency::new("us")?);
//! let eu_tenant = TenantSpec::new(TenantId::new("a")?).residency(Residency::new("eu")?);
//! assert!(!constraints::residency_matches(&eu_tenant, &us));
//! let load = StampLoad::new(Stamp::new(us, StampState::Active, Timestamp::ZERO, Timestamp::ZERO),
//!     Amounts::default());
//! let new = Assignment::new(eu_tenant, StampId(1), Epoch(1), AssignmentMode::Serving,
//!     Timestamp::ZERO, Timestamp::ZERO);
//! let err = constraints::check(None, &new, |_| Some(&load), |_| None, None).unwrap_err();
//! assert!(matches!(err, Error::ConstraintViolated(ref v) if v.constraint.kind() == ConstraintKind::Residency));
//! // An operator override naming the rule lets the write through.
//! let ok = Override::new(ConstraintKind::Residency, "legal approved transfer");
//! constraints::check(None, &new, |_| Some(&load), |_| None, Some(&ok))?;
//! # Ok::<(), stamps::Error>(())
//! ```

use std::fmt;

use super::error::{Error, InvalidInput, Result};
use super::{Assignment, Residency, StampId, StampLoad, StampSpec, TenantId, TenantSpec, Tier};

/// Longest override reason, in bytes.
pub const OVERRIDE_REASON_MAX_LEN: usize = 1024;

/// The name of a hard constraint, as an [`Override`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ConstraintKind {
    /// The tenant's pin.
    Pin,
    /// The tenant's data residency.
    Residency,
    /// The tenant's tier.
    Tier,
    /// A dedicated stamp holds one tenant.
    Dedicated,
    /// An ephemeral stamp takes only ephemeral tenants.
    Lifetime,
}

impl ConstraintKind {
    /// Every kind, in the order [`check`] tests them.
    pub const ALL: [ConstraintKind; 5] = [
        ConstraintKind::Pin,
        ConstraintKind::Residency,
        ConstraintKind::Tier,
        ConstraintKind::Lifetime,
        ConstraintKind::Dedicated,
    ];

    /// The kind's name.
    ///
    /// ```
    /// assert_eq!(stamps::ConstraintKind::Residency.as_str(), "residency");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintKind::Pin => "pin",
            ConstraintKind::Residency => "residency",
            ConstraintKind::Tier => "tier",
            ConstraintKind::Dedicated => "dedicated",
            ConstraintKind::Lifetime => "lifetime",
        }
    }

    /// Parses a name written by [`ConstraintKind::as_str`].
    ///
    /// ```
    /// use stamps::ConstraintKind;
    /// assert_eq!(ConstraintKind::parse("tier"), Some(ConstraintKind::Tier));
    /// assert_eq!(ConstraintKind::parse("colour"), None);
    /// ```
    pub fn parse(s: &str) -> Option<ConstraintKind> {
        ConstraintKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ConstraintKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A broken constraint, with what the tenant requires and what the stamp has.
///
/// ```
/// use stamps::{Constraint, ConstraintKind, StampId};
/// let c = Constraint::Pin { pinned: StampId(3) };
/// assert_eq!(c.kind(), ConstraintKind::Pin);
/// assert_eq!(c.to_string(), "the tenant is pinned to stamp-003");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Constraint {
    /// The stamp's residency is not the tenant's.
    Residency {
        /// The tenant's residency.
        required: Residency,
        /// The stamp's residency, if declared.
        stamp_has: Option<Residency>,
    },
    /// The tenant is pinned elsewhere.
    Pin {
        /// The stamp the tenant is pinned to.
        pinned: StampId,
    },
    /// The stamp's tier is not the tenant's.
    Tier {
        /// The tenant's tier.
        tenant: Tier,
        /// The stamp's tier.
        stamp: Tier,
    },
    /// The stamp is dedicated and another tenant holds it.
    Dedicated {
        /// A tenant on the stamp.
        holder: TenantId,
    },
    /// The stamp is ephemeral and the tenant is not.
    Lifetime {
        /// When the stamp is due for teardown.
        expires_at: crate::time::Timestamp,
    },
}

impl Constraint {
    /// Which rule this is.
    pub fn kind(&self) -> ConstraintKind {
        match self {
            Constraint::Residency { .. } => ConstraintKind::Residency,
            Constraint::Pin { .. } => ConstraintKind::Pin,
            Constraint::Tier { .. } => ConstraintKind::Tier,
            Constraint::Dedicated { .. } => ConstraintKind::Dedicated,
            Constraint::Lifetime { .. } => ConstraintKind::Lifetime,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Residency {
                required,
                stamp_has: Some(has),
            } => write!(
                f,
                "the tenant's data must stay in {required} but the stamp's residency is {has}"
            ),
            Constraint::Residency {
                required,
                stamp_has: None,
            } => write!(
                f,
                "the tenant's data must stay in {required} but the stamp declares no residency"
            ),
            Constraint::Pin { pinned } => write!(f, "the tenant is pinned to {pinned}"),
            Constraint::Tier { tenant, stamp } => {
                write!(f, "the tenant's tier is {tenant} but the stamp's tier is {stamp}")
            }
            Constraint::Dedicated { holder } => write!(f, "the stamp is dedicated and held by tenant {holder}"),
            Constraint::Lifetime { expires_at } => write!(
                f,
                "the stamp is ephemeral (due for teardown at {expires_at}) and the tenant is not"
            ),
        }
    }
}

/// The payload of [`Error::ConstraintViolated`]: which tenant, which stamp, which rule.
///
/// ```
/// use stamps::{Constraint, ConstraintViolation, StampId, TenantId};
/// let v = ConstraintViolation::new(TenantId::new("a")?, StampId(2), Constraint::Pin { pinned: StampId(1) });
/// assert!(v.to_string().starts_with("tenant a may not be placed on stamp-002"));
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConstraintViolation {
    /// The tenant.
    pub tenant: TenantId,
    /// The stamp it would be placed on.
    pub stamp: StampId,
    /// The broken rule.
    pub constraint: Constraint,
}

impl ConstraintViolation {
    /// A violation.
    pub fn new(tenant: TenantId, stamp: StampId, constraint: Constraint) -> Self {
        ConstraintViolation {
            tenant,
            stamp,
            constraint,
        }
    }
}

impl fmt::Display for ConstraintViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {} may not be placed on {}: {} ({} constraint)",
            self.tenant,
            self.stamp,
            self.constraint,
            self.constraint.kind()
        )
    }
}

/// An operator's explicit permission to break named constraints in one write, with a reason.
/// Registries record it in the tenant's history ([`HistoryEntry::overrode`](super::HistoryEntry::overrode)).
///
/// The reason must be 1 to [`OVERRIDE_REASON_MAX_LEN`] bytes without control characters
/// ([`Override::validate`]; registries refuse others with [`Error::InvalidInput`]).
///
/// ```
/// use stamps::{ConstraintKind, Override};
/// let o = Override::new(ConstraintKind::Residency, "legal approved transfer #123").and(ConstraintKind::Tier);
/// assert!(o.allows(ConstraintKind::Tier));
/// assert!(!o.allows(ConstraintKind::Pin));
/// assert_eq!(o.to_string(), "override of residency, tier: legal approved transfer #123");
/// assert!(Override::new(ConstraintKind::Pin, "").validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Override {
    /// The constraints the write may break (sorted, without duplicates).
    pub constraints: Vec<ConstraintKind>,
    /// Why.
    pub reason: String,
}

impl Override {
    /// Permission to break `constraint`, for `reason`.
    pub fn new(constraint: ConstraintKind, reason: impl Into<String>) -> Self {
        Override {
            constraints: vec![constraint],
            reason: reason.into(),
        }
    }

    /// Also permits breaking `constraint`.
    pub fn and(mut self, constraint: ConstraintKind) -> Self {
        self.constraints.push(constraint);
        self.constraints.sort_unstable();
        self.constraints.dedup();
        self
    }

    /// Whether the override permits breaking `constraint`.
    pub fn allows(&self, constraint: ConstraintKind) -> bool {
        self.constraints.contains(&constraint)
    }

    /// Checks the reason and that at least one constraint is named.
    pub fn validate(&self) -> Result<()> {
        if self.constraints.is_empty() {
            return Err(InvalidInput::new("override", "names no constraint").into());
        }
        if self.reason.trim().is_empty() {
            return Err(InvalidInput::new("override", "needs a reason").into());
        }
        if self.reason.len() > OVERRIDE_REASON_MAX_LEN {
            return Err(InvalidInput::new("override", "reason is longer than 1024 bytes").into());
        }
        if self.reason.chars().any(char::is_control) {
            return Err(InvalidInput::new("override", "reason contains control characters").into());
        }
        Ok(())
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("override of ")?;
        for (i, c) in self.constraints.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(c.as_str())?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Whether a tenant's residency allows `stamp`: a tenant with a residency needs a stamp with
/// the same one; a tenant without one may live anywhere.
pub fn residency_matches(tenant: &TenantSpec, stamp: &StampSpec) -> bool {
    match &tenant.residency {
        Some(r) => stamp.residency.as_ref() == Some(r),
        None => true,
    }
}

/// Whether a tenant's pin allows `stamp` (an unpinned tenant may live anywhere).
pub fn pin_allows(tenant: &TenantSpec, stamp: StampId) -> bool {
    tenant.pin.is_none_or(|p| p == stamp)
}

/// Whether a tenant's tier allows `stamp`: the tiers must be equal.
pub fn tier_allows(tenant: &TenantSpec, stamp: &StampSpec) -> bool {
    stamp.tier == tenant.tier
}

/// Whether a tenant's lifetime allows `stamp`: an ephemeral stamp takes only ephemeral
/// tenants; a long-lived stamp takes any.
///
/// ```
/// use stamps::model::constraints::lifetime_allows;
/// use stamps::*;
/// let demo = StampSpec::new(StampId(9), "demo-9", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 5.0)], 0.0)?)?.expires_at(Timestamp::from_millis(1));
/// assert!(!lifetime_allows(&TenantSpec::new(TenantId::new("acme")?), &demo));
/// assert!(lifetime_allows(&TenantSpec::new(TenantId::new("trial")?).ephemeral(), &demo));
/// # Ok::<(), stamps::Error>(())
/// ```
pub fn lifetime_allows(tenant: &TenantSpec, stamp: &StampSpec) -> bool {
    tenant.ephemeral || stamp.expires_at.is_none()
}

/// Whether a stamp may take one more tenant as far as dedication goes, given how many other
/// tenants it holds: a dedicated stamp holds at most one tenant; any other stamp is free.
pub fn dedicated_free(stamp: &StampSpec, other_tenants: u64) -> bool {
    stamp.tier != Tier::Dedicated || other_tenants == 0
}

/// The first rule `tenant` would break by being placed on `load`, other than those `allowed`
/// permits. `holder` names another tenant on the stamp, if any; it is called only for a
/// dedicated stamp.
pub fn violation(
    tenant: &TenantSpec,
    load: &StampLoad,
    holder: impl FnOnce() -> Option<TenantId>,
    allowed: Option<&Override>,
) -> Option<Constraint> {
    let spec = &load.stamp.spec;
    let permits = |k: ConstraintKind| allowed.is_some_and(|o| o.allows(k));
    if !permits(ConstraintKind::Pin) && !pin_allows(tenant, spec.id) {
        return tenant.pin.map(|pinned| Constraint::Pin { pinned });
    }
    if !permits(ConstraintKind::Residency) && !residency_matches(tenant, spec) {
        if let Some(required) = tenant.residency.clone() {
            return Some(Constraint::Residency {
                required,
                stamp_has: spec.residency.clone(),
            });
        }
    }
    if !permits(ConstraintKind::Tier) && !tier_allows(tenant, spec) {
        return Some(Constraint::Tier {
            tenant: tenant.tier.clone(),
            stamp: spec.tier.clone(),
        });
    }
    if !permits(ConstraintKind::Lifetime) && !lifetime_allows(tenant, spec) {
        if let Some(expires_at) = spec.expires_at {
            return Some(Constraint::Lifetime { expires_at });
        }
    }
    if !permits(ConstraintKind::Dedicated) && spec.tier == Tier::Dedicated {
        if let Some(holder) = holder().filter(|h| *h != tenant.id) {
            return Some(Constraint::Dedicated { holder });
        }
    }
    None
}

/// Checks that replacing `old` with `new` places the tenant on no stamp against its
/// constraints (see the [module docs](self)); every stamp of `new` that `old` did not hold is
/// checked. `load` gives a stamp's spec and usage (unknown stamps are skipped: admission
/// reports them); `holder(stamp)` names a tenant other than this one on the stamp, if any,
/// read under the same lock as the write. Registries call it with
/// [`admission::check`](super::admission::check), in the same lock or transaction.
///
/// Fails with [`Error::ConstraintViolated`], or [`Error::InvalidInput`] for an invalid
/// override.
pub fn check<'a>(
    old: Option<&Assignment>,
    new: &Assignment,
    load: impl Fn(StampId) -> Option<&'a StampLoad>,
    mut holder: impl FnMut(StampId) -> Option<TenantId>,
    allowed: Option<&Override>,
) -> Result<()> {
    if let Some(o) = allowed {
        o.validate()?;
    }
    for stamp in new.stamps() {
        if old.is_some_and(|o| o.stamps().any(|s| s == stamp)) {
            continue;
        }
        let Some(l) = load(stamp) else { continue };
        if let Some(constraint) = violation(&new.spec, l, || holder(stamp), allowed) {
            return Err(Error::ConstraintViolated(ConstraintViolation::new(
                new.tenant().clone(),
                stamp,
                constraint,
            )));
        }
    }
    Ok(())
}

/// The stamps of `new` that a write from `old` places the tenant on and that are dedicated:
/// the stamps whose other holder a registry must look up (under its locks) before [`check`].
pub fn dedicated_targets<'a>(
    old: Option<&'a Assignment>,
    new: &'a Assignment,
    load: impl Fn(StampId) -> Option<&'a StampLoad> + 'a,
) -> impl Iterator<Item = StampId> + 'a {
    new.stamps().filter(move |s| {
        !old.is_some_and(|o| o.stamps().any(|x| x == *s))
            && load(*s).is_some_and(|l| l.stamp.spec.tier == Tier::Dedicated && l.tenants() > 0)
    })
}
