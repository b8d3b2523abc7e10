//! Shared health in PostgreSQL: reports that stamps (or one central prober) publish with an
//! expiry, read by every router (`health::PgHealth` builds the view). Publishing sends a
//! `NOTIFY` on `stamps_<schema>_health` carrying the report's revision, which wakes readers
//! through [`PgRegistry::health_signal`]; readers also poll. Not part of the change feed.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::codec::millis;
use super::connection::{on_conn, Lease};
use super::fault::{corrupt, named, Fault};
use super::schema::quoted;
use super::PgRegistry;
use crate::error::{InvalidInput, Result};
use crate::model::{HealthStatus, StampId};
use crate::registry::ChangeSignal;
use crate::time::Timestamp;

/// The longest a published report may live: a report is a claim about now, and a reader must
/// not trust it for days.
pub const MAX_HEALTH_TTL: Duration = Duration::from_secs(3_600);

const COLS: &str = "stamp_id, reporter, status, reason, reported_at, expires_at, revision";

/// One published health report ([`PgRegistry::publish_health`]).
///
/// ```
/// use stamps::registry::postgres::SharedHealth;
/// use stamps::*;
/// # fn f(r: SharedHealth) {
/// let live = r.is_live(Timestamp::from_millis(0));
/// # let _ = live; }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedHealth {
    /// The stamp.
    pub stamp: StampId,
    /// Who published it (a stamp's own agent, a prober's name).
    pub reporter: String,
    /// What it says.
    pub status: HealthStatus,
    /// Why, if given.
    pub reason: Option<String>,
    /// When it was published (the registry's clock).
    pub reported_at: Timestamp,
    /// When it stops counting: after this, readers treat it as unknown (or as the reader's
    /// policy says).
    pub expires_at: Timestamp,
    /// The publication's place in the order of all publications (grows with each one).
    pub revision: u64,
}

impl SharedHealth {
    /// Whether the report still counts at `now`.
    ///
    /// ```
    /// # fn f(r: stamps::registry::postgres::SharedHealth) {
    /// assert_eq!(r.is_live(r.expires_at), false);
    /// # }
    /// ```
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// The statements of this module.
#[derive(Debug)]
pub(crate) struct HealthSql {
    publish: String,
    list: String,
    withdraw: String,
}

impl HealthSql {
    pub(crate) fn new(schema: &str, notify: bool) -> HealthSql {
        let s = quoted(schema);
        let notify = if notify {
            format!(", pg_notify('stamps_{schema}_health', 'h' || up.revision::text)::text AS notified")
        } else {
            String::new()
        };
        HealthSql {
            publish: format!(
                "WITH up AS (
                    INSERT INTO {s}.health_reports ({COLS})
                    VALUES ($1, $2, $3, $4, $5, $6, nextval('{s}.health_revision'))
                    ON CONFLICT (stamp_id, reporter) DO UPDATE SET
                        status = EXCLUDED.status, reason = EXCLUDED.reason,
                        reported_at = EXCLUDED.reported_at, expires_at = EXCLUDED.expires_at,
                        revision = EXCLUDED.revision
                    RETURNING {COLS}
                 )
                 SELECT up.*{notify} FROM up"
            ),
            list: format!("SELECT {COLS} FROM {s}.health_reports ORDER BY stamp_id, reporter"),
            withdraw: format!("DELETE FROM {s}.health_reports WHERE stamp_id = $1 AND reporter = $2"),
        }
    }
}

fn report(row: &Row) -> Result<SharedHealth, Fault> {
    let stamp: i64 = row.try_get("stamp_id").map_err(|_| corrupt("stamp_id"))?;
    named(fields(row, stamp), || format!("health report of stamp {stamp}"))
}

fn fields(row: &Row, stamp: i64) -> Result<SharedHealth, Fault> {
    let int = |name: &str| -> Result<i64, Fault> { row.try_get(name).map_err(|_| corrupt(name)) };
    let u64_of = |v: i64, name: &str| u64::try_from(v).map_err(|_| corrupt(name));
    let stamp = u32::try_from(stamp).map_err(|_| corrupt("stamp_id"))?;
    let status: &str = row.try_get("status").map_err(|_| corrupt("status"))?;
    let status = match status {
        "healthy" => HealthStatus::Healthy,
        "degraded" => HealthStatus::Degraded,
        "unhealthy" => HealthStatus::Unhealthy,
        _ => return Err(corrupt("status")),
    };
    let reported_at = Timestamp::from_millis(u64_of(int("reported_at")?, "reported_at")?);
    let expires_at = Timestamp::from_millis(u64_of(int("expires_at")?, "expires_at")?);
    if expires_at <= reported_at {
        return Err(corrupt("expires_at"));
    }
    let reporter: String = row.try_get("reporter").map_err(|_| corrupt("reporter"))?;
    check_reporter(&reporter).map_err(|_| corrupt("reporter"))?;
    let reason: Option<String> = row.try_get("reason").map_err(|_| corrupt("reason"))?;
    Ok(SharedHealth {
        stamp: StampId(stamp),
        reporter,
        status,
        reason,
        reported_at,
        expires_at,
        revision: u64_of(int("revision")?, "revision")?,
    })
}

fn check_reporter(reporter: &str) -> Result<(), InvalidInput> {
    if reporter.is_empty() || reporter.len() > 128 || reporter.chars().any(char::is_control) {
        return Err(InvalidInput::new(
            "reporter",
            "must be 1 to 128 bytes without control characters",
        ));
    }
    Ok(())
}

impl PgRegistry {
    /// Publishes `status` for `stamp` on behalf of `reporter`, valid for `ttl` from now (the
    /// registry's clock), replacing that reporter's previous report for the stamp; returns the
    /// stored report. Readers (`health::PgHealth`) are woken by a `NOTIFY` and also poll.
    ///
    /// Refused with [`Error::InvalidInput`](crate::Error::InvalidInput): an empty or longer
    /// than 128 bytes `reporter` (or one with control characters), a `reason` over 1,024
    /// bytes, a `ttl` of zero or over [`MAX_HEALTH_TTL`].
    ///
    /// ```no_run
    /// # async fn demo(registry: stamps::registry::postgres::PgRegistry) -> stamps::Result<()> {
    /// use std::time::Duration;
    /// use stamps::{HealthStatus, StampId};
    /// let r = registry
    ///     .publish_health(StampId(2), HealthStatus::Unhealthy, Some("503 from /healthz"), "prober-eu", Duration::from_secs(15))
    ///     .await?;
    /// assert_eq!(r.status, HealthStatus::Unhealthy);
    /// # Ok(()) }
    /// ```
    pub async fn publish_health(
        &self,
        stamp: StampId,
        status: HealthStatus,
        reason: Option<&str>,
        reporter: &str,
        ttl: Duration,
    ) -> Result<SharedHealth> {
        check_reporter(reporter)?;
        if reason.is_some_and(|r| r.len() > 1_024) {
            return Err(InvalidInput::new("reason", "must be at most 1,024 bytes").into());
        }
        if ttl.is_zero() || ttl > MAX_HEALTH_TTL {
            return Err(InvalidInput::new("ttl", "must be more than zero and at most an hour").into());
        }
        let now = self.now();
        let reported_at = millis(now)?;
        let expires_at = millis(now + ttl)?;
        let stamp_key = i64::from(stamp.0);
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.health.publish).await?;
            let row = c
                .query_one(
                    &stmt,
                    &[
                        &stamp_key,
                        &reporter,
                        &status.as_str(),
                        &reason,
                        &reported_at,
                        &expires_at,
                    ],
                )
                .await?;
            report(&row)
        })
    }

    /// Every published report, expired ones included (readers judge expiry against their own
    /// clock), by stamp and reporter. A row this build cannot read back is
    /// [`Error::Corrupt`](crate::Error::Corrupt).
    ///
    /// ```no_run
    /// # async fn demo(registry: stamps::registry::postgres::PgRegistry) -> stamps::Result<()> {
    /// for r in registry.health_reports().await? {
    ///     println!("{} by {}: {}", r.stamp, r.reporter, r.status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn health_reports(&self) -> Result<Vec<SharedHealth>> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.health.list).await?;
            c.query(&stmt, &[]).await?.iter().map(report).collect()
        })
    }

    /// Removes `reporter`'s report for `stamp` (a decommissioned stamp, a retired prober);
    /// returns whether there was one.
    ///
    /// ```no_run
    /// # async fn demo(registry: stamps::registry::postgres::PgRegistry) -> stamps::Result<()> {
    /// registry.withdraw_health(stamps::StampId(2), "prober-eu").await?;
    /// # Ok(()) }
    /// ```
    pub async fn withdraw_health(&self, stamp: StampId, reporter: &str) -> Result<bool> {
        let stamp_key = i64::from(stamp.0);
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.health.withdraw).await?;
            Ok(c.execute(&stmt, &[&stamp_key, &reporter]).await? > 0)
        })
    }

    /// The signal woken (with the report's revision) when a report is published, through
    /// `LISTEN` when the configuration allows it ([`PgConfig::notify`](super::PgConfig::notify)).
    /// Readers poll as well: a wake-up can be missed while the listener reconnects.
    ///
    /// ```no_run
    /// # async fn demo(registry: stamps::registry::postgres::PgRegistry) {
    /// let signal = registry.health_signal();
    /// let _ = signal.changed(signal.head()).await; // the next publication
    /// # }
    /// ```
    pub fn health_signal(&self) -> ChangeSignal {
        self.inner.health_signal.clone()
    }
}
