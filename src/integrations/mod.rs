//! Host integration: taking the tenant from a request, signed routing tokens, a `tower` layer,
//! an HTTP health probe, and scatter-gather over the fleet.
//!
//! The feature-gated modules are listed by name, since a module is only there with its feature.
//!
//! | item | feature |
//! | --- | --- |
//! | [`tenant_from_host`], [`tenant_from_header`], [`tenant_from_path`], [`TenantSource`] | always |
//! | `token`: HMAC-SHA256 routing tokens | `token` |
//! | `scatter`: scatter-gather with limits and timeouts | `tokio` |
//! | `tower`: `RouteLayer`, routing `http` requests (axum, hyper 1) | `tower` (routing tokens in the layer: `tower` + `token`) |
//! | `http_health`: `HttpHealthSource`, probing stamps over HTTP/1 | `http-health` |

mod extract;
#[cfg(feature = "http-health")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-health")))]
pub mod http_health;
mod overview;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod scatter;
#[cfg(feature = "token")]
#[cfg_attr(docsrs, doc(cfg(feature = "token")))]
pub mod token;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use extract::{tenant_from_header, tenant_from_host, tenant_from_path, ExtractError, TenantSource};
pub use overview::{FeedLagView, FleetOverview, MigrationOverview, RegionSignal, ResourceUse, StampOverview};
