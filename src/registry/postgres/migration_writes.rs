//! The transaction bodies of the migration-record writes (`create_migration`,
//! `save_migration`): the record, the assignment's mode and reservations, and the feed, in
//! one transaction, with the locking and commit steps of `writes`.

use deadpool_postgres::Object;
use futures_util::future::try_join3;
use tokio_postgres::error::SqlState;

use super::codec::{self, data_json, millis};
use super::connection::mark_commit_sent;
use super::fault::{corrupt, Fault};
use super::PgRegistry;
use crate::error::{Error, InvalidInput, Subject};
use crate::model::{AssignmentMode, MigrationId, MigrationRecord, MigrationState, TenantId};

impl PgRegistry {
    pub(super) async fn create_migration_once(
        &self,
        c: &mut Object,
        record: &MigrationRecord,
    ) -> Result<MigrationRecord, Fault> {
        let now = millis(self.now())?;
        let sql = &self.inner.sql;
        let ids = vec![i64::from(record.source.0), i64::from(record.destination.0)];
        // One transaction: the tenant's assignment and both stamps locked, as a write that
        // would make the destination the tenant's shadow locks them.
        let get = c.prepare_cached(&sql.assignment_lock).await?;
        let lock = c.prepare_cached(&sql.stamps_lock).await?;
        let ((), assignment, stamps) = try_join3(
            c.batch_execute("BEGIN"),
            c.query_opt(&get, &[&record.tenant.as_str()]),
            c.query(&lock, &[&ids]),
        )
        .await?;
        let loads = stamps.iter().map(codec::stamp_load).collect::<Result<Vec<_>, _>>()?;
        for s in [record.source, record.destination] {
            if !loads.iter().any(|l| l.id() == s) {
                return Err(Error::NotFound(Subject::Stamp(s)).into());
            }
        }
        if let Some(row) = assignment {
            let current = codec::assignment(&row)?;
            let mut shadowed = current.clone();
            shadowed.mode = AssignmentMode::DualWrite {
                shadow: record.destination,
            };
            if shadowed.stamp != record.destination {
                self.check_constraints(c, Some(&current), &shadowed, &loads, None)
                    .await?;
            }
        }
        let insert = c.prepare_cached(&sql.migration_insert).await?;
        let data = data_json(&record.data);
        mark_commit_sent();
        let res = c
            .query_one(
                &insert,
                &[
                    &record.tenant.as_str(),
                    &ids[0],
                    &ids[1],
                    &record.state.as_str(),
                    &data,
                    &now,
                ],
            )
            .await;
        match res {
            Ok(row) => {
                let rec = codec::migration(&row)?;
                c.batch_execute("COMMIT").await?;
                Ok(rec)
            }
            Err(e) => {
                let fault = Fault::from(e);
                if fault.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    c.batch_execute("ROLLBACK").await?;
                    return Err(self.active_migration(c, &record.tenant).await);
                }
                Err(fault)
            }
        }
    }

    /// The `AlreadyExists` error naming the tenant's migration in progress.
    async fn active_migration(&self, c: &mut Object, tenant: &TenantId) -> Fault {
        let lookup = async {
            let stmt = c.prepare_cached(&self.inner.sql.migration_active).await?;
            let row = c.query_opt(&stmt, &[&tenant.as_str()]).await?;
            let id = match row {
                Some(r) => u64::try_from(r.try_get::<_, i64>(0)?).map_err(|_| corrupt("tenant_migrations.id"))?,
                None => 0,
            };
            Ok::<_, Fault>(id)
        };
        match lookup.await {
            Ok(id) => Fault::Crate(Error::AlreadyExists(Subject::Migration(MigrationId(id)))),
            Err(f) => f,
        }
    }

    pub(super) async fn save_migration_once(
        &self,
        c: &mut Object,
        record: &MigrationRecord,
    ) -> Result<MigrationRecord, Fault> {
        let sql = &self.inner.sql;
        // Beyond the stored range no record matches: `NotFound`, or `Conflict` on the
        // revision, as the in-memory registry answers.
        let Ok(id) = i64::try_from(record.id.0) else {
            return Err(Error::NotFound(Subject::Migration(record.id)).into());
        };
        let revision = i64::try_from(record.revision).unwrap_or(-1);
        let now = millis(self.now())?;
        let data = data_json(&record.data);
        // The states the record may be in for this save to be a legal transition.
        let from: Vec<&str> = MigrationState::ALL
            .into_iter()
            .filter(|s| s.can_transition_to(record.state))
            .map(MigrationState::as_str)
            .collect();
        let save = c.prepare_cached(&sql.migration_save).await?;
        mark_commit_sent();
        let res = c
            .query_opt(
                &save,
                &[
                    &id,
                    &record.state.as_str(),
                    &data,
                    &now,
                    &revision,
                    &record.tenant.as_str(),
                    &i64::from(record.source.0),
                    &i64::from(record.destination.0),
                    &from,
                ],
            )
            .await;
        let row = match res {
            Ok(row) => row,
            Err(e) => {
                let fault = Fault::from(e);
                if fault.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(self.active_migration(c, &record.tenant).await);
                }
                return Err(fault);
            }
        };
        if let Some(row) = row {
            return codec::migration(&row);
        }
        // Nothing saved: say why.
        let get = c.prepare_cached(&sql.migration_get).await?;
        let current = match c.query_opt(&get, &[&id]).await? {
            Some(r) => codec::migration(&r)?,
            None => return Err(Error::NotFound(Subject::Migration(record.id)).into()),
        };
        if current.revision != record.revision {
            return Err(Error::revision_conflict(record.revision, current.revision).into());
        }
        if current.tenant != record.tenant
            || current.source != record.source
            || current.destination != record.destination
        {
            return Err(
                InvalidInput::new("record", "tenant, source and destination of a migration cannot change").into(),
            );
        }
        // Revision and identity match: the state transition is what the update refused.
        match current.state.transition(record.state) {
            Err(e) => Err(e.into()),
            Ok(_) => Err(Error::unavailable("the migration record changed while it was saved; re-read it").into()),
        }
    }
}
