//! The sorted merge behind [`reconcile`](super::reconcile): one cursor over the registry's
//! assignments, one per stamp over its inventory (filled by a task of its own, a page ahead),
//! advanced together one tenant id at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::inventory::{Held, StampInventory};
use super::report::{Finding, FindingKind, ReconcileReport, Repair, Unreadable};
use super::ReconcileOptions;
use crate::error::Result;
use crate::model::{Assignment, MigrationRecord, StampId, StampState, TenantId};
use crate::registry::Registry;

type Page = std::result::Result<Vec<Held>, String>;

/// One stamp's inventory, as the merge reads it.
struct Cursor {
    stamp: StampId,
    pages: mpsc::Receiver<Page>,
    buf: VecDeque<Held>,
    done: bool,
    last: Option<String>,
}

impl Cursor {
    /// Makes sure the head is loaded (or the cursor is done); records a failure in `report`.
    async fn fill(&mut self, report: &mut ReconcileReport) {
        while self.buf.is_empty() && !self.done {
            match self.pages.recv().await {
                Some(Ok(page)) if page.is_empty() => self.done = true,
                Some(Ok(page)) => self.buf.extend(page),
                Some(Err(reason)) => {
                    report.unreadable.push(Unreadable {
                        stamp: self.stamp,
                        reason,
                        read_up_to: self.last.clone(),
                    });
                    self.done = true;
                }
                None => self.done = true,
            }
        }
    }

    fn head(&self) -> Option<&str> {
        self.buf.front().map(|h| h.id.as_str())
    }

    fn pop(&mut self) -> Option<Held> {
        let h = self.buf.pop_front()?;
        self.last = Some(h.id.clone());
        Some(h)
    }
}

/// Which stamps' silence about a tenant means "not held": inventoried, and read without a
/// failure so far (the unreadable list is almost always empty).
struct Reliable<'a> {
    inventoried: &'a [StampId],
    unreadable: &'a [Unreadable],
}

impl Reliable<'_> {
    fn contains(&self, stamp: &StampId) -> bool {
        self.inventoried.binary_search(stamp).is_ok() && !self.unreadable.iter().any(|u| u.stamp == *stamp)
    }
}

/// Lists one stamp's inventory page by page into `tx`, each call under the timeout and a
/// permit; checks the order the contract promises.
async fn read_stamp(
    inventory: Arc<dyn StampInventory>,
    tx: mpsc::Sender<Page>,
    permits: Arc<Semaphore>,
    options: ReconcileOptions,
) {
    let mut after: Option<String> = None;
    loop {
        let page = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            tokio::time::timeout(
                options.stamp_timeout,
                inventory.tenants(after.as_deref(), options.page_size),
            )
            .await
        };
        let page = match page {
            Err(_elapsed) => Err(format!(
                "an inventory call took longer than {:?}",
                options.stamp_timeout
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(page)) => check_page(page, after.as_deref(), options.page_size),
        };
        let (last, done) = match &page {
            Ok(p) => (p.last().map(|h| h.id.clone()), p.len() < options.page_size),
            Err(_) => (None, true),
        };
        if tx.send(page).await.is_err() || done {
            return;
        }
        after = last;
    }
}

/// A page as the contract promises it: ascending, after `after`, at most `limit` long.
fn check_page(page: Vec<Held>, after: Option<&str>, limit: usize) -> Page {
    if page.len() > limit {
        return Err(format!("asked for {limit} entries, listed {}", page.len()));
    }
    let mut prev = after;
    for h in &page {
        if prev.is_some_and(|p| h.id.as_str() <= p) {
            return Err(format!(
                "listed {:?} after {:?}: ids must ascend in byte order",
                h.id,
                prev.unwrap_or("")
            ));
        }
        prev = Some(h.id.as_str());
    }
    Ok(page)
}

/// The registry's assignments, a page at a time.
struct Assignments {
    buf: VecDeque<Assignment>,
    after: Option<TenantId>,
    done: bool,
}

impl Assignments {
    async fn fill<R: Registry + ?Sized>(&mut self, registry: &R, page_size: usize) -> Result<()> {
        while self.buf.is_empty() && !self.done {
            let page = registry.assignments(self.after.as_ref(), page_size).await?;
            self.done = page.len() < page_size;
            if let Some(last) = page.last() {
                self.after = Some(last.tenant().clone());
            } else {
                self.done = true;
            }
            self.buf.extend(page);
        }
        Ok(())
    }
}

pub(super) async fn run<R: Registry + ?Sized>(
    registry: &R,
    inventories: &[(StampId, Arc<dyn StampInventory>)],
    options: &ReconcileOptions,
) -> Result<ReconcileReport> {
    let options = ReconcileOptions::default()
        .page_size(options.page_size)
        .concurrency(options.concurrency)
        .stamp_timeout(options.stamp_timeout);
    let mut report = ReconcileReport::default();
    let fleet = registry.fleet().await?;
    report.not_inventoried = fleet
        .stamps
        .iter()
        .map(|l| l.id())
        .filter(|id| !inventories.iter().any(|(s, _)| s == id))
        .collect();
    let decommissioned: Vec<StampId> = fleet
        .stamps
        .iter()
        .filter(|l| l.stamp.state == StampState::Decommissioned)
        .map(|l| l.id())
        .collect();
    report.not_inventoried.retain(|id| !decommissioned.contains(id));

    // One reader task per stamp, a page ahead; the set aborts them if this future is dropped.
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let mut readers = JoinSet::new();
    let mut cursors = Vec::with_capacity(inventories.len());
    for (stamp, inventory) in inventories {
        let (tx, rx) = mpsc::channel(1);
        readers.spawn(read_stamp(inventory.clone(), tx, permits.clone(), options.clone()));
        cursors.push(Cursor {
            stamp: *stamp,
            pages: rx,
            buf: VecDeque::new(),
            done: false,
            last: None,
        });
    }
    let mut inventoried: Vec<StampId> = inventories.iter().map(|(s, _)| *s).collect();
    inventoried.sort_unstable();
    let mut assignments = Assignments {
        buf: VecDeque::new(),
        after: None,
        done: false,
    };

    loop {
        assignments.fill(registry, options.page_size).await?;
        for c in &mut cursors {
            c.fill(&mut report).await;
        }
        let next = cursors
            .iter()
            .filter_map(Cursor::head)
            .chain(assignments.buf.front().map(|a| a.tenant().as_str()))
            .min()
            .map(str::to_string);
        let Some(id) = next else { break };
        let assignment = match assignments.buf.front() {
            Some(a) if a.tenant().as_str() == id => assignments.buf.pop_front(),
            _ => None,
        };
        report.assignments += u64::from(assignment.is_some());
        let mut holders: Vec<Held> = Vec::new();
        let mut holder_stamps: Vec<StampId> = Vec::new();
        for c in &mut cursors {
            if c.head() == Some(id.as_str()) {
                if let Some(h) = c.pop() {
                    holders.push(h);
                    holder_stamps.push(c.stamp);
                }
            }
        }
        report.copies += holders.len() as u64;
        // Stamps whose silence about `id` means "not held": inventoried, read without failure.
        let reliable = Reliable {
            inventoried: &inventoried,
            unreadable: &report.unreadable,
        };
        let found = judge(registry, &id, assignment.as_ref(), &holders, &holder_stamps, &reliable).await?;
        report.findings.extend(found);
    }
    readers.abort_all();
    Ok(report)
}

/// The findings for one tenant id: its assignment (if any) against the stamps that hold it.
async fn judge<R: Registry + ?Sized>(
    registry: &R,
    id: &str,
    assignment: Option<&Assignment>,
    holders: &[Held],
    holder_stamps: &[StampId],
    reliable: &Reliable<'_>,
) -> Result<Vec<Finding>> {
    let finding = |stamp: StampId, kind: FindingKind, repair: Repair| {
        let fingerprint = holder_stamps
            .iter()
            .position(|s| *s == stamp)
            .and_then(|i| holders[i].fingerprint.clone());
        let mut f = Finding::new(id, stamp, kind, repair);
        f.fingerprint = fingerprint;
        f
    };
    let Ok(tenant) = TenantId::new(id) else {
        return Ok(holder_stamps
            .iter()
            .map(|s| finding(*s, FindingKind::InvalidId, Repair::Investigate))
            .collect());
    };
    let Some(a) = assignment else {
        return Ok(holder_stamps
            .iter()
            .map(|s| finding(*s, FindingKind::Orphan, Repair::DeleteCopy { stamp: *s }))
            .collect());
    };
    let expected: Vec<StampId> = a.stamps().collect();
    let extra: Vec<StampId> = holder_stamps
        .iter()
        .copied()
        .filter(|s| !expected.contains(s))
        .collect();
    let shadow_missing = a
        .mode
        .shadow()
        .filter(|s| reliable.contains(s) && !holder_stamps.contains(s));
    // Copies on a migration's stamps are its business while it runs; read the tenant's
    // migrations only when something is off (rare), so memory stays bounded.
    let migrations: Vec<MigrationRecord> = if extra.is_empty() && shadow_missing.is_none() {
        Vec::new()
    } else {
        registry.migrations(Some(&tenant)).await?
    };
    let running = |s: StampId| {
        migrations
            .iter()
            .any(|m| !m.state.is_terminal() && (m.source == s || m.destination == s))
    };
    let mut out = Vec::new();
    let serving_missing = reliable.contains(&a.stamp) && !holder_stamps.contains(&a.stamp);
    // While the serving stamp lacks the tenant, another copy is the one to restore from: never
    // propose deleting it.
    let delete_or_restore = |s: StampId| {
        if serving_missing {
            Repair::RestoreFrom { from: s, to: a.stamp }
        } else {
            Repair::DeleteCopy { stamp: s }
        }
    };
    if serving_missing {
        let repair = match holder_stamps.first() {
            Some(from) => Repair::RestoreFrom {
                from: *from,
                to: a.stamp,
            },
            None => Repair::RestoreFromBackup { to: a.stamp },
        };
        out.push(finding(a.stamp, FindingKind::Missing, repair));
    }
    if let Some(shadow) = shadow_missing.filter(|s| !running(*s)) {
        let repair = if holder_stamps.contains(&a.stamp) {
            Repair::RestoreFrom {
                from: a.stamp,
                to: shadow,
            }
        } else {
            Repair::RestoreFromBackup { to: shadow }
        };
        out.push(finding(shadow, FindingKind::Missing, repair));
    }
    for s in extra.into_iter().filter(|s| !running(*s)) {
        // The newest ended migration that touched the stamp, if any.
        let ended = migrations
            .iter()
            .filter(|m| m.source == s || m.destination == s)
            .max_by_key(|m| m.id);
        out.push(match ended {
            Some(m) => {
                let repair = match m.state {
                    crate::model::MigrationState::Failed => Repair::ResolveMigration { migration: m.id },
                    _ => delete_or_restore(s),
                };
                let kind = FindingKind::LeftoverShadow {
                    migration: m.id,
                    state: m.state,
                };
                finding(s, kind, repair)
            }
            None => finding(s, FindingKind::StrayCopy, delete_or_restore(s)),
        });
    }
    out.sort_by_key(|f| f.stamp);
    Ok(out)
}
