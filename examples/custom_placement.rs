//! Composes a hybrid placement policy — residency hard, enterprise tenants on dedicated stamps,
//! in-region preferred, least loaded by connections — places 10,000 tenants on 20 stamps in 3
//! regions, prints the distribution, and explains one rejected tenant.
//!
//! `cargo run --example custom_placement`

use stamps::placement::{InRegion, LeastLoaded, Pipeline, PlacementExt};
use stamps::registry::{place_and_assign, PlaceAndAssignError};
use stamps::*;

/// A small deterministic generator, so every run prints the same thing.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = InMemoryRegistry::new();

    // 20 stamps: 8 in us-east, 8 in eu-west, 4 in ap-south; one dedicated stamp in us and eu.
    let layout = [("us-east", "us", 8), ("eu-west", "eu", 8), ("ap-south", "ap", 4)];
    let mut id = 0;
    for (region, residency, count) in layout {
        for i in 0..count {
            id += 1;
            let mut spec = StampSpec::new(
                StampId(id),
                format!("{region}-{i}"),
                Region::new(region)?,
                Capacity::new([(Resource::Connections, 12_000.0), (Resource::Tenants, 1_000.0)], 0.25)?,
            )?
            .residency(Residency::new(residency)?);
            if i == 0 && residency != "ap" {
                spec = spec.tier(Tier::Dedicated);
            }
            registry.put_active_stamp(spec).await?;
        }
    }

    // The policy: every Pipeline enforces pin, residency, tier (dedicated tenants get an empty
    // dedicated stamp, nobody else ever lands there), state, health and 25% headroom. Score by
    // connections, and prefer the tenant's own region when it has room.
    let policy = Pipeline::new()
        .score(LeastLoaded::on(Resource::Connections), 1.0)
        .prefer(InRegion);

    // 10,000 tenants: half in the US, 35% in the EU, 15% in APAC; three enterprise customers.
    let mut rng = Lcg(42);
    let mut placed = 0;
    let mut rejected: Vec<(TenantSpec, PlaceAndAssignError)> = Vec::new();
    for n in 0..10_000u32 {
        let (region, residency) = match rng.next(100) {
            0..=49 => ("us-east", "us"),
            50..=84 => ("eu-west", "eu"),
            _ => ("ap-south", "ap"),
        };
        let connections = 2 + rng.next(29) as u32;
        let mut t = TenantSpec::new(TenantId::new(&format!("tenant-{n:05}"))?)
            .region(Region::new(region)?)
            .residency(Residency::new(residency)?)
            .demand(Demand::of([(Resource::Connections, f64::from(connections))])?);
        if n % 4_000 == 1_234 {
            t = t.tier(Tier::Dedicated).label("plan", "enterprise");
        }
        match place_and_assign(&registry, &policy, &t).await {
            Ok(_) => placed += 1,
            Err(e) => rejected.push((t, e)),
        }
    }

    let fleet = registry.fleet().await?;
    println!("placed {placed} of 10000 tenants; {} rejected\n", rejected.len());
    println!("{fleet}");

    let mut provision = std::collections::BTreeMap::new();
    for (_, e) in &rejected {
        if let Some(p) = e.provision() {
            *provision.entry(p.to_string()).or_insert(0) += 1;
        }
    }
    for (what, n) in &provision {
        println!("{n} tenant(s) need: {what}");
    }

    // Why was the enterprise tenant (or, failing that, the first rejected one) turned away?
    let pick = rejected
        .iter()
        .find(|(t, _)| t.tier == Tier::Dedicated)
        .or_else(|| rejected.first());
    if let Some((t, e)) = pick {
        println!("\n{}: {e}\n", t.id);
        println!("{}", policy.explain(t, &stamps::placement::FleetView::new(&fleet)));
    }
    Ok(())
}
