//! A runtime-agnostic "the change feed moved" signal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::model::Version;

#[derive(Default)]
struct Inner {
    state: Mutex<SignalState>,
    cond: Condvar,
}

#[derive(Default)]
struct SignalState {
    head: Version,
    wakers: Vec<Waker>,
}

/// Wakes change-feed followers as soon as a registry has a change past a version.
///
/// The signal only says *that* the feed moved; followers then read
/// [`Registry::changes_since`](crate::Registry::changes_since), so correctness never depends on
/// the signal (a missed wake-up costs latency, not a change). It works with any async runtime
/// ([`ChangeSignal::changed`]) and with plain threads ([`ChangeSignal::wait_timeout`]).
/// Clones share the signal.
///
/// ```
/// use stamps::{ChangeSignal, Version};
/// use std::time::Duration;
/// let signal = ChangeSignal::new();
/// signal.notify(Version(3));
/// assert_eq!(signal.head(), Version(3));
/// assert_eq!(signal.wait_timeout(Version(2), Duration::ZERO), Some(Version(3)));
/// assert_eq!(signal.wait_timeout(Version(3), Duration::from_millis(1)), None);
/// ```
#[derive(Clone, Default)]
pub struct ChangeSignal {
    inner: Arc<Inner>,
}

impl fmt::Debug for ChangeSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeSignal").field("head", &self.head()).finish()
    }
}

impl ChangeSignal {
    /// A signal at version zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the feed reached `version` (older versions are ignored) and wakes waiters.
    pub fn notify(&self, version: Version) {
        let wakers = {
            let mut st = self.inner.state.lock();
            if version <= st.head {
                return;
            }
            st.head = version;
            std::mem::take(&mut st.wakers)
        };
        self.inner.cond.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// The newest version notified.
    pub fn head(&self) -> Version {
        self.inner.state.lock().head
    }

    /// Blocks the thread until the head passes `after` or `timeout` elapses; returns the head
    /// if it passed.
    pub fn wait_timeout(&self, after: Version, timeout: Duration) -> Option<Version> {
        let mut st = self.inner.state.lock();
        if st.head > after {
            return Some(st.head);
        }
        if timeout.is_zero() {
            return None;
        }
        let _ = self.inner.cond.wait_while_for(&mut st, |s| s.head <= after, timeout);
        (st.head > after).then_some(st.head)
    }

    /// A future that resolves with the head once it passes `after`.
    pub fn changed(&self, after: Version) -> Changed {
        Changed {
            signal: self.clone(),
            after,
        }
    }
}

/// Future returned by [`ChangeSignal::changed`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Changed {
    signal: ChangeSignal,
    after: Version,
}

impl Future for Changed {
    type Output = Version;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Version> {
        let mut st = self.signal.inner.state.lock();
        if st.head > self.after {
            return Poll::Ready(st.head);
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
