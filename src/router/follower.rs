//! The tokio follower: [`Router::spawn_follower`] and its [`Follower`] handle.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::clock::TickerGuard;
use super::Router;
use crate::registry::Registry;

#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<R: Registry + ?Sized> Router<R> {
    /// Spawns the change-feed follower on the current tokio runtime: it calls
    /// [`Router::sync`], then waits for the registry's [`change_signal`](Registry::change_signal)
    /// (or `poll_interval`), forever; registry errors back off and retry. It also keeps the
    /// coarse clock current. Dropping the returned handle stops both tasks.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = InMemoryRegistry::new();
    /// let router = Router::new(registry.clone());
    /// router.warm_up().await?;
    /// let follower = router.spawn_follower();
    /// drop(follower); // stops following
    /// # Ok(()) }
    /// ```
    pub fn spawn_follower(&self) -> Follower {
        let ticker = {
            let shared = self.shared.clone();
            shared.tick();
            shared.tickers.fetch_add(1, Ordering::AcqRel);
            let guard = TickerGuard(shared);
            tokio::spawn(async move {
                let guard = guard;
                let period = guard.0.config.tick;
                loop {
                    guard.0.tick();
                    tokio::time::sleep(period).await;
                }
            })
        };
        let me = self.clone();
        let follower = tokio::spawn(async move {
            let signal = me.registry.change_signal();
            let poll = me.shared.config.poll_interval;
            let mut backoff = Duration::from_millis(50);
            loop {
                match me.sync().await {
                    Ok(_) => {
                        backoff = Duration::from_millis(50);
                        let _ = tokio::time::timeout(poll, signal.changed(me.cursor())).await;
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(poll.max(Duration::from_millis(50)));
                    }
                }
            }
        });
        Follower {
            tasks: vec![follower, ticker],
        }
    }
}

/// The follower's tasks; dropping the handle aborts them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let router = stamps::router::Router::new(stamps::InMemoryRegistry::new());
/// let follower = router.spawn_follower();
/// follower.abort();
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug)]
pub struct Follower {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Follower {
    /// Stops the follower (the same as dropping the handle).
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
