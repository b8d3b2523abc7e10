//! The admin API and fleet dashboard (feature `admin`): an [`axum::Router`] the host nests
//! under its admin port.
//!
//! - `GET /` (the prefix itself once nested: `/admin`) — the fleet dashboard: each stamp's utilisation per resource as bars against its
//!   trigger line, health, tenants, migrations in flight with their state and freeze, feed lag
//!   and provisioning signals; server-rendered HTML, no JavaScript.
//! - `GET /stamps/{id}`, `GET /tenants/{id}` — drill-down pages; `GET /capacity.svg` — time
//!   to the provisioning trigger per stamp, as a chart.
//! - `GET /api/fleet`, `/api/stamps/{id}?after=&limit=`, `/api/tenants/{id}`,
//!   `/api/migrations`, `/api/migrations/{id}`, `/api/signals` — JSON; `/api/drift` and
//!   `/api/reconcile` run the fleet-wide checks on demand when the host configured them (schema in
//!   `docs/observability.md`, checked by the crate's tests).
//! - `POST /api/migrations/plan` (dry run), `POST /api/migrations` (start),
//!   `POST /api/migrations/{id}/{pause|resume|cancel|rollback}` — through the migration
//!   engine's operator commands, recorded with the caller's identity.
//!
//! Every request passes the host's [`Authorize`] hook first; without one every request gets
//! `401` ([`DenyAll`]). Errors are JSON `{"error": {"kind", "message"}}` with a status that
//! says what to do (404 unknown, 400 bad input, 409 conflict, 503 registry unreachable, 501
//! for a command the host did not wire a [`Migrator`] for).
//!
//! ```
//! use std::sync::Arc;
//! use stamps::admin::{Access, AdminApi, Caller, Denied};
//! use stamps::*;
//! let registry: Arc<DynRegistry> = Arc::new(InMemoryRegistry::new());
//! let router = Router::from_arc(registry.clone());
//! let admin = AdminApi::new(registry)
//!     .router(router)
//!     .authorize(|parts: &http::request::Parts, access: Access| {
//!         match parts.headers.get("x-operator").and_then(|v| v.to_str().ok()) {
//!             Some(name) => Ok(Caller::new(name)),
//!             None if access == Access::Read => Ok(Caller::new("viewer")),
//!             None => Err(Denied::Unauthenticated),
//!         }
//!     });
//! let app: axum::Router = axum::Router::new().nest("/admin", admin.into_router());
//! # let _ = app;
//! ```

mod api;
mod auth;
mod checks;
mod page;
mod svg;

use std::collections::HashMap;
use std::sync::Arc;

pub use auth::{Access, Authorize, Caller, Denied, DenyAll};

use crate::capacity::{SignalPolicy, TenantsPerDay};
use crate::error::Result;
use crate::health::HealthTable;
use crate::integrations::FleetOverview;
use crate::migration::Migrator;
use crate::model::{DesiredConfig, Redirect, StampId};
use crate::reconcile::{ConfigSource, ReconcileOptions, StampInventory};
use crate::registry::{DynRegistry, Registry};
use crate::router::{FeedLag, Route, RouteError, Router};

/// What the admin API needs of a router: its view of a tenant and of the feed.
trait RouterView: Send + Sync {
    fn route(&self, tenant: &str) -> std::result::Result<Route, RouteError>;
    fn feed_lag(&self) -> FeedLag;
    fn overrides(&self) -> HashMap<StampId, Redirect>;
    fn health(&self) -> Option<HealthTable>;
}

impl<R: Registry + ?Sized> RouterView for Router<R> {
    fn route(&self, tenant: &str) -> std::result::Result<Route, RouteError> {
        Router::route(self, tenant)
    }
    fn feed_lag(&self) -> FeedLag {
        Router::feed_lag(self)
    }
    fn overrides(&self) -> HashMap<StampId, Redirect> {
        self.route_overrides()
    }
    fn health(&self) -> Option<HealthTable> {
        Router::health(self).cloned()
    }
}

/// The state every handler shares.
struct Inner {
    registry: Arc<DynRegistry>,
    router: Option<Arc<dyn RouterView>>,
    migrator: Option<Arc<Migrator>>,
    health: Option<HealthTable>,
    policy: SignalPolicy,
    auth: Arc<dyn Authorize>,
    drive: bool,
    title: String,
    drift: Option<(Arc<dyn ConfigSource>, DesiredConfig)>,
    inventories: Option<Vec<(StampId, Arc<dyn StampInventory>)>>,
    checks: ReconcileOptions,
}

impl Inner {
    /// The overview the dashboard and `/api/fleet` show.
    async fn overview(&self) -> Result<FleetOverview> {
        let health = self
            .health
            .clone()
            .or_else(|| self.router.as_ref().and_then(|r| r.health()));
        let view = FleetOverview::collect(&*self.registry, &self.policy, health.as_ref()).await?;
        Ok(match &self.router {
            Some(r) => view.with_feed(r.feed_lag()),
            None => view,
        })
    }
}

/// Builds the admin [`axum::Router`]; see the [module](self) documentation.
///
/// ```
/// use std::sync::Arc;
/// use stamps::admin::AdminApi;
/// use stamps::*;
/// let app = AdminApi::new(Arc::new(InMemoryRegistry::new())).into_router(); // every request: 401
/// # let _ = app;
/// ```
pub struct AdminApi {
    inner: Inner,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("router", &self.inner.router.is_some())
            .field("migrator", &self.inner.migrator.is_some())
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl AdminApi {
    /// An admin API over `registry`, refusing every request until [`AdminApi::authorize`]
    /// sets a hook. The provisioning signals use a 75 % trigger, no growth and a one-day lead
    /// time until [`AdminApi::signal_policy`] says otherwise.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let api = stamps::admin::AdminApi::new(Arc::new(stamps::InMemoryRegistry::new()));
    /// # let _ = api;
    /// ```
    pub fn new(registry: Arc<DynRegistry>) -> Self {
        AdminApi {
            inner: Inner {
                registry,
                router: None,
                migrator: None,
                health: None,
                policy: SignalPolicy::new(0.75, TenantsPerDay(0.0), std::time::Duration::from_secs(86_400)),
                auth: Arc::new(DenyAll),
                drive: true,
                title: "stamps fleet".to_string(),
                drift: None,
                inventories: None,
                checks: ReconcileOptions::default(),
            },
        }
    }

    /// The router whose view of tenants, overrides, health and feed lag the API shows.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::*;
    /// let registry: Arc<DynRegistry> = Arc::new(InMemoryRegistry::new());
    /// let api = stamps::admin::AdminApi::new(registry.clone()).router(Router::from_arc(registry));
    /// # let _ = api;
    /// ```
    pub fn router<R: Registry + ?Sized>(mut self, router: Router<R>) -> Self {
        self.inner.router = Some(Arc::new(router));
        self
    }

    /// The migration engine the migration commands go through (without one they answer 501).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::migration::{reference::ReferenceDataPlane, Migrator};
    /// use stamps::*;
    /// let registry: Arc<DynRegistry> = Arc::new(InMemoryRegistry::new());
    /// let migrator = Migrator::new(registry.clone(), Arc::new(ReferenceDataPlane::new([StampId(1)])));
    /// let api = stamps::admin::AdminApi::new(registry).migrator(Arc::new(migrator));
    /// # let _ = api;
    /// ```
    pub fn migrator(mut self, migrator: Arc<Migrator>) -> Self {
        self.inner.migrator = Some(migrator);
        self
    }

    /// Whether a migration started through the API is driven to its end by a task this API
    /// spawns (`true`, the default), or left to the host's workers (`false`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// let api = stamps::admin::AdminApi::new(Arc::new(stamps::InMemoryRegistry::new())).drive_started(false);
    /// # let _ = api;
    /// ```
    pub fn drive_started(mut self, drive: bool) -> Self {
        self.inner.drive = drive;
        self
    }

    /// The health table to show (by default the router's, if it has one).
    ///
    /// ```
    /// use std::sync::Arc;
    /// let api = stamps::admin::AdminApi::new(Arc::new(stamps::InMemoryRegistry::new()))
    ///     .health(stamps::HealthTable::new());
    /// # let _ = api;
    /// ```
    pub fn health(mut self, table: HealthTable) -> Self {
        self.inner.health = Some(table);
        self
    }

    /// The policy the provisioning signals are computed under.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use stamps::capacity::{SignalPolicy, TenantsPerDay};
    /// let api = stamps::admin::AdminApi::new(Arc::new(stamps::InMemoryRegistry::new()))
    ///     .signal_policy(SignalPolicy::new(0.8, TenantsPerDay(12.0), Duration::from_secs(3 * 86_400)));
    /// # let _ = api;
    /// ```
    pub fn signal_policy(mut self, policy: SignalPolicy) -> Self {
        self.inner.policy = policy;
        self
    }

    /// The authorization hook (see [`Authorize`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::admin::{Access, AdminApi, Caller, Denied};
    /// let api = AdminApi::new(Arc::new(stamps::InMemoryRegistry::new()))
    ///     .authorize(|_: &http::request::Parts, a: Access| if a == Access::Read { Ok(Caller::new("viewer")) } else { Err(Denied::Forbidden) });
    /// # let _ = api;
    /// ```
    pub fn authorize(mut self, hook: impl Authorize) -> Self {
        self.inner.auth = Arc::new(hook);
        self
    }

    /// Where `GET /api/drift` reads what each stamp runs, and what it should run (without
    /// this, the endpoint answers 501).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::reconcile::{ConfigSource, InventoryError};
    /// use stamps::*;
    /// struct Fixed;
    /// #[async_trait]
    /// impl ConfigSource for Fixed {
    ///     async fn running(&self, _: &Stamp) -> Result<RunningConfig, InventoryError> {
    ///         Ok(RunningConfig::new("v7", "fp"))
    ///     }
    /// }
    /// let api = stamps::admin::AdminApi::new(Arc::new(InMemoryRegistry::new()))
    ///     .drift(Arc::new(Fixed), DesiredConfig::new(RunningConfig::new("v7", "fp")));
    /// # let _ = api;
    /// ```
    pub fn drift(mut self, source: Arc<dyn ConfigSource>, desired: DesiredConfig) -> Self {
        self.inner.drift = Some((source, desired));
        self
    }

    /// Each stamp's inventory, for `GET /api/reconcile` (without this, the endpoint answers
    /// 501).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::reconcile::{InMemoryInventory, StampInventory};
    /// use stamps::*;
    /// let inv: Arc<dyn StampInventory> = Arc::new(InMemoryInventory::new());
    /// let api = stamps::admin::AdminApi::new(Arc::new(InMemoryRegistry::new()))
    ///     .inventories(vec![(StampId(1), inv)]);
    /// # let _ = api;
    /// ```
    pub fn inventories(mut self, inventories: Vec<(StampId, Arc<dyn StampInventory>)>) -> Self {
        self.inner.inventories = Some(inventories);
        self
    }

    /// Concurrency, page size and per-stamp timeout of the drift and reconcile checks.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stamps::reconcile::ReconcileOptions;
    /// let api = stamps::admin::AdminApi::new(Arc::new(stamps::InMemoryRegistry::new()))
    ///     .check_options(ReconcileOptions::default());
    /// # let _ = api;
    /// ```
    pub fn check_options(mut self, options: ReconcileOptions) -> Self {
        self.inner.checks = options;
        self
    }

    /// The dashboard's title.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let api = stamps::admin::AdminApi::new(Arc::new(stamps::InMemoryRegistry::new())).title("acme production");
    /// # let _ = api;
    /// ```
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.inner.title = title.into();
        self
    }

    /// The routes, ready to nest: `app.nest("/admin", api.into_router())`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let app: axum::Router = stamps::admin::AdminApi::new(Arc::new(stamps::InMemoryRegistry::new())).into_router();
    /// # let _ = app;
    /// ```
    pub fn into_router(self) -> axum::Router {
        use axum::routing::{get, post};
        let state = Arc::new(self.inner);
        axum::Router::new()
            .route("/", get(page::dashboard))
            .route("/stamps/{id}", get(page::stamp))
            .route("/tenants/{id}", get(page::tenant))
            .route("/capacity.svg", get(page::capacity_chart))
            .route("/api/fleet", get(api::fleet))
            .route("/api/signals", get(api::signals))
            .route("/api/stamps/{id}", get(api::stamp))
            .route("/api/tenants/{id}", get(api::tenant))
            .route("/api/migrations", get(api::migrations).post(api::start_migration))
            .route("/api/migrations/plan", post(api::plan_migration))
            .route("/api/migrations/{id}", get(api::migration))
            .route("/api/migrations/{id}/{command}", post(api::command))
            .route("/api/drift", get(checks::drift))
            .route("/api/reconcile", get(checks::reconcile_report))
            .with_state(state)
    }
}
