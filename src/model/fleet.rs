//! Fleet snapshots: every stamp with its current usage.

use std::fmt;

use super::{Amount, Amounts, Demand, Resource, Stamp, StampId, Version};
use crate::time::Timestamp;

/// One stamp in a [`Fleet`] snapshot, with what its tenants use.
///
/// Usage counts every tenant the stamp serves plus capacity reserved for migrations in
/// progress (a dual-write shadow holds the tenant's demand on both stamps).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StampLoad {
    /// The stamp.
    pub stamp: Stamp,
    /// Usage per resource; [`Resource::Tenants`] counts tenants (including reservations).
    pub usage: Amounts,
}

impl StampLoad {
    /// Assembles a load (for registry implementations). Usage of [`Resource::Tenants`] is the
    /// number of tenants (and reservations) on the stamp.
    pub fn new(stamp: Stamp, usage: Amounts) -> StampLoad {
        StampLoad { stamp, usage }
    }

    /// The stamp's id.
    pub fn id(&self) -> StampId {
        self.stamp.spec.id
    }

    /// Tenants served or reserved.
    pub fn tenants(&self) -> u64 {
        self.usage.get(&Resource::Tenants).as_milli() / 1000
    }

    /// Usage of `resource` divided by its hard limit, if limited.
    pub fn utilization(&self, resource: &Resource) -> Option<f64> {
        let limit = self.stamp.spec.capacity.limit(resource)?;
        Some(self.usage.get(resource).as_milli() as f64 / limit.as_milli() as f64)
    }

    /// The resource with the highest utilization of its hard limit (ties: the first in
    /// resource order), and that utilization. `None` for a stamp without limits.
    pub fn bottleneck(&self) -> Option<(&Resource, f64)> {
        let mut best: Option<(&Resource, f64)> = None;
        for (r, limit) in self.stamp.spec.capacity.limits().iter() {
            let u = self.usage.get(r).as_milli() as f64 / limit.as_milli() as f64;
            if best.is_none_or(|(_, b)| u > b) {
                best = Some((r, u));
            }
        }
        best
    }

    /// Whether `demand` (plus one tenant slot) fits under the soft limit (headroom applied) of
    /// every limited resource. On failure, names the first resource that does not fit.
    /// Never allocates.
    pub fn fits_with_headroom(&self, demand: &Demand) -> Result<(), &Resource> {
        self.fits(demand, true)
    }

    /// Whether `demand` (plus one tenant slot) fits under every hard limit.
    pub fn fits_hard(&self, demand: &Demand) -> Result<(), &Resource> {
        self.fits(demand, false)
    }

    fn fits(&self, demand: &Demand, soft: bool) -> Result<(), &Resource> {
        let cap = &self.stamp.spec.capacity;
        for (r, limit) in cap.limits().iter() {
            let limit = if soft {
                cap.headroom_for(r).soft_limit(limit)
            } else {
                limit
            };
            let after = self
                .usage
                .get(r)
                .checked_add(demand.get_with_slot(r))
                .unwrap_or(Amount::from_milli(u64::MAX));
            if after > limit {
                return Err(r);
            }
        }
        Ok(())
    }

    /// Whether the stamp takes new tenants: it is `Active` and one more empty tenant fits under
    /// headroom.
    pub fn accepts_new_tenants(&self) -> bool {
        self.stamp.state.accepts_tenants() && self.fits_with_headroom(&Demand::default()).is_ok()
    }
}

/// A snapshot of the whole fleet: every stamp with its usage, sorted by stamp id, and the
/// change-feed version it reflects.
///
/// ```
/// # use stamps::*;
/// # async fn demo() -> stamps::Result<()> {
/// # let registry = InMemoryRegistry::new();
/// let fleet = registry.fleet().await?;
/// for load in &fleet.stamps {
///     println!("{} {:?}", load.id(), load.bottleneck());
/// }
/// println!("{fleet}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Fleet {
    /// Stamps, sorted by id.
    pub stamps: Vec<StampLoad>,
    /// The change-feed version this snapshot reflects.
    pub version: Version,
    /// When the snapshot was taken.
    pub at: Timestamp,
    /// Stamps left out because their stored row could not be read, with the reason
    /// (see [`Fleet::skipped`]).
    skipped: Vec<(StampId, String)>,
}

impl Fleet {
    /// Assembles a snapshot, sorting stamps by id (for registry implementations).
    pub fn new(mut stamps: Vec<StampLoad>, version: Version, at: Timestamp) -> Fleet {
        stamps.sort_by_key(StampLoad::id);
        Fleet {
            stamps,
            version,
            at,
            skipped: Vec::new(),
        }
    }

    /// Records stamps a registry left out of the snapshot because their stored row is
    /// unreadable (for registry implementations); sorted by id.
    ///
    /// ```
    /// use stamps::{Fleet, StampId, Version};
    /// use stamps::time::Timestamp;
    /// let fleet = Fleet::new(vec![], Version(3), Timestamp::from_millis(0))
    ///     .with_skipped(vec![(StampId(7), "limits_milli is out of range".into())]);
    /// assert_eq!(fleet.skipped(), &[(StampId(7), "limits_milli is out of range".to_string())]);
    /// assert!(fleet.get(StampId(7)).is_none());
    /// ```
    pub fn with_skipped(mut self, mut skipped: Vec<(StampId, String)>) -> Fleet {
        skipped.sort_by_key(|(id, _)| *id);
        self.skipped = skipped;
        self
    }

    /// Stamps the registry holds but left out of this snapshot because their stored row could
    /// not be read back (edited by hand, say), each with the reason. Empty for a healthy
    /// registry; placement never sees such a stamp. Reading the stamp itself
    /// ([`Registry::stamp`](crate::registry::Registry::stamp)) returns
    /// [`Error::Corrupt`](crate::Error::Corrupt).
    ///
    /// ```
    /// # use stamps::*;
    /// # async fn demo() -> stamps::Result<()> {
    /// # let registry = InMemoryRegistry::new();
    /// let fleet = registry.fleet().await?;
    /// for (id, reason) in fleet.skipped() {
    ///     eprintln!("{id} left out of the fleet: {reason}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn skipped(&self) -> &[(StampId, String)] {
        &self.skipped
    }

    /// The stamp with `id`.
    pub fn get(&self, id: StampId) -> Option<&StampLoad> {
        let i = self.stamps.binary_search_by_key(&id, StampLoad::id).ok()?;
        self.stamps.get(i)
    }

    /// Total tenants served (reservations included).
    pub fn tenants(&self) -> u64 {
        self.stamps.iter().map(StampLoad::tenants).sum()
    }
}

impl fmt::Display for Fleet {
    /// A table: stamp, name, region, state, tenants, bottleneck resource and its utilization.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:<16} {:<12} {:<14} {:>8}  {:<12} {:>6}",
            "stamp", "name", "region", "state", "tenants", "bottleneck", "util"
        )?;
        for l in &self.stamps {
            let (res, util) = match l.bottleneck() {
                Some((r, u)) => (r.to_string(), format!("{:.1}%", u * 100.0)),
                None => ("-".to_string(), "-".to_string()),
            };
            writeln!(
                f,
                "{:<10} {:<16} {:<12} {:<14} {:>8}  {:<12} {:>6}",
                l.id().to_string(),
                l.stamp.spec.name,
                l.stamp.spec.region.as_str(),
                l.stamp.state.as_str(),
                l.tenants(),
                res,
                util
            )?;
        }
        Ok(())
    }
}
