//! Helpers the group-commit tests share (`tests/pg_group_commit*.rs`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pg::{blocked_backend, fresh_registry, raw_client, SchemaGuard};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

pub async fn fresh(hint: &str, group_commit: bool) -> (PgRegistry, SchemaGuard) {
    fresh_with(hint, |c| c.group_commit(group_commit)).await
}

pub async fn fresh_with(hint: &str, cfg: impl FnOnce(PgConfig) -> PgConfig) -> (PgRegistry, SchemaGuard) {
    fresh_registry(hint, |c| cfg(c.pool_size(8))).await
}

/// The outcomes of spawned calls, in spawn order.
pub async fn outcomes<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

pub fn stamp(id: u32, tenants: f64) -> StampSpec {
    StampSpec::new(
        StampId(id),
        format!("s{id}"),
        Region::new("eu-west").unwrap(),
        Capacity::new([(Resource::Tenants, tenants)], 0.0).unwrap(),
    )
    .unwrap()
}

pub fn tenant(name: &str) -> TenantSpec {
    TenantSpec::new(TenantId::new(name).unwrap())
}

/// A spawned call of `name`, given up after `limit`.
pub type Spawned = tokio::task::JoinHandle<std::result::Result<Result<Assignment>, tokio::time::error::Elapsed>>;

/// Runs calls `lead`, `a`, `dropped` and `c` (made by `call`) so that `a`, `dropped` and `c`
/// form one group waiting for the feed counter, and `dropped` gives up while it waits. Checks
/// that the others land and that the feed has exactly three new versions (the lead's, `a`'s
/// and `c`'s): no gap, nothing of the dropped call.
pub async fn drop_inside_a_group(r: &PgRegistry, app: &str, call: impl Fn(&'static str, Duration) -> Spawned) {
    let head = r.changes_since(Version::ZERO, 1).await.unwrap().head;
    let feed_lock = format!("SELECT head FROM \"{}\".feed FOR UPDATE", r.schema());
    let admin = raw_client().await;
    // A first caller leads alone and waits for the counter, held by `first`.
    let mut first = raw_client().await;
    let first_tx = first.transaction().await.unwrap();
    first_tx.batch_execute(&feed_lock).await.unwrap();
    let lead = call("lead", Duration::from_secs(60));
    blocked_backend(&admin, app).await;
    // Three more callers queue behind it.
    let a = call("a", Duration::from_secs(60));
    let dropped = call("dropped", Duration::from_secs(3));
    let c = call("c", Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // `second` queues for the counter behind the leader, so the next group waits for it.
    let second = {
        let feed_lock = feed_lock.clone();
        tokio::spawn(async move {
            let mut client = raw_client().await;
            let tx = client.transaction().await.unwrap();
            tx.batch_execute(&feed_lock).await.unwrap();
            tokio::time::sleep(Duration::from_secs(4)).await;
            tx.rollback().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    first_tx.rollback().await.unwrap();
    lead.await.unwrap().unwrap().unwrap();
    // The group of a, dropped and c now waits for `second`; `dropped` gives up meanwhile.
    blocked_backend(&admin, app).await;
    assert!(dropped.await.unwrap().is_err(), "the dropped caller timed out");
    second.await.unwrap();
    a.await.unwrap().unwrap().unwrap();
    c.await.unwrap().unwrap().unwrap();
    let changes = r.changes_since(head, 100).await.unwrap();
    let versions: Vec<u64> = changes.changes.iter().map(|c| c.version.0).collect();
    assert_eq!(
        versions,
        (head.0 + 1..=head.0 + 3).collect::<Vec<_>>(),
        "no gap, no dropped call"
    );
}

pub fn tid(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

/// Imports `tenants` (name, spec) onto their stamps and returns their epochs by name.
pub async fn import(r: &PgRegistry, rows: Vec<(TenantSpec, StampId)>) -> BTreeMap<String, Epoch> {
    let rows: Vec<ImportRow> = rows.into_iter().map(|(t, s)| ImportRow::new(t, s)).collect();
    let report = r.assign_many(&rows).await.unwrap();
    assert_eq!(report.assigned(), rows.len());
    let mut epochs = BTreeMap::new();
    for row in &rows {
        let a = r.assignment(&row.tenant.id).await.unwrap().unwrap();
        epochs.insert(row.tenant.id.to_string(), a.epoch);
    }
    epochs
}
