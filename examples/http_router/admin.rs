//! The router's admin endpoints: start a migration and follow it (`/admin/migrations`), and
//! tenant counts gathered from every healthy stamp (`/admin/tenants`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use stamps::integrations::scatter::{scatter_gather, ScatterOptions, StampOutcome};
use stamps::migration::{Migration, StepOutcome};
use stamps::*;

use super::system::Gateway;
use super::wire::{text, unavailable, upstream};

/// A migration started through the admin endpoint, as the runner last saw it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    tenant: TenantId,
    from: StampId,
    to: StampId,
    state: MigrationState,
    log: Vec<String>,
    done: bool,
}

/// `POST /admin/migrations` with `{"tenant": "acme", "to": 2}`: plans and starts a migration
/// (a person starts it: the record says "admin-api"), and drives it in the background.
pub(crate) async fn admin_start_migration(State(gw): State<Arc<Gateway>>, Json(body): Json<Value>) -> Response {
    let (Some(tenant), Some(to)) = (body["tenant"].as_str(), body["to"].as_u64()) else {
        return text(
            StatusCode::BAD_REQUEST,
            r#"expected {"tenant": "...", "to": <stamp number>}"#,
        );
    };
    let Ok(to) = u32::try_from(to).map(StampId) else {
        return text(StatusCode::BAD_REQUEST, "stamp number out of range");
    };
    let tenant = match TenantId::new(tenant) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let plan = match gw.migrator.plan(&tenant, to).await {
        Ok(p) if p.is_feasible() => p,
        Ok(p) => return text(StatusCode::CONFLICT, p.to_string()),
        Err(e) => return text(StatusCode::CONFLICT, e.to_string()),
    };
    let migration = match gw.migrator.start(&plan, "admin-api").await {
        Ok(m) => m,
        Err(e) => return text(StatusCode::CONFLICT, e.to_string()),
    };
    let id = migration.id();
    let from = migration.record().source;
    gw.jobs.lock().insert(
        id.0,
        Job {
            tenant: tenant.clone(),
            from,
            to,
            state: migration.state(),
            log: Vec::new(),
            done: false,
        },
    );
    tokio::spawn(drive_migration(gw.clone(), migration));
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id.0, "tenant": tenant.as_str(), "from": from.0, "to": to.0 })),
    )
        .into_response()
}

/// Steps a migration to its end. A validation that saw a dual-write in flight blocks; it is
/// re-validated a bounded number of times before the migration is left for a person.
async fn drive_migration(gw: Arc<Gateway>, mut m: Migration) {
    let mut blocked = 0u32;
    let note = |gw: &Gateway, m: &Migration, line: String, done: bool| {
        if let Some(job) = gw.jobs.lock().get_mut(&m.id().0) {
            job.state = m.state();
            job.log.push(line);
            job.done = done;
        }
    };
    loop {
        let outcome = tokio::time::timeout(Duration::from_secs(10), m.step()).await;
        match outcome {
            Ok(Ok(StepOutcome::Advanced { from, to })) => {
                note(&gw, &m, format!("{from} -> {to}"), to.is_terminal());
                if to.is_terminal() {
                    return;
                }
            }
            Ok(Ok(StepOutcome::Waiting { until, .. })) => {
                let left = until.saturating_since(SystemClock.now());
                tokio::time::sleep(left.min(Duration::from_millis(50))).await;
            }
            Ok(Ok(StepOutcome::Blocked { reason, .. } | StepOutcome::Refused { reason })) if blocked < 50 => {
                blocked += 1;
                note(&gw, &m, format!("re-validating ({reason})"), false);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Ok(StepOutcome::Retry { reason, .. })) => {
                note(&gw, &m, format!("retrying: {reason}"), false);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Ok(StepOutcome::Finished { state })) => {
                note(&gw, &m, format!("finished {state}"), true);
                return;
            }
            Ok(Ok(other)) => {
                note(&gw, &m, format!("needs a person: {other:?}"), true);
                return;
            }
            Ok(Err(e)) => {
                note(&gw, &m, format!("error: {e}"), true);
                return;
            }
            Err(_) => {
                note(&gw, &m, "step timed out".to_string(), true);
                return;
            }
        }
    }
}

/// `GET /admin/migrations/{id}`.
pub(crate) async fn admin_migration(State(gw): State<Arc<Gateway>>, Path(id): Path<u64>) -> Response {
    match gw.jobs.lock().get(&id) {
        Some(job) => Json(json!({
            "id": id,
            "tenant": job.tenant.as_str(),
            "from": job.from.0,
            "to": job.to.0,
            "state": job.state.to_string(),
            "done": job.done,
            "log": job.log,
        }))
        .into_response(),
        None => text(StatusCode::NOT_FOUND, "no such migration"),
    }
}

/// `GET /admin/tenants`: tenant counts per stamp, gathered from every healthy stamp in parallel
/// (bounded), with failures and skipped stamps reported, never hidden.
pub(crate) async fn admin_tenants(State(gw): State<Arc<Gateway>>) -> Response {
    let fleet = match gw.registry.fleet().await {
        Ok(f) => f,
        Err(e) => return unavailable("registry-unavailable", Duration::from_secs(1), e.to_string()),
    };
    let stamps: Vec<Stamp> = fleet.stamps.into_iter().map(|l| l.stamp).collect();
    let options = ScatterOptions::default()
        .concurrency(4)
        .per_stamp_timeout(Duration::from_secs(1));
    let client = &gw.client;
    let report = scatter_gather(&stamps, gw.monitor.table(), options, |stamp| async move {
        let endpoint = stamp.spec.endpoint.clone().ok_or("no endpoint")?;
        let (status, _, body) = upstream(
            client,
            Method::GET,
            format!("{endpoint}/internal/tenants"),
            &[],
            Bytes::new(),
        )
        .await
        .map_err(|_| "unreachable")?;
        if status != StatusCode::OK {
            return Err("bad status");
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| "bad body")?;
        v["tenants"].as_u64().ok_or("bad body")
    })
    .await;
    let complete = report.is_complete();
    let per_stamp: Vec<Value> = report
        .outcomes
        .iter()
        .map(|(id, o)| match o {
            StampOutcome::Ok(n) => json!({ "stamp": id.0, "tenants": n }),
            StampOutcome::Failed(e) => json!({ "stamp": id.0, "error": e }),
            StampOutcome::TimedOut => json!({ "stamp": id.0, "error": "timed out" }),
            StampOutcome::Skipped(why) => json!({ "stamp": id.0, "skipped": format!("{why:?}") }),
            _ => json!({ "stamp": id.0, "error": "unknown outcome" }),
        })
        .collect();
    Json(json!({ "complete": complete, "stamps": per_stamp })).into_response()
}
