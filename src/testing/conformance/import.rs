//! Cases of [`Registry::assign_many`](crate::Registry::assign_many): every row admitted as
//! `assign` would admit it, per-row refusals, one change and history entry per row, retries
//! that change nothing, and imports racing each other and single writes.

use crate::error::Error;
use crate::model::*;
use crate::registry::{DynRegistry, ImportRow, Imported, RegistryExt, MAX_IMPORT_ROWS};

use super::fixtures::*;
use super::{join2, join_all};

fn row(name: &str, connections: f64, stamp: u32) -> ImportRow {
    ImportRow::new(tenant(name, connections), StampId(stamp))
}

/// The changes after `after`, from the whole feed.
async fn changes_after(r: &DynRegistry, after: Version) -> Vec<Change> {
    match all_changes(r).await {
        Ok(all) => all.into_iter().filter(|c| c.version > after).collect(),
        Err(e) => fail!("{e}"),
    }
}

/// Rows to an active stamp with room, to an unknown stamp, to a provisioning stamp, over the
/// stamp's limit, and a tenant named twice: each row gets what `assign` would answer, the
/// admitted ones get consecutive epochs in row order, one history entry and one change each,
/// and usage counts them all. A tenant named twice is refused even when its first row was
/// refused.
pub async fn assign_many_admits_each_row_like_assign(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 3.0), (Resource::Connections, 100.0)]).await;
    r.put_stamp(spec(2, &[(Resource::Tenants, 10.0)]))
        .await
        .expect("provisioning stamp");
    let before = r.changes_since(Version::ZERO, 1).await.expect("head").head;
    let rows = [
        row("a", 10.0, 1),
        row("b", 10.0, 9),
        row("c", 10.0, 2),
        row("d", 95.0, 1),
        row("e", 10.0, 1),
        row("a", 10.0, 1),
        row("f", 10.0, 1),
        row("g", 10.0, 1),
    ];
    let report = r.assign_many(&rows).await.expect("assign_many");
    let o = report.outcomes();
    check_eq!(o.len(), rows.len(), "one outcome per row");
    check_matches!(o[0], Imported::Assigned(_), "a row with room");
    check_matches!(o[1], Imported::Refused(Error::NotFound(_)), "a row to an unknown stamp");
    check_matches!(
        o[2],
        Imported::Refused(Error::NotAccepting { .. }),
        "a row to a provisioning stamp"
    );
    check_matches!(
        o[3],
        Imported::Refused(Error::CapacityExceeded {
            resource: Resource::Connections,
            ..
        }),
        "a row over the connections left after the earlier rows"
    );
    check_matches!(o[4], Imported::Assigned(_), "a row with room");
    check_matches!(
        o[5],
        Imported::Refused(Error::InvalidInput(_)),
        "a tenant named twice in one call"
    );
    check_matches!(o[6], Imported::Assigned(_), "the third tenant of a three-tenant stamp");
    check_matches!(
        o[7],
        Imported::Refused(Error::CapacityExceeded {
            resource: Resource::Tenants,
            ..
        }),
        "a fourth tenant on a three-tenant stamp"
    );
    check_eq!(
        (report.assigned(), report.unchanged(), report.refused().count()),
        (3, 0, 5)
    );
    let assigned: Vec<&Assignment> = o.iter().filter_map(Imported::assignment).collect();
    for w in assigned.windows(2) {
        check_eq!(w[1].epoch.0, w[0].epoch.0 + 1, "epochs of consecutive admitted rows");
    }
    for a in &assigned {
        check_eq!(
            r.assignment(a.tenant()).await.expect("read"),
            Some((*a).clone()),
            "an imported assignment reads back"
        );
        let h = r.history(a.tenant()).await.expect("history");
        check_eq!(h.len(), 1, "history entries of an imported tenant");
        check_eq!(h[0].action, HistoryAction::Assigned);
        check_eq!(h[0].epoch, a.epoch, "the history entry's epoch");
    }
    for t in ["b", "c", "d", "g"] {
        check_eq!(
            r.assignment(&tid(t)).await.expect("read"),
            None,
            "a refused row writes nothing"
        );
    }
    let changes = changes_after(r, before).await;
    check_eq!(changes.len(), 3, "one change per admitted row, none for a refused one");
    for (c, a) in changes.iter().zip(&assigned) {
        check_eq!(c.version.0, a.epoch.0, "the change's version is the row's epoch");
        check_matches!(
            &c.kind,
            ChangeKind::Assignment { tenant, assignment: Some(x) } if tenant == a.tenant() && **x == **a,
            "the change carries the assignment"
        );
    }
    check_eq!(report.head(), changes[2].version, "the report's head");
    let fleet = r.fleet().await.expect("fleet");
    check_eq!(fleet.get(StampId(1)).expect("s1").tenants(), 3);
    check_eq!(usage(&fleet, 1, Resource::Connections), 30.0);
    // A tenant named twice is refused even when its first row was refused for its spec.
    active(r, 3, &[(Resource::Tenants, 10.0)]).await;
    let twice = [
        ImportRow::new(tenant("x", 1.0).label("plan", "a\0b"), StampId(3)),
        row("x", 1.0, 3),
    ];
    let report = r.assign_many(&twice).await.expect("assign_many");
    check_matches!(
        report.outcomes()[0],
        Imported::Refused(Error::InvalidInput(_)),
        "a row whose spec breaks its rules"
    );
    check_matches!(
        report.outcomes()[1],
        Imported::Refused(Error::InvalidInput(_)),
        "a tenant named twice in one call, its first row refused"
    );
    check_eq!(r.assignment(&tid("x")).await.expect("read"), None);
}

/// Retrying a call reports every admitted row `Unchanged`, appends nothing and reports the
/// head that holds them; a row naming a tenant already on another stamp or with another spec
/// is `AlreadyAssigned`; an empty call and an oversized one write nothing.
pub async fn assign_many_retry_changes_nothing(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 100.0)]).await;
    active(r, 2, &[(Resource::Tenants, 100.0)]).await;
    let rows: Vec<ImportRow> = (0..50).map(|i| row(&format!("t{i:02}"), 1.0, 1 + i % 2)).collect();
    let first = r.assign_many(&rows).await.expect("import");
    check_eq!(first.assigned(), 50);
    let head = r.changes_since(Version::ZERO, 1).await.expect("head").head;
    check_eq!(first.head(), head, "the report's head");
    let retry = r.assign_many(&rows).await.expect("retry");
    check_eq!((retry.assigned(), retry.unchanged()), (0, 50), "a retry's outcomes");
    check_eq!(
        retry.head(),
        head,
        "a retry's head holds the rows it found in place, though it wrote none"
    );
    for (a, b) in first.outcomes().iter().zip(retry.outcomes()) {
        check_eq!(
            b.assignment(),
            a.assignment(),
            "an unchanged row reports the assignment in place"
        );
    }
    check_eq!(
        r.changes_since(Version::ZERO, 1).await.expect("head").head,
        head,
        "a retry appends no change"
    );
    let elsewhere = [row("t00", 1.0, 2), row("t01", 7.0, 2), row("new", 1.0, 1)];
    let report = r.assign_many(&elsewhere).await.expect("import");
    check_matches!(
        report.outcomes()[0],
        Imported::Refused(Error::AlreadyAssigned { stamp: StampId(1), .. }),
        "a tenant imported to another stamp"
    );
    check_matches!(
        report.outcomes()[1],
        Imported::Refused(Error::AlreadyAssigned { stamp: StampId(2), .. }),
        "a tenant imported with another demand"
    );
    check_matches!(report.outcomes()[2], Imported::Assigned(_));
    let empty = r.assign_many(&[]).await.expect("empty call");
    check!(empty.outcomes().is_empty());
    let huge: Vec<ImportRow> = (0..=MAX_IMPORT_ROWS).map(|i| row(&format!("h{i}"), 1.0, 1)).collect();
    check_matches!(
        r.assign_many(&huge).await,
        Err(Error::InvalidInput(_)),
        "more than MAX_IMPORT_ROWS rows"
    );
    check_eq!(
        r.assignment(&tid("h0")).await.expect("read"),
        None,
        "an oversized call writes nothing"
    );
    check_eq!(r.fleet().await.expect("fleet").tenants(), 51);
}

/// Rows keep the hard constraints: a dedicated stamp takes one tenant even within one call, a
/// recorded pin is enforced, and a pin a row brings is recorded with its assignment.
pub async fn assign_many_keeps_constraints_and_pins(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 10.0)]).await;
    active(r, 2, &[(Resource::Tenants, 10.0)]).await;
    r.put_active_stamp(spec(3, &[(Resource::Tenants, 10.0)]).tier(Tier::Dedicated))
        .await
        .expect("dedicated stamp");
    let why = Decision::new("ops", "contract").expect("decision");
    r.set_pin(&tid("pinned"), Some(StampId(2)), &why).await.expect("pin");
    let rows = [
        ImportRow::new(TenantSpec::new(tid("d1")).tier(Tier::Dedicated), StampId(3)),
        ImportRow::new(TenantSpec::new(tid("d2")).tier(Tier::Dedicated), StampId(3)),
        row("pinned", 1.0, 1),
        ImportRow::new(tenant("brings-pin", 1.0).pin(StampId(1)), StampId(1)),
        ImportRow::new(tenant("pin-elsewhere", 1.0).pin(StampId(2)), StampId(1)),
        row("standard-on-dedicated", 1.0, 3),
    ];
    let report = r.assign_many(&rows).await.expect("import");
    let o = report.outcomes();
    check_matches!(o[0], Imported::Assigned(_), "the first tenant of a dedicated stamp");
    check_matches!(
        o[1],
        Imported::Refused(Error::ConstraintViolated(_)),
        "a second tenant of a dedicated stamp"
    );
    check_matches!(
        o[2],
        Imported::Refused(Error::ConstraintViolated(_)),
        "a row against a recorded pin"
    );
    check_matches!(o[3], Imported::Assigned(_), "a row bringing its own pin");
    check_matches!(
        o[4],
        Imported::Refused(Error::ConstraintViolated(_)),
        "a row pinned to another stamp"
    );
    check_matches!(
        o[5],
        Imported::Refused(Error::ConstraintViolated(_)),
        "a standard tenant on a dedicated stamp"
    );
    let pin = r.pin(&tid("brings-pin")).await.expect("pin read");
    check_eq!(
        pin.and_then(|p| p.stamp),
        Some(StampId(1)),
        "the pin a row brings is recorded"
    );
    check_eq!(r.assignment(&tid("pinned")).await.expect("read"), None);
}

/// Two imports racing for the last slots of a stamp admit exactly the free number between
/// them; an import racing single `assign`s of the same tenants leaves each tenant one home.
pub async fn race_of_imports_and_assigns_keeps_one_home_and_limits(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 30.0)]).await;
    active(r, 2, &[(Resource::Tenants, 1000.0)]).await;
    let batches: Vec<Vec<ImportRow>> = (0..4)
        .map(|b| (0..20).map(|i| row(&format!("b{b}-{i:02}"), 1.0, 1)).collect())
        .collect();
    let reports = join_all(batches.iter().map(|rows| r.assign_many(rows)).collect()).await;
    let mut admitted = 0;
    for rep in reports {
        let rep = rep.expect("import");
        admitted += rep.assigned();
        for (_, e) in rep.refused() {
            check_matches!(e, Error::CapacityExceeded { .. }, "a row that lost the race for slots");
        }
    }
    check_eq!(admitted, 30, "rows admitted by racing imports");
    check_eq!(
        r.fleet().await.expect("fleet").get(StampId(1)).expect("s1").tenants(),
        30
    );
    let rows: Vec<ImportRow> = (0..40).map(|i| row(&format!("r{i:02}"), 1.0, 2)).collect();
    let specs: Vec<TenantSpec> = rows.iter().map(|x| x.tenant.clone()).collect();
    let import = r.assign_many(&rows);
    let singles = join_all(specs.iter().map(|s| r.assign(s, StampId(2))).collect());
    let (import, singles) = join2(import, singles).await;
    let import = import.expect("import");
    for (i, single) in singles.iter().enumerate() {
        let by_import = matches!(import.outcomes()[i], Imported::Assigned(_));
        check_eq!(
            by_import,
            single.is_err(),
            "exactly one of the import and the single assign wins a tenant"
        );
    }
    check_eq!(
        r.fleet().await.expect("fleet").get(StampId(2)).expect("s2").tenants(),
        40
    );
}
