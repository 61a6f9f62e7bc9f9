//! Partial reads: a byte range, a line range, head, tail, grep, or a JSON path of an artifact,
//! with bounded cost and verified bytes. See DESIGN.md, "Partial reads".
//!
//! Every result says what it left out (`truncated`, `next_offset`, `next_line`, totals), so an
//! agent knows there is more and how to ask for it. Results are serde-serializable: the same JSON
//! shape is served by every front end.
//!
//! Cost: seekable content (src/content/seekable.rs) is read frame by frame from the frame that holds the
//! first byte or line asked for, and each frame is verified before any of its bytes is used.
//! Content in the older `raw` and `zstd` layouts has no index: it is streamed from the start and
//! read to its end, so the whole content is verified before a result is returned.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::content::seekable::{BlobSource, MemorySource, Seekable};
use crate::content::{self, BlobMeta, Codec, ContentReader};
use crate::error::{Error, Result};
use crate::ids::{ArtifactId, ContentHash, SessionId};
use crate::keys;
use crate::preview::Preview;
use crate::Store;

/// Default bound on a result's returned text, in bytes.
pub const DEFAULT_PART_BYTES: u64 = 64 << 10;
/// The largest result a caller may ask for.
pub const MAX_PART_BYTES: u64 = 16 << 20;
/// Default bound on one returned line; longer lines are cut and marked `truncated`.
pub const DEFAULT_LINE_BYTES: usize = 4 << 10;
/// Lines longer than this are matched (grep) and parsed (JSON lines) on their first 1 MiB only;
/// this bounds the memory of a scan whatever the content.
pub const SCAN_LINE_BYTES: usize = 1 << 20;
/// Largest document a `json` part parses (16 MiB): larger documents are refused with an error
/// that suggests `json_lines`, `grep` or a byte range instead.
pub const MAX_JSON_DOCUMENT: u64 = 16 << 20;
/// Longest grep pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 4 << 10;
/// Most context lines on each side of a grep match.
pub const MAX_CONTEXT: u32 = 1000;
/// Default and largest match limit of a grep.
pub const DEFAULT_MATCHES: u32 = 100;
/// See [`DEFAULT_MATCHES`].
pub const MAX_MATCHES: u32 = 100_000;

fn one() -> u64 {
    1
}
fn default_matches() -> u32 {
    DEFAULT_MATCHES
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// Which part of an artifact to read. Lines are numbered from 1; a line ends at `\n` (a `\r`
/// before it is dropped from the text); a last line without `\n` counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Part {
    /// `len` bytes from `offset`.
    Bytes {
        /// First byte (0-based).
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// `count` lines from line `start`.
    Lines {
        /// First line (1-based).
        start: u64,
        /// How many lines.
        count: u64,
    },
    /// The first `lines` lines.
    Head {
        /// How many lines.
        lines: u64,
    },
    /// The last `lines` lines.
    Tail {
        /// How many lines.
        lines: u64,
    },
    /// Lines matching a regular expression (Rust `regex` syntax, matched per line on bytes).
    Grep {
        /// The pattern.
        pattern: String,
        /// Lines of context before and after each match.
        #[serde(default)]
        context: u32,
        /// Stop after this many matches (default 100).
        #[serde(default = "default_matches")]
        max_matches: u32,
        /// Case-insensitive matching.
        #[serde(default)]
        ignore_case: bool,
        /// First line to search (1-based; default 1): continue from a previous `next_line`.
        #[serde(default = "one")]
        start_line: u64,
    },
    /// A value of a JSON document, by JSON pointer (`/a/0/b`) or simple path (`a[0].b`, `$.a`).
    Json {
        /// The pointer or path; empty for the whole document.
        path: String,
    },
    /// A value of each line of a JSON-lines artifact, for `count` lines from `start`.
    JsonLines {
        /// The pointer or path, as for [`Part::Json`].
        path: String,
        /// First line (1-based; default 1).
        #[serde(default = "one")]
        start: u64,
        /// How many lines.
        count: u64,
    },
}

/// Bounds on what a partial read returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartLimits {
    /// Most bytes of returned text (default 64 KiB, at most 16 MiB). A result holds at least one
    /// line (itself cut to `max_line_bytes`).
    pub max_bytes: u64,
    /// Most bytes of one returned line (default 4 KiB).
    pub max_line_bytes: usize,
}

impl Default for PartLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_PART_BYTES,
            max_line_bytes: DEFAULT_LINE_BYTES,
        }
    }
}

/// The result of a partial read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartResult {
    /// The artifact read.
    pub artifact_id: ArtifactId,
    /// Its content hash (every returned byte was verified against it).
    pub hash: ContentHash,
    /// Content length in bytes.
    pub size: u64,
    /// Lines in the whole content (newlines, plus an unterminated last line).
    pub total_lines: u64,
    /// What was read.
    pub content: PartContent,
    /// True if a limit (bytes, line length, match count) cut the result short of what was asked.
    pub truncated: bool,
    /// Byte offset to continue from, if content follows what was returned.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_offset: Option<u64>,
    /// Line to continue from, if lines follow what was returned.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_line: Option<u64>,
    /// What the read cost.
    pub cost: ReadCost,
}

/// The content of a [`PartResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PartContent {
    /// A byte range.
    Bytes {
        /// Its first byte.
        offset: u64,
        /// Bytes returned.
        len: u64,
        /// The bytes.
        data: Data,
    },
    /// Lines (line range, head, tail).
    Lines {
        /// The lines, in order.
        lines: Vec<Line>,
    },
    /// Grep results: matching lines and their context, in order (a gap in numbers separates groups).
    Grep {
        /// Matching lines returned.
        matches: u64,
        /// The lines.
        lines: Vec<GrepLine>,
    },
    /// A JSON value.
    Json {
        /// Whether the path exists in the document.
        found: bool,
        /// The value (absent if not found, or larger than `max_bytes`: then `truncated`).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        value: Option<serde_json::Value>,
        /// Size of the value as compact JSON.
        value_bytes: u64,
    },
    /// One value per JSON line.
    JsonLines {
        /// The items, in line order.
        items: Vec<JsonItem>,
    },
}

/// Returned bytes: UTF-8 text as is, anything else in base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Data {
    /// `utf8` or `base64`.
    pub encoding: String,
    /// The text, or the base64 of the bytes.
    pub data: String,
}

impl Data {
    fn of(b: &[u8]) -> Self {
        match std::str::from_utf8(b) {
            Ok(s) => Data {
                encoding: "utf8".into(),
                data: s.to_string(),
            },
            Err(_) => Data {
                encoding: "base64".into(),
                data: base64(b),
            },
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        match self.encoding.as_str() {
            "utf8" => Ok(self.data.as_bytes().to_vec()),
            "base64" => unbase64(&self.data),
            other => Err(Error::invalid("data encoding", format!("{other:?}"))),
        }
    }
}

/// One line of text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Line {
    /// Line number (1-based).
    pub number: u64,
    /// The text without its line terminator (`\n` or `\r\n`); invalid UTF-8 replaced by U+FFFD.
    pub text: String,
    /// True if the line was cut to the line limit.
    #[serde(skip_serializing_if = "is_false", default)]
    pub truncated: bool,
    /// True if the line is not valid UTF-8 (the text is a lossy rendering).
    #[serde(skip_serializing_if = "is_false", default)]
    pub invalid_utf8: bool,
}

/// A grep line: a match or context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrepLine {
    /// The line.
    #[serde(flatten)]
    pub line: Line,
    /// True for a matching line, false for context.
    pub matched: bool,
}

/// One JSON line's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JsonItem {
    /// Line number.
    pub line: u64,
    /// The value at the path (absent if the path is missing or the line is not JSON).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<serde_json::Value>,
    /// Why there is no value: the line is not JSON, too long, or lacks the path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// What a read cost: proof of the bounded-cost property, and a measure for benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadCost {
    /// True if the content is stored seekable (frames with an index).
    pub seekable: bool,
    /// Stored bytes read from the blob file (or engine value), index included.
    pub stored_bytes_read: u64,
    /// Stored size of the blob.
    pub stored_size: u64,
    /// Content bytes decompressed and verified.
    pub content_bytes_decoded: u64,
    /// Frames read (seekable content).
    pub frames_read: u64,
    /// Frames in the content (0 if not seekable).
    pub frames_total: u64,
}

// ---------------------------------------------------------------------------------------------
// Access to verified content.

/// Counts bytes read through a shared counter.
struct SourceReader {
    src: Box<dyn BlobSource>,
    pos: u64,
    counter: Arc<AtomicU64>,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.src.len().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.src.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Access {
    Seek(Seekable),
    /// Verified whole (small content).
    Memory(Vec<u8>),
    /// Streamed; verified when read to its end.
    Stream(Box<ContentReader<'static>>),
}

struct Content {
    hash: ContentHash,
    size: u64,
    access: Access,
    stored_size: u64,
    /// Stored bytes read by the non-seekable paths (the seekable path counts its own).
    counter: Arc<AtomicU64>,
    /// Bytes read before a source was known not to be seekable (its footer probe).
    probe: u64,
    decoded: u64,
    /// Newlines and the last byte of streamed content, counted as it passes (all of it does).
    stream_newlines: u64,
    stream_last: Option<u8>,
}

impl Content {
    fn cost(&self) -> ReadCost {
        match &self.access {
            Access::Seek(s) => ReadCost {
                seekable: true,
                stored_bytes_read: s.bytes_read(),
                stored_size: self.stored_size,
                content_bytes_decoded: s.decoded(),
                frames_read: s.frames_read(),
                frames_total: s.frames() as u64,
            },
            _ => ReadCost {
                seekable: false,
                stored_bytes_read: self.counter.load(Ordering::Relaxed) + self.probe,
                stored_size: self.stored_size,
                content_bytes_decoded: self.decoded,
                frames_read: 0,
                frames_total: 0,
            },
        }
    }

    /// Calls `f(offset, bytes)` with verified content from byte `from` on, in order, until `f`
    /// returns false or the content ends. Streamed content is then read to its end, so that its
    /// hash is checked before the caller returns anything it collected.
    fn scan(&mut self, from: u64, f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>) -> Result<()> {
        if from >= self.size {
            return self.drain();
        }
        match &mut self.access {
            Access::Seek(s) => {
                let mut i = s.frame_of(from);
                while i < s.frames() {
                    let data = s.read_frame(i)?;
                    let start = s.frame_start(i);
                    let skip = from.saturating_sub(start) as usize;
                    if !f(start + skip as u64, &data[skip.min(data.len())..])? {
                        break;
                    }
                    i += 1;
                }
                Ok(())
            }
            Access::Memory(d) => {
                self.decoded = d.len() as u64;
                f(from, &d[from as usize..]).map(|_| ())
            }
            Access::Stream(r) => {
                let mut buf = vec![0u8; 256 << 10];
                let mut pos = 0u64;
                let mut want = true;
                loop {
                    let n = match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(content::unwrap_integrity(e, self.hash)),
                    };
                    let chunk = &buf[..n];
                    self.stream_newlines += count_newlines(chunk);
                    self.stream_last = chunk.last().copied();
                    let end = pos + n as u64;
                    if want && end > from {
                        let skip = from.saturating_sub(pos) as usize;
                        want = f(pos + skip as u64, &chunk[skip..])?;
                    }
                    pos = end;
                }
                self.decoded = pos;
                Ok(())
            }
        }
    }

    /// Reads streamed content to its end (verifying it); a no-op for the other kinds.
    fn drain(&mut self) -> Result<()> {
        if let Access::Stream(r) = &mut self.access {
            let mut buf = vec![0u8; 256 << 10];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.stream_newlines += count_newlines(&buf[..n]);
                        self.stream_last = Some(buf[n - 1]);
                        self.decoded += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(content::unwrap_integrity(e, self.hash)),
                }
            }
        }
        Ok(())
    }

    /// Lines of the content, if known without reading it all (seekable: from the index).
    fn total_lines_known(&self) -> Option<u64> {
        match &self.access {
            Access::Seek(s) => Some(s.total_lines()),
            _ => None,
        }
    }

    /// Lines of the content. For streamed content, valid once it was read to its end.
    fn total_lines(&self) -> u64 {
        match &self.access {
            Access::Seek(s) => s.total_lines(),
            Access::Memory(d) => {
                count_newlines(d) + u64::from(d.last().is_some_and(|&b| b != b'\n'))
            }
            Access::Stream(_) => {
                self.stream_newlines + u64::from(self.stream_last.is_some_and(|b| b != b'\n'))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lines.

/// Splits chunks into lines, bounding the memory of one line to `cap` bytes.
struct Splitter {
    buf: Vec<u8>,
    cap: usize,
    overflow: bool,
    /// Number of the line being read.
    number: u64,
    /// Skip bytes up to the first newline (a scan that starts inside a line).
    skip_partial: bool,
    /// Bytes in the current line so far (to know an unterminated last line exists).
    in_line: bool,
}

/// A line as scanned: bytes without the terminator, possibly cut to the scan cap.
struct RawLine<'a> {
    number: u64,
    bytes: &'a [u8],
    cut: bool,
}

impl Splitter {
    fn new(number: u64, skip_partial: bool) -> Self {
        Self {
            buf: Vec::new(),
            cap: SCAN_LINE_BYTES,
            overflow: false,
            number,
            skip_partial,
            in_line: false,
        }
    }

    /// Feeds a chunk; `emit` returns false to stop. Returns false if stopped.
    fn feed(
        &mut self,
        mut chunk: &[u8],
        emit: &mut dyn FnMut(RawLine<'_>) -> Result<bool>,
    ) -> Result<bool> {
        while !chunk.is_empty() {
            let nl = memchr::memchr(b'\n', chunk);
            let (piece, rest, ends) = match nl {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            chunk = rest;
            if self.skip_partial {
                if ends {
                    self.skip_partial = false;
                    self.number += 1;
                }
                continue;
            }
            self.in_line = true;
            if !ends {
                self.push(piece);
                continue;
            }
            let go = if self.buf.is_empty() && !self.overflow && piece.len() <= self.cap {
                let bytes = piece.strip_suffix(b"\r").unwrap_or(piece);
                emit(RawLine {
                    number: self.number,
                    bytes,
                    cut: false,
                })?
            } else {
                self.push(piece);
                let cut = self.overflow;
                let bytes = if cut {
                    &self.buf[..]
                } else {
                    self.buf.strip_suffix(b"\r").unwrap_or(&self.buf[..])
                };
                emit(RawLine {
                    number: self.number,
                    bytes,
                    cut,
                })?
            };
            self.buf.clear();
            self.overflow = false;
            self.in_line = false;
            self.number += 1;
            if !go {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// True between lines: nothing of a line is buffered or being skipped.
    fn at_line_start(&self) -> bool {
        !self.in_line && !self.skip_partial && self.buf.is_empty() && !self.overflow
    }

    fn push(&mut self, piece: &[u8]) {
        let room = self.cap - self.buf.len();
        if piece.len() > room {
            self.overflow = true;
        }
        self.buf.extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// The unterminated last line, if any.
    fn end(&mut self, emit: &mut dyn FnMut(RawLine<'_>) -> Result<bool>) -> Result<()> {
        if self.in_line && !self.skip_partial {
            let cut = self.overflow;
            emit(RawLine {
                number: self.number,
                bytes: &self.buf,
                cut,
            })?;
            self.number += 1;
            self.in_line = false;
        }
        Ok(())
    }
}

fn count_newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

fn to_line(r: &RawLine<'_>, max: usize) -> Line {
    let (text, invalid) = match std::str::from_utf8(r.bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(r.bytes).into_owned(), true),
    };
    let mut line = Line {
        number: r.number,
        text,
        truncated: r.cut,
        invalid_utf8: invalid,
    };
    if line.text.len() > max {
        let mut cut = max;
        while !line.text.is_char_boundary(cut) {
            cut -= 1;
        }
        line.text.truncate(cut);
        line.truncated = true;
    }
    line
}

/// Approximate serialized cost of a line in a result.
fn line_cost(l: &Line) -> u64 {
    l.text.len() as u64 + 24
}

// ---------------------------------------------------------------------------------------------
// The store API.

impl Store {
    /// Reads part of an artifact of `session` with the default [`PartLimits`].
    pub fn read_part(&self, session: SessionId, id: ArtifactId, part: &Part) -> Result<PartResult> {
        self.read_part_with(session, id, part, &PartLimits::default())
    }

    /// Reads part of an artifact of `session`. Only verified bytes are returned: a mismatch is
    /// [`Error::Integrity`] naming the content hash.
    pub fn read_part_with(
        &self,
        session: SessionId,
        id: ArtifactId,
        part: &Part,
        limits: &PartLimits,
    ) -> Result<PartResult> {
        check_limits(limits)?;
        check_part(part)?;
        let a = self.artifact(session, id)?;
        let mut c = self.open_part_content(&a.hash, a.size)?;
        let out = run(&mut c, part, limits)?;
        Ok(PartResult {
            artifact_id: a.id,
            hash: a.hash,
            size: a.size,
            total_lines: out.total_lines,
            content: out.content,
            truncated: out.truncated,
            next_offset: out.next_offset,
            next_line: out.next_line,
            cost: c.cost(),
        })
    }

    /// The preview of an artifact of `session`: stored once per content when it was put, or,
    /// for content stored before previews existed (or imported), computed now from the content.
    pub fn preview(&self, session: SessionId, id: ArtifactId) -> Result<Preview> {
        let a = self.artifact(session, id)?;
        let meta = self.part_blob_meta(&a.hash)?;
        let mut p = match self.backend().get(&keys::preview(&a.hash))? {
            Some(b) => Preview::decode(&b)?,
            None => {
                let mut b = crate::preview::PreviewBuilder::new();
                let mut r = self.open_content(&a.hash, a.size)?;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => b.update(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(content::unwrap_integrity(e, a.hash)),
                    }
                }
                b.finish()
            }
        };
        p.stored_size = meta.stored_size;
        Ok(p)
    }

    /// `len` bytes of content from `offset` (fewer at the end), verified: seekable content reads
    /// only the frames that hold the range; other layouts are read to their end (and so verified
    /// whole). The engine of [`Store::read_range`]; the caller checked that `offset <= size`.
    pub(crate) fn read_range_verified(
        &self,
        hash: &ContentHash,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let mut c = self.open_part_content(hash, size)?;
        let want = len.min(size.saturating_sub(offset));
        // Grown as verified bytes arrive, never sized from the record up front.
        let mut out = Vec::with_capacity(want.min(content::VERIFY_BEFORE_READ) as usize);
        if want > 0 {
            c.scan(offset, &mut |_, b| {
                let take = (want - out.len() as u64).min(b.len() as u64) as usize;
                out.extend_from_slice(&b[..take]);
                Ok((out.len() as u64) < want)
            })?;
        }
        c.drain()?;
        if (out.len() as u64) < want {
            return Err(Error::Integrity {
                hash: *hash,
                message: format!(
                    "content ends after {} of {size} bytes (truncated)",
                    offset + out.len() as u64
                ),
            });
        }
        Ok(out)
    }

    fn part_blob_meta(&self, hash: &ContentHash) -> Result<BlobMeta> {
        match self.backend().get(&keys::blob(hash))? {
            Some(b) => BlobMeta::decode(&b),
            None => Err(Error::ContentMissing { hash: *hash }),
        }
    }

    fn open_part_content(&self, hash: &ContentHash, size: u64) -> Result<Content> {
        let m = self.part_blob_meta(hash)?;
        let src: Box<dyn BlobSource> = if m.inline {
            Box::new(MemorySource::new(self.inline_bytes(hash)?))
        } else {
            let files = self
                .inner
                .files
                .as_ref()
                .ok_or(Error::ContentMissing { hash: *hash })?;
            match files.open_source(hash, m.codec)? {
                Some(src) => src,
                None => {
                    return Err(Error::Integrity {
                        hash: *hash,
                        message: format!(
                            "its blob file {} is missing",
                            files.describe(hash, m.codec)
                        ),
                    })
                }
            }
        };
        let counter = Arc::new(AtomicU64::new(0));
        let mut c = Content {
            hash: *hash,
            size,
            access: Access::Memory(Vec::new()),
            stored_size: m.stored_size,
            counter: counter.clone(),
            probe: 0,
            decoded: 0,
            stream_newlines: 0,
            stream_last: None,
        };
        let src = if m.codec == Codec::Zstd {
            match Seekable::open(src, *hash, size)? {
                Ok(s) => {
                    c.access = Access::Seek(s);
                    return Ok(c);
                }
                Err(src) => src,
            }
        } else {
            src
        };
        c.probe = src.bytes_read();
        let reader = Box::new(io::BufReader::with_capacity(
            256 << 10,
            SourceReader {
                src,
                pos: 0,
                counter,
            },
        ));
        if size <= content::VERIFY_BEFORE_READ {
            c.access = Access::Memory(content::read_verified(m.codec, reader, *hash, size)?);
        } else {
            let dec = content::decoder(m.codec, reader).map_err(|e| Error::Integrity {
                hash: *hash,
                message: format!("the stored content cannot be decoded: {e}"),
            })?;
            c.access = Access::Stream(Box::new(ContentReader::new(dec, *hash, size)));
        }
        Ok(c)
    }
}

fn check_limits(l: &PartLimits) -> Result<()> {
    if l.max_bytes == 0 || l.max_bytes > MAX_PART_BYTES {
        return Err(Error::invalid(
            "max_bytes",
            format!("{}; use 1 to {MAX_PART_BYTES}", l.max_bytes),
        ));
    }
    if l.max_line_bytes == 0 || l.max_line_bytes > SCAN_LINE_BYTES {
        return Err(Error::invalid(
            "max_line_bytes",
            format!("{}; use 1 to {SCAN_LINE_BYTES}", l.max_line_bytes),
        ));
    }
    Ok(())
}

fn check_part(p: &Part) -> Result<()> {
    match p {
        Part::Lines { start: 0, .. } | Part::JsonLines { start: 0, .. } => Err(Error::invalid(
            "start",
            "lines are numbered from 1; use start = 1 for the first line",
        )),
        Part::Grep {
            pattern,
            context,
            max_matches,
            start_line,
            ..
        } => {
            if pattern.len() > MAX_PATTERN_LEN {
                return Err(Error::invalid(
                    "pattern",
                    format!("{} bytes; the limit is {MAX_PATTERN_LEN}", pattern.len()),
                ));
            }
            if *context > MAX_CONTEXT {
                return Err(Error::invalid(
                    "context",
                    format!("{context}; use 0 to {MAX_CONTEXT}"),
                ));
            }
            if *max_matches == 0 || *max_matches > MAX_MATCHES {
                return Err(Error::invalid(
                    "max_matches",
                    format!("{max_matches}; use 1 to {MAX_MATCHES}"),
                ));
            }
            if *start_line == 0 {
                return Err(Error::invalid(
                    "start_line",
                    "lines are numbered from 1; use start_line = 1 for the first line",
                ));
            }
            Ok(())
        }
        Part::Json { path } | Part::JsonLines { path, .. } => to_pointer(path).map(|_| ()),
        _ => Ok(()),
    }
}

struct Out {
    total_lines: u64,
    content: PartContent,
    truncated: bool,
    next_offset: Option<u64>,
    next_line: Option<u64>,
}

fn run(c: &mut Content, part: &Part, l: &PartLimits) -> Result<Out> {
    match part {
        Part::Bytes { offset, len } => bytes(c, *offset, *len, l),
        Part::Lines { start, count } => lines(c, *start, *count, l, LineMode::Text),
        Part::Head { lines: n } => lines(c, 1, *n, l, LineMode::Text),
        Part::Tail { lines: n } => tail(c, *n, l),
        Part::Grep {
            pattern,
            context,
            max_matches,
            ignore_case,
            start_line,
        } => {
            let re = regex::bytes::RegexBuilder::new(pattern)
                .case_insensitive(*ignore_case)
                .size_limit(16 << 20)
                .build()
                .map_err(|e| Error::invalid("pattern", format!("{pattern:?}: {e}")))?;
            let g = Grep {
                re,
                multi: whole_buffer_regex(pattern, *ignore_case),
                context: *context as usize,
                max_matches: u64::from(*max_matches),
            };
            lines(c, *start_line, u64::MAX, l, LineMode::Grep(g))
        }
        Part::Json { path } => json(c, path, l),
        Part::JsonLines { path, start, count } => {
            lines(c, *start, *count, l, LineMode::Json(to_pointer(path)?))
        }
    }
}

fn bytes(c: &mut Content, offset: u64, len: u64, l: &PartLimits) -> Result<Out> {
    if offset > c.size {
        return Err(Error::invalid(
            "range",
            format!("offset {offset} is past the end ({} bytes)", c.size),
        ));
    }
    let asked = len.min(c.size - offset);
    let want = asked.min(l.max_bytes) as usize;
    let mut out = Vec::with_capacity(want);
    if want > 0 {
        c.scan(offset, &mut |_, b| {
            let take = (want - out.len()).min(b.len());
            out.extend_from_slice(&b[..take]);
            Ok(out.len() < want)
        })?;
    }
    c.drain()?;
    let end = offset + out.len() as u64;
    let total_lines = c.total_lines();
    Ok(Out {
        total_lines,
        truncated: (out.len() as u64) < asked,
        next_offset: (end < c.size).then_some(end),
        next_line: None,
        content: PartContent::Bytes {
            offset,
            len: out.len() as u64,
            data: Data::of(&out),
        },
    })
}

struct Grep {
    re: regex::bytes::Regex,
    /// The same pattern in multi-line mode, to find candidate lines in whole frames at once;
    /// `None` where whole-buffer matching could miss a line that matches alone (see
    /// [`whole_buffer_regex`]).
    multi: Option<regex::bytes::Regex>,
    context: usize,
    max_matches: u64,
}

/// The pattern for searching many lines at once, if that finds every line the per-line regex
/// matches: in multi-line mode `^`, `$` and `\b` behave at a `\n` as at the ends of a line, and
/// each candidate is then checked on its own line. Not for patterns that turn multi-line mode
/// off (`(?-m)`) or use the text anchors `\A` and `\z`, which differ between a line and a buffer.
fn whole_buffer_regex(pattern: &str, ignore_case: bool) -> Option<regex::bytes::Regex> {
    if pattern.contains("-m") || pattern.contains("\\A") || pattern.contains("\\z") {
        return None;
    }
    regex::bytes::RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .multi_line(true)
        .size_limit(16 << 20)
        .build()
        .ok()
}

enum LineMode {
    Text,
    Grep(Grep),
    Json(String),
}

/// Where to start scanning for line `start`: (byte offset, number of the line there, whether
/// the scan starts inside a line). `None`: the content has fewer lines.
fn line_start(c: &Content, start: u64) -> Option<(u64, u64, bool)> {
    match &c.access {
        Access::Seek(s) if start > 1 => {
            let f = s.frame_of_newline(start - 1)?;
            Some((s.frame_start(f), s.newlines_before(f) + 1, f > 0))
        }
        _ => Some((0, 1, false)),
    }
}

/// Line range, head, grep and JSON lines: one scan from the frame holding line `start`.
fn lines(c: &mut Content, start: u64, count: u64, l: &PartLimits, mode: LineMode) -> Result<Out> {
    let mut text: Vec<Line> = Vec::new();
    let mut greps: Vec<GrepLine> = Vec::new();
    let mut items: Vec<JsonItem> = Vec::new();
    let mut used = 0u64;
    let mut truncated = false;
    let mut next_line: Option<u64> = None;
    let mut done = count == 0;
    let mut matches = 0u64;
    // Grep state: context before (bounded ring), after-context left, last line emitted.
    let before: RefCell<VecDeque<Line>> = RefCell::new(VecDeque::new());
    let after_left = Cell::new(0usize);
    let mut last_emitted = 0u64;
    let end = start.saturating_add(count);
    if let Some((from, number, partial)) = line_start(c, start) {
        let mut sp = Splitter::new(number, partial);
        let mut emit = |r: RawLine<'_>| -> Result<bool> {
            if done {
                return Ok(false);
            }
            if r.number < start {
                return Ok(true);
            }
            match &mode {
                LineMode::Text => {
                    if r.number >= end {
                        done = true;
                        next_line = Some(r.number);
                        return Ok(false);
                    }
                    let line = to_line(&r, l.max_line_bytes);
                    if !text.is_empty() && used + line_cost(&line) > l.max_bytes {
                        done = true;
                        truncated = true;
                        next_line = Some(r.number);
                        return Ok(false);
                    }
                    used += line_cost(&line);
                    text.push(line);
                }
                LineMode::Json(ptr) => {
                    if r.number >= end {
                        done = true;
                        next_line = Some(r.number);
                        return Ok(false);
                    }
                    let item = json_item(&r, ptr);
                    let cost = item
                        .value
                        .as_ref()
                        .map_or(0, |v| serde_json::to_vec(v).map_or(0, |b| b.len()))
                        as u64
                        + item.error.as_ref().map_or(0, |e| e.len()) as u64
                        + 24;
                    if !items.is_empty() && used + cost > l.max_bytes {
                        done = true;
                        truncated = true;
                        next_line = Some(r.number);
                        return Ok(false);
                    }
                    used += cost;
                    items.push(item);
                }
                LineMode::Grep(g) => {
                    if g.re.is_match(r.bytes) {
                        if matches == g.max_matches {
                            done = true;
                            truncated = true;
                            next_line = Some(r.number);
                            return Ok(false);
                        }
                        let mut group: Vec<GrepLine> = before
                            .borrow_mut()
                            .drain(..)
                            .filter(|b| b.number > last_emitted)
                            .map(|line| GrepLine {
                                line,
                                matched: false,
                            })
                            .collect();
                        group.push(GrepLine {
                            line: to_line(&r, l.max_line_bytes),
                            matched: true,
                        });
                        let cost: u64 = group.iter().map(|g| line_cost(&g.line)).sum();
                        if !greps.is_empty() && used + cost > l.max_bytes {
                            done = true;
                            truncated = true;
                            next_line = group.first().map(|g| g.line.number);
                            return Ok(false);
                        }
                        used += cost;
                        matches += 1;
                        last_emitted = r.number;
                        greps.extend(group);
                        after_left.set(g.context);
                    } else if after_left.get() > 0 {
                        let line = to_line(&r, l.max_line_bytes);
                        if used + line_cost(&line) > l.max_bytes {
                            // Context is best effort: stop adding it, but keep searching.
                            after_left.set(0);
                        } else {
                            used += line_cost(&line);
                            last_emitted = r.number;
                            greps.push(GrepLine {
                                line,
                                matched: false,
                            });
                            after_left.set(after_left.get() - 1);
                        }
                    } else if g.context > 0 {
                        let mut b = before.borrow_mut();
                        if b.len() == g.context {
                            b.pop_front();
                        }
                        b.push_back(to_line(&r, l.max_line_bytes));
                    }
                }
            }
            Ok(true)
        };
        let fast = match &mode {
            LineMode::Grep(g) => g.multi.as_ref().map(|multi| FastGrep {
                multi,
                ring: &before,
                after_left: &after_left,
                context: g.context,
                start,
                max_line: l.max_line_bytes,
            }),
            _ => None,
        };
        let mut stopped = false;
        c.scan(from, &mut |_, chunk| {
            let go = match &fast {
                Some(f) => f.feed(&mut sp, chunk, &mut emit)?,
                None => sp.feed(chunk, &mut emit)?,
            };
            stopped = !go;
            Ok(go)
        })?;
        if !stopped {
            sp.end(&mut emit)?;
        }
    }
    c.drain()?;
    let total_lines = c.total_lines();
    if let (Some(n), Some(t)) = (next_line, Some(total_lines)) {
        if n > t {
            next_line = None;
        }
    }
    let content = match mode {
        LineMode::Text => PartContent::Lines { lines: text },
        LineMode::Json(_) => PartContent::JsonLines { items },
        LineMode::Grep(_) => PartContent::Grep {
            matches,
            lines: greps,
        },
    };
    Ok(Out {
        total_lines,
        content,
        truncated,
        next_offset: None,
        next_line,
    })
}

/// Grep over whole chunks: the multi-line regex finds the next candidate line in all the
/// complete lines of a chunk at once; the lines before it are only counted (and the last
/// `context` of them kept as context), never split or matched one by one. Candidates, lines
/// that carry over between chunks, after-context lines and lines with a `\r` (where per-line
/// matching differs) go through the [`Splitter`] and the per-line check as before.
struct FastGrep<'a> {
    multi: &'a regex::bytes::Regex,
    ring: &'a RefCell<VecDeque<Line>>,
    after_left: &'a Cell<usize>,
    context: usize,
    start: u64,
    max_line: usize,
}

impl FastGrep<'_> {
    fn feed(
        &self,
        sp: &mut Splitter,
        chunk: &[u8],
        emit: &mut dyn FnMut(RawLine<'_>) -> Result<bool>,
    ) -> Result<bool> {
        let mut rest = chunk;
        while !rest.is_empty() {
            if !sp.at_line_start() || self.after_left.get() > 0 {
                // One line the ordinary way.
                match memchr::memchr(b'\n', rest) {
                    Some(i) => {
                        if !sp.feed(&rest[..=i], emit)? {
                            return Ok(false);
                        }
                        rest = &rest[i + 1..];
                        continue;
                    }
                    None => return sp.feed(rest, emit),
                }
            }
            let Some(last) = memchr::memrchr(b'\n', rest) else {
                return sp.feed(rest, emit);
            };
            let region = &rest[..=last];
            if memchr::memchr(b'\r', region).is_some() {
                if !sp.feed(region, emit)? {
                    return Ok(false);
                }
                rest = &rest[last + 1..];
                continue;
            }
            let Some(m) = self.multi.find(region) else {
                self.skip(sp, region);
                rest = &rest[last + 1..];
                continue;
            };
            let ls = memchr::memrchr(b'\n', &region[..m.start()]).map_or(0, |i| i + 1);
            self.skip(sp, &region[..ls]);
            let le = memchr::memchr(b'\n', &region[ls..]).map_or(region.len(), |i| ls + i + 1);
            if !sp.feed(&region[ls..le], emit)? {
                return Ok(false);
            }
            rest = &rest[le..];
        }
        Ok(true)
    }

    /// Passes over `region` (complete lines) without matching: advances the line number and
    /// keeps the last `context` lines (from line `start` on) as before-context.
    fn skip(&self, sp: &mut Splitter, region: &[u8]) {
        if region.is_empty() {
            return;
        }
        let n = count_newlines(region);
        if self.context > 0 {
            // Walk back over at most `context` lines.
            let mut ends = Vec::with_capacity(self.context);
            let mut end = region.len() - 1; // the last '\n'
            let mut first = sp.number + n - 1;
            loop {
                let begin = memchr::memrchr(b'\n', &region[..end]).map_or(0, |i| i + 1);
                ends.push((begin, end, first));
                if begin == 0 || ends.len() == self.context {
                    break;
                }
                end = begin - 1;
                first -= 1;
            }
            let mut ring = self.ring.borrow_mut();
            for &(b, e, number) in ends.iter().rev() {
                if number < self.start {
                    continue;
                }
                let line = &region[b..e];
                let (bytes, cut) = if line.len() > SCAN_LINE_BYTES {
                    (&line[..SCAN_LINE_BYTES], true)
                } else {
                    (line, false)
                };
                if ring.len() == self.context {
                    ring.pop_front();
                }
                ring.push_back(to_line(&RawLine { number, bytes, cut }, self.max_line));
            }
        }
        sp.number += n;
    }
}

/// The last `n` lines. Seekable content: a line range from the index's line count, so only the
/// last frames are read. Other content: one scan keeping the last lines in a bounded ring.
fn tail(c: &mut Content, n: u64, l: &PartLimits) -> Result<Out> {
    if let Some(total) = c.total_lines_known() {
        let start = total.saturating_sub(n) + 1;
        let mut out = lines(c, start, n, l, LineMode::Text)?;
        // Cut by the byte limit: keep the last lines rather than the first.
        if out.truncated {
            return tail_ring(c, n, l, Some((start, total)));
        }
        out.next_line = None;
        return Ok(out);
    }
    tail_ring(c, n, l, None)
}

/// Tail with a bounded ring. `range`: for seekable content, rescan from `start` (of `total`).
fn tail_ring(c: &mut Content, n: u64, l: &PartLimits, range: Option<(u64, u64)>) -> Result<Out> {
    let mut ring: VecDeque<Line> = VecDeque::new();
    let mut used = 0u64;
    let (from, number, partial) = match range {
        Some((start, _)) => line_start(c, start).unwrap_or((0, 1, false)),
        None => (0, 1, false),
    };
    let min = range.map_or(1, |(s, _)| s);
    let mut sp = Splitter::new(number, partial);
    let mut emit = |r: RawLine<'_>| -> Result<bool> {
        if n == 0 || r.number < min {
            return Ok(true);
        }
        let line = to_line(&r, l.max_line_bytes);
        used += line_cost(&line);
        ring.push_back(line);
        while ring.len() as u64 > n || (ring.len() > 1 && used > l.max_bytes) {
            if let Some(old) = ring.pop_front() {
                used -= line_cost(&old);
            }
        }
        Ok(true)
    };
    c.scan(from, &mut |_, chunk| sp.feed(chunk, &mut emit))?;
    sp.end(&mut emit)?;
    c.drain()?;
    let total_lines = c.total_lines();
    // Fewer lines than asked (and than exist): the byte limit dropped the oldest.
    let truncated = (ring.len() as u64) < n.min(total_lines.saturating_sub(min - 1));
    Ok(Out {
        total_lines,
        truncated,
        next_offset: None,
        next_line: None,
        content: PartContent::Lines {
            lines: ring.into_iter().collect(),
        },
    })
}

fn json(c: &mut Content, path: &str, l: &PartLimits) -> Result<Out> {
    if c.size > MAX_JSON_DOCUMENT {
        return Err(Error::LimitExceeded {
            limit: "max_json_document",
            message: format!(
                "the artifact is {} bytes; a json part parses documents up to {MAX_JSON_DOCUMENT} bytes. For JSON lines use kind json_lines; otherwise grep or read a byte range",
                c.size
            ),
        });
    }
    let ptr = to_pointer(path)?;
    let mut doc = Vec::with_capacity(c.size as usize);
    c.scan(0, &mut |_, b| {
        doc.extend_from_slice(b);
        Ok(true)
    })?;
    c.drain()?;
    let total_lines = c.total_lines();
    let v: serde_json::Value = serde_json::from_slice(&doc).map_err(|e| {
        Error::invalid(
            "json",
            format!(
                "the artifact is not one JSON document ({e}); for JSON lines use kind json_lines"
            ),
        )
    })?;
    drop(doc);
    let (found, value, value_bytes, truncated) = match v.pointer(&ptr) {
        None => (false, None, 0, false),
        Some(x) => {
            let n = serde_json::to_vec(x).map_or(0, |b| b.len()) as u64;
            if n > l.max_bytes {
                (true, None, n, true)
            } else {
                (true, Some(x.clone()), n, false)
            }
        }
    };
    Ok(Out {
        total_lines,
        truncated,
        next_offset: None,
        next_line: None,
        content: PartContent::Json {
            found,
            value,
            value_bytes,
        },
    })
}

fn json_item(r: &RawLine<'_>, ptr: &str) -> JsonItem {
    let mut item = JsonItem {
        line: r.number,
        value: None,
        error: None,
    };
    if r.cut {
        item.error = Some(format!(
            "line longer than {SCAN_LINE_BYTES} bytes; not parsed"
        ));
        return item;
    }
    match serde_json::from_slice::<serde_json::Value>(r.bytes) {
        Err(e) => item.error = Some(format!("not JSON: {e}")),
        Ok(v) => match v.pointer(ptr) {
            Some(x) => item.value = Some(x.clone()),
            None => item.error = Some("path not found".into()),
        },
    }
    item
}

/// A JSON pointer from a pointer (`/a/0`) or a simple path (`a[0].b`, `$.a.b`, `a.0.b`).
pub fn to_pointer(path: &str) -> Result<String> {
    if path.is_empty() || path.starts_with('/') {
        return Ok(path.to_string());
    }
    let bad = |why: &str| {
        Error::invalid(
            "path",
            format!("{path:?}: {why}; use a JSON pointer such as /a/0/b or a path such as a[0].b"),
        )
    };
    let p = path.strip_prefix('$').unwrap_or(path);
    let p = p.strip_prefix('.').unwrap_or(p);
    let mut out = String::new();
    if p.is_empty() {
        return Ok(out);
    }
    for seg in p.split('.') {
        let (name, mut rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if name.is_empty() && rest.is_empty() {
            return Err(bad("empty segment"));
        }
        if !name.is_empty() {
            out.push('/');
            out.push_str(&name.replace('~', "~0").replace('/', "~1"));
        }
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| bad("unclosed ["))?;
            let idx = &rest[1..close];
            if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("an index in [] must be a number"));
            }
            out.push('/');
            out.push_str(idx);
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(bad("unexpected text after ]"));
            }
        }
    }
    Ok(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn unbase64(s: &str) -> Result<Vec<u8>> {
    let bad = || Error::invalid("base64", "not valid base64 data");
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c).ok_or_else(bad)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_pointers() {
        assert_eq!(to_pointer("").unwrap(), "");
        assert_eq!(to_pointer("/a/0").unwrap(), "/a/0");
        assert_eq!(to_pointer("a[0].b").unwrap(), "/a/0/b");
        assert_eq!(to_pointer("$.a.b").unwrap(), "/a/b");
        assert_eq!(to_pointer("$").unwrap(), "");
        assert_eq!(to_pointer("a/b.c~d").unwrap(), "/a~1b/c~0d");
        assert_eq!(to_pointer("m[1][2]").unwrap(), "/m/1/2");
        assert!(to_pointer("a[x]").is_err());
        assert!(to_pointer("a[1").is_err());
        assert!(to_pointer("a..b").is_err());
        assert!(to_pointer("a[1]b").is_err());
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..20 {
            let b: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
            assert_eq!(unbase64(&base64(&b)).unwrap(), b);
        }
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert!(unbase64("!!").is_err());
    }
}
