//! Group commit of `assign`: concurrent calls on one [`PgRegistry`] share a transaction.
//!
//! Every assignment write holds the feed counter's row from its increment to its commit, so
//! writers commit one at a time and each pays a WAL flush alone. With group commit on
//! ([`PgConfig::group_commit`](super::PgConfig::group_commit), the default), an `assign` joins
//! a queue, and one of the waiting callers at a time leads: it takes the queued calls, up to
//! [`MAX_GROUP`] of distinct tenants, and writes them with the bulk import's transaction: each
//! call admitted by `assign`'s rules in queue order against the usage the earlier calls left,
//! each with its own epoch, history entry and change, one commit for all. Each caller gets its
//! own outcome: a refused call (capacity, a constraint, a tenant already assigned) fails
//! alone. A leader leads until its own call is answered, then hands over to a waiting caller.
//! A leader's call alone in the queue runs `assign`'s own transaction, so a single writer's
//! latency is what it was.
//!
//! Cancellation keeps its meaning: a call whose future is dropped before its write is sent for
//! commit leaves nothing. A dropped waiter leaves the queue, or, when its call is already in a
//! group, the leader sees it before sending the `COMMIT`, rolls the group back and writes it
//! again without that call. A dropped leader drops its group's transaction (nothing commits
//! unless the `COMMIT` was sent); the group's other callers then queue again, or learn that the
//! outcome is unknown when the `COMMIT` was sent. A failure of the shared transaction is every
//! member's, as it would be for a call of its own.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio_postgres::error::SqlState;

use super::connection::{on_conn, Lease};
use super::fault::Fault;
use super::PgRegistry;
use crate::error::{Error, Result};
use crate::model::{Assignment, StampId, TenantId, TenantSpec};
use crate::registry::{ImportRow, Imported};

/// The most calls one group commits together.
pub(super) const MAX_GROUP: usize = 512;

/// The queue of `assign` calls waiting for a group, and who leads.
#[derive(Debug, Default)]
pub(super) struct Group {
    state: Mutex<State>,
    /// Wakes a waiting caller to lead when a leader steps down with calls queued.
    handoff: Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Waiting>,
    leading: bool,
    next_id: u64,
}

/// A queued call.
#[derive(Debug)]
struct Waiting {
    id: u64,
    row: ImportRow,
    reply: oneshot::Sender<Result<Assignment>>,
    ticket: Arc<Ticket>,
}

/// What a call and the group carrying it tell each other.
#[derive(Debug, Default)]
struct Ticket {
    /// The caller stopped waiting.
    cancelled: AtomicBool,
    /// The group carrying the call sent its `COMMIT`.
    commit_sent: AtomicBool,
}

/// A caller's place in the queue; dropping it (the call's future dropped) withdraws the call,
/// or marks it cancelled for the leader if a group carries it.
struct Call<'a> {
    group: &'a Group,
    id: u64,
    ticket: Arc<Ticket>,
    answer: oneshot::Receiver<Result<Assignment>>,
}

impl<'a> Call<'a> {
    fn join(group: &'a Group, row: &ImportRow) -> Call<'a> {
        let (reply, answer) = oneshot::channel();
        let ticket = Arc::new(Ticket::default());
        let mut st = group.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push_back(Waiting {
            id,
            row: row.clone(),
            reply,
            ticket: ticket.clone(),
        });
        Call {
            group,
            id,
            ticket,
            answer,
        }
    }

    /// Queues the call again after the group carrying it ended without sending its commit.
    fn rejoin(&mut self, row: &ImportRow) {
        *self = Call::join(self.group, row);
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.ticket.cancelled.store(true, Ordering::Release);
        let mut st = self.group.state.lock();
        st.queue.retain(|w| w.id != self.id);
        // A caller woken to lead may be the one dropped: pass the wake-up on.
        if !st.leading && !st.queue.is_empty() {
            self.group.handoff.notify_one();
        }
    }
}

/// Leadership, stepped down when dropped (the leader answered, failed or was cancelled):
/// one waiting caller is woken to lead next.
struct Leading<'a>(&'a Group);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.leading = false;
        if !st.queue.is_empty() {
            self.0.handoff.notify_one();
        }
    }
}

impl Group {
    fn try_lead(&self) -> Option<Leading<'_>> {
        let mut st = self.state.lock();
        if st.leading {
            return None;
        }
        st.leading = true;
        Some(Leading(self))
    }

    /// Takes the next group: queued calls in order, skipping (and leaving queued) a call for a
    /// tenant already in the group, so two calls for one tenant are never in one transaction.
    fn take(&self) -> Vec<Waiting> {
        let mut st = self.state.lock();
        let mut tenants: HashSet<TenantId> = HashSet::new();
        let mut taken = Vec::new();
        let mut left = VecDeque::new();
        while let Some(w) = st.queue.pop_front() {
            if taken.len() < MAX_GROUP && tenants.insert(w.row.tenant.id.clone()) {
                taken.push(w);
            } else {
                left.push_back(w);
            }
        }
        st.queue = left;
        taken
    }
}

impl PgRegistry {
    /// `assign` through the group (see the module docs).
    pub(super) async fn assign_grouped(
        &self,
        group: &Group,
        tenant: &TenantSpec,
        stamp: StampId,
    ) -> Result<Assignment> {
        let row = ImportRow::new(tenant.clone(), stamp);
        let mut call = Call::join(group, &row);
        // A group runs under the call deadline; the groups ahead take at most as long again.
        let wait = self.inner.call_timeout.saturating_mul(2);
        let outcome = tokio::time::timeout(wait, self.wait_or_lead(group, &mut call, &row)).await;
        match outcome {
            Ok(answer) => answer,
            Err(_) if call.ticket.commit_sent.load(Ordering::Acquire) => Err(Error::OutcomeUnknown {
                reason: format!("no answer within {wait:?} from the group commit carrying this call"),
            }),
            // Dropping `call` withdraws it; a group carrying it rolls back without it.
            Err(_) => Err(Error::unavailable(format!(
                "no group commit carried this call within {wait:?}; nothing was written"
            ))),
        }
    }

    async fn wait_or_lead(&self, group: &Group, call: &mut Call<'_>, row: &ImportRow) -> Result<Assignment> {
        loop {
            // Registered before looking at the leader flag, so a hand-over is never missed.
            let mut handoff = pin!(group.handoff.notified());
            handoff.as_mut().enable();
            if let Some(leading) = group.try_lead() {
                let answer = self.lead_until_answered(group, call).await;
                drop(leading);
                match answer {
                    Some(a) => return a,
                    None => {
                        call.rejoin(row);
                        continue;
                    }
                }
            }
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = std::pin::Pin::new(&mut call.answer).poll(cx) {
                    return Poll::Ready(Some(r));
                }
                handoff.as_mut().poll(cx).map(|()| None)
            })
            .await;
            match event {
                Some(Ok(answer)) => return answer,
                // The group carrying the call ended without answering (its leader was dropped).
                Some(Err(_)) if call.ticket.commit_sent.load(Ordering::Acquire) => {
                    return Err(Error::OutcomeUnknown {
                        reason: "the group commit carrying this call was cut after its commit was sent".into(),
                    })
                }
                Some(Err(_)) => call.rejoin(row),
                None => {}
            }
        }
    }

    /// Leads groups until the caller's own call is answered. `None` when its group ended
    /// without an answer before sending its commit (queue it again).
    async fn lead_until_answered(&self, group: &Group, call: &mut Call<'_>) -> Option<Result<Assignment>> {
        loop {
            match call.answer.try_recv() {
                Ok(answer) => return Some(answer),
                Err(oneshot::error::TryRecvError::Closed) => {
                    if call.ticket.commit_sent.load(Ordering::Acquire) {
                        return Some(Err(Error::OutcomeUnknown {
                            reason: "the group commit carrying this call ended without an answer".into(),
                        }));
                    }
                    return None;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let members = group.take();
            if members.is_empty() {
                return None;
            }
            self.commit_group(members, call.id).await;
        }
    }

    /// Writes one group and answers each member. A member that stopped waiting before the
    /// commit was sent is left out: the group rolls back and is written again without it.
    async fn commit_group(&self, mut members: Vec<Waiting>, leader: u64) {
        loop {
            members.retain(|w| !w.ticket.cancelled.load(Ordering::Acquire));
            match members.as_slice() {
                [] => return,
                [only] if only.id == leader => {
                    let row = &only.row;
                    let outcome = on_conn!(self, retry_unique = true, |c| self.assign_once(
                        c,
                        &row.tenant,
                        row.stamp,
                        None,
                        None
                    ));
                    if let Some(w) = members.pop() {
                        let _ = w.reply.send(outcome);
                    }
                    return;
                }
                _ => {}
            }
            let rows: Vec<ImportRow> = members.iter().map(|w| w.row.clone()).collect();
            let tickets: Vec<Arc<Ticket>> = members.iter().map(|w| w.ticket.clone()).collect();
            // Commit only if every member still waits; mark them sent first (a member dropped
            // after this is in the same place as a call dropped after its own `COMMIT` went).
            let before_commit = move || {
                if tickets.iter().any(|t| t.cancelled.load(Ordering::Acquire)) {
                    return false;
                }
                for t in &tickets {
                    t.commit_sent.store(true, Ordering::Release);
                }
                true
            };
            let result = on_conn!(self, retry_unique = true, |c| self.import_once(
                c,
                &rows,
                Some(&before_commit)
            ));
            match result {
                Ok(None) => continue,
                Ok(Some(report)) => {
                    for (w, outcome) in members.into_iter().zip(report.into_outcomes()) {
                        let answer = match outcome {
                            Imported::Assigned(a) => Ok(a),
                            // `assign` of a tenant already assigned is refused, wherever it is.
                            Imported::Unchanged(a) => Err(Error::AlreadyAssigned {
                                tenant: w.row.tenant.id.clone(),
                                stamp: a.stamp,
                            }),
                            Imported::Refused(e) => Err(e),
                        };
                        let _ = w.reply.send(answer);
                    }
                    return;
                }
                Err(e) => {
                    for w in members {
                        let _ = w.reply.send(Err(shared_failure(&e)));
                    }
                    return;
                }
            }
        }
    }
}

/// A failure of a group's transaction, as each member reports it.
fn shared_failure(e: &Error) -> Error {
    match e {
        Error::Unavailable { reason, .. } => Error::unavailable(reason.clone()),
        Error::OutcomeUnknown { reason } => Error::OutcomeUnknown { reason: reason.clone() },
        Error::Corrupt { what, reason } => Error::Corrupt {
            what: what.clone(),
            reason: reason.clone(),
        },
        other => Error::backend(std::io::Error::other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: &str) -> ImportRow {
        ImportRow::new(TenantSpec::new(TenantId::new(t).expect("id")), StampId(1))
    }

    #[test]
    fn a_group_takes_distinct_tenants_in_order_and_leaves_repeats_queued() {
        let g = Group::default();
        let calls: Vec<Call<'_>> = ["a", "b", "a", "c", "b"]
            .iter()
            .map(|t| Call::join(&g, &row(t)))
            .collect();
        let first: Vec<String> = g.take().iter().map(|w| w.row.tenant.id.to_string()).collect();
        assert_eq!(first, ["a", "b", "c"]);
        let second: Vec<String> = g.take().iter().map(|w| w.row.tenant.id.to_string()).collect();
        assert_eq!(second, ["a", "b"]);
        assert!(g.take().is_empty());
        drop(calls);
    }

    #[test]
    fn a_dropped_call_leaves_the_queue_and_is_marked_cancelled() {
        let g = Group::default();
        let kept = Call::join(&g, &row("a"));
        let dropped = Call::join(&g, &row("b"));
        let ticket = dropped.ticket.clone();
        drop(dropped);
        assert!(ticket.cancelled.load(Ordering::Acquire));
        let left: Vec<u64> = g.take().iter().map(|w| w.id).collect();
        assert_eq!(left, [kept.id]);
    }

    #[test]
    fn leadership_is_exclusive_and_stepping_down_frees_it() {
        let g = Group::default();
        let first = g.try_lead();
        assert!(first.is_some());
        assert!(g.try_lead().is_none());
        drop(first);
        assert!(g.try_lead().is_some());
    }
}
