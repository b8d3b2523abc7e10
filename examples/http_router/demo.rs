//! `--demo`: starts everything, walks one request of each kind through the router (a write
//! by `x-tenant-id`, a read by Host subdomain, a migration through the admin endpoint, the
//! read again from the new stamp, scatter-gather), prints what each answered, and tells
//! whether every answer was the expected one. It ends by itself, so CI can run it.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use serde_json::{json, Value};
use stamps::StampId;

use super::system::{start_system, ADMIN_PREFIX};
use super::wire::{http_client, upstream, HttpClient, BASE_DOMAIN, SERVED_BY_HEADER, TENANT_HEADER};

/// Sends one request to the router and prints it with its answer: status, serving stamp, body.
async fn show(
    client: &HttpClient,
    what: String,
    method: Method,
    uri: String,
    headers: &[(&'static str, String)],
    body: String,
) -> Result<(StatusCode, Option<String>, String), String> {
    let (status, headers, body) = upstream(client, method, uri, headers, Bytes::from(body)).await?;
    let served_by = headers
        .get(SERVED_BY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = String::from_utf8_lossy(&body).into_owned();
    let from = served_by
        .as_deref()
        .map(|s| format!(" (stamp {s})"))
        .unwrap_or_default();
    println!("{what}\n  -> {status}{from} {body}");
    Ok((status, served_by, body))
}

/// Runs the tour; `Ok(true)` if every answer was the expected one.
pub async fn demo() -> Result<bool, Box<dyn std::error::Error>> {
    let sys = start_system(6, Duration::from_millis(200)).await?;
    let client = http_client();
    let r = format!("http://{}", sys.router_addr);
    let tenant = sys.tenants.first().ok_or("no tenants")?.clone();
    let t = tenant.to_string();
    let from = sys.home(&tenant).await?.stamp;
    let to = StampId(from.0 % 3 + 1);
    println!("router at {r}; {t} is on {from}\n");
    let mut ok = true;

    let (status, _, _) = show(
        &client,
        format!("PUT {r}/kv/greeting with x-tenant-id: {t}"),
        Method::PUT,
        format!("{r}/kv/greeting"),
        &[(TENANT_HEADER, t.clone())],
        "hello".to_string(),
    )
    .await?;
    ok &= status == StatusCode::OK;

    let host = [("host", format!("{t}.{BASE_DOMAIN}"))];
    let (status, _, body) = show(
        &client,
        format!("GET {r}/kv/greeting with Host: {t}.{BASE_DOMAIN}"),
        Method::GET,
        format!("{r}/kv/greeting"),
        &host,
        String::new(),
    )
    .await?;
    ok &= status == StatusCode::OK && body == "hello";

    let (status, _, body) = show(
        &client,
        format!("POST {r}/admin/migrations moving {t} to {to}"),
        Method::POST,
        format!("{r}/admin/migrations"),
        &[("content-type", "application/json".to_string())],
        json!({ "tenant": t, "to": to.0 }).to_string(),
    )
    .await?;
    ok &= status == StatusCode::ACCEPTED;
    let id = serde_json::from_str::<Value>(&body)?["id"].as_u64().unwrap_or(0);
    let started = Instant::now();
    let mut state = Value::Null;
    while started.elapsed() < Duration::from_secs(10) {
        let (_, _, body) = upstream(
            &client,
            Method::GET,
            format!("{r}/admin/migrations/{id}"),
            &[],
            Bytes::new(),
        )
        .await?;
        let job: Value = serde_json::from_slice(&body)?;
        if job["done"] == true {
            state = job["state"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  migration {id} ended {state} after {:.1?}", started.elapsed());
    ok &= state == "completed";

    let (status, served_by, body) = show(
        &client,
        format!("GET {r}/kv/greeting with Host: {t}.{BASE_DOMAIN}, after the migration"),
        Method::GET,
        format!("{r}/kv/greeting"),
        &host,
        String::new(),
    )
    .await?;
    ok &= status == StatusCode::OK && body == "hello" && served_by == Some(to.0.to_string());

    let (status, _, body) = show(
        &client,
        format!("GET {r}/admin/tenants"),
        Method::GET,
        format!("{r}/admin/tenants"),
        &[],
        String::new(),
    )
    .await?;
    ok &= status == StatusCode::OK && serde_json::from_str::<Value>(&body)?["complete"] == true;

    // The operator's view: the Prometheus scrape and the library's dashboard and admin API.
    let (status, _, body) = upstream(&client, Method::GET, format!("{r}/metrics"), &[], Bytes::new()).await?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let wanted = [
        "stamps_router_hits_total",
        "stamps_registry_calls_total",
        "stamps_registry_call_duration_seconds",
        "stamps_stamp_utilization_ratio",
        "stamps_migration_transitions_total",
        "stamps_router_feed_lag_versions",
    ];
    let missing: Vec<&str> = wanted.iter().copied().filter(|m| !body.contains(m)).collect();
    println!(
        "GET {r}/metrics\n  -> {status}, {} lines; missing: {}",
        body.lines().count(),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
    ok &= status == StatusCode::OK && missing.is_empty();
    let (status, _, body) = upstream(&client, Method::GET, format!("{r}{ADMIN_PREFIX}"), &[], Bytes::new()).await?;
    let page = String::from_utf8_lossy(&body);
    let rows = page.matches("class=\"stamp\"").count();
    println!("GET {r}{ADMIN_PREFIX} (the fleet dashboard)\n  -> {status}, {rows} stamp rows");
    ok &= status == StatusCode::OK && rows == 3;
    let (status, _, _) = upstream(
        &client,
        Method::POST,
        format!("{r}{ADMIN_PREFIX}/api/migrations/1/pause"),
        &[("content-type", "application/json".to_string())],
        Bytes::from(json!({ "reason": "no token" }).to_string()),
    )
    .await?;
    println!("POST {r}{ADMIN_PREFIX}/api/migrations/1/pause without the operator token\n  -> {status}");
    ok &= status == StatusCode::UNAUTHORIZED;

    println!(
        "\n{}",
        if ok {
            "every answer as expected"
        } else {
            "some answers were not as expected"
        }
    );
    Ok(ok)
}
