//! A router in front of an in-memory registry: warm-up, the change-feed follower, a migration's
//! dual-write and cutover seen by the router, an unhealthy stamp, and the counters.
//!
//! `cargo run --example routing` (with the `tokio` feature, `router.spawn_follower()` would
//! follow the change feed in the background; here `router.sync()` reads it in place).

use std::sync::Arc;
use std::time::Duration;

use stamps::health::{HealthMonitor, HealthReport, Hysteresis, StaticHealth};
use stamps::router::{RouteError, Router};
use stamps::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Arc::new(InMemoryRegistry::new());
    for id in 1..=3 {
        let cap = Capacity::new([(Resource::Tenants, 10_000.0)], 0.2)?;
        let spec = StampSpec::new(StampId(id), format!("stamp-{id:03}"), Region::new("eu-west")?, cap)?
            .endpoint(format!("https://stamp-{id:03}.eu-west.internal"));
        registry.put_active_stamp(spec).await?;
    }
    for i in 0..1_000u32 {
        let tenant = TenantSpec::new(TenantId::new(&format!("tenant-{i:04}"))?);
        registry.assign(&tenant, StampId(1 + i % 3)).await?;
    }

    let monitor = HealthMonitor::builder(StaticHealth::new())
        .hysteresis(Hysteresis::new(2, 2)?)
        .build();
    let router = Router::builder(registry.clone())
        .config(stamps::RouterConfig::default().stale_if_error(Duration::from_secs(600)))
        .health(monitor.table().clone())
        .build()?;
    let loaded = router.warm_up().await?;
    println!("warmed up with {loaded} routes");

    let route = router.route("tenant-0007")?;
    println!("tenant-0007 -> {route}");

    // A migration moves tenant-0007 to stamp 3: dual-write, then cutover.
    let a = registry.require_assignment(&TenantId::new("tenant-0007")?).await?;
    let b = registry
        .compare_and_set(
            a.tenant(),
            a.epoch,
            AssignmentChange::set_mode(AssignmentMode::DualWrite { shadow: StampId(3) }),
        )
        .await?;
    router.sync().await?; // what the follower task does on every change signal
    println!("during dual-write -> {}", router.route("tenant-0007")?);
    registry
        .compare_and_set(a.tenant(), b.epoch, AssignmentChange::move_to(StampId(3)))
        .await?;
    router.sync().await?;
    let moved = router.route("tenant-0007")?;
    println!("after cutover -> {moved}");
    assert_eq!(moved.stamp, StampId(3));

    // Stamp 2 fails two probes in a row: its tenants fail fast, the others are untouched.
    for _ in 0..2 {
        monitor.observe(&HealthReport::unhealthy(
            StampId(2),
            "health probe timed out",
            Timestamp::ZERO,
        ));
    }
    match router.route("tenant-0001") {
        Err(RouteError::StampUnavailable { stamp, .. }) => println!("tenant-0001 -> {stamp} is unavailable"),
        other => println!("tenant-0001 -> {other:?}"),
    }
    println!("tenant-0000 -> {}", router.route("tenant-0000")?);

    // Unknown and malformed tenants.
    println!("nobody -> {:?}", router.resolve("nobody").await);
    println!("'../etc' -> {:?}", router.route("../etc"));

    println!("{:?}", router.stats());
    Ok(())
}
