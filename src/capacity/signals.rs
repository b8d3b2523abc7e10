//! Provisioning signals read off a live [`Fleet`] snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use super::num;
use super::units::SECONDS_PER_DAY;
use super::{CapacityError, TenantsPerDay};
use crate::model::{Fleet, Region, Resource, StampId, StampLoad, StampState};
use crate::time::Timestamp;

/// What [`provisioning_signals`] measures against: the trigger utilization, the provisioning
/// lead time, and how fast each region gains tenants.
///
/// ```
/// use stamps::capacity::{SignalPolicy, TenantsPerDay};
/// use stamps::Region;
/// use std::time::Duration;
/// let eu = Region::new("eu-west")?;
/// let policy = SignalPolicy::new(0.75, TenantsPerDay(5.0), Duration::from_secs(2 * 3_600))
///     .region_growth(eu.clone(), TenantsPerDay(2.0));
/// assert_eq!(policy.growth_for(&eu), TenantsPerDay(2.0));
/// assert_eq!(policy.growth_for(&Region::new("us-east")?), TenantsPerDay(5.0));
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SignalPolicy {
    /// Fraction of a stamp's usable capacity (its soft limit, headroom applied) at which a new
    /// stamp must be ready, in `(0, 1]`.
    pub trigger_utilization: f64,
    /// Time from starting to provision a stamp to its taking tenants.
    pub lead_time: Duration,
    /// New tenants per day in a region without an entry in `region_growth`.
    pub default_growth: TenantsPerDay,
    /// New tenants per day, per region.
    pub region_growth: BTreeMap<Region, TenantsPerDay>,
}

impl SignalPolicy {
    /// A policy with one growth rate for every region. Values are validated by
    /// [`provisioning_signals`].
    ///
    /// ```
    /// use stamps::capacity::{SignalPolicy, TenantsPerDay};
    /// use std::time::Duration;
    /// let p = SignalPolicy::new(0.75, TenantsPerDay(5.0), Duration::from_secs(7_200));
    /// assert_eq!(p.trigger_utilization, 0.75);
    /// ```
    pub fn new(trigger_utilization: f64, default_growth: TenantsPerDay, lead_time: Duration) -> Self {
        SignalPolicy {
            trigger_utilization,
            lead_time,
            default_growth,
            region_growth: BTreeMap::new(),
        }
    }

    /// The same policy with `growth` for `region`.
    ///
    /// ```
    /// use stamps::capacity::{SignalPolicy, TenantsPerDay};
    /// use stamps::Region;
    /// use std::time::Duration;
    /// let p = SignalPolicy::new(0.75, TenantsPerDay(0.0), Duration::ZERO)
    ///     .region_growth(Region::new("ap-south")?, TenantsPerDay(1.5));
    /// assert_eq!(p.region_growth.len(), 1);
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn region_growth(mut self, region: Region, growth: TenantsPerDay) -> Self {
        self.region_growth.insert(region, growth);
        self
    }

    /// The growth rate that applies to `region`.
    ///
    /// ```
    /// use stamps::capacity::{SignalPolicy, TenantsPerDay};
    /// use stamps::Region;
    /// use std::time::Duration;
    /// let p = SignalPolicy::new(0.75, TenantsPerDay(3.0), Duration::ZERO);
    /// assert_eq!(p.growth_for(&Region::new("eu")?), TenantsPerDay(3.0));
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn growth_for(&self, region: &Region) -> TenantsPerDay {
        self.region_growth.get(region).copied().unwrap_or(self.default_growth)
    }
}

/// One stamp's signal in a [`ProvisioningReport`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StampSignal {
    /// The stamp.
    pub stamp: StampId,
    /// Its region.
    pub region: Region,
    /// Its lifecycle state.
    pub state: StampState,
    /// Tenants served or reserved.
    pub tenants: u64,
    /// The resource that binds: the one leaving the least [`room`](Self::room), ties going to
    /// the highest utilization of its soft limit (for a stamp whose tenants all look alike,
    /// the two agree). `None` for a stamp without limits.
    pub bottleneck: Option<Resource>,
    /// Usage of the bottleneck over its soft limit (`limit × (1 − headroom)`); 0 without
    /// limits. 1.0 means placement considers the stamp full.
    pub utilization: f64,
    /// Whole tenants the stamp can still take before it reaches the trigger: per resource,
    /// `⌊⌊soft_limit / demand per tenant⌋ × trigger⌋ − tenants` (the stamp's capacity in whole
    /// tenants, as [`tenants_per_stamp`](super::tenants_per_stamp) computes it, then the
    /// trigger as [`provisioning_thresholds`](super::provisioning_thresholds) does), at least
    /// 0, the smallest over resources. Demand per tenant is 1 for [`Resource::Tenants`] and the
    /// stamp's average (usage / tenants) otherwise, or the fleet's average for a stamp without
    /// tenants. `None` when nothing bounds the stamp: no limits, or only resources that no
    /// tenant uses.
    pub room: Option<u64>,
    /// Time until the trigger if the region's growth all landed on this stamp (as with
    /// fill-first placement): `room / growth`. `None` with zero growth or unbounded room.
    pub time_to_trigger: Option<Duration>,
}

/// Why a region needs a new stamp.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ProvisionReason {
    /// Every stamp taking tenants in the region is at or past its trigger.
    TriggerReached,
    /// The region's stamps have room for `room` more tenants before their triggers, which
    /// growth fills in `runway`: no more than growth brings in one lead time (rounded up to a
    /// whole tenant), so provisioning must start now or before the deadline.
    AlertThresholdReached {
        /// Tenants the region can still take before its triggers.
        room: u64,
        /// Time until growth fills that room.
        runway: Duration,
    },
    /// The region gains tenants but has no `Active` or `Provisioning` stamp.
    NoAcceptingStamp,
}

/// A recommendation to provision a stamp in `region` by `deadline`.
///
/// The deadline is when the region's room runs out less the lead time; it is the snapshot's
/// time when that is already past.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProvisionNewStamp {
    /// Where the new stamp is needed.
    pub region: Region,
    /// Why.
    pub reason: ProvisionReason,
    /// Start provisioning no later than this.
    pub deadline: Timestamp,
}

/// The outcome of [`provisioning_signals`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProvisioningReport {
    /// When the fleet snapshot was taken.
    pub at: Timestamp,
    /// One signal per stamp, in the snapshot's (stamp id) order.
    pub stamps: Vec<StampSignal>,
    /// At most one recommendation per region, in region order.
    pub recommendations: Vec<ProvisionNewStamp>,
}

/// Reads provisioning signals off a fleet snapshot.
///
/// For every stamp: its bottleneck (the resource leaving the least room before the trigger,
/// which for alike tenants is the one with the highest usage over its soft limit), that
/// resource's utilization, its room before the trigger in whole tenants, and the time for
/// its region's growth to fill that room. Resources other than [`Resource::Tenants`] are
/// converted to tenants with the stamp's average demand per tenant (usage / tenants; for an
/// empty stamp, the fleet's average), that is, new tenants are assumed to look like the
/// current ones.
///
/// Then per region: `Active` and `Provisioning` stamps contribute their room (a stamp being
/// provisioned is the answer to an earlier signal, so it silences the next one); `Draining`
/// and `Decommissioned` stamps contribute none. A region with growth `g` tenants/day and
/// room `R` gets a [`ProvisionNewStamp`] when `R ≤ ⌈g × lead_time⌉`. This is
/// [`provisioning_thresholds`](super::provisioning_thresholds)' alert rule in the region's
/// terms: for a single stamp the recommendation appears exactly when its tenant count reaches
/// the alert threshold. The deadline is `at + R / g − lead_time` (not before `at`).
/// Regions with zero growth get no recommendation.
///
/// # Errors
/// `trigger_utilization` NaN, infinite or outside `(0, 1]`; `default_growth` or
/// `region_growth` NaN, infinite or negative.
///
/// # Example
/// The example stamp of the "Math & Calculations" section of
/// *Deployment Stamps for Availability: Multi-Region Guide* (200 tenant slots with 25%
/// headroom: 150 usable), trigger 75% (112
/// tenants), growth 5 tenants/day and a 2-hour lead time: at 110 tenants there are 2 tenants
/// of room and no signal; at 111 the alert threshold is reached.
/// ```
/// use stamps::capacity::{provisioning_signals, ProvisionReason, SignalPolicy, TenantsPerDay};
/// use stamps::*;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// let capacity = Capacity::new([(Resource::Tenants, 200.0)], 0.25)?;
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us-east")?, capacity)?).await?;
/// let policy = SignalPolicy::new(0.75, TenantsPerDay(5.0), Duration::from_secs(2 * 3_600));
///
/// for i in 0..111 {
///     let tenant = TenantSpec::new(TenantId::new(&format!("t{i}"))?);
///     registry.assign(&tenant, StampId(1)).await?;
///     let report = provisioning_signals(&registry.fleet().await?, &policy)?;
///     if i == 109 {
///         assert_eq!(report.stamps[0].room, Some(2));
///         assert!(report.recommendations.is_empty());
///     }
/// }
/// let fleet = registry.fleet().await?;
/// let report = provisioning_signals(&fleet, &policy)?;
/// assert_eq!(report.stamps[0].tenants, 111);
/// assert_eq!(report.stamps[0].bottleneck, Some(Resource::Tenants));
/// assert_eq!(report.stamps[0].room, Some(1));
/// let rec = &report.recommendations[0];
/// assert_eq!(rec.region.as_str(), "us-east");
/// assert!(matches!(rec.reason, ProvisionReason::AlertThresholdReached { room: 1, .. }));
/// // One tenant of room at 5 a day is 4.8 hours; start within 2.8 hours.
/// assert_eq!(rec.deadline.saturating_since(fleet.at), Duration::from_secs(2 * 3_600 + 48 * 60));
/// # Ok(()) }
/// ```
pub fn provisioning_signals(fleet: &Fleet, policy: &SignalPolicy) -> Result<ProvisioningReport, CapacityError> {
    let trigger = num::fraction_open_closed(
        "trigger_utilization",
        policy.trigger_utilization,
        "give the utilization of usable capacity at which a new stamp must be ready, e.g. 0.75",
    )?;
    num::non_negative("default_growth", policy.default_growth.0)?;
    for growth in policy.region_growth.values() {
        num::non_negative("region_growth", growth.0)?;
    }

    // Per region: summed room of stamps taking tenants (None = unbounded), and whether any
    // stamp takes tenants at all.
    let fleet_demand = fleet_average_demand(fleet);
    let mut regions: BTreeMap<&Region, (Option<u64>, bool)> = BTreeMap::new();
    let mut stamps = Vec::with_capacity(fleet.stamps.len());
    for load in &fleet.stamps {
        let region = &load.stamp.spec.region;
        let growth = policy.growth_for(region).0;
        let signal = stamp_signal(load, trigger, growth, &fleet_demand);
        let entry = regions.entry(region).or_insert((Some(0), false));
        if matches!(load.stamp.state, StampState::Active | StampState::Provisioning) {
            entry.1 = true;
            entry.0 = match (entry.0, signal.room) {
                (Some(sum), Some(room)) => Some(sum.saturating_add(room)),
                _ => None,
            };
        }
        stamps.push(signal);
    }

    let mut recommendations = Vec::new();
    for (region, (room, accepting)) in regions {
        let growth = policy.growth_for(region).0;
        if growth == 0.0 {
            continue;
        }
        let (reason, runway) = if !accepting {
            (ProvisionReason::NoAcceptingStamp, Duration::ZERO)
        } else if let Some(room) = room {
            let buffer = num::ceil_count("region_growth", TenantsPerDay(growth).tenants_in(policy.lead_time))
                .unwrap_or(u64::MAX);
            if room > buffer {
                continue;
            }
            let runway = days(room as f64 / growth);
            if room == 0 {
                (ProvisionReason::TriggerReached, Duration::ZERO)
            } else {
                (ProvisionReason::AlertThresholdReached { room, runway }, runway)
            }
        } else {
            continue;
        };
        recommendations.push(ProvisionNewStamp {
            region: region.clone(),
            reason,
            deadline: fleet.at + runway.saturating_sub(policy.lead_time),
        });
    }
    Ok(ProvisioningReport {
        at: fleet.at,
        stamps,
        recommendations,
    })
}

/// `d` days as a duration, saturating at [`Duration::MAX`].
fn days(d: f64) -> Duration {
    Duration::try_from_secs_f64(d * SECONDS_PER_DAY).unwrap_or(Duration::MAX)
}

/// Average demand per tenant of every resource, in thousandths, over all stamps with tenants.
fn fleet_average_demand(fleet: &Fleet) -> BTreeMap<&Resource, f64> {
    let mut totals: BTreeMap<&Resource, (f64, f64)> = BTreeMap::new();
    for load in &fleet.stamps {
        let tenants = load.tenants();
        if tenants == 0 {
            continue;
        }
        for (resource, amount) in load.usage.iter() {
            let entry = totals.entry(resource).or_insert((0.0, 0.0));
            entry.0 += amount.as_milli() as f64;
            entry.1 += tenants as f64;
        }
    }
    totals
        .into_iter()
        .filter(|(_, (used, _))| *used > 0.0)
        .map(|(resource, (used, tenants))| (resource, used / tenants))
        .collect()
}

fn stamp_signal(load: &StampLoad, trigger: f64, growth: f64, fleet_demand: &BTreeMap<&Resource, f64>) -> StampSignal {
    let capacity = &load.stamp.spec.capacity;
    let tenants = load.tenants();
    // The binding resource: the smallest room, then the highest utilization, then the first
    // in resource order. Resources without a room estimate bind only if none has one.
    let mut bottleneck: Option<(&Resource, f64, Option<u64>)> = None;
    for (resource, limit) in capacity.limits().iter() {
        // Thousandths of a unit; a soft limit of zero counts as one thousandth so that the
        // ratio stays finite (the stamp is full either way).
        let soft = capacity.headroom_for(resource).soft_limit(limit).as_milli().max(1) as f64;
        let used = load.usage.get(resource).as_milli() as f64;
        let utilization = used / soft;
        let per_tenant = if *resource == Resource::Tenants {
            Some(1_000.0)
        } else if tenants > 0 {
            // None when this stamp's tenants do not use the resource.
            (used > 0.0).then(|| used / tenants as f64)
        } else {
            // An empty stamp: assume tenants like the fleet's, if any tenant uses it.
            fleet_demand.get(resource).copied()
        };
        // As `tenants_per_stamp` then `provisioning_thresholds`: whole tenants that fit the
        // soft limit, then the trigger as a whole number of them. Both ratios are finite and
        // not NaN (soft, used and per_tenant are finite, per_tenant > 0); the fallbacks only
        // catch counts beyond u64.
        let room = per_tenant.map(|per_tenant| {
            let fit = num::floor_count("usage", soft / per_tenant).unwrap_or(u64::MAX);
            let at_trigger = num::floor_count("usage", fit as f64 * trigger)
                .unwrap_or(u64::MAX)
                .min(fit);
            at_trigger.saturating_sub(tenants)
        });
        let binds = match bottleneck {
            None => true,
            Some((_, best_utilization, best_room)) => match (room, best_room) {
                (Some(r), Some(b)) => r < b || (r == b && utilization > best_utilization),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => utilization > best_utilization,
            },
        };
        if binds {
            bottleneck = Some((resource, utilization, room));
        }
    }
    let room = bottleneck.and_then(|(_, _, room)| room);
    let time_to_trigger = match room {
        Some(room) if growth > 0.0 => Some(days(room as f64 / growth)),
        _ => None,
    };
    StampSignal {
        stamp: load.id(),
        region: load.stamp.spec.region.clone(),
        state: load.stamp.state,
        tenants,
        bottleneck: bottleneck.map(|(r, _, _)| r.clone()),
        utilization: bottleneck.map_or(0.0, |(_, u, _)| u),
        room,
        time_to_trigger,
    }
}
