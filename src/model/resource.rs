//! Resources, amounts, demand and headroom.

use std::fmt;

use super::error::InvalidInput;
use super::Name;

/// A resource a stamp has a limited amount of and tenants consume.
///
/// The units of [`Storage`](Resource::Storage) and [`Memory`](Resource::Memory) are the user's
/// choice (GiB, say); they only have to be the same in capacities and demands.
///
/// ```
/// use stamps::{Name, Resource};
/// let gpu = Resource::Custom(Name::new("gpu-hours")?);
/// assert_eq!(gpu.to_string(), "gpu-hours");
/// assert_eq!(Resource::Connections.to_string(), "connections");
/// # Ok::<(), stamps::Error>(())
/// ```
///
/// A custom resource may not reuse a built-in resource's name (`tenants`, `connections`,
/// `rps`, `storage`, `memory`): stored by name, it would read back as the built-in one.
/// [`Resource::parse`] never makes one; [`Resource::validate`] and deserialization refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", try_from = "ResourceRaw"))]
#[non_exhaustive]
pub enum Resource {
    /// Tenant slots: every tenant consumes exactly one, implicitly.
    Tenants,
    /// Database connections.
    Connections,
    /// Requests per second at peak.
    RequestsPerSecond,
    /// Storage, in the user's unit.
    Storage,
    /// Memory, in the user's unit.
    Memory,
    /// A user-named resource.
    Custom(Name),
}

/// [`Resource`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResourceRaw {
    Tenants,
    Connections,
    RequestsPerSecond,
    Storage,
    Memory,
    Custom(Name),
}

#[cfg(feature = "serde")]
impl TryFrom<ResourceRaw> for Resource {
    type Error = InvalidInput;

    fn try_from(raw: ResourceRaw) -> Result<Resource, InvalidInput> {
        let r = match raw {
            ResourceRaw::Tenants => Resource::Tenants,
            ResourceRaw::Connections => Resource::Connections,
            ResourceRaw::RequestsPerSecond => Resource::RequestsPerSecond,
            ResourceRaw::Storage => Resource::Storage,
            ResourceRaw::Memory => Resource::Memory,
            ResourceRaw::Custom(n) => Resource::Custom(n),
        };
        r.check()?;
        Ok(r)
    }
}

impl Resource {
    /// Checks that a custom resource does not reuse a built-in resource's name (the only way
    /// to build an invalid `Resource` is to write `Resource::Custom` by hand).
    ///
    /// ```
    /// use stamps::{Name, Resource};
    /// assert!(Resource::Custom(Name::new("gpu-hours")?).validate().is_ok());
    /// assert!(Resource::Custom(Name::new("rps")?).validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), super::error::Error> {
        self.check().map_err(Into::into)
    }

    fn check(&self) -> Result<(), InvalidInput> {
        match self {
            Resource::Custom(n) if !matches!(Resource::parse(n.as_str()), Ok(Resource::Custom(_))) => {
                Err(InvalidInput::new(
                    "resource",
                    "a custom resource must not reuse a built-in resource's name",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The resource's name as used in messages, tables and storage.
    pub fn name(&self) -> &str {
        match self {
            Resource::Tenants => "tenants",
            Resource::Connections => "connections",
            Resource::RequestsPerSecond => "rps",
            Resource::Storage => "storage",
            Resource::Memory => "memory",
            Resource::Custom(n) => n.as_str(),
        }
    }

    /// Parses a name written by [`Resource::name`]; any other valid name is a custom resource.
    ///
    /// ```
    /// use stamps::Resource;
    /// assert_eq!(Resource::parse("rps")?, Resource::RequestsPerSecond);
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn parse(name: &str) -> Result<Resource, super::error::Error> {
        Ok(match name {
            "tenants" => Resource::Tenants,
            "connections" => Resource::Connections,
            "rps" => Resource::RequestsPerSecond,
            "storage" => Resource::Storage,
            "memory" => Resource::Memory,
            other => Resource::Custom(Name::new(other)?),
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A non-negative quantity of a resource, in exact thousandths of a unit.
///
/// Fixed point so that usage sums are exact in every backend (no float drift after a million
/// assign/unassign cycles) and capacity checks are integer comparisons.
///
/// # Range
/// A demand or a limit is at most [`AMOUNT_MAX_UNITS`] units ([`AMOUNT_MAX_MILLI`]
/// thousandths): every registry stores such a value and reads it back exactly. A stamp's usage
/// is a sum of demands kept as a `u64` of thousandths; a write whose sum would not fit is
/// refused with [`Error::CapacityExceeded`](crate::Error::CapacityExceeded), so usage never
/// saturates (at the bound that takes over 18,000 tenants each demanding the maximum).
/// Deserialization refuses amounts above the bound.
///
/// ```
/// use stamps::Amount;
/// let a = Amount::from_f64(10.5)?;
/// assert_eq!(a.as_milli(), 10_500);
/// assert_eq!(Amount::units(3).checked_add(a), Some(Amount::from_f64(13.5)?));
/// assert!(Amount::from_f64(f64::NAN).is_err());
/// assert!(Amount::from_f64(-1.0).is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "u64", into = "u64"))]
pub struct Amount(u64);

/// The largest amount, in units, that [`Amount::from_f64`] accepts: one trillion (10^12)
/// units, the range in which every thousandth survives the trip through an `f64` exactly
/// (below 2^50 thousandths), so every registry reads back what it stored.
pub const AMOUNT_MAX_UNITS: f64 = 1_000_000_000_000.0;

/// [`AMOUNT_MAX_UNITS`] in thousandths: the largest amount [`Amount::try_from_milli`] and
/// deserialization accept.
pub const AMOUNT_MAX_MILLI: u64 = 1_000_000_000_000_000;

#[cfg(feature = "serde")]
impl TryFrom<u64> for Amount {
    type Error = InvalidInput;

    fn try_from(milli: u64) -> Result<Amount, InvalidInput> {
        Amount::checked_milli("amount", milli)
    }
}

#[cfg(feature = "serde")]
impl From<Amount> for u64 {
    fn from(a: Amount) -> u64 {
        a.0
    }
}

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// `n` whole units.
    pub const fn units(n: u32) -> Amount {
        Amount(n as u64 * 1000)
    }

    /// An amount from thousandths of a unit, unchecked: for arithmetic on usage sums. Input
    /// from users goes through [`Amount::try_from_milli`] or [`Amount::from_f64`].
    pub const fn from_milli(milli: u64) -> Amount {
        Amount(milli)
    }

    /// An amount from thousandths of a unit, refusing more than [`AMOUNT_MAX_MILLI`].
    ///
    /// ```
    /// use stamps::{Amount, AMOUNT_MAX_MILLI};
    /// assert_eq!(Amount::try_from_milli(1_500)?.as_f64(), 1.5);
    /// assert!(Amount::try_from_milli(AMOUNT_MAX_MILLI + 1).is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn try_from_milli(milli: u64) -> Result<Amount, super::error::Error> {
        Self::checked_milli("amount", milli).map_err(Into::into)
    }

    fn checked_milli(field: &'static str, milli: u64) -> Result<Amount, InvalidInput> {
        if milli > AMOUNT_MAX_MILLI {
            return Err(InvalidInput::new(field, "is too large (limit 10^12 units)"));
        }
        Ok(Amount(milli))
    }

    /// An amount from a float, rounded to the nearest thousandth. NaN, infinities, negative
    /// values and values above [`AMOUNT_MAX_UNITS`] are rejected.
    pub fn from_f64(value: f64) -> Result<Amount, super::error::Error> {
        Self::checked_f64("amount", value).map_err(Into::into)
    }

    pub(crate) fn checked_f64(field: &'static str, value: f64) -> Result<Amount, InvalidInput> {
        if !value.is_finite() {
            return Err(InvalidInput::new(
                field,
                "must be a finite number (not NaN or infinite)",
            ));
        }
        if value < 0.0 {
            return Err(InvalidInput::new(field, "must not be negative"));
        }
        if value > AMOUNT_MAX_UNITS {
            return Err(InvalidInput::new(field, "is too large (limit 10^12 units)"));
        }
        // In range and finite: the cast cannot saturate.
        Ok(Amount((value * 1000.0).round() as u64))
    }

    /// Thousandths of a unit.
    pub const fn as_milli(self) -> u64 {
        self.0
    }

    /// The amount as a float, for display and ratios.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Sum, or `None` on overflow.
    pub const fn checked_add(self, other: Amount) -> Option<Amount> {
        match self.0.checked_add(other.0) {
            Some(v) => Some(Amount(v)),
            None => None,
        }
    }

    /// Difference, floored at zero.
    pub const fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:03}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

/// A set of (resource, amount) pairs, sorted by resource, without duplicates. The shared
/// representation of [`Demand`], capacity limits and usage.
///
/// With `serde`, deserialization checks what the constructors check: a resource named twice
/// is an error, and pairs in any order are sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Amounts(Vec<(Resource, Amount)>);

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Amounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(Resource, Amount)>::deserialize(d)?;
        Amounts::from_pairs("amounts", pairs).map_err(serde::de::Error::custom)
    }
}

impl Amounts {
    pub(super) fn build(
        field: &'static str,
        items: impl IntoIterator<Item = (Resource, f64)>,
        strictly_positive: bool,
    ) -> Result<Amounts, InvalidInput> {
        let mut v: Vec<(Resource, Amount)> = Vec::new();
        for (r, x) in items {
            let a = Amount::checked_f64(field, x)?;
            if strictly_positive && a.is_zero() {
                return Err(InvalidInput::new(field, "must be greater than zero"));
            }
            v.push((r, a));
        }
        Self::from_pairs(field, v)
    }

    /// Sorts `v` by resource; a resource named twice, or a custom resource with a built-in
    /// name, is an error.
    fn from_pairs(field: &'static str, mut v: Vec<(Resource, Amount)>) -> Result<Amounts, InvalidInput> {
        for (r, _) in &v {
            r.check()?;
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        if v.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(InvalidInput::new(field, "names a resource twice"));
        }
        Ok(Amounts(v))
    }

    /// The amount of `resource` (zero when absent).
    pub fn get(&self, resource: &Resource) -> Amount {
        match self.0.binary_search_by(|(r, _)| r.cmp(resource)) {
            Ok(i) => self.0.get(i).map(|(_, a)| *a).unwrap_or_default(),
            Err(_) => Amount::ZERO,
        }
    }

    /// Whether `resource` is present.
    pub fn contains(&self, resource: &Resource) -> bool {
        self.0.binary_search_by(|(r, _)| r.cmp(resource)).is_ok()
    }

    /// The pairs, sorted by resource.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Resource, Amount)> + '_ {
        self.0.iter().map(|(r, a)| (r, *a))
    }

    /// Number of resources present.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no resource is present.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The usage after a tenant with `demand` arrives (`plus`) or leaves: [`Amounts::add_demand`]
    /// on a copy.
    #[cfg(feature = "postgres")]
    pub(crate) fn with_demand(&self, demand: &Demand, plus: bool) -> Result<Amounts, Resource> {
        let mut out = self.clone();
        out.add_demand(demand, plus)?;
        Ok(out)
    }

    /// Whether adding `demand` plus the implicit [`Resource::Tenants`] slot fits every counter:
    /// the first resource whose sum would overflow is the error.
    pub(crate) fn check_add(&self, demand: &Demand) -> Result<(), Resource> {
        // A demand never names `Tenants` (`Demand::checked`): each resource is added once.
        let slot = std::iter::once((&Resource::Tenants, Amount::units(1)));
        for (r, a) in slot.chain(demand.iter()) {
            self.get(r).checked_add(a).ok_or_else(|| r.clone())?;
        }
        Ok(())
    }

    /// Adds (or subtracts) `demand` plus the implicit [`Resource::Tenants`] slot, in place. An
    /// addition that would overflow is an error naming the resource ([`Amounts::check_add`],
    /// before anything changes); a subtraction floors at zero.
    pub(crate) fn add_demand(&mut self, demand: &Demand, plus: bool) -> Result<(), Resource> {
        if plus {
            self.check_add(demand)?;
        }
        self.apply_demand(demand, plus);
        Ok(())
    }

    /// [`Amounts::add_demand`] without the check: an addition that would overflow stops at the
    /// counter's top (for callers that checked, or that only estimate).
    pub(crate) fn apply_demand(&mut self, demand: &Demand, plus: bool) {
        let slot = std::iter::once((&Resource::Tenants, Amount::units(1)));
        for (r, a) in slot.chain(demand.iter()) {
            let cur = self.get(r);
            let next = match plus {
                true => cur.checked_add(a).unwrap_or(Amount::from_milli(u64::MAX)),
                false => cur.saturating_sub(a),
            };
            self.set(r, next);
        }
    }

    /// Sets `resource` to `amount` (inserting it in order).
    pub(crate) fn set(&mut self, resource: &Resource, amount: Amount) {
        match self.0.binary_search_by(|(r, _)| r.cmp(resource)) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = amount;
                }
            }
            Err(i) => self.0.insert(i, (resource.clone(), amount)),
        }
    }
}

/// What one tenant consumes, per resource. Resources not named are zero; every tenant also
/// consumes one [`Resource::Tenants`] slot implicitly (see [`Demand::get_with_slot`]).
///
/// Each amount is at most [`AMOUNT_MAX_UNITS`], the range every registry stores and reads
/// back exactly; a registry refuses a write whose sum over a stamp would overflow its usage
/// counter (see [`Amount`]'s range). With `serde`, deserialization checks what
/// [`Demand::of`] checks.
///
/// ```
/// use stamps::{Demand, Resource};
/// let d = Demand::of([(Resource::Connections, 25.0), (Resource::RequestsPerSecond, 10.0)])?;
/// assert_eq!(d.get(&Resource::Connections).as_f64(), 25.0);
/// assert_eq!(d.get(&Resource::Storage).as_f64(), 0.0);
/// assert_eq!(d.get_with_slot(&Resource::Tenants).as_f64(), 1.0);
/// assert!(Demand::of([(Resource::Connections, f64::NAN)]).is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Demand(Amounts);

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Demand {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Demand::checked(Amounts::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Demand {
    /// A demand from (resource, amount) pairs. Amounts must be finite and non-negative; a
    /// resource may appear once; [`Resource::Tenants`] may not appear (it is always one).
    pub fn of(items: impl IntoIterator<Item = (Resource, f64)>) -> Result<Demand, super::error::Error> {
        Ok(Self::checked(Amounts::build("demand", items, false)?)?)
    }

    /// `a` as a demand, unless it names [`Resource::Tenants`] (admission counts one slot per
    /// tenant; a demand naming more would be charged but not checked).
    fn checked(a: Amounts) -> Result<Demand, InvalidInput> {
        if a.contains(&Resource::Tenants) {
            return Err(InvalidInput::new(
                "demand",
                "must not name the tenants resource; every tenant uses exactly one slot",
            ));
        }
        Ok(Demand(a))
    }

    /// The demand for `resource`, not counting the implicit tenant slot.
    pub fn get(&self, resource: &Resource) -> Amount {
        self.0.get(resource)
    }

    /// The demand for `resource`, counting one unit of [`Resource::Tenants`].
    pub fn get_with_slot(&self, resource: &Resource) -> Amount {
        match resource {
            Resource::Tenants => Amount::units(1),
            r => self.0.get(r),
        }
    }

    /// The explicit (resource, amount) pairs.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Resource, Amount)> + '_ {
        self.0.iter()
    }
}

/// A headroom fraction in `[0, 1)`: the share of a limit kept free. Placement admits a tenant
/// only while usage stays under `limit × (1 − headroom)`; the registry enforces the hard limit.
/// Stored in parts per million, so soft limits are exact integers.
///
/// ```
/// use stamps::{Amount, Headroom};
/// let h = Headroom::from_fraction(0.25)?;
/// assert_eq!(h.soft_limit(Amount::units(5000)), Amount::units(3750));
/// assert!(Headroom::from_fraction(1.0).is_err());
/// assert!(Headroom::from_fraction(f64::NAN).is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Headroom(u32);

/// Parts per million in a whole.
const PPM: u32 = 1_000_000;

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Headroom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ppm = u32::deserialize(d)?;
        if ppm >= PPM {
            return Err(serde::de::Error::custom(InvalidInput::new(
                "headroom",
                "must be below 1,000,000 parts per million",
            )));
        }
        Ok(Headroom(ppm))
    }
}

impl Headroom {
    /// No headroom: placement may fill stamps to their hard limits.
    pub const NONE: Headroom = Headroom(0);

    /// A headroom from a fraction in `[0, 1)`, rounded to parts per million.
    pub fn from_fraction(fraction: f64) -> Result<Headroom, super::error::Error> {
        if !fraction.is_finite() || !(0.0..1.0).contains(&fraction) {
            return Err(InvalidInput::new("headroom", "must be a fraction in [0, 1), such as 0.25").into());
        }
        let ppm = (fraction * 1_000_000.0).round() as u32;
        if ppm >= 1_000_000 {
            return Err(InvalidInput::new("headroom", "must be a fraction in [0, 1), such as 0.25").into());
        }
        Ok(Headroom(ppm))
    }

    /// Parts per million.
    pub const fn as_ppm(self) -> u32 {
        self.0
    }

    /// The fraction.
    pub fn as_fraction(self) -> f64 {
        f64::from(self.0) / 1_000_000.0
    }

    /// `limit × (1 − headroom)`, rounded down to a thousandth.
    pub fn soft_limit(self, limit: Amount) -> Amount {
        let keep = u128::from(PPM.saturating_sub(self.0));
        let v = u128::from(limit.as_milli()) * keep / 1_000_000;
        Amount::from_milli(u64::try_from(v).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ALL: [Resource; 4] = [
        Resource::Tenants,
        Resource::Connections,
        Resource::Storage,
        Resource::Memory,
    ];

    /// Amounts of the resources in `ALL` picked by `mask`, near the counter's top or small.
    fn amounts(mask: u8, high: bool, skip_tenants: bool) -> Amounts {
        let pairs = ALL
            .iter()
            .enumerate()
            .filter(|(i, r)| mask & (1 << i) != 0 && !(skip_tenants && **r == Resource::Tenants));
        let at = |i: usize| {
            if high {
                u64::MAX - 1_500 * i as u64
            } else {
                1_000 * (i as u64 + 1)
            }
        };
        Amounts::from_pairs(
            "test",
            pairs.map(|(i, r)| (r.clone(), Amount::from_milli(at(i)))).collect(),
        )
        .unwrap_or_default()
    }

    proptest! {
        /// In place, checked first: the same usage as adding each resource in turn to a copy,
        /// and on an overflow the same error with the usage left as it was.
        #[test]
        fn add_demand_is_the_sequential_sum_or_changes_nothing(
            have in 0u8..16, high in any::<bool>(), want in 0u8..16, big in any::<bool>(), plus in any::<bool>(),
        ) {
            let usage = amounts(have, high, false);
            let demand = Demand(amounts(want, big, true));
            let mut model = usage.clone();
            let mut expected = Ok(());
            for (r, a) in std::iter::once((&Resource::Tenants, Amount::units(1))).chain(demand.iter()) {
                let cur = model.get(r);
                match plus {
                    true => match cur.checked_add(a) {
                        Some(next) => model.set(r, next),
                        None => {
                            expected = Err(r.clone());
                            break;
                        }
                    },
                    false => model.set(r, cur.saturating_sub(a)),
                }
            }
            let mut got = usage.clone();
            let result = got.add_demand(&demand, plus);
            prop_assert_eq!(&result, &expected);
            prop_assert_eq!(got, if result.is_ok() { model } else { usage });
        }
    }
}
