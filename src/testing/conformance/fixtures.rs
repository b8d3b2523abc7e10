//! Fixtures the cases share: valid ids, regions, stamp and tenant specs, and readers of the
//! fleet and the whole change feed.

use super::check::MAX_PAGES;
use crate::model::*;
use crate::registry::{DynRegistry, RegistryExt};

pub(super) fn tid(s: &str) -> TenantId {
    TenantId::new(s).expect("valid test tenant id")
}

pub(super) fn region(s: &str) -> Region {
    Region::new(s).expect("valid test region")
}

pub(super) fn spec(id: u32, limits: &[(Resource, f64)]) -> StampSpec {
    StampSpec::new(
        StampId(id),
        format!("stamp-{id}"),
        region("us-east"),
        Capacity::new(limits.iter().cloned(), 0.25).expect("valid test capacity"),
    )
    .expect("valid test stamp")
}

pub(super) fn tenant(name: &str, connections: f64) -> TenantSpec {
    TenantSpec::new(tid(name)).demand(Demand::of([(Resource::Connections, connections)]).expect("valid demand"))
}

pub(super) async fn active(r: &DynRegistry, id: u32, limits: &[(Resource, f64)]) -> Stamp {
    r.put_active_stamp(spec(id, limits)).await.expect("put active stamp")
}

pub(super) fn usage(fleet: &Fleet, id: u32, res: Resource) -> f64 {
    fleet.get(StampId(id)).expect("stamp in fleet").usage.get(&res).as_f64()
}

/// The whole change feed, read in pages of 1,000; `Err` names what broke the paging contract
/// (a page not after its cursor, or more than [`MAX_PAGES`] pages).
pub(super) async fn all_changes(r: &DynRegistry) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    let mut cursor = Version::ZERO;
    for _ in 0..MAX_PAGES {
        let batch = r.changes_since(cursor, 1000).await.expect("changes_since");
        if let Some(c) = batch.changes.iter().find(|c| c.version <= cursor) {
            return Err(format!(
                "changes_since({cursor}, 1000) returned version {}, not after the cursor",
                c.version
            ));
        }
        let n = batch.changes.len();
        cursor = batch.next_cursor(cursor);
        let more = batch.has_more(cursor);
        out.extend(batch.changes);
        if n == 0 || !more {
            return Ok(out);
        }
    }
    Err(format!(
        "read {MAX_PAGES} pages of the change feed without reaching its end (cursor {cursor})"
    ))
}
