//! A reference data plane: an in-memory, multi-stamp, per-tenant key-value store that
//! implements [`MigrationDriver`](super::MigrationDriver) for real and has a write path that honours assignment modes
//! and fence tokens.
//!
//! It is the crate's proof that migrations lose no acknowledged write (the tests drive it
//! with concurrent writers, crashes and injected failures), and a model for your own driver:
//!
//! * every row carries a [`RowVersion`] `(epoch, sequence)`: the epoch of the assignment the
//!   write was routed by, then a per-stamp sequence. Rows merge last-writer-wins **by
//!   version**, so import, catch-up and dual-writes may arrive in any order;
//! * each stamp keeps a [`Fence`] under the same lock as its rows: a write is admitted and
//!   applied in one critical section, so raising the fence is also the drain;
//! * a write is acknowledged only when every stamp of its route applied it (the serving stamp
//!   first, then the shadow);
//! * validation compares row counts and checksums at a consistent point: writers hold a
//!   per-tenant [`WriteGate`] shared while they write to both stamps, and validation takes
//!   it exclusively for the comparison (your database would use a snapshot at a replication
//!   position instead);
//! * every effect of a driver call (import, catch-up, fence, cleanup, rollback) checks the
//!   call's [`MigrationContext::generation`](super::MigrationContext::generation) against the highest seen for that migration on
//!   that stamp, under the stamp's lock: a call from a worker that lost its lease is refused,
//!   so a late import cannot recreate a copy deleted after a cancel.
//!
//! Fault injection ([`ReferenceDataPlane::fail_next`], [`ReferenceDataPlane::corrupt`]) lets
//! tests exercise the engine's retries, rollbacks and cutover refusals.
//!
//! ```
//! use stamps::migration::reference::{ReferenceDataPlane, WriteError};
//! use stamps::*;
//! let clock = FakeClock::new();
//! let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone());
//! let spec = TenantSpec::new(TenantId::new("acme")?);
//! let route = Assignment::new(spec.clone(), StampId(1), Epoch(3),
//!     AssignmentMode::DualWrite { shadow: StampId(2) }, Timestamp::ZERO, Timestamp::ZERO);
//! plane.write(&route, "k", "v1")?;
//! assert_eq!(plane.get(StampId(2), &spec.id, "k").as_deref(), Some("v1")); // dual-written
//! let spec_id = spec.id.clone();
//! let frozen = Assignment::new(spec, StampId(1), Epoch(4),
//!     AssignmentMode::Frozen { shadow: Some(StampId(2)), until: clock.now() + std::time::Duration::from_secs(5) },
//!     Timestamp::ZERO, Timestamp::ZERO);
//! assert!(matches!(plane.write(&frozen, "k", "v2"), Err(WriteError::Frozen { .. })));
//! clock.advance(std::time::Duration::from_secs(6)); // the freeze expired: written as a dual-write
//! plane.write(&frozen, "k", "v3")?;
//! assert_eq!(plane.get(StampId(2), &spec_id, "k").as_deref(), Some("v3"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::driver::{DriverError, SideSummary};
use super::fence::{Fence, FenceRejection, FenceToken};
use super::gate::WriteGate;
use crate::error::Error;
use crate::model::{Assignment, AssignmentMode, Epoch, MigrationId, StampId, TenantId};
use crate::registry::Registry;
use crate::time::{Clock, SystemClock, Timestamp};

/// The version of a row: the epoch its write was routed by, then a sequence number assigned
/// by the stamp that served the write. Ordered by epoch first, so a write routed by a newer
/// assignment always wins over one routed by an older assignment.
///
/// ```
/// use stamps::migration::reference::RowVersion;
/// use stamps::Epoch;
/// assert!(RowVersion::new(Epoch(5), 1) > RowVersion::new(Epoch(4), 900));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RowVersion {
    /// The assignment epoch of the write.
    pub epoch: Epoch,
    /// The serving stamp's sequence number for the tenant.
    pub seq: u64,
}

impl RowVersion {
    /// A version.
    pub const fn new(epoch: Epoch, seq: u64) -> Self {
        RowVersion { epoch, seq }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    value: String,
    version: RowVersion,
}

#[derive(Debug, Default)]
struct TenantRows {
    rows: BTreeMap<String, Row>,
    seq: u64,
}

impl TenantRows {
    /// Last-writer-wins by version; returns whether the row changed.
    fn merge(&mut self, key: &str, row: Row) -> bool {
        match self.rows.get(key) {
            Some(existing) if existing.version >= row.version => false,
            _ => {
                self.rows.insert(key.to_string(), row);
                true
            }
        }
    }

    fn summary(&self) -> SideSummary {
        let mut h = crate::hash::Fnv1a::new();
        for (k, r) in &self.rows {
            for part in [k.as_bytes(), &[0], r.value.as_bytes(), &[0]] {
                h.write(part);
            }
        }
        SideSummary::new(self.rows.len() as u64, h.finish())
    }
}

#[derive(Debug)]
struct StampStore {
    fence: Fence,
    tenants: HashMap<TenantId, TenantRows>,
    generations: HashMap<MigrationId, u64>,
}

/// Why a write was not acknowledged. The caller retries `Frozen` after `until` and `Fenced`
/// after refreshing its route; neither write took effect on every stamp (it may have taken
/// effect on some: unacknowledged writes may or may not be visible, as in any database).
///
/// ```
/// use stamps::migration::reference::WriteError;
/// use stamps::Timestamp;
/// assert!(WriteError::Frozen { until: Timestamp::from_millis(5) }.is_retryable());
/// assert!(!WriteError::UnknownStamp(stamps::StampId(9)).is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The tenant is frozen for a cutover.
    #[error("tenant is frozen for a cutover until {until}; retry then")]
    Frozen {
        /// When to retry at the latest.
        until: Timestamp,
    },
    /// A stamp refused the write's fence token.
    #[error("{stamp} refused the write: {rejection}")]
    Fenced {
        /// The stamp.
        stamp: StampId,
        /// Why.
        rejection: FenceRejection,
    },
    /// The route names a stamp this data plane does not have.
    #[error("{0} is not part of this data plane")]
    UnknownStamp(StampId),
    /// The tenant has no assignment.
    #[error("tenant {0} has no assignment")]
    NotAssigned(TenantId),
    /// Resolving the route failed.
    #[error("route lookup failed: {0}")]
    Registry(#[from] Error),
}

impl WriteError {
    /// Whether the write may succeed if retried with a fresh route.
    pub fn is_retryable(&self) -> bool {
        match self {
            WriteError::Frozen { .. } | WriteError::Fenced { .. } => true,
            // A retry routes afresh (it re-reads the assignment), so a lost compare-and-set may
            // succeed too.
            WriteError::Registry(e) => e.is_retryable() || matches!(e, crate::error::Error::Conflict(_)),
            WriteError::UnknownStamp(_) | WriteError::NotAssigned(_) => false,
        }
    }
}

/// An acknowledged write.
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::*;
/// let plane = ReferenceDataPlane::new([StampId(1)]);
/// let a = Assignment::new(TenantSpec::new(TenantId::new("t")?), StampId(1), Epoch(2),
///     AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
/// let ack = plane.write(&a, "k", "v")?;
/// assert_eq!((ack.stamps, ack.version.epoch), (1, Epoch(2)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteAck {
    /// The row version it got.
    pub version: RowVersion,
    /// How many stamps applied it (2 in dual-write).
    pub stamps: usize,
}

struct Inner {
    stamps: BTreeMap<StampId, Mutex<StampStore>>,
    gate: WriteGate,
    snapshots: Mutex<HashMap<String, Vec<(String, Row)>>>,
    next_snapshot: Mutex<u64>,
    faults: Mutex<HashMap<DriverOp, VecDeque<DriverError>>>,
    calls: Mutex<HashMap<DriverOp, u64>>,
}

/// The in-memory reference data plane; see the [module docs](self). Clones share the data.
///
/// ```
/// # use stamps::migration::reference::ReferenceDataPlane;
/// # use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?).await?;
/// let t = TenantId::new("acme")?;
/// registry.assign(&TenantSpec::new(t.clone()), StampId(1)).await?;
/// let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
/// plane.write_via(&registry, &t, "k", "v").await?;
/// assert_eq!(plane.dump(StampId(1), &t).len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReferenceDataPlane {
    inner: Arc<Inner>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for ReferenceDataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceDataPlane")
            .field("stamps", &self.inner.stamps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ReferenceDataPlane {
    /// A data plane with these stamps, all empty.
    pub fn new(stamps: impl IntoIterator<Item = StampId>) -> Self {
        let stamps = stamps
            .into_iter()
            .map(|s| {
                (
                    s,
                    Mutex::new(StampStore {
                        fence: Fence::new(s),
                        tenants: HashMap::new(),
                        generations: HashMap::new(),
                    }),
                )
            })
            .collect();
        ReferenceDataPlane {
            inner: Arc::new(Inner {
                stamps,
                gate: WriteGate::new(),
                snapshots: Mutex::new(HashMap::new()),
                next_snapshot: Mutex::new(0),
                faults: Mutex::new(HashMap::new()),
                calls: Mutex::new(HashMap::new()),
            }),
            clock: Arc::new(SystemClock),
        }
    }

    fn store(&self, stamp: StampId) -> Result<&Mutex<StampStore>, WriteError> {
        self.inner.stamps.get(&stamp).ok_or(WriteError::UnknownStamp(stamp))
    }

    /// The clock that decides whether a freeze is over (the system clock unless set; give it
    /// the migrator's clock in tests on a fake one).
    ///
    /// ```
    /// use stamps::migration::reference::ReferenceDataPlane;
    /// use stamps::{FakeClock, StampId};
    /// let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(FakeClock::new());
    /// # let _ = plane;
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Writes `key = value` for the route's tenant, routed by `route` (a fresh assignment from
    /// the registry, or whatever a router has cached): refused while frozen, until the freeze's
    /// `until` (by [`clock`](Self::clock)); past it, written as a dual-write to the stamp and
    /// its shadow (the worker that froze is gone or late, and a later cutover freezes again);
    /// otherwise applied on the serving stamp, then on the shadow, each after its fence
    /// admitted the token.
    pub fn write(&self, route: &Assignment, key: &str, value: &str) -> Result<WriteAck, WriteError> {
        let now = self.clock.now();
        if let AssignmentMode::Frozen { until, .. } = route.mode {
            if route.mode.is_frozen_at(now) {
                return Err(WriteError::Frozen { until });
            }
        }
        self.inner
            .gate
            .write(route.tenant(), || self.write_gated(route, now, key, value))
    }

    fn write_gated(&self, route: &Assignment, now: Timestamp, key: &str, value: &str) -> Result<WriteAck, WriteError> {
        let tenant = route.tenant();
        let mut version = None;
        let mut applied = 0;
        for token in FenceToken::for_write(route, now) {
            let store = self.store(token.stamp)?;
            let mut st = store.lock();
            st.fence.admit(&token).map_err(|rejection| WriteError::Fenced {
                stamp: token.stamp,
                rejection,
            })?;
            let rows = st.tenants.entry(tenant.clone()).or_default();
            let v = match version {
                Some(v) => v,
                None => {
                    rows.seq += 1;
                    let v = RowVersion::new(route.epoch, rows.seq);
                    version = Some(v);
                    v
                }
            };
            rows.merge(
                key,
                Row {
                    value: value.to_string(),
                    version: v,
                },
            );
            applied += 1;
        }
        Ok(WriteAck {
            version: version.unwrap_or_default(),
            stamps: applied,
        })
    }

    /// Applies one write on one stamp, as that stamp's own write endpoint would: the stamp's
    /// fence admits `token` (tenant, stamp, epoch) and the row is merged in the same critical
    /// section. With `seq` `None` the stamp gives the row the next version for the token's
    /// epoch (the serving stamp); a shadow is given the serving stamp's sequence number, so
    /// both copies carry the same version. The version's epoch is always the token's.
    ///
    /// [`write`](Self::write) applies a write on every stamp of a route in one call. A host
    /// that sends each stamp its own request (a router proxying to stamp servers) calls
    /// `apply` once per stamp instead, so a validation may see a dual-write applied on one
    /// stamp only and report a mismatch: validate again.
    ///
    /// ```
    /// use stamps::migration::reference::{ReferenceDataPlane, RowVersion, WriteError};
    /// use stamps::migration::FenceToken;
    /// use stamps::*;
    /// let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
    /// let acme = TenantId::new("acme")?;
    /// let serving = FenceToken::new(acme.clone(), StampId(1), Epoch(3));
    /// let v = plane.apply(&serving, "k", "v1", None)?;
    /// assert_eq!(v, RowVersion::new(Epoch(3), 1));
    /// let shadow = FenceToken::new(acme.clone(), StampId(2), Epoch(3));
    /// assert_eq!(plane.apply(&shadow, "k", "v1", Some(v.seq))?, v);
    /// assert_eq!(plane.row(StampId(2), &acme, "k"), Some(("v1".to_string(), v)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(
        &self,
        token: &FenceToken,
        key: &str,
        value: &str,
        seq: Option<u64>,
    ) -> Result<RowVersion, WriteError> {
        self.inner
            .gate
            .write(&token.tenant, || self.apply_gated(token, key, value, seq))
    }

    fn apply_gated(
        &self,
        token: &FenceToken,
        key: &str,
        value: &str,
        seq: Option<u64>,
    ) -> Result<RowVersion, WriteError> {
        let mut st = self.store(token.stamp)?.lock();
        st.fence.admit(token).map_err(|rejection| WriteError::Fenced {
            stamp: token.stamp,
            rejection,
        })?;
        let rows = st.tenants.entry(token.tenant.clone()).or_default();
        let seq = seq.unwrap_or_else(|| {
            rows.seq += 1;
            rows.seq
        });
        let version = RowVersion::new(token.epoch, seq);
        rows.merge(
            key,
            Row {
                value: value.to_string(),
                version,
            },
        );
        Ok(version)
    }

    /// Resolves the tenant's current assignment from `registry`, then [`write`](Self::write)s.
    pub async fn write_via(
        &self,
        registry: &dyn Registry,
        tenant: &TenantId,
        key: &str,
        value: &str,
    ) -> Result<WriteAck, WriteError> {
        let route = registry
            .assignment(tenant)
            .await?
            .ok_or_else(|| WriteError::NotAssigned(tenant.clone()))?;
        self.write(&route, key, value)
    }

    /// Reads `key` from the route's serving stamp.
    pub fn read(&self, route: &Assignment, key: &str) -> Option<String> {
        self.get(route.stamp, route.tenant(), key)
    }

    /// The value of `key` for `tenant` on `stamp`, if any.
    pub fn get(&self, stamp: StampId, tenant: &TenantId, key: &str) -> Option<String> {
        let store = self.inner.stamps.get(&stamp)?;
        let st = store.lock();
        st.tenants.get(tenant)?.rows.get(key).map(|r| r.value.clone())
    }

    /// The value of `key` for `tenant` on `stamp` with its version, if any.
    ///
    /// ```
    /// # use stamps::migration::reference::{ReferenceDataPlane, RowVersion};
    /// # use stamps::*;
    /// let plane = ReferenceDataPlane::new([StampId(1)]);
    /// let a = Assignment::new(TenantSpec::new(TenantId::new("t")?), StampId(1), Epoch(2),
    ///     AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
    /// plane.write(&a, "k", "v")?;
    /// assert_eq!(plane.row(StampId(1), a.tenant(), "k"), Some(("v".into(), RowVersion::new(Epoch(2), 1))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn row(&self, stamp: StampId, tenant: &TenantId, key: &str) -> Option<(String, RowVersion)> {
        let store = self.inner.stamps.get(&stamp)?;
        let st = store.lock();
        st.tenants
            .get(tenant)?
            .rows
            .get(key)
            .map(|r| (r.value.clone(), r.version))
    }

    /// The tenants holding at least one row on `stamp`, with how many rows each holds.
    ///
    /// ```
    /// # use stamps::migration::reference::ReferenceDataPlane;
    /// # use stamps::*;
    /// let plane = ReferenceDataPlane::new([StampId(1)]);
    /// let a = Assignment::new(TenantSpec::new(TenantId::new("t")?), StampId(1), Epoch(2),
    ///     AssignmentMode::Serving, Timestamp::ZERO, Timestamp::ZERO);
    /// plane.write(&a, "k1", "v")?;
    /// plane.write(&a, "k2", "v")?;
    /// assert_eq!(plane.row_counts(StampId(1)).get(a.tenant()), Some(&2));
    /// assert!(plane.row_counts(StampId(9)).is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn row_counts(&self, stamp: StampId) -> BTreeMap<TenantId, usize> {
        let Some(store) = self.inner.stamps.get(&stamp) else {
            return BTreeMap::new();
        };
        let st = store.lock();
        st.tenants
            .iter()
            .filter(|(_, t)| !t.rows.is_empty())
            .map(|(id, t)| (id.clone(), t.rows.len()))
            .collect()
    }

    /// Every row of `tenant` on `stamp`.
    pub fn dump(&self, stamp: StampId, tenant: &TenantId) -> BTreeMap<String, String> {
        let Some(store) = self.inner.stamps.get(&stamp) else {
            return BTreeMap::new();
        };
        let st = store.lock();
        st.tenants
            .get(tenant)
            .map(|t| t.rows.iter().map(|(k, r)| (k.clone(), r.value.clone())).collect())
            .unwrap_or_default()
    }

    /// Whether `stamp` holds any row of `tenant`.
    pub fn holds(&self, stamp: StampId, tenant: &TenantId) -> bool {
        self.inner
            .stamps
            .get(&stamp)
            .is_some_and(|s| s.lock().tenants.get(tenant).is_some_and(|t| !t.rows.is_empty()))
    }

    /// The fence state of `tenant` on `stamp`: newest epoch and whether the stamp holds it.
    pub fn fence_state(&self, stamp: StampId, tenant: &TenantId) -> Option<(Epoch, bool)> {
        self.inner.stamps.get(&stamp)?.lock().fence.current(tenant)
    }

    /// Test hook: makes the next call of `op` fail with `error` (queued; one per call).
    pub fn fail_next(&self, op: DriverOp, error: DriverError) {
        self.inner.faults.lock().entry(op).or_default().push_back(error);
    }

    /// Test hook: deletes every row of `tenant` on `stamp`, bypassing fences and drivers (a
    /// lost disk, a bad restore), so reconciliation has something to find.
    ///
    /// ```
    /// use stamps::migration::reference::ReferenceDataPlane;
    /// use stamps::migration::FenceToken;
    /// use stamps::{Epoch, StampId, TenantId};
    /// let plane = ReferenceDataPlane::new([StampId(1)]);
    /// let acme = TenantId::new("acme")?;
    /// plane.apply(&FenceToken::new(acme.clone(), StampId(1), Epoch(1)), "k", "v", None)?;
    /// plane.lose(StampId(1), &acme);
    /// assert!(plane.row_counts(StampId(1)).is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lose(&self, stamp: StampId, tenant: &TenantId) {
        if let Some(store) = self.inner.stamps.get(&stamp) {
            if let Some(t) = store.lock().tenants.get_mut(tenant) {
                t.rows.clear();
            }
        }
    }

    /// Test hook: writes a row on `stamp` bypassing routes and fences, with a version no write
    /// can beat, so validation reports a mismatch until it is removed.
    pub fn corrupt(&self, stamp: StampId, tenant: &TenantId, key: &str, value: &str) {
        if let Some(store) = self.inner.stamps.get(&stamp) {
            let mut st = store.lock();
            st.tenants.entry(tenant.clone()).or_default().rows.insert(
                key.to_string(),
                Row {
                    value: value.to_string(),
                    version: RowVersion::new(Epoch(u64::MAX), u64::MAX),
                },
            );
        }
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: DriverOp) -> u64 {
        self.inner.calls.lock().get(&op).copied().unwrap_or(0)
    }

    /// Counts the call and returns an injected failure, if one is queued.
    fn enter(&self, op: DriverOp) -> Result<(), DriverError> {
        *self.inner.calls.lock().entry(op).or_default() += 1;
        match self.inner.faults.lock().get_mut(&op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

mod driver;

pub use driver::DriverOp;
