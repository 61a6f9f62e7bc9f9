//! A session's (or subtree's) events in time order, one page at a time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::backend::prefix_end;
use crate::checkpoint::{TimelineEntry, TimelineOptions};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::SessionId;
use crate::keys::{self, Key};
use crate::query::{Page, MAX_LIMIT};
use crate::store::event_log::{self, EventIter};
use crate::store::Store;

/// The order of timeline entries: time, then session, then position in the session's log.
type TimeKey = (i64, SessionId, u64);

fn time_key(e: &Event) -> TimeKey {
    let nanos =
        e.at.timestamp_nanos_opt()
            .unwrap_or_else(|| e.at.timestamp_micros().saturating_mul(1000));
    (nanos, e.session_id, e.seq)
}

fn encode_cursor(k: &TimeKey) -> String {
    format!("{}:{}:{}", k.0, k.1, k.2)
}

fn parse_cursor(s: &str) -> Result<TimeKey> {
    let bad = || {
        Error::invalid(
            "timeline cursor",
            format!(
                "{:?} is not a timeline cursor; pass back the next_cursor of a previous page",
                crate::artifact::truncate_for_message(s)
            ),
        )
    };
    let mut parts = s.trim().splitn(3, ':');
    let t = parts
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(bad)?;
    let sid = parts
        .next()
        .and_then(|p| p.parse::<SessionId>().ok())
        .ok_or_else(bad)?;
    let seq = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .ok_or_else(bad)?;
    Ok((t, sid, seq))
}

impl Store {
    /// A session's history (with [`TimelineOptions::subtree`], its subtree's) in time order,
    /// one page at a time: every event, with the artifact of each `artifact_stored` and the
    /// checkpoint of each `checkpoint_created` when they still exist. Content is not read:
    /// read it on demand with [`Store::read`].
    pub fn timeline(
        &self,
        session: SessionId,
        opts: &TimelineOptions,
    ) -> Result<Page<TimelineEntry>> {
        let limit = opts.limit;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(
                "limit",
                format!("{limit}; use 1 to {MAX_LIMIT}"),
            ));
        }
        let cursor = opts.cursor.as_deref().map(parse_cursor).transpose()?;
        let sessions = if opts.subtree {
            self.subtree_ids(session)?
        } else {
            self.session(session)?;
            vec![session]
        };
        let page = (limit + 1).min(256);
        let mut iters = Vec::with_capacity(sessions.len());
        let mut heap = BinaryHeap::new();
        for sid in sessions {
            let start = match &cursor {
                Some(c) => self.first_seq_after(sid, c)?,
                None => 1,
            };
            let mut it = EventIter::new(self.backend(), &sid, start, page);
            if let Some(e) = it.next() {
                let ev: Event = e?;
                heap.push(Reverse((time_key(&ev), iters.len())));
                iters.push((it, Some(ev)));
            }
        }
        let mut items = Vec::new();
        while let Some(Reverse((_, i))) = heap.pop() {
            let (it, slot) = &mut iters[i];
            let Some(ev) = slot.take() else { continue };
            if let Some(e) = it.next() {
                let next: Event = e?;
                heap.push(Reverse((time_key(&next), i)));
                *slot = Some(next);
            }
            items.push(ev);
            if items.len() > limit {
                break;
            }
        }
        let Page { items, next_cursor } =
            Page::from_overfetch(items, limit, |e| encode_cursor(&time_key(e)));
        let mut out = Vec::with_capacity(items.len());
        for event in items {
            let artifact = match &event.kind {
                EventKind::ArtifactStored { artifact_id, .. } => {
                    match self.artifact(event.session_id, *artifact_id) {
                        Ok(a) => Some(a),
                        Err(Error::ArtifactNotFound { .. }) => None,
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            };
            let checkpoint = match &event.kind {
                EventKind::CheckpointCreated { checkpoint_id, .. } => {
                    match self.checkpoint(*checkpoint_id) {
                        Ok(c) => Some(c),
                        Err(Error::CheckpointNotFound { .. }) => None,
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            };
            out.push(TimelineEntry {
                event,
                artifact,
                checkpoint,
            });
        }
        Ok(Page {
            items: out,
            next_cursor,
        })
    }

    /// The first sequence number of `sid`'s log that sorts after `c`. Events of one session are
    /// appended under the write lock with the wall clock, so their times do not go down: a
    /// binary search over sequence numbers finds the spot in O(log n) reads.
    fn first_seq_after(&self, sid: SessionId, c: &TimeKey) -> Result<u64> {
        if sid == c.1 {
            return Ok(c.2.saturating_add(1));
        }
        let prefix = Key::new(keys::EVENT).sid(&sid).build();
        let last = match self
            .backend()
            .scan(&prefix, &prefix_end(&prefix), true, 1)?
            .first()
        {
            Some((k, _)) if k.len() == prefix.len() + 8 => keys::u64_value(&k[prefix.len()..]),
            _ => return Ok(1),
        };
        let (mut lo, mut hi) = (1u64, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let after = match event_log::event_at(self.backend(), &sid, mid)? {
                Some(e) => time_key(&e) > *c,
                None => false,
            };
            if after {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }
}
