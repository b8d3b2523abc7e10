//! Every `PgRegistry` call is bounded by its deadline (`PgConfig::call_timeout`), even behind a
//! network path that stops forwarding bytes while keeping sockets open (a loopback TCP proxy
//! written here, on 127.0.0.1); a write whose commit was sent and not answered is
//! `OutcomeUnknown`; the pool recovers once the path forwards again. Against the real server
//! (see `tests/support/pg.rs`).
//!
//! Prints the measured times to error (`cargo test --all-features --test postgres_deadline --
//! --nocapture`); `docs/postgres.md` quotes them.

#[path = "support/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg::{database_url, raw_client, unique_schema, SchemaGuard};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_millis(1500);
/// Scheduling slack on a shared 2-core machine.
const MARGIN: Duration = Duration::from_millis(500);

/// A loopback TCP proxy to the test server that can stop forwarding (in both directions)
/// while keeping every socket open, as a black-holing network path does.
struct Proxy {
    port: u16,
    forwarding: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarding = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (fwd, acc) = (forwarding.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, fwd.clone()));
                tokio::spawn(pump(sr, cw, fwd.clone()));
            }
        });
        Proxy {
            port,
            forwarding,
            accepted,
            task,
        }
    }

    fn set_forwarding(&self, on: bool) {
        self.forwarding.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes while forwarding is on; while off, neither reads nor writes (the bytes wait
/// in the kernel's buffers, the sockets stay open).
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, on: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while !on.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while !on.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn upstream() -> String {
    let cfg: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    format!("{host}:{}", cfg.get_ports().first().copied().unwrap_or(5432))
}

fn spec(id: u32) -> StampSpec {
    StampSpec::new(
        StampId(id),
        format!("s{id}"),
        Region::new("eu-west").unwrap(),
        Capacity::new([(Resource::Tenants, 100.0)], 0.0).unwrap(),
    )
    .unwrap()
}

fn tenant(name: &str) -> TenantSpec {
    TenantSpec::new(TenantId::new(name).unwrap())
}

/// The test server's URL with its host and port replaced by the proxy's.
fn via(port: u16) -> PgConfig {
    let cfg: tokio_postgres::Config = database_url().parse().unwrap();
    let mut pg = PgConfig::new().host("127.0.0.1").port(port);
    if let Some(user) = cfg.get_user() {
        pg = pg.user(user);
    }
    if let Some(db) = cfg.get_dbname() {
        pg = pg.dbname(db);
    }
    if let Some(pw) = cfg.get_password() {
        pg = pg.password(pw);
    }
    pg
}

/// Runs `call`, asserting it fails within the deadline plus the margin; returns the error and
/// the time it took.
async fn bounded<T: std::fmt::Debug>(
    name: &str,
    call: impl std::future::Future<Output = Result<T>>,
) -> (Error, Duration) {
    let start = Instant::now();
    let out = tokio::time::timeout(DEADLINE * 4, call).await;
    let took = start.elapsed();
    let err = match out {
        Ok(Err(e)) => e,
        Ok(Ok(v)) => panic!("{name} succeeded through a path that forwards nothing: {v:?}"),
        Err(_) => panic!("{name} was still pending after {:?}: not bounded", DEADLINE * 4),
    };
    assert!(
        took <= DEADLINE + MARGIN,
        "{name} took {took:?}, more than the deadline {DEADLINE:?} plus {MARGIN:?}"
    );
    println!("{name}: {took:?} -> {err}");
    (err, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_returns_within_the_deadline_when_the_path_stops_forwarding_and_the_pool_recovers() {
    let proxy = Proxy::start(upstream()).await;
    let schema = unique_schema("deadline");
    let _guard = SchemaGuard(schema.clone());
    let cfg = via(proxy.port)
        .schema(&schema)
        .unwrap()
        .pool_size(4)
        .call_timeout(DEADLINE)
        .notify(false)
        .poll_interval(Duration::from_millis(50));
    let r = PgRegistry::connect(cfg).await.unwrap();
    r.migrate().await.unwrap();
    r.put_active_stamp(spec(1)).await.unwrap();
    r.put_active_stamp(spec(2)).await.unwrap();
    let a = r.assign(&tenant("acme"), StampId(1)).await.unwrap();

    proxy.set_forwarding(false);
    let acme = a.tenant().clone();
    // Reads, writes (not yet sent for commit: the transaction's first answer never comes),
    // and more calls than pooled connections, so some need a new connection.
    let calls = [
        tokio::spawn({
            let r = r.clone();
            let t = acme.clone();
            async move { bounded("assignment", r.assignment(&t)).await }
        }),
        tokio::spawn({
            let r = r.clone();
            async move { bounded("fleet", r.fleet()).await }
        }),
        tokio::spawn({
            let r = r.clone();
            async move { bounded("changes_since", r.changes_since(Version::ZERO, 10)).await }
        }),
        tokio::spawn({
            let r = r.clone();
            async move { bounded("assign", r.assign(&tenant("beta"), StampId(1))).await }
        }),
        tokio::spawn({
            let r = r.clone();
            let t = acme.clone();
            async move {
                bounded(
                    "compare_and_set",
                    r.compare_and_set(&t, a.epoch, AssignmentChange::move_to(StampId(2))),
                )
                .await
            }
        }),
        tokio::spawn({
            let r = r.clone();
            async move { bounded("put_stamp", r.put_stamp(spec(3))).await }
        }),
        tokio::spawn({
            let r = r.clone();
            async move { bounded("schema_version", r.schema_version()).await }
        }),
    ];
    let mut worst = Duration::ZERO;
    for call in calls {
        let (err, took) = call.await.unwrap();
        assert!(
            matches!(err, Error::Unavailable { .. }),
            "nothing was sent for commit, so the error is Unavailable: {err:?}"
        );
        worst = worst.max(took);
    }
    println!("network path stops forwarding: every call failed within {worst:?} (deadline {DEADLINE:?})");

    // The path forwards again: the connections cut at the deadline were closed, new ones
    // are made, and every call succeeds; nothing the failed writes attempted was committed.
    let accepted_before = proxy.accepted.load(Ordering::SeqCst);
    proxy.set_forwarding(true);
    let start = Instant::now();
    loop {
        match r.assignment(&acme).await {
            Ok(Some(x)) => {
                assert_eq!(x.stamp, StampId(1), "the unsent move was not committed");
                break;
            }
            other => assert!(
                start.elapsed() < Duration::from_secs(10),
                "the pool did not recover: {other:?}"
            ),
        }
    }
    println!("recovered {:?} after the path forwarded again", start.elapsed());
    for i in 0..8 {
        r.assign(&tenant(&format!("after{i}")), StampId(2)).await.unwrap();
    }
    assert!(r.assignment(&TenantId::new("beta").unwrap()).await.unwrap().is_none());
    assert!(r.stamp(StampId(3)).await.unwrap().is_none());
    assert_eq!(r.fleet().await.unwrap().stamps.len(), 2);
    assert!(
        proxy.accepted.load(Ordering::SeqCst) > accepted_before,
        "the broken connections were replaced by new ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_for_commit_without_answer_is_outcome_unknown() {
    let schema = unique_schema("outcome");
    let _guard = SchemaGuard(schema.clone());
    let cfg = PgConfig::from_url(database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(2)
        .call_timeout(DEADLINE)
        .statement_timeout(Duration::from_secs(30));
    let r = PgRegistry::connect(cfg).await.unwrap();
    r.migrate().await.unwrap();
    r.put_active_stamp(spec(1)).await.unwrap();

    // Another session holds the feed counter: the write's pipelined increment, write and
    // COMMIT are sent and wait for it, unanswered.
    let holder = raw_client().await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT head FROM {schema}.feed WHERE id = 1 FOR UPDATE"
        ))
        .await
        .unwrap();
    let (err, took) = bounded("assign (commit sent)", r.assign(&tenant("acme"), StampId(1))).await;
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
    assert!(err.to_string().contains("re-read"), "{err}");
    println!("commit sent, no answer: OutcomeUnknown after {took:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();

    // The host re-reads, as the error says, and finds a consistent state either way.
    let start = Instant::now();
    let seen = loop {
        match r.assignment(&TenantId::new("acme").unwrap()).await {
            Ok(x) => break x,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(10), "{e:?}"),
        }
    };
    if let Some(a) = seen {
        assert_eq!(a.stamp, StampId(1));
        let fleet = r.fleet().await.unwrap();
        assert_eq!(fleet.get(StampId(1)).unwrap().tenants(), 1);
    } else {
        r.assign(&tenant("acme"), StampId(1)).await.unwrap();
    }
}
