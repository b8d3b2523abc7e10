//! Tenant ids and lookup sequences shared by the router benches (`router`,
//! `router_interleaved`), so both measure exactly the same keys.

/// Lookups per sequence (a power of two: benches wrap with `& (SEQ - 1)`).
pub const SEQ: usize = 1 << 20;

/// Tenant id number `i`: 16 bytes.
pub fn key(i: usize) -> String {
    format!("tenant-{i:09}")
}

/// xorshift64*, seeded, so every run looks up the same sequence.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The lookup sequence as one buffer of 16-byte ids: request text is in cache when a router
/// sees it, so the benchmark does not charge a miss for reading the id itself.
pub fn text(ix: Vec<u32>) -> String {
    ix.iter().map(|&i| key(i as usize)).collect()
}

/// `SEQ` uniform key numbers below `n`.
pub fn uniform(n: usize) -> Vec<u32> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    (0..SEQ).map(|_| (r.next() % n as u64) as u32).collect()
}

/// `SEQ` Zipf (s = 1) ranks below `n`, scattered over the key space by a multiplicative
/// permutation.
pub fn zipf(n: usize) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for k in 1..=n {
        acc += 1.0 / k as f64;
        cdf.push(acc);
    }
    let total = acc;
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    (0..SEQ)
        .map(|_| {
            let u = r.unit() * total;
            let rank = cdf.partition_point(|c| *c < u).min(n - 1);
            ((rank as u64 * 2_654_435_761) % n as u64) as u32
        })
        .collect()
}
