//! The answers the layer gives itself: a status, an `x-stamps-error` reason and, for 503s, a
//! `Retry-After` in whole seconds.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use super::ERROR_HEADER;
use crate::integrations::ExtractError;

#[cfg(feature = "token")]
use crate::integrations::token::TokenError;

/// A rejection the layer answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reject {
    status: StatusCode,
    reason: &'static str,
    retry_after: Option<u64>,
}

impl Reject {
    pub(super) const fn new(status: StatusCode, reason: &'static str) -> Reject {
        Reject {
            status,
            reason,
            retry_after: None,
        }
    }

    pub(super) fn unavailable(reason: &'static str, after: Duration) -> Reject {
        Reject {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason,
            retry_after: Some(retry_secs(after)),
        }
    }

    pub(super) fn response<B: Default>(self) -> Response<B> {
        let mut res = Response::new(B::default());
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(
            HeaderName::from_static(ERROR_HEADER),
            HeaderValue::from_static(self.reason),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_secs(d: Duration) -> u64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    secs.max(1)
}

pub(super) fn extract_reject(e: ExtractError) -> Reject {
    match e {
        ExtractError::Missing => Reject::new(StatusCode::BAD_REQUEST, "missing-tenant"),
        _ => Reject::new(StatusCode::BAD_REQUEST, "invalid-tenant"),
    }
}

#[cfg(feature = "token")]
pub(super) fn token_reject(e: TokenError) -> Reject {
    match e {
        TokenError::BadSignature => Reject::new(StatusCode::UNAUTHORIZED, "bad-token-signature"),
        TokenError::UnknownKey(_) => Reject::new(StatusCode::UNAUTHORIZED, "unknown-token-key"),
        TokenError::Expired { .. } => Reject::new(StatusCode::UNAUTHORIZED, "expired-token"),
        other => match other.http_status() {
            401 => Reject::new(StatusCode::UNAUTHORIZED, "invalid-token"),
            _ => Reject::new(StatusCode::BAD_REQUEST, "malformed-token"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1_000)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_secs(Duration::MAX), u64::MAX);
    }
}
