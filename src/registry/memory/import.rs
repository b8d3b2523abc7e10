//! [`Registry::assign_many`](crate::Registry::assign_many) in the in-memory registry: every row
//! through the body of `assign`, under one hold of the write lock.

use super::State;
use crate::registry::import;
use crate::registry::{ImportRow, Imported};
use crate::time::Timestamp;

impl State {
    /// Admits `rows` in order; the caller holds the write lock for the whole call, so readers
    /// see none or all of the call's assignments.
    pub(super) fn assign_many(&mut self, rows: &[ImportRow], now: Timestamp, retention: usize) -> Vec<Imported> {
        let screened = import::screen(rows);
        rows.iter()
            .zip(screened)
            .map(|(row, refused)| {
                if let Some(e) = refused {
                    return Imported::Refused(e);
                }
                if let Some(current) = self.assignments.get(&row.tenant.id) {
                    return import::existing(current, row);
                }
                match self.assign_new(&row.tenant, row.stamp, None, None, now, retention) {
                    Ok(a) => Imported::Assigned(a),
                    Err(e) => Imported::Refused(e),
                }
            })
            .collect()
    }
}
