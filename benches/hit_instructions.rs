//! Instructions per hit, for `valgrind --tool=callgrind` (deterministic on a noisy machine):
//! `Router::route` against a bare foldhash `HashMap::get` over the same keys and lookup
//! sequence (the uniform one of `router_interleaved`). Each loop is its own function, so
//! callgrind collects only inside it:
//!
//! ```text
//! cargo bench --no-run --bench hit_instructions
//! B=$(ls -t target/release/deps/hit_instructions-* | grep -v '\.d$' | head -1)
//! valgrind --tool=callgrind --toggle-collect='*lookups_router*' --callgrind-out-file=/tmp/cg.router $B --bench router
//! valgrind --tool=callgrind --toggle-collect='*lookups_map*' --callgrind-out-file=/tmp/cg.map $B --bench map
//! callgrind_annotate /tmp/cg.router | head -30
//! ```
//! Divide the total by `STAMPS_HIT_LOOKUPS` (default 1,048,576) for instructions per lookup.
//! `STAMPS_HIT_TENANTS` (default 1,000,000) sets the table size.

#[path = "support/fixture.rs"]
mod fixture;
// This bench uses the uniform sequence only.
#[allow(dead_code)]
#[path = "support/keys.rs"]
mod keys;

use std::collections::HashMap;
use std::hint::black_box;

use fixture::build_router;
use keys::{key, text, uniform, SEQ};
use stamps::router::Router;
use stamps::InMemoryRegistry;

type FoldMap = HashMap<String, u32, foldhash::fast::RandomState>;

#[inline(never)]
fn lookups_router(router: &Router<InMemoryRegistry>, seq: &str, n: usize) -> usize {
    let mut hits = 0;
    for i in 0..n {
        let at = (i & (SEQ - 1)) * 16;
        hits += usize::from(black_box(router.route(&seq[at..at + 16]).is_ok()));
    }
    hits
}

#[inline(never)]
fn lookups_map(map: &FoldMap, seq: &str, n: usize) -> usize {
    let mut hits = 0;
    for i in 0..n {
        let at = (i & (SEQ - 1)) * 16;
        hits += usize::from(black_box(map.get(&seq[at..at + 16]).is_some()));
    }
    hits
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this without `--bench`: nothing to do then.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let which = args.last().cloned().unwrap_or_default();
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let n = env("STAMPS_HIT_TENANTS", 1_000_000);
    let lookups = env("STAMPS_HIT_LOOKUPS", SEQ);
    let keys: Vec<String> = (0..n).map(key).collect();
    let seq = text(uniform(n));
    let hits = match which.as_str() {
        "map" => {
            let map: FoldMap = keys.iter().enumerate().map(|(i, k)| (k.clone(), i as u32)).collect();
            lookups_map(&map, &seq, lookups)
        }
        _ => {
            let router = build_router(&keys);
            // As in `router_interleaved`: the clock read on the hit path is the ticker's.
            let _ticker = router.spawn_clock_thread().expect("clock thread");
            lookups_router(&router, &seq, lookups)
        }
    };
    println!("{which}: {hits} hits of {lookups} lookups over {n} tenants");
}
