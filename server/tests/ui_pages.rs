//! The web view (`/ui`) over real HTTP: the cookie login, escaping of stored content, the
//! security headers, downloads, tenant isolation and paging. Browser tests are in tests/ui/.

use crate::common;

use std::io::Read;

use common::TestServer;
use serde_json::json;
use ureq::http;
use ureq::Agent;

/// A client that does not follow redirects and sends what it is told.
struct Browser {
    base: String,
    agent: Agent,
}

struct Page {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

impl Browser {
    fn new(base: &str) -> Self {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .new_agent();
        Self {
            base: base.to_string(),
            agent,
        }
    }

    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Page {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = self.agent.run(b.body(body).unwrap()).unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let mut bytes = Vec::new();
        r.body_mut()
            .as_reader()
            .take(8 << 20)
            .read_to_end(&mut bytes)
            .unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let c = cookie.map(|c| format!("cairn_ui={c}"));
        let h: Vec<(&str, &str)> = c.iter().map(|c| ("cookie", c.as_str())).collect();
        self.send("GET", path, &h, Vec::new())
    }

    fn login(&self, token: &str, next: &str, origin: Option<&str>) -> Page {
        let form = form_body(&[("token", token), ("next", next)]);
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        self.send("POST", "/ui/login", &h, form.into_bytes())
    }
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(k);
        s.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                s.push(b as char);
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
    }
    s
}

/// Whether HTML holds an attribute like ` onload=`.
fn has_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        !word.is_empty() && rest[word.len()..].starts_with('=')
    })
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

#[test]
fn login_sets_an_httponly_strict_cookie_that_opens_the_pages() {
    let t = TestServer::start();
    let token = t.token("acme", false, false);
    let b = Browser::new(&t.url);

    let anon = b.get("/ui?status=failed", None);
    assert_eq!(anon.status, 303, "{}", anon.body);
    assert_eq!(
        anon.header("location").as_deref(),
        Some("/ui/login?next=%2Fui%3Fstatus%3Dfailed")
    );
    let form = b.get("/ui/login?next=%2Fui", None);
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains("method=\"post\""),
        "the token goes in a POST body"
    );
    assert!(form.body.contains("type=\"password\""));

    let wrong = b.login(&format!("cairn_{}", "0".repeat(64)), "/ui", None);
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    assert!(wrong.body.contains("not valid"));
    let junk = b.login("x; Path=/; Domain=evil", "/ui", None);
    assert_eq!(junk.status, 401, "header characters never reach the cookie");
    assert!(junk.header("set-cookie").is_none());

    let ok = b.login(&token, "/ui?status=failed", None);
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(ok.header("location").as_deref(), Some("/ui?status=failed"));
    let cookie = ok.header("set-cookie").expect("a cookie");
    assert!(
        cookie.starts_with(&format!("cairn_ui={token};")),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    let home = b.get("/ui", Some(&token));
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("tenant <strong>acme</strong>"));
    assert!(
        !home.body.contains(&token),
        "the token is never written into a page"
    );

    // A login to another site's address lands on the web view instead.
    let away = b.login(&token, "https://evil.example/", None);
    assert_eq!(away.header("location").as_deref(), Some("/ui"));
    // A form posted from another site is refused.
    let cross = b.login(&token, "/ui", Some("http://evil.example"));
    assert_eq!(cross.status, 403);
    assert!(cross.header("set-cookie").is_none());
    let same = b.login(&token, "/ui", Some(&format!("http://{}", host_of(&t.url))));
    assert_eq!(same.status, 303);

    // Log out clears the cookie.
    let out = b.send("POST", "/ui/logout", &[], Vec::new());
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));

    // A revoked token's cookie no longer opens anything.
    let id = cairn_server::auth::load_tokens(t.data()).unwrap().tokens[0]
        .id
        .clone();
    cairn_server::auth::revoke_token(t.data(), &id).unwrap();
    let stale = b.get("/ui", Some(&token));
    assert_eq!(stale.status, 303);
    assert!(stale.header("location").unwrap().starts_with("/ui/login"));
}

#[test]
fn the_cookie_authenticates_the_live_event_stream() {
    let t = TestServer::start();
    let token = t.token("default", false, false);
    let s = t
        .client(&token)
        .json("POST", "/v1/sessions", &json!({"name": "live"}))
        .json();
    let id = s["id"].as_str().unwrap().to_string();
    let b = Browser::new(&t.url);
    let anon = b.get(&format!("/ui/sessions/{id}/live"), None);
    assert_eq!(
        anon.status, 401,
        "an event stream is refused, not redirected"
    );

    // With the cookie: an event stream that replays the log after Last-Event-ID 0.
    let req = http::Request::builder()
        .uri(format!("{}/ui/sessions/{id}/live", t.url))
        .header("cookie", format!("cairn_ui={token}"))
        .header("last-event-id", "0")
        .body(())
        .unwrap();
    let mut r = b.agent.run(req).unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("content-type").unwrap().to_str().unwrap(),
        "text/event-stream"
    );
    let mut first = [0u8; 256];
    let n = r.body_mut().as_reader().read(&mut first).unwrap();
    let text = String::from_utf8_lossy(&first[..n]);
    assert!(text.contains("event: created"), "{text}");
}

#[test]
fn stored_markup_is_shown_as_text_everywhere() {
    let t = TestServer::start();
    let c = t.anon();
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let s = c
        .json(
            "POST",
            "/v1/sessions",
            &json!({"name": evil, "description": evil, "metadata": {"k": evil}}),
        )
        .json();
    let sid = s["id"].as_str().unwrap();
    let a = c
        .bytes(
            "PUT",
            &format!("/v1/sessions/{sid}/artifacts/x%3Cb%3E.txt?kind=tool_result&metadata=%7B%22m%22%3A%22%3Cscript%3E%22%7D"),
            &[],
            evil.as_bytes().to_vec(),
        )
        .json();
    let aid = a["id"].as_str().unwrap();
    let j = c
        .bytes(
            "PUT",
            &format!("/v1/sessions/{sid}/artifacts/doc.json?kind=tool_result"),
            &[],
            serde_json::to_vec(&json!({"html": evil})).unwrap(),
        )
        .json();
    let jid = j["id"].as_str().unwrap();
    let b = Browser::new(&t.url);
    let pages = [
        "/ui".to_string(),
        format!("/ui/sessions/{sid}"),
        format!("/ui/sessions/{sid}/artifacts/{aid}"),
        format!("/ui/sessions/{sid}/artifacts/{aid}?view=bytes"),
        format!("/ui/sessions/{sid}/artifacts/{jid}"),
        format!("/ui/sessions/{sid}/artifacts/{jid}?view=text"),
        "/ui/query?name=*".to_string(),
        format!("/ui/sessions/{sid}/diff?name=x%3Cb%3E.txt&from=1&to=1"),
    ];
    for p in &pages {
        let page = b.get(p, None);
        assert_eq!(page.status, 200, "{p}: {}", page.body);
        assert!(!page.body.contains("<script>alert"), "{p} has live markup");
        assert!(!page.body.contains("<img src=x"), "{p} has live markup");
        assert!(!page.body.contains("<b>"), "{p} has live markup");
        assert_eq!(
            page.body.matches("<script").count(),
            1,
            "{p}: only the page's own script element"
        );
        assert!(page
            .body
            .contains("<script src=\"/ui/static/ui.js\" defer></script>"));
    }
    let art = b.get(&format!("/ui/sessions/{sid}/artifacts/{aid}"), None);
    assert!(
        art.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "the content is shown, escaped"
    );
    // A hostile name in a search box comes back escaped in the form.
    let q = b.get("/ui?q=%22%3E%3Cscript%3Ealert(3)%3C%2Fscript%3E", None);
    assert!(!q.body.contains("<script>alert(3)"));
    assert!(q.body.contains("&quot;&gt;&lt;script&gt;alert(3)"));
}

#[test]
fn every_response_carries_the_security_headers() {
    let t = TestServer::start();
    let b = Browser::new(&t.url);
    for p in [
        "/ui",
        "/ui/login",
        "/ui/query",
        "/ui/store",
        "/ui/nope",
        "/ui/sessions/bad-id",
    ] {
        let page = b.get(p, None);
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{p}: {csp}");
        assert!(csp.contains("style-src 'self'"), "{p}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{p}: {csp}");
        assert_eq!(
            page.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{p}"
        );
        assert_eq!(
            page.header("x-frame-options").as_deref(),
            Some("DENY"),
            "{p}"
        );
        assert!(!has_handler(&page.body), "{p}: no inline event handler");
        assert!(!page.body.contains("style="), "{p}: no inline style");
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html"),
            "{p}: errors are pages too"
        );
    }
    assert_eq!(b.get("/ui/nope", None).status, 404);
    let bad = b.get("/ui/sessions/bad-id", None);
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("Invalid session id"));
    let js = b.get("/ui/static/ui.js", None);
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(
        !js.body.contains("innerHTML"),
        "the script never builds HTML from strings"
    );
}

#[test]
fn bytes_are_a_download_and_only_raster_images_show_inline() {
    let t = TestServer::start();
    let c = t.anon();
    let sid = c.json("POST", "/v1/sessions", &json!({})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |name: &str, mime: &str, body: &[u8]| {
        c.bytes(
            "PUT",
            &format!("/v1/sessions/{sid}/artifacts/{name}?kind=tool_result&mime_type={mime}"),
            &[],
            body.to_vec(),
        )
        .json()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let svg = put(
        "x.svg",
        "image%2Fsvg%2Bxml",
        b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
    );
    let png = put("x.png", "image%2Fpng", b"\x89PNG\r\n\x1a\n0000");
    let b = Browser::new(&t.url);
    let raw = b.get(
        &format!("/ui/sessions/{sid}/artifacts/{svg}/raw?inline=1"),
        None,
    );
    assert_eq!(raw.status, 200);
    assert_eq!(
        raw.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(raw
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    assert!(raw
        .header("content-security-policy")
        .unwrap()
        .contains("sandbox"));
    assert!(
        raw.body.contains("onload"),
        "the bytes are served unchanged"
    );
    let img = b.get(
        &format!("/ui/sessions/{sid}/artifacts/{png}/raw?inline=1"),
        None,
    );
    assert_eq!(img.header("content-type").as_deref(), Some("image/png"));
    assert!(img
        .header("content-security-policy")
        .unwrap()
        .contains("sandbox"));
    let page = b.get(&format!("/ui/sessions/{sid}/artifacts/{png}"), None);
    assert!(page.body.contains(&format!(
        "<img class=\"artifact-image\" src=\"/ui/sessions/{sid}/artifacts/{png}/raw?inline=1\""
    )));
    let svg_page = b.get(&format!("/ui/sessions/{sid}/artifacts/{svg}"), None);
    assert!(
        !svg_page.body.contains("<img class"),
        "an SVG is shown as text"
    );
}

#[test]
fn a_tenant_sees_only_its_own_sessions() {
    let t = TestServer::start();
    let a = t.token("alpha", false, false);
    let b_tok = t.token("beta", false, false);
    let sid = t
        .client(&a)
        .json("POST", "/v1/sessions", &json!({"name": "alpha-secret"}))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Browser::new(&t.url);
    assert!(b.get("/ui", Some(&a)).body.contains("alpha-secret"));
    assert!(!b.get("/ui", Some(&b_tok)).body.contains("alpha-secret"));
    let other = b.get(&format!("/ui/sessions/{sid}"), Some(&b_tok));
    assert_eq!(other.status, 404, "{}", other.body);
}

#[test]
fn the_tree_pages_by_cursor_and_search_finds_by_name() {
    let t = TestServer::start();
    let c = t.anon();
    let mut ids = Vec::new();
    for i in 0..60 {
        let s = c.json(
            "POST",
            "/v1/sessions",
            &json!({"name": format!("run-{i:03}")}),
        );
        ids.push(s.json()["id"].as_str().unwrap().to_string());
    }
    for id in &ids[10..13] {
        assert_eq!(
            c.json(
                "POST",
                &format!("/v1/sessions/{id}/fail"),
                &json!({"reason": "boom"})
            )
            .status,
            200
        );
    }
    for id in &ids[55..57] {
        assert_eq!(
            c.json("POST", &format!("/v1/sessions/{id}/complete"), &json!({}))
                .status,
            200
        );
    }
    let b = Browser::new(&t.url);
    let first = b.get("/ui", None);
    assert_eq!(first.body.matches("class=\"session\"").count(), 50);
    assert!(first.body.contains("run-000") && first.body.contains("run-049"));
    assert!(!first.body.contains("run-050"));
    let next = first
        .body
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a next-page link")
        .replace("&amp;", "&");
    let second = b.get(&next, None);
    assert_eq!(second.body.matches("class=\"session\"").count(), 10);
    assert!(second.body.contains("run-050") && second.body.contains("run-059"));
    assert!(!second.body.contains("run-049"));
    let found = b.get("/ui?q=RUN-05", None);
    assert_eq!(found.body.matches("class=\"session\"").count(), 10);
    assert!(found.body.contains("Searched 60 sessions"));
    // Two statuses: both status indexes, merged in id order.
    let two = b.get("/ui?status=failed&status=completed", None);
    assert_eq!(
        two.body.matches("class=\"session\"").count(),
        5,
        "{}",
        two.body
    );
    for n in ["run-010", "run-011", "run-012", "run-055", "run-056"] {
        assert!(two.body.contains(n), "{n}");
    }
    assert!(
        two.body.find("run-012") < two.body.find("run-055"),
        "in id order"
    );
    assert!(two.body.contains("boom"), "the failure reason is shown");
    let bad = b.get("/ui?status=bogus", None);
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("Invalid status"));
}

#[test]
fn open_mode_needs_no_login() {
    let t = TestServer::start();
    let b = Browser::new(&t.url);
    let home = b.get("/ui", None);
    assert_eq!(home.status, 200);
    assert!(!home.body.contains("Log out"), "nothing to log out of");
    assert!(b.get("/ui/login", None).body.contains("No login needed"));
}
