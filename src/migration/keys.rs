//! Names of the fields the engine keeps in
//! [`MigrationRecord::data`](crate::model::MigrationRecord::data). Driver-independent; read them
//! in dashboards and audits, do not write them.
//!
//! ```
//! use stamps::migration::keys;
//! use std::collections::BTreeMap;
//! let data = BTreeMap::from([(keys::VALIDATION_PASSED.to_string(), "true".to_string())]);
//! assert_eq!(data.get(keys::VALIDATION_PASSED).map(String::as_str), Some("true"));
//! ```

/// Who started the migration (a person or tool, required by [`Migrator::start`](super::Migrator::start)).
pub const INITIATED_BY: &str = "initiated_by";
/// The assignment epoch when the migration was planned.
pub const PLANNED_EPOCH: &str = "planned_epoch";
/// Attempt number of the current state's work.
pub const ATTEMPT: &str = "attempt";
/// The worker holding the step lease.
pub const LEASE_OWNER: &str = "lease.owner";
/// Lease expiry (milliseconds since the Unix epoch).
pub const LEASE_UNTIL: &str = "lease.until";
/// The lease generation: grows with every claim; the fencing token of driver calls.
pub const LEASE_GENERATION: &str = "lease.generation";
/// The last retryable failure of the current state.
pub const LAST_ERROR: &str = "last_error";
/// Snapshot id from the driver.
pub const SNAPSHOT_ID: &str = "snapshot.id";
/// Rows in the snapshot.
pub const SNAPSHOT_ROWS: &str = "snapshot.rows";
/// `true` or `false`: the last validation's verdict.
pub const VALIDATION_PASSED: &str = "validation.passed";
/// When the last validation ran (ms).
pub const VALIDATION_AT: &str = "validation.at";
/// The last validation's per-table summary.
pub const VALIDATION_SUMMARY: &str = "validation.summary";
/// Why the last cutover was refused.
pub const CUTOVER_REFUSED: &str = "cutover.refused";
/// The epoch at which the tenant moved to the destination.
pub const CUTOVER_EPOCH: &str = "cutover.epoch";
/// When the soak started (ms).
pub const SOAK_STARTED_AT: &str = "soak.started_at";
/// When the soak check last ran (ms).
pub const SOAK_LAST_CHECK: &str = "soak.last_check";
/// The state a rollback or cancel started in.
pub const ROLLBACK_FROM: &str = "rollback.from";
/// Where the rollback ends: `rolled_back` or `cancelled`.
pub const ROLLBACK_OUTCOME: &str = "rollback.outcome";
/// Why the rollback started (soak verdict, failure, the operator's words).
pub const ROLLBACK_REASON: &str = "rollback.reason";
/// Who asked for the rollback or cancel.
pub const ROLLBACK_BY: &str = "rollback.by";
/// The state whose work failed permanently.
pub const FAILURE_STATE: &str = "failure.state";
/// The permanent failure.
pub const FAILURE_ERROR: &str = "failure.error";
/// An operator command waiting for the lease holder: `cancel` or `rollback`. Recorded without
/// the lease (revision-checked), honoured at the holder's next step, or by any worker once the
/// lease expired.
pub const COMMAND: &str = "command";
/// Who asked for the pending [`COMMAND`].
pub const COMMAND_BY: &str = "command.by";
/// Why, in the operator's words.
pub const COMMAND_REASON: &str = "command.reason";
/// When the command was recorded (ms).
pub const COMMAND_AT: &str = "command.at";
/// Why the last command could not be honoured (it no longer applied to the state).
pub const COMMAND_REJECTED: &str = "command.rejected";
/// Who paused the migration; present while it is paused (steps do nothing until `resume`).
pub const PAUSED_BY: &str = "paused.by";
/// Why it was paused.
pub const PAUSED_REASON: &str = "paused.reason";
/// The stamp an operator kept when resolving a `Failed` migration.
pub const RESOLUTION_KEPT: &str = "resolution.kept";
/// Who resolved it.
pub const RESOLUTION_BY: &str = "resolution.by";
/// Why, in the operator's words.
pub const RESOLUTION_REASON: &str = "resolution.reason";
/// The assignment epoch at which the dropped stamp gave the tenant up.
pub const RESOLUTION_EPOCH: &str = "resolution.epoch";
/// When the resolution finished (ms); present once it did.
pub const RESOLVED_AT: &str = "resolution.at";
