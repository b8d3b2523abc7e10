//! The registry conformance suite: every [`Registry`](crate::Registry) implementation, the crate's own and
//! yours, runs the same list of cases.
//!
//! Each case is a `pub async fn` taking a fresh, empty registry as `&DynRegistry` and panicking
//! (like `assert!`) when the registry breaks the [`Registry`](crate::Registry) contract. [`CASES`] lists them
//! all with their names; [`run_all`] runs each against a new registry from your factory.
//!
//! A failure names the case, the contract it checks in words ([`contract`]) and the offending
//! values, such as "conformance case `assignments_page_in_tenant_order` failed; the contract:
//! assignments returns at most `limit` assignments in tenant-id order, strictly after the
//! cursor, …; found: the page after "t06" starts with "t06"". Every loop in the suite is
//! bounded: a registry whose cursor never advances fails the case instead of being read
//! forever.
//!
//! Races run as many concurrent futures on one task: for a registry whose calls suspend on
//! I/O (a database), the calls really overlap at the server. The crate's own tests add
//! multi-threaded stress for the in-memory registry.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use stamps::{DynRegistry, InMemoryRegistry};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! stamps::testing::conformance::run_all(|| async {
//!     Arc::new(InMemoryRegistry::new()) as Arc<DynRegistry>
//! })
//! .await;
//! # }
//! ```

#[macro_use]
mod check;
mod assignments;
mod constraints;
mod directives;
mod feed;
mod fixtures;
mod import;
mod migrations;
mod races;
mod stamps;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::registry::DynRegistry;

pub use self::assignments::*;
pub use self::check::contract;
pub use self::constraints::*;
pub use self::directives::*;
pub use self::feed::*;
pub use self::import::*;
pub use self::migrations::*;
pub use self::races::*;
pub use self::stamps::*;

/// A boxed case future.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
/// A conformance case.
pub type Case = for<'a> fn(&'a DynRegistry) -> CaseFuture<'a>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($name), |r| Box::pin($name(r)))),*
        ];
    };
}

cases!(
    put_stamp_starts_provisioning,
    put_stamp_updates_spec_and_keeps_state,
    put_stamp_refuses_shrinking_below_usage,
    put_stamp_rejects_invalid_spec,
    unknown_stamp_is_none_or_not_found,
    stamp_lifecycle_follows_legal_transitions,
    stamp_lifecycle_refuses_illegal_transitions,
    decommission_refused_while_tenants_remain,
    stamp_writes_append_exactly_one_change,
    assign_and_lookup,
    assign_requires_an_active_stamp,
    assign_unknown_stamp_is_not_found,
    assign_twice_is_already_assigned,
    hard_limit_is_enforced_per_resource,
    tenant_slots_are_counted,
    fleet_reports_usage_and_unassign_releases_it,
    move_changes_epoch_and_usage,
    stale_epoch_is_a_conflict,
    change_of_unknown_tenant_is_not_found,
    move_to_full_stamp_fails_without_effect,
    move_to_draining_stamp_is_refused,
    dual_write_reserves_the_shadow,
    shadow_equal_to_serving_stamp_is_invalid,
    epoch_grows_across_unassign_and_reassign,
    unassign_with_stale_epoch_is_a_conflict,
    resize_is_capacity_checked,
    history_is_append_only_and_complete,
    change_feed_is_complete_and_ordered,
    change_feed_pages_by_limit,
    change_signal_is_notified,
    assignments_page_in_tenant_order,
    migration_records_round_trip,
    migration_revision_is_compare_and_set,
    one_active_migration_per_tenant,
    migration_states_only_move_forward,
    invalid_migrations_are_refused,
    race_for_last_slots_admits_exactly_the_free_number,
    race_of_compare_and_set_has_one_winner,
    race_to_assign_one_tenant_has_one_winner,
    assign_refuses_broken_constraints,
    compare_and_set_refuses_broken_constraints,
    create_migration_refuses_broken_constraints,
    put_stamp_refuses_a_respec_breaking_its_tenants,
    override_is_explicit_and_recorded,
    race_for_a_dedicated_stamp_has_one_winner,
    change_feed_past_any_version_is_empty,
    change_feed_cursor_past_the_head_is_refused,
    ids_past_the_stored_range_are_unknown,
    pins_are_a_table_enforced_by_every_write,
    a_pin_in_an_assigned_spec_is_recorded,
    route_overrides_are_a_table_without_chains,
    repairs_are_recorded_in_the_history,
    race_of_pin_and_assign_has_one_winner,
    lifetimes_keep_long_lived_tenants_off_ephemeral_stamps,
    rollout_records_round_trip_with_revisions,
    assign_many_admits_each_row_like_assign,
    assign_many_retry_changes_nothing,
    assign_many_keeps_constraints_and_pins,
    race_of_imports_and_assigns_keeps_one_home_and_limits,
);

/// Runs every case in [`CASES`], each against a new registry from `make`, printing each name.
/// Panics on the first failing case with a message naming the case, its contract in words
/// ([`contract`]) and what the case found.
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<DynRegistry>>,
{
    for (name, case) in CASES {
        let registry = make().await;
        println!("conformance: {name}");
        if let Err(payload) = (CatchUnwind { fut: case(&*registry) }).await {
            let found = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(a panic without a message)");
            if found.starts_with("conformance case `") {
                panic!("{found}");
            }
            panic!("{}", check::message(name, format_args!("{found}")));
        }
    }
    println!("conformance: {} cases passed", CASES.len());
}

/// A case future whose panic is caught, so [`run_all`] can name the case in its message.
struct CatchUnwind<'a> {
    fut: CaseFuture<'a>,
}

impl Future for CatchUnwind<'_> {
    type Output = Result<(), Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.fut;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Polls all futures concurrently on the current task; returns their outputs in order.
pub async fn join_all<T, F: Future<Output = T>>(futures: Vec<F>) -> Vec<T> {
    struct JoinAll<F: Future> {
        futs: Vec<Option<Pin<Box<F>>>>,
        out: Vec<Option<F::Output>>,
    }
    impl<F: Future> Future for JoinAll<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.get_mut();
            let mut pending = false;
            for (slot, out) in this.futs.iter_mut().zip(this.out.iter_mut()) {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            *out = Some(v);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(this.out.iter_mut().filter_map(Option::take).collect())
            }
        }
    }
    // The futures are boxed, so JoinAll never needs pinning.
    impl<F: Future> Unpin for JoinAll<F> {}
    let n = futures.len();
    JoinAll {
        futs: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        out: (0..n).map(|_| None).collect(),
    }
    .await
}

/// Polls two futures together on one task (their I/O overlaps at a server).
pub(crate) async fn join2<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = Box::pin(a);
    let mut b = Box::pin(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    match (ra, rb) {
        (Some(x), Some(y)) => (x, y),
        _ => unreachable!("both futures completed"),
    }
}
