//! Bulk import (`Registry::assign_many`) against what a user would compare it with, in the
//! same run:
//! - **PostgreSQL**: `assign_many` in calls of 10,000 rows into a fresh schema, against the
//!   floor (a bare text `COPY` of the same assignment rows into a plain table shaped like the
//!   registry's `assignments`, with its primary key and indexes but no history, change feed or
//!   checks), against `assign_many` into a schema put back to version 8's row-level foreign
//!   keys and `jsonb` change payloads (what versions 9 and 10 save), and against one `assign`
//!   per tenant on both schemas (the only way in before `assign_many`);
//! - **in memory**: `assign_many` of 1,000,000 rows in calls of 10,000, with ids in order and
//!   the same number shuffled, against one `assign` per tenant for the same number of rows
//!   (each into an empty registry), and against the floor of an ordered map: the same
//!   assignments inserted into a bare `BTreeMap`, in order, shuffled, and shuffled with each
//!   call's rows sorted.
//!
//! Three rounds per candidate in PostgreSQL, six in memory (one per candidate), rotating
//! which goes first; prints medians with the spread (and,
//! in memory, each candidate's rate in the round it ran first in).
//!
//! ```text
//! cargo bench --bench import --features postgres
//! STAMPS_IMPORT_ROWS=1000000 STAMPS_IMPORT_SLICE=50000 STAMPS_IMPORT_ONLY=postgres cargo bench --bench import --features postgres
//! STAMPS_IMPORT_ONLY=memory cargo bench --bench import --features postgres
//! STAMPS_IMPORT_ONLY=memory STAMPS_IMPORT_MEMORY=in-order cargo bench --bench import --features postgres
//! ```

#[path = "../tests/support/pg.rs"]
mod pg;

use std::pin::pin;
use std::time::Instant;

use futures_util::SinkExt;
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;
use tokio_postgres::{Client, NoTls};

const STAMPS: u32 = 100;

/// Rows per `assign_many` call (`STAMPS_IMPORT_SLICE`, default 10,000).
fn slice() -> usize {
    std::env::var("STAMPS_IMPORT_SLICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn rows(n: usize, round: usize) -> Vec<ImportRow> {
    (0..n)
        .map(|i| {
            let id = TenantId::new(&format!("r{round}-tenant-{i:08}")).expect("tenant id");
            ImportRow::new(TenantSpec::new(id), StampId(1 + (i as u32) % STAMPS))
        })
        .collect()
}

fn stamp(id: u32, n: usize) -> StampSpec {
    StampSpec::new(
        StampId(id),
        format!("s{id}"),
        Region::new("eu-west").expect("region"),
        Capacity::new([(Resource::Tenants, n as f64)], 0.0).expect("capacity"),
    )
    .expect("stamp")
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn median(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn show(name: &str, rates: Vec<f64>) -> f64 {
    let (m, lo, hi) = median(rates);
    println!("  {name:<34} {m:>12.0} rows/s  (spread {lo:.0}–{hi:.0})");
    m
}

/// A registry in a fresh schema with `STAMPS` active stamps.
async fn fresh_pg(schema: &str, n: usize) -> PgRegistry {
    let config = PgConfig::from_url(pg::database_url())
        .expect("url")
        .schema(schema)
        .expect("schema")
        .statement_timeout(std::time::Duration::from_secs(120))
        .call_timeout(std::time::Duration::from_secs(300));
    let r = PgRegistry::connect(config).await.expect("connect");
    r.migrate().await.expect("migrate");
    for id in 1..=STAMPS {
        r.put_active_stamp(stamp(id, n)).await.expect("stamp");
    }
    r
}

/// Puts back what schema version 8 had in `schema`: two foreign keys (one referential-integrity
/// query per inserted row) instead of the set-based trigger, and `jsonb` change payloads
/// (written as `row_to_json` cast to `jsonb`, where version 8 wrote `to_jsonb`: the same cost
/// within a tenth in `psql` timings of 100,000 rows).
async fn version_8_schema(admin: &Client, schema: &str) {
    admin
        .batch_execute(&format!(
            "DROP TRIGGER assignments_stamps_exist_on_insert ON \"{schema}\".assignments;
             ALTER TABLE \"{schema}\".assignments
                 ADD FOREIGN KEY (stamp_id) REFERENCES \"{schema}\".stamps (id),
                 ADD FOREIGN KEY (shadow_id) REFERENCES \"{schema}\".stamps (id);
             ALTER TABLE \"{schema}\".changes ALTER COLUMN payload TYPE jsonb USING payload::jsonb"
        ))
        .await
        .expect("foreign keys");
}

async fn import(r: &dyn Registry, rows: &[ImportRow]) -> f64 {
    let t = Instant::now();
    for slice in rows.chunks(slice()) {
        let report = r.assign_many(slice).await.expect("assign_many");
        assert_eq!(report.assigned(), slice.len());
    }
    rows.len() as f64 / t.elapsed().as_secs_f64()
}

async fn one_by_one(r: &dyn Registry, rows: &[ImportRow]) -> f64 {
    let t = Instant::now();
    for row in rows {
        r.assign(&row.tenant, row.stamp).await.expect("assign");
    }
    rows.len() as f64 / t.elapsed().as_secs_f64()
}

/// The floor: the same assignment rows, text `COPY` into a plain table.
async fn floor(admin: &Client, table: &str, rows: &[ImportRow]) -> f64 {
    admin
        .batch_execute(&format!("TRUNCATE {table}"))
        .await
        .expect("truncate");
    let mut text = String::with_capacity(rows.len() * 80);
    let t = Instant::now();
    for (i, row) in rows.iter().enumerate() {
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "{}\t{}\t{}\tserving\tshared\t{{}}\t{{}}\t1\t1\tf",
            row.tenant.id,
            row.stamp.0,
            i + 1
        );
    }
    let sink = admin
        .copy_in(&format!(
            "COPY {table} (tenant, stamp_id, epoch, mode, tier, demand_milli, labels, assigned_at, updated_at, \
             ephemeral) FROM STDIN"
        ))
        .await
        .expect("copy in");
    let mut sink = pin!(sink);
    for chunk in text.as_bytes().chunks(1 << 20) {
        sink.feed(bytes::Bytes::copy_from_slice(chunk)).await.expect("send");
    }
    sink.as_mut().finish().await.expect("finish");
    rows.len() as f64 / t.elapsed().as_secs_f64()
}

async fn postgres(n: usize, singles: usize) {
    println!("PostgreSQL, {n} rows in calls of {}, {STAMPS} stamps:", slice());
    let admin = connect(pg::database_url()).await;
    let base = format!("bench_import_{}", std::process::id());
    let table = format!("{base}_plain");
    let like = fresh_pg(&format!("{base}_like"), n).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (LIKE \"{}\".assignments INCLUDING ALL)",
            like.schema()
        ))
        .await
        .expect("plain table");
    let (mut ours, mut floors, mut keyed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut singles_rate, mut keyed_singles) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let batch = rows(n, round);
        let schema = format!("{base}_{round}");
        let r = fresh_pg(&schema, n).await;
        let keyed_schema = format!("{base}_{round}_keyed");
        let k = fresh_pg(&keyed_schema, n).await;
        version_8_schema(&admin, &keyed_schema).await;
        // The three candidates in turn, each round starting with a different one.
        for turn in 0..3 {
            match (turn + round) % 3 {
                0 => floors.push(floor(&admin, &table, &batch).await),
                1 => ours.push(import(&r, &batch).await),
                _ => keyed.push(import(&k, &batch).await),
            }
        }
        let single = rows(singles, round + 10);
        if round % 2 == 0 {
            singles_rate.push(one_by_one(&r, &single).await);
            keyed_singles.push(one_by_one(&k, &single).await);
        } else {
            keyed_singles.push(one_by_one(&k, &single).await);
            singles_rate.push(one_by_one(&r, &single).await);
        }
        admin
            .batch_execute(&format!(
                "DROP SCHEMA \"{schema}\" CASCADE; DROP SCHEMA \"{keyed_schema}\" CASCADE"
            ))
            .await
            .expect("drop");
    }
    admin
        .batch_execute(&format!(
            "DROP TABLE {table}; DROP SCHEMA \"{}\" CASCADE",
            like.schema()
        ))
        .await
        .expect("drop");
    let floor_m = show("bare COPY (floor)", floors);
    let ours_m = show("assign_many", ours);
    let keyed_m = show("assign_many, version 8 schema", keyed);
    let single_m = show(&format!("assign one by one ({singles})"), singles_rate);
    let keyed_single_m = show("  the same, version 8 schema", keyed_singles);
    println!(
        "  assign_many: {:.2}x the floor's time, {:.0}x one-by-one assign, {:.2}x the rate on the version 8 schema",
        floor_m / ours_m,
        ours_m / single_m,
        ours_m / keyed_m
    );
    println!(
        "  one-by-one assign: {:.3}x the rate on the version 8 schema",
        single_m / keyed_single_m
    );
}

/// `rows` in a fixed pseudo-random order (Fisher–Yates driven by xorshift: the same order in
/// every run and at every commit).
fn shuffled(mut rows: Vec<ImportRow>, seed: u64) -> Vec<ImportRow> {
    let mut x = seed | 1;
    for i in (1..rows.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rows.swap(i, (x % (i as u64 + 1)) as usize);
    }
    rows
}

/// The in-memory candidates, in the order `memory` rotates them.
const MEMORY: [&str; 6] = [
    "in-order",
    "shuffled",
    "single",
    "btree-in-order",
    "btree-shuffled",
    "btree-shuffled-sorted-calls",
];

/// The in-memory candidates `STAMPS_IMPORT_MEMORY` selects (comma-separated names of
/// [`MEMORY`]; all by default), e.g. one alone under callgrind.
fn memory_candidates() -> [bool; MEMORY.len()] {
    let only = std::env::var("STAMPS_IMPORT_MEMORY").unwrap_or_default();
    MEMORY.map(|name| only.is_empty() || only.split(',').any(|c| c.trim() == name))
}

/// The floor for an ordered in-memory map: the rows' assignments, built as the registry
/// builds them, inserted into a bare `BTreeMap` by tenant id (no admission, history or feed),
/// each built and inserted in turn as `assign_many` does. With `sort_calls`, each call's
/// assignments (a slice of [`slice`] rows) are built first and inserted in id order: what an
/// `assign_many` that admitted a call's rows in order and then inserted them sorted would do
/// with the map, so its gain is the most such a change could bring.
fn btree(rows: &[ImportRow], sort_calls: bool) -> f64 {
    let build = |row: &ImportRow| {
        let a = Assignment::new(
            row.tenant.clone(),
            row.stamp,
            Epoch(1),
            AssignmentMode::Serving,
            Timestamp::ZERO,
            Timestamp::ZERO,
        );
        (row.tenant.id.clone(), std::sync::Arc::new(a))
    };
    let start = Instant::now();
    let mut map = std::collections::BTreeMap::new();
    for call in rows.chunks(slice()) {
        if sort_calls {
            let mut built: Vec<_> = call.iter().map(build).collect();
            built.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            map.extend(built);
        } else {
            for row in call {
                let (id, a) = build(row);
                map.insert(id, a);
            }
        }
    }
    let rate = rows.len() as f64 / start.elapsed().as_secs_f64();
    std::hint::black_box(&map);
    rate
}

async fn memory(n: usize, singles: usize) {
    println!("In memory, {n} rows in calls of {}, {STAMPS} stamps:", slice());
    let selected = memory_candidates();
    // Per candidate, the rate of each round; each candidate runs first in one round.
    let mut rates: [Vec<f64>; MEMORY.len()] = Default::default();
    for round in 0..MEMORY.len() {
        let sorted = rows(n, round);
        let random = shuffled(rows(n, round + 20), round as u64 + 7);
        let single = rows(singles, round + 10);
        let fresh = || async {
            let r = InMemoryRegistry::new();
            for id in 1..=STAMPS {
                r.put_active_stamp(stamp(id, n)).await.expect("stamp");
            }
            r
        };
        let registries = [fresh().await, fresh().await, fresh().await];
        // Each round starts with a different candidate.
        for k in 0..MEMORY.len() {
            let c = (k + round) % MEMORY.len();
            if !selected[c] {
                continue;
            }
            let rate = match c {
                0 => import(&registries[c], &sorted).await,
                1 => import(&registries[c], &random).await,
                2 => one_by_one(&registries[c], &single).await,
                3 => btree(&sorted, false),
                4 => btree(&random, false),
                _ => btree(&random, true),
            };
            rates[c].push(rate);
        }
    }
    let names = [
        "assign_many, ids in order".to_string(),
        "assign_many, ids shuffled".to_string(),
        format!("assign one by one ({singles})"),
        "bare BTreeMap insert, ids in order".to_string(),
        "bare BTreeMap insert, ids shuffled".to_string(),
        "  the same, each call's rows sorted".to_string(),
    ];
    let mut medians = [None; MEMORY.len()];
    for (c, rs) in rates.iter().enumerate() {
        if !rs.is_empty() {
            medians[c] = Some(show(&names[c], rs.clone()));
        }
    }
    if selected.iter().all(|s| *s) {
        let first: Vec<String> = (0..MEMORY.len()).map(|c| format!("{:.0}", rates[c][c])).collect();
        println!("  each in the round it ran first in: {} rows/s", first.join(", "));
    }
    if let [Some(sorted), Some(random), Some(single), ..] = medians {
        println!(
            "  assign_many: {:.1}x one-by-one assign (in order), {:.1}x (shuffled)",
            sorted / single,
            random / single
        );
    }
    if let [Some(sorted), Some(random), _, Some(tree_sorted), Some(tree_random), _] = medians {
        println!(
            "  assign_many takes {:.2}x the bare BTreeMap's time in order, {:.2}x shuffled; \
             shuffling costs the BTreeMap {:.2}x, assign_many {:.2}x",
            tree_sorted / sorted,
            tree_random / random,
            tree_sorted / tree_random,
            sorted / random
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that short.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("STAMPS_IMPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 200_000 } else { 2_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let only = std::env::var("STAMPS_IMPORT_ONLY").unwrap_or_default();
        if only != "postgres" {
            // `STAMPS_IMPORT_MEMORY_ROWS` for a shorter run, e.g. under callgrind (default 1,000,000
            // with `--bench`, else the rows of `STAMPS_IMPORT_ROWS`).
            let m = std::env::var("STAMPS_IMPORT_MEMORY_ROWS")
                .ok()
                .and_then(|v| v.parse().ok());
            let m = m.unwrap_or(if full { 1_000_000 } else { n });
            memory(m, m).await;
        }
        if only != "memory" {
            postgres(n, if full { 2_000 } else { 100 }).await;
        }
    });
}
