//! The JSON half of the admin API: reads, the dry-run plan and the migration commands.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use super::{Access, Caller, Denied, Inner};
use crate::error::{Error, Subject};
use crate::integrations::{FleetOverview, RegionSignal, StampOverview};
use crate::model::{
    Assignment, HistoryEntry, MigrationId, MigrationRecord, MigrationState, Pin, Redirect, StampId, TenantId,
};

/// Rows a stamp page shows by default, and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;
/// Assignments one stamp-page request reads at most while looking for the stamp's tenants;
/// the answer's `next_after` continues from there.
const SCAN_BOUND: usize = 20_000;

/// An error answer: `{"error": {"kind": ..., "message": ...}}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidInput(_) | Error::InvalidTenantId(_) | Error::ConstraintViolated(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::AlreadyAssigned { .. }
            | Error::AlreadyExists(_)
            | Error::Conflict(_)
            | Error::LeaseHeld { .. }
            | Error::InvalidTransition { .. }
            | Error::CapacityExceeded { .. }
            | Error::NotAccepting { .. }
            | Error::StampNotEmpty { .. } => StatusCode::CONFLICT,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.kind(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "kind": self.kind, "message": self.message } });
        let mut res = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        res
    }
}

pub(super) type ApiResult<T> = std::result::Result<T, ApiError>;

/// The caller, or the refusal as an answer.
pub(super) fn check(inner: &Inner, parts: &Parts, access: Access) -> ApiResult<Caller> {
    inner.auth.authorize(parts, access).map_err(|d| match d {
        Denied::Unauthenticated => ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "authenticate first"),
        Denied::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "forbidden", "not allowed for this caller"),
    })
}

pub(super) fn parse_stamp(id: &str) -> ApiResult<StampId> {
    id.parse::<u32>()
        .map(StampId)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", "a stamp id is a number"))
}

fn parse_migration(id: &str) -> ApiResult<MigrationId> {
    id.parse::<u64>()
        .map(MigrationId)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", "a migration id is a number"))
}

/// `GET /api/fleet`: the [`FleetOverview`].
pub(super) async fn fleet(State(inner): State<Arc<Inner>>, parts: Parts) -> ApiResult<Json<FleetOverview>> {
    check(&inner, &parts, Access::Read)?;
    Ok(Json(inner.overview().await?))
}

/// The provisioning signals.
#[derive(Debug, Serialize)]
pub(super) struct Signals {
    trigger_utilization: f64,
    stamps: Vec<StampSignalView>,
    regions_needing_stamps: Vec<RegionSignal>,
}

#[derive(Debug, Serialize)]
struct StampSignalView {
    stamp: StampId,
    utilization: f64,
    above_trigger: bool,
    time_to_trigger_seconds: Option<f64>,
}

/// `GET /api/signals`.
pub(super) async fn signals(State(inner): State<Arc<Inner>>, parts: Parts) -> ApiResult<Json<Signals>> {
    check(&inner, &parts, Access::Read)?;
    let view = inner.overview().await?;
    Ok(Json(Signals {
        trigger_utilization: view.trigger_utilization,
        stamps: view
            .stamps
            .iter()
            .map(|s| StampSignalView {
                stamp: s.id,
                utilization: s.utilization,
                above_trigger: s.above_trigger,
                time_to_trigger_seconds: s.time_to_trigger_seconds,
            })
            .collect(),
        regions_needing_stamps: view.regions_needing_stamps,
    }))
}

/// Paging of a stamp's tenants.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// One stamp with a page of its tenants.
#[derive(Debug, Serialize)]
pub(super) struct StampDetail {
    pub(super) stamp: StampOverview,
    pub(super) redirect: Option<Redirect>,
    pub(super) tenants: Vec<TenantRow>,
    /// Where the next page starts (`?after=`), or `None` at the end of the tenants.
    pub(super) next_after: Option<TenantId>,
}

/// A tenant on a stamp page.
#[derive(Debug, Serialize)]
pub(super) struct TenantRow {
    pub(super) tenant: TenantId,
    pub(super) epoch: u64,
    pub(super) mode: String,
    pub(super) assigned_at: crate::time::Timestamp,
}

pub(super) async fn stamp_detail(inner: &Inner, id: StampId, q: PageQuery) -> ApiResult<StampDetail> {
    let view = inner.overview().await?;
    let stamp = view
        .stamps
        .into_iter()
        .find(|s| s.id == id)
        .ok_or(Error::NotFound(Subject::Stamp(id)))?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let mut after = match q.after {
        Some(a) => Some(TenantId::new(&a).map_err(Error::from)?),
        None => None,
    };
    let (mut tenants, mut scanned) = (Vec::new(), 0usize);
    let next_after = loop {
        let page = inner.registry.assignments(after.as_ref(), 1_000).await?;
        let Some(last) = page.last().map(|a| a.spec.id.clone()) else {
            break None;
        };
        let full = page.len() == 1_000;
        let mut stopped = None;
        for a in page {
            scanned += 1;
            if a.stamp == id {
                tenants.push(row(&a));
                if tenants.len() == limit {
                    stopped = Some(a.spec.id.clone());
                    break;
                }
            }
        }
        if stopped.is_some() {
            break stopped;
        }
        if !full {
            break None;
        }
        if scanned >= SCAN_BOUND {
            break Some(last);
        }
        after = Some(last);
    };
    let redirect = inner.router.as_ref().and_then(|r| r.overrides().get(&id).cloned());
    Ok(StampDetail {
        stamp,
        redirect,
        tenants,
        next_after,
    })
}

fn row(a: &Assignment) -> TenantRow {
    TenantRow {
        tenant: a.spec.id.clone(),
        epoch: a.epoch.0,
        mode: a.mode.to_string(),
        assigned_at: a.assigned_at,
    }
}

/// `GET /api/stamps/{id}?after=&limit=`.
pub(super) async fn stamp(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<StampDetail>> {
    check(&inner, &parts, Access::Read)?;
    Ok(Json(stamp_detail(&inner, parse_stamp(&id)?, q).await?))
}

/// A route as the admin's router sees it.
#[derive(Debug, Serialize)]
pub(super) struct RouteView {
    pub(super) stamp: StampId,
    pub(super) epoch: u64,
    pub(super) mode: String,
    pub(super) endpoint: Option<&'static str>,
    pub(super) stale: bool,
    pub(super) failed_over_from: Option<StampId>,
}

/// One tenant: assignment, pin, history, migrations and the route.
#[derive(Debug, Serialize)]
pub(super) struct TenantDetail {
    pub(super) tenant: TenantId,
    pub(super) assignment: Option<Assignment>,
    pub(super) pin: Option<Pin>,
    pub(super) history: Vec<HistoryEntry>,
    pub(super) migrations: Vec<MigrationRecord>,
    /// The router's answer from its table (no registry read), when a router is configured.
    pub(super) route: Option<RouteView>,
    /// Why the router has no route, when it has none (`miss`: not cached).
    pub(super) route_error: Option<String>,
}

pub(super) async fn tenant_detail(inner: &Inner, id: &str) -> ApiResult<TenantDetail> {
    let tenant = TenantId::new(id).map_err(Error::from)?;
    let r = &inner.registry;
    let assignment = r.assignment(&tenant).await?;
    let pin = r.pin(&tenant).await?;
    let history = r.history(&tenant).await?;
    let migrations = r.migrations(Some(&tenant)).await?;
    if assignment.is_none() && history.is_empty() && pin.is_none() {
        return Err(Error::NotFound(Subject::Tenant(tenant)).into());
    }
    let (route, route_error) = match inner.router.as_ref().map(|router| router.route(tenant.as_str())) {
        Some(Ok(route)) => (
            Some(RouteView {
                stamp: route.stamp,
                epoch: route.epoch.0,
                mode: route.mode.to_string(),
                endpoint: route.endpoint,
                stale: route.stale,
                failed_over_from: route.failed_over_from,
            }),
            None,
        ),
        Some(Err(crate::router::RouteError::Miss)) => (None, Some("miss: not in this router's table".to_string())),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    Ok(TenantDetail {
        tenant,
        assignment,
        pin,
        history,
        migrations,
        route,
        route_error,
    })
}

/// `GET /api/tenants/{id}`.
pub(super) async fn tenant(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantDetail>> {
    check(&inner, &parts, Access::Read)?;
    Ok(Json(tenant_detail(&inner, &id).await?))
}

/// `?tenant=` for the migration list.
#[derive(Debug, Deserialize)]
pub(super) struct MigrationQuery {
    tenant: Option<String>,
}

/// `GET /api/migrations?tenant=`: every migration (of the tenant), newest last.
pub(super) async fn migrations(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Query(q): Query<MigrationQuery>,
) -> ApiResult<Json<Vec<MigrationRecord>>> {
    check(&inner, &parts, Access::Read)?;
    let tenant = match q.tenant {
        Some(t) => Some(TenantId::new(&t).map_err(Error::from)?),
        None => None,
    };
    Ok(Json(inner.registry.migrations(tenant.as_ref()).await?))
}

/// `GET /api/migrations/{id}`.
pub(super) async fn migration(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Path(id): Path<String>,
) -> ApiResult<Json<MigrationRecord>> {
    check(&inner, &parts, Access::Read)?;
    let id = parse_migration(&id)?;
    let record = inner
        .registry
        .migration(id)
        .await?
        .ok_or(Error::NotFound(Subject::Migration(id)))?;
    Ok(Json(record))
}

/// The body of a plan or a start.
#[derive(Debug, Deserialize)]
pub(super) struct MoveRequest {
    tenant: String,
    destination: u32,
}

/// A dry-run plan.
#[derive(Debug, Serialize)]
pub(super) struct PlanView {
    tenant: TenantId,
    source: StampId,
    destination: StampId,
    feasible: bool,
    checks: Vec<CheckView>,
    steps: Vec<StepView>,
}

#[derive(Debug, Serialize)]
struct CheckView {
    what: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct StepView {
    state: MigrationState,
    what: String,
}

fn migrator(inner: &Inner) -> ApiResult<&crate::migration::Migrator> {
    inner.migrator.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no_migrator",
            "this admin API has no migration engine; the host wires one with AdminApi::migrator",
        )
    })
}

/// `POST /api/migrations/plan` `{"tenant", "destination"}`: the dry run (read access).
pub(super) async fn plan_migration(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Json(req): Json<MoveRequest>,
) -> ApiResult<Json<PlanView>> {
    check(&inner, &parts, Access::Read)?;
    let tenant = TenantId::new(&req.tenant).map_err(Error::from)?;
    let plan = migrator(&inner)?.plan(&tenant, StampId(req.destination)).await?;
    Ok(Json(PlanView {
        feasible: plan.is_feasible(),
        steps: plan
            .steps()
            .into_iter()
            .map(|(state, what)| StepView { state, what })
            .collect(),
        checks: plan
            .checks
            .iter()
            .map(|c| CheckView {
                what: c.what,
                ok: c.ok,
                detail: c.detail.clone(),
            })
            .collect(),
        tenant: plan.tenant,
        source: plan.source,
        destination: plan.destination,
    }))
}

/// `POST /api/migrations` `{"tenant", "destination"}`: plans and starts a migration on behalf
/// of the caller (`201` with the record; `409` when the plan is not feasible).
pub(super) async fn start_migration(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Json(req): Json<MoveRequest>,
) -> ApiResult<(StatusCode, Json<MigrationRecord>)> {
    let caller = check(&inner, &parts, Access::Write)?;
    let tenant = TenantId::new(&req.tenant).map_err(Error::from)?;
    let migrator = migrator(&inner)?;
    let plan = migrator.plan(&tenant, StampId(req.destination)).await?;
    if !plan.is_feasible() {
        let failed: Vec<String> = plan
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.what, c.detail))
            .collect();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "plan_not_feasible",
            failed.join("; "),
        ));
    }
    let mut m = migrator.start(&plan, caller.name()).await?;
    let record = m.record().clone();
    #[cfg(feature = "tracing")]
    tracing::info!(caller = caller.name(), migration = record.id.0, tenant = %record.tenant, "stamps.admin: migration started");
    if inner.drive {
        tokio::spawn(async move {
            let _ = m.run().await;
        });
    }
    Ok((StatusCode::CREATED, Json(record)))
}

/// The body of an operator command.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CommandRequest {
    #[serde(default)]
    reason: String,
}

/// What a command did.
#[derive(Debug, Serialize)]
pub(super) struct CommandOutcome {
    migration: MigrationId,
    command: String,
    /// The state persisted (unchanged when the command was queued for a worker's next step).
    state: MigrationState,
    by: String,
}

/// `POST /api/migrations/{id}/{pause|resume|cancel|rollback}` `{"reason"}` on behalf of the
/// caller (a reason is required except for `resume`).
pub(super) async fn command(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Path((id, command)): Path<(String, String)>,
    body: Option<Json<CommandRequest>>,
) -> ApiResult<Json<CommandOutcome>> {
    let caller = check(&inner, &parts, Access::Write)?;
    let id = parse_migration(&id)?;
    let reason = body.map(|Json(b)| b.reason).unwrap_or_default();
    if command != "resume" && reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "say why: {\"reason\": \"...\"} is required",
        ));
    }
    let mut m = migrator(&inner)?.load(id).await?;
    let by = caller.name();
    let state = match command.as_str() {
        "pause" => {
            m.pause(by, &reason).await?;
            m.state()
        }
        "resume" => {
            m.resume(by).await?;
            m.state()
        }
        "cancel" => m.cancel(by, &reason).await?,
        "rollback" => m.rollback(by, &reason).await?,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_command",
                "commands are pause, resume, cancel and rollback",
            ))
        }
    };
    #[cfg(feature = "tracing")]
    tracing::info!(caller = by, migration = id.0, command = %command, "stamps.admin: migration command");
    Ok(Json(CommandOutcome {
        migration: id,
        command,
        state,
        by: by.to_string(),
    }))
}
