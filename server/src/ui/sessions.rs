//! The session tree (`/ui`) and a session's page (`/ui/sessions/{id}`).
//!
//! The tree lists root sessions one page at a time (by cursor, from the library's session
//! index) with their first children nested; any filter (status, tag, key, parent) lists the
//! matching sessions flat. A name search reads sessions page by page and stops after
//! [`SEARCH_BUDGET`] sessions, offering to continue: a page never reads the whole store.

use std::collections::BTreeMap;

use axum::extract::RawQuery;
use cairn::{
    Artifact, Page, Query, Session, SessionFilter, SessionId, SessionStatus, Store, TimelineEntry,
    TimelineOptions,
};
use maud::{html, Markup};

use super::layout::{self, enc, qs, session_href, status_badge};
use super::{blocking, Html, Ui, UiError, UiResult};

/// Sessions per page of the tree.
pub const PAGE: usize = 50;
/// Children shown under each session of the tree.
pub const CHILDREN_SHOWN: usize = 20;
/// Artifacts counted per session in the tree ("100+" beyond).
pub const COUNT_CAP: usize = 100;
/// Sessions a name search reads per request before it offers to continue.
pub const SEARCH_BUDGET: usize = 20_000;
/// Timeline entries per page of a session page.
pub const TIMELINE_PAGE: usize = 50;
/// Artifacts per page of a session page's artifact list.
pub const ARTIFACT_PAGE: usize = 200;
/// Conversation messages shown (the latest).
pub const HISTORY_SHOWN: usize = 100;

/// The tree's filters, parsed from the query string.
#[derive(Default, Clone)]
struct TreeFilter {
    statuses: Vec<SessionStatus>,
    tags: Vec<String>,
    key: String,
    q: String,
    parent: Option<SessionId>,
    cursor: Option<SessionId>,
}

impl TreeFilter {
    fn parse(raw: Option<&str>) -> UiResult<Self> {
        let mut f = TreeFilter::default();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "status" if !v.is_empty() => f
                    .statuses
                    .push(v.parse().map_err(|e| UiError::invalid("status", e))?),
                "tag" => f.tags.extend(
                    v.split([',', ' '])
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                ),
                "key" => f.key = v,
                "q" => f.q = v,
                "parent" if !v.is_empty() => {
                    f.parent = Some(v.parse().map_err(|e| UiError::invalid("parent", e))?)
                }
                "cursor" if !v.is_empty() => {
                    f.cursor = Some(v.parse().map_err(|e| UiError::invalid("cursor", e))?)
                }
                _ => {}
            }
        }
        Ok(f)
    }

    fn is_tree(&self) -> bool {
        self.statuses.is_empty()
            && self.tags.is_empty()
            && self.key.is_empty()
            && self.q.is_empty()
            && self.parent.is_none()
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut p: Vec<(&str, String)> = self
            .statuses
            .iter()
            .map(|s| ("status", s.as_str().to_string()))
            .collect();
        if !self.tags.is_empty() {
            p.push(("tag", self.tags.join(",")));
        }
        p.push(("key", self.key.clone()));
        p.push(("q", self.q.clone()));
        if let Some(x) = self.parent {
            p.push(("parent", x.to_string()));
        }
        p
    }

    /// The library filter for one of the statuses (all of them when `status` is `None`).
    fn library_filter(&self, status: Option<SessionStatus>) -> SessionFilter {
        let mut f = SessionFilter::new();
        match status {
            Some(s) => f = f.status(s),
            None => {
                for s in &self.statuses {
                    f = f.status(*s);
                }
            }
        }
        for t in &self.tags {
            f = f.tag(t.clone());
        }
        if !self.key.is_empty() {
            f = f.key(self.key.clone());
        }
        if let Some(p) = self.parent {
            f = f.parent(p);
        } else if self.is_tree() {
            f = f.roots();
        }
        f
    }
}

fn name_matches(s: &Session, needle: &str) -> bool {
    let n = needle.to_lowercase();
    s.name
        .as_ref()
        .is_some_and(|x| x.to_lowercase().contains(&n))
        || s.key
            .as_ref()
            .is_some_and(|x| x.to_lowercase().contains(&n))
        || s.id.to_string().contains(&n)
}

/// Up to `limit` sessions after `cursor` in id order: (sessions, more exist). With several
/// statuses, one page per status index is read and merged (the library would otherwise scan
/// every session for a filter of two statuses).
fn list_page(
    store: &Store,
    f: &TreeFilter,
    cursor: Option<SessionId>,
    limit: usize,
) -> UiResult<(Vec<Session>, bool)> {
    let page = |status: Option<SessionStatus>| -> UiResult<Page<Session>> {
        let mut lf = f.library_filter(status).limit(limit);
        if let Some(c) = cursor {
            lf = lf.after(c);
        }
        Ok(store.list_sessions(&lf)?)
    };
    if f.statuses.len() < 2 || !f.key.is_empty() {
        let p = page(None)?;
        let more = p.has_more();
        return Ok((p.items, more));
    }
    let mut all = Vec::new();
    let mut more = false;
    for s in &f.statuses {
        let p = page(Some(*s))?;
        more |= p.has_more();
        all.extend(p.items);
    }
    all.sort_by_key(|s| s.id);
    all.dedup_by_key(|s| s.id);
    if all.len() > limit {
        all.truncate(limit);
        more = true;
    }
    Ok((all, more))
}

/// One page of sessions for the filter: (sessions, next cursor, sessions read by a search).
fn find(store: &Store, f: &TreeFilter) -> UiResult<(Vec<Session>, Option<String>, usize)> {
    if f.q.is_empty() {
        let (items, more) = list_page(store, f, f.cursor, PAGE)?;
        let next = if more {
            items.last().map(|s| s.id.to_string())
        } else {
            None
        };
        return Ok((items, next, 0));
    }
    let mut out = Vec::new();
    let mut read = 0usize;
    let mut cursor = f.cursor;
    loop {
        let (items, more) = list_page(store, f, cursor, 500)?;
        for s in items {
            read += 1;
            cursor = Some(s.id);
            if name_matches(&s, &f.q) {
                out.push(s);
                if out.len() == PAGE {
                    return Ok((out, cursor.map(|c| c.to_string()), read));
                }
            }
            if read >= SEARCH_BUDGET {
                return Ok((out, cursor.map(|c| c.to_string()), read));
            }
        }
        if !more {
            return Ok((out, None, read));
        }
    }
}

/// Counts up to [`COUNT_CAP`] artifacts of a session: (count, more exist).
fn artifact_count(store: &Store, id: SessionId) -> (usize, bool) {
    match store.query(&Query::new().session(id).limit(COUNT_CAP)) {
        Ok(p) => (p.items.len(), p.has_more()),
        Err(_) => (0, false),
    }
}

fn count_text((n, more): (usize, bool)) -> String {
    if more {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

fn session_row(store: &Store, s: &Session, depth: usize) -> UiResult<Markup> {
    let children = if depth == 0 {
        Some(store.list_sessions(&SessionFilter::new().parent(s.id).limit(CHILDREN_SHOWN))?)
    } else {
        None
    };
    let arts = count_text(artifact_count(store, s.id));
    Ok(html! {
        li.session data-status=(s.status.as_str()) {
            div.row {
                (status_badge(s.status))
                a.name href=(session_href(&s.id)) { (layout::session_name(s)) }
                span.facts {
                    span title="Artifacts" { (arts) " artifacts" }
                    " · "
                    span title="Duration" { (layout::session_duration(s)) }
                    " · "
                    (layout::time(s.created_at))
                }
                (layout::tags(&s.tags))
            }
            @if let Some(r) = &s.reason {
                p.reason { strong { "Reason: " } (r) }
            }
            @if let Some(ch) = children {
                @if !ch.items.is_empty() {
                    details.children open {
                        summary { (ch.items.len()) @if ch.has_more() { "+" } " child sessions" }
                        ul.tree {
                            @for c in &ch.items { (session_row(store, c, depth + 1)?) }
                        }
                        @if ch.has_more() {
                            p { a href=(format!("/ui?parent={}", s.id)) { "All children of this session »" } }
                        }
                    }
                }
            }
        }
    })
}

fn filter_form(f: &TreeFilter) -> Markup {
    html! {
        form.filters method="get" action="/ui" role="search" aria-label="Filter sessions" {
            fieldset {
                legend { "Status" }
                @for s in SessionStatus::ALL {
                    label.check {
                        input type="checkbox" name="status" value=(s.as_str()) checked[f.statuses.contains(&s)];
                        " " (s.as_str())
                    }
                }
            }
            div.fields {
                label { "Name " input type="search" name="q" value=(f.q) placeholder="part of a name or key"; }
                label { "Tag " input type="text" name="tag" value=(f.tags.join(",")) placeholder="tag (comma: all of them)"; }
                label { "Key " input type="text" name="key" value=(f.key); }
                @if let Some(p) = f.parent { input type="hidden" name="parent" value=(p.to_string()); }
                button type="submit" { "Filter" }
                a href="/ui" { "Clear" }
            }
        }
    }
}

/// `GET /ui`: the session tree, filters and search.
pub async fn tree(ui: Ui, RawQuery(q): RawQuery) -> UiResult {
    let f = TreeFilter::parse(q.as_deref())?;
    let chrome = ui.chrome();
    let store = ui.store;
    blocking(move || {
        let (items, next, read) = find(&store, &f)?;
        let tree = f.is_tree();
        let mut next_pairs = f.pairs();
        let next = next.map(|c| {
            next_pairs.push(("cursor", c));
            format!("/ui{}", qs(&next_pairs))
        });
        let first = f.cursor.map(|_| format!("/ui{}", qs(&f.pairs())));
        let heading = match f.parent {
            Some(p) => format!("Children of {p}"),
            None if tree => "Sessions".to_string(),
            None => "Matching sessions".to_string(),
        };
        let body = html! {
            h1 { (heading) }
            (filter_form(&f))
            @if !f.q.is_empty() {
                p.hint { "Searched " (read) " sessions"
                    @if next.is_some() && items.len() < PAGE { " (the search stops after " (SEARCH_BUDGET) " per page; continue with the next page)" } "." }
            }
            @if items.is_empty() {
                p.empty { "No sessions match." }
            } @else {
                ul.tree #sessions {
                    @for s in &items { (session_row(&store, s, if tree { 0 } else { 1 })?) }
                }
            }
            (layout::pager(next, first))
        };
        Ok(Html(layout::page(&heading, Some(&chrome), body)))
    })
    .await
}

fn metrics_table(m: &cairn::SessionMetrics) -> Markup {
    html! {
        dl.metrics {
            dt { "Iterations" } dd { (m.iterations) }
            dt { "Tokens" } dd { (m.total_tokens()) " (" (m.input_tokens) " in, " (m.output_tokens) " out)" }
            dt { "Tool calls" } dd { (m.total_tool_calls()) }
            dt { "Requests" } dd { (m.requests) " (" (m.errors) " errors)" }
            dt { "Processing time" } dd { (layout::duration_ms((m.processing_micros / 1000) as i64)) }
            @if m.cost_micros > 0 { dt { "Cost" } dd { (format!("{:.4}", m.cost())) } }
        }
        @if !m.tool_calls.is_empty() {
            table.compact {
                caption { "Tool calls by tool" }
                thead { tr { th scope="col" { "Tool" } th scope="col" { "Calls" } } }
                tbody { @for (k, v) in &m.tool_calls { tr { td { (k) } td.num { (v) } } } }
            }
        }
    }
}

fn timeline_entry(e: &TimelineEntry) -> Markup {
    let ev = &e.event;
    let kind = ev.kind.type_name();
    html! {
        li.event data-type=(kind) {
            span.seq { "#" (ev.seq) }
            (layout::time(ev.at))
            span.etype { (kind) }
            @if let Some(a) = &e.artifact {
                a href=(layout::artifact_href(a)) { (a.name) " v" (a.version) }
                span.muted { " " (layout::size(a.size)) }
            } @else if let Some(c) = &e.checkpoint {
                span { "checkpoint " strong { (c.label) } }
            } @else {
                code.payload { (event_summary(ev)) }
            }
        }
    }
}

fn event_summary(ev: &cairn::Event) -> String {
    let mut v = serde_json::to_value(ev).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for k in ["session_id", "seq", "at", "type"] {
            o.remove(k);
        }
    }
    let s = v.to_string();
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

fn artifact_groups(page: &Page<Artifact>) -> BTreeMap<&str, Vec<&Artifact>> {
    let mut g: BTreeMap<&str, Vec<&Artifact>> = BTreeMap::new();
    for a in &page.items {
        g.entry(a.name.as_str()).or_default().push(a);
    }
    g
}

/// `GET /ui/sessions/{id}`: everything about one session.
pub async fn session_page(
    ui: Ui,
    axum::extract::Path(id): axum::extract::Path<String>,
    RawQuery(q): RawQuery,
) -> UiResult {
    let id: SessionId = id.parse().map_err(|e| UiError::invalid("session id", e))?;
    let get = |name: &str| super::query_value(q.as_deref(), name).filter(|v| !v.is_empty());
    let tcursor = get("tcursor");
    let acursor = get("acursor");
    let chrome = ui.chrome();
    let store = ui.store;
    blocking(move || {
        let s = store.session(id)?;
        let ancestors = store.ancestors(id)?;
        let metrics = store.metrics(id)?;
        let children = store.list_sessions(&SessionFilter::new().parent(id).limit(PAGE))?;
        let lineage = store.lineage(id)?;
        let forks = store.forks(id)?;
        let checkpoints = store.checkpoints_page(id, None, 50)?;
        let history = store.history(id, Some(HISTORY_SHOWN))?;
        let arts = store.list_artifacts(id, false, ARTIFACT_PAGE, acursor.as_deref())?;
        let mut topts = TimelineOptions::new().limit(TIMELINE_PAGE);
        if let Some(c) = &tcursor {
            topts = topts.cursor(c.clone());
        }
        let timeline = store.timeline(id, &topts)?;
        let here = session_href(&id);
        let live = !s.status.is_terminal();
        let name = layout::session_name(&s);
        let body = html! {
            nav.crumbs aria-label="Ancestors" {
                a href="/ui" { "Sessions" }
                @for a in ancestors.iter().rev() {
                    " › " a href=(session_href(&a.id)) { (layout::session_name(a)) }
                }
            }
            h1 { (name) " " span #status { (status_badge(s.status)) } }
            @if let Some(r) = &s.reason {
                p.reason #reason role="note" { strong { "Reason: " } (r) }
            }
            nav.sections aria-label="Sections" {
                a href="#overview" { "Overview" } a href="#artifacts" { "Artifacts" }
                a href="#conversation" { "Conversation" } a href="#timeline" { "Timeline" }
                a href="#lineage" { "Lineage" }
                a href=(format!("/ui/query?session={id}")) { "Query this session" }
            }
            section #overview aria-labelledby="h-overview" {
                h2 #h-overview { "Overview" }
                dl.facts {
                    dt { "Id" } dd { code { (s.id) } }
                    @if let Some(k) = &s.key { dt { "Key" } dd { code { (k) } } }
                    @if let Some(d) = &s.description { dt { "Description" } dd { (d) } }
                    dt { "Created" } dd { (layout::time(s.created_at)) }
                    @if let Some(e) = s.ended_at { dt { "Ended" } dd { (layout::time(e)) } }
                    dt { "Duration" } dd { (layout::session_duration(&s)) }
                    @if let Some(p) = s.parent_id { dt { "Parent" } dd { a href=(session_href(&p)) { (p) } } }
                    dt { "Tags" } dd { (layout::tags(&s.tags)) @if s.tags.is_empty() { "none" } }
                }
                @if !s.metadata.is_empty() {
                    details { summary { "Metadata" } (super::json::tree(&serde_json::Value::Object(s.metadata.clone()), 0)) }
                }
                h3 { "Metrics" }
                (metrics_table(&metrics))
                @if !children.items.is_empty() {
                    h3 { "Child sessions" }
                    ul.tree {
                        @for c in &children.items {
                            li.session data-status=(c.status.as_str()) { div.row {
                                (status_badge(c.status))
                                a.name href=(session_href(&c.id)) { (layout::session_name(c)) }
                                span.facts { (layout::session_duration(c)) }
                            }
                            @if let Some(r) = &c.reason { p.reason { strong { "Reason: " } (r) } } }
                        }
                    }
                    @if children.has_more() { p { a href=(format!("/ui?parent={id}")) { "All children »" } } }
                }
            }
            @if live {
                section #live aria-labelledby="h-live" data-stream=(format!("{here}/live")) {
                    h2 #h-live { "Live" }
                    p.hint #live-state aria-live="polite" { "Live updates need JavaScript; reload the page to see new events." }
                    ul #live-events aria-live="polite" {}
                }
            }
            section #artifacts aria-labelledby="h-artifacts" {
                h2 #h-artifacts { "Artifacts" }
                @if arts.items.is_empty() { p.empty { "No artifacts." } }
                @else {
                    table.artifacts {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Versions" } th scope="col" { "Kind" } th scope="col" { "Latest size" } } }
                        tbody {
                            @for (name, vs) in artifact_groups(&arts) {
                                @let last = vs[vs.len() - 1];
                                tr {
                                    td { a href=(layout::artifact_href(last)) { (name) } }
                                    td.versions {
                                        @for v in &vs { a href=(layout::artifact_href(v)) { "v" (v.version) } " " }
                                        @if vs.len() > 1 {
                                            a.diff href=(format!("/ui/sessions/{id}/diff{}", qs(&[("name", name.to_string()), ("from", vs[vs.len() - 2].version.to_string()), ("to", last.version.to_string())]))) { "diff" }
                                        }
                                    }
                                    td { (last.kind.as_str()) }
                                    td.num { (layout::size(last.size)) }
                                }
                            }
                        }
                    }
                    (layout::pager(arts.next_cursor.map(|c| format!("{here}?acursor={}#artifacts", enc(&c))), acursor.as_ref().map(|_| format!("{here}#artifacts"))))
                }
            }
            section #conversation aria-labelledby="h-conv" {
                h2 #h-conv { "Conversation" }
                @if history.is_empty() { p.empty { "No conversation recorded (Store::say)." } }
                @else {
                    ol.chat {
                        @for m in &history {
                            li class=(format!("msg role-{}", m.role.as_str())) {
                                div.who { (m.role.as_str()) " · " (layout::time(m.at)) }
                                div.text { (m.content) }
                            }
                        }
                    }
                }
            }
            section #timeline aria-labelledby="h-timeline" {
                h2 #h-timeline { "Timeline" }
                ol.timeline #timeline-list {
                    @for e in &timeline.items { (timeline_entry(e)) }
                }
                (layout::pager(timeline.next_cursor.map(|c| format!("{here}?tcursor={}#timeline", enc(&c))), tcursor.as_ref().map(|_| format!("{here}#timeline"))))
            }
            section #lineage aria-labelledby="h-lineage" {
                h2 #h-lineage { "Checkpoints and lineage" }
                @if lineage.is_empty() && forks.is_empty() && checkpoints.items.is_empty() {
                    p.empty { "No checkpoints, forks or copies." }
                }
                @for l in &lineage {
                    p { "Made by " strong { (format!("{:?}", l.kind).to_lowercase()) } " from "
                        a href=(session_href(&l.source)) { (l.source) }
                        @if let Some(c) = l.checkpoint { " at checkpoint " code { (c) } }
                        " on " (layout::time(l.at)) }
                }
                @if !forks.is_empty() {
                    h3 { "Sessions made from this one" }
                    ul { @for l in &forks { li { (format!("{:?}", l.kind).to_lowercase()) ": " a href=(session_href(&l.session)) { (l.session) } " · " (layout::time(l.at)) } } }
                }
                @if !checkpoints.items.is_empty() {
                    h3 { "Checkpoints" }
                    ol { @for c in &checkpoints.items { li { strong { (c.label) } " · " (layout::time(c.created_at)) " · " code { (c.id) } } } }
                }
            }
        };
        Ok(Html(layout::page(&name, Some(&chrome), body)))
    })
    .await
}
