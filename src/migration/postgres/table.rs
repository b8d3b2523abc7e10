//! [`MovedTable`]: one tenant-scoped table the mover moves, and how its row version is kept.

use super::identifier;
use super::table_name;
use crate::error::{InvalidInput, Result};

/// How a moved table's row version is maintained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Versioning {
    /// The host's writes set it (it grows with every write of a row, and a dual-write
    /// carries the same version to both stamps).
    Host,
    /// The mover's trigger sets it on every write that is not the mover's own:
    /// `greatest(old + 1, clock_timestamp() in µs)`.
    Mover,
}

/// One tenant-scoped table the mover moves: its name (`table` or `schema.table`), the column
/// holding the tenant id, the columns of a unique key (usually the primary key; they may
/// include the tenant column) and a `bigint` row-version column.
///
/// The version orders writes of a row: a copy never replaces a row with an older version.
/// Either the host's writes maintain it (it must grow with every write of a row, and a
/// dual-write must carry the same version to both stamps), or, with
/// [`versioned_by_mover`](Self::versioned_by_mover), the mover's trigger sets it to the
/// database clock in microseconds (at least the old version plus one) on every write.
///
/// ```
/// use stamps::migration::postgres::MovedTable;
/// let t = MovedTable::new("app.orders", "tenant_id", &["tenant_id", "id"], "row_version")?;
/// assert_eq!(t.table(), "app.orders");
/// assert!(MovedTable::new("orders", "tenant_id", &[], "v").is_err()); // no key
/// assert!(MovedTable::new("orders", "tenant_id", &["id"], "id").is_err()); // version in the key
/// assert!(MovedTable::new("orders; drop table x", "t", &["id"], "v").is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedTable {
    pub(super) table: String,
    pub(super) tenant_column: String,
    pub(super) key: Vec<String>,
    pub(super) version: String,
    pub(super) versioning: Versioning,
}

impl MovedTable {
    /// A table. Refused with [`Error::InvalidInput`](crate::Error::InvalidInput) unless every name is a plain identifier
    /// (lowercase letters, digits, `_`; `schema.table` for the table), the key names at least
    /// one column, none twice, and the version column is not part of the key.
    ///
    /// ```
    /// let t = stamps::migration::postgres::MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?;
    /// assert_eq!(t.key(), ["tenant", "k"]);
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn new(table: &str, tenant_column: &str, key: &[&str], version_column: &str) -> Result<MovedTable> {
        if !table_name(table) {
            return Err(InvalidInput::new(
                "table",
                "must be `table` or `schema.table` of lowercase letters, digits and _",
            )
            .into());
        }
        for (what, name) in [("tenant column", tenant_column), ("version column", version_column)] {
            if !identifier(name) {
                return Err(InvalidInput::new(what, "must be lowercase letters, digits and _").into());
            }
        }
        if key.is_empty() || key.iter().any(|k| !identifier(k)) {
            return Err(InvalidInput::new(
                "key",
                "must name one or more columns of lowercase letters, digits and _",
            )
            .into());
        }
        if key.iter().enumerate().any(|(i, k)| key[..i].contains(k)) {
            return Err(InvalidInput::new("key", "names a column twice").into());
        }
        if key.contains(&version_column) {
            return Err(InvalidInput::new("version column", "cannot be part of the key").into());
        }
        Ok(MovedTable {
            table: table.to_string(),
            tenant_column: tenant_column.to_string(),
            key: key.iter().map(|k| k.to_string()).collect(),
            version: version_column.to_string(),
            versioning: Versioning::Host,
        })
    }

    /// The mover's trigger maintains the version column (see the type's documentation).
    ///
    /// ```
    /// let t = stamps::migration::postgres::MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?
    ///     .versioned_by_mover();
    /// assert!(t.is_versioned_by_mover());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn versioned_by_mover(mut self) -> Self {
        self.versioning = Versioning::Mover;
        self
    }

    /// Whether the mover's trigger maintains the version column.
    ///
    /// ```
    /// let t = stamps::migration::postgres::MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?;
    /// assert!(!t.is_versioned_by_mover());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn is_versioned_by_mover(&self) -> bool {
        self.versioning == Versioning::Mover
    }

    /// The table's name as given.
    ///
    /// ```
    /// let t = stamps::migration::postgres::MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?;
    /// assert_eq!(t.table(), "kv");
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The tenant column.
    ///
    /// ```
    /// let t = stamps::migration::postgres::MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?;
    /// assert_eq!(t.tenant_column(), "tenant");
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn tenant_column(&self) -> &str {
        &self.tenant_column
    }

    /// The unique key's columns.
    ///
    /// ```
    /// let t = stamps::migration::postgres::MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?;
    /// assert_eq!(t.key().len(), 2);
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn key(&self) -> &[String] {
        &self.key
    }

    /// The row-version column.
    ///
    /// ```
    /// let t = stamps::migration::postgres::MovedTable::new("kv", "tenant", &["tenant", "k"], "v")?;
    /// assert_eq!(t.version_column(), "v");
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn version_column(&self) -> &str {
        &self.version
    }
}
