//! Test utilities for users and for the crate's own tests: the registry conformance suite and
//! `FaultyRegistry`, a registry wrapper that injects outages and runs per-method hooks
//! (feature `test-util`), and property-testing strategies and invariant checkers for
//! placement policies (feature `proptest`).

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod faulty;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod migration;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use faulty::{Call, FaultyRegistry};

#[cfg(feature = "proptest")]
#[cfg_attr(docsrs, doc(cfg(feature = "proptest")))]
pub mod placement;

#[cfg(feature = "proptest")]
pub use placement::{check_placement_invariants, PlacementInvariants, Scenario};
