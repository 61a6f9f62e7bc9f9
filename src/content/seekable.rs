//! Seekable content: large content cut into independently compressed zstd frames of a fixed
//! uncompressed size, with a frame index, so that a partial read decompresses only the frames it
//! needs and verifies them against the content hash without hashing the rest.
//!
//! # On-disk format (version 2)
//!
//! ```text
//! header | zstd frame 0 | zstd frame 1 | ... | zstd frame n-1 | skippable frame (index)
//!
//! header          = skippable frame: magic 0x184D2A5D (u32 LE) | 8 (u32 LE) | "CAIRNSK2"
//! skippable frame = magic 0x184D2A5E (u32 LE) | payload length (u32 LE) | payload
//! payload         = n entries | footer
//! entry (40 B)    = compressed length (u32 LE) | newlines in the frame (u32 LE)
//!                 | BLAKE3 chaining value of the frame's subtree (32 B)
//! footer (40 B)   = frame count (u32 LE) | frame log (u8: frame size = 1 KiB << log)
//!                 | flags (u8: bit 0 = content ends with '\n', bit 1 = frames 1.. use frame 0's
//!                   content as a raw zstd dictionary) | version (u8 = 2) | 0 (u8)
//!                 | checksum (16 B: BLAKE3 of entries + the first 8 footer bytes + content size)
//!                 | content size (u64 LE) | magic "CAIRNSEK"
//! ```
//!
//! Version 2 compresses frames 1.. with frame 0's content as a dictionary: repetition across a
//! large content (the same prompts and tool descriptions in every run of a concatenated log) is
//! mostly within reach of the first frame, and independent frames lost it (+30% against plain
//! zstd on the shared corpus; +0.3% with the dictionary: BENCHMARKS.md). A read of frame `i`
//! then also reads frame 0, once per open blob. Such a blob is no longer a plain zstd stream:
//! `content::decoder` recognises the header frame and decodes it with [`FrameStream`], so every
//! whole-content reader (`read`, `verify`, bundle export) reads it, and the blob record keeps
//! codec `zstd`. Version 1 blobs (no header, independent frames, a plain zstd stream) still read
//! both ways. A partial read recognises a seekable blob by its footer magic.
//!
//! Verification: frames are a power of two times 1 KiB (BLAKE3's chunk size), so frame `i` is a
//! complete subtree of the content's BLAKE3 tree, and the tree over the frames is the same
//! left-balanced tree BLAKE3 builds. Opening checks that the stored chaining values merge to the
//! content hash; reading a frame checks that its bytes hash (at their offset) to its chaining
//! value. Newline counts and compressed lengths are not part of the hash: a wrong length fails
//! decompression or the chaining value check, and a wrong newline count is caught by the index
//! checksum (accidental damage) and by a recount of every frame that is read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::error::{Error, Result};
use crate::ids::ContentHash;

/// Footer magic, the last 8 bytes of a seekable blob.
const FOOTER_MAGIC: &[u8; 8] = b"CAIRNSEK";
/// The format version written in the footer. Version 2 adds the leading header frame and the
/// first-frame dictionary (`FLAG_DICT`); version 1 blobs (no header, independent frames) still
/// read.
pub(crate) const FORMAT_VERSION: u8 = 2;
/// zstd skippable frame magic of the version 2 header (the blob's first 16 bytes).
const HEADER_MAGIC: u32 = 0x184D_2A5D;
const HEADER_TAG: &[u8; 8] = b"CAIRNSK2";
/// Length of the version 2 header frame.
pub(crate) const HEADER_LEN: usize = 16;
/// Footer flag: frames after the first were compressed with the first frame's content as a
/// raw-content dictionary.
const FLAG_DICT: u8 = 2;
/// Content that starts like a zstd dictionary would be read as one: no dictionary then.
const ZSTD_DICT_MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];

/// The version 2 header frame.
fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&8u32.to_le_bytes());
    h[8..].copy_from_slice(HEADER_TAG);
    h
}

/// Whether `b` (a blob's first bytes) is a version 2 seekable header.
pub(crate) fn is_header(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[..HEADER_LEN] == header()
}

/// Whether frames after the first may use frame 0 as their dictionary.
fn can_be_dictionary(frame0: &[u8]) -> bool {
    !frame0.starts_with(&ZSTD_DICT_MAGIC)
}
/// zstd skippable frame magic (the last of the 16 reserved values).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const ENTRY_LEN: usize = 40;
const FOOTER_LEN: usize = 40;
/// Smallest frame: one BLAKE3 chunk.
pub(crate) const MIN_FRAME: u64 = 1 << 10;
/// Largest frame: 64 MiB (bounds the memory of one frame read; newline counts fit a u32).
pub(crate) const MAX_FRAME: u64 = 64 << 20;
/// The default frame size: 1 MiB (BENCHMARKS.md, "Partial reads": under 1% larger than plain zstd).
pub(crate) const DEFAULT_FRAME: u64 = 1 << 20;

/// Checks a configured frame size: a power of two between 1 KiB and 64 MiB.
pub(crate) fn check_frame_size(size: u64) -> Result<()> {
    if !size.is_power_of_two() || !(MIN_FRAME..=MAX_FRAME).contains(&size) {
        return Err(Error::invalid(
            "configuration",
            format!(
                "seekable_frame_size = {size}; use a power of two from 1024 (1 KiB) to 67108864 (64 MiB)"
            ),
        ));
    }
    Ok(())
}

fn frame_log(frame_size: u64) -> u8 {
    (frame_size.trailing_zeros() - 10) as u8
}

/// The chaining value of the subtree holding `data`, which starts at `offset` of the content.
fn chaining_value(offset: u64, data: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

/// Merges the chaining values of consecutive equal-size frames (the last may be shorter) the way
/// BLAKE3 builds its tree: the left subtree holds the largest power of two frames below the total.
fn merge(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let split = left_len(cvs.len());
    merge_subtrees_non_root(&merge(&cvs[..split]), &merge(&cvs[split..]), Mode::Hash)
}

/// The root hash of content of two or more frames.
fn root(cvs: &[ChainingValue]) -> blake3::Hash {
    let split = left_len(cvs.len());
    merge_subtrees_root(&merge(&cvs[..split]), &merge(&cvs[split..]), Mode::Hash)
}

/// The largest power of two strictly below `n` (n >= 2).
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn count_newlines(b: &[u8]) -> u32 {
    b.iter().filter(|&&c| c == b'\n').count() as u32
}

struct Entry {
    compressed: u32,
    newlines: u32,
    cv: ChainingValue,
}

/// Writes seekable content to `W`: feed it with [`Write`], then [`SeekableWriter::finish`].
/// Frames are compressed on up to `workers` threads, a batch at a time.
pub(crate) struct SeekableWriter<W: Write> {
    out: W,
    frame_size: usize,
    level: i32,
    workers: usize,
    /// Whole frames waiting for a batch, and the partial frame being filled (last).
    pending: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    size: u64,
    written: u64,
    last_byte: Option<u8>,
    /// Frame 0's content as a prepared dictionary for the frames after it (decided with the
    /// first batch). Repetition across a large content (the same prompts in every run of a
    /// concatenated log) is mostly within reach of its first frame: BENCHMARKS.md.
    dict: Option<std::sync::Arc<zstd::dict::EncoderDictionary<'static>>>,
    dict_decided: bool,
}

impl<W: Write> SeekableWriter<W> {
    pub(crate) fn new(mut out: W, frame_size: u64, level: i32, workers: usize) -> Result<Self> {
        check_frame_size(frame_size)?;
        out.write_all(&header()).map_err(write_err)?;
        Ok(Self {
            out,
            frame_size: frame_size as usize,
            level,
            workers: workers.max(1),
            pending: Vec::new(),
            entries: Vec::new(),
            size: 0,
            written: HEADER_LEN as u64,
            last_byte: None,
            dict: None,
            dict_decided: false,
        })
    }

    /// Adds content bytes.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<()> {
        if let Some(&b) = data.last() {
            self.last_byte = Some(b);
        }
        while !data.is_empty() {
            let fs = self.frame_size;
            let need_new = self.pending.last().is_none_or(|f| f.len() == fs);
            if need_new {
                if self.pending.len() >= self.workers {
                    self.flush_frames()?;
                }
                self.pending.push(Vec::with_capacity(
                    fs.min(data.len().max(MIN_FRAME as usize)),
                ));
            }
            let Some(cur) = self.pending.last_mut() else {
                break;
            };
            let take = (fs - cur.len()).min(data.len());
            cur.extend_from_slice(&data[..take]);
            self.size += take as u64;
            data = &data[take..];
        }
        Ok(())
    }

    /// Compresses and writes every pending frame (in parallel when there are several).
    fn flush_frames(&mut self) -> Result<()> {
        let frames = std::mem::take(&mut self.pending);
        if frames.is_empty() {
            return Ok(());
        }
        let first = self.entries.len() as u64;
        let fs = self.frame_size as u64;
        let level = self.level;
        if !self.dict_decided {
            self.dict_decided = true;
            if can_be_dictionary(&frames[0]) {
                self.dict = Some(std::sync::Arc::new(zstd::dict::EncoderDictionary::copy(
                    &frames[0], level,
                )));
            }
        }
        let dict = self.dict.clone();
        let work = |i: usize, f: &Vec<u8>| -> Result<(Vec<u8>, Entry)> {
            let c = match &dict {
                Some(d) if first + i as u64 > 0 => compress_with(f, d)?,
                _ => super::compress(f, level)?,
            };
            let compressed = u32::try_from(c.len()).map_err(|_| Error::Other {
                message: "a compressed frame is larger than 4 GiB".into(),
            })?;
            let cv = chaining_value((first + i as u64) * fs, f);
            Ok((
                c,
                Entry {
                    compressed,
                    newlines: count_newlines(f),
                    cv,
                },
            ))
        };
        let results: Vec<Result<(Vec<u8>, Entry)>> = if frames.len() == 1 {
            vec![work(0, &frames[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = frames
                    .iter()
                    .enumerate()
                    .map(|(i, f)| s.spawn(move || work(i, f)))
                    .collect();
                handles.into_iter().map(super::joined).collect()
            })
        };
        for r in results {
            let (c, e) = r?;
            self.out.write_all(&c).map_err(write_err)?;
            self.written += c.len() as u64;
            self.entries.push(e);
        }
        Ok(())
    }

    /// Writes the last frame and the index. Returns the writer and the stored size.
    pub(crate) fn finish(mut self) -> Result<(W, u64)> {
        self.flush_frames()?;
        let n = u32::try_from(self.entries.len()).map_err(|_| Error::LimitExceeded {
            limit: "seekable_frame_size",
            message: "content has more than 2^32 frames; raise seekable_frame_size".into(),
        })?;
        let mut payload = Vec::with_capacity(self.entries.len() * ENTRY_LEN + FOOTER_LEN);
        for e in &self.entries {
            payload.extend_from_slice(&e.compressed.to_le_bytes());
            payload.extend_from_slice(&e.newlines.to_le_bytes());
            payload.extend_from_slice(&e.cv);
        }
        let flags = u8::from(self.last_byte == Some(b'\n'))
            | if self.dict.is_some() { FLAG_DICT } else { 0 };
        let head = footer_head(n, frame_log(self.frame_size as u64), flags);
        let sum = index_checksum(&payload, &head, self.size);
        payload.extend_from_slice(&head);
        payload.extend_from_slice(&sum);
        payload.extend_from_slice(&self.size.to_le_bytes());
        payload.extend_from_slice(FOOTER_MAGIC);
        let len = u32::try_from(payload.len()).map_err(|_| Error::Other {
            message: "the seekable index is larger than 4 GiB".into(),
        })?;
        self.out
            .write_all(&SKIPPABLE_MAGIC.to_le_bytes())
            .and_then(|_| self.out.write_all(&len.to_le_bytes()))
            .and_then(|_| self.out.write_all(&payload))
            .map_err(write_err)?;
        self.written += 8 + payload.len() as u64;
        Ok((self.out, self.written))
    }
}

/// Compresses a frame with the first frame's content as its dictionary.
fn compress_with(raw: &[u8], dict: &zstd::dict::EncoderDictionary<'static>) -> Result<Vec<u8>> {
    let err = |e: io::Error| Error::Other {
        message: format!("zstd compression failed: {e}"),
    };
    let mut c = zstd::bulk::Compressor::with_prepared_dictionary(dict).map_err(err)?;
    c.include_contentsize(true).map_err(err)?;
    c.compress(raw).map_err(err)
}

fn write_err(e: io::Error) -> Error {
    Error::Other {
        message: format!("writing seekable content failed: {e}"),
    }
}

fn footer_head(n: u32, log: u8, flags: u8) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&n.to_le_bytes());
    h[4] = log;
    h[5] = flags;
    h[6] = FORMAT_VERSION;
    h
}

fn index_checksum(entries: &[u8], head: &[u8; 8], size: u64) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("cairn seekable index v1");
    h.update(entries);
    h.update(head);
    h.update(&size.to_le_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Whether encoded bytes end with the seekable footer (a blob written in this format).
pub(crate) fn has_footer(tail: &[u8]) -> bool {
    tail.ends_with(FOOTER_MAGIC)
}

/// The length of [`has_footer`]'s evidence: the last bytes of a blob to look at.
pub(crate) const FOOTER_MAGIC_LEN: u64 = FOOTER_MAGIC.len() as u64;

/// The whole content of a version 2 seekable blob as a stream, for the readers that decode a
/// blob from start to end (`read`, `open_reader`, `verify`, export): frame 0 as it is, each later
/// frame with frame 0's content as its dictionary, stopping at the index frame. `source` is
/// positioned just after the header frame. Memory: frame 0's content (one frame) plus zstd's.
pub(crate) struct FrameStream<R: io::BufRead> {
    reader: Option<R>,
    cur: Option<zstd::stream::zio::Reader<R, zstd::stream::raw::Decoder<'static>>>,
    /// Frame 0's content while it is decoded, then the dictionary of the frames after it.
    frame0: Vec<u8>,
    frames: u64,
    dict: Option<Vec<u8>>,
}

impl<R: io::BufRead> FrameStream<R> {
    pub(crate) fn new(source: R) -> Self {
        Self {
            reader: Some(source),
            cur: None,
            frame0: Vec::new(),
            frames: 0,
            dict: None,
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl<R: io::BufRead> Read for FrameStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(cur) = self.cur.as_mut() {
                let n = cur.read(buf)?;
                if n > 0 {
                    if self.frames == 0 {
                        if self.frame0.len() + n > MAX_FRAME as usize {
                            return Err(invalid("a seekable frame is larger than 64 MiB".into()));
                        }
                        self.frame0.extend_from_slice(&buf[..n]);
                    }
                    return Ok(n);
                }
                // The frame ended: on to the next one.
                let Some(done) = self.cur.take() else {
                    continue;
                };
                self.reader = Some(done.into_inner());
                if self.frames == 0 && can_be_dictionary(&self.frame0) {
                    self.dict = Some(std::mem::take(&mut self.frame0));
                }
                self.frames += 1;
                continue;
            }
            let Some(mut r) = self.reader.take() else {
                return Ok(0);
            };
            let first = r.fill_buf()?.first().copied();
            match first {
                // A zstd frame (magic 0xFD2FB528, little-endian).
                Some(0x28) => {
                    let op = match (&self.dict, self.frames) {
                        (Some(d), 1..) => zstd::stream::raw::Decoder::with_dictionary(d)?,
                        _ => zstd::stream::raw::Decoder::new()?,
                    };
                    let mut z = zstd::stream::zio::Reader::new(r, op);
                    z.set_single_frame();
                    self.cur = Some(z);
                }
                // The index (a skippable frame), or the end.
                Some(0x50..=0x5F) | None => return Ok(0),
                Some(b) => {
                    return Err(invalid(format!(
                        "unexpected byte {b:#04x} between seekable frames"
                    )))
                }
            }
        }
    }
}

/// Encodes `raw` in the seekable format in memory.
pub(crate) fn encode(raw: &[u8], frame_size: u64, level: i32) -> Result<Vec<u8>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut w = SeekableWriter::new(
        Vec::with_capacity(raw.len() / 3),
        frame_size,
        level,
        workers,
    )?;
    w.push(raw)?;
    Ok(w.finish()?.0)
}

/// Random access to a blob's stored bytes, counting what it reads.
pub(crate) trait BlobSource: Send {
    /// Stored length.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Stored bytes read so far.
    fn bytes_read(&self) -> u64;
}

impl std::fmt::Debug for dyn BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobSource({} bytes)", self.len())
    }
}

/// A blob file.
pub(crate) struct FileSource {
    file: File,
    len: u64,
    read: u64,
}

impl FileSource {
    pub(crate) fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file, len, read: 0 })
    }
}

impl BlobSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(buf)?;
        self.read += buf.len() as u64;
        Ok(())
    }
    fn bytes_read(&self) -> u64 {
        self.read
    }
}

/// A blob held in memory (inline in the engine).
pub(crate) struct MemorySource {
    bytes: Vec<u8>,
    read: u64,
}

impl MemorySource {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, read: 0 }
    }
}

impl BlobSource for MemorySource {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.bytes.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self.bytes[start..end]);
        self.read += buf.len() as u64;
        Ok(())
    }
    fn bytes_read(&self) -> u64 {
        self.read
    }
}

/// An opened, index-verified seekable blob.
pub(crate) struct Seekable {
    src: Box<dyn BlobSource>,
    hash: ContentHash,
    size: u64,
    frame_size: u64,
    /// Start of each frame in the stored bytes, plus the end of the last.
    offsets: Vec<u64>,
    /// Newlines before each frame, plus the total.
    newlines: Vec<u64>,
    cvs: Vec<ChainingValue>,
    ends_with_newline: bool,
    frames_read: u64,
    decoded: u64,
    /// Frames after the first use frame 0 as their dictionary (version 2, `FLAG_DICT`).
    dict_mode: bool,
    /// Frame 0's verified content, prepared, once a later frame needed it.
    dict: Option<zstd::dict::DecoderDictionary<'static>>,
}

impl std::fmt::Debug for Seekable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seekable")
            .field("hash", &self.hash)
            .field("size", &self.size)
            .field("frames", &self.cvs.len())
            .finish()
    }
}

impl Seekable {
    /// Opens `src` if it is a seekable blob of content `hash` and `size`. `Ok(None)`: it is not
    /// seekable (plain zstd). A seekable footer whose index does not check out is an integrity
    /// error: nothing is read from it.
    pub(crate) fn open(
        mut src: Box<dyn BlobSource>,
        hash: ContentHash,
        size: u64,
    ) -> Result<std::result::Result<Self, Box<dyn BlobSource>>> {
        let len = src.len();
        let bad = |message: String| Error::Integrity { hash, message };
        let io_bad = |e: io::Error| Error::Integrity {
            hash,
            message: format!("cannot read the seekable index: {e}"),
        };
        if len < (8 + FOOTER_LEN) as u64 {
            return Ok(Err(src));
        }
        let mut footer = [0u8; FOOTER_LEN];
        src.read_at(len - FOOTER_LEN as u64, &mut footer)
            .map_err(io_bad)?;
        if &footer[32..40] != FOOTER_MAGIC {
            return Ok(Err(src));
        }
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let n = u32_at(&footer, 0) as usize;
        let log = footer[4];
        let flags = footer[5];
        let version = footer[6];
        if version != 1 && version != FORMAT_VERSION {
            return Err(bad(format!(
                "seekable format version {version} (this Cairn reads versions 1 to {FORMAT_VERSION}; upgrade Cairn)"
            )));
        }
        let dict_mode = flags & FLAG_DICT != 0;
        if version == 1 && dict_mode {
            return Err(bad(
                "a version 1 seekable index with the dictionary flag".into()
            ));
        }
        // Version 2 blobs start with a header frame; frames follow it.
        let base = if version == 1 { 0 } else { HEADER_LEN as u64 };
        if version >= 2 {
            let mut h = [0u8; HEADER_LEN];
            if len < HEADER_LEN as u64 {
                return Err(bad("the seekable blob is shorter than its header".into()));
            }
            src.read_at(0, &mut h).map_err(io_bad)?;
            if !is_header(&h) {
                return Err(bad("the seekable header frame is damaged".into()));
            }
        }
        let mut size_bytes = [0u8; 8];
        size_bytes.copy_from_slice(&footer[24..32]);
        let stored_content_size = u64::from_le_bytes(size_bytes);
        if log > 16 {
            return Err(bad(format!("seekable frame log {log} is out of range")));
        }
        let frame_size = MIN_FRAME << log;
        let want_frames = size.div_ceil(frame_size).max(1) as usize;
        if stored_content_size != size || n != want_frames {
            return Err(bad(format!(
                "seekable index describes {stored_content_size} bytes in {n} frames; the record says {size} bytes ({want_frames} frames of {frame_size})"
            )));
        }
        let payload_len = (n * ENTRY_LEN + FOOTER_LEN) as u64;
        let index_start = len
            .checked_sub(payload_len + 8)
            .ok_or_else(|| bad("the seekable index is longer than the blob".into()))?;
        let mut index = vec![0u8; (payload_len + 8) as usize - FOOTER_LEN];
        src.read_at(index_start, &mut index).map_err(io_bad)?;
        if u32_at(&index, 0) != SKIPPABLE_MAGIC || u64::from(u32_at(&index, 4)) != payload_len {
            return Err(bad("the seekable index frame header is damaged".into()));
        }
        let entries = &index[8..];
        let mut head = [0u8; 8];
        head.copy_from_slice(&footer[..8]);
        if index_checksum(entries, &head, size)[..] != footer[8..24] {
            return Err(bad("the seekable index checksum does not match".into()));
        }
        let mut offsets = Vec::with_capacity(n + 1);
        let mut newlines = Vec::with_capacity(n + 1);
        let mut cvs = Vec::with_capacity(n);
        let (mut off, mut nl) = (base, 0u64);
        for e in entries.chunks_exact(ENTRY_LEN) {
            offsets.push(off);
            newlines.push(nl);
            off += u64::from(u32_at(e, 0));
            nl += u64::from(u32_at(e, 4));
            let mut cv = [0u8; 32];
            cv.copy_from_slice(&e[8..40]);
            cvs.push(cv);
        }
        offsets.push(off);
        newlines.push(nl);
        if off != index_start {
            return Err(bad(format!(
                "the seekable index lists {off} bytes of frames; the blob has {index_start}"
            )));
        }
        // The chaining values must merge to the content hash before any frame is trusted.
        if n >= 2 && ContentHash::from(root(&cvs)) != hash {
            return Err(bad(
                "the seekable index's chaining values do not merge to the content hash".into(),
            ));
        }
        Ok(Ok(Self {
            src,
            hash,
            size,
            frame_size,
            offsets,
            newlines,
            cvs,
            ends_with_newline: flags & 1 == 1,
            frames_read: 0,
            decoded: 0,
            dict_mode,
            dict: None,
        }))
    }

    /// Number of frames.
    pub(crate) fn frames(&self) -> usize {
        self.cvs.len()
    }
    /// Content start of frame `i`.
    pub(crate) fn frame_start(&self, i: usize) -> u64 {
        i as u64 * self.frame_size
    }
    /// Frame holding content byte `offset` (the last frame for offsets at or past the end).
    pub(crate) fn frame_of(&self, offset: u64) -> usize {
        ((offset / self.frame_size) as usize).min(self.frames() - 1)
    }
    /// Newlines before frame `i` (`i == frames()` gives the total).
    pub(crate) fn newlines_before(&self, i: usize) -> u64 {
        self.newlines[i]
    }
    /// Lines in the content: newlines, plus one for a last line without a terminator.
    pub(crate) fn total_lines(&self) -> u64 {
        let n = self.newlines[self.frames()];
        n + u64::from(self.size > 0 && !self.ends_with_newline)
    }
    /// The first frame holding the `k`-th newline (1-based), if there are that many.
    pub(crate) fn frame_of_newline(&self, k: u64) -> Option<usize> {
        if k == 0 || k > self.newlines[self.frames()] {
            return None;
        }
        // newlines[i + 1] >= k: the k-th newline is in frame i or before.
        let i = self.newlines[1..].partition_point(|&through| through < k);
        Some(i)
    }
    /// Stored bytes read so far (index included).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.src.bytes_read()
    }
    /// Frames decompressed so far.
    pub(crate) fn frames_read(&self) -> u64 {
        self.frames_read
    }
    /// Content bytes decompressed so far.
    pub(crate) fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Reads, decompresses and verifies frame `i`. Returns its bytes only if they hash to the
    /// frame's chaining value (or, for single-frame content, to the content hash).
    pub(crate) fn read_frame(&mut self, i: usize) -> Result<Vec<u8>> {
        let hash = self.hash;
        let bad = |message: String| Error::Integrity { hash, message };
        let start = self.frame_start(i);
        let want = (self.size - start).min(self.frame_size) as usize;
        if self.dict_mode && i > 0 && self.dict.is_none() {
            // Frame 0 is this frame's dictionary: read (and verify) it first.
            let d0 = self.read_frame(0)?;
            self.dict = Some(zstd::dict::DecoderDictionary::copy(&d0));
        }
        let (a, b) = (self.offsets[i], self.offsets[i + 1]);
        let mut stored = vec![0u8; (b - a) as usize];
        self.src
            .read_at(a, &mut stored)
            .map_err(|e| bad(format!("cannot read frame {i}: {e}")))?;
        let decompressor = match (&self.dict, i) {
            (Some(d), 1..) => zstd::bulk::Decompressor::with_prepared_dictionary(d),
            _ => zstd::bulk::Decompressor::new(),
        };
        let data = decompressor
            .and_then(|mut d| d.decompress(&stored, want))
            .map_err(|e| bad(format!("frame {i} cannot be decoded: {e}")))?;
        if data.len() != want {
            return Err(bad(format!(
                "frame {i} decodes to {} bytes, expected {want}",
                data.len()
            )));
        }
        let ok = if self.frames() == 1 {
            ContentHash::of(&data) == hash
        } else {
            chaining_value(start, &data) == self.cvs[i]
        };
        if !ok {
            return Err(bad(format!(
                "frame {i} (content bytes {start}..{}) does not match its hash",
                start + want as u64
            )));
        }
        if u64::from(count_newlines(&data)) != self.newlines[i + 1] - self.newlines[i] {
            return Err(bad(format!(
                "frame {i}'s newline count in the index is wrong"
            )));
        }
        self.frames_read += 1;
        self.decoded += data.len() as u64;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 64);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!(
                    "{{\"line\":{i},\"msg\":\"tool output number {}\"}}\n",
                    i * 7919 % 1000
                )
                .as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn whole(blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::content::decoder(crate::content::Codec::Zstd, Box::new(blob))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// A version 1 blob, as Cairn wrote them before the dictionary: no header, independent
    /// frames, footer version 1.
    fn encode_v1(raw: &[u8], fs: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entries = Vec::new();
        for (i, f) in raw.chunks(fs).enumerate() {
            let c = crate::content::compress(f, 3).unwrap();
            entries.extend_from_slice(&(c.len() as u32).to_le_bytes());
            entries.extend_from_slice(&count_newlines(f).to_le_bytes());
            entries.extend_from_slice(&chaining_value((i * fs) as u64, f));
            out.extend(c);
        }
        let n = raw.len().div_ceil(fs) as u32;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&n.to_le_bytes());
        head[4] = frame_log(fs as u64);
        head[5] = u8::from(raw.last() == Some(&b'\n'));
        head[6] = 1;
        let sum = index_checksum(&entries, &head, raw.len() as u64);
        let mut payload = entries;
        payload.extend_from_slice(&head);
        payload.extend_from_slice(&sum);
        payload.extend_from_slice(&(raw.len() as u64).to_le_bytes());
        payload.extend_from_slice(FOOTER_MAGIC);
        out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn version_1_blobs_still_read_by_frame_and_whole() {
        let raw = text(50_000);
        let blob = encode_v1(&raw, 4096);
        // Version 1 is a plain zstd stream.
        assert_eq!(zstd::stream::decode_all(&blob[..]).unwrap(), raw);
        assert_eq!(whole(&blob), raw);
        let mut s = open(blob, &raw);
        assert!(!s.dict_mode);
        assert_eq!(s.read_frame(7).unwrap(), raw[7 * 4096..8 * 4096]);
        assert_eq!(s.frames_read(), 1);
    }

    #[test]
    fn version_2_frames_use_frame_0_as_dictionary_and_read_it_once() {
        // Content whose frames repeat each other: the dictionary makes later frames tiny.
        let unit = text(3000);
        let raw: Vec<u8> = unit.iter().cycle().take(64 * 1024).copied().collect();
        let v2 = encode(&raw, 4096, 3).unwrap();
        let v1 = encode_v1(&raw, 4096);
        assert!(v2.len() < v1.len(), "{} vs {}", v2.len(), v1.len());
        assert!(is_header(&v2));
        let mut s = open(v2.clone(), &raw);
        assert!(s.dict_mode);
        assert_eq!(s.read_frame(9).unwrap(), raw[9 * 4096..10 * 4096]);
        assert_eq!(s.frames_read(), 2, "frame 0 (the dictionary) and frame 9");
        assert_eq!(s.read_frame(12).unwrap(), raw[12 * 4096..13 * 4096]);
        assert_eq!(s.frames_read(), 3, "the dictionary is read once");
        assert_eq!(whole(&v2), raw);
        // Content that starts like a zstd dictionary is stored without one, and still reads.
        let mut odd = vec![0x37, 0xA4, 0x30, 0xEC];
        odd.extend_from_slice(&raw[..20_000]);
        let blob = encode(&odd, 4096, 3).unwrap();
        let mut s = open(blob.clone(), &odd);
        assert!(!s.dict_mode);
        assert_eq!(s.read_frame(3).unwrap(), odd[3 * 4096..4 * 4096]);
        assert_eq!(whole(&blob), odd);
    }

    fn open(blob: Vec<u8>, raw: &[u8]) -> Seekable {
        Seekable::open(
            Box::new(MemorySource::new(blob)),
            ContentHash::of(raw),
            raw.len() as u64,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn frames_verify_against_the_content_hash_for_many_shapes() {
        for (len, fs) in [
            (1, 1024),
            (1024, 1024),
            (1025, 1024),
            (3 * 1024, 1024),
            (5 * 4096 + 17, 4096),
            (7 * 2048, 2048),
            (100_000, 8192),
        ] {
            let raw = text(len);
            let blob = encode(&raw, fs, 3).unwrap();
            // The store's whole-content decoder reads the whole blob (header and index are
            // skippable frames; later frames use frame 0 as their dictionary).
            assert_eq!(whole(&blob), raw, "{len}/{fs}");
            let mut s = open(blob, &raw);
            assert_eq!(s.frames(), len.div_ceil(fs as usize));
            let mut all = Vec::new();
            for i in 0..s.frames() {
                all.extend(s.read_frame(i).unwrap());
            }
            assert_eq!(all, raw);
            assert_eq!(s.total_lines(), {
                let nl = raw.iter().filter(|&&b| b == b'\n').count() as u64;
                nl + u64::from(raw.last() != Some(&b'\n'))
            });
        }
    }

    #[test]
    fn a_flipped_byte_in_a_frame_is_an_integrity_error_naming_the_hash() {
        let raw = text(40_000);
        let blob = encode(&raw, 4096, 3).unwrap();
        let s = open(blob.clone(), &raw);
        let (a, b) = (s.offsets[3], s.offsets[4]);
        let mut hits = 0;
        // Flip bytes across frame 3 (header, body, checksum area): never wrong bytes.
        for pos in (a..b).step_by(((b - a) / 16).max(1) as usize) {
            let mut bad = blob.clone();
            bad[pos as usize] ^= 0x40;
            let mut s = open(bad, &raw);
            match s.read_frame(3) {
                Ok(d) => assert_eq!(d, raw[3 * 4096..4 * 4096]),
                Err(Error::Integrity { hash, .. }) => {
                    assert_eq!(hash, ContentHash::of(&raw));
                    hits += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
            // Other frames still read.
            assert_eq!(s.read_frame(0).unwrap(), raw[..4096]);
        }
        assert!(hits > 8, "{hits}");
    }

    #[test]
    fn a_damaged_index_or_wrong_hash_is_refused_at_open() {
        let raw = text(40_000);
        let blob = encode(&raw, 4096, 3).unwrap();
        let len = blob.len();
        // A chaining value (inside the index) flipped: checksum fails.
        let mut bad = blob.clone();
        bad[len - FOOTER_LEN - 20] ^= 1;
        let e = Seekable::open(
            Box::new(MemorySource::new(bad)),
            ContentHash::of(&raw),
            raw.len() as u64,
        )
        .unwrap_err();
        assert_eq!(e.code(), "integrity", "{e}");
        // Right index, other content hash: the chaining values do not merge to it.
        let e = Seekable::open(
            Box::new(MemorySource::new(blob.clone())),
            ContentHash::of(b"other"),
            raw.len() as u64,
        )
        .unwrap_err();
        assert!(e.to_string().contains("merge"), "{e}");
        // Wrong recorded size.
        assert!(Seekable::open(
            Box::new(MemorySource::new(blob)),
            ContentHash::of(&raw),
            raw.len() as u64 + 1
        )
        .is_err());
        // Plain zstd is not seekable.
        let plain = crate::content::compress(&raw, 3).unwrap();
        assert!(Seekable::open(
            Box::new(MemorySource::new(plain)),
            ContentHash::of(&raw),
            raw.len() as u64
        )
        .unwrap()
        .is_err());
    }

    #[test]
    fn newline_lookup() {
        let raw = b"a\nb\nc\n".repeat(2000); // 12,000 bytes, 6,000 newlines
        let blob = encode(&raw, 1024, 3).unwrap();
        let s = open(blob, &raw);
        assert_eq!(s.total_lines(), 6000);
        assert_eq!(s.frame_of_newline(1), Some(0));
        assert_eq!(s.frame_of_newline(512), Some(0));
        assert_eq!(s.frame_of_newline(513), Some(1));
        assert_eq!(s.frame_of_newline(6000), Some(11));
        assert_eq!(s.frame_of_newline(6001), None);
        assert!(check_frame_size(3000).is_err());
        assert!(check_frame_size(512).is_err());
        assert!(check_frame_size(1 << 20).is_ok());
    }
}
