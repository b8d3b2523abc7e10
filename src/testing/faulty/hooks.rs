//! Per-method hooks of [`FaultyRegistry`]: closures a test registers to run **before** a call
//! reaches the inner registry (to fail it with a chosen error, delay it, or act on the inner
//! registry first) and **after** the inner call returned (to observe its outcome, hold the
//! answer back, or replace it with an error), and the first-class "commit, then lose the
//! acknowledgement" fault ([`FaultyRegistry::lose_ack_next`], [`After::lose_ack`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Call, FaultyRegistry};
use crate::error::{Error, Result};
use crate::model::{
    AssignmentChange, Decision, Epoch, MigrationId, MigrationRecord, Redirect, RolloutId, RolloutRecord, StampId,
    StampSpec, StampState, TenantId, TenantSpec, Version,
};
use crate::registry::Registry;

/// The future a hook returns: boxed, `Send`, and owning what it uses (copy what you need out
/// of the [`Request`] before the `async move` block).
pub type HookFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A call's arguments, as a hook sees them: one variant per fallible [`Registry`] method,
/// with the arguments in the method's order.
///
/// ```
/// use stamps::testing::faulty::Request;
/// use stamps::testing::Call;
/// use stamps::StampId;
/// let request = Request::Stamp(StampId(3));
/// assert_eq!(request.call(), Call::Stamp);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Request<'a> {
    /// [`Registry::put_stamp`]`(spec)`.
    PutStamp(&'a StampSpec),
    /// [`Registry::stamp`]`(id)`.
    Stamp(StampId),
    /// [`Registry::set_stamp_state`]`(id, state)`.
    SetStampState(StampId, StampState),
    /// [`Registry::fleet`]`()`.
    Fleet,
    /// [`Registry::assignment`]`(tenant)`.
    Assignment(&'a TenantId),
    /// [`Registry::assignments`]`(after, limit)`.
    Assignments(Option<&'a TenantId>, usize),
    /// [`Registry::assign`]`(tenant, stamp)`.
    Assign(&'a TenantSpec, StampId),
    /// [`Registry::compare_and_set`]`(tenant, expected, change)`.
    CompareAndSet(&'a TenantId, Epoch, &'a AssignmentChange),
    /// [`Registry::unassign`]`(tenant, expected)`.
    Unassign(&'a TenantId, Epoch),
    /// [`Registry::history`]`(tenant)`.
    History(&'a TenantId),
    /// [`Registry::changes_since`]`(after, limit)`.
    ChangesSince(Version, usize),
    /// [`Registry::create_migration`]`(record)`.
    CreateMigration(&'a MigrationRecord),
    /// [`Registry::migration`]`(id)`.
    Migration(MigrationId),
    /// [`Registry::save_migration`]`(record)`.
    SaveMigration(&'a MigrationRecord),
    /// [`Registry::migrations`]`(tenant)`.
    Migrations(Option<&'a TenantId>),
    /// [`Registry::set_pin`]`(tenant, stamp, decision)`.
    SetPin(&'a TenantId, Option<StampId>, &'a Decision),
    /// [`Registry::pin`]`(tenant)`.
    Pin(&'a TenantId),
    /// [`Registry::pins`]`(after, limit)`.
    Pins(Option<&'a TenantId>, usize),
    /// [`Registry::set_route_override`]`(stamp, redirect, decision)`.
    SetRouteOverride(StampId, Option<Redirect>, &'a Decision),
    /// [`Registry::route_overrides`]`()`.
    RouteOverrides,
    /// [`Registry::route_override_history`]`(stamp)`.
    RouteOverrideHistory(StampId),
    /// [`Registry::record_repair`]`(tenant, stamp, decision)`.
    RecordRepair(&'a TenantId, StampId, &'a Decision),
    /// [`Registry::create_rollout`]`(record)`.
    CreateRollout(&'a RolloutRecord),
    /// [`Registry::rollout`]`(id)`.
    Rollout(RolloutId),
    /// [`Registry::save_rollout`]`(record)`.
    SaveRollout(&'a RolloutRecord),
    /// [`Registry::rollouts`]`()`.
    Rollouts,
}

impl Request<'_> {
    /// The method called.
    ///
    /// ```
    /// use stamps::testing::faulty::Request;
    /// use stamps::testing::Call;
    /// assert_eq!(Request::Fleet.call(), Call::Fleet);
    /// ```
    pub const fn call(&self) -> Call {
        match self {
            Request::PutStamp(..) => Call::PutStamp,
            Request::Stamp(..) => Call::Stamp,
            Request::SetStampState(..) => Call::SetStampState,
            Request::Fleet => Call::Fleet,
            Request::Assignment(..) => Call::Assignment,
            Request::Assignments(..) => Call::Assignments,
            Request::Assign(..) => Call::Assign,
            Request::CompareAndSet(..) => Call::CompareAndSet,
            Request::Unassign(..) => Call::Unassign,
            Request::History(..) => Call::History,
            Request::ChangesSince(..) => Call::ChangesSince,
            Request::CreateMigration(..) => Call::CreateMigration,
            Request::Migration(..) => Call::Migration,
            Request::SaveMigration(..) => Call::SaveMigration,
            Request::Migrations(..) => Call::Migrations,
            Request::SetPin(..) => Call::SetPin,
            Request::Pin(..) => Call::Pin,
            Request::Pins(..) => Call::Pins,
            Request::SetRouteOverride(..) => Call::SetRouteOverride,
            Request::RouteOverrides => Call::RouteOverrides,
            Request::RouteOverrideHistory(..) => Call::RouteOverrideHistory,
            Request::RecordRepair(..) => Call::RecordRepair,
            Request::CreateRollout(..) => Call::CreateRollout,
            Request::Rollout(..) => Call::Rollout,
            Request::SaveRollout(..) => Call::SaveRollout,
            Request::Rollouts => Call::Rollouts,
        }
    }
}

/// What an after hook ([`FaultyRegistry::after`]) does with the inner registry's outcome.
///
/// ```
/// use stamps::testing::faulty::After;
/// assert!(matches!(After::lose_ack(), After::Replace(stamps::Error::Unavailable { .. })));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum After {
    /// Return the inner registry's outcome unchanged.
    Keep,
    /// Return this error instead. Whatever the inner call did stays done: for a write that
    /// succeeded, the change is committed although the caller sees a failure.
    Replace(Error),
}

impl After {
    /// "Commit, then lose the acknowledgement": the caller gets [`Error::Unavailable`] (as
    /// from a connection that broke after the database committed) while the inner call's
    /// effect stays. A caller that retries must then find its own write already done.
    ///
    /// ```
    /// use stamps::testing::faulty::After;
    /// let After::Replace(e) = After::lose_ack() else { unreachable!() };
    /// assert!(e.is_retryable());
    /// ```
    pub fn lose_ack() -> After {
        After::Replace(Error::unavailable(
            "FaultyRegistry lost the acknowledgement (the call reached the registry)",
        ))
    }
}

pub(super) type BeforeHook = Arc<dyn Fn(&Request<'_>) -> HookFuture<Result<()>> + Send + Sync>;
pub(super) type AfterHook = Arc<dyn Fn(&Request<'_>, Result<(), &Error>) -> HookFuture<After> + Send + Sync>;

/// The hooks registered per method, and the lost-acknowledgement budget.
pub(super) struct Hooks {
    before: [RwLock<Option<BeforeHook>>; Call::ALL.len()],
    after: [RwLock<Option<AfterHook>>; Call::ALL.len()],
    lose_ack: AtomicUsize,
}

impl Hooks {
    pub(super) fn new() -> Self {
        Hooks {
            before: Default::default(),
            after: Default::default(),
            lose_ack: AtomicUsize::new(0),
        }
    }

    pub(super) fn before(&self, call: Call) -> Option<BeforeHook> {
        self.before[call.index()].read().clone()
    }

    pub(super) fn after(&self, call: Call) -> Option<AfterHook> {
        self.after[call.index()].read().clone()
    }

    /// Takes one from the lost-acknowledgement budget, if any is left.
    pub(super) fn take_lose_ack(&self) -> bool {
        self.lose_ack
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set =
            |has: &dyn Fn(usize) -> bool| -> Vec<Call> { Call::ALL.into_iter().filter(|c| has(c.index())).collect() };
        f.debug_struct("Hooks")
            .field("before", &set(&|i| self.before[i].read().is_some()))
            .field("after", &set(&|i| self.after[i].read().is_some()))
            .field("lose_ack", &self.lose_ack.load(Ordering::SeqCst))
            .finish()
    }
}

impl<R: Registry> FaultyRegistry<R> {
    /// Runs `hook` before every `call`, after the hold and before the injected faults (see
    /// the order in the [module docs](super)); the filter of
    /// [`fail_only`](Self::fail_only) does not apply to hooks. The hook sees the call's
    /// arguments and returns a future: `Ok(())` lets the call go on, an error fails it with
    /// that error before the inner registry is called (so it has no effect), and the future
    /// may wait first (to delay the call, or to act on the inner registry before it). Replaces
    /// the previous before hook of `call`.
    ///
    /// Errors a hook returns do not count as [`injected_failures`](Self::injected_failures).
    ///
    /// ```
    /// use stamps::testing::faulty::Request;
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// // Stamp 7 is refused; other stamps are read after a short delay.
    /// registry.before(Call::Stamp, |request| {
    ///     let refused = matches!(request, Request::Stamp(StampId(7)));
    ///     Box::pin(async move {
    ///         if refused {
    ///             return Err(Error::unavailable("stamp 7 is behind a broken link"));
    ///         }
    ///         tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    ///         Ok(())
    ///     })
    /// });
    /// assert!(registry.stamp(StampId(7)).await.is_err());
    /// assert_eq!(registry.stamp(StampId(8)).await?, None);
    /// # Ok(()) }
    /// ```
    pub fn before(&self, call: Call, hook: impl Fn(&Request<'_>) -> HookFuture<Result<()>> + Send + Sync + 'static) {
        *self.state.hooks.before[call.index()].write() = Some(Arc::new(hook));
    }

    /// Runs `hook` after every `call` that reached the inner registry, with the call's
    /// arguments and whether it succeeded (`Ok(())`) or failed (`Err(&error)`). The future
    /// may wait before it answers (to hold the answer back while the test changes the
    /// registry, or forever, as a process that died after the call took effect) and then
    /// returns [`After::Keep`] to pass the outcome on or [`After::Replace`] to return an
    /// error instead; [`After::lose_ack`] is the "commit, then lose the acknowledgement"
    /// case. Replaces the previous after hook of `call`. Calls failed before the inner
    /// registry (by a fault or a before hook) do not run it.
    ///
    /// ```
    /// use stamps::testing::faulty::After;
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let inner = InMemoryRegistry::new();
    /// inner.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
    /// let registry = FaultyRegistry::new(inner);
    /// // Every successful assign commits, then its acknowledgement is lost.
    /// registry.after(Call::Assign, |_, outcome| {
    ///     let committed = outcome.is_ok();
    ///     Box::pin(async move { if committed { After::lose_ack() } else { After::Keep } })
    /// });
    /// let acme = TenantSpec::new(TenantId::new("acme")?);
    /// assert!(registry.assign(&acme, StampId(1)).await.unwrap_err().is_retryable());
    /// assert!(registry.inner().assignment(&acme.id).await?.is_some()); // it did commit
    /// // The retry finds the tenant already assigned (the inner error is passed on).
    /// assert!(matches!(registry.assign(&acme, StampId(1)).await, Err(Error::AlreadyAssigned { .. })));
    /// # Ok(()) }
    /// ```
    pub fn after(
        &self,
        call: Call,
        hook: impl Fn(&Request<'_>, Result<(), &Error>) -> HookFuture<After> + Send + Sync + 'static,
    ) {
        *self.state.hooks.after[call.index()].write() = Some(Arc::new(hook));
    }

    /// Removes every before and after hook (for calls made from now on) and cancels the
    /// [`lose_ack_next`](Self::lose_ack_next) budget.
    ///
    /// ```
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.before(Call::Fleet, |_| Box::pin(async { Err(Error::unavailable("down")) }));
    /// assert!(registry.fleet().await.is_err());
    /// registry.clear_hooks();
    /// assert!(registry.fleet().await.is_ok());
    /// # Ok(()) }
    /// ```
    pub fn clear_hooks(&self) {
        let hooks = &self.state.hooks;
        for slot in &hooks.before {
            *slot.write() = None;
        }
        for slot in &hooks.after {
            *slot.write() = None;
        }
        hooks.lose_ack.store(0, Ordering::SeqCst);
    }

    /// "Commit, then lose the acknowledgement" for the next `n` calls the filter
    /// ([`fail_only`](Self::fail_only)) selects that reach the inner registry: each is
    /// forwarded, takes effect there (a write commits), and then returns
    /// [`Error::Unavailable`] instead of its outcome, as a database client does when the
    /// connection breaks after the server committed. These count as
    /// [`injected_failures`](Self::injected_failures). Replaces any budget left
    /// (`lose_ack_next(0)` cancels it).
    ///
    /// ```
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.fail_only(|call| !call.is_read());
    /// registry.lose_ack_next(1);
    /// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
    /// assert!(registry.put_stamp(spec.clone()).await.unwrap_err().is_retryable());
    /// assert!(registry.stamp(StampId(1)).await?.is_some()); // committed all the same
    /// assert!(registry.put_stamp(spec).await.is_ok()); // the budget is spent
    /// assert_eq!(registry.injected_failures(), 1);
    /// # Ok(()) }
    /// ```
    pub fn lose_ack_next(&self, n: usize) {
        self.state.hooks.lose_ack.store(n, Ordering::SeqCst);
    }
}
