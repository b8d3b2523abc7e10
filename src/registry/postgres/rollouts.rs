//! Rollout records in PostgreSQL: their statements, row decoding and the transaction body of
//! each write. Like migration records they are not part of the change feed.

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::Row;

use super::codec::millis;
use super::connection::mark_commit_sent;
use super::fault::{corrupt, named, Fault};
use super::schema::quoted;
use super::PgRegistry;
use crate::error::{Error, Subject};
use crate::model::{RolloutId, RolloutRecord, RolloutState, StampId};
use crate::time::Timestamp;

const COLS: &str = "id, target, waves, wave, state, wave_started, note, revision, created_at, updated_at";

/// The statements of this module.
#[derive(Debug)]
pub(crate) struct RolloutSql {
    insert: String,
    get: String,
    lock: String,
    update: String,
    list: String,
    active: String,
}

impl RolloutSql {
    pub(crate) fn new(schema: &str) -> RolloutSql {
        let s = quoted(schema);
        RolloutSql {
            insert: format!(
                "INSERT INTO {s}.rollouts (target, waves, wave, state, wave_started, note, revision, created_at, updated_at)
                 VALUES ($1, $2, 0, 'deploying', NULL, $3, 1, $4, $4) RETURNING {COLS}"
            ),
            get: format!("SELECT {COLS} FROM {s}.rollouts WHERE id = $1"),
            lock: format!("SELECT {COLS} FROM {s}.rollouts WHERE id = $1 FOR UPDATE"),
            update: format!(
                "UPDATE {s}.rollouts SET wave = $2, state = $3, wave_started = $4, note = $5,
                     revision = revision + 1, updated_at = $6
                 WHERE id = $1 AND revision = $7 RETURNING {COLS}"
            ),
            list: format!("SELECT {COLS} FROM {s}.rollouts ORDER BY id"),
            active: format!("SELECT id FROM {s}.rollouts WHERE state IN ('deploying', 'baking') LIMIT 1"),
        }
    }
}

/// A rollout row; a corrupt value names `rollout <id>`.
fn record(row: &Row) -> Result<RolloutRecord, Fault> {
    let id: i64 = row.try_get("id").map_err(|_| corrupt("id"))?;
    named(fields(row), || format!("rollout {id}"))
}

fn fields(row: &Row) -> Result<RolloutRecord, Fault> {
    let int = |name: &str| -> Result<i64, Fault> { row.try_get(name).map_err(|_| corrupt(name)) };
    let u64_of = |v: i64, name: &str| u64::try_from(v).map_err(|_| corrupt(name));
    let target: String = row.try_get("target").map_err(|_| corrupt("target"))?;
    let Json(waves): Json<Vec<Vec<u32>>> = row.try_get("waves").map_err(|_| corrupt("waves"))?;
    let waves = waves
        .into_iter()
        .map(|w| w.into_iter().map(StampId).collect())
        .collect();
    let mut rec = RolloutRecord::planned(target, waves).map_err(|_| corrupt("waves"))?;
    rec.id = RolloutId(u64_of(int("id")?, "id")?);
    let wave: i32 = row.try_get("wave").map_err(|_| corrupt("wave"))?;
    rec.wave = usize::try_from(wave).map_err(|_| corrupt("wave"))?;
    let state: &str = row.try_get("state").map_err(|_| corrupt("state"))?;
    rec.state = RolloutState::parse(state).ok_or_else(|| corrupt("state"))?;
    let started: Option<i64> = row.try_get("wave_started").map_err(|_| corrupt("wave_started"))?;
    rec.wave_started = started
        .map(|v| u64_of(v, "wave_started").map(Timestamp::from_millis))
        .transpose()?;
    rec.note = row.try_get("note").map_err(|_| corrupt("note"))?;
    rec.revision = u64_of(int("revision")?, "revision")?;
    rec.created_at = Timestamp::from_millis(u64_of(int("created_at")?, "created_at")?);
    rec.updated_at = Timestamp::from_millis(u64_of(int("updated_at")?, "updated_at")?);
    rec.validate().map_err(|_| corrupt("wave"))?;
    Ok(rec)
}

fn waves_json(r: &RolloutRecord) -> Json<Vec<Vec<u32>>> {
    Json(r.waves.iter().map(|w| w.iter().map(|s| s.0).collect()).collect())
}

impl PgRegistry {
    pub(super) async fn create_rollout_once(&self, c: &mut Object, r: &RolloutRecord) -> Result<RolloutRecord, Fault> {
        let sql = &self.inner.sql.rollouts;
        let insert = c.prepare_cached(&sql.insert).await?;
        let now = millis(self.now())?;
        mark_commit_sent();
        match c.query_one(&insert, &[&r.target, &waves_json(r), &r.note, &now]).await {
            Ok(row) => record(&row),
            Err(e) => {
                let fault = Fault::from(e);
                if fault.code() != Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(fault);
                }
                let active = c.prepare_cached(&sql.active).await?;
                let id = match c.query_opt(&active, &[]).await? {
                    Some(row) => u64::try_from(row.try_get::<_, i64>(0)?).map_err(|_| corrupt("rollouts.id"))?,
                    None => 0,
                };
                Err(Error::AlreadyExists(Subject::Rollout(RolloutId(id))).into())
            }
        }
    }

    pub(super) async fn read_rollout(&self, c: &Object, id: RolloutId) -> Result<Option<RolloutRecord>, Fault> {
        let Ok(key) = i64::try_from(id.0) else {
            return Ok(None);
        };
        let stmt = c.prepare_cached(&self.inner.sql.rollouts.get).await?;
        c.query_opt(&stmt, &[&key]).await?.as_ref().map(record).transpose()
    }

    pub(super) async fn read_rollouts(&self, c: &Object) -> Result<Vec<RolloutRecord>, Fault> {
        let stmt = c.prepare_cached(&self.inner.sql.rollouts.list).await?;
        c.query(&stmt, &[]).await?.iter().map(record).collect()
    }

    pub(super) async fn save_rollout_once(&self, c: &mut Object, r: &RolloutRecord) -> Result<RolloutRecord, Fault> {
        let sql = &self.inner.sql.rollouts;
        let Ok(id) = i64::try_from(r.id.0) else {
            return Err(Error::NotFound(Subject::Rollout(r.id)).into());
        };
        let lock = c.prepare_cached(&sql.lock).await?;
        let ((), current) =
            futures_util::future::try_join(c.batch_execute("BEGIN"), c.query_opt(&lock, &[&id])).await?;
        let current = current.ok_or(Error::NotFound(Subject::Rollout(r.id)))?;
        let current = record(&current)?;
        crate::registry::check_rollout_save(&current, r)?;
        let update = c.prepare_cached(&sql.update).await?;
        let wave = i32::try_from(r.wave).map_err(|_| corrupt("wave"))?;
        let started = r.wave_started.map(millis).transpose()?;
        let now = millis(self.now())?;
        let revision = i64::try_from(r.revision).unwrap_or(-1);
        let row = c
            .query_one(
                &update,
                &[&id, &wave, &r.state.as_str(), &started, &r.note, &now, &revision],
            )
            .await?;
        let saved = record(&row)?;
        mark_commit_sent();
        c.batch_execute("COMMIT").await?;
        Ok(saved)
    }
}
