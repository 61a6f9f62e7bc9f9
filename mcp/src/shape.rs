//! Result shaping: what a model sees. Summaries leave out what a model rarely needs (hashes,
//! stored sizes, read costs) so that results stay small; every artifact carries its `uri`.

use cairn::{Artifact, Checkpoint, Part, PartLimits, PartResult, Preview, Session};
use serde_json::{json, Map, Value};

/// The resource URI of an artifact.
pub fn artifact_uri(a: &Artifact) -> String {
    format!("{}{}", crate::resources::ARTIFACT_PREFIX, a.id)
}

/// An artifact summary: id, session, name, version, kind, size, tags, MIME type, time, uri;
/// metadata only when it is not empty.
pub fn artifact(a: &Artifact) -> Value {
    let mut m = Map::new();
    m.insert("artifact_id".into(), json!(a.id));
    m.insert("session_id".into(), json!(a.session_id));
    m.insert("name".into(), json!(a.name));
    m.insert("version".into(), json!(a.version));
    m.insert("kind".into(), json!(a.kind));
    m.insert("size".into(), json!(a.size));
    if !a.tags.is_empty() {
        m.insert("tags".into(), json!(a.tags));
    }
    if let Some(t) = &a.mime_type {
        m.insert("mime_type".into(), json!(t));
    }
    if !a.metadata.is_empty() {
        m.insert("metadata".into(), Value::Object(a.metadata.clone()));
    }
    m.insert("created_at".into(), json!(a.created_at));
    m.insert("uri".into(), json!(artifact_uri(a)));
    Value::Object(m)
}

/// What `store_output` returns: the summary and the preview, never the content.
pub fn stored(a: &Artifact, p: &Preview) -> Value {
    let mut v = artifact(a);
    if let Value::Object(m) = &mut v {
        m.insert("preview".into(), preview(p));
        m.insert(
            "hint".into(),
            json!("Stored. Read parts of it with read_part (artifact_id, mode head/tail/lines/grep/bytes/json)."),
        );
    }
    v
}

/// What `artifact_info` returns: the summary and the preview.
pub fn info(a: &Artifact, p: &Preview) -> Value {
    let mut v = artifact(a);
    if let Value::Object(m) = &mut v {
        m.insert("hash".into(), json!(a.hash));
        m.insert("preview".into(), preview(p));
    }
    v
}

/// A preview without the stored size (a detail of the store, not of the content).
pub fn preview(p: &Preview) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("stored_size");
    }
    v
}

/// A session summary.
pub fn session(s: &Session) -> Value {
    let mut m = Map::new();
    m.insert("session_id".into(), json!(s.id));
    for (k, v) in [("name", &s.name), ("key", &s.key)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(p) = s.parent_id {
        m.insert("parent_id".into(), json!(p));
    }
    m.insert("status".into(), json!(s.status.as_str()));
    if !s.tags.is_empty() {
        m.insert("tags".into(), json!(s.tags));
    }
    m.insert("created_at".into(), json!(s.created_at));
    m.insert("updated_at".into(), json!(s.updated_at));
    Value::Object(m)
}

/// A checkpoint summary (the state is the caller's own: not echoed back).
pub fn checkpoint(c: &Checkpoint) -> Value {
    json!({
        "checkpoint_id": c.id,
        "session_id": c.session_id,
        "label": c.label,
        "artifact_count": c.artifact_count,
        "created_at": c.created_at,
    })
}

/// A page of a listing: `{KEY: [...], "next_cursor": ...}` (the cursor only when more exist).
pub fn page(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut m = Map::new();
    m.insert("count".into(), json!(items.len()));
    m.insert(key.into(), Value::Array(items));
    if let Some(c) = next {
        m.insert("next_cursor".into(), json!(c));
    }
    Value::Object(m)
}

/// What `read_part` returns: the library's result without its hash and read cost, plus
/// `continue_with` (the arguments of the call that reads what follows) and a `note` when the
/// result was cut short.
pub fn part(a: &Artifact, asked: &Part, limits: &PartLimits, r: &PartResult) -> Value {
    let mut m = Map::new();
    m.insert("artifact_id".into(), json!(a.id));
    m.insert("name".into(), json!(a.name));
    m.insert("size".into(), json!(r.size));
    m.insert("total_lines".into(), json!(r.total_lines));
    let content = serde_json::to_value(&r.content).unwrap_or(Value::Null);
    if let Value::Object(c) = content {
        for (k, v) in c {
            // The content's `kind` is the mode's result kind; keep it as `result`.
            let k = if k == "kind" { "result".to_string() } else { k };
            m.insert(k, v);
        }
    }
    m.insert("truncated".into(), json!(r.truncated));
    let next = continue_with(a, asked, limits, r);
    if r.truncated {
        m.insert(
            "note".into(),
            json!(format!(
                "cut short by a limit (max_bytes {}, max_line_bytes {} or max_matches){}",
                limits.max_bytes,
                limits.max_line_bytes,
                if next.is_some() {
                    "; call read_part with `continue_with` for more"
                } else {
                    ""
                }
            )),
        );
    }
    if let Some(n) = next {
        m.insert("continue_with".into(), n);
    }
    Value::Object(m)
}

/// The arguments of the `read_part` call that continues `r`, if anything follows it.
pub fn continue_with(
    a: &Artifact,
    asked: &Part,
    limits: &PartLimits,
    r: &PartResult,
) -> Option<Value> {
    let mut m = Map::new();
    m.insert("artifact_id".into(), json!(a.id));
    match asked {
        Part::Bytes { offset, len } => {
            let next = r.next_offset?;
            // Only what the caller asked for: a range that ended where it was asked to is done.
            let end = offset.saturating_add(*len).min(r.size);
            if next >= end {
                return None;
            }
            m.insert("mode".into(), json!("bytes"));
            m.insert("offset".into(), json!(next));
            m.insert("length".into(), json!(end - next));
        }
        Part::Lines { start, count } => {
            let next = r.next_line?;
            let end = start.saturating_add(*count);
            if next >= end {
                return None;
            }
            m.insert("mode".into(), json!("lines"));
            m.insert("start".into(), json!(next));
            m.insert("count".into(), json!(end - next));
        }
        Part::Head { lines } => {
            let next = r.next_line?;
            if next > *lines {
                return None;
            }
            m.insert("mode".into(), json!("lines"));
            m.insert("start".into(), json!(next));
            m.insert("count".into(), json!(lines + 1 - next));
        }
        Part::Tail { lines } => {
            // A tail cut short by max_bytes kept its last lines and dropped the earlier ones
            // it was asked for: continue with those.
            let first = match &r.content {
                cairn::PartContent::Lines { lines } => lines.first()?.number,
                _ => return None,
            };
            let start = r.total_lines.saturating_sub(*lines) + 1;
            if !r.truncated || first <= start {
                return None;
            }
            m.insert("mode".into(), json!("lines"));
            m.insert("start".into(), json!(start));
            m.insert("count".into(), json!(first - start));
        }
        Part::Grep {
            pattern,
            context,
            max_matches,
            ignore_case,
            ..
        } => {
            let next = r.next_line?;
            m.insert("mode".into(), json!("grep"));
            m.insert("pattern".into(), json!(pattern));
            if *context > 0 {
                m.insert("context".into(), json!(context));
            }
            m.insert("max_matches".into(), json!(max_matches));
            if *ignore_case {
                m.insert("ignore_case".into(), json!(true));
            }
            m.insert("start_line".into(), json!(next));
        }
        Part::Json { .. } => return None,
        Part::JsonLines { path, start, count } => {
            let next = r.next_line?;
            let end = start.saturating_add(*count);
            if next >= end {
                return None;
            }
            m.insert("mode".into(), json!("json_lines"));
            m.insert("path".into(), json!(path));
            m.insert("start".into(), json!(next));
            m.insert("count".into(), json!(end - next));
        }
    }
    if limits.max_bytes != crate::tools::DEFAULT_READ_BYTES {
        m.insert("max_bytes".into(), json!(limits.max_bytes));
    }
    if limits.max_line_bytes as u64 != crate::tools::DEFAULT_LINE_BYTES {
        m.insert("max_line_bytes".into(), json!(limits.max_line_bytes));
    }
    Some(Value::Object(m))
}
