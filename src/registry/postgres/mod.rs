//! The PostgreSQL registry (feature `postgres`): durable, race-free, with an ordered change
//! feed and a versioned schema.
//!
//! See [`PgRegistry`] and the [`guide`] (`docs/postgres.md`: schema, isolation, sizing,
//! backups and distributed Postgres-compatible engines).

mod codec;
mod config;
mod fault;
mod schema;
mod sql;
mod watch;

#[doc = include_str!("../../../docs/postgres.md")]
pub mod guide {}

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::{try_join, try_join3};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Socket};

pub use config::{PgConfig, DEFAULT_SCHEMA};
pub use fault::DatabaseError;
pub use schema::{SchemaError, SCHEMA_VERSION};

use self::codec::{amounts_json, big, millis, mode_params};
use self::fault::{corrupt, Fault};
use self::sql::Sql;
use self::watch::{AbortOnDrop, Listen, TlsListen, Watch};
use super::{ChangeSignal, Registry};
use crate::error::{ConflictKind, Error, InvalidInput, Result, Subject};
use crate::model::admission;
use crate::model::{
    Amounts, Assignment, AssignmentChange, AssignmentMode, Change, ChangeBatch, ChangeKind, Epoch, Fleet,
    HistoryAction, HistoryEntry, MigrationId, MigrationRecord, MigrationState, Stamp, StampId, StampLoad, StampSpec,
    StampState, TenantId, TenantSpec, Version,
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
///   in stamp-id order), runs the same [`admission`] rules as the in-memory registry in Rust,
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
    max_retries: u32,
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

/// A pooled connection that goes back to the pool only if the call using it finished. A call
/// cancelled mid-flight (its future dropped, say by a timeout) may leave statements queued or a
/// transaction open on the connection; such a connection is closed instead (the server then
/// rolls the transaction back), so the next caller never inherits it.
struct Lease {
    obj: Option<Object>,
    finished: bool,
}

impl Lease {
    fn new(obj: Object) -> Self {
        Lease {
            obj: Some(obj),
            finished: false,
        }
    }

    fn conn(&mut self) -> Result<&mut Object, Fault> {
        self.obj.as_mut().ok_or_else(|| corrupt("lease"))
    }

    /// Marks the call finished; `keep == false` closes the connection instead of pooling it.
    fn finish(mut self, keep: bool) {
        self.finished = keep;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            if !self.finished {
                drop(Object::take(obj));
            }
        }
    }
}

/// Runs `$body` (an expression using `$c: &mut Object`, returning a future of
/// `Result<_, Fault>`) on a pooled connection; drops broken (or abandoned) connections from
/// the pool and retries races the server detected.
macro_rules! on_conn {
    ($self:ident, retry_unique = $retry_unique:expr, |$c:ident| $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            let mut lease = match $self.inner.pool.get().await {
                Ok(o) => Lease::new(o),
                Err(e) => break Err(Fault::from(e).into_error()),
            };
            let result: std::result::Result<_, Fault> = match lease.conn() {
                Ok($c) => $body.await,
                Err(f) => Err(f),
            };
            match result {
                Ok(v) => {
                    lease.finish(true);
                    break Ok(v);
                }
                Err(fault) => {
                    // Leave no transaction open on a pooled connection (a warning when none is).
                    let keep = !fault.breaks_connection()
                        && match lease.conn() {
                            Ok(c) => c.batch_execute("ROLLBACK").await.is_ok(),
                            Err(_) => false,
                        };
                    lease.finish(keep);
                    let race = fault.is_retryable_race()
                        || ($retry_unique && fault.code() == Some(&SqlState::UNIQUE_VIOLATION));
                    if race && attempt < $self.inner.max_retries {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await;
                        continue;
                    }
                    break Err(fault.into_error());
                }
            }
        }
    }};
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
        let manager = Manager::from_config(
            config.driver_config(""),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.pool_wait_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| Error::backend(DatabaseError::new("", format!("cannot build the connection pool: {e}"))))?;
        let sql = Sql::new(&config.schema, config.notify);
        {
            let conn = pool.get().await.map_err(|e| Fault::from(e).into_error())?;
            schema::current_version(&conn, &config.schema)
                .await
                .map_err(Fault::into_error)?;
        }
        let signal = ChangeSignal::new();
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
            interval: config.poll_interval,
        };
        let task = tokio::spawn(watch.run());
        Ok(PgRegistry {
            inner: Arc::new(Inner {
                pool,
                sql,
                schema: config.schema,
                clock: config.clock,
                signal,
                max_retries: config.max_retries,
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
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        let mut conn = self.inner.pool.get().await.map_err(|e| Fault::from(e).into_error())?;
        let client: &mut tokio_postgres::Client = &mut conn;
        schema::migrate(client, &self.inner.schema)
            .await
            .map_err(Fault::into_error)
    }

    /// The schema's version, `None` before [`migrate`](Self::migrate).
    pub async fn schema_version(&self) -> Result<Option<u32>> {
        let conn = self.inner.pool.get().await.map_err(|e| Fault::from(e).into_error())?;
        schema::current_version(&conn, &self.inner.schema)
            .await
            .map_err(Fault::into_error)
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

    /// The newest version of the change feed.
    pub async fn head(&self) -> Result<Version> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.head).await?;
            let row = c.query_one(&stmt, &[]).await?;
            version_of(row.try_get(0)?)
        })
    }

    /// Deletes change-feed rows up to `through` (always keeping the newest one) and returns how
    /// many were deleted. Followers behind the pruned range get
    /// [`Error::ChangeFeedTruncated`] and resynchronise. History is never pruned.
    pub async fn prune_changes(&self, through: Version) -> Result<u64> {
        let through = big(through.0, "through")?;
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.prune).await?;
            Ok(c.execute(&stmt, &[&through]).await?)
        })
    }

    /// The floor the `postgres` bench compares [`Registry::assignment`] with: the same prepared
    /// single-row `SELECT` by primary key on the same pool, reading one column and decoding
    /// nothing else. Not part of the stable API.
    #[doc(hidden)]
    pub async fn bare_select_by_key(&self, tenant: &TenantId) -> Result<Option<i64>> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignment_get).await?;
            let row = c.query_opt(&stmt, &[&tenant.as_str()]).await?;
            Ok(match row {
                Some(r) => Some(r.try_get::<_, i64>(1)?),
                None => None,
            })
        })
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Locks and reads the given stamps (sorted, deduplicated) in the transaction.
    async fn lock_stamps(&self, c: &Object, ids: impl Iterator<Item = StampId>) -> Result<Vec<StampLoad>, Fault> {
        let ids = stamp_ids(ids);
        let stmt = c.prepare_cached(&self.inner.sql.stamps_lock).await?;
        let rows = c.query(&stmt, &[&ids]).await?;
        rows.iter().map(codec::stamp_load).collect()
    }

    /// Starts a transaction and locks the given stamps, in one round trip.
    async fn begin_locking_stamps(
        &self,
        c: &Object,
        ids: impl Iterator<Item = StampId>,
    ) -> Result<Vec<StampLoad>, Fault> {
        let ids = stamp_ids(ids);
        let stmt = c.prepare_cached(&self.inner.sql.stamps_lock).await?;
        let ((), rows) = try_join(c.batch_execute("BEGIN"), c.query(&stmt, &[&ids])).await?;
        rows.iter().map(codec::stamp_load).collect()
    }

    /// Starts a transaction and reads and locks a tenant's assignment, checking its epoch, in
    /// one round trip.
    async fn begin_locking_assignment(
        &self,
        c: &Object,
        tenant: &TenantId,
        expected: Epoch,
    ) -> Result<Assignment, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.assignment_lock).await?;
        let ((), row) = try_join(c.batch_execute("BEGIN"), c.query_opt(&stmt, &[&tenant.as_str()])).await?;
        let row = row.ok_or_else(|| Error::NotFound(Subject::Tenant(tenant.clone())))?;
        let current = codec::assignment(&row)?;
        if current.epoch != expected {
            return Err(Error::Conflict {
                kind: ConflictKind::Epoch,
                expected: expected.0,
                actual: current.epoch.0,
            }
            .into());
        }
        Ok(current)
    }

    /// Increments the feed counter, runs `write` and commits, pipelined in one round trip;
    /// returns the new head and the write's rows. From the increment to the commit the
    /// transaction holds the counter row, which is what orders commits by version; sending
    /// the three together keeps that window to one round trip. If the increment or the write
    /// fails, the server turns the `COMMIT` into a rollback and the call returns the error.
    /// Every write statement fails (rather than writing nothing) when its target row is gone,
    /// so a commit never records a version without its change row.
    async fn bump_write_commit(
        &self,
        c: &Object,
        write: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Version, Vec<Row>), Fault> {
        let bump = c.prepare_cached(&self.inner.sql.bump).await?;
        let write = c.prepare_cached(write).await?;
        let (head, rows, ()) = try_join3(
            c.query_one(&bump, &[]),
            c.query(&write, params),
            c.batch_execute("COMMIT"),
        )
        .await?;
        Ok((version_of(head.try_get(0)?)?, rows))
    }

    async fn assign_once(&self, c: &mut Object, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment, Fault> {
        let now = self.now();
        let get = c.prepare_cached(&self.inner.sql.assignment_get).await?;
        let lock = c.prepare_cached(&self.inner.sql.stamps_lock).await?;
        let ids = vec![i64::from(stamp.0)];
        let ((), existing, stamps) = try_join3(
            c.batch_execute("BEGIN"),
            c.query_opt(&get, &[&tenant.id.as_str()]),
            c.query(&lock, &[&ids]),
        )
        .await?;
        if let Some(row) = existing {
            let current = codec::assignment(&row)?;
            return Err(Error::AlreadyAssigned {
                tenant: tenant.id.clone(),
                stamp: current.stamp,
            }
            .into());
        }
        let loads = stamps.iter().map(codec::stamp_load).collect::<Result<Vec<_>, _>>()?;
        let new = Assignment::new(tenant.clone(), stamp, Epoch(0), AssignmentMode::Serving, now, now);
        admission::check(None, Some(&new), |s| loads.iter().find(|l| l.id() == s))?;
        let usage = usage_after(&loads, None, Some(&new));
        let p = AssignmentParams::new(&new, now)?;
        let action = HistoryAction::Assigned.as_str();
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.assign_write,
                &[
                    &p.tenant,
                    &p.stamp,
                    &p.mode.0,
                    &p.mode.1,
                    &p.mode.2,
                    &p.region,
                    &p.residency,
                    &p.tier,
                    &p.pin,
                    &p.demand,
                    &p.labels,
                    &p.at,
                    &usage,
                    &action,
                    &None::<i64>,
                    &None::<String>,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        check_written(head, &rows)?;
        let mut out = new;
        out.epoch = Epoch(head.0);
        Ok(out)
    }

    async fn cas_once(
        &self,
        c: &mut Object,
        tenant: &TenantId,
        expected: Epoch,
        change: &AssignmentChange,
    ) -> Result<Assignment, Fault> {
        let now = self.now();
        let old = self.begin_locking_assignment(c, tenant, expected).await?;
        let (mut new, action) = admission::change(&old, &change.action)?;
        new.updated_at = now;
        let loads = self.lock_stamps(c, old.stamps().chain(new.stamps())).await?;
        admission::check(Some(&old), Some(&new), |s| loads.iter().find(|l| l.id() == s))?;
        let usage = usage_after(&loads, Some(&old), Some(&new));
        let p = AssignmentParams::new(&new, now)?;
        let action = action.as_str();
        let from = Some(i64::from(old.stamp.0));
        let expected_param = big(expected.0, "expected")?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.update_write,
                &[
                    &p.tenant,
                    &p.stamp,
                    &p.mode.0,
                    &p.mode.1,
                    &p.mode.2,
                    &p.region,
                    &p.residency,
                    &p.tier,
                    &p.pin,
                    &p.demand,
                    &p.labels,
                    &p.at,
                    &usage,
                    &action,
                    &from,
                    &change.actor,
                    &expected_param,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        check_written(head, &rows)?;
        new.epoch = Epoch(head.0);
        Ok(new)
    }

    async fn unassign_once(&self, c: &mut Object, tenant: &TenantId, expected: Epoch) -> Result<(), Fault> {
        let now = self.now();
        let old = self.begin_locking_assignment(c, tenant, expected).await?;
        let loads = self.lock_stamps(c, old.stamps()).await?;
        let usage = usage_after(&loads, Some(&old), None);
        let at = millis(now)?;
        let expected_param = big(expected.0, "expected")?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.unassign_write,
                &[&tenant.as_str(), &expected_param, &usage, &at, &None::<String>],
            )
            .await?;
        self.inner.signal.notify(head);
        check_written(head, &rows)?;
        Ok(())
    }

    async fn put_stamp_once(&self, c: &mut Object, spec: &StampSpec) -> Result<Stamp, Fault> {
        let now = self.now();
        let existing = self.begin_locking_stamps(c, std::iter::once(spec.id)).await?;
        let write = match existing.first() {
            Some(load) => {
                admission::check_respec(load, spec)?;
                &self.inner.sql.stamp_update
            }
            None => &self.inner.sql.stamp_insert,
        };
        let id = i64::from(spec.id.0);
        let residency = spec.residency.as_ref().map(|r| r.as_str());
        let labels = labels_json(&spec.labels);
        let limits = amounts_json(spec.capacity.limits().iter());
        let headroom = i64::from(spec.capacity.headroom().as_ppm());
        let at = millis(now)?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                write,
                &[
                    &id,
                    &spec.name,
                    &spec.region.as_str(),
                    &residency,
                    &spec.tier.as_str(),
                    &labels,
                    &spec.version,
                    &spec.endpoint,
                    &limits,
                    &headroom,
                    &at,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        stamp_written(head, &rows)
    }

    async fn set_state_once(&self, c: &mut Object, id: StampId, state: StampState) -> Result<Stamp, Fault> {
        let now = self.now();
        let loads = self.begin_locking_stamps(c, std::iter::once(id)).await?;
        let load = loads.first().ok_or(Error::NotFound(Subject::Stamp(id)))?;
        if !admission::check_state_change(load, state)? {
            c.batch_execute("ROLLBACK").await?;
            return Ok(load.stamp.clone());
        }
        let at = millis(now)?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.stamp_state,
                &[&i64::from(id.0), &state.as_str(), &at],
            )
            .await?;
        self.inner.signal.notify(head);
        stamp_written(head, &rows)
    }

    async fn create_migration_once(&self, c: &mut Object, record: &MigrationRecord) -> Result<MigrationRecord, Fault> {
        let now = millis(self.now())?;
        let sql = &self.inner.sql;
        let exist = c.prepare_cached(&sql.stamps_exist).await?;
        let ids = vec![i64::from(record.source.0), i64::from(record.destination.0)];
        let found: Vec<i64> = c
            .query(&exist, &[&ids])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for s in [record.source, record.destination] {
            if !found.contains(&i64::from(s.0)) {
                return Err(Error::NotFound(Subject::Stamp(s)).into());
            }
        }
        let insert = c.prepare_cached(&sql.migration_insert).await?;
        let data = data_json(&record.data);
        let res = c
            .query_one(
                &insert,
                &[
                    &record.tenant.as_str(),
                    &ids[0],
                    &ids[1],
                    &record.state.as_str(),
                    &data,
                    &now,
                ],
            )
            .await;
        match res {
            Ok(row) => codec::migration(&row),
            Err(e) => {
                let fault = Fault::from(e);
                if fault.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(self.active_migration(c, &record.tenant).await);
                }
                Err(fault)
            }
        }
    }

    /// The `AlreadyExists` error naming the tenant's migration in progress.
    async fn active_migration(&self, c: &mut Object, tenant: &TenantId) -> Fault {
        let lookup = async {
            let stmt = c.prepare_cached(&self.inner.sql.migration_active).await?;
            let row = c.query_opt(&stmt, &[&tenant.as_str()]).await?;
            let id = match row {
                Some(r) => u64::try_from(r.try_get::<_, i64>(0)?).map_err(|_| corrupt("tenant_migrations.id"))?,
                None => 0,
            };
            Ok::<_, Fault>(id)
        };
        match lookup.await {
            Ok(id) => Fault::Crate(Error::AlreadyExists(Subject::Migration(MigrationId(id)))),
            Err(f) => f,
        }
    }

    async fn save_migration_once(&self, c: &mut Object, record: &MigrationRecord) -> Result<MigrationRecord, Fault> {
        let sql = &self.inner.sql;
        let id = big(record.id.0, "id")?;
        let revision = big(record.revision, "revision")?;
        let now = millis(self.now())?;
        let data = data_json(&record.data);
        // The states the record may be in for this save to be a legal transition.
        let from: Vec<&str> = MigrationState::ALL
            .into_iter()
            .filter(|s| s.can_transition_to(record.state))
            .map(MigrationState::as_str)
            .collect();
        let save = c.prepare_cached(&sql.migration_save).await?;
        let res = c
            .query_opt(
                &save,
                &[
                    &id,
                    &record.state.as_str(),
                    &data,
                    &now,
                    &revision,
                    &record.tenant.as_str(),
                    &i64::from(record.source.0),
                    &i64::from(record.destination.0),
                    &from,
                ],
            )
            .await;
        let row = match res {
            Ok(row) => row,
            Err(e) => {
                let fault = Fault::from(e);
                if fault.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(self.active_migration(c, &record.tenant).await);
                }
                return Err(fault);
            }
        };
        if let Some(row) = row {
            return codec::migration(&row);
        }
        // Nothing saved: say why.
        let get = c.prepare_cached(&sql.migration_get).await?;
        let current = match c.query_opt(&get, &[&id]).await? {
            Some(r) => codec::migration(&r)?,
            None => return Err(Error::NotFound(Subject::Migration(record.id)).into()),
        };
        if current.revision != record.revision {
            return Err(Error::Conflict {
                kind: ConflictKind::Revision,
                expected: record.revision,
                actual: current.revision,
            }
            .into());
        }
        if current.tenant != record.tenant
            || current.source != record.source
            || current.destination != record.destination
        {
            return Err(
                InvalidInput::new("record", "tenant, source and destination of a migration cannot change").into(),
            );
        }
        // Revision and identity match: the state transition is what the update refused.
        match current.state.transition(record.state) {
            Err(e) => Err(e.into()),
            Ok(_) => Err(Error::unavailable("the migration record changed while it was saved; re-read it").into()),
        }
    }
}

fn stamp_ids(ids: impl Iterator<Item = StampId>) -> Vec<i64> {
    let mut ids: Vec<i64> = ids.map(|s| i64::from(s.0)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Usage of each locked stamp after replacing `old` with `new`, as `{stamp id: usage}`.
fn usage_after(loads: &[StampLoad], old: Option<&Assignment>, new: Option<&Assignment>) -> Value {
    let mut usage: Vec<(StampId, Amounts)> = loads.iter().map(|l| (l.id(), l.usage.clone())).collect();
    admission::apply(old, new, |s, demand, plus| {
        if let Some((_, u)) = usage.iter_mut().find(|(id, _)| *id == s) {
            admission::add(u, demand, plus);
        }
    });
    Value::Object(
        usage
            .into_iter()
            .map(|(id, u)| (id.0.to_string(), amounts_json(u.iter())))
            .collect(),
    )
}

fn labels_json(labels: &crate::model::Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn data_json(data: &std::collections::BTreeMap<String, String>) -> Value {
    labels_json(data)
}

fn version_of(v: i64) -> Result<Version, Fault> {
    u64::try_from(v).map(Version).map_err(|_| corrupt("version"))
}

/// Checks that an assignment write wrote its change row at `head`, its history row and every
/// stamp's usage.
fn check_written(head: Version, rows: &[Row]) -> Result<(), Fault> {
    let row = rows
        .first()
        .ok_or_else(|| corrupt("assignments (write matched no row)"))?;
    let version = version_of(row.try_get("version")?)?;
    let history: i64 = row.try_get("history_rows")?;
    if version != head || history != 1 {
        return Err(corrupt("changes.version"));
    }
    Ok(())
}

/// The stamp a stamp write returned.
fn stamp_written(head: Version, rows: &[Row]) -> Result<Stamp, Fault> {
    let row = rows.first().ok_or_else(|| corrupt("stamps (write matched no row)"))?;
    if version_of(row.try_get("version")?)? != head {
        return Err(corrupt("changes.version"));
    }
    codec::stamp(row)
}

/// An assignment's columns as parameters.
struct AssignmentParams<'a> {
    tenant: &'a str,
    stamp: i64,
    mode: (&'static str, Option<i64>, Option<i64>),
    region: Option<&'a str>,
    residency: Option<&'a str>,
    tier: &'a str,
    pin: Option<i64>,
    demand: Value,
    labels: Value,
    at: i64,
}

impl<'a> AssignmentParams<'a> {
    fn new(a: &'a Assignment, at: Timestamp) -> Result<Self, Fault> {
        Ok(AssignmentParams {
            tenant: a.spec.id.as_str(),
            stamp: i64::from(a.stamp.0),
            mode: mode_params(&a.mode)?,
            region: a.spec.region.as_ref().map(|r| r.as_str()),
            residency: a.spec.residency.as_ref().map(|r| r.as_str()),
            tier: a.spec.tier.as_str(),
            pin: a.spec.pin.map(|p| i64::from(p.0)),
            demand: amounts_json(a.spec.demand.iter()),
            labels: labels_json(&a.spec.labels),
            at: millis(at)?,
        })
    }
}

/// Decodes a change row.
fn change_of(row: &Row) -> Result<Option<Change>, Fault> {
    let Some(version) = row.try_get::<_, Option<i64>>("version")? else {
        return Ok(None);
    };
    let version = version_of(version)?;
    let at = Timestamp::from_millis(u64::try_from(row.try_get::<_, i64>("at")?).map_err(|_| corrupt("changes.at"))?);
    let payload: Option<Value> = row.try_get("payload")?;
    let kind = match row.try_get::<_, &str>("kind")? {
        "assignment" => {
            let tenant = TenantId::new(row.try_get::<_, &str>("tenant")?).map_err(|_| corrupt("changes.tenant"))?;
            let assignment = match &payload {
                Some(p) => Some(Box::new(codec::assignment(codec::object(p)?)?)),
                None => None,
            };
            ChangeKind::Assignment { tenant, assignment }
        }
        "stamp" => {
            let p = payload.ok_or_else(|| corrupt("changes.payload"))?;
            ChangeKind::Stamp(Box::new(codec::stamp(codec::object(&p)?)?))
        }
        _ => return Err(corrupt("changes.kind")),
    };
    Ok(Some(Change::new(version, at, kind)))
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
        let (head, loads) = on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.fleet).await?;
            let rows = c.query(&stmt, &[]).await?;
            let head = version_of(rows.first().ok_or_else(|| corrupt("feed"))?.try_get("head")?)?;
            let mut loads = Vec::with_capacity(rows.len());
            for row in &rows {
                if row.try_get::<_, Option<i64>>("id")?.is_some() {
                    loads.push(codec::stamp_load(row)?);
                }
            }
            Ok((head, loads))
        })?;
        Ok(Fleet::new(loads, head, self.now()))
    }

    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignment_get).await?;
            match c.query_opt(&stmt, &[&tenant.as_str()]).await? {
                Some(row) => Ok(Some(codec::assignment(&row)?)),
                None => Ok(None),
            }
        })
    }

    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        let after = after.map_or("", TenantId::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignments_page).await?;
            let rows = c.query(&stmt, &[&after, &limit]).await?;
            rows.iter().map(codec::assignment).collect::<Result<Vec<_>, _>>()
        })
    }

    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        TenantId::validate(tenant.id.as_str())?;
        // Two first assignments of one tenant race on the primary key; the retry reports
        // `AlreadyAssigned` with the winner's stamp.
        on_conn!(self, retry_unique = true, |c| self.assign_once(c, tenant, stamp))
    }

    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
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
        let after_param = big(after.0, "after")?;
        let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
        let (head, changes) = on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.changes).await?;
            let rows = c.query(&stmt, &[&after_param, &limit_param]).await?;
            let head = version_of(rows.first().ok_or_else(|| corrupt("feed"))?.try_get("head")?)?;
            let mut changes = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(change) = change_of(row)? {
                    changes.push(change);
                }
            }
            Ok((head, changes))
        })?;
        if limit > 0 && head > after {
            let first = changes.first().map_or(head, |c| c.version);
            if first.0 > after.0 + 1 {
                return Err(Error::ChangeFeedTruncated {
                    requested: after,
                    oldest: first.0,
                });
            }
        }
        Ok(ChangeBatch::new(changes, head))
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
        on_conn!(self, retry_unique = false, |c| self.save_migration_once(c, record))
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
