//! The query page (`/ui/query`): every filter of `cairn artifact query` as a GET form, so a
//! query is a URL that can be shared, and its results one page at a time by cursor.

use axum::extract::RawQuery;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use maud::{html, Markup};

use cairn::{ArtifactKind, Query, SessionId, Store};

use super::layout::{self, qs, session_href};
use super::{blocking, Html, Ui, UiError, UiResult};

/// Results per page unless the form asks for another size.
pub const DEFAULT_PAGE: usize = 50;
/// The largest page the form accepts.
pub const MAX_PAGE: usize = 1000;

const KINDS: [&str; 5] = [
    "user_input",
    "tool_result",
    "agent_output",
    "system_generated",
    "checkpoint",
];

/// The form's fields as given (strings, to show them back as typed).
#[derive(Default, Clone, Debug)]
pub struct Form {
    session: String,
    subtree: bool,
    kinds: Vec<String>,
    tags: String,
    any_tags: String,
    name: String,
    min_size: String,
    max_size: String,
    after: String,
    before: String,
    latest: bool,
    desc: bool,
    limit: String,
    cursor: String,
    /// Whether the form was submitted (any field present).
    submitted: bool,
}

impl Form {
    /// Reads the form from a query string.
    pub fn parse(raw: Option<&str>) -> Form {
        let mut f = Form::default();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            f.submitted = true;
            let v = v.trim().to_string();
            match k.as_ref() {
                "session" => f.session = v,
                "subtree" => f.subtree = v != "0" && v != "false",
                "kind" => f.kinds.extend(
                    v.split([',', ' '])
                        .filter(|x| !x.is_empty())
                        .map(str::to_string),
                ),
                "tag" => f.tags = v,
                "any_tag" => f.any_tags = v,
                "name" => f.name = v,
                "min_size" => f.min_size = v,
                "max_size" => f.max_size = v,
                "after" => f.after = v,
                "before" => f.before = v,
                "latest" => f.latest = v != "0" && v != "false",
                "desc" => f.desc = v != "0" && v != "false",
                "limit" => f.limit = v,
                "cursor" => f.cursor = v,
                _ => {}
            }
        }
        f
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let flag = |b: bool| if b { "1".to_string() } else { String::new() };
        let mut p = vec![
            ("session", self.session.clone()),
            ("subtree", flag(self.subtree)),
        ];
        for k in &self.kinds {
            p.push(("kind", k.clone()));
        }
        p.extend([
            ("tag", self.tags.clone()),
            ("any_tag", self.any_tags.clone()),
            ("name", self.name.clone()),
            ("min_size", self.min_size.clone()),
            ("max_size", self.max_size.clone()),
            ("after", self.after.clone()),
            ("before", self.before.clone()),
            ("latest", flag(self.latest)),
            ("desc", flag(self.desc)),
            ("limit", self.limit.clone()),
        ]);
        p
    }

    /// The library query, with an error naming the field that is wrong.
    pub fn to_query(&self, store: &Store) -> UiResult<Query> {
        let mut q = Query::new();
        if !self.session.is_empty() {
            let id = match self.session.strip_prefix("key:") {
                Some(k) => {
                    store
                        .session_by_key(k)?
                        .ok_or_else(|| {
                            UiError::invalid("session", format!("no session has the key {k:?}"))
                        })?
                        .id
                }
                None => self.session.parse::<SessionId>().map_err(|e| {
                    UiError::invalid("session", format!("{e}; give a session id or key:KEY"))
                })?,
            };
            q = q.session(id).subtree(self.subtree);
        } else if self.subtree {
            return Err(UiError::invalid("subtree", "it needs a session"));
        }
        for k in &self.kinds {
            q = q.kind(
                k.parse::<ArtifactKind>()
                    .map_err(|e| UiError::invalid("kind", e))?,
            );
        }
        for t in split(&self.tags) {
            q = q.tag(t);
        }
        for t in split(&self.any_tags) {
            q = q.any_tag(t);
        }
        if !self.name.is_empty() {
            q = q.name_glob(self.name.clone());
        }
        if !self.min_size.is_empty() {
            q = q
                .min_size(parse_size(&self.min_size).map_err(|e| UiError::invalid("min size", e))?);
        }
        if !self.max_size.is_empty() {
            q = q
                .max_size(parse_size(&self.max_size).map_err(|e| UiError::invalid("max size", e))?);
        }
        let now = Utc::now();
        if !self.after.is_empty() {
            q = q.created_from(
                parse_time(&self.after, now).map_err(|e| UiError::invalid("after", e))?,
            );
        }
        if !self.before.is_empty() {
            q = q.created_to(
                parse_time(&self.before, now).map_err(|e| UiError::invalid("before", e))?,
            );
        }
        let limit = if self.limit.is_empty() {
            DEFAULT_PAGE
        } else {
            match self.limit.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(UiError::invalid(
                        "page size",
                        format!("{:?}: use 1 to {MAX_PAGE}", self.limit),
                    ))
                }
            }
        };
        q = q
            .latest_only(self.latest)
            .descending(self.desc)
            .limit(limit);
        if !self.cursor.is_empty() {
            q = q.cursor(self.cursor.clone());
        }
        Ok(q)
    }
}

fn split(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split([',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// A size: a number of bytes with an optional unit (`512`, `10KiB`, `1MB`, `2 GiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: use a number of bytes such as 512, 10KiB or 1MB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?}; use B, KB, KiB, MB, MiB, GB or GiB"
            ))
        }
    };
    Ok((n * mult).round() as u64)
}

/// A time: RFC 3339, a date (`2026-01-31`, midnight UTC), or an age (`30m`, `2h`, `7d`, `1w`).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(x) = DateTime::parse_from_rfc3339(t) {
        return Ok(x.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(x) = d.and_hms_opt(0, 0, 0) {
            return Ok(x.and_utc());
        }
    }
    let (num, unit) = t.split_at(t.len().saturating_sub(1));
    if let Ok(n) = num.parse::<i64>() {
        let d = match unit {
            "s" => Duration::try_seconds(n),
            "m" => Duration::try_minutes(n),
            "h" => Duration::try_hours(n),
            "d" => Duration::try_days(n),
            "w" => Duration::try_weeks(n),
            _ => None,
        };
        if let Some(d) = d {
            return Ok(now - d);
        }
    }
    Err(format!(
        "{s:?}: use RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31) or an age (30m, 2h, 7d)"
    ))
}

fn form(f: &Form) -> Markup {
    html! {
        form.query method="get" action="/ui/query" aria-label="Artifact query" {
            div.grid {
                label { "Session " input type="text" name="session" value=(f.session) placeholder="id or key:KEY"; }
                label.check { input type="checkbox" name="subtree" value="1" checked[f.subtree]; " include its subtree" }
                label { "Name (glob) " input type="text" name="name" value=(f.name) placeholder="*.json, logs/**"; }
                label { "All of these tags " input type="text" name="tag" value=(f.tags) placeholder="a,b"; }
                label { "Any of these tags " input type="text" name="any_tag" value=(f.any_tags) placeholder="a,b"; }
                label { "Min size " input type="text" name="min_size" value=(f.min_size) placeholder="10KiB"; }
                label { "Max size " input type="text" name="max_size" value=(f.max_size) placeholder="1MiB"; }
                label { "Created after " input type="text" name="after" value=(f.after) placeholder="2026-01-31, 2h, 7d"; }
                label { "Created before " input type="text" name="before" value=(f.before) placeholder="RFC 3339 or age"; }
                label { "Page size " input type="number" name="limit" min="1" max=(MAX_PAGE) value=(f.limit) placeholder=(DEFAULT_PAGE); }
            }
            fieldset {
                legend { "Kinds (any of)" }
                @for k in KINDS {
                    label.check { input type="checkbox" name="kind" value=(k) checked[f.kinds.iter().any(|x| x == k)]; " " (k) }
                }
            }
            div.fields {
                label.check { input type="checkbox" name="latest" value="1" checked[f.latest]; " latest version of each name only" }
                label.check { input type="checkbox" name="desc" value="1" checked[f.desc]; " newest first" }
                button type="submit" { "Run query" }
                a href="/ui/query" { "Clear" }
            }
        }
    }
}

/// `GET /ui/query`.
pub async fn query_page(ui: Ui, RawQuery(raw): RawQuery) -> UiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let f = Form::parse(raw.as_deref());
    let chrome = ui.chrome();
    let store = ui.store;
    blocking(move || {
        let outcome = if f.submitted {
            Some(f.to_query(&store).and_then(|q| store.query(&q).map_err(UiError::from)))
        } else {
            None
        };
        let status = match &outcome {
            Some(Err(e)) => e.status,
            _ => axum::http::StatusCode::OK,
        };
        let body = html! {
            h1 { "Query artifacts" }
            p.hint { "The same filters as " code { "cairn artifact query" } "; the address of the results page is the query, ready to share." }
            (form(&f))
            @match &outcome {
                None => {},
                Some(Err(e)) => { p.error role="alert" #query-error { (e.message) } },
                Some(Ok(page)) => {
                    section #results aria-labelledby="h-results" {
                        h2 #h-results { (page.items.len()) @if page.has_more() { "+" } " results" }
                        @if page.items.is_empty() { p.empty { "Nothing matches." } }
                        @else {
                            div.table-wrap {
                                table.artifacts {
                                    thead { tr {
                                        th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "Kind" }
                                        th scope="col" { "Size" } th scope="col" { "Session" } th scope="col" { "Created" } th scope="col" { "Tags" }
                                    } }
                                    tbody {
                                        @for a in &page.items {
                                            tr {
                                                td { a href=(layout::artifact_href(a)) { (a.name) } }
                                                td.num { (a.version) }
                                                td { (a.kind.as_str()) }
                                                td.num { (layout::size(a.size)) }
                                                td { a href=(session_href(&a.session_id)) { code { (a.session_id.to_string()[..8]) "…" } } }
                                                td { (layout::time(a.created_at)) }
                                                td { (layout::tags(&a.tags)) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        @let next = page.next_cursor.as_ref().map(|c| {
                            let mut p = f.pairs();
                            p.push(("cursor", c.clone()));
                            format!("/ui/query{}", qs(&p))
                        });
                        @let first = (!f.cursor.is_empty()).then(|| format!("/ui/query{}", qs(&f.pairs())));
                        (layout::pager(next, first))
                    }
                },
            }
        };
        Ok((status, Html(layout::page("Query", Some(&chrome), body))).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("10KiB").unwrap(), 10240);
        assert_eq!(parse_size("1 MB").unwrap(), 1_000_000);
        assert!(parse_size("ten").unwrap_err().contains("number of bytes"));
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn times_parse_as_dates_and_ages() {
        let now = DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("2h", now).unwrap(), now - Duration::hours(2));
        assert_eq!(
            parse_time("2026-01-31", now).unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert!(parse_time("yesterday", now)
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn forms_round_trip_through_their_url() {
        let f = Form::parse(Some(
            "name=*.diff&kind=tool_result&kind=agent_output&latest=1&tag=a,b",
        ));
        assert_eq!(f.kinds, ["tool_result", "agent_output"]);
        let url = qs(&f.pairs());
        let g = Form::parse(Some(&url[1..]));
        assert_eq!(g.kinds, f.kinds);
        assert_eq!(g.name, "*.diff");
        assert!(g.latest && !g.desc);
        assert_eq!(g.tags, "a,b");
    }

    #[test]
    fn bad_fields_are_named() {
        let s = Store::memory();
        let e = Form::parse(Some("kind=Bad-Kind")).to_query(&s).unwrap_err();
        assert!(e.message.contains("kind"), "{}", e.message);
        let e = Form::parse(Some("subtree=1")).to_query(&s).unwrap_err();
        assert!(e.message.contains("subtree"), "{}", e.message);
        let e = Form::parse(Some("limit=0")).to_query(&s).unwrap_err();
        assert!(e.message.contains("page size"), "{}", e.message);
    }
}
