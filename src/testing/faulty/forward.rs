//! The [`Registry`] impl of [`FaultyRegistry`]: every call goes through the fault steps,
//! its before hook, the inner registry and its after hook (see the order in the module
//! docs of [`faulty`](super)).

use async_trait::async_trait;

use super::{FaultyRegistry, Request};
use crate::error::Result;
use crate::model::{
    Assignment, AssignmentChange, ChangeBatch, Decision, Epoch, Fleet, HistoryEntry, MigrationId, MigrationRecord,
    Override, Pin, Redirect, RolloutId, RolloutRecord, RouteOverride, Stamp, StampId, StampSpec, StampState, TenantId,
    TenantSpec, Version,
};
use crate::registry::{ChangeSignal, Registry};

#[async_trait]
impl<R: Registry> Registry for FaultyRegistry<R> {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        let request = Request::PutStamp(&spec);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.put_stamp(spec.clone()).await;
        self.leave(&request, entered, outcome).await
    }
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        let request = Request::Stamp(id);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.stamp(id).await;
        self.leave(&request, entered, outcome).await
    }
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        let request = Request::SetStampState(id, state);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.set_stamp_state(id, state).await;
        self.leave(&request, entered, outcome).await
    }
    async fn fleet(&self) -> Result<Fleet> {
        let request = Request::Fleet;
        let entered = self.enter(&request).await?;
        let outcome = self.inner.fleet().await;
        self.leave(&request, entered, outcome).await
    }
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        let request = Request::Assignment(tenant);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.assignment(tenant).await;
        self.leave(&request, entered, outcome).await
    }
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        let request = Request::Assignments(after, limit);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.assignments(after, limit).await;
        self.leave(&request, entered, outcome).await
    }
    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        let request = Request::Assign(tenant, stamp);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.assign(tenant, stamp).await;
        self.leave(&request, entered, outcome).await
    }
    /// Goes through the fault steps and hooks as an `assign` call ([`Request::Assign`]).
    async fn assign_overriding(
        &self,
        tenant: &TenantSpec,
        stamp: StampId,
        overrides: &Override,
        actor: &str,
    ) -> Result<Assignment> {
        let request = Request::Assign(tenant, stamp);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.assign_overriding(tenant, stamp, overrides, actor).await;
        self.leave(&request, entered, outcome).await
    }
    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        let request = Request::CompareAndSet(tenant, expected, &change);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.compare_and_set(tenant, expected, change.clone()).await;
        self.leave(&request, entered, outcome).await
    }
    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        let request = Request::Unassign(tenant, expected);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.unassign(tenant, expected).await;
        self.leave(&request, entered, outcome).await
    }
    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        let request = Request::History(tenant);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.history(tenant).await;
        self.leave(&request, entered, outcome).await
    }
    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        let request = Request::ChangesSince(after, limit);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.changes_since(after, limit).await;
        self.leave(&request, entered, outcome).await
    }
    fn change_signal(&self) -> ChangeSignal {
        self.inner.change_signal()
    }
    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        let request = Request::CreateMigration(&record);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.create_migration(record.clone()).await;
        self.leave(&request, entered, outcome).await
    }
    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        let request = Request::Migration(id);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.migration(id).await;
        self.leave(&request, entered, outcome).await
    }
    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        let request = Request::SaveMigration(record);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.save_migration(record).await;
        self.leave(&request, entered, outcome).await
    }
    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        let request = Request::Migrations(tenant);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.migrations(tenant).await;
        self.leave(&request, entered, outcome).await
    }
    async fn set_pin(&self, tenant: &TenantId, stamp: Option<StampId>, decision: &Decision) -> Result<Pin> {
        let request = Request::SetPin(tenant, stamp, decision);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.set_pin(tenant, stamp, decision).await;
        self.leave(&request, entered, outcome).await
    }
    async fn pin(&self, tenant: &TenantId) -> Result<Option<Pin>> {
        let request = Request::Pin(tenant);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.pin(tenant).await;
        self.leave(&request, entered, outcome).await
    }
    async fn pins(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Pin>> {
        let request = Request::Pins(after, limit);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.pins(after, limit).await;
        self.leave(&request, entered, outcome).await
    }
    async fn set_route_override(
        &self,
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: &Decision,
    ) -> Result<RouteOverride> {
        let request = Request::SetRouteOverride(stamp, redirect, decision);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.set_route_override(stamp, redirect, decision).await;
        self.leave(&request, entered, outcome).await
    }
    async fn route_overrides(&self) -> Result<Vec<RouteOverride>> {
        let request = Request::RouteOverrides;
        let entered = self.enter(&request).await?;
        let outcome = self.inner.route_overrides().await;
        self.leave(&request, entered, outcome).await
    }
    async fn route_override_history(&self, stamp: StampId) -> Result<Vec<RouteOverride>> {
        let request = Request::RouteOverrideHistory(stamp);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.route_override_history(stamp).await;
        self.leave(&request, entered, outcome).await
    }
    async fn record_repair(&self, tenant: &TenantId, stamp: StampId, decision: &Decision) -> Result<HistoryEntry> {
        let request = Request::RecordRepair(tenant, stamp, decision);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.record_repair(tenant, stamp, decision).await;
        self.leave(&request, entered, outcome).await
    }
    async fn create_rollout(&self, record: RolloutRecord) -> Result<RolloutRecord> {
        let request = Request::CreateRollout(&record);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.create_rollout(record.clone()).await;
        self.leave(&request, entered, outcome).await
    }
    async fn rollout(&self, id: RolloutId) -> Result<Option<RolloutRecord>> {
        let request = Request::Rollout(id);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.rollout(id).await;
        self.leave(&request, entered, outcome).await
    }
    async fn save_rollout(&self, record: &RolloutRecord) -> Result<RolloutRecord> {
        let request = Request::SaveRollout(record);
        let entered = self.enter(&request).await?;
        let outcome = self.inner.save_rollout(record).await;
        self.leave(&request, entered, outcome).await
    }
    async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let request = Request::Rollouts;
        let entered = self.enter(&request).await?;
        let outcome = self.inner.rollouts().await;
        self.leave(&request, entered, outcome).await
    }
}
