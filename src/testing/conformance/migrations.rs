//! Cases on migration records: round trip, revisions, one active migration per tenant and
//! legal state changes.

use crate::error::{Conflict, Error};
use crate::model::*;
use crate::registry::DynRegistry;

use super::fixtures::*;

/// A created record gets an id and revision 1, and reads back equal.
pub async fn migration_records_round_trip(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let mut rec = MigrationRecord::planned(tid("a"), StampId(1), StampId(2));
    rec.data.insert("note".into(), "rebalance ticket 42".into());
    let created = r.create_migration(rec).await.expect("create");
    check!(created.id.0 > 0);
    check_eq!(created.revision, 1);
    check_eq!(created.state, MigrationState::Planned);
    let read = r.migration(created.id).await.expect("read").expect("present");
    check_eq!(read, created);
    let mut next = read.clone();
    next.state = MigrationState::Snapshotting;
    next.data.insert("snapshot".into(), "snap-1".into());
    let saved = r.save_migration(&next).await.expect("save");
    check_eq!(saved.revision, 2);
    check_eq!(saved.state, MigrationState::Snapshotting);
    check_eq!(saved.data.get("snapshot").map(String::as_str), Some("snap-1"));
    check_eq!(r.migration(created.id).await.expect("read"), Some(saved.clone()));
    check_eq!(r.migrations(Some(&tid("a"))).await.expect("list"), vec![saved]);
    check!(r.migrations(Some(&tid("b"))).await.expect("list").is_empty());
    check!(r.migration(MigrationId(9999)).await.expect("read").is_none());
}

/// Saving with a stale revision is a conflict; two workers cannot both advance a record.
pub async fn migration_revision_is_compare_and_set(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let created = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect("create");
    let mut w1 = created.clone();
    let mut w2 = created.clone();
    w1.state = MigrationState::Snapshotting;
    w2.state = MigrationState::Cancelled;
    r.save_migration(&w1).await.expect("first worker");
    let err = r.save_migration(&w2).await.expect_err("second worker");
    check_matches!(err, Error::Conflict(Conflict::Revision { expected: 1, actual: 2 }));
    let read = r.migration(created.id).await.expect("read").expect("present");
    check_eq!(read.state, MigrationState::Snapshotting);
    let mut ghost = created.clone();
    ghost.id = MigrationId(created.id.0 + 100);
    check_matches!(r.save_migration(&ghost).await, Err(Error::NotFound(_)));
}

/// At most one non-terminal migration per tenant.
pub async fn one_active_migration_per_tenant(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let m = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect("create");
    let err = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect_err("second active");
    check_matches!(err, Error::AlreadyExists(_));
    r.create_migration(MigrationRecord::planned(tid("b"), StampId(1), StampId(2)))
        .await
        .expect("other tenant");
    let mut done = m.clone();
    done.state = MigrationState::Cancelled;
    r.save_migration(&done).await.expect("cancel");
    r.create_migration(MigrationRecord::planned(tid("a"), StampId(2), StampId(1)))
        .await
        .expect("after the first ended");
    check_eq!(r.migrations(None).await.expect("list").len(), 3);
}

/// A save moves the record's state only along a legal transition (or keeps it); a finished
/// migration cannot be reopened, so it cannot become a second active one either.
pub async fn migration_states_only_move_forward(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let m = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(2)))
        .await
        .expect("create");
    let mut skip = m.clone();
    skip.state = MigrationState::CutOver;
    let err = r.save_migration(&skip).await.expect_err("planned to cut-over");
    check_matches!(err, Error::InvalidTransition { .. });
    let mut same = m.clone();
    same.data.insert("note".into(), "kept".into());
    let m = r.save_migration(&same).await.expect("same state, new data");
    let mut done = m.clone();
    done.state = MigrationState::Cancelled;
    let done = r.save_migration(&done).await.expect("cancel");
    let next = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(2), StampId(1)))
        .await
        .expect("after the first ended");
    for state in [
        MigrationState::Planned,
        MigrationState::Snapshotting,
        MigrationState::Completed,
    ] {
        let mut reopen = done.clone();
        reopen.state = state;
        let err = r
            .save_migration(&reopen)
            .await
            .expect_err("reopen a cancelled migration");
        check_matches!(
            err,
            Error::InvalidTransition { .. },
            "saving a {state} record over a cancelled one"
        );
    }
    let read = r.migration(done.id).await.expect("read").expect("present");
    check_eq!(read, done);
    let active: Vec<_> = r
        .migrations(Some(&tid("a")))
        .await
        .expect("list")
        .into_iter()
        .filter(|x| !x.state.is_terminal())
        .map(|x| x.id)
        .collect();
    check_eq!(active, vec![next.id]);
}

/// Same source and destination, unknown stamps, and non-planned records are refused.
pub async fn invalid_migrations_are_refused(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    let err = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(1)))
        .await
        .expect_err("same stamp");
    check_matches!(err, Error::InvalidInput(_));
    let err = r
        .create_migration(MigrationRecord::planned(tid("a"), StampId(1), StampId(7)))
        .await
        .expect_err("unknown destination");
    check_matches!(err, Error::NotFound(crate::error::Subject::Stamp(StampId(7))));
    let mut rec = MigrationRecord::planned(tid("a"), StampId(1), StampId(1));
    rec.state = MigrationState::CutOver;
    check_matches!(r.create_migration(rec).await, Err(Error::InvalidInput(_)));
    check!(r.migrations(None).await.expect("list").is_empty());
}

/// Rollout records: created at their first wave with revision 1, one in progress at a time,
/// saved only on the revision last read and along legal transitions, with target and waves
/// fixed; unknown ids read as `None` and save as `NotFound`.
pub async fn rollout_records_round_trip_with_revisions(r: &DynRegistry) {
    let case = "rollout_records_round_trip_with_revisions";
    let waves = vec![vec![StampId(2)], vec![StampId(1), StampId(3)]];
    let planned = RolloutRecord::planned("42.1.0", waves.clone()).expect("valid record");
    let created = r.create_rollout(planned.clone()).await.expect("create rollout");
    assert_eq!(
        (created.revision, created.wave, created.state),
        (1, 0, RolloutState::Deploying),
        "{case}"
    );
    assert_eq!(created.waves, waves, "{case}: waves read back");
    assert!(
        matches!(r.create_rollout(planned.clone()).await, Err(Error::AlreadyExists(_))),
        "{case}: a second rollout in progress is refused"
    );
    assert_eq!(
        r.rollout(created.id).await.expect("rollout"),
        Some(created.clone()),
        "{case}"
    );
    let mut baking = created.clone();
    baking.state = RolloutState::Baking;
    baking.wave_started = Some(crate::time::Timestamp::from_millis(5_000));
    baking.note = Some("wave 0 deployed".into());
    let saved = r.save_rollout(&baking).await.expect("save");
    assert_eq!(saved.revision, 2, "{case}");
    assert_eq!(
        (saved.state, saved.wave_started, saved.note.as_deref()),
        (RolloutState::Baking, baking.wave_started, Some("wave 0 deployed")),
        "{case}"
    );
    // A stale revision loses.
    assert!(
        matches!(r.save_rollout(&baking).await, Err(Error::Conflict(_))),
        "{case}: a stale revision is a conflict"
    );
    // Target and waves are fixed; terminal states stay terminal.
    let mut changed = saved.clone();
    changed.waves = vec![vec![StampId(9)]];
    assert!(
        matches!(r.save_rollout(&changed).await, Err(Error::InvalidInput(_))),
        "{case}"
    );
    let mut done = saved.clone();
    done.wave = 1;
    done.state = RolloutState::Completed;
    let done = r.save_rollout(&done).await.expect("complete");
    let mut again = done.clone();
    again.state = RolloutState::Deploying;
    assert!(
        matches!(r.save_rollout(&again).await, Err(Error::InvalidInput(_))),
        "{case}"
    );
    // Once terminal, a new rollout may start.
    let second = r
        .create_rollout(planned)
        .await
        .expect("a new rollout after the first ended");
    assert_ne!(second.id, done.id, "{case}");
    let all = r.rollouts().await.expect("rollouts");
    assert_eq!(
        all.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![done.id, second.id],
        "{case}: oldest first"
    );
    assert_eq!(r.rollout(RolloutId(u64::MAX)).await.expect("rollout"), None, "{case}");
    let mut ghost = second.clone();
    ghost.id = RolloutId(u64::MAX);
    assert!(
        matches!(r.save_rollout(&ghost).await, Err(Error::NotFound(_))),
        "{case}"
    );
}
