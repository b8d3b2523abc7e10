//! `Registry` for `Arc<R>` and `Box<R>`: every method forwards to the inner registry.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ChangeSignal, ImportReport, ImportRow, Registry};
use crate::error::Result;
use crate::model::{
    Assignment, AssignmentChange, ChangeBatch, Decision, Epoch, Fleet, HistoryEntry, MigrationId, MigrationRecord,
    Override, Pin, Redirect, RolloutId, RolloutRecord, RouteOverride, Stamp, StampId, StampSpec, StampState, TenantId,
    TenantSpec, Version,
};

macro_rules! forward_registry {
    ($ty:ty) => {
        #[async_trait]
        impl<R: Registry + ?Sized> Registry for $ty {
            async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
                (**self).put_stamp(spec).await
            }
            async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
                (**self).stamp(id).await
            }
            async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
                (**self).set_stamp_state(id, state).await
            }
            async fn fleet(&self) -> Result<Fleet> {
                (**self).fleet().await
            }
            async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
                (**self).assignment(tenant).await
            }
            async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
                (**self).assignments(after, limit).await
            }
            async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
                (**self).assign(tenant, stamp).await
            }
            async fn assign_overriding(
                &self,
                tenant: &TenantSpec,
                stamp: StampId,
                overrides: &Override,
                actor: &str,
            ) -> Result<Assignment> {
                (**self).assign_overriding(tenant, stamp, overrides, actor).await
            }
            async fn assign_many(&self, rows: &[ImportRow]) -> Result<ImportReport> {
                (**self).assign_many(rows).await
            }
            async fn compare_and_set(
                &self,
                tenant: &TenantId,
                expected: Epoch,
                change: AssignmentChange,
            ) -> Result<Assignment> {
                (**self).compare_and_set(tenant, expected, change).await
            }
            async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
                (**self).unassign(tenant, expected).await
            }
            async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
                (**self).history(tenant).await
            }
            async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
                (**self).changes_since(after, limit).await
            }
            fn change_signal(&self) -> ChangeSignal {
                (**self).change_signal()
            }
            async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
                (**self).create_migration(record).await
            }
            async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
                (**self).migration(id).await
            }
            async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
                (**self).save_migration(record).await
            }
            async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
                (**self).migrations(tenant).await
            }
            async fn set_pin(&self, tenant: &TenantId, stamp: Option<StampId>, decision: &Decision) -> Result<Pin> {
                (**self).set_pin(tenant, stamp, decision).await
            }
            async fn pin(&self, tenant: &TenantId) -> Result<Option<Pin>> {
                (**self).pin(tenant).await
            }
            async fn pins(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Pin>> {
                (**self).pins(after, limit).await
            }
            async fn set_route_override(
                &self,
                stamp: StampId,
                redirect: Option<Redirect>,
                decision: &Decision,
            ) -> Result<RouteOverride> {
                (**self).set_route_override(stamp, redirect, decision).await
            }
            async fn route_overrides(&self) -> Result<Vec<RouteOverride>> {
                (**self).route_overrides().await
            }
            async fn route_override_history(&self, stamp: StampId) -> Result<Vec<RouteOverride>> {
                (**self).route_override_history(stamp).await
            }
            async fn record_repair(
                &self,
                tenant: &TenantId,
                stamp: StampId,
                decision: &Decision,
            ) -> Result<HistoryEntry> {
                (**self).record_repair(tenant, stamp, decision).await
            }
            async fn create_rollout(&self, record: RolloutRecord) -> Result<RolloutRecord> {
                (**self).create_rollout(record).await
            }
            async fn rollout(&self, id: RolloutId) -> Result<Option<RolloutRecord>> {
                (**self).rollout(id).await
            }
            async fn save_rollout(&self, record: &RolloutRecord) -> Result<RolloutRecord> {
                (**self).save_rollout(record).await
            }
            async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
                (**self).rollouts().await
            }
        }
    };
}

forward_registry!(Arc<R>);
forward_registry!(Box<R>);
