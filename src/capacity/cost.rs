//! Stamp cost from line items, and fleet economics.

use std::borrow::Cow;

use super::num;
use super::{CapacityError, Money, Rounding};

/// One line of a stamp's monthly bill: `quantity × unit_cost`.
///
/// ```
/// use stamps::capacity::{LineItem, Money};
/// let servers = LineItem::new("Application servers", 20, Money::from_dollars(200));
/// assert_eq!(servers.total()?, Money::from_dollars(4_000));
/// let storage = LineItem::flat("Storage (1 TB)", Money::from_dollars(100));
/// assert_eq!(storage.quantity, 1);
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LineItem {
    /// What is paid for, such as `"Database (primary + 2 replicas)"`.
    pub label: Cow<'static, str>,
    /// How many units.
    pub quantity: u64,
    /// Price of one unit per month.
    pub unit_cost: Money,
}

impl LineItem {
    /// `quantity` units at `unit_cost` each.
    ///
    /// ```
    /// use stamps::capacity::{LineItem, Money};
    /// let cache = LineItem::new("Cache nodes", 3, Money::from_dollars(150));
    /// assert_eq!(cache.total()?.to_string(), "$450.00");
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn new(label: impl Into<Cow<'static, str>>, quantity: u64, unit_cost: Money) -> Self {
        LineItem {
            label: label.into(),
            quantity,
            unit_cost,
        }
    }

    /// A flat monthly charge (quantity 1).
    ///
    /// ```
    /// use stamps::capacity::{LineItem, Money};
    /// assert_eq!(LineItem::flat("Networking", Money::from_dollars(300)).total()?, Money::from_dollars(300));
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn flat(label: impl Into<Cow<'static, str>>, cost: Money) -> Self {
        LineItem::new(label, 1, cost)
    }

    /// `quantity × unit_cost`.
    ///
    /// # Errors
    /// [`CapacityError::Overflow`] (`quantity`) past `u64::MAX` cents.
    ///
    /// ```
    /// use stamps::capacity::{LineItem, Money};
    /// let db = LineItem::new("Database nodes", 3, Money::from_dollars(800));
    /// assert_eq!(db.total()?, Money::from_dollars(2_400));
    /// assert!(LineItem::new("x", u64::MAX, Money::from_cents(2)).total().is_err());
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn total(&self) -> Result<Money, CapacityError> {
        self.unit_cost
            .checked_mul(self.quantity)
            .ok_or(CapacityError::Overflow {
                argument: "quantity",
                limit: "u64 cents",
            })
    }
}

/// The monthly cost of one stamp: its line items and their exact total.
///
/// ```
/// use stamps::capacity::{LineItem, Money, StampCost};
/// let cost = StampCost::new([
///     LineItem::new("Application servers", 20, Money::from_dollars(200)),
///     LineItem::new("Database (primary + 2 replicas)", 3, Money::from_dollars(800)),
///     LineItem::new("Cache cluster", 3, Money::from_dollars(150)),
///     LineItem::new("Load balancers", 2, Money::from_dollars(100)),
///     LineItem::flat("Storage (1 TB)", Money::from_dollars(100)),
///     LineItem::flat("Networking", Money::from_dollars(300)),
/// ])?;
/// assert_eq!(cost.total().to_string(), "$7,450.00");
/// assert_eq!(cost.per_tenant(150)?.to_string(), "$49.67");
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampCost {
    items: Vec<LineItem>,
    total: Money,
}

impl StampCost {
    /// Adds up the line items.
    ///
    /// # Errors
    /// [`CapacityError::Empty`] (`items`) for no items; [`CapacityError::Overflow`]
    /// (`items`) past `u64::MAX` cents.
    ///
    /// ```
    /// use stamps::capacity::{LineItem, Money, StampCost};
    /// assert!(StampCost::new(Vec::<LineItem>::new()).is_err());
    /// let one = StampCost::new([LineItem::flat("Networking", Money::from_dollars(300))])?;
    /// assert_eq!(one.items().len(), 1);
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn new(items: impl IntoIterator<Item = LineItem>) -> Result<Self, CapacityError> {
        let items: Vec<LineItem> = items.into_iter().collect();
        if items.is_empty() {
            return Err(CapacityError::Empty { argument: "items" });
        }
        let mut total = Money::ZERO;
        for item in &items {
            let line = item.total().map_err(|_| CapacityError::Overflow {
                argument: "items",
                limit: "u64 cents",
            })?;
            total = total.checked_add(line).ok_or(CapacityError::Overflow {
                argument: "items",
                limit: "u64 cents",
            })?;
        }
        Ok(StampCost { items, total })
    }

    /// The line items, in the order given.
    ///
    /// ```
    /// use stamps::capacity::{LineItem, Money, StampCost};
    /// let cost = StampCost::new([LineItem::flat("Networking", Money::from_dollars(300))])?;
    /// assert_eq!(cost.items()[0].label, "Networking");
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn items(&self) -> &[LineItem] {
        &self.items
    }

    /// The exact total per month.
    ///
    /// ```
    /// use stamps::capacity::{LineItem, Money, StampCost};
    /// let cost = StampCost::new([LineItem::new("Load balancers", 2, Money::from_dollars(100))])?;
    /// assert_eq!(cost.total(), Money::from_dollars(200));
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn total(&self) -> Money {
        self.total
    }

    /// Cost per tenant when the stamp holds `tenants`: `total / tenants`, rounded half up to
    /// the cent ($7,450 / 150 = $49.666… → $49.67).
    ///
    /// # Errors
    /// [`CapacityError::Zero`] (`tenants`) for zero tenants.
    ///
    /// ```
    /// use stamps::capacity::{LineItem, Money, StampCost};
    /// let cost = StampCost::new([LineItem::flat("Stamp", Money::from_dollars(7_450))])?;
    /// assert_eq!(cost.per_tenant(150)?, Money::from_cents(4_967));
    /// assert!(cost.per_tenant(0).is_err());
    /// # Ok::<(), stamps::capacity::CapacityError>(())
    /// ```
    pub fn per_tenant(&self, tenants: u64) -> Result<Money, CapacityError> {
        self.total
            .checked_div_rounded(tenants, Rounding::HalfUp)
            .ok_or(CapacityError::Zero { argument: "tenants" })
    }
}

/// How revenue relates to infrastructure cost.
///
/// Calculation 5 of *Deployment Stamps for Availability: Multi-Region Guide* computes
/// "revenue needed (assuming 40% margin)" as `cost / 0.40`: that
/// makes infrastructure 40% of revenue, which is a 60% gross margin. Both readings are here,
/// named for what they are.
///
/// ```
/// use stamps::capacity::{fleet_economics, Money, RevenueTarget};
/// let cost = Money::from_dollars(7_450);
/// let guide = fleet_economics(67, cost, 10_000, RevenueTarget::CostShareOfRevenue(0.40))?;
/// assert_eq!(guide.revenue_needed.to_string(), "$1,247,875.00");
/// let margin = fleet_economics(67, cost, 10_000, RevenueTarget::GrossMargin(0.40))?;
/// assert_eq!(margin.revenue_needed.to_string(), "$831,916.67");
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum RevenueTarget {
    /// Infrastructure cost is this fraction of revenue, in `(0, 1]`:
    /// `revenue = cost / share`. The "40% margin" of the guide's worked example is
    /// `CostShareOfRevenue(0.40)`.
    CostShareOfRevenue(f64),
    /// A gross margin after infrastructure, in `[0, 1)`: `revenue = cost / (1 − margin)`.
    GrossMargin(f64),
}

/// Parts per million, the resolution to which fractions enter money calculations.
const PPM: u128 = 1_000_000;

impl RevenueTarget {
    /// The cost's share of revenue in parts per million, validated.
    fn cost_share_ppm(self) -> Result<u128, CapacityError> {
        let (argument, ppm) = match self {
            RevenueTarget::CostShareOfRevenue(share) => {
                let share = num::fraction_open_closed(
                    "cost_share",
                    share,
                    "give infrastructure's fraction of revenue, e.g. 0.40",
                )?;
                ("cost_share", (share * 1e6).round())
            }
            RevenueTarget::GrossMargin(margin) => {
                let margin = num::fraction_closed_open(
                    "gross_margin",
                    margin,
                    "give the margin as a fraction, e.g. 0.40 for 40%",
                )?;
                ("gross_margin", 1e6 - (margin * 1e6).round())
            }
        };
        if ppm < 1.0 {
            // Below one part per million of revenue: too close to a zero divisor.
            let value = match self {
                RevenueTarget::CostShareOfRevenue(v) | RevenueTarget::GrossMargin(v) => v,
            };
            return Err(CapacityError::OutOfRange {
                argument,
                value,
                range: "a cost share of at least 0.000001",
                hint: "revenue would be unbounded; check the fraction",
            });
        }
        // Whole and in [1, 1e6]: the cast is exact.
        Ok(ppm as u128)
    }
}

/// The outcome of [`fleet_economics`].
///
/// ```
/// use stamps::capacity::{fleet_economics, Money, RevenueTarget};
/// let e = fleet_economics(67, Money::from_dollars(7_450), 10_000, RevenueTarget::CostShareOfRevenue(0.40))?;
/// assert_eq!(e.total_cost.to_string(), "$499,150.00");
/// assert_eq!(e.min_arpu.to_string(), "$124.79");
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FleetEconomics {
    /// Stamps in the fleet.
    pub stamps: u64,
    /// Tenants served.
    pub tenants: u64,
    /// Monthly cost of the whole fleet: `stamps × cost_per_stamp`, exact.
    pub total_cost: Money,
    /// Fleet cost per tenant: `total_cost / tenants`, rounded half up. Higher than a full
    /// stamp's cost per tenant when the last stamps are not full.
    pub cost_per_tenant: Money,
    /// Monthly revenue needed to meet the target, rounded up to the cent.
    pub revenue_needed: Money,
    /// Minimum average revenue per tenant per month, `revenue / tenants` computed from the
    /// exact revenue and rounded up to the cent (a minimum price never rounds down).
    pub min_arpu: Money,
    /// The revenue target used.
    pub target: RevenueTarget,
}

/// Total infrastructure cost, revenue needed and minimum ARPU for a fleet.
///
/// - `total_cost = stamps × cost_per_stamp` (exact cents);
/// - `revenue_needed = ⌈total_cost / share⌉`, where `share` is the cost's share of revenue
///   ([`RevenueTarget`]) taken to the nearest millionth so that the division is exact
///   integer arithmetic;
/// - `min_arpu = ⌈total_cost / (share × tenants)⌉`.
///
/// # Errors
/// [`CapacityError::Zero`] (`tenants`); `cost_share` / `gross_margin` out of range;
/// [`CapacityError::Overflow`] (`stamps` for the total, `cost_per_stamp` for revenue).
///
/// # Example
/// The figures of calculation 5 of *Deployment Stamps for Availability: Multi-Region Guide*,
/// then what a true 40% gross margin needs:
/// ```
/// use stamps::capacity::{fleet_economics, Money, RevenueTarget};
/// let per_stamp = Money::from_dollars(7_450);
/// let e = fleet_economics(67, per_stamp, 10_000, RevenueTarget::CostShareOfRevenue(0.40))?;
/// assert_eq!(e.total_cost, Money::from_dollars(499_150));
/// assert_eq!(e.revenue_needed, Money::from_dollars(1_247_875));
/// assert_eq!(e.min_arpu, Money::from_cents(12_479));
///
/// let e = fleet_economics(67, per_stamp, 10_000, RevenueTarget::GrossMargin(0.40))?;
/// assert_eq!(e.revenue_needed, Money::from_cents(83_191_667));
/// assert_eq!(e.min_arpu, Money::from_cents(8_320));
/// # Ok::<(), stamps::capacity::CapacityError>(())
/// ```
pub fn fleet_economics(
    stamps: u64,
    cost_per_stamp: Money,
    tenants: u64,
    target: RevenueTarget,
) -> Result<FleetEconomics, CapacityError> {
    if tenants == 0 {
        return Err(CapacityError::Zero { argument: "tenants" });
    }
    let share_ppm = target.cost_share_ppm()?;
    let total_cost = cost_per_stamp.checked_mul(stamps).ok_or(CapacityError::Overflow {
        argument: "stamps",
        limit: "u64 cents",
    })?;
    let cost_per_tenant = total_cost
        .checked_div_rounded(tenants, Rounding::HalfUp)
        .ok_or(CapacityError::Zero { argument: "tenants" })?;
    // total < 2^64 and PPM < 2^20: the product fits u128; share_ppm >= 1.
    let scaled = u128::from(total_cost.cents()) * PPM;
    let revenue = num::narrow("cost_per_stamp", num::div_ceil_u128(scaled, share_ppm))?;
    // share_ppm <= 1e6 and tenants < 2^64: the divisor fits u128 and is >= 1.
    let arpu = num::narrow(
        "cost_per_stamp",
        num::div_ceil_u128(scaled, share_ppm * u128::from(tenants)),
    )?;
    Ok(FleetEconomics {
        stamps,
        tenants,
        total_cost,
        cost_per_tenant,
        revenue_needed: Money::from_cents(revenue),
        min_arpu: Money::from_cents(arpu),
        target,
    })
}
