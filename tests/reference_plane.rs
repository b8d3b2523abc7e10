//! The reference data plane under concurrent driver calls.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{MigrationContext, MigrationDriver};
use stamps::{MigrationId, MigrationState, StampId, TenantId};

/// Two migrations in opposite directions between the same two stamps validate at the same
/// moment, over and over: each validation locks both stamps' stores, and doing so in the
/// direction of the move (source first) would deadlock. Each side runs on its own thread; the
/// main thread waits with a generous bound, so a deadlock fails the test instead of hanging it.
#[test]
fn validations_of_opposite_moves_do_not_deadlock() {
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]);
    let (done_tx, done_rx) = mpsc::channel();
    for (n, (from, to)) in [(StampId(1), StampId(2)), (StampId(2), StampId(1))]
        .into_iter()
        .enumerate()
    {
        let plane = plane.clone();
        let done = done_tx.clone();
        thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
                return;
            };
            let Ok(tenant) = TenantId::new(&format!("tenant-{n}")) else {
                return;
            };
            let ctx = MigrationContext::new(
                MigrationId(n as u64 + 1),
                tenant,
                from,
                to,
                MigrationState::Validating,
                1,
            );
            let mut ok = 0u32;
            for _ in 0..20_000 {
                if rt.block_on(plane.validate(&ctx)).is_ok() {
                    ok += 1;
                }
            }
            let _ = done.send(ok);
        });
    }
    drop(done_tx);
    for _ in 0..2 {
        let ok = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("both validation loops finish (a deadlock would keep one waiting forever)");
        assert_eq!(ok, 20_000, "every validation of an empty tenant succeeds");
    }
}
