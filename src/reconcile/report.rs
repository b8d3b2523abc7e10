//! What [`reconcile`](super::reconcile) found: [`ReconcileReport`], its [`Finding`]s and the
//! [`Repair`] each proposes.

use std::fmt;

use super::inventory::Fingerprint;
use crate::model::{MigrationId, MigrationState, StampId};

/// What is wrong with one tenant's copy on one stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// The stamp holds data for a tenant the registry does not place anywhere (offboarded, or
    /// never assigned): a privacy and cost problem.
    Orphan,
    /// The registry routes the tenant to this stamp (serving, or as a dual-write shadow outside
    /// a migration) but the stamp holds nothing for it: an outage waiting to be noticed.
    Missing,
    /// A copy left behind by a migration that ended (completed, cancelled, rolled back or
    /// failed) and never cleaned up.
    LeftoverShadow {
        /// The migration that put or left the copy there.
        migration: MigrationId,
        /// How it ended.
        state: MigrationState,
    },
    /// A copy on a stamp the registry does not route the tenant to, with no migration of the
    /// tenant ever involving that stamp (a restore from backup, a manual copy, a driver bug).
    StrayCopy,
    /// The stamp holds data under an id that is not a valid tenant id.
    InvalidId,
}

impl FindingKind {
    /// A short name: `orphan`, `missing`, `leftover_shadow`, `stray_copy`, `invalid_id`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FindingKind::Orphan => "orphan",
            FindingKind::Missing => "missing",
            FindingKind::LeftoverShadow { .. } => "leftover_shadow",
            FindingKind::StrayCopy => "stray_copy",
            FindingKind::InvalidId => "invalid_id",
        }
    }
}

/// The repair a finding proposes. Nothing is repaired by [`reconcile`](super::reconcile): a
/// person reads the report and decides.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Repair {
    /// Raise the stamp's fence for the tenant (giving it up), then delete the copy through the
    /// driver's cleanup. Fence first, so no writer on an old route recreates rows.
    DeleteCopy {
        /// Where the copy is.
        stamp: StampId,
    },
    /// Re-import the tenant onto `to` from the copy on `from` (a migration's snapshot and
    /// import between them), after checking that copy is the latest.
    RestoreFrom {
        /// The stamp holding a copy.
        from: StampId,
        /// The stamp that should hold it.
        to: StampId,
    },
    /// Nothing holds a copy the registry can use: restore `to` from a backup.
    RestoreFromBackup {
        /// The stamp that should hold it.
        to: StampId,
    },
    /// Resolve the migration first (`Migration::resolve_failed` for a failed one), which
    /// fences and deletes the copy.
    ResolveMigration {
        /// The migration.
        migration: MigrationId,
    },
    /// Find out who wrote data under that id, then delete it by hand.
    Investigate,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::DeleteCopy { stamp } => write!(f, "fence the tenant off {stamp}, then delete its copy there"),
            Repair::RestoreFrom { from, to } => write!(f, "re-import onto {to} from the copy on {from}"),
            Repair::RestoreFromBackup { to } => write!(f, "restore {to} from a backup"),
            Repair::ResolveMigration { migration } => write!(f, "resolve {migration} (fences and deletes the copy)"),
            Repair::Investigate => f.write_str("find who wrote it, then delete it by hand"),
        }
    }
}

/// One finding: a tenant, a stamp, what is wrong and what to do.
///
/// ```
/// use stamps::reconcile::{Finding, FindingKind, Repair};
/// use stamps::StampId;
/// let f = Finding::new("acme", StampId(3), FindingKind::Orphan, Repair::DeleteCopy { stamp: StampId(3) });
/// assert_eq!(f.to_string(), "orphan: acme on stamp-003 (fence the tenant off stamp-003, then delete its copy there)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The tenant id as the stamp (or the registry) has it.
    pub tenant: String,
    /// The stamp the finding is about.
    pub stamp: StampId,
    /// What is wrong.
    pub kind: FindingKind,
    /// What to do about it.
    pub repair: Repair,
    /// The host's fingerprint of the copy, if the stamp gave one.
    pub fingerprint: Option<Fingerprint>,
}

impl Finding {
    /// A finding without a fingerprint.
    pub fn new(tenant: impl Into<String>, stamp: StampId, kind: FindingKind, repair: Repair) -> Finding {
        Finding {
            tenant: tenant.into(),
            stamp,
            kind,
            repair,
            fingerprint: None,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} on {} ({})",
            self.kind.as_str(),
            self.tenant,
            self.stamp,
            self.repair
        )?;
        if let FindingKind::LeftoverShadow { migration, state } = &self.kind {
            write!(f, " [{migration}, {state}]")?;
        }
        if let Some(fp) = &self.fingerprint {
            write!(f, " [{fp}]")?;
        }
        Ok(())
    }
}

/// A stamp whose inventory could not be read (an error, a timeout, a listing out of order).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unreadable {
    /// The stamp.
    pub stamp: StampId,
    /// Why.
    pub reason: String,
    /// The last tenant id read from it before it failed (findings up to there are sound).
    pub read_up_to: Option<String>,
}

/// What [`reconcile`](super::reconcile) found, in tenant order.
///
/// A stamp that could not be read makes the report partial, never the run a failure: its
/// tenants are not judged missing, and [`is_complete`](Self::is_complete) is false.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Every finding, ordered by tenant id, then stamp.
    pub findings: Vec<Finding>,
    /// Stamps whose inventory failed part way or entirely.
    pub unreadable: Vec<Unreadable>,
    /// Registered stamps no inventory was given for (not checked).
    pub not_inventoried: Vec<StampId>,
    /// Assignments read from the registry.
    pub assignments: u64,
    /// Tenant copies listed by the stamps.
    pub copies: u64,
}

impl ReconcileReport {
    /// No findings, and every stamp was read.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.is_complete()
    }

    /// Every registered stamp was inventoried and read to the end.
    pub fn is_complete(&self) -> bool {
        self.unreadable.is_empty() && self.not_inventoried.is_empty()
    }

    /// The findings of one kind (by [`FindingKind::as_str`]).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.kind.as_str() == kind)
    }
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} assignments, {} copies: {} findings{}",
            self.assignments,
            self.copies,
            self.findings.len(),
            if self.is_complete() { "" } else { " (partial)" }
        )?;
        for finding in &self.findings {
            writeln!(f, "  {finding}")?;
        }
        for u in &self.unreadable {
            writeln!(
                f,
                "  unreadable: {} ({}; read up to {})",
                u.stamp,
                u.reason,
                u.read_up_to.as_deref().unwrap_or("nothing")
            )?;
        }
        for s in &self.not_inventoried {
            writeln!(f, "  not inventoried: {s}")?;
        }
        Ok(())
    }
}
