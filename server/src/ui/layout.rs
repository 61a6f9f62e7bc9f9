//! The page shell (head, navigation, main landmark) and the small pieces every page uses:
//! status badges, sizes, times, durations, tags and query-string building.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use cairn::{Session, SessionStatus};

/// Who is looking, for the navigation bar.
pub struct Chrome {
    /// The caller's tenant.
    pub tenant: String,
    /// Show the log-out button (not in open mode).
    pub can_logout: bool,
}

/// A whole page: `<title>`, the navigation (when `chrome` is given) and `body` in `<main>`.
pub fn page(title: &str, chrome: Option<&Chrome>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Cairn" }
                link rel="stylesheet" href="/ui/static/ui.css";
                link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml";
                script src="/ui/static/ui.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "Cairn" }
                    @if let Some(c) = chrome {
                        nav aria-label="Main" {
                            a href="/ui" { "Sessions" }
                            a href="/ui/query" { "Query" }
                            a href="/ui/store" { "Store" }
                        }
                        span.tenant { "tenant " strong { (c.tenant) } }
                        @if c.can_logout {
                            form.logout method="post" action="/ui/logout" {
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// The CSS class of a status (its colour).
pub fn status_class(s: SessionStatus) -> &'static str {
    match s {
        SessionStatus::Active => "badge st-active",
        SessionStatus::Suspended => "badge st-suspended",
        SessionStatus::Completed => "badge st-completed",
        SessionStatus::Failed => "badge st-failed",
        SessionStatus::Cancelled => "badge st-cancelled",
        SessionStatus::Expired => "badge st-expired",
        SessionStatus::TimedOut => "badge st-timed_out",
    }
}

/// A coloured status badge (the text says the status too: colour is never the only cue).
pub fn status_badge(s: SessionStatus) -> Markup {
    html! { span class=(status_class(s)) data-status=(s.as_str()) { (s.as_str()) } }
}

/// A session's display name: its name, else its key, else its id.
pub fn session_name(s: &Session) -> String {
    s.name
        .clone()
        .or_else(|| s.key.clone())
        .unwrap_or_else(|| s.id.to_string())
}

/// Bytes as `12.3 KiB`.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time as `2026-01-31 12:00:00 UTC`, in a `<time>` element.
pub fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// A duration in milliseconds as `1h 02m`, `3m 04s`, `5.2s` or `120ms`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s < 60 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    if s < 3600 {
        return format!("{}m {:02}s", s / 60, s % 60);
    }
    if s < 86_400 {
        return format!("{}h {:02}m", s / 3600, (s % 3600) / 60);
    }
    format!("{}d {:02}h", s / 86_400, (s % 86_400) / 3600)
}

/// How long a session ran (or has been running).
pub fn session_duration(s: &Session) -> String {
    let end = s.ended_at.unwrap_or_else(Utc::now);
    let d = duration_ms((end - s.created_at).num_milliseconds());
    if s.ended_at.is_some() {
        d
    } else {
        format!("{d} so far")
    }
}

/// Tags as chips that filter the session tree.
pub fn tags(tags: &[String]) -> Markup {
    html! {
        @if !tags.is_empty() {
            ul.tags aria-label="Tags" {
                @for t in tags {
                    li { a.tag href=(format!("/ui?tag={}", enc(t))) { (t) } }
                }
            }
        }
    }
}

/// Percent-encodes a query-string value.
pub fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// A query string from pairs (empty values left out), with a leading `?` when not empty.
pub fn qs(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    let s = s.finish();
    if s.is_empty() {
        s
    } else {
        format!("?{s}")
    }
}

/// The link to a session's page.
pub fn session_href(id: &cairn::SessionId) -> String {
    format!("/ui/sessions/{id}")
}

/// The link to an artifact's page.
pub fn artifact_href(a: &cairn::Artifact) -> String {
    format!("/ui/sessions/{}/artifacts/{}", a.session_id, a.id)
}

/// A "next page" link, or nothing when there is no next page.
pub fn pager(next: Option<String>, first: Option<String>) -> Markup {
    html! {
        @if next.is_some() || first.is_some() {
            nav.pager aria-label="Pages" {
                @if let Some(f) = first { a href=(f) { "« First page" } }
                @if let Some(n) = next { a rel="next" href=(n) { "Next page »" } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(duration_ms(120), "120ms");
        assert_eq!(duration_ms(5_200), "5.2s");
        assert_eq!(duration_ms(184_000), "3m 04s");
        assert_eq!(duration_ms(3_720_000), "1h 02m");
        assert_eq!(duration_ms(-5), "0ms");
    }

    #[test]
    fn query_strings_encode_and_skip_empty_values() {
        assert_eq!(qs(&[]), "");
        assert_eq!(
            qs(&[
                ("tag", "a b&c".into()),
                ("x", String::new()),
                ("q", "<s>".into())
            ]),
            "?tag=a+b%26c&q=%3Cs%3E"
        );
    }

    #[test]
    fn pages_escape_their_title_and_body() {
        let m = page("<t>", None, html! { p { ("<script>alert(1)</script>") } }).into_string();
        assert!(m.contains("&lt;t&gt;"));
        assert!(m.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!m.contains("<script>alert"));
    }
}
