//! Every metric the crate records: its name, its kind and what it means. Labels are listed
//! in each constant's documentation; `docs/observability.md` adds the alert to set on each.
//!
//! ```
//! use stamps::telemetry::names::{self, Kind};
//! let (name, kind, _help) = names::ALL.iter().find(|(n, _, _)| *n == names::ROUTER_FEED_LAG_SECONDS).unwrap();
//! assert_eq!((*name, *kind), ("stamps_router_feed_lag_seconds", Kind::Gauge));
//! ```

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Only grows (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (durations, in seconds).
    Histogram,
}

/// Lookups answered from a fresh entry. Counter, no labels (exported on scrape).
pub const ROUTER_HITS: &str = "stamps_router_hits_total";
/// Lookups that found no usable entry (each costs a registry read on `resolve`). Counter.
pub const ROUTER_MISSES: &str = "stamps_router_misses_total";
/// Routes served stale under stale-if-error. Counter.
pub const ROUTER_STALE_SERVES: &str = "stamps_router_stale_serves_total";
/// Lookups refused. Counter; label `reason`: `unknown_tenant` (negative cache and resolves
/// of unknown tenants), `stamp_unavailable` (unhealthy stamp, no redirect), `invalid_tenant`.
pub const ROUTER_REJECTIONS: &str = "stamps_router_rejections_total";
/// Entries replaced or removed by change events. Counter.
pub const ROUTER_INVALIDATIONS: &str = "stamps_router_invalidations_total";
/// Entries evicted by the size bounds. Counter.
pub const ROUTER_EVICTIONS: &str = "stamps_router_evictions_total";
/// Failed registry calls made by the router (resolves, warm-up, feed). Counter.
pub const ROUTER_REGISTRY_ERRORS: &str = "stamps_router_registry_errors_total";
/// Failed change-feed reads. Counter.
pub const ROUTER_FEED_ERRORS: &str = "stamps_router_feed_errors_total";
/// Times the router dropped its table because the registry's history diverged (a failover
/// that lost acknowledged writes). Counter.
pub const ROUTER_HISTORY_RESETS: &str = "stamps_router_history_resets_total";
/// Entries in the router's table. Gauge.
pub const ROUTER_ENTRIES: &str = "stamps_router_entries";
/// Changes the registry has that the router has not applied (the registry's head, as last
/// seen, minus the router's cursor). Gauge.
pub const ROUTER_FEED_LAG_VERSIONS: &str = "stamps_router_feed_lag_versions";
/// How long the router has been behind the registry's head (0 while caught up). Gauge.
pub const ROUTER_FEED_LAG_SECONDS: &str = "stamps_router_feed_lag_seconds";
/// 1 while the change feed cannot read past a change (unreachable or unreadable), else 0. Gauge.
pub const ROUTER_FEED_STUCK: &str = "stamps_router_feed_stuck";
/// Time of a `resolve` that read the registry (misses only). Histogram; label `outcome`:
/// `ok`, `unknown_tenant`, `unavailable`, `error`.
pub const ROUTER_RESOLVE_DURATION: &str = "stamps_router_resolve_duration_seconds";

/// Registry calls made through [`Observed`](crate::registry::Observed). Counter; label `method`.
pub const REGISTRY_CALLS: &str = "stamps_registry_calls_total";
/// Failed registry calls. Counter; labels `method` and `kind` (the error's
/// [`kind`](crate::error::Error::kind): `conflict`, `unavailable`, `corrupt`, ...).
pub const REGISTRY_ERRORS: &str = "stamps_registry_errors_total";
/// Registry call latency. Histogram; label `method`.
pub const REGISTRY_CALL_DURATION: &str = "stamps_registry_call_duration_seconds";

/// Tenants on a stamp (served or reserved). Gauge; label `stamp`.
pub const STAMP_TENANTS: &str = "stamps_stamp_tenants";
/// Usage of a resource over the stamp's soft limit (limit less headroom); 1 means full for
/// placement. Gauge; labels `stamp`, `resource`.
pub const STAMP_UTILIZATION: &str = "stamps_stamp_utilization_ratio";
/// 1 when the stamp's binding resource is at or past the provisioning trigger. Gauge; label `stamp`.
pub const STAMP_ABOVE_TRIGGER: &str = "stamps_stamp_above_trigger";
/// Time until the stamp reaches its trigger at the region's growth. Gauge; label `stamp`
/// (absent when growth is zero or nothing bounds the stamp).
pub const STAMP_TIME_TO_TRIGGER: &str = "stamps_stamp_time_to_trigger_seconds";
/// 1 for the stamp's lifecycle state, 0 for the others. Gauge; labels `stamp`, `state`.
pub const STAMP_STATE: &str = "stamps_stamp_state";
/// 1 for the stamp's health status as a router sees it, 0 for the others. Gauge; labels
/// `stamp`, `status` (`healthy`, `degraded`, `unhealthy`).
pub const STAMP_HEALTH: &str = "stamps_stamp_health";
/// 1 when the region needs a new stamp (provisioning signal). Gauge; label `region`.
pub const REGION_NEEDS_STAMP: &str = "stamps_region_needs_new_stamp";

/// Health transitions observed by a [`HealthMonitor`](crate::health::HealthMonitor).
/// Counter; labels `stamp`, `to`.
pub const HEALTH_TRANSITIONS: &str = "stamps_health_transitions_total";

/// Migrations by state (terminal states included). Gauge; label `state`.
pub const MIGRATIONS: &str = "stamps_migrations";
/// The longest write freeze in force now, over all migrations (0 when none is frozen). Gauge.
pub const MIGRATION_FROZEN_SECONDS: &str = "stamps_migration_frozen_seconds";
/// Migration state transitions. Counter; labels `from`, `to`.
pub const MIGRATION_TRANSITIONS: &str = "stamps_migration_transitions_total";
/// Time of one migration step (claim, work, persist). Histogram; label `state`.
pub const MIGRATION_STEP_DURATION: &str = "stamps_migration_step_duration_seconds";
/// Failed migration steps. Counter; labels `state`, `retryable` (`true`, `false`).
pub const MIGRATION_STEP_FAILURES: &str = "stamps_migration_step_failures_total";
/// Cutovers refused (a stale or failed validation, a freeze that would overrun). Counter.
pub const MIGRATION_CUTOVER_REFUSALS: &str = "stamps_migration_cutover_refusals_total";
/// Steps that stopped for a person (a failed validation). Counter; label `state`.
pub const MIGRATION_BLOCKED: &str = "stamps_migration_blocked_total";
/// Write freezes started at cutover. Counter.
pub const MIGRATION_FREEZES: &str = "stamps_migration_freezes_total";
/// How long writes stayed frozen. Histogram; label `outcome` (`cut_over`, `refused`).
pub const MIGRATION_FREEZE_DURATION: &str = "stamps_migration_freeze_duration_seconds";

/// Placement decisions by `place_and_assign`. Counter; label `outcome`: `placed`, `no_fit`,
/// `lost_races`, `error`.
pub const PLACEMENT_DECISIONS: &str = "stamps_placement_decisions_total";
/// Stamps rejected while placing, by the filter that rejected them. Counter; label `reason`
/// (a [`FilterKind`](crate::placement::FilterKind) name, or `no_stamps`, `pin`, `policy`).
pub const PLACEMENT_REJECTIONS: &str = "stamps_placement_rejections_total";
/// Placements that found no stamp and asked for a new one. Counter.
pub const PLACEMENT_PROVISION_REQUESTS: &str = "stamps_placement_provision_requests_total";

/// Every metric: name, kind, and the help text exporters print.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        ROUTER_HITS,
        Kind::Counter,
        "Router lookups answered from a fresh entry.",
    ),
    (
        ROUTER_MISSES,
        Kind::Counter,
        "Router lookups that found no usable entry.",
    ),
    (
        ROUTER_STALE_SERVES,
        Kind::Counter,
        "Routes served stale under stale-if-error.",
    ),
    (ROUTER_REJECTIONS, Kind::Counter, "Router lookups refused, by reason."),
    (
        ROUTER_INVALIDATIONS,
        Kind::Counter,
        "Router entries replaced or removed by change events.",
    ),
    (
        ROUTER_EVICTIONS,
        Kind::Counter,
        "Router entries evicted by the size bounds.",
    ),
    (
        ROUTER_REGISTRY_ERRORS,
        Kind::Counter,
        "Failed registry calls made by the router.",
    ),
    (ROUTER_FEED_ERRORS, Kind::Counter, "Failed change-feed reads."),
    (
        ROUTER_HISTORY_RESETS,
        Kind::Counter,
        "Router tables dropped after the registry's history diverged.",
    ),
    (ROUTER_ENTRIES, Kind::Gauge, "Entries in the router's table."),
    (
        ROUTER_FEED_LAG_VERSIONS,
        Kind::Gauge,
        "Registry changes the router has not applied.",
    ),
    (
        ROUTER_FEED_LAG_SECONDS,
        Kind::Gauge,
        "How long the router has been behind the registry's head.",
    ),
    (
        ROUTER_FEED_STUCK,
        Kind::Gauge,
        "1 while the change feed cannot read past a change.",
    ),
    (
        ROUTER_RESOLVE_DURATION,
        Kind::Histogram,
        "Time of router resolves that read the registry.",
    ),
    (REGISTRY_CALLS, Kind::Counter, "Registry calls, by method."),
    (
        REGISTRY_ERRORS,
        Kind::Counter,
        "Failed registry calls, by method and error kind.",
    ),
    (
        REGISTRY_CALL_DURATION,
        Kind::Histogram,
        "Registry call latency, by method.",
    ),
    (STAMP_TENANTS, Kind::Gauge, "Tenants on the stamp."),
    (
        STAMP_UTILIZATION,
        Kind::Gauge,
        "Resource usage over the stamp's soft limit.",
    ),
    (
        STAMP_ABOVE_TRIGGER,
        Kind::Gauge,
        "1 when the stamp is at or past its provisioning trigger.",
    ),
    (
        STAMP_TIME_TO_TRIGGER,
        Kind::Gauge,
        "Time until the stamp reaches its provisioning trigger.",
    ),
    (STAMP_STATE, Kind::Gauge, "1 for the stamp's lifecycle state."),
    (STAMP_HEALTH, Kind::Gauge, "1 for the stamp's health status."),
    (REGION_NEEDS_STAMP, Kind::Gauge, "1 when the region needs a new stamp."),
    (HEALTH_TRANSITIONS, Kind::Counter, "Stamp health transitions."),
    (MIGRATIONS, Kind::Gauge, "Migrations by state."),
    (
        MIGRATION_FROZEN_SECONDS,
        Kind::Gauge,
        "The longest write freeze in force now.",
    ),
    (MIGRATION_TRANSITIONS, Kind::Counter, "Migration state transitions."),
    (MIGRATION_STEP_DURATION, Kind::Histogram, "Time of one migration step."),
    (MIGRATION_STEP_FAILURES, Kind::Counter, "Failed migration steps."),
    (MIGRATION_CUTOVER_REFUSALS, Kind::Counter, "Cutovers refused."),
    (
        MIGRATION_BLOCKED,
        Kind::Counter,
        "Migration steps that stopped for a person.",
    ),
    (MIGRATION_FREEZES, Kind::Counter, "Write freezes started at cutover."),
    (
        MIGRATION_FREEZE_DURATION,
        Kind::Histogram,
        "How long writes stayed frozen at cutover.",
    ),
    (PLACEMENT_DECISIONS, Kind::Counter, "Placement decisions, by outcome."),
    (
        PLACEMENT_REJECTIONS,
        Kind::Counter,
        "Stamps rejected while placing, by filter.",
    ),
    (
        PLACEMENT_PROVISION_REQUESTS,
        Kind::Counter,
        "Placements that asked for a new stamp.",
    ),
];
