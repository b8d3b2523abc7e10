//! What an operator does to a running migration: [`Migration::cancel`],
//! [`Migration::rollback`], [`Migration::pause`] and [`Migration::resume`]. None needs the
//! step lease: a command is recorded in the record (revision-checked, retried when the
//! revision moved on) and honoured by the lease holder at its next step boundary, or by any
//! worker once the lease expired.

use super::progress::{CommandKind as Command, Paused, PendingCommand, Progress, Update};
use super::worker::StepOutcome;
use super::Migration;
use crate::error::{Error, Result};
use crate::model::{MigrationRecord, MigrationState};

use MigrationState as S;

/// How many times an operator's write is retried when workers keep moving the revision on.
const OPERATOR_RETRIES: u32 = 20;

/// Whether the command applies to `state`, with the error if not.
fn check(cmd: Command, state: MigrationState) -> Result<()> {
    match cmd {
        Command::Cancel if state.is_cancellable() => Ok(()),
        Command::Cancel => Err(Error::InvalidTransition {
            what: "migration",
            from: state.as_str(),
            to: S::Cancelled.as_str(),
        }),
        Command::Rollback => state.transition(S::RollingBack).map(|_| ()),
    }
}

impl Migration {
    /// Cancels the migration before cutover, on behalf of `by`: from `Planned` straight to
    /// `Cancelled`; later through `RollingBack` (the next step undoes the dual-write mode and
    /// the destination copy, then lands in `Cancelled`). After cutover use
    /// [`rollback`](Self::rollback); the result is [`Error::InvalidTransition`].
    ///
    /// Needs no lease: re-reads the record, and if no other worker holds a live lease, persists
    /// the transition at once; if one does, records the command (revision-checked, retried when
    /// a worker moved the revision on) for that worker's next step, or for any worker once the
    /// lease expired ([`pending_command`](Self::pending_command) shows it). Returns the state
    /// persisted: `Cancelled`/`RollingBack`, or the unchanged state when the command was queued.
    pub async fn cancel(&mut self, by: &str, reason: &str) -> Result<MigrationState> {
        self.operator_command(Command::Cancel, by, reason).await
    }

    /// Starts a rollback on behalf of `by`, before or after cutover (until `CleaningUp`): the
    /// next step points the tenant back at the source, serving, fences the destination off and
    /// deletes its copy. Illegal states give [`Error::InvalidTransition`]. Like
    /// [`cancel`](Self::cancel), it needs no lease: while another worker holds a live one, the
    /// command is queued for it and the unchanged state is returned; otherwise the state
    /// persisted (`RollingBack`).
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
    /// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "frank").await?;
    /// for _ in 0..4 { m.step().await?; } // now dual-writing
    /// assert_eq!(m.rollback("frank", "destination latency").await?, MigrationState::RollingBack);
    /// m.step().await?;
    /// assert_eq!(m.state(), MigrationState::RolledBack);
    /// assert_eq!(registry.require_assignment(&t).await?.mode, AssignmentMode::Serving);
    /// # Ok(()) }
    /// ```
    pub async fn rollback(&mut self, by: &str, reason: &str) -> Result<MigrationState> {
        self.operator_command(Command::Rollback, by, reason).await
    }

    /// The command an operator queued for the lease holder (`cancel` or `rollback`), with who
    /// asked, as this worker last read the record.
    pub fn pending_command(&self) -> Option<&PendingCommand> {
        self.progress.command.as_ref()
    }

    /// Pauses the migration on behalf of `by`: from the next step boundary on, every
    /// [`step`](Self::step) does nothing and returns [`StepOutcome::Paused`] (and `run` stops
    /// with `RunOutcome::Paused`) until [`resume`](Self::resume). Needs no lease; a step
    /// already running finishes first. A pause does not bound a freeze: a freeze left in place
    /// expires after `max_freeze` and writes flow again.
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
    /// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "gina").await?;
    /// m.pause("gina", "change freeze until Monday").await?;
    /// assert!(matches!(m.step().await?, StepOutcome::Paused { state: MigrationState::Planned, .. }));
    /// m.resume("gina").await?;
    /// assert!(matches!(m.step().await?, StepOutcome::Advanced { .. }));
    /// # Ok(()) }
    /// ```
    pub async fn pause(&mut self, by: &str, reason: &str) -> Result<()> {
        let (by, reason) = (by.to_string(), reason.to_string());
        self.operator_write(move |p| {
            p.paused = Some(Paused {
                by: by.clone(),
                reason: reason.clone(),
            });
            Ok(())
        })
        .await
    }

    /// Lifts a [`pause`](Self::pause) on behalf of `by`; steps work again. Needs no lease.
    pub async fn resume(&mut self, by: &str) -> Result<()> {
        let by = by.to_string();
        self.operator_write(move |p| {
            if p.paused.take().is_some() {
                trace_event!(by = %by, "migration resumed");
                let _ = &by; // read only by tracing
            }
            Ok(())
        })
        .await
    }

    /// Who paused the migration and why, as this worker last read the record.
    pub fn paused(&self) -> Option<&Paused> {
        self.progress.paused.as_ref()
    }

    /// Re-reads the record, applies `edit` and saves it (revision-checked), again on a fresh
    /// read whenever a worker moved the revision on.
    async fn operator_write(&mut self, mut edit: impl FnMut(&mut Progress) -> Result<()>) -> Result<()> {
        let mut last = None;
        for _ in 0..OPERATOR_RETRIES {
            self.reload().await?;
            let mut p = self.progress.clone();
            edit(&mut p)?;
            match self.save(self.record.clone(), p, false).await {
                Ok(()) => return Ok(()),
                Err(e @ Error::Conflict(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::unavailable("operator write not attempted")))
    }

    async fn operator_command(&mut self, cmd: Command, by: &str, reason: &str) -> Result<MigrationState> {
        let mut last = None;
        for _ in 0..OPERATOR_RETRIES {
            self.reload().await?;
            let state = self.record.state;
            check(cmd, state)?;
            let now = self.migrator.clock.now();
            let attempt = match self.check_lease(now) {
                Ok(()) => self.apply(cmd, by, reason).await.map(|()| self.record.state),
                Err(Error::LeaseHeld { holder, until, .. }) => {
                    let mut p = self.progress.clone();
                    p.command = Some(PendingCommand {
                        kind: cmd,
                        by: by.into(),
                        reason: reason.into(),
                        at: now,
                    });
                    p.command_rejected = None;
                    trace_event!(
                        migration = %self.record.id, command = cmd.as_str(), holder = %holder, until = %until,
                        "command queued for the lease holder"
                    );
                    let _ = (&holder, until); // read only by tracing

                    self.save(self.record.clone(), p, false).await.map(|()| state)
                }
                Err(e) => return Err(e),
            };
            match attempt {
                Err(e @ Error::Conflict(_)) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::unavailable("operator command not attempted")))
    }

    /// Persists the transition `cmd` asks for (the caller checked it applies and that no other
    /// worker holds a live lease), clearing any queued command.
    async fn apply(&mut self, cmd: Command, by: &str, reason: &str) -> Result<()> {
        let state = self.record.state;
        self.progress.command = None;
        let (next, outcome) = match cmd {
            Command::Cancel if state == S::Planned => (S::Cancelled, S::Cancelled),
            Command::Cancel => (S::RollingBack, S::Cancelled),
            Command::Rollback => (S::RollingBack, S::RolledBack),
        };
        let mut updates = vec![
            Update::RollbackReason(reason.to_string()),
            Update::RollbackBy(by.to_string()),
        ];
        if next == S::RollingBack {
            updates.push(Update::RollbackFrom(state));
            updates.push(Update::RollbackOutcome(outcome));
        }
        self.commit(next, updates).await.map(|_| ())
    }

    /// At a step boundary, with the lease free or ours: honours a queued command. `Some` when
    /// it moved the migration; a command that no longer applies is recorded as rejected.
    pub(super) async fn honour_command(&mut self) -> Result<Option<StepOutcome>> {
        let Some(PendingCommand { kind, by, reason, .. }) = self.progress.command.clone() else {
            return Ok(None);
        };
        let from = self.record.state;
        match check(kind, from) {
            Ok(()) => {
                self.apply(kind, &by, &reason).await?;
                trace_event!(migration = %self.record.id, command = kind.as_str(), by = %by, "queued command honoured");
                Ok(Some(StepOutcome::Advanced {
                    from,
                    to: self.record.state,
                }))
            }
            Err(why) => {
                let mut p = self.progress.clone();
                p.command = None;
                p.command_rejected = Some(format!("{} by {by}: {why}", kind.as_str()));
                self.save(self.record.clone(), p, false).await?;
                Ok(None)
            }
        }
    }

    /// After a save lost on the revision: the fresh record and its progress if only an
    /// operator's command or pause changed it since this worker's copy, `None` if another
    /// worker did.
    pub(super) async fn operator_change(&self) -> Result<Option<(MigrationRecord, Progress)>> {
        let Some(fresh) = self.migrator.registry.migration(self.record.id).await? else {
            return Ok(None);
        };
        if fresh.revision == self.record.revision || fresh.state != self.record.state {
            return Ok(None);
        }
        let progress = super::progress::decode(&fresh)?;
        Ok(self
            .progress
            .same_but_operator_fields(&progress)
            .then_some((fresh, progress)))
    }
}
