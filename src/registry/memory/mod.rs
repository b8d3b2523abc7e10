//! The in-memory registry.

mod directives;
mod history;
mod import;
mod ordered;
mod records;
mod usage;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{ChangeSignal, ImportReport, ImportRow, Registry};
use crate::error::{Error, Result, Subject};
use crate::model::{admission, constraints, directive};
use crate::model::{
    Amounts, Assignment, AssignmentChange, AssignmentMode, Change, ChangeBatch, ChangeKind, Decision, Epoch, Fleet,
    HistoryAction, HistoryEntry, MigrationId, MigrationRecord, Override, Pin, Redirect, RolloutId, RolloutRecord,
    RouteOverride, Stamp, StampId, StampLoad, StampSpec, StampState, TenantId, TenantSpec, Version,
};
use crate::time::{Clock, SystemClock, Timestamp};

/// Default number of changes the in-memory feed retains.
pub const DEFAULT_CHANGE_RETENTION: usize = 1_000_000;

/// The embedded registry: everything in process memory, behind one reader-writer lock.
///
/// Every write takes the write lock for its whole check-and-apply, so it is linearizable with
/// respect to capacity and epochs; reads take the read lock. The change feed keeps the last
/// [`DEFAULT_CHANGE_RETENTION`] changes (configurable); a follower that falls further behind
/// gets [`Error::ChangeFeedTruncated`] and resynchronises. Clones share the same registry.
///
/// Use it for tests, single-process deployments and as a read-through model; use `PgRegistry`
/// for durability.
///
/// ```
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let clock = FakeClock::new();
/// let registry = InMemoryRegistry::builder().clock(clock.clone()).change_retention(10_000).build();
/// registry.put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("us")?,
///     Capacity::new([(Resource::Tenants, 2.0)], 0.0)?)?).await?;
/// registry.assign(&TenantSpec::new(TenantId::new("a")?), StampId(1)).await?;
/// registry.assign(&TenantSpec::new(TenantId::new("b")?), StampId(1)).await?;
/// let full = registry.assign(&TenantSpec::new(TenantId::new("c")?), StampId(1)).await;
/// assert!(matches!(full, Err(Error::CapacityExceeded { .. })));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InMemoryRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    clock: Arc<dyn Clock>,
    signal: ChangeSignal,
    retention: usize,
}

#[derive(Default)]
struct State {
    stamps: BTreeMap<StampId, StampLoad>,
    /// Each assignment, shared with the change that wrote it (until a pin write copies it).
    assignments: ordered::Ordered<TenantId, Arc<Assignment>>,
    history: history::HistoryLog,
    changes: VecDeque<Change>,
    head: Version,
    migrations: BTreeMap<MigrationId, MigrationRecord>,
    next_migration: u64,
    /// Pins in force.
    pins: BTreeMap<TenantId, Pin>,
    /// Routing overrides in force.
    overrides: BTreeMap<StampId, RouteOverride>,
    /// Every override write, oldest first.
    override_log: Vec<RouteOverride>,
    rollouts: BTreeMap<RolloutId, RolloutRecord>,
    next_rollout: u64,
}

impl fmt::Debug for InMemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.read();
        f.debug_struct("InMemoryRegistry")
            .field("stamps", &st.stamps.len())
            .field("assignments", &st.assignments.len())
            .field("head", &st.head)
            .finish()
    }
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// Builder for [`InMemoryRegistry`].
#[derive(Debug)]
pub struct InMemoryRegistryBuilder {
    clock: Arc<dyn Clock>,
    retention: usize,
}

impl InMemoryRegistryBuilder {
    /// The clock for timestamps (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How many changes the feed keeps (at least 1).
    pub fn change_retention(mut self, n: usize) -> Self {
        self.retention = n.max(1);
        self
    }

    /// Builds the registry.
    pub fn build(self) -> InMemoryRegistry {
        InMemoryRegistry {
            inner: Arc::new(Inner {
                state: RwLock::new(State::default()),
                clock: self.clock,
                signal: ChangeSignal::new(),
                retention: self.retention,
            }),
        }
    }
}

impl InMemoryRegistry {
    /// An empty registry on the system clock.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder (clock, change retention).
    pub fn builder() -> InMemoryRegistryBuilder {
        InMemoryRegistryBuilder {
            clock: Arc::new(SystemClock),
            retention: DEFAULT_CHANGE_RETENTION,
        }
    }

    /// Runs `f` on the state under the write lock, then notifies the signal if the head moved.
    fn write<T>(&self, f: impl FnOnce(&mut State, Timestamp, usize) -> Result<T>) -> Result<T> {
        let now = self.inner.clock.now();
        let (out, head, moved) = {
            let mut st = self.inner.state.write();
            let before = st.head;
            let out = f(&mut st, now, self.inner.retention)?;
            (out, st.head, st.head != before)
        };
        if moved {
            self.inner.signal.notify(head);
        }
        Ok(out)
    }
}

impl State {
    fn push_change(&mut self, at: Timestamp, kind: ChangeKind, retention: usize) -> Version {
        let v = self.head.next();
        self.head = v;
        self.changes.push_back(Change::new(v, at, kind));
        while self.changes.len() > retention {
            self.changes.pop_front();
        }
        v
    }

    /// Applies an assignment write: constraints, admission, usage, history, change feed.
    #[allow(clippy::too_many_arguments)]
    fn write_assignment(
        &mut self,
        old: Option<Assignment>,
        new: Option<Assignment>,
        action: HistoryAction,
        actor: Option<String>,
        overrode: Option<Override>,
        at: Timestamp,
        retention: usize,
    ) -> Result<Option<Assignment>> {
        if let Some(n) = new.as_ref() {
            constraints::check(
                old.as_ref(),
                n,
                |s| self.stamps.get(&s),
                |s| self.holder(s, n.tenant()),
                overrode.as_ref(),
            )?;
        }
        admission::check(old.as_ref(), new.as_ref(), |s| self.stamps.get(&s))?;
        let tenant = match new.as_ref().or(old.as_ref()) {
            Some(a) => a.tenant().clone(),
            None => return Ok(None),
        };
        let tenant = &tenant;
        let version = self.head.next();
        let new = new.map(|mut a| {
            a.epoch = Epoch(version.0);
            a.updated_at = at;
            a
        });
        self.apply_usage(old.as_ref(), new.as_ref())?;
        let entry = HistoryEntry::new(
            version,
            at,
            tenant.clone(),
            action,
            old.as_ref().map(|o| o.stamp),
            new.as_ref().map(|n| n.stamp),
            Epoch(version.0),
            new.as_ref().map_or(AssignmentMode::Serving, |n| n.mode),
            actor,
        )
        .overriding(overrode);
        self.history.push(entry);
        // One allocation for the stored assignment and its change.
        let stored = new.map(Arc::new);
        match &stored {
            Some(a) => {
                self.assignments.insert(tenant.clone(), Arc::clone(a));
            }
            None => {
                self.assignments.remove(tenant);
            }
        }
        let written = stored.as_deref().cloned();
        let kind = ChangeKind::Assignment {
            tenant: tenant.clone(),
            assignment: stored,
        };
        self.push_change(at, kind, retention);
        Ok(written)
    }

    /// A tenant other than `tenant` on `stamp` (serving or shadow), if any.
    fn holder(&self, stamp: StampId, tenant: &TenantId) -> Option<TenantId> {
        self.assignments
            .values()
            .find(|a| a.tenant() != tenant && a.stamps().any(|s| s == stamp))
            .map(|a| a.tenant().clone())
    }

    /// Assigns an unassigned tenant (the body of `assign` and `assign_overriding`).
    fn assign_new(
        &mut self,
        tenant: &TenantSpec,
        stamp: StampId,
        actor: Option<String>,
        overrode: Option<Override>,
        now: Timestamp,
        retention: usize,
    ) -> Result<Assignment> {
        // A tenant never written (most imported rows) skips the ordered map's search.
        let current = match self.history.knows(&tenant.id) {
            true => self.assignments.get(&tenant.id),
            false => None,
        };
        if let Some(a) = current {
            return Err(Error::AlreadyAssigned {
                tenant: tenant.id.clone(),
                stamp: a.stamp,
            });
        }
        let spec = directive::spec_with_pin(tenant, self.pins.get(&tenant.id).and_then(|p| p.stamp))?;
        let requested_pin = spec.pin.filter(|_| !self.pins.contains_key(&tenant.id));
        let new = Assignment::new(spec, stamp, Epoch(0), AssignmentMode::Serving, now, now);
        let by = actor.clone();
        let written = self
            .write_assignment(
                None,
                Some(new),
                HistoryAction::Assigned,
                actor,
                overrode,
                now,
                retention,
            )?
            .ok_or_else(|| Error::unavailable("assignment vanished during write"))?;
        if let Some(p) = requested_pin {
            let decision = directive::pin_by_assignment(by.as_deref());
            let pin = Pin::new(tenant.id.clone(), Some(p), decision, now, Version(written.epoch.0));
            self.pins.insert(tenant.id.clone(), pin);
        }
        Ok(written)
    }

    fn expect_epoch(&self, tenant: &TenantId, expected: Epoch) -> Result<Assignment> {
        let current = self
            .assignments
            .get(tenant)
            .ok_or_else(|| Error::NotFound(Subject::Tenant(tenant.clone())))?;
        if current.epoch != expected {
            return Err(Error::epoch_conflict(expected, current.epoch));
        }
        Ok(Assignment::clone(current))
    }
}

#[async_trait]
impl Registry for InMemoryRegistry {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        spec.validate()?;
        self.write(|st, now, retention| {
            let stamp = match st.stamps.get_mut(&spec.id) {
                Some(load) => {
                    admission::check_respec(load, &spec)?;
                    if admission::respec_touches_constraints(load, &spec) {
                        let held = st
                            .assignments
                            .values()
                            .map(|a| &**a)
                            .filter(|a| a.stamps().any(|s| s == spec.id));
                        admission::check_respec_constraints(load, &spec, held)?;
                    }
                    load.stamp.spec = spec;
                    load.stamp.updated_at = now;
                    load.stamp.clone()
                }
                None => {
                    let id = spec.id;
                    let stamp = Stamp::new(spec, StampState::Provisioning, now, now);
                    st.stamps.insert(id, StampLoad::new(stamp.clone(), Amounts::default()));
                    stamp
                }
            };
            st.push_change(now, ChangeKind::Stamp(Box::new(stamp.clone())), retention);
            Ok(stamp)
        })
    }

    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        Ok(self.inner.state.read().stamps.get(&id).map(|l| l.stamp.clone()))
    }

    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        self.write(|st, now, retention| {
            let load = st.stamps.get(&id).ok_or(Error::NotFound(Subject::Stamp(id)))?;
            let changes = match admission::check_state_change(load, state) {
                Err(Error::StampNotEmpty { stamp, tenants, .. }) => {
                    let first = st
                        .assignments
                        .values()
                        .filter(|a| a.stamps().any(|s| s == id))
                        .take(crate::model::error::STAMP_NOT_EMPTY_LISTED)
                        .map(|a| a.tenant().clone())
                        .collect();
                    return Err(Error::StampNotEmpty { stamp, tenants, first });
                }
                other => other?,
            };
            if changes && state == StampState::Decommissioned && st.redirect_target(id) {
                return Err(super::override_target_retired());
            }
            let load = st.stamps.get_mut(&id).ok_or(Error::NotFound(Subject::Stamp(id)))?;
            if !changes {
                return Ok(load.stamp.clone());
            }
            load.stamp.state = state;
            load.stamp.updated_at = now;
            let stamp = load.stamp.clone();
            st.push_change(now, ChangeKind::Stamp(Box::new(stamp.clone())), retention);
            Ok(stamp)
        })
    }

    async fn fleet(&self) -> Result<Fleet> {
        let st = self.inner.state.read();
        Ok(Fleet::new(
            st.stamps.values().cloned().collect(),
            st.head,
            self.inner.clock.now(),
        ))
    }

    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        Ok(self
            .inner
            .state
            .read()
            .assignments
            .get(tenant)
            .map(|a| Assignment::clone(a)))
    }

    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        let st = self.inner.state.read();
        Ok(st
            .assignments
            .after(after)
            .take(limit)
            .map(|(_, a)| Assignment::clone(a))
            .collect())
    }

    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        tenant.validate()?;
        self.write(|st, now, retention| st.assign_new(tenant, stamp, None, None, now, retention))
    }

    async fn assign_many(&self, rows: &[ImportRow]) -> Result<ImportReport> {
        super::import::check_size(rows)?;
        self.write(|st, now, retention| {
            let outcomes = st.assign_many(rows, now, retention);
            Ok(ImportReport::new(outcomes, st.head))
        })
    }

    async fn assign_overriding(
        &self,
        tenant: &TenantSpec,
        stamp: StampId,
        overrides: &Override,
        actor: &str,
    ) -> Result<Assignment> {
        tenant.validate()?;
        overrides.validate()?;
        let (o, a) = (Some(overrides.clone()), Some(actor.to_string()));
        self.write(|st, now, retention| st.assign_new(tenant, stamp, a, o, now, retention))
    }

    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        change.validate()?;
        self.write(|st, now, retention| {
            let old = st.expect_epoch(tenant, expected)?;
            let (new, action) = admission::change(&old, &change.action)?;
            st.write_assignment(
                Some(old),
                Some(new),
                action,
                change.actor,
                change.overrides,
                now,
                retention,
            )?
            .ok_or_else(|| Error::unavailable("assignment vanished during write"))
        })
    }

    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        self.write(|st, now, retention| {
            let old = st.expect_epoch(tenant, expected)?;
            st.write_assignment(Some(old), None, HistoryAction::Unassigned, None, None, now, retention)?;
            Ok(())
        })
    }

    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        Ok(self.inner.state.read().history.of(tenant))
    }

    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        let st = self.inner.state.read();
        // Past the head but below anything unstorable: a cursor this registry never issued.
        if after > st.head && after.0 < i64::MAX as u64 {
            return Err(Error::HistoryDiverged {
                cursor: after,
                head: st.head,
                term: 0,
            });
        }
        if let Some(first) = st.changes.front() {
            // `after` comes from the caller: a cursor at u64::MAX must not overflow.
            let wanted = after.0.saturating_add(1);
            if wanted < first.version.0 {
                return Err(Error::ChangeFeedTruncated {
                    requested: after,
                    oldest: first.version.0,
                });
            }
            let skip = usize::try_from(wanted.saturating_sub(first.version.0)).unwrap_or(usize::MAX);
            let changes = st.changes.iter().skip(skip).take(limit).cloned().collect();
            Ok(ChangeBatch::new(changes, st.head))
        } else {
            Ok(ChangeBatch::new(Vec::new(), st.head))
        }
    }

    fn change_signal(&self) -> ChangeSignal {
        self.inner.signal.clone()
    }

    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        record.check_new()?;
        let now = self.inner.clock.now();
        self.inner.state.write().create_migration(record, now)
    }

    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        Ok(self.inner.state.read().migrations.get(&id).cloned())
    }

    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        record.validate()?;
        let now = self.inner.clock.now();
        self.inner.state.write().save_migration(record, now)
    }

    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        let st = self.inner.state.read();
        Ok(st
            .migrations
            .values()
            .filter(|m| tenant.is_none_or(|t| &m.tenant == t))
            .cloned()
            .collect())
    }

    async fn set_pin(&self, tenant: &TenantId, stamp: Option<StampId>, decision: &Decision) -> Result<Pin> {
        decision.validate()?;
        self.write(|st, now, retention| st.set_pin(tenant, stamp, decision, now, retention))
    }

    async fn pin(&self, tenant: &TenantId) -> Result<Option<Pin>> {
        Ok(self.inner.state.read().pins.get(tenant).cloned())
    }

    async fn pins(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Pin>> {
        Ok(self.inner.state.read().pins_page(after, limit))
    }

    async fn set_route_override(
        &self,
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: &Decision,
    ) -> Result<RouteOverride> {
        decision.validate()?;
        self.write(|st, now, retention| st.set_override(stamp, redirect, decision, now, retention))
    }

    async fn route_overrides(&self) -> Result<Vec<RouteOverride>> {
        Ok(self.inner.state.read().overrides.values().cloned().collect())
    }

    async fn route_override_history(&self, stamp: StampId) -> Result<Vec<RouteOverride>> {
        let st = self.inner.state.read();
        Ok(st.override_log.iter().filter(|o| o.stamp == stamp).cloned().collect())
    }

    async fn record_repair(&self, tenant: &TenantId, stamp: StampId, decision: &Decision) -> Result<HistoryEntry> {
        decision.validate()?;
        self.write(|st, now, retention| st.record_repair(tenant, stamp, decision, now, retention))
    }

    async fn create_rollout(&self, record: RolloutRecord) -> Result<RolloutRecord> {
        super::check_new_rollout(&record)?;
        let now = self.inner.clock.now();
        self.inner.state.write().create_rollout(record, now)
    }

    async fn rollout(&self, id: RolloutId) -> Result<Option<RolloutRecord>> {
        Ok(self.inner.state.read().rollouts.get(&id).cloned())
    }

    async fn save_rollout(&self, record: &RolloutRecord) -> Result<RolloutRecord> {
        let now = self.inner.clock.now();
        self.inner.state.write().save_rollout(record, now)
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        Ok(self.inner.state.read().rollouts.values().cloned().collect())
    }
}
