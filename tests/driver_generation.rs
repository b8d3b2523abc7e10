//! The reference data plane refuses driver effects from an older lease generation than one it
//! has seen for the migration on that stamp.

use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{MigrationContext, MigrationDriver};
use stamps::*;

fn ctx(state: MigrationState, generation: u64) -> MigrationContext {
    MigrationContext::new(
        MigrationId(7),
        TenantId::new("acme").unwrap(),
        StampId(1),
        StampId(2),
        state,
        1,
    )
    .generation(generation)
}

fn seeded() -> ReferenceDataPlane {
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
    let acme = TenantId::new("acme").unwrap();
    let spec = TenantSpec::new(acme);
    let route = Assignment::new(
        spec,
        StampId(1),
        Epoch(1),
        AssignmentMode::Serving,
        Timestamp::ZERO,
        Timestamp::ZERO,
    );
    for i in 0..5 {
        plane.write(&route, &format!("k{i}"), "v").unwrap();
    }
    plane
}

#[tokio::test]
async fn an_import_from_an_older_generation_after_a_rollback_is_refused_and_leaves_no_row() {
    let plane = seeded();
    let acme = TenantId::new("acme").unwrap();
    // Worker A (generation 1) took a snapshot; worker B (generation 2) rolled back.
    let snap = plane.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    plane
        .rollback(&ctx(MigrationState::RollingBack, 2), MigrationState::Importing)
        .await
        .unwrap();
    let snap_again = plane.snapshot(&ctx(MigrationState::Snapshotting, 1)).await.unwrap();
    for s in [&snap, &snap_again] {
        let late = plane.import(&ctx(MigrationState::Importing, 1), s).await;
        let e = late.expect_err("a late import of generation 1 after generation 2 must be refused");
        assert!(!e.is_retryable());
        assert!(e.message().contains("lease generation 1 is older than 2"), "{e}");
    }
    assert!(plane.dump(StampId(2), &acme).is_empty());
    // Catch-up and fences of the old generation are refused too; the new generation is admitted.
    assert!(plane
        .catch_up(&ctx(MigrationState::DualWrite, 1), &snap_again)
        .await
        .is_err());
    assert!(plane
        .fence(&ctx(MigrationState::DualWrite, 1), StampId(2), Epoch(5), true)
        .await
        .is_err());
    assert_eq!(plane.fence_state(StampId(2), &acme), None);
    plane
        .import(&ctx(MigrationState::Importing, 2), &snap_again)
        .await
        .unwrap();
    plane
        .import(&ctx(MigrationState::Importing, 2), &snap_again)
        .await
        .unwrap(); // same worker's retry
    assert_eq!(plane.dump(StampId(2), &acme).len(), 5);
}

#[tokio::test]
async fn a_cleanup_from_an_older_generation_is_refused() {
    let plane = seeded();
    let acme = TenantId::new("acme").unwrap();
    plane
        .fence(&ctx(MigrationState::RollingBack, 4), StampId(1), Epoch(3), true)
        .await
        .unwrap();
    let e = plane
        .cleanup_source(&ctx(MigrationState::CleaningUp, 3))
        .await
        .unwrap_err();
    assert!(e.message().contains("older than 4"), "{e}");
    assert_eq!(plane.dump(StampId(1), &acme).len(), 5);
}
