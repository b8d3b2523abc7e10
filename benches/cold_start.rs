//! Router cold start from PostgreSQL: `Router::warm_up` over N assignments (default 1,000,000;
//! `STAMPS_COLD_TENANTS=1000000,10000000`), against the floor of reading the same rows with
//! one binary `COPY … TO STDOUT` (the bytes only, no decoding). Three rounds, candidates
//! alternating; each reports the time and the peak resident memory the round added (VmHWM,
//! reset before each round through `/proc/self/clear_refs`).
//!
//! The assignments are written straight into the registry's table by SQL (a schema named
//! after N, kept between runs so a rerun does not write them again).
//!
//! ```text
//! cargo bench --bench cold_start --features postgres
//! STAMPS_COLD_TENANTS=10000000 cargo bench --bench cold_start --features postgres
//! ```

#[path = "../tests/support/pg.rs"]
mod pg;

use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::router::{Router, RouterConfig};
use stamps::*;
use tokio_postgres::NoTls;

const COLS: &str = "tenant, stamp_id, epoch, mode, shadow_id, frozen_until, region, residency, tier, \
                    pin_stamp_id, demand_milli, labels, assigned_at, updated_at, ephemeral";

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak-RSS mark and returns the current RSS (KiB).
fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status("VmRSS:")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn prepare(n: i64) -> (PgRegistry, String) {
    let schema = format!("bench_cold_{n}");
    let registry = PgRegistry::connect(PgConfig::from_url(pg::database_url()).unwrap().schema(&schema).unwrap())
        .await
        .expect("connect");
    registry.migrate().await.expect("migrate");
    let (client, conn) = tokio_postgres::connect(pg::database_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let have: i64 = client
        .query_one(&format!("SELECT count(*) FROM {schema}.assignments"), &[])
        .await
        .expect("count")
        .get(0);
    if have != n {
        for id in 1..=10u32 {
            let cap = Capacity::new([(Resource::Tenants, 1e9)], 0.0).unwrap();
            let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap)
                .unwrap()
                .endpoint(format!("https://s{id}.internal"));
            registry.put_active_stamp(spec).await.expect("stamp");
        }
        eprintln!("writing {n} assignments into {schema} (once)");
        client
            .batch_execute(&format!("TRUNCATE {schema}.assignments CASCADE"))
            .await
            .expect("truncate");
        client
            .execute(
                &format!(
                    "INSERT INTO {schema}.assignments (tenant, stamp_id, epoch, mode, tier, assigned_at, updated_at) \
                     SELECT 'tenant-' || lpad(g::text, 9, '0'), 1 + g % 10, 1, 'serving', 'shared', 0, 0 \
                     FROM generate_series(1, $1::bigint) g"
                ),
                &[&n],
            )
            .await
            .expect("insert");
        client
            .batch_execute(&format!("VACUUM ANALYZE {schema}.assignments"))
            .await
            .expect("vacuum");
    }
    (registry, schema)
}

async fn floor(schema: &str) -> (Duration, u64) {
    let (client, conn) = tokio_postgres::connect(pg::database_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let t = Instant::now();
    let out = client
        .copy_out(&format!(
            "COPY (SELECT {COLS} FROM {schema}.assignments ORDER BY tenant) TO STDOUT (FORMAT binary)"
        ))
        .await
        .expect("copy");
    let mut out = pin!(out);
    let mut bytes = 0u64;
    while let Some(chunk) = out.next().await {
        bytes += chunk.expect("chunk").len() as u64;
    }
    (t.elapsed(), bytes)
}

async fn warm(registry: &PgRegistry, page: usize, n: i64) -> Duration {
    let router = Router::builder(registry.clone())
        .config(RouterConfig::default().page_size(page).max_entries(n as usize))
        .build()
        .expect("router");
    let t = Instant::now();
    let loaded = router.warm_up().await.expect("warm up");
    let took = t.elapsed();
    assert_eq!(loaded as i64, n);
    if let Err(e) = router.route("tenant-000000001") {
        panic!("a warmed tenant must route: {e}");
    }
    took
}

fn show(name: &str, mut runs: Vec<(Duration, u64)>, n: i64) -> f64 {
    runs.sort_by_key(|r| r.0);
    let (med, lo, hi) = (runs[1].0, runs[0].0, runs[2].0);
    let peak = runs.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "  {name:<30} {:>8.2} s  (spread {:.2}–{:.2})  {:>10.0} tenants/s  peak +{:.0} MiB",
        med.as_secs_f64(),
        lo.as_secs_f64(),
        hi.as_secs_f64(),
        n as f64 / med.as_secs_f64(),
        mib(peak)
    );
    med.as_secs_f64()
}

async fn run(n: i64) {
    let (registry, schema) = prepare(n).await;
    let pages = [1_000usize, 10_000, 50_000];
    let mut floor_runs = Vec::new();
    let mut warm_runs: Vec<Vec<(Duration, u64)>> = vec![Vec::new(); pages.len()];
    for round in 0..3 {
        let mut order: Vec<usize> = (0..=pages.len()).collect();
        let k = round % order.len();
        order.rotate_left(k);
        for i in order {
            let before = reset_peak();
            if i == pages.len() {
                let (t, bytes) = floor(&schema).await;
                let _ = bytes;
                floor_runs.push((t, status("VmHWM:").saturating_sub(before)));
            } else {
                let t = warm(&registry, pages[i], n).await;
                warm_runs[i].push((t, status("VmHWM:").saturating_sub(before)));
            }
        }
    }
    println!("{n} assignments from PostgreSQL (3 rounds, median):");
    let f = show("floor: one binary COPY", floor_runs, n);
    for (i, runs) in warm_runs.into_iter().enumerate() {
        let w = show(&format!("warm_up, pages of {}", pages[i]), runs, n);
        println!("  {:<30} {:.2}x the floor", "", w / f);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<i64> = match std::env::var("STAMPS_COLD_TENANTS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![1_000_000],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes {
        rt.block_on(run(n));
    }
}
