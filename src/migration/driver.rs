//! The host's data-plane hooks: [`MigrationDriver`], its error and its validation report (the
//! soak check is in `soak`).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Epoch, MigrationId, MigrationState, StampId, TenantId};

/// What a driver call is about: the migration, the tenant, both stamps, the state being worked
/// on, the attempt number (1 for the first try of the current state, counted across
/// crashes and workers because it is persisted) and the lease generation, the fencing token
/// of the call (see [`MigrationDriver`]'s contract).
///
/// ```
/// use stamps::migration::MigrationContext;
/// use stamps::{MigrationId, MigrationState, StampId, TenantId};
/// let ctx = MigrationContext::new(MigrationId(1), TenantId::new("acme")?, StampId(1), StampId(2),
///     MigrationState::Importing, 1)
///     .generation(7);
/// assert_eq!(ctx.destination, StampId(2));
/// assert_eq!(ctx.generation, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationContext {
    /// The migration.
    pub id: MigrationId,
    /// The tenant being moved.
    pub tenant: TenantId,
    /// Where its data comes from.
    pub source: StampId,
    /// Where its data goes.
    pub destination: StampId,
    /// The state whose work is being done.
    pub state: MigrationState,
    /// Attempt number of this state's work, from 1.
    pub attempt: u32,
    /// The lease generation of the worker making the call: it grows every time a worker
    /// claims the migration's lease (it is persisted in the record, so a worker that takes
    /// over always has a greater one). A driver refuses effects carrying a generation older
    /// than the newest it has seen for the migration (see [`MigrationDriver`]'s contract).
    /// 0 in contexts made by hand without [`generation`](Self::generation).
    pub generation: u64,
}

impl MigrationContext {
    /// Assembles a context (the engine does this; drivers' own tests may too).
    pub fn new(
        id: MigrationId,
        tenant: TenantId,
        source: StampId,
        destination: StampId,
        state: MigrationState,
        attempt: u32,
    ) -> Self {
        MigrationContext {
            id,
            tenant,
            source,
            destination,
            state,
            attempt,
            generation: 0,
        }
    }

    /// Sets the lease generation (the engine sets it on every call it makes).
    pub fn generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }
}

/// A snapshot taken by [`MigrationDriver::snapshot`]: an id meaningful to the driver (a backup
/// name, an LSN, a file path) and the number of rows it holds. The engine persists it in the
/// migration record and hands it back to [`MigrationDriver::import`] and
/// [`MigrationDriver::catch_up`], after a crash too.
///
/// ```
/// use stamps::migration::SnapshotInfo;
/// let s = SnapshotInfo::new("snap-7@lsn:0/16B3748", 1_200);
/// assert_eq!(s.rows, 1_200);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The driver's name for the snapshot (stored as text; no newlines needed or checked).
    pub id: String,
    /// Rows in the snapshot (for the operator's eyes).
    pub rows: u64,
}

impl SnapshotInfo {
    /// A snapshot description.
    pub fn new(id: impl Into<String>, rows: u64) -> Self {
        SnapshotInfo { id: id.into(), rows }
    }
}

/// Whether retrying a failed driver call may help.
///
/// ```
/// use stamps::migration::{DriverError, DriverErrorKind};
/// assert_eq!(DriverError::permanent("disk full").kind(), DriverErrorKind::Permanent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriverErrorKind {
    /// Transient (timeout, connection reset, lock contention): the engine retries with backoff,
    /// up to the configured number of attempts.
    Retryable,
    /// Will not succeed by retrying (schema mismatch, out of disk, permission denied): the
    /// engine rolls the migration back (or, in `CleaningUp` and `RollingBack`, stops in
    /// `Failed` for a person).
    Permanent,
}

/// A failed [`MigrationDriver`] call.
///
/// ```
/// use stamps::migration::DriverError;
/// let e = DriverError::retryable("connection reset by the destination");
/// assert!(e.is_retryable());
/// let p = DriverError::permanent("destination schema is v41, source is v42");
/// assert!(!p.is_retryable());
/// assert_eq!(p.to_string(), "permanent driver error: destination schema is v41, source is v42");
/// ```
#[derive(Debug, Clone)]
pub struct DriverError {
    kind: DriverErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl DriverError {
    /// A transient failure; the call may be retried.
    pub fn retryable(message: impl Into<String>) -> Self {
        DriverError {
            kind: DriverErrorKind::Retryable,
            message: message.into(),
            source: None,
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        DriverError {
            kind: DriverErrorKind::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Retryable or permanent.
    pub fn kind(&self) -> DriverErrorKind {
        self.kind
    }

    /// Whether retrying may help.
    pub fn is_retryable(&self) -> bool {
        self.kind == DriverErrorKind::Retryable
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DriverErrorKind::Retryable => "retryable",
            DriverErrorKind::Permanent => "permanent",
        };
        write!(f, "{kind} driver error: {}", self.message)
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Row count and checksum of one table (or key space) on one side.
///
/// ```
/// use stamps::migration::SideSummary;
/// assert_eq!(SideSummary::new(10, 0xabc), SideSummary { rows: 10, checksum: 0xabc });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SideSummary {
    /// Rows.
    pub rows: u64,
    /// Checksum over the rows (the driver's choice of function, the same on both sides).
    pub checksum: u64,
}

impl SideSummary {
    /// A summary.
    pub const fn new(rows: u64, checksum: u64) -> Self {
        SideSummary { rows, checksum }
    }
}

/// One table compared on both stamps.
///
/// ```
/// use stamps::migration::{SideSummary, TableCheck};
/// let t = TableCheck::new("orders", SideSummary::new(3, 7), SideSummary::new(3, 7));
/// assert!(t.matches());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableCheck {
    /// Table (or key space) name.
    pub table: String,
    /// On the source.
    pub source: SideSummary,
    /// On the destination.
    pub destination: SideSummary,
    /// A few keys that differ, if the driver found them (for the operator).
    pub sample_mismatches: Vec<String>,
}

impl TableCheck {
    /// A comparison without mismatch samples.
    pub fn new(table: impl Into<String>, source: SideSummary, destination: SideSummary) -> Self {
        TableCheck {
            table: table.into(),
            source,
            destination,
            sample_mismatches: Vec::new(),
        }
    }

    /// Adds sample keys that differ.
    pub fn mismatches(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.sample_mismatches.extend(keys);
        self
    }

    /// Whether both sides agree (same rows, same checksum, no mismatch reported).
    pub fn matches(&self) -> bool {
        self.source == self.destination && self.sample_mismatches.is_empty()
    }
}

/// What [`MigrationDriver::validate`] found: row counts and checksums of both sides, per table.
/// The engine refuses cutover unless [`ValidationReport::passed`].
///
/// ```
/// use stamps::migration::{SideSummary, TableCheck, ValidationReport};
/// let ok = ValidationReport::new(vec![TableCheck::new("kv", SideSummary::new(2, 9), SideSummary::new(2, 9))]);
/// assert!(ok.passed());
/// let bad = ValidationReport::new(vec![TableCheck::new("kv", SideSummary::new(2, 9), SideSummary::new(1, 4))]);
/// assert!(!bad.passed());
/// assert_eq!(bad.summary(), "kv: source 2 rows #0000000000000009, destination 1 rows #0000000000000004 MISMATCH");
/// assert!(!ValidationReport::new(vec![]).passed()); // nothing compared is not a pass
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidationReport {
    /// Every table compared.
    pub tables: Vec<TableCheck>,
}

impl ValidationReport {
    /// A report.
    pub fn new(tables: Vec<TableCheck>) -> Self {
        ValidationReport { tables }
    }

    /// Whether at least one table was compared and every table matches.
    pub fn passed(&self) -> bool {
        !self.tables.is_empty() && self.tables.iter().all(TableCheck::matches)
    }

    /// Rows on the source and on the destination, summed over tables.
    pub fn rows(&self) -> (u64, u64) {
        self.tables.iter().fold((0, 0), |(s, d), t| {
            (s.saturating_add(t.source.rows), d.saturating_add(t.destination.rows))
        })
    }

    /// One line per table, for logs and the migration record.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (i, t) in self.tables.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            out.push_str(&format!(
                "{}: source {} rows #{:016x}, destination {} rows #{:016x} {}",
                t.table,
                t.source.rows,
                t.source.checksum,
                t.destination.rows,
                t.destination.checksum,
                if t.matches() { "ok" } else { "MISMATCH" }
            ));
            if !t.sample_mismatches.is_empty() {
                out.push_str(&format!(" (e.g. {})", t.sample_mismatches.join(", ")));
            }
        }
        out
    }
}

/// The host's data plane, as the migration engine drives it.
///
/// The engine calls these methods from [`Migration::step`](super::Migration::step); it never
/// touches tenant data itself.
///
/// # Contract
/// - **Every method is idempotent.** The engine persists a state only *after* that state's
///   work returned, so after a crash, a timeout or a lost race the same call is made again
///   (with a higher [`MigrationContext::attempt`]); doing it twice must leave the same result
///   as doing it once. Typical ways: upserts keyed by primary key with last-writer-wins by row
///   version, `DELETE ... WHERE tenant = $1`, named snapshots that are overwritten.
/// - **Row versions order writes.** Writes made during dual-write reach the destination both
///   through the host's write path and through [`import`](Self::import)/[`catch_up`](Self::catch_up),
///   in any order; the destination must keep, per row, the newest version (for example by
///   `(epoch, sequence)` of the write, as the reference data plane does), never "the last applied".
/// - [`fence`](Self::fence) returns only once no write carrying an epoch older than `epoch` can
///   still be applied on that stamp for the tenant: it is the drain of the cutover.
/// - Errors say whether retrying may help ([`DriverError::retryable`] /
///   [`DriverError::permanent`]). A method that returns an error may have done part of its
///   work; it will be called again or undone by [`rollback`](Self::rollback).
/// - Methods may be called concurrently for *different* migrations. For the same migration,
///   two workers lose a registry race before calling the driver, **except** when a worker's
///   call outlives its lease (a slow import, a paused process): another worker takes the
///   lease over and goes on, and the old call may still land later.
/// - **Refuse stale generations.** Every call carries [`MigrationContext::generation`], which
///   grows with every lease claim. Per migration and per stamp, remember the highest
///   generation seen, and refuse (with [`DriverError::permanent`]) any effect carrying a
///   lower one; check and remember in the same critical section (or database transaction)
///   as the effect, as [`Fence`](super::Fence) does for writes. Otherwise a late import from
///   a worker that lost its lease can recreate the destination's copy after the migration was
///   cancelled and that copy deleted. A `migration_generations (stamp, migration, generation)`
///   row updated with `... WHERE generation <= $ctx_generation` in the effect's transaction
///   is enough. Equal generations are the same worker's retries: admit them.
///
/// # Implementing
/// Map the methods to your stack: `snapshot` = a consistent export of the tenant's rows on the
/// source (a logical dump, a storage snapshot, a change-stream position); `import` = load it
/// into the destination, merging by row version; `catch_up` = copy what changed on the source
/// since the snapshot (the engine calls it after dual-write is on and the source is fenced, so
/// afterwards the destination has every write acknowledged before dual-write began);
/// `validate` = row counts and checksums of both sides at a consistent point; `fence` = record
/// the epoch in the stamp's fence table (see [`Fence`](super::Fence)); `cleanup_source` =
/// delete the tenant's rows on the source; `rollback` = delete the destination's copy.
/// [`ReferenceDataPlane`](super::reference::ReferenceDataPlane) is a complete in-memory
/// implementation to read before writing yours.
///
/// # Example
/// ```
/// use stamps::migration::*;
/// use stamps::{Epoch, MigrationState, StampId};
///
/// /// A driver for tenants that keep no data (stateless services): every step is a no-op.
/// #[derive(Debug)]
/// struct Stateless;
///
/// #[async_trait::async_trait]
/// impl MigrationDriver for Stateless {
///     async fn snapshot(&self, _: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
///         Ok(SnapshotInfo::new("empty", 0))
///     }
///     async fn import(&self, _: &MigrationContext, _: &SnapshotInfo) -> Result<(), DriverError> {
///         Ok(())
///     }
///     async fn fence(&self, _: &MigrationContext, _: StampId, _: Epoch, _: bool) -> Result<(), DriverError> {
///         Ok(())
///     }
///     async fn validate(&self, _: &MigrationContext) -> Result<ValidationReport, DriverError> {
///         let empty = SideSummary::new(0, 0);
///         Ok(ValidationReport::new(vec![TableCheck::new("none", empty, empty)]))
///     }
///     async fn cleanup_source(&self, _: &MigrationContext) -> Result<(), DriverError> {
///         Ok(())
///     }
///     async fn rollback(&self, _: &MigrationContext, _: MigrationState) -> Result<(), DriverError> {
///         Ok(())
///     }
/// }
/// # fn _use(_: &dyn MigrationDriver) {}
/// # _use(&Stateless);
/// ```
#[async_trait]
pub trait MigrationDriver: fmt::Debug + Send + Sync + 'static {
    /// Takes a consistent snapshot of the tenant's data on `ctx.source`. Idempotent: a retry may
    /// take a new snapshot (the engine keeps the last one it persisted).
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError>;

    /// Loads `snapshot` into `ctx.destination`, merging by row version (never overwriting a
    /// newer row written by dual-write). Idempotent.
    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError>;

    /// Copies to the destination what changed on the source since `snapshot`, merging by row
    /// version. Called twice: once dual-write is on and both stamps are fenced at the
    /// dual-write epoch (so no write that bypasses the destination can still land on the
    /// source), and again during the cutover freeze (to copy dual-writes that reached the
    /// source but were fenced off the destination). The second call runs while the tenant's
    /// writes are frozen: make it a delta (from a change-stream position, or rows newer than
    /// the last copy), not a full copy. Idempotent.
    ///
    /// The default takes a fresh snapshot and imports it, which is correct (imports merge by
    /// version) but copies everything again; override it with a delta copy.
    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        let _ = snapshot;
        let fresh = self.snapshot(ctx).await?;
        self.import(ctx, &fresh).await
    }

    /// Raises the fence of `stamp` for `ctx.tenant` to `epoch`: from now on the stamp refuses
    /// writes carrying an older epoch, and, if `holds` is false (the stamp no longer holds the
    /// tenant), writes carrying `epoch` too. Returns only once no older write can still be
    /// applied there (the drain). Never lowers a fence. Idempotent.
    async fn fence(&self, ctx: &MigrationContext, stamp: StampId, epoch: Epoch, holds: bool)
        -> Result<(), DriverError>;

    /// Compares the tenant's data on both stamps at a consistent point: row counts and
    /// checksums per table. A mismatch is a report that does not pass, not an error. Read-only.
    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError>;

    /// Deletes the tenant's data from `ctx.source` (after a successful soak). Idempotent.
    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError>;

    /// Deletes whatever the migration put on `ctx.destination` (the tenant is, or is about to
    /// be, served from the source again). `from` is the state the rollback started in.
    /// Idempotent.
    async fn rollback(&self, ctx: &MigrationContext, from: MigrationState) -> Result<(), DriverError>;
}

#[async_trait]
impl<D: MigrationDriver + ?Sized> MigrationDriver for Arc<D> {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        (**self).snapshot(ctx).await
    }
    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        (**self).import(ctx, snapshot).await
    }
    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        (**self).catch_up(ctx, snapshot).await
    }
    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> Result<(), DriverError> {
        (**self).fence(ctx, stamp, epoch, holds).await
    }
    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        (**self).validate(ctx).await
    }
    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError> {
        (**self).cleanup_source(ctx).await
    }
    async fn rollback(&self, ctx: &MigrationContext, from: MigrationState) -> Result<(), DriverError> {
        (**self).rollback(ctx, from).await
    }
}

/// A migration driver as a trait object.
///
/// ```
/// use stamps::migration::{reference::ReferenceDataPlane, DynMigrationDriver};
/// use std::sync::Arc;
/// let _driver: Arc<DynMigrationDriver> = Arc::new(ReferenceDataPlane::new([]));
/// ```
pub type DynMigrationDriver = dyn MigrationDriver;

#[allow(dead_code)]
fn _driver_object_safe(_: &DynMigrationDriver) {}
