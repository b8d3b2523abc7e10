//! The change feed's history identity: terms.
//!
//! The feed starts in term 0 with versions 1, 2, ... When the first write lands on a server
//! whose WAL timeline differs from the one the feed last wrote on (a promoted standby, a
//! point-in-time restore; or after [`PgRegistry::begin_new_term`](super::PgRegistry::begin_new_term)),
//! that write opens the next term: it records the term's `base`, the last version this server
//! holds (the last one both histories share), and takes as its version the term's `start`,
//! the server's clock in milliseconds shifted left by [`START_SHIFT`] (and above the head).
//! Versions then count up from there. So
//!
//! - a version another history issued after `base` (the old primary's unreplicated writes, or a
//!   newer term opened on a server that failed before its standbys received it) lies between
//!   `base` and `start`, or in a range no surviving term covers: a follower holding one as its
//!   cursor is told its history was lost ([`Position::Lost`], [`Position::Ahead`]) instead of
//!   skipping the new history's changes. Term starts come from the clock, so two histories
//!   that forked at different times never share versions (2^20 versions per millisecond
//!   between them);
//! - every epoch issued after a failover exceeds every epoch the lost history issued, so a
//!   stamp's epoch fence never lets a lost write outrank a new one;
//! - a follower at exactly `base` continues with `start`: a term boundary is not a truncation.

use crate::model::Version;

/// A term starts at the server's clock (milliseconds since the Unix epoch) times 2^20: room for
/// a million versions per millisecond between two terms, until the year 2248.
pub(crate) const START_SHIFT: u32 = 20;

/// The term after a follower's cursor: the last version it shares with the one before, and its
/// first version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextTerm {
    pub(crate) base: u64,
    pub(crate) start: u64,
}

/// Where a follower's cursor stands in the feed's current history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// In the history; the next change a gap-free feed holds is `next`.
    Next(u64),
    /// Past the head: on the primary, a lost history (or a restore); on a replica, replay that
    /// has not caught up.
    Ahead,
    /// After the last version its term shares with the next term: lost.
    Lost,
}

/// Where `after` stands, given the feed's `head` and the first term starting after `after`
/// (`None` when `after` is in the current term).
pub(crate) fn position(after: u64, head: u64, next: Option<NextTerm>) -> Position {
    match next {
        None if after > head => Position::Ahead,
        None => Position::Next(after + 1),
        Some(t) if after < t.base => Position::Next(after + 1),
        Some(t) if after == t.base => Position::Next(t.start),
        Some(_) => Position::Lost,
    }
}

/// The error a follower gets for a cursor outside the history.
pub(crate) fn diverged(after: u64, head: u64, term: u32) -> crate::error::Error {
    crate::error::Error::HistoryDiverged {
        cursor: Version(after),
        head: Version(head),
        term,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn positions_around_a_failover() {
        // Term 0 reached 105 on the old primary; the new one had 100 and opened a term at S.
        let s = 1_000_000u64 << START_SHIFT;
        let next = Some(NextTerm { base: 100, start: s });
        let head = s + 2;
        assert_eq!(position(99, head, next), Position::Next(100));
        assert_eq!(position(100, head, next), Position::Next(s));
        for lost in [101, 105, s - 1] {
            assert_eq!(position(lost, head, next), Position::Lost, "{lost}");
        }
        assert_eq!(position(s, head, None), Position::Next(s + 1));
        assert_eq!(position(head, head, None), Position::Next(head + 1));
        assert_eq!(position(head + 1, head, None), Position::Ahead);
        assert_eq!(position(0, 0, None), Position::Next(1));
        assert_eq!(position(10, 9, None), Position::Ahead);
    }

    proptest! {
        /// Over any sequence of failovers, each losing a suffix of its term (and lost terms
        /// opened on servers that failed, whose versions no survivor holds): every version a
        /// follower could hold is either in the surviving history, and its successor is the
        /// next surviving version, or reported lost or ahead; never skipped silently.
        #[test]
        fn every_cursor_is_classified(
            terms in proptest::collection::vec((1u64..20, 0u64..5, 1u64..1000), 1..6),
        ) {
            // Per term: versions written, how many of them were lost, the gap before its start.
            let mut surviving: Vec<u64> = Vec::new();
            let mut issued: Vec<u64> = Vec::new();
            let mut boundaries: Vec<NextTerm> = Vec::new();
            let last = terms.len() - 1;
            let mut top = 0u64;
            for (k, &(written, lost, gap)) in terms.iter().enumerate() {
                let start = if k == 0 { 1 } else { top + gap };
                let keep = if k == last { written } else { written.saturating_sub(lost).max(1) };
                for i in 0..written {
                    issued.push(start + i);
                }
                for i in 0..keep {
                    surviving.push(start + i);
                }
                top = start + written;
                if k > 0 {
                    let base = surviving[surviving.len() - keep as usize - 1];
                    boundaries.push(NextTerm { base, start });
                }
            }
            let head = *surviving.last().unwrap();
            for &v in issued.iter().chain([0].iter()) {
                let next = boundaries.iter().copied().find(|t| t.start > v);
                let p = position(v, head, next);
                let kept = v == 0 || surviving.contains(&v);
                match p {
                    Position::Next(n) => {
                        prop_assert!(kept, "{} was lost but classified {:?}", v, p);
                        let expected = surviving.iter().copied().find(|&s| s > v).unwrap_or(head + 1);
                        prop_assert_eq!(n, expected);
                    }
                    Position::Lost | Position::Ahead => prop_assert!(!kept, "{} survived but classified {:?}", v, p),
                }
            }
        }
    }
}
