//! Moving tenants between two stamps with live writes, using the reference data plane.
//!
//! Tenant `acme` is migrated from stamp 1 to stamp 2 while writer tasks keep writing to it;
//! tenant `globex` is migrated too, but its soak check reports errors after cutover and the
//! migration rolls it back to stamp 1. Time is simulated with a `FakeClock` so the 24-hour
//! soak passes in an instant. At the end every acknowledged write is looked up on the stamp
//! that serves its tenant.
//!
//! Run with `cargo run --example migration --features tokio`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{soak_check_fn, MigrationConfig, MigrationContext, Migrator, SoakVerdict, StepOutcome};
use stamps::*;

type Acked = Vec<(String, String)>;

/// Writes to `tenant` until told to stop, retrying writes that hit a freeze or a fence.
fn spawn_writer(
    id: usize,
    registry: Arc<InMemoryRegistry>,
    plane: ReferenceDataPlane,
    tenant: TenantId,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Acked> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let (key, value) = (format!("order-{id}-{n:06}"), format!("{tenant}:{id}:{n}"));
            loop {
                match plane.write_via(registry.as_ref(), &tenant, &key, &value).await {
                    Ok(_) => {
                        acked.push((key, value));
                        count.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    // Frozen for cutover, or fenced by a stamp: route again and retry.
                    Err(e) if e.is_retryable() && !stop.load(Ordering::SeqCst) => tokio::task::yield_now().await,
                    Err(_) => return acked,
                }
            }
            tokio::task::yield_now().await;
        }
        acked
    })
}

/// Steps a migration to its end, printing every transition, letting writers run in between.
/// Gives up after `MAX_STEPS` steps, so a migration that never ends fails the run (and CI)
/// instead of hanging it.
async fn drive(
    mut m: Migration,
    clock: &FakeClock,
    writes: &AtomicU64,
) -> Result<MigrationState, Box<dyn std::error::Error>> {
    const MAX_STEPS: usize = 1_000;
    for _ in 0..MAX_STEPS {
        let before = writes.load(Ordering::SeqCst);
        for _ in 0..10_000 {
            if writes.load(Ordering::SeqCst) >= before + 50 {
                break;
            }
            tokio::task::yield_now().await;
        }
        match m.step().await? {
            StepOutcome::Advanced { from, to } => {
                println!(
                    "  {}: {from} -> {to} (writes so far: {})",
                    m.id(),
                    writes.load(Ordering::SeqCst)
                );
                if to.is_terminal() {
                    return Ok(to);
                }
            }
            StepOutcome::Waiting { until, .. } => {
                let left = until.saturating_since(clock.now()).as_secs() / 3600;
                println!(
                    "  {}: soaking, healthy, {left}h of the window left; simulated clock jumps 6h",
                    m.id()
                );
                clock.advance(Duration::from_secs(6 * 3600));
            }
            StepOutcome::Retry { reason, .. } => println!("  {}: retrying: {reason}", m.id()),
            StepOutcome::Blocked { reason, .. } | StepOutcome::Refused { reason } => {
                println!("  {}: needs a person: {reason}", m.id());
                return Ok(m.state());
            }
            StepOutcome::Finished { state } => return Ok(state),
            other => println!("  {}: {other:?}", m.id()),
        }
    }
    Err(format!("{} did not end within {MAX_STEPS} steps (state {})", m.id(), m.state()).into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = FakeClock::new();
    let registry = Arc::new(InMemoryRegistry::builder().clock(clock.clone()).build());
    for id in [1, 2] {
        let cap = Capacity::new([(Resource::Tenants, 1000.0), (Resource::Connections, 5000.0)], 0.2)?;
        let spec = StampSpec::new(StampId(id), format!("eu-{id}"), Region::new("eu-west")?, cap)?;
        registry.put_active_stamp(spec).await?;
    }
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
    let acme = TenantId::new("acme")?;
    let globex = TenantId::new("globex")?;
    for t in [&acme, &globex] {
        let spec = TenantSpec::new(t.clone()).demand(Demand::of([(Resource::Connections, 40.0)])?);
        registry.assign(&spec, StampId(1)).await?;
    }

    // The host's soak check: globex shows errors on its new stamp.
    let migrator = Migrator::new(registry.clone(), Arc::new(plane.clone()))
        .clock(clock.clone())
        .soak_check(soak_check_fn(|ctx: &MigrationContext| {
            if ctx.tenant.as_str() == "globex" {
                SoakVerdict::unhealthy("5xx rate 4.2% on the new stamp (baseline 0.1%)")
            } else {
                SoakVerdict::Healthy
            }
        }))
        .config(MigrationConfig::default().soak_window(Duration::from_secs(24 * 3600)))?;

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = [&acme, &acme, &globex]
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            spawn_writer(
                i,
                registry.clone(),
                plane.clone(),
                t.clone(),
                stop.clone(),
                writes.clone(),
            )
        })
        .collect();

    for tenant in [&acme, &globex] {
        let plan = migrator.plan(tenant, StampId(2)).await?;
        println!("{plan}\n");
        let migration = migrator.start(&plan, "ops@example.com").await?;
        println!("{} started for {tenant}:", migration.id());
        let end = drive(migration, &clock, &writes).await?;
        let a = registry.require_assignment(tenant).await?;
        println!("{tenant} ended {end}, served by {} ({})\n", a.stamp, a.mode);
    }

    stop.store(true, Ordering::SeqCst);
    let mut acked: BTreeMap<TenantId, Acked> = BTreeMap::new();
    for (w, t) in writers.into_iter().zip([&acme, &acme, &globex]) {
        acked.entry(t.clone()).or_default().extend(w.await?);
    }
    let mut total = 0usize;
    let mut lost = 0usize;
    for (tenant, writes) in &acked {
        let home = registry.require_assignment(tenant).await?.stamp;
        let rows = plane.dump(home, tenant);
        total += writes.len();
        lost += writes.iter().filter(|(k, v)| rows.get(k) != Some(v)).count();
        println!(
            "{tenant}: {} acknowledged writes, {} rows on {home}",
            writes.len(),
            rows.len()
        );
    }
    println!("acknowledged writes: {total}, lost writes: {lost}");
    if lost > 0 {
        return Err(format!("{lost} acknowledged writes were lost").into());
    }
    Ok(())
}
