//! [`PgTableMover`]: a [`MigrationDriver`](super::MigrationDriver) for stamps whose tenant data
//! lives in PostgreSQL (feature `postgres`). It moves one tenant's rows of the declared
//! tables from one stamp database to another, and fences stale writers inside the database.
//!
//! The whole protocol, what the host's write path must do and the figures are in
//! [`docs/migrations.md`](crate::migration::runbook) ("Moving PostgreSQL data"). In short:
//!
//! - [`install`](PgTableMover::install) creates, in every stamp database, a `stamps_mover`
//!   schema (fence, change-log, progress and generation tables) and a `BEFORE` row trigger on
//!   each declared table. The trigger refuses a write whose epoch (set by the host per
//!   transaction with [`set_write_token`]) is older than the tenant's fence, and, while a
//!   migration tracks the tenant, logs the key of every changed or deleted row.
//! - `snapshot` turns tracking on at the source (draining writers already in flight) and
//!   records the source's transaction snapshot (`pg_current_snapshot()`).
//! - `import` copies the tenant's rows table by table, in key order, from one
//!   `REPEATABLE READ` snapshot of the source with binary `COPY` into a staging table of the
//!   destination, merged by primary key with the higher row version winning. Each batch
//!   commits with its progress (table and last key), so an import that crashed resumes there.
//! - `catch_up` re-reads on the source the rows whose keys the change log recorded since the
//!   last copy (by transaction visibility, so commit order does not matter), upserts the
//!   present ones and deletes the absent ones on the destination (never a row the
//!   destination holds in a newer version), and moves its cursor in the same transaction.
//! - `validate` compares per table, server-side, the row count and an order-independent hash
//!   of the tenant's rows (all columns but the version) on both sides, and names the first
//!   differing keys.
//! - `cleanup_source` and `rollback` delete the tenant's rows in batches (never another
//!   tenant's); `rollback` first copies back to the source what the destination changed.
//! - Every effect checks the call's lease generation in the same transaction, so a worker
//!   that lost its lease cannot write anything.
//!
//! ```no_run
//! use stamps::migration::postgres::{MovedTable, PgTableMover};
//! use stamps::StampId;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mover = PgTableMover::builder(vec![
//!     MovedTable::new("orders", "tenant_id", &["tenant_id", "id"], "row_version")?,
//!     MovedTable::new("users", "tenant_id", &["tenant_id", "id"], "row_version")?.versioned_by_mover(),
//! ])
//! .stamp_url(StampId(1), "postgres://app@stamp-1.internal/app")?
//! .stamp_url(StampId(2), "postgres://app@stamp-2.internal/app")?
//! .build()?;
//! mover.install().await?; // once per deployment; idempotent
//! # Ok(()) }
//! ```

mod catalog;
mod copy;
mod driver;
mod ops;
mod table;
mod write;

pub use table::MovedTable;
pub use write::{fence_rejection, set_write_token, FENCE_SQLSTATES};

use table::Versioning;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::Mutex;
use tokio_postgres::NoTls;

use super::driver::DriverError;
use crate::error::{Error, InvalidInput, Result};
use crate::model::{MigrationId, StampId};
use catalog::TableInfo;

/// A plain identifier: lowercase letters, digits and `_`, not starting with a digit, at most
/// 63 bytes (quoted when used, so it is never SQL).
pub(crate) fn identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// `table` or `schema.table`, each part an [`identifier`].
pub(crate) fn table_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| identifier(p))
}

/// The quoted form of a name [`table_name`] accepted.
pub(crate) fn quote_table(s: &str) -> String {
    s.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")
}

/// A pool of at most `size` connections to `url` (no TLS), each bounded: 5 s to connect,
/// to wait for a free connection and to recycle one.
pub(crate) fn pool(url: &str, size: usize) -> Result<Pool> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| Error::from(InvalidInput::new("url", "is not a PostgreSQL connection URL")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|_| Error::from(InvalidInput::new("pool", "could not be built")))
}

/// Where a move stands on the destination, as [`PgTableMover::progress`] reads it.
///
/// ```
/// use stamps::migration::postgres::MoveProgress;
/// fn show(p: &MoveProgress) -> String {
///     format!("table {} of the move, {} rows imported, {} caught up", p.table, p.imported, p.caught_up)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MoveProgress {
    /// Index of the table the import works on (the number of tables once it finished).
    pub table: usize,
    /// Rows imported so far (rows copied again after a restart count again).
    pub imported: u64,
    /// Rows copied (or deleted) by catch-ups so far.
    pub caught_up: u64,
    /// The source snapshot the next catch-up starts after (`pg_current_snapshot()` text).
    pub cursor: String,
}

/// Settings of a [`PgTableMover`] (see the builder's methods).
#[derive(Debug, Clone)]
struct Settings {
    batch_rows: u64,
    delete_batch: u64,
    statement_timeout: Duration,
    settle_timeout: Duration,
    validate_attempts: u32,
    call_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_rows: 50_000,
            delete_batch: 5_000,
            statement_timeout: Duration::from_secs(120),
            settle_timeout: Duration::from_secs(30),
            validate_attempts: 3,
            call_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Builds a [`PgTableMover`]: the declared tables and a connection pool per stamp database.
///
/// ```no_run
/// use stamps::migration::postgres::{MovedTable, PgTableMover};
/// use stamps::StampId;
/// # fn demo() -> stamps::Result<()> {
/// let mover = PgTableMover::builder(vec![MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?])
///     .stamp_url(StampId(1), "postgres://app@stamp-1/app")?
///     .stamp_url(StampId(2), "postgres://app@stamp-2/app")?
///     .batch_rows(20_000)
///     .build()?;
/// # let _ = mover; Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct PgTableMoverBuilder {
    tables: Vec<MovedTable>,
    stamps: HashMap<StampId, Pool>,
    settings: Settings,
}

impl PgTableMoverBuilder {
    /// The database of `stamp` at `url` (no TLS; a pool of 4 bounded connections). Refused
    /// with [`Error::InvalidInput`] for a URL that does not parse.
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) -> stamps::Result<()> {
    /// let b = b.stamp_url(stamps::StampId(3), "postgres://app@stamp-3/app")?;
    /// # let _ = b; Ok(()) }
    /// ```
    pub fn stamp_url(mut self, stamp: StampId, url: &str) -> Result<Self> {
        self.stamps.insert(stamp, pool(url, 4)?);
        Ok(self)
    }

    /// The database of `stamp` through a pool the host built (its TLS, its size; give each
    /// connection a connect timeout).
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder, pool: deadpool_postgres::Pool) {
    /// let b = b.stamp_pool(stamps::StampId(3), pool);
    /// # let _ = b; }
    /// ```
    pub fn stamp_pool(mut self, stamp: StampId, pool: Pool) -> Self {
        self.stamps.insert(stamp, pool);
        self
    }

    /// Rows per import batch (one transaction on the destination, one progress mark; default
    /// 50,000, at least 1).
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) {
    /// let b = b.batch_rows(10_000);
    /// # let _ = b; }
    /// ```
    pub fn batch_rows(mut self, rows: u64) -> Self {
        self.settings.batch_rows = rows.max(1);
        self
    }

    /// Rows per delete batch of cleanup and rollback (default 5,000, at least 1).
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) {
    /// let b = b.delete_batch(1_000);
    /// # let _ = b; }
    /// ```
    pub fn delete_batch(mut self, rows: u64) -> Self {
        self.settings.delete_batch = rows.max(1);
        self
    }

    /// The bound of every statement the mover runs (server-side `statement_timeout`, and a
    /// client-side deadline a little longer; default 120 s).
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) {
    /// let b = b.statement_timeout(std::time::Duration::from_secs(30));
    /// # let _ = b; }
    /// ```
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.settings.statement_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long a fence that creates a tenant's fence row waits for transactions whose
    /// snapshot predates the row (default 30 s; past it, the call fails retryably).
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) {
    /// let b = b.settle_timeout(std::time::Duration::from_secs(5));
    /// # let _ = b; }
    /// ```
    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.settle_timeout = timeout;
        self
    }

    /// How many times `validate` compares before reporting a difference while writers run
    /// (100 ms apart: a dual-write in flight between the two stamps is not a difference;
    /// default 3, at least 1).
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) {
    /// let b = b.validate_attempts(5);
    /// # let _ = b; }
    /// ```
    pub fn validate_attempts(mut self, attempts: u32) -> Self {
        self.settings.validate_attempts = attempts.max(1);
        self
    }

    /// The bound of each driver call as a whole (an import of a large tenant is many
    /// statements; default 30 minutes). Past it the call fails retryably; a resumed import
    /// goes on from its last batch.
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) {
    /// let b = b.call_timeout(std::time::Duration::from_secs(3_600));
    /// # let _ = b; }
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.settings.call_timeout = timeout;
        self
    }

    /// The mover. Refused with [`Error::InvalidInput`] without tables, with a table declared
    /// twice, or with fewer than two stamps.
    ///
    /// ```no_run
    /// # fn f(b: stamps::migration::postgres::PgTableMoverBuilder) -> stamps::Result<()> {
    /// let mover = b.build()?;
    /// # let _ = mover; Ok(()) }
    /// ```
    pub fn build(self) -> Result<PgTableMover> {
        if self.tables.is_empty() {
            return Err(InvalidInput::new("tables", "must declare at least one tenant-scoped table").into());
        }
        if self
            .tables
            .iter()
            .enumerate()
            .any(|(i, t)| self.tables[..i].iter().any(|u| u.table == t.table))
        {
            return Err(InvalidInput::new("tables", "declares a table twice").into());
        }
        if self.stamps.len() < 2 {
            return Err(InvalidInput::new("stamps", "a move needs the databases of at least two stamps").into());
        }
        Ok(PgTableMover {
            inner: Arc::new(Inner {
                tables: self.tables,
                stamps: self.stamps,
                settings: self.settings,
                catalogs: Mutex::new(HashMap::new()),
            }),
        })
    }
}

struct Inner {
    tables: Vec<MovedTable>,
    stamps: HashMap<StampId, Pool>,
    settings: Settings,
    catalogs: Mutex<HashMap<StampId, Arc<Vec<TableInfo>>>>,
}

/// A [`MigrationDriver`](super::MigrationDriver) that moves a tenant's rows between stamp
/// databases in PostgreSQL and fences stale writers with a trigger in each database (see the
/// [module documentation](self) for the protocol, and [`set_write_token`] for what the host's
/// write path must do). Cheap to clone.
///
/// ```no_run
/// use std::sync::Arc;
/// use stamps::migration::postgres::{MovedTable, PgTableMover};
/// use stamps::migration::Migrator;
/// use stamps::StampId;
/// # async fn demo(registry: Arc<stamps::registry::DynRegistry>) -> Result<(), Box<dyn std::error::Error>> {
/// let mover = PgTableMover::builder(vec![MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?])
///     .stamp_url(StampId(1), "postgres://app@stamp-1/app")?
///     .stamp_url(StampId(2), "postgres://app@stamp-2/app")?
///     .build()?;
/// mover.install().await?;
/// let migrator = Migrator::new(registry, Arc::new(mover));
/// # let _ = migrator; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgTableMover {
    inner: Arc<Inner>,
}

impl fmt::Debug for PgTableMover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut stamps: Vec<_> = self.inner.stamps.keys().collect();
        stamps.sort();
        f.debug_struct("PgTableMover")
            .field(
                "tables",
                &self.inner.tables.iter().map(|t| &t.table).collect::<Vec<_>>(),
            )
            .field("stamps", &stamps)
            .finish_non_exhaustive()
    }
}

impl PgTableMover {
    /// A builder over the declared tables.
    ///
    /// ```
    /// use stamps::migration::postgres::{MovedTable, PgTableMover};
    /// let b = PgTableMover::builder(vec![MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?]);
    /// assert!(b.build().is_err()); // no stamps yet
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn builder(tables: Vec<MovedTable>) -> PgTableMoverBuilder {
        PgTableMoverBuilder {
            tables,
            stamps: HashMap::new(),
            settings: Settings::default(),
        }
    }

    /// The declared tables.
    ///
    /// ```no_run
    /// # fn f(m: stamps::migration::postgres::PgTableMover) {
    /// for t in m.tables() { println!("{}", t.table()); }
    /// # }
    /// ```
    pub fn tables(&self) -> &[MovedTable] {
        &self.inner.tables
    }

    /// Installs (or updates) the mover in every stamp database: the `stamps_mover` schema and
    /// its tables, and the fence trigger on each declared table; records which stamp each
    /// database is, refusing a database already recorded as another stamp (two stamp ids
    /// on one database would let a cleanup delete the only copy). Checks every declared
    /// table: its columns exist, the key is a unique index, the version is `bigint`, and
    /// every stamp has the same columns. Idempotent; takes an advisory lock, so concurrent
    /// installs are safe. Needs the right to create schemas and triggers.
    ///
    /// ```no_run
    /// # async fn f(m: stamps::migration::postgres::PgTableMover) -> Result<(), stamps::migration::DriverError> {
    /// m.install().await?;
    /// # Ok(()) }
    /// ```
    pub async fn install(&self) -> std::result::Result<(), DriverError> {
        let mut stamps: Vec<StampId> = self.inner.stamps.keys().copied().collect();
        stamps.sort();
        let mut first: Option<(StampId, Arc<Vec<TableInfo>>)> = None;
        for stamp in stamps {
            self.inner.catalogs.lock().remove(&stamp);
            catalog::install(self, stamp).await?;
            let info = self.catalog(stamp).await?;
            match &first {
                None => first = Some((stamp, info)),
                Some((s, other)) => catalog::same_columns(*s, other, stamp, &info)?,
            }
        }
        Ok(())
    }

    /// Where the move of `migration` stands on `destination`'s database (`None` before its
    /// import began or after it ended).
    ///
    /// ```no_run
    /// # async fn f(m: stamps::migration::postgres::PgTableMover) -> Result<(), stamps::migration::DriverError> {
    /// if let Some(p) = m.progress(stamps::StampId(2), stamps::MigrationId(7)).await? {
    ///     println!("{} rows imported", p.imported);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn progress(
        &self,
        destination: StampId,
        migration: MigrationId,
    ) -> std::result::Result<Option<MoveProgress>, DriverError> {
        ops::progress(self, destination, migration).await
    }

    fn pool(&self, stamp: StampId) -> std::result::Result<&Pool, DriverError> {
        self.inner
            .stamps
            .get(&stamp)
            .ok_or_else(|| DriverError::permanent(format!("the mover has no database for {stamp}")))
    }

    /// The declared tables as `stamp`'s database has them (read once, then cached).
    async fn catalog(&self, stamp: StampId) -> std::result::Result<Arc<Vec<TableInfo>>, DriverError> {
        if let Some(c) = self.inner.catalogs.lock().get(&stamp) {
            return Ok(c.clone());
        }
        let info = Arc::new(catalog::introspect(self, stamp).await?);
        self.inner.catalogs.lock().insert(stamp, info.clone());
        Ok(info)
    }

    fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}
