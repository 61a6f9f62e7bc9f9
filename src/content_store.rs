//! Content on S3-compatible object storage (issue 15, feature `s3`): the object-store
//! implementation of the blob file layer ([`crate::blob_files::BlobFiles`]).
//!
//! Objects are keyed by content hash under `<prefix>/<namespace>/blobs/<ab>/<hex>.<raw|zst>`, one
//! namespace per tenant store (so one tenant's GC never deletes another tenant's objects, and an
//! existence check never answers across tenants). New objects are written with
//! `PutMode::Create` (one write wins; `AlreadyExists` is success once the size matches), large
//! ones by multipart upload; reads fetch byte ranges, and every read is verified against the
//! content hash by the layers above, as for local files.
//!
//! `object_store` is async; this module runs it on a private two-thread tokio runtime, so a
//! library user of the embedded store builds no runtime, and the calls here are blocking like
//! the rest of the store. See DESIGN.md, "Content on object storage".

use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::blob_files::BlobFiles;
use crate::content::seekable::BlobSource;
use crate::content::Codec;
use crate::error::{Error, Result};
use crate::ids::ContentHash;

/// Default size from which an object is written by multipart upload (8 MiB).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 8 << 20;
/// Default grace period before garbage content is deleted from the object store (1 hour).
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// Bytes fetched per ranged GET when a whole object is streamed.
const READ_CHUNK: u64 = 8 << 20;
/// Size of a multipart upload's parts (S3 requires at least 5 MiB except for the last).
const PART_SIZE: usize = 8 << 20;

/// Where and how a store keeps its content on an S3-compatible object store.
///
/// Credentials, region and endpoint come from the environment as the AWS SDKs read them
/// ([`S3Config::from_url`]: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`); the builder methods override them.
#[derive(Clone)]
pub struct S3Config {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    allow_http: bool,
    multipart_threshold: u64,
    gc_grace: Duration,
    max_retries: usize,
    retry_timeout: Duration,
    request_timeout: Duration,
    spool_dir: Option<PathBuf>,
}

impl S3Config {
    /// A bucket and key prefix (may be empty), everything else from [`S3Config::from_env`]'s
    /// defaults.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            gc_grace: DEFAULT_GC_GRACE,
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            spool_dir: None,
        }
    }

    /// Parses `s3://bucket[/prefix]` and reads credentials, region and endpoint from the
    /// environment. Plain `http://` endpoints are allowed only on a loopback host.
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |message: String| Error::InvalidInput {
            what: "content location".into(),
            message,
        };
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            bad(format!(
                "{url:?} is not an s3:// URL; give --content s3://BUCKET/PREFIX"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(format!(
                "{url:?} names no bucket; give s3://BUCKET/PREFIX"
            )));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut c = Self::new(bucket, prefix);
        c.access_key_id = env("AWS_ACCESS_KEY_ID");
        c.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
        c.session_token = env("AWS_SESSION_TOKEN");
        c.region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
        if let Some(e) = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")) {
            c = c.endpoint(e);
        }
        Ok(c)
    }

    /// The endpoint of an S3-compatible server (e.g. `http://127.0.0.1:9000`). Path-style
    /// requests are used. Plain HTTP is allowed when the host is a loopback address.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.allow_http = is_loopback_http(&url);
        self.endpoint = Some(url);
        self
    }

    /// The region (default `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static credentials.
    pub fn credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Objects of at least this many bytes are written by multipart upload.
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = bytes.max(PART_SIZE as u64);
        self
    }

    /// How long content stays in the object store after its last reference is dropped before
    /// GC may delete it (default [`DEFAULT_GC_GRACE`]).
    pub fn gc_grace(mut self, grace: Duration) -> Self {
        self.gc_grace = grace;
        self
    }

    /// Retries of a request that failed transiently (5xx, timeouts, connection errors), with
    /// exponential backoff, and the total time after which a request gives up.
    pub fn retries(mut self, max_retries: usize, timeout: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_timeout = timeout;
        self
    }

    /// How long one request may take, from connecting to the last byte of the answer
    /// (default 30 s): a server that accepts the connection and then hangs fails the request
    /// after this, and it is retried as [`S3Config::retries`] allows. Uploads of one part
    /// (up to 8 MiB) and downloads of one range must fit in it.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The local folder where a large put is spooled (hashed and encoded into a temporary
    /// file, then uploaded from it) instead of being held in memory: a put needs free disk
    /// space there of about its encoded size, for as long as it runs. Default: the system's
    /// temporary folder. Each store makes a private `cairn-spool-*` folder inside it, removed
    /// when the store is dropped (a crash leaves it behind: delete it).
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// The folder set with [`S3Config::spool_dir`], if any.
    pub fn spool(&self) -> Option<&Path> {
        self.spool_dir.as_deref()
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix (no leading or trailing slash; may be empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The grace period of GC.
    pub fn grace(&self) -> Duration {
        self.gc_grace
    }
}

/// Secrets are not printed.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.access_key_id.as_ref().map(|_| "<set>"))
            .field("allow_http", &self.allow_http)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("gc_grace", &self.gc_grace)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

/// Whether `url` is `http://` to a loopback host (127.0.0.0/8, ::1, localhost).
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The blob files of one store (tenant namespace) in a bucket.
pub(crate) struct ObjectFiles {
    store: Arc<dyn ObjectStore>,
    rt: Arc<tokio::runtime::Runtime>,
    /// `<prefix>/<namespace>/blobs`.
    root: String,
    bucket: String,
    multipart_threshold: u64,
    pub(crate) grace: Duration,
    /// This store's private spool folder for large puts (removed on drop).
    spool: Arc<tempfile::TempDir>,
}

impl ObjectFiles {
    /// Connects (lazily: the first request reaches the server) to the bucket for `namespace`.
    pub(crate) fn open(config: &S3Config, namespace: &str) -> Result<Self> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"))
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: config.max_retries,
                retry_timeout: config.retry_timeout,
            })
            // Client options replace the builder's: allow_http belongs to them too.
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_timeout(config.request_timeout)
                    .with_connect_timeout(config.request_timeout.min(Duration::from_secs(5))),
            );
        if let Some(e) = &config.endpoint {
            if e.starts_with("http://") && !config.allow_http {
                return Err(Error::InvalidInput {
                    what: "object store endpoint".into(),
                    message: format!(
                        "{e} is plain HTTP to a host that is not loopback; use https://"
                    ),
                });
            }
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let (Some(k), Some(s)) = (&config.access_key_id, &config.secret_access_key) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        if let Some(t) = &config.session_token {
            b = b.with_token(t);
        }
        let store = b.build().map_err(|e| Error::Backend {
            message: format!(
                "object store s3://{}: {e}; check --content and the AWS_* variables",
                config.bucket
            ),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend {
                message: format!("cannot start the object store's runtime: {e}"),
            })?;
        let base = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
        let spool = tempfile::Builder::new()
            .prefix("cairn-spool-")
            .tempdir_in(&base)
            .map_err(|e| Error::io(&base, e))?;
        let root = [config.prefix.as_str(), namespace, "blobs"]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        Ok(Self {
            store: Arc::new(store),
            rt: Arc::new(rt),
            root,
            bucket: config.bucket.clone(),
            multipart_threshold: config.multipart_threshold,
            grace: config.gc_grace,
            spool: Arc::new(spool),
        })
    }

    fn key(&self, hash: &ContentHash, codec: Codec) -> ObjectPath {
        let hex = hash.to_hex();
        ObjectPath::from(format!("{}/{}/{hex}.{}", self.root, &hex[..2], codec.ext()))
    }

    fn url(&self, key: &ObjectPath) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn err(&self, what: &str, key: &ObjectPath, e: object_store::Error) -> Error {
        Error::Backend {
            message: format!(
                "object store: {what} {} failed: {e}; nothing was acknowledged, try again",
                self.url(key)
            ),
        }
    }

    /// Runs `f` on the private runtime and waits for it. Works from any thread, including one
    /// of another runtime (the future runs on this module's own workers).
    fn run<T, F>(&self, f: F) -> std::result::Result<T, object_store::Error>
    where
        T: Send + 'static,
        F: std::future::Future<Output = std::result::Result<T, object_store::Error>>
            + Send
            + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "S3",
                source: "the object store's runtime stopped".into(),
            })
        })
    }

    /// Size of the object, `None` if it does not exist.
    fn head(&self, key: &ObjectPath) -> Result<Option<u64>> {
        let (s, k) = (self.store.clone(), key.clone());
        match self.run(async move { s.head(&k).await }) {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("HEAD", key, e)),
        }
    }

    fn get_range(&self, key: &ObjectPath, range: Range<u64>) -> Result<Vec<u8>> {
        let (s, k) = (self.store.clone(), key.clone());
        self.run(async move { s.get_range(&k, range).await.map(|b| b.to_vec()) })
            .map_err(|e| self.err("GET", key, e))
    }

    /// After `AlreadyExists`: the object is there; it must have the size we meant to write.
    fn check_existing(&self, key: &ObjectPath, len: u64) -> Result<()> {
        match self.head(key)? {
            Some(n) if n == len => Ok(()),
            Some(n) => Err(Error::Backend {
                message: format!(
                    "object store: {} exists with {n} bytes where this content encodes to {len} \
                     (written with other compression settings, or damaged); delete the object \
                     if no blob record names it, or run `cairn verify`",
                    self.url(key)
                ),
            }),
            None => Err(Error::Backend {
                message: format!(
                    "object store: {} was reported as existing but is gone; try again",
                    self.url(key)
                ),
            }),
        }
    }

    fn put_small(&self, key: &ObjectPath, bytes: Vec<u8>) -> Result<()> {
        let len = bytes.len() as u64;
        let payload = PutPayload::from(bytes);
        // `AlreadyExists` and then no object: a GC on another server deleted it (an orphan of
        // a put in flight, or garbage) between the two requests. Writing it again is right;
        // a few attempts, since each needs another GC to race it.
        let mut attempts = 0;
        loop {
            let (s, k, p) = (self.store.clone(), key.clone(), payload.clone());
            let opts = PutOptions::from(PutMode::Create);
            match self.run(async move { s.put_opts(&k, p, opts).await }) {
                Ok(_) => return Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    attempts += 1;
                    if attempts < 4 && self.head(key)?.is_none() {
                        continue;
                    }
                    return self.check_existing(key, len);
                }
                Err(e) => return Err(self.err("PUT", key, e)),
            }
        }
    }

    /// Multipart upload from `next_part` (each call fills up to `PART_SIZE` bytes; empty at
    /// the end). S3 has no create-if-absent for multipart here: an existing object of the right
    /// size is kept; otherwise the parts are uploaded to the key (identical content, encoded with
    /// the same settings, has identical bytes) and the upload is aborted on any error.
    fn put_multipart(
        &self,
        key: &ObjectPath,
        len: u64,
        mut next_part: impl FnMut() -> Result<Vec<u8>>,
    ) -> Result<()> {
        if self.head(key)?.is_some() {
            return self.check_existing(key, len);
        }
        let (s, k) = (self.store.clone(), key.clone());
        let mut upload = self
            .run(async move { s.put_multipart(&k).await })
            .map_err(|e| self.err("multipart upload of", key, e))?;
        let result = (|| -> Result<()> {
            loop {
                let part = next_part()?;
                if part.is_empty() {
                    break;
                }
                let fut = upload.put_part(PutPayload::from(part));
                self.run(fut)
                    .map_err(|e| self.err("multipart part of", key, e))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => self
                .run(async move {
                    match upload.complete().await {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            let _ = upload.abort().await;
                            Err(e)
                        }
                    }
                })
                .map_err(|e| self.err("multipart completion of", key, e))?,
            Err(e) => {
                let _ = self.run(async move { upload.abort().await });
                return Err(e);
            }
        }
        self.check_existing(key, len)
    }

    /// Every object under this store's prefix that is named like a blob: its hash, and the
    /// codec its extension names.
    fn list_objects(&self) -> Result<Vec<(ContentHash, Codec)>> {
        let (s, root) = (self.store.clone(), ObjectPath::from(self.root.as_str()));
        let metas = self
            .run(async move {
                let mut out = Vec::new();
                let mut stream = s.list(Some(&root));
                while let Some(m) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
                    out.push(m?.location);
                }
                Ok(out)
            })
            .map_err(|e| self.err("LIST", &ObjectPath::from(self.root.as_str()), e))?;
        let mut out = Vec::new();
        for p in metas {
            let Some(name) = p.filename() else { continue };
            let Some((stem, ext)) = name.rsplit_once('.') else {
                continue;
            };
            let codec = match ext {
                "raw" => Codec::Raw,
                "zst" => Codec::Zstd,
                _ => continue,
            };
            if let Ok(h) = stem.parse::<ContentHash>() {
                out.push((h, codec));
            }
        }
        Ok(out)
    }
}

impl BlobFiles for ObjectFiles {
    fn write(&self, hash: &ContentHash, codec: Codec, bytes: &[u8]) -> Result<()> {
        let key = self.key(hash, codec);
        if (bytes.len() as u64) < self.multipart_threshold {
            return self.put_small(&key, bytes.to_vec());
        }
        let mut chunks = bytes.chunks(PART_SIZE);
        self.put_multipart(&key, bytes.len() as u64, || {
            Ok(chunks.next().map(<[u8]>::to_vec).unwrap_or_default())
        })
    }

    fn install(&self, tmp: &Path, hash: &ContentHash, codec: Codec) -> Result<()> {
        let key = self.key(hash, codec);
        let mut f = std::fs::File::open(tmp).map_err(|e| Error::io(tmp, e))?;
        let len = f.metadata().map_err(|e| Error::io(tmp, e))?.len();
        if len < self.multipart_threshold {
            let mut bytes = Vec::with_capacity(len as usize);
            f.read_to_end(&mut bytes).map_err(|e| Error::io(tmp, e))?;
            return self.put_small(&key, bytes);
        }
        self.put_multipart(&key, len, || {
            let mut part = Vec::with_capacity(PART_SIZE);
            (&mut f)
                .take(PART_SIZE as u64)
                .read_to_end(&mut part)
                .map_err(|e| Error::io(tmp, e))?;
            Ok(part)
        })
    }

    fn consumes_temp(&self) -> bool {
        false
    }

    fn spool_dir(&self) -> Option<&Path> {
        Some(self.spool.path())
    }

    fn open(&self, hash: &ContentHash, codec: Codec) -> Result<Option<Box<dyn Read + Send>>> {
        let key = self.key(hash, codec);
        let Some(len) = self.head(&key)? else {
            return Ok(None);
        };
        Ok(Some(Box::new(ObjectReader {
            files: self.clone_handle(),
            key,
            len,
            pos: 0,
            buf: Vec::new(),
            at: 0,
        })))
    }

    fn open_source(&self, hash: &ContentHash, codec: Codec) -> Result<Option<Box<dyn BlobSource>>> {
        let key = self.key(hash, codec);
        let Some(len) = self.head(&key)? else {
            return Ok(None);
        };
        Ok(Some(Box::new(ObjectSource {
            files: self.clone_handle(),
            key,
            len,
            read: 0,
        })))
    }

    fn stored_len(&self, hash: &ContentHash, codec: Codec) -> Result<Option<u64>> {
        self.head(&self.key(hash, codec))
    }

    fn delete(&self, hash: &ContentHash, codec: Codec) -> Result<()> {
        let key = self.key(hash, codec);
        let (s, k) = (self.store.clone(), key.clone());
        match self.run(async move { s.delete(&k).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("DELETE", &key, e)),
        }
    }

    fn shared(&self) -> Option<Duration> {
        Some(self.grace)
    }

    fn list_all(&self) -> Result<Option<Vec<(ContentHash, Codec)>>> {
        self.list_objects().map(Some)
    }

    fn describe(&self, hash: &ContentHash, codec: Codec) -> String {
        self.url(&self.key(hash, codec))
    }

    /// Copies the object to `<prefix>/<namespace>/quarantine/<hex>.<ext>` (`.1`, `.2`... if
    /// that name is taken), then deletes it from `blobs/`.
    fn quarantine(&self, hash: &ContentHash, codec: Codec) -> Result<Option<String>> {
        let key = self.key(hash, codec);
        if self.head(&key)?.is_none() {
            return Ok(None);
        }
        let name = format!("{}.{}", hash.to_hex(), codec.ext());
        let mut dest = ObjectPath::from(format!("{}/{name}", self.quarantine_root()));
        let mut n = 1;
        while self.head(&dest)?.is_some() {
            dest = ObjectPath::from(format!("{}/{name}.{n}", self.quarantine_root()));
            n += 1;
        }
        let (s, from, to) = (self.store.clone(), key.clone(), dest.clone());
        self.run(async move { s.copy(&from, &to).await })
            .map_err(|e| self.err("COPY to quarantine of", &key, e))?;
        self.delete(hash, codec)?;
        Ok(Some(self.url(&dest)))
    }
}

impl ObjectFiles {
    /// `<prefix>/<namespace>/quarantine`: beside `blobs/`, never listed or collected by GC.
    fn quarantine_root(&self) -> String {
        match self.root.strip_suffix("blobs") {
            Some(base) => format!("{base}quarantine"),
            None => format!("{}/quarantine", self.root),
        }
    }

    fn clone_handle(&self) -> ObjectFiles {
        ObjectFiles {
            store: self.store.clone(),
            rt: self.rt.clone(),
            root: self.root.clone(),
            bucket: self.bucket.clone(),
            multipart_threshold: self.multipart_threshold,
            grace: self.grace,
            spool: self.spool.clone(),
        }
    }
}

/// A whole object read front to back in ranged GETs of `READ_CHUNK` bytes (bounded memory).
struct ObjectReader {
    files: ObjectFiles,
    key: ObjectPath,
    len: u64,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.len {
                return Ok(0);
            }
            let end = (self.pos + READ_CHUNK).min(self.len);
            self.buf = self
                .files
                .get_range(&self.key, self.pos..end)
                .map_err(io::Error::other)?;
            if self.buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.pos += self.buf.len() as u64;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Random access to an object for partial reads: one ranged GET per `read_at`.
struct ObjectSource {
    files: ObjectFiles,
    key: ObjectPath,
    len: u64,
    read: u64,
}

impl BlobSource for ObjectSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let bytes = self
            .files
            .get_range(&self.key, offset..end)
            .map_err(io::Error::other)?;
        if bytes.len() != buf.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&bytes);
        self.read += bytes.len() as u64;
        Ok(())
    }
    fn bytes_read(&self) -> u64 {
        self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_http_needs_loopback() {
        let c = S3Config::from_url("s3://bkt/a/b/").unwrap();
        assert_eq!((c.bucket(), c.prefix()), ("bkt", "a/b"));
        assert_eq!(S3Config::from_url("s3://bkt").unwrap().prefix(), "");
        assert!(S3Config::from_url("http://bkt/x").is_err());
        assert!(S3Config::from_url("s3:///x").is_err());
        assert!(is_loopback_http("http://127.0.0.1:9000"));
        assert!(is_loopback_http("http://localhost:9000/"));
        assert!(is_loopback_http("http://[::1]:9000"));
        assert!(!is_loopback_http("http://10.0.0.1:9000"));
        assert!(!is_loopback_http("https://127.0.0.1:9000"));
        let shown = format!("{:?}", S3Config::new("b", "").credentials("AKID", "s3cr3t"));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("AKID"),
            "{shown}"
        );
        let c = S3Config::new("b", "").endpoint("http://example.com:9000");
        assert!(ObjectFiles::open(&c, "ns").is_err());
    }
}
