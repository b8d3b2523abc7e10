//! Closing a `Failed` migration: [`Migration::resolve_failed`] fences the copy that goes,
//! makes the kept stamp the tenant's only owner, deletes the other copy and records the
//! operator's decision.

use std::fmt;

use super::driver::{DriverError, MigrationContext};
use super::progress::{Lease, ResolutionProgress};
use super::Migration;
use crate::error::{Error, Subject};
use crate::model::{AssignmentChange, AssignmentMode, Epoch, MigrationState, StampId};
use crate::time::Timestamp;

use MigrationState as S;

/// How an operator closed a `Failed` migration ([`Migration::resolve_failed`]), as recorded in
/// the migration record.
///
/// ```
/// use stamps::migration::Resolution;
/// use stamps::{Epoch, StampId, Timestamp};
/// let r = Resolution::new(StampId(2), StampId(1), Epoch(9), "alice", "cleanup kept failing", Timestamp::from_millis(5));
/// assert_eq!(r.to_string(), "kept stamp-002, dropped stamp-001 at e9 (alice: cleanup kept failing)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resolution {
    /// The stamp that owns the tenant's data now (serving, alone).
    pub kept: StampId,
    /// The stamp whose copy was fenced off and deleted.
    pub dropped: StampId,
    /// The assignment epoch at which `dropped` gave the tenant up.
    pub epoch: Epoch,
    /// Who decided.
    pub by: String,
    /// Why, in their words.
    pub reason: String,
    /// When the resolution finished.
    pub at: Timestamp,
}

impl Resolution {
    /// A resolution (the engine makes them; this is for tests and displays).
    pub fn new(
        kept: StampId,
        dropped: StampId,
        epoch: Epoch,
        by: impl Into<String>,
        reason: impl Into<String>,
        at: Timestamp,
    ) -> Resolution {
        Resolution {
            kept,
            dropped,
            epoch,
            by: by.into(),
            reason: reason.into(),
            at,
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kept {}, dropped {} at {} ({}: {})",
            self.kept, self.dropped, self.epoch, self.by, self.reason
        )
    }
}

/// Why [`Migration::resolve_failed`] stopped. Nothing it did is undone; calling it again with
/// the same `keep` finishes the work (every step is idempotent).
///
/// ```
/// use stamps::migration::{DriverError, ResolveError};
/// let e = ResolveError::from(DriverError::retryable("stamp 1 unreachable"));
/// assert!(e.is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The registry refused or could not be reached (also: the migration is not `Failed`,
    /// or another operator's resolution holds the lease).
    #[error(transparent)]
    Registry(#[from] Error),
    /// The data plane failed to fence or delete the dropped copy.
    #[error("the data plane failed while resolving: {0}; resolve again")]
    Driver(#[from] DriverError),
    /// `keep` is not the stamp the tenant is served from, the one holding every acknowledged
    /// write: keep `serving`, then migrate again.
    #[error("{serving} serves the tenant and holds every acknowledged write, not {keep}; keep {serving}, then migrate again")]
    NotServing {
        /// The stamp asked for.
        keep: StampId,
        /// The stamp the assignment serves from.
        serving: StampId,
    },
    /// `keep` is neither the migration's source nor its destination.
    #[error("{keep} is not a stamp of this migration")]
    NotInMigration {
        /// The stamp asked for.
        keep: StampId,
    },
    /// The migration was already resolved, keeping another stamp.
    #[error("already resolved: {0}")]
    AlreadyResolved(Resolution),
}

impl ResolveError {
    /// Whether calling again unchanged may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ResolveError::Registry(e) => e.is_retryable() || matches!(e, Error::Conflict(_)),
            ResolveError::Driver(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl Migration {
    /// Closes a `Failed` migration on behalf of `by`, keeping the tenant's data on `keep` only.
    ///
    /// `keep` must be the stamp the tenant's assignment serves from: writes always reach it
    /// first, so it holds every acknowledged write, whichever state the migration failed in
    /// (source before cutover, destination after; the runbook's table says which). The other
    /// stamp's copy may be partial (a cleanup or rollback that stopped halfway). To end up on
    /// the other stamp, resolve keeping the serving one, then start a new migration.
    ///
    /// In order: claims the record (a lease generation newer than any worker's, so a late
    /// driver call from a dead worker is refused); makes the assignment serving on `keep`
    /// alone (a new epoch if a dual-write or freeze was left in place); fences the dropped
    /// stamp at that epoch, giving the tenant up there, **before** anything is deleted, so no
    /// writer on an old route can recreate rows; fences `keep` as the holder; deletes the
    /// dropped copy (`rollback` on the destination, `cleanup_source` on the source); records
    /// the [`Resolution`]. The migration stays `Failed` (what happened is history); the
    /// resolution is what lets a new migration of the tenant be planned
    /// ([`Migrator::plan`](super::Migrator::plan) refuses while a failed one is unresolved).
    ///
    /// Idempotent: after an error, call it again. Calling it on a resolved migration with the
    /// same `keep` returns the recorded resolution.
    ///
    /// ```
    /// # use stamps::migration::reference::ReferenceDataPlane;
    /// # use stamps::migration::*;
    /// # use stamps::*;
    /// # use std::sync::Arc;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let registry = Arc::new(InMemoryRegistry::new());
    /// # for id in [1, 2] {
    /// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
    /// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
    /// # }
    /// # let t = TenantId::new("umbrella")?;
    /// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
    /// let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
    /// let migrator = Migrator::new(registry.clone(), Arc::new(plane.clone()))
    ///     .config(MigrationConfig::default().soak_window(std::time::Duration::ZERO))?;
    /// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "ops").await?;
    /// // Deleting the source copy fails for good: the migration stops in `Failed`.
    /// plane.fail_next(reference::DriverOp::CleanupSource, DriverError::permanent("volume is read-only"));
    /// while !m.state().is_terminal() { m.step().await?; }
    /// assert_eq!(m.state(), MigrationState::Failed);
    /// assert!(!migrator.plan(&t, StampId(1)).await?.is_feasible()); // unresolved
    ///
    /// let done = m.resolve_failed(StampId(2), "ops", "volume repaired").await?;
    /// assert_eq!((done.kept, done.dropped), (StampId(2), StampId(1)));
    /// assert!(!plane.holds(StampId(1), &t));
    /// assert_eq!(registry.require_assignment(&t).await?.mode, AssignmentMode::Serving);
    /// assert!(migrator.plan(&t, StampId(1)).await?.is_feasible());
    /// # Ok(()) }
    /// ```
    pub async fn resolve_failed(
        &mut self,
        keep: StampId,
        by: &str,
        reason: &str,
    ) -> std::result::Result<Resolution, ResolveError> {
        self.reload().await?;
        let rec = &self.record;
        if rec.state != S::Failed {
            return Err(Error::InvalidTransition {
                what: "migration",
                from: rec.state.as_str(),
                to: "resolved",
            }
            .into());
        }
        let dropped = match keep {
            k if k == rec.source => rec.destination,
            k if k == rec.destination => rec.source,
            _ => return Err(ResolveError::NotInMigration { keep }),
        };
        if let Some(done) = self.resolution() {
            return if done.kept == keep {
                Ok(done)
            } else {
                Err(ResolveError::AlreadyResolved(done))
            };
        }
        let now = self.migrator.clock.now();
        self.check_lease(now)?;
        let tenant = rec.tenant.clone();
        let assignment = (self.migrator.registry.assignment(&tenant).await?)
            .ok_or_else(|| Error::NotFound(Subject::Tenant(tenant.clone())))?;
        if assignment.stamp != keep {
            return Err(ResolveError::NotServing {
                keep,
                serving: assignment.stamp,
            });
        }

        // Claim: a generation newer than any worker's, so their late driver calls are refused.
        let generation = self.progress.generation.saturating_add(1);
        let mut claim = self.progress.clone();
        claim.generation = generation;
        claim.lease = Some(Lease {
            owner: self.worker.clone(),
            until: now + self.migrator.config.lease,
        });
        claim.resolution = Some(ResolutionProgress {
            kept: keep,
            by: by.to_string(),
            reason: reason.to_string(),
            epoch: None,
            at: None,
        });
        self.save(self.record.clone(), claim, false).await?;

        // The kept stamp alone, serving.
        let owned = if assignment.mode == AssignmentMode::Serving {
            assignment
        } else {
            let change = AssignmentChange::set_mode(AssignmentMode::Serving).by(self.actor());
            self.migrator
                .registry
                .compare_and_set(&tenant, assignment.epoch, change)
                .await?
        };
        let from = self.progress.failure.as_ref().map_or(S::Failed, |f| f.state);
        let ctx = MigrationContext::new(
            self.record.id,
            tenant.clone(),
            self.record.source,
            self.record.destination,
            S::Failed,
            1,
        )
        .generation(generation);
        let driver = &self.migrator.driver;
        // Fence the copy that goes first: from here no write can land there.
        driver.fence(&ctx, dropped, owned.epoch, false).await?;
        driver.fence(&ctx, keep, owned.epoch, true).await?;
        if dropped == self.record.destination {
            driver.rollback(&ctx, from).await?;
        } else {
            driver.cleanup_source(&ctx).await?;
        }
        trace_event!(
            migration = %self.record.id, tenant = %tenant, kept = %keep, dropped = %dropped,
            epoch = %owned.epoch, by = %by, "failed migration resolved"
        );

        let done = self.migrator.clock.now();
        let mut p = self.progress.clone();
        if let Some(r) = &mut p.resolution {
            r.epoch = Some(owned.epoch);
            r.at = Some(done);
        }
        self.save(self.record.clone(), p, true).await?;
        Ok(Resolution::new(keep, dropped, owned.epoch, by, reason, done))
    }

    /// How an operator closed this `Failed` migration, once [`resolve_failed`](Self::resolve_failed)
    /// finished; `None` before (or while a resolution is under way).
    pub fn resolution(&self) -> Option<Resolution> {
        finished(&self.record, self.progress.resolution.as_ref()?)
    }
}

/// The finished resolution recorded in `record`, if any (a record whose progress cannot be
/// read counts as unresolved).
pub(super) fn resolution_of(record: &crate::model::MigrationRecord) -> Option<Resolution> {
    let progress = super::progress::decode(record).ok()?;
    finished(record, progress.resolution.as_ref()?)
}

fn finished(record: &crate::model::MigrationRecord, r: &ResolutionProgress) -> Option<Resolution> {
    let dropped = if r.kept == record.source {
        record.destination
    } else {
        record.source
    };
    Some(Resolution {
        kept: r.kept,
        dropped,
        epoch: r.epoch?,
        by: r.by.clone(),
        reason: r.reason.clone(),
        at: r.at?,
    })
}
