//! The error type of the capacity module.

/// Why a capacity calculation rejected its input.
///
/// Every variant names the offending argument (see [`CapacityError::argument`]), so a
/// caller that feeds user-supplied figures can point at the field to fix. The type is small
/// and `Copy`: rejecting input never allocates.
///
/// ```
/// use stamps::capacity::{min_stamps_for_blast_radius, CapacityError};
/// let err = min_stamps_for_blast_radius(1.5).unwrap_err();
/// assert_eq!(err.argument(), "max_fraction");
/// assert!(matches!(err, CapacityError::OutOfRange { .. }));
/// assert_eq!(
///     err.to_string(),
///     "`max_fraction` must be in (0, 1], got 1.5; give the largest acceptable share of tenants \
///      hit by one stamp failure, e.g. 0.05"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CapacityError {
    /// The argument is NaN or infinite.
    #[error(
        "`{argument}` must be a finite number, got {value}; check for a division by zero or an unset field upstream"
    )]
    NotFinite {
        /// The offending argument.
        argument: &'static str,
        /// The value given.
        value: f64,
    },
    /// The argument is negative where only zero or more makes sense.
    #[error("`{argument}` must not be negative, got {value}")]
    Negative {
        /// The offending argument.
        argument: &'static str,
        /// The value given.
        value: f64,
    },
    /// The argument is zero where it is used as a divisor (or a zero makes the question
    /// meaningless, such as a shard of zero stamps).
    #[error("`{argument}` must be greater than zero: it is a divisor")]
    Zero {
        /// The offending argument.
        argument: &'static str,
    },
    /// The argument is outside its allowed range (for example a blast radius above 1).
    #[error("`{argument}` must be in {range}, got {value}; {hint}")]
    OutOfRange {
        /// The offending argument.
        argument: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range in interval notation, such as `[0, 1)`.
        range: &'static str,
        /// What the caller can do.
        hint: &'static str,
    },
    /// Shares (of regions, of traffic) do not add up to 1 within [`SHARE_TOLERANCE`].
    ///
    /// [`SHARE_TOLERANCE`]: crate::capacity::SHARE_TOLERANCE
    #[error("`{argument}` must add up to 1 (within {tolerance}), got {sum}; give fractions such as 0.5, 0.3, 0.2")]
    SharesDoNotSumToOne {
        /// The offending argument.
        argument: &'static str,
        /// The sum of the shares given.
        sum: f64,
        /// The tolerance allowed around 1.
        tolerance: f64,
    },
    /// A list that must hold at least one entry is empty.
    #[error("`{argument}` must not be empty")]
    Empty {
        /// The offending argument.
        argument: &'static str,
    },
    /// An integer argument exceeds another one that bounds it (such as more failed stamps
    /// than stamps).
    #[error("`{argument}` ({value}) must not exceed `{bound_argument}` ({bound})")]
    ExceedsBound {
        /// The offending argument.
        argument: &'static str,
        /// The value given.
        value: u64,
        /// The argument that bounds it.
        bound_argument: &'static str,
        /// The bound.
        bound: u64,
    },
    /// The result does not fit its type (cents in `u64`, a count in `u64`, a binomial in
    /// `u128`, a duration in [`std::time::Duration`]); `argument` is the input that made it
    /// too large.
    #[error("`{argument}` is too large: the result does not fit in {limit}")]
    Overflow {
        /// The offending argument.
        argument: &'static str,
        /// What the result overflowed.
        limit: &'static str,
    },
}

impl CapacityError {
    /// The name of the argument that was rejected.
    ///
    /// ```
    /// use stamps::capacity::stamps_needed;
    /// assert_eq!(stamps_needed(10, 0).unwrap_err().argument(), "tenants_per_stamp");
    /// ```
    pub fn argument(&self) -> &'static str {
        match *self {
            CapacityError::NotFinite { argument, .. }
            | CapacityError::Negative { argument, .. }
            | CapacityError::Zero { argument }
            | CapacityError::OutOfRange { argument, .. }
            | CapacityError::SharesDoNotSumToOne { argument, .. }
            | CapacityError::Empty { argument }
            | CapacityError::ExceedsBound { argument, .. }
            | CapacityError::Overflow { argument, .. } => argument,
        }
    }
}
