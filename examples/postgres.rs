//! Quickstart on PostgreSQL: migrate the schema, register stamps, assign a tenant, move it with
//! a compare-and-set, follow the change feed.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --features postgres --example postgres
//! ```
//! `DATABASE_URL` defaults to `postgres://postgres@127.0.0.1:5432/test`. The example uses the
//! schema `stamps_quickstart` and can run any number of times (each run moves the tenant to the
//! other stamp).

use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let registry = PgRegistry::connect(PgConfig::from_url(&url)?.schema("stamps_quickstart")?).await?;
    let applied = registry.migrate().await?;
    println!(
        "schema {} at version {:?} (applied now: {applied:?})",
        registry.schema(),
        registry.schema_version().await?
    );

    // Two stamps in the EU; put_stamp is an upsert, so reruns keep them.
    for (id, name) in [(1, "stamp-001"), (2, "stamp-002")] {
        let capacity = Capacity::new([(Resource::Tenants, 200.0), (Resource::Connections, 5000.0)], 0.25)?;
        let spec = StampSpec::new(StampId(id), name, Region::new("eu-west")?, capacity)?
            .residency(Residency::new("eu")?)
            .endpoint(format!("https://{name}.eu.internal"));
        registry.put_active_stamp(spec).await?;
    }

    // A tenant, assigned once (capacity is checked in the same transaction as the insert).
    let acme = TenantSpec::new(TenantId::new("acme")?)
        .demand(Demand::of([(Resource::Connections, 25.0)])?)
        .residency(Residency::new("eu")?);
    let current = match registry.assignment(&acme.id).await? {
        Some(a) => a,
        None => registry.assign(&acme, StampId(1)).await?,
    };
    println!("acme is on {} at epoch {}", current.stamp, current.epoch);

    // Move it to the other stamp: a compare-and-set on the epoch (a migration's cutover).
    let to = if current.stamp == StampId(1) {
        StampId(2)
    } else {
        StampId(1)
    };
    let moved = registry
        .compare_and_set(&acme.id, current.epoch, AssignmentChange::move_to(to).by("quickstart"))
        .await?;
    println!("moved acme to {} at epoch {}", moved.stamp, moved.epoch);

    // A caller with the old epoch loses instead of overwriting.
    match registry
        .compare_and_set(&acme.id, current.epoch, AssignmentChange::move_to(current.stamp))
        .await
    {
        Err(Error::Conflict(Conflict::Epoch { expected, actual })) => {
            println!(
                "stale write refused: expected e{}, registry holds e{}",
                expected.0, actual.0
            )
        }
        other => return Err(format!("a stale compare-and-set must conflict, got {other:?}").into()),
    }

    // Routers follow the change feed by version; the move is the newest change.
    let batch = registry
        .changes_since(Version(moved.epoch.0.saturating_sub(1)), 10)
        .await?;
    for change in &batch.changes {
        println!(
            "change {} at {}: tenant {:?}",
            change.version,
            change.at,
            change.tenant().map(|t| t.as_str())
        );
    }
    let history = registry.history(&acme.id).await?;
    println!(
        "acme has {} history entries; the last by {:?}",
        history.len(),
        history.last().and_then(|h| h.actor.as_deref())
    );

    println!("\n{}", registry.fleet().await?);
    Ok(())
}
