//! The admin API (feature `admin`): authorization (nothing open without a hook; 401 and 403),
//! the JSON schema of every read, paging of a stamp's tenants, the migration commands with
//! the caller recorded, error answers, and HTML escaping on the dashboard.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use stamps::admin::{Access, AdminApi, Caller, Denied};
use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{MigrationConfig, Migrator};
use stamps::*;
use tower::ServiceExt;

/// A fleet of three stamps and 25 tenants spread over them.
async fn fleet() -> (Arc<InMemoryRegistry>, Vec<TenantId>) {
    let registry = Arc::new(InMemoryRegistry::new());
    for (id, name) in [(1, "eu-1"), (2, "eu-2"), (3, "eu-3")] {
        let cap = Capacity::new([(Resource::Tenants, 20.0), (Resource::Connections, 1_000.0)], 0.1).unwrap();
        registry
            .put_active_stamp(StampSpec::new(StampId(id), name, Region::new("eu").unwrap(), cap).unwrap())
            .await
            .unwrap();
    }
    let mut tenants = Vec::new();
    for i in 0..25u32 {
        let t = TenantSpec::new(TenantId::new(&format!("t{i:03}")).unwrap())
            .demand(Demand::of([(Resource::Connections, 10.0)]).unwrap());
        registry.assign(&t, StampId(i % 3 + 1)).await.unwrap();
        tenants.push(t.id);
    }
    (registry, tenants)
}

/// Operators send `authorization: Bearer op`, viewers `Bearer view`; anything else is refused.
fn hook(parts: &http::request::Parts, access: Access) -> Result<Caller, Denied> {
    match parts.headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some("Bearer op") => Ok(Caller::new("erin@ops")),
        Some("Bearer view") if access == Access::Read => Ok(Caller::new("viewer")),
        Some("Bearer view") => Err(Denied::Forbidden),
        _ => Err(Denied::Unauthenticated),
    }
}

fn api(registry: Arc<InMemoryRegistry>, migrator: bool) -> axum::Router {
    let dynr: Arc<DynRegistry> = registry.clone();
    let mut api = AdminApi::new(dynr.clone())
        .router(Router::from_arc(dynr.clone()))
        .drive_started(false)
        .authorize(hook);
    if migrator {
        let plane = ReferenceDataPlane::new([StampId(1), StampId(2), StampId(3)]);
        let m = Migrator::new(dynr, Arc::new(plane))
            .config(MigrationConfig::default().soak_window(Duration::ZERO))
            .unwrap();
        api = api.migrator(Arc::new(m));
    }
    api.into_router()
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn json_of(app: &axum::Router, uri: &str) -> Value {
    let (status, body) = call(app, "GET", uri, Some("view"), None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const READS: &[&str] = &[
    "/",
    "/stamps/1",
    "/tenants/t000",
    "/capacity.svg",
    "/api/fleet",
    "/api/signals",
    "/api/stamps/1",
    "/api/tenants/t000",
    "/api/migrations",
    "/api/migrations/1",
];

#[tokio::test]
async fn without_a_hook_every_request_is_refused_with_401() {
    let (registry, _) = fleet().await;
    let dynr: Arc<DynRegistry> = registry;
    let app = AdminApi::new(dynr).into_router();
    for uri in READS {
        let res = app
            .clone()
            .oneshot(
                Request::get(*uri)
                    .header("authorization", "Bearer op")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
    }
    let (status, body) = call(
        &app,
        "POST",
        "/api/migrations",
        Some("op"),
        Some(json!({"tenant": "t000", "destination": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["kind"], "unauthenticated");
}

#[tokio::test]
async fn the_hook_decides_401_and_403_and_refusals_change_nothing() {
    let (registry, _) = fleet().await;
    let app = api(registry.clone(), true);
    for uri in READS {
        let (status, _) = call(&app, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let start = json!({"tenant": "t000", "destination": 2});
    let (status, _) = call(&app, "POST", "/api/migrations", Some("view"), Some(start.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&app, "POST", "/api/migrations", Some("stolen"), Some(start)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        registry.migrations(None).await.unwrap().is_empty(),
        "a refused call wrote"
    );
    // The dry run is a read.
    let (status, body) = call(
        &app,
        "POST",
        "/api/migrations/plan",
        Some("view"),
        Some(json!({"tenant": "t000", "destination": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(registry.migrations(None).await.unwrap().is_empty(), "the dry run wrote");
}

#[tokio::test]
async fn every_read_has_its_documented_schema() {
    let (registry, _) = fleet().await;
    let app = api(registry, true);
    let fleet = json_of(&app, "/api/fleet").await;
    assert_eq!(
        keys(&fleet),
        set(&[
            "at",
            "version",
            "trigger_utilization",
            "stamps",
            "migrations",
            "migrations_by_state",
            "regions_needing_stamps",
            "unreadable_stamps",
            "feed"
        ])
    );
    let stamp = &fleet["stamps"][0];
    assert_eq!(
        keys(stamp),
        set(&[
            "id",
            "name",
            "region",
            "state",
            "version",
            "tenants",
            "health",
            "health_reason",
            "resources",
            "utilization",
            "above_trigger",
            "time_to_trigger_seconds"
        ])
    );
    assert_eq!(stamp["tenants"], 9);
    assert_eq!(
        keys(&stamp["resources"][0]),
        set(&["resource", "usage", "limit", "soft_limit", "utilization"])
    );
    let conns = stamp["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "connections")
        .unwrap();
    assert_eq!(conns["usage"], 90.0);
    assert_eq!(conns["soft_limit"], 900.0);
    assert_eq!(keys(&fleet["feed"]), set(&["head", "cursor", "versions", "seconds"]));

    let signals = json_of(&app, "/api/signals").await;
    assert_eq!(
        keys(&signals),
        set(&["trigger_utilization", "stamps", "regions_needing_stamps"])
    );
    assert_eq!(
        keys(&signals["stamps"][0]),
        set(&["stamp", "utilization", "above_trigger", "time_to_trigger_seconds"])
    );

    let page = json_of(&app, "/api/stamps/2").await;
    assert_eq!(keys(&page), set(&["stamp", "redirect", "tenants", "next_after"]));
    assert_eq!(
        keys(&page["tenants"][0]),
        set(&["tenant", "epoch", "mode", "assigned_at"])
    );

    let tenant = json_of(&app, "/api/tenants/t004").await;
    assert_eq!(
        keys(&tenant),
        set(&[
            "tenant",
            "assignment",
            "pin",
            "history",
            "migrations",
            "route",
            "route_error"
        ])
    );
    assert_eq!(tenant["assignment"]["stamp"], 2);
    assert_eq!(tenant["route_error"], "miss: not in this router's table");
    assert_eq!(tenant["history"].as_array().unwrap().len(), 1);

    let plan: Value = {
        let (status, body) = call(
            &app,
            "POST",
            "/api/migrations/plan",
            Some("view"),
            Some(json!({"tenant": "t004", "destination": 3})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str(&body).unwrap()
    };
    assert_eq!(
        keys(&plan),
        set(&["tenant", "source", "destination", "feasible", "checks", "steps"])
    );
    assert_eq!(plan["feasible"], true);
    assert_eq!(keys(&plan["checks"][0]), set(&["what", "ok", "detail"]));
}

#[tokio::test]
async fn a_stamps_tenants_page_through_every_one_exactly_once() {
    let (registry, tenants) = fleet().await;
    let app = api(registry, false);
    let mut seen = Vec::new();
    let mut uri = "/api/stamps/1?limit=2".to_string();
    loop {
        let page = json_of(&app, &uri).await;
        let rows = page["tenants"].as_array().unwrap();
        assert!(rows.len() <= 2);
        seen.extend(rows.iter().map(|r| r["tenant"].as_str().unwrap().to_string()));
        match page["next_after"].as_str() {
            Some(after) => uri = format!("/api/stamps/1?limit=2&after={after}"),
            None => break,
        }
    }
    let want: Vec<String> = tenants.iter().step_by(3).map(|t| t.to_string()).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn migration_commands_go_through_the_engine_and_record_the_caller() {
    let (registry, _) = fleet().await;
    let app = api(registry.clone(), true);
    let (status, body) = call(
        &app,
        "POST",
        "/api/migrations",
        Some("op"),
        Some(json!({"tenant": "t000", "destination": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let record: Value = serde_json::from_str(&body).unwrap();
    let id = record["id"].as_u64().unwrap();
    assert_eq!(record["state"], "planned");

    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/migrations/{id}/pause"),
        Some("op"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a pause needs a reason: {body}");
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/migrations/{id}/pause"),
        Some("op"),
        Some(json!({"reason": "change freeze"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["by"], "erin@ops");

    let stored = registry.migration(MigrationId(id)).await.unwrap().unwrap();
    let text = serde_json::to_string(&stored).unwrap();
    assert!(
        text.contains("erin@ops") && text.contains("change freeze"),
        "the caller is not recorded: {text}"
    );

    let (status, _) = call(&app, "POST", &format!("/api/migrations/{id}/resume"), Some("op"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/migrations/{id}/cancel"),
        Some("op"),
        Some(json!({"reason": "wrong stamp"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["state"], "cancelled");
    let one = json_of(&app, &format!("/api/migrations/{id}")).await;
    assert_eq!(one["state"], "cancelled");
    let list = json_of(&app, "/api/migrations?tenant=t000").await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let (status, _) = call(
        &app,
        "POST",
        &format!("/api/migrations/{id}/explode"),
        Some("op"),
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(
        &app,
        "POST",
        "/api/migrations/999/cancel",
        Some("op"),
        Some(json!({"reason": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(
        &app,
        "POST",
        "/api/migrations",
        Some("op"),
        Some(json!({"tenant": "t000", "destination": 1})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "moving to its own stamp is not feasible: {body}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["kind"],
        "plan_not_feasible"
    );

    let without = api(registry, false);
    let (status, body) = call(
        &without,
        "POST",
        "/api/migrations",
        Some("op"),
        Some(json!({"tenant": "t001", "destination": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let (registry, _) = fleet().await;
    let app = api(registry, true);
    for (uri, want, kind) in [
        ("/api/stamps/x", StatusCode::BAD_REQUEST, "invalid_input"),
        ("/api/stamps/77", StatusCode::NOT_FOUND, "not_found"),
        ("/api/tenants/Bad!Id", StatusCode::BAD_REQUEST, "invalid_tenant_id"),
        ("/api/tenants/nobody", StatusCode::NOT_FOUND, "not_found"),
        ("/api/migrations/abc", StatusCode::BAD_REQUEST, "invalid_input"),
        (
            "/api/migrations?tenant=..",
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
        (
            "/api/stamps/1?after=%20bad",
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
    ] {
        let (status, body) = call(&app, "GET", uri, Some("view"), None).await;
        assert_eq!(status, want, "{uri}: {body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"]["kind"], kind, "{uri}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_dashboard_escapes_what_it_shows() {
    let (registry, _) = fleet().await;
    let dynr: Arc<DynRegistry> = registry;
    // A probe's reason is free text from outside: it must not become markup.
    let health = HealthTable::new();
    health.set(
        StampId(3),
        HealthStatus::Unhealthy,
        Timestamp::from_millis(1),
        Some("<script>alert(1)</script>"),
    );
    let app = AdminApi::new(dynr).health(health).authorize(hook).into_router();
    let (status, page) = call(&app, "GET", "/", Some("view"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<script>"), "unescaped health reason");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(page.matches("class=\"stamp\"").count(), 3);
    assert!(page.contains("data-health=\"unhealthy\""));
    let (status, svg) = call(&app, "GET", "/capacity.svg", Some("view"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(svg.starts_with("<svg") && svg.contains("eu-3"));
    let (status, stamp) = call(&app, "GET", "/stamps/3", Some("view"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!stamp.contains("<script>") && stamp.contains("t002"));
}

/// Stamp 3 runs v6; the others the desired v7.
struct Versions;

#[async_trait]
impl stamps::reconcile::ConfigSource for Versions {
    async fn running(&self, stamp: &Stamp) -> Result<RunningConfig, stamps::reconcile::InventoryError> {
        let v = if stamp.spec.id == StampId(3) { "v6" } else { "v7" };
        Ok(RunningConfig::new(v, "fp"))
    }
}

#[tokio::test]
async fn drift_and_reconcile_run_on_demand_when_configured() {
    use stamps::reconcile::{InMemoryInventory, StampInventory};
    let (registry, tenants) = fleet().await;
    let dynr: Arc<DynRegistry> = registry.clone();
    let plain = AdminApi::new(dynr.clone()).authorize(hook).into_router();
    for uri in ["/api/drift", "/api/reconcile"] {
        let (status, body) = call(&plain, "GET", uri, Some("view"), None).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{uri}: {body}");
    }
    // Stamp 1's inventory holds its tenants but one, plus a tenant nobody assigned there.
    let mut inventories: Vec<(StampId, Arc<dyn StampInventory>)> = Vec::new();
    for s in 1..=3u32 {
        let inv = InMemoryInventory::new();
        for (i, t) in tenants.iter().enumerate() {
            if i as u32 % 3 + 1 == s && !(s == 1 && i == 0) {
                inv.hold(t.as_str(), None);
            }
        }
        if s == 1 {
            inv.hold("ghost", None);
        }
        inventories.push((StampId(s), Arc::new(inv)));
    }
    let app = AdminApi::new(dynr)
        .authorize(hook)
        .drift(Arc::new(Versions), DesiredConfig::new(RunningConfig::new("v7", "fp")))
        .inventories(inventories)
        .into_router();
    let drift = json_of(&app, "/api/drift").await;
    assert_eq!(
        keys(&drift),
        set(&["desired", "groups", "unreported", "label_mismatch"])
    );
    let groups = drift["groups"].as_array().unwrap();
    let off: Vec<&Value> = groups
        .iter()
        .filter(|g| !g["differs"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(off.len(), 1);
    assert_eq!(off[0]["stamps"], json!([3]));
    assert_eq!(off[0]["running"]["version"], "v6");

    let report = json_of(&app, "/api/reconcile").await;
    assert_eq!(
        keys(&report),
        set(&[
            "assignments",
            "copies",
            "complete",
            "findings",
            "unreadable",
            "not_inventoried"
        ])
    );
    assert_eq!(report["assignments"], 25);
    assert_eq!(report["complete"], true);
    let kinds: BTreeSet<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["tenant"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("t000".to_string(), "missing".to_string())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("ghost".to_string(), "orphan".to_string())),
        "{kinds:?}"
    );
    assert_eq!(
        keys(&report["findings"][0]),
        set(&["tenant", "stamp", "kind", "repair"])
    );
}
