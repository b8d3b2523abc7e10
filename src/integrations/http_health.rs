//! An HTTP health probe for stamps: [`HttpHealthSource`].
//!
//! Each check sends `GET <stamp endpoint><path>` (default path `/healthz`) over HTTP/1 with a
//! per-probe timeout and maps the answer to a [`HealthReport`]:
//!
//! | answer | report |
//! | --- | --- |
//! | 2xx | healthy |
//! | 429, or a status set with [`HttpHealthSource::degraded_status`] | degraded, reason `HTTP 429 from /healthz` |
//! | any other status | unhealthy, reason `HTTP 503 from /healthz` |
//! | connection error | unhealthy, reason `probe failed: ...` |
//! | no answer within the timeout | unhealthy, reason `timed out after 2s` |
//! | stamp without endpoint | unhealthy, reason `no endpoint` |
//! | endpoint not `http://` (such as `https://`) | unhealthy, reason naming the scheme |
//!
//! # TLS
//! The probe speaks plain `http://` only: TLS (roots, client certificates, SNI) is the host's
//! business. An `https://` endpoint is reported unhealthy with the reason
//! `https endpoints are not probed by HttpHealthSource (plain http only); ...`, so the
//! misconfiguration shows in the health table instead of passing silently. To probe over TLS,
//! implement [`HealthSource`] with your own client (the trait is small), or give stamps an
//! internal `http://` health endpoint.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use stamps::health::{HealthMonitor, Hysteresis};
//! use stamps::integrations::http_health::HttpHealthSource;
//! use stamps::InMemoryRegistry;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stamps::Result<()> {
//! let source = HttpHealthSource::new()
//!     .path("/ready")
//!     .timeout(Duration::from_millis(500))
//!     .degraded_status(503); // this fleet answers 503 when shedding load
//! let monitor = Arc::new(HealthMonitor::builder(source).hysteresis(Hysteresis::new(3, 2)?).build());
//! let task = monitor.clone().spawn(Arc::new(InMemoryRegistry::new()), Duration::from_secs(5));
//! # drop(task); // stops the checks
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::health::{HealthReport, HealthSource};
use crate::model::{HealthStatus, Stamp};
use crate::time::{Clock, SystemClock};

type Body = Empty<&'static [u8]>;

/// Probes each stamp's HTTP health endpoint: see the [module docs](self) for the mapping from
/// answers to reports. Cheap to clone (clones share the connection pool).
///
/// Defaults: path `/healthz`, timeout 2 s (covering connect, request and response head),
/// degraded statuses: 429 only, system clock.
///
/// ```
/// use std::time::Duration;
/// use stamps::health::HealthSource;
/// use stamps::integrations::http_health::HttpHealthSource;
/// use stamps::*;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> stamps::Result<()> {
/// let source = HttpHealthSource::new().timeout(Duration::from_millis(200));
/// assert_eq!(source.probe_path(), "/healthz");
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("eu")?,
///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
/// let stamp = Stamp::new(spec, StampState::Active, Timestamp::ZERO, Timestamp::ZERO);
/// let report = source.check(&stamp).await;
/// assert_eq!((report.status, report.reason.as_deref()), (HealthStatus::Unhealthy, Some("no endpoint")));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpHealthSource {
    client: Client<HttpConnector, Body>,
    path: Arc<str>,
    timeout: Duration,
    degraded: Vec<u16>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for HttpHealthSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpHealthSource")
            .field("path", &self.path)
            .field("timeout", &self.timeout)
            .field("degraded", &self.degraded)
            .finish()
    }
}

impl Default for HttpHealthSource {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpHealthSource {
    /// A probe with the defaults. Needs a Tokio runtime when it checks, not when it is built.
    ///
    /// ```
    /// use stamps::integrations::http_health::HttpHealthSource;
    /// assert_eq!(HttpHealthSource::new().probe_timeout(), std::time::Duration::from_secs(2));
    /// ```
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.enforce_http(true);
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        HttpHealthSource {
            client,
            path: Arc::from("/healthz"),
            timeout: Duration::from_secs(2),
            degraded: vec![429],
            clock: Arc::new(SystemClock),
        }
    }

    /// Probes `path` under each endpoint (a missing leading `/` is added).
    ///
    /// ```
    /// use stamps::integrations::http_health::HttpHealthSource;
    /// assert_eq!(HttpHealthSource::new().path("ready").probe_path(), "/ready");
    /// ```
    pub fn path(mut self, path: &str) -> Self {
        self.path = if path.starts_with('/') {
            Arc::from(path)
        } else {
            Arc::from(format!("/{path}"))
        };
        self
    }

    /// The probed path.
    ///
    /// ```
    /// use stamps::integrations::http_health::HttpHealthSource;
    /// assert_eq!(HttpHealthSource::new().probe_path(), "/healthz");
    /// ```
    pub fn probe_path(&self) -> &str {
        &self.path
    }

    /// Bounds each probe (connect, request, response head) by `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stamps::integrations::http_health::HttpHealthSource;
    /// let s = HttpHealthSource::new().timeout(Duration::from_millis(300));
    /// assert_eq!(s.probe_timeout(), Duration::from_millis(300));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-probe timeout.
    ///
    /// ```
    /// use stamps::integrations::http_health::HttpHealthSource;
    /// assert_eq!(HttpHealthSource::new().probe_timeout().as_secs(), 2);
    /// ```
    pub fn probe_timeout(&self) -> Duration {
        self.timeout
    }

    /// Also treats `status` as degraded (429 always is).
    ///
    /// ```
    /// use stamps::integrations::http_health::HttpHealthSource;
    /// let s = HttpHealthSource::new().degraded_status(503);
    /// assert!(format!("{s:?}").contains("[429, 503]"));
    /// ```
    pub fn degraded_status(mut self, status: u16) -> Self {
        if !self.degraded.contains(&status) {
            self.degraded.push(status);
        }
        self
    }

    /// Stamps reports with `clock` (default: the system clock).
    ///
    /// ```
    /// use stamps::integrations::http_health::HttpHealthSource;
    /// use stamps::FakeClock;
    /// let s = HttpHealthSource::new().clock(FakeClock::new());
    /// # let _ = s;
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The probe URI for `endpoint`, or why there is none.
    fn uri(&self, endpoint: &str) -> Result<Uri, String> {
        let lower = endpoint.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
        if lower.starts_with("https://") {
            return Err("https endpoints are not probed by HttpHealthSource (plain http only); \
                        give the stamp an http:// health endpoint or a TLS-capable HealthSource"
                .to_string());
        }
        if !lower.starts_with("http://") {
            return Err(format!("endpoint {} is not an http:// URL", redacted(endpoint)));
        }
        let base = endpoint.trim_end_matches('/');
        let text = format!("{base}{}", self.path);
        text.parse::<Uri>()
            .map_err(|e| format!("endpoint {} is not a valid URL: {e}", redacted(endpoint)))
    }

    async fn probe(&self, uri: Uri) -> Result<u16, String> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(http::header::USER_AGENT, "stamps-health/1")
            .body(Body::new())
            .map_err(|e| format!("cannot build the probe request: {e}"))?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(res)) => Ok(res.status().as_u16()),
            Ok(Err(e)) => Err(format!("probe failed: {}", error_chain(&e))),
            Err(_) => Err(format!("timed out after {:?}", self.timeout)),
        }
    }
}

/// An error with its sources, `: `-separated (hyper's top-level messages are terse).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[async_trait]
impl HealthSource for HttpHealthSource {
    async fn check(&self, stamp: &Stamp) -> HealthReport {
        let id = stamp.id();
        let Some(endpoint) = stamp.spec.endpoint.as_deref() else {
            return HealthReport::unhealthy(id, "no endpoint", self.clock.now());
        };
        let outcome = match self.uri(endpoint) {
            Ok(uri) => self.probe(uri).await,
            Err(reason) => Err(reason),
        };
        let at = self.clock.now();
        match outcome {
            Ok(status) if (200..300).contains(&status) => HealthReport::healthy(id, at),
            Ok(status) => {
                let reason = format!("HTTP {status} from {}", self.path);
                let level = if self.degraded.contains(&status) {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Unhealthy
                };
                HealthReport::new(id, level, Some(&reason), at)
            }
            Err(reason) => HealthReport::unhealthy(id, &reason, at),
        }
    }
}

/// An endpoint as health reasons show it: credentials (`user:password@`) replaced by `***`,
/// at most 100 characters, quoted. Reasons end up in the health table, logs and dashboards.
fn redacted(endpoint: &str) -> String {
    let (scheme, rest) = match endpoint.find("://") {
        Some(i) => endpoint.split_at(i + 3),
        None => ("", endpoint),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let shown: String = format!("{scheme}{host}{tail}").chars().take(100).collect();
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_never_show_credentials() {
        let s = HttpHealthSource::new();
        for endpoint in [
            "ftp://admin:s3cret@h/x",
            "http://admin:s3cret@bad host/",
            "admin:s3cret@h",
            "http://a:b@c:s3cret@bad host",
            "gopher://s3cret@h?q=1#f",
        ] {
            let reason = s.uri(endpoint).err().unwrap_or_default();
            assert!(!reason.is_empty(), "{endpoint}");
            assert!(!reason.contains("s3cret"), "{reason}");
        }
        assert_eq!(redacted("ftp://u:p@h:21/path"), "\"ftp://***@h:21/path\"");
        assert_eq!(redacted("h:80"), "\"h:80\"");
        assert_eq!(redacted(&"x".repeat(300)).len(), 102);
        assert_eq!(redacted("é@ü"), "\"***@ü\"");
    }

    #[test]
    fn uri_joins_endpoint_and_path_and_refuses_other_schemes() {
        let s = HttpHealthSource::new().path("ready");
        assert_eq!(
            s.uri("http://10.0.0.1:8080/").map(|u| u.to_string()).as_deref(),
            Ok("http://10.0.0.1:8080/ready")
        );
        assert_eq!(
            s.uri("HTTP://h/base").map(|u| u.to_string()).as_deref(),
            Ok("http://h/base/ready")
        );
        assert!(s.uri("https://h").is_err_and(|e| e.contains("plain http only")));
        assert!(s.uri("h:80").is_err_and(|e| e.contains("not an http:// URL")));
        assert!(s.uri("http://bad host").is_err_and(|e| e.contains("not a valid URL")));
        assert!(s.uri("").is_err());
        assert!(s.uri("é").is_err());
    }
}
