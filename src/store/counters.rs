//! Store-wide counters: every name in one place, and their value encoding.
//!
//! Counters live under `keys::COUNTER` and change only in the same batch as the records they
//! count (see [`Tx::add`](super::Tx::add)), so they are exact after any crash. A counter that
//! would go negative, or a stored value that is not 8 bytes, means the records and counters
//! disagree: that is an error naming the counter, never a silent 0.

use crate::error::{Error, Result};
use crate::ids::SessionId;
use crate::session::SessionStatus;

/// Number of sessions.
pub(crate) const SESSIONS: &[u8] = b"sessions";
/// Number of artifacts.
pub(crate) const ARTIFACTS: &[u8] = b"artifacts";
/// Number of distinct blobs (referenced or awaiting GC).
pub(crate) const BLOBS: &[u8] = b"blobs";
/// Sum of artifact sizes.
pub(crate) const LOGICAL_BYTES: &[u8] = b"logical_bytes";
/// Sum of distinct blob sizes before compression.
pub(crate) const CONTENT_BYTES: &[u8] = b"content_bytes";
/// Sum of distinct blob sizes as stored.
pub(crate) const STORED_BYTES: &[u8] = b"stored_bytes";
/// Number of checkpoints.
pub(crate) const CHECKPOINTS: &[u8] = b"checkpoints";

/// Prefix of the per-kind artifact counters.
pub(crate) const KIND_PREFIX: &[u8] = b"artifacts.kind.";
/// Prefix of the per-status session counters.
pub(crate) const STATUS_PREFIX: &[u8] = b"sessions.status.";
/// Prefix of the per-session artifact counters.
pub(crate) const SESSION_ARTIFACTS_PREFIX: &[u8] = b"sa.";

/// Artifacts of one kind.
pub(crate) fn artifacts_of_kind(kind: impl std::fmt::Display) -> Vec<u8> {
    let mut k = KIND_PREFIX.to_vec();
    k.extend_from_slice(kind.to_string().as_bytes());
    k
}

/// Sessions in one status.
pub(crate) fn sessions_in(status: SessionStatus) -> Vec<u8> {
    let mut k = STATUS_PREFIX.to_vec();
    k.extend_from_slice(status.as_str().as_bytes());
    k
}

/// Artifacts of one session.
pub(crate) fn session_artifacts(sid: &SessionId) -> Vec<u8> {
    let mut k = SESSION_ARTIFACTS_PREFIX.to_vec();
    k.extend_from_slice(sid.as_bytes());
    k
}

/// A readable name for errors.
fn label(name: &[u8]) -> String {
    match name.strip_prefix(SESSION_ARTIFACTS_PREFIX) {
        Some(sid) if sid.len() == 16 => match SessionId::from_slice(sid) {
            Ok(id) => format!("artifacts of session {id}"),
            Err(_) => String::from_utf8_lossy(name).into_owned(),
        },
        _ => String::from_utf8_lossy(name).into_owned(),
    }
}

/// Decodes a stored counter value (8 bytes, big-endian, at most `i64::MAX`).
pub(crate) fn decode(name: &[u8], value: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| Error::Corrupt {
        what: format!(
            "counter {:?} holds {} bytes instead of 8",
            label(name),
            value.len()
        ),
    })?;
    i64::try_from(u64::from_be_bytes(bytes)).map_err(|_| Error::Corrupt {
        what: format!("counter {:?} holds an out-of-range value", label(name)),
    })
}

/// Encodes a counter value; a negative value is refused (the records and counters disagree).
pub(crate) fn encode(name: &[u8], value: i64) -> Result<Vec<u8>> {
    if value < 0 {
        return Err(Error::Corrupt {
            what: format!(
                "counter {:?} would become {value}: the counters disagree with the records; nothing was written",
                label(name)
            ),
        });
    }
    Ok((value as u64).to_be_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        assert_eq!(
            decode(SESSIONS, &encode(SESSIONS, 42).unwrap()).unwrap(),
            42
        );
        let e = encode(ARTIFACTS, -1).unwrap_err();
        assert_eq!(e.code(), "corrupt");
        assert!(e.to_string().contains("artifacts"), "{e}");
        let e = decode(BLOBS, &[0, 1, 2]).unwrap_err();
        assert_eq!(e.code(), "corrupt");
        assert!(e.to_string().contains("3 bytes"), "{e}");
        assert_eq!(decode(BLOBS, &[0xff; 8]).unwrap_err().code(), "corrupt");
    }

    #[test]
    fn names_are_stable() {
        // These names are on disk: changing one loses the counts of existing stores.
        assert_eq!(artifacts_of_kind("file"), b"artifacts.kind.file".to_vec());
        assert_eq!(
            sessions_in(SessionStatus::Active),
            b"sessions.status.active".to_vec()
        );
        let sid = SessionId::from_bytes([7; 16]);
        let mut want = b"sa.".to_vec();
        want.extend_from_slice(&[7; 16]);
        assert_eq!(session_artifacts(&sid), want);
    }
}
