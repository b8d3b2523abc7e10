//! The in-memory registry's ordered map of assignments: a `BTreeMap`, and a sorted vector of
//! the keys above all of the tree's.
//!
//! Tenant ids are often issued in order (sequence numbers, ULIDs, KSUIDs, an export sorted by
//! id). A `BTreeMap` insert of a key above every other walks the tree's right edge comparing
//! with each key of every node on it (about 60 comparisons at a million keys: a quarter of an
//! import's instructions) and leaves the nodes half full. Such a key is pushed on the tail
//! instead: one comparison, and 32 bytes a tenant where the tree's half-full nodes take about
//! 60. Any other key goes into the tree.
//!
//! An insert or removal far inside the tail (more than [`SHIFT`] keys from its end) first moves
//! the tail into the tree: rebuilt at once (linear, `BTreeMap::append`) when the tail is at least
//! an eighth of the tree, else key by key. So no sequence of writes costs more than the tree
//! alone would, beyond a constant factor: a rebuild is paid for by the pushes that filled the
//! tail, and a small tail is inserted as the tree would have been.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Keys after a tail position that an insert or removal there shifts, rather than moving the
/// tail into the tree first.
const SHIFT: usize = 64;

pub(super) struct Ordered<K, V> {
    tree: BTreeMap<K, V>,
    /// Sorted, every key above every key of `tree`.
    tail: Vec<(K, V)>,
}

impl<K, V> Default for Ordered<K, V> {
    fn default() -> Self {
        Ordered {
            tree: BTreeMap::new(),
            tail: Vec::new(),
        }
    }
}

impl<K: Ord, V> Ordered<K, V> {
    pub(super) fn len(&self) -> usize {
        self.tree.len() + self.tail.len()
    }

    /// Where `k` is in the tail (`Ok`) or would go (`Err`); `None` when `k` is the tree's (the
    /// tail is empty or starts above `k`).
    fn in_tail(&self, k: &K) -> Option<Result<usize, usize>> {
        match self.tail.first() {
            Some((first, _)) if k >= first => Some(self.tail.binary_search_by(|(t, _)| t.cmp(k))),
            _ => None,
        }
    }

    pub(super) fn get(&self, k: &K) -> Option<&V> {
        match self.in_tail(k) {
            Some(Ok(i)) => self.tail.get(i).map(|(_, v)| v),
            Some(Err(_)) => None,
            None => self.tree.get(k),
        }
    }

    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        match self.in_tail(k) {
            Some(Ok(i)) => self.tail.get_mut(i).map(|(_, v)| v),
            Some(Err(_)) => None,
            None => self.tree.get_mut(k),
        }
    }

    /// Inserts `v` at `k`, returning the value it replaces.
    pub(super) fn insert(&mut self, k: K, v: V) -> Option<V> {
        let above = match self.tail.last() {
            Some((last, _)) => k > *last,
            None => self.tree.last_key_value().is_none_or(|(last, _)| k > *last),
        };
        if above {
            self.tail.push((k, v));
            return None;
        }
        match self.in_tail(&k) {
            Some(Ok(i)) => self.tail.get_mut(i).map(|(_, old)| std::mem::replace(old, v)),
            Some(Err(i)) if self.tail.len() - i <= SHIFT => {
                self.tail.insert(i, (k, v));
                None
            }
            Some(Err(_)) => {
                self.settle();
                self.tree.insert(k, v)
            }
            None => self.tree.insert(k, v),
        }
    }

    /// Removes `k`, returning its value.
    pub(super) fn remove(&mut self, k: &K) -> Option<V> {
        match self.in_tail(k) {
            Some(Ok(i)) if self.tail.len() - i <= SHIFT => Some(self.tail.remove(i).1),
            Some(Ok(_)) => {
                self.settle();
                self.tree.remove(k)
            }
            Some(Err(_)) => None,
            None => self.tree.remove(k),
        }
    }

    /// Moves the tail into the tree.
    fn settle(&mut self) {
        let tail = std::mem::take(&mut self.tail);
        if tail.len() >= self.tree.len() / 8 {
            // Sorted and above the tree: both builds are linear.
            let mut more: BTreeMap<K, V> = tail.into_iter().collect();
            self.tree.append(&mut more);
        } else {
            self.tree.extend(tail);
        }
    }

    /// Every value, in key order.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.tree.values().chain(self.tail.iter().map(|(_, v)| v))
    }

    /// The entries after `after` (all of them for `None`), in key order.
    pub(super) fn after<'a>(&'a self, after: Option<&'a K>) -> impl Iterator<Item = (&'a K, &'a V)> + 'a {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let from = after.map_or(0, |k| self.tail.partition_point(|(t, _)| t <= k));
        let tail = self.tail.get(from..).unwrap_or_default();
        self.tree
            .range((lower, Bound::Unbounded))
            .chain(tail.iter().map(|(k, v)| (k, v)))
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

    /// Runs of ascending keys (what the tail is for) mixed with any key.
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
        prop::collection::vec(prop_oneof![op.prop_map(|o| vec![o]), run], 0..60)
            .prop_map(|chunks| chunks.into_iter().flatten().collect())
    }

    proptest! {
        /// Every operation answers as a `BTreeMap` does, whatever the split between tree and tail.
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
                prop_assert!(ours.tail.windows(2).all(|w| w[0].0 < w[1].0), "tail out of order");
                let (top, first) = (ours.tree.last_key_value(), ours.tail.first());
                prop_assert!(top.zip(first).is_none_or(|((t, _), (f, _))| t < f), "tail not above the tree");
            }
            prop_assert!(ours.values().eq(model.values()));
        }
    }

    /// Keys in order fill the tail; a key inside it far from its end moves it into the tree.
    #[test]
    fn ascending_keys_go_to_the_tail_until_a_key_lands_inside_it() {
        let mut map = Ordered::<u32, u32>::default();
        for k in 0..1000 {
            map.insert(k * 2, k);
        }
        assert_eq!((map.tree.len(), map.tail.len()), (0, 1000));
        // Within `SHIFT` of the end: shifted in place.
        map.insert(1995, 0);
        assert_eq!(map.tree.len(), 0);
        // Far inside: the tail is rebuilt into the tree first.
        map.insert(1, 0);
        assert_eq!((map.tree.len(), map.tail.len()), (1002, 0));
        // Above everything again: back to the tail.
        map.insert(5000, 0);
        assert_eq!((map.tree.len(), map.tail.len()), (1002, 1));
    }
}
