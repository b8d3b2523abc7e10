//! Connection hygiene: the [`Lease`] a call holds on a pooled connection (closed rather than
//! pooled when the call did not finish) and the `on_conn!` macro that runs a call's body on
//! one, rolls back what a failed body left open and retries the races the server detected.

use deadpool_postgres::Object;

use super::fault::{corrupt, Fault};

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
/// the pool and retries races the server detected.
macro_rules! on_conn {
    ($self:ident, retry_unique = $retry_unique:expr, |$c:ident| $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
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
    }};
}

pub(super) use on_conn;
