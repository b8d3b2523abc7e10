//! The registry conformance suite against `InMemoryRegistry`, directly and through
//! `Arc<dyn Registry>` and `Box<dyn Registry>`.
#![cfg(feature = "test-util")]

use std::sync::Arc;

use stamps::testing::conformance::{run_all, CASES};
use stamps::{DynRegistry, InMemoryRegistry, Registry};

#[tokio::test]
async fn in_memory_registry_passes_every_case() {
    assert!(CASES.len() >= 25, "the suite has {} cases", CASES.len());
    run_all(|| async { Arc::new(InMemoryRegistry::new()) as Arc<DynRegistry> }).await;
}

#[tokio::test]
async fn arc_dyn_registry_forwards_every_case() {
    // An Arc<dyn Registry> is itself a Registry (forwarding impl): run the suite through it.
    run_all(|| async {
        let inner: Arc<DynRegistry> = Arc::new(InMemoryRegistry::new());
        Arc::new(inner) as Arc<DynRegistry>
    })
    .await;
}

#[tokio::test]
async fn boxed_registry_forwards_every_case() {
    run_all(|| async {
        let boxed: Box<DynRegistry> = Box::new(InMemoryRegistry::new());
        Arc::new(boxed) as Arc<DynRegistry>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_run_on_a_multi_threaded_runtime() {
    for (name, case) in CASES {
        let r: Arc<dyn Registry> = Arc::new(InMemoryRegistry::new());
        println!("{name}");
        case(&*r).await;
    }
}
