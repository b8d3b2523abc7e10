//! The [`Registry`] impl of [`FaultyRegistry`]: every call goes through the fault steps,
//! then to the inner registry.

use async_trait::async_trait;

use super::{Call, FaultyRegistry};
use crate::error::Result;
use crate::model::{
    Assignment, AssignmentChange, ChangeBatch, Epoch, Fleet, HistoryEntry, MigrationId, MigrationRecord, Stamp,
    StampId, StampSpec, StampState, TenantId, TenantSpec, Version,
};
use crate::registry::{ChangeSignal, Registry};

#[async_trait]
impl<R: Registry> Registry for FaultyRegistry<R> {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        let _permit = self.enter(Call::PutStamp).await?;
        self.inner.put_stamp(spec).await
    }
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        let _permit = self.enter(Call::Stamp).await?;
        self.inner.stamp(id).await
    }
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        let _permit = self.enter(Call::SetStampState).await?;
        self.inner.set_stamp_state(id, state).await
    }
    async fn fleet(&self) -> Result<Fleet> {
        let _permit = self.enter(Call::Fleet).await?;
        self.inner.fleet().await
    }
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        let _permit = self.enter(Call::Assignment).await?;
        self.inner.assignment(tenant).await
    }
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        let _permit = self.enter(Call::Assignments).await?;
        self.inner.assignments(after, limit).await
    }
    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        let _permit = self.enter(Call::Assign).await?;
        self.inner.assign(tenant, stamp).await
    }
    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        let _permit = self.enter(Call::CompareAndSet).await?;
        self.inner.compare_and_set(tenant, expected, change).await
    }
    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        let _permit = self.enter(Call::Unassign).await?;
        self.inner.unassign(tenant, expected).await
    }
    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        let _permit = self.enter(Call::History).await?;
        self.inner.history(tenant).await
    }
    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        let _permit = self.enter(Call::ChangesSince).await?;
        self.inner.changes_since(after, limit).await
    }
    fn change_signal(&self) -> ChangeSignal {
        self.inner.change_signal()
    }
    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        let _permit = self.enter(Call::CreateMigration).await?;
        self.inner.create_migration(record).await
    }
    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        let _permit = self.enter(Call::Migration).await?;
        self.inner.migration(id).await
    }
    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        let _permit = self.enter(Call::SaveMigration).await?;
        self.inner.save_migration(record).await
    }
    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        let _permit = self.enter(Call::Migrations).await?;
        self.inner.migrations(tenant).await
    }
}
