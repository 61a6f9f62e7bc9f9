//! `cairn artifact ...`: put (a file, stdin, or a folder in bulk), get, show, list, versions,
//! query, delete.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use cairn::{Artifact, ArtifactKind, ContentHash, NewArtifact, Page, Query, SessionId, Store};

use super::args::{self, remote_session_ref, session_ref};
use super::context::{CliResult, Ctx, Failure};
use super::output::{human_size, meta_text, relative_time, Cell, Colour, Table};
use super::progress::Progress;
use super::remote::{encode, Params, Remote};

/// Files larger than this go through the streaming single put instead of a batch.
const STREAM_ABOVE: u64 = 8 << 20;
/// Most files in one bulk batch (one atomic commit).
const BATCH_FILES: usize = 1000;
/// Most content bytes held in memory for one bulk batch.
const BATCH_BYTES: u64 = 64 << 20;

/// Artifact verbs. A SESSION argument is a session id, or `key:KEY`.
#[derive(Debug, Subcommand)]
pub enum ArtifactCmd {
    /// Store a file, stdin, or (with --recursive) every file under a folder.
    Put(PutArgs),
    /// Write an artifact's content, verified against its hash, to stdout or a file.
    Get(GetArgs),
    /// Print one part of an artifact, verified: bytes, lines, head, tail, grep, a JSON path.
    Read(super::read::ReadArgs),
    /// Print one artifact's metadata.
    Show(Which),
    /// List the artifacts of a session (with --recursive, of its whole subtree).
    List(ListArgs),
    /// List every stored version of a name in a session, oldest first.
    Versions {
        /// The session (id or key:KEY).
        session: String,
        /// The artifact name.
        name: String,
    },
    /// Find artifacts by session, kind, tags, name glob, size and time; all filters must hold.
    Query(QueryArgs),
    /// Delete an artifact (its content goes at the next `cairn gc` if nothing else uses it).
    Delete {
        /// The artifact id.
        id: String,
    },
}

/// `artifact put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The session to store into (id or key:KEY).
    pub session: String,
    /// A file, a folder (with --recursive), or `-` for stdin (the default).
    pub path: Option<PathBuf>,
    /// What it is: user_input, tool_result, agent_output, system_generated, checkpoint, or a
    /// custom lowercase identifier such as `trajectory`.
    #[arg(long)]
    pub kind: String,
    /// The artifact name (default: the file's name; required for stdin).
    #[arg(long, conflicts_with = "recursive")]
    pub name: Option<String>,
    /// A tag (repeat for several).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Metadata KEY=VALUE; VALUE is JSON if it parses as JSON, else text (repeat for several).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// MIME type, e.g. application/json.
    #[arg(long, value_name = "TYPE")]
    pub mime: Option<String>,
    /// PATH is a folder: store every regular file under it, named by its relative path.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// With --recursive: put this in front of every name (e.g. `run1/`).
    #[arg(long, requires = "recursive")]
    pub prefix: Option<String>,
}

/// Which artifact: its id, or `--session S --name N [--version V]`.
#[derive(Debug, Args)]
#[command(
    disable_version_flag = true,
    group(clap::ArgGroup::new("which").required(true).args(["id", "name"]))
)]
pub struct Which {
    /// The artifact id.
    pub id: Option<String>,
    /// Instead of an id: the session holding the artifact (id or key:KEY), with --name.
    #[arg(long, value_name = "SESSION", requires = "name", conflicts_with = "id")]
    pub session: Option<String>,
    /// Instead of an id: the artifact's name in --session (the latest version unless --version).
    #[arg(long, requires = "session", conflicts_with = "id")]
    pub name: Option<String>,
    /// With --name: this version instead of the latest.
    #[arg(long, value_name = "N", requires = "name")]
    pub version: Option<u32>,
}

impl Which {
    fn resolve(&self, store: &Store) -> CliResult<Artifact> {
        match (&self.id, &self.session, &self.name) {
            (Some(id), _, _) => Ok(store.admin().artifact(args::artifact_id(id)?)?),
            (None, Some(sess), Some(name)) => {
                let sid = session_ref(store, sess)?;
                Ok(store.artifact_by_name(sid, name, self.version)?)
            }
            _ => Err(Failure::usage(
                "give an artifact id, or --session SESSION --name NAME",
            )),
        }
    }

    fn resolve_remote(&self, r: &Remote) -> CliResult<Artifact> {
        match (&self.id, &self.session, &self.name) {
            (Some(id), _, _) => {
                let id = args::artifact_id(id)?;
                Ok(r.get(&format!("/v1/artifacts/{id}"), &Params::new())?)
            }
            (None, Some(sess), Some(name)) => {
                let sid = remote_session_ref(r, sess)?;
                Ok(r.get(
                    &format!("/v1/sessions/{sid}/artifacts/{}", encode(name)),
                    &Params::new().opt("version", self.version),
                )?)
            }
            _ => Err(Failure::usage(
                "give an artifact id, or --session SESSION --name NAME",
            )),
        }
    }

    /// Checks what can be checked without a store (a malformed id is invalid input).
    fn precheck(&self) -> CliResult {
        if let Some(id) = &self.id {
            args::artifact_id(id)?;
        }
        Ok(())
    }
}

/// `artifact get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Which artifact.
    #[command(flatten)]
    pub which: Which,
    /// Write to this file instead of stdout (replaced only once all content is verified).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `artifact list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The session (id or key:KEY).
    pub session: String,
    /// Include the artifacts of every descendant session.
    #[arg(long)]
    pub recursive: bool,
    /// At most N per page (default 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Continue from a previous page's next_cursor.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
}

/// `artifact query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Only this session's artifacts (id or key:KEY).
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
    /// With --session: include every descendant session.
    #[arg(long, requires = "session")]
    pub subtree: bool,
    /// Only this kind (repeat: any of several).
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Must carry this tag (repeat: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Must carry at least one of the tags given with --any-tag.
    #[arg(long = "any-tag", value_name = "TAG")]
    pub any_tags: Vec<String>,
    /// Name matches this glob (`*` also matches `/`; e.g. '*.json', 'logs/**', '{a,b}.txt').
    #[arg(long, value_name = "GLOB")]
    pub name: Option<String>,
    /// Size at least this (inclusive): 512, 10KiB, 1MB...
    #[arg(long, value_name = "SIZE")]
    pub min_size: Option<String>,
    /// Size at most this (inclusive).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Created at or after TIME: RFC 3339, a date, or an age such as 2h, 7d.
    #[arg(long, value_name = "TIME")]
    pub after: Option<String>,
    /// Created before TIME (exclusive).
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Only the latest version of each name in each session.
    #[arg(long)]
    pub latest: bool,
    /// At most N per page (default 1000, at most 100000).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Continue from a previous page's next_cursor.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Newest first.
    #[arg(long)]
    pub desc: bool,
}

/// Runs an artifact verb.
pub fn run(ctx: &Ctx, cmd: ArtifactCmd) -> CliResult {
    match cmd {
        ArtifactCmd::Put(a) => put(ctx, a),
        ArtifactCmd::Get(a) => get(ctx, a),
        ArtifactCmd::Read(a) => super::read::read(ctx, a),
        ArtifactCmd::Show(w) => show(ctx, &w),
        ArtifactCmd::List(a) => list(ctx, a),
        ArtifactCmd::Versions { session, name } => versions(ctx, &session, &name),
        ArtifactCmd::Query(a) => query(ctx, a),
        ArtifactCmd::Delete { id } => delete(ctx, &id),
    }
}

/// The options every put shares, validated before the store is opened.
struct Template {
    kind: ArtifactKind,
    tags: Vec<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
    mime: Option<String>,
}

impl Template {
    /// The query parameters of `PUT /v1/sessions/{id}/artifacts/{name}`.
    fn params(&self) -> CliResult<Params> {
        let mut q = Params::new().add("kind", &self.kind);
        for t in &self.tags {
            q = q.add("tag", t);
        }
        if !self.metadata.is_empty() {
            let m = serde_json::to_string(&self.metadata).map_err(|e| Failure {
                code: "other".into(),
                message: format!("cannot encode the metadata: {e}"),
                exit: 1,
            })?;
            q = q.add("metadata", m);
        }
        Ok(q.opt("mime_type", self.mime.as_deref()))
    }

    fn artifact(&self, name: String) -> NewArtifact {
        let mut n = NewArtifact::new(self.kind.clone(), name)
            .tags(self.tags.iter().cloned())
            .metadata(self.metadata.clone());
        if let Some(m) = &self.mime {
            n = n.mime_type(m.clone());
        }
        n
    }
}

fn put(ctx: &Ctx, a: PutArgs) -> CliResult {
    let t = Template {
        kind: args::kind(&a.kind)?,
        tags: a.tags,
        metadata: args::parse_meta(&a.meta, "--meta")?,
        mime: a.mime,
    };
    let stdin = a.path.as_deref().is_none_or(|p| p == Path::new("-"));
    if stdin {
        if a.recursive {
            return Err(Failure::usage(
                "--recursive needs a folder as PATH, not stdin",
            ));
        }
        let Some(name) = a.name else {
            return Err(Failure::invalid(
                "--name",
                "reading stdin, the artifact needs a name: add --name NAME",
            ));
        };
        if let Some(r) = ctx.remote() {
            let sid = remote_session_ref(r, &a.session)?;
            if io::stdin().is_terminal() && !ctx.json {
                super::context::note(
                    "reading the artifact's content from stdin; end it with Ctrl-D",
                );
            }
            let mut stdin = io::stdin().lock();
            let art: Artifact = r.upload(
                "PUT",
                &format!("/v1/sessions/{sid}/artifacts/{}", encode(&name)),
                &t.params()?,
                &mut stdin,
                None,
                None,
            )?;
            return print_artifact(ctx, &art);
        }
        let store = ctx.store()?;
        let sid = session_ref(store, &a.session)?;
        if io::stdin().is_terminal() && !ctx.json {
            super::context::note("reading the artifact's content from stdin; end it with Ctrl-D");
        }
        let art = store.put_reader(sid, t.artifact(name), io::stdin().lock())?;
        return print_artifact(ctx, &art);
    }
    let path = a.path.unwrap_or_default();
    let md = fs::metadata(&path).map_err(|e| Failure::input(&path, e))?;
    if md.is_dir() {
        if !a.recursive {
            return Err(Failure::invalid(
                "PATH",
                format!(
                    "{} is a folder; add --recursive to store every file under it",
                    path.display()
                ),
            ));
        }
        return put_dir(
            ctx,
            &a.session,
            &path,
            &t,
            a.prefix.as_deref().unwrap_or(""),
        );
    }
    if a.recursive {
        return Err(Failure::invalid(
            "PATH",
            format!(
                "{} is not a folder; drop --recursive to store one file",
                path.display()
            ),
        ));
    }
    let name = match a.name {
        Some(n) => n,
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                Failure::invalid(
                    "PATH",
                    format!(
                        "{} has no UTF-8 file name; give --name NAME",
                        path.display()
                    ),
                )
            })?,
    };
    if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, &a.session)?;
        let mut f = fs::File::open(&path).map_err(|e| Failure::input(&path, e))?;
        let art = upload_file(r, sid, &name, &t.params()?, &mut f, md.len(), None)?;
        return print_artifact(ctx, &art);
    }
    let store = ctx.store()?;
    let sid = session_ref(store, &a.session)?;
    let art = store.put_file(sid, t.artifact(name), &path)?;
    print_artifact(ctx, &art)
}

/// Streams one file to `PUT /v1/sessions/{sid}/artifacts/{name}` (with `hash`, checked by the
/// server).
fn upload_file(
    r: &Remote,
    sid: SessionId,
    name: &str,
    q: &Params,
    f: &mut fs::File,
    len: u64,
    hash: Option<&ContentHash>,
) -> CliResult<Artifact> {
    Ok(r.upload(
        "PUT",
        &format!("/v1/sessions/{sid}/artifacts/{}", encode(name)),
        q,
        f,
        Some(len),
        hash,
    )?)
}

/// One file found under the folder of a bulk put.
struct Found {
    name: String,
    path: PathBuf,
    size: u64,
}

/// Every regular file under `dir` (symbolic links are not followed), sorted by name.
fn walk(dir: &Path, prefix: &str, skip: Option<&Path>) -> CliResult<Vec<Found>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = fs::read_dir(&d).map_err(|e| Failure::io(&d, e))?;
        for e in rd {
            let e = e.map_err(|e| Failure::io(&d, e))?;
            let p = e.path();
            let ft = e.file_type().map_err(|e| Failure::io(&p, e))?;
            if ft.is_dir() {
                // Never ingest the live store itself (`cairn artifact put S . -r` beside .cairn).
                let is_store = skip.is_some_and(|s| fs::canonicalize(&p).is_ok_and(|c| c == s));
                if !is_store {
                    stack.push(p);
                }
            } else if ft.is_file() {
                let rel = p.strip_prefix(dir).unwrap_or(&p);
                let mut parts = Vec::new();
                for c in rel.components() {
                    let s = c.as_os_str().to_str().ok_or_else(|| {
                        Failure::invalid(
                            "file name",
                            format!(
                                "{} is not UTF-8; artifact names are text (rename the file or store it alone with --name)",
                                p.display()
                            ),
                        )
                    })?;
                    parts.push(s);
                }
                let size = e.metadata().map_err(|e| Failure::io(&p, e))?.len();
                out.push(Found {
                    name: format!("{prefix}{}", parts.join("/")),
                    path: p,
                    size,
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn put_dir(ctx: &Ctx, session: &str, dir: &Path, t: &Template, prefix: &str) -> CliResult {
    let store_dir = if ctx.remote().is_some() {
        None
    } else {
        fs::canonicalize(&ctx.store_path).ok()
    };
    let files = walk(dir, prefix, store_dir.as_deref())?;
    for f in &files {
        cairn::validate_name(&f.name)?;
    }
    if let Some(r) = ctx.remote() {
        return remote_put_dir(ctx, r, session, &files, t);
    }
    let store = ctx.store()?;
    let sid = session_ref(store, session)?;
    let s = store.session(sid)?;
    if s.status.is_terminal() {
        return Err(cairn::Error::SessionClosed {
            id: sid,
            status: s.status,
            message: "a finished session takes no new artifacts".into(),
        }
        .into());
    }
    let before = store.stats()?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let mut progress = Progress::new("storing", files.len() as u64, ctx.progress_enabled());
    let stored = bulk_put(store, sid, &files, t, &mut progress).map_err(|(f, n)| {
        if n == 0 {
            f
        } else {
            Failure {
                message: format!(
                    "{} ({n} of {} files were stored before this error, in earlier batches)",
                    f.message,
                    files.len()
                ),
                ..f
            }
        }
    })?;
    progress.finish();
    let after = store.stats()?;
    let grew = format!(
        "the store grew by {} (dedup and compression)",
        human_size(after.stored_bytes.saturating_sub(before.stored_bytes))
    );
    print_bulk(ctx, &stored, total_bytes, sid, &grew)
}

fn print_bulk(
    ctx: &Ctx,
    stored: &[Artifact],
    total_bytes: u64,
    sid: SessionId,
    grew: &str,
) -> CliResult {
    ctx.emit(&stored, |w, style| {
        if !stored.is_empty() && stored.len() <= 50 {
            artifact_table(stored).write(w, style)?;
        }
        writeln!(
            w,
            "stored {} file(s), {}, into session {sid}; {grew}",
            stored.len(),
            human_size(total_bytes),
        )
    })
}

/// Most hashes one `POST /v1/blobs/missing` asks about (the server's limit).
const PROBE_BATCH: usize = 10_000;

/// The BLAKE3 hash of a file, streamed.
fn hash_file(path: &Path) -> CliResult<ContentHash> {
    let mut f = fs::File::open(path).map_err(|e| Failure::input(path, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::io(path, e)),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// `artifact put --recursive` against a server, content first: every file is hashed here, one
/// `POST /v1/blobs/missing` per 10,000 files asks which contents the tenant lacks, and only
/// those are uploaded; the others are stored by hash with an empty body. Every upload
/// declares its hash, so the server refuses a file that changed after it was hashed.
fn remote_put_dir(
    ctx: &Ctx,
    r: &Remote,
    session: &str,
    files: &[Found],
    t: &Template,
) -> CliResult {
    #[derive(serde::Deserialize)]
    struct Missing {
        missing: Vec<ContentHash>,
    }
    let sid = remote_session_ref(r, session)?;
    let s: cairn::Session = r.get(&format!("/v1/sessions/{sid}"), &Params::new())?;
    if s.status.is_terminal() {
        return Err(cairn::Error::SessionClosed {
            id: sid,
            status: s.status,
            message: "a finished session takes no new artifacts".into(),
        }
        .into());
    }
    // Store-wide counts need an admin token; without one the summary says what was sent.
    let before: Option<cairn::Stats> = r.get("/v1/admin/stats", &Params::new()).ok();
    let q = t.params()?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let mut progress = Progress::new("storing", files.len() as u64, ctx.progress_enabled());
    let mut stored: Vec<Artifact> = Vec::with_capacity(files.len());
    let mut sent = 0u64;
    for chunk in files.chunks(PROBE_BATCH) {
        let hashes = chunk
            .iter()
            .map(|f| hash_file(&f.path))
            .collect::<CliResult<Vec<_>>>()?;
        let missing: Missing = r.send(
            "POST",
            "/v1/blobs/missing",
            &Params::new(),
            &serde_json::json!({ "hashes": hashes }),
        )?;
        let mut missing: std::collections::HashSet<ContentHash> =
            missing.missing.into_iter().collect();
        for (f, h) in chunk.iter().zip(&hashes) {
            let done = stored.len();
            let with_count = |e: Failure| {
                if done == 0 {
                    e
                } else {
                    Failure {
                        message: format!(
                            "{} ({done} of {} files were stored before this error)",
                            e.message,
                            files.len()
                        ),
                        ..e
                    }
                }
            };
            let a = if missing.remove(h) {
                // First of its content in this upload: send the bytes.
                let mut file = fs::File::open(&f.path).map_err(|e| Failure::input(&f.path, e))?;
                sent += f.size;
                upload_file(r, sid, &f.name, &q, &mut file, f.size, Some(h)).map_err(with_count)?
            } else {
                let mut empty: &[u8] = &[];
                r.upload(
                    "PUT",
                    &format!("/v1/sessions/{sid}/artifacts/{}", encode(&f.name)),
                    &q,
                    &mut empty,
                    Some(0),
                    Some(h),
                )
                .map_err(|e| with_count(e.into()))?
            };
            progress.advance(1, f.size);
            stored.push(a);
        }
    }
    progress.finish();
    let after: Option<cairn::Stats> = r.get("/v1/admin/stats", &Params::new()).ok();
    let grew = match (before, after) {
        (Some(b), Some(a)) => format!(
            "the store grew by {} (dedup and compression)",
            human_size(a.stored_bytes.saturating_sub(b.stored_bytes))
        ),
        _ => format!(
            "sent {} (content the server already held was not sent again)",
            human_size(sent)
        ),
    };
    print_bulk(ctx, &stored, total_bytes, sid, &grew)
}

/// Stores `files` in batches; on error, the failure and how many files were already stored.
fn bulk_put(
    store: &Store,
    sid: SessionId,
    files: &[Found],
    t: &Template,
    progress: &mut Progress,
) -> Result<Vec<Artifact>, (Failure, usize)> {
    let mut out: Vec<Artifact> = Vec::with_capacity(files.len());
    let mut batch: Vec<(SessionId, NewArtifact, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0u64;
    let flush = |batch: &mut Vec<(SessionId, NewArtifact, Vec<u8>)>,
                 batch_bytes: &mut u64,
                 out: &mut Vec<Artifact>,
                 progress: &mut Progress|
     -> Result<(), (Failure, usize)> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        let stored = store
            .put_batch(std::mem::take(batch))
            .map_err(|e| (Failure::from(e), out.len()))?;
        out.extend(stored);
        progress.advance(n, *batch_bytes);
        *batch_bytes = 0;
        Ok(())
    };
    for f in files {
        if f.size > STREAM_ABOVE {
            // Keep the output in name order: what is batched so far goes first.
            flush(&mut batch, &mut batch_bytes, &mut out, progress)?;
            let a = store
                .put_file(sid, t.artifact(f.name.clone()), &f.path)
                .map_err(|e| (Failure::from(e), out.len()))?;
            progress.advance(1, a.size);
            out.push(a);
            continue;
        }
        let bytes = fs::read(&f.path).map_err(|e| (Failure::io(&f.path, e), out.len()))?;
        batch_bytes += bytes.len() as u64;
        batch.push((sid, t.artifact(f.name.clone()), bytes));
        if batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
            flush(&mut batch, &mut batch_bytes, &mut out, progress)?;
        }
    }
    flush(&mut batch, &mut batch_bytes, &mut out, progress)?;
    Ok(out)
}

fn get(ctx: &Ctx, a: GetArgs) -> CliResult {
    a.which.precheck()?;
    let (art, mut reader): (Artifact, Box<dyn Read>) = if let Some(r) = ctx.remote() {
        let art = a.which.resolve_remote(r)?;
        let body = r.download(&format!("/v1/artifacts/{}/content", art.id), &Params::new())?;
        let verified = Verified::new(body, art.hash, art.size);
        (art, Box::new(verified) as Box<dyn Read>)
    } else {
        let store = ctx.reading_store()?;
        let art = a.which.resolve(store)?;
        let reader = store.admin().open_reader(art.id)?;
        (art, reader as Box<dyn Read>)
    };
    let to_stdout = a.output.as_deref().is_none_or(|p| p == Path::new("-"));
    if to_stdout {
        let stdout = io::stdout();
        let mut w = io::BufWriter::with_capacity(256 << 10, stdout.lock());
        copy_verified(&mut reader, &mut w, &art, Failure::stdout)?;
        return w.flush().map_err(Failure::stdout);
    }
    let dest = a.output.unwrap_or_default();
    // Renamed into place only once every byte is verified, so a failed read never leaves a
    // partial or corrupt file under the requested name.
    super::atomic::write_file(&dest, |w, tmp| {
        copy_verified(&mut reader, w, &art, |e| Failure::io(tmp, e))
    })?;
    ctx.emit(&art, |w, _| {
        writeln!(
            w,
            "wrote {} ({}, verified) to {}",
            art.name,
            human_size(art.size),
            dest.display()
        )
    })
}

/// A reader over downloaded content (used by `checkpoint state` too) that hashes what passes through and fails at the end
/// (before reporting end of input) when the size or the BLAKE3 hash differs from the
/// artifact's: a download is verified like a local read.
pub struct Verified<R> {
    inner: R,
    hasher: blake3::Hasher,
    expect: ContentHash,
    size: u64,
    seen: u64,
}

impl<R: Read> Verified<R> {
    /// Wraps `inner`, which must yield `size` bytes hashing to `expect`.
    pub fn new(inner: R, expect: ContentHash, size: u64) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            expect,
            size,
            seen: 0,
        }
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            let got: ContentHash = self.hasher.finalize().into();
            if self.seen != self.size || got != self.expect {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the download does not match the artifact ({} bytes, hash {}; expected {} bytes, hash {})",
                        self.seen, got, self.size, self.expect
                    ),
                ));
            }
            return Ok(0);
        }
        self.seen += n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Copies verified content; read errors are integrity failures, write errors go through `werr`.
fn copy_verified(
    r: &mut dyn Read,
    w: &mut dyn Write,
    art: &Artifact,
    werr: impl Fn(io::Error) -> Failure,
) -> CliResult {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure {
                    code: "integrity".into(),
                    message: format!(
                        "reading artifact {} (content {}): {e}; run `cairn verify`",
                        art.id, art.hash
                    ),
                    exit: 1,
                })
            }
        };
        w.write_all(&buf[..n]).map_err(&werr)?;
    }
}

fn show(ctx: &Ctx, which: &Which) -> CliResult {
    which.precheck()?;
    let a = match ctx.remote() {
        Some(r) => which.resolve_remote(r)?,
        None => which.resolve(ctx.reading_store()?)?,
    };
    print_artifact(ctx, &a)
}

fn list(ctx: &Ctx, a: ListArgs) -> CliResult {
    if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, &a.session)?;
        let q = Params::new()
            .flag("recursive", a.recursive)
            .add("limit", a.limit.unwrap_or(cairn::DEFAULT_LIMIT))
            .opt("cursor", a.cursor.as_deref());
        let page: Page<Artifact> = r.get(&format!("/v1/sessions/{sid}/artifacts"), &q)?;
        return print_page(ctx, &page);
    }
    let store = ctx.reading_store()?;
    let sid = session_ref(store, &a.session)?;
    let page = store.list_artifacts(
        sid,
        a.recursive,
        a.limit.unwrap_or(cairn::DEFAULT_LIMIT),
        a.cursor.as_deref(),
    )?;
    print_page(ctx, &page)
}

fn versions(ctx: &Ctx, session: &str, name: &str) -> CliResult {
    let (sid, v): (SessionId, Vec<Artifact>) = if let Some(r) = ctx.remote() {
        let sid = remote_session_ref(r, session)?;
        let path = format!("/v1/sessions/{sid}/artifacts/{}/versions", encode(name));
        (sid, r.get(&path, &Params::new())?)
    } else {
        let store = ctx.reading_store()?;
        let sid = session_ref(store, session)?;
        (sid, store.versions(sid, name)?)
    };
    if v.is_empty() {
        return Err(cairn::Error::ArtifactNotFound {
            id: format!("{sid}/{name}"),
        }
        .into());
    }
    ctx.emit(&v, |w, style| artifact_table(&v).write(w, style))
}

fn query(ctx: &Ctx, a: QueryArgs) -> CliResult {
    if let Some(r) = ctx.remote() {
        return remote_query(ctx, r, a);
    }
    let mut q = Query::new();
    for k in &a.kinds {
        q = q.kind(args::kind(k)?);
    }
    for t in a.tags {
        q = q.tag(t);
    }
    for t in a.any_tags {
        q = q.any_tag(t);
    }
    if let Some(g) = a.name {
        q = q.name_glob(g);
    }
    if let Some(s) = &a.min_size {
        q = q.min_size(args::parse_size(s, "--min-size")?);
    }
    if let Some(s) = &a.max_size {
        q = q.max_size(args::parse_size(s, "--max-size")?);
    }
    if let Some(t) = &a.after {
        q = q.created_from(args::parse_time(t, "--after")?);
    }
    if let Some(t) = &a.before {
        q = q.created_to(args::parse_time(t, "--before")?);
    }
    if let Some(n) = a.limit {
        q = q.limit(n);
    }
    if let Some(c) = a.cursor {
        q = q.cursor(c);
    }
    q = q.latest_only(a.latest).descending(a.desc);
    let store = ctx.reading_store()?;
    if let Some(s) = &a.session {
        q = q.session(session_ref(store, s)?).subtree(a.subtree);
    }
    let page = store.query(&q)?;
    print_page(ctx, &page)
}

/// `artifact query` against a server: the same checks here, the same filters as parameters.
fn remote_query(ctx: &Ctx, r: &Remote, a: QueryArgs) -> CliResult {
    let mut q = Params::new();
    for k in &a.kinds {
        q = q.add("kind", args::kind(k)?);
    }
    for t in &a.tags {
        q = q.add("tag", t);
    }
    for t in &a.any_tags {
        q = q.add("any_tag", t);
    }
    q = q.opt("name", a.name.as_deref());
    if let Some(s) = &a.min_size {
        q = q.add("min_size", args::parse_size(s, "--min-size")?);
    }
    if let Some(s) = &a.max_size {
        q = q.add("max_size", args::parse_size(s, "--max-size")?);
    }
    if let Some(t) = &a.after {
        q = q.add("after", args::parse_time(t, "--after")?.to_rfc3339());
    }
    if let Some(t) = &a.before {
        q = q.add("before", args::parse_time(t, "--before")?.to_rfc3339());
    }
    q = q
        .add("limit", a.limit.unwrap_or(cairn::DEFAULT_LIMIT))
        .opt("cursor", a.cursor.as_deref())
        .flag("latest", a.latest)
        .flag("desc", a.desc);
    if let Some(s) = &a.session {
        q = q
            .add("session", remote_session_ref(r, s)?)
            .flag("subtree", a.subtree);
    }
    let page: Page<Artifact> = r.get("/v1/artifacts", &q)?;
    print_page(ctx, &page)
}

fn delete(ctx: &Ctx, id: &str) -> CliResult {
    let id = args::artifact_id(id)?;
    let a: Artifact = match ctx.remote() {
        Some(r) => r.delete(&format!("/v1/artifacts/{id}"), &Params::new())?,
        None => ctx.existing_store()?.admin().delete(id)?,
    };
    ctx.emit(&a, |w, _| {
        writeln!(
            w,
            "deleted artifact {} ({} v{}); its content is reclaimed by `cairn gc` once nothing else uses it",
            a.id, a.name, a.version
        )
    })
}

/// Prints a page of artifacts: `{"items": [...], "next_cursor": ...}` or a table.
fn print_page(ctx: &Ctx, page: &Page<Artifact>) -> CliResult {
    ctx.emit(page, |w, style| {
        if page.items.is_empty() {
            return writeln!(w, "no artifacts");
        }
        artifact_table(&page.items).write(w, style)?;
        if let Some(c) = &page.next_cursor {
            writeln!(w, "more artifacts: add --cursor {c}")?;
        }
        Ok(())
    })
}

/// A table of artifacts for people.
pub fn artifact_table(items: &[Artifact]) -> Table {
    let mut t = Table::new(&["ID", "KIND", "NAME", ">VER", ">SIZE", ">STORED", "CREATED"]);
    for a in items {
        t.row(vec![
            a.id.to_string().into(),
            Cell::painted(a.kind.as_str(), Colour::Cyan),
            a.name.clone().into(),
            a.version.to_string().into(),
            human_size(a.size).into(),
            human_size(a.stored_size).into(),
            relative_time(a.created_at).into(),
        ]);
    }
    t
}

/// Prints one artifact: JSON, or a block of fields for people.
pub fn print_artifact(ctx: &Ctx, a: &Artifact) -> CliResult {
    ctx.emit(a, |w, style| {
        let rows: Vec<(&str, String)> = vec![
            ("id", style.paint(Colour::Cyan, &a.id.to_string())),
            ("session", a.session_id.to_string()),
            ("name", a.name.clone()),
            ("version", a.version.to_string()),
            ("kind", a.kind.to_string()),
            ("hash", a.hash.to_string()),
            ("size", format!("{} ({} bytes)", human_size(a.size), a.size)),
            (
                "stored",
                format!(
                    "{}{}",
                    human_size(a.stored_size),
                    if a.compressed { " (zstd)" } else { "" }
                ),
            ),
            (
                "tags",
                if a.tags.is_empty() {
                    "-".into()
                } else {
                    a.tags.join(", ")
                },
            ),
            ("metadata", meta_text(&a.metadata)),
            ("mime", a.mime_type.clone().unwrap_or_else(|| "-".into())),
            (
                "created",
                format!(
                    "{} ({})",
                    a.created_at.to_rfc3339(),
                    relative_time(a.created_at)
                ),
            ),
        ];
        for (k, v) in rows {
            writeln!(w, "{} {v}", style.paint(Colour::Bold, &format!("{k:<9}")))?;
        }
        Ok(())
    })
}
