//! The engine's progress record, typed: [`Progress`], what [`Migration::progress`](super::Migration::progress)
//! returns and what the engine persists in
//! [`MigrationRecord::data`](crate::model::MigrationRecord::data).
//!
//! **Stored format 2** (written by this build): the key `progress.format` = `2`, plus one key
//! per set field (`attempt`, `lease.owner`, `lease.until`, `validation.passed`, ...; times in
//! milliseconds since the Unix epoch, epochs and stamps as numbers, states by name).
//! **Format 1** (records written before the marker existed) has the same field keys and no
//! marker; it reads the same way, so migrations saved mid-flight by an older build resume.
//! A newer format, or a field that does not parse, is refused with
//! [`Error::Corrupt`](crate::error::Error::Corrupt) naming the migration and the key, never
//! read as a default. Keys the engine does not own are kept untouched.

mod codec;

use crate::model::{Epoch, MigrationState, StampId};
use crate::time::Timestamp;

pub use codec::FORMAT;
pub(super) use codec::{decode, encode};

/// A worker's exclusive claim on the migration's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker's name.
    pub owner: String,
    /// When the claim ends unless renewed.
    pub until: Timestamp,
}

/// The last validation's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Whether both sides matched.
    pub passed: bool,
    /// When it ran.
    pub at: Timestamp,
    /// Rows and checksums per table, with sample keys on a mismatch.
    pub summary: String,
}

/// The permanent failure that rolled the migration back or stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The state whose work failed.
    pub state: MigrationState,
    /// The error.
    pub error: String,
}

/// What an operator's queued command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// [`Migration::cancel`](super::Migration::cancel).
    Cancel,
    /// [`Migration::rollback`](super::Migration::rollback).
    Rollback,
}

impl CommandKind {
    /// `cancel` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Cancel => "cancel",
            CommandKind::Rollback => "rollback",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<CommandKind> {
        match s {
            "cancel" => Some(CommandKind::Cancel),
            "rollback" => Some(CommandKind::Rollback),
            _ => None,
        }
    }
}

/// An operator's command waiting for the lease holder's next step boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    /// What it asks for.
    pub kind: CommandKind,
    /// Who asked.
    pub by: String,
    /// Why, in their words.
    pub reason: String,
    /// When it was recorded.
    pub at: Timestamp,
}

/// Who paused the migration, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// An operator's resolution of a `Failed` migration, under way or finished (see
/// [`Migration::resolve_failed`](super::Migration::resolve_failed)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolutionProgress {
    /// The stamp kept.
    pub kept: StampId,
    /// Who decided.
    pub by: String,
    /// Why.
    pub reason: String,
    /// The epoch at which the dropped stamp gave the tenant up (once done).
    pub epoch: Option<Epoch>,
    /// When it finished (once done).
    pub at: Option<Timestamp>,
}

/// The migration engine's progress: everything it persists besides the state, typed.
///
/// Read it to watch a migration ([`Migration::progress`](super::Migration::progress)); the
/// engine writes it. Unset fields are `None` (or zero for counters).
///
/// ```
/// use stamps::migration::Progress;
/// let p = Progress::default();
/// assert_eq!(p.attempt, 0);
/// assert!(p.lease.is_none() && p.validation.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Who started the migration.
    pub initiated_by: Option<String>,
    /// The assignment epoch when the migration was planned.
    pub planned_epoch: Option<Epoch>,
    /// Consecutive failed attempts of the current state's work (0 after a success).
    pub attempt: u32,
    /// The last retryable failure of the current state.
    pub last_error: Option<String>,
    /// The live claim on the next step, if any (see [`Lease`]).
    pub lease: Option<Lease>,
    /// The lease generation: grows with every claim; the fencing token of driver calls.
    pub generation: u64,
    /// The driver's snapshot: its id and rows.
    pub snapshot: Option<(String, u64)>,
    /// The last validation.
    pub validation: Option<Validation>,
    /// Why the last cutover was refused.
    pub cutover_refused: Option<String>,
    /// The epoch at which the tenant moved to the destination.
    pub cutover_epoch: Option<Epoch>,
    /// When the soak started.
    pub soak_started_at: Option<Timestamp>,
    /// When the soak check last ran.
    pub soak_last_check: Option<Timestamp>,
    /// The state a rollback or cancel started in.
    pub rollback_from: Option<MigrationState>,
    /// Where the rollback ends: `RolledBack` or `Cancelled`.
    pub rollback_outcome: Option<MigrationState>,
    /// Why the rollback started (soak verdict, failure, the operator's words).
    pub rollback_reason: Option<String>,
    /// Who asked for the rollback or cancel.
    pub rollback_by: Option<String>,
    /// The permanent failure, if any.
    pub failure: Option<Failure>,
    /// An operator's command waiting for the lease holder.
    pub command: Option<PendingCommand>,
    /// Why the last command could not be honoured (it no longer applied to the state).
    pub command_rejected: Option<String>,
    /// Present while the migration is paused.
    pub paused: Option<Paused>,
    /// An operator's resolution of a `Failed` migration.
    pub resolution: Option<ResolutionProgress>,
}

/// One change a step makes to the progress (applied on top of the record it read).
#[derive(Debug, Clone)]
pub(super) enum Update {
    Snapshot(String, u64),
    Validation(Validation),
    CutoverRefused(String),
    CutoverEpoch(Epoch),
    SoakStarted(Timestamp),
    SoakChecked(Timestamp),
    RollbackFrom(MigrationState),
    RollbackOutcome(MigrationState),
    RollbackReason(String),
    RollbackBy(String),
    Failure(Failure),
    LastError(String),
}

impl Progress {
    /// Reads the progress stored in a migration record (a dashboard reading records straight
    /// from the registry, say). [`Error::Corrupt`](crate::error::Error::Corrupt) names the
    /// migration and field that does not parse, or a format newer than this build's.
    ///
    /// ```
    /// use stamps::migration::Progress;
    /// use stamps::{MigrationRecord, StampId, TenantId};
    /// let mut rec = MigrationRecord::planned(TenantId::new("acme")?, StampId(1), StampId(2));
    /// rec.data.insert("attempt".into(), "2".into()); // written by an older build: no format marker
    /// assert_eq!(Progress::read(&rec)?.attempt, 2);
    /// rec.data.insert("attempt".into(), "two".into());
    /// assert!(matches!(Progress::read(&rec), Err(stamps::Error::Corrupt { .. })));
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn read(record: &crate::model::MigrationRecord) -> crate::error::Result<Progress> {
        decode(record)
    }

    /// Stores the progress in `record`'s data in the current format, replacing the engine's
    /// fields and keeping any others. The engine does this on every save; this is for tests,
    /// fixtures and repair tools.
    ///
    /// ```
    /// use stamps::migration::Progress;
    /// use stamps::{MigrationRecord, StampId, TenantId};
    /// let mut rec = MigrationRecord::planned(TenantId::new("acme")?, StampId(1), StampId(2));
    /// let mut p = Progress::default();
    /// p.attempt = 3;
    /// p.write(&mut rec);
    /// assert_eq!(rec.data["progress.format"], "2");
    /// assert_eq!(Progress::read(&rec)?, p);
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn write(&self, record: &mut crate::model::MigrationRecord) {
        encode(self, &mut record.data);
    }

    pub(super) fn apply(&mut self, update: Update) {
        match update {
            Update::Snapshot(id, rows) => self.snapshot = Some((id, rows)),
            Update::Validation(v) => self.validation = Some(v),
            Update::CutoverRefused(r) => self.cutover_refused = Some(r),
            Update::CutoverEpoch(e) => self.cutover_epoch = Some(e),
            Update::SoakStarted(t) => self.soak_started_at = Some(t),
            Update::SoakChecked(t) => self.soak_last_check = Some(t),
            Update::RollbackFrom(s) => self.rollback_from = Some(s),
            Update::RollbackOutcome(s) => self.rollback_outcome = Some(s),
            Update::RollbackReason(r) => self.rollback_reason = Some(r),
            Update::RollbackBy(b) => self.rollback_by = Some(b),
            Update::Failure(f) => self.failure = Some(f),
            Update::LastError(e) => self.last_error = Some(e),
        }
    }

    /// Takes the fields an operator writes without the lease (command, pause) from `fresh`.
    pub(super) fn take_operator_fields(&mut self, fresh: &Progress) {
        self.command = fresh.command.clone();
        self.command_rejected = fresh.command_rejected.clone();
        self.paused = fresh.paused.clone();
    }

    /// Whether `self` and `other` differ only in what an operator writes without the lease.
    pub(super) fn same_but_operator_fields(&self, other: &Progress) -> bool {
        let mut a = self.clone();
        a.take_operator_fields(other);
        &a == other
    }
}
