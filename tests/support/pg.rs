//! Finding (or starting) the PostgreSQL server the tests, benches and examples use.
//!
//! - `DATABASE_URL` set: that server; if it does not answer, the run fails with a message.
//! - unset: the default `postgres://postgres@127.0.0.1:5432/test` if something answers there;
//!   otherwise a throwaway server from the installed binaries (`initdb` + `pg_ctl` in a
//!   temporary directory, through `runuser -u postgres` when running as root), stopped by a
//!   watchdog when the test process exits;
//! - no PostgreSQL installed: the run fails saying how to install it or set `DATABASE_URL`.
//!
//! Never skips: under `CI=true` (and everywhere else) an unreachable server fails the run.
//! `STAMPS_PG_THROWAWAY=1` (with `DATABASE_URL` unset) forces the throwaway server, to check
//! the fresh-machine path on a machine whose server is running.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The default server of the project's machines.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The URL of a reachable server (resolved once per process).
pub fn database_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(resolve)
}

fn resolve() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let cfg: tokio_postgres::Config = url
            .parse()
            .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL ({e}): {url}"));
        if !answers(&cfg) {
            panic!(
                "DATABASE_URL={url} does not answer. Start that server, or unset DATABASE_URL to use \
                 {DEFAULT_URL} (or a throwaway server the tests start from the installed binaries)."
            );
        }
        return url;
    }
    let cfg: tokio_postgres::Config = DEFAULT_URL.parse().expect("default URL parses");
    let forced = std::env::var("STAMPS_PG_THROWAWAY").is_ok_and(|v| v == "1");
    if !forced && answers(&cfg) {
        return DEFAULT_URL.to_string();
    }
    match start_throwaway() {
        Ok(url) => url,
        Err(why) => panic!(
            "no PostgreSQL server answers at {DEFAULT_URL} and none could be started: {why}.\n\
             Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`) \
             so the tests can start a throwaway server, or point DATABASE_URL at a server \
             (postgres://user@host:port/db)."
        ),
    }
}

/// Whether something accepts TCP connections at the config's first host and port.
fn answers(cfg: &tokio_postgres::Config) -> bool {
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        // A Unix socket: assume it answers; the first connection reports otherwise.
        Some(_) => return true,
        None => "localhost".to_string(),
    };
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)) else {
        return false;
    };
    let addrs: Vec<SocketAddr> = addrs.collect();
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
}

/// The directory holding `initdb` and `pg_ctl`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").exists() {
                return Some(dir);
            }
        }
    }
    // Debian keeps them in a versioned directory, off PATH: take the newest.
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root (initdb refuses root).
pub fn pg_command(bin: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn start_throwaway() -> Result<String, String> {
    let bin = bin_dir()
        .ok_or("initdb and pg_ctl were not found (no pg_config, no /usr/lib/postgresql/*/bin, not on PATH)")?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("stamps-pg-{}-{}", std::process::id(), free_port()?));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err("running as root and cannot give the temporary directory to the postgres user".into());
        }
    }
    let data = dir.join("data");
    let out = pg_command(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "--no-sync"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("initdb failed to run: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port()?;
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
        dir.display()
    );
    let out = pg_command(&bin.join("pg_ctl"), root)
        .arg("-D")
        .arg(&data)
        .args(["-o", &opts, "-l"])
        .arg(dir.join("log"))
        .args(["-w", "start"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("pg_ctl failed to run: {e}"))?;
    if !out.status.success() {
        return Err(format!("pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // Stop the server and remove the directory once this process has exited.
    let stop = if root {
        format!(
            "runuser -u postgres -- '{}' -D '{}' -m fast -w stop",
            bin.join("pg_ctl").display(),
            data.display()
        )
    } else {
        format!(
            "'{}' -D '{}' -m fast -w stop",
            bin.join("pg_ctl").display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the watchdog that stops the throwaway server: {e}"))?;
    eprintln!(
        "started a throwaway PostgreSQL server on 127.0.0.1:{port} in {}",
        dir.display()
    );
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

/// A schema name unique to this process and call, for one test.
pub fn unique_schema(hint: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let hint: String = hint
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .take(20)
        .collect();
    format!("t_{hint}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A plain driver connection for the tests' own SQL.
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(database_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Drops a test schema when dropped (also when the test panics).
pub struct SchemaGuard(pub String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(database_url(), tokio_postgres::NoTls).await {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                        ))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Polls until a backend of `app` waits on a lock; returns its pid.
pub async fn blocked_backend(client: &tokio_postgres::Client, app: &str) -> i32 {
    for _ in 0..1000 {
        let row = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no backend of {app} blocked on a lock");
}

/// Waits for a backend of `app` to block on a lock and terminates it; whether it was.
pub async fn kill_blocked_backend(client: &tokio_postgres::Client, app: &str) -> bool {
    let pid = blocked_backend(client, app).await;
    client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0)
}

/// A migrated `PgRegistry` in a fresh schema (dropped with the guard), configured by `cfg`.
pub async fn fresh_registry(
    hint: &str,
    cfg: impl FnOnce(stamps::registry::postgres::PgConfig) -> stamps::registry::postgres::PgConfig,
) -> (stamps::registry::postgres::PgRegistry, SchemaGuard) {
    let schema = unique_schema(hint);
    let guard = SchemaGuard(schema.clone());
    let config = stamps::registry::postgres::PgConfig::from_url(database_url())
        .unwrap()
        .schema(&schema)
        .unwrap();
    let registry = stamps::registry::postgres::PgRegistry::connect(cfg(config))
        .await
        .unwrap();
    registry.migrate().await.unwrap();
    (registry, guard)
}
