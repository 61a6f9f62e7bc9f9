//! Partial reads and previews: `GET /v1/artifacts/{id}/read` (a byte range, a line range, head,
//! tail, grep, a JSON path or JSON-lines values, as `cairn::Store::read_part_with` returns them)
//! and `GET /v1/artifacts/{id}/preview`. Only verified bytes are returned; the result says what
//! was left out and where to continue.

use axum::extract::RawQuery;
use axum::http::Method;
use axum::Json;
use cairn::{ArtifactId, Part, PartLimits, PartResult, Preview};

use crate::api::{Params, Routes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{blocking, Path, Reader};

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/artifacts/{id}/read", read).add(
        Method::GET,
        "/v1/artifacts/{id}/preview",
        preview,
    )
}

/// Every query parameter of `read`.
const READ_PARAMS: &[&str] = &[
    "part",
    "offset",
    "len",
    "start",
    "count",
    "lines",
    "pattern",
    "context",
    "max_matches",
    "ignore_case",
    "start_line",
    "path",
    "max_bytes",
    "max_line_bytes",
];

fn need<T: std::str::FromStr>(p: &Params, name: &str, part: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    p.parse_opt(name)?
        .ok_or_else(|| ApiError::invalid(name, format!("missing: part={part} needs {name}")))
}

fn bad_part(kind: &str) -> ApiError {
    ApiError::invalid(
        "part",
        format!("{kind:?}: use bytes, lines, head, tail, grep, json or json_lines"),
    )
}

/// The part a query asks for.
fn part_of(p: &Params) -> ApiResult<Part> {
    let kind = p.get("part").unwrap_or("head");
    Ok(match kind {
        "bytes" => Part::Bytes {
            offset: p.parse_opt("offset")?.unwrap_or(0),
            len: p.parse_opt("len")?.unwrap_or(u64::MAX),
        },
        "lines" => Part::Lines {
            start: p.parse_opt("start")?.unwrap_or(1),
            count: p.parse_opt("count")?.unwrap_or(u64::MAX),
        },
        "head" => Part::Head {
            lines: p.parse_opt("lines")?.unwrap_or(20),
        },
        "tail" => Part::Tail {
            lines: p.parse_opt("lines")?.unwrap_or(20),
        },
        "grep" => Part::Grep {
            pattern: need(p, "pattern", kind)?,
            context: p.parse_opt("context")?.unwrap_or(0),
            max_matches: p
                .parse_opt("max_matches")?
                .unwrap_or(cairn::DEFAULT_MATCHES),
            ignore_case: p.flag("ignore_case")?,
            start_line: p.parse_opt("start_line")?.unwrap_or(1),
        },
        "json" => Part::Json {
            path: p.get("path").unwrap_or("").to_string(),
        },
        "json_lines" => Part::JsonLines {
            path: p.get("path").unwrap_or("").to_string(),
            start: p.parse_opt("start")?.unwrap_or(1),
            count: p.parse_opt("count")?.unwrap_or(u64::MAX),
        },
        other => return Err(bad_part(other)),
    })
}

/// One part of an artifact, verified, with what was skipped or truncated and what it cost.
#[utoipa::path(get, path = "/v1/artifacts/{id}/read", tag = "artifacts",
    params(("id" = ArtifactId, Path, description = "Artifact id"),
        ("part" = Option<String>, Query, description = "bytes, lines, head (default), tail, grep, json or json_lines"),
        ("offset" = Option<u64>, Query, description = "part=bytes: first byte (0-based, default 0)"),
        ("len" = Option<u64>, Query, description = "part=bytes: how many bytes (default: to the end, up to max_bytes)"),
        ("start" = Option<u64>, Query, description = "part=lines or json_lines: first line (1-based, default 1)"),
        ("count" = Option<u64>, Query, description = "part=lines or json_lines: how many lines (default: to the end, up to max_bytes)"),
        ("lines" = Option<u64>, Query, description = "part=head or tail: how many lines (default 20)"),
        ("pattern" = Option<String>, Query, description = "part=grep: a regular expression (Rust regex syntax)"),
        ("context" = Option<u32>, Query, description = "part=grep: context lines before and after each match (default 0)"),
        ("max_matches" = Option<u32>, Query, description = "part=grep: stop after this many matches (default 100)"),
        ("ignore_case" = Option<bool>, Query, description = "part=grep: case-insensitive"),
        ("start_line" = Option<u64>, Query, description = "part=grep: first line to search (continue from next_line)"),
        ("path" = Option<String>, Query, description = "part=json or json_lines: a JSON pointer (/a/0) or path (a[0].b)"),
        ("max_bytes" = Option<u64>, Query, description = "Most bytes of returned text (default 65536, at most 16 MiB)"),
        ("max_line_bytes" = Option<usize>, Query, description = "Most bytes of one returned line (default 4096)")),
    responses((status = 200, description = "The part", body = PartResult),
        (status = 404, description = "No such artifact", body = ErrorBody),
        (status = 422, description = "A JSON document over the parse limit", body = ErrorBody)))]
pub async fn read(
    Reader(store): Reader,
    Path(id): Path<ArtifactId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<PartResult>> {
    let p = Params::parse(q.as_deref(), READ_PARAMS)?;
    // A parameter of another part (`pattern` with part=head) is refused, not ignored.
    let own: &[&str] = match p.get("part").unwrap_or("head") {
        "bytes" => &["offset", "len"],
        "lines" => &["start", "count"],
        "head" | "tail" => &["lines"],
        "grep" => &[
            "pattern",
            "context",
            "max_matches",
            "ignore_case",
            "start_line",
        ],
        "json" => &["path"],
        "json_lines" => &["path", "start", "count"],
        other => return Err(bad_part(other)),
    };
    let known: Vec<&str> = ["part", "max_bytes", "max_line_bytes"]
        .iter()
        .chain(own)
        .copied()
        .collect();
    let p = Params::parse(q.as_deref(), &known)?;
    let part = part_of(&p)?;
    let d = PartLimits::default();
    let limits = PartLimits {
        max_bytes: p.parse_opt("max_bytes")?.unwrap_or(d.max_bytes),
        max_line_bytes: p.parse_opt("max_line_bytes")?.unwrap_or(d.max_line_bytes),
    };
    Ok(Json(
        blocking(move || {
            // The tenant's store holds only its own artifacts: an id from elsewhere is "not found".
            let a = store.admin().artifact(id)?;
            store.read_part_with(a.session_id, id, &part, &limits)
        })
        .await?,
    ))
}

/// The preview of an artifact: sizes, line count, detected type, head and tail, JSON keys.
#[utoipa::path(get, path = "/v1/artifacts/{id}/preview", tag = "artifacts",
    params(("id" = ArtifactId, Path, description = "Artifact id")),
    responses((status = 200, description = "The preview", body = Preview),
        (status = 404, description = "No such artifact", body = ErrorBody)))]
pub async fn preview(
    Reader(store): Reader,
    Path(id): Path<ArtifactId>,
) -> ApiResult<Json<Preview>> {
    Ok(Json(
        blocking(move || {
            let a = store.admin().artifact(id)?;
            store.preview(a.session_id, id)
        })
        .await?,
    ))
}
