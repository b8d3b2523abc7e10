//! `PgRegistry::assign_many` against a real PostgreSQL server, beyond the conformance cases:
//! a connection killed mid-import, imports larger than PostgreSQL's lock table would allow
//! per-tenant locks for, concurrent imports, pin writes racing an import, and a router
//! following an import.
//!
//! The server: `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`, else a
//! throwaway server started from the installed binaries (see `tests/support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

#[path = "support/group.rs"]
mod group;

use std::time::Duration;

use pg::{fresh_registry as fresh, kill_blocked_backend, raw_client};
use stamps::registry::postgres::PgRegistry;
use stamps::*;

fn stamp(id: u32, tenants: f64) -> StampSpec {
    group::stamp(id, tenants).endpoint(format!("https://s{id}"))
}

fn rows(prefix: &str, n: usize, stamps: u32) -> Vec<ImportRow> {
    (0..n)
        .map(|i| {
            let t = TenantSpec::new(TenantId::new(&format!("{prefix}{i:06}")).unwrap());
            ImportRow::new(t, StampId(1 + (i as u32) % stamps))
        })
        .collect()
}

/// Counts of what an import writes: assignments, history rows, changes, the feed's head.
async fn counts(r: &PgRegistry) -> (i64, i64, i64, i64) {
    let c = raw_client().await;
    let s = r.schema();
    let row = c
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{s}\".assignments), (SELECT count(*) FROM \"{s}\".assignment_history),
                        (SELECT count(*) FROM \"{s}\".changes WHERE kind = 'assignment'),
                        (SELECT head FROM \"{s}\".feed WHERE id = 1)"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// The connection of an import killed while it waits for the feed counter (after it locked
/// its tenants and stamps): `Unavailable`, nothing of the import is visible, and the retry of
/// the same call assigns every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_mid_transaction_writes_nothing_and_retries_whole() {
    let app = format!("stamps-import-kill-{}", std::process::id());
    let (r, _guard) = fresh("impkill", |c| c.application_name(&app).pool_size(2)).await;
    r.put_active_stamp(stamp(1, 100_000.0)).await.unwrap();
    r.put_active_stamp(stamp(2, 100_000.0)).await.unwrap();
    let before = counts(&r).await;
    let batch = rows("k", 5_000, 2);

    let mut blocker = raw_client().await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute(&format!("SELECT head FROM \"{}\".feed FOR UPDATE", r.schema()))
        .await
        .unwrap();
    let import = {
        let (r, batch) = (r.clone(), batch.clone());
        tokio::spawn(async move { r.assign_many(&batch).await })
    };
    let admin = raw_client().await;
    assert!(kill_blocked_backend(&admin, &app).await);
    let err = import.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    tx.rollback().await.unwrap();
    assert_eq!(counts(&r).await, before, "nothing of the killed import is visible");

    let report = r.assign_many(&batch).await.unwrap();
    assert_eq!(report.assigned(), 5_000);
    let after = counts(&r).await;
    assert_eq!((after.0, after.1, after.2), (5_000, 5_000, 5_000));
    assert_eq!(after.3, before.3 + 5_000, "one version per row");
    assert_eq!(report.head(), Version(after.3 as u64));
    // A second retry (the caller could not tell the first one landed) changes nothing.
    let again = r.assign_many(&batch).await.unwrap();
    assert_eq!((again.assigned(), again.unchanged()), (0, 5_000));
    assert_eq!(counts(&r).await, after);
}

/// Imports of 60,000 tenants in one call each, four at once on overlapping stamps: tenant
/// locks are bucketed, so no call runs out of PostgreSQL's lock table (6,400 entries by
/// default) or deadlocks; every row lands once, and usage is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_concurrent_imports_land_every_row_once() {
    let (r, _guard) = fresh("implarge", |c| {
        c.pool_size(4)
            .call_timeout(Duration::from_secs(120))
            .statement_timeout(Duration::from_secs(60))
    })
    .await;
    for id in 1..=8 {
        r.put_active_stamp(stamp(id, 1_000_000.0)).await.unwrap();
    }
    let batches: Vec<Vec<ImportRow>> = (0..4).map(|b| rows(&format!("b{b}-"), 60_000, 8)).collect();
    let mut tasks = Vec::new();
    for batch in batches {
        let r = r.clone();
        tasks.push(tokio::spawn(async move { r.assign_many(&batch).await }));
    }
    for t in tasks {
        let report = t.await.unwrap().unwrap();
        assert_eq!(report.assigned(), 60_000);
    }
    let (assignments, history, changes, _) = counts(&r).await;
    assert_eq!((assignments, history, changes), (240_000, 240_000, 240_000));
    let fleet = r.fleet().await.unwrap();
    for id in 1..=8 {
        assert_eq!(fleet.get(StampId(id)).unwrap().tenants(), 30_000, "stamp {id}");
    }
}

/// Four imports of the same 2,000 tenants at once, each to its own stamp (imports take the
/// tenants' locks shared, so they meet on the primary key): every tenant ends with exactly one
/// home, the import that reports it `Assigned` names that home, and the others report it
/// `AlreadyAssigned` to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_of_the_same_tenants_leave_each_one_home() {
    let (r, _guard) = fresh("impsame", |c| c.pool_size(4)).await;
    for id in 1..=4 {
        r.put_active_stamp(stamp(id, 10_000.0)).await.unwrap();
    }
    let batches: Vec<Vec<ImportRow>> = (1..=4u32)
        .map(|s| {
            rows("same", 2_000, 1)
                .into_iter()
                .map(|row| ImportRow::new(row.tenant, StampId(s)))
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for batch in batches {
        let r = r.clone();
        tasks.push(tokio::spawn(async move { r.assign_many(&batch).await }));
    }
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.unwrap().unwrap());
    }
    for i in 0..2_000 {
        let winners: Vec<StampId> = reports
            .iter()
            .filter_map(|rep| match &rep.outcomes()[i] {
                Imported::Assigned(a) => Some(a.stamp),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "row {i}: {winners:?}");
        for rep in &reports {
            match &rep.outcomes()[i] {
                Imported::Assigned(_) => {}
                Imported::Refused(Error::AlreadyAssigned { stamp, .. }) => assert_eq!(*stamp, winners[0]),
                other => panic!("row {i}: {other:?}"),
            }
        }
    }
    let (assignments, history, changes, _) = counts(&r).await;
    assert_eq!((assignments, history, changes), (2_000, 2_000, 2_000));
    assert_eq!(r.fleet().await.unwrap().tenants(), 2_000);
}

/// `set_pin` to another stamp racing an import of the same unassigned tenants: for each
/// tenant exactly one of them wins, so no assignment breaks a recorded pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_writes_racing_an_import_leave_no_broken_pin() {
    let (r, _guard) = fresh("imppin", |c| c.pool_size(8)).await;
    r.put_active_stamp(stamp(1, 10_000.0)).await.unwrap();
    r.put_active_stamp(stamp(2, 10_000.0)).await.unwrap();
    let batch = rows("p", 200, 1);
    let why = Decision::new("ops", "contract").unwrap();
    let import = {
        let (r, batch) = (r.clone(), batch.clone());
        tokio::spawn(async move { r.assign_many(&batch).await })
    };
    let mut pins = Vec::new();
    for row in batch.iter().rev() {
        let (r, t, why) = (r.clone(), row.tenant.id.clone(), why.clone());
        pins.push(tokio::spawn(async move { r.set_pin(&t, Some(StampId(2)), &why).await }));
    }
    let report = import.await.unwrap().unwrap();
    for (i, pin) in pins.into_iter().rev().enumerate() {
        let pinned = pin.await.unwrap().is_ok();
        let imported = matches!(report.outcomes()[i], Imported::Assigned(_));
        assert!(pinned != imported, "tenant {i}: pinned {pinned}, imported {imported}");
        if !imported {
            assert!(matches!(
                report.outcomes()[i],
                Imported::Refused(Error::ConstraintViolated(_))
            ));
        }
    }
    for a in r.all_assignments().await.unwrap() {
        let pin = r.pin(a.tenant()).await.unwrap().and_then(|p| p.stamp);
        assert!(
            pin.is_none() || pin == Some(a.stamp),
            "{} on {} pinned to {pin:?}",
            a.tenant(),
            a.stamp
        );
    }
}

/// A router following the registry sees every row of an import, each at its own version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_router_sees_every_imported_row() {
    let (r, _guard) = fresh("imprt", |c| c).await;
    for id in 1..=3 {
        r.put_active_stamp(stamp(id, 100_000.0)).await.unwrap();
    }
    let router = stamps::router::Router::new(r.clone());
    router.warm_up().await.unwrap();
    let follower = router.spawn_follower();
    let batch = rows("f", 20_000, 3);
    let report = r.assign_many(&batch).await.unwrap();
    assert_eq!(report.assigned(), 20_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for row in &batch {
        loop {
            match router.route(row.tenant.id.as_str()) {
                Ok(route) => {
                    assert_eq!(route.stamp, row.stamp);
                    break;
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{} never reached the router: {e:?}", row.tenant.id),
            }
        }
    }
    drop(follower);
}

/// Every change an import or a single `assign` writes carries the row as stored (its
/// `row_to_json` image decodes to the same document as the row), with labels and demand, and
/// decodes back to the assignment `assignment()` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_payloads_are_the_stored_rows() {
    let (r, _guard) = fresh("imppayload", |c| c).await;
    r.put_active_stamp(stamp(1, 1000.0)).await.unwrap();
    r.put_active_stamp(stamp(2, 1000.0)).await.unwrap();
    let mut batch = rows("payload-", 300, 2);
    for (i, row) in batch.iter_mut().enumerate() {
        row.tenant = row
            .tenant
            .clone()
            .label("plan", if i % 2 == 0 { "pro" } else { "free" });
    }
    assert_eq!(r.assign_many(&batch).await.unwrap().assigned(), 300);
    r.assign(&TenantSpec::new(TenantId::new("single").unwrap()), StampId(2))
        .await
        .unwrap();
    let c = raw_client().await;
    let s = r.schema();
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE c.payload::jsonb = to_jsonb(a)),
                        count(*) FILTER (WHERE c.version = a.epoch)
                 FROM \"{s}\".assignments a JOIN \"{s}\".changes c ON c.tenant = a.tenant AND c.kind = 'assignment'"
            ),
            &[],
        )
        .await
        .unwrap();
    let (all, same, versions): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((all, same, versions), (301, 301, 301));
    let feed = r.changes_since(Version::ZERO, 1000).await.unwrap();
    let mut decoded = 0;
    for change in &feed.changes {
        if let ChangeKind::Assignment {
            tenant,
            assignment: Some(a),
        } = &change.kind
        {
            assert_eq!(r.assignment(tenant).await.unwrap().as_ref(), Some(a.as_ref()));
            decoded += 1;
        }
    }
    assert_eq!(decoded, 301);
}

/// A registry on `r`'s schema with its own application name, for a writer racing `r`.
async fn second(r: &PgRegistry, app: &str) -> PgRegistry {
    let config = stamps::registry::postgres::PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(r.schema())
        .unwrap()
        .application_name(app);
    PgRegistry::connect(config).await.unwrap()
}

fn one(tenant: &str, stamp: u32) -> ImportRow {
    ImportRow::new(TenantSpec::new(TenantId::new(tenant).unwrap()), StampId(stamp))
}

/// What [`write_during_import`] leaves: the importing registry (and its schema's guard), what
/// the racing write returned, and the import's report.
struct Raced<T> {
    r: PgRegistry,
    _guard: pg::SchemaGuard,
    written: T,
    report: ImportReport,
}

/// Tenant `x` imported to stamp 1 (of `stamps`, 10 tenants each); then, while `hold` (SQL run
/// in a transaction of its own, `{s}` for the schema) keeps `write` from committing, `write`
/// runs on a second registry with `x`'s epoch and an import of `[x → 1, y → 2]` starts on the
/// first; `hold` is released once both wait on a lock, and both are awaited.
async fn write_during_import<T, F>(
    hint: &str,
    stamps: u32,
    hold: &str,
    write: impl FnOnce(PgRegistry, Epoch) -> F,
) -> Raced<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let (imp, writer) = (
        format!("stamps-{hint}-import-{}", std::process::id()),
        format!("stamps-{hint}-writer-{}", std::process::id()),
    );
    let (r, guard) = fresh(hint, |c| c.application_name(&imp)).await;
    let other = second(&r, &writer).await;
    for id in 1..=stamps {
        r.put_active_stamp(stamp(id, 10.0)).await.unwrap();
    }
    let first = r.assign_many(&[one("x", 1)]).await.unwrap();
    let epoch = first.outcomes()[0].assignment().unwrap().epoch;
    let mut blocker = raw_client().await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute(&hold.replace("{s}", &format!("\"{}\"", r.schema())))
        .await
        .unwrap();
    let written = tokio::spawn(write(other, epoch));
    let admin = raw_client().await;
    pg::blocked_backend(&admin, &writer).await;
    let import = {
        let r = r.clone();
        tokio::spawn(async move { r.assign_many(&[one("x", 1), one("y", 2)]).await })
    };
    pg::blocked_backend(&admin, &imp).await;
    tx.commit().await.unwrap();
    let written = written.await.unwrap();
    let report = import.await.unwrap().unwrap();
    Raced {
        r,
        _guard: guard,
        written,
        report,
    }
}

/// A `compare_and_set` that moves a tenant off its stamp commits while an import of the same
/// tenant to that stamp is under way (the move locks the tenant's row, not its advisory
/// bucket): the import reads the tenant as the move left it and refuses the row, instead of
/// reporting it `Unchanged` on the stamp it has left, at a head past the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moved_during_an_import_is_reported_where_it_went() {
    // Stamp 3 held: the move locks x's row and stamp 1, then waits for stamp 3.
    let raced = write_during_import(
        "impmoved",
        3,
        "SELECT 1 FROM {s}.stamps WHERE id = 3 FOR UPDATE",
        |other, epoch| async move {
            let x = TenantId::new("x").unwrap();
            other
                .compare_and_set(&x, epoch, AssignmentChange::move_to(StampId(3)))
                .await
        },
    )
    .await;
    let (moved, report) = (raced.written.unwrap(), raced.report);
    let x = raced.r.assignment(&TenantId::new("x").unwrap()).await.unwrap().unwrap();
    assert_eq!((x.stamp, x.epoch), (StampId(3), moved.epoch));
    assert!(
        matches!(
            report.outcomes()[0],
            Imported::Refused(Error::AlreadyAssigned { stamp: StampId(3), .. })
        ),
        "x: {:?}",
        report.outcomes()[0]
    );
    assert!(matches!(report.outcomes()[1], Imported::Assigned(_)));
    assert!(report.head().0 > moved.epoch.0);
}

/// An `unassign` commits while an import of the same tenant is under way: the import finds
/// the tenant unassigned and assigns it, instead of reporting it `Unchanged` and leaving it
/// without a home (a caller that trusts the report never imports it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_unassigned_during_an_import_is_imported() {
    // The feed counter held: the unassign locks x's row and stamp 1, then waits for it.
    let raced = write_during_import(
        "impunassigned",
        2,
        "SELECT head FROM {s}.feed WHERE id = 1 FOR UPDATE",
        |other, epoch| async move { other.unassign(&TenantId::new("x").unwrap(), epoch).await },
    )
    .await;
    raced.written.unwrap();
    let report = raced.report;
    let Imported::Assigned(a) = &report.outcomes()[0] else {
        panic!("x: {:?}", report.outcomes()[0]);
    };
    let x = raced.r.assignment(&TenantId::new("x").unwrap()).await.unwrap();
    assert_eq!(x.as_ref(), Some(a), "x reads back as imported");
    assert!(matches!(report.outcomes()[1], Imported::Assigned(_)));
    assert_eq!(report.head(), counts(&raced.r).await.3.try_into().map(Version).unwrap());
}
