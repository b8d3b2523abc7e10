//! A stamp's [`Capacity`]: hard limits per resource and the headroom kept under them.

use super::error::InvalidInput;
use super::resource::{Amount, Amounts, Headroom, Resource};

/// A stamp's capacity: a hard limit per resource, a headroom fraction, and optionally a
/// headroom of its own for some resources (teams keep, say, 25% on connections and 10% on
/// storage: [`Capacity::headroom_on`]).
///
/// Resources without a limit are unconstrained. Limits must be finite and greater than zero.
///
/// ```
/// use stamps::{Capacity, Resource};
/// let c = Capacity::new([(Resource::Connections, 5000.0), (Resource::Tenants, 200.0)], 0.25)?;
/// assert_eq!(c.limit(&Resource::Connections).map(|a| a.as_f64()), Some(5000.0));
/// assert_eq!(c.soft_limit(&Resource::Connections).map(|a| a.as_f64()), Some(3750.0));
/// assert!(Capacity::new([(Resource::Connections, 0.0)], 0.25).is_err());
/// assert!(Capacity::new([(Resource::Connections, -5.0)], 0.25).is_err());
/// assert!(Capacity::new([(Resource::Connections, f64::NAN)], 0.25).is_err());
/// # Ok::<(), stamps::Error>(())
/// ```
///
/// With `serde`, deserialization checks what [`Capacity::new`] and
/// [`Capacity::headroom_on`] check (limits greater than zero, each resource once, headrooms
/// below one, a resource's own headroom only for a limited resource, once).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "CapacityRepr"))]
pub struct Capacity {
    limits: Amounts,
    headroom: Headroom,
    /// Resources with a headroom of their own, sorted by resource (empty for most stamps).
    #[cfg_attr(feature = "serde", serde(default, skip_serializing_if = "Vec::is_empty"))]
    headroom_by_resource: Vec<(Resource, Headroom)>,
}

/// [`Capacity`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct CapacityRepr {
    limits: Amounts,
    headroom: Headroom,
    #[serde(default)]
    headroom_by_resource: Vec<(Resource, Headroom)>,
}

#[cfg(feature = "serde")]
impl TryFrom<CapacityRepr> for Capacity {
    type Error = InvalidInput;

    fn try_from(r: CapacityRepr) -> Result<Capacity, InvalidInput> {
        if r.limits.iter().any(|(_, a)| a.is_zero()) {
            return Err(InvalidInput::new("capacity", "must be greater than zero"));
        }
        let mut c = Capacity {
            limits: r.limits,
            headroom: r.headroom,
            headroom_by_resource: Vec::new(),
        };
        for (resource, h) in r.headroom_by_resource {
            c = c.with_headroom_on(resource, h)?;
        }
        Ok(c)
    }
}

impl Capacity {
    /// A capacity from (resource, limit) pairs and a headroom fraction.
    pub fn new(
        limits: impl IntoIterator<Item = (Resource, f64)>,
        headroom: f64,
    ) -> Result<Capacity, super::error::Error> {
        let limits = Amounts::build("capacity", limits, true)?;
        Ok(Capacity {
            limits,
            headroom: Headroom::from_fraction(headroom)?,
            headroom_by_resource: Vec::new(),
        })
    }

    /// The same capacity with a headroom of its own (a fraction in `[0, 1)`) for `resource`;
    /// the other resources keep the common headroom.
    ///
    /// ```
    /// use stamps::{Capacity, Resource};
    /// let c = Capacity::new([(Resource::Connections, 1000.0), (Resource::Storage, 500.0)], 0.25)?
    ///     .headroom_on(Resource::Storage, 0.10)?;
    /// assert_eq!(c.soft_limit(&Resource::Connections).map(|a| a.as_f64()), Some(750.0));
    /// assert_eq!(c.soft_limit(&Resource::Storage).map(|a| a.as_f64()), Some(450.0));
    /// assert_eq!(c.headroom_for(&Resource::Storage).as_fraction(), 0.10);
    /// // Only for a limited resource, once.
    /// assert!(c.clone().headroom_on(Resource::Tenants, 0.1).is_err());
    /// assert!(c.headroom_on(Resource::Storage, 0.2).is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`](super::error::Error::InvalidInput) for a fraction outside
    /// `[0, 1)`, a resource without a limit, or a resource that already has its own headroom.
    pub fn headroom_on(self, resource: Resource, headroom: f64) -> Result<Capacity, super::error::Error> {
        Ok(self.with_headroom_on(resource, Headroom::from_fraction(headroom)?)?)
    }

    fn with_headroom_on(mut self, resource: Resource, headroom: Headroom) -> Result<Capacity, InvalidInput> {
        if !self.limits.contains(&resource) {
            return Err(InvalidInput::new("headroom", "is set for a resource without a limit"));
        }
        match self.headroom_by_resource.binary_search_by(|(r, _)| r.cmp(&resource)) {
            Ok(_) => Err(InvalidInput::new("headroom", "is set twice for one resource")),
            Err(i) => {
                self.headroom_by_resource.insert(i, (resource, headroom));
                Ok(self)
            }
        }
    }

    /// The headroom that applies to `resource`: its own if it has one, else the common one.
    #[inline]
    pub fn headroom_for(&self, resource: &Resource) -> Headroom {
        if self.headroom_by_resource.is_empty() {
            return self.headroom;
        }
        self.headroom_by_resource
            .iter()
            .find(|(r, _)| r == resource)
            .map_or(self.headroom, |(_, h)| *h)
    }

    /// The resources with a headroom of their own, sorted by resource.
    pub fn headroom_by_resource(&self) -> &[(Resource, Headroom)] {
        &self.headroom_by_resource
    }

    /// The hard limit of `resource`, if it is limited.
    pub fn limit(&self, resource: &Resource) -> Option<Amount> {
        self.limits.contains(resource).then(|| self.limits.get(resource))
    }

    /// The limit with the resource's headroom applied ([`Capacity::headroom_for`]), if
    /// `resource` is limited.
    pub fn soft_limit(&self, resource: &Resource) -> Option<Amount> {
        self.limit(resource).map(|l| self.headroom_for(resource).soft_limit(l))
    }

    /// The common headroom (of every resource without one of its own).
    pub fn headroom(&self) -> Headroom {
        self.headroom
    }

    /// All limits, sorted by resource.
    pub fn limits(&self) -> &Amounts {
        &self.limits
    }
}
