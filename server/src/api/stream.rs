//! Live events: `GET /v1/sessions/{id}/events/stream[?subtree=true]` as Server-Sent Events, on
//! the library's subscriptions ([`cairn::Store::subscribe`]).
//!
//! - Each event is `id: <session>:<seq>`, `event: <type>` (the event's `type`), `data: <the
//!   event's JSON>`. A client that fell more than `sse_queue` events behind receives
//!   `event: missed` with `data: {"missed": n}` at the point of the gap: memory per client is
//!   bounded by `sse_queue` events plus a small channel, whatever the client's speed.
//! - Resume: `Last-Event-ID` (or `?last_event_id=`, for clients that cannot set headers)
//!   replays the stored events after that id from the paged event log, then continues live.
//!   The subscription is taken *before* the log is read, and live events at or below the last
//!   replayed seq of their session are skipped, so nothing falls between the two and nothing
//!   is sent twice. One session: exact. Subtree: each session's events after the given event's
//!   time (ties in time included) are replayed session by session, in seq order per session.
//! - Keep-alive: a `: keep-alive` comment after `sse_keepalive_secs` without anything sent.
//! - At most `max_streams` streams at once (503 beyond); a stream ends when the client goes
//!   away, and on shutdown, so shutdown never waits on an idle stream.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn::{Delivery, Event, SessionId, Store, SubscriptionFilter};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{Params, Routes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Reader};
use crate::state::AppState;

/// Events read from the log per page while replaying.
const REPLAY_PAGE: usize = 256;
/// Frames buffered between the stream's thread and the connection.
const CHANNEL_DEPTH: usize = 16;
/// How often an idle stream checks for shutdown and a departed client.
const POLL: Duration = Duration::from_millis(250);

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/sessions/{id}/events/stream", stream)
}

/// A position in an event stream: the last event a client received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    session: Option<SessionId>,
    seq: u64,
}

fn parse_position(v: &str) -> ApiResult<Position> {
    let bad = |why: &str| {
        ApiError::invalid(
            "Last-Event-ID",
            format!("{v:?}: {why}; send the id of the last event received (SESSION:SEQ)"),
        )
    };
    let v = v.trim();
    let (session, seq) = match v.rsplit_once(':') {
        Some((s, n)) => (
            Some(
                s.parse::<SessionId>()
                    .map_err(|_| bad("not a session id before ':'"))?,
            ),
            n,
        ),
        None => (None, v),
    };
    let seq = seq
        .parse::<u64>()
        .map_err(|_| bad("not a sequence number"))?;
    Ok(Position { session, seq })
}

/// One SSE frame for an event.
fn event_frame(e: &Event) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_string());
    Bytes::from(format!(
        "id: {}:{}\nevent: {}\ndata: {}\n\n",
        e.session_id,
        e.seq,
        e.kind.type_name(),
        data
    ))
}

fn missed_frame(n: u64) -> Bytes {
    Bytes::from(format!("event: missed\ndata: {{\"missed\":{n}}}\n\n"))
}

/// A session's live events as Server-Sent Events, resumable with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/sessions/{id}/events/stream", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id"),
        ("subtree" = Option<bool>, Query, description = "Also the events of every descendant, including sessions created later"),
        ("last_event_id" = Option<String>, Query, description = "Resume after this event id (SESSION:SEQ); same as the Last-Event-ID header, which wins"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (SESSION:SEQ, or SEQ for one session)")),
    responses((status = 200, description = "An endless text/event-stream: `id: SESSION:SEQ`, `event: TYPE`, `data: EVENT JSON`; `event: missed` with `data: {\"missed\":N}` when the client fell behind by more than sse_queue events; `: keep-alive` comments when idle", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad query parameter or Last-Event-ID (invalid_input)", body = ErrorBody),
        (status = 404, description = "No such session, or the resumed event does not exist", body = ErrorBody)))]
pub async fn stream(
    State(st): State<AppState>,
    Reader(store): Reader,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = Params::parse(q.as_deref(), &["subtree", "last_event_id"])?;
    let subtree = p.flag("subtree")?;
    let header_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID", "it is not ASCII text"))?
                .to_string(),
        ),
        None => None,
    };
    let resume = match header_id.as_deref().or(p.get("last_event_id")) {
        Some(v) if !v.trim().is_empty() => Some(parse_position(v)?),
        _ => None,
    };
    let limits = &st.config().limits;
    let Ok(permit) = st.stream_permits().clone().try_acquire_owned() else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "the server has its limit of {} event streams open (max_streams); retry shortly",
                limits.max_streams
            ),
        );
        e.retry_after = Some(1);
        return Err(e);
    };
    let keepalive = Duration::from_secs(limits.sse_keepalive_secs);
    let capacity = limits.sse_queue;

    // Subscribe first (this also checks the session exists in the caller's tenant), then
    // work out what to replay, all before the response starts, so errors are proper answers.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_DEPTH);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<ApiResult<()>>();
    let state = st.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let filter = if subtree {
            SubscriptionFilter::new().subtree(id)
        } else {
            SubscriptionFilter::new().session(id)
        };
        #[cfg(feature = "postgres")]
        match state.feed(&who.tenant) {
            Ok(Some(feed)) => {
                return shared::run(shared::Setup {
                    store,
                    feed,
                    id,
                    subtree,
                    resume,
                    ready: ready_tx,
                    out: Sender {
                        tx,
                        state,
                        last_sent: Instant::now(),
                    },
                    keepalive,
                })
            }
            Ok(None) => {}
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        }
        #[cfg(not(feature = "postgres"))]
        let _ = &who;
        let setup = store
            .subscribe(filter.capacity(capacity))
            .map_err(ApiError::from)
            .and_then(|sub| {
                let plan = match resume {
                    Some(pos) => Some(plan_replay(&store, id, subtree, pos)?),
                    None => None,
                };
                Ok((sub, plan))
            });
        let (sub, plan) = match setup {
            Ok(x) => {
                let _ = ready_tx.send(Ok(()));
                x
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let mut out = Sender {
            tx,
            state,
            last_sent: Instant::now(),
        };
        let mut replayed: HashMap<SessionId, u64> = HashMap::new();
        if let Some(plan) = plan {
            if replay(&store, &plan, &mut out, &mut replayed).is_err() {
                return;
            }
        }
        drop(store);
        live(&sub, &mut out, &replayed, keepalive);
    });
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ApiError::internal("the event stream failed to start")),
    }
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// What to replay: per session, the seq after which its events are sent, or (other sessions
/// of a subtree) the time from which they are.
struct Plan {
    exact: Vec<(SessionId, u64)>,
    since: Option<(Vec<SessionId>, chrono::DateTime<chrono::Utc>)>,
}

fn plan_replay(store: &Store, id: SessionId, subtree: bool, pos: Position) -> ApiResult<Plan> {
    if !subtree {
        if let Some(s) = pos.session {
            if s != id {
                return Err(ApiError::invalid(
                    "Last-Event-ID",
                    format!("{s}:{} is an event of another session than {id}", pos.seq),
                ));
            }
        }
        return Ok(Plan {
            exact: vec![(id, pos.seq)],
            since: None,
        });
    }
    let Some(last) = pos.session else {
        return Err(ApiError::invalid(
            "Last-Event-ID",
            format!(
                "{}: a subtree stream resumes from SESSION:SEQ, the id of the last event received",
                pos.seq
            ),
        ));
    };
    let members = store.subtree_ids(id).map_err(ApiError::from)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "event {last}:{} is not in the subtree of {id}; start without Last-Event-ID",
                pos.seq
            ),
        )
    };
    if !members.contains(&last) || pos.seq == 0 {
        return Err(not_found());
    }
    let page = store
        .events(last, Some(pos.seq - 1), 1)
        .map_err(ApiError::from)?;
    let Some(at) = page
        .items
        .first()
        .filter(|e| e.seq == pos.seq)
        .map(|e| e.at)
    else {
        return Err(not_found());
    };
    let others = members.into_iter().filter(|s| *s != last).collect();
    Ok(Plan {
        exact: vec![(last, pos.seq)],
        since: Some((others, at)),
    })
}

/// Sends the stored events the plan names, recording per session the last seq sent.
fn replay(
    store: &Store,
    plan: &Plan,
    out: &mut Sender,
    replayed: &mut HashMap<SessionId, u64>,
) -> Result<(), Gone> {
    let mut one = |session: SessionId,
                   after: u64,
                   since: Option<chrono::DateTime<chrono::Utc>>|
     -> Result<(), Gone> {
        let mut cursor = Some(after);
        if since.is_none() {
            replayed.insert(session, after);
        }
        loop {
            let page = match store.events(session, cursor, REPLAY_PAGE) {
                Ok(p) => p,
                // Deleted meanwhile: nothing more to replay for it.
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => {
                    out.fail(&format!("replaying the event log failed: {e}"));
                    return Err(Gone);
                }
            };
            for e in &page.items {
                replayed.insert(session, e.seq);
                if since.is_some_and(|t| e.at < t) {
                    continue;
                }
                out.send(event_frame(e))?;
            }
            match page.next_cursor.as_deref().and_then(|c| c.parse().ok()) {
                Some(c) if !page.items.is_empty() => cursor = Some(c),
                _ => return Ok(()),
            }
        }
    };
    for &(s, after) in &plan.exact {
        one(s, after, None)?;
    }
    if let Some((others, at)) = &plan.since {
        for &s in others {
            one(s, 0, Some(*at))?;
        }
    }
    Ok(())
}

/// Sends live deliveries until the client goes away, the store closes or the server stops.
fn live(
    sub: &cairn::Subscription,
    out: &mut Sender,
    replayed: &HashMap<SessionId, u64>,
    keepalive: Duration,
) {
    loop {
        if out.state.shutting_down() {
            return;
        }
        let frame = match sub.recv_timeout(POLL) {
            Some(Delivery::Event(e)) => {
                if replayed.get(&e.session_id).is_some_and(|&m| e.seq <= m) {
                    continue;
                }
                event_frame(&e)
            }
            Some(Delivery::Missed(n)) => missed_frame(n),
            None if sub.is_closed() => return,
            None => {
                if out.tx.is_closed() {
                    return;
                }
                if out.last_sent.elapsed() < keepalive {
                    continue;
                }
                Bytes::from_static(b": keep-alive\n\n")
            }
        };
        if out.send(frame).is_err() {
            return;
        }
    }
}

/// Streams of stores shared with other servers (PostgreSQL): the events are read from the
/// database, woken by the tenant's notices ([`crate::feed`]) and at least every
/// [`crate::feed::BACKSTOP`]. Each session's events go out in seq order with none skipped
/// (the log is the queue, so a slow client never misses any); across the sessions of a
/// subtree, order is per session only.
#[cfg(feature = "postgres")]
mod shared {
    use std::collections::{HashMap, HashSet};
    use std::sync::Arc;
    use std::time::Duration;

    use cairn::{SessionId, Store};

    use super::{event_frame, plan_replay, replay, Gone, Sender, POLL, REPLAY_PAGE};
    use crate::error::ApiResult;
    use crate::feed::Feed;

    pub(super) struct Setup {
        pub store: Arc<Store>,
        pub feed: Arc<Feed>,
        pub id: SessionId,
        pub subtree: bool,
        pub resume: Option<super::Position>,
        pub ready: tokio::sync::oneshot::Sender<ApiResult<()>>,
        pub out: Sender,
        pub keepalive: Duration,
    }

    /// Where each followed session starts: after the replayed events, or after its last event.
    fn start(
        store: &Store,
        id: SessionId,
        subtree: bool,
        resume: Option<super::Position>,
    ) -> ApiResult<(Vec<SessionId>, Option<super::Plan>)> {
        let members = if subtree {
            store.subtree_ids(id)?
        } else {
            store.session(id)?;
            vec![id]
        };
        let plan = match resume {
            Some(pos) => Some(plan_replay(store, id, subtree, pos)?),
            None => None,
        };
        Ok((members, plan))
    }

    pub(super) fn run(s: Setup) {
        let Setup {
            store,
            feed,
            id,
            subtree,
            resume,
            ready,
            mut out,
            keepalive,
        } = s;
        // Taken before anything is read: whatever is committed later wakes this stream.
        let mut seen = feed.generation();
        let (members, plan) = match start(&store, id, subtree, resume) {
            Ok(x) => x,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let mut last: HashMap<SessionId, u64> = HashMap::new();
        if plan.is_none() {
            for m in &members {
                match store.last_event_seq(*m) {
                    Ok(n) => {
                        last.insert(*m, n);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        let _ = ready.send(Err(e.into()));
                        return;
                    }
                }
            }
        }
        let _ = ready.send(Ok(()));
        if let Some(plan) = plan {
            let mut replayed = HashMap::new();
            if replay(&store, &plan, &mut out, &mut replayed).is_err() {
                return;
            }
            for m in &members {
                last.insert(*m, replayed.get(m).copied().unwrap_or(0));
            }
        }
        let mut backstop = 0;
        let mut not_ours: HashSet<SessionId> = HashSet::new();
        loop {
            if out.state.shutting_down() || out.tx.is_closed() {
                return;
            }
            let (generation, tick, hints) = feed.wait(seen, POLL, &last);
            let mut due: Vec<SessionId> = hints
                .into_iter()
                .filter(|(s, n)| last.get(s).is_some_and(|l| n > l))
                .map(|(s, _)| s)
                .collect();
            if subtree && generation != seen {
                if not_ours.len() > 65_536 {
                    not_ours.clear();
                }
                for s in feed.unknown(&last) {
                    if not_ours.contains(&s) {
                        continue;
                    }
                    match store.session(s) {
                        Ok(sess) if sess.parent_id.is_some_and(|p| last.contains_key(&p)) => {
                            last.insert(s, 0);
                            due.push(s);
                        }
                        _ => {
                            not_ours.insert(s);
                        }
                    }
                }
            }
            if tick != backstop {
                backstop = tick;
                if subtree {
                    if let Ok(all) = store.subtree_ids(id) {
                        for s in all {
                            last.entry(s).or_insert(0);
                        }
                    }
                }
                due = last.keys().copied().collect();
            }
            seen = generation;
            for s in due {
                if send_after(&store, s, &mut last, &mut out).is_err() {
                    return;
                }
            }
            if out.last_sent.elapsed() >= keepalive
                && out
                    .send(super::Bytes::from_static(b": keep-alive\n\n"))
                    .is_err()
            {
                return;
            }
        }
    }

    /// Sends the events of `s` after `last[s]`, page by page, advancing `last[s]`.
    fn send_after(
        store: &Store,
        s: SessionId,
        last: &mut HashMap<SessionId, u64>,
        out: &mut Sender,
    ) -> Result<(), Gone> {
        loop {
            let after = last.get(&s).copied().unwrap_or(0);
            let page = match store.events(s, Some(after), REPLAY_PAGE) {
                Ok(p) => p,
                Err(e) if e.is_not_found() => {
                    last.remove(&s);
                    return Ok(());
                }
                // The database is away: the next wake-up (a backstop tick at the latest)
                // tries again; nothing is skipped.
                Err(_) => return Ok(()),
            };
            for e in &page.items {
                out.send(event_frame(e))?;
                last.insert(s, e.seq);
            }
            if page.items.len() < REPLAY_PAGE {
                return Ok(());
            }
        }
    }
}

/// The client went away (or the server is stopping).
struct Gone;

struct Sender {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    state: AppState,
    last_sent: Instant,
}

impl Sender {
    /// Sends one frame, waiting while the client is slow (the subscription queue, bounded,
    /// absorbs live events meanwhile), but never past shutdown or a departed client.
    fn send(&mut self, frame: Bytes) -> Result<(), Gone> {
        let mut item = Ok(frame);
        loop {
            match self.tx.try_send(item) {
                Ok(()) => {
                    self.last_sent = Instant::now();
                    return Ok(());
                }
                Err(TrySendError::Closed(_)) => return Err(Gone),
                Err(TrySendError::Full(back)) => {
                    if self.state.shutting_down() {
                        return Err(Gone);
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Ends the body with an error, so the client sees a broken stream, not a clean end.
    fn fail(&mut self, message: &str) {
        crate::log("error", message);
        let _ = self
            .tx
            .try_send(Err(std::io::Error::other(message.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_bad_ones_are_named() {
        let id = SessionId::new();
        let p = parse_position(&format!("{id}:7")).unwrap();
        assert_eq!(
            p,
            Position {
                session: Some(id),
                seq: 7
            }
        );
        assert_eq!(parse_position(" 12 ").unwrap().seq, 12);
        let e = parse_position("abc:1").unwrap_err();
        assert!(format!("{e:?}").contains("Last-Event-ID"), "{e:?}");
        assert!(parse_position(&format!("{id}:x")).is_err());
        assert!(parse_position("-1").is_err());
    }
}
