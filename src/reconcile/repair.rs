//! Applying a [`Finding`]'s repair: an explicit call, by a named person for a stated reason,
//! that re-checks the finding against the registry, runs the host's data-plane action and
//! records who and why in the tenant's history ([`Registry::record_repair`]).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::report::{Finding, FindingKind, Repair};
use crate::error::Error;
use crate::model::{Decision, HistoryEntry, TenantId};
use crate::registry::Registry;

/// Why [`apply_repair`] did not repair.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError {
    /// The registry has changed since the report: the finding no longer holds (the tenant
    /// was assigned to the stamp, a migration started, the missing copy's stamp no longer
    /// serves it). Nothing was done; reconcile again.
    #[error("the finding no longer holds: {0}; reconcile again")]
    Stale(String),
    /// The finding's repair is not one this call applies: resolving a migration goes through
    /// the migration API (`Migration::resolve_failed`), and an invalid id has no tenant to
    /// record it against. Nothing was done.
    #[error("{0}")]
    NotApplicable(String),
    /// The host's action failed or timed out. Nothing was recorded: the copy may be partly
    /// repaired; run it again once the cause is fixed (actions must be idempotent).
    #[error("the repair action failed: {0}")]
    Action(String),
    /// The registry could not be read, or refused the record (an invalid decision).
    #[error(transparent)]
    Registry(#[from] Error),
}

/// How long [`apply_repair`] waits for the host's action: 5 minutes.
pub const REPAIR_ACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// Applies one finding's repair, on an operator's explicit decision.
///
/// 1. Re-reads the registry and checks the finding still holds: for a copy to delete
///    ([`Repair::DeleteCopy`]), the registry neither routes the tenant to that stamp nor runs
///    a migration touching it; for a copy to restore ([`Repair::RestoreFrom`],
///    [`Repair::RestoreFromBackup`]), the registry still routes the tenant to that stamp. A
///    stale finding is [`RepairError::Stale`] and nothing runs.
/// 2. Runs `action`, the host's data-plane work for this finding (fence then delete the copy,
///    re-import, restore), bounded by [`REPAIR_ACTION_TIMEOUT`].
/// 3. Records the repair in the tenant's history ([`Registry::record_repair`]) with the
///    decision's actor, and the repair and the decision's reason as its reason.
///
/// [`Repair::ResolveMigration`] and [`FindingKind::InvalidId`] findings are
/// [`RepairError::NotApplicable`]. For [`Repair::Investigate`], `action` is whatever the
/// investigation concluded and did; the record says so.
///
/// ```
/// use stamps::reconcile::{apply_repair, Finding, FindingKind, Repair, RepairError};
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// registry.put_active_stamp(StampSpec::new(StampId(3), "s3", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// let orphan = Finding::new("initech", StampId(3), FindingKind::Orphan, Repair::DeleteCopy { stamp: StampId(3) });
/// let decision = Decision::new("bob", "offboarded in 2025, ticket PRIV-9")?;
/// let entry = apply_repair(&registry, &orphan, &decision, || async {
///     // fence initech off stamp 3, then delete its rows there
///     Ok::<(), String>(())
/// }).await?;
/// assert_eq!(entry.action, HistoryAction::Repaired);
/// assert_eq!(entry.reason.as_deref(),
///     Some("fence the tenant off stamp-003, then delete its copy there: offboarded in 2025, ticket PRIV-9"));
///
/// // Assigned there since the report: the finding is stale and nothing runs.
/// registry.assign(&TenantSpec::new(TenantId::new("initech")?), StampId(3)).await?;
/// let again = apply_repair(&registry, &orphan, &decision, || async { Ok::<(), String>(()) }).await;
/// assert!(matches!(again, Err(RepairError::Stale(_))));
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`RepairError`]: stale, not applicable, the action failed, or the registry failed.
pub async fn apply_repair<R, F, Fut, E>(
    registry: &R,
    finding: &Finding,
    decision: &Decision,
    action: F,
) -> Result<HistoryEntry, RepairError>
where
    R: Registry + ?Sized,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    decision.validate()?;
    if matches!(finding.kind, FindingKind::InvalidId) {
        return Err(RepairError::NotApplicable(format!(
            "{:?} is not a tenant id: nothing to record it against; delete it by hand",
            finding.tenant
        )));
    }
    let tenant = TenantId::new(&finding.tenant)
        .map_err(|e| RepairError::NotApplicable(format!("{:?} is not a tenant id: {e}", finding.tenant)))?;
    check_still_holds(registry, &tenant, finding).await?;
    match tokio::time::timeout(REPAIR_ACTION_TIMEOUT, action()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RepairError::Action(e.to_string())),
        Err(_) => {
            return Err(RepairError::Action(format!(
                "no answer within {} s",
                REPAIR_ACTION_TIMEOUT.as_secs()
            )))
        }
    }
    let mut reason = format!("{}: {}", finding.repair, decision.reason);
    if reason.len() > crate::model::directive::DECISION_REASON_MAX_LEN {
        reason = decision.reason.clone();
    }
    let recorded = Decision::new(decision.actor.clone(), reason)?;
    Ok(registry.record_repair(&tenant, finding.stamp, &recorded).await?)
}

async fn check_still_holds<R: Registry + ?Sized>(
    registry: &R,
    tenant: &TenantId,
    finding: &Finding,
) -> Result<(), RepairError> {
    let assignment = registry.assignment(tenant).await?;
    let routed_there = assignment
        .as_ref()
        .is_some_and(|a| a.stamps().any(|s| s == finding.stamp));
    match &finding.repair {
        Repair::DeleteCopy { stamp } => {
            if routed_there || assignment.as_ref().is_some_and(|a| a.stamps().any(|s| s == *stamp)) {
                return Err(RepairError::Stale(format!("{tenant} is now routed to {stamp}")));
            }
            let migrations = registry.migrations(Some(tenant)).await?;
            if let Some(m) = migrations
                .iter()
                .find(|m| !m.state.is_terminal() && (m.source == *stamp || m.destination == *stamp))
            {
                return Err(RepairError::Stale(format!("{} now runs on {stamp}", m.id)));
            }
            Ok(())
        }
        Repair::RestoreFrom { to, .. } | Repair::RestoreFromBackup { to } => {
            let serves = assignment.as_ref().is_some_and(|a| a.stamps().any(|s| s == *to));
            if serves {
                Ok(())
            } else {
                Err(RepairError::Stale(format!("{tenant} is no longer routed to {to}")))
            }
        }
        Repair::ResolveMigration { migration } => Err(RepairError::NotApplicable(format!(
            "resolve {migration} through the migration API (it fences and deletes the copy itself)"
        ))),
        Repair::Investigate => Ok(()),
    }
}
