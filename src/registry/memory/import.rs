//! [`Registry::assign_many`](crate::Registry::assign_many) in the in-memory registry: every row
//! through the body of `assign`, under one hold of the write lock.

use super::State;
use crate::error::Error;
use crate::registry::import;
use crate::registry::{ImportRow, Imported};
use crate::time::Timestamp;

impl State {
    /// Admits `rows` in order; the caller holds the write lock for the whole call, so readers
    /// see none or all of the call's assignments.
    pub(super) fn assign_many(&mut self, rows: &[ImportRow], now: Timestamp, retention: usize) -> Vec<Imported> {
        let screened = import::screen(rows);
        self.history.reserve(rows.len());
        self.changes.reserve(rows.len().min(retention));
        rows.iter()
            .zip(screened)
            .map(|(row, refused)| {
                if let Some(e) = refused {
                    return Imported::Refused(e);
                }
                // `assign_new` looks the tenant up first: a retried row is the rare case.
                match self.assign_new(&row.tenant, row.stamp, None, None, now, retention) {
                    Ok(a) => Imported::Assigned(a),
                    Err(e @ Error::AlreadyAssigned { .. }) => match self.assignments.get(&row.tenant.id) {
                        Some(current) => import::existing(current, row),
                        None => Imported::Refused(e),
                    },
                    Err(e) => Imported::Refused(e),
                }
            })
            .collect()
    }
}
