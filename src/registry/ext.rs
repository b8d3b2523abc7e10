//! [`RegistryExt`], conveniences built only from [`Registry`] calls, and the shared checks of
//! rollout records.

use async_trait::async_trait;

use super::Registry;
use crate::error::{Error, InvalidInput, Result, Subject};
use crate::model::{Assignment, RolloutRecord, Stamp, StampSpec, StampState, TenantId};

/// Conveniences over any [`Registry`], with a blanket implementation.
///
/// # Contract
/// Every method is built only from [`Registry`] calls, so it inherits their guarantees (and is
/// not atomic across calls: `put_active_stamp` is two writes).
///
/// # Implementing
/// Do not: the blanket implementation covers every `Registry`, `dyn Registry` included.
///
/// # Example
/// ```
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// let stamp = registry.put_active_stamp(spec).await?;
/// assert_eq!(stamp.state, StampState::Active);
/// assert!(registry.require_assignment(&TenantId::new("nobody")?).await.is_err());
/// # Ok(()) }
/// ```
#[async_trait]
pub trait RegistryExt: Registry {
    /// Registers a stamp and makes it `Active` in one call.
    async fn put_active_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        let id = spec.id;
        let stamp = self.put_stamp(spec).await?;
        if stamp.state == StampState::Active {
            return Ok(stamp);
        }
        self.set_stamp_state(id, StampState::Active).await
    }

    /// A tenant's assignment, or [`Error::NotFound`].
    async fn require_assignment(&self, tenant: &TenantId) -> Result<Assignment> {
        self.assignment(tenant)
            .await?
            .ok_or_else(|| Error::NotFound(Subject::Tenant(tenant.clone())))
    }

    /// Every assignment, read page by page in tenant order. A backend whose pages do not
    /// advance (a tenant not after the previous one, a page longer than asked) gives
    /// [`Error::Corrupt`] instead of looping.
    async fn all_assignments(&self) -> Result<Vec<Assignment>> {
        let mut out: Vec<Assignment> = Vec::new();
        for_each_assignment(self, |a| out.push(a)).await?;
        Ok(out)
    }
}

impl<R: Registry + ?Sized> RegistryExt for R {}

/// [`expiry_report`](crate::model::expiry_report) read from a registry: the fleet, then the
/// assignments page by page, keeping only those on the stamps due (memory bounded by them).
///
/// ```
/// use std::time::Duration;
/// use stamps::registry::expiry_report_from;
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// registry.put_active_stamp(StampSpec::new(StampId(9), "demo-9", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.expires_at(Timestamp::from_millis(1_000))).await?;
/// registry.assign(&TenantSpec::new(TenantId::new("trial")?).ephemeral(), StampId(9)).await?;
/// let report = expiry_report_from(&registry, Timestamp::from_millis(5_000), Duration::ZERO).await?;
/// assert_eq!(report.due[0].tenants.len(), 1);
/// # Ok(()) }
/// ```
///
/// # Errors
/// What the registry's `fleet` and `assignments` return; [`Error::Corrupt`] for pages that do
/// not advance.
pub async fn expiry_report_from<R: Registry + ?Sized>(
    registry: &R,
    now: crate::time::Timestamp,
    within: std::time::Duration,
) -> Result<crate::model::ExpiryReport> {
    let fleet = registry.fleet().await?;
    let mut report = crate::model::expiry_report(&fleet, std::iter::empty(), now, within);
    if !report.due.is_empty() {
        for_each_assignment(registry, |a| report.attribute(&a)).await?;
        report.finish();
    }
    Ok(report)
}

/// Reads every assignment page by page in tenant order, handing each to `f`. A backend whose
/// pages do not advance gives [`Error::Corrupt`] instead of looping (see [`check_page`]).
async fn for_each_assignment<R: Registry + ?Sized>(registry: &R, mut f: impl FnMut(Assignment) + Send) -> Result<()> {
    const PAGE: usize = 1000;
    let mut after: Option<TenantId> = None;
    loop {
        let page = registry.assignments(after.as_ref(), PAGE).await?;
        check_page(&page, after.as_ref(), PAGE)?;
        let done = page.len() < PAGE;
        for a in page {
            after = Some(a.tenant().clone());
            f(a);
        }
        if done {
            return Ok(());
        }
    }
}

/// Checks that `page` is an answer [`Registry::assignments`] may give for `(after, asked)`: at
/// most `asked` assignments, each after the one before it and the first after `after`. Anything
/// else is [`Error::Corrupt`]: a reader paging with the last tenant of each page would loop on
/// a page that does not advance.
pub(crate) fn check_page(page: &[Assignment], after: Option<&TenantId>, asked: usize) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupt {
        what: "assignment listing".into(),
        reason,
    };
    if page.len() > asked {
        return Err(corrupt(format!("asked for {asked}, got {}", page.len())));
    }
    let mut prev = after;
    for a in page {
        if let Some(p) = prev.filter(|p| a.tenant() <= *p) {
            return Err(corrupt(format!(
                "{} listed after {p}: pages must be in tenant order",
                a.tenant()
            )));
        }
        prev = Some(a.tenant());
    }
    Ok(())
}

/// Checks a rollout record for `create_rollout`: valid, at its first wave, deploying.
pub(crate) fn check_new_rollout(record: &RolloutRecord) -> Result<()> {
    record.validate()?;
    if record.wave != 0 || record.state != crate::model::RolloutState::Deploying {
        return Err(InvalidInput::new("rollout", "a new rollout starts at its first wave, deploying").into());
    }
    Ok(())
}

/// Checks a save of `current` as `next`: same target and waves, a legal state change.
pub(crate) fn check_rollout_save(current: &RolloutRecord, next: &RolloutRecord) -> Result<()> {
    next.validate()?;
    if current.revision != next.revision {
        return Err(Error::revision_conflict(next.revision, current.revision));
    }
    if current.target != next.target || current.waves != next.waves {
        return Err(InvalidInput::new("rollout", "target and waves of a rollout cannot change").into());
    }
    if !current.state.can_become(next.state) {
        return Err(InvalidInput::new("state", "is not a legal rollout transition").into());
    }
    Ok(())
}

/// The refusal of decommissioning a stamp that a routing override in force redirects to.
pub(crate) fn override_target_retired() -> Error {
    InvalidInput::new(
        "state",
        "cannot decommission a stamp that a routing override redirects to; clear the override first",
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::check_page;
    use crate::error::Error;
    use crate::model::{Assignment, AssignmentMode, Epoch, StampId, TenantId, TenantSpec};
    use crate::time::Timestamp;

    fn page(ids: &[&str]) -> Vec<Assignment> {
        ids.iter()
            .map(|t| {
                let spec = TenantSpec::new(TenantId::new(t).unwrap());
                Assignment::new(
                    spec,
                    StampId(1),
                    Epoch(1),
                    AssignmentMode::Serving,
                    Timestamp::ZERO,
                    Timestamp::ZERO,
                )
            })
            .collect()
    }

    fn corrupt(r: crate::error::Result<()>) -> bool {
        matches!(r, Err(Error::Corrupt { .. }))
    }

    #[test]
    fn pages_that_advance_pass_whole() {
        let b = TenantId::new("b").unwrap();
        assert!(check_page(&page(&["a", "b", "c"]), None, 3).is_ok());
        assert!(check_page(&page(&["c", "d"]), Some(&b), 3).is_ok());
        assert!(check_page(&page(&[]), Some(&b), 3).is_ok());
    }

    #[test]
    fn pages_that_do_not_advance_are_corrupt() {
        let b = TenantId::new("b").unwrap();
        // The previous page again, or one starting at its last tenant.
        assert!(corrupt(check_page(&page(&["a", "b"]), Some(&b), 2)));
        assert!(corrupt(check_page(&page(&["b", "c"]), Some(&b), 2)));
        // Out of order or repeated within a page.
        assert!(corrupt(check_page(&page(&["c", "d", "d"]), Some(&b), 3)));
        assert!(corrupt(check_page(&page(&["d", "c"]), None, 3)));
        // Longer than asked.
        assert!(corrupt(check_page(&page(&["c", "d", "e"]), Some(&b), 2)));
    }
}
