//! Driving a rollout: [`RolloutController`] persists each step in the registry's rollout
//! record and calls the host's [`DeployHook`], so a controller that crashes resumes where
//! the record says.

use std::time::Duration;

use async_trait::async_trait;

use super::{judge_wave, RolloutPlan, Wave, WaveVerdict};
use crate::error::{Error, Result, Subject};
use crate::model::{HealthView, RolloutId, RolloutRecord, RolloutState, StampId};
use crate::registry::Registry;
use crate::time::Timestamp;

/// The host's deploy: the crate plans and judges, the host changes stamps.
///
/// # Contract
/// - `deploy(stamps, version)` brings every listed stamp to `version` and returns once they
///   run it; `roll_back(stamps, version)` brings them back to what they ran before. Both are
///   **idempotent**: a controller that crashed after calling one and before saving the record
///   calls it again for the same stamps.
/// - An `Err` leaves the rollout where it was (deploying the wave): the next
///   [`RolloutController::step`] calls the hook again; [`RolloutController::halt`] stops it.
///
/// # Implementing
/// Call your deployment system (a pipeline trigger, a Kubernetes rollout, a Terraform apply)
/// and wait for it under your own timeout; return the failure's text. Under
/// `#[stamps::async_trait]`.
///
/// ```
/// use stamps::rollout::DeployHook;
/// use stamps::StampId;
/// struct Pipeline;
/// #[stamps::async_trait]
/// impl DeployHook for Pipeline {
///     async fn deploy(&self, stamps: &[StampId], version: &str) -> Result<(), String> {
///         println!("deploy {version} to {stamps:?}");
///         Ok(())
///     }
///     async fn roll_back(&self, stamps: &[StampId], version: &str) -> Result<(), String> {
///         println!("roll {stamps:?} back from {version}");
///         Ok(())
///     }
/// }
/// # let _ = Pipeline;
/// ```
#[async_trait]
pub trait DeployHook: Send + Sync {
    /// Deploys `version` to `stamps`.
    async fn deploy(&self, stamps: &[StampId], version: &str) -> std::result::Result<(), String>;
    /// Rolls `stamps` back from `version`.
    async fn roll_back(&self, stamps: &[StampId], version: &str) -> std::result::Result<(), String>;
}

#[async_trait]
impl<H: DeployHook + ?Sized> DeployHook for std::sync::Arc<H> {
    async fn deploy(&self, stamps: &[StampId], version: &str) -> std::result::Result<(), String> {
        (**self).deploy(stamps, version).await
    }
    async fn roll_back(&self, stamps: &[StampId], version: &str) -> std::result::Result<(), String> {
        (**self).roll_back(stamps, version).await
    }
}

/// Runs rollouts one step at a time, each step saved in the registry's rollout record
/// ([`Registry::save_rollout`], optimistic on its revision: two controllers never both act
/// on one step).
///
/// A step: **deploying** a wave calls [`DeployHook::deploy`] and moves to **baking** (noting
/// when); **baking** judges the wave ([`judge_wave`]) once `bake_time` has passed: proceed
/// (next wave deploying, or **completed** after the last), hold (nothing changes), or roll
/// back ([`DeployHook::roll_back`], then **rolled back**, the reasons in the note).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use stamps::rollout::{plan_rollout, DeployHook, RolloutController, RolloutPolicy};
/// use stamps::*;
/// struct Noop;
/// #[stamps::async_trait]
/// impl DeployHook for Noop {
///     async fn deploy(&self, _: &[StampId], _: &str) -> Result<(), String> { Ok(()) }
///     async fn roll_back(&self, _: &[StampId], _: &str) -> Result<(), String> { Ok(()) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Arc::new(InMemoryRegistry::new());
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?.version("41")).await?;
/// let plan = plan_rollout(&registry.fleet().await?, "42", &RolloutPolicy::default())?;
/// let controller = RolloutController::new(registry.clone(), Noop, Duration::from_secs(600));
/// let mut r = controller.start(&plan).await?;
/// r = controller.step(r.id, &AllHealthy, Timestamp::ZERO).await?; // deployed: baking
/// assert_eq!(r.state, RolloutState::Baking);
/// r = controller.step(r.id, &AllHealthy, Timestamp::from_millis(600_000)).await?;
/// assert_eq!(r.state, RolloutState::Completed);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RolloutController<R: ?Sized, H> {
    registry: std::sync::Arc<R>,
    hook: H,
    bake_time: Duration,
}

impl<R: Registry + ?Sized, H: DeployHook> RolloutController<R, H> {
    /// A controller over `registry`, deploying through `hook`, baking each wave `bake_time`.
    pub fn new(registry: std::sync::Arc<R>, hook: H, bake_time: Duration) -> Self {
        RolloutController {
            registry,
            hook,
            bake_time,
        }
    }

    /// Stores `plan` as a new rollout record, at its first wave, deploying.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a plan without waves; [`Error::AlreadyExists`] while
    /// another rollout is in progress; what the registry returns.
    pub async fn start(&self, plan: &RolloutPlan) -> Result<RolloutRecord> {
        let waves: Vec<Vec<StampId>> = plan.waves.iter().map(|w| w.stamps.clone()).collect();
        let record = RolloutRecord::planned(plan.target.clone(), waves)?;
        self.registry.create_rollout(record).await
    }

    /// Advances rollout `id` by one step (see the type's docs) with the routers' `health` at
    /// `now`, saving the record; returns it as saved. A terminal rollout is returned unchanged.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id; [`Error::Conflict`] when another controller
    /// saved the record meanwhile (re-read and step again); [`Error::Unavailable`] with the
    /// hook's message when the deploy or roll-back failed (the record is unchanged: step
    /// again, or halt); what the registry returns.
    pub async fn step(
        &self,
        id: RolloutId,
        health: &(impl HealthView + ?Sized),
        now: Timestamp,
    ) -> Result<RolloutRecord> {
        let mut r = self
            .registry
            .rollout(id)
            .await?
            .ok_or(Error::NotFound(Subject::Rollout(id)))?;
        let Some(stamps) = r.current_wave().map(<[StampId]>::to_vec) else {
            return Ok(r);
        };
        match r.state {
            RolloutState::Deploying => {
                self.hook
                    .deploy(&stamps, &r.target)
                    .await
                    .map_err(|e| Error::unavailable(format!("deploy of {} to wave {}: {e}", r.target, r.wave)))?;
                r.state = RolloutState::Baking;
                r.wave_started = Some(now);
                r.note = Some(format!("wave {} deployed", r.wave));
            }
            RolloutState::Baking => {
                let started = r.wave_started.unwrap_or(now);
                let baked = Duration::from_millis(now.as_millis().saturating_sub(started.as_millis()));
                let wave = Wave {
                    index: r.wave,
                    stamps: stamps.clone(),
                    tenants: 0,
                };
                match judge_wave(&wave, health, baked, self.bake_time) {
                    WaveVerdict::Proceed if r.wave + 1 >= r.waves.len() => {
                        r.state = RolloutState::Completed;
                        r.note = Some(format!("every wave on {}", r.target));
                    }
                    WaveVerdict::Proceed => {
                        r.wave += 1;
                        r.state = RolloutState::Deploying;
                        r.wave_started = None;
                        r.note = Some(format!("wave {} passed", r.wave - 1));
                    }
                    WaveVerdict::Hold { reasons } => {
                        let note = format!("holding: {}", reasons.join("; "));
                        if r.note.as_deref() == Some(note.as_str()) {
                            return Ok(r);
                        }
                        r.note = Some(note);
                    }
                    WaveVerdict::RollBack { reasons } => {
                        self.hook.roll_back(&stamps, &r.target).await.map_err(|e| {
                            Error::unavailable(format!("roll-back of wave {} from {}: {e}", r.wave, r.target))
                        })?;
                        r.state = RolloutState::RolledBack;
                        r.note = Some(format!("wave {} rolled back: {}", r.wave, reasons.join("; ")));
                    }
                }
            }
            RolloutState::Completed | RolloutState::Halted | RolloutState::RolledBack => return Ok(r),
        }
        self.registry.save_rollout(&r).await
    }

    /// Stops rollout `id` where it is, with `reason` in its note (nothing is rolled back).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id; [`Error::Conflict`] when another controller saved
    /// it meanwhile; what the registry returns.
    pub async fn halt(&self, id: RolloutId, reason: &str) -> Result<RolloutRecord> {
        let mut r = self
            .registry
            .rollout(id)
            .await?
            .ok_or(Error::NotFound(Subject::Rollout(id)))?;
        if r.state.is_terminal() {
            return Ok(r);
        }
        r.state = RolloutState::Halted;
        r.note = Some(format!("halted: {reason}"));
        self.registry.save_rollout(&r).await
    }
}
