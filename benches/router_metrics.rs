//! The router hit path with metrics off and on, interleaved in one run (feature `metrics`).
//!
//! - *off*: no recorder anywhere, nothing scraped;
//! - *on*: a Prometheus recorder (`metrics-exporter-prometheus`) in force on the lookup thread
//!   and on a scraper thread that calls `Router::export_metrics` and renders the text format
//!   ten times a second while the lookups run (a far busier scrape than Prometheus's 15 s).
//!
//! The two take turns in short rounds, so load changes on this shared machine hit both alike;
//! the report gives medians, the spread (min–max) and the ratio of medians.
//!
//! ```text
//! cargo bench --features metrics --bench router_metrics
//! STAMPS_BENCH_SIZES=10000000 cargo bench --features metrics --bench router_metrics
//! ```

#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/keys.rs"]
#[allow(dead_code)] // the Zipf sequence is the other benches'
mod keys;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fixture::build_router;
use keys::{key, text, uniform, SEQ};
use metrics_exporter_prometheus::PrometheusBuilder;
use stamps::router::Router;
use stamps::InMemoryRegistry;

const ROUNDS: usize = 21;
const PER_ROUND: usize = 1 << 20;

fn time(seq: &str, router: &Router<InMemoryRegistry>) -> f64 {
    let start = Instant::now();
    for i in 0..PER_ROUND {
        let i = i & (SEQ - 1);
        black_box(router.route(&seq[i * 16..i * 16 + 16]).is_ok());
    }
    start.elapsed().as_nanos() as f64 / PER_ROUND as f64
}

fn latency(seq: &str, router: &Router<InMemoryRegistry>) -> f64 {
    let zero = black_box(0usize);
    let mut dep = 0usize;
    let start = Instant::now();
    for i in 0..PER_ROUND {
        let at = ((i + dep) & (SEQ - 1)) * 16;
        dep = router.route(&seq[at..at + 16]).map_or(1, |r| r.epoch.0 as usize) & zero;
    }
    black_box(dep);
    start.elapsed().as_nanos() as f64 / PER_ROUND as f64
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    if std::env::args().all(|a| a != "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("STAMPS_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000_000]);
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    let handle = recorder.handle();
    for n in sizes {
        let keys: Vec<String> = (0..n).map(key).collect();
        let router = build_router(&keys);
        let _ticker = router.spawn_clock_thread().unwrap();
        let seq = text(uniform(n));

        // The scraper: exports and renders every 100 ms while `scraping` is set.
        let scraping = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let scraper = {
            let (router, recorder, handle) = (router.clone(), recorder.clone(), handle.clone());
            let (scraping, stop) = (scraping.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut scrapes = 0u64;
                metrics::with_local_recorder(&*recorder, || {
                    while !stop.load(Ordering::Relaxed) {
                        if scraping.load(Ordering::Relaxed) {
                            router.export_metrics();
                            black_box(handle.render().len());
                            scrapes += 1;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
                scrapes
            })
        };

        let (mut off, mut on, mut off_l, mut on_l) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            // Alternate which goes first, so neither always runs on a warmer cache.
            for first in [round % 2 == 0, round % 2 == 1] {
                if first {
                    off.push(time(&seq, &router));
                    off_l.push(latency(&seq, &router));
                } else {
                    scraping.store(true, Ordering::Relaxed);
                    metrics::with_local_recorder(&*recorder, || {
                        on.push(time(&seq, &router));
                        on_l.push(latency(&seq, &router));
                    });
                    scraping.store(false, Ordering::Relaxed);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let scrapes = scraper.join().unwrap_or(0);
        for (what, off, on) in [("throughput", off, on), ("latency", off_l, on_l)] {
            let (o, omin, omax) = stats(off);
            let (m, mmin, mmax) = stats(on);
            println!(
                "metrics n={n} {what:<10}: off {o:.1} ns ({omin:.1}–{omax:.1}), on {m:.1} ns ({mmin:.1}–{mmax:.1}), on/off {:.3}",
                m / o
            );
        }
        println!("metrics n={n}: {scrapes} scrapes during the 'on' rounds");
    }
}
