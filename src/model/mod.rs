//! The domain model: tenants, stamps, capacity, assignments, the change feed, fleet snapshots
//! and migration records. Every type is `Debug + Clone`; with the `serde` feature they
//! serialize too.

pub mod admission;
mod assignment;
mod capacity;
mod change;
pub mod constraints;
pub mod directive;
mod drift;
pub(crate) mod error;
mod expiry;
mod fleet;
mod health;
mod history;
mod migration;
mod migration_transitions;
pub(crate) mod names;
mod resource;
mod rollout;
mod stamp;
mod tenant;

pub use assignment::{Assignment, AssignmentChange, AssignmentMode, ChangeAction, Epoch, Version};
pub use capacity::Capacity;
pub use change::{Change, ChangeBatch, ChangeKind};
pub use constraints::{Constraint, ConstraintKind, ConstraintViolation, Override};
pub use directive::{Decision, Pin, Redirect, RedirectWhen, RouteOverride};
pub use drift::{drift_report, DesiredConfig, DriftGroup, DriftReport, RunningConfig};
pub use expiry::{expiry_report, ExpiringStamp, ExpiryReport};
pub use fleet::{Fleet, StampLoad};
pub use health::{AllHealthy, HealthStatus, HealthView};
pub use history::{HistoryAction, HistoryEntry};
pub use migration::{MigrationId, MigrationRecord, MigrationState};
pub use names::{Name, Region, Residency, NAME_MAX_LEN};
pub use resource::{Amount, Amounts, Demand, Headroom, Resource, AMOUNT_MAX_MILLI, AMOUNT_MAX_UNITS};
pub use rollout::{RolloutId, RolloutRecord, RolloutState};
pub(crate) use stamp::numeric_version_key as stamp_version_key;
pub use stamp::{compare_versions, version_at_least, Labels, Stamp, StampId, StampSpec, StampState, Tier};
pub use tenant::{TenantId, TenantIdError, TenantSpec, TENANT_ID_MAX_LEN};
