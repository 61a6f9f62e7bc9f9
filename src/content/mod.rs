//! Content: hashing, compression, and blob storage (inline in the engine or in files named by hash).

use std::fs::{self, File};
use std::io::{self, BufReader, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::ContentHash;

pub(crate) mod seekable;

/// The result of a compression worker thread; a panic in it becomes an error.
pub(crate) fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join().unwrap_or_else(|_| {
        Err(Error::Other {
            message: "a compression thread panicked".into(),
        })
    })
}

/// Inputs up to this size are buffered whole (so a duplicate costs only its hash); larger ones stream.
pub(crate) const STREAM_BUFFER: usize = 8 << 20;
/// Chunk size for streaming reads and writes.
const CHUNK: usize = 1 << 20;
/// Compressed output must be at most this fraction of the input to be kept.
const PAYS_NUM: usize = 95;
const PAYS_DEN: usize = 100;
/// Largest zstd window a reader accepts (2^24 = 16 MiB): bounds decoder memory against crafted frames.
const MAX_WINDOW_LOG: u32 = 24;
/// Artifacts up to this size are verified completely before a reader returns any byte.
pub(crate) const VERIFY_BEFORE_READ: u64 = 8 << 20;

/// How a blob's bytes are encoded. Recorded per blob so the format can evolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    fn from_u8(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            other => Err(Error::Corrupt {
                what: format!("unknown blob codec {other} (written by a newer Cairn?)"),
            }),
        }
    }
    pub(crate) fn ext(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zst",
        }
    }
}

/// Per-blob record: `B` + hash -> this, 27 bytes (format 1), or the same 27 bytes followed by
/// the blob's encoded bytes (format 2: small inline blobs, which then need no `D` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobMeta {
    pub codec: Codec,
    /// True: bytes in the engine (in a format-2 record itself, else under `D` + hash).
    /// False: a file under `blobs/`.
    pub inline: bool,
    /// Content length.
    pub size: u64,
    /// Encoded length.
    pub stored_size: u64,
    /// Artifacts (and checkpoints) referencing it.
    pub refs: u64,
}

const BLOB_META_VERSION: u8 = 1;
/// Format of a blob record that carries its inline bytes after the 27-byte header.
const BLOB_META_WITH_DATA: u8 = 2;
/// Length of the record header (both formats).
const BLOB_META_LEN: usize = 27;
/// Where the reference count sits in the header.
const REFS_AT: usize = 19;

impl BlobMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(27);
        v.push(BLOB_META_VERSION);
        v.push(self.codec as u8);
        v.push(self.inline as u8);
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.stored_size.to_be_bytes());
        v.extend_from_slice(&self.refs.to_be_bytes());
        v
    }

    /// A format-2 record: the header, then the inline encoded bytes.
    pub(crate) fn encode_with_data(&self, data: &[u8]) -> Vec<u8> {
        let mut v = self.encode();
        v[0] = BLOB_META_WITH_DATA;
        v.extend_from_slice(data);
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let bad = || {
            Error::Corrupt {
            what: format!(
                "blob record of {} bytes, format {:?} (this Cairn reads formats 1 and 2; upgrade Cairn if it is newer)",
                b.len(),
                b.first()
            ),
        }
        };
        let format = *b.first().ok_or_else(bad)?;
        if b.len() < BLOB_META_LEN
            || !(format == BLOB_META_VERSION && b.len() == BLOB_META_LEN
                || format == BLOB_META_WITH_DATA)
        {
            return Err(bad());
        }
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let m = Self {
            codec: Codec::from_u8(b[1])?,
            inline: b[2] != 0,
            size: u(3),
            stored_size: u(11),
            refs: u(REFS_AT),
        };
        if format == BLOB_META_WITH_DATA
            && (!m.inline || (b.len() - BLOB_META_LEN) as u64 != m.stored_size)
        {
            return Err(bad());
        }
        Ok(m)
    }

    /// The inline encoded bytes a format-2 record carries (`None` for format 1, whose inline
    /// bytes are under `D`). Call on a record that [`BlobMeta::decode`] accepted.
    pub(crate) fn data(record: &[u8]) -> Option<&[u8]> {
        match record.first() {
            Some(&BLOB_META_WITH_DATA) => record.get(BLOB_META_LEN..),
            _ => None,
        }
    }

    /// The record with its reference count set to `refs` and everything else (inline bytes
    /// included) unchanged: a reference change rewrites nothing else.
    pub(crate) fn with_refs(record: &[u8], refs: u64) -> Vec<u8> {
        let mut v = record.to_vec();
        if v.len() >= BLOB_META_LEN {
            v[REFS_AT..REFS_AT + 8].copy_from_slice(&refs.to_be_bytes());
        }
        v
    }
}

/// Content read from a caller and hashed, not yet committed.
pub(crate) struct Prepared {
    pub hash: ContentHash,
    pub size: u64,
    pub data: PreparedData,
    /// Partial reads (issue 13): the preview, computed while hashing. `None`: compute it from
    /// the bytes in memory when the blob turns out to be new.
    pub preview: Option<crate::preview::Preview>,
}

pub(crate) enum PreparedData {
    /// Small enough to hold: the raw bytes. Encoded only if the blob turns out to be new.
    Memory(Vec<u8>),
    /// Streamed to a temporary file (already encoded and fsynced).
    TempFile {
        path: PathBuf,
        codec: Codec,
        stored_size: u64,
    },
}

/// Encoded bytes ready to store.
pub(crate) struct Encoded {
    pub codec: Codec,
    pub bytes: Vec<u8>,
}

/// Compresses `raw` if it is at least `threshold` bytes and compression pays.
pub(crate) fn encode(raw: &[u8], threshold: u64, level: i32) -> Result<Encoded> {
    if (raw.len() as u64) >= threshold && !raw.is_empty() {
        let c = compress(raw, level)?;
        if c.len() * PAYS_DEN <= raw.len() * PAYS_NUM {
            return Ok(Encoded {
                codec: Codec::Zstd,
                bytes: c,
            });
        }
    }
    Ok(Encoded {
        codec: Codec::Raw,
        bytes: raw.to_vec(),
    })
}

// --- Partial reads (issue 13): the seekable codec hook. Content at or above
// `seekable_threshold` that compresses is stored in the seekable format (src/content/seekable.rs), which
// is itself a zstd stream: the blob record keeps codec zstd and every whole-content reader works.
/// How content is encoded: [`Config`](crate::Config)'s compression settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EncodeOptions {
    pub threshold: u64,
    pub level: i32,
    pub seekable_threshold: u64,
    pub frame_size: u64,
}

impl EncodeOptions {
    pub(crate) fn of(c: &crate::Config) -> Self {
        Self {
            threshold: c.compression_threshold,
            level: c.compression_level,
            seekable_threshold: c.seekable_threshold,
            frame_size: c.seekable_frame_size,
        }
    }
    pub(crate) fn seekable(&self, len: u64) -> bool {
        len > 0 && len >= self.threshold && len >= self.seekable_threshold
    }
}

/// [`encode`], choosing the seekable format for large compressible content.
pub(crate) fn encode_with(raw: &[u8], o: &EncodeOptions) -> Result<Encoded> {
    if o.seekable(raw.len() as u64) {
        let c = crate::content::seekable::encode(raw, o.frame_size, o.level)?;
        if c.len() * PAYS_DEN <= raw.len() * PAYS_NUM {
            return Ok(Encoded {
                codec: Codec::Zstd,
                bytes: c,
            });
        }
        return Ok(Encoded {
            codec: Codec::Raw,
            bytes: raw.to_vec(),
        });
    }
    encode(raw, o.threshold, o.level)
}
// --- end of the seekable hook

pub(crate) fn compress(raw: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut enc = zstd::bulk::Compressor::new(level).map_err(compress_err)?;
    // Record the content size in the frame header so readers can size buffers exactly.
    enc.include_contentsize(true).map_err(compress_err)?;
    enc.compress(raw).map_err(compress_err)
}

fn compress_err(e: io::Error) -> Error {
    Error::Other {
        message: format!("zstd compression failed: {e}"),
    }
}

/// Reads `reader` to the end (bounded by `max_size`), hashing as it goes. Inputs up to
/// [`STREAM_BUFFER`] stay in memory; larger ones are encoded into a temporary file in `tmp_dir`.
pub(crate) fn prepare(
    reader: &mut dyn Read,
    max_size: u64,
    tmp_dir: Option<&Path>,
    opts: &EncodeOptions,
) -> Result<Prepared> {
    let mut buf = Vec::new();
    let limit = (STREAM_BUFFER as u64).min(max_size.saturating_add(1));
    reader
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|source| Error::InputIo { source })?;
    check_size(buf.len() as u64, max_size)?;
    if (buf.len() as u64) < limit || tmp_dir.is_none() {
        // Either all of it, or a store without a file area (memory): read the rest into memory.
        if tmp_dir.is_none() && (buf.len() as u64) == limit {
            reader
                .take(max_size.saturating_add(1) - buf.len() as u64)
                .read_to_end(&mut buf)
                .map_err(|source| Error::InputIo { source })?;
            check_size(buf.len() as u64, max_size)?;
        }
        let hash = hash_bytes(&buf);
        return Ok(Prepared {
            hash,
            size: buf.len() as u64,
            data: PreparedData::Memory(buf),
            preview: None,
        });
    }
    let tmp_dir = tmp_dir.unwrap_or(Path::new("."));
    stream_to_temp(reader, buf, max_size, tmp_dir, opts)
}

fn check_size(size: u64, max: u64) -> Result<()> {
    if size > max {
        return Err(Error::LimitExceeded {
            limit: "max_artifact_size",
            message: format!(
                "the input is larger than {max} bytes; nothing was stored (raise limits.max_artifact_size to accept it)"
            ),
        });
    }
    Ok(())
}

pub(crate) fn hash_bytes(b: &[u8]) -> ContentHash {
    ContentHash::of(b)
}

/// Counts bytes written through it.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}
impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Removes the temporary file unless disarmed: a failed or refused put leaves nothing on disk.
struct TempGuard(Option<PathBuf>);
impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

pub(crate) fn temp_path(tmp_dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    tmp_dir.join(format!("put-{}-{n}.tmp", std::process::id()))
}

fn stream_to_temp(
    reader: &mut dyn Read,
    first: Vec<u8>,
    max_size: u64,
    tmp_dir: &Path,
    opts: &EncodeOptions,
) -> Result<Prepared> {
    let (threshold, level) = (opts.threshold, opts.level);
    let path = temp_path(tmp_dir);
    let mut guard = TempGuard(Some(path.clone()));
    let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
    let io_err = |e: io::Error| Error::io(&path, e);
    // Decide the codec once, from a sample of the first buffer: streams cannot be re-encoded later.
    let sample = &first[..first.len().min(CHUNK)];
    let use_zstd = (first.len() as u64) >= threshold
        && compress(sample, level)?.len() * PAYS_DEN <= sample.len() * PAYS_NUM;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let counting = CountingWriter {
        inner: io::BufWriter::with_capacity(CHUNK, file),
        count: 0,
    };
    let mut preview = crate::preview::PreviewBuilder::new();
    // Partial reads (issue 13): large compressible streams are written seekable.
    let mut seekable = None;
    let mut sink: Box<dyn Write> = if use_zstd && opts.seekable(first.len() as u64) {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        seekable = Some(crate::content::seekable::SeekableWriter::new(
            counting,
            opts.frame_size,
            level,
            workers,
        )?);
        Box::new(io::sink())
    } else if use_zstd {
        let mut enc = zstd::stream::Encoder::new(counting, level).map_err(io_err)?;
        // Two workers: compression, not hashing or disk, bounds large ingest (LESSONS.md).
        let _ = enc.multithread(2);
        Box::new(enc.auto_finish())
    } else {
        Box::new(counting)
    };
    let mut chunk = first;
    loop {
        if chunk.is_empty() {
            break;
        }
        size += chunk.len() as u64;
        check_size(size, max_size)?;
        hasher.update(&chunk);
        preview.update(&chunk);
        match seekable.as_mut() {
            Some(w) => w.push(&chunk)?,
            None => sink.write_all(&chunk).map_err(io_err)?,
        }
        chunk.clear();
        reader
            .take(CHUNK as u64)
            .read_to_end(&mut chunk)
            .map_err(|source| Error::InputIo { source })?;
    }
    sink.flush().map_err(io_err)?;
    drop(sink); // finishes the zstd frame and flushes the BufWriter
    if let Some(w) = seekable.take() {
        let (mut counting, _) = w.finish()?;
        counting.flush().map_err(io_err)?;
    }
    let file = File::options().read(true).open(&path).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    let stored_size = file.metadata().map_err(io_err)?.len();
    guard.0 = None;
    Ok(Prepared {
        hash: hasher.finalize().into(),
        size,
        data: PreparedData::TempFile {
            path,
            codec: if use_zstd { Codec::Zstd } else { Codec::Raw },
            stored_size,
        },
        preview: Some(preview.finish()),
    })
}

/// Where a file blob lives: `blobs/<first two hex>/<hex>.<raw|zst>`.
pub(crate) fn blob_path(blob_dir: &Path, hash: &ContentHash, codec: Codec) -> PathBuf {
    let hex = hash.to_hex();
    blob_dir
        .join(&hex[..2])
        .join(format!("{hex}.{}", codec.ext()))
}

/// Opens the decoded byte stream of a blob from its encoded source.
pub(crate) fn decoder<'a>(
    codec: Codec,
    source: Box<dyn Read + Send + 'a>,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match codec {
        Codec::Raw => source,
        Codec::Zstd => {
            // Partial reads (issue 13): a version 2 seekable blob starts with its header frame
            // and needs its first frame as the later frames' dictionary.
            let mut source = source;
            let mut head = [0u8; crate::content::seekable::HEADER_LEN];
            let mut n = 0;
            while n < head.len() {
                match source.read(&mut head[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if crate::content::seekable::is_header(&head[..n]) {
                return Ok(Box::new(crate::content::seekable::FrameStream::new(
                    BufReader::with_capacity(256 << 10, source),
                )));
            }
            let rest: Box<dyn Read + Send + 'a> =
                Box::new(io::Cursor::new(head[..n].to_vec()).chain(source));
            let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::new(rest))?;
            d.window_log_max(MAX_WINDOW_LOG)?;
            Box::new(d)
        }
    })
}

/// Reads decoded content, hashing as it goes; at the end checks length and hash.
/// Returns an `InvalidData` error (wrapping [`Error::Integrity`]) instead of a clean end of stream
/// when anything does not match, and never reads past the recorded size.
pub struct ContentReader<'a> {
    inner: Box<dyn Read + Send + 'a>,
    hasher: blake3::Hasher,
    expected: ContentHash,
    size: u64,
    read: u64,
    done: bool,
}

impl<'a> ContentReader<'a> {
    pub(crate) fn new(inner: Box<dyn Read + Send + 'a>, expected: ContentHash, size: u64) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            expected,
            size,
            read: 0,
            done: false,
        }
    }

    /// Total content length.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn integrity(&self, message: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            Error::Integrity {
                hash: self.expected,
                message,
            },
        )
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        // Ask for one byte more than remains, to detect content longer than recorded.
        let remaining = self.size - self.read;
        let want = (out.len() as u64).min(remaining.saturating_add(1)) as usize;
        let n = match self.inner.read(&mut out[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                return Err(self.integrity(format!("the stored content cannot be decoded: {e}")))
            }
        };
        if n as u64 > remaining {
            self.done = true;
            return Err(self.integrity(format!(
                "content is longer than its recorded size of {} bytes",
                self.size
            )));
        }
        if n == 0 {
            self.done = true;
            if self.read != self.size {
                return Err(self.integrity(format!(
                    "content ends after {} of {} bytes (truncated)",
                    self.read, self.size
                )));
            }
            let got: ContentHash = self.hasher.finalize().into();
            if got != self.expected {
                return Err(self.integrity(format!("content hashes to {got}")));
            }
            return Ok(0);
        }
        self.hasher.update(&out[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads a whole blob and verifies it; on any mismatch returns [`Error::Integrity`] and no bytes.
pub(crate) fn read_verified(
    codec: Codec,
    source: Box<dyn Read + Send + '_>,
    hash: ContentHash,
    size: u64,
) -> Result<Vec<u8>> {
    let dec = decoder(codec, source).map_err(|e| Error::Integrity {
        hash,
        message: format!("the stored content cannot be decoded: {e}"),
    })?;
    let mut r = ContentReader::new(dec, hash, size);
    let mut out = Vec::with_capacity(size.min(VERIFY_BEFORE_READ) as usize);
    match r.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => Err(unwrap_integrity(e, hash)),
    }
}

pub(crate) fn unwrap_integrity(e: io::Error, hash: ContentHash) -> Error {
    let message = e.to_string();
    match e.into_inner().map(|inner| inner.downcast::<Error>()) {
        Some(Ok(err)) => *err,
        _ => Error::Integrity { hash, message },
    }
}

pub(crate) fn bytes_source(b: Vec<u8>) -> Box<dyn Read + Send + 'static> {
    Box::new(Cursor::new(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_meta_round_trip() {
        let m = BlobMeta {
            codec: Codec::Zstd,
            inline: false,
            size: 1 << 40,
            stored_size: 77,
            refs: 3,
        };
        assert_eq!(BlobMeta::decode(&m.encode()).unwrap(), m);
        assert_eq!(BlobMeta::data(&m.encode()), None);
        assert!(BlobMeta::decode(&[9; 27]).is_err());
        assert!(BlobMeta::decode(&[]).is_err());
        // Format 1 with trailing bytes is damage, not data.
        let mut long = m.encode();
        long.push(0);
        assert!(BlobMeta::decode(&long).is_err());
    }

    #[test]
    fn blob_record_with_inline_bytes_round_trips_and_keeps_them_on_ref_changes() {
        let m = BlobMeta {
            codec: Codec::Raw,
            inline: true,
            size: 5,
            stored_size: 5,
            refs: 1,
        };
        let r = m.encode_with_data(b"hello");
        assert_eq!(BlobMeta::decode(&r).unwrap(), m);
        assert_eq!(BlobMeta::data(&r), Some(&b"hello"[..]));
        let r2 = BlobMeta::with_refs(&r, 7);
        assert_eq!(BlobMeta::decode(&r2).unwrap().refs, 7);
        assert_eq!(BlobMeta::data(&r2), Some(&b"hello"[..]));
        // A length that disagrees with the stored size, or data on a file blob, is refused.
        assert!(BlobMeta::decode(&r[..r.len() - 1]).is_err());
        let file = BlobMeta { inline: false, ..m };
        assert!(BlobMeta::decode(&file.encode_with_data(b"hello")).is_err());
    }

    #[test]
    fn encode_keeps_raw_when_compression_does_not_pay() {
        let text = b"{\"tool\":\"grep\",\"out\":\"abc\"}\n".repeat(1000);
        let e = encode(&text, 0, 3).unwrap();
        assert_eq!(e.codec, Codec::Zstd);
        assert!(e.bytes.len() < text.len() / 4);
        let mut x = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(encode(&random, 0, 3).unwrap().codec, Codec::Raw);
        assert_eq!(encode(&text, u64::MAX, 3).unwrap().codec, Codec::Raw);
    }

    #[test]
    fn reader_detects_corruption_length_and_truncation() {
        let data = b"hello world".to_vec();
        let h = ContentHash::of(&data);
        assert_eq!(
            read_verified(Codec::Raw, bytes_source(data.clone()), h, 11).unwrap(),
            data
        );
        let mut bad = data.clone();
        bad[0] ^= 1;
        assert!(matches!(
            read_verified(Codec::Raw, bytes_source(bad), h, 11),
            Err(Error::Integrity { .. })
        ));
        assert!(read_verified(Codec::Raw, bytes_source(data[..5].to_vec()), h, 11).is_err());
        let mut long = data.clone();
        long.push(b'!');
        assert!(read_verified(Codec::Raw, bytes_source(long), h, 11).is_err());
        assert!(read_verified(Codec::Zstd, bytes_source(b"not zstd".to_vec()), h, 11).is_err());
    }
}
