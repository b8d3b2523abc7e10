//! Tests of the fast table: model-based, at the bound, under collisions and churn, in both
//! layouts, and readers against a concurrent writer.

use std::collections::HashMap;

use proptest::prelude::*;

use super::probe::zero_bytes;
use super::*;
use crate::router::table::Key;

fn key(i: u8) -> Words {
    match Key::parse(&format!("t{i}")) {
        Ok(Key::Short(w)) => w,
        _ => [0; 3],
    }
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(u8, u64),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..40, 0u64..20).prop_map(|(k, e)| Op::Upsert(k, e)),
        1 => (0u8..40).prop_map(Op::Remove),
    ]
}

proptest! {
    /// Model-based: without hitting the bound, the table answers like a map that keeps the
    /// largest epoch; the length matches; removals and graves never hide other keys.
    #[test]
    fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..200), tagged in any::<bool>()) {
        let seeds = Seeds::random();
        let table = FastTable::with_layout(64, tagged);
        let mut model: HashMap<u8, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Upsert(k, e) => {
                    let data = SlotData { epoch: e, fetched: e, stamp: u32::from(k), meta: 0 };
                    let w = key(k);
                    let up = table.upsert(&w, seeds.hash(&w), data);
                    let cur = model.get(&k).copied();
                    match cur {
                        Some(old) if old > e => prop_assert_eq!(up, Upsert::Kept),
                        Some(_) => prop_assert_eq!(up, Upsert::Replaced),
                        None => prop_assert_eq!(up, Upsert::Inserted { evicted: false }),
                    }
                    if cur.is_none_or(|old| old <= e) {
                        model.insert(k, e);
                    }
                }
                Op::Remove(k) => {
                    let w = key(k);
                    prop_assert_eq!(table.remove(&w, seeds.hash(&w)), model.remove(&k).is_some());
                }
            }
            table.rebuild_if_full_of_graves(|w| seeds.hash(w));
            prop_assert!(table.graves() <= table.slots / 8);
            prop_assert_eq!(table.len(), model.len());
            for k in 0u8..40 {
                let w = key(k);
                let got = table.get(&w, seeds.hash(&w)).map(|d| (d.epoch, d.stamp));
                prop_assert_eq!(got, model.get(&k).map(|e| (*e, u32::from(k))));
            }
        }
    }

    /// The same with hashes from a tiny set, so that keys share home groups and tags:
    /// chains run over several groups, several slots of a group match a tag, and graves
    /// sit in the middle of chains.
    #[test]
    fn behaves_like_a_map_under_collisions(
        ops in proptest::collection::vec(op(), 1..300),
        spread in 1u64..4,
        tagged in any::<bool>(),
        with_rebuild in any::<bool>(),
    ) {
        let hash = |k: u8| (u64::from(k) % spread).wrapping_mul(0x9e37_79b9_7f4a_7c15) & !0x7f;
        let table = FastTable::with_layout(48, tagged);
        let mut model: HashMap<u8, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Upsert(k, e) => {
                    let data = SlotData { epoch: e, fetched: e, stamp: u32::from(k), meta: 0 };
                    let up = table.upsert(&key(k), hash(k), data);
                    let cur = model.get(&k).copied();
                    match cur {
                        Some(old) if old > e => prop_assert_eq!(up, Upsert::Kept),
                        Some(_) => prop_assert_eq!(up, Upsert::Replaced),
                        None => prop_assert_eq!(up, Upsert::Inserted { evicted: false }),
                    }
                    if cur.is_none_or(|old| old <= e) {
                        model.insert(k, e);
                    }
                }
                Op::Remove(k) => {
                    prop_assert_eq!(table.remove(&key(k), hash(k)), model.remove(&k).is_some());
                }
            }
            if with_rebuild {
                let by_key: HashMap<Words, u64> = (0u8..40).map(|k| (key(k), hash(k))).collect();
                table.rebuild_if_full_of_graves(|w| by_key.get(w).copied().unwrap_or(0));
            }
            prop_assert_eq!(table.len(), model.len());
            for k in 0u8..40 {
                let got = table.get(&key(k), hash(k)).map(|d| (d.epoch, d.stamp));
                prop_assert_eq!(got, model.get(&k).map(|e| (*e, u32::from(k))));
            }
        }
    }

    /// At the bound, inserts evict: the table never holds more than `max_entries`, and the
    /// newest insert is always found.
    #[test]
    fn bound_holds(keys in proptest::collection::vec(0u8..200, 1..300), tagged in any::<bool>()) {
        let seeds = Seeds::random();
        let table = FastTable::with_layout(16, tagged);
        for (t, k) in keys.into_iter().enumerate() {
            let w = key(k);
            let data = SlotData { epoch: 1, fetched: t as u64, stamp: 1, meta: 0 };
            table.upsert(&w, seeds.hash(&w), data);
            prop_assert!(table.len() <= 16);
            prop_assert!(table.get(&w, seeds.hash(&w)).is_some());
        }
    }
}

/// `zero_bytes` flags exactly the zero bytes, for every byte value at every position.
#[test]
fn zero_bytes_is_exact() {
    for pos in 0..8 {
        for b in 0u64..256 {
            for fill in [0u64, 1, 0x7f, 0x80, 0xff] {
                let mut x = 0u64;
                for i in 0..8 {
                    let byte = if i == pos { b } else { fill };
                    x |= byte << (8 * i);
                }
                let want = (0..8)
                    .filter(|i| (x >> (8 * i)) & 0xff == 0)
                    .fold(0u64, |m, i| m | (0x80 << (8 * i)));
                assert_eq!(zero_bytes(x), want, "{x:#018x}");
            }
        }
    }
}

/// After `clear`, nothing is found, and the table fills again to its bound.
#[test]
fn clear_empties_slots_and_tags() {
    for tagged in [false, true] {
        clear_empties(tagged);
    }
}

fn clear_empties(tagged: bool) {
    let seeds = Seeds::random();
    let table = FastTable::with_layout(30, tagged);
    let data = SlotData {
        epoch: 1,
        fetched: 1,
        stamp: 1,
        meta: 0,
    };
    for k in 0..30 {
        let w = key(k);
        table.upsert(&w, seeds.hash(&w), data);
    }
    table.clear();
    assert_eq!(table.len(), 0);
    assert!(table.tags.iter().all(|t| t.load(Ordering::Relaxed) == 0));
    for k in 0..30 {
        let w = key(k);
        assert_eq!(table.get(&w, seeds.hash(&w)), None);
        assert_eq!(
            table.upsert(&w, seeds.hash(&w), data),
            Upsert::Inserted { evicted: false }
        );
    }
    assert_eq!(table.len(), 30);
}

/// The layout follows the size: tagged up to `TAGGED_MAX_SLOTS` slots.
#[test]
fn layout_follows_size() {
    assert!(FastTable::new(1_000).tagged);
    assert!(FastTable::tagged_for(1_000_000));
    assert!(FastTable::tagged_for(TAGGED_MAX_SLOTS * 3 / 4));
    assert!(!FastTable::tagged_for(TAGGED_MAX_SLOTS));
    assert!(!FastTable::tagged_for(10_000_000));
    assert!(!FastTable::with_layout(1_000, false).tagged);
}

/// Invalidation churn (insert a new key, remove an old one, forever) keeps free slots:
/// graves are reclaimed by rebuilds, so a lookup of an absent key stays short.
#[test]
fn churn_does_not_fill_the_table_with_graves() {
    for tagged in [false, true] {
        let seeds = Seeds::random();
        let table = FastTable::with_layout(1_000, tagged);
        let data = SlotData {
            epoch: 1,
            fetched: 1,
            stamp: 1,
            meta: 0,
        };
        let w = |i: u32| match Key::parse(&format!("churn-{i}")) {
            Ok(Key::Short(w)) => w,
            _ => [0; 3],
        };
        let mut rebuilds = 0;
        for i in 0..20_000u32 {
            let k = w(i);
            table.upsert(&k, seeds.hash(&k), data);
            if i >= 500 {
                let old = w(i - 500);
                assert!(table.remove(&old, seeds.hash(&old)));
                if table.rebuild_if_full_of_graves(|w| seeds.hash(w)) {
                    rebuilds += 1;
                }
            }
            assert!(table.graves() <= table.slots / 8);
        }
        assert!(rebuilds > 0, "tagged {tagged}");
        assert_eq!(table.len(), 500);
        for i in 19_500..20_000 {
            assert!(table.get(&w(i), seeds.hash(&w(i))).is_some());
        }
        let empty = (0..table.slots)
            .filter(|&i| table.read(i).is_some_and(|r| r.is_empty()))
            .count();
        assert!(empty >= table.slots / 2, "{empty} of {}", table.slots);
    }
}

/// Eviction at the bound (no removals at all) keeps free slots too: the linear layout used
/// to end with none (each insert whose chain held no live entry took an empty slot and
/// evicted elsewhere, leaving a grave).
#[test]
fn eviction_churn_keeps_empty_slots() {
    for tagged in [false, true] {
        let seeds = Seeds::random();
        let table = FastTable::with_layout(1_000, tagged);
        let w = |i: u32| match Key::parse(&format!("k{i}")) {
            Ok(Key::Short(w)) => w,
            _ => [0; 3],
        };
        for i in 0..100_000u32 {
            let k = w(i);
            let up = table.upsert(
                &k,
                seeds.hash(&k),
                SlotData {
                    epoch: 1,
                    fetched: u64::from(i),
                    stamp: 1,
                    meta: 0,
                },
            );
            if up == (Upsert::Inserted { evicted: true }) {
                table.rebuild_if_full_of_graves(|w| seeds.hash(w));
            }
            assert!(table.graves() <= table.slots / 8);
            assert!(table.get(&k, seeds.hash(&k)).is_some());
        }
        assert_eq!(table.len(), table.max_entries);
        let empty = (0..table.slots)
            .filter(|&i| table.read(i).is_some_and(|r| r.is_empty()))
            .count();
        assert!(empty >= table.slots / 8, "tagged {tagged}: {empty} of {}", table.slots);
    }
}

proptest! {
    /// At the bound, under collisions and removals, in both layouts: every entry the table
    /// counts is reachable (len == number of keys `get` finds), no key is stored twice,
    /// and the newest insert is found.
    #[test]
    fn eviction_keeps_entries_reachable(
        ops in proptest::collection::vec((0u8..120, any::<bool>()), 1..400),
        spread in 1u64..6,
        tagged in any::<bool>(),
        max in 1usize..24,
    ) {
        let hash = |k: u8| (u64::from(k) % spread).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(k);
        let by_key: HashMap<Words, u64> = (0u8..120).map(|k| (key(k), hash(k))).collect();
        let table = FastTable::with_layout(max, tagged);
        for (t, (k, del)) in ops.into_iter().enumerate() {
            if del && k % 3 == 0 {
                table.remove(&key(k), hash(k));
            } else {
                let data = SlotData { epoch: t as u64, fetched: t as u64, stamp: u32::from(k), meta: 0 };
                table.upsert(&key(k), hash(k), data);
                prop_assert_eq!(table.get(&key(k), hash(k)).map(|d| d.epoch), Some(t as u64));
            }
            table.rebuild_if_full_of_graves(|w| by_key.get(w).copied().unwrap_or(0));
            let found = (0u8..120)
                .filter(|k| table.get(&key(*k), hash(*k)).is_some_and(|d| d.stamp == u32::from(*k)))
                .count();
            prop_assert!(table.len() <= table.max_entries);
            prop_assert_eq!(found, table.len());
            let live = (0..table.slots)
                .filter(|s| table.read(*s).is_some_and(|r| !r.is_empty() && !r.is_grave()))
                .count();
            prop_assert_eq!(live, table.len());
        }
    }
}

/// Readers never miss an entry nobody writes, and see one key's epochs in order, while a
/// writer churns (inserts, replaces, removes) other keys of the same chains.
fn concurrent(tagged: bool) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let hash = |k: u8| (u64::from(k) % 3).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(k);
    let table = Arc::new(FastTable::with_layout(64, tagged));
    for k in 0u8..16 {
        let d = SlotData {
            epoch: 1,
            fetched: 1,
            stamp: u32::from(k),
            meta: 0,
        };
        table.upsert(&key(k), hash(k), d);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (table, stop) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            for round in 0..20_000u64 {
                for k in 16u8..56 {
                    if (u64::from(k) + round) % 3 == 0 {
                        table.remove(&key(k), hash(k));
                    } else {
                        let d = SlotData {
                            epoch: round,
                            fetched: round,
                            stamp: u32::from(k),
                            meta: 0,
                        };
                        table.upsert(&key(k), hash(k), d);
                    }
                }
                let d = SlotData {
                    epoch: round + 2,
                    fetched: round + 2,
                    stamp: 200,
                    meta: 0,
                };
                table.upsert(&key(200), hash(200), d);
            }
            stop.store(true, Ordering::Release);
        })
    };
    let reader = {
        let (table, stop) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                for k in 0u8..16 {
                    let got = table.get(&key(k), hash(k));
                    assert_eq!(got.map(|d| d.stamp), Some(u32::from(k)), "stable key {k} missed");
                }
                for k in 16u8..56 {
                    if let Some(d) = table.get(&key(k), hash(k)) {
                        assert_eq!(d.stamp, u32::from(k));
                    }
                }
                if let Some(d) = table.get(&key(200), hash(200)) {
                    assert!(d.epoch >= last, "epoch went back {} -> {}", last, d.epoch);
                    last = d.epoch;
                }
                n += 1;
            }
            n
        })
    };
    assert!(writer.join().is_ok());
    assert!(reader.join().is_ok_and(|n| n > 0));
}

#[test]
fn readers_are_consistent_under_churn_tagged() {
    concurrent(true);
}

#[test]
fn readers_are_consistent_under_churn_linear() {
    concurrent(false);
}
