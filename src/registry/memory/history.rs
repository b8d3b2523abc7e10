//! The in-memory registry's assignment history: one log of every entry in write order, each
//! linked to the previous entry of its tenant, and an index from each tenant to its latest.
//!
//! Most tenants have one or two entries: a vector per tenant would be one allocation (and a
//! mostly empty reservation) per tenant, which is what a bulk import of a million tenants paid
//! for most. The log is kept in fixed-size chunks (growing never copies what is written) and
//! a tenant's history is read by following its links back. The log keeps each entry compact:
//! what every write has inline, the actor, override and reason (which most writes lack) boxed.

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::model::{AssignmentMode, Epoch, HistoryAction, HistoryEntry, Override, StampId, TenantId, Version};
use crate::time::Timestamp;

/// No earlier entry (the link of a tenant's first entry).
const NONE: usize = usize::MAX;

/// Entries per chunk of the log (about 100 bytes each).
const CHUNK: usize = 8192;

/// A [`HistoryEntry`] as the log keeps it, with the index of its tenant's previous entry.
struct Kept {
    version: Version,
    at: Timestamp,
    tenant: TenantId,
    epoch: Epoch,
    mode: AssignmentMode,
    from: Option<StampId>,
    to: Option<StampId>,
    action: HistoryAction,
    /// The fields most entries lack.
    rare: Option<Box<Rare>>,
    /// The tenant's previous entry, or [`NONE`].
    prev: usize,
}

struct Rare {
    actor: Option<String>,
    overrode: Option<Override>,
    reason: Option<String>,
}

impl Kept {
    fn new(entry: HistoryEntry, prev: usize) -> Kept {
        let rare = match (entry.actor, entry.overrode, entry.reason) {
            (None, None, None) => None,
            (actor, overrode, reason) => Some(Box::new(Rare {
                actor,
                overrode,
                reason,
            })),
        };
        let (version, at, tenant, epoch, mode) = (entry.version, entry.at, entry.tenant, entry.epoch, entry.mode);
        let (from, to, action) = (entry.from, entry.to, entry.action);
        Kept {
            version,
            at,
            tenant,
            epoch,
            mode,
            from,
            to,
            action,
            rare,
            prev,
        }
    }

    fn entry(&self) -> HistoryEntry {
        let rare = self.rare.as_deref();
        HistoryEntry::new(
            self.version,
            self.at,
            self.tenant.clone(),
            self.action,
            self.from,
            self.to,
            self.epoch,
            self.mode,
            rare.and_then(|r| r.actor.clone()),
        )
        .overriding(rare.and_then(|r| r.overrode.clone()))
        .because(rare.and_then(|r| r.reason.clone()))
    }
}

/// An index slot: a tenant's latest entry in the log and the tenant's hash. The key itself is
/// the entry's tenant, read from the log when a hash matches; keeping the hash means growing
/// the index never reads the log.
#[derive(Clone, Copy)]
struct Latest {
    hash: u64,
    at: usize,
}

/// `S` hashes ids (tests put every id on one hash to check that a slot is matched by its id).
#[derive(Default)]
pub(super) struct HistoryLog<S = foldhash::fast::RandomState> {
    /// Every entry, oldest first, in chunks of [`CHUNK`]: entry `i` is
    /// `chunks[i / CHUNK][i % CHUNK]`.
    chunks: Vec<Vec<Kept>>,
    /// Entries in the log.
    len: usize,
    /// Each tenant's latest entry (an index into the log), hashed as the router's table
    /// hashes ids (foldhash, seeded per log). A slot is 16 bytes, half of a map from the id's
    /// 24 bytes and a position: about 36 bytes a tenant at a million, with the table's slack.
    latest: HashTable<Latest>,
    hasher: S,
}

/// Whether index slot `l` is `tenant`'s (`hash` is `tenant`'s).
fn is(chunks: &[Vec<Kept>], l: &Latest, hash: u64, tenant: &TenantId) -> bool {
    l.hash == hash && entry_at(chunks, l.at).is_some_and(|k| k.tenant == *tenant)
}

/// The entry at `at` in the log.
fn entry_at(chunks: &[Vec<Kept>], at: usize) -> Option<&Kept> {
    chunks.get(at / CHUNK)?.get(at % CHUNK)
}

impl<S: BuildHasher> HistoryLog<S> {
    /// Makes room in the index for `n` more tenants.
    pub(super) fn reserve(&mut self, n: usize) {
        self.latest.reserve(n, |l| l.hash);
    }

    /// The index slot of `tenant`, if it has any entry.
    fn latest(&self, tenant: &TenantId) -> Option<&Latest> {
        let hash = self.hasher.hash_one(tenant);
        self.latest.find(hash, |l| is(&self.chunks, l, hash, tenant))
    }

    /// Appends `entry` to its tenant's history.
    pub(super) fn push(&mut self, entry: HistoryEntry) {
        let at = self.len;
        let hash = self.hasher.hash_one(&entry.tenant);
        let (chunks, tenant) = (&self.chunks, &entry.tenant);
        let prev = match self.latest.entry(hash, |l| is(chunks, l, hash, tenant), |l| l.hash) {
            Entry::Occupied(mut latest) => std::mem::replace(&mut latest.get_mut().at, at),
            Entry::Vacant(v) => {
                v.insert(Latest { hash, at });
                NONE
            }
        };
        let kept = Kept::new(entry, prev);
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(kept),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(kept);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// Whether `tenant` has any entry. Every assignment write records one, so a tenant
    /// without is certainly unassigned: a cheaper answer than the ordered map's.
    pub(super) fn knows(&self, tenant: &TenantId) -> bool {
        self.latest(tenant).is_some()
    }

    /// `tenant`'s entries, oldest first (empty for a tenant never written).
    pub(super) fn of(&self, tenant: &TenantId) -> Vec<HistoryEntry> {
        let mut out = Vec::new();
        let mut at = self.latest(tenant).map_or(NONE, |l| l.at);
        while let Some(kept) = entry_at(&self.chunks, at) {
            out.push(kept.entry());
            at = kept.prev;
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    use proptest::prelude::*;

    use super::*;
    use crate::model::ConstraintKind;

    /// A hasher that gives every input the same hash.
    #[derive(Default)]
    struct OneHash;

    impl Hasher for OneHash {
        fn finish(&self) -> u64 {
            7
        }

        fn write(&mut self, _: &[u8]) {}
    }

    fn tenant(i: u8) -> TenantId {
        TenantId::new(&format!("tenant-{i}")).expect("tenant id")
    }

    /// An entry; some carry an actor, an override or a reason (the fields kept boxed).
    fn entry(v: u64, t: u8) -> HistoryEntry {
        let (to, mode) = (Some(StampId(v as u32)), AssignmentMode::Serving);
        let at = Timestamp::from_millis(v);
        let actor = v.is_multiple_of(3).then(|| format!("actor-{v}"));
        let overrode = v
            .is_multiple_of(7)
            .then(|| Override::new(ConstraintKind::Residency, format!("why-{v}")));
        let reason = v.is_multiple_of(5).then(|| format!("reason-{v}"));
        let action = if v.is_multiple_of(2) {
            HistoryAction::Assigned
        } else {
            HistoryAction::Moved
        };
        HistoryEntry::new(Version(v), at, tenant(t), action, None, to, Epoch(v), mode, actor)
            .overriding(overrode)
            .because(reason)
    }

    proptest! {
        // Cases long enough to span chunks.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The log reads back what one vector per tenant (the layout it replaced) would hold.
        #[test]
        fn reads_back_each_tenants_entries_in_write_order(writes in prop::collection::vec(0u8..12, 0..(2 * CHUNK + 100))) {
            let (mut log, mut model) = (HistoryLog::<foldhash::fast::RandomState>::default(), HashMap::<u8, Vec<HistoryEntry>>::new());
            for (v, t) in writes.iter().enumerate() {
                log.push(entry(v as u64, *t));
                model.entry(*t).or_default().push(entry(v as u64, *t));
            }
            for t in 0..14u8 {
                prop_assert_eq!(log.of(&tenant(t)), model.remove(&t).unwrap_or_default(), "tenant {}", t);
            }
        }

        /// With every id on one hash, each tenant still reads back its own entries: a slot is
        /// matched by the id in the log, not by the hash alone.
        #[test]
        fn ids_that_share_a_hash_keep_their_own_entries(writes in prop::collection::vec(0u8..12, 0..300)) {
            let mut log = HistoryLog::<BuildHasherDefault<OneHash>>::default();
            let mut model = HashMap::<u8, Vec<HistoryEntry>>::new();
            for (v, t) in writes.iter().enumerate() {
                log.push(entry(v as u64, *t));
                model.entry(*t).or_default().push(entry(v as u64, *t));
            }
            for t in 0..14u8 {
                prop_assert_eq!(log.knows(&tenant(t)), model.contains_key(&t));
                prop_assert_eq!(log.of(&tenant(t)), model.remove(&t).unwrap_or_default(), "tenant {}", t);
            }
        }
    }
}
