//! Artifact content: streamed, verified, with `ETag` = the content hash, `If-None-Match`
//! (304) and single `Range: bytes=` requests (206, or 416 when unsatisfiable).

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn::{ArtifactId, ContentHash};

use crate::api::Routes;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{blocking, Path, Reader};
use crate::streaming::stream_out;

/// Content up to this size is read (and verified) whole in the same blocking call as the
/// artifact lookup and answered as one buffer; larger content streams through a blocking
/// reader in [`crate::streaming::CHUNK`] pieces. 64 KiB is the store's inline threshold too:
/// such content is one engine read, and a buffer of it costs less than a streaming thread.
pub const WHOLE_ANSWER_MAX: u64 = 64 << 10;

/// What the blocking call found.
enum Fetched {
    /// The `If-None-Match` ETag matched.
    NotModified,
    /// The whole content, verified.
    Whole(Bytes),
    /// A verified reader over large content.
    Stream(Box<dyn std::io::Read + Send>),
}

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/artifacts/{id}/content", content)
}

/// A byte range resolved against the content size: `start..start+len`.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) Range header: the whole content.
    Whole,
    /// One satisfiable range.
    Part {
        /// First byte.
        start: u64,
        /// Length (at least 1).
        len: u64,
    },
    /// A range that lies outside the content.
    Unsatisfiable,
}

/// Resolves a `Range` header value against `size`. Only one `bytes` range is honoured; other
/// units, several ranges and malformed values are ignored (the whole content is sent), as
/// RFC 9110 allows.
pub fn resolve_range(value: Option<&str>, size: u64) -> RangeAsk {
    let Some(v) = value else {
        return RangeAsk::Whole;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeAsk::Whole;
        };
        if n == 0 || size == 0 {
            return RangeAsk::Unsatisfiable;
        }
        let n = n.min(size);
        return RangeAsk::Part {
            start: size - n,
            len: n,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeAsk::Whole;
    };
    let end = if b.is_empty() {
        None
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => Some(e),
            _ => return RangeAsk::Whole,
        }
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    let last = end.map_or(size - 1, |e| e.min(size - 1));
    RangeAsk::Part {
        start,
        len: last - start + 1,
    }
}

fn etag(hash: &ContentHash) -> String {
    format!("\"{hash}\"")
}

/// Whether an `If-None-Match` value matches this content.
fn none_match(value: &str, hash: &ContentHash) -> bool {
    let want = hash.to_string();
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == want)
}

/// The content of an artifact, streamed and verified against its hash.
#[utoipa::path(get, path = "/v1/artifacts/{id}/content", tag = "artifacts",
    params(("id" = ArtifactId, Path, description = "Artifact id"),
        ("Range" = Option<String>, Header, description = "One range: bytes=START-END, bytes=START- or bytes=-SUFFIX"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag (the quoted content hash): 304 when it matches")),
    responses((status = 200, description = "The content", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("ETag" = String, description = "The quoted BLAKE3 content hash"))),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("Content-Range" = String, description = "bytes START-END/SIZE"))),
        (status = 304, description = "Not modified (the ETag matched)"),
        (status = 404, description = "No such artifact", body = ErrorBody),
        (status = 416, description = "The range is outside the content", body = ErrorBody)))]
pub async fn content(
    Reader(store): Reader,
    Path(id): Path<ArtifactId>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // One trip to the blocking pool: the record, then (unless the ETag matched) the content
    // itself when small, or an open verified reader when large.
    let fetched = blocking(move || {
        let a = store.admin().artifact(id)?;
        if if_none_match.is_some_and(|v| none_match(&v, &a.hash)) {
            return Ok((a, Fetched::NotModified));
        }
        if a.size <= WHOLE_ANSWER_MAX {
            // Verified against the hash before the first byte is sent.
            let bytes = store.admin().read(id)?;
            return Ok((a, Fetched::Whole(Bytes::from(bytes))));
        }
        let reader = store.admin().open_reader(id)?;
        Ok((a, Fetched::Stream(reader)))
    })
    .await?;
    let (a, body) = fetched;
    let tag = etag(&a.hash);
    let body = match body {
        Fetched::NotModified => {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&tag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            return Ok(r);
        }
        other => other,
    };
    let range = resolve_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        a.size,
    );
    let (status, start, len) = match range {
        RangeAsk::Whole => (StatusCode::OK, 0, a.size),
        RangeAsk::Part { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
        RangeAsk::Unsatisfiable => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the range lies outside the content ({} bytes)", a.size),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", a.size)) {
                e.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(e);
        }
    };
    let body = match body {
        Fetched::Whole(bytes) => {
            // start + len <= size == bytes.len() (resolve_range keeps ranges inside the
            // content, and the library checked the length when it verified the hash).
            let (s, l) = (
                usize::try_from(start).unwrap_or(usize::MAX),
                usize::try_from(len).unwrap_or(usize::MAX),
            );
            match s.checked_add(l).filter(|end| *end <= bytes.len()) {
                Some(end) => Body::from(bytes.slice(s..end)),
                None => {
                    return Err(ApiError::internal(format!(
                        "artifact {id}: the content is {} bytes, its record says {}",
                        bytes.len(),
                        a.size
                    )))
                }
            }
        }
        Fetched::Stream(reader) => stream_out(reader, start, len),
        Fetched::NotModified => Body::empty(),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    let mime = a
        .mime_type
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, mime);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", start + len - 1, a.size))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        assert_eq!(resolve_range(None, 10), Whole);
        assert_eq!(
            resolve_range(Some("bytes=0-3"), 10),
            Part { start: 0, len: 4 }
        );
        assert_eq!(
            resolve_range(Some("bytes=8-"), 10),
            Part { start: 8, len: 2 }
        );
        assert_eq!(
            resolve_range(Some("bytes=5-100"), 10),
            Part { start: 5, len: 5 }
        );
        assert_eq!(
            resolve_range(Some("bytes=-3"), 10),
            Part { start: 7, len: 3 }
        );
        assert_eq!(
            resolve_range(Some("bytes=-30"), 10),
            Part { start: 0, len: 10 }
        );
        assert_eq!(resolve_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(resolve_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(resolve_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(resolve_range(Some("bytes=0-1,4-5"), 10), Whole);
        assert_eq!(resolve_range(Some("items=0-1"), 10), Whole);
        assert_eq!(resolve_range(Some("bytes=5-2"), 10), Whole);
        assert_eq!(resolve_range(Some("bytes=x-2"), 10), Whole);
    }

    #[test]
    fn if_none_match() {
        let h = ContentHash::of(b"x");
        assert!(none_match(&format!("\"{h}\""), &h));
        assert!(none_match(&format!("W/\"{h}\", \"abc\""), &h));
        assert!(none_match("*", &h));
        assert!(!none_match("\"abc\"", &h));
    }
}
