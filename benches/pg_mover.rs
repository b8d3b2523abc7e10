//! `PgTableMover` throughput against the floor a user would compare it with: a bare binary
//! `COPY` of the same rows from the source database into a plain table of the same shape
//! (same primary key, no trigger) on the destination, in the same run.
//!
//! For each size (default 100,000 and 1,000,000 rows of one tenant in an `orders` table),
//! three rounds, the floor and the mover alternating which goes first:
//! - **import**: `snapshot` + `import` of the whole tenant (batched `COPY` into staging,
//!   merged by version), against the floor copying the same rows;
//! - **catch-up**: every row of the tenant updated on the source after the import (so the
//!   change log holds one entry per row), then one `catch_up`, against the floor again.
//!
//! Prints medians of rows/s with the spread over the rounds, and the ratios.
//!
//! ```text
//! cargo bench --bench pg_mover --features postgres
//! STAMPS_MOVER_ROWS=100000 cargo bench --bench pg_mover --features postgres
//! ```

#[path = "../tests/support/pg.rs"]
mod pg;

use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use stamps::migration::postgres::{MovedTable, PgTableMover};
use stamps::migration::{MigrationContext, MigrationDriver};
use stamps::*;
use tokio_postgres::{Client, NoTls};

const ORDERS: &str = "CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, item text NOT NULL, \
                      qty int NOT NULL, note text, row_version bigint NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id)); \
                      CREATE TABLE plain_orders (LIKE orders INCLUDING ALL)";
const COLS: &str = "tenant_id, id, item, qty, note, row_version";

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn url_of(name: &str) -> String {
    let base = pg::database_url();
    match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => format!("{base}/{name}"),
    }
}

/// The floor: the tenant's rows streamed with binary COPY into the destination's plain table.
async fn floor(src: &Client, dst: &Client) -> Duration {
    dst.batch_execute("TRUNCATE plain_orders").await.expect("truncate");
    let t = Instant::now();
    let out = src
        .copy_out(&format!(
            "COPY (SELECT {COLS} FROM orders WHERE tenant_id = 'acme') TO STDOUT (FORMAT binary)"
        ))
        .await
        .expect("copy out");
    let sink = dst
        .copy_in(&format!("COPY plain_orders ({COLS}) FROM STDIN (FORMAT binary)"))
        .await
        .expect("copy in");
    let (mut out, mut sink) = (pin!(out), pin!(sink));
    while let Some(chunk) = out.next().await {
        sink.feed(chunk.expect("chunk")).await.expect("send");
    }
    sink.as_mut().finish().await.expect("finish");
    t.elapsed()
}

fn ctx(id: u64, state: MigrationState) -> MigrationContext {
    MigrationContext::new(
        MigrationId(id),
        TenantId::new("acme").unwrap(),
        StampId(1),
        StampId(2),
        state,
        1,
    )
}

/// Forgets the previous round on the destination: acme's rows, log, progress, fence.
async fn reset_destination(dst: &Client) {
    dst.batch_execute(
        "BEGIN; SET LOCAL stamps.mover = 'on'; DELETE FROM orders WHERE tenant_id = 'acme'; \
         DELETE FROM stamps_mover.changes; DELETE FROM stamps_mover.progress; DELETE FROM stamps_mover.fences; COMMIT",
    )
    .await
    .expect("reset the destination");
    dst.batch_execute("VACUUM ANALYZE orders").await.expect("vacuum");
}

fn median(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn show(name: &str, rates: Vec<f64>) -> f64 {
    let (m, lo, hi) = median(rates);
    println!("  {name:<26} {:>12.0} rows/s  (spread {:.0}–{:.0})", m, lo, hi);
    m
}

async fn run(rows: i64) {
    let admin = connect(pg::database_url()).await;
    let names = [
        format!("bench_mover_{}_1", std::process::id()),
        format!("bench_mover_{}_2", std::process::id()),
    ];
    for n in &names {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))
            .await
            .expect("drop");
        admin
            .batch_execute(&format!("CREATE DATABASE {n}"))
            .await
            .expect("create");
        connect(&url_of(n)).await.batch_execute(ORDERS).await.expect("tables");
    }
    let (src, dst) = (connect(&url_of(&names[0])).await, connect(&url_of(&names[1])).await);
    src.execute(
        "INSERT INTO orders (tenant_id, id, item, qty, note) \
         SELECT 'acme', g, 'item-' || (g % 977), (g % 13)::int, repeat('x', 40) FROM generate_series(1, $1::bigint) g",
        &[&rows],
    )
    .await
    .expect("seed");
    src.batch_execute(
        "INSERT INTO orders (tenant_id, id, item, qty) SELECT 'other', g, 'o', 1 FROM generate_series(1, 10000) g",
    )
    .await
    .expect("seed others");
    src.batch_execute("VACUUM ANALYZE orders").await.expect("vacuum");
    let mover = PgTableMover::builder(vec![MovedTable::new(
        "orders",
        "tenant_id",
        &["tenant_id", "id"],
        "row_version",
    )
    .unwrap()
    .versioned_by_mover()])
    .stamp_url(StampId(1), &url_of(&names[0]))
    .unwrap()
    .stamp_url(StampId(2), &url_of(&names[1]))
    .unwrap()
    .build()
    .unwrap();
    mover.install().await.expect("install");

    let (mut floor_rates, mut import_rates, mut catch_rates) = (vec![], vec![], vec![]);
    for round in 0..3u64 {
        let id = 100 + round;
        reset_destination(&dst).await;
        let mut do_floor = async || {
            let t = floor(&src, &dst).await;
            floor_rates.push(rows as f64 / t.as_secs_f64());
        };
        if round % 2 == 0 {
            do_floor().await;
        }
        let t = Instant::now();
        let snap = mover
            .snapshot(&ctx(id, MigrationState::Snapshotting))
            .await
            .expect("snapshot");
        mover
            .import(&ctx(id, MigrationState::Importing), &snap)
            .await
            .expect("import");
        import_rates.push(rows as f64 / t.elapsed().as_secs_f64());
        if round % 2 == 1 {
            do_floor().await;
        }
        // Every row changes on the source (the tenant is tracked, so writes carry an epoch).
        src.batch_execute(&format!(
            "BEGIN; SET LOCAL stamps.epoch = '{}'; UPDATE orders SET qty = qty + 1 WHERE tenant_id = 'acme'; COMMIT",
            round + 1
        ))
        .await
        .expect("update");
        let t = Instant::now();
        mover
            .catch_up(&ctx(id, MigrationState::DualWrite), &snap)
            .await
            .expect("catch-up");
        catch_rates.push(rows as f64 / t.elapsed().as_secs_f64());
        let report = mover
            .validate(&ctx(id, MigrationState::Validating))
            .await
            .expect("validate");
        assert!(report.passed(), "{}", report.summary());
        // The source's log is cleared for the next round (as a finished move would).
        src.batch_execute("DELETE FROM stamps_mover.changes")
            .await
            .expect("clear the log");
        src.batch_execute("VACUUM ANALYZE stamps_mover.changes")
            .await
            .expect("vacuum");
    }
    println!("{rows} rows of one tenant (3 rounds, median):");
    let f = show("floor: bare binary COPY", floor_rates);
    let i = show("PgTableMover import", import_rates);
    let c = show("PgTableMover catch-up", catch_rates);
    println!("  import / floor {:.2}, catch-up / floor {:.2}", i / f, c / f);
    drop((src, dst, mover));
    for n in &names {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))
            .await;
    }
}

fn main() {
    // `cargo bench --no-run` builds this; `cargo test --benches` would run it with --bench absent.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<i64> = match std::env::var("STAMPS_MOVER_ROWS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![100_000, 1_000_000],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for rows in sizes {
        rt.block_on(run(rows));
    }
}
