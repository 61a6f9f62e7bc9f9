//! The one public error type. Variants carry what a caller needs to act on them.

use std::path::PathBuf;

use crate::ids::{ArtifactId, CheckpointId, ContentHash, SessionId};
use crate::session::SessionStatus;

/// Everything that can go wrong in Cairn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No session with this id (or key) exists.
    #[error("session {id} not found")]
    SessionNotFound {
        /// The id (or `key:...`) that was looked up.
        id: String,
    },
    /// No artifact with this id exists (or it is not visible through the session used).
    #[error("artifact {id} not found")]
    ArtifactNotFound {
        /// The id, or `session/name@version` that was looked up.
        id: String,
    },
    /// No checkpoint with this id exists.
    #[error("checkpoint {id} not found")]
    CheckpointNotFound {
        /// The checkpoint id.
        id: CheckpointId,
    },
    /// The content of a blob is no longer stored (deleted and collected, or lost).
    #[error("content {hash} is not stored (it was deleted or lost); the artifact cannot be read")]
    ContentMissing {
        /// The content hash.
        hash: ContentHash,
    },
    /// A status change the lifecycle does not allow. Nothing was changed.
    #[error("session {id} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The session.
        id: SessionId,
        /// Its current status.
        from: SessionStatus,
        /// The requested status.
        to: SessionStatus,
    },
    /// A session key is already taken by another session.
    #[error("session key {key:?} is already used by session {existing}")]
    KeyConflict {
        /// The key.
        key: String,
        /// The session that holds it.
        existing: SessionId,
    },
    /// Something already exists (for example a session id on import).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What it is.
        what: String,
    },
    /// The session has children and `recursive` was not asked for.
    #[error("session {id} has {children} child session(s); delete with recursive to remove the whole subtree")]
    HasChildren {
        /// The session.
        id: SessionId,
        /// How many direct children it has.
        children: usize,
    },
    /// The session is in a terminal state and cannot take this write.
    #[error("session {id} is {status}: {message}")]
    SessionClosed {
        /// The session.
        id: SessionId,
        /// Its status.
        status: SessionStatus,
        /// What was refused.
        message: String,
    },
    /// A name glob that does not parse.
    #[error("invalid name glob {pattern:?}: {message}")]
    InvalidGlob {
        /// The pattern.
        pattern: String,
        /// Why it failed.
        message: String,
    },
    /// Input that is not valid: a name, kind, tag, range, cursor, metadata, configuration value...
    #[error("invalid {what}: {message}")]
    InvalidInput {
        /// Which input.
        what: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A configured limit would be exceeded. Nothing was stored.
    #[error("limit {limit} exceeded: {message}")]
    LimitExceeded {
        /// The limit's configuration name.
        limit: &'static str,
        /// The detail.
        message: String,
    },
    /// Content read back does not match its hash or recorded size. No bytes were returned.
    #[error("integrity error in content {hash}: {message}")]
    Integrity {
        /// The content hash.
        hash: ContentHash,
        /// What did not match.
        message: String,
    },
    /// A stored record could not be decoded.
    #[error("corrupt store: {what}; run `cairn verify` and `cairn verify --repair`")]
    Corrupt {
        /// What is corrupt.
        what: String,
    },
    /// The path holds something that is not a Cairn store, or a store of another format version.
    #[error("cannot open store at {path}: {message}")]
    NotAStore {
        /// The path.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Another process holds the store open.
    #[error("store at {path} is locked by another process (the storage engine allows one process at a time); close it or use another --store")]
    Locked {
        /// The path.
        path: PathBuf,
    },
    /// An I/O error on a path.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error reading caller-supplied input (a reader).
    #[error("I/O error reading input: {source}")]
    InputIo {
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The storage engine failed.
    #[error("storage engine error: {message}")]
    Backend {
        /// The engine's message.
        message: String,
    },
    /// The storage server (a shared engine such as PostgreSQL) could not be reached or the
    /// connection broke: the request did not complete. Nothing partial is stored (each write
    /// is one transaction); a write whose connection broke during its commit may have been
    /// applied, so check before repeating writes that must not happen twice. Try again.
    #[error("storage server unavailable: {message}; try again shortly")]
    Unavailable {
        /// The engine's message.
        message: String,
    },
    /// A write lost a race with a concurrent writer of a shared engine (a serialization
    /// conflict) and was not applied. The store retries such writes itself; this reaches a caller
    /// only after the retries ran out: try again.
    #[error("write conflict: {message}; nothing was written, try again")]
    WriteConflict {
        /// The engine's message.
        message: String,
    },
    /// A pipeline step or other caller code failed.
    #[error("{message}")]
    Other {
        /// The message.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn artifact_not_found(id: ArtifactId) -> Self {
        Error::ArtifactNotFound { id: id.to_string() }
    }

    pub(crate) fn session_not_found(id: SessionId) -> Self {
        Error::SessionNotFound { id: id.to_string() }
    }

    /// A stable machine-readable code for this error (used by the command line's JSON errors).
    pub fn code(&self) -> &'static str {
        match self {
            Error::SessionNotFound { .. } => "session_not_found",
            Error::ArtifactNotFound { .. } => "artifact_not_found",
            Error::CheckpointNotFound { .. } => "checkpoint_not_found",
            Error::ContentMissing { .. } => "content_missing",
            Error::InvalidTransition { .. } => "invalid_transition",
            Error::KeyConflict { .. } => "key_conflict",
            Error::AlreadyExists { .. } => "already_exists",
            Error::HasChildren { .. } => "has_children",
            Error::SessionClosed { .. } => "session_closed",
            Error::InvalidGlob { .. } => "invalid_glob",
            Error::InvalidInput { .. } => "invalid_input",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::Integrity { .. } => "integrity",
            Error::Corrupt { .. } => "corrupt",
            Error::NotAStore { .. } => "not_a_store",
            Error::Locked { .. } => "locked",
            Error::Io { .. } => "io",
            Error::InputIo { .. } => "input_io",
            Error::Backend { .. } => "backend",
            Error::WriteConflict { .. } => "write_conflict",
            Error::Unavailable { .. } => "unavailable",
            Error::Other { .. } => "other",
        }
    }

    /// True for the "does not exist" family.
    pub fn is_not_found(&self) -> bool {
        // session_not_found, artifact_not_found, checkpoint_not_found: `code()` is the one list.
        self.code().ends_with("_not_found")
    }
}
