//! Interned stamp endpoints, so a [`Route`](super::Route) can carry `&'static str` and stay
//! `Copy`: no allocation and no reference count shared between reader threads.
//!
//! Each distinct endpoint text is stored once for the life of the process. Endpoints come from
//! the operator's stamp specs (never from requests), so the set is small: a fleet of 1,000
//! stamps with 100-byte endpoints holds about 100 KB, however often specs are re-read.

use std::collections::HashSet;
use std::sync::OnceLock;

use parking_lot::Mutex;

static ENDPOINTS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();

/// The process-wide copy of `text`.
pub(crate) fn intern(text: &str) -> &'static str {
    let mut set = ENDPOINTS.get_or_init(|| Mutex::new(HashSet::new())).lock();
    if let Some(s) = set.get(text) {
        return s;
    }
    let s: &'static str = Box::leak(Box::from(text));
    set.insert(s);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn interning_returns_one_copy_per_text() {
        let a = super::intern("https://a.internal");
        let b = super::intern(&String::from("https://a.internal"));
        assert!(std::ptr::eq(a, b));
        assert_ne!(super::intern("https://b.internal"), a);
    }
}
