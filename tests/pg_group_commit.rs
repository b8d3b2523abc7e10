//! Group commit of `PgRegistry::assign` against a real PostgreSQL server: concurrent calls
//! share transactions (fewer transactions than calls, seen in the rows' `xmin`), each keeps
//! its own outcome (a refused call fails alone), and nothing changes for a caller: one home
//! per tenant, limits, one change per assignment at its own version. The same for
//! `compare_and_set` is in `tests/pg_group_commit_changes.rs`.
//!
//! The server: `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`, else a
//! throwaway server started from the installed binaries (see `tests/support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

#[path = "support/group.rs"]
mod group;

use std::collections::BTreeMap;

use group::{drop_inside_a_group, fresh, fresh_with, outcomes, stamp, tenant};
use pg::raw_client;
use stamps::registry::postgres::PgRegistry;
use stamps::*;

/// Transactions that wrote the assignments (their `xmin`s).
async fn writing_transactions(r: &PgRegistry) -> i64 {
    raw_client()
        .await
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text) FROM \"{}\".assignments", r.schema()),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// 400 concurrent `assign` calls: 300 to a roomy stamp, 60 for the last 20 slots of a small
/// one, 20 to a provisioning stamp and 20 pairs racing for one tenant each. Every call gets
/// the answer it would get alone, and far fewer transactions than calls wrote the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_assigns_share_commits_and_keep_their_own_outcomes() {
    let (r, _guard) = fresh("group", true).await;
    r.put_active_stamp(stamp(1, 10_000.0)).await.unwrap();
    r.put_active_stamp(stamp(2, 20.0)).await.unwrap();
    r.put_stamp(stamp(3, 100.0)).await.unwrap();
    r.put_active_stamp(stamp(4, 10_000.0)).await.unwrap();
    let mut calls: Vec<(TenantSpec, StampId)> = Vec::new();
    calls.extend((0..300).map(|i| (tenant(&format!("roomy-{i:03}")), StampId(1))));
    calls.extend((0..60).map(|i| (tenant(&format!("small-{i:03}")), StampId(2))));
    calls.extend((0..20).map(|i| (tenant(&format!("prov-{i:03}")), StampId(3))));
    for i in 0..20 {
        calls.push((tenant(&format!("twice-{i:03}")), StampId(1)));
        calls.push((tenant(&format!("twice-{i:03}")), StampId(4)));
    }
    let before = r.changes_since(Version::ZERO, 1).await.unwrap().head;
    let tasks: Vec<_> = calls
        .iter()
        .cloned()
        .map(|(t, s)| {
            let r = r.clone();
            tokio::spawn(async move { r.assign(&t, s).await })
        })
        .collect();
    let outcomes = outcomes(tasks).await;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut epochs = Vec::new();
    for ((t, s), o) in calls.iter().zip(&outcomes) {
        match o {
            Ok(a) => {
                assert_eq!((a.tenant(), a.stamp), (&t.id, *s));
                epochs.push(a.epoch.0);
                *by_kind.entry("ok").or_default() += 1;
            }
            Err(Error::CapacityExceeded { stamp, .. }) => {
                assert_eq!(*stamp, StampId(2));
                *by_kind.entry("full").or_default() += 1;
            }
            Err(Error::NotAccepting { stamp, .. }) => {
                assert_eq!(*stamp, StampId(3));
                *by_kind.entry("provisioning").or_default() += 1;
            }
            Err(Error::AlreadyAssigned { tenant, .. }) => {
                assert!(tenant.as_str().starts_with("twice-"));
                *by_kind.entry("twice").or_default() += 1;
            }
            Err(e) => panic!("{} to {s}: {e:?}", t.id),
        }
    }
    assert_eq!(
        by_kind,
        BTreeMap::from([("full", 40), ("ok", 340), ("provisioning", 20), ("twice", 20)])
    );
    // One version per assignment, no gaps, no duplicates.
    epochs.sort_unstable();
    assert_eq!(epochs, (before.0 + 1..=before.0 + 340).collect::<Vec<_>>());
    let changes = r.changes_since(before, 1_000).await.unwrap();
    assert_eq!(changes.changes.len(), 340);
    let fleet = r.fleet().await.unwrap();
    assert_eq!(fleet.get(StampId(2)).unwrap().tenants(), 20);
    assert_eq!(fleet.tenants(), 340);
    let txns = writing_transactions(&r).await;
    assert!(txns < 340 / 2, "{txns} transactions wrote 340 assignments");
}

/// With group commit off, every `assign` is its own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_group_commit_each_assign_commits_alone() {
    let (r, _guard) = fresh("nogroup", false).await;
    r.put_active_stamp(stamp(1, 1_000.0)).await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.assign(&tenant(&format!("t{i:02}")), StampId(1)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(writing_transactions(&r).await, 64);
}

/// A caller dropped while its call is in a group that waits for the feed counter: the group
/// rolls back and commits again without it, so nothing of the dropped call is written, the
/// others' calls land, and the feed has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_inside_a_group_leaves_nothing() {
    let app = format!("stamps-group-drop-{}", std::process::id());
    let (r, _guard) = fresh_with("groupdrop", |c| c.application_name(&app).statement_timeout(None)).await;
    r.put_active_stamp(stamp(1, 100.0)).await.unwrap();
    drop_inside_a_group(&r, &app, |name, limit| {
        let r = r.clone();
        tokio::spawn(async move { tokio::time::timeout(limit, r.assign(&tenant(name), StampId(1))).await })
    })
    .await;
    assert_eq!(r.assignment(&TenantId::new("dropped").unwrap()).await.unwrap(), None);
    assert_eq!(r.fleet().await.unwrap().tenants(), 3);
}
