//! The blocking HTTP client of remote mode (`--server URL` / `CAIRN_SERVER`): the command line
//! talks to `cairn serve` instead of opening a store. Requests carry `CAIRN_TOKEN` as a bearer
//! token (never printed); responses decode into the library's own types, so the command
//! modules print them with the same printers as in local mode; error bodies
//! (`{"error":{"code","message"}}`) come back as a [`RemoteError`] with the server's code.
//!
//! A leaf of the front end: it imports nothing from this crate (`context` converts its errors
//! into the command line's failures).

use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use cairn::ContentHash;

/// The header that declares an upload's BLAKE3 hash (the server refuses content that does not
/// match it, and with an empty body reuses content the tenant already stores).
pub const HASH_HEADER: &str = "x-cairn-hash";

/// A failed request: the server's error code and message, or the client's own (`server_unreachable`,
/// `bad_response`, `usage`).
#[derive(Debug)]
pub struct RemoteError {
    /// Stable code: the server's (`session_not_found`, `invalid_input`...) or the client's.
    pub code: String,
    /// One line for people.
    pub message: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
}

impl RemoteError {
    fn client(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status: None,
        }
    }
}

/// What a call returns.
pub type RemoteResult<T> = Result<T, RemoteError>;

/// Query parameters, percent-encoded when the URL is built.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value` (repeatable).
    pub fn add(mut self, key: &str, value: impl ToString) -> Self {
        self.0.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds `key=value` when `value` is given.
    pub fn opt(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.add(key, v),
            None => self,
        }
    }

    /// Adds `key=true` when `on`.
    pub fn flag(self, key: &str, on: bool) -> Self {
        if on {
            self.add(key, "true")
        } else {
            self
        }
    }

    fn encode(&self) -> String {
        let mut q = String::new();
        for (k, v) in &self.0 {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(&encode(k));
            q.push('=');
            q.push_str(&encode(v));
        }
        q
    }
}

/// Percent-encodes one path segment or query value (everything but RFC 3986's unreserved
/// characters), so names with `/`, spaces or `%` reach the server intact.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A connection to one server.
pub struct Remote {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Remote")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Remote {
    /// A client for the server at `url` (`http://HOST:PORT`, optionally with a path prefix),
    /// sending `token` as a bearer token.
    pub fn new(url: &str, token: Option<String>) -> RemoteResult<Self> {
        let u = url.trim();
        let bad = |why: &str| {
            RemoteError::client(
                "usage",
                format!("--server {u:?}: {why}; give the URL `cairn serve` printed, e.g. http://127.0.0.1:7070"),
            )
        };
        if u.starts_with("https://") {
            return Err(bad(
                "this build speaks plain HTTP only; reach a TLS server through a local tunnel or \
                 reverse proxy on http://127.0.0.1",
            ));
        }
        let Some(rest) = u.strip_prefix("http://") else {
            return Err(bad("not an http:// URL"));
        };
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
            return Err(bad("no host, or a query or fragment in it"));
        }
        let token = token.filter(|t| !t.trim().is_empty());
        if let Some(t) = &token {
            if t.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(RemoteError::client(
                    "usage",
                    "CAIRN_TOKEN holds spaces or control characters; set it to the token \
                     `cairn token create` printed",
                ));
            }
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(concat!("cairn-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            base: u.trim_end_matches('/').to_string(),
            token,
            agent,
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn send_raw(
        &self,
        method: &str,
        path: &str,
        params: &Params,
        headers: &[(&str, String)],
        body: ureq::SendBody<'_>,
    ) -> RemoteResult<ureq::http::Response<ureq::Body>> {
        let uri = format!("{}{path}{}", self.base, params.encode());
        let mut b = ureq::http::Request::builder().method(method).uri(&uri);
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let req = b.body(body).map_err(|e| {
            RemoteError::client("usage", format!("cannot build a request for {uri}: {e}"))
        })?;
        let resp = self.agent.run(req).map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        Err(error_of(status, resp))
    }

    fn unreachable(&self, e: ureq::Error) -> RemoteError {
        RemoteError::client(
            "server_unreachable",
            format!(
                "cannot talk to the server at {}: {e}; is `cairn serve` running there \
                 (check --server / CAIRN_SERVER)?",
                self.base
            ),
        )
    }

    /// `GET path?params`, decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str, params: &Params) -> RemoteResult<T> {
        let resp = self.send_raw("GET", path, params, &[], ureq::SendBody::none())?;
        decode(resp)
    }

    /// `METHOD path?params` with a JSON body, decoded from JSON.
    pub fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        params: &Params,
        body: &impl Serialize,
    ) -> RemoteResult<T> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| RemoteError::client("other", format!("cannot encode the request: {e}")))?;
        let mut r: &[u8] = &bytes;
        let resp = self.send_raw(
            method,
            path,
            params,
            &[
                ("content-type", "application/json".into()),
                ("content-length", bytes.len().to_string()),
            ],
            ureq::SendBody::from_reader(&mut r),
        )?;
        decode(resp)
    }

    /// `DELETE path?params`, decoded from JSON.
    pub fn delete<T: DeserializeOwned>(&self, path: &str, params: &Params) -> RemoteResult<T> {
        let resp = self.send_raw("DELETE", path, params, &[], ureq::SendBody::none())?;
        decode(resp)
    }

    /// Streams `body` as the request body (chunked unless `len` is known) and decodes the JSON
    /// answer. With `hash`, the server checks the content against it.
    pub fn upload<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        params: &Params,
        body: &mut dyn Read,
        len: Option<u64>,
        hash: Option<&ContentHash>,
    ) -> RemoteResult<T> {
        let mut headers = vec![("content-type", "application/octet-stream".to_string())];
        if let Some(n) = len {
            headers.push(("content-length", n.to_string()));
        }
        if let Some(h) = hash {
            headers.push((HASH_HEADER, h.to_string()));
        }
        let resp = self.send_raw(
            method,
            path,
            params,
            &headers,
            ureq::SendBody::from_reader(body),
        )?;
        decode(resp)
    }

    /// `GET path?params` whose body is bytes: a reader over the streamed body.
    pub fn download(&self, path: &str, params: &Params) -> RemoteResult<ureq::BodyReader<'static>> {
        let resp = self.send_raw("GET", path, params, &[], ureq::SendBody::none())?;
        Ok(resp.into_body().into_reader())
    }
}

fn decode<T: DeserializeOwned>(resp: ureq::http::Response<ureq::Body>) -> RemoteResult<T> {
    let reader = resp.into_body().into_reader();
    serde_json::from_reader(std::io::BufReader::new(reader)).map_err(|e| {
        RemoteError::client(
            "bad_response",
            format!("the server's answer is not what this command line expects: {e}; is the server the same version?"),
        )
    })
}

/// The error a non-2xx response carries: its JSON `{"error":{"code","message"}}`, else a code
/// from the status.
fn error_of(status: u16, resp: ureq::http::Response<ureq::Body>) -> RemoteError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    let mut bytes = Vec::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(64 << 10)
        .read_to_end(&mut bytes);
    if let Ok(b) = serde_json::from_slice::<Body>(&bytes) {
        return RemoteError {
            code: b.error.code,
            message: b.error.message,
            status: Some(status),
        };
    }
    let code = match status {
        400 => "invalid_input",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        _ => "server_error",
    };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    RemoteError {
        code: code.into(),
        message: format!(
            "the server answered HTTP {status}{}{}",
            if text.is_empty() { "" } else { ": " },
            text.chars().take(200).collect::<String>()
        ),
        status: Some(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_names_intact() {
        assert_eq!(encode("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(encode("run-1_x.txt~"), "run-1_x.txt~");
        assert_eq!(encode("é"), "%C3%A9");
        let p = Params::new()
            .add("tag", "a b")
            .add("tag", "c")
            .flag("x", false)
            .flag("y", true)
            .opt("z", None::<String>);
        assert_eq!(p.encode(), "?tag=a%20b&tag=c&y=true");
        assert_eq!(Params::new().encode(), "");
    }

    #[test]
    fn urls_are_checked_and_the_token_never_shown() {
        for bad in [
            "",
            "localhost:7070",
            "ftp://x",
            "http://",
            "http:///x",
            "https://x",
        ] {
            let e = Remote::new(bad, None).unwrap_err();
            assert_eq!(e.code, "usage", "{bad}");
            assert!(e.message.contains("--server"), "{}", e.message);
        }
        let r = Remote::new("http://127.0.0.1:7070/", Some("cairn_secret".into())).unwrap();
        assert_eq!(r.url(), "http://127.0.0.1:7070");
        assert!(!format!("{r:?}").contains("cairn_secret"));
        let e = Remote::new("http://x", Some("a b".into())).unwrap_err();
        assert!(!e.message.contains("a b"), "{}", e.message);
    }

    #[test]
    fn a_closed_port_is_unreachable_not_a_panic() {
        // Bind then drop: the port is (almost certainly) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Remote::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let e = r
            .get::<serde_json::Value>("/healthz", &Params::new())
            .unwrap_err();
        assert_eq!(e.code, "server_unreachable");
        assert!(e.message.contains(&port.to_string()), "{}", e.message);
    }
}
