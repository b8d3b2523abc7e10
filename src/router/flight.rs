//! Single-flight: one registry read per uncached tenant, however many callers wait for it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::{Route, RouteError};

type Outcome = Result<Route, RouteError>;

#[derive(Default)]
struct State {
    /// `Some(None)`: the leader gave up (its future was dropped); waiters retry.
    done: Option<Option<Outcome>>,
    wakers: Vec<Waker>,
}

/// One in-flight load.
#[derive(Default)]
pub(crate) struct Flight {
    state: Mutex<State>,
}

impl Flight {
    fn complete(&self, outcome: Option<Outcome>) {
        let wakers = {
            let mut st = self.state.lock();
            if st.done.is_some() {
                return;
            }
            st.done = Some(outcome);
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Waits for a flight's outcome; `None` means the leader gave up.
pub(crate) struct Wait(pub(crate) Arc<Flight>);

impl Future for Wait {
    type Output = Option<Outcome>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.0.state.lock();
        if let Some(done) = st.done {
            return Poll::Ready(done);
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The map of in-flight loads by tenant.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Box<str>, Arc<Flight>>>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.map.lock().len())
            .finish()
    }
}

/// Either lead a load or wait for another caller's.
pub(crate) enum Join<'a> {
    Lead(Leader<'a>),
    Follow(Wait),
}

impl Flights {
    pub(crate) fn join(&self, tenant: &str) -> Join<'_> {
        let mut map = self.map.lock();
        if let Some(f) = map.get(tenant) {
            return Join::Follow(Wait(f.clone()));
        }
        let flight = Arc::new(Flight::default());
        map.insert(Box::from(tenant), flight.clone());
        Join::Lead(Leader {
            flights: self,
            tenant: Box::from(tenant),
            flight,
            finished: false,
        })
    }

    /// Whether a load for `tenant` is in flight (the change feed then records the tenant's
    /// changes even though it is not cached, so the load cannot publish an older epoch).
    pub(crate) fn contains(&self, tenant: &str) -> bool {
        self.map.lock().contains_key(tenant)
    }

    fn remove(&self, tenant: &str, flight: &Arc<Flight>) {
        let mut map = self.map.lock();
        if map.get(tenant).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(tenant);
        }
    }
}

/// The caller that performs the load. Dropping it unfinished (a cancelled future) releases the
/// waiters, who then retry.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    tenant: Box<str>,
    flight: Arc<Flight>,
    finished: bool,
}

impl Leader<'_> {
    /// Publishes the outcome to the waiters and ends the flight. Call after the outcome is in
    /// the table, so that later callers find it there.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.flights.remove(&self.tenant, &self.flight);
        self.flight.complete(Some(outcome));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.flights.remove(&self.tenant, &self.flight);
            self.flight.complete(None);
        }
    }
}
