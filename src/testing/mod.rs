//! Test utilities for users and for the crate's own tests: the registry conformance suite.

pub mod conformance;
