//! No lost writes: concurrent writer tasks write to a tenant through the
//! registry's current route and the reference data plane while it migrates; at the end every
//! acknowledged write is on the stamp that serves the tenant. Repeated with a crash injected
//! at every registry write and driver call, a driver failure injected at every driver call,
//! validation mismatches, rollback before cutover and rollback after cutover during the soak.
#![cfg(feature = "test-util")]

mod common;

use common::{scenarios, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_migration_with_concurrent_writers_loses_nothing() {
    scenarios::full_migration_with_concurrent_writers_loses_nothing(&Backend::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_registry_write_and_driver_call_resumes_without_loss() {
    scenarios::a_crash_at_every_registry_write_and_driver_call_resumes_without_loss(&Backend::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_failure_at_every_call_is_retried_or_rolled_back_without_loss() {
    scenarios::a_driver_failure_at_every_call_is_retried_or_rolled_back_without_loss(&Backend::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_mismatch_refuses_cutover_and_a_rollback_loses_nothing() {
    scenarios::validation_mismatch_refuses_cutover_and_a_rollback_loses_nothing(&Backend::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_before_cutover_from_every_state_loses_nothing() {
    scenarios::rollback_before_cutover_from_every_state_loses_nothing(&Backend::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_cutover_during_soak_loses_nothing() {
    scenarios::rollback_after_cutover_during_soak_loses_nothing(&Backend::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_at_every_registry_write_is_stepped_through() {
    scenarios::a_lost_acknowledgement_at_every_registry_write_is_stepped_through(&Backend::memory()).await;
}
