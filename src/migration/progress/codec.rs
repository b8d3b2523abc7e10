//! How a [`Progress`] is stored in a migration record's text map, and read back.
//!
//! **Format 2** (written by this build): the key `progress.format` = `2`, plus one key per set
//! field (`attempt`, `lease.owner`, `lease.until`, `validation.passed`, ...; times in
//! milliseconds since the Unix epoch, epochs and stamps as numbers, states by name).
//! **Format 1** (records written before the marker existed) has the same field keys and no
//! marker; it reads the same way, so migrations saved mid-flight by an older build resume.
//! A newer format, or a field that does not parse, is refused with
//! [`Error::Corrupt`] naming the migration and the key: never read as a default.
//! Keys the engine does not own are kept untouched.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::{CommandKind, Failure, Lease, Paused, PendingCommand, Progress, ResolutionProgress, Validation};
use crate::error::{Error, Result};
use crate::model::{Epoch, MigrationRecord, MigrationState, StampId};
use crate::time::Timestamp;

/// The progress format this build writes.
///
/// ```
/// assert_eq!(stamps::migration::progress::FORMAT, 2);
/// ```
pub const FORMAT: u32 = 2;

const K_FORMAT: &str = "progress.format";
const K_INITIATED_BY: &str = "initiated_by";
const K_PLANNED_EPOCH: &str = "planned_epoch";
const K_ATTEMPT: &str = "attempt";
const K_LEASE_OWNER: &str = "lease.owner";
const K_LEASE_UNTIL: &str = "lease.until";
const K_LEASE_GENERATION: &str = "lease.generation";
const K_LAST_ERROR: &str = "last_error";
const K_SNAPSHOT_ID: &str = "snapshot.id";
const K_SNAPSHOT_ROWS: &str = "snapshot.rows";
const K_VALIDATION_PASSED: &str = "validation.passed";
const K_VALIDATION_AT: &str = "validation.at";
const K_VALIDATION_SUMMARY: &str = "validation.summary";
const K_CUTOVER_REFUSED: &str = "cutover.refused";
const K_CUTOVER_EPOCH: &str = "cutover.epoch";
const K_SOAK_STARTED_AT: &str = "soak.started_at";
const K_SOAK_LAST_CHECK: &str = "soak.last_check";
const K_ROLLBACK_FROM: &str = "rollback.from";
const K_ROLLBACK_OUTCOME: &str = "rollback.outcome";
const K_ROLLBACK_REASON: &str = "rollback.reason";
const K_ROLLBACK_BY: &str = "rollback.by";
const K_FAILURE_STATE: &str = "failure.state";
const K_FAILURE_ERROR: &str = "failure.error";
const K_COMMAND: &str = "command";
const K_COMMAND_BY: &str = "command.by";
const K_COMMAND_REASON: &str = "command.reason";
const K_COMMAND_AT: &str = "command.at";
const K_COMMAND_REJECTED: &str = "command.rejected";
const K_PAUSED_BY: &str = "paused.by";
const K_PAUSED_REASON: &str = "paused.reason";
const K_RESOLUTION_KEPT: &str = "resolution.kept";
const K_RESOLUTION_BY: &str = "resolution.by";
const K_RESOLUTION_REASON: &str = "resolution.reason";
const K_RESOLUTION_EPOCH: &str = "resolution.epoch";
const K_RESOLUTION_AT: &str = "resolution.at";

/// Every key the engine owns (removed before an encode, so cleared fields disappear).
const OWNED: [&str; 35] = [
    K_FORMAT,
    K_INITIATED_BY,
    K_PLANNED_EPOCH,
    K_ATTEMPT,
    K_LEASE_OWNER,
    K_LEASE_UNTIL,
    K_LEASE_GENERATION,
    K_LAST_ERROR,
    K_SNAPSHOT_ID,
    K_SNAPSHOT_ROWS,
    K_VALIDATION_PASSED,
    K_VALIDATION_AT,
    K_VALIDATION_SUMMARY,
    K_CUTOVER_REFUSED,
    K_CUTOVER_EPOCH,
    K_SOAK_STARTED_AT,
    K_SOAK_LAST_CHECK,
    K_ROLLBACK_FROM,
    K_ROLLBACK_OUTCOME,
    K_ROLLBACK_REASON,
    K_ROLLBACK_BY,
    K_FAILURE_STATE,
    K_FAILURE_ERROR,
    K_COMMAND,
    K_COMMAND_BY,
    K_COMMAND_REASON,
    K_COMMAND_AT,
    K_COMMAND_REJECTED,
    K_PAUSED_BY,
    K_PAUSED_REASON,
    K_RESOLUTION_KEPT,
    K_RESOLUTION_BY,
    K_RESOLUTION_REASON,
    K_RESOLUTION_EPOCH,
    K_RESOLUTION_AT,
];

/// Reads one record's fields, naming the record and key in every error.
struct Reader<'a> {
    data: &'a BTreeMap<String, String>,
    what: String,
}

impl Reader<'_> {
    fn corrupt(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what: format!("{} field {key}", self.what),
            reason: reason.to_string(),
        }
    }

    fn text(&self, key: &str) -> Option<String> {
        self.data.get(key).cloned()
    }

    fn parsed<T: FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.data.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|e| self.corrupt(key, format!("{v:?}: {e}"))),
        }
    }

    fn time(&self, key: &str) -> Result<Option<Timestamp>> {
        Ok(self.parsed::<u64>(key)?.map(Timestamp::from_millis))
    }

    fn epoch(&self, key: &str) -> Result<Option<Epoch>> {
        Ok(self.parsed::<u64>(key)?.map(Epoch))
    }

    fn state(&self, key: &str) -> Result<Option<MigrationState>> {
        match self.data.get(key) {
            None => Ok(None),
            Some(v) => MigrationState::parse(v)
                .map(Some)
                .ok_or_else(|| self.corrupt(key, format!("{v:?} is not a migration state"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.data.get(key).map(String::as_str) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(self.corrupt(key, format!("{v:?} is not true or false"))),
        }
    }

    /// Both keys or neither: `key`'s partner `other` must be there too.
    fn both<A, B>(&self, a: Option<A>, b: Option<B>, key: &str, other: &str) -> Result<Option<(A, B)>> {
        match (a, b) {
            (Some(a), Some(b)) => Ok(Some((a, b))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.corrupt(other, format!("missing while {key} is set"))),
            (None, Some(_)) => Err(self.corrupt(key, format!("missing while {other} is set"))),
        }
    }
}

/// Reads the progress stored in `record` (format 1 or 2).
pub(in crate::migration) fn decode(record: &MigrationRecord) -> Result<Progress> {
    let r = Reader {
        data: &record.data,
        what: format!("progress of {}", record.id),
    };
    match r.parsed::<u32>(K_FORMAT)? {
        None | Some(1) | Some(FORMAT) => {}
        Some(newer) => {
            return Err(r.corrupt(
                K_FORMAT,
                format!("format {newer} was written by a newer build (this one reads up to {FORMAT})"),
            ))
        }
    }
    let lease = r.both(
        r.text(K_LEASE_OWNER),
        r.time(K_LEASE_UNTIL)?,
        K_LEASE_OWNER,
        K_LEASE_UNTIL,
    )?;
    let snapshot = r.both(
        r.text(K_SNAPSHOT_ID),
        r.parsed::<u64>(K_SNAPSHOT_ROWS)?,
        K_SNAPSHOT_ID,
        K_SNAPSHOT_ROWS,
    )?;
    let verdict = r.both(
        r.bool(K_VALIDATION_PASSED)?,
        r.time(K_VALIDATION_AT)?,
        K_VALIDATION_PASSED,
        K_VALIDATION_AT,
    )?;
    let failure = r.both(
        r.state(K_FAILURE_STATE)?,
        r.text(K_FAILURE_ERROR),
        K_FAILURE_STATE,
        K_FAILURE_ERROR,
    )?;
    let command = match r.text(K_COMMAND) {
        None => None,
        Some(raw) => Some(PendingCommand {
            kind: CommandKind::parse(&raw).ok_or_else(|| r.corrupt(K_COMMAND, format!("unknown command {raw:?}")))?,
            by: r.text(K_COMMAND_BY).unwrap_or_default(),
            reason: r.text(K_COMMAND_REASON).unwrap_or_default(),
            at: r.time(K_COMMAND_AT)?.unwrap_or(Timestamp::ZERO),
        }),
    };
    let resolution = match r.parsed::<u32>(K_RESOLUTION_KEPT)? {
        None => None,
        Some(kept) => Some(ResolutionProgress {
            kept: StampId(kept),
            by: r.text(K_RESOLUTION_BY).unwrap_or_default(),
            reason: r.text(K_RESOLUTION_REASON).unwrap_or_default(),
            epoch: r.epoch(K_RESOLUTION_EPOCH)?,
            at: r.time(K_RESOLUTION_AT)?,
        }),
    };
    Ok(Progress {
        initiated_by: r.text(K_INITIATED_BY),
        planned_epoch: r.epoch(K_PLANNED_EPOCH)?,
        attempt: r.parsed::<u32>(K_ATTEMPT)?.unwrap_or(0),
        last_error: r.text(K_LAST_ERROR),
        lease: lease.map(|(owner, until)| Lease { owner, until }),
        generation: r.parsed::<u64>(K_LEASE_GENERATION)?.unwrap_or(0),
        snapshot,
        validation: verdict.map(|(passed, at)| Validation {
            passed,
            at,
            summary: r.text(K_VALIDATION_SUMMARY).unwrap_or_default(),
        }),
        cutover_refused: r.text(K_CUTOVER_REFUSED),
        cutover_epoch: r.epoch(K_CUTOVER_EPOCH)?,
        soak_started_at: r.time(K_SOAK_STARTED_AT)?,
        soak_last_check: r.time(K_SOAK_LAST_CHECK)?,
        rollback_from: r.state(K_ROLLBACK_FROM)?,
        rollback_outcome: r.state(K_ROLLBACK_OUTCOME)?,
        rollback_reason: r.text(K_ROLLBACK_REASON),
        rollback_by: r.text(K_ROLLBACK_BY),
        failure: failure.map(|(state, error)| Failure { state, error }),
        command,
        command_rejected: r.text(K_COMMAND_REJECTED),
        paused: r.text(K_PAUSED_BY).map(|by| Paused {
            by,
            reason: r.text(K_PAUSED_REASON).unwrap_or_default(),
        }),
        resolution,
    })
}

/// Writes `progress` into `data` in the current format, replacing every engine-owned key and
/// keeping the others.
pub(in crate::migration) fn encode(progress: &Progress, data: &mut BTreeMap<String, String>) {
    for k in OWNED {
        data.remove(k);
    }
    let mut put = |k: &str, v: String| {
        data.insert(k.to_string(), v);
    };
    put(K_FORMAT, FORMAT.to_string());
    let p = progress;
    if let Some(v) = &p.initiated_by {
        put(K_INITIATED_BY, v.clone());
    }
    if let Some(e) = p.planned_epoch {
        put(K_PLANNED_EPOCH, e.0.to_string());
    }
    if p.attempt > 0 {
        put(K_ATTEMPT, p.attempt.to_string());
    }
    if let Some(v) = &p.last_error {
        put(K_LAST_ERROR, v.clone());
    }
    if let Some(l) = &p.lease {
        put(K_LEASE_OWNER, l.owner.clone());
        put(K_LEASE_UNTIL, l.until.as_millis().to_string());
    }
    if p.generation > 0 {
        put(K_LEASE_GENERATION, p.generation.to_string());
    }
    if let Some((id, rows)) = &p.snapshot {
        put(K_SNAPSHOT_ID, id.clone());
        put(K_SNAPSHOT_ROWS, rows.to_string());
    }
    if let Some(v) = &p.validation {
        put(K_VALIDATION_PASSED, v.passed.to_string());
        put(K_VALIDATION_AT, v.at.as_millis().to_string());
        put(K_VALIDATION_SUMMARY, v.summary.clone());
    }
    if let Some(v) = &p.cutover_refused {
        put(K_CUTOVER_REFUSED, v.clone());
    }
    if let Some(e) = p.cutover_epoch {
        put(K_CUTOVER_EPOCH, e.0.to_string());
    }
    if let Some(t) = p.soak_started_at {
        put(K_SOAK_STARTED_AT, t.as_millis().to_string());
    }
    if let Some(t) = p.soak_last_check {
        put(K_SOAK_LAST_CHECK, t.as_millis().to_string());
    }
    if let Some(s) = p.rollback_from {
        put(K_ROLLBACK_FROM, s.as_str().to_string());
    }
    if let Some(s) = p.rollback_outcome {
        put(K_ROLLBACK_OUTCOME, s.as_str().to_string());
    }
    if let Some(v) = &p.rollback_reason {
        put(K_ROLLBACK_REASON, v.clone());
    }
    if let Some(v) = &p.rollback_by {
        put(K_ROLLBACK_BY, v.clone());
    }
    if let Some(f) = &p.failure {
        put(K_FAILURE_STATE, f.state.as_str().to_string());
        put(K_FAILURE_ERROR, f.error.clone());
    }
    if let Some(c) = &p.command {
        put(K_COMMAND, c.kind.as_str().to_string());
        put(K_COMMAND_BY, c.by.clone());
        put(K_COMMAND_REASON, c.reason.clone());
        put(K_COMMAND_AT, c.at.as_millis().to_string());
    }
    if let Some(v) = &p.command_rejected {
        put(K_COMMAND_REJECTED, v.clone());
    }
    if let Some(v) = &p.paused {
        put(K_PAUSED_BY, v.by.clone());
        put(K_PAUSED_REASON, v.reason.clone());
    }
    if let Some(r) = &p.resolution {
        put(K_RESOLUTION_KEPT, r.kept.0.to_string());
        put(K_RESOLUTION_BY, r.by.clone());
        put(K_RESOLUTION_REASON, r.reason.clone());
        if let Some(e) = r.epoch {
            put(K_RESOLUTION_EPOCH, e.0.to_string());
        }
        if let Some(t) = r.at {
            put(K_RESOLUTION_AT, t.as_millis().to_string());
        }
    }
}
