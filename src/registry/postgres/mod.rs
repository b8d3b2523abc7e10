//! The PostgreSQL registry (feature `postgres`): durable, race-free, with an ordered change
//! feed and a versioned schema.
//!
//! See [`PgRegistry`] and the [`guide`] (`docs/postgres.md`: schema, isolation, sizing,
//! backups and distributed Postgres-compatible engines).
//!
//! This module holds the type, its connection set-up and its [`Registry`] impl (reads inline,
//! each write delegated). Inside: `connection` (the lease on a pooled connection and the
//! `on_conn!` retry loop), `writes` (one transaction body per write), `codec` (rows to model
//! values, model values to parameters), `sql` (the statements), `schema` (the versioned
//! migrations), `watch` (the task that wakes change-feed followers), `fault` (driver errors
//! to the crate's errors) and `config` ([`PgConfig`]).

mod codec;
mod config;
mod connection;
mod directives;
mod fault;
pub(crate) use fault::transient;
mod feed_admin;
mod group;
mod group_change;
mod health;
mod history;
mod import;
mod migration_writes;
mod options;
mod reads;
mod replicas;
mod rollouts;
mod schema;
mod sql;
mod watch;
mod writes;

#[doc = include_str!("../../../docs/postgres.md")]
pub mod guide {}

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Socket};

pub use config::{Keepalives, PgConfig, Portability, DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_REPLICA_LAG, DEFAULT_SCHEMA};
pub use fault::DatabaseError;
pub use health::{SharedHealth, MAX_HEALTH_TTL};
pub use replicas::ReplicaStatus;
pub use schema::{SchemaError, SCHEMA_VERSION};

use self::connection::{on_conn, Lease};
use self::fault::Fault;
use self::replicas::{Replica, Replicas};
use self::sql::Sql;
use self::watch::{AbortOnDrop, Listen, TlsListen, Watch};
use super::{ChangeSignal, ImportReport, ImportRow, Registry};
use crate::error::{Error, InvalidInput, Result};
use crate::model::{
    Assignment, AssignmentChange, ChangeBatch, Decision, Epoch, Fleet, HistoryEntry, MigrationId, MigrationRecord,
    Override, Pin, Redirect, RolloutId, RolloutRecord, RouteOverride, Stamp, StampId, StampSpec, StampState, TenantId,
    TenantSpec, Version,
};
use crate::time::{Clock, Timestamp};

/// The durable registry on PostgreSQL 12 or later.
///
/// - **Schema**: created and upgraded by [`PgRegistry::migrate`] from versioned migrations
///   shipped in the crate; every object lives in the configured schema
///   ([`PgConfig::schema`]), so several fleets and every test can share a database. A schema
///   migrated by a newer build of the crate is refused ([`SchemaError::TooNew`]).
/// - **Race-free writes**: each write is one `READ COMMITTED` transaction that locks the
///   tenant's assignment row and the affected stamp rows (`FOR UPDATE` / `FOR NO KEY UPDATE`,
///   in stamp-id order), runs the same [`admission`](crate::model::admission) rules as the in-memory registry in Rust,
///   and writes the assignment, the stamps' usage, the history row and the change row.
///   No stamp exceeds a hard limit however many processes write at once.
/// - **Ordered change feed**: the version comes from a single counter row that every writing
///   transaction increments just before its writes and holds locked until it commits, so
///   versions commit in order and a follower reading `version > cursor` never skips one. The
///   version is also the write's epoch. `LISTEN/NOTIFY` (optional) only wakes the
///   [`ChangeSignal`]; a background task also polls the head.
/// - **Faults**: a lost connection, a server shutdown, a statement timeout or an exhausted pool
///   returns [`Error::Unavailable`] and the transaction is rolled back by the server;
///   serialization failures and deadlocks are retried ([`PgConfig::max_retries`]). A broken
///   connection is dropped from the pool. Driver types never appear in errors
///   ([`DatabaseError`] carries the SQLSTATE).
/// - **Bounded calls**: every call, retries included, returns within
///   [`PgConfig::call_timeout`] (10 s by default; twice that for an `assign` or
///   `compare_and_set` waiting in a group commit), even when the network path stops
///   forwarding while sockets stay open: [`Error::Unavailable`], or
///   [`Error::OutcomeUnknown`] for a write whose commit was sent (re-read before retrying).
///   The connection such a call held is closed; TCP keepalives and `TCP_USER_TIMEOUT`
///   ([`PgConfig::keepalives`], [`PgConfig::tcp_user_timeout`]) close idle ones whose path died.
/// - **Replicas and failover**: give every node in the primary URL (the writable one is found
///   again after a promotion) and hot standbys as [`PgConfig::replica`]s: feed polls, fleet
///   snapshots and assignment reads go to a replica that is as new as anything this registry
///   handed out, never answering "unknown tenant" on its own. The first write after a promotion
///   opens a new term of the feed, so writes an asynchronous standby never received are
///   detected by followers ([`Error::HistoryDiverged`]), never re-issued. See the guide's
///   "Replicas and failover".
/// - **Bad rows**: a row edited by hand into a value the model refuses gives
///   [`Error::Corrupt`] naming it to the calls that read it, and only to them;
///   [`fleet`](Registry::fleet) leaves such a stamp out ([`Fleet::skipped`]) and
///   [`changes_since`](Registry::changes_since) returns the changes before a corrupt version,
///   then the error for it.
///
/// Clones share the pool. The background task stops when the last clone is dropped. Requires a
/// tokio runtime.
///
/// ```no_run
/// use stamps::registry::postgres::{PgConfig, PgRegistry};
/// use stamps::*;
/// # #[tokio::main]
/// # async fn main() -> stamps::Result<()> {
/// let url = std::env::var("DATABASE_URL").unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
/// let registry = PgRegistry::connect(PgConfig::from_url(&url)?.schema("fleet_eu")?).await?;
/// registry.migrate().await?;
/// let cap = Capacity::new([(Resource::Tenants, 200.0)], 0.25)?;
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu-west")?, cap)?).await?;
/// let a = registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
/// assert_eq!(registry.assignment(a.tenant()).await?.map(|x| x.epoch), Some(a.epoch));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    sql: Sql,
    schema: String,
    clock: Arc<dyn Clock>,
    signal: ChangeSignal,
    health_signal: ChangeSignal,
    max_retries: u32,
    call_timeout: Duration,
    /// Group commit of `assign` and `compare_and_set` (`None` when off).
    group: Option<group::Groups>,
    replicas: Option<Arc<Replicas>>,
    portability: Portability,
    /// The newest version handed out to a caller (replica reads must be at least this new).
    seen: AtomicU64,
    _watch: AbortOnDrop,
}

impl fmt::Debug for PgRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PgRegistry")
            .field("schema", &self.inner.schema)
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .field("head", &self.inner.signal.head())
            .finish()
    }
}

impl PgRegistry {
    /// Connects without TLS, checks that the schema (if migrated) is one this build knows and
    /// starts the change watcher. Call [`migrate`](Self::migrate) before first use of a new
    /// schema.
    pub async fn connect(config: PgConfig) -> Result<PgRegistry> {
        Self::connect_with_tls(config, NoTls).await
    }

    /// Like [`connect`](Self::connect), with the host's TLS connector (for example
    /// `postgres_openssl::MakeTlsConnector`, `postgres_native_tls::MakeTlsConnector` or
    /// `tokio_postgres_rustls::MakeRustlsConnect`, built for the same `tokio-postgres`
    /// version). The crate itself links no TLS library.
    pub async fn connect_with_tls<T>(config: PgConfig, tls: T) -> Result<PgRegistry>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync + 'static,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(InvalidInput::new("runtime", "PgRegistry must be created inside a tokio runtime").into());
        }
        let pool = build_pool(config.driver_config(""), tls.clone(), &config)?;
        let sql = Sql::new(&config.schema, config.notify, config.timelines);
        connection::bounded(config.call_timeout, async {
            let mut lease = Lease::new(pool.get().await.map_err(|e| Fault::from(e).into_error())?);
            let conn = lease.conn().map_err(Fault::into_error)?;
            schema::current_version(conn, &config.schema)
                .await
                .map_err(Fault::into_error)?;
            lease.finish(true);
            Ok(())
        })
        .await?;
        let replicas = replica_set(&config, &tls)?;
        let signal = ChangeSignal::new();
        let health_signal = ChangeSignal::new();
        let listen: Option<(Arc<dyn Listen>, tokio_postgres::Config)> = config.notify.then(|| {
            (
                Arc::new(TlsListen(tls)) as Arc<dyn Listen>,
                config.driver_config("listener"),
            )
        });
        let watch = Watch {
            pool: pool.clone(),
            head_sql: sql.head.clone(),
            listen_sql: sql.listen.clone(),
            listen,
            signal: signal.clone(),
            health: health_signal.clone(),
            interval: config.poll_interval,
            deadline: config.call_timeout,
            replicas: replicas.clone(),
            probe_sql: sql.probe.clone(),
        };
        let task = tokio::spawn(watch.run());
        Ok(PgRegistry {
            inner: Arc::new(Inner {
                pool,
                sql,
                schema: config.schema,
                clock: config.clock,
                signal,
                health_signal,
                max_retries: config.max_retries,
                call_timeout: config.call_timeout,
                group: config.group_commit.then(group::Groups::default),
                replicas,
                portability: config.portability,
                seen: AtomicU64::new(0),
                _watch: AbortOnDrop(task),
            }),
        })
    }

    /// Creates the schema or upgrades it to [`SCHEMA_VERSION`], in one transaction, and returns
    /// the versions applied (empty when it was up to date, so running it twice is a no-op).
    /// Concurrent callers apply each migration once. A schema at a newer version than this
    /// build knows is refused with [`SchemaError::TooNew`] inside [`Error::Backend`].
    ///
    /// ```no_run
    /// # use stamps::registry::postgres::{PgConfig, PgRegistry, SCHEMA_VERSION};
    /// # async fn demo(registry: PgRegistry) -> stamps::Result<()> {
    /// let applied = registry.migrate().await?; // [1] on a new schema
    /// assert!(registry.migrate().await?.is_empty()); // up to date: nothing to do
    /// assert_eq!(registry.schema_version().await?, Some(SCHEMA_VERSION));
    /// # let _ = applied; Ok(()) }
    /// ```
    ///
    /// Bounded by [`PgConfig::call_timeout`]; at the deadline it returns
    /// [`Error::Unavailable`] and the server rolls the migration back (run it again).
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        connection::bounded(self.inner.call_timeout, async {
            let mut lease = Lease::new(self.inner.pool.get().await.map_err(|e| Fault::from(e).into_error())?);
            let client: &mut tokio_postgres::Client = lease.conn().map_err(Fault::into_error)?;
            let applied = schema::migrate(client, &self.inner.schema, &self.inner.portability)
                .await
                .map_err(Fault::into_error);
            lease.finish(applied.is_ok());
            applied
        })
        .await
    }

    /// The schema's version, `None` before [`migrate`](Self::migrate).
    pub async fn schema_version(&self) -> Result<Option<u32>> {
        connection::bounded(self.inner.call_timeout, async {
            let mut lease = Lease::new(self.inner.pool.get().await.map_err(|e| Fault::from(e).into_error())?);
            let conn = lease.conn().map_err(Fault::into_error)?;
            let version = schema::current_version(conn, &self.inner.schema)
                .await
                .map_err(Fault::into_error);
            lease.finish(version.is_ok());
            version
        })
        .await
    }

    /// The schema holding the registry.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The `NOTIFY` channel writes signal on (`stamps_<schema>`), for hosts that listen
    /// themselves.
    pub fn notify_channel(&self) -> &str {
        &self.inner.sql.channel
    }

    /// The read replicas and how each one stands: reachable, measured lag, usable, reads it
    /// answered and reads the primary answered instead. Empty without replicas.
    ///
    /// ```no_run
    /// # async fn demo(registry: stamps::registry::postgres::PgRegistry) {
    /// let lagging = registry.replicas().into_iter().filter(|r| !r.usable).count();
    /// # let _ = lagging; }
    /// ```
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.inner.replicas.as_ref().map(|r| r.status()).unwrap_or_default()
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }
}

/// The change feed's current term ([`PgRegistry::feed_term`]).
///
/// ```
/// use stamps::registry::postgres::FeedTerm;
/// use stamps::Version;
/// let t = FeedTerm { term: 0, base: Version(0), start: Version(1), head: Version(42) };
/// assert_eq!(t.term, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedTerm {
    /// How many times the feed's history changed (0 until the first promotion or restore).
    pub term: u32,
    /// The last version this term shares with the previous one (0 in term 0).
    pub base: Version,
    /// The term's first version.
    pub start: Version,
    /// The feed's head.
    pub head: Version,
}

/// A connection pool over `pg` with the configured sizes and timeouts.
fn build_pool<T>(pg: tokio_postgres::Config, tls: T, config: &PgConfig) -> Result<Pool>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.pool_wait_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|e| Error::backend(DatabaseError::new("", format!("cannot build the connection pool: {e}"))))
}

/// The replica pools (none without replicas). Connections are opened on first use.
fn replica_set<T>(config: &PgConfig, tls: &T) -> Result<Option<Arc<Replicas>>>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    if config.replicas.is_empty() {
        return Ok(None);
    }
    let mut list = Vec::with_capacity(config.replicas.len());
    for r in &config.replicas {
        let label = replica_label(r);
        list.push(Replica::new(
            label,
            build_pool(config.replica_config(r), tls.clone(), config)?,
        ));
    }
    let read_timeout = config.replica_read_timeout.min(config.call_timeout);
    Ok(Some(Arc::new(Replicas::new(
        list,
        config.max_replica_lag,
        read_timeout,
    ))))
}

/// `host:port` of a replica's first host.
fn replica_label(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

#[async_trait]
impl Registry for PgRegistry {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        spec.validate()?;
        // A concurrent first insert of the same id loses on the primary key; the retry updates.
        on_conn!(self, retry_unique = true, |c| self.put_stamp_once(c, &spec))
    }

    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.stamp_get).await?;
            match c.query_opt(&stmt, &[&i64::from(id.0)]).await? {
                Some(row) => Ok(Some(codec::stamp(&row)?)),
                None => Ok(None),
            }
        })
    }

    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        on_conn!(self, retry_unique = false, |c| self.set_state_once(c, id, state))
    }

    async fn fleet(&self) -> Result<Fleet> {
        self.read_fleet().await
    }

    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        self.read_assignment(tenant).await
    }

    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        self.read_assignments(after, limit).await
    }

    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        tenant.validate()?;
        if let Some(group) = &self.inner.group {
            let row = ImportRow::new(tenant.clone(), stamp);
            return self.grouped(&group.assign, group::Request::Assign(row)).await;
        }
        // Two first assignments of one tenant race on the primary key; the retry reports
        // `AlreadyAssigned` with the winner's stamp.
        on_conn!(self, retry_unique = true, |c| self
            .assign_once(c, tenant, stamp, None, None))
    }

    async fn assign_many(&self, rows: &[ImportRow]) -> Result<ImportReport> {
        crate::registry::import::check_size(rows)?;
        // The tenants' locks make a first assignment of one of them by another writer wait;
        // a unique violation would still be answered by the retry (`Unchanged` or refused).
        on_conn!(self, retry_unique = true, |c| self.assign_many_once(c, rows))
    }

    async fn assign_overriding(
        &self,
        tenant: &TenantSpec,
        stamp: StampId,
        overrides: &Override,
        actor: &str,
    ) -> Result<Assignment> {
        TenantId::validate(tenant.id.as_str())?;
        overrides.validate()?;
        if actor.contains('\0') {
            return Err(InvalidInput::new("actor", "contains a NUL character").into());
        }
        on_conn!(self, retry_unique = true, |c| self.assign_once(
            c,
            tenant,
            stamp,
            Some(overrides),
            Some(actor)
        ))
    }

    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        change.validate()?;
        if let Some(group) = &self.inner.group {
            let request = group::Request::Change {
                tenant: tenant.clone(),
                expected,
                change,
            };
            return self.grouped(&group.change, request).await;
        }
        on_conn!(self, retry_unique = false, |c| self
            .cas_once(c, tenant, expected, &change))
    }

    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        on_conn!(self, retry_unique = false, |c| self.unassign_once(c, tenant, expected))
    }

    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.history).await?;
            let rows = c.query(&stmt, &[&tenant.as_str()]).await?;
            rows.iter().map(codec::history_entry).collect::<Result<Vec<_>, _>>()
        })
    }

    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        self.read_changes(after, limit).await
    }

    fn change_signal(&self) -> ChangeSignal {
        self.inner.signal.clone()
    }

    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        record.check_new()?;
        on_conn!(self, retry_unique = false, |c| self.create_migration_once(c, &record))
    }

    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        let Ok(id_param) = i64::try_from(id.0) else {
            return Ok(None);
        };
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.migration_get).await?;
            match c.query_opt(&stmt, &[&id_param]).await? {
                Some(row) => Ok(Some(codec::migration(&row)?)),
                None => Ok(None),
            }
        })
    }

    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        record.validate()?;
        on_conn!(self, retry_unique = false, |c| self.save_migration_once(c, record))
    }

    async fn set_pin(&self, tenant: &TenantId, stamp: Option<StampId>, decision: &Decision) -> Result<Pin> {
        decision.validate()?;
        on_conn!(self, retry_unique = false, |c| self
            .set_pin_once(c, tenant, stamp, decision))
    }

    async fn pin(&self, tenant: &TenantId) -> Result<Option<Pin>> {
        on_conn!(self, retry_unique = false, |c| self.read_pin(c, tenant))
    }

    async fn pins(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Pin>> {
        on_conn!(self, retry_unique = false, |c| self.read_pins(c, after, limit))
    }

    async fn set_route_override(
        &self,
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: &Decision,
    ) -> Result<RouteOverride> {
        decision.validate()?;
        on_conn!(self, retry_unique = false, |c| self
            .set_override_once(c, stamp, redirect, decision))
    }

    async fn route_overrides(&self) -> Result<Vec<RouteOverride>> {
        on_conn!(self, retry_unique = false, |c| self.read_overrides(c))
    }

    async fn route_override_history(&self, stamp: StampId) -> Result<Vec<RouteOverride>> {
        on_conn!(self, retry_unique = false, |c| self.read_override_history(c, stamp))
    }

    async fn record_repair(&self, tenant: &TenantId, stamp: StampId, decision: &Decision) -> Result<HistoryEntry> {
        decision.validate()?;
        on_conn!(self, retry_unique = false, |c| self
            .record_repair_once(c, tenant, stamp, decision))
    }

    async fn create_rollout(&self, record: RolloutRecord) -> Result<RolloutRecord> {
        super::check_new_rollout(&record)?;
        on_conn!(self, retry_unique = false, |c| self.create_rollout_once(c, &record))
    }

    async fn rollout(&self, id: RolloutId) -> Result<Option<RolloutRecord>> {
        on_conn!(self, retry_unique = false, |c| self.read_rollout(c, id))
    }

    async fn save_rollout(&self, record: &RolloutRecord) -> Result<RolloutRecord> {
        on_conn!(self, retry_unique = false, |c| self.save_rollout_once(c, record))
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        on_conn!(self, retry_unique = false, |c| self.read_rollouts(c))
    }

    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        let tenant = tenant.map(TenantId::as_str);
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.migrations).await?;
            let rows = c.query(&stmt, &[&tenant]).await?;
            rows.iter().map(codec::migration).collect::<Result<Vec<_>, _>>()
        })
    }
}
