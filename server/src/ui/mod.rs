//! The web view at `/ui`: server-rendered HTML (maud templates, which escape every value) with
//! one small embedded script for live updates and "load more". Every page works without
//! JavaScript except the live updates.
//!
//! - Authentication: the same tokens as the API. A browser logs in with a form that takes a
//!   token and sets it in an `HttpOnly; SameSite=Strict` cookie scoped to `/ui`, so the token
//!   never appears in a URL and scripts cannot read it. An `Authorization: Bearer` header works
//!   too. In open mode (no tokens, loopback) no login is needed.
//! - Safety: a strict Content-Security-Policy on every response (scripts and styles only from
//!   `/ui/static/`, no inline script, style or event handler), `nosniff`, no framing, no
//!   referrer to other sites. Artifact bytes are only ever served as a download, or, for raster images, with
//!   their image type under a sandboxing policy.
//! - The live event stream of a session page is the API's SSE handler mounted under `/ui`, so
//!   the cookie authenticates it (EventSource cannot send headers).
//! - Every listing is paged by cursor and every content view reads a bounded part through the
//!   library's partial reads: no page loads all sessions, all artifacts or a whole large content.
//!
//! Layout: [`layout`] (page shell and small pieces), [`sessions`] (tree and session page),
//! [`artifacts`] (artifact page, download, diff), [`query`], [`overview`], [`highlight`] (the
//! syntax highlighter), [`json`] (foldable JSON).

pub mod artifacts;
pub mod highlight;
pub mod json;
pub mod layout;
pub mod overview;
pub mod query;
pub mod sessions;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cairn::Store;
use maud::{html, Markup};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// The cookie that carries the token of a logged-in browser.
pub const COOKIE: &str = "cairn_ui";

/// The Content-Security-Policy of every page: nothing inline, everything from this server.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The policy of served artifact bytes: nothing runs, even if opened directly.
pub const RAW_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'none'; sandbox";

/// The largest login form body read.
const MAX_FORM_BYTES: usize = 8 << 10;

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// The `/ui` routes with their own middleware (cookie or header authentication, concurrency
/// cap, timeout, security headers, log and metrics). Merge it into the application router.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(sessions::tree))
        .route("/ui/", get(sessions::tree))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/static/{file}", get(asset))
        .route("/ui/sessions/{id}", get(sessions::session_page))
        .route("/ui/sessions/{id}/live", get(crate::api::stream::stream))
        .route(
            "/ui/sessions/{id}/artifacts/{aid}",
            get(artifacts::artifact_page),
        )
        .route("/ui/sessions/{id}/artifacts/{aid}/raw", get(artifacts::raw))
        .route("/ui/sessions/{id}/diff", get(artifacts::diff_page))
        .route("/ui/query", get(query::query_page))
        .route("/ui/store", get(overview::overview))
        .route("/ui/{*rest}", get(not_found))
        .layer(axum::middleware::from_fn_with_state(state, layer))
}

/// Routes served without a login.
fn is_public(route: &str) -> bool {
    matches!(route, "/ui/login" | "/ui/logout" | "/ui/static/{file}")
}

/// The token a request carries: `Authorization: Bearer` first, then the cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        return Some(h.to_str().unwrap_or("\u{fffd}").to_string());
    }
    cookie_token(headers).map(|t| format!("Bearer {t}"))
}

/// The token in the `cairn_ui` cookie, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn security_headers(h: &mut HeaderMap) {
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it, browsers send `Origin: null` on the login form's POST.
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// The middleware of every `/ui` route.
async fn layer(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "/ui/{*rest}".to_string());
    let path = req.uri().path().to_string();
    let mut tenant = None;
    let mut response = 'run: {
        let _permit = match st.permits().clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                st.metrics().add_overload();
                break 'run UiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is busy (max_concurrency); reload the page in a moment.",
                )
                .into_response();
            }
        };
        if !is_public(&route) {
            let header = presented(req.headers());
            match st.authenticate(header.as_deref()) {
                Ok(p) => {
                    tenant = Some(p.tenant.clone());
                    req.extensions_mut().insert::<Principal>(p);
                }
                Err(e) => {
                    if method == Method::GET && !route.ends_with("/live") {
                        let target = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_else(|| "/ui".into());
                        let mut r = redirect(&format!(
                            "/ui/login?next={}",
                            form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
                        ));
                        if header.is_some() {
                            // A stale cookie (revoked token): drop it.
                            clear_cookie(&mut r);
                        }
                        break 'run r;
                    }
                    break 'run UiError::new(StatusCode::UNAUTHORIZED, e.message).into_response();
                }
            }
        }
        match tokio::time::timeout(st.config().limits.request_timeout(), next.run(req)).await {
            Ok(r) => r,
            Err(_) => UiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The page took longer than {} s (request_timeout_secs) to build.",
                    st.config().limits.request_timeout_secs
                ),
            )
            .into_response(),
        }
    };
    security_headers(response.headers_mut());
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    st.metrics()
        .record(&route, method.as_str(), status, elapsed);
    let line = serde_json::json!({
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": if status >= 500 { "error" } else { "info" },
        "method": method.as_str(),
        "path": path,
        "route": route,
        "status": status,
        "ms": (elapsed.as_secs_f64() * 1e6).round() / 1000.0,
        "tenant": tenant,
    });
    eprintln!("{line}");
    response
}

/// A 303 redirect to a path of this server.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn clear_cookie(r: &mut Response) {
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("cairn_ui=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0"),
    );
}

/// What a UI handler needs: the caller and the caller's tenant store.
pub struct Ui {
    /// The caller.
    pub principal: Principal,
    /// The caller's tenant store.
    pub store: Arc<Store>,
    /// Whether the server runs without tokens (no login, no logout button).
    pub open: bool,
}

impl FromRequestParts<AppState> for Ui {
    type Rejection = UiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, UiError> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| UiError::new(StatusCode::UNAUTHORIZED, "Log in first."))?;
        let store = st.store(&principal.tenant).await?;
        Ok(Ui {
            principal,
            store,
            open: st.open_mode(),
        })
    }
}

impl Ui {
    /// The page chrome for this caller.
    pub fn chrome(&self) -> layout::Chrome {
        layout::Chrome {
            tenant: self.principal.tenant.clone(),
            can_logout: !self.open,
        }
    }
}

/// An error shown as an HTML page with its status.
#[derive(Debug)]
pub struct UiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong and what to do.
    pub message: String,
}

impl UiError {
    /// An error page.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: a form field or parameter is wrong.
    pub fn invalid(what: &str, why: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("Invalid {what}: {why}"))
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        Self::new(e.status, e.message)
    }
}

impl From<cairn::Error> for UiError {
    fn from(e: cairn::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let body = layout::page(
            &title,
            None,
            html! {
                h1 { (title) }
                p.error role="alert" { (self.message) }
                p { a href="/ui" { "Back to the sessions" } }
            },
        );
        (self.status, Html(body)).into_response()
    }
}

/// An HTML page as a response.
pub struct Html(pub Markup);

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            self.0.into_string(),
        )
            .into_response()
    }
}

/// What UI handlers return.
pub type UiResult<T = Html> = Result<T, UiError>;

/// Runs blocking store work (and the rendering that goes with it) on the blocking pool.
pub async fn blocking<T, F>(f: F) -> UiResult<T>
where
    F: FnOnce() -> UiResult<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("building the page failed: {e}"),
        )),
    }
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, ty) = match file.as_str() {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => return UiError::new(StatusCode::NOT_FOUND, "No such file.").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> UiError {
    UiError::new(
        StatusCode::NOT_FOUND,
        "No such page. The session tree is at /ui.",
    )
}

/// Where to go after login: only a path of the web view, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.starts_with("/ui/login") =>
        {
            n.to_string()
        }
        _ => "/ui".to_string(),
    }
}

fn query_value(q: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn login_form(next: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Log in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.login method="post" action="/ui/login" {
            input type="hidden" name="next" value=(next);
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="current-password"
                required placeholder="cairn_..." aria-describedby="token-help";
            p #token-help .hint { "A token made with " code { "cairn token create" } ". It is kept in an HttpOnly cookie of this site, never in a URL." }
            button type="submit" { "Log in" }
        }
    }
}

async fn login_page(
    State(st): State<AppState>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Html {
    let next = safe_next(query_value(q.as_deref(), "next").as_deref());
    if st.open_mode() {
        return Html(layout::page(
            "Log in",
            None,
            html! {
                h1 { "No login needed" }
                p { "This server has no tokens and listens on a loopback address: it serves the tenant \"default\" to anyone on this machine." }
                p { a href=(next) { "Open the web view" } }
            },
        ));
    }
    Html(layout::page("Log in", None, login_form(&next, None)))
}

/// Whether a POST came from this site (when the browser says where it came from).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

async fn login(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if !same_origin(&headers) {
        return UiError::new(
            StatusCode::FORBIDDEN,
            "The login form was sent from another site; log in from this server's own /ui/login page.",
        )
        .into_response();
    }
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return UiError::invalid("login form", "it is larger than 8 KiB or unreadable")
                .into_response()
        }
    };
    let mut token = None;
    let mut next = None;
    for (k, v) in form_urlencoded::parse(&bytes) {
        match k.as_ref() {
            "token" => token = Some(v.trim().to_string()),
            "next" => next = Some(v.into_owned()),
            _ => {}
        }
    }
    let next = safe_next(next.as_deref());
    let fail = |msg: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Html(layout::page("Log in", None, login_form(&next, Some(msg)))),
        )
            .into_response()
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return fail("Enter a token.");
    };
    // Only token characters go into the cookie header.
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return fail("That is not a Cairn token (cairn_ followed by 64 hex digits).");
    }
    if st.authenticate(Some(&format!("Bearer {token}"))).is_err() {
        return fail("The token is not valid (unknown or revoked).");
    }
    let mut r = redirect(&next);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/ui"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return UiError::new(
            StatusCode::FORBIDDEN,
            "Log out from this server's own page.",
        )
        .into_response();
    }
    let mut r = redirect("/ui/login");
    clear_cookie(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_web_view() {
        assert_eq!(safe_next(Some("/ui/sessions/x?a=1")), "/ui/sessions/x?a=1");
        assert_eq!(safe_next(Some("/ui?status=failed")), "/ui?status=failed");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/v1/sessions",
            "/ui//x",
            "/ui/login",
            "/uix",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cairn_ui=cairn_abc ; b=2"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("cairn_abc"));
        assert_eq!(presented(&h).as_deref(), Some("Bearer cairn_abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            presented(&h).as_deref(),
            Some("Bearer x"),
            "the header wins"
        );
        let mut empty = HeaderMap::new();
        empty.insert(header::COOKIE, HeaderValue::from_static("cairn_ui="));
        assert_eq!(cookie_token(&empty), None);
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin: a same-site form or a tool");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
