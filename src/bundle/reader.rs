//! Reading a bundle: every frame bounded, every hash and count checked (untrusted input).

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

pub(super) fn bad(offset: u64, message: impl std::fmt::Display) -> Error {
    Error::invalid(
        "bundle",
        format!("{message} (at byte {offset}); the bundle is damaged or not a Cairn bundle"),
    )
}

/// Reads frames, hashing every byte before the trailer.
pub(super) struct FrameReader<R: Read> {
    pub(super) inner: BufReader<R>,
    pub(super) hasher: blake3::Hasher,
    pub(super) pos: u64,
}

impl<R: Read> FrameReader<R> {
    pub(super) fn read_exact(&mut self, buf: &mut [u8], hash: bool) -> Result<()> {
        let start = self.pos;
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(bad(
                        start + got as u64,
                        "the bundle ends early: it is truncated (copy it again)",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::InputIo { source }),
            }
        }
        if hash {
            self.hasher.update(buf);
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes (at least one), hashed.
    pub(super) fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(0) => {
                    return Err(bad(
                        self.pos,
                        "the bundle ends early: it is truncated (copy it again)",
                    ))
                }
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::InputIo { source }),
            }
        }
    }

    /// The next frame's tag and length, and its offset.
    pub(super) fn header(&mut self) -> Result<(u8, u32, u64)> {
        let at = self.pos;
        let mut h = [0u8; 5];
        // The trailer frame is not part of the hash it carries.
        self.read_exact(&mut h[..1], false)?;
        self.read_exact(&mut h[1..], false)?;
        if h[0] != TAG_TRAILER {
            self.hasher.update(&h);
        }
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        Ok((h[0], len, at))
    }

    pub(super) fn payload(&mut self, len: u32, hash: bool) -> Result<Vec<u8>> {
        // Grow as bytes arrive, so a forged length cannot make us allocate up front.
        let mut out = Vec::with_capacity((len as usize).min(64 << 10));
        let mut buf = [0u8; 8192];
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(buf.len());
            self.read_exact(&mut buf[..n], hash)?;
            out.extend_from_slice(&buf[..n]);
            left -= n;
        }
        Ok(out)
    }

    pub(super) fn at_eof(&mut self) -> Result<bool> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::InputIo { source }),
            }
        }
    }
}

/// A blob's frame header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlobInfo {
    pub(super) hash: ContentHash,
    pub(super) size: u64,
    pub(super) codec: Codec,
    /// Offset of the blob frame, for messages.
    pub(super) at: u64,
}

/// The encoded bytes of one blob, read from its chunk frames up to the blob end frame.
pub(super) struct BlobBody<'a, R: Read> {
    pub(super) fr: &'a mut FrameReader<R>,
    pub(super) info: BlobInfo,
    pub(super) remaining: u32,
    pub(super) encoded: u64,
    pub(super) max_encoded: u64,
    pub(super) done: bool,
    pub(super) error: Option<Error>,
}

impl<R: Read> BlobBody<'_, R> {
    pub(super) fn step(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if self.remaining > 0 {
                let want = buf.len().min(self.remaining as usize);
                let n = self.fr.read_some(&mut buf[..want])?;
                self.remaining -= n as u32;
                self.encoded += n as u64;
                if self.encoded > self.max_encoded {
                    return Err(bad(
                        self.fr.pos,
                        format!(
                            "blob {} holds more than {} encoded bytes for {} bytes of content",
                            self.info.hash, self.max_encoded, self.info.size
                        ),
                    ));
                }
                return Ok(n);
            }
            let (tag, len, at) = self.fr.header()?;
            match tag {
                TAG_CHUNK if len == 0 || len > MAX_CHUNK_BYTES => {
                    return Err(bad(
                        at,
                        format!("a content chunk of {len} bytes (1 to {MAX_CHUNK_BYTES} allowed)"),
                    ))
                }
                TAG_CHUNK => self.remaining = len,
                TAG_BLOB_END => {
                    if len != 8 {
                        return Err(bad(
                            at,
                            format!("a blob end frame of {len} bytes, expected 8"),
                        ));
                    }
                    let p = self.fr.payload(8, true)?;
                    let total = u64::from_be_bytes(p[..8].try_into().unwrap_or([0; 8]));
                    if total != self.encoded {
                        return Err(bad(
                            at,
                            format!(
                                "blob {} ends after {} encoded bytes but its end frame says {total}",
                                self.info.hash, self.encoded
                            ),
                        ));
                    }
                    self.done = true;
                }
                other => {
                    return Err(bad(
                        at,
                        format!(
                            "blob {} is incomplete: expected a content chunk or blob end, found {}",
                            self.info.hash,
                            tag_name(other)
                        ),
                    ))
                }
            }
        }
    }

    /// Reads to the blob end frame, discarding the rest.
    pub(super) fn drain(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        while self.step(&mut buf)? > 0 {}
        Ok(())
    }
}

impl<R: Read> Read for BlobBody<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step(buf).map_err(|e| {
            let m = e.to_string();
            self.error = Some(e);
            io::Error::other(m)
        })
    }
}

/// Decodes `src` with `codec` and checks that it is exactly `size` bytes hashing to `hash`,
/// the same way the store reads content back (same decoder and window bound).
pub(super) fn verify_content(
    codec: Codec,
    src: &mut dyn Read,
    hash: &ContentHash,
    size: u64,
) -> std::result::Result<(), String> {
    let mut dec: Box<dyn Read + '_> = match codec {
        Codec::Raw => Box::new(src),
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(src)
                .map_err(|e| format!("cannot start decoding: {e}"))?;
            d.window_log_max(MAX_WINDOW_LOG)
                .map_err(|e| format!("cannot start decoding: {e}"))?;
            Box::new(d)
        }
    };
    let mut hasher = blake3::Hasher::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let k = match dec.read(&mut buf) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("the content does not decode: {e}")),
        };
        if k == 0 {
            break;
        }
        n += k as u64;
        if n > size {
            return Err(format!(
                "the content is longer than its declared {size} bytes"
            ));
        }
        hasher.update(&buf[..k]);
    }
    if n != size {
        return Err(format!("the content is {n} bytes, declared {size}"));
    }
    let got: ContentHash = hasher.finalize().into();
    if got != *hash {
        return Err(format!(
            "the content hashes to {got}, not to its declared hash"
        ));
    }
    Ok(())
}

/// Receives each blob's encoded bytes while the bundle is parsed.
pub(super) trait BlobSink {
    fn accept(&mut self, info: &BlobInfo, body: &mut dyn Read) -> Result<()>;
}

/// Verifies and drops content (for [`inspect`]).
pub(super) struct VerifySink;

impl BlobSink for VerifySink {
    fn accept(&mut self, info: &BlobInfo, body: &mut dyn Read) -> Result<()> {
        verify_content(info.codec, body, &info.hash, info.size)
            .map_err(|m| bad(info.at, format!("blob {}: {m}", info.hash)))
    }
}

pub(super) struct Trailer {
    pub(super) sessions: u64,
    pub(super) artifacts: u64,
    pub(super) events: u64,
    pub(super) extensions: u64,
    pub(super) blobs: u64,
    pub(super) content_bytes: u64,
    pub(super) bundle_bytes: u64,
    pub(super) hash: [u8; 32],
}

/// A fully read and checked bundle (content went to the sink).
pub(super) struct Parsed {
    pub(super) header: BundleHeader,
    pub(super) sessions: Vec<Session>,
    pub(super) artifacts: Vec<Artifact>,
    pub(super) events: Vec<Event>,
    pub(super) extensions: Vec<ExtensionRecord>,
    pub(super) trailer: Trailer,
}

pub(super) const MAX_TEXT: usize = 4096;

pub(super) fn check_text(what: &str, s: &str, newlines: bool, at: u64) -> Result<()> {
    if s.len() > MAX_TEXT
        || s.chars()
            .any(|c| c.is_control() && !(newlines && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(bad(
            at,
            format!(
                "a session's {what} is longer than {MAX_TEXT} bytes or holds control characters"
            ),
        ));
    }
    Ok(())
}

pub(super) fn decode_record<T: serde::de::DeserializeOwned>(
    what: &str,
    p: &[u8],
    at: u64,
) -> Result<T> {
    serde_json::from_slice(p)
        .map_err(|e| bad(at, format!("the {what} record does not decode: {e}")))
}

pub(super) fn over(limit: &'static str, what: &str, max: u64) -> Error {
    Error::LimitExceeded {
        limit,
        message: format!(
            "the bundle holds more than {max} {what}; nothing was imported (raise the bundle limit to accept it)"
        ),
    }
}

/// Reads and checks a whole bundle. `importable`: reject required extensions this version does
/// not know (import), or accept them (inspect).
pub(super) fn parse(
    reader: impl Read,
    limits: &BundleLimits,
    sink: &mut dyn BlobSink,
    importable: Option<&dyn Fn(&str) -> bool>,
) -> Result<Parsed> {
    let mut fr = FrameReader {
        inner: BufReader::with_capacity(256 << 10, reader),
        hasher: blake3::Hasher::new(),
        pos: 0,
    };
    let mut pre = [0u8; 10];
    fr.read_exact(&mut pre[..8], true)?;
    if &pre[..8] != MAGIC {
        return Err(bad(
            0,
            "this is not a Cairn bundle (its first bytes are not CAIRNBDL)",
        ));
    }
    fr.read_exact(&mut pre[8..], true)?;
    let version = u16::from_be_bytes([pre[8], pre[9]]);
    if version != BUNDLE_FORMAT {
        return Err(Error::invalid(
            "bundle",
            format!(
                "bundle format {version}; this Cairn reads format {BUNDLE_FORMAT}{}",
                if version > BUNDLE_FORMAT {
                    " (written by a newer Cairn: upgrade)"
                } else {
                    ""
                }
            ),
        ));
    }
    let max_record = limits.max_record_bytes.min(MAX_RECORD_BYTES);
    let mut buffered = 0u64;
    let mut header: Option<BundleHeader> = None;
    let mut sessions: Vec<Session> = Vec::new();
    let mut session_ids: HashSet<SessionId> = HashSet::new();
    let mut artifacts: Vec<Artifact> = Vec::new();
    let mut artifact_ids: HashSet<ArtifactId> = HashSet::new();
    let mut name_versions: HashSet<(SessionId, String, u32)> = HashSet::new();
    let mut events: Vec<Event> = Vec::new();
    let mut last_seq: HashMap<SessionId, u64> = HashMap::new();
    let mut extensions: Vec<ExtensionRecord> = Vec::new();
    // Content referenced by records: hash -> size if an artifact gives it.
    let mut referenced: HashMap<ContentHash, Option<u64>> = HashMap::new();
    let mut blobs_seen: HashSet<ContentHash> = HashSet::new();
    let mut content_bytes = 0u64;
    let mut rank = 0u8;
    loop {
        let (tag, len, at) = fr.header()?;
        let Some(r) = section_rank(tag) else {
            return Err(bad(
                at,
                format!("{} where a record was expected", tag_name(tag)),
            ));
        };
        if r < rank || (r == 0 && header.is_some()) || (r > 0 && header.is_none()) {
            return Err(bad(
                at,
                format!(
                    "a {} frame out of order (sections are header, sessions, artifacts, events, \
                     extensions, blobs, trailer)",
                    tag_name(tag)
                ),
            ));
        }
        if r > 1 && sessions.is_empty() {
            return Err(bad(at, "the bundle holds no session"));
        }
        rank = r;
        match tag {
            TAG_TRAILER => {
                if len != TRAILER_LEN {
                    return Err(bad(
                        at,
                        format!("a trailer of {len} bytes, expected {TRAILER_LEN}"),
                    ));
                }
                let hash: ContentHash = fr.hasher.finalize().into();
                let p = fr.payload(len, false)?;
                let u =
                    |i: usize| u64::from_be_bytes(p[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                let mut th = [0u8; 32];
                th.copy_from_slice(&p[56..88]);
                let t = Trailer {
                    sessions: u(0),
                    artifacts: u(1),
                    events: u(2),
                    extensions: u(3),
                    blobs: u(4),
                    content_bytes: u(5),
                    bundle_bytes: u(6),
                    hash: th,
                };
                let got = [
                    sessions.len() as u64,
                    artifacts.len() as u64,
                    events.len() as u64,
                    extensions.len() as u64,
                    blobs_seen.len() as u64,
                    content_bytes,
                    at,
                ];
                let want = [
                    t.sessions,
                    t.artifacts,
                    t.events,
                    t.extensions,
                    t.blobs,
                    t.content_bytes,
                    t.bundle_bytes,
                ];
                if got != want {
                    return Err(bad(
                        at,
                        format!(
                            "the trailer's counts (sessions, artifacts, events, extensions, blobs, \
                             content bytes, length) are {want:?} but the bundle holds {got:?}"
                        ),
                    ));
                }
                if hash.as_bytes() != &t.hash {
                    return Err(bad(
                        at,
                        format!(
                            "the bundle hashes to {hash} but its trailer records {}: it was altered",
                            ContentHash::from_bytes(t.hash)
                        ),
                    ));
                }
                if !fr.at_eof()? {
                    return Err(bad(fr.pos, "bytes follow the trailer"));
                }
                if let Some((h, _)) = referenced.iter().find(|(h, _)| !blobs_seen.contains(*h)) {
                    return Err(bad(
                        at,
                        format!(
                            "content {h} is referenced but not in the bundle: it is incomplete"
                        ),
                    ));
                }
                let header = header.ok_or_else(|| bad(at, "no header"))?;
                return Ok(Parsed {
                    header,
                    sessions,
                    artifacts,
                    events,
                    extensions,
                    trailer: t,
                });
            }
            TAG_BLOB => {
                if len != BLOB_LEN {
                    return Err(bad(
                        at,
                        format!("a blob frame of {len} bytes, expected {BLOB_LEN}"),
                    ));
                }
                if blobs_seen.len() as u64 >= limits.max_blobs {
                    return Err(over("bundle max_blobs", "blobs", limits.max_blobs));
                }
                let p = fr.payload(len, true)?;
                let mut hb = [0u8; 32];
                hb.copy_from_slice(&p[..32]);
                let hash = ContentHash::from_bytes(hb);
                let size = u64::from_be_bytes(p[32..40].try_into().unwrap_or([0; 8]));
                let codec = match p[40] {
                    0 => Codec::Raw,
                    1 => Codec::Zstd,
                    c => return Err(bad(at, format!("blob {hash} has unknown codec {c}"))),
                };
                let Some(declared) = referenced.get(&hash) else {
                    return Err(bad(
                        at,
                        format!("blob {hash} is not referenced by any record"),
                    ));
                };
                if declared.is_some_and(|d| d != size) {
                    return Err(bad(
                        at,
                        format!("blob {hash} is {size} bytes but its artifacts say otherwise"),
                    ));
                }
                if !blobs_seen.insert(hash) {
                    return Err(bad(at, format!("blob {hash} appears twice")));
                }
                if size > limits.max_blob_size {
                    return Err(Error::LimitExceeded {
                        limit: "bundle max_blob_size",
                        message: format!(
                            "blob {hash} is {size} bytes; the limit is {}; nothing was imported",
                            limits.max_blob_size
                        ),
                    });
                }
                content_bytes = content_bytes.saturating_add(size);
                let info = BlobInfo {
                    hash,
                    size,
                    codec,
                    at,
                };
                let max_encoded = match codec {
                    Codec::Raw => size,
                    // zstd's worst case is a few bytes per 128 KiB block; this is generous.
                    Codec::Zstd => size.saturating_add(size / 64).saturating_add(64 << 10),
                };
                let mut body = BlobBody {
                    fr: &mut fr,
                    info,
                    remaining: 0,
                    encoded: 0,
                    max_encoded,
                    done: false,
                    error: None,
                };
                if let Err(e) = sink.accept(&info, &mut body) {
                    return Err(body.error.take().unwrap_or(e));
                }
                if let Some(e) = body.error.take() {
                    return Err(e);
                }
                body.drain()?;
            }
            _ => {
                if len > max_record {
                    return Err(bad(
                        at,
                        format!(
                            "a {} record of {len} bytes; the limit is {max_record}",
                            tag_name(tag)
                        ),
                    ));
                }
                buffered += len as u64;
                if buffered > limits.max_buffered_bytes {
                    return Err(over(
                        "bundle max_buffered_bytes",
                        "bytes of records",
                        limits.max_buffered_bytes,
                    ));
                }
                let p = fr.payload(len, true)?;
                match tag {
                    TAG_HEADER => {
                        let h: BundleHeader = decode_record("header", &p, at)?;
                        if h.format != BUNDLE_FORMAT {
                            return Err(bad(at, format!("the header says format {}", h.format)));
                        }
                        header = Some(h);
                    }
                    TAG_SESSION => {
                        if sessions.len() as u64 >= limits.max_sessions {
                            return Err(over(
                                "bundle max_sessions",
                                "sessions",
                                limits.max_sessions,
                            ));
                        }
                        let s: Session = decode_record("session", &p, at)?;
                        let root = header.as_ref().map(|h| h.root);
                        if sessions.is_empty() {
                            if Some(s.id) != root {
                                return Err(bad(at, "the first session is not the header's root"));
                            }
                        } else if !s.parent_id.is_some_and(|p| session_ids.contains(&p)) {
                            return Err(bad(
                                at,
                                format!(
                                    "session {} does not follow its parent in the bundle",
                                    s.id
                                ),
                            ));
                        }
                        if !session_ids.insert(s.id) {
                            return Err(bad(at, format!("session {} appears twice", s.id)));
                        }
                        if let Some(k) = &s.key {
                            if k.is_empty() {
                                return Err(bad(at, "a session key is empty"));
                            }
                            check_text("key", k, false, at)?;
                        }
                        if let Some(n) = &s.name {
                            check_text("name", n, false, at)?;
                        }
                        for (what, t) in [("description", &s.description), ("reason", &s.reason)] {
                            if let Some(t) = t {
                                check_text(what, t, true, at)?;
                            }
                        }
                        for t in &s.tags {
                            validate_tag(t).map_err(|e| bad(at, e))?;
                        }
                        sessions.push(s);
                    }
                    TAG_ARTIFACT => {
                        if artifacts.len() as u64 >= limits.max_artifacts {
                            return Err(over(
                                "bundle max_artifacts",
                                "artifacts",
                                limits.max_artifacts,
                            ));
                        }
                        let a: Artifact = decode_record("artifact", &p, at)?;
                        if !session_ids.contains(&a.session_id) {
                            return Err(bad(
                                at,
                                format!("artifact {} belongs to a session not in the bundle", a.id),
                            ));
                        }
                        if !artifact_ids.insert(a.id) {
                            return Err(bad(at, format!("artifact {} appears twice", a.id)));
                        }
                        validate_name(&a.name).map_err(|e| bad(at, e))?;
                        for t in &a.tags {
                            validate_tag(t).map_err(|e| bad(at, e))?;
                        }
                        if a.version == 0
                            || !name_versions.insert((a.session_id, a.name.clone(), a.version))
                        {
                            return Err(bad(
                                at,
                                format!(
                                    "artifact {} has version {} of a name, which is 0 or taken",
                                    a.id, a.version
                                ),
                            ));
                        }
                        match referenced.get(&a.hash) {
                            Some(Some(s)) if *s != a.size => {
                                return Err(bad(
                                    at,
                                    format!("content {} is given two different sizes", a.hash),
                                ))
                            }
                            _ => {
                                referenced.insert(a.hash, Some(a.size));
                            }
                        }
                        artifacts.push(a);
                    }
                    TAG_EVENT => {
                        if events.len() as u64 >= limits.max_events {
                            return Err(over("bundle max_events", "events", limits.max_events));
                        }
                        let e: Event = decode_record("event", &p, at)?;
                        if !session_ids.contains(&e.session_id) {
                            return Err(bad(at, "an event of a session not in the bundle"));
                        }
                        let last = last_seq.entry(e.session_id).or_insert(0);
                        if e.seq <= *last {
                            return Err(bad(
                                at,
                                format!(
                                    "event {} of session {} does not follow event {}",
                                    e.seq, e.session_id, last
                                ),
                            ));
                        }
                        *last = e.seq;
                        events.push(e);
                    }
                    TAG_EXTENSION => {
                        if extensions.len() as u64 >= limits.max_extensions {
                            return Err(over(
                                "bundle max_extensions",
                                "extension records",
                                limits.max_extensions,
                            ));
                        }
                        let x: ExtensionRecord = decode_record("extension", &p, at)?;
                        let ok_kind = !x.kind.is_empty()
                            && x.kind.len() <= 64
                            && x.kind
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                        if !ok_kind {
                            return Err(bad(at, "an extension record has an invalid kind"));
                        }
                        if !session_ids.contains(&x.session_id) {
                            return Err(bad(
                                at,
                                "an extension record of a session not in the bundle",
                            ));
                        }
                        if let Some(known) = importable {
                            if x.required && !known(&x.kind) {
                                return Err(Error::invalid(
                                    "bundle",
                                    format!(
                                        "it holds {:?} records, which this version of Cairn cannot \
                                         import; upgrade Cairn. Nothing was imported",
                                        x.kind
                                    ),
                                ));
                            }
                        }
                        for h in &x.hashes {
                            referenced.entry(*h).or_insert(None);
                        }
                        extensions.push(x);
                    }
                    _ => return Err(bad(at, format!("unexpected {} frame", tag_name(tag)))),
                }
            }
        }
    }
}
