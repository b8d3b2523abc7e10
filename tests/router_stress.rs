//! Two reader threads route while a writer applies moves and mode changes: no reader ever
//! sees a tenant's epoch go backwards, and every route it sees is internally consistent
//! (the stamp and mode that belong to that epoch: a torn read would mix two writes).
//! Runs 2 s by default; `STAMPS_STRESS_SECS` lengthens it (the `--ignored` variant runs 30 s).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stamps::router::Router;
use stamps::*;

const TENANTS: u64 = 1_000;

fn tenant(i: u64) -> String {
    if i.is_multiple_of(10) {
        // Some ids are longer than the inline limit: the other table.
        format!("a-long-tenant-identifier-{i:08}")
    } else {
        format!("t-{i:06}")
    }
}

/// The stamp and mode a given epoch carries, so readers can check consistency.
fn stamp_of(epoch: u64) -> StampId {
    StampId((epoch % 7) as u32)
}

fn mode_of(epoch: u64) -> AssignmentMode {
    if epoch.is_multiple_of(3) {
        AssignmentMode::DualWrite {
            shadow: StampId((epoch % 5) as u32 + 100),
        }
    } else {
        AssignmentMode::Serving
    }
}

fn change(i: u64, epoch: u64) -> Change {
    let spec = TenantSpec::new(TenantId::new(&tenant(i)).unwrap());
    let a = Assignment::new(
        spec,
        stamp_of(epoch),
        Epoch(epoch),
        mode_of(epoch),
        Timestamp::ZERO,
        Timestamp::ZERO,
    );
    Change::new(
        Version(epoch),
        Timestamp::ZERO,
        ChangeKind::Assignment {
            tenant: a.tenant().clone(),
            assignment: Some(std::sync::Arc::new(a)),
        },
    )
}

fn stress(duration: Duration) {
    let router = Router::builder(InMemoryRegistry::new())
        .config(stamps::RouterConfig::default().ttl(Duration::from_secs(3600)))
        .build()
        .unwrap();
    router
        .preload((0..TENANTS).map(|i| (tenant(i), stamp_of(i + 1), Epoch(i + 1), mode_of(i + 1))))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (router, stop, reads) = (router.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let names: Vec<String> = (0..TENANTS).map(tenant).collect();
                let mut last = vec![0u64; TENANTS as usize];
                let mut i = r as u64 * 7919;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) % TENANTS;
                    let route = match router.route(&names[i as usize]) {
                        Ok(r) => r,
                        Err(e) => panic!("tenant {}: {e:?}", names[i as usize]),
                    };
                    let e = route.epoch.0;
                    assert!(
                        e >= last[i as usize],
                        "tenant {i}: epoch went back from {} to {e}",
                        last[i as usize]
                    );
                    assert_eq!(route.stamp, stamp_of(e), "torn route {route:?}");
                    assert_eq!(route.mode, mode_of(e), "torn route {route:?}");
                    last[i as usize] = e;
                    n += 1;
                }
                reads.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    let mut epoch = TENANTS + 1;
    let mut writes = 0u64;
    let mut x = 12345u64;
    while start.elapsed() < duration {
        // Batches of moves, some of them replays of older epochs (which must be ignored).
        let batch: Vec<Change> = (0..16)
            .map(|k| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                epoch += 1;
                let e = if k == 15 { epoch / 2 } else { epoch };
                change((x >> 33) % TENANTS, e)
            })
            .collect();
        router.apply_batch(&batch);
        writes += batch.len() as u64;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let reads = reads.load(Ordering::Relaxed);
    assert!(
        reads > 10_000 && writes > 1_000,
        "too little happened: {reads} reads, {writes} writes"
    );
}

#[test]
fn two_readers_and_a_writer_never_see_an_epoch_go_back() {
    let secs = std::env::var("STAMPS_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    stress(Duration::from_secs(secs));
}

#[test]
#[ignore = "long variant, run in CI with --ignored"]
fn two_readers_and_a_writer_for_thirty_seconds() {
    stress(Duration::from_secs(30));
}
