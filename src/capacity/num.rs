//! Validation and float-to-count helpers shared by the capacity calculations.

use super::CapacityError;

/// `u64::MAX + 1` as an `f64` (exactly 2^64): the first float that does not fit a `u64`.
const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

/// How close (relative, with a floor of 1) a float must be to a whole number to be taken as
/// that number before rounding. See the module docs, "Rounding".
pub(crate) const SNAP_RELATIVE: f64 = 1e-12;

/// Slack around a whole number: `1e-12 * clamp(|x|, 1, 1e6)`, so at most `1e-6`, non-decreasing
/// in `|x|` (which keeps the rounding functions monotone).
fn snap(x: f64) -> f64 {
    SNAP_RELATIVE * x.abs().clamp(1.0, 1e6)
}

/// The value, if it is finite.
pub(crate) fn finite(argument: &'static str, value: f64) -> Result<f64, CapacityError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CapacityError::NotFinite { argument, value })
    }
}

/// The value, if it is finite and not negative (`-0.0` counts as zero).
pub(crate) fn non_negative(argument: &'static str, value: f64) -> Result<f64, CapacityError> {
    let value = finite(argument, value)?;
    if value < 0.0 {
        Err(CapacityError::Negative { argument, value })
    } else {
        Ok(value)
    }
}

/// The value, if it is finite and greater than zero.
pub(crate) fn positive(argument: &'static str, value: f64) -> Result<f64, CapacityError> {
    let value = non_negative(argument, value)?;
    if value == 0.0 {
        Err(CapacityError::Zero { argument })
    } else {
        Ok(value)
    }
}

/// The value, if it is a fraction in `(0, 1]`.
pub(crate) fn fraction_open_closed(
    argument: &'static str,
    value: f64,
    hint: &'static str,
) -> Result<f64, CapacityError> {
    let value = finite(argument, value)?;
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(CapacityError::OutOfRange {
            argument,
            value,
            range: "(0, 1]",
            hint,
        })
    }
}

/// The value, if it is a fraction in `[0, 1)`.
pub(crate) fn fraction_closed_open(
    argument: &'static str,
    value: f64,
    hint: &'static str,
) -> Result<f64, CapacityError> {
    let value = finite(argument, value)?;
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(CapacityError::OutOfRange {
            argument,
            value,
            range: "[0, 1)",
            hint,
        })
    }
}

/// A float result as a whole count, rounded down (after snapping to a whole number within
/// the tolerance). Negative results count as zero; infinite or too large ones are an
/// [`CapacityError::Overflow`] charged to `argument`.
pub(crate) fn floor_count(argument: &'static str, x: f64) -> Result<u64, CapacityError> {
    if x.is_nan() {
        return Err(CapacityError::NotFinite { argument, value: x });
    }
    if x <= 0.0 {
        return Ok(0);
    }
    let down = (x + snap(x)).floor();
    to_u64(argument, down)
}

/// A float result as a whole count, rounded up (after snapping to a whole number within the
/// tolerance).
pub(crate) fn ceil_count(argument: &'static str, x: f64) -> Result<u64, CapacityError> {
    if x.is_nan() {
        return Err(CapacityError::NotFinite { argument, value: x });
    }
    if x <= 0.0 {
        return Ok(0);
    }
    let up = (x - snap(x)).ceil().max(0.0);
    to_u64(argument, up)
}

fn to_u64(argument: &'static str, whole: f64) -> Result<u64, CapacityError> {
    if whole.is_finite() && whole < U64_LIMIT {
        // In range and whole: the cast is exact.
        Ok(whole as u64)
    } else {
        Err(CapacityError::Overflow { argument, limit: "u64" })
    }
}

/// A `u128` intermediate as `u64`, or an overflow charged to `argument`.
pub(crate) fn narrow(argument: &'static str, x: u128) -> Result<u64, CapacityError> {
    u64::try_from(x).map_err(|_| CapacityError::Overflow { argument, limit: "u64" })
}

/// `ceil(a / b)` for `b > 0`.
pub(crate) fn div_ceil_u128(a: u128, b: u128) -> u128 {
    let q = a / b;
    if a.is_multiple_of(b) {
        q
    } else {
        q + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapping_absorbs_decimal_representation_error() {
        // 0.1 * 3 = 0.30000000000000004 in binary floating point.
        assert_eq!(ceil_count("x", 0.1 * 3.0 * 10.0).unwrap(), 3);
        assert_eq!(floor_count("x", 0.7 * 10.0).unwrap(), 7);
        assert_eq!(floor_count("x", 112.5).unwrap(), 112);
        assert_eq!(ceil_count("x", 13.000_001).unwrap(), 14);
        assert_eq!(floor_count("x", 1e30).unwrap_err().argument(), "x");
        assert_eq!(floor_count("x", -3.0).unwrap(), 0);
        assert_eq!(div_ceil_u128(7, 2), 4);
        assert_eq!(div_ceil_u128(8, 2), 4);
    }
}
