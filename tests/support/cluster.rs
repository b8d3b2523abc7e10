//! A throwaway replicated PostgreSQL cluster for the failover tests: one primary and hot
//! standbys on loopback ports, started from the installed binaries (`initdb`,
//! `pg_basebackup`, `pg_ctl`; through `runuser -u postgres` when running as root),
//! independent of the machine's main server, and removed when dropped.
//!
//! Each standby streams from the primary through its own [`Link`], a loopback TCP proxy the
//! test can cut and restore, so a test decides exactly which writes a standby receives.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pg::{bin_dir, free_port, is_root, pg_command};

/// A loopback TCP proxy that can be cut (open connections closed, new ones refused) and
/// restored. Runs on its own threads, so it works whatever the test's runtime does.
pub struct Link {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Link {
    /// A proxy from a fresh loopback port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Link {
        Self::start_delayed(upstream, Duration::ZERO)
    }

    /// Like [`start`](Self::start), holding every chunk `delay` before forwarding it (each
    /// way): a server `delay` away, as a primary in another region would be.
    pub fn start_delayed(upstream: u16, delay: Duration) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the link's port");
        let port = listener.local_addr().expect("link address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, o, s) = (cut.clone(), open.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                if c.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                if let Ok(mut list) = o.lock() {
                    for s in [client.try_clone(), server.try_clone()].into_iter().flatten() {
                        list.push(s);
                    }
                }
                for (from, to) in pairs {
                    if let (Ok(mut from), Ok(mut to)) = (from, to) {
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 16 * 1024];
                            loop {
                                match from.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if !delay.is_zero() {
                                            std::thread::sleep(delay);
                                        }
                                        if to.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Link { port, cut, open, stop }
    }

    /// Closes every connection through the link and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        if let Ok(mut list) = self.open.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One server of the cluster.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub data: PathBuf,
    pub running: bool,
}

impl Node {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// Replication mode of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names = '*'`: a commit waits for a standby to flush it.
    Synchronous,
    /// The default: commits do not wait for standbys.
    Asynchronous,
}

/// A primary and its standbys (`nodes[0]` starts as the primary).
pub struct Cluster {
    bin: PathBuf,
    root: bool,
    dir: PathBuf,
    pub nodes: Vec<Node>,
    replication: Replication,
    /// `links[i]` carries standby `nodes[i + 1]`'s replication stream.
    pub links: Vec<Link>,
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what} failed to run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Starts a primary and `standbys` hot standbys streaming from it through links.
    pub fn start(replication: Replication, standbys: usize) -> Cluster {
        let bin = bin_dir().expect("initdb, pg_basebackup and pg_ctl are installed (apt-get install postgresql)");
        let root = is_root();
        let dir = std::env::temp_dir().join(format!(
            "stamps-cluster-{}-{}",
            std::process::id(),
            free_port().expect("a free port")
        ));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        if root {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&dir), "chown");
        }
        watchdog(&bin, root, &dir);
        let mut cluster = Cluster {
            bin,
            root,
            dir: dir.clone(),
            nodes: Vec::new(),
            replication,
            links: Vec::new(),
        };
        let data = dir.join("n0");
        run(
            cluster
                .pg("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync"]),
            "initdb",
        );
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nfsync = off\nmax_connections = 300\nwal_level = replica\n\
             max_wal_senders = 8\nwal_keep_size = '256MB'\nhot_standby = on\nwal_receiver_timeout = '5s'\n\
             wal_retrieve_retry_interval = '200ms'\nwal_receiver_status_interval = '1s'\n",
        );
        if replication == Replication::Synchronous {
            conf.push_str("synchronous_standby_names = '*'\nsynchronous_commit = on\n");
        }
        cluster.append_conf(&data, &conf);
        let port = free_port().expect("a free port");
        cluster.nodes.push(Node {
            name: "n0".into(),
            port,
            data,
            running: false,
        });
        cluster.start_node(0);
        for i in 1..=standbys {
            let data = dir.join(format!("n{i}"));
            run(
                cluster
                    .pg("pg_basebackup")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-U",
                        "postgres",
                        "-X",
                        "stream",
                        "-R",
                        "-D",
                    ])
                    .arg(&data),
                "pg_basebackup",
            );
            let link = Link::start(port);
            cluster.append_conf(
                &data.join("postgresql.auto.conf"),
                &format!(
                    "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=n{i}'\n",
                    link.port
                ),
            );
            cluster.links.push(link);
            cluster.nodes.push(Node {
                name: format!("n{i}"),
                port: free_port().expect("a free port"),
                data,
                running: false,
            });
            cluster.start_node(i);
        }
        cluster
    }

    fn pg(&self, name: &str) -> Command {
        let mut c = pg_command(&self.bin.join(name), self.root);
        c.stdout(Stdio::null());
        c
    }

    fn append_conf(&self, path: &Path, text: &str) {
        let file = if path.is_dir() {
            path.join("postgresql.conf")
        } else {
            path.to_path_buf()
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
        f.write_all(text.as_bytes()).expect("write the configuration");
    }

    /// Starts node `i` (waits until it accepts connections).
    pub fn start_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let opts = format!("-p {} -k {}", node.port, self.dir.display());
        let log = self.dir.join(format!("{}.log", node.name));
        run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(&node.data)
                .args(["-o", &opts, "-l"])
                .arg(&log)
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        );
        self.nodes[i].running = true;
    }

    /// Stops node `i` at once (`-m immediate`: no shutdown checkpoint, as a crash would).
    pub fn kill(&mut self, i: usize) {
        run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(&self.nodes[i].data)
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
        self.nodes[i].running = false;
    }

    /// Promotes standby `i` and waits until it accepts writes. In a synchronous cluster with no
    /// standby left to wait for, commits would block forever: the new primary's
    /// `synchronous_standby_names` is cleared first, as a failover manager does.
    pub fn promote(&mut self, i: usize) {
        if self.replication == Replication::Synchronous {
            self.append_conf(
                &self.nodes[i].data.join("postgresql.auto.conf"),
                "synchronous_standby_names = ''\n",
            );
        }
        run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(&self.nodes[i].data)
                .args(["-w", "-t", "60", "promote"]),
            "pg_ctl promote",
        );
        if self.replication == Replication::Synchronous {
            run(
                self.pg("pg_ctl").arg("-D").arg(&self.nodes[i].data).arg("reload"),
                "pg_ctl reload",
            );
        }
    }

    /// `host=127.0.0.1,... port=...,...` URL naming every node, resolved to the one accepting
    /// writes (`target_session_attrs=read-write`), as a failover-aware client would be set up.
    pub fn multi_host_url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!(
            "postgres://postgres@{}/postgres?target_session_attrs=read-write&connect_timeout=2",
            hosts.join(",")
        )
    }

    /// Runs `sql` on node `i` with `psql`-free plumbing: a blocking driver connection.
    pub async fn query_i64(&self, i: usize, sql: &str) -> Result<i64, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.nodes[i].url(), tokio_postgres::NoTls).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let row = client.query_one(sql, &[]).await;
        drop(client);
        task.abort();
        row.map(|r| r.get::<_, i64>(0))
    }

    /// Waits until standby `i` has replayed everything the primary (`primary`) has written.
    pub async fn wait_caught_up(&self, primary: usize, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let target = self
                .query_i64(primary, "SELECT (pg_current_wal_lsn() - '0/0')::bigint")
                .await;
            let replayed = self
                .query_i64(i, "SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint")
                .await;
            if let (Ok(t), Ok(r)) = (target, replayed) {
                if r >= t {
                    return;
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join(format!("n{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "standby n{i} did not catch up within 60 s; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Stops every node and removes the directory once this process has exited, even when it
/// was killed before [`Cluster`]'s `Drop` ran.
fn watchdog(bin: &Path, root: bool, dir: &Path) {
    let pg_ctl = bin.join("pg_ctl");
    let stop = if root {
        format!(
            "runuser -u postgres -- '{}' -D \"$d\" -m immediate -w stop",
            pg_ctl.display()
        )
    } else {
        format!("'{}' -D \"$d\" -m immediate -w stop", pg_ctl.display())
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; for d in '{dir}'/n*; do {stop} >/dev/null 2>&1; done; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.links.clear();
        for node in &self.nodes {
            if node.running {
                let _ = self
                    .pg("pg_ctl")
                    .arg("-D")
                    .arg(&node.data)
                    .args(["-m", "immediate", "-w", "stop"])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
