//! Stamps: identity, specification, lifecycle.

use std::collections::BTreeMap;
use std::fmt;

use super::error::{Error, InvalidInput};
use super::{Capacity, Name, Region, Residency};
use crate::time::Timestamp;

/// Free-form key/value labels on stamps and tenants.
pub type Labels = BTreeMap<String, String>;

/// A stamp's identifier: small and `Copy`, chosen by the operator (stamp-001 is `StampId(1)`).
///
/// ```
/// use stamps::StampId;
/// assert_eq!(StampId(7).to_string(), "stamp-007");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct StampId(pub u32);

impl fmt::Display for StampId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stamp-{:03}", self.0)
    }
}

/// A stamp's lifecycle state.
///
/// ```text
/// Provisioning ──► Active ◄──► Draining ──► Decommissioned
///      └──────────────────────────────────────────▲
/// ```
/// Only `Active` stamps accept new tenants. A stamp can be decommissioned only when it serves
/// no tenant (the registry checks). Setting the current state again is a no-op.
///
/// ```
/// use stamps::StampState::*;
/// assert!(Provisioning.can_become(Active));
/// assert!(Draining.can_become(Active));
/// assert!(!Decommissioned.can_become(Active));
/// assert!(!Active.can_become(Provisioning));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum StampState {
    /// Being built; serves nobody yet.
    Provisioning,
    /// Serving, and accepting new tenants while it has room.
    Active,
    /// Serving its tenants, accepting no new ones (tenants are being moved off).
    Draining,
    /// Retired. Terminal.
    Decommissioned,
}

impl StampState {
    /// Every state, in lifecycle order.
    pub const ALL: [StampState; 4] = [
        StampState::Provisioning,
        StampState::Active,
        StampState::Draining,
        StampState::Decommissioned,
    ];

    /// Whether `self → next` is a legal transition (the same state is legal: a no-op).
    pub fn can_become(self, next: StampState) -> bool {
        use StampState::*;
        self == next
            || matches!(
                (self, next),
                (Provisioning, Active)
                    | (Provisioning, Decommissioned)
                    | (Active, Draining)
                    | (Draining, Active)
                    | (Draining, Decommissioned)
            )
    }

    /// Checks a transition, returning [`Error::InvalidTransition`] when it is illegal.
    pub fn transition(self, next: StampState) -> Result<StampState, Error> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(Error::InvalidTransition {
                what: "stamp state",
                from: self.as_str(),
                to: next.as_str(),
            })
        }
    }

    /// Whether stamps in this state take new tenants.
    pub fn accepts_tenants(self) -> bool {
        self == StampState::Active
    }

    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            StampState::Provisioning => "provisioning",
            StampState::Active => "active",
            StampState::Draining => "draining",
            StampState::Decommissioned => "decommissioned",
        }
    }

    /// Parses a name written by [`StampState::as_str`].
    pub fn parse(s: &str) -> Option<StampState> {
        StampState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for StampState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Service tier of a stamp or tenant.
///
/// `Dedicated` tenants get an empty dedicated stamp that nothing else ever shares; `Shared`
/// tenants never land on a dedicated stamp (placement enforces both).
///
/// ```
/// use stamps::{Name, Tier};
/// assert_eq!(Tier::Dedicated.to_string(), "dedicated");
/// assert_eq!(Tier::Custom(Name::new("gold")?).to_string(), "gold");
/// # Ok::<(), stamps::Error>(())
/// ```
///
/// A custom tier may not be named `shared` or `dedicated` (stored by name, it would read back
/// as the built-in tier); [`Tier::validate`] and deserialization refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", try_from = "TierRaw"))]
#[non_exhaustive]
pub enum Tier {
    /// Multi-tenant.
    #[default]
    Shared,
    /// One tenant per stamp.
    Dedicated,
    /// A user-defined tier; tenants of it go to stamps of the same tier.
    Custom(Name),
}

/// [`Tier`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum TierRaw {
    Shared,
    Dedicated,
    Custom(Name),
}

#[cfg(feature = "serde")]
impl TryFrom<TierRaw> for Tier {
    type Error = Error;

    fn try_from(raw: TierRaw) -> Result<Tier, Error> {
        let t = match raw {
            TierRaw::Shared => Tier::Shared,
            TierRaw::Dedicated => Tier::Dedicated,
            TierRaw::Custom(n) => Tier::Custom(n),
        };
        t.validate()?;
        Ok(t)
    }
}

impl Tier {
    /// Checks that a custom tier does not reuse a built-in tier's name.
    ///
    /// ```
    /// use stamps::{Name, Tier};
    /// assert!(Tier::Custom(Name::new("gold")?).validate().is_ok());
    /// assert!(Tier::Custom(Name::new("shared")?).validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Tier::Custom(n) if !matches!(Tier::parse(n.as_str()), Ok(Tier::Custom(_))) => {
                Err(InvalidInput::new("tier", "a custom tier must not be named shared or dedicated").into())
            }
            _ => Ok(()),
        }
    }

    /// The tier's name.
    pub fn as_str(&self) -> &str {
        match self {
            Tier::Shared => "shared",
            Tier::Dedicated => "dedicated",
            Tier::Custom(n) => n.as_str(),
        }
    }

    /// Parses a name written by [`Tier::as_str`].
    pub fn parse(s: &str) -> Result<Tier, Error> {
        Ok(match s {
            "shared" => Tier::Shared,
            "dedicated" => Tier::Dedicated,
            other => Tier::Custom(Name::new(other)?),
        })
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator declares about a stamp. The registry adds lifecycle state and timestamps
/// to make a [`Stamp`].
///
/// ```
/// use stamps::{Capacity, Region, Residency, Resource, StampId, StampSpec};
/// let spec = StampSpec::new(
///     StampId(1),
///     "stamp-001",
///     Region::new("eu-west")?,
///     Capacity::new([(Resource::Connections, 5000.0)], 0.25)?,
/// )?
/// .residency(Residency::new("eu")?)
/// .endpoint("https://stamp-001.internal")
/// .version("2026.11-ring1")
/// .label("az", "b");
/// assert_eq!(spec.name, "stamp-001");
/// # Ok::<(), stamps::Error>(())
/// ```
///
/// With `serde`, deserialization runs [`StampSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "StampSpecRaw"))]
#[non_exhaustive]
pub struct StampSpec {
    /// Identifier.
    pub id: StampId,
    /// Human name (validated like a tenant id, up to 64 bytes).
    pub name: String,
    /// Region.
    pub region: Region,
    /// Residency jurisdiction of the stamp's data, if declared.
    pub residency: Option<Residency>,
    /// Tier.
    pub tier: Tier,
    /// Labels.
    pub labels: Labels,
    /// Deployed version label (deployment rings).
    pub version: Option<String>,
    /// Where requests for this stamp's tenants go (a URL or address), if the host routes by it.
    pub endpoint: Option<String>,
    /// Capacity per resource, with headroom.
    pub capacity: Capacity,
    /// When an ephemeral stamp (tests, demos, temporary capacity) is due for teardown; `None`
    /// for a long-lived stamp. Only ephemeral tenants ([`TenantSpec::ephemeral`](crate::TenantSpec::ephemeral))
    /// are placed on an ephemeral stamp ([`ConstraintKind::Lifetime`](crate::ConstraintKind::Lifetime)).
    pub expires_at: Option<Timestamp>,
}

/// [`StampSpec`] as serialized, before its checks.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
struct StampSpecRaw {
    id: StampId,
    name: String,
    region: Region,
    residency: Option<Residency>,
    tier: Tier,
    labels: Labels,
    version: Option<String>,
    endpoint: Option<String>,
    capacity: Capacity,
    #[serde(default)]
    expires_at: Option<Timestamp>,
}

#[cfg(feature = "serde")]
impl TryFrom<StampSpecRaw> for StampSpec {
    type Error = Error;

    fn try_from(r: StampSpecRaw) -> Result<StampSpec, Error> {
        let spec = StampSpec {
            id: r.id,
            name: r.name,
            region: r.region,
            residency: r.residency,
            tier: r.tier,
            labels: r.labels,
            version: r.version,
            endpoint: r.endpoint,
            capacity: r.capacity,
            expires_at: r.expires_at,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl StampSpec {
    /// A shared-tier stamp spec. The name is validated (1–64 bytes, `a-z0-9._-`).
    pub fn new(id: StampId, name: impl Into<String>, region: Region, capacity: Capacity) -> Result<StampSpec, Error> {
        let name = name.into();
        super::names::validate_name("stamp name", &name)?;
        Ok(StampSpec {
            id,
            name,
            region,
            residency: None,
            tier: Tier::Shared,
            labels: Labels::new(),
            version: None,
            endpoint: None,
            capacity,
            expires_at: None,
        })
    }

    /// Makes the stamp ephemeral, due for teardown at `at`: only ephemeral tenants are placed
    /// on it, and [`expiry_report`](crate::model::expiry_report) lists it (with the tenants
    /// still on it) once it is due.
    ///
    /// ```
    /// use stamps::*;
    /// let demo = StampSpec::new(StampId(9), "demo-9", Region::new("eu")?,
    ///     Capacity::new([(Resource::Tenants, 5.0)], 0.0)?)?.expires_at(Timestamp::from_millis(86_400_000));
    /// assert!(demo.is_ephemeral());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Whether the stamp is ephemeral (has an expiry).
    pub fn is_ephemeral(&self) -> bool {
        self.expires_at.is_some()
    }

    /// Sets the residency.
    pub fn residency(mut self, residency: Residency) -> Self {
        self.residency = Some(residency);
        self
    }

    /// Sets the tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the version label.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets the endpoint.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Re-checks fields that public construction could have bypassed (the struct's fields are
    /// public for reading and pattern matching): the name, the endpoint and version (1 to
    /// 2048 and 1 to 128 bytes, no control characters), the tier ([`Tier::validate`]) and
    /// labels without NUL characters. Registries call this on `put_stamp`; deserialization
    /// calls it too.
    ///
    /// ```
    /// use stamps::{Capacity, Region, Resource, StampId, StampSpec};
    /// let spec = StampSpec::new(StampId(1), "s1", Region::new("us")?,
    ///     Capacity::new([(Resource::Tenants, 10.0)], 0.0)?)?;
    /// assert!(spec.validate().is_ok());
    /// let mut bad = spec.clone();
    /// bad.name = "../../x".into();
    /// assert!(bad.validate().is_err());
    /// assert!(spec.endpoint("http://a\0b").validate().is_err());
    /// # Ok::<(), stamps::Error>(())
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        super::names::validate_name("stamp name", &self.name)?;
        self.tier.validate()?;
        super::names::validate_map("labels", &self.labels)?;
        if let Some(e) = &self.endpoint {
            if e.is_empty() || e.len() > 2048 || e.chars().any(char::is_control) {
                return Err(InvalidInput::new("endpoint", "must be 1 to 2048 bytes without control characters").into());
            }
        }
        if let Some(v) = &self.version {
            if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                return Err(InvalidInput::new("version", "must be 1 to 128 bytes without control characters").into());
            }
        }
        Ok(())
    }
}

/// A stamp as the registry knows it: the spec, lifecycle state and timestamps.
///
/// ```
/// # use stamps::*;
/// # async fn demo() -> stamps::Result<()> {
/// let registry = InMemoryRegistry::new();
/// let spec = StampSpec::new(StampId(1), "s1", Region::new("us-east")?,
///     Capacity::new([(Resource::Tenants, 100.0)], 0.0)?)?;
/// let stamp = registry.put_stamp(spec).await?;
/// assert_eq!(stamp.state, StampState::Provisioning);
/// # Ok(()) }
/// ```
///
/// With `serde`, deserialization checks the spec ([`StampSpec::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Stamp {
    /// The declared spec.
    pub spec: StampSpec,
    /// Lifecycle state.
    pub state: StampState,
    /// When the stamp was first registered.
    pub created_at: Timestamp,
    /// When the spec or state last changed.
    pub updated_at: Timestamp,
}

impl Stamp {
    /// Assembles a stamp (for registry implementations).
    pub fn new(spec: StampSpec, state: StampState, created_at: Timestamp, updated_at: Timestamp) -> Stamp {
        Stamp {
            spec,
            state,
            created_at,
            updated_at,
        }
    }

    /// The stamp's id.
    pub fn id(&self) -> StampId {
        self.spec.id
    }

    /// Checks the spec ([`StampSpec::validate`]).
    pub fn validate(&self) -> Result<(), Error> {
        self.spec.validate()
    }
}

/// Orders two deployed-version labels ([`StampSpec::version`]) the way release numbers are
/// read: semantic-versioning precedence for labels that follow it, and a total, consistent
/// order for every other label.
///
/// A label is split at its first `+` (build metadata, ignored) and then at its first `-`
/// into a release and a pre-release part. Releases are compared component by component
/// (components are separated by `.`): numbers numerically, a number before a word, words
/// byte-wise; a missing component counts as `0`. With equal releases, no pre-release ranks
/// above a pre-release, and pre-releases are compared the same way. Labels equal under these
/// rules are ordered byte-wise, so the order is total.
///
/// ```
/// use std::cmp::Ordering::*;
/// use stamps::model::compare_versions;
/// assert_eq!(compare_versions("1.10.0", "1.9.3"), Greater);
/// assert_eq!(compare_versions("2026.11", "2026.11.0"), Less); // equal releases, then byte-wise
/// assert_eq!(compare_versions("1.2.0-rc.2", "1.2.0"), Less);
/// assert_eq!(compare_versions("1.2.0-rc.10", "1.2.0-rc.9"), Greater);
/// assert_eq!(compare_versions("v7", "v7"), Equal);
/// ```
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    version_precedence(a, b).then_with(|| a.cmp(b))
}

/// Whether `version` is at least `min` by release precedence ([`compare_versions`] without
/// its final byte-wise tie-break: `2026.11.0` is at least `2026.11`, and the other way round).
///
/// ```
/// use stamps::model::version_at_least;
/// assert!(version_at_least("2026.11", "2026.11.0"));
/// assert!(version_at_least("1.10.0", "1.9"));
/// assert!(!version_at_least("1.10.0-rc.1", "1.10.0"));
/// ```
pub fn version_at_least(version: &str, min: &str) -> bool {
    match (numeric_version_key(version), numeric_version_key(min)) {
        (Some(v), Some(m)) => v >= m,
        _ => version_precedence(version, min) != std::cmp::Ordering::Less,
    }
}

/// The precedence of a plain dotted release (`42`, `42.1`, `2026.11.3.7`: up to four numeric
/// components below 65,536, no pre-release or build part) packed into one integer, so the
/// common labels compare in a few instructions; `None` for any other label (compared by
/// [`compare_versions`]' rules instead). Missing components count as 0, as there.
#[inline]
pub(crate) fn numeric_version_key(v: &str) -> Option<u64> {
    let bytes = v.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let (mut key, mut part, mut parts, mut digits) = (0u64, 0u64, 0u32, 0u32);
    for &b in bytes {
        match b {
            b'0'..=b'9' => {
                part = part * 10 + u64::from(b - b'0');
                digits += 1;
                if part > 0xFFFF {
                    return None;
                }
            }
            b'.' if digits > 0 && parts < 3 => {
                key = (key << 16) | part;
                parts += 1;
                part = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    key = (key << 16) | part;
    parts += 1;
    Some(key << (16 * (4 - parts)))
}

fn version_precedence(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn split(v: &str) -> (&str, Option<&str>) {
        let v = v.split_once('+').map_or(v, |(head, _)| head);
        match v.split_once('-') {
            Some((release, pre)) => (release, Some(pre)),
            None => (v, None),
        }
    }
    fn component(a: &str, b: &str) -> Ordering {
        let (na, nb) = (a.parse::<u128>(), b.parse::<u128>());
        match (na, nb) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => a.cmp(b),
        }
    }
    fn dotted(a: &str, b: &str) -> Ordering {
        let (mut x, mut y) = (a.split('.'), b.split('.'));
        loop {
            match (x.next(), y.next()) {
                (None, None) => return Ordering::Equal,
                (p, q) => match component(p.unwrap_or("0"), q.unwrap_or("0")) {
                    Ordering::Equal => {}
                    other => return other,
                },
            }
        }
    }
    let ((ra, pa), (rb, pb)) = (split(a), split(b));
    dotted(ra, rb).then_with(|| match (pa, pb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => dotted(x, y),
    })
}
