//! Interleaved comparison of `Router::route` against a bare foldhash `HashMap::get` and moka,
//! for noisy (shared) machines: the tables take turns in short rounds, so load changes hit
//! all of them alike, and the report gives per-table medians and the ratios of medians.
//!
//! ```text
//! cargo bench --bench router_interleaved
//! STAMPS_BENCH_SIZES=10000000 STAMPS_BENCH_SKIP_MOKA=1 cargo bench --bench router_interleaved
//! ```

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/keys.rs"]
mod keys;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use fixture::build_router;
use keys::{key, text, uniform, zipf, SEQ};

type FoldMap = HashMap<String, u32, foldhash::fast::RandomState>;

const ROUNDS: usize = 15;
const PER_ROUND: usize = 1 << 20;

fn time(mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..PER_ROUND {
        f(i & (SEQ - 1));
    }
    start.elapsed().as_nanos() as f64 / PER_ROUND as f64
}

/// Like [`time`], but each lookup's key depends on the previous lookup's result (through a
/// zero the compiler cannot see), so lookups cannot overlap: per-lookup latency, as a router
/// that does other work between requests sees it.
fn latency(mut f: impl FnMut(usize) -> usize) -> f64 {
    let zero = black_box(0usize);
    let mut dep = 0usize;
    let start = Instant::now();
    for i in 0..PER_ROUND {
        dep = f(((i + dep) & (SEQ - 1)) * 16) & zero;
    }
    black_box(dep);
    start.elapsed().as_nanos() as f64 / PER_ROUND as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that short.
    if std::env::args().all(|a| a != "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("STAMPS_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000_000]);
    let skip_moka = std::env::var("STAMPS_BENCH_SKIP_MOKA").is_ok();
    for n in sizes {
        let keys: Vec<String> = (0..n).map(key).collect();
        let router = build_router(&keys);
        let _ticker = router.spawn_clock_thread().unwrap();
        let map: FoldMap = keys.iter().enumerate().map(|(i, k)| (k.clone(), i as u32)).collect();
        let moka = (!skip_moka).then(|| {
            let m: moka::sync::Cache<String, u32> = moka::sync::Cache::builder()
                .max_capacity(n as u64 + n as u64 / 10)
                .time_to_live(Duration::from_secs(3600))
                .build();
            for (i, k) in keys.iter().enumerate() {
                m.insert(k.clone(), i as u32);
            }
            m.run_pending_tasks();
            m
        });
        for (mix, seq) in [("uniform", text(uniform(n))), ("zipf", text(zipf(n)))] {
            let (mut r, mut h, mut m) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                r.push(time(|i| {
                    black_box(router.route(&seq[i * 16..i * 16 + 16]).is_ok());
                }));
                if std::env::var("STAMPS_BENCH_ONLY_ROUTER").is_ok() {
                    h.push(1.0);
                    continue;
                }
                h.push(time(|i| {
                    black_box(map.get(&seq[i * 16..i * 16 + 16]).copied());
                }));
                if let Some(moka) = &moka {
                    m.push(time(|i| {
                        black_box(moka.get(&seq[i * 16..i * 16 + 16]));
                    }));
                }
            }
            let (r, h) = (median(r), median(h));
            print!(
                "interleaved n={n} mix={mix}: router {r:.1} ns, std HashMap+foldhash {h:.1} ns, router/hashmap {:.2}",
                r / h
            );
            if !m.is_empty() {
                let m = median(m);
                print!(", moka {m:.1} ns, moka/router {:.1}", m / r);
            }
            println!();
            let (mut rl, mut hl) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                rl.push(latency(|at| {
                    router.route(&seq[at..at + 16]).map_or(1, |r| r.epoch.0 as usize)
                }));
                hl.push(latency(|at| map.get(&seq[at..at + 16]).map_or(1, |v| *v as usize)));
            }
            let (rl, hl) = (median(rl), median(hl));
            println!(
                "latency     n={n} mix={mix}: router {rl:.1} ns, std HashMap+foldhash {hl:.1} ns, router/hashmap {:.2}",
                rl / hl
            );
        }
    }
}
