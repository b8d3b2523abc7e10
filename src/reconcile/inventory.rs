//! What a stamp says it holds: [`StampInventory`], its entries and errors, and the inventories
//! the crate ships ([`InMemoryInventory`], [`ReferenceInventory`]).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use crate::migration::reference::ReferenceDataPlane;
use crate::model::StampId;

/// A host's summary of one tenant's copy on a stamp, compared across findings (size, row
/// count, checksum: the host's choice, as text).
///
/// ```
/// use stamps::reconcile::Fingerprint;
/// assert_eq!(Fingerprint::new("rows=12").to_string(), "rows=12");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// A fingerprint.
    pub fn new(text: impl Into<String>) -> Fingerprint {
        Fingerprint(text.into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One tenant a stamp holds data for. The id is the stamp's own text, not yet validated: a
/// stamp may hold ids that are not valid tenant ids, and reconciliation reports them.
///
/// ```
/// use stamps::reconcile::{Fingerprint, Held};
/// let h = Held::new("acme").fingerprint(Fingerprint::new("rows=3"));
/// assert_eq!(h.id, "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Held {
    /// The tenant id as the stamp stores it.
    pub id: String,
    /// The host's fingerprint of the copy, if it computes one.
    pub fingerprint: Option<Fingerprint>,
}

impl Held {
    /// An entry without a fingerprint.
    pub fn new(id: impl Into<String>) -> Held {
        Held {
            id: id.into(),
            fingerprint: None,
        }
    }

    /// Sets the fingerprint.
    pub fn fingerprint(mut self, fingerprint: Fingerprint) -> Held {
        self.fingerprint = Some(fingerprint);
        self
    }
}

/// Why a stamp's inventory could not be read.
///
/// ```
/// use stamps::reconcile::InventoryError;
/// assert!(InventoryError::new("connection refused").to_string().contains("refused"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stamp inventory unreadable: {reason}")]
pub struct InventoryError {
    /// What went wrong.
    pub reason: String,
}

impl InventoryError {
    /// An error.
    pub fn new(reason: impl Into<String>) -> InventoryError {
        InventoryError { reason: reason.into() }
    }
}

/// What one stamp holds, listed by the host: the tenants it has data for, in tenant-id order
/// and paged, so a stamp with a million tenants streams.
///
/// # Contract
/// - [`tenants`](Self::tenants) returns the held ids **strictly after** `after` (all of them
///   when `None`), in ascending byte order of the id text, at most `limit` of them; fewer than
///   `limit` means the listing is complete. Ids are the stamp's own text (they need not be
///   valid tenant ids: those are reported).
/// - A tenant is "held" when the stamp has any of its data (a row, a file, a schema).
/// - It reads; it never changes the stamp. It may be slow; reconciliation bounds each call
///   with its own timeout.
///
/// # Implementing
/// A `SELECT DISTINCT tenant FROM … WHERE tenant > $1 ORDER BY tenant COLLATE "C" LIMIT $2`
/// over the stamp's tenant-scoped tables (byte order: `COLLATE "C"`), or a prefix listing of an
/// object store. [`InMemoryInventory`] is the simplest implementation.
///
/// ```
/// use stamps::reconcile::{Held, InventoryError, StampInventory};
///
/// /// A stamp that holds exactly the tenants in a sorted list.
/// #[derive(Debug)]
/// struct Listed(Vec<String>);
///
/// #[stamps::async_trait]
/// impl StampInventory for Listed {
///     async fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Vec<Held>, InventoryError> {
///         Ok(self.0.iter().filter(|id| after.is_none_or(|a| id.as_str() > a)).take(limit).map(Held::new).collect())
///     }
/// }
/// # let _ = Listed(vec![]);
/// ```
#[async_trait]
pub trait StampInventory: fmt::Debug + Send + Sync + 'static {
    /// The held tenants strictly after `after`, in byte order, at most `limit`.
    async fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Vec<Held>, InventoryError>;
}

#[async_trait]
impl<I: StampInventory + ?Sized> StampInventory for Arc<I> {
    async fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Vec<Held>, InventoryError> {
        (**self).tenants(after, limit).await
    }
}

/// An in-memory inventory for tests and examples: a sorted set of held ids, each with an
/// optional fingerprint. Clones share the set.
///
/// ```
/// use stamps::reconcile::{InMemoryInventory, StampInventory};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), stamps::reconcile::InventoryError> {
/// let inv = InMemoryInventory::new();
/// inv.hold("b", None);
/// inv.hold("a", None);
/// let page = inv.tenants(Some("a"), 10).await?;
/// assert_eq!(page.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["b"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryInventory {
    held: Arc<RwLock<BTreeMap<String, Option<Fingerprint>>>>,
}

impl InMemoryInventory {
    /// An empty inventory.
    pub fn new() -> InMemoryInventory {
        InMemoryInventory::default()
    }

    /// Records that the stamp holds `id`.
    pub fn hold(&self, id: impl Into<String>, fingerprint: Option<Fingerprint>) {
        self.held.write().insert(id.into(), fingerprint);
    }

    /// Records that the stamp no longer holds `id`.
    pub fn drop_tenant(&self, id: &str) {
        self.held.write().remove(id);
    }

    /// How many tenants it holds.
    pub fn len(&self) -> usize {
        self.held.read().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.held.read().is_empty()
    }
}

#[async_trait]
impl StampInventory for InMemoryInventory {
    async fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Vec<Held>, InventoryError> {
        let held = self.held.read();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(held
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(id, fp)| Held {
                id: id.clone(),
                fingerprint: fp.clone(),
            })
            .collect())
    }
}

/// The inventory of one stamp of a [`ReferenceDataPlane`]: the tenants with at least one row
/// there, fingerprinted by their row count.
///
/// ```
/// use stamps::migration::reference::ReferenceDataPlane;
/// use stamps::reconcile::{ReferenceInventory, StampInventory};
/// use stamps::StampId;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), stamps::reconcile::InventoryError> {
/// let plane = ReferenceDataPlane::new([StampId(1)]);
/// let inv = ReferenceInventory::new(plane, StampId(1));
/// assert!(inv.tenants(None, 100).await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReferenceInventory {
    plane: ReferenceDataPlane,
    stamp: StampId,
}

impl ReferenceInventory {
    /// The inventory of `stamp` in `plane`.
    pub fn new(plane: ReferenceDataPlane, stamp: StampId) -> ReferenceInventory {
        ReferenceInventory { plane, stamp }
    }
}

#[async_trait]
impl StampInventory for ReferenceInventory {
    async fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Vec<Held>, InventoryError> {
        Ok(self
            .plane
            .row_counts(self.stamp)
            .into_iter()
            .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
            .take(limit)
            .map(|(id, rows)| Held::new(id.as_str()).fingerprint(Fingerprint::new(format!("rows={rows}"))))
            .collect())
    }
}
