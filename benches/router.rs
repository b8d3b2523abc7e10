//! Router hot path against the tables a user would otherwise pick.
//!
//! ```text
//! cargo bench --bench router -- --warm-up-time 1 --measurement-time 3
//! STAMPS_BENCH_SIZES=10000000 STAMPS_BENCH_SKIP_MOKA=1 cargo bench --bench router -- --warm-up-time 1 --measurement-time 3
//! ```
//! Sizes default to 10k and 1M tenants (`STAMPS_BENCH_SIZES` is a comma-separated list;
//! `STAMPS_BENCH_FLOOR_ONLY=1` measures only the router and the bare map, for 10M).
//! `STAMPS_BENCH_WRITER=off` keeps the read-while-writing group's writer thread waking every
//! millisecond but applying nothing, to tell the writes' cost from the thread's.
//! Keys are 16-byte tenant ids; lookups follow a uniform or a Zipf (s = 1) mix. Bytes per
//! entry are measured with the counting global allocator of `tests/support/alloc.rs` and
//! printed as `memory:` lines.

#[path = "../tests/support/alloc.rs"]
mod alloc;
#[path = "support/fixture.rs"]
mod fixture;
#[path = "support/keys.rs"]
mod keys;

use fixture::build_router;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keys::{key, text, uniform, zipf, Rng, SEQ};
use parking_lot::RwLock;
use stamps::{
    Assignment, AssignmentMode, Change, ChangeKind, Epoch, StampId, TenantId, TenantSpec, Timestamp, Version,
};

use alloc::live;

type FoldMap = HashMap<String, u32, foldhash::fast::RandomState>;

/// The left-right yardstick: two copies of a foldhash map with the ids inline (the bench's ids
/// are 16 bytes), readers on one copy while the writer changes the other and swaps them.
type InlineMap = HashMap<[u8; 16], u32, foldhash::fast::RandomState>;

/// One write to an [`InlineMap`]: set the id's value.
struct Set([u8; 16], u32);

impl left_right::Absorb<Set> for InlineMap {
    fn absorb_first(&mut self, op: &mut Set, _: &Self) {
        self.insert(op.0, op.1);
    }

    fn sync_with(&mut self, first: &Self) {
        // Cloning keeps the hasher's seed, so both copies hash alike.
        *self = first.clone();
    }
}

fn inline(id: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let n = id.len().min(16);
    k[..n].copy_from_slice(&id.as_bytes()[..n]);
    k
}

fn sizes() -> Vec<usize> {
    std::env::var("STAMPS_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 1_000_000])
}

fn skip_moka(n: usize) -> bool {
    std::env::var("STAMPS_BENCH_SKIP_MOKA").is_ok() || n > 2_000_000
}

fn per_entry(before: isize, n: usize) -> f64 {
    (live() - before) as f64 / n as f64
}

fn lookups(c: &mut Criterion) {
    for n in sizes() {
        let keys: Vec<String> = (0..n).map(key).collect();
        let keys_bytes = live();
        let mixes = [("uniform", text(uniform(n))), ("zipf", text(zipf(n)))];

        // Router.
        let before = live();
        let router = build_router(&keys);
        println!("memory: router n={n} bytes/entry={:.1}", per_entry(before, n));
        let _ticker = router.spawn_clock_thread().unwrap();
        let mut g = c.benchmark_group(format!("route_hit/{n}"));
        g.throughput(Throughput::Elements(1));
        for (mix, seq) in &mixes {
            g.bench_function(BenchmarkId::new("stamps::Router::route", mix), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (SEQ - 1);
                    black_box(router.route(&seq[i * 16..i * 16 + 16]).is_ok())
                })
            });
        }
        drop(_ticker);
        drop(router);

        // Bare HashMap<String, u32> with foldhash: the floor.
        let before = live();
        let mut map = FoldMap::default();
        for (i, k) in keys.iter().enumerate() {
            map.insert(k.clone(), i as u32);
        }
        println!(
            "memory: std_hashmap_foldhash n={n} bytes/entry={:.1} (keys included)",
            per_entry(before, n)
        );
        for (mix, seq) in &mixes {
            g.bench_function(BenchmarkId::new("std::HashMap+foldhash::get", mix), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (SEQ - 1);
                    black_box(map.get(&seq[i * 16..i * 16 + 16]).copied())
                })
            });
        }

        if std::env::var("STAMPS_BENCH_FLOOR_ONLY").is_ok() {
            g.finish();
            continue;
        }

        // RwLock<HashMap>.
        let locked = RwLock::new(map);
        for (mix, seq) in &mixes {
            g.bench_function(BenchmarkId::new("parking_lot::RwLock<HashMap>", mix), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (SEQ - 1);
                    black_box(locked.read().get(&seq[i * 16..i * 16 + 16]).copied())
                })
            });
        }
        drop(locked);

        // dashmap.
        let before = live();
        let dash: dashmap::DashMap<String, u32, foldhash::fast::RandomState> = dashmap::DashMap::default();
        for (i, k) in keys.iter().enumerate() {
            dash.insert(k.clone(), i as u32);
        }
        println!("memory: dashmap n={n} bytes/entry={:.1}", per_entry(before, n));
        for (mix, seq) in &mixes {
            g.bench_function(BenchmarkId::new("dashmap::DashMap::get", mix), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & (SEQ - 1);
                    black_box(dash.get(&seq[i * 16..i * 16 + 16]).map(|v| *v))
                })
            });
        }
        drop(dash);

        // moka with a TTL: what a user would otherwise pick.
        if !skip_moka(n) {
            let before = live();
            let moka: moka::sync::Cache<String, u32> = moka::sync::Cache::builder()
                .max_capacity(n as u64 + n as u64 / 4)
                .time_to_live(Duration::from_secs(3600))
                .build();
            for (i, k) in keys.iter().enumerate() {
                moka.insert(k.clone(), i as u32);
            }
            moka.run_pending_tasks();
            println!("memory: moka n={n} bytes/entry={:.1}", per_entry(before, n));
            for (mix, seq) in &mixes {
                g.bench_function(BenchmarkId::new("moka::sync::Cache::get", mix), |b| {
                    let mut i = 0usize;
                    b.iter(|| {
                        i = (i + 1) & (SEQ - 1);
                        black_box(moka.get(&seq[i * 16..i * 16 + 16]))
                    })
                });
            }
        }
        g.finish();
        let _ = keys_bytes;
    }
}

/// A sample's lookups, handed out to the reader threads in chunks, so that a reader the
/// scheduler pauses (for the writer, the clock thread or the harness: two cores here) does
/// not leave the others idle at the end of the sample: throughput is total work over wall
/// time, not the slowest thread's share.
struct Work(AtomicI64);

impl Work {
    const CHUNK: i64 = 4096;

    fn new(iters: u64) -> Work {
        Work(AtomicI64::new(i64::try_from(iters).unwrap_or(i64::MAX)))
    }

    fn take(&self) -> Option<i64> {
        let left = self.0.fetch_sub(Self::CHUNK, Ordering::Relaxed);
        (left > 0).then(|| left.min(Self::CHUNK))
    }
}

/// Runs `iters` lookups of the ids in `seq` on `threads` reader threads (chunks handed out by
/// [`Work`]) while a writer thread calls `write` once per millisecond (or only wakes, with
/// `STAMPS_BENCH_WRITER=off`); returns the readers' wall time.
fn read_while_writing(
    threads: usize,
    iters: u64,
    seq: &Arc<String>,
    lookup: impl Fn(&str) + Clone + Send + 'static,
    mut write: impl FnMut(&mut Rng) + Send + 'static,
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let writes = std::env::var("STAMPS_BENCH_WRITER").map_or(true, |v| v != "off");
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut r = Rng(7);
            while !stop.load(Ordering::Relaxed) {
                if writes {
                    write(&mut r);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let work = Arc::new(Work::new(iters));
    let start = Instant::now();
    let readers: Vec<_> = (0..threads)
        .map(|t| {
            let (seq, work, lookup) = (seq.clone(), work.clone(), lookup.clone());
            std::thread::spawn(move || {
                let mut i = t * 7919;
                while let Some(n) = work.take() {
                    for _ in 0..n {
                        i = (i + 1) & (SEQ - 1);
                        lookup(&seq[i * 16..i * 16 + 16]);
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    elapsed
}

/// Lookups per second from `threads` readers while a writer applies 1,000 changes/s.
fn concurrent(c: &mut Criterion) {
    let n = sizes().into_iter().max().unwrap_or(1_000_000);
    let keys: Arc<Vec<String>> = Arc::new((0..n).map(key).collect());
    let seq = Arc::new(text(uniform(n)));
    let router = build_router(&keys);
    let _ticker = router.spawn_clock_thread().unwrap();
    let locked = Arc::new(RwLock::new(
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect::<FoldMap>(),
    ));
    let dash: Arc<dashmap::DashMap<String, u32, foldhash::fast::RandomState>> =
        Arc::new(keys.iter().enumerate().map(|(i, k)| (k.clone(), i as u32)).collect());
    let (lr_writer, lr_reader) = left_right::new_from_empty::<InlineMap, Set>(
        keys.iter().enumerate().map(|(i, k)| (inline(k), i as u32)).collect(),
    );
    let lr_writer = Arc::new(parking_lot::Mutex::new(lr_writer));
    let mut g = c.benchmark_group(format!("read_while_writing_1000_per_s/{n}"));
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("stamps::Router::route", threads), |b| {
            b.iter_custom(|iters| {
                let reader = router.clone();
                let (router, keys) = (router.clone(), keys.clone());
                let mut v = 1_000_000u64;
                read_while_writing(
                    threads,
                    iters,
                    &seq,
                    move |id| {
                        black_box(reader.route(id).is_ok());
                    },
                    move |r| {
                        v += 1;
                        let k = &keys[(r.next() % keys.len() as u64) as usize];
                        let spec = TenantSpec::new(TenantId::new(k).unwrap());
                        let a = Assignment::new(
                            spec,
                            StampId((v % 64) as u32),
                            Epoch(v),
                            AssignmentMode::Serving,
                            Timestamp::ZERO,
                            Timestamp::ZERO,
                        );
                        let change = Change::new(
                            Version(v),
                            Timestamp::ZERO,
                            ChangeKind::Assignment {
                                tenant: a.tenant().clone(),
                                assignment: Some(std::sync::Arc::new(a)),
                            },
                        );
                        router.apply(&change);
                    },
                )
            })
        });
        g.bench_function(BenchmarkId::new("parking_lot::RwLock<HashMap>", threads), |b| {
            b.iter_custom(|iters| {
                let reader = locked.clone();
                let (locked, keys) = (locked.clone(), keys.clone());
                read_while_writing(
                    threads,
                    iters,
                    &seq,
                    move |id| {
                        black_box(reader.read().get(id).copied());
                    },
                    move |r| {
                        let k = &keys[(r.next() % keys.len() as u64) as usize];
                        if let Some(v) = locked.write().get_mut(k.as_str()) {
                            *v += 1;
                        }
                    },
                )
            })
        });
        g.bench_function(BenchmarkId::new("left_right::HashMap<[u8; 16], u32>", threads), |b| {
            b.iter_custom(|iters| {
                // Each reader thread gets its own handle (a clone), as left-right requires.
                let reader = lr_reader.clone();
                let (writer, keys) = (lr_writer.clone(), keys.clone());
                let mut v = 0u32;
                read_while_writing(
                    threads,
                    iters,
                    &seq,
                    move |id| {
                        black_box(reader.enter().and_then(|m| m.get(&inline(id)).copied()));
                    },
                    move |r| {
                        v = v.wrapping_add(1);
                        let k = &keys[(r.next() % keys.len() as u64) as usize];
                        let mut w = writer.lock();
                        w.append(Set(inline(k), v));
                        w.publish();
                    },
                )
            })
        });
        g.bench_function(BenchmarkId::new("dashmap::DashMap", threads), |b| {
            b.iter_custom(|iters| {
                let reader = dash.clone();
                let (dash, keys) = (dash.clone(), keys.clone());
                read_while_writing(
                    threads,
                    iters,
                    &seq,
                    move |id| {
                        black_box(reader.get(id).map(|v| *v));
                    },
                    move |r| {
                        let k = &keys[(r.next() % keys.len() as u64) as usize];
                        if let Some(mut v) = dash.get_mut(k.as_str()) {
                            *v += 1;
                        }
                    },
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, concurrent);
criterion_main!(benches);
