//! The tools: one [`ToolSpec`] per tool (name, description written for a model, input schema,
//! an example call) and the handler that parses its arguments, calls the library once and
//! shapes the result.
//!
//! Handlers are blocking functions; the service runs them on the blocking pool.

use std::path::Path;
use std::sync::Arc;

use cairn::{
    Artifact, ArtifactKind, Checkpoint, MemoScope, NewArtifact, NewCheckpoint, NewSession, Part,
    PartLimits, Query, Session, SessionFilter, SessionId, SessionStatus,
};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Map, Value};

use crate::args::{Args, ToolError, ToolResult};
use crate::shape;
use crate::Shared;

/// Default page size of the listing tools (small: a page lands in the model's context).
pub const DEFAULT_PAGE: u64 = 20;
/// Largest page size of the listing tools.
pub const MAX_PAGE: u64 = 200;
/// Default bound on the text a `read_part` call returns (about 4,000 tokens).
pub const DEFAULT_READ_BYTES: u64 = 16 << 10;
/// Largest `max_bytes` a `read_part` call may ask for.
pub const MAX_READ_BYTES: u64 = 1 << 20;
/// Default number of lines for `head`, `tail`, `lines` and `json_lines`.
pub const DEFAULT_LINES: u64 = 20;
/// Default number of grep matches.
pub const DEFAULT_GREP_MATCHES: u64 = 20;
/// Default bound on one returned line.
pub const DEFAULT_LINE_BYTES: u64 = 2 << 10;

/// One tool: what `tools/list` shows and what `tools/call` runs.
pub struct ToolSpec {
    /// The tool's name.
    pub name: &'static str,
    /// What it does, what it returns, how to page: written for a model.
    pub description: &'static str,
    /// The input JSON schema; its `properties` are the accepted argument names.
    pub schema: fn() -> Value,
    /// A valid call's arguments, quoted in error messages.
    pub example: fn() -> Value,
    /// True if the tool only reads.
    pub read_only: bool,
    pub(crate) run: fn(&Shared, &Args) -> ToolResult,
}

impl ToolSpec {
    /// The MCP tool definition.
    pub fn to_tool(&self) -> Tool {
        let schema: JsonObject = match (self.schema)() {
            Value::Object(m) => m,
            _ => JsonObject::new(),
        };
        Tool::new(self.name, self.description, Arc::new(schema)).with_annotations(
            ToolAnnotations::new()
                .read_only(self.read_only)
                .destructive(false)
                .open_world(false),
        )
    }
}

/// Every tool, in the order `tools/list` shows them.
pub fn all() -> &'static [ToolSpec] {
    TOOLS
}

/// The tool named `name`.
pub fn find(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|t| t.name == name)
}

static TOOLS: &[ToolSpec] = &[
    ToolSpec {
        name: "store_output",
        description: "Store a large output (a tool result, log, file, JSON document) in Cairn instead of keeping \
            it in the conversation. Returns only its `artifact_id`, a `uri` and a short `preview` (size, \
            line count, MIME type, first and last lines, top-level JSON keys) - never the content. Keep the \
            id and read just the parts you need later with read_part. Give exactly one of `content` (text), \
            `content_base64` (binary) or `path` (a local file, when the server allows it). `session_id` \
            defaults to this server's default session. Storing the same name again makes a new version.",
        schema: store_output_schema,
        example: || json!({"name": "pytest/run-1.log", "content": "===== 3 passed in 0.2s =====\n", "kind": "tool_result", "tags": ["pytest"]}),
        read_only: false,
        run: store_output,
    },
    ToolSpec {
        name: "read_part",
        description: "Read part of a stored artifact, never more than `max_bytes` (default 16384) of text. \
            Modes: `head` / `tail` (first or last `lines` lines, default 20), `lines` (`count` lines from line \
            `start`, 1-based), `bytes` (`length` bytes from byte `offset`; binary comes back base64), `grep` \
            (lines matching the regular expression `pattern`, with `context` lines around each, up to \
            `max_matches`, default 20; `ignore_case`), `json` (the value at `path` of a JSON document: a JSON \
            pointer `/a/0/b` or a path `a[0].b`), `json_lines` (the value at `path` of `count` lines of a \
            JSON-lines artifact from line `start`). The result gives `size` and `total_lines` of the whole \
            artifact, line numbers, `truncated` when a limit cut it short, and `continue_with`: the exact \
            arguments of the next read_part call to get what follows (absent when nothing follows).",
        schema: read_part_schema,
        example: || json!({"artifact_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e", "mode": "grep", "pattern": "FAILED|error", "context": 2}),
        read_only: true,
        run: read_part,
    },
    ToolSpec {
        name: "artifact_info",
        description: "Describe one stored artifact without reading it: name, kind, version, size, tags, \
            metadata, session, MIME type and its preview (first and last lines, line count, JSON keys). \
            Use it to decide how to read an artifact with read_part.",
        schema: artifact_info_schema,
        example: || json!({"artifact_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e"}),
        read_only: true,
        run: artifact_info,
    },
    ToolSpec {
        name: "query_artifacts",
        description: "Find stored artifacts; all given filters must hold. Filters: `session_id` (with \
            `subtree`: also its child sessions), `kinds` (any of), `tags_all`, `tags_any`, `name_glob` (`*` \
            also matches `/`, e.g. `pytest/*.log`), `min_size`/`max_size` in bytes, `created_from` (inclusive) \
            and `created_to` (exclusive) as RFC 3339 times, `latest_only` (only the newest version of each \
            name). Returns artifact summaries (id, name, version, kind, size, tags, uri; oldest first, or \
            newest first with `descending`), `limit` per page (default 20, at most 200). When `next_cursor` \
            is present, call again with `cursor` set to it (and the same filters) for the next page.",
        schema: query_schema,
        example: || json!({"kinds": ["tool_result"], "name_glob": "pytest/*", "descending": true, "limit": 5}),
        read_only: true,
        run: query_artifacts,
    },
    ToolSpec {
        name: "list_sessions",
        description: "List sessions (the folders artifacts live in; they form a tree). Filters: `status` (any \
            of active, suspended, completed, failed, cancelled, expired, timed_out), `tags` (all of), \
            `key`, `parent_id` (direct children) or `roots_only`, `created_from`/`created_to` and \
            `updated_from`/`updated_to` (RFC 3339). Returns session summaries, `limit` per page (default 20, \
            at most 200); pass `next_cursor` back as `cursor` for the next page.",
        schema: list_sessions_schema,
        example: || json!({"status": ["active"], "roots_only": true, "limit": 10}),
        read_only: true,
        run: list_sessions,
    },
    ToolSpec {
        name: "create_session",
        description: "Create a session to group the artifacts of one task (optionally as a child of \
            `parent_id`). With a `key`, the call is idempotent: the session with that key is returned if it \
            exists (`created` is false). Returns the session summary with its `id`.",
        schema: create_session_schema,
        example: || json!({"name": "fix-flaky-test", "key": "task-1234", "tags": ["ci"]}),
        read_only: false,
        run: create_session,
    },
    ToolSpec {
        name: "checkpoint",
        description: "Record a checkpoint of a session: a `label`, an optional JSON `state`, and the exact \
            artifact versions the session holds now (no content is copied). Returns the `checkpoint_id`; \
            fork from it later to try another approach from this point.",
        schema: checkpoint_schema,
        example: || json!({"session_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e", "label": "tests-green", "state": {"step": 3}}),
        read_only: false,
        run: checkpoint,
    },
    ToolSpec {
        name: "fork",
        description: "Fork a session: a new child session holding the artifacts the source held at \
            `checkpoint_id` (or now, without it), sharing content (nothing is copied). The two sessions are \
            independent afterwards. Returns the new session's summary with its `id`.",
        schema: fork_schema,
        example: || json!({"session_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e", "name": "try-other-fix"}),
        read_only: false,
        run: fork,
    },
    ToolSpec {
        name: "memo_lookup",
        description: "Before running an expensive tool call (a test suite, a build, a web fetch), ask whether \
            the same `tool` with the same `arguments` (any JSON; key order and whitespace do not matter) \
            already has a stored result. A hit returns `hit: true`, the result artifact's summary and \
            preview (read it with read_part, no need to rerun the tool), when it was stored and when it \
            expires; a miss returns `hit: false`. With `session_id`, entries of that session and its \
            ancestors are seen as well as store-wide ones; without it, only store-wide ones.",
        schema: memo_lookup_schema,
        example: || json!({"tool": "pytest", "arguments": {"path": "tests/", "flags": ["-x"]}}),
        read_only: false,
        run: memo_lookup,
    },
    ToolSpec {
        name: "memo_store",
        description: "After running a tool call and storing its output with store_output, record that `tool` \
            with `arguments` produced the artifact `artifact_id`, so that a later memo_lookup with the \
            same tool and arguments finds it. Without `session_id` the entry is visible store-wide; with \
            it, to that session and its descendants (the artifact must belong to that subtree). \
            `ttl_seconds` sets how long results of this tool stay valid (for every entry of the tool; \
            default: no expiry). Returns the entry's key, scope and expiry.",
        schema: memo_store_schema,
        example: || json!({"tool": "pytest", "arguments": {"path": "tests/", "flags": ["-x"]}, "artifact_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e", "ttl_seconds": 3600}),
        read_only: false,
        run: memo_store,
    },
];

// ---------------------------------------------------------------------------------------------
// Schemas

fn id_prop(what: &str) -> Value {
    json!({"type": "string", "description": format!("{what} id (a UUID returned by another tool)")})
}

fn page_props(p: &mut Map<String, Value>) {
    p.insert(
        "limit".into(),
        json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE, "description": "Results per page."}),
    );
    p.insert(
        "cursor".into(),
        json!({"type": "string", "description": "The `next_cursor` of the previous page."}),
    );
}

fn object(props: Map<String, Value>, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn store_output_schema() -> Value {
    object(
        props(json!({
            "name": {"type": "string", "description": "A name for the output, e.g. `pytest/run-1.log` (may contain `/`)."},
            "content": {"type": "string", "description": "The output as text."},
            "content_base64": {"type": "string", "description": "The output as base64, for binary content."},
            "path": {"type": "string", "description": "A local file to store instead of `content` (only if the server allows local files)."},
            "session_id": id_prop("Session (default: the server's default session)"),
            "kind": {"type": "string", "default": "tool_result", "description": "tool_result, agent_output, user_input, system_generated, or a custom lowercase identifier."},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags for finding it later."},
            "metadata": {"type": "object", "description": "Any JSON object to keep with it (e.g. the command that produced it)."},
            "mime_type": {"type": "string", "description": "MIME type, if known (otherwise sniffed into the preview)."}
        })),
        &["name"],
    )
}

fn read_part_schema() -> Value {
    object(
        props(json!({
            "artifact_id": id_prop("Artifact"),
            "session_id": id_prop("Session (optional: checks that the artifact belongs to it)"),
            "mode": {"type": "string", "enum": ["head", "tail", "lines", "bytes", "grep", "json", "json_lines"], "default": "head", "description": "What to read."},
            "lines": {"type": "integer", "minimum": 1, "default": DEFAULT_LINES, "description": "head/tail: how many lines."},
            "start": {"type": "integer", "minimum": 1, "default": 1, "description": "lines/json_lines: first line (1-based)."},
            "count": {"type": "integer", "minimum": 1, "default": DEFAULT_LINES, "description": "lines/json_lines: how many lines."},
            "offset": {"type": "integer", "minimum": 0, "default": 0, "description": "bytes: first byte (0-based)."},
            "length": {"type": "integer", "minimum": 1, "description": "bytes: how many bytes (default and at most max_bytes)."},
            "pattern": {"type": "string", "description": "grep: a regular expression (Rust regex syntax), matched per line."},
            "context": {"type": "integer", "minimum": 0, "maximum": cairn::MAX_CONTEXT, "default": 0, "description": "grep: lines of context before and after each match."},
            "max_matches": {"type": "integer", "minimum": 1, "maximum": cairn::MAX_MATCHES, "default": DEFAULT_GREP_MATCHES, "description": "grep: stop after this many matching lines."},
            "ignore_case": {"type": "boolean", "default": false, "description": "grep: case-insensitive."},
            "start_line": {"type": "integer", "minimum": 1, "default": 1, "description": "grep: first line to search (continue from a previous result)."},
            "path": {"type": "string", "description": "json/json_lines: a JSON pointer (`/a/0/b`) or path (`a[0].b`, `$.a`); empty for the whole value."},
            "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_READ_BYTES, "default": DEFAULT_READ_BYTES, "description": "Most bytes of text to return."},
            "max_line_bytes": {"type": "integer", "minimum": 16, "maximum": MAX_READ_BYTES, "default": DEFAULT_LINE_BYTES, "description": "Longer lines are cut (and marked truncated)."}
        })),
        &["artifact_id"],
    )
}

fn artifact_info_schema() -> Value {
    object(
        props(json!({
            "artifact_id": id_prop("Artifact"),
            "session_id": id_prop("Session (optional: checks that the artifact belongs to it)")
        })),
        &["artifact_id"],
    )
}

fn query_schema() -> Value {
    let mut p = props(json!({
        "session_id": id_prop("Only artifacts of this session"),
        "subtree": {"type": "boolean", "default": false, "description": "With session_id: include its descendant sessions."},
        "kinds": {"type": "array", "items": {"type": "string"}, "description": "Any of these kinds (tool_result, agent_output, ...)."},
        "tags_all": {"type": "array", "items": {"type": "string"}, "description": "Must carry every one of these tags."},
        "tags_any": {"type": "array", "items": {"type": "string"}, "description": "Must carry at least one of these tags."},
        "name_glob": {"type": "string", "description": "Glob on the name, e.g. `pytest/*.log`."},
        "min_size": {"type": "integer", "minimum": 0, "description": "At least this many bytes."},
        "max_size": {"type": "integer", "minimum": 0, "description": "At most this many bytes."},
        "created_from": {"type": "string", "format": "date-time", "description": "Created at or after (RFC 3339)."},
        "created_to": {"type": "string", "format": "date-time", "description": "Created before (RFC 3339)."},
        "latest_only": {"type": "boolean", "default": false, "description": "Only the newest version of each name."},
        "descending": {"type": "boolean", "default": false, "description": "Newest first."}
    }));
    page_props(&mut p);
    object(p, &[])
}

fn list_sessions_schema() -> Value {
    let mut p = props(json!({
        "status": {"type": "array", "items": {"type": "string", "enum": ["active", "suspended", "completed", "failed", "cancelled", "expired", "timed_out"]}, "description": "Any of these statuses."},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "Must carry every one of these tags."},
        "key": {"type": "string", "description": "Only the session with this key."},
        "parent_id": id_prop("Only direct children of this session"),
        "roots_only": {"type": "boolean", "default": false, "description": "Only sessions without a parent."},
        "created_from": {"type": "string", "format": "date-time"},
        "created_to": {"type": "string", "format": "date-time"},
        "updated_from": {"type": "string", "format": "date-time"},
        "updated_to": {"type": "string", "format": "date-time"}
    }));
    page_props(&mut p);
    object(p, &[])
}

fn create_session_schema() -> Value {
    object(
        props(json!({
            "name": {"type": "string", "description": "Display name."},
            "description": {"type": "string"},
            "key": {"type": "string", "description": "A unique key: calling again with it returns the same session."},
            "parent_id": id_prop("Parent session"),
            "tags": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object", "description": "Any JSON object."}
        })),
        &[],
    )
}

fn checkpoint_schema() -> Value {
    object(
        props(json!({
            "session_id": id_prop("Session"),
            "label": {"type": "string", "description": "A short label, e.g. `tests-green`."},
            "state": {"description": "Any JSON value to keep with the checkpoint (e.g. the plan so far)."}
        })),
        &["session_id", "label"],
    )
}

fn fork_schema() -> Value {
    object(
        props(json!({
            "session_id": id_prop("Session to fork"),
            "checkpoint_id": id_prop("Checkpoint of that session to fork at (default: its state now)"),
            "name": {"type": "string", "description": "Name of the fork (default: the source's name)."},
            "tags": {"type": "array", "items": {"type": "string"}}
        })),
        &["session_id"],
    )
}

fn memo_lookup_schema() -> Value {
    object(
        props(json!({
            "tool": {"type": "string", "description": "The tool's name, e.g. `pytest` or `http_get`."},
            "arguments": {"description": "The call's arguments (any JSON value, usually an object)."},
            "session_id": id_prop("Session to look from (its entries and its ancestors'; store-wide entries always count)")
        })),
        &["tool", "arguments"],
    )
}

fn memo_store_schema() -> Value {
    object(
        props(json!({
            "tool": {"type": "string", "description": "The tool's name."},
            "arguments": {"description": "The call's arguments, exactly as they will be looked up."},
            "artifact_id": id_prop("Artifact holding the result (from store_output)"),
            "session_id": id_prop("Scope the entry to this session and its descendants (default: store-wide)"),
            "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECONDS, "description": "How long results of this tool stay valid (applies to all its entries)."}
        })),
        &["tool", "arguments", "artifact_id"],
    )
}

/// Longest TTL a `memo_store` call may set (ten years).
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

// ---------------------------------------------------------------------------------------------
// Handlers

fn store_output(s: &Shared, a: &Args) -> ToolResult {
    let name = a.str("name")?;
    let kind: ArtifactKind = match a.opt_str("kind")? {
        None => ArtifactKind::ToolResult,
        Some(k) => k.parse().map_err(|e| a.refused("kind", e))?,
    };
    let mut new = NewArtifact::new(kind, name).tags(a.strings("tags")?);
    if let Some(m) = a.opt_object("metadata")? {
        new = new.metadata(m);
    }
    if let Some(m) = a.opt_str("mime_type")? {
        new = new.mime_type(m);
    }
    let given: Vec<&str> = ["content", "content_base64", "path"]
        .into_iter()
        .filter(|k| a.has(k))
        .collect();
    if given.len() != 1 {
        let which = if given.is_empty() {
            "none of them was given".to_string()
        } else {
            format!("{} were given", given.join(" and "))
        };
        return Err(ToolError::arg(
            a.spec(),
            given.get(1).copied().unwrap_or("content"),
            format!("give exactly one of content, content_base64 or path; {which}"),
        ));
    }
    let session = s.session_or_default(a.opt_session("session_id")?)?;
    let art = if let Some(text) = a.opt_str("content")? {
        s.store.put(session, new, text.as_bytes())
    } else if let Some(b64) = a.opt_str("content_base64")? {
        let bytes = cairn::Data {
            encoding: "base64".into(),
            data: b64.to_string(),
        }
        .bytes()
        .map_err(|_| {
            ToolError::arg(
                a.spec(),
                "content_base64",
                "is not valid base64 (standard alphabet A-Z a-z 0-9 + /, padded with =)",
            )
        })?;
        s.store.put(session, new, bytes)
    } else {
        let path = a.str("path")?;
        if !s.opts.allow_local_files {
            return Err(ToolError::arg(
                a.spec(),
                "path",
                "this server does not read local files; send the output as `content` instead",
            ));
        }
        let p = Path::new(path);
        if !p.is_file() {
            return Err(ToolError::arg(
                a.spec(),
                "path",
                format!("{path:?} is not a readable file on the server's machine"),
            ));
        }
        s.store.put_file(session, new, p)
    }
    .map_err(|e| match e.code() {
        "invalid_input" => a.refused_as(
            e,
            &[
                ("tag", "tags"),
                ("mime", "mime_type"),
                ("metadata", "metadata"),
            ],
            "name",
        ),
        "limit_exceeded" => {
            a.refused_as(e, &[("tag", "tags"), ("metadata", "metadata")], "content")
        }
        _ => ToolError::store(e),
    })?;
    let preview = s
        .store
        .preview(art.session_id, art.id)
        .map_err(ToolError::store)?;
    Ok(shape::stored(&art, &preview))
}

/// The part a `read_part` call asks for, and the limits, from its arguments.
pub(crate) fn part_of(a: &Args) -> ToolResult<(Part, PartLimits)> {
    let max_bytes = a.u64_in("max_bytes", DEFAULT_READ_BYTES, 1, MAX_READ_BYTES)?;
    let max_line = a.u64_in("max_line_bytes", DEFAULT_LINE_BYTES, 16, MAX_READ_BYTES)?;
    let limits = PartLimits {
        max_bytes,
        max_line_bytes: max_line as usize,
    };
    let mode = a.opt_str("mode")?.unwrap_or("head");
    // Arguments that belong to another mode are refused: a model that sends `lines` with
    // mode `grep` has misread the tool, and silently ignoring it would hide that.
    let allowed: &[&str] = match mode {
        "head" | "tail" => &["lines"],
        "lines" => &["start", "count"],
        "bytes" => &["offset", "length"],
        "grep" => &[
            "pattern",
            "context",
            "max_matches",
            "ignore_case",
            "start_line",
        ],
        "json" => &["path"],
        "json_lines" => &["path", "start", "count"],
        other => {
            return Err(ToolError::arg(
                a.spec(),
                "mode",
                format!("{other:?} is not a mode; use one of head, tail, lines, bytes, grep, json, json_lines"),
            ))
        }
    };
    for k in [
        "lines",
        "start",
        "count",
        "offset",
        "length",
        "pattern",
        "context",
        "max_matches",
        "ignore_case",
        "start_line",
        "path",
    ] {
        if a.has(k) && !allowed.contains(&k) {
            return Err(ToolError::arg(
                a.spec(),
                k,
                format!(
                    "does not apply to mode {mode:?}; mode {mode:?} takes: {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let big = u64::MAX / 2;
    let part = match mode {
        "head" => Part::Head {
            lines: a.u64_in("lines", DEFAULT_LINES, 1, big)?,
        },
        "tail" => Part::Tail {
            lines: a.u64_in("lines", DEFAULT_LINES, 1, big)?,
        },
        "lines" => Part::Lines {
            start: a.u64_in("start", 1, 1, big)?,
            count: a.u64_in("count", DEFAULT_LINES, 1, big)?,
        },
        "bytes" => Part::Bytes {
            offset: a.u64_in("offset", 0, 0, big)?,
            len: a.u64_in("length", max_bytes, 1, big)?,
        },
        "grep" => {
            let pattern = a.str("pattern").map_err(|_| {
                ToolError::arg(
                    a.spec(),
                    "pattern",
                    "mode grep needs a regular expression in `pattern`, e.g. \"error|FAILED\"",
                )
            })?;
            if pattern.is_empty() {
                return Err(ToolError::arg(
                    a.spec(),
                    "pattern",
                    "is empty; give a regular expression such as \"error|FAILED\"",
                ));
            }
            Part::Grep {
                pattern: pattern.to_string(),
                context: a.u64_in("context", 0, 0, u64::from(cairn::MAX_CONTEXT))? as u32,
                max_matches: a.u64_in(
                    "max_matches",
                    DEFAULT_GREP_MATCHES,
                    1,
                    u64::from(cairn::MAX_MATCHES),
                )? as u32,
                ignore_case: a.bool("ignore_case", false)?,
                start_line: a.u64_in("start_line", 1, 1, big)?,
            }
        }
        "json" => Part::Json {
            path: checked_path(a)?,
        },
        _ => Part::JsonLines {
            path: checked_path(a)?,
            start: a.u64_in("start", 1, 1, big)?,
            count: a.u64_in("count", DEFAULT_LINES, 1, big)?,
        },
    };
    Ok((part, limits))
}

fn checked_path(a: &Args) -> ToolResult<String> {
    let p = a.opt_str("path")?.unwrap_or("").to_string();
    cairn::to_pointer(&p).map_err(|e| a.refused("path", e))?;
    Ok(p)
}

fn read_part(s: &Shared, a: &Args) -> ToolResult {
    let (part, limits) = part_of(a)?;
    let art = s.artifact(a)?;
    let r = s
        .store
        .read_part_with(art.session_id, art.id, &part, &limits)
        .map_err(|e| match e.code() {
            // The library names the part's field (`pattern`, `range`, `path`): say it as ours.
            "invalid_input" | "limit_exceeded" => {
                let arg = match &part {
                    Part::Grep { .. } => "pattern",
                    Part::Json { .. } | Part::JsonLines { .. } => "path",
                    Part::Bytes { .. } => "offset",
                    _ => "mode",
                };
                a.refused(arg, e)
            }
            _ => ToolError::store(e),
        })?;
    Ok(shape::part(&art, &part, &limits, &r))
}

fn artifact_info(s: &Shared, a: &Args) -> ToolResult {
    let art = s.artifact(a)?;
    let preview = s
        .store
        .preview(art.session_id, art.id)
        .map_err(ToolError::store)?;
    Ok(shape::info(&art, &preview))
}

fn page_limit(a: &Args) -> ToolResult<usize> {
    Ok(a.u64_in("limit", DEFAULT_PAGE, 1, MAX_PAGE)? as usize)
}

/// The library query for a `query_artifacts` call.
pub(crate) fn query_of(a: &Args) -> ToolResult<Query> {
    let mut q = Query::new().limit(page_limit(a)?);
    if let Some(sid) = a.opt_session("session_id")? {
        q = q.session(sid).subtree(a.bool("subtree", false)?);
    } else if a.bool("subtree", false)? {
        return Err(ToolError::arg(
            a.spec(),
            "subtree",
            "applies only with session_id; give the session whose subtree to search",
        ));
    }
    for k in a.strings("kinds")? {
        let kind: ArtifactKind = k.parse().map_err(|e| a.refused("kinds", e))?;
        q = q.kind(kind);
    }
    for t in a.strings("tags_all")? {
        q = q.tag(t);
    }
    for t in a.strings("tags_any")? {
        q = q.any_tag(t);
    }
    if let Some(g) = a.opt_str("name_glob")? {
        q = q.name_glob(g);
    }
    let (min, max) = (a.opt_u64("min_size")?, a.opt_u64("max_size")?);
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            return Err(ToolError::arg(
                a.spec(),
                "min_size",
                format!("{lo} is larger than max_size {hi}"),
            ));
        }
    }
    if let Some(n) = min {
        q = q.min_size(n);
    }
    if let Some(n) = max {
        q = q.max_size(n);
    }
    if let Some(t) = a.opt_time("created_from")? {
        q = q.created_from(t);
    }
    if let Some(t) = a.opt_time("created_to")? {
        q = q.created_to(t);
    }
    q = q
        .latest_only(a.bool("latest_only", false)?)
        .descending(a.bool("descending", false)?);
    if let Some(c) = a.opt_str("cursor")? {
        q = q.cursor(c);
    }
    Ok(q)
}

fn query_artifacts(s: &Shared, a: &Args) -> ToolResult {
    let q = query_of(a)?;
    let page = s.store.query(&q).map_err(|e| match e.code() {
        "invalid_glob" => a.refused("name_glob", e),
        _ => a.refused_as(
            e,
            &[
                ("cursor", "cursor"),
                ("tag", "tags_all"),
                ("size", "min_size"),
                ("time", "created_from"),
            ],
            "cursor",
        ),
    })?;
    let items: Vec<Value> = page.items.iter().map(shape::artifact).collect();
    Ok(shape::page("artifacts", items, page.next_cursor))
}

fn list_sessions(s: &Shared, a: &Args) -> ToolResult {
    let mut f = SessionFilter::new().limit(page_limit(a)?);
    for st in a.strings("status")? {
        let status: SessionStatus = st.parse().map_err(|e| a.refused("status", e))?;
        f = f.status(status);
    }
    for t in a.strings("tags")? {
        f = f.tag(t);
    }
    if let Some(k) = a.opt_str("key")? {
        f = f.key(k);
    }
    let roots = a.bool("roots_only", false)?;
    match (a.opt_session("parent_id")?, roots) {
        (Some(_), true) => {
            return Err(ToolError::arg(
                a.spec(),
                "roots_only",
                "cannot be combined with parent_id: a root has no parent",
            ))
        }
        (Some(p), false) => f = f.parent(p),
        (None, true) => f = f.roots(),
        (None, false) => {}
    }
    f = f
        .created_between(a.opt_time("created_from")?, a.opt_time("created_to")?)
        .updated_between(a.opt_time("updated_from")?, a.opt_time("updated_to")?);
    if let Some(c) = a.opt_str("cursor")? {
        let id: SessionId = c.parse().map_err(|_| {
            ToolError::arg(
                a.spec(),
                "cursor",
                format!(
                    "{c:?} is not a cursor from a previous page; pass next_cursor back unchanged"
                ),
            )
        })?;
        f = f.after(id);
    }
    let page = s.store.list_sessions(&f).map_err(ToolError::store)?;
    let items: Vec<Value> = page.items.iter().map(shape::session).collect();
    Ok(shape::page("sessions", items, page.next_cursor))
}

fn create_session(s: &Shared, a: &Args) -> ToolResult {
    let mut new = NewSession::new();
    if let Some(n) = a.opt_str("name")? {
        new = new.name(n);
    }
    if let Some(d) = a.opt_str("description")? {
        new = new.description(d);
    }
    if let Some(p) = a.opt_session("parent_id")? {
        new = new.parent(p);
    }
    for t in a.strings("tags")? {
        new = new.tag(t);
    }
    if let Some(m) = a.opt_object("metadata")? {
        new = new.metadata(m);
    }
    let refine = |e: cairn::Error| -> ToolError {
        a.refused_as(
            e,
            &[
                ("tag", "tags"),
                ("key", "key"),
                ("description", "description"),
                ("metadata", "metadata"),
                ("parent", "parent_id"),
            ],
            "name",
        )
    };
    let (session, created) = match a.opt_str("key")? {
        Some(k) => s.store.get_or_create_by_key(k, new).map_err(refine)?,
        None => (s.store.create_session(new).map_err(refine)?, true),
    };
    let mut v = shape::session(&session);
    if let Value::Object(m) = &mut v {
        m.insert("created".into(), Value::Bool(created));
    }
    Ok(v)
}

fn checkpoint(s: &Shared, a: &Args) -> ToolResult {
    let session = a.session("session_id")?;
    let label = a.str("label")?;
    cairn::validate_label(label).map_err(|e| a.refused("label", e))?;
    let mut new = NewCheckpoint::new(label);
    if let Some(v) = a.opt_value("state") {
        new = new.state(v.clone());
    }
    let c: Checkpoint = s
        .store
        .create_checkpoint(session, new)
        .map_err(|e| match e.code() {
            "invalid_input" | "limit_exceeded" => a.refused("state", e),
            _ => ToolError::store(e),
        })?;
    Ok(shape::checkpoint(&c))
}

fn fork(s: &Shared, a: &Args) -> ToolResult {
    let source = a.session("session_id")?;
    let cp = a.opt_checkpoint("checkpoint_id")?;
    let mut new = NewSession::new();
    if let Some(n) = a.opt_str("name")? {
        new = new.name(n);
    }
    for t in a.strings("tags")? {
        new = new.tag(t);
    }
    let forked: Session = s.store.fork(source, cp, new).map_err(ToolError::store)?;
    Ok(shape::session(&forked))
}

fn memo_scope(a: &Args) -> ToolResult<MemoScope> {
    Ok(match a.opt_session("session_id")? {
        Some(s) => MemoScope::Session(s),
        None => MemoScope::Store,
    })
}

fn memo_error(a: &Args, e: cairn::Error) -> ToolError {
    a.refused_as(
        e,
        &[("tool", "tool"), ("memo_args", "arguments")],
        "arguments",
    )
}

fn memo_lookup(s: &Shared, a: &Args) -> ToolResult {
    let tool = a.str("tool")?;
    let args = a.opt_value("arguments").cloned().unwrap_or(Value::Null);
    let scope = memo_scope(a)?;
    let hit = s
        .store
        .memo_lookup(scope, tool, &args)
        .map_err(|e| memo_error(a, e))?;
    let Some(h) = hit else {
        return Ok(json!({
            "hit": false,
            "hint": "no stored result: run the tool, store its output with store_output, then memo_store it",
        }));
    };
    let preview = s
        .store
        .preview(h.artifact.session_id, h.artifact.id)
        .map_err(ToolError::store)?;
    Ok(json!({
        "hit": true,
        "artifact": shape::artifact(&h.artifact),
        "preview": shape::preview(&preview),
        "scope": h.scope,
        "stored_at": h.stored_at,
        "expires_at": h.expires_at,
    }))
}

fn memo_store(s: &Shared, a: &Args) -> ToolResult {
    let tool = a.str("tool")?;
    let args = a.opt_value("arguments").cloned().unwrap_or(Value::Null);
    let artifact = a.artifact("artifact_id")?;
    let scope = memo_scope(a)?;
    if let Some(ttl) = a.opt_u64("ttl_seconds")? {
        if ttl == 0 || ttl > MAX_TTL_SECONDS {
            return Err(ToolError::arg(
                a.spec(),
                "ttl_seconds",
                format!("{ttl} is out of range; use 1 to {MAX_TTL_SECONDS}"),
            ));
        }
        s.store
            .memo_set_ttl(tool, Some(std::time::Duration::from_secs(ttl)))
            .map_err(|e| memo_error(a, e))?;
    }
    let h = s
        .store
        .memo_store(scope, tool, &args, artifact)
        .map_err(|e| memo_error(a, e))?;
    Ok(json!({
        "stored": true,
        "key": h.key,
        "artifact_id": h.artifact.id,
        "scope": h.scope,
        "stored_at": h.stored_at,
        "expires_at": h.expires_at,
    }))
}

impl Shared {
    /// The artifact a call names (`artifact_id`, checked against `session_id` if given).
    fn artifact(&self, a: &Args) -> ToolResult<Artifact> {
        let id = a.artifact("artifact_id")?;
        let art = match a.opt_session("session_id")? {
            Some(sid) => self.store.artifact(sid, id),
            None => self.store.admin().artifact(id),
        };
        art.map_err(ToolError::store)
    }
}
