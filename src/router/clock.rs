//! The coarse clock: the millisecond time `route` reads, the tickers that keep it current
//! ([`Router::tick`], [`Router::spawn_clock_thread`] and its [`ClockThread`] handle).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::shared::Shared;
use super::Router;
use crate::registry::Registry;

impl<R: Registry + ?Sized> Router<R> {
    /// The current time on the router's clock
    /// ([`RouterBuilder::clock`](super::RouterBuilder::clock)): hosts compute `Retry-After`
    /// from it so a [`FakeClock`](crate::FakeClock) drives them too.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::*;
    /// let clock = FakeClock::starting_at(Timestamp::from_millis(5_000));
    /// let router = Router::builder(InMemoryRegistry::new()).clock(clock).build()?;
    /// assert_eq!(router.now(), Timestamp::from_millis(5_000));
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn now(&self) -> crate::time::Timestamp {
        self.shared.clock.now()
    }

    /// Refreshes the coarse clock from the router's clock. The tickers
    /// ([`spawn_clock_thread`](Self::spawn_clock_thread), `spawn_follower` with the `tokio` feature)
    /// call this; `route` reads the coarse clock only while one of them runs, and reads the
    /// router's clock itself otherwise, so a call without a ticker changes nothing but is
    /// harmless. TTLs hold either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stamps::router::{RouteError, Router};
    /// use stamps::*;
    /// let clock = FakeClock::new();
    /// let router = Router::builder(InMemoryRegistry::new())
    ///     .config(stamps::RouterConfig::default().ttl(Duration::from_secs(30))).clock(clock.clone()).build()?;
    /// router.preload([("acme", StampId(1), Epoch(1), AssignmentMode::Serving)])?;
    /// router.tick();
    /// assert_eq!(router.route("acme")?.stamp, StampId(1));
    /// clock.advance(Duration::from_secs(31));
    /// router.tick();
    /// assert_eq!(router.route("acme"), Err(RouteError::Miss)); // past its TTL
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tick(&self) {
        self.shared.tick();
    }

    /// Starts a plain thread that keeps the coarse clock current (every `tick`), so `route`
    /// reads one atomic instead of the clock. Without a ticker, `route` reads the clock
    /// directly (correct, a little slower).
    ///
    /// As with every `spawn*` in this crate, the returned handle is `#[must_use]`: dropping the
    /// [`ClockThread`] stops the work (the thread is told to exit and joined), and
    /// [`ClockThread::detach`] leaves the thread running for the rest of the program.
    ///
    /// ```
    /// use stamps::router::Router;
    /// use stamps::InMemoryRegistry;
    /// let router = Router::new(InMemoryRegistry::new());
    /// let ticker = router.spawn_clock_thread()?;
    /// drop(ticker); // stops the thread
    /// router.spawn_clock_thread()?.detach(); // ticks for the rest of the program
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_clock_thread(&self) -> std::io::Result<ClockThread> {
        let shared = self.shared.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        shared.tick();
        shared.tickers.fetch_add(1, Ordering::AcqRel);
        let guard = TickerGuard(shared.clone());
        let period = shared.config.tick;
        let handle = std::thread::Builder::new()
            .name("stamps-router-clock".into())
            .spawn(move || {
                let _guard = guard;
                while !stop2.load(Ordering::Acquire) {
                    _guard.0.tick();
                    std::thread::sleep(period);
                }
            });
        match handle {
            Ok(h) => Ok(ClockThread { stop, handle: Some(h) }),
            Err(e) => Err(e),
        }
    }
}

/// Decrements the ticker count when a ticker ends.
pub(super) struct TickerGuard(pub(super) Arc<Shared>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.0.tickers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A thread keeping a router's coarse clock current, from [`Router::spawn_clock_thread`].
/// Dropping the handle stops the thread (it is told to exit and joined, which takes up to one
/// tick); [`ClockThread::detach`] leaves it running for the rest of the program.
///
/// ```
/// use stamps::router::Router;
/// let router = Router::new(stamps::InMemoryRegistry::new());
/// let ticker = router.spawn_clock_thread()?;
/// drop(ticker); // stops and joins the thread
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping the handle stops the clock thread; call `detach` to keep it running"]
pub struct ClockThread {
    stop: Arc<AtomicBool>,
    /// `None` once detached.
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ClockThread {
    /// Leaves the thread running for the rest of the program (it keeps the router's shared
    /// state alive); nothing can stop it afterwards.
    ///
    /// ```
    /// use stamps::router::Router;
    /// let router = Router::new(stamps::InMemoryRegistry::new());
    /// router.spawn_clock_thread()?.detach();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn detach(mut self) {
        // Dropping a `JoinHandle` detaches the thread; `Drop` then has nothing to stop.
        self.handle = None;
    }
}

impl Drop for ClockThread {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.stop.store(true, Ordering::Release);
            let _ = h.join();
        }
    }
}

impl Shared {
    #[inline]
    pub(super) fn now_ms(&self) -> u64 {
        if self.tickers.load(Ordering::Relaxed) > 0 {
            // The coarse clock lags real time by up to one tick: add it, so that TTLs are never
            // overrun (an entry may expire up to one tick early instead).
            self.coarse.load(Ordering::Relaxed).saturating_add(self.tick_ms)
        } else {
            self.clock.now().as_millis()
        }
    }

    pub(super) fn tick(&self) {
        self.coarse.fetch_max(self.clock.now().as_millis(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use crate::registry::InMemoryRegistry;
    use crate::router::Router;
    use crate::time::Clock;
    use crate::time::FakeClock;

    /// Waits (bounded) until `done` holds.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        done()
    }

    /// Dropping the handle stops the thread (the coarse clock no longer follows the router's
    /// clock); after `detach` the thread keeps ticking.
    #[test]
    fn dropping_the_clock_thread_stops_it_and_detach_keeps_it() -> std::io::Result<()> {
        let clock = FakeClock::new();
        let router = Router::builder(InMemoryRegistry::new())
            .clock(clock.clone())
            .build()
            .map_err(std::io::Error::other)?;
        let coarse = || router.shared.coarse.load(Ordering::Relaxed);
        let now = || clock.now().as_millis();

        let ticker = router.spawn_clock_thread()?;
        clock.advance(Duration::from_secs(1));
        assert!(eventually(|| coarse() == now()), "a running thread ticks");
        drop(ticker);
        assert_eq!(router.shared.tickers.load(Ordering::Acquire), 0);
        clock.advance(Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(50));
        assert!(coarse() < now(), "a dropped thread no longer ticks");

        router.spawn_clock_thread()?.detach();
        clock.advance(Duration::from_secs(1));
        assert!(eventually(|| coarse() == now()), "a detached thread keeps ticking");
        assert_eq!(router.shared.tickers.load(Ordering::Acquire), 1);
        Ok(())
    }
}
