//! The in-memory registry's assignment history: one log of every entry in write order, each
//! linked to the previous entry of its tenant, and an index from each tenant to its latest.
//!
//! Most tenants have one or two entries: a vector per tenant would be one allocation (and a
//! mostly empty reservation) per tenant, which is what a bulk import of a million tenants paid
//! for most. The log grows by doubling in one allocation and a tenant's history is read by
//! following its links back.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::model::{HistoryEntry, TenantId};

/// No earlier entry (the link of a tenant's first entry).
const NONE: usize = usize::MAX;

#[derive(Default)]
pub(super) struct HistoryLog {
    /// Every entry, oldest first, with the index of its tenant's previous entry (or [`NONE`]).
    log: Vec<(HistoryEntry, usize)>,
    /// Each tenant's latest entry (an index into `log`).
    latest: HashMap<TenantId, usize>,
}

impl HistoryLog {
    /// Makes room for `n` more entries of as many new tenants.
    pub(super) fn reserve(&mut self, n: usize) {
        self.log.reserve(n);
        self.latest.reserve(n);
    }

    /// Appends `entry` to its tenant's history.
    pub(super) fn push(&mut self, entry: HistoryEntry) {
        let at = self.log.len();
        let prev = match self.latest.entry(entry.tenant.clone()) {
            Entry::Occupied(mut latest) => std::mem::replace(latest.get_mut(), at),
            Entry::Vacant(v) => {
                v.insert(at);
                NONE
            }
        };
        self.log.push((entry, prev));
    }

    /// Whether `tenant` has any entry. Every assignment write records one, so a tenant
    /// without is certainly unassigned: a cheaper answer than the ordered map's.
    pub(super) fn knows(&self, tenant: &TenantId) -> bool {
        self.latest.contains_key(tenant)
    }

    /// `tenant`'s entries, oldest first (empty for a tenant never written).
    pub(super) fn of(&self, tenant: &TenantId) -> Vec<HistoryEntry> {
        let mut out = Vec::new();
        let mut at = self.latest.get(tenant).copied().unwrap_or(NONE);
        while let Some((entry, prev)) = self.log.get(at) {
            out.push(entry.clone());
            at = *prev;
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{AssignmentMode, Epoch, HistoryAction, StampId, Version};
    use crate::time::Timestamp;

    fn tenant(i: u8) -> TenantId {
        TenantId::new(&format!("tenant-{i}")).expect("tenant id")
    }

    fn entry(v: u64, t: u8) -> HistoryEntry {
        let (to, mode) = (Some(StampId(v as u32)), AssignmentMode::Serving);
        let at = Timestamp::from_millis(v);
        HistoryEntry::new(
            Version(v),
            at,
            tenant(t),
            HistoryAction::Assigned,
            None,
            to,
            Epoch(v),
            mode,
            None,
        )
    }

    proptest! {
        /// The log reads back what one vector per tenant (the layout it replaced) would hold.
        #[test]
        fn reads_back_each_tenants_entries_in_write_order(writes in prop::collection::vec(0u8..12, 0..200)) {
            let (mut log, mut model) = (HistoryLog::default(), HashMap::<u8, Vec<HistoryEntry>>::new());
            for (v, t) in writes.iter().enumerate() {
                if v % 50 == 0 {
                    log.reserve(10);
                }
                log.push(entry(v as u64, *t));
                model.entry(*t).or_default().push(entry(v as u64, *t));
            }
            for t in 0..14u8 {
                prop_assert_eq!(log.of(&tenant(t)), model.remove(&t).unwrap_or_default(), "tenant {}", t);
            }
        }
    }
}
