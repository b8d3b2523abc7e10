//! `HttpHealthSource` against real loopback HTTP servers, feeding a `HealthMonitor`.
//!
//! The probes do real I/O, so the timeouts are real (200 ms) but no test asserts on elapsed
//! time; report times come from a `FakeClock`.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use stamps::health::{HealthMonitor, HealthSource, Hysteresis};
use stamps::integrations::http_health::HttpHealthSource;
use stamps::*;

/// A server on 127.0.0.1:0 whose `/healthz` answers the status in `status` (after `delay`),
/// and `/ready` answers 200. Returns its `http://` endpoint.
async fn server(status: Arc<AtomicU16>, delay: Duration) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let status = status.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
                }
            }),
        )
        .route("/ready", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

fn stamp(id: u32, endpoint: Option<&str>) -> Stamp {
    let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
    let mut spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
    if let Some(e) = endpoint {
        spec = spec.endpoint(e);
    }
    Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO)
}

fn source(clock: &FakeClock) -> HttpHealthSource {
    HttpHealthSource::new()
        .timeout(Duration::from_millis(200))
        .clock(clock.clone())
}

#[tokio::test]
async fn statuses_map_to_reports() {
    let clock = FakeClock::starting_at(Timestamp::from_millis(42));
    let status = Arc::new(AtomicU16::new(200));
    let (endpoint, task) = server(status.clone(), Duration::ZERO).await;
    let s = stamp(1, Some(&endpoint));
    let probe = source(&clock).degraded_status(503);

    let r = probe.check(&s).await;
    assert_eq!(
        (r.stamp, r.status, r.reason.as_deref(), r.at),
        (StampId(1), HealthStatus::Healthy, None, Timestamp::from_millis(42))
    );
    status.store(204, Ordering::SeqCst);
    assert_eq!(probe.check(&s).await.status, HealthStatus::Healthy);

    status.store(429, Ordering::SeqCst);
    let r = probe.check(&s).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (HealthStatus::Degraded, Some("HTTP 429 from /healthz"))
    );
    status.store(503, Ordering::SeqCst); // configured as degraded
    assert_eq!(probe.check(&s).await.status, HealthStatus::Degraded);

    status.store(500, Ordering::SeqCst);
    let r = probe.check(&s).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (HealthStatus::Unhealthy, Some("HTTP 500 from /healthz"))
    );
    status.store(404, Ordering::SeqCst);
    assert_eq!(probe.check(&s).await.status, HealthStatus::Unhealthy);
    // Without the configuration, 503 is unhealthy.
    status.store(503, Ordering::SeqCst);
    assert_eq!(source(&clock).check(&s).await.status, HealthStatus::Unhealthy);

    // Another path, with and without a trailing slash on the endpoint.
    let ready = source(&clock).path("ready");
    assert_eq!(ready.check(&s).await.status, HealthStatus::Healthy);
    assert_eq!(
        ready.check(&stamp(1, Some(&format!("{endpoint}/")))).await.status,
        HealthStatus::Healthy
    );
    task.abort();
}

#[tokio::test]
async fn unreachable_endpoints_missing_endpoints_and_https_are_unhealthy_with_reasons() {
    let clock = FakeClock::new();
    let probe = source(&clock);
    // A port nobody listens on: bind, note the port, close.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let r = probe.check(&stamp(1, Some(&format!("http://{closed}")))).await;
    assert_eq!(r.status, HealthStatus::Unhealthy);
    assert!(r.reason.as_deref().unwrap().starts_with("probe failed"), "{r:?}");

    let r = probe.check(&stamp(2, None)).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (HealthStatus::Unhealthy, Some("no endpoint"))
    );

    let r = probe.check(&stamp(3, Some("https://s3.internal"))).await;
    assert_eq!(r.status, HealthStatus::Unhealthy);
    assert!(r.reason.as_deref().unwrap().contains("plain http only"), "{r:?}");

    let r = probe.check(&stamp(4, Some("s4.internal:80"))).await;
    assert!(r.reason.as_deref().unwrap().contains("not an http:// URL"), "{r:?}");
}

#[tokio::test]
async fn a_slow_stamp_times_out() {
    let clock = FakeClock::new();
    let (endpoint, task) = server(Arc::new(AtomicU16::new(200)), Duration::from_secs(30)).await;
    let r = source(&clock).check(&stamp(1, Some(&endpoint))).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (HealthStatus::Unhealthy, Some("timed out after 200ms"))
    );
    task.abort();
}

#[tokio::test]
async fn monitor_marks_failing_stamps_down_and_recovers_them_with_hysteresis() {
    let clock = FakeClock::new();
    let healthy = Arc::new(AtomicU16::new(200));
    let flaky = Arc::new(AtomicU16::new(200));
    let (e1, t1) = server(healthy.clone(), Duration::ZERO).await;
    let (e2, t2) = server(flaky.clone(), Duration::ZERO).await;
    let (e3, t3) = server(Arc::new(AtomicU16::new(200)), Duration::from_secs(30)).await;
    let stamps = [stamp(1, Some(&e1)), stamp(2, Some(&e2)), stamp(3, Some(&e3))];
    let monitor = HealthMonitor::builder(source(&clock))
        .hysteresis(Hysteresis::new(2, 2).unwrap())
        .clock(clock.clone())
        .build();
    let table = monitor.table().clone();

    monitor.check_stamps(&stamps).await;
    assert_eq!(table.status(StampId(1)), HealthStatus::Healthy);
    assert_eq!(table.status(StampId(2)), HealthStatus::Healthy);
    assert_eq!(table.status(StampId(3)), HealthStatus::Healthy); // one timeout: not yet
    monitor.check_stamps(&stamps).await;
    assert_eq!(table.status(StampId(3)), HealthStatus::Unhealthy); // two in a row
    assert_eq!(
        table.get(StampId(3)).unwrap().reason.as_deref(),
        Some("timed out after 200ms")
    );

    flaky.store(500, Ordering::SeqCst);
    clock.advance(Duration::from_secs(5));
    monitor.check_stamps(&stamps[1..2]).await;
    assert_eq!(table.status(StampId(2)), HealthStatus::Healthy);
    monitor.check_stamps(&stamps[1..2]).await;
    assert_eq!(table.status(StampId(2)), HealthStatus::Unhealthy);
    let down_at = clock.now();
    assert_eq!(table.unavailable_since(StampId(2)), Some(down_at));

    // Recovery takes two good probes in a row; a failure in between restarts the count.
    flaky.store(200, Ordering::SeqCst);
    clock.advance(Duration::from_secs(5));
    monitor.check_stamps(&stamps[1..2]).await;
    assert_eq!(table.status(StampId(2)), HealthStatus::Unhealthy);
    flaky.store(500, Ordering::SeqCst);
    monitor.check_stamps(&stamps[1..2]).await;
    flaky.store(200, Ordering::SeqCst);
    monitor.check_stamps(&stamps[1..2]).await;
    assert_eq!(table.status(StampId(2)), HealthStatus::Unhealthy);
    clock.advance(Duration::from_secs(5));
    monitor.check_stamps(&stamps[1..2]).await;
    assert_eq!(table.status(StampId(2)), HealthStatus::Healthy);
    assert_eq!(table.get(StampId(2)).unwrap().since, clock.now());
    assert_eq!(table.status(StampId(1)), HealthStatus::Healthy); // never affected
    for t in [t1, t2, t3] {
        t.abort();
    }
}
