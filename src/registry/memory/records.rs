//! Migration and rollout records in the in-memory registry (bodies run under the write lock).

use super::State;
use crate::error::{Error, InvalidInput, Result, Subject};
use crate::model::constraints;
use crate::model::{Assignment, AssignmentMode, MigrationId, MigrationRecord, RolloutId, RolloutRecord};
use crate::time::Timestamp;

impl State {
    pub(super) fn create_migration(&mut self, record: MigrationRecord, now: Timestamp) -> Result<MigrationRecord> {
        for s in [record.source, record.destination] {
            if !self.stamps.contains_key(&s) {
                return Err(Error::NotFound(Subject::Stamp(s)));
            }
        }
        if let Some(a) = self.assignments.get(&record.tenant) {
            // The destination becomes the tenant's shadow in dual-write: the same rules apply.
            let mut shadowed = Assignment::clone(a);
            shadowed.mode = AssignmentMode::DualWrite {
                shadow: record.destination,
            };
            if shadowed.stamp != record.destination {
                constraints::check(
                    Some(a),
                    &shadowed,
                    |s| self.stamps.get(&s),
                    |s| self.holder(s, &record.tenant),
                    None,
                )?;
            }
        }
        if let Some(active) = self
            .migrations
            .values()
            .find(|m| m.tenant == record.tenant && !m.state.is_terminal())
        {
            return Err(Error::AlreadyExists(Subject::Migration(active.id)));
        }
        self.next_migration += 1;
        let mut rec = record;
        rec.id = MigrationId(self.next_migration);
        rec.revision = 1;
        rec.created_at = now;
        rec.updated_at = now;
        self.migrations.insert(rec.id, rec.clone());
        Ok(rec)
    }

    pub(super) fn save_migration(&mut self, record: &MigrationRecord, now: Timestamp) -> Result<MigrationRecord> {
        let current = self
            .migrations
            .get_mut(&record.id)
            .ok_or(Error::NotFound(Subject::Migration(record.id)))?;
        if current.revision != record.revision {
            return Err(Error::revision_conflict(record.revision, current.revision));
        }
        if current.tenant != record.tenant
            || current.source != record.source
            || current.destination != record.destination
        {
            return Err(
                InvalidInput::new("record", "tenant, source and destination of a migration cannot change").into(),
            );
        }
        if current.state != record.state {
            current.state.transition(record.state)?;
        }
        let mut next = record.clone();
        next.revision = current.revision + 1;
        next.created_at = current.created_at;
        next.updated_at = now;
        *current = next.clone();
        Ok(next)
    }

    pub(super) fn create_rollout(&mut self, record: RolloutRecord, now: Timestamp) -> Result<RolloutRecord> {
        if let Some(active) = self.rollouts.values().find(|r| !r.state.is_terminal()) {
            return Err(Error::AlreadyExists(Subject::Rollout(active.id)));
        }
        self.next_rollout += 1;
        let mut rec = record;
        rec.id = RolloutId(self.next_rollout);
        rec.revision = 1;
        rec.created_at = now;
        rec.updated_at = now;
        self.rollouts.insert(rec.id, rec.clone());
        Ok(rec)
    }

    pub(super) fn save_rollout(&mut self, record: &RolloutRecord, now: Timestamp) -> Result<RolloutRecord> {
        let current = self
            .rollouts
            .get_mut(&record.id)
            .ok_or(Error::NotFound(Subject::Rollout(record.id)))?;
        crate::registry::check_rollout_save(current, record)?;
        let mut next = record.clone();
        next.revision = current.revision + 1;
        next.created_at = current.created_at;
        next.updated_at = now;
        *current = next.clone();
        Ok(next)
    }
}
