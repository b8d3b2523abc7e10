//! The crate's error type.
//!
//! One `#[non_exhaustive]` enum with meaning-based variants that every registry backend maps
//! its failures to; backend error types never appear in public signatures.

use std::fmt;

use super::{ConstraintViolation, Epoch, MigrationId, Resource, StampId, StampState, TenantId, TenantIdError};
use crate::time::Timestamp;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a missing or duplicate thing is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// A stamp.
    Stamp(StampId),
    /// A tenant's assignment.
    Tenant(TenantId),
    /// A migration record.
    Migration(MigrationId),
    /// A rollout record.
    Rollout(super::RolloutId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Stamp(s) => write!(f, "stamp {s}"),
            Subject::Tenant(t) => write!(f, "tenant {t}"),
            Subject::Migration(m) => write!(f, "{m}"),
            Subject::Rollout(r) => write!(f, "{r}"),
        }
    }
}

/// What a lost compare-and-set compared, with the values in their own types: the caller's
/// expectation and what the registry holds.
///
/// Epochs and revisions only grow, so retrying the same call with the same expectation fails
/// again: re-read, decide again, and retry with what you read.
///
/// ```
/// use stamps::error::Conflict;
/// use stamps::Epoch;
/// let c = Conflict::Epoch { expected: Epoch(3), actual: Epoch(7) };
/// assert_eq!(c.to_string(), "epoch conflict: expected 3, found 7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// A tenant's assignment moved on: its epoch is no longer the one the caller saw.
    Epoch {
        /// The epoch the caller expected.
        expected: Epoch,
        /// The assignment's epoch in the registry.
        actual: Epoch,
    },
    /// A migration record was saved by someone else since the caller read it.
    Revision {
        /// The revision the caller expected.
        expected: u64,
        /// The record's revision in the registry.
        actual: u64,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::Epoch { expected, actual } => {
                write!(f, "epoch conflict: expected {}, found {}", expected.0, actual.0)
            }
            Conflict::Revision { expected, actual } => {
                write!(f, "revision conflict: expected {expected}, found {actual}")
            }
        }
    }
}

/// An argument that failed validation: which one, and why.
///
/// ```
/// use stamps::{Capacity, Error, Resource};
/// let err = Capacity::new([(Resource::Connections, f64::NAN)], 0.25).unwrap_err();
/// assert!(matches!(err, Error::InvalidInput(ref i) if i.field == "capacity"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidInput {
    /// The argument or field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl InvalidInput {
    /// A validation failure.
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        InvalidInput { field, reason }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidInput {}

/// How many tenants [`Error::StampNotEmpty`] names.
pub const STAMP_NOT_EMPTY_LISTED: usize = 10;

fn tenant_list(first: &[TenantId], total: &u64) -> String {
    let mut s = first.iter().map(TenantId::as_str).collect::<Vec<_>>().join(", ");
    let more = (*total).saturating_sub(first.len() as u64);
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// Errors of registries and of the operations built on them.
///
/// Match on the variant to decide what to do:
///
/// | variant | what it means | what the caller does |
/// | --- | --- | --- |
/// | `Unavailable` | the backend could not be reached or did not answer; the call did not take effect, except as [`Error::Unavailable`] says for writes | retry later (or serve stale); [`is_retryable`](Error::is_retryable) |
/// | `LeaseHeld` | another worker holds a live lease on the migration | wait until `until` (or send an operator command); [`is_retryable`](Error::is_retryable) |
/// | `Conflict` | a compare-and-set lost: the caller's view is stale | re-read, decide again, retry with what was read |
/// | `CapacityExceeded`, `NotAccepting` | the stamp cannot take the tenant | place elsewhere |
/// | `NotFound`, `AlreadyAssigned`, `AlreadyExists`, `InvalidInput`, `InvalidTenantId`, `InvalidTransition` | caller errors | fix the call |
/// | `StampNotEmpty` | a stamp to retire still holds tenants (the first are named) | migrate or offboard them, then retire it |
/// | `ChangeFeedTruncated` | the feed no longer holds the versions asked for | reload a full snapshot, follow from its head |
/// | `HistoryDiverged` | the caller's cursor belongs to a history the registry lost (a failover without synchronous replication, a restore) | reload a full snapshot, follow from `head`, report it |
/// | `Backend` | anything else the backend reported | report it; see its `source` |
///
/// ```
/// use stamps::error::{Conflict, Error};
/// use stamps::Epoch;
/// let lost = Error::Conflict(Conflict::Epoch { expected: Epoch(3), actual: Epoch(7) });
/// assert!(!lost.is_retryable(), "epochs only grow: the same call fails again");
/// assert!(Error::unavailable("connection refused").is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stamp, tenant or migration does not exist.
    #[error("{0} not found; check the id, or create it first")]
    NotFound(Subject),
    /// The tenant already has an assignment; move it with `compare_and_set` instead.
    #[error("tenant {tenant} is already assigned to {stamp}; use compare_and_set to move it")]
    AlreadyAssigned {
        /// The tenant.
        tenant: TenantId,
        /// Where it is.
        stamp: StampId,
    },
    /// The thing exists already (a migration for a tenant that has one in progress, say).
    #[error("{0} already exists or is in progress; finish or cancel it first")]
    AlreadyExists(Subject),
    /// Admitting the tenant would take the stamp past its hard limit of `resource`.
    #[error("{stamp} has no room: {resource} would exceed its hard limit; place the tenant on another stamp or add capacity")]
    CapacityExceeded {
        /// The stamp.
        stamp: StampId,
        /// The resource that does not fit.
        resource: Resource,
    },
    /// The stamp is not accepting tenants in its current state.
    #[error("{stamp} is {state} and accepts no new tenants; choose an active stamp")]
    NotAccepting {
        /// The stamp.
        stamp: StampId,
        /// Its state.
        state: StampState,
    },
    /// A stamp that still holds tenants cannot be retired (decommissioned).
    #[error("{stamp} still holds {tenants} tenant(s) ({}); migrate or offboard them before retiring it", tenant_list(.first, .tenants))]
    StampNotEmpty {
        /// The stamp.
        stamp: StampId,
        /// How many tenants it holds (serving or as a migration's shadow).
        tenants: u64,
        /// The first of them in tenant-id order (up to [`STAMP_NOT_EMPTY_LISTED`](crate::error::STAMP_NOT_EMPTY_LISTED)).
        first: Vec<TenantId>,
    },
    /// A compare-and-set lost: the caller's view is stale. Epochs and revisions only grow, so
    /// the same call fails again; re-read, decide again and retry with what was read.
    #[error("{0}; re-read and retry with what you read")]
    Conflict(Conflict),
    /// Another worker holds a live lease on the migration: its steps are that worker's until
    /// the lease expires (or the worker releases it).
    #[error("{migration} is leased by worker {holder} until {until}; wait for the lease to expire or send an operator command")]
    LeaseHeld {
        /// The migration.
        migration: MigrationId,
        /// The worker holding the lease.
        holder: String,
        /// When the lease expires unless renewed.
        until: Timestamp,
    },
    /// An argument is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// A tenant id is invalid.
    #[error("invalid tenant id: {0}")]
    InvalidTenantId(#[from] TenantIdError),
    /// The requested state transition is not legal.
    #[error("illegal {what} transition from {from} to {to}")]
    InvalidTransition {
        /// What changes state.
        what: &'static str,
        /// Current state.
        from: &'static str,
        /// Requested state.
        to: &'static str,
    },
    /// The change feed no longer holds changes this old; resynchronise from a full snapshot.
    #[error("the change feed starts after {requested}: the oldest retained change is v{oldest}; reload all assignments and follow from the head")]
    ChangeFeedTruncated {
        /// The version asked for.
        requested: super::Version,
        /// The oldest version still held.
        oldest: u64,
    },
    /// The follower's cursor belongs to a history of the change feed the registry no longer
    /// has: changes up to `cursor` were acknowledged by a primary that failed (or by a database
    /// later restored to an earlier point) before they reached the server answering now, so
    /// what the follower applied after the last common version is lost and the versions after
    /// it may be issued again for other changes. Never silent: reload a full snapshot and
    /// follow from `head`. Returned by a replicated `PgRegistry` (feature `postgres`) after a
    /// failover with asynchronous replication (see its guide, "Replicas and failover"), and by
    /// every registry for a cursor past its head.
    ///
    /// ```
    /// use stamps::{Error, Version};
    /// let e = Error::HistoryDiverged { cursor: Version(105), head: Version(100), term: 1 };
    /// assert!(e.to_string().contains("reload"));
    /// assert!(!e.is_retryable(), "the same cursor fails again: resynchronise");
    /// ```
    #[error("the change feed's history diverged: cursor {cursor} is not in the registry's history (term {term}, head {head}); changes after the last common version were lost in a failover or restore; reload all assignments and follow from the head")]
    HistoryDiverged {
        /// The cursor asked for.
        cursor: super::Version,
        /// The head of the registry's current history: follow from here after reloading.
        head: super::Version,
        /// The current history's term (how many times the feed's history changed).
        term: u32,
    },
    /// The backend cannot be reached or timed out; the operation may be retried.
    ///
    /// Usually it did not take effect. A networked registry cannot always know: when the
    /// connection breaks after a write's commit was sent (`PgRegistry`), the write may have
    /// committed with its acknowledgement lost. Re-read before retrying a write whose
    /// precondition it would change (a revision or epoch compare-and-set then reports
    /// `Conflict` against your own write); the migration engine does this itself.
    #[error("registry unavailable: {reason}; retry later")]
    Unavailable {
        /// What happened.
        reason: String,
        /// The underlying error, if there is one (the driver's or the network's).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Any other backend failure.
    #[error("registry backend error: {source}")]
    Backend {
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The write would place the tenant (serving or as a migration's shadow) on a stamp against
    /// one of its hard constraints: residency, pin, tier or a dedicated stamp held by another
    /// tenant (see [`constraints`](crate::model::constraints)). Choose another stamp, or, if an
    /// operator truly must, repeat the write with an [`Override`](crate::model::Override)
    /// naming the constraint and a reason.
    #[error("constraint violated: {0}; choose another stamp or write with an explicit override")]
    ConstraintViolated(ConstraintViolation),
    /// A stored row cannot be read back as a valid model value (edited by hand, or written by
    /// another program). Only calls that need that row fail: the rest of the registry keeps
    /// working, `fleet()` leaves such a stamp out (see `Fleet::skipped`) and the change feed
    /// stops before such a version. Repair or delete the row; retrying alone does not help.
    ///
    /// ```
    /// let e = stamps::Error::Corrupt { what: "assignment of tenant acme".into(), reason: "demand_milli is out of range".into() };
    /// assert!(e.to_string().contains("assignment of tenant acme"));
    /// assert!(!e.is_retryable());
    /// ```
    #[error("the registry's {what} is unreadable: {reason}; repair or delete that row")]
    Corrupt {
        /// The row: `"assignment of tenant acme"`, `"stamp 7"`, `"change v123"`, ...
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A write was sent but no answer came within the call's deadline: it may or may not have
    /// committed. Re-read the state (the assignment's epoch, the migration's revision) before
    /// retrying; a blind retry may apply the write twice or report a `Conflict` against your
    /// own write. Reads, and writes not yet sent at the deadline, return `Unavailable` instead.
    ///
    /// ```
    /// let e = stamps::Error::OutcomeUnknown { reason: "no answer within 10s".into() };
    /// assert!(e.to_string().contains("re-read"));
    /// ```
    #[error("the write's outcome is unknown: {reason}; re-read before retrying")]
    OutcomeUnknown {
        /// What happened.
        reason: String,
    },
}

impl Error {
    /// Whether retrying the same call, unchanged, may succeed: `Unavailable` (the backend may
    /// answer next time) and `LeaseHeld` (the lease expires). A `Conflict` is not retryable as
    /// it stands: epochs and revisions only grow, so the caller must re-read first.
    ///
    /// ```
    /// use stamps::error::{Conflict, Error};
    /// assert!(!Error::Conflict(Conflict::Revision { expected: 4, actual: 5 }).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::LeaseHeld { .. })
    }

    /// The variant's name in snake case: a bounded label for metrics and logs (never the
    /// message, which may name a tenant).
    ///
    /// ```
    /// use stamps::error::{Conflict, Error};
    /// assert_eq!(Error::Conflict(Conflict::Revision { expected: 4, actual: 5 }).kind(), "conflict");
    /// assert_eq!(Error::unavailable("down").kind(), "unavailable");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::AlreadyAssigned { .. } => "already_assigned",
            Error::AlreadyExists(_) => "already_exists",
            Error::CapacityExceeded { .. } => "capacity_exceeded",
            Error::NotAccepting { .. } => "not_accepting",
            Error::StampNotEmpty { .. } => "stamp_not_empty",
            Error::Conflict(_) => "conflict",
            Error::LeaseHeld { .. } => "lease_held",
            Error::InvalidInput(_) => "invalid_input",
            Error::InvalidTenantId(_) => "invalid_tenant_id",
            Error::InvalidTransition { .. } => "invalid_transition",
            Error::ChangeFeedTruncated { .. } => "change_feed_truncated",
            Error::HistoryDiverged { .. } => "history_diverged",
            Error::Unavailable { .. } => "unavailable",
            Error::Backend { .. } => "backend",
            Error::ConstraintViolated(_) => "constraint_violated",
            Error::Corrupt { .. } => "corrupt",
            Error::OutcomeUnknown { .. } => "outcome_unknown",
        }
    }

    /// An `Unavailable` error with no underlying cause.
    pub fn unavailable(reason: impl Into<String>) -> Error {
        Error::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// An `Unavailable` error that keeps its cause (reachable through
    /// [`std::error::Error::source`]).
    ///
    /// ```
    /// use std::error::Error as _;
    /// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
    /// let err = stamps::Error::unavailable_from("registry read", io);
    /// assert_eq!(err.source().map(|s| s.to_string()), Some("read timed out".to_string()));
    /// ```
    pub fn unavailable_from(
        reason: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Unavailable {
            reason: reason.into(),
            source: Some(Box::new(source)),
        }
    }

    /// An epoch `Conflict`.
    pub fn epoch_conflict(expected: Epoch, actual: Epoch) -> Error {
        Error::Conflict(Conflict::Epoch { expected, actual })
    }

    /// A revision `Conflict`.
    pub fn revision_conflict(expected: u64, actual: u64) -> Error {
        Error::Conflict(Conflict::Revision { expected, actual })
    }

    /// A `Backend` error wrapping `source`.
    pub fn backend(source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Backend {
            source: Box::new(source),
        }
    }
}
