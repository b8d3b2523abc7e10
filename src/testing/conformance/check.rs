//! How a case fails: [`check!`], [`check_eq!`] and [`fail!`] panic with a message naming the
//! case, the contract it checks in words ([`contract`]) and the offending values, so a
//! failure reads as the broken rule rather than a bare `left == right`; and the bounds every
//! loop of the suite stays within.

/// At most this many pages are read in one paging loop before the case fails (a registry
/// whose cursor does not advance would otherwise be read forever).
pub(super) const MAX_PAGES: usize = 10_000;

/// The contract a case checks, in words, by the case's name.
///
/// ```
/// use stamps::testing::conformance::{contract, CASES};
/// assert!(CASES.iter().all(|(name, _)| contract(name).is_some()));
/// assert!(contract("no_such_case").is_none());
/// ```
pub fn contract(case: &str) -> Option<&'static str> {
    Some(match case {
        "put_stamp_starts_provisioning" => "a new stamp starts in Provisioning, is readable, and appears in the fleet",
        "put_stamp_updates_spec_and_keeps_state" => "putting an existing stamp updates its spec and keeps its state",
        "put_stamp_refuses_shrinking_below_usage" => {
            "shrinking a limit below current usage fails with CapacityExceeded and leaves the spec unchanged"
        }
        "put_stamp_rejects_invalid_spec" => {
            "a spec with an invalid field is refused with InvalidInput and nothing is stored"
        }
        "unknown_stamp_is_none_or_not_found" => "unknown stamps read as None and state changes on them are NotFound",
        "stamp_lifecycle_follows_legal_transitions" => {
            "legal lifecycle transitions succeed (Provisioning → Active ⇄ Draining → Decommissioned); repeating a state is a no-op"
        }
        "stamp_lifecycle_refuses_illegal_transitions" => {
            "illegal lifecycle transitions fail with InvalidTransition and change nothing"
        }
        "decommission_refused_while_tenants_remain" => {
            "a stamp that holds tenants cannot be decommissioned: StampNotEmpty with their count and the first of them"
        }
        "stamp_writes_append_exactly_one_change" => {
            "every stamp write (creation, re-spec, state change) appends exactly one change carrying the stamp after the write, and a refused write appends none"
        }
        "assign_and_lookup" => {
            "assign stores the spec, serving mode and a positive epoch; assignment reads it back"
        }
        "assign_requires_an_active_stamp" => "provisioning, draining and decommissioned stamps accept no tenant (NotAccepting)",
        "assign_unknown_stamp_is_not_found" => "assigning to an unknown stamp is NotFound",
        "assign_twice_is_already_assigned" => "a tenant has one home: a second assign fails with AlreadyAssigned, wherever it targets",
        "hard_limit_is_enforced_per_resource" => "the hard limit (not the headroom) bounds every limited resource",
        "tenant_slots_are_counted" => "every tenant takes one Tenants slot",
        "fleet_reports_usage_and_unassign_releases_it" => "the fleet shows usage per resource and unassign releases it exactly",
        "move_changes_epoch_and_usage" => "a move gives a larger epoch and moves usage from source to destination",
        "stale_epoch_is_a_conflict" => {
            "a compare-and-set with a stale epoch is a Conflict naming both epochs, without effect"
        }
        "change_of_unknown_tenant_is_not_found" => "changing or unassigning an unknown tenant is NotFound",
        "move_to_full_stamp_fails_without_effect" => {
            "a move to a stamp without room fails and changes nothing: not the assignment, the usage, the history or the change feed"
        }
        "move_to_draining_stamp_is_refused" => {
            "tenants cannot move onto a draining stamp, but a draining stamp keeps and releases its own"
        }
        "dual_write_reserves_the_shadow" => {
            "dual-write reserves the tenant's demand on the shadow stamp; a cutover with reverse dual-write keeps both; serving on one side releases the other"
        }
        "shadow_equal_to_serving_stamp_is_invalid" => "a shadow equal to the serving stamp is InvalidInput",
        "epoch_grows_across_unassign_and_reassign" => "epochs keep growing across unassign and reassign",
        "unassign_with_stale_epoch_is_a_conflict" => "unassign with a stale epoch is a Conflict and keeps the assignment",
        "resize_is_capacity_checked" => "resizing checks capacity on every stamp the tenant occupies",
        "history_is_append_only_and_complete" => {
            "history records every write in order with action, stamps, epoch and actor; failed writes add nothing"
        }
        "change_feed_is_complete_and_ordered" => {
            "every stamp and assignment write appears in the feed exactly once, in strictly increasing version order, with the state after the write"
        }
        "change_feed_pages_by_limit" => {
            "changes_since returns at most `limit` changes, all after the cursor, and its pages cover the feed without gaps or repeats"
        }
        "change_signal_is_notified" => "the change signal is notified after a write, and waiting past the head times out",
        "assignments_page_in_tenant_order" => {
            "assignments returns at most `limit` assignments in tenant-id order, strictly after the cursor, and its pages cover every assignment once"
        }
        "migration_records_round_trip" => "a created migration record gets an id and revision 1, and reads back equal",
        "migration_revision_is_compare_and_set" => {
            "saving a migration record with a stale revision is a Conflict; two workers cannot both advance a record"
        }
        "one_active_migration_per_tenant" => "a tenant has at most one non-terminal migration (AlreadyExists)",
        "migration_states_only_move_forward" => {
            "a save moves a migration's state only along a legal transition (else InvalidTransition); a finished migration cannot be reopened"
        }
        "invalid_migrations_are_refused" => {
            "create_migration refuses the same source and destination, unknown stamps, and records not in Planned"
        }
        "race_for_last_slots_admits_exactly_the_free_number" => {
            "concurrent assigns for the last free slots: exactly the free number win, the others get CapacityExceeded"
        }
        "race_of_compare_and_set_has_one_winner" => {
            "concurrent compare-and-sets with the same expected epoch: exactly one wins, the others get Conflict"
        }
        "race_to_assign_one_tenant_has_one_winner" => "concurrent assigns of one tenant: exactly one wins",
        "assign_refuses_broken_constraints" => {
            "assign refuses a stamp outside the tenant's residency, away from its pin, of another tier or dedicated to another tenant, with ConstraintViolated, and writes nothing"
        }
        "compare_and_set_refuses_broken_constraints" => {
            "a move or a shadow onto a stamp that breaks one of the tenant's constraints is refused with ConstraintViolated and writes nothing"
        }
        "create_migration_refuses_broken_constraints" => {
            "create_migration refuses a destination that breaks one of the tenant's constraints, with ConstraintViolated"
        }
        "put_stamp_refuses_a_respec_breaking_its_tenants" => {
            "put_stamp refuses a residency or tier change that breaks a constraint of a tenant the stamp holds (serving or shadow), unless an override already broke it the same way"
        }
        "override_is_explicit_and_recorded" => {
            "a write may break a constraint only with an override naming it and a reason, and the history records the override"
        }
        "race_for_a_dedicated_stamp_has_one_winner" => {
            "concurrent assigns of different tenants to one free dedicated stamp: exactly one wins"
        }
        "change_feed_past_any_version_is_empty" => {
            "changes_since a version past anything storable (2^63 - 1 up to u64::MAX) is empty, not an error"
        }
        "change_feed_cursor_past_the_head_is_refused" => {
            "changes_since a cursor past the head but storable is HistoryDiverged naming the head (a cursor of a lost history is never answered with an empty page)"
        }
        "pins_are_a_table_enforced_by_every_write" => {
            "set_pin writes a pin (one Pin change, one history entry with who and why) that assign, compare_and_set and create_migration enforce, that the assignment carries, that outlives an unassign, and that is refused when the current placement breaks it"
        }
        "a_pin_in_an_assigned_spec_is_recorded" => {
            "an assign whose spec carries a pin records it as the tenant's pin; pins page in tenant order"
        }
        "route_overrides_are_a_table_without_chains" => {
            "set_route_override sets, replaces and clears a stamp's redirect with one change each, refuses unknown stamps, self-redirects, decommissioned targets and chains, and keeps every write in route_override_history"
        }
        "repairs_are_recorded_in_the_history" => {
            "record_repair appends a Repaired history entry with actor and reason and one change, for any tenant, and changes no placement"
        }
        "race_of_pin_and_assign_has_one_winner" => {
            "an assign and a set_pin to another stamp racing for one unassigned tenant: exactly one succeeds"
        }
        "lifetimes_keep_long_lived_tenants_off_ephemeral_stamps" => {
            "an ephemeral stamp takes only ephemeral tenants (assign and moves of long-lived tenants are refused with the lifetime rule); its expiry and the tenant's flag read back; a stamp holding long-lived tenants cannot become ephemeral"
        }
        "rollout_records_round_trip_with_revisions" => {
            "rollout records are created at their first wave with revision 1, one in progress at a time, saved only on the revision last read and along legal transitions, with target and waves fixed"
        }
        "ids_past_the_stored_range_are_unknown" => {
            "ids, versions, revisions and epochs past what a backend stores read as unknown (None, NotFound or Conflict), never as InvalidInput"
        }
        "assign_many_admits_each_row_like_assign" => {
            "assign_many admits each row as assign would, in row order against the usage earlier rows left, refuses the others with assign's error (a tenant named twice, even after a first row refused for its spec: InvalidInput), and gives each admitted row consecutive epochs, one history entry and one change"
        }
        "assign_many_retry_changes_nothing" => {
            "retrying assign_many reports its rows Unchanged, appends nothing and reports the head that holds them; a row for a tenant on another stamp or with another spec is AlreadyAssigned; more than MAX_IMPORT_ROWS rows is InvalidInput without effect"
        }
        "assign_many_keeps_constraints_and_pins" => {
            "assign_many enforces the hard constraints row by row (one tenant per dedicated stamp within a call too, recorded pins, tiers) and records a pin a row brings"
        }
        "race_of_imports_and_assigns_keeps_one_home_and_limits" => {
            "concurrent assign_many calls admit no more than a stamp's free slots between them, and an import racing single assigns of its tenants leaves each one home"
        }
        _ => return None,
    })
}

/// The case a check runs in, from the type name of a function item defined inside it
/// (`…::conformance::feed::assignments_page_in_tenant_order::{{closure}}::here`).
#[doc(hidden)]
pub fn case_of(path: &'static str) -> &'static str {
    path.rsplit("::")
        .find(|s| *s != "here" && !s.starts_with('{'))
        .unwrap_or(path)
}

/// The failure message: the case, its contract in words, and what was found.
#[doc(hidden)]
pub fn message(case: &str, detail: std::fmt::Arguments<'_>) -> String {
    match contract(case) {
        Some(c) => format!("conformance case `{case}` failed; the contract: {c}; found: {detail}"),
        None => format!("conformance case `{case}` failed: {detail}"),
    }
}

/// Fails the case this is written in, with a message naming the case, its contract and the
/// detail given (format arguments).
macro_rules! fail {
    ($($detail:tt)+) => {{
        fn here() {}
        let case = $crate::testing::conformance::check::case_of(::std::any::type_name_of_val(&here));
        panic!("{}", $crate::testing::conformance::check::message(case, format_args!($($detail)+)))
    }};
}

/// Fails the case unless `cond` holds; the detail (format arguments) says what was found.
/// Without a detail, the condition's text is the detail.
macro_rules! check {
    ($cond:expr $(,)?) => {
        let holds: bool = $cond;
        if !holds {
            fail!("`{}` does not hold", stringify!($cond));
        }
    };
    ($cond:expr, $($detail:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            fail!($($detail)+);
        }
    };
}

/// Fails the case unless `found == expected`, naming both values (and what they are, if a
/// description is given).
macro_rules! check_eq {
    ($found:expr, $expected:expr $(,)?) => {
        match (&$found, &$expected) {
            (found, expected) => {
                if found != expected {
                    fail!("`{}` is {:?}, expected {:?}", stringify!($found), found, expected);
                }
            }
        }
    };
    ($found:expr, $expected:expr, $($what:tt)+) => {
        match (&$found, &$expected) {
            (found, expected) => {
                if found != expected {
                    fail!("{}: {:?}, expected {:?}", format_args!($($what)+), found, expected);
                }
            }
        }
    };
}

/// Fails the case unless `value` matches `pattern`, naming the value.
macro_rules! check_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match &$value {
            $pattern $(if $guard)? => {}
            other => fail!("`{}` is {:?}, expected {}", stringify!($value), other, stringify!($pattern)),
        }
    };
    ($value:expr, $pattern:pat $(if $guard:expr)?, $($what:tt)+) => {
        match &$value {
            $pattern $(if $guard)? => {}
            other => fail!("{}: got {:?}, expected {}", format_args!($($what)+), other, stringify!($pattern)),
        }
    };
}
