//! Judging a deployed wave: proceed, hold or roll back ([`judge_wave`]).

use std::fmt;
use std::time::Duration;

use super::Wave;
use crate::model::{HealthStatus, HealthView};

/// What to do after a wave was deployed ([`judge_wave`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaveVerdict {
    /// Every stamp of the wave is healthy and the wave has baked long enough: deploy the next.
    Proceed,
    /// Wait: the wave is still baking, or a stamp is degraded (not failing, not clean).
    Hold {
        /// Why, one line per cause.
        reasons: Vec<String>,
    },
    /// A stamp of the wave is unhealthy: roll the wave back (the guide's "automatic rollback
    /// if any stamp shows elevated errors") and stop the rollout.
    RollBack {
        /// Why, one line per failing stamp.
        reasons: Vec<String>,
    },
}

impl fmt::Display for WaveVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaveVerdict::Proceed => f.write_str("proceed"),
            WaveVerdict::Hold { reasons } => write!(f, "hold: {}", reasons.join("; ")),
            WaveVerdict::RollBack { reasons } => write!(f, "roll back: {}", reasons.join("; ")),
        }
    }
}

/// Judges a deployed wave from its stamps' health after `baked` of its `bake_time`: any
/// stamp unhealthy → [`WaveVerdict::RollBack`]; else any degraded, or `baked < bake_time` →
/// [`WaveVerdict::Hold`]; else [`WaveVerdict::Proceed`]. Feed it the health the routers use
/// (a `HealthTable`, or a map), taken after the bake.
///
/// ```
/// use std::collections::HashMap;
/// use std::time::Duration;
/// use stamps::rollout::{judge_wave, plan_rollout, RolloutPolicy, WaveVerdict};
/// use stamps::*;
/// # let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
/// # let load = StampLoad::new(Stamp::new(StampSpec::new(StampId(1), "s1", Region::new("eu")?, cap)?,
/// #     StampState::Active, Timestamp::ZERO, Timestamp::ZERO), Amounts::default());
/// # let fleet = Fleet::new(vec![load], Version(1), Timestamp::ZERO);
/// let plan = plan_rollout(&fleet, "42", &RolloutPolicy::default())?;
/// let wave = &plan.waves[0];
/// let bake = Duration::from_secs(600);
/// assert!(matches!(judge_wave(wave, &AllHealthy, Duration::from_secs(60), bake), WaveVerdict::Hold { .. }));
/// assert_eq!(judge_wave(wave, &AllHealthy, bake, bake), WaveVerdict::Proceed);
/// let degraded = HashMap::from([(StampId(1), HealthStatus::Degraded)]);
/// assert!(matches!(judge_wave(wave, &degraded, bake, bake), WaveVerdict::Hold { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn judge_wave(
    wave: &Wave,
    health: &(impl HealthView + ?Sized),
    baked: Duration,
    bake_time: Duration,
) -> WaveVerdict {
    let mut failing = Vec::new();
    let mut held = Vec::new();
    for s in &wave.stamps {
        match health.status(*s) {
            HealthStatus::Unhealthy => failing.push(format!("{s} is unhealthy")),
            HealthStatus::Degraded => held.push(format!("{s} is degraded")),
            HealthStatus::Healthy => {}
        }
    }
    if !failing.is_empty() {
        return WaveVerdict::RollBack { reasons: failing };
    }
    if baked < bake_time {
        held.push(format!("baked {} s of {} s", baked.as_secs(), bake_time.as_secs()));
    }
    if held.is_empty() {
        WaveVerdict::Proceed
    } else {
        WaveVerdict::Hold { reasons: held }
    }
}
