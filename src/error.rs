//! The crate's error type.
//!
//! One `#[non_exhaustive]` enum with meaning-based variants that every registry backend maps
//! its failures to; backend error types never appear in public signatures.
//!
//! The types are defined in the model layer, beside the values they describe (a variant names a
//! [`StampId`](crate::model::StampId) or a [`StampState`](crate::model::StampState)), so that the
//! model's own constructors can return them; this module is their public home.

pub use crate::model::error::{Conflict, Error, InvalidInput, Result, Subject, STAMP_NOT_EMPTY_LISTED};
