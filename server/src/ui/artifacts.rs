//! An artifact's page (`/ui/sessions/{id}/artifacts/{aid}`), its bytes (`.../raw`, a download,
//! or an image under a sandboxing policy) and the diff of two versions of a name
//! (`/ui/sessions/{id}/diff`).
//!
//! Content is read only by parts ([`cairn::Store::read_part_with`]): a page of lines, of JSON
//! lines or of bytes, each bounded in bytes; "Load more" asks for the next part. A 1 GiB
//! artifact costs the same page as a 1 KiB one.

use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn::{
    Artifact, ArtifactId, Data, Part, PartContent, PartLimits, PartResult, SessionId, Store,
};
use maud::{html, Markup};

use super::highlight::{self, Lang};
use super::layout::{self, qs, session_href};
use super::{blocking, query_value, Html, Ui, UiError, UiResult, RAW_CSP};

/// Lines per page of the text view.
pub const TEXT_LINES: u64 = 1000;
/// Bytes per page of the text view (a page holds at least one line).
pub const TEXT_BYTES: u64 = 64 << 10;
/// Longest line shown whole; longer ones are cut (the download has them).
pub const LINE_BYTES: usize = 8 << 10;
/// JSON lines per page.
pub const JSONL_LINES: u64 = 100;
/// Bytes per page of the byte (hex) view.
pub const HEX_BYTES: u64 = 4096;
/// Largest JSON document shown as a tree (larger ones are shown as text).
pub const JSON_TREE_BYTES: u64 = 8 << 20;
/// Most bytes of each version a diff compares.
pub const DIFF_BYTES: u64 = 1 << 20;
/// Most time spent finding a diff before a coarser (still correct) one is shown.
pub const DIFF_DEADLINE: Duration = Duration::from_secs(2);
/// Versions listed on an artifact page.
pub const VERSIONS_SHOWN: usize = 200;

const IMAGE_TYPES: [&str; 6] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
];

/// How an artifact's content is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Lines, highlighted.
    Text,
    /// A foldable JSON tree.
    Json,
    /// JSON lines, each a foldable tree.
    JsonLines,
    /// A hex dump.
    Bytes,
    /// An `<img>`.
    Image,
}

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Text => "text",
            View::Json => "json",
            View::JsonLines => "jsonl",
            View::Bytes => "bytes",
            View::Image => "image",
        }
    }

    fn parse(s: &str) -> Option<View> {
        Some(match s {
            "text" => View::Text,
            "json" => View::Json,
            "jsonl" => View::JsonLines,
            "bytes" => View::Bytes,
            "image" => View::Image,
            _ => return None,
        })
    }
}

/// The image type of content from its first bytes, if it is a raster image browsers show.
pub fn sniff_image(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn head_bytes(store: &Store, a: &Artifact) -> UiResult<Vec<u8>> {
    let r = store.read_part(
        a.session_id,
        a.id,
        &Part::Bytes {
            offset: 0,
            len: 512,
        },
    )?;
    match r.content {
        PartContent::Bytes { data, .. } => Ok(data.bytes().unwrap_or_default()),
        _ => Ok(Vec::new()),
    }
}

/// The image type to serve an artifact as, if it is a raster image.
fn image_type(a: &Artifact, head: &[u8]) -> Option<&'static str> {
    let declared = a.mime_type.as_deref().unwrap_or("");
    IMAGE_TYPES
        .iter()
        .find(|t| **t == declared)
        .copied()
        .or_else(|| sniff_image(head))
}

/// The view chosen when none is asked for.
pub fn auto_view(a: &Artifact, head: &[u8]) -> View {
    if image_type(a, head).is_some() {
        return View::Image;
    }
    let lower = a.name.to_ascii_lowercase();
    let mime = a.mime_type.as_deref().unwrap_or("");
    let text = std::str::from_utf8(head).is_ok()
        || std::str::from_utf8(&head[..head.len().saturating_sub(3)]).is_ok();
    if !text && !head.is_empty() {
        return View::Bytes;
    }
    if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") || mime.contains("ndjson") {
        View::JsonLines
    } else if (lower.ends_with(".json") || mime == "application/json") && a.size <= JSON_TREE_BYTES
    {
        View::Json
    } else {
        View::Text
    }
}

fn limits(max_bytes: u64) -> PartLimits {
    PartLimits {
        max_bytes,
        max_line_bytes: LINE_BYTES,
    }
}

fn parse_id<T: std::str::FromStr>(what: &str, v: &str) -> UiResult<T>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| UiError::invalid(what, e))
}

fn more_link(href: String, label: String) -> Markup {
    html! {
        p.more data-more {
            a.load-more href=(href) { (label) }
        }
    }
}

fn text_view(store: &Store, a: &Artifact, base: &str, line: u64) -> UiResult<Markup> {
    let r = store.read_part_with(
        a.session_id,
        a.id,
        &Part::Lines {
            start: line,
            count: TEXT_LINES,
        },
        &limits(TEXT_BYTES),
    )?;
    let lang = Lang::detect(&a.name, a.mime_type.as_deref());
    let PartContent::Lines { lines } = &r.content else {
        return Err(UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store answered a line read with something else",
        ));
    };
    let last = lines.last().map_or(line, |l| l.number);
    Ok(html! {
        p.hint #range { "Lines " (line) "–" (last) " of " (r.total_lines) " (" (layout::size(r.size)) ")" }
        div.code-wrap {
            table.code {
                tbody data-chunk {
                    @for l in lines {
                        tr #(format!("L{}", l.number)) {
                            th.ln scope="row" { (l.number) }
                            td { code { (highlight::line(lang, &l.text)) }
                                @if l.truncated { span.cut { " … line cut at " (layout::size(LINE_BYTES as u64)) "; download for all of it" } } }
                        }
                    }
                }
            }
        }
        @if let Some(n) = r.next_line {
            (more_link(format!("{base}{}", qs(&[("view", "text".into()), ("line", n.to_string())])),
                format!("Load more (from line {n} of {})", r.total_lines)))
        }
    })
}

fn jsonl_view(store: &Store, a: &Artifact, base: &str, line: u64) -> UiResult<Markup> {
    let r = store.read_part_with(
        a.session_id,
        a.id,
        &Part::JsonLines {
            path: String::new(),
            start: line,
            count: JSONL_LINES,
        },
        &limits(1 << 20),
    )?;
    let PartContent::JsonLines { items } = &r.content else {
        return Err(UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store answered a JSON-lines read with something else",
        ));
    };
    Ok(html! {
        p.hint #range { (r.total_lines) " lines (" (layout::size(r.size)) "); each is folded below." }
        ol.jsonl data-chunk {
            @for it in items {
                li value=(it.line) {
                    @if let Some(v) = &it.value { (super::json::tree(v, 1)) }
                    @else { span.error { "line " (it.line) ": " (it.error.as_deref().unwrap_or("no value")) } }
                }
            }
        }
        @if let Some(n) = r.next_line {
            (more_link(format!("{base}{}", qs(&[("view", "jsonl".into()), ("line", n.to_string())])),
                format!("Load more (from line {n} of {})", r.total_lines)))
        }
    })
}

fn json_view(store: &Store, a: &Artifact, base: &str) -> UiResult<Markup> {
    let r = store.read_part_with(
        a.session_id,
        a.id,
        &Part::Json {
            path: String::new(),
        },
        &limits(JSON_TREE_BYTES),
    );
    let text_link = format!("{base}?view=text");
    Ok(match r {
        Ok(PartResult {
            content: PartContent::Json { value: Some(v), .. },
            ..
        }) => html! { (super::json::tree(&v, 0)) },
        Ok(_) => {
            html! { p.error { "The document is too large to show as a tree. " a href=(text_link) { "Show it as text" } } }
        }
        Err(e) => {
            html! { p.error { "Not shown as JSON: " (e.to_string()) ". " a href=(text_link) { "Show it as text" } } }
        }
    })
}

/// A hex dump line: offset, 16 bytes in hex, their printable characters.
pub fn hex_line(offset: u64, bytes: &[u8]) -> (String, String, String) {
    let hex = bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    let text = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    (format!("{offset:08x}"), hex, text)
}

fn bytes_view(store: &Store, a: &Artifact, base: &str, offset: u64) -> UiResult<Markup> {
    let r = store.read_part(
        a.session_id,
        a.id,
        &Part::Bytes {
            offset,
            len: HEX_BYTES,
        },
    )?;
    let PartContent::Bytes { data, .. } = &r.content else {
        return Err(UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store answered a byte read with something else",
        ));
    };
    let bytes = Data::bytes(data)?;
    Ok(html! {
        p.hint #range { "Bytes " (offset) "–" (offset + bytes.len() as u64) " of " (r.size) }
        div.code-wrap {
            table.code.hex {
                tbody data-chunk {
                    @for (i, chunk) in bytes.chunks(16).enumerate() {
                        @let (o, h, t) = hex_line(offset + 16 * i as u64, chunk);
                        tr { th.ln scope="row" { (o) } td { code { (h) } } td { code { (t) } } }
                    }
                }
            }
        }
        @if let Some(n) = r.next_offset {
            (more_link(format!("{base}{}", qs(&[("view", "bytes".into()), ("offset", n.to_string())])),
                format!("Load more (from byte {n} of {})", r.size)))
        }
    })
}

/// `GET /ui/sessions/{id}/artifacts/{aid}`.
pub async fn artifact_page(
    ui: Ui,
    Path((sid, aid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> UiResult {
    let sid: SessionId = parse_id("session id", &sid)?;
    let aid: ArtifactId = parse_id("artifact id", &aid)?;
    let get = |n: &str| query_value(q.as_deref(), n).filter(|v| !v.is_empty());
    let view = match get("view") {
        Some(v) => Some(View::parse(&v).ok_or_else(|| {
            UiError::invalid(
                "view",
                format!("{v:?}: use text, json, jsonl, bytes or image"),
            )
        })?),
        None => None,
    };
    let line: u64 = get("line").map_or(Ok(1), |v| parse_id("line", &v))?.max(1);
    let offset: u64 = get("offset").map_or(Ok(0), |v| parse_id("offset", &v))?;
    let chrome = ui.chrome();
    let store = ui.store;
    blocking(move || {
        let a = store.artifact(sid, aid)?;
        let session = store.session(sid)?;
        let head = head_bytes(&store, &a)?;
        let auto = auto_view(&a, &head);
        let view = view.unwrap_or(auto);
        let base = layout::artifact_href(&a);
        let info = store.content_info(&a.hash)?;
        let mut versions = store.versions(sid, &a.name)?;
        let all_versions = versions.len();
        if versions.len() > VERSIONS_SHOWN {
            versions.drain(..versions.len() - VERSIONS_SHOWN);
        }
        let content = match view {
            View::Text => text_view(&store, &a, &base, line)?,
            View::JsonLines => jsonl_view(&store, &a, &base, line)?,
            View::Json => json_view(&store, &a, &base)?,
            View::Bytes => bytes_view(&store, &a, &base, offset)?,
            View::Image => html! {
                img.artifact-image src=(format!("{base}/raw?inline=1")) alt=(format!("{} (version {})", a.name, a.version));
            },
        };
        let mut views = vec![View::Text, View::Bytes];
        if auto == View::Json || auto == View::JsonLines {
            views.insert(0, auto);
        }
        if auto == View::Image {
            views.insert(0, View::Image);
        }
        let title = format!("{} v{}", a.name, a.version);
        let prev = versions.iter().rev().find(|v| v.version < a.version).map(|v| v.version);
        let body = html! {
            nav.crumbs aria-label="Session" {
                a href="/ui" { "Sessions" } " › "
                a href=(session_href(&sid)) { (layout::session_name(&session)) } " › "
                a href=(format!("{}#artifacts", session_href(&sid))) { "Artifacts" }
            }
            h1 { (a.name) " " span.muted { "v" (a.version) } }
            div.actions {
                a.button href=(format!("{base}/raw")) download { "Download (" (layout::size(a.size)) ")" }
                @if let Some(p) = prev {
                    a.button href=(format!("/ui/sessions/{sid}/diff{}", qs(&[("name", a.name.clone()), ("from", p.to_string()), ("to", a.version.to_string())]))) { "Diff with v" (p) }
                }
            }
            dl.facts {
                dt { "Kind" } dd { (a.kind.as_str()) }
                dt { "Size" } dd { (layout::size(a.size)) " (" (a.size) " bytes)" }
                dt { "Stored" } dd { (layout::size(a.stored_size)) @if a.compressed { ", zstd-compressed" } }
                dt { "Hash" } dd { code.hash { (a.hash) } }
                dt { "Dedup" } dd #dedup {
                    @match &info {
                        Some(i) if i.refs > 1 => { "Shared by " strong { (i.refs) } " artifacts and checkpoints: stored once." }
                        Some(_) => { "Only this artifact holds this content." }
                        None => { "The content is not stored (deleted?)." }
                    }
                }
                @if let Some(m) = &a.mime_type { dt { "Type" } dd { (m) } }
                dt { "Created" } dd { (layout::time(a.created_at)) }
                dt { "Tags" } dd { (layout::tags(&a.tags)) @if a.tags.is_empty() { "none" } }
                @if a.pinned { dt { "Pinned" } dd { "yes" } }
            }
            @if !a.metadata.is_empty() {
                details { summary { "Metadata" } (super::json::tree(&serde_json::Value::Object(a.metadata.clone()), 0)) }
            }
            section aria-labelledby="h-versions" {
                h2 #h-versions { "Versions" }
                @if all_versions > versions.len() { p.hint { "The latest " (versions.len()) " of " (all_versions) "." } }
                ol.versions {
                    @for v in &versions {
                        li value=(v.version) {
                            @if v.id == a.id { strong { "v" (v.version) } } @else { a href=(layout::artifact_href(v)) { "v" (v.version) } }
                            " · " (layout::size(v.size)) " · " (layout::time(v.created_at))
                        }
                    }
                }
                @if versions.len() > 1 {
                    (diff_form(sid, &a.name, &versions, prev.unwrap_or(1), a.version))
                }
            }
            section aria-labelledby="h-content" {
                h2 #h-content { "Content" }
                nav.views aria-label="Views" {
                    @for v in &views {
                        @if *v == view { span.current aria-current="page" { (v.name()) } }
                        @else { a href=(format!("{base}?view={}", v.name())) { (v.name()) } }
                    }
                }
                div #content { (content) }
            }
        };
        Ok(Html(layout::page(&title, Some(&chrome), body)))
    })
    .await
}

fn diff_form(sid: SessionId, name: &str, versions: &[Artifact], from: u32, to: u32) -> Markup {
    html! {
        form.diff-form method="get" action=(format!("/ui/sessions/{sid}/diff")) {
            input type="hidden" name="name" value=(name);
            label { "From " select name="from" {
                @for v in versions { option value=(v.version) selected[v.version == from] { "v" (v.version) } }
            } }
            label { " to " select name="to" {
                @for v in versions { option value=(v.version) selected[v.version == to] { "v" (v.version) } }
            } }
            " " button type="submit" { "Show diff" }
        }
    }
}

fn filename(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    let clean: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("artifact{clean}")
    } else {
        clean
    }
}

/// `GET /ui/sessions/{id}/artifacts/{aid}/raw`: the bytes as a download; with `inline=1`, a
/// raster image with its image type (nothing else is ever served inline).
pub async fn raw(
    ui: Ui,
    Path((sid, aid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> UiResult<Response> {
    let sid: SessionId = parse_id("session id", &sid)?;
    let aid: ArtifactId = parse_id("artifact id", &aid)?;
    let inline = query_value(q.as_deref(), "inline").is_some_and(|v| v == "1");
    let store = ui.store;
    let (a, reader, image) = blocking(move || {
        let a = store.artifact(sid, aid)?;
        let image = if inline {
            let head = head_bytes(&store, &a)?;
            image_type(&a, &head)
        } else {
            None
        };
        let r = store.open_reader(sid, aid)?;
        Ok((a, r, image))
    })
    .await?;
    let body = crate::streaming::stream_out(reader, 0, a.size);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    match image {
        Some(t) => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"{}\"", filename(&a.name)))
            {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(a.size));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(RAW_CSP),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(resp)
}

/// The lines of a version, up to [`DIFF_BYTES`]: (lines, whether it was cut).
fn diff_lines(store: &Store, a: &Artifact) -> UiResult<(Vec<String>, bool)> {
    let r = store.read_part_with(
        a.session_id,
        a.id,
        &Part::Lines {
            start: 1,
            count: u64::MAX / 2,
        },
        &PartLimits {
            max_bytes: DIFF_BYTES,
            max_line_bytes: LINE_BYTES,
        },
    )?;
    let cut = r.next_line.is_some() || r.truncated;
    match r.content {
        PartContent::Lines { lines } => Ok((lines.into_iter().map(|l| l.text).collect(), cut)),
        _ => Ok((Vec::new(), cut)),
    }
}

/// One row of a rendered diff.
#[derive(Debug, PartialEq, Eq)]
pub enum DiffRow {
    /// `@@ -a,b +c,d @@`.
    Hunk(String),
    /// A line in both (old number, new number).
    Same(usize, usize, String),
    /// A removed line (old number).
    Del(usize, String),
    /// An added line (new number).
    Add(usize, String),
}

/// A unified diff of two line lists with `context` lines around each change.
pub fn unified(old: &[String], new: &[String], context: usize) -> Vec<DiffRow> {
    let deadline = Instant::now() + DIFF_DEADLINE;
    let ops =
        similar::capture_diff_slices_deadline(similar::Algorithm::Myers, old, new, Some(deadline));
    let mut rows = Vec::new();
    for group in similar::group_diff_ops(ops, context) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let o = first.old_range().start..last.old_range().end;
        let n = first.new_range().start..last.new_range().end;
        rows.push(DiffRow::Hunk(format!(
            "@@ -{},{} +{},{} @@",
            o.start + 1,
            o.len(),
            n.start + 1,
            n.len()
        )));
        for op in &group {
            let (tag, or, nr) = op.as_tag_tuple();
            match tag {
                similar::DiffTag::Equal => {
                    for (i, j) in or.zip(nr) {
                        rows.push(DiffRow::Same(i + 1, j + 1, old[i].clone()));
                    }
                }
                similar::DiffTag::Delete => {
                    for i in or {
                        rows.push(DiffRow::Del(i + 1, old[i].clone()));
                    }
                }
                similar::DiffTag::Insert => {
                    for j in nr {
                        rows.push(DiffRow::Add(j + 1, new[j].clone()));
                    }
                }
                similar::DiffTag::Replace => {
                    for i in or {
                        rows.push(DiffRow::Del(i + 1, old[i].clone()));
                    }
                    for j in nr {
                        rows.push(DiffRow::Add(j + 1, new[j].clone()));
                    }
                }
            }
        }
    }
    rows
}

/// `GET /ui/sessions/{id}/diff?name=N&from=V&to=W`: a line diff of two versions of a name.
pub async fn diff_page(ui: Ui, Path(sid): Path<String>, RawQuery(q): RawQuery) -> UiResult {
    let sid: SessionId = parse_id("session id", &sid)?;
    let get = |n: &str| query_value(q.as_deref(), n).filter(|v| !v.is_empty());
    let name = get("name")
        .ok_or_else(|| UiError::invalid("name", "give the artifact name to diff (name=...)"))?;
    let from: u32 = parse_id("from", &get("from").unwrap_or_else(|| "1".into()))?;
    let to: Option<u32> = get("to").map(|v| parse_id("to", &v)).transpose()?;
    let chrome = ui.chrome();
    let store = ui.store;
    blocking(move || {
        let session = store.session(sid)?;
        let versions = store.versions(sid, &name)?;
        if versions.is_empty() {
            return Err(UiError::new(
                StatusCode::NOT_FOUND,
                format!("No artifact named {name:?} in this session."),
            ));
        }
        let latest = versions[versions.len() - 1].version;
        let to = to.unwrap_or(latest);
        let pick = |v: u32| {
            versions.iter().find(|a| a.version == v).ok_or_else(|| {
                UiError::new(
                    StatusCode::NOT_FOUND,
                    format!("{name:?} has no version {v}; it has versions 1 to {latest} (some may be deleted)."),
                )
            })
        };
        let (a, b) = (pick(from)?, pick(to)?);
        let (old, cut_a) = diff_lines(&store, a)?;
        let (new, cut_b) = diff_lines(&store, b)?;
        let rows = unified(&old, &new, 3);
        let added = rows.iter().filter(|r| matches!(r, DiffRow::Add(..))).count();
        let removed = rows.iter().filter(|r| matches!(r, DiffRow::Del(..))).count();
        let lang = Lang::detect(&name, a.mime_type.as_deref());
        let lang = if lang == Lang::Diff { Lang::Plain } else { lang };
        let shown: Vec<Artifact> = versions.iter().rev().take(VERSIONS_SHOWN).rev().cloned().collect();
        let title = format!("{name}: v{from} → v{to}");
        let body = html! {
            nav.crumbs aria-label="Session" {
                a href="/ui" { "Sessions" } " › "
                a href=(session_href(&sid)) { (layout::session_name(&session)) }
            }
            h1 { "Diff of " (name) }
            p { a href=(layout::artifact_href(a)) { "v" (from) } " → " a href=(layout::artifact_href(b)) { "v" (to) } }
            (diff_form(sid, &name, &shown, from, to))
            p #diff-stats { span.add { "+" (added) } " " span.del { "−" (removed) } " lines"
                @if a.hash == b.hash { " · identical content (same hash)" } }
            @if cut_a || cut_b { p.hint { "Only the first " (layout::size(DIFF_BYTES)) " of each version is compared; download them for the rest." } }
            @if rows.is_empty() { p.empty { "No differences." } }
            @else {
                div.code-wrap {
                    table.code.diff {
                        thead { tr { th scope="col" { "v" (from) } th scope="col" { "v" (to) } th scope="col" { span.visually-hidden { "Line" } } } }
                        tbody {
                            @for r in &rows {
                                @match r {
                                    DiffRow::Hunk(h) => tr.hunk { td colspan="3" { code { (h) } } },
                                    DiffRow::Same(i, j, t) => tr { th.ln { (i) } th.ln { (j) } td { code { "  " (highlight::line(lang, t)) } } },
                                    DiffRow::Del(i, t) => tr.del { th.ln { (i) } th.ln {} td { code { span.sign aria-label="removed" { "- " } (highlight::line(lang, t)) } } },
                                    DiffRow::Add(j, t) => tr.add { th.ln {} th.ln { (j) } td { code { span.sign aria-label="added" { "+ " } (highlight::line(lang, t)) } } },
                                }
                            }
                        }
                    }
                }
            }
            p { a href=(format!("{}{}", session_href(&sid), "#artifacts")) { "Back to the artifacts" } }
        };
        Ok(Html(layout::page(&title, Some(&chrome), body)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_string).collect()
    }

    #[test]
    fn unified_diffs_number_their_lines() {
        let rows = unified(&lines("a\nb\nc\nd"), &lines("a\nB\nc\nd\ne"), 1);
        assert_eq!(rows[0], DiffRow::Hunk("@@ -1,4 +1,5 @@".into()));
        assert!(rows.contains(&DiffRow::Del(2, "b".into())));
        assert!(rows.contains(&DiffRow::Add(2, "B".into())));
        assert!(rows.contains(&DiffRow::Add(5, "e".into())));
        assert!(rows.contains(&DiffRow::Same(1, 1, "a".into())));
        assert!(unified(&lines("x"), &lines("x"), 3).is_empty());
    }

    #[test]
    fn images_are_sniffed_and_svg_is_not_one() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(b"GIF89a"), Some("image/gif"));
        assert_eq!(sniff_image(b"<svg onload=alert(1)>"), None);
    }

    #[test]
    fn download_names_are_plain() {
        assert_eq!(filename("logs/run 1.txt"), "run1.txt");
        assert_eq!(filename("a/\"; x=y"), "xy");
        assert_eq!(filename(".."), "artifact..");
        assert_eq!(filename("\r\n"), "artifact");
    }

    #[test]
    fn hex_lines_show_printable_text() {
        let (o, h, t) = hex_line(32, b"ab\x00\xff");
        assert_eq!(o, "00000020");
        assert_eq!(h, "61 62 00 ff");
        assert_eq!(t, "ab..");
    }
}
