//! [`Call`]: the [`Registry`] methods [`FaultyRegistry`](super::FaultyRegistry) counts,
//! fails, holds and hooks, one variant per fallible method.

use std::fmt;

#[cfg(doc)]
use crate::registry::Registry;

/// A [`Registry`] method that [`FaultyRegistry`](super::FaultyRegistry) counts and can fail or hold.
///
/// One variant per fallible method of the trait; [`Registry::change_signal`] has none (it is
/// always forwarded). New variants may be added with new trait methods.
///
/// ```
/// use stamps::testing::Call;
/// assert_eq!(Call::ChangesSince.name(), "changes_since");
/// assert!(Call::Assignment.is_read() && !Call::Assign.is_read());
/// assert_eq!(Call::ALL.len(), 26);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Call {
    /// [`Registry::put_stamp`].
    PutStamp,
    /// [`Registry::stamp`].
    Stamp,
    /// [`Registry::set_stamp_state`].
    SetStampState,
    /// [`Registry::fleet`].
    Fleet,
    /// [`Registry::assignment`].
    Assignment,
    /// [`Registry::assignments`].
    Assignments,
    /// [`Registry::assign`].
    Assign,
    /// [`Registry::compare_and_set`].
    CompareAndSet,
    /// [`Registry::unassign`].
    Unassign,
    /// [`Registry::history`].
    History,
    /// [`Registry::changes_since`].
    ChangesSince,
    /// [`Registry::create_migration`].
    CreateMigration,
    /// [`Registry::migration`].
    Migration,
    /// [`Registry::save_migration`].
    SaveMigration,
    /// [`Registry::migrations`].
    Migrations,
    /// [`Registry::set_pin`].
    SetPin,
    /// [`Registry::pin`].
    Pin,
    /// [`Registry::pins`].
    Pins,
    /// [`Registry::set_route_override`].
    SetRouteOverride,
    /// [`Registry::route_overrides`].
    RouteOverrides,
    /// [`Registry::route_override_history`].
    RouteOverrideHistory,
    /// [`Registry::record_repair`].
    RecordRepair,
    /// [`Registry::create_rollout`].
    CreateRollout,
    /// [`Registry::rollout`].
    Rollout,
    /// [`Registry::save_rollout`].
    SaveRollout,
    /// [`Registry::rollouts`].
    Rollouts,
}

impl Call {
    /// Every variant, in declaration order.
    ///
    /// ```
    /// use stamps::testing::Call;
    /// assert!(Call::ALL.contains(&Call::Unassign));
    /// ```
    pub const ALL: [Call; 26] = [
        Call::PutStamp,
        Call::Stamp,
        Call::SetStampState,
        Call::Fleet,
        Call::Assignment,
        Call::Assignments,
        Call::Assign,
        Call::CompareAndSet,
        Call::Unassign,
        Call::History,
        Call::ChangesSince,
        Call::CreateMigration,
        Call::Migration,
        Call::SaveMigration,
        Call::Migrations,
        Call::SetPin,
        Call::Pin,
        Call::Pins,
        Call::SetRouteOverride,
        Call::RouteOverrides,
        Call::RouteOverrideHistory,
        Call::RecordRepair,
        Call::CreateRollout,
        Call::Rollout,
        Call::SaveRollout,
        Call::Rollouts,
    ];

    /// The method's name, as in the trait (`"compare_and_set"`).
    ///
    /// ```
    /// use stamps::testing::Call;
    /// assert_eq!(Call::CompareAndSet.name(), "compare_and_set");
    /// assert_eq!(Call::CompareAndSet.to_string(), "compare_and_set");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Call::PutStamp => "put_stamp",
            Call::Stamp => "stamp",
            Call::SetStampState => "set_stamp_state",
            Call::Fleet => "fleet",
            Call::Assignment => "assignment",
            Call::Assignments => "assignments",
            Call::Assign => "assign",
            Call::CompareAndSet => "compare_and_set",
            Call::Unassign => "unassign",
            Call::History => "history",
            Call::ChangesSince => "changes_since",
            Call::CreateMigration => "create_migration",
            Call::Migration => "migration",
            Call::SaveMigration => "save_migration",
            Call::Migrations => "migrations",
            Call::SetPin => "set_pin",
            Call::Pin => "pin",
            Call::Pins => "pins",
            Call::SetRouteOverride => "set_route_override",
            Call::RouteOverrides => "route_overrides",
            Call::RouteOverrideHistory => "route_override_history",
            Call::RecordRepair => "record_repair",
            Call::CreateRollout => "create_rollout",
            Call::Rollout => "rollout",
            Call::SaveRollout => "save_rollout",
            Call::Rollouts => "rollouts",
        }
    }

    /// Whether the method only reads (`stamp`, `fleet`, `assignment`, `assignments`,
    /// `history`, `changes_since`, `migration`, `migrations`, `pin`, `pins`,
    /// `route_overrides`, `route_override_history`, `rollout`, `rollouts`); the others write.
    ///
    /// ```
    /// use stamps::testing::Call;
    /// assert!(Call::Fleet.is_read());
    /// assert!(!Call::SaveMigration.is_read());
    /// ```
    pub const fn is_read(self) -> bool {
        matches!(
            self,
            Call::Stamp
                | Call::Fleet
                | Call::Assignment
                | Call::Assignments
                | Call::History
                | Call::ChangesSince
                | Call::Migration
                | Call::Migrations
                | Call::Pin
                | Call::Pins
                | Call::RouteOverrides
                | Call::RouteOverrideHistory
                | Call::Rollout
                | Call::Rollouts
        )
    }

    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
