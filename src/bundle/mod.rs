//! Portable bundles: export a session (optionally its subtree) with its artifacts, events,
//! extension records (checkpoints) and content into one file, and import it into any store.
//!
//! The format is documented in DESIGN.md ("Bundle format"). In short: a magic and a format
//! version, then framed records (`tag`, `u32` length, payload): a header, the sessions (parents
//! first), artifacts, events, extension records, then every distinct content blob once, zstd
//! compressed and split into chunks of at most 1 MiB, and a trailer with the counts and a BLAKE3
//! of every byte before it. Writing and reading stream: memory stays bounded whatever the size.
//!
//! A bundle is untrusted input. The reader bounds every size and count, checks every hash and the
//! trailer, and never uses anything in a bundle as a file system path. Import is all or nothing:
//! content is staged and verified first, then every record is written in one atomic batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::artifact::{validate_name, validate_tag, Artifact, NewArtifact};
use crate::backend::RangeIter;
use crate::content::{self, BlobMeta, Codec};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::{ArtifactId, CheckpointId, ContentHash, SessionId};
use crate::keys::{self, Key};
use crate::session::Session;
use crate::store::counters;
use crate::store::{EncodedBytes, PendingGuard, Store, Tx};

mod ext;
mod format;
mod import;
mod reader;
mod stage;
mod writer;

use self::ext::*;
pub use self::format::*;
use self::reader::*;
use self::stage::*;
pub use self::writer::*;
