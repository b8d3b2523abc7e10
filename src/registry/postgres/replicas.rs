//! Read replicas: a pool per hot standby, the lag each one is measured at, and choosing one
//! for a read.
//!
//! The background task ([`super::watch`]) records the primary's feed head on every tick and
//! then probes each replica's head: a replica's lag is the time since it last held a head the
//! primary had then (so it is at most the true lag plus one tick, and grows while the replica
//! is cut off, however quiet the primary is). A read picks a reachable replica within
//! [`PgConfig::max_replica_lag`](super::PgConfig::max_replica_lag); the read itself checks,
//! in the same snapshot as its data, that the replica's head is at least what this registry
//! has already handed out, and asks the primary otherwise.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use parking_lot::Mutex;

use super::connection::Lease;
use crate::model::Version;

/// What an operator sees of one replica ([`PgRegistry::replicas`](super::PgRegistry::replicas)).
///
/// ```
/// # async fn demo(registry: stamps::registry::postgres::PgRegistry) {
/// for r in registry.replicas() {
///     println!("{}: usable {} lag {:?} head {} reads {}", r.label, r.usable, r.lag, r.head, r.reads);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// `host:port` of the replica.
    pub label: String,
    /// Whether the last probe answered.
    pub reachable: bool,
    /// Whether it answered as a standby (in recovery). A server that answers as a primary
    /// (a promoted standby, or a former primary that came back without being rewound) serves
    /// no reads as a replica: the primary connection finds the real primary.
    pub standby: bool,
    /// The feed head the last probe read.
    pub head: Version,
    /// How far behind the primary it was measured (`None` before it was ever seen caught up).
    pub lag: Option<Duration>,
    /// Whether reads may go to it now (reachable, a standby, and within the lag limit).
    pub usable: bool,
    /// Reads it answered.
    pub reads: u64,
    /// Reads it was asked but the primary answered (behind the caller, unreachable, or an
    /// answer only the primary may give).
    pub fallbacks: u64,
}

#[derive(Debug, Default)]
struct Probe {
    reachable: bool,
    standby: bool,
    head: u64,
    caught_up_at: Option<Instant>,
}

/// One replica.
pub(crate) struct Replica {
    pub(crate) label: String,
    pub(crate) pool: Pool,
    probe: Mutex<Probe>,
    reads: AtomicU64,
    fallbacks: AtomicU64,
}

impl Replica {
    pub(crate) fn new(label: String, pool: Pool) -> Replica {
        Replica {
            label,
            pool,
            probe: Mutex::new(Probe::default()),
            reads: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// A read it answered.
    pub(crate) fn served(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// A read the primary answered instead; `broken` when the replica failed (it is then not
    /// used until the next probe answers).
    pub(crate) fn fell_back(&self, broken: bool) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        if broken {
            self.probe.lock().reachable = false;
        }
    }
}

/// The configured replicas and the primary heads they are measured against.
pub(crate) struct Replicas {
    pub(crate) list: Vec<Replica>,
    pub(crate) max_lag: Duration,
    pub(crate) read_timeout: Duration,
    next: AtomicUsize,
    /// Recent (time, primary head) samples, oldest first.
    primary: Mutex<VecDeque<(Instant, u64)>>,
}

/// Samples kept: enough to measure lags up to a minute at the default 1 s tick.
const SAMPLES: usize = 64;

impl Replicas {
    pub(crate) fn new(list: Vec<Replica>, max_lag: Duration, read_timeout: Duration) -> Replicas {
        Replicas {
            list,
            max_lag,
            read_timeout,
            next: AtomicUsize::new(0),
            primary: Mutex::new(VecDeque::with_capacity(SAMPLES)),
        }
    }

    /// Records the primary's head read at `at`.
    pub(crate) fn primary_head(&self, head: u64, at: Instant) {
        let mut s = self.primary.lock();
        if s.len() == SAMPLES {
            s.pop_front();
        }
        s.push_back((at, head));
    }

    /// Records a probe of replica `i`: unreachable (`None`) or its head and whether it is a
    /// standby.
    pub(crate) fn probed(&self, i: usize, answer: Option<(u64, bool)>) {
        let head = answer.map(|(h, _)| h);
        let Some(replica) = self.list.get(i) else { return };
        let caught_up = head.and_then(|h| {
            let s = self.primary.lock();
            s.iter().rev().find(|(_, p)| *p <= h).map(|(t, _)| *t)
        });
        let mut p = replica.probe.lock();
        p.reachable = head.is_some();
        if let Some((h, standby)) = answer {
            p.head = h;
            p.standby = standby;
        }
        if let Some(t) = caught_up {
            p.caught_up_at = Some(p.caught_up_at.map_or(t, |old| old.max(t)));
        }
    }

    fn lag(p: &Probe, now: Instant) -> Option<Duration> {
        p.caught_up_at.map(|t| now.saturating_duration_since(t))
    }

    fn usable(&self, p: &Probe, now: Instant) -> bool {
        p.reachable && p.standby && Self::lag(p, now).is_some_and(|l| l <= self.max_lag)
    }

    /// A usable replica, taking turns among them; `None` sends the read to the primary.
    pub(crate) fn pick(&self) -> Option<&Replica> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let now = Instant::now();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| &self.list[(first + k) % n]).find(|r| {
            let p = r.probe.lock();
            self.usable(&p, now)
        })
    }

    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        self.list
            .iter()
            .map(|r| {
                let p = r.probe.lock();
                let lag = Self::lag(&p, now);
                ReplicaStatus {
                    label: r.label.clone(),
                    reachable: p.reachable,
                    standby: p.standby,
                    head: Version(p.head),
                    lag,
                    usable: self.usable(&p, now),
                    reads: r.reads.load(Ordering::Relaxed),
                    fallbacks: r.fallbacks.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Probes every replica (concurrently, each bounded by the read timeout).
    pub(crate) async fn probe_all(&self, sql: &str) {
        let probes = self.list.iter().map(|r| async move {
            let read = async {
                let mut lease = Lease::new(r.pool.get().await.ok()?);
                let conn = lease.conn().ok()?;
                let stmt = conn.prepare_cached(sql).await.ok()?;
                let row = conn.query_one(&stmt, &[]).await.ok()?;
                lease.finish(true);
                let head: i64 = row.try_get("head").ok()?;
                let standby: bool = row.try_get("standby").ok()?;
                Some((u64::try_from(head).ok()?, standby))
            };
            tokio::time::timeout(self.read_timeout, read).await.ok().flatten()
        });
        let heads = futures_util::future::join_all(probes).await;
        for (i, head) in heads.into_iter().enumerate() {
            self.probed(i, head);
        }
    }
}

/// Runs `$body` (a future of `Result<Option<T>, Fault>` using `$c: &mut Object`) on a usable
/// replica, bounded by the replica read timeout. `Some(v)` is the replica's answer; `None`
/// means the primary must answer: no usable replica, the replica failed or was too slow
/// (counted, and a failed one is left out until its next probe), or the body returned
/// `Ok(None)` because only the primary may give this answer.
macro_rules! on_replica {
    ($self:ident, |$c:ident| $body:expr) => {
        async {
            let replicas = $self.inner.replicas.as_ref()?;
            let replica = replicas.pick()?;
            let attempt = async {
                let mut lease = Lease::new(replica.pool.get().await.map_err(|_| ())?);
                let result: std::result::Result<Option<_>, Fault> = match lease.conn() {
                    Ok($c) => $body.await,
                    Err(f) => Err(f),
                };
                match result {
                    Ok(v) => {
                        lease.finish(true);
                        Ok(v)
                    }
                    Err(_) => Err(()),
                }
            };
            match tokio::time::timeout(replicas.read_timeout, attempt).await {
                Ok(Ok(Some(v))) => {
                    replica.served();
                    Some(v)
                }
                Ok(Ok(None)) => {
                    replica.fell_back(false);
                    None
                }
                Ok(Err(())) | Err(_) => {
                    replica.fell_back(true);
                    None
                }
            }
        }
        .await
    };
}

pub(super) use on_replica;

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: usize) -> Replicas {
        let list = (0..n)
            .map(|i| {
                let mgr = deadpool_postgres::Manager::new(tokio_postgres::Config::new(), tokio_postgres::NoTls);
                let pool = Pool::builder(mgr).max_size(1).build().expect("pool");
                Replica::new(format!("r{i}"), pool)
            })
            .collect();
        Replicas::new(list, Duration::from_secs(5), Duration::from_secs(1))
    }

    #[test]
    fn lag_is_time_since_the_replica_held_the_primarys_head() {
        let r = replicas(2);
        assert!(r.pick().is_none(), "never probed: not usable");
        let t0 = Instant::now() - Duration::from_secs(20);
        r.primary_head(10, t0);
        r.primary_head(20, t0 + Duration::from_secs(10));
        r.primary_head(30, t0 + Duration::from_secs(19));
        r.probed(0, Some((30, true)));
        r.probed(1, Some((25, true)));
        let s = r.status();
        assert!(s[0].usable && s[0].lag.unwrap() < Duration::from_secs(2), "{s:?}");
        assert!(!s[1].usable && s[1].lag.unwrap() >= Duration::from_secs(9), "{s:?}");
        for _ in 0..4 {
            assert_eq!(r.pick().map(|x| x.label.as_str()), Some("r0"));
        }
        // Unreachable: out until a probe answers; a failed read does the same.
        r.probed(0, None);
        assert!(r.pick().is_none());
        r.probed(0, Some((30, true)));
        r.list[0].fell_back(true);
        assert!(r.pick().is_none());
        assert_eq!(r.status()[0].fallbacks, 1);
    }

    #[test]
    fn a_quiet_primary_keeps_a_caught_up_replica_fresh_and_a_cut_one_ages() {
        let r = replicas(2);
        let now = Instant::now();
        for k in (0..10).rev() {
            r.primary_head(7, now - Duration::from_secs(k));
        }
        r.probed(0, Some((7, true)));
        r.probed(1, Some((6, true)));
        let s = r.status();
        assert!(s[0].usable, "{s:?}");
        assert!(!s[1].usable && s[1].lag.is_none(), "never caught up: {s:?}");
        // Answering as a primary (promoted, or a former primary back without a rewind): no reads.
        r.probed(0, Some((7, false)));
        assert!(!r.status()[0].usable && r.pick().is_none());
    }
}
