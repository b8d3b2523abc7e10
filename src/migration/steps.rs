//! The work of each migration state: the idempotent driver calls and assignment
//! compare-and-sets a step does before [`Migration::step`] persists the next state.

use std::fmt;

use super::driver::{DriverError, MigrationContext, SnapshotInfo, ValidationReport};
use super::progress::{Update, Validation};
use super::soak::SoakVerdict;
use super::Migration;
use crate::error::Error;
use crate::model::{Assignment, AssignmentChange, AssignmentMode, MigrationState};
use crate::telemetry::{self, names, Value};
use crate::time::Timestamp;

use MigrationState as S;

/// What a state's work decided.
pub(super) enum Next {
    To(MigrationState, Vec<Update>),
    Wait(Timestamp, Vec<Update>),
    Block(String, Vec<Update>),
    Refuse(String, Vec<Update>),
}

/// Why a state's work stopped.
pub(super) enum StepError {
    Driver(DriverError),
    Registry(Error),
    /// The world is not as the migration left it (someone moved the tenant by hand): stop for
    /// a person without touching anything.
    Unexpected(String),
}

impl From<DriverError> for StepError {
    fn from(e: DriverError) -> Self {
        StepError::Driver(e)
    }
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError::Registry(e)
    }
}

impl StepError {
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            StepError::Driver(e) => e.is_retryable(),
            // A step re-reads the assignment and the record on every attempt, so a lost
            // compare-and-set, or a write whose outcome is unknown, is worth another attempt.
            StepError::Registry(e) => {
                e.is_retryable() || matches!(e, Error::Conflict(_) | Error::OutcomeUnknown { .. })
            }
            StepError::Unexpected(_) => false,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Driver(e) => e.fmt(f),
            StepError::Registry(e) => e.fmt(f),
            StepError::Unexpected(s) => write!(f, "unexpected assignment: {s}"),
        }
    }
}

pub(super) type Work = std::result::Result<Next, StepError>;

impl Migration {
    pub(super) async fn work(&self, ctx: &MigrationContext) -> Work {
        match ctx.state {
            S::Planned => self.work_planned().await,
            S::Snapshotting => self.work_snapshot(ctx).await,
            S::Importing => self.work_import(ctx).await,
            S::DualWrite => self.work_dual_write(ctx).await,
            S::Validating => self.work_validate(ctx).await,
            S::CutOver => self.work_cut_over(ctx).await,
            S::Soaking => self.work_soak(ctx).await,
            S::CleaningUp => self.work_clean_up(ctx).await,
            S::RollingBack => self.work_roll_back(ctx).await,
            S::Completed | S::Cancelled | S::RolledBack | S::Failed => {
                Err(StepError::Unexpected(format!("{} is terminal", ctx.state)))
            }
        }
    }

    async fn assignment(&self) -> std::result::Result<Assignment, StepError> {
        self.migrator
            .registry
            .assignment(&self.record.tenant)
            .await?
            .ok_or_else(|| StepError::Unexpected(format!("{} has no assignment", self.record.tenant)))
    }

    async fn cas(&self, a: &Assignment, change: AssignmentChange) -> std::result::Result<Assignment, StepError> {
        let next = self
            .migrator
            .registry
            .compare_and_set(&self.record.tenant, a.epoch, change.by(self.actor()))
            .await?;
        trace_event!(
            migration = %self.record.id, tenant = %self.record.tenant, stamp = %next.stamp,
            mode = %next.mode, epoch = %next.epoch, "assignment changed"
        );
        Ok(next)
    }

    /// Raises both stamps' fences to the assignment's epoch (the drain).
    async fn fence_both(&self, ctx: &MigrationContext, a: &Assignment) -> std::result::Result<(), StepError> {
        for stamp in [self.record.source, self.record.destination] {
            let holds = a.stamps().any(|s| s == stamp);
            self.migrator.driver.fence(ctx, stamp, a.epoch, holds).await?;
        }
        Ok(())
    }

    fn unexpected(&self, a: &Assignment) -> StepError {
        StepError::Unexpected(format!(
            "{} is on {} ({}) which {} in state {} does not expect",
            self.record.tenant, a.stamp, a.mode, self.record.id, self.record.state
        ))
    }

    fn snapshot_info(&self) -> std::result::Result<SnapshotInfo, StepError> {
        let (id, rows) =
            (self.progress.snapshot.clone()).ok_or_else(|| StepError::Unexpected("no snapshot recorded".into()))?;
        Ok(SnapshotInfo::new(id, rows))
    }

    fn on_source_serving(&self, a: &Assignment) -> bool {
        a.stamp == self.record.source && a.mode == AssignmentMode::Serving
    }

    fn dual_writing_forward(&self, a: &Assignment) -> bool {
        a.stamp == self.record.source
            && a.mode
                == AssignmentMode::DualWrite {
                    shadow: self.record.destination,
                }
    }

    fn frozen_forward(&self, a: &Assignment) -> Option<Timestamp> {
        match a.mode {
            AssignmentMode::Frozen { shadow, until }
                if a.stamp == self.record.source && shadow == Some(self.record.destination) =>
            {
                Some(until)
            }
            _ => None,
        }
    }

    fn dual_writing_reverse(&self, a: &Assignment) -> bool {
        a.stamp == self.record.destination
            && a.mode
                == AssignmentMode::DualWrite {
                    shadow: self.record.source,
                }
    }

    async fn work_planned(&self) -> Work {
        let a = self.assignment().await?;
        if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        if self.migrator.registry.stamp(self.record.destination).await?.is_none() {
            return Err(StepError::Unexpected(format!(
                "{} is not registered",
                self.record.destination
            )));
        }
        Ok(Next::To(S::Snapshotting, vec![]))
    }

    async fn work_snapshot(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        let snap = self.migrator.driver.snapshot(ctx).await?;
        Ok(Next::To(S::Importing, vec![Update::Snapshot(snap.id, snap.rows)]))
    }

    async fn work_import(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        let snap = self.snapshot_info()?;
        self.migrator.driver.import(ctx, &snap).await?;
        Ok(Next::To(S::DualWrite, vec![]))
    }

    async fn work_dual_write(&self, ctx: &MigrationContext) -> Work {
        let mut a = self.assignment().await?;
        if self.on_source_serving(&a) {
            let mode = AssignmentMode::DualWrite {
                shadow: self.record.destination,
            };
            a = self.cas(&a, AssignmentChange::set_mode(mode)).await?;
        } else if !self.dual_writing_forward(&a) {
            return Err(self.unexpected(&a));
        }
        self.fence_both(ctx, &a).await?;
        let snap = self.snapshot_info()?;
        self.migrator.driver.catch_up(ctx, &snap).await?;
        Ok(Next::To(S::Validating, vec![]))
    }

    fn validation_updates(&self, report: &ValidationReport, at: Timestamp) -> Vec<Update> {
        vec![Update::Validation(Validation {
            passed: report.passed(),
            at,
            summary: report.summary(),
        })]
    }

    async fn work_validate(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.dual_writing_forward(&a) {
            return Err(self.unexpected(&a));
        }
        // Catch up first: after a refused or abandoned cutover (a dual-write that reached the
        // source but was fenced off the destination by the freeze, the worker gone before the
        // freeze-time catch-up) only a catch-up makes the copies equal again; the catch-up is
        // idempotent, so doing it on every validation costs only the changes since the last.
        let snap = self.snapshot_info()?;
        self.migrator.driver.catch_up(ctx, &snap).await?;
        let report = self.migrator.driver.validate(ctx).await?;
        let updates = self.validation_updates(&report, self.migrator.clock.now());
        if report.passed() {
            Ok(Next::To(S::CutOver, updates))
        } else {
            Ok(Next::Block(format!("validation failed: {}", report.summary()), updates))
        }
    }

    /// Records the end of the write freeze that lasts until `until` (it began `max_freeze`
    /// before that).
    fn freeze_ended(&self, until: Timestamp, outcome: &'static str) {
        let cfg = &self.migrator.config;
        let max = u64::try_from(cfg.max_freeze.as_millis()).unwrap_or(u64::MAX);
        let began = Timestamp::from_millis(until.as_millis().saturating_sub(max));
        telemetry::seconds(
            names::MIGRATION_FREEZE_DURATION,
            &[("outcome", Value::Str(outcome))],
            self.migrator.clock.now().saturating_since(began),
        );
    }

    /// Back to plain dual-write on the source after a refused cutover.
    async fn unfreeze(&self, ctx: &MigrationContext, a: &Assignment) -> std::result::Result<(), StepError> {
        if let Some(until) = self.frozen_forward(a) {
            self.freeze_ended(until, "refused");
            let mode = AssignmentMode::DualWrite {
                shadow: self.record.destination,
            };
            let b = self.cas(a, AssignmentChange::set_mode(mode)).await?;
            self.fence_both(ctx, &b).await?;
        }
        Ok(())
    }

    async fn work_cut_over(&self, ctx: &MigrationContext) -> Work {
        let clock = &self.migrator.clock;
        let cfg = &self.migrator.config;
        let a = self.assignment().await?;
        if self.dual_writing_reverse(&a) {
            // The move landed before a crash: finish the step.
            self.fence_both(ctx, &a).await?;
            return Ok(Next::To(
                S::Soaking,
                vec![Update::SoakStarted(clock.now()), Update::CutoverEpoch(a.epoch)],
            ));
        }
        if !self.dual_writing_forward(&a) && self.frozen_forward(&a).is_none() {
            return Err(self.unexpected(&a));
        }
        // A freeze that expired (its worker died or stalled) has let writes through again as
        // dual-writes: what was drained under it no longer holds, so freeze and validate anew.
        if let Some(until) = self.frozen_forward(&a) {
            if clock.now() >= until {
                self.unfreeze(ctx, &a).await?;
                return Ok(Next::Refuse(
                    format!("the freeze expired at {until} before the cutover finished"),
                    vec![],
                ));
            }
        }
        // Freshness of the validation that let us here.
        let last = self.progress.validation.as_ref();
        let passed = last.is_some_and(|v| v.passed);
        let age = last.map(|v| clock.now().saturating_since(v.at));
        let refusal = match age {
            _ if !passed => Some("the last validation did not pass".to_string()),
            None => Some("no validation recorded".to_string()),
            Some(age) if age > cfg.max_validation_age => Some(format!(
                "the last validation is {age:?} old, more than the allowed {:?}",
                cfg.max_validation_age
            )),
            Some(_) => None,
        };
        if let Some(reason) = refusal {
            self.unfreeze(ctx, &a).await?;
            return Ok(Next::Refuse(reason, vec![]));
        }
        // Freeze (bounded), then drain through the fences.
        let frozen = if self.frozen_forward(&a).is_some() {
            a
        } else {
            let until = clock.now() + cfg.max_freeze;
            let mode = AssignmentMode::Frozen {
                shadow: Some(self.record.destination),
                until,
            };
            let frozen = self.cas(&a, AssignmentChange::set_mode(mode)).await?;
            telemetry::count(names::MIGRATION_FREEZES, &[], 1);
            frozen
        };
        let until = self.frozen_forward(&frozen).unwrap_or(Timestamp::ZERO);
        trace_event!(migration = %self.record.id, until = %until, "writes frozen");
        // Drain: once both fences are raised no write routed by an older assignment can land;
        // the catch-up then copies whatever the source has that the destination lacks (a
        // dual-write that reached the source but was fenced off the destination, say), so the
        // two sides are equal while frozen.
        self.fence_both(ctx, &frozen).await?;
        let snap = self.snapshot_info()?;
        self.migrator.driver.catch_up(ctx, &snap).await?;
        let mut updates = vec![];
        if cfg.validate_under_freeze {
            let report = self.migrator.driver.validate(ctx).await?;
            updates = self.validation_updates(&report, clock.now());
            if !report.passed() {
                self.unfreeze(ctx, &frozen).await?;
                return Ok(Next::Refuse(
                    format!("validation under the freeze failed: {}", report.summary()),
                    updates,
                ));
            }
        }
        if clock.now() > until {
            self.unfreeze(ctx, &frozen).await?;
            return Ok(Next::Refuse(
                format!("the freeze would overrun its bound of {:?}", cfg.max_freeze),
                updates,
            ));
        }
        let mode = AssignmentMode::DualWrite {
            shadow: self.record.source,
        };
        let moved = self
            .cas(&frozen, AssignmentChange::move_with_mode(self.record.destination, mode))
            .await?;
        self.freeze_ended(until, "cut_over");
        self.fence_both(ctx, &moved).await?;
        updates.push(Update::SoakStarted(clock.now()));
        updates.push(Update::CutoverEpoch(moved.epoch));
        Ok(Next::To(S::Soaking, updates))
    }

    async fn work_soak(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.dual_writing_reverse(&a) {
            return Err(self.unexpected(&a));
        }
        let now = self.migrator.clock.now();
        let started = self.progress.soak_started_at.unwrap_or(now);
        match self.migrator.soak.check(ctx).await {
            SoakVerdict::Unhealthy(reason) => Ok(Next::To(
                S::RollingBack,
                vec![
                    Update::RollbackFrom(S::Soaking),
                    Update::RollbackOutcome(S::RolledBack),
                    Update::RollbackReason(format!("soak check: {reason}")),
                    Update::SoakChecked(now),
                ],
            )),
            SoakVerdict::Healthy => {
                let ends = started + self.migrator.config.soak_window;
                let updates = vec![Update::SoakChecked(now)];
                if now >= ends {
                    Ok(Next::To(S::CleaningUp, updates))
                } else {
                    Ok(Next::Wait(ends, updates))
                }
            }
        }
    }

    async fn work_clean_up(&self, ctx: &MigrationContext) -> Work {
        let mut a = self.assignment().await?;
        if self.dual_writing_reverse(&a) {
            a = self
                .cas(&a, AssignmentChange::set_mode(AssignmentMode::Serving))
                .await?;
        } else if !(a.stamp == self.record.destination && a.mode == AssignmentMode::Serving) {
            return Err(self.unexpected(&a));
        }
        self.fence_both(ctx, &a).await?;
        self.migrator.driver.cleanup_source(ctx).await?;
        Ok(Next::To(S::Completed, vec![]))
    }

    async fn work_roll_back(&self, ctx: &MigrationContext) -> Work {
        let from = self.progress.rollback_from.unwrap_or(S::RollingBack);
        let outcome = match self.progress.rollback_outcome {
            Some(S::Cancelled) => S::Cancelled,
            _ => S::RolledBack,
        };
        let mut a = self.assignment().await?;
        if a.stamp == self.record.destination && a.mode.shadow() == Some(self.record.source) {
            a = self
                .cas(
                    &a,
                    AssignmentChange::move_with_mode(self.record.source, AssignmentMode::Serving),
                )
                .await?;
        } else if a.stamp == self.record.source && a.mode.shadow() == Some(self.record.destination) {
            a = self
                .cas(&a, AssignmentChange::set_mode(AssignmentMode::Serving))
                .await?;
        } else if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        self.fence_both(ctx, &a).await?;
        self.migrator.driver.rollback(ctx, from).await?;
        Ok(Next::To(outcome, vec![]))
    }
}

/// Records one step's duration and, by its outcome, a failure, a refused cutover or a block.
pub(super) fn record_step(
    state: MigrationState,
    took: std::time::Duration,
    out: &crate::error::Result<super::StepOutcome>,
) {
    let st = ("state", Value::Str(state.as_str()));
    telemetry::seconds(names::MIGRATION_STEP_DURATION, &[st], took);
    match out {
        Ok(super::StepOutcome::Retry { .. }) => {
            telemetry::count(
                names::MIGRATION_STEP_FAILURES,
                &[st, ("retryable", Value::Str("true"))],
                1,
            );
        }
        Ok(super::StepOutcome::Refused { .. }) => telemetry::count(names::MIGRATION_CUTOVER_REFUSALS, &[], 1),
        Ok(super::StepOutcome::Blocked { .. }) => telemetry::count(names::MIGRATION_BLOCKED, &[st], 1),
        _ => {}
    }
}
