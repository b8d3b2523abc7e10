//! Reconciliation (`stamps::reconcile`): every finding class on both registries, page sizes
//! down to 1, a stamp that times out and one that fails part way (partial report, never a
//! failed run), copies of a running migration left alone, and a property test: for random
//! registries and inventories the report is exactly the set difference, whatever the page size.
//!
//! The PostgreSQL variant needs the test server (`DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`); an unreachable server fails, never skips.

#[path = "support/pg.rs"]
mod pg;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stamps::reconcile::{
    apply_repair, reconcile, FindingKind, Fingerprint, Held, InMemoryInventory, InventoryError, ReconcileOptions,
    ReconcileReport, Repair, RepairError, StampInventory,
};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

async fn stamps(r: &dyn Registry, ids: &[u32]) {
    for id in ids {
        let cap = Capacity::new([(Resource::Tenants, 1_000.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(*id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
        r.put_active_stamp(spec).await.unwrap();
    }
}

fn invs(list: &[(u32, &InMemoryInventory)]) -> Vec<(StampId, Arc<dyn StampInventory>)> {
    list.iter()
        .map(|(id, inv)| (StampId(*id), Arc::new((*inv).clone()) as Arc<dyn StampInventory>))
        .collect()
}

fn summary(report: &ReconcileReport) -> Vec<(String, u32, &'static str)> {
    report
        .findings
        .iter()
        .map(|f| (f.tenant.clone(), f.stamp.0, f.kind.as_str()))
        .collect()
}

/// A fleet with one case of every finding class, plus healthy tenants and a running migration.
async fn every_finding_class(r: Arc<dyn Registry>) {
    stamps(&*r, &[1, 2, 3, 4]).await;
    let (s1, s2, s3) = (
        InMemoryInventory::new(),
        InMemoryInventory::new(),
        InMemoryInventory::new(),
    );
    // Healthy tenants on stamps 1 and 2.
    for i in 0..40 {
        let t = format!("ok{i:02}");
        let stamp = 1 + (i % 2);
        r.assign(&TenantSpec::new(tid(&t)), StampId(stamp)).await.unwrap();
        [&s1, &s2][(stamp - 1) as usize].hold(t, Some(Fingerprint::new(format!("rows={i}"))));
    }
    // missing: assigned to 1, nothing there; a copy on 2 to restore from.
    r.assign(&TenantSpec::new(tid("lost")), StampId(1)).await.unwrap();
    s2.hold("lost", None);
    // missing with no copy anywhere.
    r.assign(&TenantSpec::new(tid("gone")), StampId(2)).await.unwrap();
    // orphan: not assigned, held on 3.
    s3.hold("offboarded", Some(Fingerprint::new("rows=7")));
    // stray copy: assigned to 1 and held there, also on 3, no migration ever.
    r.assign(&TenantSpec::new(tid("restored")), StampId(1)).await.unwrap();
    s1.hold("restored", None);
    s3.hold("restored", None);
    // leftover shadow: a cancelled migration 1 -> 2 left its copy on 2.
    r.assign(&TenantSpec::new(tid("moved")), StampId(1)).await.unwrap();
    s1.hold("moved", None);
    s2.hold("moved", None);
    let m = r
        .create_migration(MigrationRecord::planned(tid("moved"), StampId(1), StampId(2)))
        .await
        .unwrap();
    let mut cancelled = m.clone();
    cancelled.state = MigrationState::Cancelled;
    let cancelled = r.save_migration(&cancelled).await.unwrap();
    // invalid id on 2.
    s2.hold("Bad Id!", None);
    // a running migration 1 -> 3: copies on both are expected, not reported.
    r.assign(&TenantSpec::new(tid("moving")), StampId(1)).await.unwrap();
    s1.hold("moving", None);
    s3.hold("moving", None);
    r.create_migration(MigrationRecord::planned(tid("moving"), StampId(1), StampId(3)))
        .await
        .unwrap();

    let expected = vec![
        ("Bad Id!".to_string(), 2, "invalid_id"),
        ("gone".to_string(), 2, "missing"),
        ("lost".to_string(), 1, "missing"),
        ("lost".to_string(), 2, "stray_copy"),
        ("moved".to_string(), 2, "leftover_shadow"),
        ("offboarded".to_string(), 3, "orphan"),
        ("restored".to_string(), 3, "stray_copy"),
    ];
    for page in [1, 2, 3, 7, 1_000] {
        let options = ReconcileOptions::default().page_size(page).concurrency(2);
        let report = reconcile(&*r, &invs(&[(1, &s1), (2, &s2), (3, &s3)]), &options)
            .await
            .unwrap();
        assert_eq!(summary(&report), expected, "page size {page}");
        assert_eq!(report.not_inventoried, [StampId(4)]);
        assert!(report.unreadable.is_empty());
        assert!(!report.is_complete() && !report.is_clean());
        assert_eq!(report.assignments, 45);
        assert_eq!(report.copies, 40 + 9);
        let f = |t: &str| report.findings.iter().find(|f| f.tenant == t).unwrap();
        // Both findings of "lost" say: restore the serving stamp from the copy on 2 (never
        // delete the only copy).
        for lost in report.findings.iter().filter(|f| f.tenant == "lost") {
            assert_eq!(
                lost.repair,
                Repair::RestoreFrom {
                    from: StampId(2),
                    to: StampId(1)
                }
            );
        }
        assert_eq!(f("gone").repair, Repair::RestoreFromBackup { to: StampId(2) });
        assert_eq!(f("offboarded").repair, Repair::DeleteCopy { stamp: StampId(3) });
        assert_eq!(f("offboarded").fingerprint, Some(Fingerprint::new("rows=7")));
        assert_eq!(f("restored").repair, Repair::DeleteCopy { stamp: StampId(3) });
        assert_eq!(f("Bad Id!").repair, Repair::Investigate);
        assert!(
            matches!(f("moved").kind, stamps::reconcile::FindingKind::LeftoverShadow { migration, state: MigrationState::Cancelled } if migration == cancelled.id)
        );
    }
    repair_every_finding(&r, [&s1, &s2, &s3]).await;
}

/// Applies every finding's repair (the action edits the in-memory inventories the way a host's
/// data plane would), until only what cannot be applied is left; checks each applied repair's
/// history entry and that a stale finding runs nothing.
async fn repair_every_finding(r: &Arc<dyn Registry>, inventories: [&InMemoryInventory; 3]) {
    let inv = |s: StampId| inventories[(s.0 - 1) as usize].clone();
    let all = invs(&[(1, inventories[0]), (2, inventories[1]), (3, inventories[2])]);
    let options = ReconcileOptions::default().page_size(2);
    let decision = Decision::new("oncall", "reconcile run 7").unwrap();
    let mut applied: Vec<(String, u32)> = Vec::new();
    let mut first_orphan = None;
    let mut settled = false;
    for _round in 0..4 {
        let report = reconcile(&**r, &all, &options).await.unwrap();
        let mut progressed = false;
        for f in &report.findings {
            let (tenant, stamp) = (f.tenant.clone(), f.stamp);
            let outcome = apply_repair(&**r, f, &decision, || async {
                match &f.repair {
                    Repair::DeleteCopy { stamp } => inv(*stamp).drop_tenant(&tenant),
                    Repair::RestoreFrom { to, .. } | Repair::RestoreFromBackup { to } => {
                        inv(*to).hold(tenant.clone(), None)
                    }
                    other => return Err(format!("no action for {other}")),
                }
                Ok(())
            })
            .await;
            match (&f.kind, &f.repair, outcome) {
                (FindingKind::InvalidId, _, Err(RepairError::NotApplicable(_))) => {}
                (_, Repair::ResolveMigration { .. }, Err(RepairError::NotApplicable(_))) => {}
                (_, _, Ok(entry)) => {
                    assert_eq!((entry.action, entry.to), (HistoryAction::Repaired, Some(stamp)));
                    assert_eq!(entry.actor.as_deref(), Some("oncall"));
                    let reason = entry.reason.clone().unwrap();
                    assert!(
                        reason.ends_with(": reconcile run 7") && reason.starts_with(&f.repair.to_string()),
                        "{reason}"
                    );
                    let history = r.history(&tid(&f.tenant)).await.unwrap();
                    assert_eq!(history.last(), Some(&entry));
                    if f.kind == FindingKind::Orphan {
                        first_orphan = Some(f.clone());
                    }
                    applied.push((f.tenant.clone(), stamp.0));
                    progressed = true;
                }
                (kind, repair, other) => panic!("{kind:?} / {repair}: unexpected outcome {other:?}"),
            }
        }
        if !progressed {
            let left: Vec<_> = summary(&report).into_iter().map(|(t, _, k)| (t, k)).collect();
            let expect_left: Vec<(String, &str)> = report
                .findings
                .iter()
                .filter(|f| f.kind == FindingKind::InvalidId || matches!(f.repair, Repair::ResolveMigration { .. }))
                .map(|f| (f.tenant.clone(), f.kind.as_str()))
                .collect();
            assert_eq!(left, expect_left, "only findings no call can apply are left");
            assert!(left.iter().any(|(t, _)| t == "Bad Id!"));
            settled = true;
            break;
        }
    }
    assert!(settled, "repairs converge within 4 rounds: {applied:?}");
    applied.sort();
    for t in ["offboarded", "restored", "lost", "gone"] {
        assert!(applied.iter().any(|(x, _)| x == t), "{t} was repaired: {applied:?}");
    }
    // A finding that no longer holds runs nothing and records nothing.
    let orphan = first_orphan.expect("the orphan was repaired");
    r.assign(&TenantSpec::new(tid(&orphan.tenant)), orphan.stamp)
        .await
        .unwrap();
    let before = r.history(&tid(&orphan.tenant)).await.unwrap().len();
    let out = apply_repair(&**r, &orphan, &decision, || async { Err::<(), _>("must not run") }).await;
    assert!(matches!(out, Err(RepairError::Stale(_))), "{out:?}");
    assert_eq!(r.history(&tid(&orphan.tenant)).await.unwrap().len(), before);
    // A failing action records nothing.
    let f = stamps::reconcile::Finding::new(
        "ok00",
        StampId(3),
        FindingKind::Orphan,
        Repair::DeleteCopy { stamp: StampId(3) },
    );
    let before = r.history(&tid("ok00")).await.unwrap().len();
    let out = apply_repair(&**r, &f, &decision, || async { Err::<(), _>("disk full") }).await;
    assert!(
        matches!(out, Err(RepairError::Action(ref m)) if m == "disk full"),
        "{out:?}"
    );
    assert_eq!(r.history(&tid("ok00")).await.unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_every_finding_class_at_every_page_size() {
    every_finding_class(Arc::new(InMemoryRegistry::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_finding_class_at_every_page_size() {
    let schema = pg::unique_schema("reconcile");
    let _guard = pg::SchemaGuard(schema.clone());
    let config = PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(4);
    let registry = PgRegistry::connect(config).await.unwrap();
    registry.migrate().await.unwrap();
    every_finding_class(Arc::new(registry)).await;
}

/// An inventory that answers its first `ok_pages` pages, then fails or hangs.
#[derive(Debug)]
struct Flaky {
    inner: InMemoryInventory,
    ok_pages: usize,
    hang: bool,
    calls: std::sync::atomic::AtomicUsize,
}

#[stamps::async_trait]
impl StampInventory for Flaky {
    async fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Vec<Held>, InventoryError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < self.ok_pages {
            return self.inner.tenants(after, limit).await;
        }
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
        }
        Err(InventoryError::new("disk read error"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamp_that_times_out_or_fails_makes_a_partial_report_not_a_failed_run() {
    let r = InMemoryRegistry::new();
    stamps(&r, &[1, 2, 3]).await;
    let (s1, s2, s3) = (
        InMemoryInventory::new(),
        InMemoryInventory::new(),
        InMemoryInventory::new(),
    );
    for i in 0..30 {
        let t = format!("t{i:02}");
        let stamp = 1 + (i % 3);
        r.assign(&TenantSpec::new(tid(&t)), StampId(stamp)).await.unwrap();
        [&s1, &s2, &s3][(stamp - 1) as usize].hold(t, None);
    }
    s1.hold("zz-orphan", None);
    let flaky = |inner: &InMemoryInventory, ok_pages, hang| {
        Arc::new(Flaky {
            inner: inner.clone(),
            ok_pages,
            hang,
            calls: Default::default(),
        }) as Arc<dyn StampInventory>
    };
    let inventories = vec![
        (StampId(1), Arc::new(s1.clone()) as Arc<dyn StampInventory>),
        (StampId(2), flaky(&s2, 0, true)),  // hangs from the first call
        (StampId(3), flaky(&s3, 2, false)), // fails after two pages
    ];
    let options = ReconcileOptions::default()
        .page_size(2)
        .stamp_timeout(Duration::from_millis(200));
    let report = reconcile(&r, &inventories, &options).await.unwrap();
    // The orphan on the healthy stamp is still found; the silent stamps' tenants are not
    // judged missing.
    assert_eq!(summary(&report), [("zz-orphan".to_string(), 1, "orphan")]);
    let mut unreadable: Vec<_> = report
        .unreadable
        .iter()
        .map(|u| (u.stamp.0, u.read_up_to.clone()))
        .collect();
    unreadable.sort();
    // Stamp 3 holds t02, t05, t08, ...: two pages of two read before the failure.
    assert_eq!(unreadable, [(2, None), (3, Some("t11".to_string()))]);
    assert!(report.unreadable.iter().any(|u| u.reason.contains("longer than")));
    assert!(report.unreadable.iter().any(|u| u.reason.contains("disk read error")));
    assert!(!report.is_complete());
    assert_eq!(report.assignments, 30);
}

/// An inventory whose listing breaks the contract (out of order) is reported, not trusted.
#[tokio::test]
async fn a_listing_out_of_order_is_refused() {
    #[derive(Debug)]
    struct Backwards;
    #[stamps::async_trait]
    impl StampInventory for Backwards {
        async fn tenants(&self, after: Option<&str>, _limit: usize) -> Result<Vec<Held>, InventoryError> {
            Ok(match after {
                None => vec![Held::new("b"), Held::new("a")],
                Some(_) => vec![],
            })
        }
    }
    let r = InMemoryRegistry::new();
    stamps(&r, &[1]).await;
    let inventories = vec![(StampId(1), Arc::new(Backwards) as Arc<dyn StampInventory>)];
    let report = reconcile(&r, &inventories, &ReconcileOptions::default()).await.unwrap();
    assert!(report.findings.is_empty());
    assert_eq!(report.unreadable.len(), 1);
    assert!(
        report.unreadable[0].reason.contains("ascend"),
        "{:?}",
        report.unreadable
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For random assignments and holdings (no migrations), the report is exactly: orphans =
    /// held but unassigned, missing = assigned but not held on the serving stamp, stray copies
    /// = held elsewhere; at every page size and concurrency.
    #[test]
    fn the_report_is_exactly_the_set_difference(
        assigned in proptest::collection::btree_map(0u16..300, 1u32..=4, 0..120),
        held in proptest::collection::btree_set((0u16..300, 1u32..=4), 0..200),
        page in 1usize..40,
        concurrency in 1usize..5,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (report, expected) = rt.block_on(async {
            let r = InMemoryRegistry::new();
            stamps(&r, &[1, 2, 3, 4]).await;
            for (t, s) in &assigned {
                r.assign(&TenantSpec::new(tid(&format!("t{t:03}"))), StampId(*s)).await.unwrap();
            }
            let inv: Vec<InMemoryInventory> = (0..4).map(|_| InMemoryInventory::new()).collect();
            for (t, s) in &held {
                inv[(*s - 1) as usize].hold(format!("t{t:03}"), None);
            }
            let inventories: Vec<(StampId, Arc<dyn StampInventory>)> = inv
                .iter()
                .enumerate()
                .map(|(i, v)| (StampId(i as u32 + 1), Arc::new(v.clone()) as Arc<dyn StampInventory>))
                .collect();
            let options = ReconcileOptions::default().page_size(page).concurrency(concurrency);
            let report = reconcile(&r, &inventories, &options).await.unwrap();
            let mut expected = BTreeSet::new();
            for (t, s) in &held {
                match assigned.get(t) {
                    None => { expected.insert((format!("t{t:03}"), *s, "orphan")); }
                    Some(a) if a != s => { expected.insert((format!("t{t:03}"), *s, "stray_copy")); }
                    Some(_) => {}
                }
            }
            for (t, s) in &assigned {
                if !held.contains(&(*t, *s)) {
                    expected.insert((format!("t{t:03}"), *s, "missing"));
                }
            }
            (report, expected)
        });
        let got: BTreeSet<(String, u32, &'static str)> = summary(&report).into_iter().collect();
        prop_assert_eq!(got.len(), report.findings.len(), "a finding was reported twice");
        prop_assert_eq!(got, expected);
        prop_assert!(report.is_complete());
        prop_assert_eq!(report.assignments, assigned.len() as u64);
        prop_assert_eq!(report.copies, held.len() as u64);
        let mut sorted = report.findings.clone();
        sorted.sort_by(|a, b| (a.tenant.as_str(), a.stamp).cmp(&(b.tenant.as_str(), b.stamp)));
        prop_assert_eq!(sorted, report.findings.clone(), "findings are in tenant, stamp order");
    }
}
