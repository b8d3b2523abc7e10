//! The registry conformance suite (being written).
