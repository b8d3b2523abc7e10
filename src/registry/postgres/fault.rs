//! Mapping driver and pool failures to the crate's [`Error`] variants.

use std::fmt;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error::Error;

/// A database error reported by PostgreSQL, as the source of [`Error::Backend`]: the SQLSTATE
/// code and the server's message, without the driver's types.
///
/// ```
/// use stamps::registry::postgres::DatabaseError;
/// let e = DatabaseError::new("42501", "permission denied for schema stamps");
/// assert_eq!(e.code(), "42501");
/// assert!(e.to_string().contains("permission denied"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseError {
    code: String,
    message: String,
}

impl DatabaseError {
    /// An error with a SQLSTATE code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        DatabaseError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The five-character SQLSTATE code (empty when the failure did not come from the server).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The server's (or driver's) message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} (SQLSTATE {})", self.message, self.code)
        }
    }
}

impl std::error::Error for DatabaseError {}

/// Why a step of a registry call failed, before mapping to [`Error`].
#[derive(Debug)]
pub(crate) enum Fault {
    /// The driver reported an error.
    Db(tokio_postgres::Error),
    /// No connection could be had from the pool.
    Pool(PoolError),
    /// A crate error decided by the registry's own logic (conflict, capacity, not found...).
    Crate(Error),
}

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Self {
        Fault::Db(e)
    }
}

impl From<PoolError> for Fault {
    fn from(e: PoolError) -> Self {
        Fault::Pool(e)
    }
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        Fault::Crate(e)
    }
}

impl From<crate::error::InvalidInput> for Fault {
    fn from(e: crate::error::InvalidInput) -> Self {
        Fault::Crate(e.into())
    }
}

impl Fault {
    /// The SQLSTATE of a database error.
    pub(crate) fn code(&self) -> Option<&SqlState> {
        match self {
            Fault::Db(e) => e.code(),
            _ => None,
        }
    }

    /// Whether the whole call can be retried as it is: the transaction lost a race the server
    /// detected (serialization failure, deadlock), or a prepared statement went stale under a
    /// schema change ([`Fault::is_stale_plan`]; the connection is dropped before the retry).
    pub(crate) fn is_retryable_race(&self) -> bool {
        matches!(
            self.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        ) || self.is_stale_plan()
    }

    /// Whether a statement prepared on this connection no longer fits the schema (a migration
    /// changed the type of a column it returns: "cached plan must not change result type").
    /// The connection's prepared statements are stale: drop it and run the call again.
    pub(crate) fn is_stale_plan(&self) -> bool {
        match self {
            Fault::Db(e) => e.as_db_error().is_some_and(|d| {
                *d.code() == SqlState::FEATURE_NOT_SUPPORTED
                    && d.message().contains("cached plan must not change result type")
            }),
            _ => false,
        }
    }

    /// Whether the connection this happened on must not be reused.
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            Fault::Db(e) => {
                e.is_closed()
                    || self.is_stale_plan()
                    || e.code().is_none_or(|c| {
                        let c = c.code();
                        // A read-only server is a standby (a demoted primary, or the wrong host
                        // of a list): drop the connection so the pool finds the primary.
                        c.starts_with("08") || c.starts_with("57P") || c == SqlState::READ_ONLY_SQL_TRANSACTION.code()
                    })
            }
            _ => false,
        }
    }

    /// Maps to the crate's error.
    pub(crate) fn into_error(self) -> Error {
        match self {
            Fault::Crate(Error::Corrupt { what, reason }) if what.is_empty() => Error::Corrupt {
                what: "row".to_string(),
                reason,
            },
            Fault::Crate(e) => e,
            Fault::Pool(e) => match e {
                PoolError::Backend(db) => map_db(db),
                PoolError::Timeout(t) => Error::unavailable(format!(
                    "no PostgreSQL connection within the configured timeout ({t:?}); the server may be down or the pool too small"
                )),
                PoolError::Closed => Error::unavailable("the PostgreSQL connection pool is closed"),
                PoolError::NoRuntimeSpecified => Error::backend(DatabaseError::new("", "the pool has no runtime")),
                PoolError::PostCreateHook(h) => {
                    let reason = format!("connection setup failed: {h}");
                    Error::unavailable_from(reason, PoolError::PostCreateHook(h))
                }
            },
            Fault::Db(e) => map_db(e),
        }
    }
}

/// Whether a SQLSTATE says that retrying the whole call may succeed: connection loss,
/// shutdown, timeouts, lack of resources, a lost race (serialization failure, deadlock, lock
/// timeout), or a read-only server (a standby; the pool finds the primary).
pub(crate) fn transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("57") // operator intervention: admin shutdown, query canceled (statement timeout)
        || code.starts_with("53") // insufficient resources: too many connections, disk full
        || code == SqlState::LOCK_NOT_AVAILABLE.code()
        || code == SqlState::T_R_SERIALIZATION_FAILURE.code()
        || code == SqlState::T_R_DEADLOCK_DETECTED.code()
        || code == SqlState::READ_ONLY_SQL_TRANSACTION.code()
}

/// Maps a driver error: connection loss, shutdown, timeouts, lack of resources and races that
/// outlived the retries are `Unavailable` (retry; a connection lost after the `COMMIT` was
/// sent leaves the write's outcome unknown, see `Error::Unavailable`); the rest is `Backend`.
pub(crate) fn map_db(e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // No server error: the connection broke, or an I/O or protocol failure.
        return Error::unavailable_from(format!("PostgreSQL connection failed: {e}"), e);
    };
    let code = db.code().code();
    let message = db.message();
    if transient(code) {
        let reason = format!("PostgreSQL: {message} (SQLSTATE {code})");
        return Error::unavailable_from(reason, DatabaseError::new(code, message));
    }
    if code == SqlState::UNDEFINED_TABLE.code() || code == SqlState::INVALID_SCHEMA_NAME.code() {
        return Error::backend(DatabaseError::new(
            code,
            format!("{message}; the registry schema is missing or not migrated: call PgRegistry::migrate()"),
        ));
    }
    Error::backend(DatabaseError::new(code, message))
}

/// A corrupt or foreign value read from the database: [`Error::Corrupt`] naming the column;
/// the decoder of the row names the row (see `codec::named`).
pub(crate) fn corrupt(column: &str) -> Fault {
    Fault::Crate(Error::Corrupt {
        what: String::new(),
        reason: format!("unexpected value in the {column} column; was the row written by another program?"),
    })
}

/// Names the row a corrupt value came from: `"stamp 7"`, `"change v12"`; a name the inner
/// decoder gave (the assignment inside a change, say) is kept in parentheses.
pub(crate) fn named<T>(r: Result<T, Fault>, what: impl FnOnce() -> String) -> Result<T, Fault> {
    r.map_err(|f| match f {
        Fault::Crate(Error::Corrupt { what: inner, reason }) => Fault::Crate(Error::Corrupt {
            what: if inner.is_empty() {
                what()
            } else {
                format!("{} ({inner})", what())
            },
            reason,
        }),
        other => other,
    })
}
