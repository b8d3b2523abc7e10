//! The tenant-migration scenarios on `PgRegistry`, as on `InMemoryRegistry`: no lost writes
//! with concurrent writers, a crash and resume at every registry write and driver call, a
//! driver failure at every call, validation mismatches refusing cutover, rollback before
//! cutover and during the soak, two workers racing for each step, and the fence that stops
//! stale routers. The scenarios are the ones the in-memory binaries run
//! (`tests/common/scenarios.rs`); every world lives in a fresh schema, dropped afterwards.
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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{lost_writes, scenarios, Backend, Keep, Pace, Stop, Totals, World, Writers};
use pg::{database_url, unique_schema, SchemaGuard};
use stamps::migration::StepOutcome;
use stamps::registry::postgres::{PgConfig, PgRegistry, SCHEMA_VERSION};
use stamps::{DynRegistry, Error, FakeClock, MigrationState};

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
            assert_eq!(
                registry.migrate().await.unwrap(),
                (1..=SCHEMA_VERSION).collect::<Vec<u32>>()
            );
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
async fn a_lost_acknowledgement_at_every_registry_write_is_stepped_through() {
    scenarios::a_lost_acknowledgement_at_every_registry_write_is_stepped_through(&postgres()).await;
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

// ---------------------------------------------------------------------------------------------
// Lost acknowledgements: the write committed, the connection broke before the answer arrived.

/// A TCP proxy in front of the test server that cuts a connection at the N-th committed write:
/// it holds back each `CommandComplete` until the `ReadyForQuery` after it, and when that
/// says the session is idle again (the statement or `COMMIT` committed) and the countdown
/// reaches zero, it drops both sockets instead of forwarding the answer. The server has the
/// write; the client sees a broken connection.
mod cut {
    use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Debug, Default)]
    pub struct Counters {
        /// Committed writes seen since the last `arm`.
        pub commits: AtomicU64,
        /// Connections cut.
        pub cuts: AtomicU64,
        countdown: AtomicI64,
        armed: AtomicBool,
    }

    pub struct Proxy {
        pub port: u16,
        pub counters: Arc<Counters>,
    }

    impl Proxy {
        /// Listens on a free local port, forwarding to `upstream`.
        pub async fn start(upstream: String) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let counters = Arc::new(Counters::default());
            let c = counters.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    tokio::spawn(pump(client, server, c.clone()));
                }
            });
            Proxy { port, counters }
        }

        /// Cuts at the `n`-th committed write from now (1-based); 0 only counts.
        pub fn arm(&self, n: u64) {
            self.counters.commits.store(0, Ordering::SeqCst);
            self.counters.countdown.store(n as i64, Ordering::SeqCst);
            self.counters.armed.store(true, Ordering::SeqCst);
        }
    }

    async fn pump(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        });
        // Server to client, message by message: type byte, i32 length (itself included), body.
        let mut buf: Vec<u8> = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut last_tag = String::new();
        let mut chunk = vec![0u8; 16 * 1024];
        'read: loop {
            let n = match server_rx.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out: Vec<u8> = Vec::new();
            let mut at = 0;
            while buf.len() >= at + 5 {
                let kind = buf[at];
                let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
                if buf.len() < at + 1 + len {
                    break;
                }
                let msg = &buf[at..at + 1 + len];
                at += 1 + len;
                match kind {
                    b'C' => {
                        last_tag = String::from_utf8_lossy(&msg[5..msg.len() - 1]).into_owned();
                        held.extend_from_slice(msg);
                    }
                    b'Z' => {
                        let idle = msg.get(5) == Some(&b'I');
                        let write = ["INSERT", "UPDATE", "DELETE", "COMMIT"]
                            .iter()
                            .any(|t| last_tag.starts_with(t));
                        if idle && write && !held.is_empty() && counters.armed.load(Ordering::SeqCst) {
                            counters.commits.fetch_add(1, Ordering::SeqCst);
                            if counters.countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
                                counters.cuts.fetch_add(1, Ordering::SeqCst);
                                break 'read;
                            }
                        }
                        out.append(&mut held);
                        out.extend_from_slice(msg);
                        last_tag.clear();
                    }
                    _ if !held.is_empty() => held.extend_from_slice(msg),
                    _ => out.extend_from_slice(msg),
                }
            }
            buf.drain(..at);
            if !out.is_empty() && client_tx.write_all(&out).await.is_err() {
                break;
            }
        }
        up.abort();
    }
}

/// The server's `host:port`, for the proxy.
fn upstream() -> (String, tokio_postgres::Config) {
    let cfg: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the lost-acknowledgement test needs a TCP server URL, not {other:?}"),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    (format!("{host}:{port}"), cfg)
}

/// A migrated schema, and a registry on it that talks through the proxy (polling, no
/// `LISTEN`: the proxy holds answers back, which a listening connection never gets).
async fn through(proxy: &cut::Proxy, hint: &str, clock: FakeClock) -> (Arc<DynRegistry>, SchemaGuard) {
    let schema = unique_schema(hint);
    let guard = SchemaGuard(schema.clone());
    let direct = PgRegistry::connect(PgConfig::from_url(database_url()).unwrap().schema(&schema).unwrap())
        .await
        .unwrap();
    direct.migrate().await.unwrap();
    let (_, cfg) = upstream();
    let mut pg = PgConfig::new()
        .host("127.0.0.1")
        .port(proxy.port)
        .dbname(cfg.get_dbname().unwrap_or("postgres"))
        .user(cfg.get_user().unwrap_or("postgres"));
    if let Some(p) = cfg.get_password() {
        pg = pg.password(p);
    }
    let registry = PgRegistry::connect(
        pg.schema(&schema)
            .unwrap()
            .pool_size(4)
            .notify(false)
            .poll_interval(Duration::from_millis(50))
            .clock(clock),
    )
    .await
    .unwrap();
    (Arc::new(registry), guard)
}

/// One migration with live writers, through the proxy armed to cut at the `k`-th committed
/// write (0: never); a step answered `Unavailable` is stepped again, as `Migration::step`
/// says. Returns the stop, the writes acknowledged and lost.
async fn ambiguous_once(proxy: &cut::Proxy, k: u64) -> (Stop, usize, u64) {
    let clock = FakeClock::new();
    let (registry, _guard) = through(proxy, &format!("ack{k}"), clock.clone()).await;
    let mut world = World::on(registry, clock, &format!("ack-{k}"), common::config()).await;
    world.pace = Pace::Budget;
    let writers = Writers::spawn(&world, WRITERS);
    writers.progress(20).await;
    let mut m = world.start().await;
    proxy.arm(k);
    let mut unavailable = 0;
    let stop = loop {
        if m.state().is_terminal() {
            break Stop::Terminal(m.state());
        }
        writers.progress(10).await;
        match m.step().await {
            Ok(StepOutcome::Waiting { .. }) => world.clock.advance(Duration::from_secs(1800)),
            Ok(StepOutcome::Blocked { reason, .. }) => break Stop::Blocked(reason),
            Ok(StepOutcome::Refused { reason }) => break Stop::Refused(reason),
            Ok(_) => {}
            // The cut loses the answer to a committed write: OutcomeUnknown (or Unavailable
            // when the cut hits a read); the next step re-reads.
            Err(e @ (Error::Unavailable { .. } | Error::OutcomeUnknown { .. })) => {
                unavailable += 1;
                assert!(unavailable <= 3, "unavailable again and again: {e}");
            }
            Err(e) => panic!("cut at committed write {k}: step failed: {e} in {:?}", m.record()),
        }
    };
    writers.progress(20).await;
    let acked = writers.stop().await;
    let lost = lost_writes(&world, &acked).await;
    (stop, acked.len(), lost)
}

/// Every kind of registry write whose answer is lost after the server committed it returns
/// `OutcomeUnknown`, never `Unavailable` (which says the write did not take effect), and the
/// write is there when read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_whose_commit_answer_is_lost_is_outcome_unknown() {
    use stamps::*;
    let (addr, _) = upstream();
    let proxy = cut::Proxy::start(addr).await;
    let (r, guard) = through(&proxy, "lost_answer", FakeClock::new()).await;
    let direct = PgRegistry::connect(PgConfig::from_url(database_url()).unwrap().schema(&guard.0).unwrap())
        .await
        .unwrap();
    let cap = || Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
    let spec = |id: u32| StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap()).unwrap();
    let outcome = |what: &str, e: Error| {
        assert!(matches!(e, Error::OutcomeUnknown { .. }), "{what}: {e:?}");
    };
    proxy.arm(1);
    outcome("put_stamp", r.put_stamp(spec(1)).await.unwrap_err());
    assert!(direct.stamp(StampId(1)).await.unwrap().is_some());
    direct.set_stamp_state(StampId(1), StampState::Active).await.unwrap();
    direct.put_active_stamp(spec(2)).await.unwrap();
    proxy.arm(1);
    outcome(
        "set_stamp_state",
        r.set_stamp_state(StampId(2), StampState::Draining).await.unwrap_err(),
    );
    assert_eq!(
        direct.stamp(StampId(2)).await.unwrap().map(|s| s.state),
        Some(StampState::Draining)
    );
    direct.set_stamp_state(StampId(2), StampState::Active).await.unwrap();
    let t = TenantId::new("acme").unwrap();
    proxy.arm(1);
    outcome(
        "assign",
        r.assign(&TenantSpec::new(t.clone()), StampId(1)).await.unwrap_err(),
    );
    let a = direct.assignment(&t).await.unwrap().expect("the assignment committed");
    proxy.arm(1);
    outcome(
        "compare_and_set",
        r.compare_and_set(&t, a.epoch, AssignmentChange::move_to(StampId(2)))
            .await
            .unwrap_err(),
    );
    let moved = direct.assignment(&t).await.unwrap().expect("assigned");
    assert_eq!(moved.stamp, StampId(2));
    proxy.arm(1);
    let record = MigrationRecord::planned(t.clone(), StampId(2), StampId(1));
    outcome("create_migration", r.create_migration(record).await.unwrap_err());
    let created = direct
        .migrations(Some(&t))
        .await
        .unwrap()
        .pop()
        .expect("the record committed");
    let mut cancelled = created.clone();
    cancelled.state = MigrationState::Cancelled;
    proxy.arm(1);
    outcome("save_migration", r.save_migration(&cancelled).await.unwrap_err());
    assert_eq!(
        direct.migration(created.id).await.unwrap().map(|m| m.state),
        Some(MigrationState::Cancelled)
    );
    proxy.arm(1);
    outcome("unassign", r.unassign(&t, moved.epoch).await.unwrap_err());
    assert!(direct.assignment(&t).await.unwrap().is_none());
}

/// A registry write whose acknowledgement is lost (the connection broke after the server
/// committed it) is reported `OutcomeUnknown` and took effect. Stepping again must find out what
/// happened rather than act on the record it had: at each committed write of a migration in
/// turn, the migration still completes, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_after_every_committed_write_is_stepped_through() {
    let (addr, _) = upstream();
    let proxy = cut::Proxy::start(addr).await;
    // Count the committed writes of a clean run (the writers only read).
    let (stop, _, _) = ambiguous_once(&proxy, 0).await;
    assert_eq!(stop, Stop::Terminal(MigrationState::Completed));
    let points = proxy.counters.commits.load(Ordering::SeqCst);
    assert!(points >= 20, "expected at least 20 committed writes, saw {points}");
    let mut totals = Totals::default();
    for k in 1..=points {
        let cuts = proxy.counters.cuts.load(Ordering::SeqCst);
        let (stop, acked, lost) = ambiguous_once(&proxy, k).await;
        assert_eq!(
            proxy.counters.cuts.load(Ordering::SeqCst),
            cuts + 1,
            "write {k} was cut"
        );
        assert_eq!(
            stop,
            Stop::Terminal(MigrationState::Completed),
            "cut at committed write {k}"
        );
        assert_eq!(lost, 0, "cut at committed write {k} lost writes");
        totals.add(acked, lost);
    }
    totals.report(&format!(
        "postgres: connection cut after each of {points} committed writes"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_a_transient_error_late_in_the_soak_is_retried_not_rolled_back() {
    common::operate::a_transient_error_late_in_the_soak_is_retried_not_rolled_back(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_crash_inside_the_cutover_never_needs_hand_repair() {
    common::operate::a_crash_inside_the_cutover_never_needs_hand_repair(&postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_a_crash_during_the_freeze_refuses_writes_only_for_max_freeze() {
    let refused = common::operate::a_crash_during_the_freeze_refuses_writes_only_for_max_freeze(&postgres()).await;
    println!("longest write refusal, crash during the freeze, default settings (fake clock): {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_lands_while_a_worker_holds_the_lease() {
    // Bounded: a regression (a command that never lands) fails here instead of hanging CI.
    let backend = postgres();
    let run = common::operate::a_command_lands_while_a_worker_holds_the_lease(&backend);
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the scenario finished within 120 s");
}
