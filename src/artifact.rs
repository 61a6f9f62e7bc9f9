//! Artifacts: one version of one name in one session, pointing at content by hash.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ids::{ArtifactId, ContentHash, SessionId};

/// Longest accepted artifact name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest accepted tag, in bytes.
pub const MAX_TAG_LEN: usize = 128;
/// Longest accepted custom kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;

/// What an artifact is. Custom kinds are lowercase identifiers (`[a-z][a-z0-9_]*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    /// Something a user typed or uploaded.
    UserInput,
    /// The output of a tool call.
    ToolResult,
    /// Something the agent produced.
    AgentOutput,
    /// Produced by the system around the agent.
    SystemGenerated,
    /// A checkpoint's state.
    Checkpoint,
    /// Any other kind.
    Custom(String),
}

impl ArtifactKind {
    /// The kind's name as stored and shown.
    pub fn as_str(&self) -> &str {
        match self {
            ArtifactKind::UserInput => "user_input",
            ArtifactKind::ToolResult => "tool_result",
            ArtifactKind::AgentOutput => "agent_output",
            ArtifactKind::SystemGenerated => "system_generated",
            ArtifactKind::Checkpoint => "checkpoint",
            ArtifactKind::Custom(s) => s,
        }
    }

    /// A custom kind, validated.
    pub fn custom(s: impl Into<String>) -> Result<Self> {
        s.into().parse()
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArtifactKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "user_input" => ArtifactKind::UserInput,
            "tool_result" => ArtifactKind::ToolResult,
            "agent_output" => ArtifactKind::AgentOutput,
            "system_generated" => ArtifactKind::SystemGenerated,
            "checkpoint" => ArtifactKind::Checkpoint,
            other => {
                let ok = !other.is_empty()
                    && other.len() <= MAX_KIND_LEN
                    && other.as_bytes()[0].is_ascii_lowercase()
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(Error::invalid(
                        "artifact kind",
                        format!(
                            "{:?}: use user_input, tool_result, agent_output, system_generated, checkpoint, \
                             or a custom lowercase identifier ([a-z][a-z0-9_]*, at most {MAX_KIND_LEN} bytes)",
                            truncate_for_message(other)
                        ),
                    ));
                }
                ArtifactKind::Custom(other.to_string())
            }
        })
    }
}

impl Serialize for ArtifactKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ArtifactKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An artifact's metadata as stored. The content is read through the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Artifact {
    /// Its own id (UUID v7), never derived from content.
    pub id: ArtifactId,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// What it is.
    pub kind: ArtifactKind,
    /// Logical name (may contain `/`; never a file system path).
    pub name: String,
    /// 1 for the first artifact of this name in the session, then 2, 3...
    pub version: u32,
    /// BLAKE3 of the content.
    pub hash: ContentHash,
    /// Content length in bytes.
    pub size: u64,
    /// Bytes the content occupies in the store (after compression; shared by every artifact with this hash).
    pub stored_size: u64,
    /// Whether the stored content is zstd-compressed.
    pub compressed: bool,
    /// Tags (sorted, unique).
    pub tags: Vec<String>,
    /// JSON object metadata.
    pub metadata: Map<String, Value>,
    /// MIME type, if given.
    pub mime_type: Option<String>,
    /// Creation time (the millisecond encoded in `id`).
    pub created_at: DateTime<Utc>,
    /// A pinned artifact is never removed by retention policies.
    #[serde(default)]
    pub pinned: bool,
}

/// Options for storing an artifact: build with [`NewArtifact::new`].
#[derive(Clone, Debug)]
pub struct NewArtifact {
    pub(crate) kind: ArtifactKind,
    pub(crate) name: String,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) mime_type: Option<String>,
    pub(crate) pinned: bool,
    pub(crate) request_id: Option<String>,
}

/// The longest request id ([`NewArtifact::request_id`]), in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

impl NewArtifact {
    /// An artifact of `kind` named `name`.
    pub fn new(kind: ArtifactKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            tags: Vec::new(),
            metadata: Map::new(),
            mime_type: None,
            pinned: false,
            request_id: None,
        }
    }
    /// Adds a tag.
    pub fn tag(mut self, t: impl Into<String>) -> Self {
        self.tags.push(t.into());
        self
    }
    /// Adds several tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }
    /// Sets one metadata field.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Replaces the metadata object.
    pub fn metadata(mut self, m: Map<String, Value>) -> Self {
        self.metadata = m;
        self
    }
    /// Sets the MIME type.
    pub fn mime_type(mut self, m: impl Into<String>) -> Self {
        self.mime_type = Some(m.into());
        self
    }
    /// Pins it: retention never removes it.
    pub fn pinned(mut self, yes: bool) -> Self {
        self.pinned = yes;
        self
    }
    /// Makes the put idempotent: `id` names this request (a UUID the caller makes once per
    /// logical put, 1 to [`MAX_REQUEST_ID_LEN`] bytes, no control characters). The store records
    /// it with the new version in the same transaction; a later put in the same session with
    /// the same id stores nothing and returns the artifact the first one stored (if it still
    /// exists). For a retry after an error whose outcome is unknown: a connection to a shared
    /// engine lost during `COMMIT` (DESIGN.md, "Streamed large puts, TLS, idempotent puts").
    /// The same id with another name or content is refused (`invalid_input`).
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }
    /// The name.
    pub fn name_str(&self) -> &str {
        &self.name
    }
}

pub(crate) fn truncate_for_message(s: &str) -> String {
    if s.len() <= 80 {
        s.to_string()
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    }
}

/// Checks an artifact name: not empty, at most `MAX_NAME_LEN` (1024) bytes, no NUL or control characters.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |m: &str| {
        Err(Error::invalid(
            "artifact name",
            format!("{:?}: {m}", truncate_for_message(name)),
        ))
    };
    if name.is_empty() {
        return bad(
            "the name is empty; give a name such as \"results.json\" or \"logs/step1.txt\"",
        );
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!(
            "longer than {MAX_NAME_LEN} bytes; use a shorter name"
        ));
    }
    if name.chars().any(char::is_control) {
        return bad("contains a NUL or control character; names must be printable text");
    }
    Ok(())
}

/// Checks a tag: 1 to `MAX_TAG_LEN` (128) bytes, no whitespace, NUL or control characters.
pub fn validate_tag(tag: &str) -> Result<()> {
    if tag.is_empty()
        || tag.len() > MAX_TAG_LEN
        || tag.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::invalid(
            "tag",
            format!(
                "{:?}: tags are 1 to {MAX_TAG_LEN} bytes with no spaces or control characters",
                truncate_for_message(tag)
            ),
        ));
    }
    Ok(())
}

/// Validates, sorts and deduplicates tags.
pub(crate) fn normalize_tags(tags: &[String]) -> Result<Vec<String>> {
    for t in tags {
        validate_tag(t)?;
    }
    let mut v = tags.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_validate() {
        assert_eq!(
            "tool_result".parse::<ArtifactKind>().unwrap(),
            ArtifactKind::ToolResult
        );
        assert_eq!(
            "embedding_v2".parse::<ArtifactKind>().unwrap(),
            ArtifactKind::Custom("embedding_v2".into())
        );
        for bad in ["", "Tool", "2x", "a-b", "a b", &"x".repeat(65)] {
            assert!(bad.parse::<ArtifactKind>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_validate() {
        assert!(validate_name("logs/a/b.txt").is_ok());
        assert!(
            validate_name("../etc/passwd").is_ok(),
            "names are logical, not paths"
        );
        assert!(validate_name("").is_err());
        assert!(validate_name("a\0b").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        let e = validate_name("").unwrap_err().to_string();
        assert!(e.contains("artifact name"), "{e}");
    }
}

/// Stored form of an artifact record (table `A`, and checkpoint members): format byte 2, then a
/// compact binary layout. Decoding it costs a fraction of JSON (no UUID or hex parsing), which
/// matters because every query result and every read decodes one. Records of format 1 (JSON)
/// still decode.
pub(crate) mod record {
    use chrono::{DateTime, Utc};
    use serde_json::Map;

    use super::{Artifact, ArtifactKind};
    use crate::error::{Error, Result};
    use crate::ids::{ArtifactId, ContentHash, SessionId};

    const BINARY: u8 = 2;

    fn put_str16(out: &mut Vec<u8>, s: &str) {
        let len = s.len().min(u16::MAX as usize);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&s.as_bytes()[..len]);
    }

    fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }

    /// Encodes an artifact record.
    pub(crate) fn encode(a: &Artifact) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + a.name.len() + a.tags.len() * 16);
        out.push(BINARY);
        out.extend_from_slice(a.id.as_bytes());
        out.extend_from_slice(a.session_id.as_bytes());
        out.extend_from_slice(&a.version.to_be_bytes());
        out.extend_from_slice(a.hash.as_bytes());
        out.extend_from_slice(&a.size.to_be_bytes());
        out.extend_from_slice(&a.stored_size.to_be_bytes());
        let flags =
            (a.compressed as u8) | ((a.pinned as u8) << 1) | ((a.mime_type.is_some() as u8) << 2);
        out.push(flags);
        out.extend_from_slice(&a.created_at.timestamp().to_be_bytes());
        out.extend_from_slice(&a.created_at.timestamp_subsec_nanos().to_be_bytes());
        put_str16(&mut out, a.kind.as_str());
        put_bytes32(&mut out, a.name.as_bytes());
        out.extend_from_slice(&(a.tags.len().min(u16::MAX as usize) as u16).to_be_bytes());
        for t in a.tags.iter().take(u16::MAX as usize) {
            put_str16(&mut out, t);
        }
        if let Some(m) = &a.mime_type {
            put_str16(&mut out, m);
        }
        if a.metadata.is_empty() {
            put_bytes32(&mut out, &[]);
        } else {
            let json = serde_json::to_vec(&a.metadata).unwrap_or_default();
            put_bytes32(&mut out, &json);
        }
        out
    }

    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    fn corrupt(m: &str) -> Error {
        Error::Corrupt {
            what: format!("artifact record: {m}"),
        }
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8]> {
            let end = self
                .at
                .checked_add(n)
                .filter(|e| *e <= self.b.len())
                .ok_or_else(|| corrupt("truncated"))?;
            let s = &self.b[self.at..end];
            self.at = end;
            Ok(s)
        }
        fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
            let s = self.take(N)?;
            let mut a = [0u8; N];
            a.copy_from_slice(s);
            Ok(a)
        }
        fn str16(&mut self) -> Result<&'a str> {
            let n = u16::from_be_bytes(self.arr()?) as usize;
            std::str::from_utf8(self.take(n)?).map_err(|_| corrupt("text is not UTF-8"))
        }
        fn bytes32(&mut self) -> Result<&'a [u8]> {
            let n = u32::from_be_bytes(self.arr()?) as usize;
            self.take(n)
        }
    }

    /// Decodes an artifact record of format 2 (binary) or 1 (JSON).
    pub(crate) fn decode(b: &[u8]) -> Result<Artifact> {
        match b.first() {
            Some(&BINARY) => {}
            Some(&crate::keys::RECORD_VERSION) => return crate::keys::decode("artifact", b),
            Some(v) => {
                return Err(corrupt(&format!(
                    "format {v}, which this Cairn cannot read (upgrade Cairn)"
                )))
            }
            None => return Err(corrupt("empty")),
        }
        let mut r = Reader { b, at: 1 };
        let id = ArtifactId::from_bytes(r.arr()?);
        let session_id = SessionId::from_bytes(r.arr()?);
        let version = u32::from_be_bytes(r.arr()?);
        let hash = ContentHash::from_bytes(r.arr()?);
        let size = u64::from_be_bytes(r.arr()?);
        let stored_size = u64::from_be_bytes(r.arr()?);
        let [flags] = r.arr::<1>()?;
        let secs = i64::from_be_bytes(r.arr()?);
        let nanos = u32::from_be_bytes(r.arr()?);
        let created_at: DateTime<Utc> =
            DateTime::from_timestamp(secs, nanos).ok_or_else(|| corrupt("time out of range"))?;
        let kind: ArtifactKind = r.str16()?.parse().map_err(|_| corrupt("bad kind"))?;
        let name = std::str::from_utf8(r.bytes32()?)
            .map_err(|_| corrupt("name is not UTF-8"))?
            .to_string();
        let ntags = u16::from_be_bytes(r.arr()?) as usize;
        let mut tags = Vec::with_capacity(ntags.min(256));
        for _ in 0..ntags {
            tags.push(r.str16()?.to_string());
        }
        let mime_type = if flags & 4 != 0 {
            Some(r.str16()?.to_string())
        } else {
            None
        };
        let meta = r.bytes32()?;
        let metadata = if meta.is_empty() {
            Map::new()
        } else {
            serde_json::from_slice(meta).map_err(|e| corrupt(&format!("metadata: {e}")))?
        };
        if r.at != b.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Artifact {
            id,
            session_id,
            kind,
            name,
            version,
            hash,
            size,
            stored_size,
            compressed: flags & 1 != 0,
            tags,
            metadata,
            mime_type,
            created_at,
            pinned: flags & 2 != 0,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_and_old_format_and_damage() {
            let mut a = Artifact {
                id: ArtifactId::new(),
                session_id: SessionId::new(),
                kind: ArtifactKind::Custom("my_kind".into()),
                name: "dir/é.json".into(),
                version: 7,
                hash: ContentHash::of(b"x"),
                size: 1 << 40,
                stored_size: 12,
                compressed: true,
                tags: vec!["a".into(), "b".into()],
                metadata: Map::new(),
                mime_type: Some("application/json".into()),
                created_at: Utc::now(),
                pinned: true,
            };
            assert_eq!(decode(&encode(&a)).unwrap(), a);
            a.metadata
                .insert("k".into(), serde_json::json!({"n": [1, 2]}));
            a.mime_type = None;
            a.pinned = false;
            let enc = encode(&a);
            assert_eq!(decode(&enc).unwrap(), a);
            assert_eq!(
                decode(&crate::keys::encode(&a)).unwrap(),
                a,
                "format 1 still reads"
            );
            for cut in 0..enc.len() {
                assert!(decode(&enc[..cut]).is_err(), "truncated at {cut}");
            }
            let mut long = enc.clone();
            long.push(0);
            assert!(decode(&long).is_err());
            assert!(decode(&[9, 1, 2]).is_err());
        }
    }
}
