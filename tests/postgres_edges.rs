//! `PgRegistry` and `InMemoryRegistry` give the same answers on edge inputs of the change
//! feed (cursors behind the retained range, at and past the head, `limit == 0`, versions past
//! 2^63) and of the reads, after the same writes. Cases that need no pruning are in the
//! conformance suite (`change_feed_past_any_version_is_empty`,
//! `ids_past_the_stored_range_are_unknown`); pruning is backend-specific, so this test drives
//! both. Against the real server (see `tests/support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

use pg::{database_url, unique_schema, SchemaGuard};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::registry::Registry;
use stamps::*;

/// A backend-independent image of a `changes_since` outcome.
fn image(r: Result<ChangeBatch>) -> String {
    match r {
        Ok(b) => format!(
            "Ok(head {}, versions {:?})",
            b.head.0,
            b.changes.iter().map(|c| c.version.0).collect::<Vec<_>>()
        ),
        Err(Error::ChangeFeedTruncated { requested, oldest }) => format!("Truncated({}, {oldest})", requested.0),
        Err(e) => format!("Err({e})"),
    }
}

async fn writes(r: &dyn Registry) {
    r.put_stamp(
        StampSpec::new(
            StampId(1),
            "s1",
            Region::new("eu-west").unwrap(),
            Capacity::new([(Resource::Tenants, 100.0)], 0.0).unwrap(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    r.set_stamp_state(StampId(1), StampState::Active).await.unwrap();
    for i in 0..6 {
        r.assign(&TenantSpec::new(TenantId::new(&format!("t{i}")).unwrap()), StampId(1))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_edges_agree_with_the_in_memory_registry() {
    const KEEP: usize = 3;
    let memory = InMemoryRegistry::builder().change_retention(KEEP).build();
    let schema = unique_schema("edges");
    let _guard = SchemaGuard(schema.clone());
    let pg = PgRegistry::connect(PgConfig::from_url(database_url()).unwrap().schema(&schema).unwrap())
        .await
        .unwrap();
    pg.migrate().await.unwrap();
    writes(&memory).await;
    writes(&pg).await;
    let head = memory.fleet().await.unwrap().version.0;
    assert_eq!(pg.fleet().await.unwrap().version.0, head);
    pg.prune_changes(Version(head - KEEP as u64)).await.unwrap();

    let mut afters: Vec<u64> = (0..=head + 2).collect();
    afters.extend([i64::MAX as u64 - 1, i64::MAX as u64, 1 << 63, u64::MAX - 1, u64::MAX]);
    let mut checked = 0;
    for after in afters {
        for limit in [0, 1, 2, 10, usize::MAX] {
            let m = image(memory.changes_since(Version(after), limit).await);
            let p = image(pg.changes_since(Version(after), limit).await);
            assert_eq!(p, m, "changes_since(Version({after}), {limit}): PostgreSQL vs memory");
            checked += 1;
        }
    }
    assert!(checked > 50);

    // Reads of unknown or out-of-range things.
    let unknown = TenantId::new("zzz").unwrap();
    for (name, m, p) in [
        (
            "assignments(None, 0)",
            format!("{:?}", memory.assignments(None, 0).await.map(|v| v.len())),
            format!("{:?}", pg.assignments(None, 0).await.map(|v| v.len())),
        ),
        (
            "assignments(after zzz)",
            format!("{:?}", memory.assignments(Some(&unknown), 10).await.map(|v| v.len())),
            format!("{:?}", pg.assignments(Some(&unknown), 10).await.map(|v| v.len())),
        ),
        (
            "history(unknown)",
            format!("{:?}", memory.history(&unknown).await.map(|v| v.len())),
            format!("{:?}", pg.history(&unknown).await.map(|v| v.len())),
        ),
        (
            "stamp(u32::MAX)",
            format!("{:?}", memory.stamp(StampId(u32::MAX)).await.map(|s| s.is_some())),
            format!("{:?}", pg.stamp(StampId(u32::MAX)).await.map(|s| s.is_some())),
        ),
        (
            "migration(0)",
            format!("{:?}", memory.migration(MigrationId(0)).await.map(|s| s.is_some())),
            format!("{:?}", pg.migration(MigrationId(0)).await.map(|s| s.is_some())),
        ),
        (
            "migrations(unknown)",
            format!("{:?}", memory.migrations(Some(&unknown)).await.map(|v| v.len())),
            format!("{:?}", pg.migrations(Some(&unknown)).await.map(|v| v.len())),
        ),
    ] {
        assert_eq!(p, m, "{name}: PostgreSQL vs memory");
    }
}
