//! Ephemeral stamps due for teardown: [`expiry_report`] lists each stamp whose expiry falls
//! within a horizon, with the tenants still on it.

use std::fmt;
use std::time::Duration;

use super::{Assignment, Fleet, StampId, StampState, TenantId};
use crate::time::Timestamp;

/// One ephemeral stamp due (or overdue) for teardown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiringStamp {
    /// The stamp.
    pub stamp: StampId,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: StampState,
    /// When it is due.
    pub expires_at: Timestamp,
    /// Whether the expiry has passed.
    pub overdue: bool,
    /// Tenants still on it (serving or as a migration's shadow), in id order: they must be
    /// migrated or offboarded before the stamp can be retired.
    pub tenants: Vec<TenantId>,
}

impl ExpiringStamp {
    /// Whether it holds no tenant, so it can be drained and retired now.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

/// Ephemeral stamps due for teardown within a horizon, soonest first ([`expiry_report`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiryReport {
    /// When the report was taken.
    pub at: Timestamp,
    /// Stamps whose expiry is before `at + within`, soonest first.
    pub due: Vec<ExpiringStamp>,
}

impl ExpiryReport {
    /// Notes `a`'s tenant on each due stamp it holds (serving or as a shadow).
    pub(crate) fn attribute(&mut self, a: &Assignment) {
        for s in a.stamps() {
            if let Some(e) = self.due.iter_mut().find(|e| e.stamp == s) {
                e.tenants.push(a.tenant().clone());
            }
        }
    }

    /// Puts each stamp's tenants in id order, once each.
    pub(crate) fn finish(&mut self) {
        for e in &mut self.due {
            e.tenants.sort();
            e.tenants.dedup();
        }
    }

    /// The stamps that can be retired now: overdue and empty.
    pub fn ready(&self) -> impl Iterator<Item = &ExpiringStamp> {
        self.due.iter().filter(|s| s.overdue && s.is_empty())
    }
}

impl fmt::Display for ExpiryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ephemeral stamps due", self.due.len())?;
        for s in &self.due {
            let when = if s.overdue { "overdue since" } else { "due at" };
            write!(f, "  {} {} ({}), {when} {}: ", s.stamp, s.name, s.state, s.expires_at)?;
            if s.tenants.is_empty() {
                writeln!(f, "empty, retire it")?;
            } else {
                let shown: Vec<&str> = s.tenants.iter().take(10).map(TenantId::as_str).collect();
                let more = s.tenants.len().saturating_sub(shown.len());
                write!(f, "{} tenants still on it: {}", s.tenants.len(), shown.join(", "))?;
                if more > 0 {
                    write!(f, " and {more} more")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// The ephemeral stamps of `fleet` (not yet decommissioned) whose expiry is before
/// `now + within`, soonest first, each with the tenants `assignments` still place on it.
/// Pass every assignment (or those of the stamps concerned); `RegistryExt::expiry_report`
/// reads them from a registry.
///
/// ```
/// use std::time::Duration;
/// use stamps::model::expiry_report;
/// use stamps::*;
/// let cap = || Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
/// let demo = StampSpec::new(StampId(9), "demo-9", Region::new("eu")?, cap())?.expires_at(Timestamp::from_millis(1_000));
/// let prod = StampSpec::new(StampId(1), "prod-1", Region::new("eu")?, cap())?;
/// let fleet = Fleet::new(vec![
///     StampLoad::new(Stamp::new(prod, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default()),
///     StampLoad::new(Stamp::new(demo, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default()),
/// ], Version(1), Timestamp::ZERO);
/// let trial = Assignment::new(TenantSpec::new(TenantId::new("trial")?).ephemeral(), StampId(9), Epoch(2),
///     AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
/// let report = expiry_report(&fleet, [&trial], Timestamp::from_millis(2_000), Duration::ZERO);
/// assert_eq!(report.due.len(), 1);
/// assert!(report.due[0].overdue);
/// assert_eq!(report.due[0].tenants, [TenantId::new("trial")?]);
/// assert_eq!(report.ready().count(), 0); // trial must go first
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn expiry_report<'a>(
    fleet: &Fleet,
    assignments: impl IntoIterator<Item = &'a Assignment>,
    now: Timestamp,
    within: Duration,
) -> ExpiryReport {
    let horizon = now
        .as_millis()
        .saturating_add(u64::try_from(within.as_millis()).unwrap_or(u64::MAX));
    let mut due: Vec<ExpiringStamp> = fleet
        .stamps
        .iter()
        .filter(|l| l.stamp.state != StampState::Decommissioned)
        .filter_map(|l| {
            let expires_at = l.stamp.spec.expires_at?;
            (expires_at.as_millis() <= horizon).then(|| ExpiringStamp {
                stamp: l.id(),
                name: l.stamp.spec.name.clone(),
                state: l.stamp.state,
                expires_at,
                overdue: expires_at <= now,
                tenants: Vec::new(),
            })
        })
        .collect();
    due.sort_by_key(|e| (e.expires_at, e.stamp));
    let mut report = ExpiryReport { at: now, due };
    if !report.due.is_empty() {
        for a in assignments {
            report.attribute(a);
        }
        report.finish();
    }
    report
}
