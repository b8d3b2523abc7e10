//! The option types of [`PgConfig`](super::PgConfig): TCP keepalives and what `migrate()`
//! may use ([`Portability`]).

use std::time::Duration;

/// TCP keepalive settings for the registry's connections ([`PgConfig::keepalives`](super::PgConfig::keepalives)): probe an
/// idle connection after `idle`, every `interval`, and give up after `retries` unanswered
/// probes, so a connection whose network path died is closed by the kernel.
///
/// ```
/// use stamps::registry::postgres::Keepalives;
/// use std::time::Duration;
/// let k = Keepalives::default();
/// assert_eq!((k.idle, k.interval, k.retries), (Duration::from_secs(30), Duration::from_secs(10), 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalives {
    /// Idle time before the first probe (default 30 s).
    pub idle: Duration,
    /// Time between probes (default 10 s).
    pub interval: Duration,
    /// Unanswered probes before the connection is closed (default 3).
    pub retries: u32,
}

impl Default for Keepalives {
    fn default() -> Self {
        Keepalives {
            idle: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            retries: 3,
        }
    }
}

impl Keepalives {
    /// Keepalives probing after `idle`, every `interval`, `retries` times.
    ///
    /// ```
    /// # use stamps::registry::postgres::Keepalives;
    /// # use std::time::Duration;
    /// let k = Keepalives::new(Duration::from_secs(5), Duration::from_secs(1), 2);
    /// assert_eq!(k.retries, 2);
    /// ```
    pub fn new(idle: Duration, interval: Duration, retries: u32) -> Self {
        Keepalives {
            idle,
            interval,
            retries,
        }
    }
}

/// What [`PgRegistry::migrate`](super::PgRegistry::migrate) may use beyond plain tables and
/// indexes ([`PgConfig::portability`](super::PgConfig::portability)). Everything is on by default (PostgreSQL); engines that
/// lack a feature turn it off here instead of forking the crate's checksummed migrations.
///
/// ```
/// use stamps::registry::postgres::{PgConfig, Portability};
/// let p = Portability::default().lock_table(false).truncate_trigger(false);
/// assert!(p.transactional_ddl && !p.lock_table);
/// let cfg = PgConfig::new().portability(p).notify(false).timelines(false);
/// # let _ = cfg;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Portability {
    /// `LOCK TABLE ... IN EXCLUSIVE MODE` on the migration table, so concurrent `migrate()`
    /// calls apply each migration once. Off: run `migrate()` from one job; a concurrent one
    /// fails (on the migration table's primary key, or on an object that already exists) and
    /// can simply be run again.
    pub lock_table: bool,
    /// The statement-level `BEFORE TRUNCATE` trigger that keeps `TRUNCATE` from emptying the
    /// append-only history. Off: history is still protected from `UPDATE` and `DELETE` (the
    /// row-level trigger); revoke `TRUNCATE` on it from the application's role instead.
    pub truncate_trigger: bool,
    /// All missing migrations in one transaction, so a failure applies none. Off: each runs on
    /// its own and is recorded after it succeeds; a failure names the migration, which may be
    /// partly applied where DDL commits by itself.
    pub transactional_ddl: bool,
}

impl Default for Portability {
    fn default() -> Self {
        Portability {
            lock_table: true,
            truncate_trigger: true,
            transactional_ddl: true,
        }
    }
}

impl Portability {
    /// Whether `migrate()` may issue `LOCK TABLE`.
    pub fn lock_table(mut self, enabled: bool) -> Self {
        self.lock_table = enabled;
        self
    }

    /// Whether `migrate()` creates the `BEFORE TRUNCATE` trigger.
    pub fn truncate_trigger(mut self, enabled: bool) -> Self {
        self.truncate_trigger = enabled;
        self
    }

    /// Whether `migrate()` applies migrations in one transaction.
    pub fn transactional_ddl(mut self, enabled: bool) -> Self {
        self.transactional_ddl = enabled;
        self
    }

    /// Whether an optional block of a migration (named in its SQL) is applied.
    pub(crate) fn enabled(&self, feature: &str) -> bool {
        match feature {
            "truncate_trigger" => self.truncate_trigger,
            _ => true,
        }
    }
}
