//! Bulk import: [`Registry::assign_many`]'s rows, outcomes and report, the checks every
//! implementation runs before it writes, and the one-by-one body of the trait's default.

use std::collections::HashSet;

use super::Registry;
use crate::error::{Error, InvalidInput, Result, Subject};
use crate::model::{directive, Assignment, StampId, TenantId, TenantSpec, Version};

/// The most rows one [`Registry::assign_many`] call takes: a larger slice is
/// [`Error::InvalidInput`] (field `rows`). Import more by calling it once per slice of at most
/// this many rows (the PostgreSQL registry writes each call in one transaction).
pub const MAX_IMPORT_ROWS: usize = 100_000;

/// One row of a bulk import: a tenant and the stamp it goes to.
///
/// ```
/// use stamps::{ImportRow, StampId, TenantId, TenantSpec};
/// let row = ImportRow::new(TenantSpec::new(TenantId::new("acme")?), StampId(3));
/// assert_eq!(row.stamp, StampId(3));
/// # Ok::<(), stamps::TenantIdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportRow {
    /// The tenant, as [`Registry::assign`] takes it.
    pub tenant: TenantSpec,
    /// The stamp that serves it.
    pub stamp: StampId,
}

impl ImportRow {
    /// A row assigning `tenant` to `stamp`.
    pub fn new(tenant: TenantSpec, stamp: StampId) -> ImportRow {
        ImportRow { tenant, stamp }
    }
}

/// What [`Registry::assign_many`] did with one row.
///
/// ```
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// let rows = [ImportRow::new(TenantSpec::new(TenantId::new("a")?), StampId(1))];
/// let first = registry.assign_many(&rows).await?;
/// assert!(matches!(first.outcomes()[0], Imported::Assigned(_)));
/// // A retry of the same rows changes nothing.
/// let retry = registry.assign_many(&rows).await?;
/// assert!(matches!(retry.outcomes()[0], Imported::Unchanged(_)));
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Imported {
    /// Assigned by this call, with its own change and history entry.
    Assigned(Assignment),
    /// Already assigned to this stamp with this spec (a retried import): left as it was.
    Unchanged(Assignment),
    /// Refused with the error [`Registry::assign`] gives for it (or
    /// [`Error::InvalidInput`] for a tenant named twice in one call); nothing was written for
    /// this row.
    Refused(Error),
}

impl Imported {
    /// The assignment, unless the row was refused.
    pub fn assignment(&self) -> Option<&Assignment> {
        match self {
            Imported::Assigned(a) | Imported::Unchanged(a) => Some(a),
            Imported::Refused(_) => None,
        }
    }

    /// The error, if the row was refused.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Imported::Refused(e) => Some(e),
            _ => None,
        }
    }
}

/// What [`Registry::assign_many`] did: one [`Imported`] per row, in the order of the rows.
///
/// ```
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us")?,
///     Capacity::new([(Resource::Tenants, 2.0)], 0.0)?)?).await?;
/// let rows: Vec<ImportRow> = ["a", "b", "c"].iter()
///     .map(|t| Ok(ImportRow::new(TenantSpec::new(TenantId::new(*t)?), StampId(1))))
///     .collect::<stamps::Result<_>>()?;
/// let report = registry.assign_many(&rows).await?;
/// assert_eq!((report.assigned(), report.unchanged()), (2, 0));
/// let (i, err) = report.refused().next().expect("the third row does not fit");
/// assert_eq!(i, 2);
/// assert!(matches!(err, Error::CapacityExceeded { .. }));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ImportReport {
    outcomes: Vec<Imported>,
    head: Version,
}

impl ImportReport {
    /// A report (for registry implementations): `head` is the feed's head after the call's
    /// writes (or when nothing was written, the head the call saw, which may be zero).
    pub fn new(outcomes: Vec<Imported>, head: Version) -> ImportReport {
        ImportReport { outcomes, head }
    }

    /// One outcome per row, in row order.
    pub fn outcomes(&self) -> &[Imported] {
        &self.outcomes
    }

    /// The outcomes, by value.
    pub fn into_outcomes(self) -> Vec<Imported> {
        self.outcomes
    }

    /// The feed's head after the call (a router that has applied it has every assignment).
    pub fn head(&self) -> Version {
        self.head
    }

    /// Rows this call assigned.
    pub fn assigned(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Imported::Assigned(_)))
            .count()
    }

    /// Rows already in place (a retry).
    pub fn unchanged(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Imported::Unchanged(_)))
            .count()
    }

    /// Refused rows: their index in the call's rows and the error.
    pub fn refused(&self) -> impl Iterator<Item = (usize, &Error)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.error().map(|e| (i, e)))
    }
}

/// Refuses a call of more than [`MAX_IMPORT_ROWS`] rows.
pub(crate) fn check_size(rows: &[ImportRow]) -> Result<()> {
    if rows.len() > MAX_IMPORT_ROWS {
        return Err(InvalidInput::new(
            "rows",
            "has more rows than MAX_IMPORT_ROWS (100000); import in slices of at most that many",
        )
        .into());
    }
    Ok(())
}

/// The row checks every implementation runs first: a tenant an earlier row of the call
/// already names (whatever became of that row), or a spec that breaks its own rules, is
/// refused; `None` for a row to admit.
pub(crate) fn screen(rows: &[ImportRow]) -> Vec<Option<Error>> {
    // The set lives for one call over the caller's own rows: the faster hash is safe here.
    let mut seen: HashSet<&TenantId, foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(rows.len(), foldhash::fast::RandomState::default());
    rows.iter()
        .map(|r| {
            // Named before it is validated: a first row refused as invalid still claims the
            // tenant, so no later row of the call assigns it.
            if !seen.insert(&r.tenant.id) {
                return Some(InvalidInput::new("rows", "names a tenant an earlier row of the call names").into());
            }
            r.tenant.validate().err()
        })
        .collect()
}

/// Whether `current` is what importing `row` would have written (a retried import): the same
/// serving stamp and the same spec, the recorded pin included.
pub(crate) fn already_imported(current: &Assignment, row: &ImportRow) -> bool {
    current.stamp == row.stamp
        && directive::spec_with_pin(&row.tenant, current.spec.pin).is_ok_and(|s| s == current.spec)
}

/// The outcome for a row whose tenant has an assignment.
pub(crate) fn existing(current: &Assignment, row: &ImportRow) -> Imported {
    if already_imported(current, row) {
        Imported::Unchanged(current.clone())
    } else {
        Imported::Refused(Error::AlreadyAssigned {
            tenant: row.tenant.id.clone(),
            stamp: current.stamp,
        })
    }
}

/// The default [`Registry::assign_many`]: one [`Registry::assign`] per row. Stops at the first
/// error that is not about its row ([`Error::Unavailable`], [`Error::Backend`], ...), leaving
/// the rows before it written: a retry of the whole call is safe. The report's head is the
/// feed's head read after the last row, so it covers the rows found in place as well as those
/// written (an epoch need not be a version of the feed); if that read fails, the call returns
/// its error with every row written, and a retry reports them `Unchanged`.
pub(crate) async fn one_by_one<R: Registry + ?Sized>(registry: &R, rows: &[ImportRow]) -> Result<ImportReport> {
    check_size(rows)?;
    let screened = screen(rows);
    let mut outcomes = Vec::with_capacity(rows.len());
    for (row, refused) in rows.iter().zip(screened) {
        if let Some(e) = refused {
            outcomes.push(Imported::Refused(e));
            continue;
        }
        let outcome = match registry.assign(&row.tenant, row.stamp).await {
            Ok(a) => Imported::Assigned(a),
            Err(Error::AlreadyAssigned { tenant, stamp }) => match registry.assignment(&tenant).await? {
                Some(current) => existing(&current, row),
                None => Imported::Refused(Error::AlreadyAssigned { tenant, stamp }),
            },
            Err(e) if about_the_row(&e) => Imported::Refused(e),
            Err(e) => return Err(e),
        };
        outcomes.push(outcome);
    }
    Ok(ImportReport::new(outcomes, feed_head(registry).await?))
}

/// The feed's head as `registry` answers it now: asked past any version a feed can hold,
/// which every registry answers with no change and its head (the conformance case
/// `change_feed_past_any_version_is_empty`), truncated feed or not.
async fn feed_head<R: Registry + ?Sized>(registry: &R) -> Result<Version> {
    Ok(registry.changes_since(Version(u64::MAX), 0).await?.head)
}

/// Whether an `assign` error is about its row (refuse the row) rather than the registry (stop).
fn about_the_row(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound(Subject::Stamp(_))
            | Error::NotAccepting { .. }
            | Error::AlreadyAssigned { .. }
            | Error::CapacityExceeded { .. }
            | Error::ConstraintViolated(_)
            | Error::InvalidInput(_)
            | Error::InvalidTenantId(_)
    )
}
