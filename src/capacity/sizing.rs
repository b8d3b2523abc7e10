//! Tenants per stamp from the bottleneck resource, and application servers per stamp.

use super::num;
use super::units::usable_fraction;
use super::{CapacityError, RequestsPerSecond};
use crate::model::{Headroom, Resource};

/// One stamp-wide resource limit and what each tenant demands of it.
///
/// `capacity` and `per_tenant` are in the same unit (connections and connections per tenant,
/// bytes and bytes per tenant, ...). `pooling` is a multiplexing factor of at least 1: with a
/// transaction-mode pooler such as PgBouncer in front of the database, `pooling` client
/// connections share one server connection, so each tenant costs `per_tenant / pooling` of
/// the limit. It is the lever *Deployment Stamps for Availability: Multi-Region Guide* names
/// for raising tenant density (the "Key Insight" of its "Math & Calculations" section).
///
/// ```
/// use stamps::capacity::{Resource, ResourceLimit};
/// let db = ResourceLimit::new(Resource::Connections, 5_000.0, 25.0).pooling(4.0);
/// assert_eq!(db.pooling, 4.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResourceLimit {
    /// Which resource.
    pub resource: Resource,
    /// How much of it one stamp has (finite, at least 0).
    pub capacity: f64,
    /// How much of it one tenant uses at peak (finite, greater than 0).
    pub per_tenant: f64,
    /// Multiplexing factor (finite, at least 1); 1 means no pooling.
    pub pooling: f64,
    /// A headroom of its own for this resource (`None`: the headroom given to
    /// [`tenants_per_stamp`]), as [`Capacity::headroom_on`](crate::Capacity::headroom_on)
    /// keeps on a stamp.
    pub headroom: Option<Headroom>,
}

impl ResourceLimit {
    /// A limit without pooling. Values are validated when used, by [`tenants_per_stamp`].
    ///
    /// ```
    /// use stamps::capacity::{Resource, ResourceLimit};
    /// let limit = ResourceLimit::new(Resource::Storage, 1e12, 5e9);
    /// assert_eq!(limit.pooling, 1.0);
    /// ```
    pub fn new(resource: Resource, capacity: f64, per_tenant: f64) -> Self {
        ResourceLimit {
            resource,
            capacity,
            per_tenant,
            pooling: 1.0,
            headroom: None,
        }
    }

    /// The same limit with a headroom of its own (say 10% on storage while the stamp keeps
    /// 25% on everything else).
    ///
    /// ```
    /// use stamps::capacity::{tenants_per_stamp, Headroom, Resource, ResourceLimit};
    /// let disk = ResourceLimit::new(Resource::Storage, 1_000.0, 10.0).headroom(Headroom::from_fraction(0.10)?);
    /// let conns = ResourceLimit::new(Resource::Connections, 5_000.0, 25.0);
    /// let plan = tenants_per_stamp(&[disk, conns], Headroom::from_fraction(0.25)?)?;
    /// assert_eq!((plan.per_resource[0].tenants, plan.per_resource[1].tenants), (90, 150));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn headroom(mut self, headroom: Headroom) -> Self {
        self.headroom = Some(headroom);
        self
    }

    /// The same limit behind a pooler that multiplexes `factor` client connections onto
    /// one server connection.
    ///
    /// ```
    /// use stamps::capacity::{Resource, ResourceLimit};
    /// let limit = ResourceLimit::new(Resource::Connections, 5_000.0, 25.0);
    /// assert_eq!(limit.pooling(10.0).pooling, 10.0);
    /// ```
    pub fn pooling(mut self, factor: f64) -> Self {
        self.pooling = factor;
        self
    }
}

/// How many tenants one resource admits.
///
/// ```
/// use stamps::capacity::{tenants_per_stamp, Headroom, Resource, ResourceLimit};
/// let db = ResourceLimit::new(Resource::Connections, 5_000.0, 25.0);
/// let fit = &tenants_per_stamp(&[db], Headroom::from_fraction(0.25)?)?.per_resource[0];
/// assert_eq!((fit.tenants, fit.tenants_without_headroom), (150, 200));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResourceFit {
    /// Which resource.
    pub resource: Resource,
    /// Whole tenants that fit within the usable part of the limit:
    /// `⌊capacity × (1 − headroom) × pooling / per_tenant⌋`.
    pub tenants: u64,
    /// Whole tenants that fit the whole limit, with no headroom:
    /// `⌊capacity × pooling / per_tenant⌋`.
    pub tenants_without_headroom: u64,
    /// The usable part of the limit, `capacity × (1 − headroom)`, in the resource's unit.
    pub usable: f64,
}

/// The outcome of [`tenants_per_stamp`]: the tenant limit and the resource that sets it.
///
/// ```
/// use stamps::capacity::{tenants_per_stamp, Headroom, Resource, ResourceLimit};
/// let plan = tenants_per_stamp(
///     &[ResourceLimit::new(Resource::Connections, 5_000.0, 25.0)],
///     Headroom::from_fraction(0.25)?,
/// )?;
/// assert_eq!(plan.tenants, 150);
/// assert_eq!(plan.bottleneck, Resource::Connections);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TenantCapacity {
    /// The most tenants one stamp holds: the smallest [`ResourceFit::tenants`].
    pub tenants: u64,
    /// The resource that binds (the first one, in input order, on a tie).
    pub bottleneck: Resource,
    /// Every resource's fit, in input order.
    pub per_resource: Vec<ResourceFit>,
}

/// The most tenants one stamp can hold, and which resource binds.
///
/// For each resource, `⌊capacity × (1 − headroom) × pooling / per_tenant⌋` (see the module
/// docs, "Rounding", for how near-whole results are treated); the smallest wins.
///
/// # Errors
/// - [`CapacityError::Empty`] (`limits`) if there is no limit;
/// - `limits[].capacity`: NaN, infinite or negative;
/// - `limits[].per_tenant`: NaN, infinite, negative or zero (a resource tenants do not use
///   does not limit them: leave it out);
/// - `limits[].pooling`: NaN, infinite or below 1;
/// - [`CapacityError::Overflow`] (`limits[].capacity`) if a count exceeds `u64`.
///
/// # Example
/// Calculation 1 of *Deployment Stamps for Availability: Multi-Region Guide*, with an app tier of 30 servers at 100 rps that does not
/// bind, and the same stamp behind PgBouncer multiplexing 4 client connections onto one
/// server connection, where the app tier becomes the bottleneck:
/// ```
/// use stamps::capacity::{tenants_per_stamp, Headroom, Resource, ResourceLimit};
/// let headroom = Headroom::from_fraction(0.25)?;
/// let limits = [
///     ResourceLimit::new(Resource::Connections, 5_000.0, 25.0),
///     ResourceLimit::new(Resource::RequestsPerSecond, 30.0 * 100.0, 10.0),
/// ];
/// let plan = tenants_per_stamp(&limits, headroom)?;
/// assert_eq!(plan.tenants, 150);
/// assert_eq!(plan.bottleneck, Resource::Connections);
///
/// let pooled = [limits[0].clone().pooling(4.0), limits[1].clone()];
/// let plan = tenants_per_stamp(&pooled, headroom)?;
/// assert_eq!(plan.tenants, 225);
/// assert_eq!(plan.bottleneck, Resource::RequestsPerSecond);
/// assert_eq!(plan.per_resource[0].tenants, 600);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tenants_per_stamp(limits: &[ResourceLimit], headroom: Headroom) -> Result<TenantCapacity, CapacityError> {
    let mut per_resource = Vec::with_capacity(limits.len());
    let mut best: Option<(u64, usize)> = None;
    for (index, limit) in limits.iter().enumerate() {
        let capacity = num::non_negative("limits[].capacity", limit.capacity)?;
        let per_tenant = num::positive("limits[].per_tenant", limit.per_tenant)?;
        let pooling = num::finite("limits[].pooling", limit.pooling)?;
        if pooling < 1.0 {
            return Err(CapacityError::OutOfRange {
                argument: "limits[].pooling",
                value: pooling,
                range: "[1, inf)",
                hint: "give how many client connections share one server connection; 1 means no pooling",
            });
        }
        let usable = capacity * usable_fraction(limit.headroom.unwrap_or(headroom));
        let tenants = num::floor_count("limits[].capacity", usable * pooling / per_tenant)?;
        let tenants_without_headroom = num::floor_count("limits[].capacity", capacity * pooling / per_tenant)?;
        if best.is_none_or(|(fewest, _)| tenants < fewest) {
            best = Some((tenants, index));
        }
        per_resource.push(ResourceFit {
            resource: limit.resource.clone(),
            tenants,
            tenants_without_headroom,
            usable,
        });
    }
    let (tenants, index) = best.ok_or(CapacityError::Empty { argument: "limits" })?;
    let bottleneck = per_resource
        .get(index)
        .map(|fit| fit.resource.clone())
        .ok_or(CapacityError::Empty { argument: "limits" })?;
    Ok(TenantCapacity {
        tenants,
        bottleneck,
        per_resource,
    })
}

/// Total peak load of `tenants` tenants: `tenants × per_tenant`.
///
/// # Errors
/// `per_tenant`: NaN, infinite or negative; [`CapacityError::Overflow`] (`per_tenant`) if
/// the product is infinite.
///
/// # Example
/// ```
/// use stamps::capacity::{peak_load, RequestsPerSecond};
/// assert_eq!(peak_load(150, RequestsPerSecond(10.0))?, RequestsPerSecond(1_500.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn peak_load(tenants: u64, per_tenant: RequestsPerSecond) -> Result<RequestsPerSecond, CapacityError> {
    let per_tenant = num::non_negative("per_tenant", per_tenant.0)?;
    let total = tenants as f64 * per_tenant;
    if total.is_finite() {
        Ok(RequestsPerSecond(total))
    } else {
        Err(CapacityError::Overflow {
            argument: "per_tenant",
            limit: "f64",
        })
    }
}

/// The outcome of [`servers_needed`].
///
/// ```
/// use stamps::capacity::{servers_needed, Headroom, RequestsPerSecond};
/// let plan = servers_needed(RequestsPerSecond(1_500.0), RequestsPerSecond(100.0), Headroom::from_fraction(0.25)?)?;
/// assert_eq!((plan.at_full_utilization, plan.servers), (15, 20));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ServerPlan {
    /// The peak load served.
    pub peak: RequestsPerSecond,
    /// Servers needed running flat out: `⌈peak / per_server⌉`.
    pub at_full_utilization: u64,
    /// Servers needed with the headroom kept spare: `⌈peak / (per_server × (1 − headroom))⌉`.
    pub servers: u64,
}

/// Application servers needed for a peak load, with and without headroom.
///
/// `servers = ⌈peak / (per_server × (1 − headroom))⌉`, in one rounding.
/// Calculation 2 of *Deployment Stamps for Availability: Multi-Region Guide* computes servers
/// at full load first (15) and divides that by `1 − headroom` (20); rounding at both steps
/// (`⌈⌈peak / per_server⌉ / (1 − headroom)⌉`) gives the same 20 for its figures but can over-provision by one server elsewhere: 1,010 rps at 100 rps per server
/// and 25% headroom is 14 servers, not the 15 of double rounding.
///
/// # Errors
/// `peak`: NaN, infinite or negative; `per_server`: NaN, infinite, negative or zero;
/// [`CapacityError::Overflow`] (`peak`) if the count exceeds `u64`.
///
/// # Example
/// ```
/// use stamps::capacity::{servers_needed, Headroom, RequestsPerSecond};
/// let headroom = Headroom::from_fraction(0.25)?;
/// let plan = servers_needed(RequestsPerSecond(1_500.0), RequestsPerSecond(100.0), headroom)?;
/// assert_eq!(plan.at_full_utilization, 15);
/// assert_eq!(plan.servers, 20);
/// let plan = servers_needed(RequestsPerSecond(1_010.0), RequestsPerSecond(100.0), headroom)?;
/// assert_eq!((plan.at_full_utilization, plan.servers), (11, 14));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn servers_needed(
    peak: RequestsPerSecond,
    per_server: RequestsPerSecond,
    headroom: Headroom,
) -> Result<ServerPlan, CapacityError> {
    let load = num::non_negative("peak", peak.0)?;
    let per_server = num::positive("per_server", per_server.0)?;
    let at_full_utilization = num::ceil_count("peak", load / per_server)?;
    let servers = num::ceil_count("peak", load / (per_server * usable_fraction(headroom)))?;
    Ok(ServerPlan {
        peak,
        at_full_utilization,
        servers,
    })
}
