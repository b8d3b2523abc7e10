//! Rolling version 42.1.0 out over an in-memory fleet of eight stamps in three regions, wave
//! by wave, through a `RolloutController` that saves every step in the registry (so a
//! controller that crashes resumes where it was), while placement sends new tenants only to
//! updated stamps.
//!
//! The host's deploy hook is simulated: it relabels each stamp of the wave with the new
//! version (a real one would trigger the deployment pipeline). During the third wave's bake
//! one stamp turns unhealthy, so the controller rolls that wave back and stops.
//!
//! Run with `cargo run --example rollout --features tokio`.

use std::sync::Arc;
use std::time::Duration;

use stamps::health::HealthTable;
use stamps::placement::{FleetView, LeastLoaded, MinVersion, Pipeline, Placement};
use stamps::rollout::{plan_rollout, DeployHook, RolloutController, RolloutPolicy};
use stamps::*;

/// Deploys by relabelling the stamps' version in the registry.
struct Relabel(Arc<InMemoryRegistry>);

impl Relabel {
    async fn set(&self, stamps: &[StampId], version: &str) -> Result<(), String> {
        for id in stamps {
            let stamp = self
                .0
                .stamp(*id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("unknown stamp")?;
            let spec = stamp.spec.clone().version(version);
            self.0.put_stamp(spec).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[stamps::async_trait]
impl DeployHook for Relabel {
    async fn deploy(&self, stamps: &[StampId], version: &str) -> Result<(), String> {
        self.set(stamps, version).await
    }
    async fn roll_back(&self, stamps: &[StampId], _from: &str) -> Result<(), String> {
        self.set(stamps, "41.9.2").await
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Arc::new(InMemoryRegistry::new());
    let regions = ["eu-west", "us-east", "ap-south"];
    for id in 1..=8u32 {
        let region = regions[(id as usize) % regions.len()];
        let cap = Capacity::new([(Resource::Tenants, 500.0)], 0.2)?;
        let spec = StampSpec::new(StampId(id), format!("{region}-{id}"), Region::new(region)?, cap)?.version("41.9.2");
        registry.put_active_stamp(spec).await?;
        for t in 0..(id * 37 % 300) {
            registry
                .assign(&TenantSpec::new(TenantId::new(&format!("t{id}-{t}"))?), StampId(id))
                .await?;
        }
    }

    let plan = plan_rollout(
        &registry.fleet().await?,
        "42.1.0",
        &RolloutPolicy::default().max_tenant_share(0.3),
    )?;
    print!("{plan}");

    // New tenants go only to stamps already on 42.1.0.
    let on_new = Pipeline::new()
        .filter(MinVersion::new("42.1.0"))
        .score(LeastLoaded::bottleneck(), 1.0);
    let newcomer = TenantSpec::new(TenantId::new("newco")?);

    let health = HealthTable::new();
    let bake = Duration::from_secs(15 * 60);
    let controller = RolloutController::new(registry.clone(), Relabel(registry.clone()), bake);
    let mut record = controller.start(&plan).await?;
    let mut clock = 0u64;
    while !record.state.is_terminal() {
        if record.wave == 2 && record.state == RolloutState::Baking {
            if let Some(s) = record.current_wave().and_then(|w| w.first()) {
                health.set(
                    *s,
                    HealthStatus::Unhealthy,
                    Timestamp::from_millis(clock),
                    Some("5xx rate 4% after deploy"),
                );
            }
        }
        record = controller
            .step(record.id, &health, Timestamp::from_millis(clock))
            .await?;
        clock += bake.as_millis() as u64; // each step a bake later
        let fleet = registry.fleet().await?;
        let placed = on_new.place(&newcomer, &FleetView::new(&fleet));
        println!(
            "wave {} {}: {}; a new tenant would go to {}",
            record.wave,
            record.state,
            record.note.as_deref().unwrap_or(""),
            placed.map_or_else(|e| format!("nowhere ({e})"), |s| s.to_string())
        );
    }
    if record.state != RolloutState::RolledBack {
        return Err("the unhealthy stamp must roll the rollout back".into());
    }
    println!(
        "rollout {} stopped: {}",
        record.id,
        record.note.as_deref().unwrap_or("")
    );
    Ok(())
}
