//! Sizing by recovery time and blast radius, and shuffle-sharding combinatorics.

use std::time::Duration;

use super::num;
use super::{Bytes, BytesPerSecond, CapacityError};

/// The fewest stamps such that losing one affects at most `max_fraction` of tenants, with
/// tenants spread evenly: `⌈1 / max_fraction⌉`.
///
/// # Errors
/// `max_fraction` NaN, infinite or outside `(0, 1]`.
///
/// # Example
/// ```
/// use stamps::capacity::min_stamps_for_blast_radius;
/// assert_eq!(min_stamps_for_blast_radius(0.05)?, 20);
/// assert_eq!(min_stamps_for_blast_radius(0.30)?, 4); // 3 stamps would be 33% each
/// assert_eq!(min_stamps_for_blast_radius(1.0)?, 1);
/// assert!(min_stamps_for_blast_radius(0.0).is_err());
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn min_stamps_for_blast_radius(max_fraction: f64) -> Result<u64, CapacityError> {
    let fraction = num::fraction_open_closed(
        "max_fraction",
        max_fraction,
        "give the largest acceptable share of tenants hit by one stamp failure, e.g. 0.05",
    )?;
    num::ceil_count("max_fraction", 1.0 / fraction)
}

/// The expected fraction of tenants affected when `failed` of `stamps` evenly loaded stamps
/// fail at once (each tenant on one stamp): `failed / stamps`.
///
/// With shuffle sharding, where each tenant spans several stamps, see
/// [`ShuffleSharding::tenant_outage_probability`] and
/// [`ShuffleSharding::tenant_impact_probability`].
///
/// # Errors
/// [`CapacityError::Zero`] (`stamps`); [`CapacityError::ExceedsBound`] (`failed`) if more
/// stamps fail than exist.
///
/// # Example
/// ```
/// use stamps::capacity::fraction_affected;
/// assert_eq!(fraction_affected(20, 1)?, 0.05);
/// assert_eq!(fraction_affected(67, 0)?, 0.0);
/// assert!(fraction_affected(3, 4).is_err());
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn fraction_affected(stamps: u64, failed: u64) -> Result<f64, CapacityError> {
    if stamps == 0 {
        return Err(CapacityError::Zero { argument: "stamps" });
    }
    if failed > stamps {
        return Err(CapacityError::ExceedsBound {
            argument: "failed",
            value: failed,
            bound_argument: "stamps",
            bound: stamps,
        });
    }
    Ok(failed as f64 / stamps as f64)
}

/// How fast a stamp comes back from backups: a fixed overhead (provisioning infrastructure,
/// replaying configuration) plus the data restored at a steady throughput.
///
/// `restore time = fixed_overhead + tenants × data_per_tenant / throughput`.
///
/// ```
/// use stamps::capacity::{Bytes, BytesPerSecond, RestoreModel};
/// use std::time::Duration;
/// let model = RestoreModel::new(
///     Bytes::from_gib(10),
///     BytesPerSecond::from_mib_per_sec(1_024.0),
///     Duration::from_secs(15 * 60),
/// );
/// assert_eq!(model.max_tenants(Duration::from_secs(3_600))?, 270);
/// assert_eq!(model.restore_time(270)?, Duration::from_secs(3_600));
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RestoreModel {
    /// Data to restore per tenant.
    pub data_per_tenant: Bytes,
    /// Sustained restore throughput.
    pub throughput: BytesPerSecond,
    /// Time spent before data starts flowing.
    pub fixed_overhead: Duration,
}

impl RestoreModel {
    /// A restore model; values are validated when used.
    ///
    /// ```
    /// use stamps::capacity::{Bytes, BytesPerSecond, RestoreModel};
    /// use std::time::Duration;
    /// let m = RestoreModel::new(Bytes::from_gib(1), BytesPerSecond(1e9), Duration::ZERO);
    /// assert_eq!(m.fixed_overhead, Duration::ZERO);
    /// ```
    pub fn new(data_per_tenant: Bytes, throughput: BytesPerSecond, fixed_overhead: Duration) -> Self {
        RestoreModel {
            data_per_tenant,
            throughput,
            fixed_overhead,
        }
    }

    /// The largest number of tenants a stamp can hold and still be restored within `rto`:
    /// `⌊(rto − fixed_overhead) × throughput / data_per_tenant⌋`, or 0 when the overhead alone
    /// exceeds the RTO.
    ///
    /// # Errors
    /// `throughput` NaN, infinite, negative or zero; [`CapacityError::Zero`]
    /// (`data_per_tenant`); [`CapacityError::Overflow`] (`rto`) past `u64`.
    ///
    /// ```
    /// use stamps::capacity::{Bytes, BytesPerSecond, RestoreModel};
    /// use std::time::Duration;
    /// let m = RestoreModel::new(Bytes::from_gib(10), BytesPerSecond::from_mib_per_sec(1_024.0), Duration::from_secs(900));
    /// assert_eq!(m.max_tenants(Duration::from_secs(2 * 3_600))?, 630);
    /// assert_eq!(m.max_tenants(Duration::from_secs(600))?, 0);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn max_tenants(&self, rto: Duration) -> Result<u64, CapacityError> {
        let throughput = num::positive("throughput", self.throughput.0)?;
        if self.data_per_tenant.0 == 0 {
            return Err(CapacityError::Zero {
                argument: "data_per_tenant",
            });
        }
        let Some(window) = rto.checked_sub(self.fixed_overhead) else {
            return Ok(0);
        };
        let bytes = window.as_secs_f64() * throughput;
        num::floor_count("rto", bytes / self.data_per_tenant.0 as f64)
    }

    /// Time to restore a stamp of `tenants` tenants.
    ///
    /// # Errors
    /// `throughput` NaN, infinite, negative or zero; [`CapacityError::Overflow`]
    /// (`tenants`) past what [`Duration`] holds.
    ///
    /// ```
    /// use stamps::capacity::{Bytes, BytesPerSecond, RestoreModel};
    /// use std::time::Duration;
    /// let m = RestoreModel::new(Bytes::from_gib(10), BytesPerSecond::from_mib_per_sec(1_024.0), Duration::ZERO);
    /// assert_eq!(m.restore_time(150)?, Duration::from_secs(1_500));
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn restore_time(&self, tenants: u64) -> Result<Duration, CapacityError> {
        let throughput = num::positive("throughput", self.throughput.0)?;
        let bytes = u128::from(tenants) * u128::from(self.data_per_tenant.0);
        let overflow = CapacityError::Overflow {
            argument: "tenants",
            limit: "Duration",
        };
        let transfer = Duration::try_from_secs_f64(bytes as f64 / throughput).map_err(|_| overflow)?;
        self.fixed_overhead.checked_add(transfer).ok_or(overflow)
    }
}

/// The binomial coefficient `C(n, k)`, exact. `C(n, k) = 0` for `k > n`.
///
/// Computed as a running product that stays exact and never exceeds the result, so it
/// overflows only if the result itself does not fit `u128`.
///
/// # Errors
/// [`CapacityError::Overflow`] (`n`) if `C(n, k)` exceeds `u128::MAX`.
///
/// # Example
/// ```
/// use stamps::capacity::binomial;
/// assert_eq!(binomial(8, 2)?, 28);
/// assert_eq!(binomial(100, 50)?, 100_891_344_545_564_193_334_812_497_256);
/// assert_eq!(binomial(3, 5)?, 0);
/// assert!(binomial(1_000, 500).is_err());
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn binomial(n: u64, k: u64) -> Result<u128, CapacityError> {
    if k > n {
        return Ok(0);
    }
    let k = k.min(n - k);
    let n = u128::from(n);
    let mut result: u128 = 1;
    for i in 0..u128::from(k) {
        // result = C(n, i); C(n, i + 1) = result × (n − i) / (i + 1). With g = gcd(result,
        // i + 1), (i + 1) / g divides n − i, so both divisions are exact and the product is
        // C(n, i + 1) itself: no intermediate exceeds the result.
        let divisor = i + 1;
        let g = gcd(result, divisor);
        let factor = (n - i) / (divisor / g);
        result = (result / g).checked_mul(factor).ok_or(CapacityError::Overflow {
            argument: "n",
            limit: "u128",
        })?;
    }
    Ok(result)
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Shuffle sharding (as in AWS's Infima): each tenant gets its own combination of
/// `shard_size` of the fleet's `stamps`, so two tenants rarely share all their stamps and a
/// poison tenant takes down few others.
///
/// With `n = stamps` and `k = shard_size`:
/// - distinct shards: `C(n, k)`;
/// - two tenants on random shards share all `k` stamps with probability `1 / C(n, k)`;
/// - they share exactly `j` stamps with probability `C(k, j) × C(n − k, k − j) / C(n, k)`
///   (hypergeometric);
/// - when `f` random stamps fail, a tenant loses all its stamps with probability
///   `C(f, k) / C(n, k)` and at least one with probability `1 − C(n − f, k) / C(n, k)`.
///
/// ```
/// use stamps::capacity::ShuffleSharding;
/// let s = ShuffleSharding::new(8, 2)?;
/// assert_eq!(s.combinations(), 28);
/// assert!((s.same_shard_probability() - 1.0 / 28.0).abs() < 1e-15);
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShuffleSharding {
    stamps: u64,
    shard_size: u64,
    combinations: u128,
}

impl ShuffleSharding {
    /// Shards of `shard_size` stamps out of `stamps`.
    ///
    /// # Errors
    /// [`CapacityError::Zero`] (`shard_size`); [`CapacityError::ExceedsBound`]
    /// (`shard_size`) above `stamps`; [`CapacityError::Overflow`] (`stamps`) if `C(n, k)`
    /// exceeds `u128`.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// assert!(ShuffleSharding::new(8, 0).is_err());
    /// assert!(ShuffleSharding::new(2, 3).is_err());
    /// assert_eq!(ShuffleSharding::new(100, 5)?.combinations(), 75_287_520);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn new(stamps: u64, shard_size: u64) -> Result<Self, CapacityError> {
        if shard_size == 0 {
            return Err(CapacityError::Zero { argument: "shard_size" });
        }
        if shard_size > stamps {
            return Err(CapacityError::ExceedsBound {
                argument: "shard_size",
                value: shard_size,
                bound_argument: "stamps",
                bound: stamps,
            });
        }
        let combinations = binomial(stamps, shard_size).map_err(|_| CapacityError::Overflow {
            argument: "stamps",
            limit: "u128",
        })?;
        Ok(ShuffleSharding {
            stamps,
            shard_size,
            combinations,
        })
    }

    /// Stamps in the fleet.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// assert_eq!(ShuffleSharding::new(8, 2)?.stamps(), 8);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn stamps(&self) -> u64 {
        self.stamps
    }

    /// Stamps per tenant.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// assert_eq!(ShuffleSharding::new(8, 2)?.shard_size(), 2);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn shard_size(&self) -> u64 {
        self.shard_size
    }

    /// Distinct shards, `C(stamps, shard_size)`, exact.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// assert_eq!(ShuffleSharding::new(8, 2)?.combinations(), 28);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn combinations(&self) -> u128 {
        self.combinations
    }

    /// Probability that two tenants on independent uniformly random shards share all their
    /// stamps: `1 / C(n, k)`.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// assert_eq!(ShuffleSharding::new(4, 4)?.same_shard_probability(), 1.0);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn same_shard_probability(&self) -> f64 {
        1.0 / self.combinations as f64
    }

    /// Probability that two tenants on random shards share exactly `overlap` stamps:
    /// `C(k, j) × C(n − k, k − j) / C(n, k)`.
    ///
    /// # Errors
    /// [`CapacityError::ExceedsBound`] (`overlap`) above the shard size.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// let s = ShuffleSharding::new(8, 2)?;
    /// // C(6, 2) = 15 of the 28 shards share no stamp with a given one, 2 × 6 = 12 share one.
    /// assert!((s.overlap_probability(0)? - 15.0 / 28.0).abs() < 1e-15);
    /// assert!((s.overlap_probability(1)? - 12.0 / 28.0).abs() < 1e-15);
    /// assert!((s.overlap_probability(2)? - 1.0 / 28.0).abs() < 1e-15);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn overlap_probability(&self, overlap: u64) -> Result<f64, CapacityError> {
        if overlap > self.shard_size {
            return Err(CapacityError::ExceedsBound {
                argument: "overlap",
                value: overlap,
                bound_argument: "shard_size",
                bound: self.shard_size,
            });
        }
        let k = self.shard_size;
        // Each term is at most C(n, k), which fits.
        let shared = binomial(k, overlap)?;
        let rest = binomial(self.stamps - k, k - overlap)?;
        let ways = shared.checked_mul(rest).ok_or(CapacityError::Overflow {
            argument: "overlap",
            limit: "u128",
        })?;
        Ok(ways as f64 / self.combinations as f64)
    }

    /// Probability that a tenant loses *all* its stamps when `failed` stamps, chosen at
    /// random, fail together: `C(f, k) / C(n, k)`. With a shard size of 1 this is
    /// `failed / stamps`, the plain [`fraction_affected`].
    ///
    /// # Errors
    /// [`CapacityError::ExceedsBound`] (`failed`) above the number of stamps.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// let s = ShuffleSharding::new(8, 2)?;
    /// assert!((s.tenant_outage_probability(2)? - 1.0 / 28.0).abs() < 1e-15);
    /// assert_eq!(s.tenant_outage_probability(1)?, 0.0);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn tenant_outage_probability(&self, failed: u64) -> Result<f64, CapacityError> {
        self.check_failed(failed)?;
        let ways = binomial(failed, self.shard_size)?;
        Ok(ways as f64 / self.combinations as f64)
    }

    /// Probability that a tenant loses *at least one* of its stamps when `failed` random
    /// stamps fail together: `1 − C(n − f, k) / C(n, k)`.
    ///
    /// # Errors
    /// [`CapacityError::ExceedsBound`] (`failed`) above the number of stamps.
    ///
    /// ```
    /// use stamps::capacity::ShuffleSharding;
    /// let s = ShuffleSharding::new(8, 2)?;
    /// // One failed stamp touches 7 of the 28 shards.
    /// assert!((s.tenant_impact_probability(1)? - 0.25).abs() < 1e-15);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn tenant_impact_probability(&self, failed: u64) -> Result<f64, CapacityError> {
        self.check_failed(failed)?;
        let untouched = binomial(self.stamps - failed, self.shard_size)?;
        Ok(1.0 - untouched as f64 / self.combinations as f64)
    }

    fn check_failed(&self, failed: u64) -> Result<(), CapacityError> {
        if failed > self.stamps {
            Err(CapacityError::ExceedsBound {
                argument: "failed",
                value: failed,
                bound_argument: "stamps",
                bound: self.stamps,
            })
        } else {
            Ok(())
        }
    }
}
