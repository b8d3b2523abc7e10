//! Tenant identity and tenant specifications.

use std::fmt;
use std::sync::Arc;

use super::error::Error;
use super::{Demand, Labels, Region, Residency, StampId, Tier};

/// The longest tenant id accepted, in bytes.
pub const TENANT_ID_MAX_LEN: usize = 128;

/// Why a text is not a valid [`TenantId`]. Small and `Copy`: rejecting a tenant id on the
/// routing hot path never allocates.
///
/// ```
/// use stamps::{TenantId, TenantIdError};
/// assert_eq!(TenantId::new(""), Err(TenantIdError::Empty));
/// assert!(matches!(TenantId::new("../x"), Err(TenantIdError::InvalidByte { index: 0, .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantIdError {
    /// The text is empty.
    #[error("tenant id is empty; send a non-empty id of [a-z0-9._-]")]
    Empty,
    /// The text is longer than [`TENANT_ID_MAX_LEN`] bytes.
    #[error("tenant id is {len} bytes long; the limit is 128 bytes")]
    TooLong {
        /// Length of the rejected text in bytes.
        len: usize,
    },
    /// A byte outside the allowed charset (`a-z`, `0-9`, `.`, `_`, `-`), or a leading byte that
    /// is not a lowercase letter or digit.
    #[error("tenant id has byte 0x{byte:02x} at index {index}; allowed are a-z 0-9 . _ - and the first byte must be a-z or 0-9")]
    InvalidByte {
        /// Offset of the first offending byte.
        index: usize,
        /// The offending byte.
        byte: u8,
    },
    /// An ASCII uppercase letter; tenant ids are lowercase. Hosts that receive mixed case
    /// (DNS names are case-insensitive) use [`TenantId::normalized`].
    #[error("tenant id has an uppercase letter at index {index}; tenant ids are lowercase (use TenantId::normalized for host names)")]
    Uppercase {
        /// Offset of the first uppercase letter.
        index: usize,
    },
    /// The bytes are not UTF-8 (only from [`TenantId::from_bytes`]).
    #[error("tenant id is not valid UTF-8")]
    NotUtf8,
}

/// A validated tenant identifier.
///
/// # Rules
/// - 1 to 128 bytes;
/// - only `a-z`, `0-9`, `.`, `_` and `-`;
/// - the first byte is a lowercase letter or digit (so no `.`/`..` path tricks, no leading `-`);
/// - lowercase only: [`TenantId::new`] rejects uppercase; [`TenantId::normalized`] lowercases
///   ASCII first, for ids taken from host names, which are case-insensitive.
///
/// These rules make every tenant id safe as a DNS label component, a file name, a metric label
/// and a SQL value. Validation ([`TenantId::validate`]) never allocates. An id of up to 22
/// bytes (most ids) is stored inline: making, cloning and dropping it never allocate. A
/// longer id is one shared allocation, so its clones are a reference-count increment.
///
/// ```
/// use stamps::TenantId;
/// let id = TenantId::new("acme-corp")?;
/// assert_eq!(id.as_str(), "acme-corp");
/// assert!(TenantId::new("Acme").is_err());
/// assert_eq!(TenantId::normalized("Acme")?.as_str(), "acme");
/// assert!(TenantId::from_bytes(&[0xff, 0x61]).is_err());
/// # Ok::<(), stamps::TenantIdError>(())
/// ```
#[derive(Clone)]
pub struct TenantId(Repr);

/// Bytes an id may have and still be stored inline.
const INLINE: usize = 22;

/// A validated id's text: inline up to [`INLINE`] bytes, shared above.
#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl PartialEq for TenantId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => a == b && x == y,
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for TenantId {}

impl std::hash::Hash for TenantId {
    /// Hashes as the text does, so maps keyed by `TenantId` can be searched with a `&str`:
    /// its bytes, then `0xff`, which is what `str`'s `Hash` feeds through the default
    /// `Hasher::write_str` (and `std`'s hashers, which override it the same way); from the
    /// bytes, without re-checking UTF-8 per hash. A hasher overriding `write_str` otherwise
    /// (possible only on nightly) would not find ids by `&str`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl PartialOrd for TenantId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TenantId {
    /// Byte order of the text (the order of `str`, without re-checking UTF-8 per comparison:
    /// ordered maps of ids compare often).
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            // Valid ids have no zero byte and inline ones are zero-padded, so comparing the
            // padded arrays (as three big-endian words, without a `memcmp` call) is comparing
            // the texts: a text that is a prefix of the other has a zero where the other goes on.
            (Repr::Inline { bytes: x, .. }, Repr::Inline { bytes: y, .. }) => words(x).cmp(&words(y)),
            _ => self.as_bytes().cmp(other.as_bytes()),
        }
    }
}

/// An inline id's zero-padded bytes as big-endian words: their order is the bytes' order.
#[inline]
fn words(b: &[u8; INLINE]) -> (u64, u64, u64) {
    let [b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16, b17, b18, b19, b20, b21] = *b;
    (
        u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        u64::from_be_bytes([b8, b9, b10, b11, b12, b13, b14, b15]),
        u64::from_be_bytes([b16, b17, b18, b19, b20, b21, 0, 0]),
    )
}

impl TenantId {
    /// Validates `text` and makes a tenant id of it (without allocating for up to 22 bytes).
    pub fn new(text: &str) -> Result<Self, TenantIdError> {
        Self::validate(text)?;
        Ok(TenantId::from_valid(text))
    }

    /// The id of text already validated.
    fn from_valid(text: &str) -> TenantId {
        let src = text.as_bytes();
        if src.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            if let Some(dst) = bytes.get_mut(..src.len()) {
                dst.copy_from_slice(src);
                return TenantId(Repr::Inline {
                    len: src.len() as u8,
                    bytes,
                });
            }
        }
        TenantId(Repr::Shared(Arc::from(text)))
    }

    /// Lowercases ASCII letters, then validates: for ids from case-insensitive sources such as
    /// the `Host` header.
    pub fn normalized(text: &str) -> Result<Self, TenantIdError> {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Self::new(&text.to_ascii_lowercase())
        } else {
            Self::new(text)
        }
    }

    /// Validates raw bytes (for example a header value) and makes a tenant id of them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TenantIdError> {
        let text = std::str::from_utf8(bytes).map_err(|_| TenantIdError::NotUtf8)?;
        Self::new(text)
    }

    /// Checks `text` against the rules without allocating. The routing hot path calls this on
    /// every untrusted id before any lookup.
    ///
    /// ```
    /// use stamps::TenantId;
    /// assert!(TenantId::validate("t-001").is_ok());
    /// assert!(TenantId::validate(&"a".repeat(129)).is_err());
    /// ```
    pub fn validate(text: &str) -> Result<(), TenantIdError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if bytes.len() > TENANT_ID_MAX_LEN {
            return Err(TenantIdError::TooLong { len: bytes.len() });
        }
        for (index, &byte) in bytes.iter().enumerate() {
            match byte {
                b'a'..=b'z' | b'0'..=b'9' => {}
                b'.' | b'_' | b'-' if index > 0 => {}
                b'A'..=b'Z' => return Err(TenantIdError::Uppercase { index }),
                _ => return Err(TenantIdError::InvalidByte { index, byte }),
            }
        }
        Ok(())
    }

    /// The id's bytes (ASCII).
    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(s) => s.as_bytes(),
        }
    }

    /// The id as text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Inline bytes are validated ASCII, so the conversion cannot fail.
            Repr::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            Repr::Shared(s) => s,
        }
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", self.as_str())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::str::FromStr for TenantId {
    type Err = TenantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::new(s)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = TenantIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        TenantId::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TenantId::validate(&s)?;
        Ok(TenantId::from_valid(&s))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TenantId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// What a tenant needs from a stamp: its identity, demand per resource, location constraints,
/// tier and an optional pin.
///
/// The registry stores the spec with the tenant's assignment, so rebalancing and capacity
/// accounting always use the demand the tenant was admitted with.
///
/// ```
/// use stamps::{Demand, Region, Residency, Resource, TenantId, TenantSpec, Tier};
/// let spec = TenantSpec::new(TenantId::new("acme")?)
///     .demand(Demand::of([(Resource::Connections, 25.0), (Resource::RequestsPerSecond, 10.0)])?)
///     .region(Region::new("eu-west")?)
///     .residency(Residency::new("eu")?)
///     .tier(Tier::Shared);
/// assert_eq!(spec.demand.get(&Resource::Connections).as_f64(), 25.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With `serde`, deserialization runs [`TenantSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "TenantSpecRaw"))]
#[non_exhaustive]
pub struct TenantSpec {
    /// The tenant.
    pub id: TenantId,
    /// Resources the tenant consumes on the stamp that serves it. Every tenant also counts as
    /// one unit of [`Resource::Tenants`](super::Resource::Tenants), implicitly.
    pub demand: Demand,
    /// Preferred region (latency), if any.
    pub region: Option<Region>,
    /// Data-residency jurisdiction the tenant's data must stay in, if any: a hard constraint.
    pub residency: Option<Residency>,
    /// Service tier.
    pub tier: Tier,
    /// Pin override: the tenant goes to this stamp or nowhere.
    pub pin: Option<StampId>,
    /// Free-form labels (affinity, anti-affinity, plan, ...).
    pub labels: Labels,
    /// A short-lived tenant (a test, a demo, a trial): the only kind an ephemeral stamp
    /// ([`StampSpec::expires_at`](crate::StampSpec::expires_at)) takes.
    pub ephemeral: bool,
}

/// [`TenantSpec`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct TenantSpecRaw {
    id: TenantId,
    demand: Demand,
    region: Option<Region>,
    residency: Option<Residency>,
    tier: Tier,
    pin: Option<StampId>,
    labels: Labels,
    #[serde(default)]
    ephemeral: bool,
}

#[cfg(feature = "serde")]
impl TryFrom<TenantSpecRaw> for TenantSpec {
    type Error = Error;

    fn try_from(r: TenantSpecRaw) -> Result<TenantSpec, Error> {
        let spec = TenantSpec {
            id: r.id,
            demand: r.demand,
            region: r.region,
            residency: r.residency,
            tier: r.tier,
            pin: r.pin,
            labels: r.labels,
            ephemeral: r.ephemeral,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl TenantSpec {
    /// Re-checks what public fields let a caller bypass: the tier ([`Tier::validate`]) and
    /// labels without NUL characters. The id and the demand need no re-check: a [`TenantId`]
    /// is validated when it is made ([`TenantId::validate`]) and cannot be made otherwise, and
    /// the demand is checked when it is built. Registries call this on every write that
    /// stores a spec; deserialization calls it too.
    ///
    /// ```
    /// use stamps::{Name, TenantId, TenantSpec, Tier};
    /// let spec = TenantSpec::new(TenantId::new("acme")?);
    /// assert!(spec.validate().is_ok());
    /// assert!(spec.clone().label("plan", "a\0b").validate().is_err());
    /// assert!(spec.tier(Tier::Custom(Name::new("dedicated")?)).validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        self.tier.validate()?;
        super::names::validate_map("labels", &self.labels)?;
        Ok(())
    }

    /// A shared-tier tenant with no demand beyond its tenant slot and no constraints.
    pub fn new(id: TenantId) -> Self {
        TenantSpec {
            id,
            demand: Demand::default(),
            region: None,
            residency: None,
            tier: Tier::Shared,
            pin: None,
            labels: Labels::default(),
            ephemeral: false,
        }
    }

    /// Marks the tenant ephemeral: it may be placed on ephemeral stamps (and on long-lived
    /// ones); a tenant not marked is never placed on an ephemeral stamp.
    ///
    /// ```
    /// use stamps::{TenantId, TenantSpec};
    /// assert!(TenantSpec::new(TenantId::new("demo-42")?).ephemeral().ephemeral);
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    /// The tenant's id (a shorthand for `&spec.id`).
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// Sets the demand.
    pub fn demand(mut self, demand: Demand) -> Self {
        self.demand = demand;
        self
    }

    /// Sets the preferred region.
    pub fn region(mut self, region: Region) -> Self {
        self.region = Some(region);
        self
    }

    /// Sets the residency constraint.
    pub fn residency(mut self, residency: Residency) -> Self {
        self.residency = Some(residency);
        self
    }

    /// Sets the tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Pins the tenant to a stamp.
    pub fn pin(mut self, stamp: StampId) -> Self {
        self.pin = Some(stamp);
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}
