//! Signed routing tokens: the stamp a tenant lives on, carried by the client, verified without
//! a registry lookup: routing "embedded in client tokens", as the "Trade-offs" section of
//! *Deployment Stamps for Availability: Multi-Region Guide* puts it.
//!
//! # Format
//! `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`, no padding, where the payload
//! is: version (1 byte, `1`), key id (u32), stamp (u32), epoch (u64), expiry in Unix
//! milliseconds (u64), tenant id length (1 byte) and the tenant id, integers big-endian. A token
//! is at most 250 bytes. Verification is constant-time in the tag, checks the signature before
//! anything the signer vouches for, and never panics on arbitrary input.
//!
//! # Staleness
//! A token names the epoch of the assignment it was minted from. After a migration, a
//! router that knows a newer epoch for the tenant does not follow the token's stamp
//! ([`RoutingClaims::is_current`]); the `tower` layer refuses such a token (401 `stale-token`),
//! and a token for a tenant the router knows to be unassigned (404 `unknown-tenant`).
//!
//! ```
//! use std::time::Duration;
//! use stamps::integrations::token::{KeyId, RoutingTokens, TokenError, TokenKeys};
//! use stamps::{Epoch, FakeClock, StampId, TenantId};
//!
//! let clock = FakeClock::new();
//! let keys = TokenKeys::new(KeyId(1), b"0123456789abcdef0123456789abcdef".to_vec())?;
//! let tokens = RoutingTokens::new(keys, clock.clone());
//! let token = tokens.issue(&TenantId::new("acme")?, StampId(3), Epoch(42), Duration::from_secs(3600))?;
//! let claims = tokens.verify(token.as_bytes())?;
//! assert_eq!((claims.tenant.as_str(), claims.stamp, claims.epoch), ("acme", StampId(3), Epoch(42)));
//! clock.advance(Duration::from_secs(3601));
//! assert!(matches!(tokens.verify(token.as_bytes()), Err(TokenError::Expired { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::InvalidInput;
use crate::model::{Epoch, StampId, TenantId, TenantIdError};
use crate::time::{Clock, SystemClock, Timestamp};

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + 4 + 8 + 8 + 1;
const TAG_LEN: usize = 32;
/// The longest token [`RoutingTokens::verify`] considers, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;
/// The shortest accepted signing key, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// A signing key's identifier, carried in every token so keys can rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-{}", self.0)
    }
}

/// Why a token was refused. Small and `Copy`; each variant is distinct so operators can tell
/// an attack (bad signature) from a rotation slip (unknown key) from an old client (expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of this format (wrong shape, bad base64, wrong lengths, too long).
    #[error("malformed routing token")]
    Malformed,
    /// A format version this crate does not know.
    #[error("routing token version {0} is not supported")]
    UnsupportedVersion(u8),
    /// Signed with a key this verifier does not hold (rotated out, or foreign).
    #[error("routing token signed with unknown {0}")]
    UnknownKey(KeyId),
    /// The signature does not match: the token was altered or forged.
    #[error("routing token signature does not match")]
    BadSignature,
    /// The token expired.
    #[error("routing token expired at {at}")]
    Expired {
        /// When it expired.
        at: Timestamp,
    },
    /// The signed tenant id is invalid (a signer bug: issue only validated ids).
    #[error("routing token carries an invalid tenant id: {0}")]
    InvalidTenant(TenantIdError),
}

impl TokenError {
    /// The HTTP status for this rejection: 400 for malformed tokens, 401 for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            TokenError::Malformed | TokenError::UnsupportedVersion(_) | TokenError::InvalidTenant(_) => 400,
            _ => 401,
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutingClaims {
    /// The tenant.
    pub tenant: TenantId,
    /// The stamp serving it when the token was issued.
    pub stamp: StampId,
    /// The assignment epoch when the token was issued.
    pub epoch: Epoch,
    /// Expiry.
    pub expires_at: Timestamp,
    /// The key that signed it.
    pub key_id: KeyId,
}

impl RoutingClaims {
    /// Whether the token is as new as what the router knows: `known` is the router's epoch for
    /// the tenant, if it has one. A stale token must fall back to a lookup.
    ///
    /// ```
    /// # use stamps::integrations::token::*;
    /// # use stamps::*;
    /// # let tokens = RoutingTokens::new(TokenKeys::new(KeyId(1), vec![7; 32])?, FakeClock::new());
    /// # let t = tokens.issue(&TenantId::new("a")?, StampId(1), Epoch(5), std::time::Duration::from_secs(60))?;
    /// let claims = tokens.verify(t.as_bytes())?;
    /// assert!(claims.is_current(None));
    /// assert!(claims.is_current(Some(Epoch(5))));
    /// assert!(!claims.is_current(Some(Epoch(6))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_current(&self, known: Option<Epoch>) -> bool {
        known.is_none_or(|k| self.epoch >= k)
    }
}

/// The set of keys: one signs new tokens, all verify (for rotation). `Debug` never prints key
/// material.
///
/// ```
/// use stamps::integrations::token::{KeyId, TokenKeys};
/// let mut keys = TokenKeys::new(KeyId(1), vec![1; 32])?;
/// keys.add(KeyId(2), vec![2; 32])?;      // roll out the new key to verifiers first
/// keys.sign_with(KeyId(2))?;             // then sign with it
/// keys.remove(KeyId(1));                 // finally retire the old one
/// assert!(TokenKeys::new(KeyId(1), vec![0; 8]).is_err()); // too short
/// assert!(!format!("{keys:?}").contains("2, 2"));
/// # Ok::<(), stamps::Error>(())
/// ```
#[derive(Clone)]
pub struct TokenKeys {
    keys: Vec<(KeyId, Arc<[u8]>)>,
    signing: KeyId,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("key_ids", &self.keys.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .field("signing", &self.signing)
            .finish()
    }
}

fn check_key(secret: &[u8]) -> Result<(), crate::error::Error> {
    if secret.len() < MIN_KEY_LEN {
        return Err(InvalidInput::new("key", "must be at least 32 bytes of secret material").into());
    }
    Ok(())
}

impl TokenKeys {
    /// A key set with one key, used for signing.
    pub fn new(id: KeyId, secret: Vec<u8>) -> Result<TokenKeys, crate::error::Error> {
        check_key(&secret)?;
        Ok(TokenKeys {
            keys: vec![(id, Arc::from(secret))],
            signing: id,
        })
    }

    /// Adds (or replaces) a verification key.
    pub fn add(&mut self, id: KeyId, secret: Vec<u8>) -> Result<(), crate::error::Error> {
        check_key(&secret)?;
        self.keys.retain(|(k, _)| *k != id);
        self.keys.push((id, Arc::from(secret)));
        Ok(())
    }

    /// Chooses the signing key among the held keys.
    pub fn sign_with(&mut self, id: KeyId) -> Result<(), crate::error::Error> {
        if !self.keys.iter().any(|(k, _)| *k == id) {
            return Err(InvalidInput::new("key id", "is not in the key set; add it first").into());
        }
        self.signing = id;
        Ok(())
    }

    /// Removes a verification key (never the signing key).
    pub fn remove(&mut self, id: KeyId) -> bool {
        if id == self.signing {
            return false;
        }
        let before = self.keys.len();
        self.keys.retain(|(k, _)| *k != id);
        before != self.keys.len()
    }

    fn get(&self, id: KeyId) -> Option<&[u8]> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, s)| &**s)
    }
}

/// Issues and verifies routing tokens with a key set and a clock.
#[derive(Debug, Clone)]
pub struct RoutingTokens {
    keys: TokenKeys,
    clock: Arc<dyn Clock>,
}

impl RoutingTokens {
    /// Tokens with `keys`, reading time from `clock`.
    pub fn new(keys: TokenKeys, clock: impl Clock) -> Self {
        RoutingTokens {
            keys,
            clock: Arc::new(clock),
        }
    }

    /// Tokens on the system clock.
    pub fn with_system_clock(keys: TokenKeys) -> Self {
        Self::new(keys, SystemClock)
    }

    /// The key set.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Issues a token for `tenant` on `stamp` at `epoch`, valid for `ttl`.
    pub fn issue(
        &self,
        tenant: &TenantId,
        stamp: StampId,
        epoch: Epoch,
        ttl: Duration,
    ) -> Result<String, crate::error::Error> {
        let secret = self
            .keys
            .get(self.keys.signing)
            .ok_or(InvalidInput::new("key id", "signing key missing from the key set"))?;
        let expires = self.clock.now() + ttl;
        let tenant_bytes = tenant.as_str().as_bytes();
        let tenant_len = u8::try_from(tenant_bytes.len()).map_err(|_| InvalidInput::new("tenant", "is too long"))?;
        let mut payload = Vec::with_capacity(HEADER_LEN + tenant_bytes.len());
        payload.push(VERSION);
        payload.extend_from_slice(&self.keys.signing.0.to_be_bytes());
        payload.extend_from_slice(&stamp.0.to_be_bytes());
        payload.extend_from_slice(&epoch.0.to_be_bytes());
        payload.extend_from_slice(&expires.as_millis().to_be_bytes());
        payload.push(tenant_len);
        payload.extend_from_slice(tenant_bytes);
        let mut mac = HmacSha256::new_from_slice(secret).map_err(crate::error::Error::backend)?;
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let mut out = URL_SAFE_NO_PAD.encode(&payload);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        Ok(out)
    }

    /// Verifies a token from untrusted bytes: shape, version, key, signature (constant time),
    /// tenant id, expiry, in that order.
    pub fn verify(&self, token: &[u8]) -> Result<RoutingClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let dot = token.iter().position(|b| *b == b'.').ok_or(TokenError::Malformed)?;
        let (p64, rest) = token.split_at(dot);
        let t64 = rest.get(1..).ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(t64).map_err(|_| TokenError::Malformed)?;
        if tag.len() != TAG_LEN || payload.len() < HEADER_LEN {
            return Err(TokenError::Malformed);
        }
        let mut r = Reader(&payload);
        let version = r.u8()?;
        if version != VERSION {
            return Err(TokenError::UnsupportedVersion(version));
        }
        let key_id = KeyId(r.u32()?);
        let stamp = StampId(r.u32()?);
        let epoch = Epoch(r.u64()?);
        let expires_at = Timestamp::from_millis(r.u64()?);
        let len = usize::from(r.u8()?);
        let tenant_bytes = r.take(len)?;
        if !r.0.is_empty() {
            return Err(TokenError::Malformed);
        }
        let secret = self.keys.get(key_id).ok_or(TokenError::UnknownKey(key_id))?;
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError::Malformed)?;
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
        let tenant = TenantId::from_bytes(tenant_bytes).map_err(TokenError::InvalidTenant)?;
        if self.clock.now() >= expires_at {
            return Err(TokenError::Expired { at: expires_at });
        }
        Ok(RoutingClaims {
            tenant,
            stamp,
            epoch,
            expires_at,
            key_id,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, TokenError> {
        self.take(1)?.first().copied().ok_or(TokenError::Malformed)
    }
    fn u32(&mut self) -> Result<u32, TokenError> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| TokenError::Malformed)?;
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, TokenError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| TokenError::Malformed)?;
        Ok(u64::from_be_bytes(b))
    }
}
