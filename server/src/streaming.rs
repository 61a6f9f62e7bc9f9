//! Bodies in and out without holding them whole: request chunks go through a small bounded
//! channel to a `Read` adapter that the engine consumes on a blocking thread; content goes out
//! the same way in 64 KiB chunks. Memory per transfer is a few chunks, whatever the size.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use cairn::ContentHash;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};

/// Chunks in flight between the network and the engine (each at most what hyper hands over,
/// typically 8-64 KiB; downloads use [`CHUNK`]).
pub const CHANNEL_DEPTH: usize = 8;
/// Download chunk size.
pub const CHUNK: usize = 64 << 10;
/// Bytes of a refused request body read and dropped so that the client, still sending, gets
/// the answer instead of a reset connection. Past this, the connection is closed.
pub const DRAIN_LIMIT: u64 = 4 << 20;

/// How long a refused body is read before the connection is given up.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops up to [`DRAIN_LIMIT`] bytes (for at most [`DRAIN_TIME`]) of a body that
/// will not be used.
pub async fn drain(body: Body) {
    let mut body = body;
    let read = async {
        let mut n = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                n += d.len() as u64;
                if n > DRAIN_LIMIT {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// What the network side hands to the engine side.
pub enum Piece {
    /// Body bytes.
    Data(Bytes),
    /// The body ended normally. Without it, a closed channel is an error, so a request that
    /// was cancelled (timeout, disconnect) never stores a truncated artifact.
    End,
    /// The body failed; the engine must store nothing.
    Fail(String),
}

/// A `Read` over the pieces of a request body, for the blocking side.
pub struct ChannelReader {
    rx: mpsc::Receiver<Piece>,
    cur: Bytes,
    done: bool,
}

impl ChannelReader {
    /// A reader over `rx`.
    pub fn new(rx: mpsc::Receiver<Piece>) -> Self {
        Self {
            rx,
            cur: Bytes::new(),
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(b)) => self.cur = b,
                Some(Piece::End) => self.done = true,
                Some(Piece::Fail(m)) => return Err(io::Error::other(m)),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the request was cancelled before its body ended",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Hashes what passes through and, at the end, fails (so that nothing is stored) if the
/// content's BLAKE3 differs from the hash the client declared.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    declared: ContentHash,
    mismatch: Arc<AtomicBool>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`; `mismatch` is set when the check fails.
    pub fn new(inner: R, declared: ContentHash, mismatch: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            declared,
            mismatch,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let got = ContentHash::from_bytes(*self.hasher.finalize().as_bytes());
            if got != self.declared {
                self.mismatch.store(true, Ordering::SeqCst);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the content hashes to {got}, not the declared {}",
                        self.declared
                    ),
                ));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Feeds a request body into `tx` piece by piece, refusing more than `limit` bytes. Returns
/// the bytes fed, or the error to answer with (after which the engine side stores nothing).
pub async fn feed(body: Body, tx: mpsc::Sender<Piece>, limit: u64) -> (u64, Option<ApiError>) {
    let mut body = body;
    let mut n = 0u64;
    loop {
        match body.frame().await {
            None => {
                let _ = tx.send(Piece::End).await;
                return (n, None);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers carry nothing we store
                };
                n += data.len() as u64;
                if n > limit {
                    let _ = tx
                        .send(Piece::Fail("the body is over max_body_bytes".into()))
                        .await;
                    drain(body).await;
                    return (n, Some(ApiError::too_large(limit)));
                }
                if tx.send(Piece::Data(data)).await.is_err() {
                    // The engine stopped reading: it failed, and its error is the answer.
                    drain(body).await;
                    return (n, None);
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Piece::Fail(format!("{e}"))).await;
                return (
                    n,
                    Some(ApiError::invalid(
                        "request body",
                        format!("it could not be read to its end ({e}); nothing was stored"),
                    )),
                );
            }
        }
    }
}

/// Streams `len` bytes from `skip` of a verified content reader into a response body. The
/// rest of the content is read after the range (and the last chunk held back until then), so
/// a response only completes when the whole content verified against its hash; on a mismatch
/// the body fails and the client sees a broken transfer, never a complete wrong one.
pub fn stream_out(reader: Box<dyn Read + Send>, skip: u64, len: u64) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = pump(reader, skip, len, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

fn pump(
    mut reader: Box<dyn Read + Send>,
    skip: u64,
    len: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink())?;
    if skipped < skip {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the content is shorter than its recorded size",
        ));
    }
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = len;
    let mut held: Option<Bytes> = None;
    while remaining > 0 {
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the content is shorter than its recorded size",
            ));
        }
        remaining -= n as u64;
        if let Some(prev) = held.replace(Bytes::copy_from_slice(&buf[..n])) {
            if tx.blocking_send(Ok(prev)).is_err() {
                return Ok(()); // the client went away
            }
        }
    }
    // Read to the end: the verified reader checks the hash there.
    io::copy(&mut reader, &mut io::sink())?;
    if let Some(last) = held {
        let _ = tx.blocking_send(Ok(last));
    }
    Ok(())
}

/// Parses a declared content hash (64 hex digits).
pub fn parse_hash(what: &str, v: &str) -> ApiResult<ContentHash> {
    v.trim()
        .parse()
        .map_err(|e: cairn::Error| ApiError::invalid(what, e))
}
