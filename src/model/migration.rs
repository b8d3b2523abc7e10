//! Migration records as the registry stores them.

use std::collections::BTreeMap;
use std::fmt;

use super::{StampId, TenantId};
use crate::time::Timestamp;

/// A migration's identifier, assigned by the registry.
///
/// ```
/// use stamps::MigrationId;
/// assert_eq!(MigrationId(3).to_string(), "migration-3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct MigrationId(pub u64);

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "migration-{}", self.0)
    }
}

/// The states of a tenant migration: the sequence of the "Tenant Migration Process Between
/// Stamps" section of *Deployment Stamps for Availability: Multi-Region Guide* (snapshot,
/// import, dual-write, validate, cut over, soak, clean up) plus the exits. The legal
/// transitions are those of [`can_transition_to`](MigrationState::can_transition_to); every
/// registry refuses to save a record whose state change is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum MigrationState {
    /// Created by a person or tool; nothing done yet.
    Planned,
    /// Taking a snapshot of the tenant on the source.
    Snapshotting,
    /// Importing the snapshot into the destination.
    Importing,
    /// Writes go to both stamps; reads from the source.
    DualWrite,
    /// Comparing both sides.
    Validating,
    /// Writes frozen; the assignment moves to the destination.
    CutOver,
    /// Serving from the destination; the source still receives writes and keeps its data so a
    /// rollback loses nothing.
    Soaking,
    /// Deleting the tenant's data from the source.
    CleaningUp,
    /// Done. Terminal.
    Completed,
    /// Abandoned before cutover. Terminal.
    Cancelled,
    /// Undoing: the tenant returns to (or stays on) the source.
    RollingBack,
    /// Undone. Terminal.
    RolledBack,
    /// Stopped on an error that needs a person. Terminal.
    Failed,
}

impl MigrationState {
    /// Every state.
    pub const ALL: [MigrationState; 13] = [
        MigrationState::Planned,
        MigrationState::Snapshotting,
        MigrationState::Importing,
        MigrationState::DualWrite,
        MigrationState::Validating,
        MigrationState::CutOver,
        MigrationState::Soaking,
        MigrationState::CleaningUp,
        MigrationState::Completed,
        MigrationState::Cancelled,
        MigrationState::RollingBack,
        MigrationState::RolledBack,
        MigrationState::Failed,
    ];

    /// Whether the migration has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationState::Completed | MigrationState::Cancelled | MigrationState::RolledBack | MigrationState::Failed
        )
    }

    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Planned => "planned",
            MigrationState::Snapshotting => "snapshotting",
            MigrationState::Importing => "importing",
            MigrationState::DualWrite => "dual_write",
            MigrationState::Validating => "validating",
            MigrationState::CutOver => "cut_over",
            MigrationState::Soaking => "soaking",
            MigrationState::CleaningUp => "cleaning_up",
            MigrationState::Completed => "completed",
            MigrationState::Cancelled => "cancelled",
            MigrationState::RollingBack => "rolling_back",
            MigrationState::RolledBack => "rolled_back",
            MigrationState::Failed => "failed",
        }
    }

    /// Parses a name written by [`MigrationState::as_str`].
    pub fn parse(s: &str) -> Option<MigrationState> {
        MigrationState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for MigrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A persisted migration. The registry stores it with optimistic concurrency: every save names
/// the `revision` it read, and a save against a newer revision fails with
/// [`Error::Conflict`](crate::Error::Conflict), so two workers can never drive one migration.
///
/// `data` holds the migration engine's and driver's own fields (snapshot ids, validation
/// results, failure details) as text; registries store it verbatim.
///
/// With `serde`, deserialization runs [`MigrationRecord::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "MigrationRecordRaw"))]
#[non_exhaustive]
pub struct MigrationRecord {
    /// Identifier (assigned by the registry on create).
    pub id: MigrationId,
    /// The tenant being moved.
    pub tenant: TenantId,
    /// Where it comes from.
    pub source: StampId,
    /// Where it goes.
    pub destination: StampId,
    /// Current state.
    pub state: MigrationState,
    /// Optimistic-concurrency revision, bumped by the registry on every save.
    pub revision: u64,
    /// Engine and driver fields.
    pub data: BTreeMap<String, String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last saved.
    pub updated_at: Timestamp,
}

/// [`MigrationRecord`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct MigrationRecordRaw {
    id: MigrationId,
    tenant: TenantId,
    source: StampId,
    destination: StampId,
    state: MigrationState,
    revision: u64,
    data: BTreeMap<String, String>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[cfg(feature = "serde")]
impl TryFrom<MigrationRecordRaw> for MigrationRecord {
    type Error = super::error::Error;

    fn try_from(r: MigrationRecordRaw) -> Result<MigrationRecord, super::error::Error> {
        let rec = MigrationRecord {
            id: r.id,
            tenant: r.tenant,
            source: r.source,
            destination: r.destination,
            state: r.state,
            revision: r.revision,
            data: r.data,
            created_at: r.created_at,
            updated_at: r.updated_at,
        };
        rec.validate()?;
        Ok(rec)
    }
}

impl MigrationRecord {
    /// Checks what every record must satisfy, in any state: the tenant id is valid, source
    /// and destination differ, and `data` has no NUL character. Registries call it on
    /// `create_migration` and `save_migration`; deserialization calls it too.
    ///
    /// ```
    /// use stamps::{MigrationRecord, StampId, TenantId};
    /// let mut rec = MigrationRecord::planned(TenantId::new("acme")?, StampId(1), StampId(2));
    /// assert!(rec.validate().is_ok());
    /// rec.data.insert("note".into(), "a\0b".into());
    /// assert!(rec.validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), super::error::Error> {
        TenantId::validate(self.tenant.as_str())?;
        if self.source == self.destination {
            return Err(super::error::InvalidInput::new("destination", "must differ from the source stamp").into());
        }
        super::names::validate_map("data", &self.data)?;
        Ok(())
    }

    /// A new record in `Planned` to hand to
    /// [`Registry::create_migration`](crate::Registry::create_migration) (id, revision and
    /// timestamps are set by the registry).
    pub fn planned(tenant: TenantId, source: StampId, destination: StampId) -> MigrationRecord {
        MigrationRecord {
            id: MigrationId(0),
            tenant,
            source,
            destination,
            state: MigrationState::Planned,
            revision: 0,
            data: BTreeMap::new(),
            created_at: Timestamp::ZERO,
            updated_at: Timestamp::ZERO,
        }
    }

    /// Checks a record handed to
    /// [`Registry::create_migration`](crate::Registry::create_migration): it is `Planned` and
    /// moves between two different stamps. Every registry calls this first.
    ///
    /// ```
    /// use stamps::{MigrationRecord, StampId, TenantId};
    /// let t = TenantId::new("acme")?;
    /// assert!(MigrationRecord::planned(t.clone(), StampId(1), StampId(2)).check_new().is_ok());
    /// assert!(MigrationRecord::planned(t, StampId(1), StampId(1)).check_new().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn check_new(&self) -> Result<(), super::error::Error> {
        self.validate()?;
        if self.state != MigrationState::Planned {
            return Err(
                super::error::InvalidInput::new("state", "a new migration must be in the planned state").into(),
            );
        }
        if self.source == self.destination {
            return Err(super::error::InvalidInput::new("destination", "must differ from the source stamp").into());
        }
        Ok(())
    }
}
