//! Group commit of `compare_and_set`: the transaction that writes a group of changes.
//!
//! It locks every member's assignment in one statement (in tenant order), then, in the same
//! round trip, every stamp they have or a change names (in id order), as a single
//! `compare_and_set` locks: assignment, stamps, then the feed counter. Each change is then checked in queue order with
//! `compare_and_set`'s rules (epoch, [`admission::change`], [`constraints::check`],
//! [`admission::check`]) against the stamps' usage as the earlier members left it. A refused
//! change is answered alone and writes nothing. The accepted changes are written by one
//! set-based statement (assignments, usage, one history entry and one change each, the
//! versions taken together from the counter, consecutive in member order), then the group
//! commits once.
//!
//! Who is on each locked dedicated stamp is read once, under the stamps' locks, and kept up
//! to date as members are accepted, so a change sees the members before it on a dedicated
//! stamp as if they had committed first, and the group writes once.

use std::collections::HashMap;

use deadpool_postgres::Object;
use futures_util::future::try_join;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::codec::{self, amounts_json, big, millis, override_params, version_of, AssignmentParams};
use super::fault::{corrupt, Fault};
use super::group::Request;
use super::import::{self, BeforeCommit};
use super::schema::quoted;
use super::sql::{GUARD, HISTORY_COLS, STAMP_COLS};
use super::writes::stamp_ids;
use super::PgRegistry;
use crate::error::{Error, Subject};
use crate::model::{admission, constraints};
use crate::model::{
    Amounts, Assignment, AssignmentChange, AssignmentMode, ChangeAction, Epoch, StampId, StampLoad, TenantId, Tier,
    Version,
};
use crate::time::Timestamp;

/// One member of a group of `compare_and_set` calls.
#[derive(Debug)]
pub(super) struct ChangeRequest<'a> {
    tenant: &'a TenantId,
    expected: Epoch,
    change: &'a AssignmentChange,
}

impl<'a> ChangeRequest<'a> {
    /// The change a queued request asks for (`None` for an `assign`).
    pub(super) fn of(request: &'a Request) -> Option<Self> {
        match request {
            Request::Change {
                tenant,
                expected,
                change,
            } => Some(ChangeRequest {
                tenant,
                expected: *expected,
                change,
            }),
            Request::Assign(_) => None,
        }
    }
}

/// An accepted change, waiting to be sent.
struct Accepted {
    member: usize,
    from: i64,
    new: Assignment,
    usage: Value,
    action: &'static str,
}

/// Each member's answer as the group goes: `None` until decided.
type Answers = Vec<Option<Result<Assignment, Error>>>;

impl PgRegistry {
    /// One attempt at a group of changes (run by `on_conn!`, which retries it whole). Answers
    /// each member in order; `None` when `before_commit` said no (the transaction rolled back).
    pub(super) async fn change_group_once(
        &self,
        c: &mut Object,
        members: &[ChangeRequest<'_>],
        before_commit: BeforeCommit<'_>,
    ) -> Result<Option<Vec<Result<Assignment, Error>>>, Fault> {
        let now = self.now();
        let tenants: Vec<&str> = members.iter().map(|m| m.tenant.as_str()).collect();
        let named = stamp_ids(members.iter().flat_map(|m| named_stamps(&m.change.action)));
        let sql = &self.inner.sql;
        let lock = c.prepare_cached(&sql.assignments_lock).await?;
        let lock_stamps = c.prepare_cached(&sql.change_group.stamps_lock).await?;
        // The assignments, then (in the same round trip) every stamp they have or a change
        // names: a superset of the stamps any change can touch.
        let by_tenants: [&(dyn ToSql + Sync); 1] = [&tenants];
        let by_both: [&(dyn ToSql + Sync); 2] = [&named, &tenants];
        let ((), rows, stamps) = futures_util::try_join!(
            c.batch_execute("BEGIN"),
            c.query(&lock, &by_tenants),
            c.query(&lock_stamps, &by_both),
        )?;
        let current: HashMap<TenantId, Assignment> = rows
            .iter()
            .map(|r| codec::assignment(r).map(|a| (a.tenant().clone(), a)))
            .collect::<Result<_, _>>()?;

        let mut answers: Answers = members.iter().map(|_| None).collect();
        let mut planned = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            match plan(current.get(m.tenant), m, now) {
                Ok(p) => planned.push((i, p)),
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        let mut loads = stamps.iter().map(codec::stamp_load).collect::<Result<Vec<_>, _>>()?;
        let mut holders = self.dedicated_tenants(c, &loads).await?;

        let mut pending: Vec<Accepted> = Vec::new();
        for (i, (old, new, action)) in planned {
            let change = members[i].change;
            let tenant = new.tenant().clone();
            let holder = |s: StampId| {
                holders
                    .iter()
                    .find(|(x, t)| *x == s && *t != tenant)
                    .map(|(_, t)| t.clone())
            };
            let find = |s: StampId| loads.iter().find(|l| l.id() == s);
            let checked = constraints::check(Some(&old), &new, find, holder, change.overrides.as_ref())
                .and_then(|()| admission::check(Some(&old), Some(&new), find))
                .and_then(|()| step_usage(&mut loads, &old, &new));
            match checked {
                Ok(usage) => {
                    // Who is on each dedicated stamp after this change.
                    holders.retain(|(s, t)| *t != tenant || new.stamps().any(|x| x == *s));
                    for s in new.stamps().filter(|s| !old.stamps().any(|x| x == *s)) {
                        if loads
                            .iter()
                            .any(|l| l.id() == s && l.stamp.spec.tier == Tier::Dedicated)
                        {
                            holders.push((s, tenant.clone()));
                        }
                    }
                    pending.push(Accepted {
                        member: i,
                        from: i64::from(old.stamp.0),
                        new,
                        usage,
                        action: action.as_str(),
                    });
                }
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        let written: Vec<usize> = pending.iter().map(|a| a.member).collect();
        let head = if pending.is_empty() {
            None
        } else {
            Some(self.send_changes(c, &mut pending, members, &mut answers, now).await?)
        };
        let Some(head) = head else {
            // Nothing accepted: nothing written.
            c.batch_execute("ROLLBACK").await?;
            return Ok(Some(collect(answers)?));
        };
        if !self.commit_if(c, head, &written, before_commit).await? {
            return Ok(None);
        }
        Ok(Some(collect(answers)?))
    }

    /// Every tenant on each locked dedicated stamp that has any (serving or shadow), as
    /// `(stamp, tenant)`: under the stamps' locks, who is on them cannot change until this
    /// transaction ends, and the group tracks the changes its members make.
    async fn dedicated_tenants(&self, c: &Object, loads: &[StampLoad]) -> Result<Vec<(StampId, TenantId)>, Fault> {
        let dedicated: Vec<i64> = loads
            .iter()
            .filter(|l| l.stamp.spec.tier == Tier::Dedicated && l.tenants() > 0)
            .map(|l| i64::from(l.id().0))
            .collect();
        if dedicated.is_empty() {
            return Ok(Vec::new());
        }
        let stmt = c.prepare_cached(&self.inner.sql.change_group.dedicated_tenants).await?;
        let mut holders = Vec::new();
        for row in c.query(&stmt, &[&dedicated]).await? {
            let tenant: &str = row.try_get("tenant")?;
            let tenant = TenantId::new(tenant).map_err(|_| corrupt("assignments.tenant"))?;
            for col in ["stamp_id", "shadow_id"] {
                let stamp: Option<i64> = row.try_get(col)?;
                if let Some(s) = stamp.filter(|s| dedicated.contains(s)) {
                    let s = u32::try_from(s).map_err(|_| corrupt("assignments.stamp_id"))?;
                    holders.push((StampId(s), tenant.clone()));
                }
            }
        }
        Ok(holders)
    }

    /// Sends the accepted changes' write (one statement, pipelined after the counter's
    /// increment by their number), answers their members with their new epochs (consecutive,
    /// in member order) and returns the counter's head after the last.
    async fn send_changes(
        &self,
        c: &Object,
        pending: &mut Vec<Accepted>,
        members: &[ChangeRequest<'_>],
        answers: &mut Answers,
        now: Timestamp,
    ) -> Result<Version, Fault> {
        let n = pending.len();
        let mut cols = Columns::with_capacity(n);
        let mut usage = serde_json::Map::new();
        for a in pending.iter() {
            let m = &members[a.member];
            let (o_kinds, o_reason) = override_params(m.change.overrides.as_ref());
            cols.push(AssignmentParams::new(&a.new, now)?);
            cols.expected.push(big(m.expected.0, "expected")?);
            cols.action.push(a.action);
            cols.from.push(a.from);
            cols.actor.push(m.change.actor.as_deref());
            cols.o_kinds.push(o_kinds);
            cols.o_reason.push(o_reason);
            if let Value::Object(u) = &a.usage {
                usage.extend(u.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let usage = Value::Object(usage);
        let at = millis(now)?;
        let count = i64::try_from(n).map_err(|_| corrupt("group size"))?;
        let params: [&(dyn ToSql + Sync); 21] = [
            &at,
            &count,
            &cols.base.tenant,
            &cols.base.stamp,
            &cols.mode,
            &cols.shadow,
            &cols.frozen_until,
            &cols.base.region,
            &cols.base.residency,
            &cols.base.tier,
            &cols.base.pin,
            &cols.base.demand,
            &cols.base.labels,
            &cols.base.ephemeral,
            &cols.expected,
            &cols.action,
            &cols.from,
            &cols.actor,
            &cols.o_kinds,
            &cols.o_reason,
            &usage,
        ];
        let sql = &self.inner.sql;
        let bump = c.prepare_cached(&sql.bump_many).await?;
        let write = c.prepare_cached(&sql.change_group.write).await?;
        let bump_params: [&(dyn ToSql + Sync); 2] = [&at, &count];
        let (head, written) = try_join(c.query_one(&bump, &bump_params), c.query(&write, &params)).await?;
        let head = version_of(head.try_get(0)?)?;
        import::check_written(&written, count, head)?;
        // The k-th accepted change took version head - n + k.
        for (k, a) in pending.drain(..).enumerate() {
            let mut new = a.new;
            new.epoch = Epoch(head.0 + 1 + k as u64 - n as u64);
            answers[a.member] = Some(Ok(new));
        }
        Ok(head)
    }
}

/// The statements of a group of changes.
#[derive(Debug)]
pub(crate) struct ChangeGroupSql {
    /// Locks the stamps in `$1` and those the assignments of the tenants in `$2` have (serving
    /// or shadow), in id order.
    stamps_lock: String,
    /// The tenants on the dedicated stamps in `$1` (serving or shadow).
    dedicated_tenants: String,
    /// Writes the accepted changes (see [`PgRegistry::send_changes`] for the parameters).
    write: String,
}

impl ChangeGroupSql {
    pub(crate) fn new(schema: &str, notify_col: &str) -> ChangeGroupSql {
        let s = quoted(schema);
        ChangeGroupSql {
            dedicated_tenants: format!(
                "SELECT tenant, stamp_id, shadow_id FROM {s}.assignments
                 WHERE stamp_id = ANY($1::bigint[]) OR shadow_id = ANY($1::bigint[])"
            ),
            stamps_lock: format!(
                "SELECT {STAMP_COLS} FROM {s}.stamps WHERE id = ANY($1::bigint[]) OR id IN (
                    SELECT stamp_id FROM {s}.assignments WHERE tenant = ANY($2::text[])
                    UNION ALL
                    SELECT shadow_id FROM {s}.assignments WHERE tenant = ANY($2::text[]) AND shadow_id IS NOT NULL
                 ) ORDER BY id FOR NO KEY UPDATE"
            ),
            // $1 at, $2 changes, $3..$20 one array per column, $21 usage ({stamp id: usage}).
            // The k-th change (1-based) takes version head - changes + k: the increment
            // pipelined before this statement took them all. Each row matches its tenant at its
            // expected epoch (locked by this transaction). The statement fails when it wrote
            // no change at all; fewer than all is caught by `check_written` (`Corrupt`).
            write: format!(
                "WITH src AS (
                    SELECT * FROM unnest($3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[],
                                         $8::text[], $9::text[], $10::text[], $11::bigint[], $12::jsonb[],
                                         $13::jsonb[], $14::bool[], $15::bigint[], $16::text[], $17::bigint[],
                                         $18::text[], $19::text[], $20::text[])
                        WITH ORDINALITY AS r(tenant, stamp_id, mode, shadow_id, frozen_until, region, residency,
                                             tier, pin, demand, labels, ephemeral, expected, action, from_stamp,
                                             actor, o_kinds, o_reason, ord)
                ), upd AS (
                    UPDATE {s}.assignments a SET stamp_id = src.stamp_id, epoch = f.head - $2 + src.ord,
                        mode = src.mode, shadow_id = src.shadow_id, frozen_until = src.frozen_until,
                        region = src.region, residency = src.residency, tier = src.tier, pin_stamp_id = src.pin,
                        demand_milli = src.demand, labels = src.labels, updated_at = $1, ephemeral = src.ephemeral
                    FROM src, {s}.feed f
                    WHERE f.id = 1 AND a.tenant = src.tenant AND a.epoch = src.expected
                    RETURNING a.*
                ), usage_upd AS (
                    UPDATE {s}.stamps st SET usage_milli = u.value
                    FROM jsonb_each($21::jsonb) u WHERE st.id = u.key::bigint
                    RETURNING st.id
                ), hist AS (
                    INSERT INTO {s}.assignment_history ({HISTORY_COLS})
                    SELECT upd.epoch, upd.tenant, $1, src.action, src.from_stamp, upd.stamp_id, upd.epoch, upd.mode,
                           upd.shadow_id, upd.frozen_until, src.actor, src.o_kinds, src.o_reason, NULL
                    FROM upd JOIN src ON src.tenant = upd.tenant
                    RETURNING version
                ), chg AS (
                    INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                    SELECT upd.epoch, $1, 'assignment', upd.tenant, NULL, row_to_json(upd) FROM upd
                    RETURNING version
                )
                SELECT (SELECT count(*) FROM chg) AS changes, (SELECT max(version) FROM chg) AS version,
                       (SELECT count(*) FROM hist) AS history_rows, g.written{notify_col}
                FROM {GUARD}"
            ),
        }
    }
}

/// The accepted changes as one array per column.
struct Columns<'a> {
    /// The assignments' columns a bulk import writes too.
    base: import::Columns<'a>,
    mode: Vec<&'static str>,
    shadow: Vec<Option<i64>>,
    frozen_until: Vec<Option<i64>>,
    expected: Vec<i64>,
    action: Vec<&'static str>,
    from: Vec<i64>,
    actor: Vec<Option<&'a str>>,
    o_kinds: Vec<Option<String>>,
    o_reason: Vec<Option<String>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Columns {
            base: import::Columns::with_capacity(n),
            mode: Vec::with_capacity(n),
            shadow: Vec::with_capacity(n),
            frozen_until: Vec::with_capacity(n),
            expected: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            from: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            o_kinds: Vec::with_capacity(n),
            o_reason: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, p: AssignmentParams<'a>) {
        self.mode.push(p.mode.0);
        self.shadow.push(p.mode.1);
        self.frozen_until.push(p.mode.2);
        self.base.push(p);
    }
}

/// The stamps a change action names (beside the tenant's own).
fn named_stamps(action: &ChangeAction) -> impl Iterator<Item = StampId> {
    let (to, mode) = match action {
        ChangeAction::Move { to, mode } => (Some(*to), Some(mode)),
        ChangeAction::SetMode(mode) => (None, Some(mode)),
        ChangeAction::Resize(_) => (None, None),
    };
    to.into_iter().chain(mode.and_then(AssignmentMode::shadow))
}

/// What `compare_and_set` would do to `current`: the old and new assignment and the history
/// action, or the refusal (no assignment, another epoch, a change that makes no sense).
fn plan(
    current: Option<&Assignment>,
    m: &ChangeRequest<'_>,
    now: Timestamp,
) -> Result<(Assignment, Assignment, crate::model::HistoryAction), Error> {
    let old = current.ok_or_else(|| Error::NotFound(Subject::Tenant(m.tenant.clone())))?;
    if old.epoch != m.expected {
        return Err(Error::epoch_conflict(m.expected, old.epoch));
    }
    let (mut new, action) = admission::change(old, &m.change.action)?;
    new.updated_at = now;
    Ok((old.clone(), new, action))
}

/// Counts the replacement of `old` by `new` in the stamps' usage; returns the usage of the
/// stamps it changed as `{stamp id: usage}` (the write's parameter). A sum that would overflow
/// is [`Error::CapacityExceeded`] and changes nothing.
fn step_usage(loads: &mut [StampLoad], old: &Assignment, new: &Assignment) -> Result<Value, Error> {
    let mut next: Vec<(usize, Amounts)> = Vec::new();
    let mut overflow = None;
    admission::apply(Some(old), Some(new), |s, demand, plus| {
        let Some(i) = loads.iter().position(|l| l.id() == s) else {
            return;
        };
        let base = match next.iter().position(|(j, _)| *j == i) {
            Some(k) => next[k].1.clone(),
            None => loads[i].usage.clone(),
        };
        match base.with_demand(demand, plus) {
            Ok(u) => match next.iter_mut().find(|(j, _)| *j == i) {
                Some(slot) => slot.1 = u,
                None => next.push((i, u)),
            },
            Err(resource) => {
                overflow.get_or_insert(Error::CapacityExceeded { stamp: s, resource });
            }
        }
    });
    if let Some(e) = overflow {
        return Err(e);
    }
    let mut usage = serde_json::Map::new();
    for (i, u) in next {
        usage.insert(loads[i].id().0.to_string(), amounts_json(u.iter()));
        loads[i].usage = u;
    }
    Ok(Value::Object(usage))
}

/// The answers, once every member has one.
fn collect(answers: Answers) -> Result<Vec<Result<Assignment, Error>>, Fault> {
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| Fault::from(Error::unavailable("a member of a group of changes got no answer"))))
        .collect()
}
