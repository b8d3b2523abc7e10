//! Units: money in cents, rates per second and per day, bytes, headroom.

use std::fmt;
use std::time::Duration;

/// Seconds in a day, for converting per-day rates.
pub(crate) const SECONDS_PER_DAY: f64 = 86_400.0;

/// An amount of money in whole cents (US dollars by default in [`Display`](fmt::Display)).
///
/// Totals are integer sums, so there is no floating-point drift: twenty servers at $200 are
/// exactly `$4,000.00`. Arithmetic is checked and returns `None` on overflow; divisions take a
/// [`Rounding`] rule so that every rounding is a visible decision.
///
/// ```
/// use stamps::capacity::{Money, Rounding};
/// let per_stamp = Money::from_dollars(7_450);
/// assert_eq!(per_stamp.to_string(), "$7,450.00");
/// assert_eq!(per_stamp.cents(), 745_000);
/// let per_tenant = per_stamp.checked_div_rounded(150, Rounding::HalfUp);
/// assert_eq!(per_tenant, Some(Money::from_cents(4_967)));
/// assert_eq!(Money::from_cents(4_967).to_string(), "$49.67");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money {
    cents: u64,
}

/// How a division of money (or of a count) rounds a result that is not whole.
///
/// ```
/// use stamps::capacity::{Money, Rounding};
/// let ten = Money::from_cents(10);
/// assert_eq!(ten.checked_div_rounded(4, Rounding::Down), Some(Money::from_cents(2)));
/// assert_eq!(ten.checked_div_rounded(4, Rounding::HalfUp), Some(Money::from_cents(3)));
/// assert_eq!(ten.checked_div_rounded(3, Rounding::Up), Some(Money::from_cents(4)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rounding {
    /// Toward zero (truncate).
    Down,
    /// To the nearest cent, halves away from zero (commercial rounding).
    HalfUp,
    /// Away from zero: used for amounts that must be *at least* a figure, such as a minimum
    /// price.
    Up,
}

impl Money {
    /// Zero.
    pub const ZERO: Money = Money { cents: 0 };

    /// An amount of whole cents.
    ///
    /// ```
    /// use stamps::capacity::Money;
    /// assert_eq!(Money::from_cents(12_479).to_string(), "$124.79");
    /// ```
    pub const fn from_cents(cents: u64) -> Self {
        Money { cents }
    }

    /// An amount of whole dollars (a `u32`, so the conversion to cents cannot overflow).
    ///
    /// ```
    /// use stamps::capacity::Money;
    /// assert_eq!(Money::from_dollars(200).cents(), 20_000);
    /// ```
    pub const fn from_dollars(dollars: u32) -> Self {
        Money {
            cents: dollars as u64 * 100,
        }
    }

    /// The amount in cents.
    ///
    /// ```
    /// use stamps::capacity::Money;
    /// assert_eq!(Money::from_dollars(3).cents(), 300);
    /// ```
    pub const fn cents(self) -> u64 {
        self.cents
    }

    /// `self + other`, or `None` on overflow.
    ///
    /// ```
    /// use stamps::capacity::Money;
    /// let sum = Money::from_dollars(4_000).checked_add(Money::from_dollars(2_400));
    /// assert_eq!(sum, Some(Money::from_dollars(6_400)));
    /// assert_eq!(Money::from_cents(u64::MAX).checked_add(Money::from_cents(1)), None);
    /// ```
    pub const fn checked_add(self, other: Money) -> Option<Money> {
        match self.cents.checked_add(other.cents) {
            Some(cents) => Some(Money { cents }),
            None => None,
        }
    }

    /// `self × quantity`, or `None` on overflow.
    ///
    /// ```
    /// use stamps::capacity::Money;
    /// assert_eq!(Money::from_dollars(7_450).checked_mul(67), Some(Money::from_dollars(499_150)));
    /// assert_eq!(Money::from_cents(u64::MAX).checked_mul(2), None);
    /// ```
    pub const fn checked_mul(self, quantity: u64) -> Option<Money> {
        match self.cents.checked_mul(quantity) {
            Some(cents) => Some(Money { cents }),
            None => None,
        }
    }

    /// `self ÷ divisor` rounded to a whole cent by `rounding`, or `None` if `divisor` is zero.
    ///
    /// ```
    /// use stamps::capacity::{Money, Rounding};
    /// let revenue = Money::from_dollars(1_247_875);
    /// assert_eq!(revenue.checked_div_rounded(10_000, Rounding::Up), Some(Money::from_cents(12_479)));
    /// assert_eq!(revenue.checked_div_rounded(0, Rounding::Up), None);
    /// ```
    pub const fn checked_div_rounded(self, divisor: u64, rounding: Rounding) -> Option<Money> {
        if divisor == 0 {
            return None;
        }
        let q = self.cents / divisor;
        let r = self.cents % divisor;
        let up = match rounding {
            Rounding::Down => false,
            Rounding::Up => r != 0,
            // r >= divisor - r  <=>  2r >= divisor, without overflowing 2r.
            Rounding::HalfUp => r >= divisor - r,
        };
        // q + 1 cannot overflow: rounding up needs r > 0, so divisor >= 2 and
        // q <= u64::MAX / 2.
        Some(Money {
            cents: if up { q + 1 } else { q },
        })
    }
}

impl fmt::Display for Money {
    /// `$1,247,875.00`: a dollar sign, thousands separated by commas, two decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dollars = self.cents / 100;
        let cents = self.cents % 100;
        let digits = dollars.to_string();
        let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 4);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        f.pad(&format!("${grouped}.{cents:02}"))
    }
}

/// A request rate in requests per second.
///
/// A plain unit carrier: the functions that take one validate it (finite, not negative,
/// not zero where it divides) and name the argument when they reject it.
///
/// ```
/// use stamps::capacity::RequestsPerSecond;
/// let per_server = RequestsPerSecond(100.0);
/// assert_eq!(per_server.get(), 100.0);
/// assert_eq!(per_server.to_string(), "100 rps");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct RequestsPerSecond(pub f64);

impl RequestsPerSecond {
    /// The rate in requests per second.
    ///
    /// ```
    /// use stamps::capacity::RequestsPerSecond;
    /// assert_eq!(RequestsPerSecond(1_500.0).get(), 1_500.0);
    /// ```
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for RequestsPerSecond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rps", self.0)
    }
}

/// A growth rate in tenants per day.
///
/// ```
/// use stamps::capacity::TenantsPerDay;
/// use std::time::Duration;
/// let growth = TenantsPerDay(5.0);
/// assert_eq!(growth.tenants_in(Duration::from_secs(2 * 86_400)), 10.0);
/// // Two hours at five a day is five twelfths of a tenant, not ten tenants.
/// assert!((growth.tenants_in(Duration::from_secs(2 * 3_600)) - 5.0 / 12.0).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct TenantsPerDay(pub f64);

impl TenantsPerDay {
    /// The rate in tenants per day.
    ///
    /// ```
    /// use stamps::capacity::TenantsPerDay;
    /// assert_eq!(TenantsPerDay(5.0).get(), 5.0);
    /// ```
    pub const fn get(self) -> f64 {
        self.0
    }

    /// Tenants added over `period` at this rate: `rate × period / 1 day`. Not validated (NaN in,
    /// NaN out); the planning functions validate the rate first.
    ///
    /// ```
    /// use stamps::capacity::TenantsPerDay;
    /// use std::time::Duration;
    /// assert_eq!(TenantsPerDay(24.0).tenants_in(Duration::from_secs(3_600)), 1.0);
    /// ```
    pub fn tenants_in(self, period: Duration) -> f64 {
        self.0 * period.as_secs_f64() / SECONDS_PER_DAY
    }
}

impl fmt::Display for TenantsPerDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} tenants/day", self.0)
    }
}

/// An amount of data in bytes.
///
/// ```
/// use stamps::capacity::Bytes;
/// assert_eq!(Bytes::from_gib(2).get(), 2 * 1024 * 1024 * 1024);
/// assert_eq!(Bytes::from_tib(1), Bytes::from_gib(1024));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `n` mebibytes (2^20 bytes each); a `u32` so it cannot overflow.
    ///
    /// ```
    /// use stamps::capacity::Bytes;
    /// assert_eq!(Bytes::from_mib(1).get(), 1_048_576);
    /// ```
    pub const fn from_mib(n: u32) -> Self {
        Bytes((n as u64) << 20)
    }

    /// `n` gibibytes (2^30 bytes each); a `u32` so it cannot overflow.
    ///
    /// ```
    /// use stamps::capacity::Bytes;
    /// assert_eq!(Bytes::from_gib(1).get(), 1 << 30);
    /// ```
    pub const fn from_gib(n: u32) -> Self {
        Bytes((n as u64) << 30)
    }

    /// `n` tebibytes (2^40 bytes each); a `u16` so it cannot overflow.
    ///
    /// ```
    /// use stamps::capacity::Bytes;
    /// assert_eq!(Bytes::from_tib(1).get(), 1 << 40);
    /// ```
    pub const fn from_tib(n: u16) -> Self {
        Bytes((n as u64) << 40)
    }

    /// The amount in bytes.
    ///
    /// ```
    /// use stamps::capacity::Bytes;
    /// assert_eq!(Bytes(10).get(), 10);
    /// ```
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A data rate in bytes per second (for example restore throughput from backups).
///
/// ```
/// use stamps::capacity::BytesPerSecond;
/// assert_eq!(BytesPerSecond::from_mib_per_sec(1.0).get(), 1_048_576.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct BytesPerSecond(pub f64);

impl BytesPerSecond {
    /// A rate of `n` mebibytes per second.
    ///
    /// ```
    /// use stamps::capacity::BytesPerSecond;
    /// assert_eq!(BytesPerSecond::from_mib_per_sec(0.5).get(), 524_288.0);
    /// ```
    pub fn from_mib_per_sec(n: f64) -> Self {
        BytesPerSecond(n * 1_048_576.0)
    }

    /// The rate in bytes per second.
    ///
    /// ```
    /// use stamps::capacity::BytesPerSecond;
    /// assert_eq!(BytesPerSecond(8.0).get(), 8.0);
    /// ```
    pub const fn get(self) -> f64 {
        self.0
    }
}

/// The usable fraction of a limit, `1 − headroom`, exact for headrooms in parts per million.
pub(crate) fn usable_fraction(headroom: crate::model::Headroom) -> f64 {
    f64::from(1_000_000 - headroom.as_ppm().min(999_999)) / 1_000_000.0
}
