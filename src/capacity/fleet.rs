//! Fleet size, and distribution of stamps or tenants over regions by largest remainder.

use super::num;
use super::CapacityError;

/// How far the shares given to [`apportion`] and [`regional_fleet`] may add up from 1:
/// one part in a million, enough for shares typed as decimals (0.5 + 0.3 + 0.15 + 0.05 is not
/// exactly 1 in binary floating point) or as thirds to six places.
pub const SHARE_TOLERANCE: f64 = 1e-6;

/// Stamps needed for `tenants` tenants at `tenants_per_stamp` each: `⌈tenants / tenants_per_stamp⌉`.
///
/// # Errors
/// [`CapacityError::Zero`] (`tenants_per_stamp`).
///
/// # Example
/// ```
/// use stamps::capacity::stamps_needed;
/// assert_eq!(stamps_needed(10_000, 150)?, 67); // 66.67 rounded up
/// assert_eq!(stamps_needed(0, 150)?, 0);
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn stamps_needed(tenants: u64, tenants_per_stamp: u64) -> Result<u64, CapacityError> {
    if tenants_per_stamp == 0 {
        return Err(CapacityError::Zero {
            argument: "tenants_per_stamp",
        });
    }
    Ok(tenants.div_ceil(tenants_per_stamp))
}

/// Fixed-point resolution of shares inside [`apportion`]: 2^60.
const WEIGHT_SCALE: f64 = 1_152_921_504_606_846_976.0;

/// Remainders are compared to 2^-24 of a unit; closer ones tie.
const TIE_RESOLUTION: u128 = 1 << 24;

/// Splits `total` whole units (stamps, tenants) over parts with the given shares, so that the
/// parts add up to exactly `total` and each part is within 1 of its exact quota
/// `total × share`: the largest-remainder (Hamilton) method.
///
/// Every part first gets `⌊quota⌋`; the units left over (fewer than the number of parts) go
/// one each to the parts with the largest fractional remainders, ties (remainders within
/// 2^-24 of a unit) going to the larger share, then to the earlier part. Shares are normalized by their sum and resolved to 2^-60
/// in exact integer arithmetic, so the result does not depend on float rounding of the
/// quotas. A part with share 0 gets 0.
///
/// Rounding each product on its own, as calculation 5 of
/// *Deployment Stamps for Availability: Multi-Region Guide* does, can miss the total: 65 stamps at
/// 50/30/15/5% are 32.5, 19.5, 9.75 and 3.25, which round to 33 + 20 + 10 + 3 = 66.
///
/// # Errors
/// [`CapacityError::Empty`] (`shares`); `shares` NaN, infinite or negative;
/// [`CapacityError::SharesDoNotSumToOne`] (`shares`) beyond [`SHARE_TOLERANCE`].
///
/// # Example
/// ```
/// use stamps::capacity::apportion;
/// let regions = [("North America", 0.50), ("Europe", 0.30), ("Asia-Pacific", 0.15), ("Other", 0.05)];
/// let parts = apportion(67, &regions)?;
/// assert_eq!(parts, [("North America", 34), ("Europe", 20), ("Asia-Pacific", 10), ("Other", 3)]);
/// let parts = apportion(65, &regions)?;
/// assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), 65);
/// assert_eq!(parts, [("North America", 33), ("Europe", 19), ("Asia-Pacific", 10), ("Other", 3)]);
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn apportion<K: Clone>(total: u64, shares: &[(K, f64)]) -> Result<Vec<(K, u64)>, CapacityError> {
    let parts = apportion_counts(total, shares)?;
    Ok(shares
        .iter()
        .zip(parts)
        .map(|((key, _), part)| (key.clone(), part))
        .collect())
}

/// [`apportion`] without the keys: the parts in input order.
fn apportion_counts<K>(total: u64, shares: &[(K, f64)]) -> Result<Vec<u64>, CapacityError> {
    if shares.is_empty() {
        return Err(CapacityError::Empty { argument: "shares" });
    }
    let mut sum = 0.0;
    for (_, share) in shares {
        sum += num::non_negative("shares", *share)?;
    }
    if (sum - 1.0).abs() > SHARE_TOLERANCE {
        return Err(CapacityError::SharesDoNotSumToOne {
            argument: "shares",
            sum,
            tolerance: SHARE_TOLERANCE,
        });
    }
    // Each share is at most `sum` <= 1 + 1e-6, so each weight is below 2^61 (the cast
    // saturates in any case) and their sum fits u128 for any slice length.
    let weights: Vec<u128> = shares
        .iter()
        .map(|(_, share)| (share / sum * WEIGHT_SCALE).round() as u128)
        .collect();
    let weight_sum: u128 = weights.iter().fold(0u128, |acc, w| acc.saturating_add(*w));
    if weight_sum == 0 {
        return Err(CapacityError::SharesDoNotSumToOne {
            argument: "shares",
            sum,
            tolerance: SHARE_TOLERANCE,
        });
    }
    let total_wide = u128::from(total);
    let mut parts = Vec::with_capacity(shares.len());
    let mut remainders = Vec::with_capacity(shares.len());
    let mut given: u128 = 0;
    for (index, weight) in weights.iter().enumerate() {
        // total < 2^64 and weight < 2^62: the product fits u128.
        let scaled = total_wide.saturating_mul(*weight);
        let floor = scaled / weight_sum;
        given = given.saturating_add(floor);
        parts.push(floor);
        // The remainder to 2^-24 of a unit, rounded: remainders closer than that are a tie
        // (decimal shares such as 0.3 are not exact in binary, and their quotas should tie
        // exactly as the decimals do). rem < weight_sum < 2^63, so rem * 2^24 fits u128.
        let remainder = scaled % weight_sum;
        let bucket = (remainder * TIE_RESOLUTION + weight_sum / 2) / weight_sum;
        remainders.push((bucket, *weight, index));
    }
    // Sum of floors <= total, and what is left is below the number of parts.
    let left = total_wide.saturating_sub(given);
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    for &(_, _, index) in remainders.iter().take(usize::try_from(left).unwrap_or(usize::MAX)) {
        if let Some(part) = parts.get_mut(index) {
            *part += 1;
        }
    }
    parts.into_iter().map(|part| num::narrow("total", part)).collect()
}

/// One region of a [`regional_fleet`].
///
/// ```
/// use stamps::capacity::regional_fleet;
/// let plan = regional_fleet(10_000, 150, &[("Other", 1.0)])?;
/// assert_eq!((plan[0].tenants, plan[0].stamps), (10_000, 67));
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RegionPlan<K> {
    /// The region's key, as given.
    pub region: K,
    /// The region's share, as given.
    pub share: f64,
    /// Tenants in the region, apportioned from the total by largest remainder.
    pub tenants: u64,
    /// Stamps the region needs for its own tenants: `⌈tenants / tenants_per_stamp⌉`.
    pub stamps: u64,
}

/// Stamps per region when tenants must stay in their region: the tenants are apportioned
/// by share ([`apportion`]), then each region gets enough stamps for its own tenants.
///
/// This can need more stamps than apportioning the global fleet: the 67 stamps of calculation
/// 5 of *Deployment Stamps for Availability: Multi-Region Guide* split 34/20/10/3, but its
/// "Other regions" share has 500 tenants and 3 stamps of 150 hold only
/// 450, so a region-bound fleet needs 34 + 20 + 10 + 4 = 68.
///
/// # Errors
/// As [`apportion`], and [`CapacityError::Zero`] (`tenants_per_stamp`).
///
/// # Example
/// ```
/// use stamps::capacity::regional_fleet;
/// let regions = [("North America", 0.50), ("Europe", 0.30), ("Asia-Pacific", 0.15), ("Other", 0.05)];
/// let plan = regional_fleet(10_000, 150, &regions)?;
/// let stamps: Vec<u64> = plan.iter().map(|r| r.stamps).collect();
/// assert_eq!(stamps, [34, 20, 10, 4]);
/// assert_eq!(plan[3].tenants, 500);
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn regional_fleet<K: Clone>(
    tenants: u64,
    tenants_per_stamp: u64,
    shares: &[(K, f64)],
) -> Result<Vec<RegionPlan<K>>, CapacityError> {
    if tenants_per_stamp == 0 {
        return Err(CapacityError::Zero {
            argument: "tenants_per_stamp",
        });
    }
    let parts = apportion_counts(tenants, shares)?;
    shares
        .iter()
        .zip(parts)
        .map(|((region, share), tenants)| {
            Ok(RegionPlan {
                region: region.clone(),
                share: *share,
                tenants,
                stamps: stamps_needed(tenants, tenants_per_stamp)?,
            })
        })
        .collect()
}
