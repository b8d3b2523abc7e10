//! The background task that wakes [`ChangeSignal`] followers: `LISTEN` on a dedicated
//! connection for immediate wake-ups, and a periodic read of the feed head as the fallback;
//! after each head read it probes the read replicas (their lag is measured against it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures_util::future::poll_fn;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Socket};

use super::connection::Lease;
use super::replicas::Replicas;
use crate::model::Version;
use crate::registry::ChangeSignal;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens a connection whose notifications go to the signals: the change feed's, and (for the
/// `_health` channel) the shared health view's.
pub(crate) trait Listen: Send + Sync {
    fn open<'a>(
        &'a self,
        config: &'a tokio_postgres::Config,
        signal: ChangeSignal,
        health: ChangeSignal,
    ) -> BoxFuture<'a, Result<(Client, JoinHandle<()>), tokio_postgres::Error>>;
}

/// [`Listen`] over the host's TLS connector (or `NoTls`).
pub(crate) struct TlsListen<T>(pub(crate) T);

impl<T> Listen for TlsListen<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn open<'a>(
        &'a self,
        config: &'a tokio_postgres::Config,
        signal: ChangeSignal,
        health: ChangeSignal,
    ) -> BoxFuture<'a, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        Box::pin(async move {
            let (client, mut connection) = config.connect(self.0.clone()).await?;
            let task = tokio::spawn(async move {
                loop {
                    match poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            // The health channel's payloads are `h<revision>`; the feed's are
                            // bare versions.
                            match n.payload().strip_prefix('h') {
                                Some(rev) => {
                                    if let Ok(v) = rev.parse::<u64>() {
                                        health.notify(Version(v));
                                    }
                                }
                                None => {
                                    if let Ok(v) = n.payload().parse::<u64>() {
                                        signal.notify(Version(v));
                                    }
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
            });
            Ok((client, task))
        })
    }
}

/// Aborts a task when dropped (the registry's last clone stops its watcher).
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the watcher needs.
pub(crate) struct Watch {
    pub(crate) pool: Pool,
    pub(crate) head_sql: String,
    pub(crate) listen_sql: String,
    pub(crate) listen: Option<(Arc<dyn Listen>, tokio_postgres::Config)>,
    pub(crate) signal: ChangeSignal,
    /// Woken by `NOTIFY` on the health channel (see `PgRegistry::health_signal`).
    pub(crate) health: ChangeSignal,
    pub(crate) interval: Duration,
    /// Bound of each head read and of opening the listener.
    pub(crate) deadline: Duration,
    /// Replicas to probe after each head read.
    pub(crate) replicas: Option<Arc<Replicas>>,
    pub(crate) probe_sql: String,
}

impl Watch {
    /// Runs until aborted: keeps a listener connection up (reconnecting on the next tick when
    /// it drops) and notifies the signal with the head read from the pool on every tick.
    pub(crate) async fn run(self) {
        let mut listener: Option<(Client, JoinHandle<()>)> = None;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Some((listen, config)) = &self.listen {
                let alive = listener
                    .as_ref()
                    .is_some_and(|(c, task)| !c.is_closed() && !task.is_finished());
                if !alive {
                    if let Some((_, task)) = listener.take() {
                        task.abort();
                    }
                    // Bounded: connecting and `LISTEN` on a path that stopped forwarding
                    // must not stall the polling below.
                    let open = async {
                        let (client, task) = listen
                            .open(config, self.signal.clone(), self.health.clone())
                            .await
                            .ok()?;
                        match tokio::time::timeout(self.deadline, client.batch_execute(&self.listen_sql)).await {
                            Ok(Ok(())) => Some((client, task)),
                            _ => {
                                task.abort();
                                None
                            }
                        }
                    };
                    listener = tokio::time::timeout(self.deadline, open).await.ok().flatten();
                }
            }
            if let Ok(head) = self.read_head().await {
                self.signal.notify(head);
                if let Some(r) = &self.replicas {
                    r.primary_head(head.0, Instant::now());
                }
            }
            if let Some(r) = &self.replicas {
                r.probe_all(&self.probe_sql).await;
            }
        }
    }

    /// Reads the head, bounded by the call deadline; a connection that did not answer in
    /// time is closed, not pooled.
    async fn read_head(&self) -> Result<Version, ()> {
        let read = async {
            let mut lease = Lease::new(self.pool.get().await.map_err(|_| ())?);
            let conn = lease.conn().map_err(|_| ())?;
            let stmt = conn.prepare_cached(&self.head_sql).await.map_err(|_| ())?;
            let row = conn.query_one(&stmt, &[]).await.map_err(|_| ())?;
            lease.finish(true);
            let head: i64 = row.try_get(0).map_err(|_| ())?;
            u64::try_from(head).map(Version).map_err(|_| ())
        };
        tokio::time::timeout(self.deadline, read).await.map_err(|_| ())?
    }
}
