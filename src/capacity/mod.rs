#![deny(missing_docs, missing_debug_implementations)]

//! Capacity planning for a fleet of stamps: how many tenants fit a stamp, what it costs,
//! when to provision the next one, how many stamps and where, how big a stamp may be for a
//! recovery time and a blast radius, and the arithmetic of shuffle sharding.
//!
//! Everything here is a pure function or a small typed struct: no I/O, no clock, no
//! allocation beyond the returned vectors. Counts are `u64`, money is integer cents
//! ([`Money`]), rates carry their unit ([`RequestsPerSecond`], [`TenantsPerDay`],
//! [`BytesPerSecond`]) and durations are [`std::time::Duration`]. Every bad input (NaN,
//! infinities, negatives, zero divisors, shares that do not add up to 1, overflow) is a
//! [`CapacityError`] that names the argument; nothing panics. Headroom is the model's
//! [`Headroom`], validated to `[0, 1)` when it is made ([`Headroom::from_fraction`] names
//! `headroom` in its error), and resources are the model's [`Resource`].
//!
//! The capacity-planning guide ([`guide`], also `docs/capacity-planning.md`) works through
//! the example stamp of the "Math & Calculations" section of
//! *Deployment Stamps for Availability: Multi-Region Guide* and lists where that example's
//! own arithmetic needs care.
//!
//! # Formulas and units
//!
//! | Question | Function | Formula | Units |
//! |---|---|---|---|
//! | Tenants per stamp | [`tenants_per_stamp`] | `min over resources ⌊capacity × (1 − headroom) × pooling / per_tenant⌋` | capacity and per-tenant demand in the resource's own unit; headroom a fraction in `[0, 1)`; pooling ≥ 1 |
//! | Peak load | [`peak_load`] | `tenants × per_tenant` | requests/s |
//! | Servers | [`servers_needed`] | `⌈peak / (per_server × (1 − headroom))⌉` | requests/s ÷ requests/s per server |
//! | Stamp cost | [`StampCost`] | `Σ quantity × unit_cost`; per tenant `total / tenants` (half up) | cents per month |
//! | Trigger | [`provisioning_thresholds`] | `⌊capacity × trigger_utilization⌋` | tenants |
//! | Alert | [`provisioning_thresholds`] | `⌊trigger − growth × lead_time⌋` | tenants − tenants/day × days |
//! | Fleet size | [`stamps_needed`] | `⌈tenants / tenants_per_stamp⌉` | stamps |
//! | Regions | [`apportion`], [`regional_fleet`] | largest remainder over `total × share` | stamps or tenants |
//! | Economics | [`fleet_economics`] | `stamps × cost`; `⌈cost / share⌉`; `⌈cost / (share × tenants)⌉` | cents per month |
//! | Blast radius | [`min_stamps_for_blast_radius`], [`fraction_affected`] | `⌈1 / max_fraction⌉`; `failed / stamps` | stamps; fraction of tenants |
//! | Recovery time | [`RestoreModel`] | `⌊(rto − overhead) × throughput / data_per_tenant⌋` | s × bytes/s ÷ bytes |
//! | Shuffle sharding | [`ShuffleSharding`], [`binomial`] | `C(n, k)` exact; `1 / C(n, k)`; hypergeometric overlap | shards; probabilities |
//! | Live signals | [`provisioning_signals`] | room = `⌊⌊soft_limit / demand⌋ × trigger⌋ − tenants`; time to trigger = `room / growth`; signal when `room ≤ ⌈growth × lead_time⌉`; deadline = `at + room / growth − lead_time` | tenants; [`Duration`](std::time::Duration); [`Timestamp`](crate::Timestamp) |
//!
//! # Rounding
//!
//! Every conversion from a real-valued result to a count says which way it rounds, and the
//! direction is the safe one for the question:
//! - capacities (tenants that fit, trigger and alert thresholds, tenants restorable within an
//!   RTO) round **down**: a stamp never promises a tenant it cannot hold;
//! - requirements (servers, stamps, revenue, minimum ARPU) round **up**;
//! - allocations of money (cost per tenant) round **half up** to the cent;
//! - apportionments use the **largest remainder**, so the parts add up to the total.
//!
//! Before rounding, a float result within one part in 10^12 of a whole number (relative,
//! with an absolute floor of 10^-12 and a cap of 10^-6) is taken as that whole number. Decimal
//! inputs are not exact in binary floating point (`0.1 × 3 × 10` is `3.0000000000000004`),
//! and without this a planner would lose a tenant, or buy a server, to representation error.
//! The slack grows with the value, so rounding stays monotone: more capacity never yields
//! fewer tenants.
//!
//! Money never goes through floats except where a fraction enters (a revenue share): the
//! fraction is resolved to the nearest millionth and the division is done in exact integer
//! arithmetic.
//!
//! # Example
//! Calculations 1 and 2 of the "Math & Calculations" section of
//! *Deployment Stamps for Availability: Multi-Region Guide*:
//! ```
//! use stamps::capacity::{
//!     peak_load, servers_needed, tenants_per_stamp, Headroom, RequestsPerSecond, Resource,
//!     ResourceLimit,
//! };
//! let headroom = Headroom::from_fraction(0.25)?;
//! let stamp = tenants_per_stamp(
//!     &[ResourceLimit::new(Resource::Connections, 5_000.0, 25.0)],
//!     headroom,
//! )?;
//! assert_eq!(stamp.tenants, 150);
//! let peak = peak_load(stamp.tenants, RequestsPerSecond(10.0))?;
//! let servers = servers_needed(peak, RequestsPerSecond(100.0), headroom)?;
//! assert_eq!((peak.get(), servers.at_full_utilization, servers.servers), (1_500.0, 15, 20));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cost;
mod error;
mod fleet;
mod num;
mod provisioning;
mod resilience;
mod signals;
mod sizing;
mod units;

pub use cost::{fleet_economics, FleetEconomics, LineItem, RevenueTarget, StampCost};
pub use error::CapacityError;
pub use fleet::{apportion, regional_fleet, stamps_needed, RegionPlan, SHARE_TOLERANCE};
pub use provisioning::{provisioning_thresholds, time_until, ProvisioningThresholds};
pub use resilience::{binomial, fraction_affected, min_stamps_for_blast_radius, RestoreModel, ShuffleSharding};
pub use signals::{
    provisioning_signals, ProvisionNewStamp, ProvisionReason, ProvisioningReport, SignalPolicy, StampSignal,
};
pub use sizing::{
    peak_load, servers_needed, tenants_per_stamp, ResourceFit, ResourceLimit, ServerPlan, TenantCapacity,
};
pub use units::{Bytes, BytesPerSecond, Money, RequestsPerSecond, Rounding, TenantsPerDay};

/// Re-exported from [`crate::model`] so that `use stamps::capacity::*` covers every argument
/// type: resources are the model's [`Resource`], headroom the model's [`Headroom`] (a fraction
/// in `[0, 1)` held in parts per million, the same value placement enforces as soft limits).
pub use crate::model::{Headroom, Resource};

#[doc = include_str!("../../docs/capacity-planning.md")]
pub mod guide {}
