//! Tenant extraction from requests: host subdomain, header, path prefix.
//!
//! Every function takes untrusted text (or bytes) exactly as it arrived, returns a validated
//! [`TenantId`] or a small `Copy` [`ExtractError`] that maps to HTTP 400, and never panics.

use std::fmt;

use crate::model::{TenantId, TenantIdError};

/// Why no tenant could be taken from a request. Every variant maps to HTTP 400
/// ([`ExtractError::http_status`]).
///
/// ```
/// use stamps::integrations::{tenant_from_host, ExtractError};
/// assert_eq!(tenant_from_host("app.example", "app.example"), Err(ExtractError::NoSubdomain));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The request has no host, header or path segment to read from.
    #[error("the request carries no tenant (missing host, header or path segment)")]
    Missing,
    /// The host is not under the configured base domain.
    #[error("host is not under the configured base domain")]
    ForeignHost,
    /// The host is the base domain itself.
    #[error("host has no tenant subdomain")]
    NoSubdomain,
    /// More than one label before the base domain (`a.b.app.example`).
    #[error("host has nested subdomains; expected exactly one tenant label")]
    NestedSubdomain,
    /// The host has non-ASCII characters; send the punycode (`xn--`) form.
    #[error("host is not ASCII; send the punycode (xn--) form")]
    NonAsciiHost,
    /// The host's port is not a number in 1..=65535, or the host is an IP literal.
    #[error("host has an invalid port or is an IP literal")]
    MalformedHost,
    /// The path does not start with the configured prefix.
    #[error("path does not start with the tenant prefix")]
    PathMismatch,
    /// The candidate is not a valid tenant id.
    #[error("invalid tenant id: {0}")]
    InvalidTenant(#[from] TenantIdError),
    /// The request names its tenant more than once and the names may disagree: two Host or
    /// tenant headers, or a Host header and a URI authority naming different tenants (the
    /// `tower` layer checks this; the functions here take one value).
    #[error("the request names its tenant ambiguously (repeated header, or Host and URI authority disagree)")]
    Ambiguous,
    /// The source is [`TenantSource::RoutingToken`]: only a verifier holding the signing keys
    /// can read the tenant from a token (the `tower` layer does, with the keys given to
    /// `RouteLayer::tokens`); [`TenantSource::extract`] has none.
    #[error("the tenant is in a routing token, which only a verifier holding the keys can read")]
    #[cfg(feature = "token")]
    #[cfg_attr(docsrs, doc(cfg(feature = "token")))]
    NeedsTokenVerifier,
}

impl ExtractError {
    /// The HTTP status for this rejection: always 400 Bad Request.
    pub fn http_status(&self) -> u16 {
        400
    }
}

/// Takes the tenant from a `Host` header value under `base_domain`:
/// `acme.app.example` → `acme`.
///
/// Handles a port (`acme.app.example:8443`), a trailing dot (`acme.app.example.`), any letter
/// case (host names are case-insensitive; the tenant id is lowercased), and punycode labels
/// (`xn--bcher-kva.app.example` → `xn--bcher-kva`, the form DNS carries). Rejects hosts outside
/// the base domain, the bare base domain, nested subdomains, non-ASCII hosts, IP literals and
/// bad ports.
///
/// ```
/// use stamps::integrations::{tenant_from_host, ExtractError};
/// assert_eq!(tenant_from_host("Acme.App.Example:8443", "app.example")?.as_str(), "acme");
/// assert_eq!(tenant_from_host("acme.app.example.", "app.example.")?.as_str(), "acme");
/// assert_eq!(tenant_from_host("a.b.app.example", "app.example"), Err(ExtractError::NestedSubdomain));
/// assert_eq!(tenant_from_host("acme.evil.example", "app.example"), Err(ExtractError::ForeignHost));
/// # Ok::<(), ExtractError>(())
/// ```
pub fn tenant_from_host(host: &str, base_domain: &str) -> Result<TenantId, ExtractError> {
    let host = host.trim_matches(|c: char| c == ' ' || c == '\t');
    if host.is_empty() {
        return Err(ExtractError::Missing);
    }
    if !host.is_ascii() {
        return Err(ExtractError::NonAsciiHost);
    }
    if host.starts_with('[') {
        return Err(ExtractError::MalformedHost);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) => {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p));
            if !valid {
                return Err(ExtractError::MalformedHost);
            }
            name
        }
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let base = base_domain.strip_suffix('.').unwrap_or(base_domain);
    if name.eq_ignore_ascii_case(base) {
        return Err(ExtractError::NoSubdomain);
    }
    if name.len() <= base.len() {
        return Err(ExtractError::ForeignHost);
    }
    let split = name.len() - base.len();
    let (label, rest) = name.split_at(split);
    if !rest.eq_ignore_ascii_case(base) {
        return Err(ExtractError::ForeignHost);
    }
    let label = label.strip_suffix('.').ok_or(ExtractError::ForeignHost)?;
    if label.is_empty() {
        return Err(ExtractError::NoSubdomain);
    }
    if label.contains('.') {
        return Err(ExtractError::NestedSubdomain);
    }
    if label.bytes().all(|b| b.is_ascii_digit()) && base.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(ExtractError::MalformedHost);
    }
    Ok(TenantId::normalized(label)?)
}

/// Takes the tenant from a header value's raw bytes (`X-Tenant-Id: acme`). Surrounding spaces
/// and tabs (HTTP optional whitespace) are ignored; anything else must be a valid tenant id,
/// exactly (no case folding: ids in headers are written by programs).
///
/// ```
/// use stamps::integrations::tenant_from_header;
/// assert_eq!(tenant_from_header(b" acme ")?.as_str(), "acme");
/// assert!(tenant_from_header(b"").is_err());
/// assert!(tenant_from_header(&[0xff]).is_err());
/// # Ok::<(), stamps::integrations::ExtractError>(())
/// ```
pub fn tenant_from_header(value: &[u8]) -> Result<TenantId, ExtractError> {
    let start = value.iter().position(|b| *b != b' ' && *b != b'\t');
    let end = value.iter().rposition(|b| *b != b' ' && *b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => Ok(TenantId::from_bytes(value.get(s..=e).unwrap_or_default())?),
        _ => Err(ExtractError::Missing),
    }
}

/// Takes the tenant from a path under `prefix`: with prefix `/t/`, `/t/acme/orders/7` →
/// `acme`. The segment ends at the next `/`, `?` or `#`.
///
/// ```
/// use stamps::integrations::{tenant_from_path, ExtractError};
/// assert_eq!(tenant_from_path("/t/acme/orders?x=1", "/t/")?.as_str(), "acme");
/// assert_eq!(tenant_from_path("/acme", "/")?.as_str(), "acme");
/// assert_eq!(tenant_from_path("/x/acme", "/t/"), Err(ExtractError::PathMismatch));
/// assert!(tenant_from_path("/t/%2e%2e/x", "/t/").is_err());
/// # Ok::<(), ExtractError>(())
/// ```
pub fn tenant_from_path(path: &str, prefix: &str) -> Result<TenantId, ExtractError> {
    let rest = path.strip_prefix(prefix).ok_or(ExtractError::PathMismatch)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let segment = rest.get(..end).unwrap_or_default();
    if segment.is_empty() {
        return Err(ExtractError::Missing);
    }
    Ok(TenantId::new(segment)?)
}

/// Where a host takes tenant ids from, as configuration: the [`TenantSource::extract`] method
/// applies it to the request parts it needs.
///
/// ```
/// use stamps::integrations::TenantSource;
/// let src = TenantSource::Subdomain { base_domain: "app.example".into() };
/// assert_eq!(src.extract(Some("acme.app.example"), None, "/")?.as_str(), "acme");
/// let src = TenantSource::Header { name: "x-tenant-id".into() };
/// assert_eq!(src.extract(None, Some(b"globex"), "/")?.as_str(), "globex");
/// # Ok::<(), stamps::integrations::ExtractError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantSource {
    /// The `Host` header's first label under `base_domain`.
    Subdomain {
        /// The platform's base domain, such as `app.example`.
        base_domain: String,
    },
    /// A header (conventionally `X-Tenant-Id`).
    Header {
        /// The header name, lowercase.
        name: String,
    },
    /// The path segment after `prefix`.
    PathPrefix {
        /// The prefix, such as `/t/`.
        prefix: String,
    },
    /// The tenant named by the request's signed routing token, for clients that carry their
    /// routing in a token ("embedded in client tokens", as the "Trade-offs" section of
    /// *Deployment Stamps for Availability: Multi-Region Guide* puts it). Only a verifier can
    /// read it: use it with the `tower` layer and its `RouteLayer::tokens` (the token header
    /// and keys), which verifies the token before trusting the tenant it names. A request
    /// without a token is 400 `missing-tenant`; [`TenantSource::extract`] answers
    /// [`ExtractError::NeedsTokenVerifier`].
    ///
    /// ```
    /// use stamps::integrations::{ExtractError, TenantSource};
    /// let src = TenantSource::RoutingToken;
    /// assert_eq!(src.extract(None, Some(b"a.b"), "/"), Err(ExtractError::NeedsTokenVerifier));
    /// assert_eq!(src.to_string(), "routing token");
    /// ```
    #[cfg(feature = "token")]
    #[cfg_attr(docsrs, doc(cfg(feature = "token")))]
    RoutingToken,
}

impl TenantSource {
    /// The conventional `X-Tenant-Id` header.
    pub fn header() -> Self {
        TenantSource::Header {
            name: "x-tenant-id".to_string(),
        }
    }

    /// Applies the source to a request's host, the value of the configured header (the caller
    /// looks it up by [`TenantSource::header_name`]), and path.
    pub fn extract(&self, host: Option<&str>, header: Option<&[u8]>, path: &str) -> Result<TenantId, ExtractError> {
        match self {
            TenantSource::Subdomain { base_domain } => {
                tenant_from_host(host.ok_or(ExtractError::Missing)?, base_domain)
            }
            TenantSource::Header { .. } => tenant_from_header(header.ok_or(ExtractError::Missing)?),
            TenantSource::PathPrefix { prefix } => tenant_from_path(path, prefix),
            #[cfg(feature = "token")]
            TenantSource::RoutingToken => Err(ExtractError::NeedsTokenVerifier),
        }
    }

    /// The header this source reads, if it reads one.
    pub fn header_name(&self) -> Option<&str> {
        match self {
            TenantSource::Header { name } => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for TenantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantSource::Subdomain { base_domain } => write!(f, "subdomain of {base_domain}"),
            TenantSource::Header { name } => write!(f, "header {name}"),
            TenantSource::PathPrefix { prefix } => write!(f, "path under {prefix}"),
            #[cfg(feature = "token")]
            TenantSource::RoutingToken => f.write_str("routing token"),
        }
    }
}
