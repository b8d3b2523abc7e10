//! [`Migrator`]: the entry point that starts and resumes migrations (the registry, the host's
//! driver, the clock, the soak check and the configuration every [`Migration`] shares).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::driver::DynMigrationDriver;
use super::soak::{AlwaysHealthy, SoakCheck};
use super::{Migration, MigrationConfig, MigrationPlan, Progress};
use crate::error::{Error, InvalidInput, Result, Subject};
use crate::model::{MigrationId, MigrationRecord};
use crate::registry::DynRegistry;
use crate::time::{Clock, SystemClock};

static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// Starts, plans and resumes migrations: the registry, the host's driver, the clock, the soak
/// check and the configuration, shared by every [`Migration`] it hands out. Cheap to clone.
///
/// Migrations are started by people, never automatically: the library has no automatic
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
    pub(super) registry: Arc<DynRegistry>,
    pub(super) driver: Arc<DynMigrationDriver>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) soak: Arc<dyn SoakCheck>,
    pub(super) config: MigrationConfig,
    pub(super) worker: String,
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
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Uses `check` to judge the tenant during the soak.
    pub fn soak_check(mut self, check: impl SoakCheck) -> Self {
        self.soak = Arc::new(check);
        self
    }

    /// Uses `config` (checked with [`MigrationConfig::validate`]).
    pub fn config(mut self, config: MigrationConfig) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// Names this process's workers in leases (default `worker-<pid>`).
    pub fn worker_name(mut self, name: impl Into<String>) -> Self {
        self.worker = name.into();
        self
    }

    /// The configuration in force (set with [`config`](Migrator::config)).
    pub fn settings(&self) -> &MigrationConfig {
        &self.config
    }

    /// Starts a planned migration on behalf of `initiated_by` (a person or tool, recorded in
    /// the migration record). Creates the record in `Planned`; nothing else happens until
    /// [`Migration::step`] or `Migration::run` (feature `tokio`).
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
    /// assert_eq!(m.progress().initiated_by.as_deref(), Some("carol (ticket OPS-1234)"));
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
            return Err(Error::epoch_conflict(plan.epoch, current.epoch));
        }
        let mut record = MigrationRecord::planned(plan.tenant.clone(), plan.source, plan.destination);
        let progress = Progress {
            initiated_by: Some(initiated_by.to_string()),
            planned_epoch: Some(plan.epoch),
            ..Progress::default()
        };
        super::progress::encode(&progress, &mut record.data);
        let record = self.registry.create_migration(record).await?;
        trace_event!(
            migration = %record.id, tenant = %record.tenant, source = %record.source,
            destination = %record.destination, initiated_by, "migration started"
        );
        self.adopt(record)
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
        self.adopt(record)
    }

    /// A worker for `record`; [`Error::Corrupt`] if its progress cannot be read.
    fn adopt(&self, record: MigrationRecord) -> Result<Migration> {
        let progress = super::progress::decode(&record)?;
        let n = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
        Ok(Migration {
            migrator: self.clone(),
            worker: format!("{}#{n}", self.worker),
            record,
            progress,
            unsure: false,
        })
    }
}
