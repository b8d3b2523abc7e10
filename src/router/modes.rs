//! Modes of fast-table tenants that are not simply serving (dual-write, frozen): a map
//! sharded by tenant id, copied one shard per change.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::shared::Shared;
use crate::model::AssignmentMode;

/// Modes of tenants whose slot has the `HAS_MODE` flag, with the epoch they belong to (a
/// reader uses the mode only if its epoch is the slot's, so it never pairs one write's
/// epoch with another write's mode).
type ModeMap = HashMap<Box<str>, (u64, AssignmentMode), foldhash::fast::RandomState>;

/// Shards of the mode map: a change copies one shard, so moving many tenants at once (a bulk
/// migration puts each in dual-write, then frozen, then back to serving) costs a 64th of a
/// copy of the map per change instead of a whole one.
const MODE_SHARDS: usize = 64;

/// The mode map, sharded by tenant id.
pub(super) struct Modes {
    shards: Box<[ArcSwap<ModeMap>]>,
    hasher: foldhash::fast::FixedState,
}

impl Modes {
    pub(super) fn new() -> Modes {
        Modes {
            shards: (0..MODE_SHARDS)
                .map(|_| ArcSwap::from_pointee(ModeMap::default()))
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x6d6f_6465),
        }
    }

    fn shard(&self, tenant: &str) -> Option<&ArcSwap<ModeMap>> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(tenant);
        self.shards.get((h % MODE_SHARDS as u64) as usize)
    }

    /// The mode recorded for `tenant`, with the epoch it belongs to.
    pub(super) fn get(&self, tenant: &str) -> Option<(u64, AssignmentMode)> {
        self.shard(tenant)?.load().get(tenant).copied()
    }

    /// Records or clears `tenant`'s mode (writer lock held).
    pub(super) fn set(&self, tenant: &str, mode: Option<(u64, AssignmentMode)>) {
        let Some(shard) = self.shard(tenant) else { return };
        let current = shard.load();
        if current.get(tenant).copied() == mode {
            return;
        }
        let mut next = ModeMap::clone(&current);
        match mode {
            Some(m) => {
                next.insert(Box::from(tenant), m);
            }
            None => {
                next.remove(tenant);
            }
        }
        shard.store(Arc::new(next));
    }

    /// Forgets every mode (writer lock held).
    pub(super) fn clear(&self) {
        for shard in self.shards.iter() {
            if !shard.load().is_empty() {
                shard.store(Arc::new(ModeMap::default()));
            }
        }
    }
}

impl fmt::Debug for Modes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n: usize = self.shards.iter().map(|s| s.load().len()).sum();
        f.debug_struct("Modes").field("tenants", &n).finish()
    }
}

impl Shared {
    /// Records (or clears) a fast-table tenant's mode (writer lock held).
    pub(super) fn set_mode(&self, tenant: &str, mode: Option<(u64, AssignmentMode)>) {
        self.modes.set(tenant, mode);
    }
}
