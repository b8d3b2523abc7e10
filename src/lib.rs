#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
pub mod capacity;
pub mod error;
pub mod hash;
pub mod health;
pub mod integrations;
pub mod migration;
pub mod model;
pub mod placement;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod reconcile;
pub mod registry;
pub mod rollout;
pub mod router;
pub mod telemetry;
pub mod time;

#[cfg(any(feature = "test-util", feature = "proptest"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "test-util", feature = "proptest"))))]
pub mod testing;

/// The macro [`Registry`] implementations are written with (from the `async-trait` crate).
pub use async_trait::async_trait;
pub use error::{Conflict, Error, InvalidInput, Result, Subject};
pub use health::{HealthMonitor, HealthReport, HealthSource, HealthTable};
pub use migration::{
    DriverError, Fence, FenceToken, Migration, MigrationConfig, MigrationDriver, Migrator, StepOutcome,
    ValidationReport,
};
pub use model::*;
pub use placement::{FleetView, Placement, PlacementError, PlacementExt};
pub use registry::{
    ChangeSignal, DynRegistry, ImportReport, ImportRow, Imported, InMemoryRegistry, Registry, RegistryExt,
    MAX_IMPORT_ROWS,
};
pub use router::{Route, RouteError, Router, RouterConfig, RouterStats};
pub use time::{Clock, FakeClock, SystemClock, Timestamp};
