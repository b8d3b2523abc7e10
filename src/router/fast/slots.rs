//! A slot's storage: seven atomic words under a sequence lock, the consistent read and the
//! write, and the tag byte that hints at the slot's key.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::{FastTable, SlotData, Words, EPOCH, FETCHED, GRAVE, GROUP, KEY, SEQ, STAMP_META, WORDS};

/// The tag of a live entry: the hash's low seven bits with the high bit set (so it is never
/// [`EMPTY_TAG`] or [`GRAVE_TAG`]); the group comes from the hash's high bits.
#[inline(always)]
pub(super) fn tag_of(hash: u64) -> u8 {
    0x80 | (hash as u8 & 0x7f)
}

/// Key equality on scalars (an array `==` may go through the stack as a vector compare and
/// stall on store forwarding).
#[inline(always)]
pub(super) fn same(a: &Words, b: &Words) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2])) == 0
}

/// What one read of a slot saw.
#[derive(Clone, Copy)]
pub(super) struct Read {
    pub(super) key: Words,
    pub(super) data: SlotData,
}

impl Read {
    pub(super) fn is_empty(&self) -> bool {
        self.key[0] == 0 && self.data.meta & GRAVE == 0
    }
    pub(super) fn is_grave(&self) -> bool {
        self.key[0] == 0 && self.data.meta & GRAVE != 0
    }
}

impl FastTable {
    #[inline]
    pub(super) fn word(&self, slot: usize, w: usize) -> Option<&AtomicU64> {
        self.words.get(slot * WORDS + w)
    }

    /// A consistent read of `slot` (retries while a writer is inside it).
    #[inline(always)]
    pub(super) fn read(&self, slot: usize) -> Option<Read> {
        let base = slot * WORDS;
        let w = self.words.get(base..base + WORDS)?;
        let [seq, k0, k1, k2, epoch, fetched, sm] = w else {
            return None;
        };
        loop {
            let s1 = seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let key = [
                k0.load(Ordering::Relaxed),
                k1.load(Ordering::Relaxed),
                k2.load(Ordering::Relaxed),
            ];
            let e = epoch.load(Ordering::Relaxed);
            let f = fetched.load(Ordering::Relaxed);
            let x = sm.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == s1 {
                return Some(Read {
                    key,
                    data: SlotData {
                        epoch: e,
                        fetched: f,
                        stamp: x as u32,
                        meta: (x >> 32) as u32,
                    },
                });
            }
        }
    }

    /// Sets `slot`'s tag (writer lock held). Published after the slot's words, so a reader
    /// that sees the tag finds the words (and one that does not is concurrent with the write).
    pub(super) fn set_tag(&self, slot: usize, tag: u8) {
        if let Some(w) = self.tags.get(slot / GROUP) {
            let shift = (slot % GROUP) * 8;
            let v = w.load(Ordering::Relaxed);
            w.store((v & !(0xff << shift)) | (u64::from(tag) << shift), Ordering::Release);
        }
    }

    /// Writes a slot and its tag (writer lock held).
    pub(super) fn write(&self, slot: usize, key: Words, data: SlotData, tag: u8) {
        let Some(seq) = self.word(slot, SEQ) else { return };
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, k) in key.iter().enumerate() {
            if let Some(w) = self.word(slot, KEY + i) {
                w.store(*k, Ordering::Relaxed);
            }
        }
        if let Some(w) = self.word(slot, EPOCH) {
            w.store(data.epoch, Ordering::Relaxed);
        }
        if let Some(w) = self.word(slot, FETCHED) {
            w.store(data.fetched, Ordering::Relaxed);
        }
        if let Some(w) = self.word(slot, STAMP_META) {
            w.store(u64::from(data.stamp) | (u64::from(data.meta) << 32), Ordering::Relaxed);
        }
        seq.store(s.wrapping_add(2), Ordering::Release);
        self.set_tag(slot, tag);
    }
}
