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
    /// coarse clock current.
    ///
    /// As with every `spawn*` in this crate, the returned handle is `#[must_use]`: dropping the
    /// [`Follower`] stops the work (both tasks are aborted), and [`Follower::detach`] leaves it
    /// running until the tokio runtime shuts down.
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
    /// router.spawn_follower().detach(); // follows until the runtime shuts down
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

/// The follower's tasks, from [`Router::spawn_follower`]. Dropping the handle stops them (they
/// are aborted); [`Follower::detach`] leaves them running until the tokio runtime shuts down.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let router = stamps::router::Router::new(stamps::InMemoryRegistry::new());
/// let follower = router.spawn_follower();
/// follower.abort(); // the same as drop(follower)
/// router.spawn_follower().detach();
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug)]
#[must_use = "dropping the handle stops the follower; call `detach` to keep it running"]
pub struct Follower {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Follower {
    /// Stops the follower (the same as dropping the handle).
    pub fn abort(self) {
        drop(self);
    }

    /// Leaves the follower running until the tokio runtime shuts down; nothing can stop it
    /// afterwards.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let router = stamps::router::Router::new(stamps::InMemoryRegistry::new());
    /// router.spawn_follower().detach();
    /// # }
    /// ```
    pub fn detach(mut self) {
        // Dropping a tokio `JoinHandle` detaches its task; `Drop` then finds nothing to abort.
        self.tasks.clear();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::model::{Capacity, Region, Resource, StampId, StampSpec, TenantId, TenantSpec};
    use crate::registry::{InMemoryRegistry, Registry, RegistryExt};
    use crate::router::{RouteError, Router};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Lets the runtime run whatever is ready (the test runs on a current-thread runtime, so
    /// the follower only makes progress while the test waits here).
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    async fn assign(registry: &InMemoryRegistry, tenant: &str) -> TestResult {
        registry
            .assign(&TenantSpec::new(TenantId::new(tenant)?), StampId(1))
            .await?;
        Ok(())
    }

    /// Dropping the handle stops the follower: a change made afterwards is not applied, and
    /// the coarse clock loses its ticker. After `detach`, changes keep being applied.
    #[tokio::test]
    async fn dropping_the_follower_stops_it_and_detach_keeps_it() -> TestResult {
        let registry = InMemoryRegistry::new();
        let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0)?;
        registry
            .put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu")?, cap)?)
            .await?;
        let router = Router::new(registry.clone());
        router.warm_up().await?; // tracks every tenant's changes

        let follower = router.spawn_follower();
        assign(&registry, "before-drop").await?;
        settle().await;
        assert!(
            router.route("before-drop").is_ok(),
            "a running follower applies changes"
        );

        drop(follower);
        settle().await;
        assert_eq!(router.shared.tickers.load(Ordering::Acquire), 0);
        assign(&registry, "after-drop").await?;
        settle().await;
        assert_eq!(router.route("after-drop"), Err(RouteError::Miss));

        router.spawn_follower().detach();
        assign(&registry, "after-detach").await?;
        settle().await;
        assert!(
            router.route("after-detach").is_ok(),
            "a detached follower applies changes"
        );
        assert!(router.route("after-drop").is_ok());
        assert_eq!(router.shared.tickers.load(Ordering::Acquire), 1);
        Ok(())
    }
}
