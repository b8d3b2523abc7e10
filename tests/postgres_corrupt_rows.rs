//! A row corrupted by hand in SQL hurts only itself: the calls that need it get
//! `Error::Corrupt` naming the row, everything else keeps working, `fleet()` leaves such a
//! stamp out and reports it, the change feed stops before a corrupt version, and a router
//! follower keeps serving what it has, reports the problem in its stats and resumes once the
//! row is repaired. Against the real server (see `tests/support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use pg::{database_url, raw_client, unique_schema, SchemaGuard};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::router::Router;
use stamps::*;

async fn fresh(hint: &str) -> (PgRegistry, SchemaGuard, String) {
    let schema = unique_schema(hint);
    let guard = SchemaGuard(schema.clone());
    let cfg = PgConfig::from_url(database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(4)
        .poll_interval(Duration::from_millis(20));
    let registry = PgRegistry::connect(cfg).await.unwrap();
    registry.migrate().await.unwrap();
    for id in [1, 2] {
        registry
            .put_active_stamp(
                StampSpec::new(
                    StampId(id),
                    format!("s{id}"),
                    Region::new("eu-west").unwrap(),
                    Capacity::new([(Resource::Tenants, 100.0), (Resource::Connections, 1000.0)], 0.0).unwrap(),
                )
                .unwrap(),
            )
            .await
            .unwrap();
    }
    (registry, guard, schema)
}

fn tenant(name: &str) -> TenantSpec {
    TenantSpec::new(TenantId::new(name).unwrap()).demand(Demand::of([(Resource::Connections, 2.0)]).unwrap())
}

async fn sql(statement: &str) {
    raw_client().await.batch_execute(statement).await.unwrap();
}

/// `Err(Corrupt)` whose row name contains `what` and reason contains `reason`.
fn assert_corrupt<T: std::fmt::Debug>(r: Result<T>, what: &str, reason: &str) {
    match r {
        Err(Error::Corrupt { what: w, reason: why }) => {
            assert!(w.contains(what), "the error names {w:?}, expected it to name {what:?}");
            assert!(why.contains(reason), "the reason {why:?} should mention {reason:?}");
        }
        other => panic!("expected Error::Corrupt naming {what:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_assignment_rows_fail_only_the_calls_that_read_them() {
    let (r, _guard, s) = fresh("corrupt_assign").await;
    for t in ["acme", "beta", "gamma", "delta"] {
        r.assign(&tenant(t), StampId(1)).await.unwrap();
    }
    // Out of range (beyond AMOUNT_MAX_UNITS), negative, a resource name no model allows, and
    // a tenant id the model refuses.
    sql(&format!(
        "UPDATE {s}.assignments SET demand_milli = '{{\"connections\": 18446744073709551615}}' WHERE tenant = 'acme';
         UPDATE {s}.assignments SET demand_milli = '{{\"connections\": -5}}' WHERE tenant = 'beta';
         UPDATE {s}.assignments SET tier = 'Not A Tier!' WHERE tenant = 'gamma';
         UPDATE {s}.assignments SET tenant = 'Bad Tenant!' WHERE tenant = 'delta';"
    ))
    .await;

    assert_corrupt(
        r.assignment(&TenantId::new("acme").unwrap()).await,
        "tenant \"acme\"",
        "demand_milli",
    );
    assert_corrupt(
        r.assignment(&TenantId::new("beta").unwrap()).await,
        "tenant \"beta\"",
        "demand_milli",
    );
    assert_corrupt(
        r.assignment(&TenantId::new("gamma").unwrap()).await,
        "tenant \"gamma\"",
        "tier",
    );
    // Paging reads every row: it names the first bad one in tenant order.
    assert_corrupt(r.assignments(None, 100).await, "tenant \"Bad Tenant!\"", "tenant");

    // Everything else works: other tenants, the fleet, new writes on the same stamp.
    assert!(r.assignment(&TenantId::new("zeta").unwrap()).await.unwrap().is_none());
    let new = r.assign(&tenant("omega"), StampId(1)).await.unwrap();
    assert_eq!(
        r.assignment(new.tenant()).await.unwrap().map(|a| a.epoch),
        Some(new.epoch)
    );
    let fleet = r.fleet().await.unwrap();
    assert_eq!(fleet.stamps.len(), 2);
    assert!(fleet.skipped().is_empty());
    assert_eq!(r.history(new.tenant()).await.unwrap().len(), 1);
    // A write that needs the corrupt row reports it, and writes nothing.
    let head = r.changes_since(Version::ZERO, 0).await.unwrap().head;
    assert_corrupt(
        r.compare_and_set(
            &TenantId::new("acme").unwrap(),
            Epoch(1),
            AssignmentChange::move_to(StampId(2)),
        )
        .await,
        "tenant \"acme\"",
        "demand_milli",
    );
    assert_eq!(r.changes_since(Version::ZERO, 0).await.unwrap().head, head);

    // Repaired, the rows read again.
    sql(&format!(
        "UPDATE {s}.assignments SET demand_milli = '{{\"connections\": 2000}}' WHERE tenant IN ('acme', 'beta');
         UPDATE {s}.assignments SET tier = 'shared' WHERE tenant = 'gamma';
         UPDATE {s}.assignments SET tenant = 'delta' WHERE tenant = 'Bad Tenant!';"
    ))
    .await;
    for t in ["acme", "beta", "gamma", "delta"] {
        let a = r.assignment(&TenantId::new(t).unwrap()).await.unwrap().unwrap();
        assert_eq!(a.stamp, StampId(1));
    }
    assert_eq!(r.assignments(None, 100).await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_stamp_is_left_out_of_the_fleet_and_reported() {
    let (r, _guard, s) = fresh("corrupt_stamp").await;
    r.assign(&tenant("acme"), StampId(1)).await.unwrap();
    sql(&format!(
        "UPDATE {s}.stamps SET limits_milli = '{{\"connections\": -1}}' WHERE id = 2"
    ))
    .await;

    let fleet = r.fleet().await.unwrap();
    assert_eq!(fleet.stamps.iter().map(|l| l.id()).collect::<Vec<_>>(), [StampId(1)]);
    assert_eq!(fleet.skipped().len(), 1, "{:?}", fleet.skipped());
    assert_eq!(fleet.skipped()[0].0, StampId(2));
    assert!(fleet.skipped()[0].1.contains("limits_milli"), "{:?}", fleet.skipped());
    assert_corrupt(r.stamp(StampId(2)).await, "stamp 2", "limits_milli");
    assert_eq!(
        r.stamp(StampId(1)).await.unwrap().map(|st| st.spec.id),
        Some(StampId(1))
    );
    // Placement on the healthy stamp is unaffected; the corrupt one refuses with the error.
    r.assign(&tenant("beta"), StampId(1)).await.unwrap();
    assert_corrupt(r.assign(&tenant("gamma"), StampId(2)).await, "stamp 2", "limits_milli");

    // An unreadable usage is reported the same way.
    sql(&format!(
        "UPDATE {s}.stamps SET limits_milli = '{{\"connections\": 1000000, \"tenants\": 100000}}' WHERE id = 2;
         UPDATE {s}.stamps SET usage_milli = '{{\"Not A Resource\": 1}}' WHERE id = 1"
    ))
    .await;
    let fleet = r.fleet().await.unwrap();
    assert_eq!(fleet.stamps.iter().map(|l| l.id()).collect::<Vec<_>>(), [StampId(2)]);
    assert_eq!(fleet.skipped().iter().map(|x| x.0).collect::<Vec<_>>(), [StampId(1)]);
    assert!(fleet.skipped()[0].1.contains("usage_milli"));

    sql(&format!(
        "UPDATE {s}.stamps SET usage_milli = '{{\"tenants\": 2000, \"connections\": 4000}}' WHERE id = 1"
    ))
    .await;
    let fleet = r.fleet().await.unwrap();
    assert_eq!(fleet.stamps.len(), 2);
    assert!(fleet.skipped().is_empty());

    // A resource's own headroom of one (no room at all) or for a resource without a limit.
    for bad in [
        r#"{"connections": 1000000}"#,
        r#"{"storage": 100000}"#,
        r#"{"Nope": 1}"#,
    ] {
        sql(&format!(
            "UPDATE {s}.stamps SET headroom_by_resource = '{bad}' WHERE id = 2"
        ))
        .await;
        assert_corrupt(r.stamp(StampId(2)).await, "stamp 2", "headroom_by_resource");
        let fleet = r.fleet().await.unwrap();
        assert_eq!(
            fleet.skipped().iter().map(|x| x.0).collect::<Vec<_>>(),
            [StampId(2)],
            "{bad}"
        );
    }
    sql(&format!(
        "UPDATE {s}.stamps SET headroom_by_resource = '{{\"connections\": 100000}}' WHERE id = 2"
    ))
    .await;
    let two = r.stamp(StampId(2)).await.unwrap().unwrap();
    assert_eq!(two.spec.capacity.headroom_for(&Resource::Connections).as_ppm(), 100_000);
}

/// Waits up to 10 s for `cond`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_change_stops_the_feed_and_the_follower_resumes_once_repaired() {
    let (r, _guard, s) = fresh("corrupt_change").await;
    r.assign(&tenant("acme"), StampId(1)).await.unwrap();
    let router = Router::new(r.clone());
    assert_eq!(router.warm_up().await.unwrap(), 1);
    assert!(router.route("acme").is_ok());
    let before = router.cursor();

    let b = r.assign(&tenant("beta"), StampId(1)).await.unwrap();
    let c = r.assign(&tenant("gamma"), StampId(2)).await.unwrap();
    let d = r.assign(&tenant("delta"), StampId(2)).await.unwrap();
    // gamma's change gets a mode no model has (the table's CHECK does not cover the JSON).
    sql(&format!(
        "UPDATE {s}.changes SET payload = jsonb_set(payload::jsonb, '{{mode}}', '\"teleport\"') WHERE version = {}",
        c.epoch.0
    ))
    .await;

    // The feed stops before the corrupt version: the change before it is read, then the error
    // names the corrupt version.
    let batch = r.changes_since(before, 10).await.unwrap();
    assert_eq!(
        batch.changes.iter().map(|x| x.version.0).collect::<Vec<_>>(),
        [b.epoch.0]
    );
    assert!(batch.has_more(Version(b.epoch.0)));
    assert_corrupt(
        r.changes_since(Version(b.epoch.0), 10).await,
        &format!("change v{}", c.epoch.0),
        "mode",
    );
    // Past it, the feed reads again.
    let after = r.changes_since(Version(c.epoch.0), 10).await.unwrap();
    assert_eq!(
        after.changes.iter().map(|x| x.version.0).collect::<Vec<_>>(),
        [d.epoch.0]
    );

    // sync applies what it can, then reports the corrupt version and stays before it.
    assert_corrupt(router.sync().await, &format!("change v{}", c.epoch.0), "mode");
    assert_eq!(
        router.cursor(),
        Version(b.epoch.0),
        "the cursor never passes the corrupt change"
    );
    let stats = router.stats();
    assert_eq!(stats.feed_errors, 1);
    assert_eq!(stats.feed_stuck_at, Some(Version(b.epoch.0)));
    assert!(router.route("acme").is_ok(), "keeps serving what it has");
    assert!(
        router.route("beta").is_ok(),
        "applied the change before the corrupt one"
    );

    // A follower retries (with backoff), never skips it, and keeps counting.
    let follower = router.spawn_follower();
    eventually("the follower to retry", || router.stats().feed_errors >= 3).await;
    assert_eq!(router.cursor(), Version(b.epoch.0));
    assert_eq!(router.stats().feed_stuck_at, Some(Version(b.epoch.0)));
    assert!(router.route("acme").is_ok());

    // Repaired, the follower resumes: both later changes are applied, in order.
    sql(&format!(
        "UPDATE {s}.changes SET payload = jsonb_set(payload::jsonb, '{{mode}}', '\"serving\"') WHERE version = {}",
        c.epoch.0
    ))
    .await;
    eventually("the follower to resume", || router.cursor() >= Version(d.epoch.0)).await;
    assert_eq!(router.stats().feed_stuck_at, None);
    assert!(router.route("gamma").is_ok());
    assert!(router.route("delta").is_ok());
    drop(follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_pins_and_overrides_fail_only_the_calls_that_read_them() {
    let (r, _guard, s) = fresh("corrupt_directives").await;
    let why = Decision::new("ops", "keep").unwrap();
    for t in ["acme", "beta"] {
        r.set_pin(&TenantId::new(t).unwrap(), Some(StampId(1)), &why)
            .await
            .unwrap();
    }
    let redirect = Redirect::new(StampId(2), RedirectWhen::Always);
    r.set_route_override(StampId(1), Some(redirect), &why).await.unwrap();
    // A reason with a control character, an empty actor, an unknown "when".
    sql(&format!(
        "UPDATE {s}.pins SET reason = E'a\\nb' WHERE tenant = 'acme';
         UPDATE {s}.pins SET actor = '' WHERE tenant = 'beta';
         ALTER TABLE {s}.route_overrides DROP CONSTRAINT route_overrides_applies_check;
         UPDATE {s}.route_overrides SET applies = 'sometimes';"
    ))
    .await;
    assert_corrupt(
        r.pin(&TenantId::new("acme").unwrap()).await,
        "pin \"acme\"",
        "actor or reason",
    );
    assert_corrupt(r.pins(None, 10).await, "pin \"acme\"", "actor or reason");
    assert_corrupt(r.route_overrides().await, "route override", "applies");
    // A pin write that needs the corrupt row refuses and writes nothing; others work.
    let head = r.changes_since(Version::ZERO, 0).await.unwrap().head;
    assert_corrupt(
        r.set_pin(&TenantId::new("beta").unwrap(), None, &why).await,
        "pin \"beta\"",
        "actor or reason",
    );
    assert_eq!(r.changes_since(Version::ZERO, 0).await.unwrap().head, head);
    r.set_pin(&TenantId::new("gamma").unwrap(), Some(StampId(2)), &why)
        .await
        .unwrap();
    // Repaired, they read again.
    sql(&format!(
        "UPDATE {s}.pins SET reason = 'keep' WHERE tenant = 'acme';
         UPDATE {s}.pins SET actor = 'ops' WHERE tenant = 'beta';
         UPDATE {s}.route_overrides SET applies = 'always';"
    ))
    .await;
    assert_eq!(r.pins(None, 10).await.unwrap().len(), 3);
    assert_eq!(r.route_overrides().await.unwrap().len(), 1);
}
