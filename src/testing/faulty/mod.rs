//! [`FaultyRegistry`]: a [`Registry`] wrapper that injects outages, holds calls and counts
//! them, for testing routers, gateways and control planes against a registry that fails.
//!
//! The wrapper forwards every call to the inner registry. On top of that, a test can:
//! - make the registry **unavailable** ([`FaultyRegistry::set_unavailable`]): calls fail with
//!   [`Error::Unavailable`] until it is turned off again;
//! - **fail the next `n` calls** ([`FaultyRegistry::fail_next`]), then recover by itself;
//! - **restrict** both to some methods ([`FaultyRegistry::fail_only`], a predicate over
//!   [`Call`]): reads only, say, or only [`Call::ChangesSince`];
//! - **hold** calls on a [`tokio::sync::Semaphore`] ([`FaultyRegistry::hold`]) to pile
//!   callers up behind a slow registry and release them when the test chooses;
//! - **count** calls per method ([`FaultyRegistry::calls`], [`FaultyRegistry::total_calls`]);
//! - **lose the acknowledgement** of the next `n` calls ([`FaultyRegistry::lose_ack_next`]):
//!   they reach the inner registry and take effect (a write commits), and the caller gets
//!   [`Error::Unavailable`], as from a connection that broke after the commit;
//! - **hook** a method ([`FaultyRegistry::before`], [`FaultyRegistry::after`]): a closure
//!   that sees the call's arguments ([`Request`]) and runs before the call (to fail it with a
//!   chosen error, delay it, or change the inner registry first) or after the inner call
//!   returned (to observe the outcome, hold the answer back, or replace it: [`After`]).
//!
//! Clones share all of this state (and the inner registry), so a test keeps one clone and
//! hands another to the code under test.
//!
//! # Contract
//! - With no fault or hook set (the state after [`FaultyRegistry::new`], or after
//!   [`clear_hooks`](FaultyRegistry::clear_hooks) and turning every fault off) the wrapper is
//!   transparent: every argument reaches the inner registry unchanged and every result
//!   (value or error) comes back unchanged, so it satisfies the [`Registry`] contract exactly
//!   when the inner registry does (the crate's tests run the conformance suite through it).
//! - An injected failure ([`set_unavailable`](FaultyRegistry::set_unavailable),
//!   [`fail_next`](FaultyRegistry::fail_next), an error from a before hook) is returned
//!   **before** the inner registry is called, so it has no effect, as the contract requires
//!   of a failed call. The "commit sent, acknowledgement lost" case of a networked registry
//!   is the one fault that breaks this on purpose:
//!   [`lose_ack_next`](FaultyRegistry::lose_ack_next) and [`After::lose_ack`] return an
//!   error for a call that took effect.
//! - [`Registry::change_signal`] is always forwarded: it returns the inner registry's signal,
//!   is never failed, held, hooked or counted (it is synchronous and infallible), so a router's
//!   follower is woken by every write to the inner registry, also while `changes_since`
//!   calls are failing.
//! - Order on every call: count it; if the filter selects it, wait at the hold semaphore (if
//!   any); run the method's before hook (if any; hooks ignore the filter) and fail the call
//!   if the hook returns an error; then, if it is selected, fail it when the registry is
//!   unavailable or when the `fail_next` budget is not spent (taking one from the budget);
//!   otherwise forward it. When the inner call returns: run the method's after hook (if any)
//!   and apply its [`After`]; then, if the call is selected and the `lose_ack_next` budget
//!   is not spent, take one from it and return [`Error::Unavailable`]. A held call keeps its
//!   permit until then.
//!
//! # Example
//! ```
//! use stamps::testing::{Call, FaultyRegistry};
//! use stamps::*;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stamps::Result<()> {
//! let registry = FaultyRegistry::new(InMemoryRegistry::new());
//! registry.fail_next(1);
//! let err = registry.fleet().await.unwrap_err();
//! assert!(matches!(err, Error::Unavailable { .. }));
//! assert!(registry.fleet().await?.stamps.is_empty()); // recovered
//! assert_eq!(registry.calls(Call::Fleet), 2);
//! # Ok(()) }
//! ```

mod call;
mod forward;
mod hooks;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::registry::Registry;

pub use self::call::Call;
pub use self::hooks::{After, HookFuture, Request};

use self::hooks::Hooks;

type Filter = Arc<dyn Fn(Call) -> bool + Send + Sync>;

struct State {
    unavailable: AtomicBool,
    fail_next: AtomicUsize,
    filter: RwLock<Option<Filter>>,
    gate: RwLock<Option<Arc<Semaphore>>>,
    counts: [AtomicUsize; Call::ALL.len()],
    injected: AtomicUsize,
    hooks: Hooks,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("unavailable", &self.unavailable.load(Ordering::SeqCst))
            .field("fail_next", &self.fail_next.load(Ordering::SeqCst))
            .field("filtered", &self.filter.read().is_some())
            .field("held", &self.gate.read().is_some())
            .field(
                "total_calls",
                &self.counts.iter().map(|c| c.load(Ordering::SeqCst)).sum::<usize>(),
            )
            .field("injected_failures", &self.injected.load(Ordering::SeqCst))
            .field("hooks", &self.hooks)
            .finish()
    }
}

/// A [`Registry`] wrapper for tests: forwards every call to `R`, and can fail calls with
/// [`Error::Unavailable`], hold them on a semaphore, and count them per [`Call`].
///
/// See the [module docs](self) for the contract (what is forwarded unchanged, and in which
/// order faults apply). Clones share the fault state, the counters and the inner registry.
///
/// # Example
/// A router keeps serving a known tenant, flagged stale, while the registry is down:
/// ```
/// use std::time::Duration;
/// use stamps::router::Router;
/// use stamps::testing::FaultyRegistry;
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = FakeClock::new();
/// let inner = InMemoryRegistry::builder().clock(clock.clone()).build();
/// inner.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.endpoint("https://s1")).await?;
/// inner.assign(&TenantSpec::new(TenantId::new("acme")?), StampId(1)).await?;
///
/// let registry = FaultyRegistry::new(inner);
/// let router = Router::builder(registry.clone())
///     .config(stamps::RouterConfig::default().stale_if_error(Duration::from_secs(300)))
///     .clock(clock.clone())
///     .build()?;
/// router.resolve("acme").await?;
///
/// registry.set_unavailable(true);
/// clock.advance(Duration::from_secs(61)); // past the TTL
/// assert!(router.resolve("acme").await?.stale);
/// // Recovery: `resolve` tries the registry again (at most once per `poll_interval`).
/// registry.set_unavailable(false);
/// assert!(!router.resolve("acme").await?.stale);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultyRegistry<R: Registry> {
    inner: Arc<R>,
    state: Arc<State>,
}

impl<R: Registry> Clone for FaultyRegistry<R> {
    fn clone(&self) -> Self {
        FaultyRegistry {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<R: Registry> FaultyRegistry<R> {
    /// Wraps `inner` with no fault set: every call is forwarded (and counted).
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// assert_eq!(registry.assignment(&TenantId::new("acme")?).await?, None);
    /// # Ok(()) }
    /// ```
    pub fn new(inner: R) -> Self {
        FaultyRegistry {
            inner: Arc::new(inner),
            state: Arc::new(State {
                unavailable: AtomicBool::new(false),
                fail_next: AtomicUsize::new(0),
                filter: RwLock::new(None),
                gate: RwLock::new(None),
                counts: Default::default(),
                injected: AtomicUsize::new(0),
                hooks: Hooks::new(),
            }),
        }
    }

    /// The wrapped registry. Calls made on it directly bypass the faults and the counters
    /// (useful to set up or change state while the wrapper is "down").
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.set_unavailable(true);
    /// assert!(registry.inner().fleet().await.is_ok());
    /// assert_eq!(registry.total_calls(), 0);
    /// # Ok(()) }
    /// ```
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Turns the outage on or off: while on, every call the filter selects
    /// ([`fail_only`](Self::fail_only); all calls by default) fails with
    /// [`Error::Unavailable`] without reaching the inner registry. It does not spend the
    /// [`fail_next`](Self::fail_next) budget.
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.set_unavailable(true);
    /// assert!(registry.fleet().await.unwrap_err().is_retryable());
    /// registry.set_unavailable(false);
    /// assert!(registry.fleet().await.is_ok());
    /// # Ok(()) }
    /// ```
    pub fn set_unavailable(&self, on: bool) {
        self.state.unavailable.store(on, Ordering::SeqCst);
    }

    /// Whether the outage of [`set_unavailable`](Self::set_unavailable) is on.
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::InMemoryRegistry;
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// assert!(!registry.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        self.state.unavailable.load(Ordering::SeqCst)
    }

    /// Makes the next `n` calls that the filter selects fail with [`Error::Unavailable`]; the
    /// ones after succeed again. Replaces any budget left (`fail_next(0)` cancels it).
    /// Concurrent calls each take one from the budget, so exactly `n` fail.
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.fail_next(2);
    /// assert!(registry.fleet().await.is_err());
    /// assert!(registry.stamp(StampId(1)).await.is_err());
    /// assert!(registry.fleet().await.is_ok());
    /// assert_eq!(registry.injected_failures(), 2);
    /// # Ok(()) }
    /// ```
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Selects which calls the faults apply to: [`set_unavailable`](Self::set_unavailable),
    /// [`fail_next`](Self::fail_next) and [`hold`](Self::hold) affect only the calls for which
    /// `filter` returns `true`; the others are always forwarded at once (and still counted).
    /// Replaces the previous filter; [`fail_all`](Self::fail_all) restores the default (every
    /// call).
    ///
    /// ```
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.fail_only(|call| call == Call::ChangesSince); // the feed is down, lookups work
    /// registry.set_unavailable(true);
    /// assert!(registry.changes_since(Version(0), 10).await.is_err());
    /// assert!(registry.fleet().await.is_ok());
    /// registry.fail_only(Call::is_read); // now every read fails, writes go through
    /// assert!(registry.fleet().await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn fail_only(&self, filter: impl Fn(Call) -> bool + Send + Sync + 'static) {
        *self.state.filter.write() = Some(Arc::new(filter));
    }

    /// Removes the filter of [`fail_only`](Self::fail_only): faults apply to every call again.
    ///
    /// ```
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.fail_only(|call| call == Call::Assign);
    /// registry.set_unavailable(true);
    /// assert!(registry.fleet().await.is_ok());
    /// registry.fail_all();
    /// assert!(registry.fleet().await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn fail_all(&self) {
        *self.state.filter.write() = None;
    }

    /// Holds the calls the filter selects on `gate`: each waits for a permit before it goes
    /// on (to the before hook and the fault check, then the inner registry) and keeps it
    /// until the call returns (its after hook included). `Semaphore::new(0)` holds every call until the test adds permits; with
    /// `k` permits at most `k` selected calls are in flight at once. If the semaphore is
    /// closed, waiting calls fail with [`Error::Unavailable`]. Replaces any previous gate;
    /// calls already waiting on it keep waiting on it.
    ///
    /// (Available whenever `test-util` is, which enables `tokio`.)
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// use tokio::sync::Semaphore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// let gate = Arc::new(Semaphore::new(0));
    /// registry.hold(gate.clone());
    /// let held = tokio::spawn({
    ///     let registry = registry.clone();
    ///     async move { registry.fleet().await }
    /// });
    /// tokio::task::yield_now().await;
    /// assert_eq!(registry.calls(Call::Fleet), 1); // counted, but waiting
    /// assert!(!held.is_finished());
    /// gate.add_permits(1);
    /// assert!(held.await.unwrap().is_ok());
    /// registry.release_hold();
    /// # Ok(()) }
    /// ```
    pub fn hold(&self, gate: Arc<Semaphore>) {
        *self.state.gate.write() = Some(gate);
    }

    /// Removes the gate of [`hold`](Self::hold) for calls made from now on; calls already
    /// waiting keep waiting for a permit of the old semaphore (add permits or close it).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.hold(Arc::new(tokio::sync::Semaphore::new(0)));
    /// registry.release_hold();
    /// assert!(registry.fleet().await.is_ok()); // not held
    /// # Ok(()) }
    /// ```
    pub fn release_hold(&self) {
        *self.state.gate.write() = None;
    }

    /// How many times `call` was made on the wrapper, failed or held ones included.
    ///
    /// ```
    /// use stamps::testing::{Call, FaultyRegistry};
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.stamp(StampId(7)).await?;
    /// assert_eq!(registry.calls(Call::Stamp), 1);
    /// assert_eq!(registry.calls(Call::Fleet), 0);
    /// # Ok(()) }
    /// ```
    pub fn calls(&self, call: Call) -> usize {
        self.state.counts[call.index()].load(Ordering::SeqCst)
    }

    /// How many calls were made on the wrapper, all methods together (not counting
    /// [`Registry::change_signal`]).
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.fleet().await?;
    /// registry.migrations(None).await?;
    /// let _ = registry.change_signal();
    /// assert_eq!(registry.total_calls(), 2);
    /// # Ok(()) }
    /// ```
    pub fn total_calls(&self) -> usize {
        self.state.counts.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// How many calls failed with an injected [`Error::Unavailable`] (not counting errors the
    /// inner registry returned).
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.set_stamp_state(StampId(9), StampState::Active).await.unwrap_err(); // NotFound
    /// assert_eq!(registry.injected_failures(), 0);
    /// # Ok(()) }
    /// ```
    pub fn injected_failures(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// Sets every counter ([`calls`](Self::calls), [`injected_failures`](Self::injected_failures))
    /// back to zero; the faults stay as they are.
    ///
    /// ```
    /// use stamps::testing::FaultyRegistry;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> stamps::Result<()> {
    /// let registry = FaultyRegistry::new(InMemoryRegistry::new());
    /// registry.fleet().await?;
    /// registry.reset_counts();
    /// assert_eq!(registry.total_calls(), 0);
    /// # Ok(()) }
    /// ```
    pub fn reset_counts(&self) {
        for c in &self.state.counts {
            c.store(0, Ordering::SeqCst);
        }
        self.state.injected.store(0, Ordering::SeqCst);
    }

    /// Counts the call, waits at the gate, runs the before hook and injects a failure, in
    /// that order (the gate and the failure for the calls the filter selects). The permit, if
    /// any, is held until the call is [left](Self::leave).
    async fn enter(&self, request: &Request<'_>) -> Result<Entered> {
        let call = request.call();
        let st = &*self.state;
        st.counts[call.index()].fetch_add(1, Ordering::SeqCst);
        let filter = st.filter.read().clone();
        let selected = filter.is_none_or(|f| f(call));
        let gate = if selected { st.gate.read().clone() } else { None };
        let permit = match gate {
            Some(gate) => match gate.acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return Err(self.injected(call, "its hold semaphore was closed")),
            },
            None => None,
        };
        if let Some(hook) = st.hooks.before(call) {
            hook(request).await?;
        }
        if !selected {
            return Ok(Entered {
                _permit: permit,
                selected,
            });
        }
        if st.unavailable.load(Ordering::SeqCst) {
            return Err(self.injected(call, "it is set unavailable"));
        }
        if st
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(self.injected(call, "fail_next"));
        }
        Ok(Entered {
            _permit: permit,
            selected,
        })
    }

    /// Runs the after hook on the inner registry's outcome and loses the acknowledgement if
    /// that budget is not spent; then releases the permit.
    async fn leave<T>(&self, request: &Request<'_>, entered: Entered, outcome: Result<T>) -> Result<T> {
        let call = request.call();
        let st = &*self.state;
        let mut outcome = outcome;
        if let Some(hook) = st.hooks.after(call) {
            let after = hook(request, outcome.as_ref().map(|_| ())).await;
            if let After::Replace(e) = after {
                outcome = Err(e);
            }
        }
        if entered.selected && st.hooks.take_lose_ack() {
            outcome = Err(self.injected(call, "lose_ack_next: the call reached the registry"));
        }
        drop(entered);
        outcome
    }

    fn injected(&self, call: Call, why: &str) -> Error {
        self.state.injected.fetch_add(1, Ordering::SeqCst);
        Error::unavailable(format!("FaultyRegistry failed `{call}` ({why})"))
    }
}

/// A call past [`FaultyRegistry::enter`]: its hold permit (if any) and whether the filter
/// selected it.
struct Entered {
    _permit: Option<OwnedSemaphorePermit>,
    selected: bool,
}
