//! The worker: [`Migration`], driven one persisted step at a time (claim under a lease, do the
//! state's work, commit the next state), and its [`run`](Migration::run), `cancel` and
//! `rollback`.

use std::fmt;
#[cfg(feature = "tokio")]
use std::time::Duration;

use super::driver::MigrationContext;
use super::progress::{self, Failure, Lease, Progress, Update};
use super::steps::{Next, StepError};
use super::Migrator;
use crate::error::{Error, Result, Subject};
use crate::model::{MigrationId, MigrationRecord, MigrationState};
use crate::telemetry::{self, names, Value};
use crate::time::Timestamp;

use MigrationState as S;

/// What one [`Migration::step`] did.
///
/// ```
/// use stamps::migration::StepOutcome;
/// use stamps::MigrationState as S;
/// let o = StepOutcome::Advanced { from: S::Validating, to: S::CutOver };
/// let step_again_now = matches!(o, StepOutcome::Advanced { to, .. } if !to.is_terminal());
/// assert!(step_again_now);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// The state's work was done and the next state persisted.
    Advanced {
        /// The state the step worked on.
        from: MigrationState,
        /// The state persisted.
        to: MigrationState,
    },
    /// Soaking, healthy, the window not over yet: step again later.
    Waiting {
        /// The state (`Soaking`).
        state: MigrationState,
        /// When the window ends.
        until: Timestamp,
    },
    /// Validation failed: the migration stays in `Validating` until a person repairs the data
    /// and steps again, or rolls back / cancels.
    Blocked {
        /// The state (`Validating`).
        state: MigrationState,
        /// The validation summary.
        reason: String,
    },
    /// Cutover refused (validation failed under the freeze or was stale, or the freeze would
    /// have overrun): writes were unfrozen and the migration went back to `Validating`.
    Refused {
        /// Why.
        reason: String,
    },
    /// A retryable failure; nothing advanced. Step again (after a backoff).
    Retry {
        /// The state.
        state: MigrationState,
        /// Attempts made on this state so far.
        attempt: u32,
        /// What failed.
        reason: String,
    },
    /// An operator paused the migration ([`Migration::pause`]): nothing was done; step again
    /// after [`Migration::resume`].
    Paused {
        /// The state it is paused in.
        state: MigrationState,
        /// Who paused it.
        by: String,
    },
    /// The migration had already ended.
    Finished {
        /// Its terminal state.
        state: MigrationState,
    },
}

/// How `Migration::run` (feature `tokio`) ended.
///
/// ```
/// use stamps::migration::RunOutcome;
/// use stamps::MigrationState as S;
/// let o = RunOutcome::Blocked { state: S::Validating, reason: "validation failed".into() };
/// assert!(!matches!(o, RunOutcome::Finished(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// A terminal state.
    Finished(MigrationState),
    /// Stopped because an operator paused the migration.
    Paused {
        /// The state it is paused in.
        state: MigrationState,
        /// Who paused it.
        by: String,
    },
    /// Stopped for a person: validation failed or cutover was refused.
    Blocked {
        /// The state it stopped in.
        state: MigrationState,
        /// Why.
        reason: String,
    },
}

/// A tenant migration, driven one persisted step at a time.
///
/// Get one from [`Migrator::start`] or [`Migrator::load`]. Each value is one *worker*: it
/// claims steps under its own lease name, so two values loaded from the same record race,
/// and the loser gets [`Error::Conflict`] before doing anything.
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::migration::{Migrator, StepOutcome};
/// # use stamps::*;
/// # use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = Arc::new(InMemoryRegistry::new());
/// # for id in [1, 2] {
/// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
/// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
/// # }
/// # let t = TenantId::new("initech")?;
/// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
/// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "bob").await?;
/// assert_eq!(m.step().await?, StepOutcome::Advanced { from: MigrationState::Planned, to: MigrationState::Snapshotting });
/// // A second worker on the same record, holding an old revision, loses.
/// let mut other = migrator.load(m.id()).await?;
/// m.step().await?;
/// assert!(matches!(other.step().await, Err(Error::Conflict { .. })));
/// // Changed our mind before cutover.
/// assert_eq!(m.cancel("bob", "wrong tenant").await?, MigrationState::RollingBack);
/// m.step().await?;
/// assert_eq!(m.state(), MigrationState::Cancelled);
/// # Ok(()) }
/// ```
pub struct Migration {
    pub(super) migrator: Migrator,
    pub(super) worker: String,
    pub(super) record: MigrationRecord,
    /// `record`'s progress, read when the record was.
    pub(super) progress: Progress,
    /// A save of `record` failed without a definite answer (`Unavailable`, `Backend`): on a
    /// networked registry the write may have committed with its acknowledgement lost, so
    /// `record` may be stale. The next step, cancel or rollback re-reads it first.
    pub(super) unsure: bool,
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("id", &self.record.id)
            .field("tenant", &self.record.tenant)
            .field("state", &self.record.state)
            .field("revision", &self.record.revision)
            .field("worker", &self.worker)
            .finish()
    }
}

impl Migration {
    /// The migration's id.
    pub fn id(&self) -> MigrationId {
        self.record.id
    }

    /// The persisted state, as this worker last read or wrote it.
    pub fn state(&self) -> MigrationState {
        self.record.state
    }

    /// The record as this worker last read or wrote it.
    pub fn record(&self) -> &MigrationRecord {
        &self.record
    }

    /// The engine's progress (lease, attempts, snapshot, validation, soak, rollback, failure,
    /// operator commands), as this worker last read or wrote it.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Takes `record` as the current one, reading its progress ([`Error::Corrupt`] if it
    /// cannot; nothing is adopted then).
    pub(super) fn adopt(&mut self, record: MigrationRecord) -> Result<()> {
        self.progress = progress::decode(&record)?;
        self.record = record;
        Ok(())
    }

    /// This worker's lease name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Re-reads the record from the registry (after a `Conflict`, or to watch another worker).
    pub async fn reload(&mut self) -> Result<()> {
        let record = self
            .migrator
            .registry
            .migration(self.record.id)
            .await?
            .ok_or(Error::NotFound(Subject::Migration(self.record.id)))?;
        self.adopt(record)?;
        self.unsure = false;
        Ok(())
    }

    /// Re-reads the record if the last save may have taken effect unacknowledged.
    pub(super) async fn settle(&mut self) -> Result<()> {
        if self.unsure {
            self.reload().await?;
            trace_event!(
                migration = %self.record.id, state = %self.record.state, revision = self.record.revision,
                "record re-read after an unacknowledged save"
            );
        }
        Ok(())
    }

    /// The last validation: passed, when, summary.
    pub fn last_validation(&self) -> Option<(bool, Timestamp, &str)> {
        let v = self.progress.validation.as_ref()?;
        Some((v.passed, v.at, v.summary.as_str()))
    }

    /// The permanent failure that stopped or rolled back the migration: state and error.
    pub fn failure(&self) -> Option<(MigrationState, &str)> {
        let f = self.progress.failure.as_ref()?;
        Some((f.state, f.error.as_str()))
    }

    pub(super) fn actor(&self) -> String {
        self.record.id.to_string()
    }

    /// Fails with [`Error::LeaseHeld`] if another worker holds a live lease on the record.
    pub(super) fn check_lease(&self, now: Timestamp) -> Result<()> {
        if let Some(Lease { owner, until }) = &self.progress.lease {
            if owner != &self.worker && *until > now {
                return Err(Error::LeaseHeld {
                    migration: self.record.id,
                    holder: owner.clone(),
                    until: *until,
                });
            }
        }
        Ok(())
    }

    /// Saves `record` with `progress` (revision-checked) and adopts the result.
    pub(super) async fn save(
        &mut self,
        mut record: MigrationRecord,
        mut progress: Progress,
        release_lease: bool,
    ) -> Result<()> {
        if release_lease {
            progress.lease = None;
        }
        let mut merges = 0;
        loop {
            progress::encode(&progress, &mut record.data);
            match self.migrator.registry.save_migration(&record).await {
                Ok(saved) => {
                    self.record = saved;
                    self.progress = progress;
                    return Ok(());
                }
                // An operator's command or pause lands without the lease and moves the
                // revision on: take it in and save again. Any other change is another worker's.
                Err(e @ Error::Conflict(_)) if merges < 8 => match self.operator_change().await? {
                    Some((fresh, fresh_progress)) => {
                        merges += 1;
                        record.revision = fresh.revision;
                        progress.take_operator_fields(&fresh_progress);
                        self.record = fresh;
                        self.progress = fresh_progress;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(self.save_failed(e)),
            }
        }
    }

    fn save_failed(&mut self, e: Error) -> Error {
        {
            {
                // A rejection is definite (nothing was written); a lost connection is not.
                self.unsure = matches!(
                    e,
                    Error::Unavailable { .. } | Error::Backend { .. } | Error::OutcomeUnknown { .. }
                );
                e
            }
        }
    }

    /// Persists a transition to `next` with `updates`, releasing the lease and resetting the
    /// attempt counter.
    pub(super) async fn commit(&mut self, next: MigrationState, updates: Vec<Update>) -> Result<StepOutcome> {
        let from = self.record.state;
        from.transition(next)?;
        let mut rec = self.record.clone();
        rec.state = next;
        let mut p = self.progress.clone();
        p.attempt = 0;
        p.last_error = None;
        for u in updates {
            p.apply(u);
        }
        self.save(rec, p, true).await?;
        telemetry::count(
            names::MIGRATION_TRANSITIONS,
            &[("from", Value::Str(from.as_str())), ("to", Value::Str(next.as_str()))],
            1,
        );
        trace_event!(
            migration = %self.record.id, tenant = %self.record.tenant, from = %from, to = %next,
            revision = self.record.revision, "migration transition"
        );
        Ok(StepOutcome::Advanced { from, to: next })
    }

    /// Persists data without changing state, releasing the lease. `succeeded`: the state's
    /// work went through (a healthy poll, a wait, a verdict), so the count of consecutive
    /// failures starts again.
    async fn note(&mut self, updates: Vec<Update>, succeeded: bool) -> Result<()> {
        let mut p = self.progress.clone();
        if succeeded {
            p.attempt = 0;
            p.last_error = None;
        }
        for u in updates {
            p.apply(u);
        }
        self.save(self.record.clone(), p, true).await
    }

    /// Does exactly one step: claims the current state (lease + attempt, revision-checked),
    /// does its work through the driver and the registry, and persists the result.
    ///
    /// Errors are registry errors only: [`Error::Conflict`] when another worker claimed or
    /// advanced the migration, or holds a live lease on it (reload to watch it; do not fight
    /// it; a crashed worker's lease expires after [`MigrationConfig::lease`](super::MigrationConfig::lease)), [`Error::Unavailable`]
    /// when the registry could not be reached (step again later). A save that failed without
    /// a definite answer (`Unavailable` or `Backend`: on a database, the connection may have
    /// broken after the commit, so the write may have taken effect) makes the next `step`,
    /// [`cancel`](Self::cancel) or [`rollback`](Self::rollback) re-read the record first,
    /// so stepping again is always safe. Driver failures are
    /// outcomes: [`StepOutcome::Retry`] for retryable ones (until
    /// [`MigrationConfig::max_attempts`](super::MigrationConfig::max_attempts)), a transition to `RollingBack` (or `Failed` in
    /// `CleaningUp`/`RollingBack`) for permanent ones, with the failure recorded.
    pub async fn step(&mut self) -> Result<StepOutcome> {
        let state = self.record.state;
        let started = std::time::Instant::now();
        #[cfg(feature = "tracing")]
        let out = {
            use tracing::Instrument;
            let span = tracing::info_span!(
                "migration_step",
                migration = %self.record.id,
                tenant = %self.record.tenant,
                state = %self.record.state,
                worker = %self.worker,
            );
            self.step_inner().instrument(span).await
        };
        #[cfg(not(feature = "tracing"))]
        let out = self.step_inner().await;
        super::steps::record_step(state, started.elapsed(), &out);
        out
    }

    pub(super) async fn step_inner(&mut self) -> Result<StepOutcome> {
        self.settle().await?;
        let state = self.record.state;
        if state.is_terminal() {
            return Ok(StepOutcome::Finished { state });
        }
        let now = self.migrator.clock.now();
        if let Some(paused) = &self.progress.paused {
            return Ok(StepOutcome::Paused {
                state,
                by: paused.by.clone(),
            });
        }
        self.check_lease(now)?;
        if let Some(outcome) = self.honour_command().await? {
            return Ok(outcome);
        }
        let attempt = self.progress.attempt.saturating_add(1);
        let generation = self.progress.generation.saturating_add(1);
        let mut claim = self.progress.clone();
        claim.attempt = attempt;
        claim.generation = generation;
        claim.lease = Some(Lease {
            owner: self.worker.clone(),
            until: now + self.migrator.config.lease,
        });
        self.save(self.record.clone(), claim, false).await?;
        let ctx = MigrationContext::new(
            self.record.id,
            self.record.tenant.clone(),
            self.record.source,
            self.record.destination,
            state,
            attempt,
        )
        .generation(generation);
        let work = self.guarded_work(&ctx).await?;
        match work {
            Ok(Next::To(next, updates)) => self.commit(next, updates).await,
            Ok(Next::Wait(until, updates)) => {
                self.note(updates, true).await?;
                Ok(StepOutcome::Waiting { state, until })
            }
            Ok(Next::Block(reason, updates)) => {
                self.note(updates, true).await?;
                trace_event!(migration = %self.record.id, state = %state, reason = %reason, "migration blocked");
                Ok(StepOutcome::Blocked { state, reason })
            }
            Ok(Next::Refuse(reason, mut updates)) => {
                updates.push(Update::CutoverRefused(reason.clone()));
                self.commit(S::Validating, updates).await?;
                trace_event!(migration = %self.record.id, reason = %reason, "cutover refused");
                Ok(StepOutcome::Refused { reason })
            }
            Err(e) if e.is_retryable() && attempt < self.migrator.config.max_attempts => {
                let reason = e.to_string();
                trace_event!(migration = %self.record.id, state = %state, attempt, error = %reason, "migration step failed; will retry");
                self.note(vec![Update::LastError(reason.clone())], false).await?;
                Ok(StepOutcome::Retry { state, attempt, reason })
            }
            Err(e) => {
                let reason = e.to_string();
                let mut updates = vec![Update::Failure(Failure {
                    state,
                    error: reason.clone(),
                })];
                let next = match e {
                    StepError::Unexpected(_) => S::Failed,
                    _ if state.can_roll_back() => {
                        updates.push(Update::RollbackFrom(state));
                        updates.push(Update::RollbackOutcome(S::RolledBack));
                        updates.push(Update::RollbackReason(format!("failure in {state}: {reason}")));
                        S::RollingBack
                    }
                    _ => S::Failed,
                };
                telemetry::count(
                    names::MIGRATION_STEP_FAILURES,
                    &[
                        ("state", Value::Str(state.as_str())),
                        ("retryable", Value::Str("false")),
                    ],
                    1,
                );
                trace_event!(migration = %self.record.id, state = %state, error = %reason, next = %next, "migration step failed permanently");
                self.commit(next, updates).await
            }
        }
    }

    /// The state's work, with the lease renewed while it runs (feature `tokio`): on return
    /// `record` and `progress` are the last renewal's. An `Err` is a lease that could not be
    /// kept; the work was dropped.
    #[cfg(feature = "tokio")]
    async fn guarded_work(&mut self, ctx: &MigrationContext) -> Result<super::steps::Work> {
        let heartbeat = super::heartbeat::Heartbeat {
            registry: self.migrator.registry.clone(),
            clock: self.migrator.clock.clone(),
            lease: self.migrator.config.lease,
            worker: self.worker.clone(),
            latest: parking_lot::Mutex::new((self.record.clone(), self.progress.clone())),
        };
        let out = heartbeat.guard(self.work(ctx)).await;
        let (record, progress) = heartbeat.latest.into_inner();
        self.record = record;
        self.progress = progress;
        if let Err(e) = &out {
            trace_event!(migration = %self.record.id, error = %e, "step abandoned: the lease could not be kept");
            let _ = e; // read only by tracing
        }
        out
    }

    /// The state's work (without the `tokio` feature there is no heartbeat: keep each step
    /// shorter than the lease).
    #[cfg(not(feature = "tokio"))]
    async fn guarded_work(&mut self, ctx: &MigrationContext) -> Result<super::steps::Work> {
        Ok(self.work(ctx).await)
    }

    /// Drives the migration to a terminal state, or until it needs a person. Each step runs
    /// under [`MigrationConfig::step_timeout`](super::MigrationConfig::step_timeout); retryable failures, timeouts and an unreachable
    /// registry are retried with exponential backoff (from `backoff_initial` to
    /// `backoff_max`), at most `max_attempts` times in a row; the soak is re-checked every
    /// `soak_poll`. Stops with [`RunOutcome::Blocked`] on a failed validation or a refused
    /// cutover, and with the error on a `Conflict` (another worker is driving it).
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
    /// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
    /// # let migrator = migrator.config(MigrationConfig::default().soak_window(std::time::Duration::ZERO))?;
    /// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "erin").await?;
    /// assert_eq!(m.run().await?, RunOutcome::Finished(MigrationState::Completed));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn run(&mut self) -> Result<RunOutcome> {
        let cfg = self.migrator.config.clone();
        let mut backoff = cfg.backoff_initial;
        let mut failures: u32 = 0;
        loop {
            let outcome = tokio::time::timeout(cfg.step_timeout, self.step()).await;
            let pause = match outcome {
                Err(_elapsed) => {
                    failures += 1;
                    trace_event!(migration = %self.record.id, state = %self.record.state, "migration step timed out");
                    if failures >= cfg.max_attempts {
                        return Err(Error::unavailable(format!(
                            "{} timed out {failures} times in a row in state {}",
                            self.record.id, self.record.state
                        )));
                    }
                    self.reload().await?;
                    Some(next_backoff(&mut backoff, cfg.backoff_max))
                }
                Ok(Err(e @ (Error::Unavailable { .. } | Error::OutcomeUnknown { .. }))) => {
                    failures += 1;
                    if failures >= cfg.max_attempts {
                        return Err(e);
                    }
                    Some(next_backoff(&mut backoff, cfg.backoff_max))
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(StepOutcome::Finished { state })) => return Ok(RunOutcome::Finished(state)),
                Ok(Ok(StepOutcome::Advanced { to, .. })) => {
                    failures = 0;
                    backoff = cfg.backoff_initial;
                    if to.is_terminal() {
                        return Ok(RunOutcome::Finished(to));
                    }
                    None
                }
                Ok(Ok(StepOutcome::Waiting { .. })) => {
                    failures = 0;
                    Some(cfg.soak_poll)
                }
                Ok(Ok(StepOutcome::Retry { .. })) => Some(next_backoff(&mut backoff, cfg.backoff_max)),
                Ok(Ok(StepOutcome::Blocked { state, reason })) => return Ok(RunOutcome::Blocked { state, reason }),
                Ok(Ok(StepOutcome::Paused { state, by })) => return Ok(RunOutcome::Paused { state, by }),
                Ok(Ok(StepOutcome::Refused { reason })) => {
                    return Ok(RunOutcome::Blocked {
                        state: self.record.state,
                        reason,
                    })
                }
            };
            if let Some(d) = pause {
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

#[cfg(feature = "tokio")]
fn next_backoff(current: &mut Duration, max: Duration) -> Duration {
    let d = *current;
    *current = current.saturating_mul(2).min(max);
    d
}
