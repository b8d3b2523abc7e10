//! The registry: the source of truth for stamps, assignments, the change feed and migration
//! records.
//!
//! [`Registry`] is the trait; [`InMemoryRegistry`] is the embedded default; `PgRegistry`
//! (feature `postgres`) is the durable one. The conformance suite in `stamps::testing`
//! (feature `test-util`) checks any implementation, yours included.

mod ext;
mod forward;
mod import;
mod memory;
mod observed;
mod place;
pub use memory::{InMemoryRegistryBuilder, DEFAULT_CHANGE_RETENTION};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
mod signal;

use std::fmt::Debug;

use async_trait::async_trait;

pub(crate) use ext::{check_new_rollout, check_page, check_rollout_save, override_target_retired};
pub use ext::{expiry_report_from, RegistryExt};
pub use import::{ImportReport, ImportRow, Imported, MAX_IMPORT_ROWS};
pub use memory::InMemoryRegistry;
pub use observed::Observed;
pub use place::{place_and_assign, place_and_assign_with, AssignOptions, PlaceAndAssignError, ProvisionRequest};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PgConfig, PgRegistry};
pub use signal::{ChangeSignal, Changed};

use crate::error::{Error, InvalidInput, Result, Subject};
use crate::model::{
    Assignment, AssignmentChange, ChangeBatch, Decision, Epoch, Fleet, HistoryEntry, MigrationId, MigrationRecord,
    Override, Pin, Redirect, RolloutId, RolloutRecord, RouteOverride, Stamp, StampId, StampSpec, StampState, TenantId,
    TenantSpec, Version,
};

/// A registry as a trait object.
pub type DynRegistry = dyn Registry;

/// The source of truth for where tenants live.
///
/// # Contract
/// Every implementation, checked by the conformance suite (`stamps::testing::conformance`):
/// - **One home**: a tenant has at most one assignment; `assign` on an assigned tenant fails
///   with [`Error::AlreadyAssigned`].
/// - **No overbooking**: `assign` and `compare_and_set` check capacity and apply the write
///   atomically; however many callers race, no stamp exceeds the hard limit of any resource
///   (usage counts the tenant's demand plus one tenant slot on the serving stamp and on a
///   migration's shadow stamp). Only `Active` stamps take tenants they do not already hold.
/// - **Hard constraints**: `assign`, `compare_and_set` (a move, or a mode whose shadow is a new
///   stamp) and `create_migration` (its destination, as the tenant's future shadow) refuse,
///   with [`Error::ConstraintViolated`] naming the rule, to place a tenant on a stamp it does
///   not already hold when: the tenant is pinned to another stamp; the tenant has a residency
///   and the stamp declares another or none; the stamp's tier is not the tenant's; or the stamp
///   is dedicated and another tenant is on it. The rules are
///   [`constraints::check`](crate::model::constraints::check) (placement's filters use the same
///   definitions), run in the same lock or transaction as the capacity check, so racing writers
///   cannot both take a dedicated stamp. A write carrying an [`Override`] that names the rule
///   (`AssignmentChange::overriding`, [`Registry::assign_overriding`]) is let through, and the
///   override (rule, reason, actor) is recorded in its [`HistoryEntry`].
/// - **Fencing**: every write to an assignment gives it a new epoch, greater than every epoch
///   the tenant had before (even across unassign and reassign); `compare_and_set` and
///   `unassign` apply only if the current epoch equals `expected`, else
///   [`Error::Conflict`].
/// - **Ordered change feed**: every write to a stamp or an assignment appends exactly one
///   [`Change`](crate::Change) with the next version, carrying the state after the write:
///   creating a stamp, re-specifying it (`put_stamp` on an existing stamp: routers learn a new
///   endpoint only from this change), changing its state, and every assignment write. A
///   refused write appends nothing. `changes_since(v, n)` returns the first `n` changes after
///   `v` (never `v` itself) in version order, and a change with a smaller version never
///   becomes visible after a larger one has been returned. [`Registry::change_signal`] is
///   notified after the change is visible.
/// - **Exclusive cursors**: `assignments(after, n)` returns at most `n` assignments strictly
///   after `after` in tenant-id order, so paging with the last id of each page ends.
/// - **History**: every assignment write appends a [`HistoryEntry`]; entries are never changed.
/// - **Pins** are a table: [`Registry::set_pin`] writes a tenant's pin (or clears it) with the
///   [`Decision`] behind it, appending one `Pin` change and one history entry; an `assign`
///   whose spec carries a pin records it there too. A pin outlives an unassign. The tenant's
///   assignment spec always carries the recorded pin, so `assign`, `compare_and_set` and
///   `create_migration` enforce it; a pin the current assignment breaks is refused. An
///   `assign` whose spec names a pin other than the recorded one is [`Error::InvalidInput`].
/// - **Routing overrides** are a table: [`Registry::set_route_override`] redirects a stamp's
///   tenants to another stamp (always, or while the stamp is unhealthy) or clears it,
///   appending one `RouteOverride` change that routers apply; overrides never chain (a
///   target is not itself redirected), and every write stays readable in
///   [`Registry::route_override_history`].
/// - **Rollout records** are saved like migration records: `create_rollout` assigns the id and
///   revision 1 and refuses a second rollout while one is not terminal
///   ([`Error::AlreadyExists`]); `save_rollout` applies only on the revision last read and only
///   along [`RolloutState::can_become`](crate::RolloutState::can_become).
/// - **Repairs**: [`Registry::record_repair`] appends a `Repaired` history entry and change
///   naming who repaired which copy and why; it changes no placement.
/// - **Migration records** are saved with optimistic concurrency on `revision`, and only along
///   legal state transitions; at most one non-terminal migration exists per tenant.
///   `create_migration` refuses a record whose source or destination stamp is unknown
///   ([`Error::NotFound`]), whose source and destination are the same stamp, or which is not
///   in `Planned` ([`Error::InvalidInput`]).
/// - **Errors**: each method returns the variants its `# Errors` section lists for the
///   conditions named there; any method may also return [`Error::Unavailable`] (the backend
///   could not be reached) or [`Error::Backend`] (it answered something unexpected). Reads of
///   something absent answer `Ok(None)` or an empty list, not an error.
/// - Failures are mapped to [`Error`] variants; a call that fails has no effect
///   (`Unavailable` means "retry"), except that a networked implementation may answer
///   `Unavailable` for a write whose commit was sent before the connection broke: its outcome
///   is then unknown, and callers re-read before retrying (see [`Error::Unavailable`]).
///
/// # Implementing
/// Keep each write in one transaction (or under one lock): read the assignment, run
/// [`constraints::check`](crate::model::constraints::check) and
/// [`admission::check`](crate::model::admission::check), write the assignment, usage, history row and change row, bump the
/// version, commit, then notify the signal. Take the epoch from the change version. Run
/// `stamps::testing::conformance::run_all` against your implementation: each failure names
/// the case and the contract it broke.
///
/// The trait's async methods are written with the `async-trait` crate's macro: implement them
/// under `#[stamps::async_trait]` (re-exported, so your crate needs no dependency of its own).
///
/// ```
/// use stamps::registry::ChangeSignal;
/// use stamps::*;
///
/// /// Counts assignments, forwarding every call to an inner registry.
/// #[derive(Debug, Default)]
/// struct Counting { inner: InMemoryRegistry, assigns: std::sync::atomic::AtomicUsize }
///
/// #[stamps::async_trait]
/// impl Registry for Counting {
///     async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
///         self.assigns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.inner.assign(tenant, stamp).await
///     }
///     // The other methods forward likewise.
/// #   async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> { self.inner.put_stamp(spec).await }
/// #   async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> { self.inner.stamp(id).await }
/// #   async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> { self.inner.set_stamp_state(id, state).await }
/// #   async fn fleet(&self) -> Result<Fleet> { self.inner.fleet().await }
/// #   async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> { self.inner.assignment(tenant).await }
/// #   async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> { self.inner.assignments(after, limit).await }
/// #   async fn compare_and_set(&self, tenant: &TenantId, expected: Epoch, change: AssignmentChange) -> Result<Assignment> { self.inner.compare_and_set(tenant, expected, change).await }
/// #   async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> { self.inner.unassign(tenant, expected).await }
/// #   async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> { self.inner.history(tenant).await }
/// #   async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> { self.inner.changes_since(after, limit).await }
/// #   fn change_signal(&self) -> ChangeSignal { self.inner.change_signal() }
/// #   async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> { self.inner.create_migration(record).await }
/// #   async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> { self.inner.migration(id).await }
/// #   async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> { self.inner.save_migration(record).await }
/// #   async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> { self.inner.migrations(tenant).await }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let registry = Counting::default();
/// assert!(registry.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await.is_err());
/// assert_eq!(registry.assigns.load(std::sync::atomic::Ordering::Relaxed), 1);
/// # Ok(()) }
/// ```
///
/// # Example
/// ```
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// let cap = Capacity::new([(Resource::Connections, 5000.0)], 0.25)?;
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us-east")?, cap)?).await?;
/// let acme = TenantSpec::new(TenantId::new("acme")?)
///     .demand(Demand::of([(Resource::Connections, 25.0)])?);
/// let a = registry.assign(&acme, StampId(1)).await?;
/// assert_eq!(registry.assignment(acme.id()).await?.map(|x| x.stamp), Some(StampId(1)));
/// // A stale epoch loses.
/// let err = registry.compare_and_set(&acme.id, Epoch(a.epoch.0 - 1),
///     AssignmentChange::move_to(StampId(1))).await.unwrap_err();
/// assert!(matches!(err, Error::Conflict { .. }));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Registry: Debug + Send + Sync + 'static {
    /// Registers a stamp (in `Provisioning`) or updates an existing stamp's spec, keeping its
    /// state; either way, appends one change. Shrinking a limit below current usage fails with
    /// [`Error::CapacityExceeded`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a spec that breaks its own rules (name, endpoint, version,
    /// capacity); [`Error::CapacityExceeded`] for a limit below the stamp's usage;
    /// [`Error::ConstraintViolated`] for a residency or tier change that breaks a constraint of
    /// a tenant the stamp holds, serving or as a shadow, and that its placement did not already
    /// break by an override ([`admission::check_respec_constraints`](crate::model::admission::check_respec_constraints)).
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp>;

    /// A stamp, if registered (`Ok(None)` if not).
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>>;

    /// Moves a stamp through its lifecycle ([`StampState::can_become`]), appending one change
    /// (keeping the state is a no-op); decommissioning a stamp that still holds tenants fails
    /// with [`Error::StampNotEmpty`], and one a routing override redirects to with
    /// [`Error::InvalidInput`].
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown stamp; [`Error::InvalidTransition`] for an illegal
    /// transition; [`Error::StampNotEmpty`] for decommissioning a stamp with tenants;
    /// [`Error::InvalidInput`] for decommissioning a routing override's target.
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp>;

    /// Every stamp with its usage.
    async fn fleet(&self) -> Result<Fleet>;

    /// A tenant's assignment, if it has one (`Ok(None)` if not).
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>>;

    /// Assignments in tenant-id order, strictly after `after` (never `after` itself), at most
    /// `limit` (for warm-up and audits).
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>>;

    /// Assigns an unassigned tenant to an `Active` stamp, serving, checking capacity and the
    /// tenant's hard constraints atomically.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown stamp; [`Error::NotAccepting`] for a stamp that is not
    /// `Active`; [`Error::AlreadyAssigned`] for a tenant that has an assignment;
    /// [`Error::CapacityExceeded`] when the stamp has no room for the tenant's demand or slot;
    /// [`Error::ConstraintViolated`] when the stamp breaks the tenant's residency, pin, tier or
    /// a dedicated stamp's single holder; [`Error::InvalidInput`] for a spec that breaks its own
    /// rules.
    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment>;

    /// Assigns like [`Registry::assign`], but lets the write break the constraints `overrides`
    /// names (an operator's explicit decision); the history entry records the override and
    /// `actor`. An override whose reason is empty, too long or holds control characters is
    /// [`Error::InvalidInput`]; rules it does not name are still enforced.
    ///
    /// The default body refuses every call with [`Error::InvalidInput`] (field `override`), so
    /// registries written before overrides existed keep compiling and never break a rule;
    /// implement it to support overrides (the conformance suite checks it).
    ///
    /// ```
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "us1", Region::new("us-east")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.residency(Residency::new("us")?)).await?;
    /// let eu = TenantSpec::new(TenantId::new("acme")?).residency(Residency::new("eu")?);
    /// assert!(matches!(registry.assign(&eu, StampId(1)).await, Err(Error::ConstraintViolated(_))));
    /// let o = Override::new(ConstraintKind::Residency, "legal approved transfer #123");
    /// registry.assign_overriding(&eu, StampId(1), &o, "alice").await?;
    /// let h = registry.history(&eu.id).await?;
    /// assert_eq!(h[0].overrode.as_ref(), Some(&o));
    /// assert_eq!(h[0].actor.as_deref(), Some("alice"));
    /// # Ok(()) }
    /// ```
    async fn assign_overriding(
        &self,
        tenant: &TenantSpec,
        stamp: StampId,
        overrides: &Override,
        actor: &str,
    ) -> Result<Assignment> {
        let _ = (tenant, stamp, overrides, actor);
        Err(InvalidInput::new("override", "is not supported by this registry implementation").into())
    }

    /// Assigns many tenants in one call (adopting an existing tenant map, a signup wave): each
    /// row is admitted exactly as [`Registry::assign`] would admit it, in row order, against
    /// the usage the earlier rows of the call left (per-stamp totals are checked for the whole
    /// call), and gets its own epoch, history entry and change. A row that is refused does not
    /// stop the others: the [`ImportReport`] says per row what happened. A tenant already
    /// assigned to the row's stamp with the row's spec is [`Imported::Unchanged`], so retrying
    /// a call (after [`Error::Unavailable`], or after a crash) is safe.
    ///
    /// The crate's registries write a call's admitted rows atomically (one lock, one
    /// transaction): on `Err` nothing was written. The default body calls
    /// [`Registry::assign`] once per row and stops at the first error that is not about its
    /// row, leaving the rows before it written, then reads the feed's head for the report (an
    /// error there also leaves every row written); implement the method to make it atomic and
    /// fast (the conformance suite checks either).
    ///
    /// Rows sorted by tenant id import fastest into [`InMemoryRegistry`] (more than twice the
    /// rate of the same rows shuffled, at a million tenants): ids above every id it holds are
    /// appended to its ordered map rather than inserted, so the gain holds while the imported
    /// ids sort above those already assigned. Rows are admitted in order, so sorting changes
    /// the order of the call's versions and, where rows compete (a full stamp, a stamp that
    /// admits one tenant, a tenant named twice: sort stably), which of them are refused.
    ///
    /// ```
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us")?,
    ///     Capacity::new([(Resource::Tenants, 1000.0)], 0.0)?)?).await?;
    /// let rows: Vec<ImportRow> = (0..500)
    ///     .map(|i| Ok(ImportRow::new(TenantSpec::new(TenantId::new(&format!("t{i:04}"))?), StampId(1))))
    ///     .collect::<stamps::Result<_>>()?;
    /// let report = registry.assign_many(&rows).await?;
    /// assert_eq!(report.assigned(), 500);
    /// assert_eq!(registry.fleet().await?.stamps[0].tenants(), 500);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `rows`) for more than [`MAX_IMPORT_ROWS`] rows; otherwise
    /// only the errors any method may return. Per-row refusals are in the report.
    async fn assign_many(&self, rows: &[ImportRow]) -> Result<ImportReport> {
        import::one_by_one(self, rows).await
    }

    /// Changes an assignment if its epoch is `expected`; the result has a new, larger epoch.
    /// A change breaking a hard constraint is refused unless `change.overrides` names it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a tenant without assignment or an unknown target stamp;
    /// [`Error::Conflict`] when the current epoch is not `expected`; [`Error::NotAccepting`]
    /// for a move onto a stamp that is not `Active`; [`Error::CapacityExceeded`] when a stamp
    /// the change adds the tenant to (or grows it on) has no room;
    /// [`Error::ConstraintViolated`] when a stamp the change newly gives the tenant (serving or
    /// shadow) breaks one of its constraints and the change does not override it;
    /// [`Error::InvalidInput`] for a change that makes no sense (a move to the serving stamp, a
    /// shadow equal to the serving stamp).
    async fn compare_and_set(&self, tenant: &TenantId, expected: Epoch, change: AssignmentChange)
        -> Result<Assignment>;

    /// Removes an assignment if its epoch is `expected`, releasing its capacity.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a tenant without assignment; [`Error::Conflict`] when the
    /// current epoch is not `expected`.
    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()>;

    /// A tenant's history, oldest first (empty for a tenant never assigned).
    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>>;

    /// Up to `limit` changes after `after` (never `after` itself), in version order.
    ///
    /// A cursor at or past 2^63 - 1 (beyond any stored version) reads nothing: `Ok` with the
    /// head.
    ///
    /// # Errors
    /// [`Error::ChangeFeedTruncated`] when changes after `after` were pruned: resynchronise
    /// from a full read. [`Error::HistoryDiverged`] when `after` is not in the registry's
    /// history: past its head (below 2^63 - 1), or a version of a history the registry lost
    /// (a failover without synchronous replication, a restore): resynchronise from a full read
    /// and follow from the `head` it names.
    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch>;

    /// The signal notified after every change becomes visible.
    fn change_signal(&self) -> ChangeSignal;

    /// Stores a new migration record (given in `Planned`, from
    /// [`MigrationRecord::planned`]); assigns its id and revision 1. Fails with
    /// [`Error::AlreadyExists`] while the tenant has a non-terminal migration.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the source or destination stamp is unknown;
    /// [`Error::InvalidInput`] when source and destination are the same stamp or the record is
    /// not in `Planned`; [`Error::AlreadyExists`] while the tenant has a non-terminal migration;
    /// [`Error::ConstraintViolated`] when the tenant is assigned and the destination breaks one
    /// of its constraints (as its dual-write shadow would).
    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord>;

    /// A migration record (`Ok(None)` for an unknown id).
    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>>;

    /// Saves a record whose `revision` is the one last read; returns it with the next revision.
    /// A stale revision fails with [`Error::Conflict`]; a state change that is not a legal
    /// transition ([`MigrationState::can_transition_to`](crate::MigrationState::can_transition_to))
    /// fails with [`Error::InvalidTransition`] (keeping the state is always allowed).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id; [`Error::Conflict`] for a stale revision;
    /// [`Error::InvalidTransition`] for an illegal state change; [`Error::InvalidInput`] for a
    /// record whose tenant, source or destination differs from the stored one.
    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord>;

    /// Migration records, all or one tenant's, oldest first.
    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>>;

    /// Pins a tenant to `stamp`, or clears its pin (`None`), recording `decision`; returns
    /// the record written. Appends one [`ChangeKind::Pin`](crate::ChangeKind::Pin) change and
    /// one `Pinned` or `Unpinned` history entry. An assigned tenant's assignment spec takes the
    /// new pin (its epoch is unchanged). Pinning again to the same stamp records the new
    /// decision.
    ///
    /// The default body refuses every call with [`Error::InvalidInput`] (field `pin`);
    /// implement it (with [`Registry::pin`] and [`Registry::pins`]) to keep pins.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown stamp; [`Error::ConstraintViolated`] when the tenant
    /// is assigned and holds (serving or as a shadow) a stamp other than `stamp`: move it
    /// first; [`Error::InvalidInput`] for an invalid decision or clearing a tenant without pin.
    ///
    /// ```
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = InMemoryRegistry::new();
    /// for id in [1, 2] {
    ///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
    ///         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// }
    /// let acme = TenantId::new("acme")?;
    /// registry.set_pin(&acme, Some(StampId(2)), &Decision::new("alice", "data stays on 2")?).await?;
    /// // The pin holds for the next assignment...
    /// let spec = TenantSpec::new(acme.clone());
    /// assert!(matches!(registry.assign(&spec, StampId(1)).await, Err(Error::ConstraintViolated(_))));
    /// let a = registry.assign(&spec, StampId(2)).await?;
    /// assert_eq!(a.spec.pin, Some(StampId(2)));
    /// // ...and for every move.
    /// let moved = registry.compare_and_set(&acme, a.epoch, AssignmentChange::move_to(StampId(1))).await;
    /// assert!(matches!(moved, Err(Error::ConstraintViolated(_))));
    /// assert_eq!(registry.pin(&acme).await?.and_then(|p| p.stamp), Some(StampId(2)));
    /// # Ok(()) }
    /// ```
    async fn set_pin(&self, tenant: &TenantId, stamp: Option<StampId>, decision: &Decision) -> Result<Pin> {
        let _ = (tenant, stamp, decision);
        Err(InvalidInput::new("pin", "is not supported by this registry implementation").into())
    }

    /// A tenant's pin in force (`Ok(None)` when it has none).
    async fn pin(&self, tenant: &TenantId) -> Result<Option<Pin>> {
        let _ = tenant;
        Ok(None)
    }

    /// Pins in force, in tenant-id order, strictly after `after`, at most `limit`.
    async fn pins(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Pin>> {
        let _ = (after, limit);
        Ok(Vec::new())
    }

    /// Redirects `stamp`'s tenants ([`Redirect`]), or clears its override (`None`),
    /// recording `decision`; returns the record written and appends one
    /// [`ChangeKind::RouteOverride`](crate::ChangeKind::RouteOverride) change, which every
    /// router applies. Setting an override replaces the stamp's previous one.
    ///
    /// The default body refuses every call with [`Error::InvalidInput`] (field `redirect`);
    /// implement it (with [`Registry::route_overrides`] and
    /// [`Registry::route_override_history`]) to keep overrides.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown stamp or target; [`Error::InvalidInput`] for an
    /// invalid decision, a target that is the stamp itself, decommissioned, redirected itself,
    /// or a stamp other stamps are redirected to (no chains:
    /// [`check_redirect`](crate::model::directive::check_redirect)), or clearing a stamp
    /// without override.
    ///
    /// ```
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = InMemoryRegistry::new();
    /// for id in [7, 9] {
    ///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
    ///         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// }
    /// let why = Decision::new("alice", "stamp-007 restore")?;
    /// registry.set_route_override(StampId(7), Some(Redirect::new(StampId(9), RedirectWhen::Always)), &why).await?;
    /// assert_eq!(registry.route_overrides().await?.len(), 1);
    /// registry.set_route_override(StampId(7), None, &Decision::new("alice", "restored")?).await?;
    /// assert!(registry.route_overrides().await?.is_empty());
    /// assert_eq!(registry.route_override_history(StampId(7)).await?.len(), 2);
    /// # Ok(()) }
    /// ```
    async fn set_route_override(
        &self,
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: &Decision,
    ) -> Result<RouteOverride> {
        let _ = (stamp, redirect, decision);
        Err(InvalidInput::new("redirect", "is not supported by this registry implementation").into())
    }

    /// The routing overrides in force, in stamp order.
    async fn route_overrides(&self) -> Result<Vec<RouteOverride>> {
        Ok(Vec::new())
    }

    /// Every override write for `stamp`, oldest first (sets and clears).
    async fn route_override_history(&self, stamp: StampId) -> Result<Vec<RouteOverride>> {
        let _ = stamp;
        Ok(Vec::new())
    }

    /// Records that an operator repaired the tenant's copy on `stamp` (deleted an orphan,
    /// re-imported, restored from a backup): appends a `Repaired` history entry carrying the
    /// decision's actor and reason, and one [`ChangeKind::Repaired`](crate::ChangeKind::Repaired)
    /// change. The tenant need not be assigned (an orphan's tenant is not). Changes no
    /// placement; `reconcile::apply_repair` (feature `tokio`) runs a repair and records
    /// it.
    ///
    /// The default body refuses every call with [`Error::InvalidInput`] (field `repair`).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown stamp; [`Error::InvalidInput`] for an invalid
    /// decision.
    ///
    /// ```
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = InMemoryRegistry::new();
    /// registry.put_active_stamp(StampSpec::new(StampId(3), "s3", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// let gone = TenantId::new("offboarded")?;
    /// let why = Decision::new("bob", "orphan copy deleted after reconcile run 41")?;
    /// let entry = registry.record_repair(&gone, StampId(3), &why).await?;
    /// assert_eq!(entry.action, HistoryAction::Repaired);
    /// assert_eq!(registry.history(&gone).await?, vec![entry]);
    /// # Ok(()) }
    /// ```
    async fn record_repair(&self, tenant: &TenantId, stamp: StampId, decision: &Decision) -> Result<HistoryEntry> {
        let _ = (tenant, stamp, decision);
        Err(InvalidInput::new("repair", "is not supported by this registry implementation").into())
    }

    /// Stores a new rollout record (from [`RolloutRecord::planned`]), assigning its id and
    /// revision 1.
    ///
    /// The default body refuses every call with [`Error::InvalidInput`] (field `rollout`);
    /// implement it with [`Registry::rollout`], [`Registry::save_rollout`] and
    /// [`Registry::rollouts`] to keep rollouts.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid record or one not at its first wave deploying;
    /// [`Error::AlreadyExists`] while another rollout is not terminal.
    async fn create_rollout(&self, record: RolloutRecord) -> Result<RolloutRecord> {
        let _ = record;
        Err(InvalidInput::new("rollout", "is not supported by this registry implementation").into())
    }

    /// A rollout record (`Ok(None)` for an unknown id).
    async fn rollout(&self, id: RolloutId) -> Result<Option<RolloutRecord>> {
        let _ = id;
        Ok(None)
    }

    /// Saves a rollout record whose `revision` is the one last read; returns it with the next
    /// revision.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id; [`Error::Conflict`] for a stale revision;
    /// [`Error::InvalidInput`] for an invalid record, an illegal state change or changed
    /// target or waves.
    async fn save_rollout(&self, record: &RolloutRecord) -> Result<RolloutRecord> {
        Err(Error::NotFound(Subject::Rollout(record.id)))
    }

    /// Every rollout record, oldest first.
    async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        Ok(Vec::new())
    }
}

#[allow(dead_code)]
fn _object_safe(_: &DynRegistry) {}
