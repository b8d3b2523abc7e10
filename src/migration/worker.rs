//! The migration engine: [`Migrator`] (plan, start, load), [`Migration`] (step, run, cancel,
//! rollback).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::time::Duration;

use super::driver::{
    AlwaysHealthy, DriverError, DynMigrationDriver, MigrationContext, SnapshotInfo, SoakCheck, SoakVerdict,
    ValidationReport,
};
use super::MigrationConfig;
use crate::error::{ConflictKind, Error, InvalidInput, Result, Subject};
use crate::model::{
    Assignment, AssignmentChange, AssignmentMode, Epoch, MigrationId, MigrationRecord, MigrationState, StampId,
    StampState, TenantId,
};
use crate::registry::{admission, DynRegistry};
use crate::time::{Clock, SystemClock, Timestamp};

use MigrationState as S;

/// Emits a `tracing` event when the `tracing` feature is on; nothing otherwise.
macro_rules! trace_event {
    ($($t:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::info!($($t)*);
        }
    };
}

/// Names of the fields the engine keeps in [`MigrationRecord::data`]. Driver-independent; read
/// them in dashboards and audits, do not write them.
///
/// ```
/// use stamps::migration::keys;
/// use std::collections::BTreeMap;
/// let data = BTreeMap::from([(keys::VALIDATION_PASSED.to_string(), "true".to_string())]);
/// assert_eq!(data.get(keys::VALIDATION_PASSED).map(String::as_str), Some("true"));
/// ```
pub mod keys {
    /// Who started the migration (a person or tool, required by [`Migrator::start`](super::Migrator::start)).
    pub const INITIATED_BY: &str = "initiated_by";
    /// The assignment epoch when the migration was planned.
    pub const PLANNED_EPOCH: &str = "planned_epoch";
    /// Attempt number of the current state's work.
    pub const ATTEMPT: &str = "attempt";
    /// The worker holding the step lease.
    pub const LEASE_OWNER: &str = "lease.owner";
    /// Lease expiry (milliseconds since the Unix epoch).
    pub const LEASE_UNTIL: &str = "lease.until";
    /// The last retryable failure of the current state.
    pub const LAST_ERROR: &str = "last_error";
    /// Snapshot id from the driver.
    pub const SNAPSHOT_ID: &str = "snapshot.id";
    /// Rows in the snapshot.
    pub const SNAPSHOT_ROWS: &str = "snapshot.rows";
    /// `true` or `false`: the last validation's verdict.
    pub const VALIDATION_PASSED: &str = "validation.passed";
    /// When the last validation ran (ms).
    pub const VALIDATION_AT: &str = "validation.at";
    /// The last validation's per-table summary.
    pub const VALIDATION_SUMMARY: &str = "validation.summary";
    /// Why the last cutover was refused.
    pub const CUTOVER_REFUSED: &str = "cutover.refused";
    /// The epoch at which the tenant moved to the destination.
    pub const CUTOVER_EPOCH: &str = "cutover.epoch";
    /// When the soak started (ms).
    pub const SOAK_STARTED_AT: &str = "soak.started_at";
    /// When the soak check last ran (ms).
    pub const SOAK_LAST_CHECK: &str = "soak.last_check";
    /// The state a rollback or cancel started in.
    pub const ROLLBACK_FROM: &str = "rollback.from";
    /// Where the rollback ends: `rolled_back` or `cancelled`.
    pub const ROLLBACK_OUTCOME: &str = "rollback.outcome";
    /// Why the rollback started (soak verdict, failure, the operator's words).
    pub const ROLLBACK_REASON: &str = "rollback.reason";
    /// Who asked for the rollback or cancel.
    pub const ROLLBACK_BY: &str = "rollback.by";
    /// The state whose work failed permanently.
    pub const FAILURE_STATE: &str = "failure.state";
    /// The permanent failure.
    pub const FAILURE_ERROR: &str = "failure.error";
}

static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// Starts, plans and resumes migrations: the registry, the host's driver, the clock, the soak
/// check and the configuration, shared by every [`Migration`] it hands out. Cheap to clone.
///
/// Migrations are started by people (the seed's red flag 3): the library has no automatic
/// trigger, [`Migrator::start`] requires the name of whoever starts it, and
/// [`Migrator::plan`] is the dry run.
///
/// ```
/// use stamps::migration::reference::ReferenceDataPlane;
/// use stamps::migration::Migrator;
/// use stamps::*;
/// use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Arc::new(InMemoryRegistry::new());
/// for id in [1, 2] {
///     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
/// }
/// let t = TenantId::new("globex")?;
/// registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
/// let plan = migrator.plan(&t, StampId(2)).await?;
/// assert!(plan.is_feasible());
/// assert!(plan.to_string().contains("cut_over"));
/// // Nothing was written by the dry run.
/// assert!(registry.migrations(Some(&t)).await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Migrator {
    registry: Arc<DynRegistry>,
    driver: Arc<DynMigrationDriver>,
    clock: Arc<dyn Clock>,
    soak: Arc<dyn SoakCheck>,
    config: MigrationConfig,
    worker: String,
}

impl fmt::Debug for Migrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migrator")
            .field("registry", &self.registry)
            .field("driver", &self.driver)
            .field("soak", &self.soak)
            .field("config", &self.config)
            .field("worker", &self.worker)
            .finish()
    }
}

impl Migrator {
    /// A migrator on the system clock, with the default configuration and a soak check that
    /// always says healthy.
    pub fn new(registry: Arc<DynRegistry>, driver: Arc<DynMigrationDriver>) -> Self {
        Migrator {
            registry,
            driver,
            clock: Arc::new(SystemClock),
            soak: Arc::new(AlwaysHealthy),
            config: MigrationConfig::default(),
            worker: format!("worker-{}", std::process::id()),
        }
    }

    /// Uses `clock` for freezes, validation freshness, soak windows and leases.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Uses `check` to judge the tenant during the soak.
    pub fn with_soak_check(mut self, check: impl SoakCheck) -> Self {
        self.soak = Arc::new(check);
        self
    }

    /// Uses `config` (checked with [`MigrationConfig::validate`]).
    pub fn with_config(mut self, config: MigrationConfig) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// Names this process's workers in leases (default `worker-<pid>`).
    pub fn with_worker_name(mut self, name: impl Into<String>) -> Self {
        self.worker = name.into();
        self
    }

    /// The configuration.
    pub fn config(&self) -> &MigrationConfig {
        &self.config
    }

    /// The dry run: checks whether `tenant` can move to `destination` and lists what each step
    /// will do, without writing anything. Fails only if the tenant has no assignment or the
    /// registry cannot be read; failed checks are in the plan ([`MigrationPlan::is_feasible`]).
    pub async fn plan(&self, tenant: &TenantId, destination: StampId) -> Result<MigrationPlan> {
        let assignment = self
            .registry
            .assignment(tenant)
            .await?
            .ok_or_else(|| Error::NotFound(Subject::Tenant(tenant.clone())))?;
        let fleet = self.registry.fleet().await?;
        let source = assignment.stamp;
        let mut checks = Vec::new();
        checks.push(PlanCheck::new(
            "destination differs from the source",
            destination != source,
            format!("{source} -> {destination}"),
        ));
        let dest = fleet.get(destination);
        checks.push(PlanCheck::new(
            "destination is registered and active",
            dest.is_some_and(|l| l.stamp.state == StampState::Active),
            dest.map_or_else(|| "not registered".to_string(), |l| l.stamp.state.to_string()),
        ));
        checks.push(PlanCheck::new(
            "tenant is serving (no migration mode in place)",
            assignment.mode == AssignmentMode::Serving,
            assignment.mode.to_string(),
        ));
        let active: Vec<MigrationId> = self
            .registry
            .migrations(Some(tenant))
            .await?
            .into_iter()
            .filter(|m| !m.state.is_terminal())
            .map(|m| m.id)
            .collect();
        checks.push(PlanCheck::new(
            "no other migration in progress for the tenant",
            active.is_empty(),
            if active.is_empty() {
                "none".to_string()
            } else {
                active.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            },
        ));
        if destination != source {
            let mut shadowed = assignment.clone();
            shadowed.mode = AssignmentMode::DualWrite { shadow: destination };
            let fit = admission::check(Some(&assignment), Some(&shadowed), |s| fleet.get(s));
            checks.push(PlanCheck::new(
                "destination has room for the tenant's demand",
                fit.is_ok(),
                match fit {
                    Ok(()) => "fits within hard limits".to_string(),
                    Err(e) => e.to_string(),
                },
            ));
        }
        Ok(MigrationPlan {
            tenant: tenant.clone(),
            source,
            destination,
            epoch: assignment.epoch,
            checks,
            config: self.config.clone(),
        })
    }

    /// Starts a planned migration on behalf of `initiated_by` (a person or tool, recorded in
    /// the migration record). Creates the record in `Planned`; nothing else happens until
    /// [`Migration::step`] or [`Migration::run`].
    ///
    /// Fails with [`Error::InvalidInput`] if the plan is not feasible or `initiated_by` is
    /// empty, with [`Error::Conflict`] if the tenant's assignment changed since the plan, and
    /// with [`Error::AlreadyExists`] if another migration of the tenant is in progress.
    ///
    /// ```
    /// # use stamps::migration::reference::ReferenceDataPlane;
    /// # use stamps::migration::*;
    /// # use stamps::*;
    /// # use std::sync::Arc;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let registry = Arc::new(InMemoryRegistry::new());
    /// # for id in [1, 2] {
    /// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
    /// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
    /// # }
    /// # let t = TenantId::new("umbrella")?;
    /// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
    /// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
    /// let plan = migrator.plan(&t, StampId(2)).await?;
    /// let m = migrator.start(&plan, "carol (ticket OPS-1234)").await?;
    /// assert_eq!(m.state(), MigrationState::Planned);
    /// assert_eq!(m.record().data[keys::INITIATED_BY], "carol (ticket OPS-1234)");
    /// # Ok(()) }
    /// ```
    pub async fn start(&self, plan: &MigrationPlan, initiated_by: &str) -> Result<Migration> {
        if initiated_by.trim().is_empty() {
            return Err(
                InvalidInput::new("initiated_by", "must name the person or tool starting the migration").into(),
            );
        }
        if !plan.is_feasible() {
            return Err(InvalidInput::new("plan", "has failed checks; print it to see which").into());
        }
        let current = self
            .registry
            .assignment(&plan.tenant)
            .await?
            .ok_or_else(|| Error::NotFound(Subject::Tenant(plan.tenant.clone())))?;
        if current.epoch != plan.epoch {
            return Err(Error::Conflict {
                kind: ConflictKind::Epoch,
                expected: plan.epoch.0,
                actual: current.epoch.0,
            });
        }
        let mut record = MigrationRecord::planned(plan.tenant.clone(), plan.source, plan.destination);
        record.data.insert(keys::INITIATED_BY.into(), initiated_by.to_string());
        record.data.insert(keys::PLANNED_EPOCH.into(), plan.epoch.0.to_string());
        let record = self.registry.create_migration(record).await?;
        trace_event!(
            migration = %record.id, tenant = %record.tenant, source = %record.source,
            destination = %record.destination, initiated_by, "migration started"
        );
        Ok(self.adopt(record))
    }

    /// Resumes a migration from its persisted record (after a crash, on another worker, from
    /// an admin endpoint).
    ///
    /// ```
    /// # use stamps::migration::reference::ReferenceDataPlane;
    /// # use stamps::migration::*;
    /// # use stamps::*;
    /// # use std::sync::Arc;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let registry = Arc::new(InMemoryRegistry::new());
    /// # for id in [1, 2] {
    /// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
    /// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
    /// # }
    /// # let t = TenantId::new("umbrella")?;
    /// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
    /// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
    /// let id = migrator.start(&migrator.plan(&t, StampId(2)).await?, "dave").await?.id();
    /// // ... the process restarts ...
    /// let mut resumed = migrator.load(id).await?;
    /// resumed.step().await?;
    /// assert_eq!(resumed.state(), MigrationState::Snapshotting);
    /// # Ok(()) }
    /// ```
    pub async fn load(&self, id: MigrationId) -> Result<Migration> {
        let record = self
            .registry
            .migration(id)
            .await?
            .ok_or(Error::NotFound(Subject::Migration(id)))?;
        Ok(self.adopt(record))
    }

    fn adopt(&self, record: MigrationRecord) -> Migration {
        let n = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
        Migration {
            migrator: self.clone(),
            worker: format!("{}#{n}", self.worker),
            record,
            unsure: false,
        }
    }
}

/// One check of a [`MigrationPlan`].
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::migration::*;
/// # use stamps::*;
/// # use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = Arc::new(InMemoryRegistry::new());
/// # for id in [1, 2] {
/// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
/// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
/// # }
/// # let t = TenantId::new("umbrella")?;
/// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
/// let plan = migrator.plan(&t, StampId(1)).await?; // the stamp it is already on
/// let failed: Vec<_> = plan.checks.iter().filter(|c| !c.ok).map(|c| c.what).collect();
/// assert_eq!(failed, ["destination differs from the source"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanCheck {
    /// What was checked.
    pub what: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl PlanCheck {
    fn new(what: &'static str, ok: bool, detail: String) -> Self {
        PlanCheck { what, ok, detail }
    }
}

/// The dry run of a migration: the checks and the steps, printable with `{}`.
/// Made by [`Migrator::plan`], consumed by [`Migrator::start`].
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::migration::*;
/// # use stamps::*;
/// # use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = Arc::new(InMemoryRegistry::new());
/// # for id in [1, 2] {
/// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
/// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
/// # }
/// # let t = TenantId::new("umbrella")?;
/// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
/// let plan = migrator.plan(&t, StampId(2)).await?;
/// assert!(plan.is_feasible());
/// assert_eq!(plan.steps().len(), 9);
/// assert!(plan.to_string().starts_with("migration plan: tenant umbrella from stamp-001 to stamp-002"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationPlan {
    /// The tenant.
    pub tenant: TenantId,
    /// Its current stamp.
    pub source: StampId,
    /// Where it would go.
    pub destination: StampId,
    /// Its assignment epoch when planned (start refuses if it changed).
    pub epoch: Epoch,
    /// Preconditions.
    pub checks: Vec<PlanCheck>,
    /// The configuration the migration would run with.
    pub config: MigrationConfig,
}

impl MigrationPlan {
    /// Whether every check passed.
    pub fn is_feasible(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The steps, each a state and what its work does.
    pub fn steps(&self) -> Vec<(MigrationState, String)> {
        let (t, s, d) = (&self.tenant, self.source, self.destination);
        let c = &self.config;
        vec![
            (S::Planned, format!("check that {t} is serving on {s} and {d} exists")),
            (S::Snapshotting, format!("snapshot {t}'s data on {s}")),
            (S::Importing, format!("import the snapshot into {d}")),
            (
                S::DualWrite,
                format!("route writes to {s} and {d} (dual-write), fence both stamps, copy what changed since the snapshot"),
            ),
            (S::Validating, "compare row counts and checksums on both stamps".to_string()),
            (
                S::CutOver,
                format!(
                    "freeze writes (at most {:?}), drain through the fences, copy what is left, validate again{}, point {t} at {d} with reverse dual-write to {s}; refused if validation failed or is older than {:?}",
                    c.max_freeze,
                    if c.validate_under_freeze { "" } else { " (disabled)" },
                    c.max_validation_age
                ),
            ),
            (
                S::Soaking,
                format!("serve from {d} for {:?}, checking health; an unhealthy verdict rolls back to {s}", c.soak_window),
            ),
            (S::CleaningUp, format!("stop reverse dual-write, fence {s} off, delete {t}'s data on {s}")),
            (S::Completed, "done".to_string()),
        ]
    }
}

impl fmt::Display for MigrationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "migration plan: tenant {} from {} to {} (assignment epoch {})",
            self.tenant, self.source, self.destination, self.epoch
        )?;
        writeln!(f, "checks:")?;
        for c in &self.checks {
            writeln!(f, "  [{}] {}: {}", if c.ok { "ok" } else { "FAILED" }, c.what, c.detail)?;
        }
        writeln!(f, "steps:")?;
        for (i, (state, what)) in self.steps().iter().enumerate() {
            writeln!(f, "  {}. {:<13} {}", i + 1, state.as_str(), what)?;
        }
        write!(
            f,
            "rollback: possible until cleaning_up starts; cancel: possible before cut_over. {}",
            if self.is_feasible() {
                "feasible: start it with Migrator::start"
            } else {
                "NOT feasible"
            }
        )
    }
}

/// What one [`Migration::step`] did.
///
/// ```
/// use stamps::migration::StepOutcome;
/// use stamps::MigrationState as S;
/// let o = StepOutcome::Advanced { from: S::Validating, to: S::CutOver };
/// let step_again_now = matches!(o, StepOutcome::Advanced { to, .. } if !to.is_terminal());
/// assert!(step_again_now);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// The state's work was done and the next state persisted.
    Advanced {
        /// The state the step worked on.
        from: MigrationState,
        /// The state persisted.
        to: MigrationState,
    },
    /// Soaking, healthy, the window not over yet: step again later.
    Waiting {
        /// The state (`Soaking`).
        state: MigrationState,
        /// When the window ends.
        until: Timestamp,
    },
    /// Validation failed: the migration stays in `Validating` until a person repairs the data
    /// and steps again, or rolls back / cancels.
    Blocked {
        /// The state (`Validating`).
        state: MigrationState,
        /// The validation summary.
        reason: String,
    },
    /// Cutover refused (validation failed under the freeze or was stale, or the freeze would
    /// have overrun): writes were unfrozen and the migration went back to `Validating`.
    Refused {
        /// Why.
        reason: String,
    },
    /// A retryable failure; nothing advanced. Step again (after a backoff).
    Retry {
        /// The state.
        state: MigrationState,
        /// Attempts made on this state so far.
        attempt: u32,
        /// What failed.
        reason: String,
    },
    /// The migration had already ended.
    Finished {
        /// Its terminal state.
        state: MigrationState,
    },
}

/// How `Migration::run` (feature `tokio`) ended.
///
/// ```
/// use stamps::migration::RunOutcome;
/// use stamps::MigrationState as S;
/// let o = RunOutcome::Blocked { state: S::Validating, reason: "validation failed".into() };
/// assert!(!matches!(o, RunOutcome::Finished(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// A terminal state.
    Finished(MigrationState),
    /// Stopped for a person: validation failed or cutover was refused.
    Blocked {
        /// The state it stopped in.
        state: MigrationState,
        /// Why.
        reason: String,
    },
}

/// What a state's work decided.
enum Next {
    To(MigrationState, Vec<(&'static str, String)>),
    Wait(Timestamp, Vec<(&'static str, String)>),
    Block(String, Vec<(&'static str, String)>),
    Refuse(String, Vec<(&'static str, String)>),
}

/// Why a state's work stopped.
enum StepError {
    Driver(DriverError),
    Registry(Error),
    /// The world is not as the migration left it (someone moved the tenant by hand): stop for
    /// a person without touching anything.
    Unexpected(String),
}

impl From<DriverError> for StepError {
    fn from(e: DriverError) -> Self {
        StepError::Driver(e)
    }
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        StepError::Registry(e)
    }
}

impl StepError {
    fn is_retryable(&self) -> bool {
        match self {
            StepError::Driver(e) => e.is_retryable(),
            StepError::Registry(e) => e.is_retryable(),
            StepError::Unexpected(_) => false,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Driver(e) => e.fmt(f),
            StepError::Registry(e) => e.fmt(f),
            StepError::Unexpected(s) => write!(f, "unexpected assignment: {s}"),
        }
    }
}

type Work = std::result::Result<Next, StepError>;

/// A tenant migration, driven one persisted step at a time.
///
/// Get one from [`Migrator::start`] or [`Migrator::load`]. Each value is one *worker*: it
/// claims steps under its own lease name, so two values loaded from the same record race,
/// and the loser gets [`Error::Conflict`] before doing anything.
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::migration::{Migrator, StepOutcome};
/// # use stamps::*;
/// # use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let registry = Arc::new(InMemoryRegistry::new());
/// # for id in [1, 2] {
/// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
/// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
/// # }
/// # let t = TenantId::new("initech")?;
/// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
/// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "bob").await?;
/// assert_eq!(m.step().await?, StepOutcome::Advanced { from: MigrationState::Planned, to: MigrationState::Snapshotting });
/// // A second worker on the same record, holding an old revision, loses.
/// let mut other = migrator.load(m.id()).await?;
/// m.step().await?;
/// assert!(matches!(other.step().await, Err(Error::Conflict { .. })));
/// // Changed our mind before cutover.
/// assert_eq!(m.cancel("bob", "wrong tenant").await?, MigrationState::RollingBack);
/// m.step().await?;
/// assert_eq!(m.state(), MigrationState::Cancelled);
/// # Ok(()) }
/// ```
pub struct Migration {
    migrator: Migrator,
    worker: String,
    record: MigrationRecord,
    /// A save of `record` failed without a definite answer (`Unavailable`, `Backend`): on a
    /// networked registry the write may have committed with its acknowledgement lost, so
    /// `record` may be stale. The next step, cancel or rollback re-reads it first.
    unsure: bool,
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("id", &self.record.id)
            .field("tenant", &self.record.tenant)
            .field("state", &self.record.state)
            .field("revision", &self.record.revision)
            .field("worker", &self.worker)
            .finish()
    }
}

fn parse_ms(data: &BTreeMap<String, String>, key: &str) -> Option<Timestamp> {
    data.get(key).and_then(|v| v.parse().ok()).map(Timestamp::from_millis)
}

impl Migration {
    /// The migration's id.
    pub fn id(&self) -> MigrationId {
        self.record.id
    }

    /// The persisted state, as this worker last read or wrote it.
    pub fn state(&self) -> MigrationState {
        self.record.state
    }

    /// The record as this worker last read or wrote it.
    pub fn record(&self) -> &MigrationRecord {
        &self.record
    }

    /// This worker's lease name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Re-reads the record from the registry (after a `Conflict`, or to watch another worker).
    pub async fn reload(&mut self) -> Result<()> {
        self.record = self
            .migrator
            .registry
            .migration(self.record.id)
            .await?
            .ok_or(Error::NotFound(Subject::Migration(self.record.id)))?;
        self.unsure = false;
        Ok(())
    }

    /// Re-reads the record if the last save may have taken effect unacknowledged.
    async fn settle(&mut self) -> Result<()> {
        if self.unsure {
            self.reload().await?;
            trace_event!(
                migration = %self.record.id, state = %self.record.state, revision = self.record.revision,
                "record re-read after an unacknowledged save"
            );
        }
        Ok(())
    }

    /// The last validation: passed, when, summary.
    pub fn last_validation(&self) -> Option<(bool, Timestamp, &str)> {
        let d = &self.record.data;
        let passed = d.get(keys::VALIDATION_PASSED)? == "true";
        let at = parse_ms(d, keys::VALIDATION_AT)?;
        Some((passed, at, d.get(keys::VALIDATION_SUMMARY).map_or("", String::as_str)))
    }

    /// The permanent failure that stopped or rolled back the migration: state and error.
    pub fn failure(&self) -> Option<(&str, &str)> {
        let d = &self.record.data;
        Some((
            d.get(keys::FAILURE_STATE)?.as_str(),
            d.get(keys::FAILURE_ERROR)?.as_str(),
        ))
    }

    fn attempt(&self) -> u32 {
        self.record
            .data
            .get(keys::ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    }

    fn actor(&self) -> String {
        self.record.id.to_string()
    }

    /// Fails with `Conflict` if another worker holds a live lease on the record.
    fn check_lease(&self, now: Timestamp) -> Result<()> {
        let d = &self.record.data;
        if let (Some(owner), Some(until)) = (d.get(keys::LEASE_OWNER), parse_ms(d, keys::LEASE_UNTIL)) {
            if owner != &self.worker && until > now {
                return Err(Error::Conflict {
                    kind: ConflictKind::Revision,
                    expected: self.record.revision,
                    actual: self.record.revision,
                });
            }
        }
        Ok(())
    }

    /// Saves `record` (revision-checked) and adopts the result.
    async fn save(&mut self, mut record: MigrationRecord, release_lease: bool) -> Result<()> {
        if release_lease {
            record.data.remove(keys::LEASE_OWNER);
            record.data.remove(keys::LEASE_UNTIL);
        }
        match self.migrator.registry.save_migration(&record).await {
            Ok(saved) => {
                self.record = saved;
                Ok(())
            }
            Err(e) => {
                // A rejection is definite (nothing was written); a lost connection is not.
                self.unsure = matches!(e, Error::Unavailable { .. } | Error::Backend { .. });
                Err(e)
            }
        }
    }

    /// Persists a transition to `next` with `updates`, releasing the lease and resetting the
    /// attempt counter.
    async fn commit(&mut self, next: MigrationState, updates: Vec<(&'static str, String)>) -> Result<StepOutcome> {
        let from = self.record.state;
        from.transition(next)?;
        let mut rec = self.record.clone();
        rec.state = next;
        rec.data.remove(keys::ATTEMPT);
        rec.data.remove(keys::LAST_ERROR);
        for (k, v) in updates {
            rec.data.insert(k.to_string(), v);
        }
        self.save(rec, true).await?;
        trace_event!(
            migration = %self.record.id, tenant = %self.record.tenant, from = %from, to = %next,
            revision = self.record.revision, "migration transition"
        );
        Ok(StepOutcome::Advanced { from, to: next })
    }

    /// Persists data without changing state, releasing the lease.
    async fn note(&mut self, updates: Vec<(&'static str, String)>) -> Result<()> {
        let mut rec = self.record.clone();
        for (k, v) in updates {
            rec.data.insert(k.to_string(), v);
        }
        self.save(rec, true).await
    }

    /// Does exactly one step: claims the current state (lease + attempt, revision-checked),
    /// does its work through the driver and the registry, and persists the result.
    ///
    /// Errors are registry errors only: [`Error::Conflict`] when another worker claimed or
    /// advanced the migration, or holds a live lease on it (reload to watch it; do not fight
    /// it; a crashed worker's lease expires after [`MigrationConfig::lease`]), [`Error::Unavailable`]
    /// when the registry could not be reached (step again later). A save that failed without
    /// a definite answer (`Unavailable` or `Backend`: on a database, the connection may have
    /// broken after the commit, so the write may have taken effect) makes the next `step`,
    /// [`cancel`](Self::cancel) or [`rollback`](Self::rollback) re-read the record first,
    /// so stepping again is always safe. Driver failures are
    /// outcomes: [`StepOutcome::Retry`] for retryable ones (until
    /// [`MigrationConfig::max_attempts`]), a transition to `RollingBack` (or `Failed` in
    /// `CleaningUp`/`RollingBack`) for permanent ones, with the failure recorded.
    pub async fn step(&mut self) -> Result<StepOutcome> {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            let span = tracing::info_span!(
                "migration_step",
                migration = %self.record.id,
                tenant = %self.record.tenant,
                state = %self.record.state,
                worker = %self.worker,
            );
            self.step_inner().instrument(span).await
        }
        #[cfg(not(feature = "tracing"))]
        {
            self.step_inner().await
        }
    }

    async fn step_inner(&mut self) -> Result<StepOutcome> {
        self.settle().await?;
        let state = self.record.state;
        if state.is_terminal() {
            return Ok(StepOutcome::Finished { state });
        }
        let now = self.migrator.clock.now();
        self.check_lease(now)?;
        let attempt = self.attempt().saturating_add(1);
        let mut claim = self.record.clone();
        claim.data.insert(keys::ATTEMPT.into(), attempt.to_string());
        claim.data.insert(keys::LEASE_OWNER.into(), self.worker.clone());
        claim.data.insert(
            keys::LEASE_UNTIL.into(),
            (now + self.migrator.config.lease).as_millis().to_string(),
        );
        self.save(claim, false).await?;
        let ctx = MigrationContext::new(
            self.record.id,
            self.record.tenant.clone(),
            self.record.source,
            self.record.destination,
            state,
            attempt,
        );
        let work = self.work(&ctx).await;
        match work {
            Ok(Next::To(next, updates)) => self.commit(next, updates).await,
            Ok(Next::Wait(until, updates)) => {
                self.note(updates).await?;
                Ok(StepOutcome::Waiting { state, until })
            }
            Ok(Next::Block(reason, updates)) => {
                self.note(updates).await?;
                trace_event!(migration = %self.record.id, state = %state, reason = %reason, "migration blocked");
                Ok(StepOutcome::Blocked { state, reason })
            }
            Ok(Next::Refuse(reason, mut updates)) => {
                updates.push((keys::CUTOVER_REFUSED, reason.clone()));
                self.commit(S::Validating, updates).await?;
                trace_event!(migration = %self.record.id, reason = %reason, "cutover refused");
                Ok(StepOutcome::Refused { reason })
            }
            Err(e) if e.is_retryable() && attempt < self.migrator.config.max_attempts => {
                let reason = e.to_string();
                trace_event!(migration = %self.record.id, state = %state, attempt, error = %reason, "migration step failed; will retry");
                self.note(vec![(keys::LAST_ERROR, reason.clone())]).await?;
                Ok(StepOutcome::Retry { state, attempt, reason })
            }
            Err(e) => {
                let reason = e.to_string();
                let mut updates = vec![
                    (keys::FAILURE_STATE, state.as_str().to_string()),
                    (keys::FAILURE_ERROR, reason.clone()),
                ];
                let next = match e {
                    StepError::Unexpected(_) => S::Failed,
                    _ if state.can_roll_back() => {
                        updates.push((keys::ROLLBACK_FROM, state.as_str().to_string()));
                        updates.push((keys::ROLLBACK_OUTCOME, S::RolledBack.as_str().to_string()));
                        updates.push((keys::ROLLBACK_REASON, format!("failure in {state}: {reason}")));
                        S::RollingBack
                    }
                    _ => S::Failed,
                };
                trace_event!(migration = %self.record.id, state = %state, error = %reason, next = %next, "migration step failed permanently");
                self.commit(next, updates).await
            }
        }
    }

    /// Drives the migration to a terminal state, or until it needs a person. Each step runs
    /// under [`MigrationConfig::step_timeout`]; retryable failures, timeouts and an unreachable
    /// registry are retried with exponential backoff (from `backoff_initial` to
    /// `backoff_max`), at most `max_attempts` times in a row; the soak is re-checked every
    /// `soak_poll`. Stops with [`RunOutcome::Blocked`] on a failed validation or a refused
    /// cutover, and with the error on a `Conflict` (another worker is driving it).
    ///
    /// ```
    /// # use stamps::migration::reference::ReferenceDataPlane;
    /// # use stamps::migration::*;
    /// # use stamps::*;
    /// # use std::sync::Arc;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let registry = Arc::new(InMemoryRegistry::new());
    /// # for id in [1, 2] {
    /// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
    /// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
    /// # }
    /// # let t = TenantId::new("umbrella")?;
    /// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
    /// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
    /// # let migrator = migrator.with_config(MigrationConfig::default().with_soak_window(std::time::Duration::ZERO))?;
    /// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "erin").await?;
    /// assert_eq!(m.run().await?, RunOutcome::Finished(MigrationState::Completed));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn run(&mut self) -> Result<RunOutcome> {
        let cfg = self.migrator.config.clone();
        let mut backoff = cfg.backoff_initial;
        let mut failures: u32 = 0;
        loop {
            let outcome = tokio::time::timeout(cfg.step_timeout, self.step()).await;
            let pause = match outcome {
                Err(_elapsed) => {
                    failures += 1;
                    trace_event!(migration = %self.record.id, state = %self.record.state, "migration step timed out");
                    if failures >= cfg.max_attempts {
                        return Err(Error::unavailable(format!(
                            "{} timed out {failures} times in a row in state {}",
                            self.record.id, self.record.state
                        )));
                    }
                    self.reload().await?;
                    Some(next_backoff(&mut backoff, cfg.backoff_max))
                }
                Ok(Err(e @ Error::Unavailable { .. })) => {
                    failures += 1;
                    if failures >= cfg.max_attempts {
                        return Err(e);
                    }
                    Some(next_backoff(&mut backoff, cfg.backoff_max))
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(StepOutcome::Finished { state })) => return Ok(RunOutcome::Finished(state)),
                Ok(Ok(StepOutcome::Advanced { to, .. })) => {
                    failures = 0;
                    backoff = cfg.backoff_initial;
                    if to.is_terminal() {
                        return Ok(RunOutcome::Finished(to));
                    }
                    None
                }
                Ok(Ok(StepOutcome::Waiting { .. })) => {
                    failures = 0;
                    Some(cfg.soak_poll)
                }
                Ok(Ok(StepOutcome::Retry { .. })) => Some(next_backoff(&mut backoff, cfg.backoff_max)),
                Ok(Ok(StepOutcome::Blocked { state, reason })) => return Ok(RunOutcome::Blocked { state, reason }),
                Ok(Ok(StepOutcome::Refused { reason })) => {
                    return Ok(RunOutcome::Blocked {
                        state: self.record.state,
                        reason,
                    })
                }
            };
            if let Some(d) = pause {
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Cancels the migration before cutover, on behalf of `by`: from `Planned` straight to
    /// `Cancelled`; later through `RollingBack` (the next step undoes the dual-write mode and
    /// the destination copy, then lands in `Cancelled`). After cutover use
    /// [`rollback`](Self::rollback); the result is [`Error::InvalidTransition`].
    /// Returns the state persisted. Revision-checked like a step.
    pub async fn cancel(&mut self, by: &str, reason: &str) -> Result<MigrationState> {
        self.settle().await?;
        let state = self.record.state;
        if !state.is_cancellable() {
            return Err(Error::InvalidTransition {
                what: "migration",
                from: state.as_str(),
                to: S::Cancelled.as_str(),
            });
        }
        self.check_lease(self.migrator.clock.now())?;
        let mut updates = vec![
            (keys::ROLLBACK_FROM, state.as_str().to_string()),
            (keys::ROLLBACK_OUTCOME, S::Cancelled.as_str().to_string()),
            (keys::ROLLBACK_REASON, reason.to_string()),
            (keys::ROLLBACK_BY, by.to_string()),
        ];
        let next = if state == S::Planned {
            updates.truncate(0);
            updates.push((keys::ROLLBACK_REASON, reason.to_string()));
            updates.push((keys::ROLLBACK_BY, by.to_string()));
            S::Cancelled
        } else {
            S::RollingBack
        };
        self.commit(next, updates).await?;
        Ok(next)
    }

    /// Starts a rollback on behalf of `by`, before or after cutover (until `CleaningUp`): the
    /// next step points the tenant back at the source, serving, fences the destination off and
    /// deletes its copy. Returns the state persisted (`RollingBack`). Illegal states give
    /// [`Error::InvalidTransition`].
    ///
    /// ```
    /// # use stamps::migration::reference::ReferenceDataPlane;
    /// # use stamps::migration::*;
    /// # use stamps::*;
    /// # use std::sync::Arc;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let registry = Arc::new(InMemoryRegistry::new());
    /// # for id in [1, 2] {
    /// #     let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
    /// #     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("us")?, cap)?).await?;
    /// # }
    /// # let t = TenantId::new("umbrella")?;
    /// # registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
    /// # let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1), StampId(2)])));
    /// let mut m = migrator.start(&migrator.plan(&t, StampId(2)).await?, "frank").await?;
    /// for _ in 0..4 { m.step().await?; } // now dual-writing
    /// assert_eq!(m.rollback("frank", "destination latency").await?, MigrationState::RollingBack);
    /// m.step().await?;
    /// assert_eq!(m.state(), MigrationState::RolledBack);
    /// assert_eq!(registry.require_assignment(&t).await?.mode, AssignmentMode::Serving);
    /// # Ok(()) }
    /// ```
    pub async fn rollback(&mut self, by: &str, reason: &str) -> Result<MigrationState> {
        self.settle().await?;
        let state = self.record.state;
        state.transition(S::RollingBack)?;
        self.check_lease(self.migrator.clock.now())?;
        let updates = vec![
            (keys::ROLLBACK_FROM, state.as_str().to_string()),
            (keys::ROLLBACK_OUTCOME, S::RolledBack.as_str().to_string()),
            (keys::ROLLBACK_REASON, reason.to_string()),
            (keys::ROLLBACK_BY, by.to_string()),
        ];
        self.commit(S::RollingBack, updates).await?;
        Ok(S::RollingBack)
    }

    // ---- the work of each state -------------------------------------------------------

    async fn work(&self, ctx: &MigrationContext) -> Work {
        match ctx.state {
            S::Planned => self.work_planned().await,
            S::Snapshotting => self.work_snapshot(ctx).await,
            S::Importing => self.work_import(ctx).await,
            S::DualWrite => self.work_dual_write(ctx).await,
            S::Validating => self.work_validate(ctx).await,
            S::CutOver => self.work_cut_over(ctx).await,
            S::Soaking => self.work_soak(ctx).await,
            S::CleaningUp => self.work_clean_up(ctx).await,
            S::RollingBack => self.work_roll_back(ctx).await,
            S::Completed | S::Cancelled | S::RolledBack | S::Failed => {
                Err(StepError::Unexpected(format!("{} is terminal", ctx.state)))
            }
        }
    }

    async fn assignment(&self) -> std::result::Result<Assignment, StepError> {
        self.migrator
            .registry
            .assignment(&self.record.tenant)
            .await?
            .ok_or_else(|| StepError::Unexpected(format!("{} has no assignment", self.record.tenant)))
    }

    async fn cas(&self, a: &Assignment, change: AssignmentChange) -> std::result::Result<Assignment, StepError> {
        let next = self
            .migrator
            .registry
            .compare_and_set(&self.record.tenant, a.epoch, change.by(self.actor()))
            .await?;
        trace_event!(
            migration = %self.record.id, tenant = %self.record.tenant, stamp = %next.stamp,
            mode = %next.mode, epoch = %next.epoch, "assignment changed"
        );
        Ok(next)
    }

    /// Raises both stamps' fences to the assignment's epoch (the drain).
    async fn fence_both(&self, ctx: &MigrationContext, a: &Assignment) -> std::result::Result<(), StepError> {
        for stamp in [self.record.source, self.record.destination] {
            let holds = a.stamps().any(|s| s == stamp);
            self.migrator.driver.fence(ctx, stamp, a.epoch, holds).await?;
        }
        Ok(())
    }

    fn unexpected(&self, a: &Assignment) -> StepError {
        StepError::Unexpected(format!(
            "{} is on {} ({}) which {} in state {} does not expect",
            self.record.tenant, a.stamp, a.mode, self.record.id, self.record.state
        ))
    }

    fn snapshot_info(&self) -> std::result::Result<SnapshotInfo, StepError> {
        let d = &self.record.data;
        let id = d
            .get(keys::SNAPSHOT_ID)
            .ok_or_else(|| StepError::Unexpected("no snapshot recorded".into()))?;
        let rows = d.get(keys::SNAPSHOT_ROWS).and_then(|r| r.parse().ok()).unwrap_or(0);
        Ok(SnapshotInfo::new(id.clone(), rows))
    }

    fn on_source_serving(&self, a: &Assignment) -> bool {
        a.stamp == self.record.source && a.mode == AssignmentMode::Serving
    }

    fn dual_writing_forward(&self, a: &Assignment) -> bool {
        a.stamp == self.record.source
            && a.mode
                == AssignmentMode::DualWrite {
                    shadow: self.record.destination,
                }
    }

    fn frozen_forward(&self, a: &Assignment) -> Option<Timestamp> {
        match a.mode {
            AssignmentMode::Frozen { shadow, until }
                if a.stamp == self.record.source && shadow == Some(self.record.destination) =>
            {
                Some(until)
            }
            _ => None,
        }
    }

    fn dual_writing_reverse(&self, a: &Assignment) -> bool {
        a.stamp == self.record.destination
            && a.mode
                == AssignmentMode::DualWrite {
                    shadow: self.record.source,
                }
    }

    async fn work_planned(&self) -> Work {
        let a = self.assignment().await?;
        if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        if self.migrator.registry.stamp(self.record.destination).await?.is_none() {
            return Err(StepError::Unexpected(format!(
                "{} is not registered",
                self.record.destination
            )));
        }
        Ok(Next::To(S::Snapshotting, vec![]))
    }

    async fn work_snapshot(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        let snap = self.migrator.driver.snapshot(ctx).await?;
        Ok(Next::To(
            S::Importing,
            vec![
                (keys::SNAPSHOT_ID, snap.id),
                (keys::SNAPSHOT_ROWS, snap.rows.to_string()),
            ],
        ))
    }

    async fn work_import(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        let snap = self.snapshot_info()?;
        self.migrator.driver.import(ctx, &snap).await?;
        Ok(Next::To(S::DualWrite, vec![]))
    }

    async fn work_dual_write(&self, ctx: &MigrationContext) -> Work {
        let mut a = self.assignment().await?;
        if self.on_source_serving(&a) {
            let mode = AssignmentMode::DualWrite {
                shadow: self.record.destination,
            };
            a = self.cas(&a, AssignmentChange::set_mode(mode)).await?;
        } else if !self.dual_writing_forward(&a) {
            return Err(self.unexpected(&a));
        }
        self.fence_both(ctx, &a).await?;
        let snap = self.snapshot_info()?;
        self.migrator.driver.catch_up(ctx, &snap).await?;
        Ok(Next::To(S::Validating, vec![]))
    }

    fn validation_updates(&self, report: &ValidationReport, at: Timestamp) -> Vec<(&'static str, String)> {
        vec![
            (keys::VALIDATION_PASSED, report.passed().to_string()),
            (keys::VALIDATION_AT, at.as_millis().to_string()),
            (keys::VALIDATION_SUMMARY, report.summary()),
        ]
    }

    async fn work_validate(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.dual_writing_forward(&a) {
            return Err(self.unexpected(&a));
        }
        let report = self.migrator.driver.validate(ctx).await?;
        let updates = self.validation_updates(&report, self.migrator.clock.now());
        if report.passed() {
            Ok(Next::To(S::CutOver, updates))
        } else {
            Ok(Next::Block(format!("validation failed: {}", report.summary()), updates))
        }
    }

    /// Back to plain dual-write on the source after a refused cutover.
    async fn unfreeze(&self, ctx: &MigrationContext, a: &Assignment) -> std::result::Result<(), StepError> {
        if self.frozen_forward(a).is_some() {
            let mode = AssignmentMode::DualWrite {
                shadow: self.record.destination,
            };
            let b = self.cas(a, AssignmentChange::set_mode(mode)).await?;
            self.fence_both(ctx, &b).await?;
        }
        Ok(())
    }

    async fn work_cut_over(&self, ctx: &MigrationContext) -> Work {
        let clock = &self.migrator.clock;
        let cfg = &self.migrator.config;
        let a = self.assignment().await?;
        if self.dual_writing_reverse(&a) {
            // The move landed before a crash: finish the step.
            self.fence_both(ctx, &a).await?;
            return Ok(Next::To(
                S::Soaking,
                vec![
                    (keys::SOAK_STARTED_AT, clock.now().as_millis().to_string()),
                    (keys::CUTOVER_EPOCH, a.epoch.0.to_string()),
                ],
            ));
        }
        if !self.dual_writing_forward(&a) && self.frozen_forward(&a).is_none() {
            return Err(self.unexpected(&a));
        }
        // Freshness of the validation that let us here.
        let d = &self.record.data;
        let passed = d.get(keys::VALIDATION_PASSED).is_some_and(|p| p == "true");
        let age = parse_ms(d, keys::VALIDATION_AT).map(|at| clock.now().saturating_since(at));
        let refusal = match age {
            _ if !passed => Some("the last validation did not pass".to_string()),
            None => Some("no validation recorded".to_string()),
            Some(age) if age > cfg.max_validation_age => Some(format!(
                "the last validation is {age:?} old, more than the allowed {:?}",
                cfg.max_validation_age
            )),
            Some(_) => None,
        };
        if let Some(reason) = refusal {
            self.unfreeze(ctx, &a).await?;
            return Ok(Next::Refuse(reason, vec![]));
        }
        // Freeze (bounded), then drain through the fences.
        let frozen = if self.frozen_forward(&a).is_some() {
            a
        } else {
            let until = clock.now() + cfg.max_freeze;
            let mode = AssignmentMode::Frozen {
                shadow: Some(self.record.destination),
                until,
            };
            self.cas(&a, AssignmentChange::set_mode(mode)).await?
        };
        let until = self.frozen_forward(&frozen).unwrap_or(Timestamp::ZERO);
        trace_event!(migration = %self.record.id, until = %until, "writes frozen");
        // Drain: once both fences are raised no write routed by an older assignment can land;
        // the catch-up then copies whatever the source has that the destination lacks (a
        // dual-write that reached the source but was fenced off the destination, say), so the
        // two sides are equal while frozen.
        self.fence_both(ctx, &frozen).await?;
        let snap = self.snapshot_info()?;
        self.migrator.driver.catch_up(ctx, &snap).await?;
        let mut updates = vec![];
        if cfg.validate_under_freeze {
            let report = self.migrator.driver.validate(ctx).await?;
            updates = self.validation_updates(&report, clock.now());
            if !report.passed() {
                self.unfreeze(ctx, &frozen).await?;
                return Ok(Next::Refuse(
                    format!("validation under the freeze failed: {}", report.summary()),
                    updates,
                ));
            }
        }
        if clock.now() > until {
            self.unfreeze(ctx, &frozen).await?;
            return Ok(Next::Refuse(
                format!("the freeze would overrun its bound of {:?}", cfg.max_freeze),
                updates,
            ));
        }
        let mode = AssignmentMode::DualWrite {
            shadow: self.record.source,
        };
        let moved = self
            .cas(&frozen, AssignmentChange::move_with_mode(self.record.destination, mode))
            .await?;
        self.fence_both(ctx, &moved).await?;
        updates.push((keys::SOAK_STARTED_AT, clock.now().as_millis().to_string()));
        updates.push((keys::CUTOVER_EPOCH, moved.epoch.0.to_string()));
        Ok(Next::To(S::Soaking, updates))
    }

    async fn work_soak(&self, ctx: &MigrationContext) -> Work {
        let a = self.assignment().await?;
        if !self.dual_writing_reverse(&a) {
            return Err(self.unexpected(&a));
        }
        let now = self.migrator.clock.now();
        let started = parse_ms(&self.record.data, keys::SOAK_STARTED_AT).unwrap_or(now);
        match self.migrator.soak.check(ctx).await {
            SoakVerdict::Unhealthy(reason) => Ok(Next::To(
                S::RollingBack,
                vec![
                    (keys::ROLLBACK_FROM, S::Soaking.as_str().to_string()),
                    (keys::ROLLBACK_OUTCOME, S::RolledBack.as_str().to_string()),
                    (keys::ROLLBACK_REASON, format!("soak check: {reason}")),
                    (keys::SOAK_LAST_CHECK, now.as_millis().to_string()),
                ],
            )),
            SoakVerdict::Healthy => {
                let ends = started + self.migrator.config.soak_window;
                let updates = vec![(keys::SOAK_LAST_CHECK, now.as_millis().to_string())];
                if now >= ends {
                    Ok(Next::To(S::CleaningUp, updates))
                } else {
                    Ok(Next::Wait(ends, updates))
                }
            }
        }
    }

    async fn work_clean_up(&self, ctx: &MigrationContext) -> Work {
        let mut a = self.assignment().await?;
        if self.dual_writing_reverse(&a) {
            a = self
                .cas(&a, AssignmentChange::set_mode(AssignmentMode::Serving))
                .await?;
        } else if !(a.stamp == self.record.destination && a.mode == AssignmentMode::Serving) {
            return Err(self.unexpected(&a));
        }
        self.fence_both(ctx, &a).await?;
        self.migrator.driver.cleanup_source(ctx).await?;
        Ok(Next::To(S::Completed, vec![]))
    }

    async fn work_roll_back(&self, ctx: &MigrationContext) -> Work {
        let d = &self.record.data;
        let from = d
            .get(keys::ROLLBACK_FROM)
            .and_then(|s| MigrationState::parse(s))
            .unwrap_or(S::RollingBack);
        let outcome = match d.get(keys::ROLLBACK_OUTCOME).map(String::as_str) {
            Some("cancelled") => S::Cancelled,
            _ => S::RolledBack,
        };
        let mut a = self.assignment().await?;
        if a.stamp == self.record.destination && a.mode.shadow() == Some(self.record.source) {
            a = self
                .cas(
                    &a,
                    AssignmentChange::move_with_mode(self.record.source, AssignmentMode::Serving),
                )
                .await?;
        } else if a.stamp == self.record.source && a.mode.shadow() == Some(self.record.destination) {
            a = self
                .cas(&a, AssignmentChange::set_mode(AssignmentMode::Serving))
                .await?;
        } else if !self.on_source_serving(&a) {
            return Err(self.unexpected(&a));
        }
        self.fence_both(ctx, &a).await?;
        self.migrator.driver.rollback(ctx, from).await?;
        Ok(Next::To(outcome, vec![]))
    }
}

#[cfg(feature = "tokio")]
fn next_backoff(current: &mut Duration, max: Duration) -> Duration {
    let d = *current;
    *current = current.saturating_mul(2).min(max);
    d
}
