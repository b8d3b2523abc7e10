//! The in-memory registry's assignment history: one log of every entry in write order, each
//! linked to the previous entry of its tenant, and an index from each tenant to its latest.
//!
//! Most tenants have one or two entries: a vector per tenant would be one allocation (and a
//! mostly empty reservation) per tenant, which is what a bulk import of a million tenants paid
//! for most. The log is kept in fixed-size chunks (growing never copies what is written) and
//! a tenant's history is read by following its links back.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::model::{HistoryEntry, TenantId};

/// No earlier entry (the link of a tenant's first entry).
const NONE: usize = usize::MAX;

/// Entries per chunk of the log (about 200 bytes each).
const CHUNK: usize = 4096;

#[derive(Default)]
pub(super) struct HistoryLog {
    /// Every entry, oldest first, with the index of its tenant's previous entry (or [`NONE`]),
    /// in chunks of [`CHUNK`]: entry `i` is `chunks[i / CHUNK][i % CHUNK]`.
    chunks: Vec<Vec<(HistoryEntry, usize)>>,
    /// Entries in the log.
    len: usize,
    /// Each tenant's latest entry (an index into the log).
    latest: HashMap<TenantId, usize>,
}

impl HistoryLog {
    /// Makes room in the index for `n` more tenants.
    pub(super) fn reserve(&mut self, n: usize) {
        self.latest.reserve(n);
    }

    /// Appends `entry` to its tenant's history.
    pub(super) fn push(&mut self, entry: HistoryEntry) {
        let at = self.len;
        let prev = match self.latest.entry(entry.tenant.clone()) {
            Entry::Occupied(mut latest) => std::mem::replace(latest.get_mut(), at),
            Entry::Vacant(v) => {
                v.insert(at);
                NONE
            }
        };
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push((entry, prev)),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push((entry, prev));
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// The entry at `at` in the log, with its link.
    fn get(&self, at: usize) -> Option<&(HistoryEntry, usize)> {
        self.chunks.get(at / CHUNK)?.get(at % CHUNK)
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
        while let Some((entry, prev)) = self.get(at) {
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
        // Cases long enough to span chunks.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The log reads back what one vector per tenant (the layout it replaced) would hold.
        #[test]
        fn reads_back_each_tenants_entries_in_write_order(writes in prop::collection::vec(0u8..12, 0..(2 * CHUNK + 100))) {
            let (mut log, mut model) = (HistoryLog::default(), HashMap::<u8, Vec<HistoryEntry>>::new());
            for (v, t) in writes.iter().enumerate() {
                log.push(entry(v as u64, *t));
                model.entry(*t).or_default().push(entry(v as u64, *t));
            }
            for t in 0..14u8 {
                prop_assert_eq!(log.of(&tenant(t)), model.remove(&t).unwrap_or_default(), "tenant {}", t);
            }
        }
    }
}
