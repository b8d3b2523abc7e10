//! Moves a tenant's rows between two stamp databases with `PgTableMover` while writers keep
//! writing, then checks that no acknowledged write was lost and that another tenant's rows
//! were not touched.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --features postgres --example pg_move
//! ```
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) names a server on which
//! the example may create databases: it (re)creates `stamps_example_stamp_1` and
//! `stamps_example_stamp_2`, one per stamp, and drops them at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stamps::migration::postgres::{fence_rejection, set_write_token, MovedTable, PgTableMover};
use stamps::migration::{FenceToken, MigrationConfig, Migrator};
use stamps::*;
use tokio_postgres::{Client, NoTls};

const ORDERS: &str = "CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, item text NOT NULL, \
                      qty int NOT NULL, row_version bigint NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id))";
const TENANT_ROWS: i64 = 20_000;

type Boxed = Box<dyn std::error::Error + Send + Sync>;

async fn connect(url: &str) -> Result<Client, Boxed> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn database_url(base: &str, name: &str) -> String {
    match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => format!("{base}/{name}"),
    }
}

/// One write as a host's write path does it: for every stamp of the route (two during
/// dual-write), one transaction carrying the route's fence token.
async fn write(
    clients: &BTreeMap<StampId, tokio::sync::Mutex<Client>>,
    route: &Assignment,
    id: i64,
    qty: i32,
) -> Result<bool, Boxed> {
    let tokens = FenceToken::for_write(route, SystemClock.now());
    if tokens.len() == 0 {
        return Ok(false); // frozen for the cutover: retry shortly
    }
    for token in tokens {
        let Some(client) = clients.get(&token.stamp) else {
            return Err("unknown stamp".into());
        };
        let mut c = client.lock().await;
        let tx = c.transaction().await?;
        set_write_token(&tx, &token).await?;
        let written = tx
            .execute(
                "INSERT INTO orders (tenant_id, id, item, qty) VALUES ($1, $2, 'widget', $3) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET qty = EXCLUDED.qty",
                &[&token.tenant.as_str(), &id, &qty],
            )
            .await;
        match written {
            Err(e) if fence_rejection(&e).is_some() => return Ok(false), // stale route: refresh, retry
            Err(e) => return Err(e.into()),
            Ok(_) => tx.commit().await?,
        }
    }
    Ok(true)
}

#[tokio::main]
async fn main() -> Result<(), Boxed> {
    let base = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = connect(&base).await?;
    let names = ["stamps_example_stamp_1", "stamps_example_stamp_2"];
    for name in names {
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        connect(&database_url(&base, name)).await?.batch_execute(ORDERS).await?;
    }
    let urls: Vec<String> = names.iter().map(|n| database_url(&base, n)).collect();

    // The registry (in memory here; PgRegistry in production) and the mover.
    let registry = Arc::new(InMemoryRegistry::new());
    for id in [StampId(1), StampId(2)] {
        let cap = Capacity::new([(Resource::Tenants, 1_000.0)], 0.0)?;
        registry
            .put_active_stamp(StampSpec::new(id, format!("stamp-{}", id.0), Region::new("eu")?, cap)?)
            .await?;
    }
    let mover = PgTableMover::builder(vec![MovedTable::new(
        "orders",
        "tenant_id",
        &["tenant_id", "id"],
        "row_version",
    )?
    .versioned_by_mover()])
    .stamp_url(StampId(1), &urls[0])?
    .stamp_url(StampId(2), &urls[1])?
    .batch_rows(5_000)
    .build()?;
    mover.install().await?;

    let mut clients = BTreeMap::new();
    for (i, s) in [StampId(1), StampId(2)].into_iter().enumerate() {
        clients.insert(s, tokio::sync::Mutex::new(connect(&urls[i]).await?));
    }
    let clients = Arc::new(clients);
    let acme = TenantId::new("acme")?;
    registry.assign(&TenantSpec::new(acme.clone()), StampId(1)).await?;
    registry
        .assign(&TenantSpec::new(TenantId::new("globex")?), StampId(1))
        .await?;
    let s1 = connect(&urls[0]).await?;
    s1.execute(
        "INSERT INTO orders (tenant_id, id, item, qty) SELECT 'acme', g, 'widget', 1 FROM generate_series(1, $1::bigint) g",
        &[&TENANT_ROWS],
    )
    .await?;
    s1.batch_execute(
        "INSERT INTO orders (tenant_id, id, item, qty) SELECT 'globex', g, 'gadget', 2 FROM generate_series(1, 1000) g",
    )
    .await?;
    let globex_before: i64 = s1
        .query_one(
            "SELECT sum(qty * id)::bigint FROM orders WHERE tenant_id = 'globex'",
            &[],
        )
        .await?
        .get(0);
    println!("stamp 1 holds acme ({TENANT_ROWS} orders) and globex (1000 orders)");

    // Two writers keep updating acme's orders through the registry's current route.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2i64 {
        let (registry, clients, stop, acme) = (registry.clone(), clients.clone(), stop.clone(), acme.clone());
        writers.push(tokio::spawn(async move {
            let mut acked: BTreeMap<i64, i32> = BTreeMap::new();
            let mut n = 0i32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = 1 + (i64::from(n) * 37 + w) % TENANT_ROWS;
                let route = registry.require_assignment(&acme).await?;
                if write(&clients, &route, id, n).await? {
                    acked.insert(id, n);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Ok::<_, Boxed>(acked)
        }));
    }

    // The move, step by step, as a migration worker runs it.
    let migrator = Migrator::new(registry.clone(), Arc::new(mover.clone()))
        .config(MigrationConfig::default().soak_window(Duration::from_millis(300)))?;
    let plan = migrator.plan(&acme, StampId(2)).await?;
    let mut migration = migrator.start(&plan, "pg_move example").await?;
    let started = Instant::now();
    let mut progress = None;
    while !migration.state().is_terminal() {
        migration.step().await?;
        if let Some(p) = mover.progress(StampId(2), migration.id()).await? {
            progress = Some(p);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await??);
    }

    // Check: every acknowledged write on the new stamp, nothing of acme left on the old one,
    // globex untouched.
    let s2 = connect(&urls[1]).await?;
    let rows: BTreeMap<i64, i32> = s2
        .query("SELECT id, qty FROM orders WHERE tenant_id = 'acme'", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let lost = acked.iter().filter(|(id, qty)| rows.get(id) != Some(qty)).count();
    let left: i64 = s1
        .query_one("SELECT count(*) FROM orders WHERE tenant_id = 'acme'", &[])
        .await?
        .get(0);
    let globex_after: i64 = s1
        .query_one(
            "SELECT sum(qty * id)::bigint FROM orders WHERE tenant_id = 'globex'",
            &[],
        )
        .await?
        .get(0);
    let validation = migration
        .progress()
        .validation
        .as_ref()
        .map(|v| v.summary.clone())
        .unwrap_or_default();
    let p = progress.ok_or("no progress was recorded")?;
    println!("migration {} ended {} in {took:.2?}", migration.id(), migration.state());
    println!("rows copied: {}", p.imported);
    println!("rows caught up: {}", p.caught_up);
    println!("validated: {validation}");
    println!("writes acknowledged during the move: {} (distinct orders)", acked.len());
    println!("acme rows on stamp 2: {}, left on stamp 1: {left}", rows.len());
    println!("globex untouched: {}", globex_before == globex_after);
    println!("lost writes: {lost}");
    drop((s1, s2, clients, mover));
    for name in names {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    if migration.state() != MigrationState::Completed || lost != 0 || left != 0 || globex_before != globex_after {
        return Err("the move did not complete cleanly".into());
    }
    Ok(())
}
