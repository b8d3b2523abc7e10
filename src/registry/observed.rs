//! [`Observed`]: a registry decorator that records every call's latency and outcome
//! (feature `metrics`) and wraps it in a `tracing` span (feature `tracing`).

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;

use super::{ChangeSignal, ImportReport, ImportRow, Registry};
use crate::error::Result;
use crate::model::{
    Assignment, AssignmentChange, ChangeBatch, Decision, Epoch, Fleet, HistoryEntry, MigrationId, MigrationRecord,
    Override, Pin, Redirect, RolloutId, RolloutRecord, RouteOverride, Stamp, StampId, StampSpec, StampState, TenantId,
    TenantSpec, Version,
};
use crate::telemetry::{self, names, Value};

/// Any [`Registry`], observed: each call is counted and timed by method
/// ([`names::REGISTRY_CALLS`], [`names::REGISTRY_CALL_DURATION`]), each failure counted by
/// method and [`Error::kind`](crate::error::Error::kind) ([`names::REGISTRY_ERRORS`]), and each
/// call runs in a `stamps.registry` span (`method`, `stamp` and `tenant` where the call has
/// them, `outcome`; reads at debug level, writes at info). Nothing else is recorded: no
/// request bodies, no decision reasons.
///
/// Without the `metrics` and `tracing` features it only forwards. It works the same on every
/// backend (in memory, PostgreSQL, your own), and hands out the inner registry's
/// [`ChangeSignal`], so routers and migrators built on it behave exactly as on the inner one.
///
/// ```
/// use std::sync::Arc;
/// use stamps::registry::Observed;
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Arc::new(Observed::new(InMemoryRegistry::new()));
/// assert!(registry.stamp(StampId(1)).await?.is_none());
/// let router = Router::new(registry.clone());
/// assert_eq!(router.resolve("acme").await, Err(RouteError::UnknownTenant));
/// assert_eq!(registry.inner().fleet().await?.stamps.len(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Observed<R> {
    inner: R,
}

impl<R> Observed<R> {
    /// Wraps `inner`.
    ///
    /// ```
    /// use stamps::registry::Observed;
    /// let r = Observed::new(stamps::InMemoryRegistry::new());
    /// # let _ = r;
    /// ```
    pub fn new(inner: R) -> Self {
        Observed { inner }
    }

    /// The wrapped registry (calls made on it directly are not observed).
    ///
    /// ```
    /// use stamps::registry::Observed;
    /// let r = Observed::new(stamps::InMemoryRegistry::new());
    /// assert!(format!("{:?}", r.inner()).contains("InMemoryRegistry"));
    /// ```
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Unwraps the registry.
    ///
    /// ```
    /// use stamps::registry::Observed;
    /// let r = Observed::new(stamps::InMemoryRegistry::new()).into_inner();
    /// # let _ = r;
    /// ```
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// What a call is, for its span and metrics.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
struct Call<'a> {
    method: &'static str,
    write: bool,
    stamp: Option<StampId>,
    tenant: Option<&'a TenantId>,
}

fn read(method: &'static str) -> Call<'static> {
    Call {
        method,
        write: false,
        stamp: None,
        tenant: None,
    }
}

fn write(method: &'static str) -> Call<'static> {
    Call {
        write: true,
        ..read(method)
    }
}

impl<'a> Call<'a> {
    fn stamp(self, stamp: StampId) -> Self {
        Call {
            stamp: Some(stamp),
            ..self
        }
    }
    fn tenant<'b>(self, tenant: &'b TenantId) -> Call<'b>
    where
        'a: 'b,
    {
        Call {
            tenant: Some(tenant),
            ..self
        }
    }
}

/// Runs `fut` as `call`: in its span, timed and counted.
async fn observe<T>(call: Call<'_>, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    #[cfg(feature = "tracing")]
    let out = {
        use tracing::Instrument;
        let stamp = call.stamp.map(|s| s.0);
        let tenant = call.tenant.map(TenantId::as_str);
        let span = if call.write {
            tracing::info_span!(
                "stamps.registry",
                method = call.method,
                stamp,
                tenant,
                outcome = tracing::field::Empty
            )
        } else {
            tracing::debug_span!(
                "stamps.registry",
                method = call.method,
                stamp,
                tenant,
                outcome = tracing::field::Empty
            )
        };
        let out = fut.instrument(span.clone()).await;
        span.record("outcome", out.as_ref().map_or_else(|e| e.kind(), |_| "ok"));
        out
    };
    #[cfg(not(feature = "tracing"))]
    let out = fut.await;
    let method = [("method", Value::Str(call.method))];
    telemetry::count(names::REGISTRY_CALLS, &method, 1);
    telemetry::seconds(names::REGISTRY_CALL_DURATION, &method, started.elapsed());
    if let Err(e) = &out {
        telemetry::count(
            names::REGISTRY_ERRORS,
            &[("method", Value::Str(call.method)), ("kind", Value::Str(e.kind()))],
            1,
        );
    }
    out
}

#[async_trait]
impl<R: Registry> Registry for Observed<R> {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        observe(write("put_stamp").stamp(spec.id), self.inner.put_stamp(spec)).await
    }
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        observe(read("stamp").stamp(id), self.inner.stamp(id)).await
    }
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        observe(
            write("set_stamp_state").stamp(id),
            self.inner.set_stamp_state(id, state),
        )
        .await
    }
    async fn fleet(&self) -> Result<Fleet> {
        observe(read("fleet"), self.inner.fleet()).await
    }
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        observe(read("assignment").tenant(tenant), self.inner.assignment(tenant)).await
    }
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        observe(read("assignments"), self.inner.assignments(after, limit)).await
    }
    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        let call = write("assign").stamp(stamp).tenant(&tenant.id);
        observe(call, self.inner.assign(tenant, stamp)).await
    }
    async fn assign_many(&self, rows: &[ImportRow]) -> Result<ImportReport> {
        observe(write("assign_many"), self.inner.assign_many(rows)).await
    }
    async fn assign_overriding(
        &self,
        tenant: &TenantSpec,
        stamp: StampId,
        overrides: &Override,
        actor: &str,
    ) -> Result<Assignment> {
        let call = write("assign_overriding").stamp(stamp).tenant(&tenant.id);
        observe(call, self.inner.assign_overriding(tenant, stamp, overrides, actor)).await
    }
    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        let call = write("compare_and_set").tenant(tenant);
        observe(call, self.inner.compare_and_set(tenant, expected, change)).await
    }
    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        observe(write("unassign").tenant(tenant), self.inner.unassign(tenant, expected)).await
    }
    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        observe(read("history").tenant(tenant), self.inner.history(tenant)).await
    }
    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        observe(read("changes_since"), self.inner.changes_since(after, limit)).await
    }
    fn change_signal(&self) -> ChangeSignal {
        self.inner.change_signal()
    }
    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        let call = write("create_migration").stamp(record.destination);
        let tenant = record.tenant.clone();
        observe(call.tenant(&tenant), self.inner.create_migration(record)).await
    }
    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        observe(read("migration"), self.inner.migration(id)).await
    }
    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        let call = write("save_migration").stamp(record.destination).tenant(&record.tenant);
        observe(call, self.inner.save_migration(record)).await
    }
    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        let call = match tenant {
            Some(t) => read("migrations").tenant(t),
            None => read("migrations"),
        };
        observe(call, self.inner.migrations(tenant)).await
    }
    async fn set_pin(&self, tenant: &TenantId, stamp: Option<StampId>, decision: &Decision) -> Result<Pin> {
        let mut call = write("set_pin").tenant(tenant);
        call.stamp = stamp;
        observe(call, self.inner.set_pin(tenant, stamp, decision)).await
    }
    async fn pin(&self, tenant: &TenantId) -> Result<Option<Pin>> {
        observe(read("pin").tenant(tenant), self.inner.pin(tenant)).await
    }
    async fn pins(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Pin>> {
        observe(read("pins"), self.inner.pins(after, limit)).await
    }
    async fn set_route_override(
        &self,
        stamp: StampId,
        redirect: Option<Redirect>,
        decision: &Decision,
    ) -> Result<RouteOverride> {
        let call = write("set_route_override").stamp(stamp);
        observe(call, self.inner.set_route_override(stamp, redirect, decision)).await
    }
    async fn route_overrides(&self) -> Result<Vec<RouteOverride>> {
        observe(read("route_overrides"), self.inner.route_overrides()).await
    }
    async fn route_override_history(&self, stamp: StampId) -> Result<Vec<RouteOverride>> {
        let call = read("route_override_history").stamp(stamp);
        observe(call, self.inner.route_override_history(stamp)).await
    }
    async fn record_repair(&self, tenant: &TenantId, stamp: StampId, decision: &Decision) -> Result<HistoryEntry> {
        let call = write("record_repair").stamp(stamp).tenant(tenant);
        observe(call, self.inner.record_repair(tenant, stamp, decision)).await
    }
    async fn create_rollout(&self, record: RolloutRecord) -> Result<RolloutRecord> {
        observe(write("create_rollout"), self.inner.create_rollout(record)).await
    }
    async fn rollout(&self, id: RolloutId) -> Result<Option<RolloutRecord>> {
        observe(read("rollout"), self.inner.rollout(id)).await
    }
    async fn save_rollout(&self, record: &RolloutRecord) -> Result<RolloutRecord> {
        observe(write("save_rollout"), self.inner.save_rollout(record)).await
    }
    async fn rollouts(&self) -> Result<Vec<RolloutRecord>> {
        observe(read("rollouts"), self.inner.rollouts()).await
    }
}
