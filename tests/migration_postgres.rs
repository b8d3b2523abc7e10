//! The tenant-migration scenarios on `PgRegistry` (issue 7: "against `InMemoryRegistry`;
//! against `PgRegistry` too once it exists"): no lost writes with concurrent writers, a crash
//! and resume at every registry write and driver call, a driver failure at every call,
//! validation mismatches refusing cutover, rollback before cutover and during the soak, two
//! workers racing for each step, and the fence that stops stale routers. The scenarios are
//! the ones the in-memory binaries run (`tests/common/scenarios.rs`); every world lives in a
//! fresh schema, dropped afterwards.
//!
//! The server: `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`, else a
//! throwaway server started from the installed binaries (see `tests/support/pg.rs`); an
//! unreachable server fails the run, never skips it.
//!
//! Writers are budgeted ([`Pace::Budget`]): each route lookup is a query here, so they write
//! about twice what the driver waits for between steps and retry a refused write when the
//! registry changes instead of at once.

mod common;
#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;

use common::{scenarios, Backend, Keep, Pace};
use pg::{database_url, unique_schema, SchemaGuard};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::DynRegistry;

/// Writer tasks per scenario (as in memory).
const WRITERS: usize = 3;

/// Each world on a fresh, migrated schema of the test server, on the world's fake clock.
fn postgres() -> Backend {
    Backend::new("postgres: ", WRITERS, Pace::Budget, |hint, clock| {
        let schema = unique_schema(&format!("mig_{}", hint.replace('-', "_")));
        Box::pin(async move {
            let guard = SchemaGuard(schema.clone());
            let config = PgConfig::from_url(database_url())
                .unwrap()
                .schema(&schema)
                .unwrap()
                .pool_size(6)
                .clock(clock);
            let registry = PgRegistry::connect(config).await.unwrap();
            assert_eq!(registry.migrate().await.unwrap(), vec![1]);
            (Arc::new(registry) as Arc<DynRegistry>, Some(Box::new(guard) as Keep))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_migration_with_concurrent_writers_loses_nothing() {
    scenarios::full_migration_with_concurrent_writers_loses_nothing(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_registry_write_and_driver_call_resumes_without_loss() {
    scenarios::a_crash_at_every_registry_write_and_driver_call_resumes_without_loss(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_failure_at_every_call_is_retried_or_rolled_back_without_loss() {
    scenarios::a_driver_failure_at_every_call_is_retried_or_rolled_back_without_loss(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_mismatch_refuses_cutover_and_a_rollback_loses_nothing() {
    scenarios::validation_mismatch_refuses_cutover_and_a_rollback_loses_nothing(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_before_cutover_from_every_state_loses_nothing() {
    scenarios::rollback_before_cutover_from_every_state_loses_nothing(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_cutover_during_soak_loses_nothing() {
    scenarios::rollback_after_cutover_during_soak_loses_nothing(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_router_cannot_write_to_the_old_stamp_after_cutover() {
    scenarios::a_stale_router_cannot_write_to_the_old_stamp_after_cutover(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_one_wins_the_other_gets_conflict_before_any_effect() {
    scenarios::two_workers_racing_one_wins_the_other_gets_conflict_before_any_effect(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_two_threads_racing_for_every_step_never_both_win() {
    scenarios::workers_on_two_threads_racing_for_every_step_never_both_win(&postgres()).await;
}
