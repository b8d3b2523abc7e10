//! [`FleetOverview`]: one read of the whole fleet for an operator — each stamp's utilisation
//! per resource against its headroom, health, tenants and provisioning signal, the migrations
//! in flight with their freezes, and a router's feed lag. The admin API and dashboard render
//! it; [`FleetOverview::export_metrics`] turns it into the fleet gauges on scrape.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::capacity::{provisioning_signals, ProvisionReason, SignalPolicy};
use crate::error::{Error, InvalidInput, Result};
use crate::health::HealthTable;
use crate::model::{
    AssignmentMode, HealthStatus, MigrationId, MigrationState, Region, StampId, StampState, TenantId, Version,
};
use crate::registry::Registry;
use crate::router::FeedLag;
use crate::telemetry::{self, names, Value};
use crate::time::Timestamp;

/// One resource of one stamp: usage against the limit and the soft limit (the limit less the
/// headroom kept free).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ResourceUse {
    /// The resource's name (`tenants`, `connections`, `rps`, `storage`, `memory`, or a custom name).
    pub resource: String,
    /// What the stamp's tenants use.
    pub usage: f64,
    /// The hard limit.
    pub limit: f64,
    /// The limit placement fills to: `limit × (1 − headroom)`.
    pub soft_limit: f64,
    /// `usage / soft_limit` (1 means full for placement; 0 for a zero soft limit).
    pub utilization: f64,
}

/// One stamp in a [`FleetOverview`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StampOverview {
    /// The stamp.
    pub id: StampId,
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its lifecycle state.
    pub state: StampState,
    /// Its deployed version, if recorded.
    pub version: Option<String>,
    /// Tenants served or reserved.
    pub tenants: u64,
    /// Health as the configured table publishes it; `None` when unknown (no table, or no
    /// report yet).
    pub health: Option<HealthStatus>,
    /// The health report's reason, if any.
    pub health_reason: Option<String>,
    /// Each limited resource.
    pub resources: Vec<ResourceUse>,
    /// The binding resource's utilisation of its soft limit (the provisioning signal's).
    pub utilization: f64,
    /// Whether the binding resource is at or past the policy's trigger.
    pub above_trigger: bool,
    /// Time until the trigger at the region's growth, in seconds (`None` without growth or
    /// without limits).
    pub time_to_trigger_seconds: Option<f64>,
}

/// A migration that is not finished, in a [`FleetOverview`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MigrationOverview {
    /// The migration.
    pub id: MigrationId,
    /// The tenant it moves.
    pub tenant: TenantId,
    /// From.
    pub source: StampId,
    /// To.
    pub destination: StampId,
    /// Its state.
    pub state: MigrationState,
    /// When its record last changed.
    pub updated_at: Timestamp,
    /// How long the tenant's writes have been frozen, in seconds, while they are.
    pub frozen_seconds: Option<f64>,
    /// When the freeze ends at the latest, while frozen.
    pub frozen_until: Option<Timestamp>,
}

/// A region that needs a new stamp, in a [`FleetOverview`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RegionSignal {
    /// The region.
    pub region: Region,
    /// Why: `trigger_reached`, `alert_threshold_reached` or `no_accepting_stamp`.
    pub reason: &'static str,
    /// When a new stamp must start provisioning at the latest.
    pub deadline: Timestamp,
}

/// The fleet at one moment, for operators: every stamp, the migrations in flight, the
/// provisioning signals and (with [`FleetOverview::with_feed`]) a router's feed lag.
///
/// ```
/// use std::time::Duration;
/// use stamps::capacity::{SignalPolicy, TenantsPerDay};
/// use stamps::integrations::FleetOverview;
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// registry.put_active_stamp(StampSpec::new(StampId(1), "eu-1", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 4.0)], 0.0)?)?).await?;
/// for t in ["a", "b", "c"] {
///     registry.assign(&TenantSpec::new(TenantId::new(t)?), StampId(1)).await?;
/// }
/// let policy = SignalPolicy::new(0.7, TenantsPerDay(1.0), Duration::from_secs(86_400));
/// let view = FleetOverview::collect(&registry, &policy, None).await?;
/// assert_eq!(view.stamps[0].tenants, 3);
/// assert!(view.stamps[0].above_trigger);          // 3 of 4 is past 70 %
/// assert_eq!(view.regions_needing_stamps.len(), 1);
/// view.export_metrics();                         // the fleet gauges, with feature `metrics`
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FleetOverview {
    /// When the fleet was read.
    pub at: Timestamp,
    /// The change-feed version the fleet snapshot reflects.
    pub version: Version,
    /// The policy's trigger utilisation (the line drawn on each stamp's bars).
    pub trigger_utilization: f64,
    /// Every stamp, by id.
    pub stamps: Vec<StampOverview>,
    /// Migrations not in a terminal state, oldest first.
    pub migrations: Vec<MigrationOverview>,
    /// How many migrations are in each state (terminal ones included).
    pub migrations_by_state: BTreeMap<MigrationState, u64>,
    /// Regions the provisioning signals say need a stamp.
    pub regions_needing_stamps: Vec<RegionSignal>,
    /// Stamps whose stored rows could not be read, with the reason.
    pub unreadable_stamps: Vec<(StampId, String)>,
    /// A router's feed lag, if one was given ([`FleetOverview::with_feed`]).
    pub feed: Option<FeedLagView>,
}

/// [`FeedLag`] in plain numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FeedLagView {
    /// The registry's head as the router knows it.
    pub head: u64,
    /// The router's cursor.
    pub cursor: u64,
    /// Changes not applied.
    pub versions: u64,
    /// How long the router has been behind, in seconds.
    pub seconds: f64,
}

impl From<FeedLag> for FeedLagView {
    fn from(l: FeedLag) -> Self {
        FeedLagView {
            head: l.head.0,
            cursor: l.cursor.0,
            versions: l.versions,
            seconds: l.behind_for.as_secs_f64(),
        }
    }
}

impl FleetOverview {
    /// Reads the fleet, the migrations and (for frozen migrations) their tenants'
    /// assignments, and computes the provisioning signals under `policy`; `health` supplies
    /// each stamp's status.
    ///
    /// Errors: the registry's, and [`Error::InvalidInput`] for a policy the signals refuse.
    pub async fn collect<R: Registry + ?Sized>(
        registry: &R,
        policy: &SignalPolicy,
        health: Option<&HealthTable>,
    ) -> Result<FleetOverview> {
        let fleet = registry.fleet().await?;
        let report = provisioning_signals(&fleet, policy).map_err(|_| {
            Error::from(InvalidInput::new(
                "signal policy",
                "is invalid: the trigger must be in (0, 1], growth rates and the lead time finite and non-negative",
            ))
        })?;
        let signals: BTreeMap<StampId, _> = report.stamps.iter().map(|s| (s.stamp, s)).collect();
        let stamps = fleet
            .stamps
            .iter()
            .map(|load| {
                let spec = &load.stamp.spec;
                let cap = &spec.capacity;
                let resources = cap
                    .limits()
                    .iter()
                    .map(|(resource, limit)| {
                        let soft = cap.soft_limit(resource).unwrap_or(limit).as_f64();
                        let usage = if *resource == crate::model::Resource::Tenants {
                            load.tenants() as f64
                        } else {
                            load.usage.get(resource).as_f64()
                        };
                        ResourceUse {
                            resource: resource.name().to_string(),
                            usage,
                            limit: limit.as_f64(),
                            soft_limit: soft,
                            utilization: if soft > 0.0 { usage / soft } else { 0.0 },
                        }
                    })
                    .collect();
                let signal = signals.get(&spec.id);
                let utilization = signal.map_or(0.0, |s| s.utilization);
                let h = health.and_then(|t| t.get(spec.id));
                StampOverview {
                    id: spec.id,
                    name: spec.name.clone(),
                    region: spec.region.to_string(),
                    state: load.stamp.state,
                    version: spec.version.clone(),
                    tenants: load.tenants(),
                    health: h.as_ref().map(|h| h.status),
                    health_reason: h.and_then(|h| h.reason.map(|r| r.to_string())),
                    resources,
                    utilization,
                    above_trigger: signal.is_some_and(|s| s.bottleneck.is_some())
                        && utilization >= policy.trigger_utilization,
                    time_to_trigger_seconds: signal.and_then(|s| s.time_to_trigger).map(|d| d.as_secs_f64()),
                }
            })
            .collect();
        let now = fleet.at;
        let mut migrations_by_state = BTreeMap::new();
        let mut migrations = Vec::new();
        for m in registry.migrations(None).await? {
            *migrations_by_state.entry(m.state).or_insert(0) += 1;
            if m.state.is_terminal() {
                continue;
            }
            let (mut frozen_seconds, mut frozen_until) = (None, None);
            if m.state == MigrationState::CutOver {
                if let Some(a) = registry.assignment(&m.tenant).await? {
                    if let AssignmentMode::Frozen { until, .. } = a.mode {
                        frozen_seconds = Some(now.saturating_since(a.updated_at).as_secs_f64());
                        frozen_until = Some(until);
                    }
                }
            }
            migrations.push(MigrationOverview {
                id: m.id,
                tenant: m.tenant,
                source: m.source,
                destination: m.destination,
                state: m.state,
                updated_at: m.updated_at,
                frozen_seconds,
                frozen_until,
            });
        }
        migrations.sort_by_key(|m| (m.updated_at, m.id));
        let regions_needing_stamps = report
            .recommendations
            .iter()
            .map(|r| RegionSignal {
                region: r.region.clone(),
                reason: match r.reason {
                    ProvisionReason::TriggerReached => "trigger_reached",
                    ProvisionReason::AlertThresholdReached { .. } => "alert_threshold_reached",
                    ProvisionReason::NoAcceptingStamp => "no_accepting_stamp",
                },
                deadline: r.deadline,
            })
            .collect();
        Ok(FleetOverview {
            at: now,
            version: fleet.version,
            trigger_utilization: policy.trigger_utilization,
            stamps,
            migrations,
            migrations_by_state,
            regions_needing_stamps,
            unreadable_stamps: fleet.skipped().to_vec(),
            feed: None,
        })
    }

    /// The same overview with a router's feed lag.
    ///
    /// ```
    /// use stamps::integrations::FleetOverview;
    /// use stamps::router::FeedLag;
    /// # fn f(view: FleetOverview) {
    /// let view = view.with_feed(FeedLag::default());
    /// assert_eq!(view.feed.map(|f| f.versions), Some(0));
    /// # }
    /// ```
    pub fn with_feed(mut self, lag: FeedLag) -> Self {
        self.feed = Some(lag.into());
        self
    }

    /// The longest write freeze in force, if any migration is frozen.
    ///
    /// ```
    /// # fn f(view: stamps::integrations::FleetOverview) {
    /// let longest = view.longest_freeze();
    /// # let _ = longest; }
    /// ```
    pub fn longest_freeze(&self) -> Option<Duration> {
        self.migrations
            .iter()
            .filter_map(|m| m.frozen_seconds)
            .fold(None, |acc: Option<f64>, s| Some(acc.map_or(s, |a| a.max(s))))
            .map(Duration::from_secs_f64)
    }

    /// Sets the fleet gauges from this overview (feature `metrics`; nothing without it):
    /// tenants, utilisation per resource, trigger, time to trigger, state and health per
    /// stamp; regions needing a stamp; migrations by state and the longest freeze. Names are
    /// in [`telemetry::names`](crate::telemetry::names).
    pub fn export_metrics(&self) {
        for s in &self.stamps {
            let stamp = ("stamp", Value::Stamp(s.id.0));
            telemetry::gauge(names::STAMP_TENANTS, &[stamp], s.tenants as f64);
            for r in &s.resources {
                let labels = [stamp, ("resource", Value::Text(&r.resource))];
                telemetry::gauge(names::STAMP_UTILIZATION, &labels, r.utilization);
            }
            telemetry::gauge(
                names::STAMP_ABOVE_TRIGGER,
                &[stamp],
                f64::from(u8::from(s.above_trigger)),
            );
            if let Some(t) = s.time_to_trigger_seconds {
                telemetry::gauge(names::STAMP_TIME_TO_TRIGGER, &[stamp], t);
            }
            for state in StampState::ALL {
                let labels = [stamp, ("state", Value::Str(state.as_str()))];
                telemetry::gauge(names::STAMP_STATE, &labels, f64::from(u8::from(state == s.state)));
            }
            if let Some(h) = s.health {
                for status in [HealthStatus::Healthy, HealthStatus::Degraded, HealthStatus::Unhealthy] {
                    let labels = [stamp, ("status", Value::Str(status.as_str()))];
                    telemetry::gauge(names::STAMP_HEALTH, &labels, f64::from(u8::from(status == h)));
                }
            }
        }
        let needing: std::collections::BTreeSet<&str> =
            self.regions_needing_stamps.iter().map(|r| r.region.as_str()).collect();
        let regions: std::collections::BTreeSet<&str> = self.stamps.iter().map(|s| s.region.as_str()).collect();
        for region in regions.union(&needing) {
            let v = f64::from(u8::from(needing.contains(region)));
            telemetry::gauge(names::REGION_NEEDS_STAMP, &[("region", Value::Text(region))], v);
        }
        for state in MigrationState::ALL {
            let n = self.migrations_by_state.get(&state).copied().unwrap_or(0);
            telemetry::gauge(names::MIGRATIONS, &[("state", Value::Str(state.as_str()))], n as f64);
        }
        let longest = self.longest_freeze().unwrap_or_default();
        telemetry::gauge(names::MIGRATION_FROZEN_SECONDS, &[], longest.as_secs_f64());
    }
}
