//! Registries for router tests: an in-memory registry with active stamps
//! ([`registry_with_stamps`]) and, with feature `test-util`, a `FaultyRegistry` over it whose
//! outage (`set_unavailable`) fails the calls a router makes (`fails_in_outage`), and that can
//! hold `assignment` calls until released, before or after they read.

#![allow(dead_code, unused_imports)]

use stamps::*;

#[cfg(feature = "test-util")]
pub use self::faulty::*;

/// The helpers built on [`stamps::testing::FaultyRegistry`] (feature `test-util`).
#[cfg(feature = "test-util")]
mod faulty {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use stamps::testing::faulty::After;
    use stamps::testing::{Call, FaultyRegistry};
    use stamps::InMemoryRegistry;

    pub type TestRegistry = FaultyRegistry<InMemoryRegistry>;

    /// The calls an outage fails: the reads a router makes and the stamp writes. Assignment
    /// writes, history and migration records always go through.
    pub fn fails_in_outage(call: Call) -> bool {
        matches!(
            call,
            Call::PutStamp
                | Call::Stamp
                | Call::SetStampState
                | Call::Fleet
                | Call::Assignment
                | Call::Assignments
                | Call::ChangesSince
        )
    }

    /// A registry over `inner` whose outage fails the calls of [`fails_in_outage`].
    pub fn test_registry(inner: InMemoryRegistry) -> TestRegistry {
        let registry = FaultyRegistry::new(inner);
        registry.fail_only(fails_in_outage);
        registry
    }

    /// Like [`test_registry`]; each `assignment` call first waits for a permit of `gate` (and
    /// gives it back at once), so `Semaphore::new(0)` holds every lookup until the test adds
    /// permits.
    pub fn gated(inner: InMemoryRegistry, gate: Arc<tokio::sync::Semaphore>) -> TestRegistry {
        let registry = test_registry(inner);
        registry.before(Call::Assignment, move |_| {
            let gate = gate.clone();
            Box::pin(async move {
                let _permit = gate.acquire().await;
                Ok(())
            })
        });
        registry
    }

    /// Like [`test_registry`]; each `assignment` call, after it read the inner registry, counts
    /// in the returned counter (reads done) and waits for a permit of `hold` (given back at once)
    /// before it answers, so a test can change the registry between the read and the answer.
    pub fn held_after_read(
        inner: InMemoryRegistry,
        hold: Arc<tokio::sync::Semaphore>,
    ) -> (TestRegistry, Arc<AtomicUsize>) {
        let registry = test_registry(inner);
        let reads_done = Arc::new(AtomicUsize::new(0));
        let reads = reads_done.clone();
        registry.after(Call::Assignment, move |_, _| {
            reads.fetch_add(1, Ordering::SeqCst);
            let hold = hold.clone();
            Box::pin(async move {
                let _permit = hold.acquire().await;
                After::Keep
            })
        });
        (registry, reads_done)
    }
}

/// An in-memory registry on `clock` with `n` active stamps (ids 1..=n) that have endpoints.
pub async fn registry_with_stamps(clock: &FakeClock, n: u32) -> InMemoryRegistry {
    let registry = InMemoryRegistry::builder().clock(clock.clone()).build();
    for id in 1..=n {
        let cap = Capacity::new([(Resource::Tenants, 100_000.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap)
            .unwrap()
            .endpoint(format!("https://s{id}.internal"));
        registry.put_active_stamp(spec).await.unwrap();
    }
    registry
}

pub fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
