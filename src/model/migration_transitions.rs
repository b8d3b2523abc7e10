//! The legal transitions of [`MigrationState`].
//!
//! ```text
//! Planned ──► Snapshotting ──► Importing ──► DualWrite ──► Validating ──► CutOver ──► Soaking ──► CleaningUp ──► Completed
//!    │             │               │             │            │  ▲            │  │        │            │
//!    │             └───────────────┴─────────────┴────────────┴──┼────────────┘  │        │            │
//!    │                                  │                        └── (refused) ──┘        │            │
//!    ▼                                  ▼                                                 │            │
//! Cancelled ◄──────────────────── RollingBack ◄───────────────────────────────────────────┘            │
//!                                    │    │                                                            │
//!                                    ▼    ▼                                                            ▼
//!                             RolledBack  Failed ◄──────────────── (from every non-terminal state) ────┘
//! ```
//!
//! * Forward: each state to the next one of the sequence above.
//! * `CutOver → Validating`: a refused cutover (validation failed under the freeze, was stale,
//!   or the freeze overran its bound); the tenant stays on the source in dual-write.
//! * `Planned → Cancelled`: nothing was done yet. Later, a cancel goes through `RollingBack`
//!   (to undo the dual-write mode and the destination copy) and ends in `Cancelled`; a
//!   rollback ends in `RolledBack`. Both are possible from `Snapshotting` up to `Soaking`
//!   (before **and** after cutover); neither once `CleaningUp` has started deleting the source.
//! * `Failed` from every non-terminal state: the engine stops and waits for a person.
//! * Terminal states (`Completed`, `Cancelled`, `RolledBack`, `Failed`) go nowhere, and no state
//!   goes to itself.

use super::error::{Error, Result};
use crate::model::MigrationState;

use MigrationState as S;

impl MigrationState {
    /// Whether the migration state machine may go from `self` to `next`.
    ///
    /// ```
    /// use stamps::MigrationState as S;
    /// assert!(S::Planned.can_transition_to(S::Snapshotting));
    /// assert!(S::Soaking.can_transition_to(S::RollingBack)); // rollback after cutover
    /// assert!(!S::CleaningUp.can_transition_to(S::RollingBack)); // the source is being deleted
    /// assert!(!S::Completed.can_transition_to(S::Planned));
    /// assert!(!S::DualWrite.can_transition_to(S::DualWrite));
    /// ```
    pub fn can_transition_to(self, next: MigrationState) -> bool {
        if self.is_terminal() || self == next {
            return false;
        }
        if next == S::Failed {
            return true;
        }
        matches!(
            (self, next),
            (S::Planned, S::Snapshotting)
                | (S::Planned, S::Cancelled)
                | (S::Snapshotting, S::Importing)
                | (S::Importing, S::DualWrite)
                | (S::DualWrite, S::Validating)
                | (S::Validating, S::CutOver)
                | (S::CutOver, S::Soaking)
                | (S::CutOver, S::Validating)
                | (S::Soaking, S::CleaningUp)
                | (S::CleaningUp, S::Completed)
                | (S::Snapshotting, S::RollingBack)
                | (S::Importing, S::RollingBack)
                | (S::DualWrite, S::RollingBack)
                | (S::Validating, S::RollingBack)
                | (S::CutOver, S::RollingBack)
                | (S::Soaking, S::RollingBack)
                | (S::RollingBack, S::RolledBack)
                | (S::RollingBack, S::Cancelled)
        )
    }

    /// `next` if the transition is legal, else [`Error::InvalidTransition`].
    ///
    /// ```
    /// use stamps::{Error, MigrationState as S};
    /// assert_eq!(S::Validating.transition(S::CutOver)?, S::CutOver);
    /// assert!(matches!(S::Completed.transition(S::RollingBack), Err(Error::InvalidTransition { .. })));
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn transition(self, next: MigrationState) -> Result<MigrationState> {
        if self.can_transition_to(next) {
            Ok(next)
        } else {
            Err(Error::InvalidTransition {
                what: "migration",
                from: self.as_str(),
                to: next.as_str(),
            })
        }
    }

    /// The states reachable from `self` in one legal transition.
    ///
    /// ```
    /// use stamps::MigrationState as S;
    /// assert_eq!(S::CleaningUp.next_states().collect::<Vec<_>>(), [S::Completed, S::Failed]);
    /// assert_eq!(S::Failed.next_states().count(), 0);
    /// ```
    pub fn next_states(self) -> impl Iterator<Item = MigrationState> {
        MigrationState::ALL
            .into_iter()
            .filter(move |n| self.can_transition_to(*n))
    }

    /// Whether a person may cancel the migration in this state (before cutover).
    ///
    /// ```
    /// use stamps::MigrationState as S;
    /// assert!(S::Validating.is_cancellable());
    /// assert!(!S::Soaking.is_cancellable()); // use a rollback after cutover
    /// ```
    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            S::Planned | S::Snapshotting | S::Importing | S::DualWrite | S::Validating
        )
    }

    /// Whether a rollback may start in this state (from `Snapshotting` up to `Soaking`).
    ///
    /// ```
    /// use stamps::MigrationState as S;
    /// assert!(S::Soaking.can_roll_back());
    /// assert!(!S::CleaningUp.can_roll_back());
    /// ```
    pub fn can_roll_back(self) -> bool {
        self.can_transition_to(S::RollingBack)
    }
}
