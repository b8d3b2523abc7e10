//! Group commit of `assign` and `compare_and_set`: concurrent calls on one [`PgRegistry`]
//! share a transaction.
//!
//! Every assignment write holds the feed counter's row from its increment to its commit, so
//! writers commit one at a time and each pays a WAL flush alone. With group commit on
//! ([`PgConfig::group_commit`](super::PgConfig::group_commit), the default), a call joins a
//! queue (one for `assign`, one for `compare_and_set`), and one of the waiting callers at a
//! time leads: it takes the queued calls, up to [`MAX_GROUP`] of distinct tenants, and writes
//! them in one transaction, each call checked by its own method's rules in queue order
//! against the usage the earlier calls left, each with its own epoch, history entry and
//! change, one commit for all. `assign` groups use the bulk import's transaction;
//! `compare_and_set` groups use the one in `group_change`. Each caller gets its own outcome: a
//! refused call (capacity, a constraint, a tenant already assigned, another epoch) fails
//! alone. A leader leads until its own call is answered, then hands over to a waiting caller;
//! before taking each group it yields once to the runtime, so callers just answered by the
//! last group that call again at once join this group instead of the next.
//! A leader's call alone in the queue runs its method's own transaction, so a single writer's
//! latency is what it was.
//!
//! Cancellation keeps its meaning: a call whose future is dropped before its write is sent for
//! commit leaves nothing. A dropped waiter leaves the queue, or, when its call is already
//! written in a group, the leader sees it before sending the `COMMIT`, rolls the group back and
//! writes it again without that call (a refused call wrote nothing and changes nothing). A dropped leader drops its group's transaction (nothing commits
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
use super::group_change::ChangeRequest;
use super::import::BeforeCommit;
use super::PgRegistry;
use crate::error::{Error, Result};
use crate::model::{Assignment, AssignmentChange, Epoch, TenantId};
use crate::registry::{ImportRow, Imported};

/// The most calls one group commits together.
pub(super) const MAX_GROUP: usize = 512;

/// The two queues: `assign` calls and `compare_and_set` calls are grouped apart (each kind
/// has its own transaction), so a group of each can be written at once.
#[derive(Debug, Default)]
pub(super) struct Groups {
    pub(super) assign: Group,
    pub(super) change: Group,
}

/// A queue of calls waiting for a group, and who leads.
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

/// What a queued call asks.
#[derive(Debug, Clone)]
pub(super) enum Request {
    /// `assign`.
    Assign(ImportRow),
    /// `compare_and_set`.
    Change {
        tenant: TenantId,
        expected: Epoch,
        change: AssignmentChange,
    },
}

impl Request {
    fn tenant(&self) -> &TenantId {
        match self {
            Request::Assign(row) => &row.tenant.id,
            Request::Change { tenant, .. } => tenant,
        }
    }

    fn is_assign(&self) -> bool {
        matches!(self, Request::Assign(_))
    }
}

/// A queued call.
#[derive(Debug)]
struct Waiting {
    id: u64,
    request: Request,
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
    fn join(group: &'a Group, request: &Request) -> Call<'a> {
        let (reply, answer) = oneshot::channel();
        let ticket = Arc::new(Ticket::default());
        let mut st = group.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push_back(Waiting {
            id,
            request: request.clone(),
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
    fn rejoin(&mut self, request: &Request) {
        *self = Call::join(self.group, request);
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

    /// Takes the next group: queued calls in order, of the first one's kind, skipping (and
    /// leaving queued) a call for a tenant already in the group, so two calls for one tenant
    /// are never in one transaction.
    fn take(&self) -> Vec<Waiting> {
        let mut st = self.state.lock();
        let mut tenants: HashSet<TenantId> = HashSet::new();
        let mut taken = Vec::new();
        let mut left = VecDeque::new();
        let kind = st.queue.front().map(|w| w.request.is_assign());
        while let Some(w) = st.queue.pop_front() {
            if taken.len() < MAX_GROUP
                && Some(w.request.is_assign()) == kind
                && tenants.insert(w.request.tenant().clone())
            {
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
    /// `assign` or `compare_and_set` through a group (see the module docs).
    pub(super) async fn grouped(&self, group: &Group, request: Request) -> Result<Assignment> {
        let mut call = Call::join(group, &request);
        // A group runs under the call deadline; the groups ahead take at most as long again.
        let wait = self.inner.call_timeout.saturating_mul(2);
        let outcome = tokio::time::timeout(wait, self.wait_or_lead(group, &mut call, &request)).await;
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

    async fn wait_or_lead(&self, group: &Group, call: &mut Call<'_>, request: &Request) -> Result<Assignment> {
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
                        call.rejoin(request);
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
                Some(Err(_)) => call.rejoin(request),
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
            // Let the tasks that the last group answered run first: a caller that calls again
            // right away joins this group instead of the next.
            tokio::task::yield_now().await;
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
                    let outcome = match &only.request {
                        Request::Assign(row) => on_conn!(self, retry_unique = true, |c| self.assign_once(
                            c,
                            &row.tenant,
                            row.stamp,
                            None,
                            None
                        )),
                        Request::Change {
                            tenant,
                            expected,
                            change,
                        } => on_conn!(self, retry_unique = false, |c| self
                            .cas_once(c, tenant, *expected, change)),
                    };
                    if let Some(w) = members.pop() {
                        let _ = w.reply.send(outcome);
                    }
                    return;
                }
                _ => {}
            }
            let tickets: Vec<Arc<Ticket>> = members.iter().map(|w| w.ticket.clone()).collect();
            // Commit only if every member the transaction wrote still waits (a refused member
            // that gave up changes nothing); mark them sent first (a member dropped after this
            // is in the same place as a call dropped after its own `COMMIT` went).
            let before_commit = move |written: &[usize]| {
                let written = || written.iter().filter_map(|&i| tickets.get(i));
                if written().any(|t| t.cancelled.load(Ordering::Acquire)) {
                    return false;
                }
                for t in written() {
                    t.commit_sent.store(true, Ordering::Release);
                }
                true
            };
            // `take` never mixes kinds, and each queue holds one kind: the checks below are
            // defensive.
            let answers = if members.iter().all(|w| w.request.is_assign()) {
                self.write_assigns(&members, &before_commit).await
            } else {
                let changes: Vec<ChangeRequest<'_>> =
                    members.iter().filter_map(|w| ChangeRequest::of(&w.request)).collect();
                if changes.len() != members.len() {
                    // `take` never mixes kinds; answer rather than write a group it did not make.
                    Some(Err(Error::unavailable(
                        "a group mixed assignments and changes; nothing was written",
                    )))
                } else {
                    on_conn!(self, retry_unique = false, |c| self.change_group_once(
                        c,
                        &changes,
                        &before_commit
                    ))
                    .transpose()
                }
            };
            match answers {
                None => continue,
                Some(Ok(answers)) => {
                    for (w, answer) in members.into_iter().zip(answers) {
                        let _ = w.reply.send(answer);
                    }
                    return;
                }
                Some(Err(e)) => {
                    for w in members {
                        let _ = w.reply.send(Err(shared_failure(&e)));
                    }
                    return;
                }
            }
        }
    }

    /// Writes a group of `assign` calls with the bulk import's transaction; `None` when a
    /// member gave up before the commit (write the group again without it).
    async fn write_assigns(
        &self,
        members: &[Waiting],
        before_commit: BeforeCommit<'_>,
    ) -> Option<Result<Vec<Result<Assignment>>>> {
        let rows: Vec<ImportRow> = members
            .iter()
            .filter_map(|w| match &w.request {
                Request::Assign(row) => Some(row.clone()),
                Request::Change { .. } => None,
            })
            .collect();
        let result = on_conn!(self, retry_unique = true, |c| self.import_once(
            c,
            &rows,
            Some(before_commit)
        ));
        let report = match result {
            Ok(None) => return None,
            Ok(Some(report)) => report,
            Err(e) => return Some(Err(e)),
        };
        let answers = rows
            .iter()
            .zip(report.into_outcomes())
            .map(|(row, outcome)| match outcome {
                Imported::Assigned(a) => Ok(a),
                // `assign` of a tenant already assigned is refused, wherever it is.
                Imported::Unchanged(a) => Err(Error::AlreadyAssigned {
                    tenant: row.tenant.id.clone(),
                    stamp: a.stamp,
                }),
                Imported::Refused(e) => Err(e),
            })
            .collect();
        Some(Ok(answers))
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

    use crate::model::{StampId, TenantSpec};

    fn row(t: &str) -> Request {
        Request::Assign(ImportRow::new(
            TenantSpec::new(TenantId::new(t).expect("id")),
            StampId(1),
        ))
    }

    fn change(t: &str) -> Request {
        Request::Change {
            tenant: TenantId::new(t).expect("id"),
            expected: Epoch(1),
            change: AssignmentChange::move_to(StampId(2)),
        }
    }

    #[test]
    fn a_group_takes_distinct_tenants_in_order_and_leaves_repeats_queued() {
        let g = Group::default();
        let calls: Vec<Call<'_>> = ["a", "b", "a", "c", "b"]
            .iter()
            .map(|t| Call::join(&g, &row(t)))
            .collect();
        let first: Vec<String> = g.take().iter().map(|w| w.request.tenant().to_string()).collect();
        assert_eq!(first, ["a", "b", "c"]);
        let second: Vec<String> = g.take().iter().map(|w| w.request.tenant().to_string()).collect();
        assert_eq!(second, ["a", "b"]);
        assert!(g.take().is_empty());
        drop(calls);
    }

    #[test]
    fn a_group_is_of_one_kind_and_other_kinds_stay_queued_in_order() {
        let g = Group::default();
        let calls: Vec<Call<'_>> = [change("a"), row("b"), change("c"), row("d")]
            .iter()
            .map(|r| Call::join(&g, r))
            .collect();
        let kinds = |taken: Vec<Waiting>| -> Vec<(String, bool)> {
            taken
                .iter()
                .map(|w| (w.request.tenant().to_string(), w.request.is_assign()))
                .collect()
        };
        assert_eq!(kinds(g.take()), [("a".into(), false), ("c".into(), false)]);
        assert_eq!(kinds(g.take()), [("b".into(), true), ("d".into(), true)]);
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
