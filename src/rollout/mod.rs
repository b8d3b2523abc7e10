//! Rolling a new version out over the fleet, one wave of stamps at a time.
//!
//! "Deployment Stamps for Availability: Multi-Region Guide" rolls changes out "to one stamp at
//! a time (canary)", with "automatic rollback if any stamp shows elevated errors", and runs
//! scale units of different versions side by side while new tenants go to the updated ones.
//! This module plans such a rollout and judges each wave; the crate deploys nothing: the host
//! runs the deploy between the plan and the judgement, through the same pipeline for every
//! stamp, and placement's [`MinVersion`](crate::placement::MinVersion) /
//! [`AtLeastVersion`](crate::placement::AtLeastVersion) send new tenants to updated stamps.
//!
//! - [`plan_rollout`] orders the stamps that are not on the target version into waves under a
//!   [`RolloutPolicy`]: canaries first (the smallest blast radius: fewest tenants, shared tier
//!   only, so no dedicated or premium tenant is in the first wave), then waves growing by a
//!   factor, at most a set number of stamps per region in a wave, and never more than a set
//!   share of the fleet's tenants changing at once.
//! - [`judge_wave`] says whether a deployed wave may proceed, must hold (still baking, or a
//!   stamp degraded) or should roll back (a stamp unhealthy), with the reasons.
//! - [`RolloutController`] runs a plan one step at a time through the host's [`DeployHook`],
//!   saving each step in the registry's rollout record, so a controller that crashes resumes
//!   where the record says (`RolloutRecord`, `Registry::save_rollout`).
//!
//! ```
//! use std::time::Duration;
//! use stamps::rollout::{judge_wave, plan_rollout, RolloutPolicy, WaveVerdict};
//! use stamps::*;
//! let stamp = |id: u32, region: &str, tenants: u32| {
//!     let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0).unwrap();
//!     let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new(region).unwrap(), cap).unwrap().version("41");
//!     let mut usage = Amounts::default();
//!     for _ in 0..tenants { model::admission::add(&mut usage, &Demand::default(), true); }
//!     StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO), usage)
//! };
//! let fleet = Fleet::new((1..=8).map(|i| stamp(i, ["eu", "us"][(i % 2) as usize], 10 * i)).collect(),
//!     Version(1), Timestamp::ZERO);
//! let plan = plan_rollout(&fleet, "42", &RolloutPolicy::default())?;
//! assert_eq!(plan.waves[0].stamps, [StampId(1)]); // the canary: fewest tenants
//! assert_eq!(plan.waves.iter().map(|w| w.stamps.len()).sum::<usize>(), 8);
//! let health = std::collections::HashMap::from([(StampId(1), HealthStatus::Unhealthy)]);
//! let verdict = judge_wave(&plan.waves[0], &health, Duration::from_secs(900), Duration::from_secs(600));
//! assert!(matches!(verdict, WaveVerdict::RollBack { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod controller;
mod gate;

use std::collections::BTreeMap;
use std::fmt;

pub use controller::{DeployHook, RolloutController};
pub use gate::{judge_wave, WaveVerdict};

use crate::error::InvalidInput;
use crate::model::{version_at_least, Fleet, Region, StampId, StampLoad, StampState, Tier};

/// How [`plan_rollout`] shapes the waves.
///
/// ```
/// use stamps::rollout::RolloutPolicy;
/// let p = RolloutPolicy::default().canaries(2).growth(3.0).per_region(2).max_tenant_share(0.25);
/// assert_eq!((p.canaries, p.per_region), (2, 2));
/// assert!(p.validate().is_ok());
/// assert!(RolloutPolicy::default().growth(0.5).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RolloutPolicy {
    /// Stamps in the first wave (at least 1).
    pub canaries: usize,
    /// Each later wave holds up to this many times the previous wave's stamps (at least 1).
    pub growth: f64,
    /// At most this many stamps of one region in a wave (at least 1).
    pub per_region: usize,
    /// At most this share of the fleet's tenants on the stamps of one wave, in `(0, 1]`; a
    /// stamp holding more than the share on its own goes in a wave by itself.
    pub max_tenant_share: f64,
}

impl Default for RolloutPolicy {
    /// One canary, waves doubling, one stamp per region per wave, at most 20% of tenants at once.
    fn default() -> Self {
        RolloutPolicy {
            canaries: 1,
            growth: 2.0,
            per_region: 1,
            max_tenant_share: 0.2,
        }
    }
}

impl RolloutPolicy {
    /// Sets the number of canary stamps.
    pub fn canaries(mut self, n: usize) -> Self {
        self.canaries = n;
        self
    }

    /// Sets the growth factor between waves.
    pub fn growth(mut self, factor: f64) -> Self {
        self.growth = factor;
        self
    }

    /// Sets the stamps per region per wave.
    pub fn per_region(mut self, n: usize) -> Self {
        self.per_region = n;
        self
    }

    /// Sets the largest share of tenants changing at once.
    pub fn max_tenant_share(mut self, share: f64) -> Self {
        self.max_tenant_share = share;
        self
    }

    /// Checks every field's range.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the field.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.canaries == 0 {
            return Err(InvalidInput::new("canaries", "must be at least 1"));
        }
        if !self.growth.is_finite() || self.growth < 1.0 {
            return Err(InvalidInput::new("growth", "must be a finite factor of at least 1"));
        }
        if self.per_region == 0 {
            return Err(InvalidInput::new("per_region", "must be at least 1"));
        }
        if !(self.max_tenant_share > 0.0 && self.max_tenant_share <= 1.0) {
            return Err(InvalidInput::new("max_tenant_share", "must be in (0, 1]"));
        }
        Ok(())
    }
}

/// One wave: the stamps deployed together, and what they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wave {
    /// Position, from 0 (the canaries).
    pub index: usize,
    /// The stamps, in the order planned.
    pub stamps: Vec<StampId>,
    /// Tenants on them.
    pub tenants: u64,
}

/// A rollout plan ([`plan_rollout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RolloutPlan {
    /// The version rolled out.
    pub target: String,
    /// The waves, in order.
    pub waves: Vec<Wave>,
    /// Stamps already on the target version (or later), left out.
    pub up_to_date: Vec<StampId>,
    /// Decommissioned stamps, left out.
    pub retired: Vec<StampId>,
}

impl fmt::Display for RolloutPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rollout of {}: {} waves, {} stamps up to date",
            self.target,
            self.waves.len(),
            self.up_to_date.len()
        )?;
        for w in &self.waves {
            let ids: Vec<String> = w.stamps.iter().map(ToString::to_string).collect();
            let what = if w.index == 0 { " (canary)" } else { "" };
            writeln!(
                f,
                "  wave {}{what}: {} ({} tenants)",
                w.index,
                ids.join(", "),
                w.tenants
            )?;
        }
        Ok(())
    }
}

/// Plans the rollout of `target` over `fleet` (see the [module docs](self)): every stamp not
/// yet on `target` or later ([`version_at_least`]) and not decommissioned goes in exactly one
/// wave. Canaries are the shared-tier stamps with the fewest tenants (then the lowest id); if
/// the fleet has none, the smallest stamps of any tier. Later waves take stamps smallest first,
/// each wave up to `growth` × the previous one's size, skipping a stamp that would exceed the
/// region limit or the tenant share (it goes in a later wave).
///
/// # Errors
/// [`InvalidInput`] for a policy out of range or an empty target.
pub fn plan_rollout(fleet: &Fleet, target: &str, policy: &RolloutPolicy) -> Result<RolloutPlan, InvalidInput> {
    policy.validate()?;
    if target.trim().is_empty() {
        return Err(InvalidInput::new("target", "must not be empty"));
    }
    let mut up_to_date = Vec::new();
    let mut retired = Vec::new();
    let mut pending: Vec<&StampLoad> = Vec::new();
    for l in &fleet.stamps {
        if l.stamp.state == StampState::Decommissioned {
            retired.push(l.id());
        } else if l
            .stamp
            .spec
            .version
            .as_deref()
            .is_some_and(|v| version_at_least(v, target))
        {
            up_to_date.push(l.id());
        } else {
            pending.push(l);
        }
    }
    let total: u64 = fleet.stamps.iter().map(StampLoad::tenants).sum();
    // At least one tenant's worth, so empty fleets and tiny shares still make progress.
    let share_limit = ((total as f64 * policy.max_tenant_share).floor() as u64).max(1);
    pending.sort_by_key(|l| (l.tenants(), l.id()));
    let canary_pool: Vec<&StampLoad> = {
        let shared: Vec<&StampLoad> = pending
            .iter()
            .copied()
            .filter(|l| l.stamp.spec.tier == Tier::Shared)
            .collect();
        if shared.is_empty() {
            pending.clone()
        } else {
            shared
        }
    };
    let mut waves: Vec<Wave> = Vec::new();
    let mut remaining = pending;
    let mut size = policy.canaries;
    let mut first = true;
    while !remaining.is_empty() {
        let pool: Vec<&StampLoad> = if first {
            let p: Vec<&StampLoad> = remaining
                .iter()
                .copied()
                .filter(|l| canary_pool.iter().any(|c| c.id() == l.id()))
                .collect();
            if p.is_empty() {
                remaining.clone()
            } else {
                p
            }
        } else {
            remaining.clone()
        };
        let mut chosen: Vec<&StampLoad> = Vec::new();
        let mut per_region: BTreeMap<&Region, usize> = BTreeMap::new();
        let mut tenants = 0u64;
        for l in pool {
            if chosen.len() >= size {
                break;
            }
            let region = &l.stamp.spec.region;
            if per_region.get(region).copied().unwrap_or(0) >= policy.per_region {
                continue;
            }
            let after = tenants.saturating_add(l.tenants());
            if after > share_limit && !chosen.is_empty() {
                continue;
            }
            *per_region.entry(region).or_insert(0) += 1;
            tenants = after;
            chosen.push(l);
            if tenants >= share_limit {
                break;
            }
        }
        // Every pool holds at least one stamp and the first always fits, so a wave is never
        // empty; guard anyway so a bug cannot loop forever.
        if chosen.is_empty() {
            break;
        }
        remaining.retain(|l| !chosen.iter().any(|c| c.id() == l.id()));
        waves.push(Wave {
            index: waves.len(),
            stamps: chosen.iter().map(|l| l.id()).collect(),
            tenants,
        });
        let grown = (size as f64 * policy.growth).ceil();
        size = if grown >= usize::MAX as f64 {
            usize::MAX
        } else {
            (grown as usize).max(size)
        };
        first = false;
    }
    Ok(RolloutPlan {
        target: target.to_string(),
        waves,
        up_to_date,
        retired,
    })
}
