//! Connection and behaviour settings for [`PgRegistry`](super::PgRegistry).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::TargetSessionAttrs;

use crate::error::{InvalidInput, Result};
use crate::time::{Clock, SystemClock};

pub use super::options::{Keepalives, Portability};

/// The default schema (namespace) holding the registry's objects.
///
/// ```
/// use stamps::registry::postgres::{PgConfig, DEFAULT_SCHEMA};
/// assert_eq!(PgConfig::new().schema_name(), DEFAULT_SCHEMA);
/// ```
pub const DEFAULT_SCHEMA: &str = "stamps";

/// The default deadline of a registry call ([`PgConfig::call_timeout`]): 10 s, twice the
/// default statement, connect and pool-wait timeouts, so those report their own cause first.
///
/// ```
/// use stamps::registry::postgres::{PgConfig, DEFAULT_CALL_TIMEOUT};
/// assert_eq!(PgConfig::new().call_timeout_value(), DEFAULT_CALL_TIMEOUT);
/// ```
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`PgConfig::max_replica_lag`]: 5 s.
///
/// ```
/// use stamps::registry::postgres::{PgConfig, DEFAULT_MAX_REPLICA_LAG};
/// assert_eq!(PgConfig::new().max_replica_lag_value(), DEFAULT_MAX_REPLICA_LAG);
/// ```
pub const DEFAULT_MAX_REPLICA_LAG: Duration = Duration::from_secs(5);

/// Settings for [`PgRegistry`](super::PgRegistry): where the server is, which schema holds the
/// registry, pool size, timeouts and how followers are woken up.
///
/// Build it from a URL or key/value connection string (the libpq formats), or field by field.
/// The password is never printed by `Debug`.
///
/// ```
/// use stamps::registry::postgres::PgConfig;
/// use std::time::Duration;
/// let cfg = PgConfig::from_url("postgres://app@db.internal:5432/fleet")?
///     .schema("eu_fleet")?
///     .pool_size(16)
///     .statement_timeout(Duration::from_secs(2));
/// assert_eq!(cfg.schema_name(), "eu_fleet");
///
/// let same = PgConfig::new().host("db.internal").port(5432).user("app").dbname("fleet");
/// assert!(!format!("{same:?}").contains("secret"));
/// assert!(PgConfig::new().schema("Bad-Name").is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_wait_timeout: Duration,
    pub(crate) notify: bool,
    pub(crate) poll_interval: Duration,
    pub(crate) max_retries: u32,
    pub(crate) group_commit: bool,
    pub(crate) application_name: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) call_timeout: Duration,
    pub(crate) keepalives: Option<Keepalives>,
    pub(crate) tcp_user_timeout: Option<Duration>,
    pub(crate) replicas: Vec<tokio_postgres::Config>,
    pub(crate) max_replica_lag: Duration,
    pub(crate) replica_read_timeout: Duration,
    pub(crate) timelines: bool,
    pub(crate) portability: Portability,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.pg.get_hosts())
            .field("ports", &self.pg.get_ports())
            .field("user", &self.pg.get_user())
            .field("dbname", &self.pg.get_dbname())
            .field("password", &self.pg.get_password().map(|_| "<redacted>"))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_wait_timeout", &self.pool_wait_timeout)
            .field("notify", &self.notify)
            .field("poll_interval", &self.poll_interval)
            .field("max_retries", &self.max_retries)
            .field("group_commit", &self.group_commit)
            .field("application_name", &self.application_name)
            .field("clock", &self.clock)
            .field("call_timeout", &self.call_timeout)
            .field("keepalives", &self.keepalives)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field(
                "replicas",
                &self
                    .replicas
                    .iter()
                    .map(|r| (r.get_hosts().to_vec(), r.get_ports().to_vec()))
                    .collect::<Vec<_>>(),
            )
            .field("max_replica_lag", &self.max_replica_lag)
            .field("replica_read_timeout", &self.replica_read_timeout)
            .field("timelines", &self.timelines)
            .field("portability", &self.portability)
            .finish()
    }
}

impl Default for PgConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl PgConfig {
    /// Settings with no server named yet (libpq defaults apply: `localhost:5432`) and the
    /// defaults below: schema `stamps`, 8 pooled connections, a 5 s statement timeout, a 5 s
    /// connect timeout, a 5 s wait for a free connection, `LISTEN/NOTIFY` wake-ups with a 1 s
    /// polling fallback, 8 retries on serialization failures and deadlocks, the system clock,
    /// a 10 s deadline per registry call ([`call_timeout`](Self::call_timeout)), TCP
    /// keepalives after 30 s idle every 10 s, 3 probes ([`Keepalives::default`]) and a 30 s TCP
    /// user timeout ([`tcp_user_timeout`](Self::tcp_user_timeout)), no read replicas (a 5 s
    /// maximum replica lag and a 1 s replica read timeout once some are added) and WAL timelines
    /// read to open a new feed term after a failover ([`timelines`](Self::timelines)).
    pub fn new() -> Self {
        PgConfig {
            pg: tokio_postgres::Config::new(),
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: 8,
            statement_timeout: Some(Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(5),
            pool_wait_timeout: Duration::from_secs(5),
            notify: true,
            poll_interval: Duration::from_secs(1),
            max_retries: 8,
            group_commit: true,
            application_name: "stamps".to_string(),
            clock: Arc::new(SystemClock),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            keepalives: Some(Keepalives::default()),
            tcp_user_timeout: Some(Duration::from_secs(30)),
            replicas: Vec::new(),
            max_replica_lag: DEFAULT_MAX_REPLICA_LAG,
            replica_read_timeout: Duration::from_secs(1),
            timelines: true,
            portability: Portability::default(),
        }
    }

    /// Settings from a connection URL (`postgres://user:pass@host:port/db?options`) or a
    /// key/value string (`host=... user=... dbname=...`), with the defaults of
    /// [`PgConfig::new`] for everything else.
    pub fn from_url(url: &str) -> Result<Self> {
        let pg = tokio_postgres::Config::from_str(url).map_err(|_| {
            InvalidInput::new(
                "url",
                "is not a PostgreSQL connection string (postgres://user@host:port/db or host=... dbname=...)",
            )
        })?;
        Ok(PgConfig { pg, ..Self::new() })
    }

    /// The server's host name, IP address or Unix socket directory. Give it several times (or
    /// list `host1:port1,host2:port2` in the URL) for failover: with more than one host the
    /// registry connects to the one accepting writes (`target_session_attrs=read-write`), so
    /// after a standby is promoted, new connections find it without a restart.
    pub fn host(mut self, host: &str) -> Self {
        self.pg.host(host);
        self
    }

    /// The server's port.
    pub fn port(mut self, port: u16) -> Self {
        self.pg.port(port);
        self
    }

    /// The user to connect as.
    pub fn user(mut self, user: &str) -> Self {
        self.pg.user(user);
        self
    }

    /// The password.
    pub fn password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.pg.password(password);
        self
    }

    /// The database.
    pub fn dbname(mut self, dbname: &str) -> Self {
        self.pg.dbname(dbname);
        self
    }

    /// The schema (namespace) holding every table, index and function of the registry, so
    /// several fleets (and tests) can share one database. 1 to 48 bytes of `a-z`, `0-9` and
    /// `_`, starting with a letter or `_`; not `pg_*` or `information_schema`.
    pub fn schema(mut self, schema: &str) -> Result<Self> {
        validate_schema(schema)?;
        self.schema = schema.to_string();
        Ok(self)
    }

    /// The schema name in use.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// Pooled connections (at least 1). The change listener uses one more connection.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Server-side `statement_timeout` for every statement of the registry's connections;
    /// `None` leaves the server's setting. A statement that times out rolls its transaction
    /// back and the call returns [`Error::Unavailable`](crate::Error::Unavailable).
    pub fn statement_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.statement_timeout = timeout.into();
        self
    }

    /// How long to wait for a new connection to be established.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a call waits for a free pooled connection before returning
    /// [`Error::Unavailable`](crate::Error::Unavailable).
    pub fn pool_wait_timeout(mut self, timeout: Duration) -> Self {
        self.pool_wait_timeout = timeout;
        self
    }

    /// Whether writes send `NOTIFY` and a listener connection `LISTEN`s, to wake
    /// [`ChangeSignal`](crate::ChangeSignal) followers at once (default `true`). Turn it off on
    /// engines without `LISTEN/NOTIFY` (CockroachDB, YugabyteDB, Spanner); followers are then
    /// woken by polling every [`poll_interval`](Self::poll_interval).
    pub fn notify(mut self, enabled: bool) -> Self {
        self.notify = enabled;
        self
    }

    /// How often the background task reads the change-feed head to wake followers when no
    /// notification arrives (default 1 s). Correctness never depends on it: followers read
    /// the feed by version.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How many times a write is retried after a serialization failure or a deadlock before the
    /// call returns [`Error::Unavailable`](crate::Error::Unavailable) (default 8).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Whether concurrent `assign` calls, and concurrent `compare_and_set` calls, share one
    /// transaction and one commit (default on): each keeps its own outcome, epoch, history
    /// entry and change; a call alone runs its own transaction. A grouped call returns within
    /// twice [`call_timeout`](Self::call_timeout) (the group ahead of it, then its own). Off,
    /// every call commits alone (a WAL flush each, one after another).
    ///
    /// ```
    /// use stamps::registry::postgres::PgConfig;
    /// let config = PgConfig::new().group_commit(false);
    /// # let _ = config;
    /// ```
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// The `application_name` the registry's connections report in `pg_stat_activity`
    /// (default `stamps`).
    pub fn application_name(mut self, name: &str) -> Self {
        self.application_name = name.to_string();
        self
    }

    /// The deadline of every registry call, from its start (waiting for a pooled connection,
    /// connecting, every statement and every retry included) to its answer (default
    /// [`DEFAULT_CALL_TIMEOUT`], 10 s; at least 1 ms). A server that stops answering, or a
    /// network path that stops forwarding while sockets stay open (where `statement_timeout`
    /// cannot help: the server never hears from the client), cannot hold a call longer. At the
    /// deadline a read, or a write whose transaction was not yet sent for commit, returns
    /// [`Error::Unavailable`](crate::Error::Unavailable); a write whose commit was sent
    /// returns [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown): re-read before
    /// retrying. The connection the call held is closed, never pooled again.
    ///
    /// ```
    /// # use stamps::registry::postgres::PgConfig;
    /// # use std::time::Duration;
    /// let cfg = PgConfig::new().call_timeout(Duration::from_secs(3));
    /// assert_eq!(cfg.call_timeout_value(), Duration::from_secs(3));
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The per-call deadline in use.
    pub fn call_timeout_value(&self) -> Duration {
        self.call_timeout
    }

    /// TCP keepalive probes on every connection (default [`Keepalives::default`]); `None`
    /// turns them off. They let the kernel close an idle connection whose path died (a pooled
    /// or listening connection, say), so it is not handed to a call.
    ///
    /// ```
    /// # use stamps::registry::postgres::{Keepalives, PgConfig};
    /// # use std::time::Duration;
    /// let cfg = PgConfig::new().keepalives(Keepalives::new(Duration::from_secs(10), Duration::from_secs(2), 3));
    /// let off = PgConfig::new().keepalives(None);
    /// # let _ = (cfg, off);
    /// ```
    pub fn keepalives(mut self, keepalives: impl Into<Option<Keepalives>>) -> Self {
        self.keepalives = keepalives.into();
        self
    }

    /// `TCP_USER_TIMEOUT` (Linux): how long sent data may stay unacknowledged before the kernel
    /// closes the connection (default 30 s; `None` leaves the system's). Elsewhere ignored.
    ///
    /// ```
    /// # use stamps::registry::postgres::PgConfig;
    /// # use std::time::Duration;
    /// let cfg = PgConfig::new().tcp_user_timeout(Duration::from_secs(15));
    /// # let _ = cfg;
    /// ```
    pub fn tcp_user_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.tcp_user_timeout = timeout.into();
        self
    }

    /// Adds a read replica (a hot standby of the primary), from a URL or key/value connection
    /// string. Change-feed reads, fleet snapshots, assignment reads and assignment pages may
    /// be served by a replica that has caught up with what this registry has already seen
    /// and is within [`max_replica_lag`](Self::max_replica_lag); everything else, and every
    /// answer a replica cannot give safely (an unknown tenant, a cursor it has not replayed),
    /// goes to the primary. See the guide's "Replicas and failover".
    ///
    /// ```
    /// # use stamps::registry::postgres::PgConfig;
    /// let cfg = PgConfig::from_url("postgres://app@db-a:5432,db-b:5432/fleet")?
    ///     .replica("postgres://app@db-b:5432/fleet")?
    ///     .replica("host=db-c port=5432 user=app dbname=fleet")?;
    /// assert_eq!(cfg.replica_count(), 2);
    /// assert!(PgConfig::new().replica("nonsense ://").is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn replica(mut self, url: &str) -> Result<Self> {
        let pg = tokio_postgres::Config::from_str(url).map_err(|_| {
            InvalidInput::new(
                "replica",
                "is not a PostgreSQL connection string (postgres://user@host:port/db or host=... dbname=...)",
            )
        })?;
        self.replicas.push(pg);
        Ok(self)
    }

    /// How many read replicas are configured.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// How far behind the primary a replica may be and still serve reads (default
    /// [`DEFAULT_MAX_REPLICA_LAG`], 5 s). Measured by the background task every
    /// [`poll_interval`](Self::poll_interval): a replica's lag is the time since it last held
    /// the feed head the primary had then, so it is at most this plus one poll interval.
    ///
    /// ```
    /// # use stamps::registry::postgres::PgConfig;
    /// # use std::time::Duration;
    /// let cfg = PgConfig::new().max_replica_lag(Duration::from_millis(500));
    /// assert_eq!(cfg.max_replica_lag_value(), Duration::from_millis(500));
    /// ```
    pub fn max_replica_lag(mut self, lag: Duration) -> Self {
        self.max_replica_lag = lag;
        self
    }

    /// The replica lag limit in use.
    pub fn max_replica_lag_value(&self) -> Duration {
        self.max_replica_lag
    }

    /// How long a read waits for a replica before asking the primary instead (default 1 s;
    /// at most the call's deadline).
    ///
    /// ```
    /// # use stamps::registry::postgres::PgConfig;
    /// # use std::time::Duration;
    /// let cfg = PgConfig::new().replica_read_timeout(Duration::from_millis(200));
    /// # let _ = cfg;
    /// ```
    pub fn replica_read_timeout(mut self, timeout: Duration) -> Self {
        self.replica_read_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Whether writes read the server's WAL timeline (`pg_current_wal_lsn`) so that the first
    /// write after a promotion or a point-in-time restore opens a new term of the change feed
    /// (default `true`). Turn it off only on engines without WAL timelines; then call
    /// [`PgRegistry::begin_new_term`](super::PgRegistry::begin_new_term) after any event that
    /// may have lost acknowledged writes.
    ///
    /// ```
    /// # use stamps::registry::postgres::PgConfig;
    /// let cfg = PgConfig::new().timelines(false);
    /// # let _ = cfg;
    /// ```
    pub fn timelines(mut self, enabled: bool) -> Self {
        self.timelines = enabled;
        self
    }

    /// What [`migrate`](super::PgRegistry::migrate) may use (default: everything PostgreSQL
    /// offers); see [`Portability`].
    ///
    /// ```
    /// # use stamps::registry::postgres::{PgConfig, Portability};
    /// let cfg = PgConfig::new().portability(Portability::default().transactional_ddl(false));
    /// # let _ = cfg;
    /// ```
    pub fn portability(mut self, portability: Portability) -> Self {
        self.portability = portability;
        self
    }

    /// The clock for stored timestamps (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The primary's driver configuration with the registry's session settings applied; with
    /// several hosts, only one accepting writes is connected to.
    pub(crate) fn driver_config(&self, suffix: &str) -> tokio_postgres::Config {
        let mut pg = self.session(self.pg.clone(), suffix);
        if pg.get_hosts().len() > 1 && pg.get_target_session_attrs() == TargetSessionAttrs::Any {
            pg.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        pg
    }

    /// A replica's driver configuration with the registry's session settings applied.
    pub(crate) fn replica_config(&self, replica: &tokio_postgres::Config) -> tokio_postgres::Config {
        self.session(replica.clone(), "replica")
    }

    fn session(&self, mut pg: tokio_postgres::Config, suffix: &str) -> tokio_postgres::Config {
        pg.connect_timeout(self.connect_timeout);
        match self.keepalives {
            Some(k) => {
                pg.keepalives(true)
                    .keepalives_idle(k.idle)
                    .keepalives_interval(k.interval)
                    .keepalives_retries(k.retries);
            }
            None => {
                pg.keepalives(false);
            }
        }
        if let Some(t) = self.tcp_user_timeout {
            pg.tcp_user_timeout(t);
        }
        let name = if suffix.is_empty() {
            self.application_name.clone()
        } else {
            format!("{}-{suffix}", self.application_name)
        };
        pg.application_name(&name);
        if let Some(t) = self.statement_timeout {
            let ms = t.as_millis().max(1);
            let mut options = pg.get_options().map(str::to_string).unwrap_or_default();
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c statement_timeout={ms}"));
            pg.options(&options);
        }
        pg
    }
}

/// Checks a schema name: safe to quote into SQL and to derive a `NOTIFY` channel name from.
pub(crate) fn validate_schema(schema: &str) -> Result<(), InvalidInput> {
    const REASON: &str =
        "must be 1 to 48 bytes of a-z 0-9 _ starting with a letter or _, and not pg_* or information_schema";
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_lowercase() || b == b'_' || (i > 0 && b.is_ascii_digit()))
        && !schema.starts_with("pg_")
        && schema != "information_schema";
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new("schema", REASON))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["stamps", "_x", "a1_b2", &"a".repeat(48)] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "A",
            "a-b",
            "a b",
            "a\"b",
            "pg_catalog",
            "information_schema",
            &"a".repeat(49),
        ] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_and_timeout_options() {
        let cfg = PgConfig::from_url("postgres://u:secret@127.0.0.1:6543/db?options=-c%20search_path%3Dx")
            .unwrap()
            .statement_timeout(Duration::from_millis(250));
        let pg = cfg.driver_config("listener");
        assert_eq!(pg.get_ports(), &[6543]);
        assert_eq!(pg.get_application_name(), Some("stamps-listener"));
        let options = pg.get_options().unwrap();
        assert!(options.contains("search_path") && options.ends_with("-c statement_timeout=250"));
        assert!(!format!("{cfg:?}").contains("secret"));
        assert!(PgConfig::from_url("not a url ://").is_err());
    }

    #[test]
    fn several_hosts_connect_to_the_writable_one() {
        let one = PgConfig::from_url("postgres://u@a:1/db").unwrap().driver_config("");
        assert_eq!(one.get_target_session_attrs(), TargetSessionAttrs::Any);
        let two = PgConfig::from_url("postgres://u@a:1,b:2/db").unwrap();
        assert_eq!(
            two.driver_config("").get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let with_replica = two.replica("postgres://u:pw@b:2/db").unwrap();
        let r = with_replica.replica_config(&with_replica.replicas[0]);
        assert_eq!(r.get_application_name(), Some("stamps-replica"));
        assert!(r.get_options().unwrap().contains("statement_timeout"));
        assert!(!format!("{with_replica:?}").contains("pw"));
    }

    #[test]
    fn keepalive_and_user_timeout_reach_the_driver() {
        let pg = PgConfig::new().driver_config("");
        assert!(pg.get_keepalives());
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(pg.get_keepalives_interval(), Some(Duration::from_secs(10)));
        assert_eq!(pg.get_keepalives_retries(), Some(3));
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        let pg = PgConfig::new()
            .keepalives(Keepalives::new(Duration::from_secs(7), Duration::from_secs(2), 5))
            .tcp_user_timeout(Duration::from_secs(4))
            .driver_config("");
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(pg.get_keepalives_retries(), Some(5));
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(4)));
        assert!(!PgConfig::new().keepalives(None).driver_config("").get_keepalives());
        assert_eq!(PgConfig::new().call_timeout_value(), DEFAULT_CALL_TIMEOUT);
        assert_eq!(
            PgConfig::new().call_timeout(Duration::ZERO).call_timeout_value(),
            Duration::from_millis(1)
        );
    }
}
