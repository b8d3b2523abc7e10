//! Interned stamp endpoints, so a [`Route`](super::Route) can carry `&'static str` and stay
//! `Copy`: no allocation and no reference count shared between reader threads.
//!
//! Each distinct endpoint text is stored once for the life of the process and gets a small
//! number ([`Handle`]); the route path turns a handle back into the text with two atomic loads
//! and no lock, no thread-local and no branch that depends on which endpoint it is. Endpoints
//! come from the operator's stamp specs (never from requests), so the set is small: a fleet of
//! 1,000 stamps with 100-byte endpoints holds about 100 KB, however often specs are re-read.
//!
//! Storage is append-only: chunk `k` holds `FIRST << k` texts and is allocated when the first
//! text that needs it is interned, so a handle stays valid forever.

use std::collections::HashMap;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// Texts in the first chunk (a static array, so the common case is one bounds check away).
const FIRST: usize = 1024;
/// Chunks: room for `FIRST × (2^CHUNKS − 1)` texts (over four billion).
const CHUNKS: usize = 22;

/// The number of an interned text, plus one (zero means "no endpoint").
pub(crate) type Handle = u32;

/// Text → handle (only writers use it).
static INDEX: OnceLock<Mutex<HashMap<&'static str, Handle>>> = OnceLock::new();

/// The first `FIRST` texts, by handle.
static FIRST_CHUNK: [OnceLock<&'static str>; FIRST] = [const { OnceLock::new() }; FIRST];

/// Later texts: chunk `k ≥ 1` holds `FIRST << k` of them (chunk 0 is `FIRST_CHUNK`).
static CHUNK: [OnceLock<Box<[OnceLock<&'static str>]>>; CHUNKS] = [const { OnceLock::new() }; CHUNKS];

/// The cell of text number `n`, if its chunk exists.
fn cell(n: usize, create: bool) -> Option<&'static OnceLock<&'static str>> {
    let (k, at) = locate(n);
    if k == 0 {
        return FIRST_CHUNK.get(at);
    }
    let chunk = CHUNK.get(k)?;
    let chunk = if create {
        chunk.get_or_init(|| (0..FIRST << k).map(|_| OnceLock::new()).collect())
    } else {
        chunk.get()?
    };
    chunk.get(at)
}

/// Chunk and position of text number `n` (zero-based).
#[inline(always)]
fn locate(n: usize) -> (usize, usize) {
    let j = n / FIRST + 1;
    let k = (usize::BITS - 1 - j.leading_zeros()) as usize;
    (k, n - FIRST * ((1 << k) - 1))
}

/// The process-wide copy of `text` and its handle (never zero).
pub(crate) fn intern(text: &str) -> (Handle, &'static str) {
    let mut index = INDEX.get_or_init(Mutex::default).lock();
    if let Some((s, h)) = index.get_key_value(text) {
        return (*h, s);
    }
    let s: &'static str = Box::leak(Box::from(text));
    let n = index.len();
    let stored = cell(n, true).is_some_and(|c| c.set(s).is_ok());
    match Handle::try_from(n + 1) {
        Ok(h) if stored => {
            index.insert(s, h);
            (h, s)
        }
        // Out of handles (over four billion distinct endpoint texts): the text is still
        // returned, its routes just carry no endpoint.
        _ => (0, s),
    }
}

/// The text behind `handle` (`None` for zero).
#[inline(always)]
pub(crate) fn resolve(handle: Handle) -> Option<&'static str> {
    let n = (handle as usize).checked_sub(1)?;
    match FIRST_CHUNK.get(n) {
        Some(c) => c.get().copied(),
        None => resolve_later(n),
    }
}

#[cold]
#[inline(never)]
fn resolve_later(n: usize) -> Option<&'static str> {
    cell(n, false)?.get().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_returns_one_copy_per_text() {
        let (ha, a) = intern("https://a.internal");
        let (hb, b) = intern(&String::from("https://a.internal"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(ha, hb);
        assert_ne!(ha, 0);
        let (hc, c) = intern("https://b.internal");
        assert_ne!(c, a);
        assert_ne!(hc, ha);
        assert!(std::ptr::eq(resolve(ha).unwrap_or(""), a));
        assert!(std::ptr::eq(resolve(hc).unwrap_or(""), c));
        assert_eq!(resolve(0), None);
    }

    #[test]
    fn locate_fills_chunks_in_order() {
        let mut expected = Vec::new();
        for k in 0..4 {
            for at in 0..FIRST << k {
                expected.push((k, at));
            }
        }
        let got: Vec<_> = (0..expected.len()).map(locate).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn handles_survive_many_texts_and_threads() {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..1500)
                        .map(|i| {
                            let text = format!("https://intern-{}.test", (i * 7 + t) % 1500);
                            let (h, s) = intern(&text);
                            (text, h, s)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for (text, h, s) in t.join().unwrap_or_default() {
                assert_eq!(s, text);
                assert_eq!(resolve(h), Some(s));
            }
        }
    }
}
