//! Reconciliation at fleet scale: 1,000,000 tenants over 100 stamps (in-memory registry and
//! inventories, 1% orphans, 1% missing, 1% stray copies seeded), its wall time and the peak
//! memory it allocates on top of the fleet, against the baseline a user would write first:
//! load every assignment and every stamp's full listing into memory, then diff.
//!
//! ```text
//! cargo bench --bench reconcile_scale --features tokio
//! STAMPS_RECONCILE_TENANTS=100000 cargo bench --bench reconcile_scale --features tokio
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use stamps::reconcile::{reconcile, InMemoryInventory, ReconcileOptions, StampInventory};
use stamps::*;

/// Counts live bytes and their peak (forwards to the system allocator unchanged).
struct Peak;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        grew(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

/// Runs `f`, returning its output, the seconds it took and the peak bytes it added.
async fn measure<T, F: std::future::Future<Output = T>>(f: F) -> (T, f64, f64) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let out = f.await;
    let secs = t.elapsed().as_secs_f64();
    let peak = (PEAK.load(Ordering::Relaxed) - base) as f64;
    (out, secs, peak)
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// The first thing a user writes: everything in memory, then set differences.
async fn naive(registry: &InMemoryRegistry, inventories: &[(StampId, Arc<dyn StampInventory>)]) -> usize {
    let assigned: BTreeMap<String, StampId> = registry
        .all_assignments()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.tenant().as_str().to_string(), a.stamp))
        .collect();
    let mut held: BTreeSet<(String, StampId)> = BTreeSet::new();
    for (stamp, inv) in inventories {
        let mut after: Option<String> = None;
        loop {
            let page = inv.tenants(after.as_deref(), 10_000).await.unwrap();
            let done = page.len() < 10_000;
            after = page.last().map(|h| h.id.clone());
            held.extend(page.into_iter().map(|h| (h.id, *stamp)));
            if done {
                break;
            }
        }
    }
    let mut findings = 0;
    for (t, s) in &held {
        if assigned.get(t) != Some(s) {
            findings += 1;
        }
    }
    for (t, s) in &assigned {
        if !held.contains(&(t.clone(), *s)) {
            findings += 1;
        }
    }
    findings
}

fn main() {
    let tenants: u32 = std::env::var("STAMPS_RECONCILE_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let stamps = 100u32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let registry = InMemoryRegistry::new();
        for id in 1..=stamps {
            let cap = Capacity::new([(Resource::Tenants, f64::from(tenants))], 0.0).unwrap();
            let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
            registry.put_active_stamp(spec).await.unwrap();
        }
        let inventories: Vec<InMemoryInventory> = (0..stamps).map(|_| InMemoryInventory::new()).collect();
        let t = Instant::now();
        for i in 0..tenants {
            let id = format!("t{i:08}");
            let stamp = 1 + i % stamps;
            // 1% orphans (held, never assigned), 1% missing (assigned, not held), 1% stray
            // copies (held on the next stamp too).
            if i % 100 != 0 {
                registry
                    .assign(&TenantSpec::new(TenantId::new(&id).unwrap()), StampId(stamp))
                    .await
                    .unwrap();
            }
            if i % 100 != 1 {
                inventories[(stamp - 1) as usize].hold(id.clone(), None);
            }
            if i % 100 == 2 {
                inventories[(stamp % stamps) as usize].hold(id, None);
            }
        }
        eprintln!(
            "seeded {tenants} tenants over {stamps} stamps in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let dyn_inventories: Vec<(StampId, Arc<dyn StampInventory>)> = inventories
            .iter()
            .enumerate()
            .map(|(i, inv)| (StampId(i as u32 + 1), Arc::new(inv.clone()) as Arc<dyn StampInventory>))
            .collect();

        let (report, secs, peak) = measure(reconcile(&registry, &dyn_inventories, &ReconcileOptions::default())).await;
        let report = report.unwrap();
        println!(
            "reconcile: {} assignments, {} copies, {} findings in {secs:.2} s ({:.0} tenants/s), peak {:.1} MiB",
            report.assignments,
            report.copies,
            report.findings.len(),
            f64::from(tenants) / secs,
            mib(peak)
        );
        let findings = report.findings.len();
        drop(report);
        let (naive_findings, nsecs, npeak) = measure(naive(&registry, &dyn_inventories)).await;
        println!(
            "naive load-everything diff: {naive_findings} findings in {nsecs:.2} s, peak {:.1} MiB",
            mib(npeak)
        );
        println!(
            "ratio (reconcile / naive): time {:.2}, peak memory {:.3}",
            secs / nsecs,
            peak / npeak
        );
        assert_eq!(findings, naive_findings, "both count the same findings");
    });
}
