//! Small validated names: regions, residencies, tier and resource names.

use std::fmt;
use std::sync::Arc;

use super::error::InvalidInput;

/// Longest name accepted for regions, residencies, tiers and custom resources.
pub const NAME_MAX_LEN: usize = 64;

pub(crate) fn validate_name(field: &'static str, text: &str) -> Result<(), InvalidInput> {
    if text.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if text.len() > NAME_MAX_LEN {
        return Err(InvalidInput::new(field, "must be at most 64 bytes"));
    }
    let ok = text
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && matches!(b, b'-' | b'_' | b'.')));
    if !ok {
        return Err(InvalidInput::new(
            field,
            "must be lowercase a-z 0-9 . _ - and start with a letter or digit",
        ));
    }
    Ok(())
}

/// Checks free text the registries store verbatim (labels, actors, migration data): no NUL
/// character, which PostgreSQL cannot store in text or `jsonb`.
pub(crate) fn validate_text(field: &'static str, text: &str) -> Result<(), InvalidInput> {
    if text.contains('\0') {
        return Err(InvalidInput::new(field, "must not contain a NUL character"));
    }
    Ok(())
}

/// [`validate_text`] on every key and value of a map (labels, migration data).
pub(crate) fn validate_map<'a>(
    field: &'static str,
    map: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), InvalidInput> {
    for (k, v) in map {
        validate_text(field, k)?;
        validate_text(field, v)?;
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $example:literal) => {
        $(#[$doc])*
        ///
        /// Validated: 1 to 64 bytes of lowercase `a-z`, `0-9`, `.`, `_`, `-`, starting with a
        /// letter or digit. Clones share one allocation.
        ///
        /// ```
        #[doc = concat!("use stamps::", stringify!($name), ";")]
        #[doc = concat!("let n = ", stringify!($name), "::new(\"", $example, "\")?;")]
        #[doc = concat!("assert_eq!(n.as_str(), \"", $example, "\");")]
        #[doc = concat!("assert!(", stringify!($name), "::new(\"\").is_err());")]
        /// # Ok::<(), stamps::Error>(())
        /// ```
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and makes a name.
            pub fn new(text: &str) -> Result<Self, super::error::Error> {
                validate_name($field, text)?;
                Ok($name(Arc::from(text)))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = super::error::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A region where stamps run (for example `us-east-1`, `eu-west`).
    Region,
    "region",
    "eu-west"
);
name_type!(
    /// A data-residency jurisdiction (for example `eu`, `us`): a tenant with a residency is only
    /// ever placed on a stamp with the same residency.
    Residency,
    "residency",
    "eu"
);
name_type!(
    /// The name of a user-defined tier or resource.
    Name,
    "name",
    "gpu-hours"
);
