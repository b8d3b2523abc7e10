//! The HTTP router example end to end (`examples/http_router/`): three stamp servers, the
//! router with its `RouteLayer`, health probing, fencing, a live migration through the admin
//! endpoint under load, and scatter-gather, all on loopback. The example's modules (all but
//! `main.rs` and `demo.rs`) are included as they are.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use stamps::integrations::tower::ERROR_HEADER;
use stamps::*;

#[path = "../examples/http_router/admin.rs"]
pub mod admin;
#[path = "../examples/http_router/proxy.rs"]
pub mod proxy;
#[path = "../examples/http_router/stamp.rs"]
pub mod stamp;
#[path = "../examples/http_router/system.rs"]
pub mod system;
#[path = "../examples/http_router/wire.rs"]
pub mod wire;
#[path = "../examples/http_router/write.rs"]
pub mod write;

use system::start_system;
use wire::{http_client, HttpClient, BASE_DOMAIN, EPOCH_HEADER, SERVED_BY_HEADER, TENANT_HEADER};

/// A client of the router, for the checks.
#[derive(Debug, Clone)]
struct TestClient {
    client: HttpClient,
    base: String,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl TestClient {
    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Reply, String> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| "request timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .map_err(|_| "body timed out".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn get(&self, tenant: &str, key: &str) -> Result<Reply, String> {
        self.send(
            Method::GET,
            &format!("/kv/{key}"),
            &[(TENANT_HEADER, tenant)],
            Bytes::new(),
        )
        .await
    }

    async fn put(&self, tenant: &str, key: &str, value: &str) -> Result<Reply, String> {
        self.send(
            Method::PUT,
            &format!("/kv/{key}"),
            &[(TENANT_HEADER, tenant)],
            Bytes::copy_from_slice(value.as_bytes()),
        )
        .await
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), String> {
        let (headers, bytes): (&[(&str, &str)], Bytes) = match body {
            Some(v) => (&[("content-type", "application/json")], Bytes::from(v.to_string())),
            None => (&[], Bytes::new()),
        };
        let r = self.send(method, path, headers, bytes).await?;
        let v =
            serde_json::from_slice(&r.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into()));
        Ok((r.status, v))
    }
}

/// The checks' results.
#[derive(Debug, Default)]
struct Checks {
    results: Vec<(String, bool, String)>,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!("[{}] {name}: {detail}", if ok { "PASS" } else { "FAIL" });
        self.results.push((name.to_string(), ok, detail));
    }

    fn all_passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|(_, ok, _)| *ok)
    }
}

/// What the load generator saw.
#[derive(Debug, Default)]
struct LoadReport {
    acked: Vec<(String, String, String)>,
    requests: u64,
    frozen_retries: u64,
    other_retries: u64,
    unacked: u64,
    errors: Vec<String>,
}

/// One load worker: writes unique keys, every other one to `hot` (the tenant being migrated),
/// retrying 503s (bounded), until `stop` or `max_writes`.
async fn load_worker(
    client: TestClient,
    worker: usize,
    tenants: Vec<TenantId>,
    hot: TenantId,
    stop: Arc<AtomicBool>,
    max_writes: usize,
) -> LoadReport {
    let mut report = LoadReport::default();
    for i in 0..max_writes {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let tenant = if i % 2 == 0 {
            hot.clone()
        } else {
            match tenants.get((worker + i) % tenants.len().max(1)) {
                Some(t) => t.clone(),
                None => hot.clone(),
            }
        };
        let key = format!("w{worker}-{i:05}");
        let value = format!("{tenant}/{key}/v");
        let mut acked = false;
        for _ in 0..200 {
            report.requests += 1;
            match client.put(tenant.as_str(), &key, &value).await {
                Ok(r) if r.status == StatusCode::OK => {
                    acked = true;
                    break;
                }
                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                    let reason = r.headers.get(ERROR_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                    if reason == "tenant-frozen" {
                        report.frozen_retries += 1;
                    } else {
                        report.other_retries += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(r) => {
                    report.errors.push(format!(
                        "{tenant} {key}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                    break;
                }
                Err(e) => {
                    report.errors.push(format!("{tenant} {key}: {e}"));
                    break;
                }
            }
        }
        if acked {
            report.acked.push((tenant.to_string(), key, value));
        } else {
            report.unacked += 1;
        }
    }
    report
}

async fn wait_for<F, Fut>(deadline: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Starts the system and runs every check against it, printing each; `Ok(true)` if all held.
async fn run_checks() -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let sys = start_system(12, Duration::from_millis(50)).await?;
    let client = TestClient {
        client: http_client(),
        base: format!("http://{}", sys.router_addr),
    };
    let mut checks = Checks::default();
    println!(
        "router at http://{}, stamps at {}",
        sys.router_addr,
        sys.endpoints.values().cloned().collect::<Vec<_>>().join(", ")
    );

    // 1. Routing basics: Host subdomain and header, 404 for unknown tenants, 400 for bad ones.
    let first = sys.tenants.first().ok_or("no tenants")?.clone();
    let home = sys.home(&first).await?.stamp;
    let host = format!("{first}.{BASE_DOMAIN}");
    let put = client
        .send(
            Method::PUT,
            "/kv/hello",
            &[("host", host.as_str())],
            Bytes::from_static(b"world"),
        )
        .await?;
    let got = client.get(first.as_str(), "hello").await?;
    let served = got
        .headers
        .get(SERVED_BY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    checks.check(
        "routes by Host subdomain and by x-tenant-id",
        put.status == StatusCode::OK
            && got.status == StatusCode::OK
            && got.body == "world"
            && served == home.0.to_string(),
        format!(
            "PUT via {host}: {}, GET via header: {} {:?} from stamp {served} (home {home})",
            put.status, got.status, got.body
        ),
    );
    let unknown = client.get("nobody-here", "k").await?;
    let bad = client.get("Not A Tenant!", "k").await?;
    let foreign = client
        .send(Method::GET, "/kv/k", &[("host", "acme.evil.example")], Bytes::new())
        .await?;
    checks.check(
        "unknown tenant 404, malformed tenant 400",
        unknown.status == StatusCode::NOT_FOUND
            && bad.status == StatusCode::BAD_REQUEST
            && foreign.status == StatusCode::BAD_REQUEST,
        format!(
            "unknown: {}, bad id: {}, foreign host: {}",
            unknown.status, bad.status, foreign.status
        ),
    );

    // Keys are one path segment at the stamp too: an encoded `?` or `/` in a key does not
    // become a query or other segments upstream, and dot segments are refused.
    let odd = client.put(first.as_str(), "q%3Fx", "odd").await?;
    let odd_back = client.get(first.as_str(), "q%3Fx").await?;
    let truncated = client.get(first.as_str(), "q").await?;
    let slashed = client.put(first.as_str(), "a%2Fb", "slashed").await?;
    let slashed_back = client.get(first.as_str(), "a%2Fb").await?;
    let dots = client.get(first.as_str(), "%2E%2E").await?;
    checks.check(
        "keys with encoded ?, / and dot segments stay inside the tenant's key",
        odd.status == StatusCode::OK
            && odd_back.status == StatusCode::OK
            && odd_back.body == "odd"
            && truncated.body != "odd"
            && slashed.status == StatusCode::OK
            && slashed_back.body == "slashed"
            && dots.status == StatusCode::BAD_REQUEST,
        format!(
            "PUT q?x: {}, GET q?x: {} {:?}, GET q: {} {:?}, PUT a/b: {}, GET a/b: {:?}, GET ..: {}",
            odd.status,
            odd_back.status,
            odd_back.body,
            truncated.status,
            truncated.body,
            slashed.status,
            slashed_back.body,
            dots.status
        ),
    );

    // 2. Traffic, and a migration of a tenant under load through the admin endpoint.
    let hot = sys
        .tenants
        .iter()
        .find(|t| **t != first)
        .ok_or("need two tenants")?
        .clone();
    let before = sys.home(&hot).await?;
    let dest = StampId(before.stamp.0 % 3 + 1);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(load_worker(
                client.clone(),
                w,
                sys.tenants.clone(),
                hot.clone(),
                stop.clone(),
                3_000,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, started_m) = client
        .json(
            Method::POST,
            "/admin/migrations",
            Some(json!({ "tenant": hot.as_str(), "to": dest.0 })),
        )
        .await?;
    let id = started_m["id"].as_u64().unwrap_or(0);
    let mut last = Value::Null;
    let mut finished = false;
    let polling = Instant::now();
    while polling.elapsed() < Duration::from_secs(15) {
        if let Ok((_, v)) = client.json(Method::GET, &format!("/admin/migrations/{id}"), None).await {
            finished = v["done"].as_bool().unwrap_or(false);
            last = v;
            if finished {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // traffic after the migration too
    stop.store(true, Ordering::SeqCst);
    let mut load = LoadReport::default();
    for w in workers {
        let r = w.await?;
        load.acked.extend(r.acked);
        load.requests += r.requests;
        load.frozen_retries += r.frozen_retries;
        load.other_retries += r.other_retries;
        load.unacked += r.unacked;
        load.errors.extend(r.errors);
    }
    let after = sys.home(&hot).await?;
    let log: Vec<String> = last["log"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    println!("migration {id} of {hot}: {}", log.join("; "));
    checks.check(
        "migration under load completes through the admin endpoint",
        status == StatusCode::ACCEPTED
            && finished
            && last["state"] == "completed"
            && after.stamp == dest
            && after.mode == AssignmentMode::Serving,
        format!(
            "{hot}: {} -> {} ({}), state {}, now on {} ({})",
            before.stamp, dest, status, last["state"], after.stamp, after.mode
        ),
    );
    let hot_acked = load.acked.iter().filter(|(t, _, _)| t == hot.as_str()).count();
    let dual = sys.gateway.dual_writes.load(Ordering::Relaxed);
    let refreshed = sys.gateway.fence_refreshes.load(Ordering::Relaxed);
    checks.check(
        "traffic flowed during the migration (dual-writes acknowledged by both stamps); every write was eventually acknowledged",
        load.errors.is_empty() && load.unacked == 0 && hot_acked > 0 && dual > 0,
        format!(
            "{} requests, {} acknowledged writes ({hot_acked} to {hot}, {dual} dual-written), {refreshed} fence refusals retried on a fresh route, {} retries on the cutover freeze, {} other retries, {} unacknowledged, errors: {:?}",
            load.requests,
            load.acked.len(),
            load.frozen_retries,
            load.other_retries,
            load.unacked,
            load.errors.iter().take(3).collect::<Vec<_>>()
        ),
    );

    // 3. A stale router cannot write: the old stamp refuses the old epoch.
    let stale = TestClient {
        client: client.client.clone(),
        base: sys.endpoints.get(&before.stamp).cloned().unwrap_or_default(),
    };
    let epoch = before.epoch.0.to_string();
    let refused = stale
        .send(
            Method::PUT,
            &format!("/t/{hot}/kv/stale-write"),
            &[(EPOCH_HEADER, epoch.as_str())],
            Bytes::from_static(b"stale"),
        )
        .await?;
    checks.check(
        "the old stamp refuses a write routed by the pre-migration epoch",
        refused.status == StatusCode::CONFLICT,
        format!(
            "PUT to {} with {} = {}: {} {}",
            before.stamp,
            EPOCH_HEADER,
            before.epoch,
            refused.status,
            String::from_utf8_lossy(&refused.body)
        ),
    );

    // 4. Every acknowledged write is readable through the router.
    let mut lost = Vec::new();
    for chunk in load.acked.chunks(64) {
        let mut reads = Vec::new();
        for (t, k, v) in chunk {
            let c = client.clone();
            let (t, k, v) = (t.clone(), k.clone(), v.clone());
            reads.push(tokio::spawn(async move {
                match c.get(&t, &k).await {
                    Ok(r) if r.status == StatusCode::OK && r.body == v.as_bytes() => None,
                    Ok(r) => Some(format!("{t}/{k}: {} {:?}", r.status, r.body)),
                    Err(e) => Some(format!("{t}/{k}: {e}")),
                }
            }));
        }
        for r in reads {
            if let Some(miss) = r.await? {
                lost.push(miss);
            }
        }
    }
    checks.check(
        "every acknowledged write is readable afterwards",
        lost.is_empty() && !load.acked.is_empty(),
        format!(
            "{} acknowledged, {} missing {:?}",
            load.acked.len(),
            lost.len(),
            lost.iter().take(3).collect::<Vec<_>>()
        ),
    );
    let source_copy = sys.plane.holds(before.stamp, &hot);
    checks.check(
        "the source copy was cleaned up",
        !source_copy,
        format!("{} holds {hot}: {source_copy}", before.stamp),
    );

    // 5. Scatter-gather: tenant counts per stamp.
    let (_, gathered) = client.json(Method::GET, "/admin/tenants", None).await?;
    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    for t in &sys.tenants {
        *expected.entry(sys.home(t).await?.stamp.0).or_default() += 1;
    }
    let got_counts: BTreeMap<u32, u64> = gathered["stamps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((u32::try_from(s["stamp"].as_u64()?).ok()?, s["tenants"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    checks.check(
        "scatter-gather counts every stamp's tenants",
        gathered["complete"] == true && got_counts == expected,
        format!("gathered {got_counts:?}, registry says {expected:?}"),
    );

    // 6. One stamp goes unhealthy: only its tenants get 503.
    let sick = StampId(3);
    let probe_key = |t: &TenantId| {
        load.acked
            .iter()
            .find(|(x, _, _)| x == t.as_str())
            .map(|(_, k, _)| k.clone())
    };
    let mut homes = Vec::new();
    for t in &sys.tenants {
        homes.push((
            t.clone(),
            sys.home(t).await?.stamp,
            probe_key(t).unwrap_or_else(|| "none".into()),
        ));
    }
    if let Some(node) = sys.nodes.get(&sick) {
        node.set_healthy(false);
    }
    let sick_tenant = homes
        .iter()
        .find(|(_, s, _)| *s == sick)
        .map(|(t, _, k)| (t.clone(), k.clone()));
    let marked = match &sick_tenant {
        Some((t, k)) => wait_for(Duration::from_secs(5), || {
            let c = client.clone();
            let (t, k) = (t.clone(), k.clone());
            async move { matches!(c.get(t.as_str(), &k).await, Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE) }
        })
        .await,
        None => false,
    };
    let mut wrong = Vec::new();
    let (mut n503, mut n200) = (0, 0);
    for (t, stamp, key) in &homes {
        let r = client.get(t.as_str(), key).await?;
        let want = if *stamp == sick {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            n503 += 1;
        } else if r.status == StatusCode::OK {
            n200 += 1;
        }
        let retry_after = r.headers.contains_key("retry-after");
        if r.status != want || (want == StatusCode::SERVICE_UNAVAILABLE && !retry_after) {
            wrong.push(format!("{t} on {stamp}: {}", r.status));
        }
    }
    checks.check(
        "an unhealthy stamp: only its tenants get 503 (with Retry-After), the others 200",
        marked && wrong.is_empty() && n503 > 0 && n200 > 0,
        format!("{sick} /healthz answers 503; {n503} tenants got 503, {n200} got 200; wrong: {wrong:?}"),
    );
    let (_, gathered) = client.json(Method::GET, "/admin/tenants", None).await?;
    let skipped = gathered["stamps"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s["stamp"] == sick.0 && s.get("skipped").is_some()));
    checks.check(
        "scatter-gather reports the unhealthy stamp as skipped",
        gathered["complete"] == false && skipped,
        format!("{gathered}"),
    );
    if let Some(node) = sys.nodes.get(&sick) {
        node.set_healthy(true);
    }
    let recovered = match &sick_tenant {
        Some((t, k)) => {
            wait_for(Duration::from_secs(5), || {
                let c = client.clone();
                let (t, k) = (t.clone(), k.clone());
                async move { matches!(c.get(t.as_str(), &k).await, Ok(r) if r.status == StatusCode::OK) }
            })
            .await
        }
        None => false,
    };
    checks.check(
        "the stamp recovers after healthy probes",
        recovered,
        format!("{sick} back in rotation: {recovered}"),
    );

    let stats = sys.gateway.router.stats();
    println!(
        "\nrouter: {} hits, {} misses, {} refused (unhealthy stamp); the run took {:.1?}",
        stats.hits,
        stats.misses,
        stats.stamp_unavailable,
        started.elapsed()
    );
    let passed = checks.results.iter().filter(|(_, ok, _)| *ok).count();
    println!("{passed}/{} checks passed", checks.results.len());
    Ok(checks.all_passed())
}

/// Everything the example promises, checked against the running system within 45 s: routing
/// by Host and header, key encoding, a migration under load with no lost write, stale-route
/// fencing, scatter-gather, and an unhealthy stamp taken out and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_router_end_to_end() -> Result<(), Box<dyn std::error::Error>> {
    let passed = tokio::time::timeout(Duration::from_secs(45), run_checks())
        .await
        .map_err(|_| "the end-to-end run timed out after 45 s")??;
    assert!(passed, "some checks failed (see the FAIL lines above)");
    Ok(())
}
