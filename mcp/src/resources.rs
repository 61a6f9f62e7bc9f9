//! Resources: every artifact at `cairn://artifact/{id}` (text for text, base64 for binary, up to
//! a size cap; above it a pointer to the `read_part` tool), and a session's artifacts, paged,
//! at `cairn://session/{id}/artifacts`.

use cairn::{Artifact, Part, PartContent, PartLimits, Query, SessionId, Store};
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use rmcp::ErrorData;
use serde_json::json;

use crate::shape;

/// The prefix of artifact URIs.
pub const ARTIFACT_PREFIX: &str = "cairn://artifact/";
/// The prefix of session URIs.
pub const SESSION_PREFIX: &str = "cairn://session/";
/// Artifacts per page of `resources/list` and of a session listing.
pub const RESOURCE_PAGE: usize = 50;

/// What a resource URI names.
#[derive(Debug, PartialEq)]
pub enum Target {
    /// One artifact.
    Artifact(cairn::ArtifactId),
    /// A page of a session's artifacts.
    Session {
        /// The session.
        id: SessionId,
        /// Where the page starts.
        cursor: Option<String>,
    },
}

/// Parses a resource URI, with an error that shows the accepted forms.
pub fn parse_uri(uri: &str) -> Result<Target, ErrorData> {
    let forms = "use cairn://artifact/{artifact_id} or cairn://session/{session_id}/artifacts";
    if let Some(id) = uri.strip_prefix(ARTIFACT_PREFIX) {
        return id.parse().map(Target::Artifact).map_err(|_| {
            ErrorData::invalid_params(
                format!("{uri:?}: {id:?} is not an artifact id (a UUID); {forms}"),
                None,
            )
        });
    }
    if let Some(rest) = uri.strip_prefix(SESSION_PREFIX) {
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let id = path.strip_suffix("/artifacts").unwrap_or(path);
        let id: SessionId = id.parse().map_err(|_| {
            ErrorData::invalid_params(
                format!("{uri:?}: {id:?} is not a session id (a UUID); {forms}"),
                None,
            )
        })?;
        let mut cursor = None;
        for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("cursor", c)) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => {
                    return Err(ErrorData::invalid_params(
                        format!(
                            "{uri:?}: unknown query {kv:?}; the only one is ?cursor=NEXT_CURSOR"
                        ),
                        None,
                    ))
                }
            }
        }
        return Ok(Target::Session { id, cursor });
    }
    Err(ErrorData::resource_not_found(
        format!("{uri:?} is not a Cairn resource; {forms}"),
        None,
    ))
}

fn store_error(e: cairn::Error) -> ErrorData {
    if e.is_not_found() {
        ErrorData::resource_not_found(e.to_string(), Some(json!({"code": e.code()})))
    } else if matches!(e.code(), "invalid_input" | "invalid_glob") {
        ErrorData::invalid_params(e.to_string(), Some(json!({"code": e.code()})))
    } else {
        ErrorData::internal_error(e.to_string(), Some(json!({"code": e.code()})))
    }
}

/// The MIME type an artifact is served as: its own, else the sniffed one of its preview.
fn mime_of(a: &Artifact, sniffed: Option<&str>) -> String {
    a.mime_type
        .clone()
        .or_else(|| sniffed.map(str::to_string))
        .unwrap_or_else(|| "application/octet-stream".into())
}

fn resource_of(a: &Artifact) -> Resource {
    let mut r = Resource::new(shape::artifact_uri(a), a.name.clone())
        .with_description(format!(
            "{} v{} in session {} ({} bytes)",
            a.kind, a.version, a.session_id, a.size
        ))
        .with_size(a.size);
    if let Some(m) = &a.mime_type {
        r = r.with_mime_type(m.clone());
    }
    r
}

/// `resources/list`: every artifact, newest first, [`RESOURCE_PAGE`] at a time.
pub fn list(store: &Store, cursor: Option<String>) -> Result<ListResourcesResult, ErrorData> {
    let mut q = Query::new().descending(true).limit(RESOURCE_PAGE);
    if let Some(c) = cursor {
        q = q.cursor(c);
    }
    let page = store.query(&q).map_err(store_error)?;
    let mut out = ListResourcesResult::with_all_items(page.items.iter().map(resource_of).collect());
    out.next_cursor = page.next_cursor;
    Ok(out)
}

/// `resources/templates/list`.
pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new("cairn://artifact/{artifact_id}", "artifact").with_description(
            "A stored artifact's content: text as text, binary as base64, with its MIME type. \
             Content over the size cap is replaced by its preview and a pointer to the read_part tool.",
        ),
        ResourceTemplate::new("cairn://session/{session_id}/artifacts", "session artifacts")
            .with_description(
                "A session's artifacts as JSON (oldest first, 50 per page); follow `next_uri` for the next page.",
            )
            .with_mime_type("application/json"),
    ])
}

/// `resources/read`.
pub fn read(store: &Store, uri: &str, cap: u64) -> Result<ReadResourceResult, ErrorData> {
    match parse_uri(uri)? {
        Target::Artifact(id) => read_artifact(store, uri, id, cap),
        Target::Session { id, cursor } => read_session(store, uri, id, cursor),
    }
}

fn read_artifact(
    store: &Store,
    uri: &str,
    id: cairn::ArtifactId,
    cap: u64,
) -> Result<ReadResourceResult, ErrorData> {
    let a = store.admin().artifact(id).map_err(store_error)?;
    let preview = store.preview(a.session_id, a.id).map_err(store_error)?;
    let mime = mime_of(&a, Some(&preview.mime_type));
    if a.size > cap {
        let note = json!({
            "artifact": shape::artifact(&a),
            "preview": shape::preview(&preview),
            "omitted": format!(
                "the content is {} bytes, over this server's resource cap of {cap} bytes; read it in parts with the read_part tool",
                a.size
            ),
            "read_part": {"artifact_id": a.id, "mode": "head", "lines": 50},
        });
        return Ok(ReadResourceResult::new(vec![ResourceContents::text(
            note.to_string(),
            uri,
        )
        .with_mime_type("application/json")]));
    }
    // One verified read of the whole (small) content: UTF-8 comes back as text, else base64.
    let limits = PartLimits {
        max_bytes: cap.max(1),
        max_line_bytes: cairn::DEFAULT_LINE_BYTES,
    };
    let part = Part::Bytes {
        offset: 0,
        len: a.size,
    };
    let r = store
        .read_part_with(a.session_id, a.id, &part, &limits)
        .map_err(store_error)?;
    let PartContent::Bytes { data, .. } = r.content else {
        return Err(ErrorData::internal_error(
            "a byte range read returned no bytes",
            None,
        ));
    };
    let contents = if data.encoding == "utf8" {
        ResourceContents::text(data.data, uri)
    } else {
        ResourceContents::blob(data.data, uri)
    };
    Ok(ReadResourceResult::new(vec![contents.with_mime_type(mime)]))
}

fn read_session(
    store: &Store,
    uri: &str,
    id: SessionId,
    cursor: Option<String>,
) -> Result<ReadResourceResult, ErrorData> {
    let session = store.session(id).map_err(store_error)?;
    let mut q = Query::new().session(id).limit(RESOURCE_PAGE);
    if let Some(c) = cursor {
        q = q.cursor(c);
    }
    let page = store.query(&q).map_err(store_error)?;
    let items = page.items.iter().map(shape::artifact).collect();
    let mut body = shape::page("artifacts", items, page.next_cursor.clone());
    if let serde_json::Value::Object(m) = &mut body {
        m.insert("session".into(), shape::session(&session));
        if let Some(c) = page.next_cursor {
            m.insert(
                "next_uri".into(),
                json!(format!("{SESSION_PREFIX}{id}/artifacts?cursor={c}")),
            );
        }
    }
    Ok(ReadResourceResult::new(vec![ResourceContents::text(
        body.to_string(),
        uri,
    )
    .with_mime_type("application/json")]))
}
