//! `PgRegistry` against a real server, in one criterion group with its floor:
//!
//! - `bare_select_pk`: one prepared single-row `SELECT` by primary key on the registry's own
//!   pool (checkout + round trip, no decoding): what a hand-written lookup costs at best;
//! - `assignment`: `PgRegistry::assignment` on the same rows (decoding into the model);
//! - `assign`: one capacity-checked assignment (a transaction: lock, check, counter, writes,
//!   commit);
//! - `assign_concurrent/N`: N tasks assigning at once, each on its own stamp (throughput; the
//!   feed counter is the only shared row);
//! - `assign_no_group_commit`, `assign_concurrent_no_group_commit/N`: the same through a
//!   registry with group commit off (every `assign` commits alone), on the same schema;
//! - `compare_and_set`, `cas_concurrent/N` (and `_no_group_commit`): one epoch-checked change
//!   (a resize of a tenant's demand), alone and from N tasks at once, each task changing its
//!   own tenants on its own stamp (the feed counter is the only shared row).
//!
//! ```text
//! cargo bench --features postgres --bench postgres -- --warm-up-time 1 --measurement-time 3
//! STAMPS_BENCH_REVERSE=1 cargo bench --features postgres --bench postgres -- --warm-up-time 1 --measurement-time 3 assign
//! ```
//! Uses `DATABASE_URL`, else the local default server, else a throwaway server (see
//! `tests/support/pg.rs`).

#[path = "../tests/support/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

const TENANTS: usize = 10_000;
const STAMPS: u32 = 16;
/// Tenants each `cas_concurrent` task changes in turn.
const CAS_TENANTS: usize = 256;

fn cas_tenant(i: usize) -> TenantId {
    TenantId::new(&format!("cas-{i:05}")).expect("id")
}

/// Resizes the `k`-th tenant of task `task` (its demand flips between 1 and 2 connections),
/// with the epoch it last got.
async fn resize(r: &PgRegistry, state: &[Mutex<(Epoch, bool)>], task: usize, k: usize) {
    let i = task * CAS_TENANTS + k % CAS_TENANTS;
    let (epoch, big) = *state[i].lock().expect("state");
    let demand = Demand::of([(Resource::Connections, if big { 1.0 } else { 2.0 })]).expect("demand");
    let a = r
        .compare_and_set(&cas_tenant(i), epoch, AssignmentChange::resize(demand))
        .await
        .expect("compare_and_set");
    *state[i].lock().expect("state") = (a.epoch, !big);
}

/// Runs `work(t)` for tasks `0..tasks` at once and returns the time until all finished.
async fn in_tasks<F>(tasks: usize, work: impl Fn(usize) -> F) -> Duration
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let workers: Vec<_> = (0..tasks).map(|t| tokio::spawn(work(t))).collect();
    for w in workers {
        w.await.expect("worker");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let schema = pg::unique_schema("bench");
    let _guard = pg::SchemaGuard(schema.clone());
    let registry = rt.block_on(async {
        let cfg = PgConfig::from_url(pg::database_url())
            .expect("url")
            .schema(&schema)
            .expect("schema")
            .pool_size(16);
        let r = PgRegistry::connect(cfg).await.expect("connect");
        r.migrate().await.expect("migrate");
        for s in 1..=STAMPS {
            let cap = Capacity::new([(Resource::Tenants, 100_000_000.0)], 0.0).expect("capacity");
            let spec = StampSpec::new(StampId(s), format!("s{s}"), Region::new("eu").expect("region"), cap);
            r.put_active_stamp(spec.expect("spec")).await.expect("stamp");
        }
        let rows: Vec<ImportRow> = (0..TENANTS)
            .map(|i| {
                let t = TenantSpec::new(TenantId::new(&format!("pre-{i:05}")).expect("id"))
                    .demand(Demand::of([(Resource::Connections, 2.0)]).expect("demand"));
                ImportRow::new(t, StampId(1))
            })
            .collect();
        assert_eq!(r.assign_many(&rows).await.expect("prefill").assigned(), TENANTS);
        // The tenants the `compare_and_set` rows change: CAS_TENANTS per task, on its stamp.
        let rows: Vec<ImportRow> = (0..STAMPS as usize * CAS_TENANTS)
            .map(|i| {
                let t =
                    TenantSpec::new(cas_tenant(i)).demand(Demand::of([(Resource::Connections, 1.0)]).expect("demand"));
                ImportRow::new(t, StampId(1 + (i / CAS_TENANTS) as u32))
            })
            .collect();
        assert_eq!(r.assign_many(&rows).await.expect("prefill").assigned(), rows.len());
        r
    });
    let cas_state: Arc<Vec<Mutex<(Epoch, bool)>>> = rt.block_on(async {
        let mut state = Vec::new();
        for i in 0..STAMPS as usize * CAS_TENANTS {
            let a = registry
                .assignment(&cas_tenant(i))
                .await
                .expect("read")
                .expect("assigned");
            state.push(Mutex::new((a.epoch, false)));
        }
        Arc::new(state)
    });
    // The same schema through a registry with group commit off: every `assign` commits alone.
    let alone = rt.block_on(async {
        let cfg = PgConfig::from_url(pg::database_url())
            .expect("url")
            .schema(&schema)
            .expect("schema")
            .pool_size(16)
            .group_commit(false);
        PgRegistry::connect(cfg).await.expect("connect")
    });
    let ids: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(&format!("pre-{:05}", (i * 7919) % TENANTS)).expect("id"))
        .collect();

    let mut g = c.benchmark_group("postgres");
    g.bench_function("bare_select_pk", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let stamp = registry.bare_select_by_key(&ids[i % TENANTS]).await.expect("select");
                    assert!(stamp.is_some());
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("assignment", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let a = registry.assignment(&ids[i % TENANTS]).await.expect("lookup");
                    assert!(a.is_some());
                }
                start.elapsed()
            })
        })
    });
    let next = Arc::new(AtomicU64::new(0));
    let fresh = {
        let next = next.clone();
        move || TenantSpec::new(TenantId::new(&format!("new-{}", next.fetch_add(1, Ordering::Relaxed))).expect("id"))
    };
    // `STAMPS_BENCH_REVERSE=1` runs the registry without group commit first, so neither always
    // runs first across runs.
    let mut order = [("", &registry), ("_no_group_commit", &alone)];
    if std::env::var_os("STAMPS_BENCH_REVERSE").is_some() {
        order.reverse();
    }
    for (name, registry) in order {
        g.bench_function(format!("assign{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        registry.assign(&fresh(), StampId(1)).await.expect("assign");
                    }
                    start.elapsed()
                })
            })
        });
        for tasks in [1usize, 4, 16] {
            g.throughput(Throughput::Elements(tasks as u64));
            let id = BenchmarkId::new(format!("assign_concurrent{name}"), tasks);
            g.bench_with_input(id, &tasks, |b, &tasks| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        // Each task signs tenants up on its own stamp, as signups spread over a
                        // fleet: only the feed counter is shared.
                        in_tasks(tasks, |t| {
                            let r = registry.clone();
                            let fresh = fresh.clone();
                            let stamp = StampId(1 + (t as u32 % STAMPS));
                            async move {
                                for _ in 0..iters {
                                    r.assign(&fresh(), stamp).await.expect("assign");
                                }
                            }
                        })
                        .await
                    })
                })
            });
        }
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("compare_and_set{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for k in 0..iters as usize {
                        resize(registry, &cas_state, 0, k).await;
                    }
                    start.elapsed()
                })
            })
        });
        for tasks in [1usize, 4, 16] {
            g.throughput(Throughput::Elements(tasks as u64));
            let id = BenchmarkId::new(format!("cas_concurrent{name}"), tasks);
            g.bench_with_input(id, &tasks, |b, &tasks| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        in_tasks(tasks, |t| {
                            let r = registry.clone();
                            let state = cas_state.clone();
                            async move {
                                for k in 0..iters as usize {
                                    resize(&r, &state, t, k).await;
                                }
                            }
                        })
                        .await
                    })
                })
            });
        }
    }
    g.finish();
    drop(registry);
    drop(alone);
    drop(rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
