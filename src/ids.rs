//! Identifiers: session and artifact ids (UUID v7, so they sort by creation time) and content hashes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{Error, Result};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id whose leading bits are the current time in milliseconds (UUID v7).
            /// Ids made by one process are strictly increasing.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 big-endian bytes; their byte order is their time order.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Rebuilds an id from the 16 bytes of [`Self::as_bytes`].
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            #[allow(dead_code)]
            pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self> {
                let arr: [u8; 16] = bytes.try_into().map_err(|_| Error::Corrupt {
                    what: format!("{} id of {} bytes, expected 16", $what, bytes.len()),
                })?;
                Ok(Self::from_bytes(arr))
            }

            /// The creation time encoded in a v7 id (millisecond precision).
            pub fn timestamp(&self) -> DateTime<Utc> {
                uuid_time(&self.0)
            }

            /// The smallest id whose time is at or after `t`: the start of a time-range scan.
            #[allow(dead_code)]
            pub(crate) fn min_at(t: DateTime<Utc>) -> Self {
                Self(time_bound(t, false))
            }

            /// The smallest id of the first millisecond at or after `t`: the exclusive end of a
            /// time-range scan whose bound may fall inside a millisecond.
            #[allow(dead_code)]
            pub(crate) fn min_after(t: DateTime<Utc>) -> Self {
                let floor_ms = t.timestamp_millis();
                let exact = t.timestamp_subsec_nanos() % 1_000_000 == 0;
                let ms = if exact { floor_ms } else { floor_ms.saturating_add(1) };
                Self(time_bound(
                    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(t),
                    false,
                ))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| Error::InvalidInput {
                    what: format!("{} id", $what),
                    message: format!("{s:?} is not a UUID (expected e.g. 0190f4c4-7b1e-7c3a-9a51-3f0e2b8d4c11)"),
                })
            }
        }
    };
}

uuid_id!(
    /// Identifies a session. UUID v7: ids sort by creation time.
    SessionId,
    "session"
);
uuid_id!(
    /// Identifies one artifact (one version of one name in one session). UUID v7, never derived from content.
    ArtifactId,
    "artifact"
);
uuid_id!(
    /// Identifies a checkpoint. UUID v7.
    CheckpointId,
    "checkpoint"
);

fn uuid_time(u: &Uuid) -> DateTime<Utc> {
    match u.get_timestamp() {
        Some(ts) => {
            let (secs, nanos) = ts.to_unix();
            Utc.timestamp_opt(secs as i64, nanos)
                .single()
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        }
        None => DateTime::<Utc>::UNIX_EPOCH,
    }
}

/// The smallest (or with `max`, largest) v7 UUID for the millisecond of `t`.
fn time_bound(t: DateTime<Utc>, max: bool) -> Uuid {
    let ms = t.timestamp_millis().clamp(0, (1i64 << 48) - 1) as u64;
    let mut b = [if max { 0xff } else { 0 }; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(b)
}

/// A BLAKE3 hash of content. Displays as 64 lowercase hex digits; serde uses the same form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// Hashes a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw hash bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| Error::Corrupt {
            what: format!("content hash of {} bytes, expected 32", bytes.len()),
        })?;
        Ok(Self(arr))
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

impl FromStr for ContentHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidInput {
            what: "content hash".into(),
            message: format!("{s:?} is not 64 hex digits"),
        };
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_round_trip() {
        let h = ContentHash::of(b"hello");
        assert_eq!(h.to_hex().len(), 64);
        assert_eq!(h.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(h.to_hex().parse::<ContentHash>().unwrap(), h);
        assert!("xyz".parse::<ContentHash>().is_err());
        assert!("é".repeat(32).parse::<ContentHash>().is_err());
    }

    #[test]
    fn ids_sort_by_time_and_parse() {
        let a = ArtifactId::new();
        let b = ArtifactId::new();
        assert!(a < b);
        assert!(a.as_bytes() < b.as_bytes());
        assert_eq!(a.to_string().parse::<ArtifactId>().unwrap(), a);
        assert!("nope".parse::<SessionId>().is_err());
        let t = a.timestamp();
        assert!(ArtifactId::min_at(t) <= a);
    }
}

/// OpenAPI schemas for the types whose serde form is a string (feature `openapi`).
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    fn string_schema(description: &str, pattern: Option<&str>) -> RefOr<Schema> {
        let mut b = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description));
        if let Some(p) = pattern {
            b = b.pattern(Some(p));
        }
        RefOr::T(Schema::Object(b.build()))
    }

    impl utoipa::PartialSchema for super::ContentHash {
        fn schema() -> RefOr<Schema> {
            string_schema(
                "BLAKE3 content hash: 64 lowercase hex digits",
                Some("^[0-9a-f]{64}$"),
            )
        }
    }
    impl utoipa::ToSchema for super::ContentHash {}

    impl utoipa::PartialSchema for crate::artifact::ArtifactKind {
        fn schema() -> RefOr<Schema> {
            string_schema(
                "user_input, tool_result, agent_output, system_generated, checkpoint, or a custom kind ([a-z][a-z0-9_]*)",
                Some("^[a-z][a-z0-9_]*$"),
            )
        }
    }
    impl utoipa::ToSchema for crate::artifact::ArtifactKind {}
}
