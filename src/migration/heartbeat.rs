//! The lease heartbeat (feature `tokio`): while a step's work runs, the worker renews its
//! lease every third of [`MigrationConfig::lease`](super::MigrationConfig::lease), so a step
//! may take longer than the lease while a dead worker is still detected within one lease.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;

use super::progress::{self, Lease, Progress};
use crate::error::{Error, Result};
use crate::model::MigrationRecord;
use crate::registry::DynRegistry;
use crate::time::Clock;

/// What the heartbeat renews with, and the record it last saved.
pub(super) struct Heartbeat {
    pub(super) registry: Arc<DynRegistry>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) lease: Duration,
    pub(super) worker: String,
    /// The record and progress as last saved (by the claim, then by each renewal).
    pub(super) latest: Mutex<(MigrationRecord, Progress)>,
}

impl Heartbeat {
    /// Runs `work` while renewing the lease. Returns the work's output, or the reason the
    /// lease could not be kept (the work is dropped then: another worker may take over, and
    /// the lease generation fences whatever the dropped work had started).
    pub(super) async fn guard<T>(&self, work: impl Future<Output = T>) -> Result<T> {
        let mut work = pin!(work);
        let mut beat = pin!(self.beat());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            if let Poll::Ready(e) = beat.as_mut().poll(cx) {
                return Poll::Ready(Err(e));
            }
            Poll::Pending
        })
        .await
    }

    /// Renews forever; returns only when the lease cannot be kept.
    async fn beat(&self) -> Error {
        let period = self.lease / 3;
        loop {
            tokio::time::sleep(period).await;
            if let Err(e) = self.renew(period).await {
                return e;
            }
        }
    }

    /// One renewal, retried until it lands or the lease is about to run out.
    async fn renew(&self, period: Duration) -> Result<()> {
        let retry = (period / 4).max(Duration::from_millis(1));
        loop {
            let (mut record, mut progress) = self.latest.lock().clone();
            let until = progress.lease.as_ref().map(|l| l.until);
            let now = self.clock.now();
            if until.is_none_or(|u| now + retry >= u) {
                return Err(Error::unavailable(format!(
                    "the lease on {} could not be renewed before it ran out; step abandoned",
                    record.id
                )));
            }
            progress.lease = Some(Lease {
                owner: self.worker.clone(),
                until: now + self.lease,
            });
            progress::encode(&progress, &mut record.data);
            let saved = tokio::time::timeout(period, self.registry.save_migration(&record)).await;
            match saved {
                Ok(Ok(saved)) => {
                    *self.latest.lock() = (saved, progress);
                    trace_event!(migration = %record.id, worker = %self.worker, "lease renewed");
                    return Ok(());
                }
                Ok(Err(Error::Conflict(_))) => self.take_in(&record, &progress).await?,
                // Unreachable, slow or unsure: try again shortly, while the lease lasts.
                Ok(Err(_)) | Err(_) => tokio::time::sleep(retry).await,
            }
        }
    }

    /// After a renewal lost on the revision: adopts the fresh record if only an operator (a
    /// command, a pause) or this heartbeat's own unacknowledged renewal changed it; any other
    /// change means another worker took the migration over.
    async fn take_in(&self, mine: &MigrationRecord, progress: &Progress) -> Result<()> {
        let fresh = self
            .registry
            .migration(mine.id)
            .await?
            .ok_or_else(|| Error::unavailable(format!("{} disappeared", mine.id)))?;
        let fresh_progress = progress::decode(&fresh)?;
        let mut ours = progress.clone();
        ours.lease = fresh_progress.lease.clone();
        let still_ours = fresh.state == mine.state
            && fresh_progress.lease.as_ref().is_some_and(|l| l.owner == self.worker)
            && fresh_progress.generation == progress.generation
            && ours.same_but_operator_fields(&fresh_progress);
        if !still_ours {
            return Err(Error::Conflict(crate::error::Conflict::Revision {
                expected: mine.revision,
                actual: fresh.revision,
            }));
        }
        *self.latest.lock() = (fresh, fresh_progress);
        Ok(())
    }
}
