//! Injected time: a [`Clock`] trait, the system clock and a fake clock for tests.
//!
//! Every time-dependent part of the crate (registry timestamps, router TTLs, health
//! hysteresis, migration soak windows) reads a [`Clock`], so tests advance time by hand
//! instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (UTC).
///
/// A plain integer so that it is `Copy`, totally ordered, cheap to store in an atomic and
/// identical in every registry backend.
///
/// ```
/// use stamps::Timestamp;
/// use std::time::Duration;
/// let t = Timestamp::from_millis(1_000);
/// assert_eq!(t + Duration::from_secs(2), Timestamp::from_millis(3_000));
/// assert_eq!(Timestamp::from_millis(3_000).saturating_since(t), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A source of the current time.
///
/// # Contract
/// `now` is cheap (it may be called on hot paths, though the router caches it in an atomic)
/// and never goes backwards for one clock instance.
///
/// # Implementing
/// Wrap whatever time source the host trusts. Tests use [`FakeClock`].
///
/// # Example
/// ```
/// use stamps::{Clock, SystemClock};
/// assert!(SystemClock.now().as_millis() > 0);
/// ```
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The operating system's wall clock.
///
/// A wall clock stepped backwards (NTP) can return an earlier time; nothing in the crate depends
/// on time for correctness of placement, epochs or the change feed, only for TTLs and windows,
/// which a step merely lengthens or shortens.
///
/// ```
/// use stamps::{Clock, SystemClock};
/// assert!(SystemClock.now().as_millis() > 1_600_000_000_000);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to: for tests of TTLs, staleness, hysteresis and soak
/// windows without sleeping. Clones share the same time.
///
/// ```
/// use stamps::{Clock, FakeClock};
/// use std::time::Duration;
/// let clock = FakeClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(61));
/// assert_eq!(clock.now().saturating_since(t0), Duration::from_secs(61));
/// ```
#[derive(Debug, Clone)]
pub struct FakeClock {
    ms: Arc<AtomicU64>,
}

impl FakeClock {
    /// A fake clock starting at an arbitrary fixed instant (2026-01-01T00:00:00Z).
    pub fn new() -> Self {
        Self::starting_at(Timestamp::from_millis(1_767_225_600_000))
    }

    /// A fake clock starting at `t`.
    pub fn starting_at(t: Timestamp) -> Self {
        FakeClock {
            ms: Arc::new(AtomicU64::new(t.as_millis())),
        }
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the time; refuses to go backwards (the [`Clock`] contract), keeping the later time.
    pub fn set(&self, t: Timestamp) {
        self.ms.fetch_max(t.as_millis(), Ordering::SeqCst);
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.ms.load(Ordering::SeqCst))
    }
}
