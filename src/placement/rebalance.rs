//! The rebalance planner: proposals for a person to review, never moves.

use std::fmt;

use super::{FleetView, Mask, Placement, Rejection};
use crate::error::{Error, InvalidInput};
use crate::model::admission;
use crate::model::{Amount, Assignment, Epoch, Fleet, Resource, StampId, StampLoad, TenantId, TenantSpec, Tier};

/// One proposed tenant move (see [`plan_rebalance`] for a full example).
///
/// ```
/// # use stamps::placement::Move;
/// fn review(m: &Move) -> String {
///     format!("{} {} -> {} (fenced at epoch {})", m.tenant, m.from, m.to, m.epoch.0)
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Move {
    /// The tenant.
    pub tenant: TenantId,
    /// Where it is.
    pub from: StampId,
    /// Where it would go.
    pub to: StampId,
    /// The assignment's epoch when planned: a migration started from this move fences on it,
    /// so a plan gone stale fails instead of moving the wrong thing.
    pub epoch: Epoch,
}

/// A list of proposed moves, for a person to review and then feed to migrations. Planning
/// changes nothing: tenants are never migrated automatically.
///
/// ```
/// use stamps::placement::{plan_rebalance, policies, FleetView};
/// use stamps::*;
/// let fleet = Fleet::default();
/// let plan = plan_rebalance(&FleetView::new(&fleet), &[], 0.7, &policies::least_loaded())?;
/// assert!(plan.moves.is_empty() && plan.unresolved.is_empty());
/// assert_eq!(plan.to_string(), "rebalance to 70%: 0 move(s), 0 stamp(s) left above target\n");
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RebalancePlan {
    /// The target utilization, in `(0, 1]`.
    pub target: f64,
    /// Proposed moves, in order (later moves assume the earlier ones happened).
    pub moves: Vec<Move>,
    /// Stamps still above target after the moves: no movable tenant found a home.
    pub unresolved: Vec<StampId>,
    /// The fleet as it would be after every move.
    pub after: Fleet,
}

impl fmt::Display for RebalancePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rebalance to {:.0}%: {} move(s), {} stamp(s) left above target",
            self.target * 100.0,
            self.moves.len(),
            self.unresolved.len()
        )?;
        for m in &self.moves {
            writeln!(
                f,
                "  move {:<24} {} -> {}  (epoch {})",
                m.tenant.as_str(),
                m.from,
                m.to,
                m.epoch.0
            )?;
        }
        for s in &self.unresolved {
            writeln!(f, "  unresolved: {s}")?;
        }
        Ok(())
    }
}

/// Utilization of `r` on `l` (usage / hard limit), if limited.
fn util(l: &StampLoad, r: &Resource) -> Option<f64> {
    l.utilization(r)
}

/// The most over-target resource of a stamp, if any is over.
fn worst_over(l: &StampLoad, target: f64) -> Option<(Resource, f64)> {
    l.stamp
        .spec
        .capacity
        .limits()
        .iter()
        .filter_map(|(r, _)| util(l, r).map(|u| (r, u)))
        .filter(|(_, u)| *u > target + 1e-12)
        .fold(None, |best: Option<(&Resource, f64)>, (r, u)| match best {
            Some((_, b)) if b >= u => best,
            _ => Some((r, u)),
        })
        .map(|(r, u)| (r.clone(), u))
}

/// Only destinations other than the source that stay at or under target after the move.
struct Destination<'a> {
    source: StampId,
    tenant: &'a TenantSpec,
    target: f64,
}

impl Mask for Destination<'_> {
    fn check<'s>(&self, load: &'s StampLoad) -> Result<(), Rejection<'s>> {
        if load.id() == self.source {
            return Err(Rejection::custom("rebalance: source stamp"));
        }
        for (r, limit) in load.stamp.spec.capacity.limits().iter() {
            let after = load
                .usage
                .get(r)
                .checked_add(self.tenant.demand.get_with_slot(r))
                .unwrap_or(Amount::from_milli(u64::MAX));
            if after.as_milli() as f64 > self.target * limit.as_milli() as f64 {
                return Err(Rejection::custom("rebalance: would exceed target"));
            }
        }
        Ok(())
    }
}

fn movable(a: &Assignment) -> bool {
    a.mode.shadow().is_none() && !a.mode.is_frozen() && a.spec.pin.is_none() && a.spec.tier != Tier::Dedicated
}

/// Proposes tenant moves that bring every stamp's utilization of every limited resource to at
/// most `target` (a fraction in `(0, 1]`), choosing each destination with `policy` (so every
/// hard constraint of the policy holds: residency, tier, state, health, headroom) among the
/// stamps that stay at or under target after the move.
///
/// Pinned tenants, dedicated tenants and tenants in a migration never move. The planner is
/// greedy: for each stamp above target, in id order, it moves the tenants with the largest
/// demand on the most over-target resource first, which keeps the number of moves low (the
/// exact minimum is a bin-packing problem, NP-hard). Stamps it cannot bring under target are
/// listed in [`RebalancePlan::unresolved`].
///
/// `assignments` are the tenants' current assignments (`RegistryExt::all_assignments`).
///
/// # Errors
/// [`Error::InvalidInput`] if `target` is not a number in `(0, 1]`.
///
/// ```
/// use stamps::placement::{plan_rebalance, policies, FleetView};
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// for id in [1, 2] {
///     registry.put_active_stamp(StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu")?,
///         Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// }
/// for i in 0..8 {
///     registry.assign(&TenantSpec::new(TenantId::new(&format!("t{i}"))?), StampId(1)).await?;
/// }
/// let fleet = registry.fleet().await?;
/// let plan = plan_rebalance(&FleetView::new(&fleet), &registry.all_assignments().await?, 0.5,
///     &policies::least_loaded())?;
/// assert_eq!(plan.moves.len(), 3); // 8 tenants on stamp 1 -> 5, and 3 on stamp 2
/// assert!(plan.unresolved.is_empty());
/// println!("{plan}");
/// # Ok(()) }
/// ```
pub fn plan_rebalance<P: Placement + ?Sized>(
    fleet: &FleetView<'_>,
    assignments: &[Assignment],
    target: f64,
    policy: &P,
) -> Result<RebalancePlan, Error> {
    if !(target > 0.0 && target <= 1.0) {
        return Err(InvalidInput::new("target", "must be a utilization fraction in (0, 1], such as 0.7").into());
    }
    let mut sim = fleet.fleet().clone();
    let mut moves = Vec::new();
    let mut unresolved = Vec::new();
    let mut done: Vec<bool> = vec![false; assignments.len()];
    let ids: Vec<StampId> = sim.stamps.iter().map(StampLoad::id).collect();
    for source in ids {
        while let Some((worst, _)) = sim.get(source).and_then(|src| worst_over(src, target)) {
            let mut candidates: Vec<(usize, &Assignment)> = assignments
                .iter()
                .enumerate()
                .filter(|(i, a)| a.stamp == source && movable(a) && !done.get(*i).copied().unwrap_or(true))
                .collect();
            candidates.sort_by(|(_, a), (_, b)| {
                b.spec
                    .demand
                    .get_with_slot(&worst)
                    .cmp(&a.spec.demand.get_with_slot(&worst))
                    .then_with(|| a.tenant().cmp(b.tenant()))
            });
            let mut moved = false;
            for (i, a) in candidates {
                let mask = Destination {
                    source,
                    tenant: &a.spec,
                    target,
                };
                let base = FleetView::new(&sim).with_health(fleet.health_view());
                let view = base.with_mask(&mask);
                let Ok(to) = policy.place(&a.spec, &view) else { continue };
                if view.get(to).is_none() {
                    continue;
                }
                for (id, plus) in [(source, false), (to, true)] {
                    if let Ok(k) = sim.stamps.binary_search_by_key(&id, StampLoad::id) {
                        if let Some(l) = sim.stamps.get_mut(k) {
                            admission::add(&mut l.usage, &a.spec.demand, plus);
                        }
                    }
                }
                if let Some(d) = done.get_mut(i) {
                    *d = true;
                }
                moves.push(Move {
                    tenant: a.tenant().clone(),
                    from: source,
                    to,
                    epoch: a.epoch,
                });
                moved = true;
                break;
            }
            if !moved {
                unresolved.push(source);
                break;
            }
        }
    }
    Ok(RebalancePlan {
        target,
        moves,
        unresolved,
        after: sim,
    })
}
