//! When to provision a new stamp: the trigger point and the alert threshold ahead of it.

use std::time::Duration;

use super::num;
use super::{CapacityError, TenantsPerDay};

/// The outcome of [`provisioning_thresholds`].
///
/// ```
/// use stamps::capacity::{provisioning_thresholds, TenantsPerDay};
/// use std::time::Duration;
/// let t = provisioning_thresholds(150, 0.75, TenantsPerDay(5.0), Duration::from_secs(2 * 86_400))?;
/// assert_eq!((t.trigger, t.alert), (112, 102));
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ProvisioningThresholds {
    /// Tenants one stamp holds.
    pub capacity: u64,
    /// Tenant count at which a new stamp must be ready: `⌊capacity × trigger_utilization⌋`.
    pub trigger: u64,
    /// Tenants expected to arrive during the lead time: `growth × lead_time` (a fraction of
    /// a tenant is possible, so this stays a float).
    pub buffer_tenants: f64,
    /// Tenant count at which to start provisioning, so that the new stamp is ready when the
    /// trigger is reached: `⌊trigger − buffer_tenants⌋`, and 0 when the buffer exceeds the
    /// trigger (provision now).
    pub alert: u64,
    /// The growth rate used.
    pub growth: TenantsPerDay,
    /// The lead time used.
    pub lead_time: Duration,
}

/// The trigger point and the alert threshold for provisioning a new stamp.
///
/// - `trigger = ⌊capacity × trigger_utilization⌋` tenants;
/// - `buffer = growth [tenants/day] × lead_time [days]` tenants;
/// - `alert = ⌊trigger − buffer⌋` tenants (at least 0).
///
/// Both round **down**: a threshold reached one tenant early costs nothing, one reached late
/// means the new stamp is not ready in time. The alert is the largest count `c` with
/// `(trigger − c) / growth ≥ lead_time`.
///
/// The units matter. Calculation 4 of *Deployment Stamps for Availability: Multi-Region
/// Guide* subtracts `5 × 2 = 10` tenants with a lead time of
/// *2 hours* and a growth of *5 tenants/day*, which is only right for a *2-day* buffer. For
/// 2 hours the buffer is `5 × 2/24 ≈ 0.417` tenants and the alert is `⌊111.58⌋ = 111`.
///
/// # Errors
/// `trigger_utilization` NaN, infinite or outside `(0, 1]`; `growth` NaN, infinite or
/// negative; [`CapacityError::Overflow`] (`growth`) if the buffer is infinite.
///
/// # Example
/// ```
/// use stamps::capacity::{provisioning_thresholds, TenantsPerDay};
/// use std::time::Duration;
/// let growth = TenantsPerDay(5.0);
/// // The guide's figures, which hold with a 2-day buffer:
/// let two_days = provisioning_thresholds(150, 0.75, growth, Duration::from_secs(2 * 86_400))?;
/// assert_eq!((two_days.trigger, two_days.alert), (112, 102));
/// // The guide's stated 2-hour lead time:
/// let two_hours = provisioning_thresholds(150, 0.75, growth, Duration::from_secs(2 * 3_600))?;
/// assert_eq!((two_hours.trigger, two_hours.alert), (112, 111));
/// assert!((two_hours.buffer_tenants - 5.0 / 12.0).abs() < 1e-12);
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn provisioning_thresholds(
    capacity: u64,
    trigger_utilization: f64,
    growth: TenantsPerDay,
    lead_time: Duration,
) -> Result<ProvisioningThresholds, CapacityError> {
    let utilization = num::fraction_open_closed(
        "trigger_utilization",
        trigger_utilization,
        "give the utilization at which a new stamp must be ready, e.g. 0.75",
    )?;
    let rate = num::non_negative("growth", growth.0)?;
    let trigger = num::floor_count("trigger_utilization", capacity as f64 * utilization)?;
    // Never above capacity, whatever float rounding does with huge capacities.
    let trigger = trigger.min(capacity);
    let buffer_tenants = TenantsPerDay(rate).tenants_in(lead_time);
    if !buffer_tenants.is_finite() {
        return Err(CapacityError::Overflow {
            argument: "growth",
            limit: "f64",
        });
    }
    let alert = num::floor_count("growth", trigger as f64 - buffer_tenants)?.min(trigger);
    Ok(ProvisioningThresholds {
        capacity,
        trigger,
        buffer_tenants,
        alert,
        growth: TenantsPerDay(rate),
        lead_time,
    })
}

/// Time until a stamp at `current` tenants reaches `threshold`, growing at `growth`:
/// `(threshold − current) / growth`. `Some(Duration::ZERO)` if it is already there, `None`
/// if it never gets there (zero growth) or the time does not fit a [`Duration`].
///
/// # Errors
/// `growth` NaN, infinite or negative.
///
/// # Example
/// ```
/// use stamps::capacity::{time_until, TenantsPerDay};
/// use std::time::Duration;
/// assert_eq!(time_until(102, 112, TenantsPerDay(5.0))?, Some(Duration::from_secs(2 * 86_400)));
/// assert_eq!(time_until(120, 112, TenantsPerDay(5.0))?, Some(Duration::ZERO));
/// assert_eq!(time_until(100, 112, TenantsPerDay(0.0))?, None);
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn time_until(current: u64, threshold: u64, growth: TenantsPerDay) -> Result<Option<Duration>, CapacityError> {
    let rate = num::non_negative("growth", growth.0)?;
    if current >= threshold {
        return Ok(Some(Duration::ZERO));
    }
    if rate == 0.0 {
        return Ok(None);
    }
    let days = (threshold - current) as f64 / rate;
    Ok(Duration::try_from_secs_f64(days * super::units::SECONDS_PER_DAY).ok())
}
