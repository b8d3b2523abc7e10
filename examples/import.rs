//! Adopting `stamps` with an existing tenant map: imports 1,000,000 tenants with
//! `Registry::assign_many` in calls of 10,000 rows, with a progress bar, then shows what a
//! retry of a call does (nothing) and how refusals are reported per row.
//!
//! ```text
//! cargo run --release --features postgres --example import                 # in memory
//! cargo run --release --features postgres --example import -- --postgres   # PostgreSQL
//! cargo run --release --features postgres --example import -- --tenants 200000
//! ```
//! With `--postgres`, `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) names
//! the server; the example imports into a fresh schema `stamps_import_example` and drops it
//! at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

const STAMPS: u32 = 100;
const SLICE: usize = 10_000;
const SCHEMA: &str = "stamps_import_example";

type Boxed = Box<dyn std::error::Error + Send + Sync>;

/// The tenant map being adopted: tenant `i` lives on stamp `1 + i % 100` (in a real adoption,
/// rows read from the old routing table or a CSV export).
fn tenant_map(n: usize) -> Result<Vec<ImportRow>, Boxed> {
    (0..n)
        .map(|i| {
            let id = TenantId::new(&format!("tenant-{i:08}"))?;
            let plan = if i % 10 == 0 { "enterprise" } else { "team" };
            let spec = TenantSpec::new(id).label("plan", plan);
            Ok(ImportRow::new(spec, StampId(1 + (i as u32) % STAMPS)))
        })
        .collect()
}

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Drops the example's schema, if there.
async fn drop_schema() -> Result<(), Boxed> {
    let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        .await?;
    Ok(())
}

async fn registry(postgres: bool) -> Result<Arc<DynRegistry>, Boxed> {
    if !postgres {
        return Ok(Arc::new(InMemoryRegistry::new()));
    }
    drop_schema().await?;
    let config = PgConfig::from_url(&database_url())?
        .schema(SCHEMA)?
        .statement_timeout(Duration::from_secs(60))
        .call_timeout(Duration::from_secs(120));
    let r = PgRegistry::connect(config).await?;
    r.migrate().await?;
    Ok(Arc::new(r))
}

#[tokio::main]
async fn main() -> Result<(), Boxed> {
    let args: Vec<String> = std::env::args().collect();
    let postgres = args.iter().any(|a| a == "--postgres");
    let n = match args.iter().position(|a| a == "--tenants") {
        Some(i) => args.get(i + 1).ok_or("--tenants needs a number")?.parse()?,
        None => 1_000_000,
    };
    let registry = registry(postgres).await?;
    // Room for the whole map, plus one stamp that is still being provisioned.
    let per_stamp = (n / STAMPS as usize + 1) as f64;
    for id in 1..=STAMPS {
        let spec = StampSpec::new(
            StampId(id),
            format!("stamp-{id}"),
            Region::new("eu-west")?,
            Capacity::new([(Resource::Tenants, per_stamp)], 0.0)?,
        )?;
        registry.put_active_stamp(spec).await?;
    }
    registry
        .put_stamp(StampSpec::new(
            StampId(999),
            "stamp-999",
            Region::new("eu-west")?,
            Capacity::new([(Resource::Tenants, 10.0)], 0.0)?,
        )?)
        .await?;

    let map = tenant_map(n)?;
    let bar = ProgressBar::new(n as u64);
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tenants ({per_sec}, eta {eta})",
    )?);
    let started = Instant::now();
    let (mut assigned, mut unchanged, mut refused, mut head) = (0, 0, 0, Version::ZERO);
    for slice in map.chunks(SLICE) {
        // A call that fails as a whole (`Unavailable`: the registry could not be reached) wrote
        // nothing, or everything if only its answer was lost: retrying it is always safe.
        let report = loop {
            match registry.assign_many(slice).await {
                Ok(report) => break report,
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => return Err(e.into()),
            }
        };
        assigned += report.assigned();
        unchanged += report.unchanged();
        refused += report.refused().count();
        head = report.head();
        bar.inc(slice.len() as u64);
    }
    bar.finish();
    let took = started.elapsed();
    println!(
        "imported {assigned} tenants ({unchanged} already there, {refused} refused) into {} in {:.1} s: {:.0} tenants/s",
        if postgres { "PostgreSQL" } else { "memory" },
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    assert_eq!(assigned, n);
    let fleet = registry.fleet().await?;
    assert_eq!(fleet.tenants(), n as u64);

    // The import stopped after this slice and runs again: nothing changes.
    let again = registry.assign_many(&map[..SLICE.min(n)]).await?;
    println!(
        "re-running the first slice: {} assigned, {} already there",
        again.assigned(),
        again.unchanged()
    );
    assert_eq!(again.head(), head, "a retry appends no change");

    // Rows the registry refuses are reported one by one; the others of the call land.
    let late = [
        ImportRow::new(TenantSpec::new(TenantId::new("late-1")?), StampId(1)),
        ImportRow::new(TenantSpec::new(TenantId::new("late-2")?), StampId(999)),
        ImportRow::new(TenantSpec::new(TenantId::new("tenant-00000001")?), StampId(7)),
    ];
    let report = registry.assign_many(&late).await?;
    for (row, outcome) in late.iter().zip(report.outcomes()) {
        match outcome {
            Imported::Assigned(a) => println!("  {}: assigned to {} at epoch {}", row.tenant.id, a.stamp, a.epoch.0),
            Imported::Unchanged(a) => println!("  {}: already on {}", row.tenant.id, a.stamp),
            Imported::Refused(e) => println!("  {}: refused: {e}", row.tenant.id),
            _ => println!("  {}: {outcome:?}", row.tenant.id),
        }
    }
    assert_eq!((report.assigned(), report.refused().count()), (1, 2));
    if postgres {
        drop(registry);
        drop_schema().await?;
    }
    Ok(())
}
