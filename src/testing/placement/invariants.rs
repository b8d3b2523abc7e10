//! The invariant checker: [`PlacementInvariants`] runs generated [`Scenario`]s against a
//! policy and reports the smallest one that breaks a hard rule.

use std::fmt;

use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

use super::{scenario, Scenario};
use crate::model::{HealthStatus, StampLoad, StampState, TenantSpec, Tier};
use crate::placement::{FleetView, Placement, StampFilter};

/// A broken invariant, with the smallest failing scenario proptest found.
///
/// ```
/// use stamps::placement::{from_fn, PlacementError};
/// use stamps::testing::PlacementInvariants;
/// let never = from_fn(|_, _| Err(PlacementError::Policy { reason: "never" }));
/// let v = PlacementInvariants::new().cases(50).check(&never).unwrap_err();
/// assert!(v.to_string().contains("eligible and has room"));
/// ```
#[derive(Debug, Clone)]
pub struct InvariantViolation {
    /// What broke, with the scenario.
    pub message: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvariantViolation {}

/// The hard constraint `load` breaks for `tenant`, if any, checked from first principles (not
/// through the crate's filters).
fn core_violation(tenant: &TenantSpec, load: &StampLoad, view: &FleetView<'_>) -> Option<String> {
    let spec = &load.stamp.spec;
    if let Some(p) = tenant.pin {
        if p != load.id() {
            return Some(format!("the tenant is pinned to {p}"));
        }
    }
    if load.stamp.state != StampState::Active {
        return Some(format!("the stamp is {}", load.stamp.state));
    }
    if view.health(load.id()) == HealthStatus::Unhealthy {
        return Some("the stamp is unhealthy".into());
    }
    if let Some(r) = &tenant.residency {
        if spec.residency.as_ref() != Some(r) {
            return Some(format!("the stamp is outside residency {r}"));
        }
    }
    match tenant.tier {
        Tier::Dedicated => {
            if spec.tier != Tier::Dedicated || load.tenants() != 0 {
                return Some("a dedicated tenant needs an empty dedicated stamp".into());
            }
        }
        ref t => {
            if &spec.tier != t {
                return Some(format!("a {t} tenant landed on a {} stamp", spec.tier));
            }
        }
    }
    for (r, limit) in spec.capacity.limits().iter() {
        let soft = u128::from(limit.as_milli()) * u128::from(1_000_000 - spec.capacity.headroom().as_ppm()) / 1_000_000;
        let after = u128::from(load.usage.get(r).as_milli()) + u128::from(tenant.demand.get_with_slot(r).as_milli());
        if after > soft {
            return Some(format!("{r} would exceed the limit with headroom"));
        }
    }
    None
}

/// The invariant checker, with options. [`check_placement_invariants`] is the default.
///
/// For each generated [`Scenario`] it asserts:
/// 1. a chosen stamp is a stamp of the fleet;
/// 2. it breaks no hard constraint: the pin, `Active` state, health, residency, tier (an empty
///    dedicated stamp for a dedicated tenant, the same tier otherwise), capacity with headroom,
///    and every [`constraint`](PlacementInvariants::constraint) declared for the policy;
/// 3. the same inputs give the same result (twice on one snapshot, and on a copy);
/// 4. if some stamp satisfies all of those, the policy does not fail (turn off with
///    [`allow_failure`](PlacementInvariants::allow_failure) for a policy that documents why);
/// 5. a failure has a non-empty message.
///
/// ```
/// use stamps::placement::{policies, InRegion};
/// use stamps::testing::PlacementInvariants;
/// PlacementInvariants::new().cases(100).max_stamps(6).constraint(InRegion)
///     .check(&policies::geographic()).unwrap();
/// ```
pub struct PlacementInvariants {
    cases: u32,
    max_stamps: usize,
    constraints: Vec<Box<dyn StampFilter>>,
    liveness: bool,
    persist: Option<&'static str>,
}

impl fmt::Debug for PlacementInvariants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlacementInvariants")
            .field("cases", &self.cases)
            .field("max_stamps", &self.max_stamps)
            .field(
                "constraints",
                &self.constraints.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("liveness", &self.liveness)
            .finish()
    }
}

impl Default for PlacementInvariants {
    fn default() -> Self {
        Self::new()
    }
}

impl PlacementInvariants {
    /// 1,000 cases, fleets of up to 16 stamps, liveness required, no extra constraint.
    pub fn new() -> PlacementInvariants {
        PlacementInvariants {
            cases: 1000,
            max_stamps: 16,
            constraints: Vec::new(),
            liveness: true,
            persist: None,
        }
    }

    /// Number of generated cases.
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases.max(1);
        self
    }

    /// Largest fleet generated.
    pub fn max_stamps(mut self, n: usize) -> Self {
        self.max_stamps = n;
        self
    }

    /// A hard constraint the policy adds (region, labels, your own filter): the chosen stamp
    /// must pass it, and liveness only counts stamps that pass it.
    pub fn constraint(mut self, filter: impl StampFilter + 'static) -> Self {
        self.constraints.push(Box::new(filter));
        self
    }

    /// Do not require the policy to find a stamp when one is eligible.
    pub fn allow_failure(mut self) -> Self {
        self.liveness = false;
        self
    }

    /// Saves failing cases to `path` (relative to the working directory; `cargo test` runs in
    /// the package root) and replays them first on later runs. Commit the file.
    pub fn persist_failures_to(mut self, path: &'static str) -> Self {
        self.persist = Some(path);
        self
    }

    fn violation(&self, tenant: &TenantSpec, load: &StampLoad, view: &FleetView<'_>) -> Option<String> {
        core_violation(tenant, load, view).or_else(|| {
            self.constraints
                .iter()
                .find(|c| c.check(tenant, load, view).is_err())
                .map(|c| format!("the policy's own constraint `{}` rejects it", c.name()))
        })
    }

    /// Checks one scenario; `Err` says which invariant broke.
    pub fn check_scenario<P: Placement + ?Sized>(&self, policy: &P, s: &Scenario) -> Result<(), String> {
        let view = s.view();
        let out = policy.place(&s.tenant, &view);
        let again = policy.place(&s.tenant, &view);
        if out != again {
            return Err(format!("not deterministic: {out:?} then {again:?}"));
        }
        let copy = s.fleet.clone();
        let third = policy.place(&s.tenant, &FleetView::new(&copy).with_health(&s.health));
        if out != third {
            return Err(format!(
                "not deterministic across equal snapshots: {out:?} then {third:?}"
            ));
        }
        match &out {
            Ok(id) => {
                let Some(load) = s.fleet.get(*id) else {
                    return Err(format!("chose {id}, which is not in the fleet"));
                };
                if let Some(v) = self.violation(&s.tenant, load, &view) {
                    return Err(format!("chose {id}, but {v}"));
                }
            }
            Err(e) => {
                if self.liveness {
                    if let Some(ok) = s
                        .fleet
                        .stamps
                        .iter()
                        .find(|l| self.violation(&s.tenant, l, &view).is_none())
                    {
                        return Err(format!("failed ({e}) although {} is eligible and has room", ok.id()));
                    }
                }
                if e.to_string().is_empty() {
                    return Err("the error message is empty".into());
                }
            }
        }
        Ok(())
    }

    /// Runs the cases against `policy`.
    pub fn check<P: Placement + ?Sized>(&self, policy: &P) -> Result<(), InvariantViolation> {
        let config = Config {
            cases: self.cases,
            failure_persistence: self.persist.map(|p| {
                Box::new(FileFailurePersistence::Direct(p)) as Box<dyn proptest::test_runner::FailurePersistence>
            }),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&scenario(self.max_stamps), |s| {
            self.check_scenario(policy, &s).map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => Ok(()),
            Err(TestError::Fail(why, s)) => Err(InvariantViolation {
                message: format!(
                    "placement invariant broken: {why}\ntenant: {:?}\nhealth: {:?}\nfleet:\n{}",
                    s.tenant, s.health, s.fleet
                ),
            }),
            Err(TestError::Abort(why)) => Err(InvariantViolation {
                message: format!("property test aborted: {why}"),
            }),
        }
    }
}

/// Checks `policy` against the placement invariants on 1,000 generated scenarios (see
/// [`PlacementInvariants`] for the list and for options). `Err` carries the smallest failing
/// scenario.
///
/// ```
/// use stamps::placement::{from_fn, policies, PlacementError};
/// use stamps::testing::check_placement_invariants;
/// check_placement_invariants(&policies::least_loaded()).unwrap();
///
/// // A policy that ignores the hard constraints is caught.
/// let careless = from_fn(|_, fleet| fleet.stamps().next().map(|s| s.id())
///     .ok_or(PlacementError::Policy { reason: "no stamps" }));
/// assert!(check_placement_invariants(&careless).is_err());
/// ```
pub fn check_placement_invariants<P: Placement + ?Sized>(policy: &P) -> Result<(), InvariantViolation> {
    PlacementInvariants::new().check(policy)
}
