//! The in-memory registry's ordered map of assignments: a `BTreeMap`, and a sorted run of the
//! keys that were above every other key when inserted.
//!
//! Tenant ids are often issued in order (sequence numbers, ULIDs, KSUIDs, an export sorted by
//! id). A `BTreeMap` insert of a key above every other walks the tree's right edge comparing
//! with each key of every node on it (about 60 comparisons at a million keys: a quarter of an
//! import's instructions) and leaves the nodes half full. Such a key is pushed on the run
//! instead: one comparison, and 32 bytes a tenant where the tree's half-full nodes take about
//! 60. Any other key goes into the tree, even one that falls between keys of the run; a key is
//! in one of the two, never both.
//!
//! Nothing is ever moved from the run to the tree, so a write costs at most a tree's insert
//! or removal plus a binary search of the run. A removal from the run leaves a tombstone (a
//! later insert of the key revives it); the run drops its tombstones in one linear pass once
//! they are more than a quarter of it and more than [`COMPACT_AT`], a pass paid for by the
//! removals that made them. Reads merge the two in key order, stepping over tombstones: a read
//! starting before a stretch of removed keys of the run steps over at most a quarter of the
//! run (or [`COMPACT_AT`]).

use std::collections::btree_map;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

/// Tombstones in the run below which it is never compacted (few in tests, so the property
/// test compacts).
const COMPACT_AT: usize = if cfg!(test) { 8 } else { 1024 };

pub(super) struct Ordered<K, V> {
    tree: BTreeMap<K, V>,
    /// Strictly ascending; `None` for a removed key. No key is also in `tree`.
    run: Vec<(K, Option<V>)>,
    /// The `None`s in `run`.
    dead: usize,
}

impl<K, V> Default for Ordered<K, V> {
    fn default() -> Self {
        Ordered {
            tree: BTreeMap::new(),
            run: Vec::new(),
            dead: 0,
        }
    }
}

impl<K: Ord, V> Ordered<K, V> {
    pub(super) fn len(&self) -> usize {
        self.tree.len() + self.run.len() - self.dead
    }

    /// Where `k` is in the run, live or removed.
    fn in_run(&self, k: &K) -> Option<usize> {
        match (self.run.first(), self.run.last()) {
            (Some((first, _)), Some((last, _))) if k >= first && k <= last => {
                self.run.binary_search_by(|(t, _)| t.cmp(k)).ok()
            }
            _ => None,
        }
    }

    pub(super) fn get(&self, k: &K) -> Option<&V> {
        match self.in_run(k) {
            Some(i) => self.run.get(i).and_then(|(_, v)| v.as_ref()),
            None => self.tree.get(k),
        }
    }

    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        match self.in_run(k) {
            Some(i) => self.run.get_mut(i).and_then(|(_, v)| v.as_mut()),
            None => self.tree.get_mut(k),
        }
    }

    /// Inserts `v` at `k`, returning the value it replaces.
    pub(super) fn insert(&mut self, k: K, v: V) -> Option<V> {
        let above_run = self.run.last().is_none_or(|(last, _)| k > *last);
        if above_run && self.tree.last_key_value().is_none_or(|(last, _)| k > *last) {
            self.run.push((k, Some(v)));
            return None;
        }
        match self.in_run(&k) {
            Some(i) => {
                let old = self.run.get_mut(i).and_then(|(_, slot)| slot.replace(v));
                if old.is_none() {
                    self.dead -= 1;
                }
                old
            }
            None => self.tree.insert(k, v),
        }
    }

    /// Removes `k`, returning its value.
    pub(super) fn remove(&mut self, k: &K) -> Option<V> {
        let Some(i) = self.in_run(k) else {
            return self.tree.remove(k);
        };
        let old = self.run.get_mut(i).and_then(|(_, slot)| slot.take());
        if old.is_some() {
            self.dead += 1;
            if self.dead > COMPACT_AT && self.dead * 4 > self.run.len() {
                self.run.retain(|(_, v)| v.is_some());
                self.dead = 0;
            }
        }
        old
    }

    /// Every value, in key order.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.after(None).map(|(_, v)| v)
    }

    /// The entries after `after` (all of them for `None`), in key order.
    pub(super) fn after<'a>(&'a self, after: Option<&'a K>) -> Merged<'a, K, V> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let from = after.map_or(0, |k| self.run.partition_point(|(t, _)| t <= k));
        Merged {
            tree: self.tree.range((lower, Bound::Unbounded)).peekable(),
            run: self.run.get(from..).unwrap_or_default(),
        }
    }
}

/// The tree's entries and the run's live ones, merged in key order.
pub(super) struct Merged<'a, K, V> {
    tree: Peekable<btree_map::Range<'a, K, V>>,
    /// The run from its next entry on, tombstones included.
    run: &'a [(K, Option<V>)],
}

impl<'a, K: Ord, V> Iterator for Merged<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        // The run's next live entry, stepping over tombstones.
        let run = loop {
            match self.run.split_first() {
                Some(((_, None), rest)) => self.run = rest,
                Some(((k, Some(v)), rest)) => break Some((k, v, rest)),
                None => break None,
            }
        };
        match (self.tree.peek(), run) {
            (Some((a, _)), Some((b, _, _))) if *a < b => self.tree.next(),
            (_, Some((k, v, rest))) => {
                self.run = rest;
                Some((k, v))
            }
            (_, None) => self.tree.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        Get(u16),
        Mutate(u16),
        After(Option<u16>),
    }

    /// Runs of ascending keys (what the run is for) and runs of removals, mixed with any key.
    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0u16..2000).prop_map(Op::Insert),
            2 => (0u16..2000).prop_map(Op::Remove),
            1 => (0u16..2000).prop_map(Op::Get),
            1 => (0u16..2000).prop_map(Op::Mutate),
            1 => prop::option::of(0u16..2000).prop_map(Op::After),
        ];
        let run = (0u16..1500, 1u16..300, 1u16..4)
            .prop_map(|(from, n, step)| (0..n).map(|i| Op::Insert(from + i * step)).collect::<Vec<_>>());
        let unrun = (0u16..1500, 1u16..300, 1u16..4)
            .prop_map(|(from, n, step)| (0..n).map(|i| Op::Remove(from + i * step)).collect::<Vec<_>>());
        prop::collection::vec(prop_oneof![3 => op.prop_map(|o| vec![o]), 2 => run, 1 => unrun], 0..60)
            .prop_map(|chunks| chunks.into_iter().flatten().collect())
    }

    proptest! {
        /// Every operation answers as a `BTreeMap` does, whatever the split between tree and run.
        #[test]
        fn answers_as_a_btree_map(ops in ops()) {
            let (mut ours, mut model) = (Ordered::<u16, u32>::default(), BTreeMap::<u16, u32>::new());
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u32;
                match op {
                    Op::Insert(k) => prop_assert_eq!(ours.insert(k, n), model.insert(k, n)),
                    Op::Remove(k) => prop_assert_eq!(ours.remove(&k), model.remove(&k)),
                    Op::Get(k) => prop_assert_eq!(ours.get(&k), model.get(&k)),
                    Op::Mutate(k) => {
                        if let Some(v) = ours.get_mut(&k) {
                            *v += 1;
                        }
                        if let Some(v) = model.get_mut(&k) {
                            *v += 1;
                        }
                    }
                    Op::After(k) => {
                        let lower = k.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
                        let want: Vec<_> = model.range((lower, Bound::Unbounded)).collect();
                        prop_assert_eq!(ours.after(k.as_ref()).collect::<Vec<_>>(), want);
                    }
                }
                prop_assert_eq!(ours.len(), model.len());
                prop_assert!(ours.run.windows(2).all(|w| w[0].0 < w[1].0), "run out of order");
                prop_assert!(ours.run.iter().all(|(k, _)| !ours.tree.contains_key(k)), "a key in both");
                prop_assert_eq!(ours.dead, ours.run.iter().filter(|(_, v)| v.is_none()).count());
            }
            prop_assert!(ours.values().eq(model.values()));
        }
    }

    /// Keys in order go to the run, any other key to the tree, and nothing moves between them.
    #[test]
    fn keys_above_all_go_to_the_run_and_stay_there() {
        let mut map = Ordered::<u32, u32>::default();
        for k in 0..1000 {
            map.insert(k * 2, k);
        }
        assert_eq!((map.tree.len(), map.run.len()), (0, 1000));
        // Between keys of the run: into the tree; the run is untouched.
        map.insert(1, 0);
        assert_eq!((map.tree.len(), map.run.len()), (1, 1000));
        // A key of the run is replaced in place; removed, it leaves a tombstone a later
        // insert revives.
        assert_eq!(map.insert(4, 9), Some(2));
        assert_eq!(map.remove(&6), Some(3));
        assert_eq!((map.get(&6), map.len(), map.dead), (None, 1000, 1));
        assert_eq!(map.insert(6, 7), None);
        assert_eq!((map.get(&6), map.len(), map.dead), (Some(&7), 1001, 0));
        // Above everything: to the run.
        map.insert(5000, 0);
        assert_eq!((map.tree.len(), map.run.len()), (1, 1001));
        let keys: Vec<u32> = map.after(Some(&2)).map(|(k, _)| *k).take(3).collect();
        assert_eq!(keys, [4, 6, 8]);
    }

    /// Tombstones are dropped once they are over a quarter of the run; a key whose tombstone
    /// was dropped is inserted again (into the tree, being below the run's last key).
    #[test]
    fn a_run_a_quarter_removed_is_compacted() {
        let mut map = Ordered::<u32, u32>::default();
        for k in 0..4000 {
            map.insert(k, k);
        }
        for k in 0..1000 {
            assert_eq!(map.remove(&k), Some(k));
        }
        assert_eq!((map.run.len(), map.dead), (4000, 1000));
        assert_eq!(map.remove(&1000), Some(1000));
        assert_eq!((map.run.len(), map.dead, map.len()), (2999, 0, 2999));
        assert!(map.after(None).map(|(k, _)| *k).eq(1001..4000));
        assert_eq!(map.insert(5, 50), None);
        assert_eq!((map.tree.len(), map.get(&5)), (1, Some(&50)));
        assert!(map
            .after(None)
            .map(|(k, _)| *k)
            .eq(std::iter::once(5).chain(1001..4000)));
    }
}
