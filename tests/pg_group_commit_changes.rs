//! Group commit of `PgRegistry::compare_and_set` against a real PostgreSQL server: concurrent
//! changes share transactions, each keeps its own outcome (another epoch, no room, a
//! constraint, a tenant without assignment), and nothing changes for a caller: limits,
//! dedicated stamps, epochs, history, one change per write at its own version.
//!
//! The server: `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`, else a
//! throwaway server started from the installed binaries (see `tests/support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

#[path = "support/group.rs"]
mod group;

use std::collections::BTreeMap;
use std::time::Duration;

use group::{drop_inside_a_group, fresh, fresh_with, import, outcomes, stamp, tenant, tid};
use pg::{blocked_backend, raw_client};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

fn dedicated(id: u32) -> StampSpec {
    stamp(id, 10.0).tier(Tier::Dedicated)
}

fn dedicated_tenant(name: &str) -> TenantSpec {
    tenant(name).tier(Tier::Dedicated)
}

/// Transactions that wrote the changes after `after` (their `xmin`s).
async fn transactions_after(r: &PgRegistry, after: Version) -> i64 {
    raw_client()
        .await
        .query_one(
            &format!(
                "SELECT count(DISTINCT xmin::text) FROM \"{}\".changes WHERE version > $1",
                r.schema()
            ),
            &[&(after.0 as i64)],
        )
        .await
        .unwrap()
        .get(0)
}

/// Tenants on each stamp as the assignments table has them (serving or shadow).
async fn tenants_by_stamp(r: &PgRegistry) -> BTreeMap<i64, i64> {
    raw_client()
        .await
        .query(
            &format!(
                "SELECT s, count(*) FROM (SELECT stamp_id AS s FROM \"{0}\".assignments
                 UNION ALL SELECT shadow_id FROM \"{0}\".assignments WHERE shadow_id IS NOT NULL) x GROUP BY s",
                r.schema()
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// 360 concurrent `compare_and_set` calls: 200 moves to a roomy stamp, 60 for the 20 slots of
/// a small one, 20 with a stale epoch, 20 to a provisioning stamp, 10 dedicated tenants racing
/// for one empty dedicated stamp, 10 tenants never assigned, and 20 pairs racing on one epoch
/// each. Every call gets the answer it would get alone; the stamps' usage is what the
/// assignments add up to; far fewer transactions than changes wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_share_commits_and_keep_their_own_outcomes() {
    let (r, _guard) = fresh("groupcas", true).await;
    for (id, tenants) in [(1, 10_000.0), (2, 10_000.0), (3, 20.0)] {
        r.put_active_stamp(stamp(id, tenants)).await.unwrap();
    }
    r.put_stamp(stamp(4, 100.0)).await.unwrap();
    for id in 5..=15 {
        r.put_active_stamp(dedicated(id)).await.unwrap();
    }
    let mut rows: Vec<(TenantSpec, StampId)> = Vec::new();
    for (prefix, n) in [("mv", 200), ("sm", 60), ("st", 20), ("pv", 20), ("tw", 20)] {
        rows.extend((0..n).map(|i| (tenant(&format!("{prefix}-{i:03}")), StampId(1))));
    }
    rows.extend((0..10).map(|i| (dedicated_tenant(&format!("dd-{i:03}")), StampId(6 + i))));
    let epochs = import(&r, rows).await;
    let before = r.changes_since(Version::ZERO, 1).await.unwrap().head;

    let mut calls: Vec<(String, Epoch, AssignmentChange)> = Vec::new();
    let mut call = |name: String, expected: Epoch, to: u32| {
        calls.push((name, expected, AssignmentChange::move_to(StampId(to)).by("group-test")))
    };
    for (prefix, n, to) in [("mv", 200, 2), ("sm", 60, 3), ("pv", 20, 4), ("dd", 10, 5)] {
        for i in 0..n {
            let name = format!("{prefix}-{i:03}");
            let e = epochs[&name];
            call(name, e, to);
        }
    }
    for i in 0..20 {
        let name = format!("st-{i:03}");
        call(name.clone(), Epoch(epochs[&name].0 + 1_000), 2);
        let name = format!("tw-{i:03}");
        call(name.clone(), epochs[&name], 2);
        call(name, epochs[&format!("tw-{i:03}")], 3);
    }
    for i in 0..10 {
        call(format!("ghost-{i:03}"), Epoch(1), 2);
    }
    let tasks: Vec<_> = calls
        .iter()
        .cloned()
        .map(|(t, e, change)| {
            let r = r.clone();
            tokio::spawn(async move { r.compare_and_set(&tid(&t), e, change).await })
        })
        .collect();
    let outcomes = outcomes(tasks).await;
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut new_epochs = Vec::new();
    for ((t, e, change), o) in calls.iter().zip(&outcomes) {
        let kind = match o {
            Ok(a) => {
                let ChangeAction::Move { to, .. } = change.action else {
                    unreachable!()
                };
                assert_eq!((a.tenant().as_str(), a.stamp), (t.as_str(), to));
                assert!(a.epoch > *e);
                new_epochs.push(a.epoch.0);
                "ok"
            }
            Err(Error::CapacityExceeded { stamp, .. }) => {
                assert_eq!(*stamp, StampId(3), "{t}");
                "full"
            }
            Err(Error::Conflict(_)) => "conflict",
            Err(Error::NotAccepting { stamp, .. }) => {
                assert_eq!(*stamp, StampId(4));
                "provisioning"
            }
            Err(Error::ConstraintViolated(v)) => {
                assert!(matches!(v.constraint, Constraint::Dedicated { .. }), "{t}: {v:?}");
                "dedicated"
            }
            Err(Error::NotFound(Subject::Tenant(_))) => "missing",
            Err(e) => panic!("{t}: {e:?}"),
        };
        *by_kind.entry(kind).or_default() += 1;
    }
    // Of each pair exactly one wins (the other conflicts, or finds stamp 3 full before the
    // winner moves to 2); stale epochs conflict; every roomy move lands; stamp 3's 20 slots
    // go to `sm-` tenants and pair winners together.
    let won = |prefix: &str| {
        calls
            .iter()
            .zip(&outcomes)
            .filter(|((t, _, _), o)| t.starts_with(prefix) && o.is_ok())
            .count()
    };
    for i in 0..20 {
        assert_eq!(won(&format!("tw-{i:03}")), 1, "pair {i}");
    }
    assert_eq!((won("mv-"), won("st-"), won("dd-")), (200, 0, 1));
    let ok = by_kind["ok"];
    assert_eq!(ok, 200 + 20 + 1 + won("sm-"), "{by_kind:?}");
    assert_eq!(
        (by_kind["provisioning"], by_kind["dedicated"], by_kind["missing"]),
        (20, 9, 10),
        "{by_kind:?}"
    );
    assert_eq!(
        ok + by_kind["conflict"] + by_kind.get("full").copied().unwrap_or(0),
        321
    );
    // One version per change, no gaps, no duplicates.
    new_epochs.sort_unstable();
    assert_eq!(new_epochs, (before.0 + 1..=before.0 + ok as u64).collect::<Vec<_>>());
    let changes = r.changes_since(before, 1_000).await.unwrap();
    assert_eq!(changes.changes.len(), ok);
    // Usage is what the assignments add up to; the small and dedicated stamps are full.
    let fleet = r.fleet().await.unwrap();
    let counted = tenants_by_stamp(&r).await;
    for load in &fleet.stamps {
        let n = counted.get(&i64::from(load.id().0)).copied().unwrap_or(0);
        assert_eq!(load.tenants(), n as u64, "stamp {}", load.id());
    }
    assert_eq!(fleet.get(StampId(3)).unwrap().tenants(), 20);
    assert_eq!(fleet.get(StampId(5)).unwrap().tenants(), 1);
    // Each change row is the stored row (as `compare_and_set` alone writes it), each history
    // entry the move with its origin, epoch and actor.
    let admin = raw_client().await;
    let s = r.schema();
    let after = before.0 as i64;
    let count = |sql: String| {
        let admin = &admin;
        async move { admin.query_one(&sql, &[&after]).await.unwrap().get::<_, i64>(0) }
    };
    let differing = count(format!(
        "SELECT count(*) FROM \"{s}\".changes c JOIN \"{s}\".assignments a ON a.tenant = c.tenant
         WHERE c.version > $1 AND (c.payload::jsonb <> to_jsonb(a) OR c.version <> a.epoch)"
    ))
    .await;
    assert_eq!(differing, 0);
    let moves = count(format!(
        "SELECT count(*) FROM \"{s}\".assignment_history h JOIN \"{s}\".assignments a ON a.tenant = h.tenant
         WHERE h.version > $1 AND h.action = 'moved' AND h.to_stamp = a.stamp_id AND h.epoch = a.epoch
           AND h.from_stamp IS NOT NULL AND h.from_stamp <> a.stamp_id AND h.actor = 'group-test'"
    ))
    .await;
    assert_eq!(moves, ok as i64);
    let history = count(format!(
        "SELECT count(*) FROM \"{s}\".assignment_history WHERE version > $1"
    ))
    .await;
    assert_eq!(history, ok as i64);
    for change in &changes.changes {
        if let ChangeKind::Assignment {
            assignment: Some(a), ..
        } = &change.kind
        {
            let stored = r.assignment(a.tenant()).await.unwrap().unwrap();
            assert_eq!(**a, stored);
        }
    }
    let txns = transactions_after(&r, before).await;
    assert!(txns < ok as i64 / 2, "{txns} transactions wrote {ok} changes");
}

/// Holds the feed counter so the next write waits; queues `calls` one after another behind
/// it, then lets go: the calls run as one group, in the order they were made.
async fn one_group(
    r: &PgRegistry,
    app: &str,
    lead: (&str, Epoch, u32),
    calls: &[(&str, Epoch, u32)],
) -> Vec<Result<Assignment>> {
    let admin = raw_client().await;
    let mut holder = raw_client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute(&format!("SELECT head FROM \"{}\".feed FOR UPDATE", r.schema()))
        .await
        .unwrap();
    let spawn = |(t, e, to): (&str, Epoch, u32)| {
        let r = r.clone();
        let t = tid(t);
        tokio::spawn(async move { r.compare_and_set(&t, e, AssignmentChange::move_to(StampId(to))).await })
    };
    let lead = spawn(lead);
    blocked_backend(&admin, app).await;
    let mut waiting = Vec::new();
    for c in calls {
        waiting.push(spawn(*c));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.rollback().await.unwrap();
    lead.await.unwrap().unwrap();
    let mut out = Vec::new();
    for w in waiting {
        out.push(w.await.unwrap());
    }
    out
}

/// Inside one group, a change sees the changes before it on a dedicated stamp: a tenant that
/// leaves one frees it for a later member, and a tenant that takes an empty one is its holder
/// for a later member. The members share one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_changes_sees_its_earlier_members_on_dedicated_stamps() {
    let app = format!("stamps-group-dedicated-{}", std::process::id());
    let (r, _guard) = fresh_with("groupded", |c| c.application_name(&app).statement_timeout(None)).await;
    r.put_active_stamp(stamp(1, 100.0)).await.unwrap();
    r.put_active_stamp(stamp(2, 100.0)).await.unwrap();
    for id in 5..=10 {
        r.put_active_stamp(dedicated(id)).await.unwrap();
    }
    let e = import(
        &r,
        vec![
            (tenant("lead"), StampId(1)),
            (dedicated_tenant("x"), StampId(5)),
            (dedicated_tenant("y"), StampId(6)),
            (dedicated_tenant("u"), StampId(8)),
            (dedicated_tenant("v"), StampId(9)),
            (dedicated_tenant("w"), StampId(10)),
        ],
    )
    .await;
    // x leaves 5 for the empty 7; then y takes 5.
    let first = one_group(&r, &app, ("lead", e["lead"], 2), &[("x", e["x"], 7), ("y", e["y"], 5)]).await;
    let x = first[0].as_ref().unwrap();
    let y = first[1].as_ref().unwrap();
    assert_eq!((x.stamp, y.stamp), (StampId(7), StampId(5)));
    assert_eq!(y.epoch.0, x.epoch.0 + 1);
    let lead = r.assignment(&tid("lead")).await.unwrap().unwrap().epoch;
    // v takes 6 (empty since y left); then u is refused it, v being its holder now; then w
    // takes 9, which v left earlier in the group.
    let second = one_group(
        &r,
        &app,
        ("lead", lead, 1),
        &[("v", e["v"], 6), ("u", e["u"], 6), ("w", e["w"], 9)],
    )
    .await;
    let v = second[0].as_ref().unwrap();
    let w = second[2].as_ref().unwrap();
    assert_eq!((v.stamp, w.stamp), (StampId(6), StampId(9)));
    assert_eq!(w.epoch.0, v.epoch.0 + 1);
    match &second[1] {
        Err(Error::ConstraintViolated(v)) => assert_eq!(v.constraint, Constraint::Dedicated { holder: tid("v") }),
        other => panic!("u onto v's dedicated stamp: {other:?}"),
    }
    // Each group was one transaction.
    let xmin = |t: &'static str| {
        let r = r.clone();
        async move {
            let row = raw_client()
                .await
                .query_one(
                    &format!(
                        "SELECT xmin::text FROM \"{}\".assignments WHERE tenant = $1",
                        r.schema()
                    ),
                    &[&t],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(xmin("x").await, xmin("y").await);
    assert_eq!(r.assignment(&tid("u")).await.unwrap().unwrap().stamp, StampId(8));
    let fleet = r.fleet().await.unwrap();
    assert_eq!(xmin("v").await, xmin("w").await);
    for (s, n) in [(5, 1), (6, 1), (7, 1), (8, 1), (9, 1), (10, 0)] {
        assert_eq!(fleet.get(StampId(s)).unwrap().tenants(), n, "stamp {s}");
    }
}

/// A `compare_and_set` caller dropped while its group waits for the feed counter: the group
/// rolls back and commits again without it, so the dropped change is not written, the others
/// land, and the feed has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_caller_dropped_inside_a_group_leaves_nothing() {
    let app = format!("stamps-groupcas-drop-{}", std::process::id());
    let (r, _guard) = fresh_with("groupcasdrop", |c| c.application_name(&app).statement_timeout(None)).await;
    r.put_active_stamp(stamp(1, 100.0)).await.unwrap();
    r.put_active_stamp(stamp(2, 100.0)).await.unwrap();
    let e = import(
        &r,
        ["lead", "a", "dropped", "c"]
            .iter()
            .map(|t| (tenant(t), StampId(1)))
            .collect(),
    )
    .await;
    drop_inside_a_group(&r, &app, |name, limit| {
        let r = r.clone();
        let expected = e[name];
        tokio::spawn(async move {
            let change = AssignmentChange::move_to(StampId(2));
            tokio::time::timeout(limit, r.compare_and_set(&tid(name), expected, change)).await
        })
    })
    .await;
    let kept = r.assignment(&tid("dropped")).await.unwrap().unwrap();
    assert_eq!((kept.stamp, kept.epoch), (StampId(1), e["dropped"]));
    let fleet = r.fleet().await.unwrap();
    assert_eq!(
        (
            fleet.get(StampId(1)).unwrap().tenants(),
            fleet.get(StampId(2)).unwrap().tenants()
        ),
        (1, 3)
    );
}

/// Two registries on one schema (two processes' worth), 8 tasks each, move 24 tenants among 4
/// stamps with `compare_and_set`, re-reading after a conflict: groups in both lock
/// overlapping assignments and stamps at once. No call fails but by conflict or capacity
/// (a deadlock would surface as `Unavailable` once its retries ran out), usage is what the
/// assignments add up to, and the feed has every version once, each the tenant's epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_two_registries_on_one_schema_interleave_safely() {
    let (first, _guard) = fresh("grouptwo", true).await;
    let cfg = PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(first.schema())
        .unwrap()
        .pool_size(8);
    let second = PgRegistry::connect(cfg).await.unwrap();
    for id in 1..=4 {
        first.put_active_stamp(stamp(id, 8.0)).await.unwrap();
    }
    let names: Vec<String> = (0..24).map(|i| format!("t-{i:02}")).collect();
    import(
        &first,
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (tenant(n), StampId(1 + i as u32 % 4)))
            .collect(),
    )
    .await;
    let before = first.changes_since(Version::ZERO, 1).await.unwrap().head;
    let mut tasks = Vec::new();
    for (k, r) in [first.clone(), second.clone()].into_iter().cycle().take(16).enumerate() {
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let mut moved = 0u64;
            for step in 0..60usize {
                let t = tid(&names[(k * 7 + step * 5) % names.len()]);
                let a = r.assignment(&t).await.unwrap().unwrap();
                let to = StampId(1 + (a.stamp.0 + (step % 3) as u32) % 4);
                match r.compare_and_set(&t, a.epoch, AssignmentChange::move_to(to)).await {
                    Ok(b) => {
                        assert_eq!((b.stamp, b.epoch > a.epoch), (to, true));
                        moved += 1;
                    }
                    Err(Error::Conflict(_) | Error::CapacityExceeded { .. }) => {}
                    Err(e) => panic!("{t} to {to}: {e:?}"),
                }
            }
            moved
        }));
    }
    let mut moved = 0;
    for t in tasks {
        moved += t.await.unwrap();
    }
    assert!(moved > 0);
    let changes = first.changes_since(before, 10_000).await.unwrap();
    let versions: Vec<u64> = changes.changes.iter().map(|c| c.version.0).collect();
    assert_eq!(versions, (before.0 + 1..=before.0 + moved).collect::<Vec<_>>());
    let fleet = first.fleet().await.unwrap();
    let counted = tenants_by_stamp(&first).await;
    for load in &fleet.stamps {
        let n = counted.get(&i64::from(load.id().0)).copied().unwrap_or(0);
        assert_eq!(load.tenants(), n as u64, "stamp {}", load.id());
        assert!(n <= 8);
    }
    assert_eq!(fleet.tenants(), 24);
    // Groups formed: fewer transactions than changes wrote the feed.
    let txns = transactions_after(&first, before).await;
    assert!(txns < moved as i64, "{txns} transactions wrote {moved} changes");
}
