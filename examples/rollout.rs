//! Rolling version 42.1.0 out over an in-memory fleet of eight stamps in three regions, one
//! wave at a time, while placement sends new tenants only to updated stamps.
//!
//! The host's deploy is simulated: each wave's stamps get the new version label. After each
//! wave bakes, the health the routers use is judged; during the third wave one stamp turns
//! unhealthy, so the rollout halts and proposes rolling that wave back.
//!
//! Run with `cargo run --example rollout`.

use std::time::Duration;

use stamps::health::HealthTable;
use stamps::placement::{LeastLoaded, MinVersion, Pipeline, Placement};
use stamps::rollout::{judge_wave, plan_rollout, RolloutPolicy, WaveVerdict};
use stamps::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let regions = ["eu-west", "us-east", "ap-south"];
    let mut stamps = Vec::new();
    for id in 1..=8u32 {
        let region = regions[(id as usize) % regions.len()];
        let cap = Capacity::new([(Resource::Tenants, 500.0)], 0.2)?;
        let spec = StampSpec::new(StampId(id), format!("{region}-{id}"), Region::new(region)?, cap)?.version("41.9.2");
        let mut usage = Amounts::default();
        for _ in 0..(id * 37 % 300) {
            model::admission::add(&mut usage, &Demand::default(), true);
        }
        stamps.push(StampLoad::new(
            Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO),
            usage,
        ));
    }
    let mut fleet = Fleet::new(stamps, Version(1), Timestamp::ZERO);

    let policy = RolloutPolicy::default().max_tenant_share(0.3);
    let plan = plan_rollout(&fleet, "42.1.0", &policy)?;
    print!("{plan}");

    // New tenants go only to stamps already on 42.1.0.
    let on_new = Pipeline::new()
        .filter(MinVersion::new("42.1.0"))
        .score(LeastLoaded::bottleneck(), 1.0);
    let newcomer = TenantSpec::new(TenantId::new("newco")?);

    let health = HealthTable::new();
    let bake = Duration::from_secs(15 * 60);
    let mut halted = None;
    for wave in &plan.waves {
        // The host's deploy hook would run here; the example relabels the stamps.
        for l in fleet.stamps.iter_mut().filter(|l| wave.stamps.contains(&l.id())) {
            l.stamp.spec.version = Some("42.1.0".into());
        }
        if wave.index == 2 {
            if let Some(s) = wave.stamps.first() {
                health.set(
                    *s,
                    HealthStatus::Unhealthy,
                    Timestamp::ZERO,
                    Some("5xx rate 4% after deploy"),
                );
            }
        }
        let verdict = judge_wave(wave, &health, bake, bake);
        let placed = on_new.place(&newcomer, &placement::FleetView::new(&fleet));
        println!(
            "wave {}: {verdict}; a new tenant would go to {}",
            wave.index,
            placed.map_or_else(|e| format!("nowhere ({e})"), |s| s.to_string())
        );
        if let WaveVerdict::RollBack { .. } = verdict {
            halted = Some(wave.index);
            break;
        }
    }
    let index = halted.ok_or("the unhealthy stamp must halt the rollout")?;
    println!("rollout halted at wave {index}: roll its stamps back to 41.9.2, then investigate");
    Ok(())
}
