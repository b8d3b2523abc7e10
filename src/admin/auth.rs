//! Who may call the admin API: the host's [`Authorize`] hook. Nothing is open by default.

use http::request::Parts;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Read the fleet, a stamp, a tenant, migrations, signals (`GET`, and the dry-run plan).
    Read,
    /// Change something: start a migration, pause, resume, cancel or roll one back.
    Write,
}

/// The authenticated caller. Its `name` is the identity recorded with every change made on
/// its behalf (a migration's `initiated_by`, an operator command's `by`).
///
/// ```
/// use stamps::admin::Caller;
/// assert_eq!(Caller::new("erin@ops").name(), "erin@ops");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    name: String,
}

impl Caller {
    /// A caller named `name` (an operator, a service account).
    ///
    /// ```
    /// let c = stamps::admin::Caller::new("deploy-bot");
    /// # let _ = c;
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Caller { name: name.into() }
    }

    /// The caller's identity.
    ///
    /// ```
    /// assert_eq!(stamps::admin::Caller::new("x").name(), "x");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// No identity, or one that did not check out: `401 Unauthorized`.
    Unauthenticated,
    /// A known caller without the right to this access: `403 Forbidden`.
    Forbidden,
}

/// The host's authorization hook: given the request's head and the access it needs, the
/// caller or a refusal.
///
/// # Contract
/// - Called for every request before anything is read or changed; a refusal ends the request
///   with 401 or 403 and no other effect.
/// - Must not block for long (it runs on the request's task); do token checks in memory.
/// - The [`Caller::name`] returned is recorded as the author of what the request changes.
///
/// # Implementing
/// Check a bearer token, a client-certificate header set by your proxy, or a session, and
/// grant [`Access::Write`] only to operators. Closures `Fn(&Parts, Access) -> Result<Caller,
/// Denied>` implement the trait.
///
/// ```
/// use stamps::admin::{Access, Authorize, Caller, Denied};
/// let auth = |parts: &http::request::Parts, access: Access| {
///     match parts.headers.get("authorization").and_then(|v| v.to_str().ok()) {
///         Some("Bearer ops-token") => Ok(Caller::new("ops")),
///         Some("Bearer viewer-token") if access == Access::Read => Ok(Caller::new("viewer")),
///         Some(_) => Err(Denied::Forbidden),
///         None => Err(Denied::Unauthenticated),
///     }
/// };
/// let (parts, _) = http::Request::get("/").body(()).unwrap().into_parts();
/// assert_eq!(auth.authorize(&parts, Access::Read), Err(Denied::Unauthenticated));
/// ```
pub trait Authorize: Send + Sync + 'static {
    /// The caller, or why not.
    fn authorize(&self, request: &Parts, access: Access) -> Result<Caller, Denied>;
}

impl<F> Authorize for F
where
    F: Fn(&Parts, Access) -> Result<Caller, Denied> + Send + Sync + 'static,
{
    fn authorize(&self, request: &Parts, access: Access) -> Result<Caller, Denied> {
        self(request, access)
    }
}

/// The default hook: refuses everyone with 401.
///
/// ```
/// use stamps::admin::{Access, Authorize, DenyAll, Denied};
/// let (parts, _) = http::Request::get("/").body(()).unwrap().into_parts();
/// assert_eq!(DenyAll.authorize(&parts, Access::Read), Err(Denied::Unauthenticated));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

impl Authorize for DenyAll {
    fn authorize(&self, _: &Parts, _: Access) -> Result<Caller, Denied> {
        Err(Denied::Unauthenticated)
    }
}
