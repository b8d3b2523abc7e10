//! The change feed.

use std::sync::Arc;

use super::error::{Error, InvalidInput};
use super::{Assignment, Pin, RouteOverride, Stamp, StampId, TenantId, Version};
use crate::time::Timestamp;

/// One entry of the registry's change feed.
///
/// With `serde`, deserialization runs [`Change::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "ChangeRaw"))]
#[non_exhaustive]
pub struct Change {
    /// Position in the feed; strictly increasing, without gaps in a feed's retained range.
    pub version: Version,
    /// When the write happened.
    pub at: Timestamp,
    /// What changed.
    pub kind: ChangeKind,
}

/// [`Change`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct ChangeRaw {
    version: Version,
    at: Timestamp,
    kind: ChangeKind,
}

#[cfg(feature = "serde")]
impl TryFrom<ChangeRaw> for Change {
    type Error = Error;

    fn try_from(r: ChangeRaw) -> Result<Change, Error> {
        let c = Change::new(r.version, r.at, r.kind);
        c.validate()?;
        Ok(c)
    }
}

impl Change {
    /// Checks the change: an assignment change names the tenant of its assignment, which is
    /// valid ([`Assignment::validate`]); a stamp change carries a valid spec. Deserialization
    /// calls it.
    ///
    /// ```
    /// use stamps::*;
    /// let a = Assignment::new(TenantSpec::new(TenantId::new("a")?), StampId(1), Epoch(1),
    ///     AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
    /// let kind = |t: &str| ChangeKind::Assignment { tenant: TenantId::new(t).unwrap(), assignment: Some(std::sync::Arc::new(a.clone())) };
    /// assert!(Change::new(Version(1), Timestamp::ZERO, kind("a")).validate().is_ok());
    /// assert!(Change::new(Version(1), Timestamp::ZERO, kind("b")).validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        match &self.kind {
            ChangeKind::Assignment { tenant, assignment } => {
                if let Some(a) = assignment {
                    if a.tenant() != tenant {
                        return Err(InvalidInput::new("tenant", "differs from the assignment's tenant").into());
                    }
                    a.validate()?;
                }
                Ok(())
            }
            ChangeKind::Stamp(s) => s.validate(),
            ChangeKind::Pin(p) => p.decision.validate(),
            ChangeKind::RouteOverride(o) => o.validate(),
            ChangeKind::Repaired { .. } => Ok(()),
        }
    }

    /// Assembles a change (for registry implementations).
    pub fn new(version: Version, at: Timestamp, kind: ChangeKind) -> Change {
        Change { version, at, kind }
    }

    /// The tenant this change is about, if it is about one (an assignment, a pin, a repair).
    pub fn tenant(&self) -> Option<&TenantId> {
        match &self.kind {
            ChangeKind::Assignment { tenant, .. } | ChangeKind::Repaired { tenant, .. } => Some(tenant),
            ChangeKind::Pin(p) => Some(&p.tenant),
            ChangeKind::Stamp(_) | ChangeKind::RouteOverride(_) => None,
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
        /// The assignment after the write; `None` when the tenant was unassigned. Shared: a
        /// registry may hand out the value it stores, without a copy per change.
        assignment: Option<Arc<Assignment>>,
    },
    /// A stamp was registered, or its spec or state changed.
    Stamp(Box<Stamp>),
    /// A tenant's pin was set or cleared ([`Registry::set_pin`](crate::Registry::set_pin)).
    /// An assigned tenant's assignment now carries the pin in its spec (with its epoch
    /// unchanged: a pin moves no data).
    Pin(Box<Pin>),
    /// A stamp's routing override was set or cleared
    /// ([`Registry::set_route_override`](crate::Registry::set_route_override)); routers
    /// apply it.
    RouteOverride(Box<RouteOverride>),
    /// An operator recorded a repair of the tenant's copy on `stamp`
    /// ([`Registry::record_repair`](crate::Registry::record_repair)); nothing to route
    /// differently, the history entry says what was done.
    Repaired {
        /// The tenant.
        tenant: TenantId,
        /// The stamp whose copy was repaired.
        stamp: StampId,
    },
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
///
/// With `serde`, deserialization runs [`ChangeBatch::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "ChangeBatchRaw"))]
#[non_exhaustive]
pub struct ChangeBatch {
    /// Changes after the requested version, in version order.
    pub changes: Vec<Change>,
    /// The newest version the registry had when it answered.
    pub head: Version,
}

/// [`ChangeBatch`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct ChangeBatchRaw {
    changes: Vec<Change>,
    head: Version,
}

#[cfg(feature = "serde")]
impl TryFrom<ChangeBatchRaw> for ChangeBatch {
    type Error = Error;

    fn try_from(r: ChangeBatchRaw) -> Result<ChangeBatch, Error> {
        let b = ChangeBatch::new(r.changes, r.head);
        b.validate()?;
        Ok(b)
    }
}

impl ChangeBatch {
    /// Checks the batch as a feed page: versions strictly increase, none is past `head`, and
    /// every change is valid ([`Change::validate`]). Deserialization calls it.
    ///
    /// ```
    /// use stamps::{ChangeBatch, Version};
    /// assert!(ChangeBatch::new(Vec::new(), Version(3)).validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let mut previous: Option<Version> = None;
        for c in &self.changes {
            if previous.is_some_and(|p| c.version <= p) {
                return Err(InvalidInput::new("changes", "versions must strictly increase").into());
            }
            if c.version > self.head {
                return Err(InvalidInput::new("changes", "a change is newer than the head").into());
            }
            c.validate()?;
            previous = Some(c.version);
        }
        Ok(())
    }

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
