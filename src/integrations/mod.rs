//! Host integration: taking the tenant from a request, signed routing tokens, and
//! scatter-gather over the fleet.
//!
//! | item | feature |
//! | --- | --- |
//! | [`tenant_from_host`], [`tenant_from_header`], [`tenant_from_path`], [`TenantSource`] | always |
//! | [`token`]: HMAC-SHA256 routing tokens | `token` |
//! | [`scatter`]: scatter-gather with limits and timeouts | `tokio` |

mod extract;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod scatter;
#[cfg(feature = "token")]
#[cfg_attr(docsrs, doc(cfg(feature = "token")))]
pub mod token;

pub use extract::{tenant_from_header, tenant_from_host, tenant_from_path, ExtractError, TenantSource};
