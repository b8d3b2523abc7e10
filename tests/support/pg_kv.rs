//! Two throwaway stamp databases with a `kv` table guarded by `PgTableMover`, and a data
//! plane that writes them the way a host's write path does (fence token per transaction).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stamps::migration::postgres::{fence_rejection, set_write_token, MovedTable, PgTableMover};
use stamps::migration::FenceToken;
use stamps::testing::migration::DataPlane;
use stamps::*;
use tokio_postgres::{Client, NoTls};

use super::pg::database_url;

pub const KV: &str = "CREATE TABLE kv (tenant text NOT NULL, k text NOT NULL, v text NOT NULL, \
                      ver bigint NOT NULL DEFAULT 0, PRIMARY KEY (tenant, k))";

/// The URL of database `name` on the test server.
pub fn url_of(name: &str) -> String {
    let base = database_url();
    match base.rfind('/') {
        Some(i) => format!("{}/{name}", &base[..i]),
        None => format!("{base}/{name}"),
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to a stamp database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Databases created for one test, dropped when dropped.
pub struct Databases(pub Vec<String>);

impl Databases {
    /// `n` fresh databases, each with the `kv` table and `extra` SQL.
    pub async fn create(hint: &str, n: usize, extra: &str) -> Databases {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = connect(database_url()).await;
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!(
                "mv_{hint}_{}_{}_{i}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                admin.batch_execute(&sql).await.expect("create a stamp database");
            }
            let c = connect(&url_of(&name)).await;
            c.batch_execute(&format!("{KV}; {extra}"))
                .await
                .expect("create the tables");
            names.push(name);
        }
        Databases(names)
    }

    pub fn url(&self, i: usize) -> String {
        url_of(&self.0[i])
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        let names = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(database_url(), NoTls).await {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    for n in names {
                        let _ = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// The `kv` table as the mover declares it (versions stamped by the mover's trigger).
pub fn kv_table() -> MovedTable {
    MovedTable::new("kv", "tenant", &["tenant", "k"], "ver")
        .unwrap()
        .versioned_by_mover()
}

/// A mover over stamps 1 and 2 of `dbs`, installed.
pub async fn mover(dbs: &Databases, batch: u64) -> PgTableMover {
    let m = PgTableMover::builder(vec![kv_table()])
        .stamp_url(StampId(1), &dbs.url(0))
        .unwrap()
        .stamp_url(StampId(2), &dbs.url(1))
        .unwrap()
        .batch_rows(batch)
        .delete_batch(batch)
        .build()
        .unwrap();
    m.install().await.unwrap();
    m
}

/// Writes `kv` rows as a host does: refused while frozen (by `clock`), otherwise one
/// transaction per stamp of the route, each with its fence token.
pub struct PgKv {
    pub stamps: BTreeMap<StampId, Arc<tokio::sync::Mutex<Client>>>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PgKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv").field("stamps", &self.stamps.keys()).finish()
    }
}

/// Why a write did not land.
#[derive(Debug)]
pub enum KvError {
    Frozen,
    Fenced(String),
    Other(String),
}

impl PgKv {
    pub async fn new(dbs: &Databases, clock: impl Clock) -> PgKv {
        let mut stamps = BTreeMap::new();
        for (i, s) in [StampId(1), StampId(2)].into_iter().enumerate() {
            stamps.insert(s, Arc::new(tokio::sync::Mutex::new(connect(&dbs.url(i)).await)));
        }
        PgKv {
            stamps,
            clock: Arc::new(clock),
        }
    }

    pub async fn put(&self, route: &Assignment, key: &str, value: Option<&str>) -> Result<(), KvError> {
        let now = self.clock.now();
        if route.mode.is_frozen_at(now) {
            return Err(KvError::Frozen);
        }
        for token in FenceToken::for_write(route, now) {
            self.put_token(&token, key, value).await?;
        }
        Ok(())
    }

    /// One stamp's write with `token` (`None` deletes the key).
    pub async fn put_token(&self, token: &FenceToken, key: &str, value: Option<&str>) -> Result<(), KvError> {
        let client = self
            .stamps
            .get(&token.stamp)
            .ok_or(KvError::Other("no such stamp".into()))?;
        let mut c = client.lock().await;
        let tx = c.transaction().await.map_err(|e| KvError::Other(e.to_string()))?;
        set_write_token(&tx, token)
            .await
            .map_err(|e| KvError::Other(e.to_string()))?;
        let tenant = token.tenant.as_str();
        let r = match value {
            Some(v) => {
                tx.execute(
                    "INSERT INTO kv (tenant, k, v) VALUES ($1, $2, $3) ON CONFLICT (tenant, k) DO UPDATE SET v = EXCLUDED.v",
                    &[&tenant, &key, &v],
                )
                .await
            }
            None => tx.execute("DELETE FROM kv WHERE tenant = $1 AND k = $2", &[&tenant, &key]).await,
        };
        match r {
            Err(e) => match fence_rejection(&e) {
                Some(f) => Err(KvError::Fenced(f.to_string())),
                None => Err(KvError::Other(e.to_string())),
            },
            Ok(_) => tx.commit().await.map_err(|e| KvError::Other(e.to_string())),
        }
    }

    pub async fn rows(&self, stamp: StampId, tenant: &str) -> BTreeMap<String, String> {
        let Some(client) = self.stamps.get(&stamp) else {
            return BTreeMap::new();
        };
        let c = client.lock().await;
        c.query("SELECT k, v FROM kv WHERE tenant = $1", &[&tenant])
            .await
            .expect("read kv")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

#[async_trait]
impl DataPlane for PgKv {
    async fn write(&self, route: &Assignment, key: &str, value: &str) -> Result<(), String> {
        self.put(route, key, Some(value)).await.map_err(|e| format!("{e:?}"))
    }

    async fn read_all(&self, stamp: StampId, tenant: &TenantId) -> BTreeMap<String, String> {
        self.rows(stamp, tenant.as_str()).await
    }
}
