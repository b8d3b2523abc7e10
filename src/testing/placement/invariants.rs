//! The invariant checker: [`PlacementInvariants`] runs generated [`Scenario`]s against a
//! policy and reports the smallest one that breaks a hard rule.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use proptest::strategy::{BoxedStrategy, Strategy};
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
    if spec.expires_at.is_some() && !tenant.ephemeral {
        return Some("a long-lived tenant landed on an ephemeral stamp".into());
    }
    for (r, limit) in spec.capacity.limits().iter() {
        let soft =
            u128::from(limit.as_milli()) * u128::from(1_000_000 - spec.capacity.headroom_for(r).as_ppm()) / 1_000_000;
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
///    dedicated stamp for a dedicated tenant, the same tier otherwise), lifetime (no long-lived
///    tenant on an ephemeral stamp), capacity with each resource's headroom,
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
    scenarios: Option<BoxedStrategy<Scenario>>,
    transform: Option<Transform>,
}

/// A reshaping of each built-in scenario ([`PlacementInvariants::transform`]).
type Transform = Arc<dyn Fn(Scenario) -> Scenario + Send + Sync>;

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
            .field("own_scenarios", &self.scenarios.is_some())
            .field("transform", &self.transform.is_some())
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
            scenarios: None,
            transform: None,
        }
    }

    /// Runs the checks on scenarios from `strategy` instead of the built-in [`scenario`]
    /// generator (then [`max_stamps`](Self::max_stamps) and
    /// [`transform`](Self::transform) do not apply). Build yours from the kit's generators,
    /// or from scratch, so the stamps your policy's own rules look at (names, labels) come up.
    ///
    /// ```
    /// use proptest::prelude::*;
    /// use stamps::placement::{named, policies, PlacementExt};
    /// use stamps::testing::placement::scenario;
    /// use stamps::testing::PlacementInvariants;
    /// use stamps::StampLoad;
    /// let no_canary = |_: &stamps::TenantSpec, l: &StampLoad| !l.stamp.spec.name.contains("canary");
    /// let gated = policies::least_loaded().filter(named("no-canary", no_canary));
    /// // Fleets where every other stamp is a canary.
    /// let canaries = scenario(8).prop_map(|mut s| {
    ///     for l in s.fleet.stamps.iter_mut().step_by(2) { l.stamp.spec.name = format!("canary-{}", l.id().0); }
    ///     s
    /// });
    /// PlacementInvariants::new().cases(200).scenarios(canaries)
    ///     .constraint(named("no-canary", no_canary)).check(&gated).unwrap();
    /// ```
    pub fn scenarios(mut self, strategy: impl Strategy<Value = Scenario> + 'static) -> Self {
        self.scenarios = Some(strategy.boxed());
        self
    }

    /// Reshapes each built-in scenario with `f` before it is checked (rename stamps the way
    /// your policy's gate expects, add the labels it reads).
    ///
    /// ```
    /// use stamps::placement::{named, policies, PlacementExt};
    /// use stamps::testing::PlacementInvariants;
    /// use stamps::StampLoad;
    /// let not_ring0 = |_: &stamps::TenantSpec, l: &StampLoad| l.stamp.spec.labels.get("ring").map(String::as_str) != Some("0");
    /// // A fallback that forgot the gate: the checker finds it.
    /// let leaky = policies::least_loaded().filter(named("not-ring0", not_ring0)).or_else(policies::most_available());
    /// let found = PlacementInvariants::new().cases(300)
    ///     .transform(|mut s| { if let Some(l) = s.fleet.stamps.first_mut() { l.stamp.spec = l.stamp.spec.clone().label("ring", "0"); } s })
    ///     .constraint(named("not-ring0", not_ring0))
    ///     .check(&leaky);
    /// assert!(found.is_err());
    /// ```
    pub fn transform(mut self, f: impl Fn(Scenario) -> Scenario + Send + Sync + 'static) -> Self {
        self.transform = Some(Arc::new(f));
        self
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
        let strategy: BoxedStrategy<Scenario> = match (&self.scenarios, &self.transform) {
            (Some(own), _) => own.clone(),
            (None, Some(f)) => {
                let f = Arc::clone(f);
                scenario(self.max_stamps).prop_map(move |s| f(s)).boxed()
            }
            (None, None) => scenario(self.max_stamps).boxed(),
        };
        let result = runner.run(&strategy, |s| {
            self.check_scenario(policy, &s).map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => Ok(()),
            Err(TestError::Fail(why, s)) => Err(InvariantViolation {
                message: format!("placement invariant broken: {why}\n{}", scenario_table(&s)),
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

/// A failing scenario as people read it: the tenant with its demand in units, then one row
/// per stamp with name, region, residency, tier, state, health, headroom, version and usage
/// against limits in units.
///
/// ```
/// use std::collections::BTreeMap;
/// use stamps::testing::placement::scenario_table;
/// use stamps::testing::Scenario;
/// use stamps::*;
/// let spec = StampSpec::new(StampId(1), "eu-west-canary-1", Region::new("eu-west")?,
///     Capacity::new([(Resource::Connections, 100.0)], 0.25)?)?;
/// let fleet = Fleet::new(vec![StampLoad::new(Stamp::new(spec, StampState::Active, Timestamp::ZERO,
///     Timestamp::ZERO), Amounts::default())], Version(1), Timestamp::ZERO);
/// let t = TenantSpec::new(TenantId::new("acme")?).demand(Demand::of([(Resource::Connections, 2.5)])?);
/// let text = scenario_table(&Scenario::new(fleet, BTreeMap::new(), t));
/// assert!(text.contains("eu-west-canary-1") && text.contains("25%") && text.contains("connections 2.5"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scenario_table(s: &Scenario) -> String {
    let t = &s.tenant;
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".to_string());
    let mut out = String::new();
    let demand: Vec<String> = t.demand.iter().map(|(r, a)| format!("{r} {a}")).collect();
    let _ = writeln!(
        out,
        "tenant {}{}: demand [{}], region {}, residency {}, tier {}, pin {}, labels {:?}",
        t.id,
        if t.ephemeral { " (ephemeral)" } else { "" },
        demand.join(", "),
        opt(t.region.as_ref().map(ToString::to_string)),
        opt(t.residency.as_ref().map(ToString::to_string)),
        t.tier,
        opt(t.pin.map(|p| p.to_string())),
        t.labels
    );
    let _ = writeln!(
        out,
        "{:<10} {:<22} {:<11} {:<5} {:<10} {:<14} {:<9} {:>5} {:<12} {:<10} usage / limit",
        "stamp", "name", "region", "res", "tier", "state", "health", "head", "version", "expires"
    );
    for l in &s.fleet.stamps {
        let spec = &l.stamp.spec;
        let usage: Vec<String> = spec
            .capacity
            .limits()
            .iter()
            .map(|(r, limit)| format!("{r} {}/{limit}", l.usage.get(r)))
            .collect();
        let _ = writeln!(
            out,
            "{:<10} {:<22} {:<11} {:<5} {:<10} {:<14} {:<9} {:>4.0}% {:<12} {:<10} {}",
            l.id().to_string(),
            spec.name,
            spec.region.as_str(),
            opt(spec.residency.as_ref().map(ToString::to_string)),
            spec.tier.as_str(),
            l.stamp.state.as_str(),
            s.health.get(&l.id()).copied().unwrap_or(HealthStatus::Healthy).as_str(),
            spec.capacity.headroom().as_fraction() * 100.0,
            spec.version.as_deref().unwrap_or("-"),
            opt(spec.expires_at.map(|t| t.to_string())),
            usage.join(", ")
        );
    }
    out
}
