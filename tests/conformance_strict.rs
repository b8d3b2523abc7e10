//! The conformance suite fails a broken registry quickly, with a message naming the case and
//! the contract it broke, rather than passing it or reading it forever: a registry whose
//! `put_stamp` re-spec appends no change, and one whose `assignments(after)` page includes
//! `after` (an inclusive cursor).
#![cfg(feature = "test-util")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use stamps::model::admission;
use stamps::registry::ChangeSignal;
use stamps::testing::conformance::{self, contract, run_all, CASES};
use stamps::*;

/// How the registry is broken.
#[derive(Debug, Clone, Copy)]
enum Bug {
    /// `put_stamp` on an existing stamp stores the new spec (checked as the contract says)
    /// but appends no change: routers following the feed keep the old endpoint.
    RespecWithoutChange,
    /// `assignments(Some(after), limit)` starts its page with `after` itself.
    InclusiveCursor,
}

/// An `InMemoryRegistry` with one bug; every other call is forwarded unchanged.
#[derive(Debug)]
struct Broken {
    inner: InMemoryRegistry,
    bug: Bug,
    /// Specs written by a re-spec that appended no change (`RespecWithoutChange`).
    respecs: Mutex<HashMap<StampId, StampSpec>>,
}

impl Broken {
    fn shared(bug: Bug) -> Arc<DynRegistry> {
        Arc::new(Broken {
            inner: InMemoryRegistry::new(),
            bug,
            respecs: Mutex::new(HashMap::new()),
        })
    }

    fn patched(&self, mut stamp: Stamp) -> Stamp {
        if let Some(spec) = self.respecs.lock().get(&stamp.id()) {
            stamp.spec = spec.clone();
        }
        stamp
    }
}

#[async_trait]
impl Registry for Broken {
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        if let Bug::RespecWithoutChange = self.bug {
            let fleet = self.inner.fleet().await?;
            if let Some(load) = fleet.get(spec.id) {
                spec.validate()?;
                admission::check_respec(load, &spec)?;
                self.respecs.lock().insert(spec.id, spec);
                return Ok(self.patched(load.stamp.clone()));
            }
        }
        self.inner.put_stamp(spec).await
    }
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        Ok(self.inner.stamp(id).await?.map(|s| self.patched(s)))
    }
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        Ok(self.patched(self.inner.set_stamp_state(id, state).await?))
    }
    async fn fleet(&self) -> Result<Fleet> {
        let mut fleet = self.inner.fleet().await?;
        for load in &mut fleet.stamps {
            load.stamp = self.patched(load.stamp.clone());
        }
        Ok(fleet)
    }
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        self.inner.assignment(tenant).await
    }
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        let mut page = self.inner.assignments(after, limit).await?;
        if let (Bug::InclusiveCursor, Some(after)) = (self.bug, after) {
            if let Some(a) = self.inner.assignment(after).await? {
                page.insert(0, a);
                page.truncate(limit);
            }
        }
        Ok(page)
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

/// Runs the whole suite against a registry with `bug` on a thread of its own, and returns
/// its failure message; fails the test if the suite passes or runs past `limit` (a suite
/// that reads a registry forever never yields, so only another thread can give up on it).
fn suite_failure(bug: Bug, limit: Duration) -> String {
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(run_all(move || async move { Broken::shared(bug) }))
        }));
        let _ = tx.send(outcome);
    });
    let payload = match rx.recv_timeout(limit) {
        Ok(Ok(())) => panic!("the suite passed a registry with {bug:?}"),
        Ok(Err(payload)) => payload,
        Err(_) => panic!("the suite against {bug:?} was still running after {limit:?}"),
    };
    println!("{bug:?}: failed in {:?}", started.elapsed());
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_re_spec_that_appends_no_change_fails_the_suite_naming_the_contract() {
    let message = suite_failure(Bug::RespecWithoutChange, Duration::from_secs(20));
    println!("{message}");
    assert!(
        message.starts_with("conformance case `stamp_writes_append_exactly_one_change` failed"),
        "{message}"
    );
    assert!(
        message.contains("every stamp write (creation, re-spec, state change) appends exactly one change"),
        "{message}"
    );
    assert!(
        message.contains("re-specifying stamp 1 with put_stamp appended 0 changes"),
        "{message}"
    );
}

#[test]
fn an_inclusive_assignments_cursor_fails_the_suite_instead_of_looping() {
    let message = suite_failure(Bug::InclusiveCursor, Duration::from_secs(20));
    println!("{message}");
    assert!(
        message.starts_with("conformance case `assignments_page_in_tenant_order` failed"),
        "{message}"
    );
    assert!(message.contains("strictly after the cursor"), "{message}");
    assert!(message.contains(r#"the page after "t06" includes "t06""#), "{message}");
}

#[tokio::test]
async fn a_case_run_directly_names_itself_and_its_contract() {
    let registry = Broken::shared(Bug::RespecWithoutChange);
    let run = tokio::spawn(async move { conformance::stamp_writes_append_exactly_one_change(&*registry).await });
    let payload = run.await.expect_err("the case fails").into_panic();
    let message = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.starts_with(
            "conformance case `stamp_writes_append_exactly_one_change` failed; the contract: every stamp write"
        ),
        "{message}"
    );
}

#[test]
fn every_case_states_its_contract() {
    for (name, _) in CASES {
        assert!(contract(name).is_some(), "case {name} has no contract in words");
    }
}
