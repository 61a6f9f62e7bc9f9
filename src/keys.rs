//! Key encoding: one ordered key space, each table a leading byte. See DESIGN.md for the full map.
//!
//! Ids are 16 big-endian bytes (UUID v7), so byte order is time order; numbers are big-endian so
//! byte order is numeric order; strings that are followed by more key parts end in a 0x00 byte,
//! which names, tags and kinds may not contain.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::ids::{ArtifactId, ContentHash, SessionId};

/// The store's format metadata: `\x01` + name.
pub(crate) const META: u8 = 0x01;
/// Session record: `S` + session id.
pub(crate) const SESSION: u8 = b'S';
/// Unique session key: `K` + key -> session id.
pub(crate) const SESSION_KEY: u8 = b'K';
/// Child index: `C` + parent id + child id.
pub(crate) const CHILD: u8 = b'C';
/// Root sessions: `R` + session id.
pub(crate) const ROOT: u8 = b'R';
/// Session status index: `s` + status code + session id.
pub(crate) const SESSION_STATUS: u8 = b's';
/// Session tag index: `t` + tag + 0 + session id.
pub(crate) const SESSION_TAG: u8 = b't';
/// Event log: `E` + session id + seq (u64 BE).
pub(crate) const EVENT: u8 = b'E';
/// Artifact record: `A` + artifact id.
pub(crate) const ARTIFACT: u8 = b'A';
/// Artifacts of a session: `a` + session id + artifact id.
pub(crate) const SESSION_ARTIFACT: u8 = b'a';
/// Latest version of a name: `l` + session id + name -> version (u32 BE). Retired: written by
/// stores of earlier versions, no longer written or read (the last `n` entry of a name is its
/// latest version; see `Tx::latest_version`). Never reuse the byte.
#[allow(dead_code)] // kept to reserve the byte
pub(crate) const LATEST: u8 = b'l';
/// Versions of a name: `n` + session id + name + 0 + version (u32 BE) -> artifact id.
pub(crate) const NAME_VERSION: u8 = b'n';
/// Kind index: `k` + kind + 0 + artifact id -> session id.
pub(crate) const KIND: u8 = b'k';
/// Tag index: `g` + tag + 0 + artifact id -> session id.
pub(crate) const TAG: u8 = b'g';
/// Size index: `z` + size (u64 BE) + artifact id -> session id.
pub(crate) const SIZE: u8 = b'z';
/// Name index: `N` + name + 0 + artifact id -> session id (globs with a literal prefix).
pub(crate) const NAME: u8 = b'N';
/// Reversed-name index: `r` + reversed name + 0 + artifact id -> session id (globs with a literal suffix).
pub(crate) const RNAME: u8 = b'r';
/// Blob record: `B` + hash -> BlobMeta.
pub(crate) const BLOB: u8 = b'B';
/// Inline blob bytes: `D` + hash.
pub(crate) const BLOB_DATA: u8 = b'D';
/// Blobs with no references, awaiting GC: `G` + hash.
pub(crate) const GARBAGE: u8 = b'G';
/// Store-wide counters: `#` + name -> i64 BE.
pub(crate) const COUNTER: u8 = b'#';
/// Checkpoints: `P` + checkpoint id -> record.
#[allow(dead_code)] // reserved for extensions
pub(crate) const CHECKPOINT: u8 = b'P';
/// Checkpoints of a session: `p` + session id + checkpoint id.
#[allow(dead_code)] // reserved for extensions
pub(crate) const SESSION_CHECKPOINT: u8 = b'p';
/// Per-session metrics: `M` + session id + metric name -> value.
#[allow(dead_code)] // reserved for extensions
pub(crate) const METRIC: u8 = b'M';
/// Lineage: `F` + source session id + fork id.
#[allow(dead_code)] // reserved for extensions
pub(crate) const FORK: u8 = b'F';
/// Conversation order: `h` + session id + message seq (u64 BE) -> artifact id.
#[allow(dead_code)] // reserved for extensions
pub(crate) const HISTORY: u8 = b'h';
/// Preview of a blob (issue 13): `V` + hash -> version byte + JSON `Preview`. One per content.
pub(crate) const PREVIEW: u8 = b'V';
/// Memo entries (issue 13): `O` + scope (16 bytes: session id, or zeros for the store) + key
/// hash (32 bytes) -> version byte + JSON entry.
pub(crate) const MEMO: u8 = b'O';
/// Memo TTL per tool (issue 13): `o` + tool name -> seconds (u64 BE).
pub(crate) const MEMO_TTL: u8 = b'o';
/// Idempotent puts (issue 15): `q` + session id + request id + 0 -> artifact id. Removed with
/// the session.
pub(crate) const REQUEST: u8 = b'q';
// Reserved for extensions: `x` (retention), `T` (artifact TTL marks). Never reuse a byte.

/// Version byte in front of every JSON-encoded record.
pub(crate) const RECORD_VERSION: u8 = 1;

/// Builds a key from parts.
pub(crate) struct Key(Vec<u8>);

impl Key {
    pub(crate) fn new(table: u8) -> Self {
        let mut v = Vec::with_capacity(48);
        v.push(table);
        Key(v)
    }
    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// A string followed by the 0x00 terminator.
    pub(crate) fn str0(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    pub(crate) fn sid(self, id: &SessionId) -> Self {
        self.bytes(id.as_bytes())
    }
    pub(crate) fn aid(self, id: &ArtifactId) -> Self {
        self.bytes(id.as_bytes())
    }
    pub(crate) fn hash(self, h: &ContentHash) -> Self {
        self.bytes(h.as_bytes())
    }
    pub(crate) fn u64(self, n: u64) -> Self {
        self.bytes(&n.to_be_bytes())
    }
    pub(crate) fn u32(self, n: u32) -> Self {
        self.bytes(&n.to_be_bytes())
    }
    pub(crate) fn u8(mut self, n: u8) -> Self {
        self.0.push(n);
        self
    }
    pub(crate) fn build(self) -> Vec<u8> {
        self.0
    }
}

pub(crate) fn session(id: &SessionId) -> Vec<u8> {
    Key::new(SESSION).sid(id).build()
}
pub(crate) fn artifact(id: &ArtifactId) -> Vec<u8> {
    Key::new(ARTIFACT).aid(id).build()
}
pub(crate) fn blob(h: &ContentHash) -> Vec<u8> {
    Key::new(BLOB).hash(h).build()
}
pub(crate) fn preview(h: &ContentHash) -> Vec<u8> {
    Key::new(PREVIEW).hash(h).build()
}
pub(crate) fn blob_data(h: &ContentHash) -> Vec<u8> {
    Key::new(BLOB_DATA).hash(h).build()
}
pub(crate) fn garbage(h: &ContentHash) -> Vec<u8> {
    Key::new(GARBAGE).hash(h).build()
}
pub(crate) fn name_versions_prefix(sid: &SessionId, name: &str) -> Vec<u8> {
    Key::new(NAME_VERSION).sid(sid).str0(name).build()
}

/// The key recording which artifact a request id stored (see [`REQUEST`]).
pub(crate) fn request(sid: &SessionId, request_id: &str) -> Vec<u8> {
    Key::new(REQUEST).sid(sid).str0(request_id).build()
}

pub(crate) fn reversed(name: &str) -> Vec<u8> {
    name.as_bytes().iter().rev().copied().collect()
}

/// The last 16 bytes of a key, as an id.
pub(crate) fn tail16(key: &[u8]) -> Result<[u8; 16]> {
    key.len()
        .checked_sub(16)
        .and_then(|i| key[i..].try_into().ok())
        .ok_or_else(|| Error::Corrupt {
            what: format!("index key of {} bytes is too short", key.len()),
        })
}

/// Encodes a record: version byte, then JSON.
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Serializing our own plain data types to JSON cannot fail.
    serde_json::to_writer(&mut out, v).unwrap_or_default();
    out
}

/// Decodes a record written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => serde_json::from_slice(rest).map_err(|e| Error::Corrupt {
            what: format!("{what} record does not decode: {e}"),
        }),
        Some((v, _)) => Err(Error::Corrupt {
            what: format!("{what} record has format version {v}; this Cairn reads version {RECORD_VERSION} (upgrade Cairn)"),
        }),
        None => Err(Error::Corrupt {
            what: format!("{what} record is empty"),
        }),
    }
}

pub(crate) fn u64_value(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

pub(crate) fn counter(name: &[u8]) -> Vec<u8> {
    Key::new(COUNTER).bytes(name).build()
}

/// The version number of an `n` key under `prefix` (from [`name_versions_prefix`]).
pub(crate) fn version_of(prefix: &[u8], key: &[u8]) -> Option<u32> {
    let rest = key.strip_prefix(prefix)?;
    let b: [u8; 4] = rest.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}
