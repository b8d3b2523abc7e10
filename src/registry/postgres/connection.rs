//! Connection hygiene: the [`Lease`] a call holds on a pooled connection (closed rather than
//! pooled when the call did not finish) and the `on_conn!` macro that runs a call's body on
//! one, rolls back what a failed body left open, retries the races the server detected and
//! bounds the whole call by the configured deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Object;

use super::fault::{corrupt, Fault};
use crate::error::Error;

tokio::task_local! {
    /// Set once the running call has sent a statement that may commit a write.
    static COMMIT_SENT: Arc<AtomicBool>;
}

/// Records that the running call is about to send a statement that may commit (a `COMMIT`, or
/// a write in autocommit): from here on, a call cut by its deadline has an unknown outcome.
pub(super) fn mark_commit_sent() {
    let _ = COMMIT_SENT.try_with(|s| s.store(true, Ordering::Release));
}

/// Records that the statement that would have committed was never run (the server refused an
/// earlier statement of the same pipeline): a broken connection now means nothing committed.
pub(super) fn mark_commit_unsent() {
    let _ = COMMIT_SENT.try_with(|s| s.store(false, Ordering::Release));
}

/// Whether the running attempt has sent a statement that may commit a write.
pub(super) fn commit_sent() -> bool {
    COMMIT_SENT.try_with(|s| s.load(Ordering::Acquire)).unwrap_or(false)
}

/// Starts an attempt of the running call: nothing sent for commit yet.
pub(super) fn attempt_starts() {
    mark_commit_unsent();
}

/// The error of a call whose connection broke after its commit was sent: the write may have
/// committed (and, with replication, may survive a failover) with its acknowledgement lost.
pub(super) fn outcome_unknown(fault: Fault) -> Error {
    let cause = fault.into_error();
    Error::OutcomeUnknown {
        reason: format!(
            "the PostgreSQL connection broke after the write was sent for commit ({cause}); re-read before retrying"
        ),
    }
}

/// Runs a whole registry call under its deadline. At the deadline the call's future is
/// dropped (its [`Lease`] then closes the connection it held) and the error says whether a
/// write may have committed.
pub(super) async fn bounded<T>(deadline: Duration, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let sent = Arc::new(AtomicBool::new(false));
    match tokio::time::timeout(deadline, COMMIT_SENT.scope(sent.clone(), call)).await {
        Ok(r) => r,
        Err(_) if sent.load(Ordering::Acquire) => Err(Error::OutcomeUnknown {
            reason: format!(
                "PostgreSQL did not answer within the call's deadline ({deadline:?}) after the write was sent for commit"
            ),
        }),
        Err(_) => Err(Error::unavailable(format!(
            "PostgreSQL did not answer within the call's deadline ({deadline:?}); no write was sent for commit"
        ))),
    }
}

/// A pooled connection that goes back to the pool only if the call using it finished. A call
/// cancelled mid-flight (its future dropped, say by a timeout) may leave statements queued or a
/// transaction open on the connection; such a connection is closed instead (the server then
/// rolls the transaction back), so the next caller never inherits it.
pub(super) struct Lease {
    obj: Option<Object>,
    finished: bool,
}

impl Lease {
    pub(super) fn new(obj: Object) -> Self {
        Lease {
            obj: Some(obj),
            finished: false,
        }
    }

    pub(super) fn conn(&mut self) -> Result<&mut Object, Fault> {
        self.obj.as_mut().ok_or_else(|| corrupt("lease"))
    }

    /// Marks the call finished; `keep == false` closes the connection instead of pooling it.
    pub(super) fn finish(mut self, keep: bool) {
        self.finished = keep;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            if !self.finished {
                drop(Object::take(obj));
            }
        }
    }
}

/// Runs `$body` (an expression using `$c: &mut Object`, returning a future of
/// `Result<_, Fault>`) on a pooled connection; drops broken (or abandoned) connections from
/// the pool and retries races the server detected; the whole call, retries included, is
/// bounded by the configured deadline (see [`bounded`]).
macro_rules! on_conn {
    ($self:ident, retry_unique = $retry_unique:expr, |$c:ident| $body:expr) => {
        $crate::registry::postgres::connection::bounded($self.inner.call_timeout, async {
            let mut attempt: u32 = 0;
            loop {
                $crate::registry::postgres::connection::attempt_starts();
                let mut lease = match $self.inner.pool.get().await {
                    Ok(o) => Lease::new(o),
                    Err(e) => break Err(Fault::from(e).into_error()),
                };
                let result: std::result::Result<_, Fault> = match lease.conn() {
                    Ok($c) => $body.await,
                    Err(f) => Err(f),
                };
                match result {
                    Ok(v) => {
                        lease.finish(true);
                        break Ok(v);
                    }
                    Err(fault) => {
                        if fault.breaks_connection() && $crate::registry::postgres::connection::commit_sent() {
                            lease.finish(false);
                            break Err($crate::registry::postgres::connection::outcome_unknown(fault));
                        }
                        // Leave no transaction open on a pooled connection (a warning when none is).
                        let keep = !fault.breaks_connection()
                            && match lease.conn() {
                                Ok(c) => c.batch_execute("ROLLBACK").await.is_ok(),
                                Err(_) => false,
                            };
                        lease.finish(keep);
                        let race = fault.is_retryable_race()
                            || ($retry_unique && fault.code() == Some(&SqlState::UNIQUE_VIOLATION));
                        if race && attempt < $self.inner.max_retries {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)))).await;
                            continue;
                        }
                        break Err(fault.into_error());
                    }
                }
            }
        })
        .await
    };
}

pub(super) use on_conn;
