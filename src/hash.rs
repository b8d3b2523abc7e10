//! Stable, portable hashing: the one FNV-1a the crate uses wherever a hash must be the same in
//! every process, on every platform and in every release (rendezvous placement scores, schema
//! migration checksums, content fingerprints).
//!
//! FNV-1a is not collision resistant; never use it where an adversary chooses the input and a
//! collision would matter. It is used here because its output is fixed by its definition, which
//! `std`'s `DefaultHasher` does not promise across releases.

/// FNV-1a (64-bit) offset basis.
const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a (64-bit) prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An incremental 64-bit FNV-1a hasher, for hashing several pieces as one stream.
///
/// ```
/// use stamps::hash::{fnv1a_64, Fnv1a};
///
/// let mut h = Fnv1a::new();
/// h.write(b"acme");
/// h.write(b"/orders");
/// assert_eq!(h.finish(), fnv1a_64(b"acme/orders"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Fnv1a {
    /// A hasher at the offset basis (the hash of no bytes).
    pub const fn new() -> Fnv1a {
        Fnv1a(OFFSET)
    }

    /// Feeds `bytes` into the hash.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        self.0 = h;
    }

    /// The hash of everything written so far.
    pub const fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a::new()
    }
}

/// The 64-bit FNV-1a hash of `bytes`: fixed by its definition, the same everywhere.
///
/// ```
/// use stamps::hash::fnv1a_64;
///
/// assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a_64(b"chongo was here!\n"), 0x4681_0940_eff5_f915);
    }
}
