//! Every registry re-validates what it writes: a value it could not read back, or one the
//! constructors refuse, is refused with `InvalidInput` and nothing is committed; reads keep
//! working. Run against `InMemoryRegistry` here and against `PgRegistry` (real server) when the
//! `postgres` feature is on.

#![cfg(feature = "serde")]

#[cfg(feature = "postgres")]
#[path = "support/pg.rs"]
mod pg;

use stamps::*;

fn tenant(name: &str) -> TenantSpec {
    TenantSpec::new(TenantId::new(name).unwrap())
}

async fn head(r: &impl Registry) -> Version {
    r.changes_since(Version::ZERO, 10_000).await.unwrap().head
}

/// Reads that a poisoned row used to break for everyone.
async fn reads_work(r: &impl Registry) {
    r.all_assignments().await.unwrap();
    r.fleet().await.unwrap();
    r.changes_since(Version::ZERO, 10_000).await.unwrap();
    r.stamp(StampId(1)).await.unwrap();
}

fn is_invalid<T: std::fmt::Debug>(res: Result<T>) -> bool {
    matches!(res, Err(Error::InvalidInput(_)))
}

async fn refuses_what_it_cannot_read_back(r: &impl Registry) {
    let cap = Capacity::new([(Resource::Connections, AMOUNT_MAX_UNITS)], 0.0).unwrap();
    let spec = StampSpec::new(StampId(1), "s1", Region::new("eu").unwrap(), cap).unwrap();
    r.put_active_stamp(spec.clone()).await.unwrap();
    r.put_active_stamp(StampSpec::new(StampId(2), "s2", Region::new("eu").unwrap(), spec.capacity.clone()).unwrap())
        .await
        .unwrap();

    // The poisoned demand no longer deserializes at all.
    let doc = serde_json::json!({
        "id": "poison", "demand": [["connections", u64::MAX]], "region": null, "residency": null,
        "tier": "shared", "pin": null, "labels": {},
    });
    assert!(serde_json::from_value::<TenantSpec>(doc).is_err());

    // Amounts between 2^50 and 2^53 thousandths did not read back exactly from PostgreSQL.
    assert!(Demand::of([(Resource::Connections, 5e12)]).is_err());

    // The largest demand is stored and read back exactly.
    let max = Demand::of([(Resource::Connections, AMOUNT_MAX_UNITS)]).unwrap();
    let a = r.assign(&tenant("big").demand(max.clone()), StampId(1)).await.unwrap();
    assert_eq!(
        r.assignment(&TenantId::new("big").unwrap())
            .await
            .unwrap()
            .unwrap()
            .spec
            .demand,
        max
    );
    reads_work(r).await;

    // Specs whose public fields break the rules: refused, nothing committed.
    let before = head(r).await;
    let bad_specs = [
        tenant("nul").label("plan", "a\0b"),
        tenant("nul").label("a\0", "b"),
        tenant("nul").tier(Tier::Custom(Name::new("shared").unwrap())),
        tenant("nul").tier(Tier::Custom(Name::new("dedicated").unwrap())),
    ];
    for bad in &bad_specs {
        assert!(is_invalid(r.assign(bad, StampId(2)).await), "{bad:?}");
    }
    let gpu = Resource::Custom(Name::new("tenants").unwrap());
    assert!(Demand::of([(gpu, 1.0)]).is_err());
    let epoch = a.epoch;
    let big = TenantId::new("big").unwrap();
    let change = AssignmentChange::move_with_mode(StampId(2), AssignmentMode::DualWrite { shadow: StampId(2) });
    assert!(is_invalid(r.compare_and_set(&big, epoch, change).await));
    assert!(is_invalid(
        r.compare_and_set(&big, epoch, AssignmentChange::move_to(StampId(2)).by("a\0"))
            .await
    ));
    let mut bad_stamp = spec.clone().label("az", "\0");
    assert!(is_invalid(r.put_stamp(bad_stamp.clone()).await));
    bad_stamp = spec.clone().tier(Tier::Custom(Name::new("shared").unwrap()));
    assert!(is_invalid(r.put_stamp(bad_stamp).await));
    assert!(is_invalid(r.put_stamp(spec.clone().endpoint("http://a\0")).await));
    let mut rec = MigrationRecord::planned(big.clone(), StampId(1), StampId(2));
    rec.data.insert("note".into(), "\0".into());
    assert!(is_invalid(r.create_migration(rec).await));
    assert_eq!(head(r).await, before, "a refused write appended a change");
    assert!(r.assignment(&TenantId::new("nul").unwrap()).await.unwrap().is_none());
    assert!(r.migrations(None).await.unwrap().is_empty());

    let rec = r
        .create_migration(MigrationRecord::planned(big.clone(), StampId(1), StampId(2)))
        .await
        .unwrap();
    let mut bad = rec.clone();
    bad.data.insert("k\0".into(), "v".into());
    assert!(is_invalid(r.save_migration(&bad).await));
    assert_eq!(r.migration(rec.id).await.unwrap(), Some(rec));

    // A freeze ending past 2^63 ms fitted in memory but not in PostgreSQL: both refuse it.
    let before = head(r).await;
    let now = r.require_assignment(&big).await.unwrap();
    for until in [
        Timestamp::from_millis(i64::MAX as u64 + 1),
        Timestamp::from_millis(u64::MAX),
    ] {
        let frozen = AssignmentMode::Frozen {
            shadow: Some(StampId(2)),
            until,
        };
        assert!(is_invalid(
            r.compare_and_set(&big, now.epoch, AssignmentChange::set_mode(frozen))
                .await
        ));
        let moved = AssignmentChange::move_with_mode(StampId(2), AssignmentMode::Frozen { shadow: None, until });
        assert!(is_invalid(r.compare_and_set(&big, now.epoch, moved).await));
    }
    let latest = AssignmentMode::Frozen {
        shadow: Some(StampId(2)),
        until: Timestamp::from_millis(i64::MAX as u64),
    };
    let frozen = r
        .compare_and_set(&big, now.epoch, AssignmentChange::set_mode(latest))
        .await
        .unwrap();
    assert_eq!(
        r.require_assignment(&big).await.unwrap().mode,
        latest,
        "the largest storable freeze reads back"
    );
    assert_eq!(
        head(r).await.0,
        before.0 + 1,
        "only the storable freeze appended a change"
    );
    r.compare_and_set(&big, frozen.epoch, AssignmentChange::set_mode(AssignmentMode::Serving))
        .await
        .unwrap();
    reads_work(r).await;
}

#[tokio::test]
async fn in_memory_refuses_what_it_cannot_read_back() {
    refuses_what_it_cannot_read_back(&InMemoryRegistry::new()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_what_it_cannot_read_back() {
    use stamps::registry::postgres::{PgConfig, PgRegistry};
    let schema = pg::unique_schema("validation");
    let _guard = pg::SchemaGuard(schema.clone());
    let cfg = PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(2)
        .clock(FakeClock::new());
    let registry = PgRegistry::connect(cfg).await.unwrap();
    registry.migrate().await.unwrap();
    refuses_what_it_cannot_read_back(&registry).await;
}
