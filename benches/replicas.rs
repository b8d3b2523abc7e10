//! The registry on a replicated PostgreSQL cluster (a throwaway primary and hot standby started
//! from the installed binaries, see `tests/support/cluster.rs`), against the baseline a user
//! would otherwise run: every read on the primary.
//!
//! 1. Router misses (`assignment`) and feed polls (`changes_since`) served by a replica vs by
//!    the primary, with the primary `STAMPS_PRIMARY_DELAY_MS` away (default 10 ms each way,
//!    through a loopback proxy that holds every chunk that long, as a primary in another region
//!    would be) and with the primary local.
//! 2. Followers' lag under 1,000 writes/s: from a write's acknowledgement to a follower
//!    reading it from the feed, following through the replica and through the primary.
//! 3. Failover time with default settings: from killing the primary (promotion of the
//!    standby included) to the first acknowledged write through the same `PgConfig`.
//!
//! ```text
//! cargo bench --bench replicas --features postgres
//! STAMPS_PRIMARY_DELAY_MS=25 STAMPS_READS=1000 cargo bench --bench replicas --features postgres
//! ```

#[path = "../tests/support/pg.rs"]
mod pg;

#[path = "../tests/support/cluster.rs"]
mod cluster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{Cluster, Link, Replication};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}  (n={})",
        at(0.5),
        at(0.99),
        samples[samples.len() - 1],
        samples.len()
    )
}

fn url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

fn tenant(i: usize) -> TenantSpec {
    TenantSpec::new(TenantId::new(&format!("t{i:06}")).expect("tenant id"))
}

async fn reads(cluster: &Cluster, schema: &str, tenants: usize) {
    let delay = Duration::from_millis(env("STAMPS_PRIMARY_DELAY_MS", 10));
    let n = env("STAMPS_READS", 2000) as usize;
    let far = Link::start_delayed(cluster.nodes[0].port, delay);
    let base = |port: u16| {
        PgConfig::from_url(&url(port))
            .expect("url")
            .schema(schema)
            .expect("schema")
    };
    let setups: Vec<(String, PgConfig)> = vec![
        ("primary, local".into(), base(cluster.nodes[0].port)),
        (format!("primary, {delay:?} away"), base(far.port)),
        (
            format!("replica, local (primary {delay:?} away)"),
            base(far.port).replica(&url(cluster.nodes[1].port)).expect("replica"),
        ),
    ];
    println!("\n## Router misses and feed polls ({n} sequential calls each)\n");
    for (name, cfg) in setups {
        let registry = PgRegistry::connect(cfg).await.expect("connect");
        if !registry.replicas().is_empty() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !registry.replicas()[0].usable && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Warm the pools and the prepared statements.
        for i in 0..50 {
            registry.assignment(&tenant(i % tenants).id).await.expect("read");
        }
        let mut misses = Vec::with_capacity(n);
        for i in 0..n {
            let t = tenant((i * 7919) % tenants);
            let start = Instant::now();
            let a = registry.assignment(&t.id).await.expect("assignment");
            misses.push(start.elapsed());
            assert!(a.is_some());
        }
        let head = registry.changes_since(Version::ZERO, 0).await.expect("head").head;
        let mut polls = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            registry.changes_since(head, 100).await.expect("poll");
            polls.push(start.elapsed());
        }
        let served = registry.replicas().first().map(|r| r.reads).unwrap_or(0);
        println!("{name:<40} miss: {}", percentiles(misses));
        println!("{:<40} poll: {}", "", percentiles(polls));
        if served > 0 {
            println!("{:<40} ({served} of {} reads answered by the replica)", "", 2 * n + 51);
        }
    }
}

async fn follower_lag(cluster: &Cluster, schema: &str) {
    let rate = env("STAMPS_WRITES_PER_SEC", 1000);
    let secs = env("STAMPS_WRITE_SECS", 5);
    println!("\n## Followers' lag at {rate} writes/s for {secs} s (acknowledgement to read from the feed)\n");
    let base = || {
        PgConfig::from_url(&url(cluster.nodes[0].port))
            .expect("url")
            .schema(schema)
            .expect("schema")
    };
    let writer = PgRegistry::connect(base().pool_size(16)).await.expect("writer");
    let through_replica = PgRegistry::connect(base().replica(&url(cluster.nodes[1].port)).expect("replica"))
        .await
        .expect("follower");
    let through_primary = PgRegistry::connect(base()).await.expect("follower");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !through_replica.replicas()[0].usable && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = Arc::new(parking_lot::Mutex::new(std::collections::HashMap::<u64, Instant>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut followers = Vec::new();
    for (name, registry) in [
        ("replica", through_replica.clone()),
        ("primary", through_primary.clone()),
    ] {
        let (acked, stop) = (acked.clone(), stop.clone());
        followers.push(tokio::spawn(async move {
            let signal = registry.change_signal();
            let mut cursor = registry.changes_since(Version::ZERO, 0).await.expect("head").head;
            let mut seen: Vec<(u64, Instant)> = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(Duration::from_millis(5), signal.changed(cursor)).await;
                if let Ok(batch) = registry.changes_since(cursor, 1000).await {
                    let now = Instant::now();
                    for c in &batch.changes {
                        seen.push((c.version.0, now));
                    }
                    cursor = batch.next_cursor(cursor);
                }
            }
            let acked = acked.lock();
            let lags: Vec<Duration> = seen
                .iter()
                .filter_map(|(v, at)| acked.get(v).map(|w| at.saturating_duration_since(*w)))
                .collect();
            (name, lags)
        }));
    }
    let per_writer = rate / 8;
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (writer, acked) = (writer.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_writer.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let end = Instant::now() + Duration::from_secs(secs);
            let mut i = 0;
            let mut done = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                let t = TenantSpec::new(TenantId::new(&format!("lag{w}-{i}")).expect("id"));
                i += 1;
                if let Ok(a) = writer.assign(&t, StampId(1)).await {
                    acked.lock().insert(a.epoch.0, Instant::now());
                    done += 1;
                }
            }
            done
        }));
    }
    let mut written = 0;
    for w in writers {
        written += w.await.expect("writer");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    println!("{written} writes acknowledged ({:.0}/s)", written as f64 / secs as f64);
    for f in followers {
        let (name, lags) = f.await.expect("follower");
        println!("following through the {name:<8} {}", percentiles(lags));
    }
    let s = &through_replica.replicas()[0];
    println!(
        "replica status afterwards: lag {:?}, {} reads answered, {} sent to the primary",
        s.lag, s.reads, s.fallbacks
    );
}

/// Migrates the schema and adds one active stamp with room for every tenant of the bench.
async fn prepare(registry: &PgRegistry) {
    registry.migrate().await.expect("migrate");
    let capacity = Capacity::new([(Resource::Tenants, 1e6)], 0.0).expect("capacity");
    let spec = StampSpec::new(StampId(1), "s1", Region::new("eu").expect("region"), capacity).expect("spec");
    registry.put_active_stamp(spec).await.expect("stamp");
}

async fn failover(runs: usize) {
    println!("\n## Failover with default settings ({runs} runs): kill the primary, promote the standby\n");
    for run in 0..runs {
        let mut cluster = tokio::task::block_in_place(|| Cluster::start(Replication::Asynchronous, 1));
        let schema = format!("bench_failover_{run}");
        let registry = PgRegistry::connect(
            PgConfig::from_url(&cluster.multi_host_url())
                .expect("url")
                .schema(&schema)
                .expect("schema"),
        )
        .await
        .expect("connect");
        prepare(&registry).await;
        registry.assign(&tenant(0), StampId(1)).await.expect("assign");
        cluster.wait_caught_up(0, 1).await;
        let killed = Instant::now();
        tokio::task::block_in_place(|| cluster.kill(0));
        tokio::task::block_in_place(|| cluster.promote(1));
        let promoted = killed.elapsed();
        let mut i = 1;
        loop {
            if registry.assign(&tenant(i), StampId(1)).await.is_ok() {
                break;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let first_write = killed.elapsed();
        println!(
            "run {run}: promotion done {promoted:?} after the kill; first acknowledged write {first_write:?} after the kill ({:?} after promotion)",
            first_write - promoted
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cluster = tokio::task::block_in_place(|| Cluster::start(Replication::Asynchronous, 1));
        let schema = "bench_replicas";
        let registry = PgRegistry::connect(
            PgConfig::from_url(&url(cluster.nodes[0].port))
                .expect("url")
                .schema(schema)
                .expect("schema")
                .pool_size(16),
        )
        .await
        .expect("connect");
        prepare(&registry).await;
        let tenants = env("STAMPS_TENANTS", 2000) as usize;
        let mut tasks = Vec::new();
        for w in 0..8 {
            let registry = registry.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..tenants).step_by(8) {
                    registry.assign(&tenant(i), StampId(1)).await.expect("assign");
                }
            }));
        }
        for t in tasks {
            t.await.expect("load");
        }
        cluster.wait_caught_up(0, 1).await;
        reads(&cluster, schema, tenants).await;
        follower_lag(&cluster, schema).await;
        drop(registry);
        drop(cluster);
        failover(env("STAMPS_FAILOVER_RUNS", 3) as usize).await;
    });
}
