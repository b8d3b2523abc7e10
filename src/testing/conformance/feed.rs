//! Cases on the change feed and its signal, and on paging assignments.

use std::time::Duration;

use crate::error::Error;
use crate::model::*;
use crate::registry::{DynRegistry, RegistryExt};

use super::check::MAX_PAGES;
use super::fixtures::*;

/// Every stamp and assignment write appears exactly once, in strictly increasing version
/// order, with the state after the write.
pub async fn change_feed_is_complete_and_ordered(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 50.0)]).await; // 2 changes
    active(r, 2, &[(Resource::Tenants, 50.0)]).await; // 2 changes
    let mut expected_tenant_changes = 0;
    for i in 0..20 {
        let a = r
            .assign(&tenant(&format!("t{i:02}"), 1.0), StampId(1))
            .await
            .expect("assign");
        expected_tenant_changes += 1;
        if i % 2 == 0 {
            r.compare_and_set(a.tenant(), a.epoch, AssignmentChange::move_to(StampId(2)))
                .await
                .expect("move");
            expected_tenant_changes += 1;
        }
        if i % 5 == 0 {
            let cur = r.require_assignment(a.tenant()).await.expect("current");
            r.unassign(a.tenant(), cur.epoch).await.expect("unassign");
            expected_tenant_changes += 1;
        }
    }
    let changes = match all_changes(r).await {
        Ok(changes) => changes,
        Err(e) => fail!("{e}"),
    };
    check_eq!(
        changes.len(),
        4 + expected_tenant_changes,
        "the number of changes after 4 stamp writes and {expected_tenant_changes} assignment writes"
    );
    if let Some(w) = changes.windows(2).find(|w| w[0].version >= w[1].version) {
        fail!("version {} follows version {} in the feed", w[1].version, w[0].version);
    }
    let head = r.changes_since(Version::ZERO, 1).await.expect("feed").head;
    check_eq!(
        changes.last().map(|c| c.version),
        Some(head),
        "the last change's version against the head"
    );
    // Replaying the feed gives the registry's current assignments.
    let mut model = std::collections::BTreeMap::new();
    for c in &changes {
        if let ChangeKind::Assignment { tenant, assignment } = &c.kind {
            match assignment {
                Some(a) => {
                    check_eq!(
                        a.epoch.0,
                        c.version.0,
                        "the epoch of {tenant}'s assignment in change {}",
                        c.version
                    );
                    model.insert(tenant.clone(), (**a).clone());
                }
                None => {
                    model.remove(tenant);
                }
            }
        }
    }
    let actual: std::collections::BTreeMap<_, _> = r
        .all_assignments()
        .await
        .expect("all")
        .into_iter()
        .map(|a| (a.tenant().clone(), a))
        .collect();
    check_eq!(
        model,
        actual,
        "the assignments the feed replays to, against all_assignments"
    );
    // Stamp changes carry the stamp after the write.
    let states: Vec<_> = changes
        .iter()
        .filter_map(|c| match &c.kind {
            ChangeKind::Stamp(s) if s.id() == StampId(1) => Some(s.state),
            _ => None,
        })
        .collect();
    check_eq!(
        states,
        [StampState::Provisioning, StampState::Active],
        "the states stamp 1's changes carry"
    );
}

/// `changes_since` honours `limit`, and pages cover the feed without gaps or repeats.
pub async fn change_feed_pages_by_limit(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 100.0)]).await;
    for i in 0..23 {
        r.assign(&TenantSpec::new(tid(&format!("t{i}"))), StampId(1))
            .await
            .expect("assign");
    }
    let mut cursor = Version::ZERO;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        check!(
            pages <= MAX_PAGES,
            "read {MAX_PAGES} pages of 5 without reaching the end of a feed of 25 changes (cursor {cursor})"
        );
        let batch = r.changes_since(cursor, 5).await.expect("changes_since(cursor, 5)");
        check!(
            batch.changes.len() <= 5,
            "changes_since({cursor}, 5) returned {} changes",
            batch.changes.len()
        );
        if let Some(c) = batch.changes.iter().find(|c| c.version <= cursor) {
            fail!(
                "changes_since({cursor}, 5) returned version {}, not after the cursor (an inclusive cursor repeats changes and never advances)",
                c.version
            );
        }
        if batch.changes.is_empty() {
            check!(
                !batch.has_more(cursor),
                "an empty page at {cursor} says more changes follow (head {})",
                batch.head
            );
            break;
        }
        seen.extend(batch.changes.iter().map(|c| c.version.0));
        cursor = batch.next_cursor(cursor);
    }
    let first = seen.first().copied().unwrap_or_default();
    check_eq!(
        seen,
        (first..first + 25).collect::<Vec<_>>(),
        "the versions read page by page (25 writes, gapless and in order)"
    );
    let past = r.changes_since(cursor, 5).await.expect("changes_since at the head");
    check!(
        past.changes.is_empty(),
        "changes_since at the head {cursor} returned {:?}",
        past.changes
    );
    check_eq!(past.head, cursor, "the head reported at the end of the feed");
}

/// The change signal is notified after a write, and waiting past the head times out.
pub async fn change_signal_is_notified(r: &DynRegistry) {
    let signal = r.change_signal();
    let before = r.changes_since(Version::ZERO, 1).await.expect("feed").head;
    r.put_stamp(spec(1, &[(Resource::Tenants, 1.0)])).await.expect("put");
    // The signal may lag a backend's notification path; give it a bounded time.
    let mut got = None;
    for _ in 0..200 {
        if let Some(v) = signal.wait_timeout(before, Duration::ZERO) {
            got = Some(v);
            break;
        }
        tokio_free_yield(Duration::from_millis(10)).await;
    }
    let Some(v) = got else {
        fail!("the change signal was not notified within 2 s of a put_stamp (head before: {before})");
    };
    check!(
        v > before,
        "the signal reported {v} after a write, not after the previous head {before}"
    );
    let head = r.changes_since(Version::ZERO, 1).await.expect("feed").head;
    let waited = signal.wait_timeout(head, Duration::from_millis(5));
    check!(
        waited.is_none() || signal.head() > head,
        "waiting past the head {head} returned {waited:?} although nothing was written"
    );
}

/// Waits without a runtime dependency: a timer thread wakes the task.
async fn tokio_free_yield(d: Duration) {
    let signal = crate::registry::ChangeSignal::new();
    let s2 = signal.clone();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        s2.notify(Version(1));
    });
    signal.changed(Version::ZERO).await;
}

/// `assignments` pages in tenant-id order.
pub async fn assignments_page_in_tenant_order(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 100.0)]).await;
    let mut names: Vec<String> = (0..30).map(|i| format!("t{:02}", (i * 7) % 30)).collect();
    for n in &names {
        r.assign(&TenantSpec::new(tid(n)), StampId(1)).await.expect("assign");
    }
    names.sort();
    let mut got = Vec::new();
    let mut after: Option<TenantId> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        let shown = after.as_ref().map(TenantId::as_str);
        check!(
            pages <= MAX_PAGES,
            "read {MAX_PAGES} pages of 7 without reaching the end of 30 assignments (after {shown:?})"
        );
        let page = r.assignments(after.as_ref(), 7).await.expect("assignments(after, 7)");
        check!(
            page.len() <= 7,
            "assignments({shown:?}, 7) returned {} assignments",
            page.len()
        );
        if let Some(cursor) = &after {
            if let Some(a) = page.iter().find(|a| a.tenant() <= cursor) {
                fail!(
                    "the page after {:?} includes {:?}, not after the cursor (an inclusive cursor repeats the last assignment of each page and never ends)",
                    cursor.as_str(),
                    a.tenant().as_str()
                );
            }
        }
        if let Some(w) = page.windows(2).find(|w| w[0].tenant() >= w[1].tenant()) {
            fail!(
                "the page after {shown:?} is not in tenant-id order: {:?} before {:?}",
                w[0].tenant().as_str(),
                w[1].tenant().as_str()
            );
        }
        if page.is_empty() {
            break;
        }
        after = page.last().map(|a| a.tenant().clone());
        got.extend(page.into_iter().map(|a| a.tenant().as_str().to_string()));
    }
    check_eq!(got, names, "the tenants read page by page");
}

/// A cursor past every version the registry can hold (`u64::MAX`, or just past `i64::MAX`)
/// reads nothing: `Ok` with no change and the current head, not an error (every backend
/// answers alike, whatever range it stores versions in).
pub async fn change_feed_past_any_version_is_empty(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    r.assign(&TenantSpec::new(tid("a")), StampId(1)).await.expect("assign");
    let head = r.changes_since(Version::ZERO, 0).await.expect("head").head;
    for after in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1] {
        let batch = r.changes_since(Version(after), 10).await.unwrap_or_else(|e| {
            panic!("changes_since(Version({after}), 10) must be Ok with no change (nothing is that new), got {e:?}")
        });
        assert!(
            batch.changes.is_empty(),
            "changes_since(Version({after})) returned changes: {:?}",
            batch.changes
        );
        assert_eq!(batch.head, head, "changes_since(Version({after})) must report the head");
        assert!(!batch.has_more(Version(after)), "nothing more after Version({after})");
    }
}

/// A cursor past the head that a backend could store is one this registry never issued: a
/// follower holding it applied changes of another history (a primary lost in a failover, a
/// database restored to an earlier point). Answering it with an empty page would let the
/// follower skip every change issued up to its cursor, so it is refused with
/// [`Error::HistoryDiverged`] naming the head to resynchronise from.
pub async fn change_feed_cursor_past_the_head_is_refused(r: &DynRegistry) {
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    r.assign(&TenantSpec::new(tid("a")), StampId(1)).await.expect("assign");
    let head = r.changes_since(Version::ZERO, 0).await.expect("head").head;
    for after in [head.0 + 1, head.0 + 1000, (1 << 62) + 5, i64::MAX as u64 - 1] {
        match r.changes_since(Version(after), 10).await {
            Err(Error::HistoryDiverged { cursor, head: h, .. }) => {
                check_eq!(cursor, Version(after), "the cursor HistoryDiverged names");
                check_eq!(h, head, "the head HistoryDiverged names");
            }
            other => {
                fail!("changes_since(Version({after})) past the head {head} returned {other:?}, not HistoryDiverged")
            }
        }
    }
    let at_head = r.changes_since(head, 10).await.expect("changes_since at the head");
    check!(at_head.changes.is_empty(), "changes at the head: {:?}", at_head.changes);
}

/// Ids, revisions and epochs past the stored range are answered like any unknown value:
/// `migration` is `None`, `save_migration` is `NotFound` (unknown id) or a revision
/// `Conflict`, `compare_and_set` and `unassign` with such an epoch are an epoch `Conflict`;
/// never `InvalidInput`.
pub async fn ids_past_the_stored_range_are_unknown(r: &DynRegistry) {
    use crate::error::{Error, Subject};
    active(r, 1, &[(Resource::Tenants, 5.0)]).await;
    active(r, 2, &[(Resource::Tenants, 5.0)]).await;
    let created = r
        .create_migration(MigrationRecord::planned(tid("m"), StampId(1), StampId(2)))
        .await
        .expect("create");
    for id in [u64::MAX, 1 << 63] {
        let read = r.migration(MigrationId(id)).await;
        assert!(
            matches!(read, Ok(None)),
            "migration(MigrationId({id})) must be Ok(None), got {read:?}"
        );
        let mut rec = created.clone();
        rec.id = MigrationId(id);
        let err = r.save_migration(&rec).await.expect_err("unknown id");
        assert!(
            matches!(err, Error::NotFound(Subject::Migration(m)) if m == MigrationId(id)),
            "save_migration of unknown MigrationId({id}) must be NotFound, got {err:?}"
        );
    }
    let mut rec = created.clone();
    rec.revision = u64::MAX;
    let err = r.save_migration(&rec).await.expect_err("stale revision");
    assert!(
        matches!(err, Error::Conflict { .. }),
        "save_migration with revision u64::MAX must be a revision Conflict, got {err:?}"
    );
    assert_eq!(r.migration(created.id).await.expect("read"), Some(created));
    let a = r.assign(&TenantSpec::new(tid("a")), StampId(1)).await.expect("assign");
    let err = r
        .compare_and_set(a.tenant(), Epoch(u64::MAX), AssignmentChange::move_to(StampId(2)))
        .await
        .expect_err("epoch u64::MAX");
    assert!(
        matches!(err, Error::Conflict { .. }),
        "compare_and_set with epoch u64::MAX must be an epoch Conflict, got {err:?}"
    );
    let err = r
        .unassign(a.tenant(), Epoch(u64::MAX))
        .await
        .expect_err("epoch u64::MAX");
    assert!(
        matches!(err, Error::Conflict { .. }),
        "unassign with epoch u64::MAX must be an epoch Conflict, got {err:?}"
    );
    assert_eq!(
        r.assignment(a.tenant()).await.expect("read").map(|x| x.epoch),
        Some(a.epoch)
    );
}
