//! The change feed.

use super::{Assignment, Stamp, TenantId, Version};
use crate::time::Timestamp;

/// One entry of the registry's change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Change {
    /// Position in the feed; strictly increasing, without gaps in a feed's retained range.
    pub version: Version,
    /// When the write happened.
    pub at: Timestamp,
    /// What changed.
    pub kind: ChangeKind,
}

impl Change {
    /// Assembles a change (for registry implementations).
    pub fn new(version: Version, at: Timestamp, kind: ChangeKind) -> Change {
        Change { version, at, kind }
    }

    /// The tenant this change is about, if it is an assignment change.
    pub fn tenant(&self) -> Option<&TenantId> {
        match &self.kind {
            ChangeKind::Assignment { tenant, .. } => Some(tenant),
            ChangeKind::Stamp(_) => None,
        }
    }
}

/// What a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ChangeKind {
    /// A tenant's assignment was created, changed or removed (`assignment: None`).
    Assignment {
        /// The tenant.
        tenant: TenantId,
        /// The assignment after the write; `None` when the tenant was unassigned.
        assignment: Option<Box<Assignment>>,
    },
    /// A stamp was registered, or its spec or state changed.
    Stamp(Box<Stamp>),
}

/// A page of the change feed.
///
/// ```
/// # use stamps::*;
/// # async fn demo() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// let mut cursor = Version::ZERO;
/// loop {
///     let batch = registry.changes_since(cursor, 100).await?;
///     for change in &batch.changes { /* apply */ }
///     cursor = batch.next_cursor(cursor);
///     if !batch.has_more(cursor) { break; }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChangeBatch {
    /// Changes after the requested version, in version order.
    pub changes: Vec<Change>,
    /// The newest version the registry had when it answered.
    pub head: Version,
}

impl ChangeBatch {
    /// Assembles a batch (for registry implementations).
    pub fn new(changes: Vec<Change>, head: Version) -> ChangeBatch {
        ChangeBatch { changes, head }
    }

    /// The cursor to ask from next: the last change's version, or `previous` when empty.
    pub fn next_cursor(&self, previous: Version) -> Version {
        self.changes.last().map_or(previous, |c| c.version)
    }

    /// Whether the registry had changes past `cursor` when it answered.
    pub fn has_more(&self, cursor: Version) -> bool {
        self.head > cursor
    }
}
