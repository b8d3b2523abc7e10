//! Quickstart: 3 stamps in 2 regions, 1,000 tenants placed on the least-loaded stamp of their
//! region, a few lookups, and the fleet table.
//!
//! Run: `cargo run --example quickstart`

use stamps::placement::policies;
use stamps::registry::place_and_assign;
use stamps::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let registry = InMemoryRegistry::new();

    // Three identical stamps, sized as in the worked example of "Deployment Stamps for
    // Availability: Multi-Region Guide": 5,000 database connections and 2,000 rps (20 servers
    // at 100 rps) each, 25% headroom.
    let stamps = [(1, "us-east-1", "us"), (2, "us-east-2", "us"), (3, "eu-west-1", "eu")];
    for (id, name, residency) in stamps {
        let region = if residency == "eu" { "eu-west" } else { "us-east" };
        let capacity = Capacity::new(
            [(Resource::Connections, 5000.0), (Resource::RequestsPerSecond, 2000.0)],
            0.25,
        )?;
        let spec = StampSpec::new(StampId(id), name, Region::new(region)?, capacity)?
            .residency(Residency::new(residency)?)
            .endpoint(format!("https://{name}.stamps.internal"));
        registry.put_active_stamp(spec).await?;
    }

    // 1,000 tenants, one in three with EU residency; each needs 5 connections and 2 rps.
    let policy = policies::least_loaded();
    let mut placed = 0;
    let mut rejected = 0;
    for i in 0..1000 {
        let residency = if i % 3 == 0 { "eu" } else { "us" };
        let tenant = TenantSpec::new(TenantId::new(&format!("tenant-{i:04}"))?)
            .residency(Residency::new(residency)?)
            .demand(Demand::of([
                (Resource::Connections, 5.0),
                (Resource::RequestsPerSecond, 2.0),
            ])?);
        // Least loaded on the bottleneck resource, among active, healthy stamps of the tenant's
        // residency with room under headroom; the registry re-checks capacity atomically and
        // place_and_assign re-places on a lost race.
        match place_and_assign(&registry, &policy, &tenant).await {
            Ok(_) => placed += 1,
            Err(e) => {
                rejected += 1;
                println!("{}: {e}", tenant.id);
            }
        }
    }
    println!("placed {placed} tenants, {rejected} found no stamp with room\n");

    // Lookups: where does a tenant live?
    for name in ["tenant-0000", "tenant-0001", "tenant-0500", "tenant-9999"] {
        let id = TenantId::new(name)?;
        match registry.assignment(&id).await? {
            Some(a) => {
                let stamp = registry.stamp(a.stamp).await?;
                let endpoint = stamp.and_then(|s| s.spec.endpoint).unwrap_or_default();
                println!("{name:<12} -> {} ({endpoint}), epoch {}", a.stamp, a.epoch);
            }
            None => println!("{name:<12} -> not assigned"),
        }
    }

    // Untrusted input is validated, never trusted.
    match TenantId::new("../../etc/passwd") {
        Ok(_) => println!("unexpected: accepted a path"),
        Err(e) => println!("\nrejected tenant id: {e}"),
    }

    println!("\n{}", registry.fleet().await?);
    Ok(())
}
