//! Pins, routing overrides and repair records in PostgreSQL: their statements and the
//! transaction body of each write.
//!
//! Pins: a tenant's pin and its first assignment can be written concurrently while no
//! assignment row exists to lock, so both take a transaction-level advisory lock on the tenant
//! first (one of [`TENANT_LOCK_BUCKETS`] locks, chosen by a hash of the tenant id, so that a
//! bulk import locks its tenants with a bounded number of locks); once the tenant is assigned, its row lock also orders them against every
//! `compare_and_set`. Override writes take one advisory lock for the schema, so the no-chain
//! rule is checked against the overrides in force at commit.

use deadpool_postgres::Object;
use futures_util::future::{try_join3, try_join4};
use tokio_postgres::types::ToSql;

use super::codec::{self, big, millis, mode_params};
use super::fault::{corrupt, Fault};
use super::schema::quoted;
use super::sql::{GUARD, HISTORY_COLS};
use super::PgRegistry;
use crate::error::{Error, InvalidInput, Subject};
use crate::model::directive::{check_pin, check_redirect};
use crate::model::{
    AssignmentMode, Decision, Epoch, HistoryAction, HistoryEntry, Pin, Redirect, RouteOverride, StampId, StampState,
    TenantId, Version,
};

pub(super) const PIN_COLS: &str = "tenant, stamp_id, actor, reason, at, version";

/// How many advisory locks the tenants of one schema share. A bulk import takes at most this
/// many (PostgreSQL's lock table holds `max_locks_per_transaction` × connections entries,
/// 6,400 by default); two first writes of different tenants wait on each other once in this
/// many pairs, for one short transaction.
pub(super) const TENANT_LOCK_BUCKETS: i64 = 256;

/// The advisory-lock key of the tenant the SQL expression `tenant` names: its bucket, in the
/// schema's key space. Schema names are validated identifiers: safe inside a literal.
pub(super) fn tenant_lock_key(schema: &str, tenant: &str) -> String {
    let mask = TENANT_LOCK_BUCKETS - 1;
    format!("hashtextextended('stamps:{schema}:tenant:' || (hashtextextended({tenant}, 0) & {mask})::text, 0)")
}
const OVERRIDE_COLS: &str = "version, stamp_id, to_stamp, applies, actor, reason, at";

/// The statements of this module.
#[derive(Debug)]
pub(crate) struct DirectiveSql {
    /// Serialises pin writes and first assignments of one tenant ($1).
    pub(crate) tenant_lock: String,
    pub(crate) pin_get: String,
    pins_page: String,
    pin_write: String,
    overrides_lock: String,
    overrides_in_force: String,
    targeted: String,
    override_history: String,
    override_write: String,
    repair_write: String,
    stamp_state: String,
}

impl DirectiveSql {
    pub(crate) fn new(schema: &str, notify_col: &str) -> DirectiveSql {
        let s = quoted(schema);
        // Schema names are validated identifiers: safe inside a literal.
        let lock_key = |what: &str| format!("hashtextextended('stamps:{schema}:{what}:' || $1::text, 0)");
        let head = format!("(SELECT head FROM {s}.feed WHERE id = 1)");
        let tail = format!("SELECT chg.version, g.written{notify_col} FROM {GUARD} LEFT JOIN chg ON true");
        DirectiveSql {
            tenant_lock: format!("SELECT pg_advisory_xact_lock({})", tenant_lock_key(schema, "$1::text")),
            pin_get: format!("SELECT {PIN_COLS} FROM {s}.pins WHERE tenant = $1"),
            pins_page: format!("SELECT {PIN_COLS} FROM {s}.pins WHERE tenant > $1 ORDER BY tenant LIMIT $2"),
            // $1 tenant, $2 pin (NULL clears), $3 actor, $4 reason, $5 at, $6 action, $7 the
            // pin before, $8 epoch, $9..$11 mode of the tenant's assignment (if any).
            pin_write: format!(
                "WITH del AS (
                    DELETE FROM {s}.pins WHERE tenant = $1 AND $2::bigint IS NULL RETURNING tenant
                ), up AS (
                    INSERT INTO {s}.pins ({PIN_COLS})
                    SELECT $1, $2::bigint, $3, $4, $5, {head} WHERE $2::bigint IS NOT NULL
                    ON CONFLICT (tenant) DO UPDATE SET stamp_id = EXCLUDED.stamp_id, actor = EXCLUDED.actor,
                        reason = EXCLUDED.reason, at = EXCLUDED.at, version = EXCLUDED.version
                    RETURNING tenant
                ), asg AS (
                    UPDATE {s}.assignments SET pin_stamp_id = $2::bigint WHERE tenant = $1 RETURNING tenant
                ), hist AS (
                    INSERT INTO {s}.assignment_history ({HISTORY_COLS})
                    SELECT {head}, $1, $5, $6, $7, $2::bigint, $8, $9, $10, $11, $3, NULL, NULL, $4
                    RETURNING version
                ), chg AS (
                    INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                    SELECT hist.version, $5, 'pin', $1, $2::bigint,
                           json_build_object('tenant', $1::text, 'stamp_id', $2::bigint, 'actor', $3::text,
                                              'reason', $4::text, 'at', $5::bigint, 'version', hist.version)
                    FROM hist
                    RETURNING version
                ) {tail}"
            ),
            overrides_lock: format!(
                "SELECT pg_advisory_xact_lock({})",
                lock_key("overrides").replace("$1::text", "''")
            ),
            overrides_in_force: format!(
                "SELECT {OVERRIDE_COLS} FROM (
                    SELECT DISTINCT ON (stamp_id) {OVERRIDE_COLS} FROM {s}.route_overrides
                    ORDER BY stamp_id, version DESC
                 ) o WHERE to_stamp IS NOT NULL ORDER BY stamp_id"
            ),
            // Read under the target stamp's row lock: override writes lock it `FOR SHARE`.
            targeted: format!(
                "SELECT 1 FROM (
                    SELECT DISTINCT ON (stamp_id) to_stamp FROM {s}.route_overrides ORDER BY stamp_id, version DESC
                 ) o WHERE to_stamp = $1 LIMIT 1"
            ),
            override_history: format!(
                "SELECT {OVERRIDE_COLS} FROM {s}.route_overrides WHERE stamp_id = $1 ORDER BY version"
            ),
            // $1 stamp, $2 target (NULL clears), $3 when, $4 actor, $5 reason, $6 at.
            override_write: format!(
                "WITH ins AS (
                    INSERT INTO {s}.route_overrides ({OVERRIDE_COLS})
                    SELECT {head}, $1, $2::bigint, $3::text, $4, $5, $6
                    RETURNING *
                ), chg AS (
                    INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                    SELECT ins.version, $6, 'route_override', NULL, $1, row_to_json(ins) FROM ins
                    RETURNING version
                ) {tail}"
            ),
            // $1 tenant, $2 stamp, $3 actor, $4 reason, $5 at, $6 epoch, $7..$9 mode.
            repair_write: format!(
                "WITH hist AS (
                    INSERT INTO {s}.assignment_history ({HISTORY_COLS})
                    SELECT {head}, $1, $5, 'repaired', NULL, $2, $6, $7, $8, $9, $3, NULL, NULL, $4
                    RETURNING version
                ), chg AS (
                    INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                    SELECT hist.version, $5, 'repaired', $1, $2, json_build_object('stamp_id', $2::bigint) FROM hist
                    RETURNING version
                ) {tail}"
            ),
            // Locked so a stamp cannot be decommissioned while a redirect to it is written.
            stamp_state: format!("SELECT id, state FROM {s}.stamps WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE"),
        }
    }
}

/// `(epoch, mode, shadow, frozen until)` of the tenant's assignment for a history row, or
/// epoch 0 serving when unassigned.
type AssignmentState = (i64, &'static str, Option<i64>, Option<i64>);

fn assignment_state(a: Option<&crate::model::Assignment>) -> Result<AssignmentState, Fault> {
    let (epoch, mode) = a.map_or((Epoch(0), AssignmentMode::Serving), |a| (a.epoch, a.mode));
    let (name, shadow, until) = mode_params(&mode)?;
    Ok((big(epoch.0, "epoch")?, name, shadow, until))
}

impl PgRegistry {
    pub(super) async fn set_pin_once(
        &self,
        c: &mut Object,
        tenant: &TenantId,
        stamp: Option<StampId>,
        decision: &Decision,
    ) -> Result<Pin, Fault> {
        let now = self.now();
        let sql = &self.inner.sql;
        let lock = c.prepare_cached(&sql.directives.tenant_lock).await?;
        let get = c.prepare_cached(&sql.assignment_lock).await?;
        let pin_get = c.prepare_cached(&sql.directives.pin_get).await?;
        let stamp_get = c.prepare_cached(&sql.directives.stamp_state).await?;
        let ids: Vec<i64> = stamp.iter().map(|s| i64::from(s.0)).collect();
        let t = tenant.as_str();
        let (by_tenant, by_ids): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([&t], [&ids]);
        let ((), _, assignment, current, stamps) = futures_util::try_join!(
            c.batch_execute("BEGIN"),
            c.execute(&lock, &by_tenant),
            c.query_opt(&get, &by_tenant),
            c.query_opt(&pin_get, &by_tenant),
            c.query(&stamp_get, &by_ids),
        )?;
        if let Some(s) = stamp {
            if stamps.is_empty() {
                return Err(Error::NotFound(Subject::Stamp(s)).into());
            }
        }
        let previous = current.as_ref().map(codec::pin).transpose()?.and_then(|p| p.stamp);
        if stamp.is_none() && previous.is_none() {
            return Err(Error::from(InvalidInput::new("pin", "the tenant has no pin to clear")).into());
        }
        let assignment = assignment.as_ref().map(codec::assignment).transpose()?;
        check_pin(assignment.as_ref(), stamp)?;
        let (epoch, mode, shadow, until) = assignment_state(assignment.as_ref())?;
        let action = if stamp.is_some() {
            HistoryAction::Pinned
        } else {
            HistoryAction::Unpinned
        };
        let at = millis(now)?;
        let pin = stamp.map(|s| i64::from(s.0));
        let before = previous.map(|s| i64::from(s.0));
        let (head, rows) = self
            .bump_write_commit(
                c,
                &sql.directives.pin_write,
                &[
                    &t,
                    &pin,
                    &decision.actor,
                    &decision.reason,
                    &at,
                    &action.as_str(),
                    &before,
                    &epoch,
                    &mode,
                    &shadow,
                    &until,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        written(head, &rows)?;
        Ok(Pin::new(tenant.clone(), stamp, decision.clone(), now, head))
    }

    pub(super) async fn read_pin(&self, c: &Object, tenant: &TenantId) -> Result<Option<Pin>, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.directives.pin_get).await?;
        c.query_opt(&stmt, &[&tenant.as_str()])
            .await?
            .as_ref()
            .map(codec::pin)
            .transpose()
    }

    pub(super) async fn read_pins(
        &self,
        c: &Object,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<Pin>, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.directives.pins_page).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c.query(&stmt, &[&after.map_or("", TenantId::as_str), &limit]).await?;
        rows.iter().map(codec::pin).collect()
    }

    pub(super) async fn set_override_once(
        &self,
        c: &mut Object,
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: &Decision,
    ) -> Result<RouteOverride, Fault> {
        let now = self.now();
        let sql = &self.inner.sql.directives;
        let lock = c.prepare_cached(&sql.overrides_lock).await?;
        let in_force = c.prepare_cached(&sql.overrides_in_force).await?;
        let stamp_get = c.prepare_cached(&sql.stamp_state).await?;
        let ids: Vec<i64> = std::iter::once(stamp)
            .chain(redirect.map(|r| r.to))
            .map(|s| i64::from(s.0))
            .collect();
        let ((), _, rows, stamps) = try_join4(
            c.batch_execute("BEGIN"),
            c.execute(&lock, &[]),
            c.query(&in_force, &[]),
            c.query(&stamp_get, &[&ids]),
        )
        .await?;
        let state_of = |s: StampId| -> Result<Option<StampState>, Fault> {
            match stamps
                .iter()
                .find(|r| r.try_get::<_, i64>("id").ok() == Some(i64::from(s.0)))
            {
                Some(r) => {
                    let name: &str = r.try_get("state")?;
                    Ok(Some(StampState::parse(name).ok_or_else(|| corrupt("stamps.state"))?))
                }
                None => Ok(None),
            }
        };
        if state_of(stamp)?.is_none() {
            return Err(Error::NotFound(Subject::Stamp(stamp)).into());
        }
        let current: Vec<RouteOverride> = rows.iter().map(codec::route_override).collect::<Result<_, _>>()?;
        match redirect {
            Some(r) => match state_of(r.to)? {
                None => return Err(Error::NotFound(Subject::Stamp(r.to)).into()),
                Some(StampState::Decommissioned) => {
                    return Err(Error::from(InvalidInput::new("redirect", "its target is decommissioned")).into())
                }
                Some(_) => {}
            },
            None if !current.iter().any(|o| o.stamp == stamp) => {
                return Err(Error::from(InvalidInput::new("redirect", "the stamp has no override to clear")).into())
            }
            None => {}
        }
        check_redirect(
            stamp,
            redirect,
            |s| current.iter().find(|o| o.stamp == s).and_then(|o| o.redirect),
            |s| {
                current
                    .iter()
                    .any(|o| o.stamp != stamp && o.redirect.is_some_and(|r| r.to == s))
            },
        )?;
        let to = redirect.map(|r| i64::from(r.to.0));
        let when = redirect.map(|r| r.when.as_str());
        let at = millis(now)?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &sql.override_write,
                &[&i64::from(stamp.0), &to, &when, &decision.actor, &decision.reason, &at],
            )
            .await?;
        self.inner.signal.notify(head);
        written(head, &rows)?;
        Ok(RouteOverride::new(stamp, redirect, decision.clone(), now, head))
    }

    /// Whether an override in force redirects some stamp to `stamp`.
    pub(super) async fn is_redirect_target(&self, c: &Object, stamp: StampId) -> Result<bool, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.directives.targeted).await?;
        Ok(c.query_opt(&stmt, &[&i64::from(stamp.0)]).await?.is_some())
    }

    pub(super) async fn read_overrides(&self, c: &Object) -> Result<Vec<RouteOverride>, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.directives.overrides_in_force).await?;
        c.query(&stmt, &[]).await?.iter().map(codec::route_override).collect()
    }

    pub(super) async fn read_override_history(&self, c: &Object, stamp: StampId) -> Result<Vec<RouteOverride>, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.directives.override_history).await?;
        c.query(&stmt, &[&i64::from(stamp.0)])
            .await?
            .iter()
            .map(codec::route_override)
            .collect()
    }

    pub(super) async fn record_repair_once(
        &self,
        c: &mut Object,
        tenant: &TenantId,
        stamp: StampId,
        decision: &Decision,
    ) -> Result<HistoryEntry, Fault> {
        let now = self.now();
        let sql = &self.inner.sql;
        let get = c.prepare_cached(&sql.assignment_get).await?;
        let stamp_get = c.prepare_cached(&sql.directives.stamp_state).await?;
        let t = tenant.as_str();
        let ids = vec![i64::from(stamp.0)];
        let ((), assignment, stamps) = try_join3(
            c.batch_execute("BEGIN"),
            c.query_opt(&get, &[&t]),
            c.query(&stamp_get, &[&ids]),
        )
        .await?;
        if stamps.is_empty() {
            return Err(Error::NotFound(Subject::Stamp(stamp)).into());
        }
        let assignment = assignment.as_ref().map(codec::assignment).transpose()?;
        let (epoch, mode, shadow, until) = assignment_state(assignment.as_ref())?;
        let at = millis(now)?;
        let (head, rows) = self
            .bump_write_commit(
                c,
                &sql.directives.repair_write,
                &[
                    &t,
                    &i64::from(stamp.0),
                    &decision.actor,
                    &decision.reason,
                    &at,
                    &epoch,
                    &mode,
                    &shadow,
                    &until,
                ],
            )
            .await?;
        self.inner.signal.notify(head);
        written(head, &rows)?;
        let (e, m) = assignment.map_or((Epoch(0), AssignmentMode::Serving), |a| (a.epoch, a.mode));
        Ok(HistoryEntry::new(
            head,
            now,
            tenant.clone(),
            HistoryAction::Repaired,
            None,
            Some(stamp),
            e,
            m,
            Some(decision.actor.clone()),
        )
        .because(Some(decision.reason.clone())))
    }
}

/// Checks that the write wrote its change row at the new head.
fn written(head: Version, rows: &[tokio_postgres::Row]) -> Result<(), Fault> {
    let row = rows.first().ok_or_else(|| corrupt("changes (write matched no row)"))?;
    if codec::version_of(row.try_get("version")?)? != head {
        return Err(corrupt("changes.version"));
    }
    Ok(())
}
