//! Tenant migration between stamps: the [`Migration`] state machine the library drives and
//! persists, the [`MigrationDriver`] trait the host implements for its data plane, fencing at
//! the stamp ([`FenceToken`], [`Fence`]) and an in-memory [`reference`](mod@reference) data plane.
//!
//! The sequence is the one the guide "Deployment Stamps for Availability: Multi-Region Guide"
//! describes: snapshot, import, dual-write, validate, cut over, soak, clean up, with rollback
//! possible until cleanup starts, after cutover too. The runbook is `docs/migrations.md`.
//!
//! # How the assignment changes
//!
//! | state (its work) | assignment afterwards | fences raised |
//! | --- | --- | --- |
//! | `Planned` (checks) | source, `Serving` | — |
//! | `Snapshotting`, `Importing` | source, `Serving` | — |
//! | `DualWrite` (+ catch-up copy) | source, `DualWrite { shadow: destination }` | both, at the new epoch |
//! | `Validating` | unchanged | — |
//! | `CutOver`: freeze, drain, catch-up, final validation, move | destination, `DualWrite { shadow: source }` (reverse dual-write) | both, at the frozen epoch, then at the new epoch |
//! | `Soaking` (host check) | unchanged | — |
//! | `CleaningUp` (+ delete source data) | destination, `Serving` | source gives the tenant up |
//! | `RollingBack` (+ delete destination data) | source, `Serving` | destination gives the tenant up |
//!
//! Every assignment change is a compare-and-set on the epoch read just before; every epoch is
//! pushed to both stamps' fences through [`MigrationDriver::fence`] before the step counts, so
//! a writer routing by a stale cache is refused by the stamp ([`Fence`]) instead of writing
//! where the tenant no longer lives. Because a write is acknowledged only after every stamp of
//! its route admitted it, raising both fences is also the drain: after it, every write that
//! can still be acknowledged under the old epoch is on both stamps. A write that reached the
//! source but was fenced off the destination was never acknowledged; the catch-up under the
//! freeze copies it anyway, so that the final validation compares equal, quiescent data. The
//! freeze exists for that copy and that comparison.
//!
//! # Steps, persistence and crashes
//!
//! [`Migration::step`] does exactly one state's work:
//! 1. **claim**: saves the record with a lease (owner, expiry) and the attempt number; the
//!    registry's revision check makes a second worker fail here with
//!    [`Error::Conflict`](crate::Error::Conflict), before any effect;
//! 2. **work**: the state's idempotent effects (driver calls, assignment compare-and-sets);
//! 3. **commit**: saves the next state (again revision-checked). Only now does the work count.
//!
//! A crash between 2 and 3 leaves the record in the old state; [`Migrator::load`] (after the
//! lease expires) resumes, and the work is done again, which idempotency makes harmless.
//!
//! # Example
//! ```
//! use stamps::migration::reference::ReferenceDataPlane;
//! use stamps::migration::{MigrationConfig, Migrator};
//! use stamps::*;
//! use std::sync::Arc;
//! use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = FakeClock::new();
//! let registry = Arc::new(InMemoryRegistry::builder().clock(clock.clone()).build());
//! for id in [1, 2] {
//!     let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0)?;
//!     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?, cap)?).await?;
//! }
//! let acme = TenantId::new("acme")?;
//! registry.assign(&TenantSpec::new(acme.clone()), StampId(1)).await?;
//! let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
//! plane.write_via(registry.as_ref(), &acme, "greeting", "hello").await?;
//!
//! let migrator = Migrator::new(registry.clone(), Arc::new(plane.clone()))
//!     .clock(clock.clone())
//!     .config(MigrationConfig::default().soak_window(Duration::ZERO))?;
//! let plan = migrator.plan(&acme, StampId(2)).await?;
//! println!("{plan}"); // the dry run
//! let mut migration = migrator.start(&plan, "alice@example.com").await?;
//! while !migration.state().is_terminal() {
//!     migration.step().await?;
//! }
//! assert_eq!(migration.state(), MigrationState::Completed);
//! assert_eq!(registry.require_assignment(&acme).await?.stamp, StampId(2));
//! assert_eq!(plane.get(StampId(2), &acme, "greeting").as_deref(), Some("hello"));
//! assert_eq!(plane.get(StampId(1), &acme, "greeting"), None); // cleaned up
//! # Ok(()) }
//! ```

#[doc = include_str!("../../docs/migrations.md")]
pub mod runbook {}

/// Emits a `tracing` event when the `tracing` feature is on; nothing otherwise.
macro_rules! trace_event {
    ($($t:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::info!($($t)*);
        }
    };
}

mod driver;
mod fence;
mod gate;
#[cfg(feature = "tokio")]
mod heartbeat;
mod migrator;
mod operate;
mod plan;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod progress;
pub mod reference;
mod resolve;
mod soak;
mod steps;
mod worker;
mod write;

use std::time::Duration;

pub use driver::{
    DriverError, DriverErrorKind, DynMigrationDriver, MigrationContext, MigrationDriver, SideSummary, SnapshotInfo,
    TableCheck, ValidationReport,
};
pub use fence::{Fence, FenceRejection, FenceToken, RouteTokens};
pub use gate::WriteGate;
pub use migrator::Migrator;
pub use plan::{MigrationPlan, PlanCheck};
pub use progress::Progress;
pub use resolve::{Resolution, ResolveError};
pub use soak::{soak_check_fn, AlwaysHealthy, FnSoakCheck, SoakCheck, SoakVerdict};
pub use worker::{Migration, RunOutcome, StepOutcome};
pub use write::{write_with_route, RoutedWriteError, StampRefusal};

use crate::error::{InvalidInput, Result};

/// Tunables of the migration engine. The defaults: validation must be fresher than
/// 10 minutes, writes freeze for at most 5 seconds at cutover, the soak lasts 24 hours, a
/// worker's lease lasts 10 seconds and is renewed every 3⅓ while a step runs.
///
/// ```
/// use stamps::migration::MigrationConfig;
/// use std::time::Duration;
/// let c = MigrationConfig::default()
///     .soak_window(Duration::from_secs(48 * 3600))
///     .max_freeze(Duration::from_secs(2));
/// assert!(c.validate().is_ok());
/// assert!(MigrationConfig::default().max_attempts(0).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationConfig {
    /// Longest write freeze at cutover; a cutover that would freeze longer is refused and
    /// unfrozen.
    pub max_freeze: Duration,
    /// Oldest validation that still allows cutover.
    pub max_validation_age: Duration,
    /// Validate again during the freeze, on quiescent data (default on).
    pub validate_under_freeze: bool,
    /// How long to watch the tenant on the destination before deleting the source copy.
    pub soak_window: Duration,
    /// How often `Migration::run` re-checks during the soak.
    pub soak_poll: Duration,
    /// Longest a step may take under `Migration::run` (default 30 s; raise it for imports that
    /// take longer: the heartbeat keeps the lease meanwhile).
    pub step_timeout: Duration,
    /// How long a worker's claim on a step keeps other workers out unless renewed (default
    /// 10 s). With the `tokio` feature a heartbeat renews it every third of this while a step
    /// runs, so a step may take longer than the lease (up to `step_timeout` under
    /// `Migration::run`), and a dead worker's migration can be taken over within one lease.
    /// A worker that cannot renew (the registry unreachable) abandons its step before the
    /// lease runs out. Without `tokio` there is no heartbeat: keep every step shorter than the
    /// lease. Must be below `max_validation_age`, so a migration resumed after a dead worker
    /// still has a fresh validation. Operator commands need no lease (see `Migration::cancel`).
    pub lease: Duration,
    /// Consecutive retryable failures of a state before they count as permanent; a successful
    /// poll or wait (a healthy soak check, say) starts the count again.
    pub max_attempts: u32,
    /// First retry delay under `Migration::run`; doubles per attempt.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            max_freeze: Duration::from_secs(5),
            max_validation_age: Duration::from_secs(600),
            validate_under_freeze: true,
            soak_window: Duration::from_secs(24 * 3600),
            soak_poll: Duration::from_secs(60),
            step_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(10),
            max_attempts: 5,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl MigrationConfig {
    /// Sets [`max_freeze`](Self::max_freeze).
    pub fn max_freeze(mut self, d: Duration) -> Self {
        self.max_freeze = d;
        self
    }
    /// Sets [`max_validation_age`](Self::max_validation_age).
    pub fn max_validation_age(mut self, d: Duration) -> Self {
        self.max_validation_age = d;
        self
    }
    /// Sets [`validate_under_freeze`](Self::validate_under_freeze).
    pub fn validate_under_freeze(mut self, on: bool) -> Self {
        self.validate_under_freeze = on;
        self
    }
    /// Sets [`soak_window`](Self::soak_window).
    pub fn soak_window(mut self, d: Duration) -> Self {
        self.soak_window = d;
        self
    }
    /// Sets [`soak_poll`](Self::soak_poll).
    pub fn soak_poll(mut self, d: Duration) -> Self {
        self.soak_poll = d;
        self
    }
    /// Sets [`step_timeout`](Self::step_timeout).
    pub fn step_timeout(mut self, d: Duration) -> Self {
        self.step_timeout = d;
        self
    }
    /// Sets [`lease`](Self::lease).
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets the retry backoff (initial and maximum delay).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Checks the settings: at least one attempt, a lease above zero and below
    /// `max_validation_age`, a non-zero freeze, and `backoff_initial <= backoff_max`.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(InvalidInput::new("max_attempts", "must be at least 1").into());
        }
        if self.lease.is_zero() || self.lease >= self.max_validation_age {
            return Err(InvalidInput::new("lease", "must be above zero and below max_validation_age").into());
        }
        if self.max_freeze.is_zero() {
            return Err(InvalidInput::new("max_freeze", "must be greater than zero").into());
        }
        if self.backoff_initial > self.backoff_max {
            return Err(InvalidInput::new("backoff_initial", "must not exceed backoff_max").into());
        }
        Ok(())
    }
}
