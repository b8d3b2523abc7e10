//! The kit's fault injection: a driver wrapper that crashes or fails at its N-th call, registry
//! hooks that crash at the N-th write, and the writer that measures refusals.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Host;
use crate::migration::{
    DriverError, DynMigrationDriver, MigrationContext, MigrationDriver, SnapshotInfo, ValidationReport,
};
use crate::model::{Epoch, MigrationState, StampId, TenantId};
use crate::registry::Registry;
use crate::testing::faulty::{After, FaultyRegistry};
use crate::testing::Call;
use crate::time::{Clock, Timestamp};

/// What happens at the armed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// The call takes effect, then never returns (the worker dies there).
    Crash,
    /// The call fails before taking effect, retryably.
    Retryable,
    /// The call fails before taking effect, for good.
    Permanent,
}

/// Counts driver calls and registry writes together and trips at the armed one.
#[derive(Debug, Default)]
pub(super) struct Switch {
    calls: AtomicU64,
    armed: Mutex<Option<(u64, Fault)>>,
    pub(super) tripped: Notify,
    fired: AtomicU64,
}

impl Switch {
    pub(super) fn arm(&self, at: u64, fault: Fault) {
        self.calls.store(0, Ordering::SeqCst);
        *self.armed.lock() = Some((at, fault));
    }

    pub(super) fn disarm(&self) {
        *self.armed.lock() = None;
    }

    pub(super) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst) > 0
    }

    /// Counts a call; the fault if this is the armed one.
    fn count(&self) -> Option<Fault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut armed = self.armed.lock();
        match *armed {
            Some((at, fault)) if at == n => {
                *armed = None;
                self.fired.fetch_add(1, Ordering::SeqCst);
                Some(fault)
            }
            _ => None,
        }
    }

    async fn die(&self) -> ! {
        self.tripped.notify_one();
        loop {
            std::future::pending::<()>().await;
        }
    }
}

/// The host's driver behind a [`Switch`].
#[derive(Debug)]
pub(super) struct FaultyDriver {
    pub(super) inner: Arc<DynMigrationDriver>,
    pub(super) switch: Arc<Switch>,
}

impl FaultyDriver {
    async fn call<T>(
        &self,
        op: &str,
        f: impl std::future::Future<Output = Result<T, DriverError>>,
    ) -> Result<T, DriverError> {
        match self.switch.count() {
            None => f.await,
            Some(Fault::Retryable) => Err(DriverError::retryable(format!(
                "kit: injected retryable failure of {op}"
            ))),
            Some(Fault::Permanent) => Err(DriverError::permanent(format!(
                "kit: injected permanent failure of {op}"
            ))),
            Some(Fault::Crash) => {
                let _ = f.await;
                self.switch.die().await
            }
        }
    }
}

#[async_trait]
impl MigrationDriver for FaultyDriver {
    async fn snapshot(&self, ctx: &MigrationContext) -> Result<SnapshotInfo, DriverError> {
        self.call("snapshot", self.inner.snapshot(ctx)).await
    }
    async fn import(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        self.call("import", self.inner.import(ctx, snapshot)).await
    }
    async fn catch_up(&self, ctx: &MigrationContext, snapshot: &SnapshotInfo) -> Result<(), DriverError> {
        self.call("catch_up", self.inner.catch_up(ctx, snapshot)).await
    }
    async fn fence(
        &self,
        ctx: &MigrationContext,
        stamp: StampId,
        epoch: Epoch,
        holds: bool,
    ) -> Result<(), DriverError> {
        self.call("fence", self.inner.fence(ctx, stamp, epoch, holds)).await
    }
    async fn validate(&self, ctx: &MigrationContext) -> Result<ValidationReport, DriverError> {
        self.call("validate", self.inner.validate(ctx)).await
    }
    async fn cleanup_source(&self, ctx: &MigrationContext) -> Result<(), DriverError> {
        self.call("cleanup_source", self.inner.cleanup_source(ctx)).await
    }
    async fn rollback(&self, ctx: &MigrationContext, from: MigrationState) -> Result<(), DriverError> {
        self.call("rollback", self.inner.rollback(ctx, from)).await
    }
}

/// The host's registry with its writes (assignment compare-and-sets, migration saves) behind
/// the switch: a crash commits the write, then never answers.
pub(super) fn faulty_registry(
    host: &Host,
    switch: &Arc<Switch>,
) -> Arc<FaultyRegistry<Arc<crate::registry::DynRegistry>>> {
    let registry = Arc::new(FaultyRegistry::new(host.registry.clone()));
    for call in [Call::CompareAndSet, Call::SaveMigration] {
        let switch = switch.clone();
        registry.after(call, move |_, _| {
            let switch = switch.clone();
            Box::pin(async move {
                match switch.count() {
                    Some(Fault::Crash) => switch.die().await,
                    _ => After::Keep,
                }
            })
        });
    }
    registry
}

/// Writes to one tenant through its current assignment and keeps score: acknowledged writes,
/// and the longest stretch (on the kit's clock) during which every write was refused.
#[derive(Debug)]
pub(super) struct Writer {
    tenant: TenantId,
    n: u64,
    pub(super) acked: Vec<(String, String)>,
    refused_since: Option<Timestamp>,
    pub(super) longest_refusal: Duration,
}

impl Writer {
    pub(super) fn new(tenant: TenantId, seeded: Vec<(String, String)>) -> Writer {
        Writer {
            tenant,
            n: 0,
            acked: seeded,
            refused_since: None,
            longest_refusal: Duration::ZERO,
        }
    }

    pub(super) fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// One write through the registry's current assignment.
    pub(super) async fn write(&mut self, host: &Host) {
        self.n += 1;
        let now = host.clock.now();
        let outcome = match host.registry.assignment(&self.tenant).await {
            Ok(Some(a)) => {
                let (k, v) = (format!("w-{}", self.n), format!("v{}", self.n));
                host.plane.write(&a, &k, &v).await.map(|()| (k, v))
            }
            Ok(None) => panic!("kit: {} lost its assignment", self.tenant),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(kv) => {
                self.acked.push(kv);
                if let Some(since) = self.refused_since.take() {
                    self.longest_refusal = self.longest_refusal.max(now.saturating_since(since));
                }
            }
            Err(_) => {
                self.refused_since.get_or_insert(now);
            }
        }
    }

    /// Moves the clock to `until` in steps of `tick`, writing at each.
    pub(super) async fn wait_until(&mut self, host: &Host, until: Timestamp, tick: Duration) {
        while host.clock.now() < until {
            let next = (host.clock.now() + tick).min(until);
            host.clock.set(next);
            self.write(host).await;
        }
    }

    /// Acknowledged writes missing from the stamp that owns the tenant.
    pub(super) async fn lost(&self, host: &Host) -> u64 {
        let owner = match host.registry.assignment(&self.tenant).await {
            Ok(Some(a)) => a.stamp,
            other => panic!("kit: {} must stay assigned, got {other:?}", self.tenant),
        };
        let rows: BTreeMap<String, String> = host.plane.read_all(owner, &self.tenant).await;
        self.acked.iter().filter(|(k, v)| rows.get(k) != Some(v)).count() as u64
    }
}

/// A unique tenant name per run (kit runs share a registry).
pub(super) fn tenant_name(scenario: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("kit-{scenario}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
