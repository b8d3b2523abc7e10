//! A registry wrapper for router tests: counts `assignment` calls, can fail every call on
//! demand, and can hold `assignment` calls until released (before or after they read).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stamps::*;

#[derive(Debug, Default)]
pub struct Flags {
    pub assignment_calls: AtomicUsize,
    pub failing: AtomicBool,
    pub last_call_failed: AtomicBool,
    pub reads_done: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct TestRegistry {
    pub inner: InMemoryRegistry,
    pub flags: Arc<Flags>,
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Holds `assignment` calls after they read the inner registry, so a test can change the
    /// registry between the read and the answer.
    pub hold_after_read: Option<Arc<tokio::sync::Semaphore>>,
}

impl TestRegistry {
    pub fn new(inner: InMemoryRegistry) -> Self {
        TestRegistry {
            inner,
            flags: Arc::default(),
            gate: None,
            hold_after_read: None,
        }
    }

    pub fn gated(inner: InMemoryRegistry, gate: Arc<tokio::sync::Semaphore>) -> Self {
        TestRegistry {
            inner,
            flags: Arc::default(),
            gate: Some(gate),
            hold_after_read: None,
        }
    }

    pub fn held_after_read(inner: InMemoryRegistry, hold: Arc<tokio::sync::Semaphore>) -> Self {
        TestRegistry {
            inner,
            flags: Arc::default(),
            gate: None,
            hold_after_read: Some(hold),
        }
    }

    pub fn reads_done(&self) -> usize {
        self.flags.reads_done.load(Ordering::SeqCst)
    }

    pub fn set_failing(&self, on: bool) {
        self.flags.failing.store(on, Ordering::SeqCst);
    }

    pub fn assignment_calls(&self) -> usize {
        self.flags.assignment_calls.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<()> {
        let failing = self.flags.failing.load(Ordering::SeqCst);
        self.flags.last_call_failed.store(failing, Ordering::SeqCst);
        if failing {
            Err(Error::unavailable("test registry is down"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Registry for TestRegistry {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        self.check()?;
        self.inner.put_stamp(spec).await
    }
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        self.check()?;
        self.inner.stamp(id).await
    }
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        self.check()?;
        self.inner.set_stamp_state(id, state).await
    }
    async fn fleet(&self) -> Result<Fleet> {
        self.check()?;
        self.inner.fleet().await
    }
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        self.flags.assignment_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await;
        }
        self.check()?;
        let read = self.inner.assignment(tenant).await;
        self.flags.reads_done.fetch_add(1, Ordering::SeqCst);
        if let Some(hold) = &self.hold_after_read {
            let _permit = hold.acquire().await;
        }
        read
    }
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        self.check()?;
        self.inner.assignments(after, limit).await
    }
    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        self.inner.assign(tenant, stamp).await
    }
    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        self.inner.compare_and_set(tenant, expected, change).await
    }
    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        self.inner.unassign(tenant, expected).await
    }
    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        self.inner.history(tenant).await
    }
    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        self.check()?;
        self.inner.changes_since(after, limit).await
    }
    fn change_signal(&self) -> ChangeSignal {
        self.inner.change_signal()
    }
    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        self.inner.create_migration(record).await
    }
    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        self.inner.migration(id).await
    }
    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        self.inner.save_migration(record).await
    }
    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        self.inner.migrations(tenant).await
    }
}

/// An in-memory registry on `clock` with `n` active stamps (ids 1..=n) that have endpoints.
pub async fn registry_with_stamps(clock: &FakeClock, n: u32) -> InMemoryRegistry {
    let registry = InMemoryRegistry::builder().clock(clock.clone()).build();
    for id in 1..=n {
        let cap = Capacity::new([(Resource::Tenants, 100_000.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap)
            .unwrap()
            .with_endpoint(format!("https://s{id}.internal"));
        registry.put_active_stamp(spec).await.unwrap();
    }
    registry
}

pub fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
