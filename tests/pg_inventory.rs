//! `PgInventory` on the machine's PostgreSQL (never skipped): the distinct tenants of a stamp
//! database's declared tables, in byte order, paged without gaps or repeats, fed to
//! `reconcile` against a registry; bad declarations and an unreadable table are typed errors.

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;

use pg::{database_url, raw_client, unique_schema, SchemaGuard};
use stamps::reconcile::{reconcile, PgInventory, ReconcileOptions, StampInventory, TenantTable};
use stamps::*;

/// Two tenant-scoped tables in a scratch schema: `orders` (tenant_id) and `users` (tenant).
async fn stamp_database(schema: &str, orders: &[&str], users: &[&str]) {
    let raw = raw_client().await;
    raw.batch_execute(&format!(
        "CREATE SCHEMA \"{schema}\";
         CREATE TABLE \"{schema}\".orders (tenant_id text NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));
         CREATE TABLE \"{schema}\".users (tenant text, id bigint);
         CREATE INDEX ON \"{schema}\".users (tenant);"
    ))
    .await
    .unwrap();
    for (i, t) in orders.iter().enumerate() {
        for n in 0..3 {
            raw.execute(
                &format!("INSERT INTO \"{schema}\".orders VALUES ($1, $2)"),
                &[t, &((i * 10 + n) as i64)],
            )
            .await
            .unwrap();
        }
    }
    for (i, t) in users.iter().enumerate() {
        raw.execute(
            &format!("INSERT INTO \"{schema}\".users VALUES ($1, $2)"),
            &[t, &(i as i64)],
        )
        .await
        .unwrap();
    }
    raw.execute(&format!("INSERT INTO \"{schema}\".users VALUES (NULL, 99)"), &[])
        .await
        .unwrap();
}

fn inventory(schema: &str) -> PgInventory {
    PgInventory::connect(
        database_url(),
        vec![
            TenantTable::new(&format!("{schema}.orders"), "tenant_id").unwrap(),
            TenantTable::new(&format!("{schema}.users"), "tenant").unwrap(),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_every_tenant_once_in_byte_order() {
    let schema = unique_schema("inv");
    let _guard = SchemaGuard(schema.clone());
    // Byte order differs from most locales' order: uppercase first, `_` after `Z`, `b-x` after `b`.
    stamp_database(&schema, &["b", "a", "b-x", "Zed", "c_1"], &["a", "zz", "B", "b", "ab"]).await;
    let inv = inventory(&schema);
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = inv.tenants(after.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        all.extend(page.iter().map(|h| h.id.clone()));
        if page.len() < 2 {
            break;
        }
        after = page.last().map(|h| h.id.clone());
    }
    let mut want: Vec<String> = ["a", "ab", "B", "b", "b-x", "c_1", "Zed", "zz"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(all, want);
    assert!(inv.tenants(None, 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reads_a_postgres_stamp() {
    let schema = unique_schema("inv_rec");
    let _guard = SchemaGuard(schema.clone());
    stamp_database(&schema, &["acme", "ghost"], &["acme"]).await;
    let registry = InMemoryRegistry::new();
    let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
    registry
        .put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu").unwrap(), cap).unwrap())
        .await
        .unwrap();
    for t in ["acme", "globex"] {
        registry
            .assign(&TenantSpec::new(TenantId::new(t).unwrap()), StampId(1))
            .await
            .unwrap();
    }
    let inventories: Vec<(StampId, Arc<dyn StampInventory>)> = vec![(StampId(1), Arc::new(inventory(&schema)))];
    let report = reconcile(&registry, &inventories, &ReconcileOptions::default())
        .await
        .unwrap();
    assert!(report.is_complete());
    let found: Vec<(String, &str)> = report
        .findings
        .iter()
        .map(|f| (f.tenant.clone(), f.kind.as_str()))
        .collect();
    assert!(found.contains(&("ghost".to_string(), "orphan")), "{found:?}");
    assert!(found.contains(&("globex".to_string(), "missing")), "{found:?}");
    assert_eq!(found.len(), 2, "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_declarations_and_unreadable_tables_are_typed_errors() {
    for (table, column) in [
        ("orders; drop", "t"),
        ("a.b.c", "t"),
        ("Orders", "t"),
        ("orders", "Tenant"),
        ("", "t"),
        ("1t", "t"),
    ] {
        assert!(
            matches!(TenantTable::new(table, column), Err(Error::InvalidInput(_))),
            "{table} {column}"
        );
    }
    assert!(matches!(
        PgInventory::connect(database_url(), vec![]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        PgInventory::connect("not a url", vec![TenantTable::new("t", "c").unwrap()]),
        Err(Error::InvalidInput(_))
    ));
    let missing = PgInventory::connect(
        database_url(),
        vec![TenantTable::new("no_such_schema_x.t", "c").unwrap()],
    )
    .unwrap();
    let err = missing.tenants(None, 10).await.unwrap_err();
    assert!(err.reason.contains("does not exist"), "{err:?}");
}
