//! The event log's records (issue 10: one engine key per batch and session, not one per event).
//!
//! An event has its own sequence number in its session's log, from 1 without gaps. The events a
//! batch writes for one session get consecutive numbers, and are stored as:
//! - one event: `E` sid seq -> format 1, the JSON [`Event`] (as every earlier release wrote it);
//! - a run of consecutive events: **one key**, `E` sid *last* seq -> format 2, the JSON of
//!   [`Run`] (the first seq and, per event, its time and kind; the session and the numbers come
//!   from the key and the position).
//!
//! Keying a run by its last number keeps every "last seq of a session" read what it was (the
//! last key's number), and a forward scan from `E` sid n finds first the record that holds n.
//! Readers go through [`EventIter`] and [`event_at`], which expand runs into single events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{prefix_end, Backend, RangeIter};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::SessionId;
use crate::keys::{self, Key};

/// Format byte of a run record.
const RUN_FORMAT: u8 = 2;

/// A run of consecutive events of one session written by one batch (format 2).
#[derive(Serialize, Deserialize)]
struct Run {
    /// Sequence number of the first event; the others follow without gaps.
    first: u64,
    /// The events, in order.
    events: Vec<RunItem>,
}

#[derive(Serialize, Deserialize)]
struct RunItem {
    at: DateTime<Utc>,
    #[serde(flatten)]
    kind: EventKind,
}

/// The key of the record whose last event is `seq`.
pub(crate) fn key(sid: &SessionId, seq: u64) -> Vec<u8> {
    Key::new(keys::EVENT).sid(sid).u64(seq).build()
}

/// The session's key prefix.
pub(crate) fn prefix(sid: &SessionId) -> Vec<u8> {
    Key::new(keys::EVENT).sid(sid).build()
}

/// The engine writes (key, value) of `events`, which are in log order. Events of one session
/// with consecutive numbers become one record; a lone event is a format-1 record as before.
pub(crate) fn records(events: &[&Event]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let mut j = i + 1;
        while j < events.len()
            && events[j].session_id == events[i].session_id
            && Some(events[j].seq) == events[j - 1].seq.checked_add(1)
        {
            j += 1;
        }
        let run = &events[i..j];
        let last = run[run.len() - 1];
        let value = if run.len() == 1 {
            keys::encode(last)
        } else {
            let mut v = vec![RUN_FORMAT];
            let rec = Run {
                first: run[0].seq,
                events: run
                    .iter()
                    .map(|e| RunItem {
                        at: e.at,
                        kind: e.kind.clone(),
                    })
                    .collect(),
            };
            // Serializing our own plain data types to JSON cannot fail.
            serde_json::to_writer(&mut v, &rec).unwrap_or_default();
            v
        };
        out.push((key(&last.session_id, last.seq), value));
        i = j;
    }
    out
}

/// The events of one record, in order.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Vec<Event>> {
    let corrupt = |what: String| Error::Corrupt { what };
    if key.len() != 1 + 16 + 8 || key[0] != keys::EVENT {
        return Err(corrupt(format!("event key of {} bytes", key.len())));
    }
    let sid = SessionId::from_slice(&key[1..17])?;
    let last = keys::u64_value(&key[17..]);
    match value.first() {
        Some(&RUN_FORMAT) => {
            let run: Run = serde_json::from_slice(&value[1..])
                .map_err(|e| corrupt(format!("event run record does not decode: {e}")))?;
            let n = run.events.len() as u64;
            if n == 0 || run.first.checked_add(n - 1) != Some(last) {
                return Err(corrupt(format!(
                    "event run of session {sid} at {last} holds {n} events from {}",
                    run.first
                )));
            }
            Ok(run
                .events
                .into_iter()
                .zip(run.first..)
                .map(|(item, seq)| Event {
                    session_id: sid,
                    seq,
                    at: item.at,
                    kind: item.kind,
                })
                .collect())
        }
        // Format 1 (or an unknown format, which `keys::decode` refuses with "upgrade Cairn"):
        // read as every earlier release read it.
        _ => Ok(vec![keys::decode("event", value)?]),
    }
}

/// The events of a session's log from `from` on (by number), in order, expanding runs.
pub(crate) struct EventIter<'a> {
    inner: RangeIter<'a>,
    from: u64,
    buf: std::vec::IntoIter<Event>,
}

impl<'a> EventIter<'a> {
    /// Events numbered `from` and later; `page` is the first engine page's length.
    pub(crate) fn new(backend: &'a dyn Backend, sid: &SessionId, from: u64, page: usize) -> Self {
        let p = prefix(sid);
        EventIter {
            inner: RangeIter::new(backend, key(sid, from), prefix_end(&p), false, page),
            from,
            buf: Vec::new().into_iter(),
        }
    }
}

impl Iterator for EventIter<'_> {
    type Item = Result<Event>;
    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.buf.next() {
                if e.seq >= self.from {
                    return Some(Ok(e));
                }
                continue;
            }
            let (k, v) = match self.inner.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e)),
            };
            match decode(&k, &v) {
                Ok(evs) => self.buf = evs.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Event number `seq` of a session, if it exists.
pub(crate) fn event_at(backend: &dyn Backend, sid: &SessionId, seq: u64) -> Result<Option<Event>> {
    match EventIter::new(backend, sid, seq, 1).next().transpose()? {
        Some(e) if e.seq == seq => Ok(Some(e)),
        _ => Ok(None),
    }
}

/// The last event of a session's log, if any.
pub(crate) fn last_event(backend: &dyn Backend, sid: &SessionId) -> Result<Option<Event>> {
    let p = prefix(sid);
    match backend
        .scan(&p, &prefix_end(&p), true, 1)?
        .into_iter()
        .next()
    {
        Some((k, v)) => Ok(decode(&k, &v)?.pop()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MemoryBackend, Op};

    fn ev(sid: SessionId, seq: u64) -> Event {
        Event {
            session_id: sid,
            seq,
            at: Utc::now(),
            kind: EventKind::Custom {
                name: format!("e{seq}"),
                payload: serde_json::json!({"n": seq}),
            },
        }
    }

    #[test]
    fn runs_are_one_record_and_read_back_as_single_events() {
        let (a, b) = (SessionId::new(), SessionId::new());
        // a: 1 2 3, b: 1, a: 4 (after b: a new run), a: 6 (a gap in an imported log).
        let evs = [ev(a, 1), ev(a, 2), ev(a, 3), ev(b, 1), ev(a, 4), ev(a, 6)];
        let refs: Vec<&Event> = evs.iter().collect();
        let recs = records(&refs);
        let keys_of: Vec<Vec<u8>> = recs.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys_of,
            vec![key(&a, 3), key(&b, 1), key(&a, 4), key(&a, 6)]
        );
        // A lone event is the format-1 record earlier releases wrote.
        assert_eq!(recs[1].1[0], keys::RECORD_VERSION);
        assert_eq!(recs[0].1[0], RUN_FORMAT);
        let db = MemoryBackend::new();
        db.apply(recs.into_iter().map(|(k, v)| Op::Put(k, v)).collect())
            .unwrap();
        let all: Vec<Event> = EventIter::new(&db, &a, 1, 2).map(|e| e.unwrap()).collect();
        assert_eq!(
            all,
            vec![
                evs[0].clone(),
                evs[1].clone(),
                evs[2].clone(),
                evs[4].clone(),
                evs[5].clone()
            ]
        );
        let from2: Vec<u64> = EventIter::new(&db, &a, 2, 1)
            .map(|e| e.unwrap().seq)
            .collect();
        assert_eq!(from2, vec![2, 3, 4, 6]);
        assert_eq!(event_at(&db, &a, 2).unwrap(), Some(evs[1].clone()));
        assert_eq!(event_at(&db, &a, 5).unwrap(), None);
        assert_eq!(event_at(&db, &b, 2).unwrap(), None);
        assert_eq!(last_event(&db, &a).unwrap(), Some(evs[5].clone()));
    }

    #[test]
    fn a_run_whose_numbers_disagree_with_its_key_is_corrupt() {
        let a = SessionId::new();
        let evs = [ev(a, 1), ev(a, 2)];
        let recs = records(&evs.iter().collect::<Vec<_>>());
        let (_, v) = &recs[0];
        let e = decode(&key(&a, 5), v).unwrap_err().to_string();
        assert!(e.contains("holds 2 events from 1"), "{e}");
        let e = decode(&key(&a, 2), &[RUN_FORMAT, b'{'])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not decode"), "{e}");
        let e = decode(&key(&a, 2), &[9, b'{']).unwrap_err().to_string();
        assert!(e.contains("upgrade Cairn"), "{e}");
    }
}
