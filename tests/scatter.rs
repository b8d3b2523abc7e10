//! Scatter-gather: limits, timeouts and partial failures are reported, never hidden.
#![cfg(feature = "tokio")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stamps::integrations::scatter::{scatter_gather, ScatterOptions, SkipReason, StampOutcome};
use stamps::*;

fn stamp(id: u32, state: StampState) -> Stamp {
    let spec = StampSpec::new(
        StampId(id),
        format!("s{id}"),
        Region::new("us").unwrap(),
        Capacity::new([(Resource::Tenants, 1.0)], 0.0).unwrap(),
    )
    .unwrap();
    Stamp::new(spec, state, Timestamp::ZERO, Timestamp::ZERO)
}

#[tokio::test(start_paused = true)]
async fn limits_timeouts_and_partial_failures() {
    let mut stamps: Vec<Stamp> = (1..=10).map(|i| stamp(i, StampState::Active)).collect();
    stamps.push(stamp(11, StampState::Provisioning));
    stamps.push(stamp(12, StampState::Draining));
    let health = |s: StampId| match s.0 {
        3 => HealthStatus::Unhealthy,
        4 => HealthStatus::Degraded,
        _ => HealthStatus::Healthy,
    };
    let running = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let opts = ScatterOptions::default()
        .concurrency(3)
        .per_stamp_timeout(Duration::from_secs(2));
    let report = scatter_gather(&stamps, &health, opts, |s| {
        let running = &running;
        let peak = &peak;
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Paused time: sleeps advance the virtual clock instantly.
            let d = if s.id() == StampId(5) {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(100)
            };
            tokio::time::sleep(d).await;
            running.fetch_sub(1, Ordering::SeqCst);
            if s.id() == StampId(6) {
                Err("boom")
            } else {
                Ok(s.id().0)
            }
        }
    })
    .await;
    assert!(peak.load(Ordering::SeqCst) <= 3, "concurrency limit held");
    assert_eq!(report.outcomes.len(), 12, "every stamp is reported");
    let by_id = |id: u32| &report.outcomes.iter().find(|(s, _)| s.0 == id).unwrap().1;
    assert_eq!(by_id(1), &StampOutcome::Ok(1));
    assert_eq!(
        by_id(3),
        &StampOutcome::Skipped(SkipReason::Health(HealthStatus::Unhealthy))
    );
    assert_eq!(by_id(4), &StampOutcome::Ok(4), "degraded stamps are queried by default");
    assert_eq!(by_id(5), &StampOutcome::TimedOut);
    assert_eq!(by_id(6), &StampOutcome::Failed("boom"));
    assert_eq!(
        by_id(11),
        &StampOutcome::Skipped(SkipReason::State(StampState::Provisioning))
    );
    assert_eq!(
        by_id(12),
        &StampOutcome::Ok(12),
        "draining stamps still serve their tenants"
    );
    assert_eq!(report.successes().count(), 8);
    assert_eq!(report.incomplete().count(), 4);
    assert!(!report.is_complete());
}
