//! Budgets, counters and statistics on the store: every counter update is a read-modify-write in
//! one batch under the write lock, persisted with the records it belongs to.

use chrono::{DateTime, Utc};

use super::{Store, Tx};
use crate::backend::RangeIter;
use crate::error::{Error, Result};
use crate::ids::SessionId;
use crate::keys::{self, Key};
use crate::metrics::{
    Distribution, IterationOutcome, MetricsDelta, SessionMetrics, SessionStats, ITERATIONS,
    LAST_ACTIVITY_MS,
};
use crate::session::{Session, SessionFilter, SessionStatus};

pub(crate) fn metric_key(sid: &SessionId, name: &str) -> Vec<u8> {
    Key::new(keys::METRIC)
        .sid(sid)
        .bytes(name.as_bytes())
        .build()
}

fn metric_value(name: &str, b: &[u8]) -> Result<u64> {
    b.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt {
            what: format!(
                "metric {name:?} has a value of {} bytes, expected 8",
                b.len()
            ),
        })
}

fn now_ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

impl Store {
    /// Adds `delta` to the session's counters in one atomic step and returns the new totals.
    ///
    /// Counters are exact under concurrent updates from any number of threads and survive
    /// restarts. A finished session still takes metrics (late accounting of its last request);
    /// a session that does not exist is [`Error::SessionNotFound`]. A counter that would pass
    /// `u64::MAX` is [`Error::LimitExceeded`] and nothing is changed.
    pub fn record_metrics(
        &self,
        session: SessionId,
        delta: &MetricsDelta,
    ) -> Result<SessionMetrics> {
        delta.validate()?;
        self.write(|tx| {
            self.tx_session(tx, session)?;
            // Under the write lock the committed state is the current state.
            let mut m = self.read_metrics(session)?;
            for (name, inc) in delta.entries() {
                if inc == 0 {
                    continue;
                }
                add_metric(tx, session, &name, inc, &mut m)?;
            }
            let now = now_ms(Utc::now());
            tx.put(
                metric_key(&session, LAST_ACTIVITY_MS),
                now.to_be_bytes().to_vec(),
            );
            m.last_activity_ms = Some(now);
            Ok(m)
        })
    }

    /// The session's counters (all zero if nothing was recorded).
    pub fn metrics(&self, session: SessionId) -> Result<SessionMetrics> {
        self.session(session)?;
        self.read_metrics(session)
    }

    pub(crate) fn read_metrics(&self, session: SessionId) -> Result<SessionMetrics> {
        let prefix = Key::new(keys::METRIC).sid(&session).build();
        let mut m = SessionMetrics::default();
        for e in RangeIter::prefix(self.backend(), &prefix, false) {
            let (k, v) = e?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            m.set(&name, metric_value(&name, &v)?);
        }
        Ok(m)
    }

    /// Counts one iteration of an active session against its budget.
    ///
    /// When the count reaches `SessionOptions::max_iterations`, the session moves to `timed_out` in
    /// the same atomic step (the outcome says so). After that, or once the session's deadline has
    /// passed (which also moves it to `timed_out`), the call is refused with
    /// [`Error::SessionClosed`] and nothing is counted. Suspended and finished sessions are
    /// refused as well.
    pub fn increment_iterations(&self, session: SessionId) -> Result<IterationOutcome> {
        // The inner result: the timeout is committed even though the call is refused.
        self.write(|tx| {
            let s = self.tx_session(tx, session)?;
            if s.status != SessionStatus::Active {
                let message = match s.status {
                    SessionStatus::Suspended => "resume it before counting iterations".to_string(),
                    SessionStatus::TimedOut => format!(
                        "its budget is used up ({}); no more iterations are counted",
                        s.reason.as_deref().unwrap_or("timed out")
                    ),
                    _ => "a finished session counts no more iterations".to_string(),
                };
                return Err(Error::SessionClosed {
                    id: session,
                    status: s.status,
                    message,
                });
            }
            let now = Utc::now();
            let current = match tx.get(&metric_key(&session, ITERATIONS))? {
                Some(v) => metric_value(ITERATIONS, &v)?,
                None => 0,
            };
            let refusal = if let Some(dl) = s.options.deadline.filter(|dl| now >= *dl) {
                Some(format!("deadline {} passed", dl.to_rfc3339()))
            } else {
                s.options
                    .max_iterations
                    .filter(|max| current >= *max)
                    .map(|max| format!("iteration budget of {max} reached"))
            };
            if let Some(reason) = refusal {
                self.transition_in(tx, session, SessionStatus::TimedOut, Some(&reason))?;
                return Ok(Err(Error::SessionClosed {
                    id: session,
                    status: SessionStatus::TimedOut,
                    message: format!(
                        "{reason}; the session is now timed_out and counts no more iterations"
                    ),
                }));
            }
            let n = current.checked_add(1).ok_or_else(|| Error::LimitExceeded {
                limit: "iterations",
                message: format!("session {session} has counted u64::MAX iterations"),
            })?;
            tx.put(metric_key(&session, ITERATIONS), n.to_be_bytes().to_vec());
            tx.put(
                metric_key(&session, LAST_ACTIVITY_MS),
                now_ms(now).to_be_bytes().to_vec(),
            );
            let mut status = SessionStatus::Active;
            if let Some(max) = s.options.max_iterations.filter(|max| n >= *max) {
                let reason = format!("iteration budget of {max} reached");
                status = self
                    .transition_in(tx, session, SessionStatus::TimedOut, Some(&reason))?
                    .status;
            }
            Ok(Ok(IterationOutcome {
                iterations: n,
                max_iterations: s.options.max_iterations,
                status,
            }))
        })?
    }

    /// Moves every live (active or suspended) session whose deadline has passed, or whose
    /// iteration count has reached a budget lowered since, to `timed_out`. Returns their ids.
    /// Pinned sessions are not exempt: a budget is the caller's own bound, not retention.
    pub fn enforce_budgets(&self) -> Result<Vec<SessionId>> {
        let now = Utc::now();
        let over = |s: &Session, iterations: u64| -> Option<String> {
            if let Some(dl) = s.options.deadline.filter(|dl| now >= *dl) {
                return Some(format!("deadline {} passed", dl.to_rfc3339()));
            }
            s.options
                .max_iterations
                .filter(|max| iterations >= *max)
                .map(|max| format!("iteration budget of {max} reached"))
        };
        let mut candidates = Vec::new();
        for status in [SessionStatus::Active, SessionStatus::Suspended] {
            for id in self.ids_with_status(status)? {
                let s = match self.session(id) {
                    Ok(s) => s,
                    Err(Error::SessionNotFound { .. }) => continue,
                    Err(e) => return Err(e),
                };
                if s.options.deadline.is_none() && s.options.max_iterations.is_none() {
                    continue;
                }
                if over(&s, self.read_metrics(id)?.iterations).is_some() {
                    candidates.push(id);
                }
            }
        }
        let mut done = Vec::new();
        for chunk in candidates.chunks(256) {
            let timed_out = self.write(|tx| {
                let mut timed_out = Vec::new();
                for id in chunk {
                    // Decide again under the lock: the session may have changed since the scan.
                    let s = match self.tx_session(tx, *id) {
                        Ok(s) => s,
                        Err(Error::SessionNotFound { .. }) => continue,
                        Err(e) => return Err(e),
                    };
                    if s.status.is_terminal() {
                        continue;
                    }
                    let iterations = match tx.get(&metric_key(id, ITERATIONS))? {
                        Some(v) => metric_value(ITERATIONS, &v)?,
                        None => 0,
                    };
                    if let Some(reason) = over(&s, iterations) {
                        self.transition_in(tx, *id, SessionStatus::TimedOut, Some(&reason))?;
                        timed_out.push(*id);
                    }
                }
                Ok(timed_out)
            })?;
            done.extend(timed_out);
        }
        Ok(done)
    }

    /// Ids of every session with `status`, from the status index.
    pub(crate) fn ids_with_status(&self, status: SessionStatus) -> Result<Vec<SessionId>> {
        let prefix = Key::new(keys::SESSION_STATUS).u8(status.code()).build();
        RangeIter::prefix(self.backend(), &prefix, false)
            .map(|e| Ok(SessionId::from_bytes(keys::tail16(&e?.0)?)))
            .collect()
    }

    /// Statistics over every session `filter` selects (its limit is ignored: all pages are read;
    /// a cursor starts after that session). Counts by status, success rate (completed / finished),
    /// iteration and duration distributions, request, error, token, cost and tool-call totals.
    ///
    /// Reads each matching session and its counters once; memory grows by 16 bytes per session
    /// for the exact percentiles.
    pub fn session_stats(&self, filter: &SessionFilter) -> Result<SessionStats> {
        let mut st = SessionStats::default();
        for s in SessionStatus::ALL {
            st.by_status.insert(s.as_str().to_string(), 0);
        }
        let mut iterations = Vec::new();
        let mut durations = Vec::new();
        let mut page_filter = filter.clone().limit(1000);
        loop {
            let page = self.list_sessions(&page_filter)?;
            for s in &page.items {
                st.sessions += 1;
                *st.by_status
                    .entry(s.status.as_str().to_string())
                    .or_insert(0) += 1;
                if s.status.is_terminal() {
                    st.finished += 1;
                    if let Some(end) = s.ended_at {
                        let ms = (end - s.created_at).num_milliseconds().max(0) as u64;
                        durations.push(ms);
                    }
                }
                let m = self.read_metrics(s.id)?;
                iterations.push(m.iterations);
                st.requests = st.requests.saturating_add(m.requests);
                st.errors = st.errors.saturating_add(m.errors);
                st.input_tokens = st.input_tokens.saturating_add(m.input_tokens);
                st.output_tokens = st.output_tokens.saturating_add(m.output_tokens);
                st.cost_micros = st.cost_micros.saturating_add(m.cost_micros);
                st.processing_micros = st.processing_micros.saturating_add(m.processing_micros);
                for (tool, n) in m.tool_calls {
                    let e = st.tool_calls.entry(tool).or_insert(0);
                    *e = e.saturating_add(n);
                }
            }
            match page.items.last() {
                Some(last) if page.has_more() => page_filter = page_filter.after(last.id),
                _ => break,
            }
        }
        let completed = st.by_status.get("completed").copied().unwrap_or(0);
        st.success_rate = (st.finished > 0).then(|| completed as f64 / st.finished as f64);
        st.error_rate = (st.requests > 0).then(|| st.errors as f64 / st.requests as f64);
        st.total_tokens = st.input_tokens.saturating_add(st.output_tokens);
        st.iterations = Distribution::from_values(&mut iterations);
        st.duration_ms = Distribution::from_values(&mut durations);
        Ok(st)
    }
}

/// Adds `inc` to one counter inside `tx`, refusing to overflow.
fn add_metric(
    tx: &mut Tx<'_>,
    session: SessionId,
    name: &str,
    inc: u64,
    m: &mut SessionMetrics,
) -> Result<()> {
    let key = metric_key(&session, name);
    let cur = match tx.get(&key)? {
        Some(v) => metric_value(name, &v)?,
        None => 0,
    };
    let new = cur.checked_add(inc).ok_or_else(|| Error::LimitExceeded {
        limit: "metric value",
        message: format!("{name} of session {session} would pass u64::MAX; nothing was recorded"),
    })?;
    tx.put(key, new.to_be_bytes().to_vec());
    m.set(name, new);
    Ok(())
}
