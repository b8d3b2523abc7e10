//! The soak check: the host's verdict on a tenant while it soaks on its new stamp
//! ([`SoakCheck`], [`SoakVerdict`], [`AlwaysHealthy`], [`soak_check_fn`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::MigrationContext;

/// What a soak check says about the tenant on its new stamp.
///
/// ```
/// use stamps::migration::SoakVerdict;
/// assert!(SoakVerdict::Healthy.is_healthy());
/// assert!(!SoakVerdict::unhealthy("p99 latency 3x baseline").is_healthy());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SoakVerdict {
    /// Keep soaking (and complete when the window ends).
    Healthy,
    /// Roll back to the source, for this reason.
    Unhealthy(String),
}

impl SoakVerdict {
    /// An unhealthy verdict.
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        SoakVerdict::Unhealthy(reason.into())
    }

    /// Whether the tenant looks fine.
    pub fn is_healthy(&self) -> bool {
        matches!(self, SoakVerdict::Healthy)
    }
}

/// The host's judgement of a tenant during the soak window after cutover (error rate, latency,
/// support tickets). An `Unhealthy` verdict rolls the migration back to the source, losing no
/// write (the source received every write through reverse dual-write).
///
/// # Contract
/// Read-only and quick; called once per [`Migration::step`](super::Migration::step) in
/// `Soaking`, so as often as the host steps (or [`MigrationConfig::soak_poll`](super::MigrationConfig::soak_poll)
/// under `Migration::run`). Must not panic.
///
/// # Implementing
/// Compare the tenant's metrics on the destination with its baseline on the source. Closures
/// work through [`soak_check_fn`].
///
/// # Example
/// ```
/// use stamps::migration::{soak_check_fn, MigrationContext, SoakCheck, SoakVerdict};
/// let check = soak_check_fn(|ctx: &MigrationContext| {
///     if ctx.tenant.as_str() == "fragile" { SoakVerdict::unhealthy("5xx rate 4%") } else { SoakVerdict::Healthy }
/// });
/// # fn _use(_: &dyn SoakCheck) {}
/// # _use(&check);
/// ```
#[async_trait]
pub trait SoakCheck: fmt::Debug + Send + Sync + 'static {
    /// Judges the tenant now.
    async fn check(&self, ctx: &MigrationContext) -> SoakVerdict;
}

#[async_trait]
impl<C: SoakCheck + ?Sized> SoakCheck for Arc<C> {
    async fn check(&self, ctx: &MigrationContext) -> SoakVerdict {
        (**self).check(ctx).await
    }
}

/// A soak check that always says healthy (the soak is then only a waiting period).
///
/// ```
/// use stamps::migration::{AlwaysHealthy, SoakCheck};
/// # fn _use(_: &dyn SoakCheck) {}
/// _use(&AlwaysHealthy);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysHealthy;

#[async_trait]
impl SoakCheck for AlwaysHealthy {
    async fn check(&self, _ctx: &MigrationContext) -> SoakVerdict {
        SoakVerdict::Healthy
    }
}

/// A [`SoakCheck`] from a synchronous closure; see [`soak_check_fn`].
///
/// ```
/// use stamps::migration::{soak_check_fn, FnSoakCheck, MigrationContext, SoakVerdict};
/// let _c: FnSoakCheck<_> = soak_check_fn(|_: &MigrationContext| SoakVerdict::Healthy);
/// ```
#[derive(Clone)]
pub struct FnSoakCheck<F>(F);

impl<F> fmt::Debug for FnSoakCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSoakCheck")
    }
}

/// Wraps a closure as a [`SoakCheck`].
///
/// ```
/// use stamps::migration::{soak_check_fn, MigrationContext, SoakVerdict};
/// let _check = soak_check_fn(|_: &MigrationContext| SoakVerdict::Healthy);
/// ```
pub fn soak_check_fn<F>(f: F) -> FnSoakCheck<F>
where
    F: Fn(&MigrationContext) -> SoakVerdict + Send + Sync + 'static,
{
    FnSoakCheck(f)
}

#[async_trait]
impl<F> SoakCheck for FnSoakCheck<F>
where
    F: Fn(&MigrationContext) -> SoakVerdict + Send + Sync + 'static,
{
    async fn check(&self, ctx: &MigrationContext) -> SoakVerdict {
        (self.0)(ctx)
    }
}
