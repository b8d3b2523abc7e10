//! stamps
pub mod capacity;
