//! One transaction body per registry write (`assign`, `compare_and_set`, `unassign`,
//! `put_stamp`, `set_stamp_state`; the migration records' in `migration_writes`) and the
//! locking and commit steps they share. `on_conn!` runs each body on a pooled connection and retries it.

use deadpool_postgres::Object;
use futures_util::future::{join3, try_join};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::codec::{self, amounts_json, big, labels_json, millis, override_params, version_of, AssignmentParams};
use super::connection::{mark_commit_sent, mark_commit_unsent};
use super::fault::{corrupt, Fault};
use super::PgRegistry;
use crate::error::{Error, Subject};
use crate::model::{admission, constraints, directive};
use crate::model::{
    Amounts, Assignment, AssignmentChange, AssignmentMode, Epoch, HistoryAction, Override, Stamp, StampId, StampLoad,
    StampSpec, StampState, TenantId, TenantSpec, Version,
};

impl PgRegistry {
    /// Locks and reads the given stamps (sorted, deduplicated) in the transaction.
    async fn lock_stamps(&self, c: &Object, ids: impl Iterator<Item = StampId>) -> Result<Vec<StampLoad>, Fault> {
        let ids = stamp_ids(ids);
        let stmt = c.prepare_cached(&self.inner.sql.stamps_lock).await?;
        let rows = c.query(&stmt, &[&ids]).await?;
        rows.iter().map(codec::stamp_load).collect()
    }

    /// Runs the constraint rules for replacing `old` with `new`, on stamps locked in this
    /// transaction (`loads`). For each dedicated stamp the write adds the tenant to, it first
    /// reads who else is on it: every write that adds or removes a tenant on a stamp locks that
    /// stamp's row before reading, so under our lock the set of tenants on it cannot change
    /// until we commit, and two writers racing for one dedicated stamp are serialised by it.
    pub(super) async fn check_constraints(
        &self,
        c: &Object,
        old: Option<&Assignment>,
        new: &Assignment,
        loads: &[StampLoad],
        overrides: Option<&Override>,
    ) -> Result<(), Fault> {
        let find = |s: StampId| loads.iter().find(|l| l.id() == s);
        let mut holders: Vec<(StampId, TenantId)> = Vec::new();
        let targets: Vec<StampId> = constraints::dedicated_targets(old, new, find).collect();
        if !targets.is_empty() {
            let stmt = c.prepare_cached(&self.inner.sql.stamp_holder).await?;
            for s in targets {
                if let Some(row) = c.query_opt(&stmt, &[&i64::from(s.0), &new.tenant().as_str()]).await? {
                    let t: &str = row.try_get(0)?;
                    holders.push((s, TenantId::new(t).map_err(|_| corrupt("assignments.tenant"))?));
                }
            }
        }
        let holder = |s: StampId| holders.iter().find(|(x, _)| *x == s).map(|(_, t)| t.clone());
        Ok(constraints::check(old, new, find, holder, overrides)?)
    }

    /// Starts a transaction and locks the given stamps, in one round trip.
    async fn begin_locking_stamps(
        &self,
        c: &Object,
        ids: impl Iterator<Item = StampId>,
    ) -> Result<Vec<StampLoad>, Fault> {
        let ids = stamp_ids(ids);
        let stmt = c.prepare_cached(&self.inner.sql.stamps_lock).await?;
        let ((), rows) = try_join(c.batch_execute("BEGIN"), c.query(&stmt, &[&ids])).await?;
        rows.iter().map(codec::stamp_load).collect()
    }

    /// Starts a transaction and reads and locks a tenant's assignment, checking its epoch, in
    /// one round trip.
    async fn begin_locking_assignment(
        &self,
        c: &Object,
        tenant: &TenantId,
        expected: Epoch,
    ) -> Result<Assignment, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.assignment_lock).await?;
        let ((), row) = try_join(c.batch_execute("BEGIN"), c.query_opt(&stmt, &[&tenant.as_str()])).await?;
        let row = row.ok_or_else(|| Error::NotFound(Subject::Tenant(tenant.clone())))?;
        let current = codec::assignment(&row)?;
        if current.epoch != expected {
            return Err(Error::epoch_conflict(expected, current.epoch).into());
        }
        Ok(current)
    }

    /// Increments the feed counter, runs `write` and commits, pipelined in one round trip;
    /// returns the new head and the write's rows. From the increment to the commit the
    /// transaction holds the counter row, which is what orders commits by version; sending
    /// the three together keeps that window to one round trip. If the increment or the write
    /// fails, the server turns the `COMMIT` into a rollback and the call returns the error.
    /// Every write statement fails (rather than writing nothing) when its target row is gone,
    /// so a commit never records a version without its change row.
    pub(super) async fn bump_write_commit(
        &self,
        c: &Object,
        write: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Version, Vec<Row>), Fault> {
        self.bump_by_write_commit(c, None, write, params).await
    }

    /// [`PgRegistry::bump_write_commit`] taking `n` versions at once when `n` is given (a bulk
    /// import); the new head is the last of them.
    pub(super) async fn bump_by_write_commit(
        &self,
        c: &Object,
        n: Option<i64>,
        write: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Version, Vec<Row>), Fault> {
        let sql = &self.inner.sql;
        let bump = c
            .prepare_cached(if n.is_some() { &sql.bump_many } else { &sql.bump })
            .await?;
        let write = c.prepare_cached(write).await?;
        let at = millis(self.now())?;
        let count = n.unwrap_or(1);
        let bump_params: &[&(dyn ToSql + Sync)] = if n.is_some() { &[&at, &count] } else { &[&at] };
        mark_commit_sent();
        let (head, rows, commit) = join3(
            c.query_one(&bump, bump_params),
            c.query(&write, params),
            c.batch_execute("COMMIT"),
        )
        .await;
        // The server answers in order: an error it reported for the increment or the write
        // (even a fatal one, the connection then closing) means it never ran the COMMIT, so
        // nothing committed. Only an error on the COMMIT itself, or no answer at all, leaves
        // the outcome unknown.
        let (head, rows) = match (head, rows) {
            (Err(e), _) | (Ok(_), Err(e)) if e.as_db_error().is_some() => {
                mark_commit_unsent();
                return Err(e.into());
            }
            (head, rows) => (head?, rows?),
        };
        commit?;
        let head = version_of(head.try_get(0)?)?;
        self.saw(head);
        Ok((head, rows))
    }

    pub(super) async fn assign_once(
        &self,
        c: &mut Object,
        tenant: &TenantSpec,
        stamp: StampId,
        overrides: Option<&Override>,
        actor: Option<&str>,
    ) -> Result<Assignment, Fault> {
        let now = self.now();
        let get = c.prepare_cached(&self.inner.sql.assignment_get).await?;
        let lock = c.prepare_cached(&self.inner.sql.stamps_lock).await?;
        let tenant_lock = c.prepare_cached(&self.inner.sql.directives.tenant_lock).await?;
        let pin_get = c.prepare_cached(&self.inner.sql.directives.pin_get).await?;
        let ids = vec![i64::from(stamp.0)];
        let t = tenant.id.as_str();
        // The tenant's lock first (pin writes take it too), then its row, pin and stamp.
        let (by_tenant, by_ids): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([&t], [&ids]);
        let ((), _, existing, recorded, stamps) = futures_util::try_join!(
            c.batch_execute("BEGIN"),
            c.execute(&tenant_lock, &by_tenant),
            c.query_opt(&get, &by_tenant),
            c.query_opt(&pin_get, &by_tenant),
            c.query(&lock, &by_ids),
        )?;
        let recorded = recorded.as_ref().map(codec::pin).transpose()?;
        if let Some(row) = existing {
            let current = codec::assignment(&row)?;
            return Err(Error::AlreadyAssigned {
                tenant: tenant.id.clone(),
                stamp: current.stamp,
            }
            .into());
        }
        let loads = stamps.iter().map(codec::stamp_load).collect::<Result<Vec<_>, _>>()?;
        let recorded = recorded.and_then(|p| p.stamp);
        let spec = directive::spec_with_pin(tenant, recorded)?;
        // A pin the spec brings is recorded with the assignment.
        let new_pin = spec.pin.filter(|_| recorded.is_none()).map(|p| i64::from(p.0));
        let pin_actor = directive::pin_by_assignment(actor).actor;
        let new = Assignment::new(spec, stamp, Epoch(0), AssignmentMode::Serving, now, now);
        self.check_constraints(c, None, &new, &loads, overrides).await?;
        admission::check(None, Some(&new), |s| loads.iter().find(|l| l.id() == s))?;
        let (o_kinds, o_reason) = override_params(overrides);
        let usage = usage_after(&loads, None, Some(&new))?;
        let p = AssignmentParams::new(&new, now)?;
        let action = HistoryAction::Assigned.as_str();
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.assign_write,
                &[
                    &p.tenant,
                    &p.stamp,
                    &p.mode.0,
                    &p.mode.1,
                    &p.mode.2,
                    &p.region,
                    &p.residency,
                    &p.tier,
                    &p.pin,
                    &p.demand,
                    &p.labels,
                    &p.at,
                    &usage,
                    &action,
                    &None::<i64>,
                    &actor,
                    &o_kinds,
                    &o_reason,
                    &new_pin,
                    &pin_actor,
                    &p.ephemeral,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        check_written(head, &rows)?;
        let mut out = new;
        out.epoch = Epoch(head.0);
        Ok(out)
    }

    pub(super) async fn cas_once(
        &self,
        c: &mut Object,
        tenant: &TenantId,
        expected: Epoch,
        change: &AssignmentChange,
    ) -> Result<Assignment, Fault> {
        let now = self.now();
        let old = self.begin_locking_assignment(c, tenant, expected).await?;
        let (mut new, action) = admission::change(&old, &change.action)?;
        new.updated_at = now;
        let loads = self.lock_stamps(c, old.stamps().chain(new.stamps())).await?;
        self.check_constraints(c, Some(&old), &new, &loads, change.overrides.as_ref())
            .await?;
        admission::check(Some(&old), Some(&new), |s| loads.iter().find(|l| l.id() == s))?;
        let (o_kinds, o_reason) = override_params(change.overrides.as_ref());
        let usage = usage_after(&loads, Some(&old), Some(&new))?;
        let p = AssignmentParams::new(&new, now)?;
        let action = action.as_str();
        let from = Some(i64::from(old.stamp.0));
        let expected_param = big(expected.0, "expected")?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.update_write,
                &[
                    &p.tenant,
                    &p.stamp,
                    &p.mode.0,
                    &p.mode.1,
                    &p.mode.2,
                    &p.region,
                    &p.residency,
                    &p.tier,
                    &p.pin,
                    &p.demand,
                    &p.labels,
                    &p.at,
                    &usage,
                    &action,
                    &from,
                    &change.actor,
                    &o_kinds,
                    &o_reason,
                    &expected_param,
                    &p.ephemeral,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        check_written(head, &rows)?;
        new.epoch = Epoch(head.0);
        Ok(new)
    }

    pub(super) async fn unassign_once(&self, c: &mut Object, tenant: &TenantId, expected: Epoch) -> Result<(), Fault> {
        let now = self.now();
        let old = self.begin_locking_assignment(c, tenant, expected).await?;
        let loads = self.lock_stamps(c, old.stamps()).await?;
        let usage = usage_after(&loads, Some(&old), None)?;
        let at = millis(now)?;
        let expected_param = big(expected.0, "expected")?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.unassign_write,
                &[&tenant.as_str(), &expected_param, &usage, &at, &None::<String>],
            )
            .await?;
        self.inner.signal.notify(head);
        check_written(head, &rows)?;
        Ok(())
    }

    pub(super) async fn put_stamp_once(&self, c: &mut Object, spec: &StampSpec) -> Result<Stamp, Fault> {
        let now = self.now();
        let existing = self.begin_locking_stamps(c, std::iter::once(spec.id)).await?;
        let write = match existing.first() {
            Some(load) => {
                admission::check_respec(load, spec)?;
                if admission::respec_touches_constraints(load, spec) {
                    // Every write that adds a tenant to the stamp locks its row first: the list
                    // holds until this transaction ends.
                    let stmt = c.prepare_cached(&self.inner.sql.stamp_tenants).await?;
                    let rows = c.query(&stmt, &[&i64::from(spec.id.0)]).await?;
                    let held = rows.iter().map(codec::assignment).collect::<Result<Vec<_>, _>>()?;
                    admission::check_respec_constraints(load, spec, &held)?;
                }
                &self.inner.sql.stamp_update
            }
            None => &self.inner.sql.stamp_insert,
        };
        let id = i64::from(spec.id.0);
        let residency = spec.residency.as_ref().map(|r| r.as_str());
        let labels = labels_json(&spec.labels);
        let limits = amounts_json(spec.capacity.limits().iter());
        let headroom = i64::from(spec.capacity.headroom().as_ppm());
        let by_resource = codec::headroom_json(&spec.capacity);
        let expires_at = spec.expires_at.map(millis).transpose()?;
        let at = millis(now)?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                write,
                &[
                    &id,
                    &spec.name,
                    &spec.region.as_str(),
                    &residency,
                    &spec.tier.as_str(),
                    &labels,
                    &spec.version,
                    &spec.endpoint,
                    &limits,
                    &headroom,
                    &at,
                    &by_resource,
                    &expires_at,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        stamp_written(head, &rows)
    }

    pub(super) async fn set_state_once(&self, c: &mut Object, id: StampId, state: StampState) -> Result<Stamp, Fault> {
        let now = self.now();
        let loads = self.begin_locking_stamps(c, std::iter::once(id)).await?;
        let load = loads.first().ok_or(Error::NotFound(Subject::Stamp(id)))?;
        let changes = match admission::check_state_change(load, state) {
            Err(Error::StampNotEmpty { stamp, tenants, .. }) => {
                let stmt = c.prepare_cached(&self.inner.sql.stamp_tenant_sample).await?;
                let limit = crate::model::error::STAMP_NOT_EMPTY_LISTED as i64;
                let rows = c.query(&stmt, &[&i64::from(id.0), &limit]).await?;
                let first = rows
                    .iter()
                    .map(|r| codec::assignment(r).map(|a| a.tenant().clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                return Err(Error::StampNotEmpty { stamp, tenants, first }.into());
            }
            other => other?,
        };
        if !changes {
            c.batch_execute("ROLLBACK").await?;
            return Ok(load.stamp.clone());
        }
        if state == StampState::Decommissioned && self.is_redirect_target(c, id).await? {
            return Err(crate::registry::override_target_retired().into());
        }
        let at = millis(now)?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &self.inner.sql.stamp_state,
                &[&i64::from(id.0), &state.as_str(), &at],
            )
            .await?;
        self.inner.signal.notify(head);
        stamp_written(head, &rows)
    }
}

pub(super) fn stamp_ids(ids: impl Iterator<Item = StampId>) -> Vec<i64> {
    let mut ids: Vec<i64> = ids.map(|s| i64::from(s.0)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Usage of each locked stamp after replacing `old` with `new`, as `{stamp id: usage}`; a sum
/// that would overflow is [`Error::CapacityExceeded`] (nothing is written).
fn usage_after(loads: &[StampLoad], old: Option<&Assignment>, new: Option<&Assignment>) -> Result<Value, Error> {
    let mut usage: Vec<(StampId, Amounts)> = loads.iter().map(|l| (l.id(), l.usage.clone())).collect();
    let mut overflow = None;
    admission::apply(old, new, |s, demand, plus| {
        if let Some((_, u)) = usage.iter_mut().find(|(id, _)| *id == s) {
            match u.with_demand(demand, plus) {
                Ok(next) => *u = next,
                Err(resource) => overflow = overflow.take().or(Some(Error::CapacityExceeded { stamp: s, resource })),
            }
        }
    });
    if let Some(e) = overflow {
        return Err(e);
    }
    Ok(Value::Object(
        usage
            .into_iter()
            .map(|(id, u)| (id.0.to_string(), amounts_json(u.iter())))
            .collect(),
    ))
}

/// Checks that an assignment write wrote its change row at `head`, its history row and every
/// stamp's usage.
pub(super) fn check_written(head: Version, rows: &[Row]) -> Result<(), Fault> {
    let row = rows
        .first()
        .ok_or_else(|| corrupt("assignments (write matched no row)"))?;
    let version = version_of(row.try_get("version")?)?;
    let history: i64 = row.try_get("history_rows")?;
    if version != head || history != 1 {
        return Err(corrupt("changes.version"));
    }
    Ok(())
}

/// The stamp a stamp write returned.
fn stamp_written(head: Version, rows: &[Row]) -> Result<Stamp, Fault> {
    let row = rows.first().ok_or_else(|| corrupt("stamps (write matched no row)"))?;
    if version_of(row.try_get("version")?)? != head {
        return Err(corrupt("changes.version"));
    }
    codec::stamp(row)
}
