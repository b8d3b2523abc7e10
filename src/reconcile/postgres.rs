//! [`PgInventory`]: what a stamp whose tenant data lives in PostgreSQL holds, read from the
//! host's tenant-scoped tables (feature `postgres`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::inventory::{Held, InventoryError, StampInventory};
use crate::error::{InvalidInput, Result};
use crate::migration::postgres::{identifier, pool, quote_table, table_name};

/// One tenant-scoped table of a stamp database: its name (`table` or `schema.table`) and the
/// column holding the tenant id.
///
/// ```
/// use stamps::reconcile::TenantTable;
/// let orders = TenantTable::new("app.orders", "tenant_id")?;
/// assert_eq!(orders.table(), "app.orders");
/// assert!(TenantTable::new("orders; DROP TABLE x", "tenant_id").is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTable {
    table: String,
    tenant_column: String,
}

impl TenantTable {
    /// A table and its tenant column. Refused with [`Error::InvalidInput`](crate::Error::InvalidInput) unless both are
    /// plain identifiers (lowercase letters, digits, `_`; `schema.table` for the table).
    ///
    /// ```
    /// let t = stamps::reconcile::TenantTable::new("users", "tenant")?;
    /// # let _ = t; Ok::<(), stamps::Error>(())
    /// ```
    pub fn new(table: &str, tenant_column: &str) -> Result<TenantTable> {
        if !table_name(table) {
            return Err(InvalidInput::new(
                "table",
                "must be `table` or `schema.table` of lowercase letters, digits and _",
            )
            .into());
        }
        if !identifier(tenant_column) {
            return Err(InvalidInput::new("tenant column", "must be lowercase letters, digits and _").into());
        }
        Ok(TenantTable {
            table: table.to_string(),
            tenant_column: tenant_column.to_string(),
        })
    }

    /// The table's name as given.
    ///
    /// ```
    /// assert_eq!(stamps::reconcile::TenantTable::new("users", "tenant").unwrap().table(), "users");
    /// ```
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The tenant column.
    ///
    /// ```
    /// assert_eq!(stamps::reconcile::TenantTable::new("users", "tenant").unwrap().tenant_column(), "tenant");
    /// ```
    pub fn tenant_column(&self) -> &str {
        &self.tenant_column
    }

    fn quoted_table(&self) -> String {
        quote_table(&self.table)
    }
}

/// A [`StampInventory`] over a stamp database: the distinct tenant ids of the declared tables,
/// in byte order (`COLLATE "C"`), paged. Each page is one statement, bounded by the
/// inventory's timeout (server-side `statement_timeout` and a client-side deadline). With an
/// index on each table's tenant column, each table contributes at most `limit` ids per page
/// from an index range scan.
///
/// ```no_run
/// use stamps::reconcile::{PgInventory, StampInventory, TenantTable};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let inventory = PgInventory::connect(
///     "postgres://app@stamp-3.internal/app",
///     vec![TenantTable::new("orders", "tenant_id")?, TenantTable::new("users", "tenant_id")?],
/// )?;
/// let first = inventory.tenants(None, 1_000).await?;
/// # let _ = first; Ok(()) }
/// ```
pub struct PgInventory {
    pool: Pool,
    tables: Vec<TenantTable>,
    timeout: Duration,
    sql: String,
}

impl fmt::Debug for PgInventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgInventory")
            .field("tables", &self.tables)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PgInventory {
    /// An inventory of the stamp database at `url` (no TLS; use [`PgInventory::from_pool`]
    /// for a pool of your own), over `tables`. Connections open on first use. Refused with
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a bad URL or no tables.
    ///
    /// ```no_run
    /// # fn f() -> stamps::Result<()> {
    /// use stamps::reconcile::{PgInventory, TenantTable};
    /// let inv = PgInventory::connect("postgres://app@127.0.0.1/app", vec![TenantTable::new("t", "tenant")?])?;
    /// # let _ = inv; Ok(()) }
    /// ```
    pub fn connect(url: &str, tables: Vec<TenantTable>) -> Result<PgInventory> {
        let pool = pool(url, 2)?;
        PgInventory::from_pool(pool, tables)
    }

    /// An inventory over a pool the host built (with its TLS, its pool size).
    ///
    /// ```no_run
    /// # fn f(pool: deadpool_postgres::Pool) -> stamps::Result<()> {
    /// use stamps::reconcile::{PgInventory, TenantTable};
    /// let inv = PgInventory::from_pool(pool, vec![TenantTable::new("orders", "tenant_id")?])?;
    /// # let _ = inv; Ok(()) }
    /// ```
    pub fn from_pool(pool: Pool, tables: Vec<TenantTable>) -> Result<PgInventory> {
        if tables.is_empty() {
            return Err(InvalidInput::new("tables", "must name at least one tenant-scoped table").into());
        }
        // One range scan per table, each limited, merged and limited again.
        let parts: Vec<String> = tables
            .iter()
            .map(|t| {
                let col = format!("\"{}\"::text COLLATE \"C\"", t.tenant_column);
                format!(
                    "(SELECT DISTINCT {col} AS tenant FROM {tbl} WHERE {col} IS NOT NULL AND ($1::text IS NULL OR {col} > $1::text) ORDER BY 1 LIMIT $2)",
                    tbl = t.quoted_table()
                )
            })
            .collect();
        let sql = format!(
            "SELECT tenant FROM ({}) u GROUP BY tenant ORDER BY tenant COLLATE \"C\" LIMIT $2",
            parts.join(" UNION ALL ")
        );
        Ok(PgInventory {
            pool,
            tables,
            timeout: Duration::from_secs(30),
            sql,
        })
    }

    /// The bound of each page's statement (default 30 s).
    ///
    /// ```no_run
    /// # fn f(inv: stamps::reconcile::PgInventory) {
    /// let inv = inv.timeout(std::time::Duration::from_secs(10));
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The declared tables.
    ///
    /// ```no_run
    /// # fn f(inv: stamps::reconcile::PgInventory) {
    /// assert!(!inv.tables().is_empty());
    /// # }
    /// ```
    pub fn tables(&self) -> &[TenantTable] {
        &self.tables
    }

    async fn page(&self, after: Option<&str>, limit: usize) -> std::result::Result<Vec<Held>, String> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pool.get().await.map_err(|e| format!("cannot connect: {e}"))?;
        let ms = self.timeout.as_millis().max(1);
        client
            .batch_execute(&format!("SET statement_timeout = {ms}"))
            .await
            .map_err(|e| e.to_string())?;
        let stmt = client.prepare_cached(&self.sql).await.map_err(|e| e.to_string())?;
        let rows = client
            .query(&stmt, &[&after, &limit])
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map(Held::new).map_err(|e| e.to_string()))
            .collect()
    }
}

#[async_trait]
impl StampInventory for PgInventory {
    async fn tenants(&self, after: Option<&str>, limit: usize) -> std::result::Result<Vec<Held>, InventoryError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), self.page(after, limit)).await {
            Ok(Ok(held)) => Ok(held),
            Ok(Err(e)) => Err(InventoryError::new(format!("reading the stamp database: {e}"))),
            Err(_) => Err(InventoryError::new(format!(
                "reading the stamp database took longer than {:?}",
                self.timeout
            ))),
        }
    }
}
