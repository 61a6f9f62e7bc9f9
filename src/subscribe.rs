//! In-process subscriptions to store events.
//!
//! A committed batch is offered to the subscriptions once it is durable (after the flush that
//! acknowledges it: see the store's write path), in commit order, so each subscriber sees events
//! in commit order (per session that is `seq` order) and never an event of a batch that failed or
//! that a crash could still lose. Offering an event is a filter check and
//! a push onto a bounded per-subscriber queue: a writer never waits for a subscriber. When a queue
//! is full the event is dropped and counted; the subscriber then receives [`Delivery::Missed`] at
//! the point of the gap, so it knows exactly how many events it lost and where.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::SessionId;

/// Queue length of a subscription unless [`SubscriptionFilter::capacity`] says otherwise.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1024;
/// Largest accepted queue length.
pub const MAX_SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// The event type names a filter accepts (the `type` field of an event's JSON).
pub const EVENT_TYPES: &[&str] = &[
    "created",
    "status_changed",
    "artifact_stored",
    "artifact_deleted",
    "metadata_updated",
    "checkpoint_created",
    "forked",
    "custom",
];

/// Which events a subscription receives. Every given filter must hold.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionFilter {
    subtree: Option<SessionId>,
    session: Option<SessionId>,
    types: Vec<String>,
    capacity: Option<usize>,
}

impl SubscriptionFilter {
    /// Every event of every session.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only events of `root` and its descendants, including sessions created under it later.
    pub fn subtree(mut self, root: SessionId) -> Self {
        self.subtree = Some(root);
        self
    }
    /// Only events of this one session.
    pub fn session(mut self, id: SessionId) -> Self {
        self.session = Some(id);
        self
    }
    /// Only events of this type (see [`EVENT_TYPES`]; repeat for any of several).
    pub fn event_type(mut self, name: impl Into<String>) -> Self {
        self.types.push(name.into());
        self
    }
    /// Queue length (2 to [`MAX_SUBSCRIPTION_CAPACITY`]; default [`DEFAULT_SUBSCRIPTION_CAPACITY`]).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Some(n);
        self
    }

    /// Checks the event type names and the queue length.
    pub(crate) fn validate(&self) -> Result<()> {
        for t in &self.types {
            if !EVENT_TYPES.contains(&t.as_str()) {
                return Err(Error::invalid(
                    "event type",
                    format!("{t:?}; expected one of {}", EVENT_TYPES.join(", ")),
                ));
            }
        }
        self.checked_capacity().map(|_| ())
    }

    /// The checked queue length.
    fn checked_capacity(&self) -> Result<usize> {
        let cap = self.capacity.unwrap_or(DEFAULT_SUBSCRIPTION_CAPACITY);
        if !(2..=MAX_SUBSCRIPTION_CAPACITY).contains(&cap) {
            return Err(Error::invalid(
                "subscription capacity",
                format!("{cap}; use 2 to {MAX_SUBSCRIPTION_CAPACITY}"),
            ));
        }
        Ok(cap)
    }

    /// The subtree root and the single session asked for.
    pub(crate) fn scope(&self) -> (Option<SessionId>, Option<SessionId>) {
        (self.subtree, self.session)
    }
}

/// What a subscriber receives. Serializes as `{"event": {...}}` or `{"missed": n}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The next matching event.
    Event(Event),
    /// This many matching events were dropped here because the queue was full.
    Missed(u64),
}

struct Queue {
    items: VecDeque<Delivery>,
    /// Dropped since the last delivered marker.
    gap: u64,
    missed_total: u64,
    cap: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent: keep going.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn offer(&self, ev: &Event) {
        let mut q = self.lock();
        let need = if q.gap > 0 { 2 } else { 1 };
        if q.items.len() + need > q.cap {
            q.gap += 1;
            q.missed_total += 1;
            return;
        }
        if q.gap > 0 {
            let n = std::mem::take(&mut q.gap);
            q.items.push_back(Delivery::Missed(n));
        }
        q.items.push_back(Delivery::Event(ev.clone()));
        drop(q);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

fn take(q: &mut Queue) -> Option<Delivery> {
    if let Some(d) = q.items.pop_front() {
        return Some(d);
    }
    if q.gap > 0 {
        return Some(Delivery::Missed(std::mem::take(&mut q.gap)));
    }
    None
}

/// A live subscription. Receive with [`Subscription::recv`] (blocking),
/// [`Subscription::recv_timeout`] or [`Subscription::try_recv`]; it is also a blocking iterator.
/// Dropping it unsubscribes. `Send`: move it to the thread that consumes it.
pub struct Subscription {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.shared.lock();
        f.debug_struct("Subscription")
            .field("queued", &q.items.len())
            .field("missed_total", &q.missed_total)
            .field("closed", &q.closed)
            .finish()
    }
}

impl Subscription {
    /// The next delivery, waiting for one. `None` once the store is closed (every clone
    /// dropped) and everything queued has been received.
    pub fn recv(&self) -> Option<Delivery> {
        let mut q = self.shared.lock();
        loop {
            if let Some(d) = take(&mut q) {
                return Some(d);
            }
            if q.closed {
                return None;
            }
            q = self.shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The next delivery, waiting at most `timeout`. `None` on timeout or when closed and empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Delivery> {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.lock();
        loop {
            if let Some(d) = take(&mut q) {
                return Some(d);
            }
            let now = Instant::now();
            if q.closed || now >= deadline {
                return None;
            }
            q = self
                .shared
                .ready
                .wait_timeout(q, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// The next delivery if one is ready.
    pub fn try_recv(&self) -> Option<Delivery> {
        take(&mut self.shared.lock())
    }

    /// Deliveries waiting (gap markers included).
    pub fn queued(&self) -> usize {
        let q = self.shared.lock();
        q.items.len() + usize::from(q.gap > 0)
    }

    /// Events dropped for this subscriber since it subscribed.
    pub fn missed_total(&self) -> u64 {
        self.shared.lock().missed_total
    }

    /// True once the store is gone; queued deliveries can still be received.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl Iterator for Subscription {
    type Item = Delivery;
    fn next(&mut self) -> Option<Delivery> {
        self.recv()
    }
}

struct Entry {
    shared: Weak<Shared>,
    /// Sessions whose events pass (the subtree, grown by `created` events), or `None`: all.
    members: Option<HashSet<SessionId>>,
    /// Whether `members` grows with children created later (subtree) or not (one session).
    grows: bool,
    types: Vec<String>,
    /// The last batch committed when it subscribed: it receives only later ones.
    since: u64,
}

/// The subscriptions of one store. Fed by the store's publish queue after each flush.
#[derive(Default)]
pub(crate) struct Hub {
    entries: Mutex<Vec<Entry>>,
    live: AtomicUsize,
}

impl Hub {
    /// Offers the events of durable batch `batch` to every subscription registered before it
    /// was committed. Called in commit order (by the store's publish queue); never calls back
    /// into the store and never waits for a subscriber.
    pub(crate) fn publish(&self, batch: u64, events: &[Event]) {
        if events.is_empty() || self.live.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.shared.strong_count() > 0);
        self.live.store(entries.len(), Ordering::Release);
        for entry in entries.iter_mut() {
            if batch <= entry.since {
                continue;
            }
            let Some(shared) = entry.shared.upgrade() else {
                continue;
            };
            for ev in events {
                if let Some(members) = entry.members.as_mut() {
                    if entry.grows {
                        if let EventKind::Created { parent_id: Some(p) } = &ev.kind {
                            if members.contains(p) {
                                members.insert(ev.session_id);
                            }
                        }
                    }
                    if !members.contains(&ev.session_id) {
                        continue;
                    }
                }
                if !entry.types.is_empty() && !entry.types.iter().any(|t| t == ev.kind.type_name())
                {
                    continue;
                }
                shared.offer(ev);
            }
        }
    }

    /// Registers a new subscription: `members` is the session set (`None`: every session),
    /// growing with new children when `grows`; it receives batches numbered after `since`.
    pub(crate) fn register(
        &self,
        filter: SubscriptionFilter,
        members: Option<HashSet<SessionId>>,
        grows: bool,
        since: u64,
    ) -> Result<Subscription> {
        let cap = filter.checked_capacity()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                gap: 0,
                missed_total: 0,
                cap,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        self.add(Entry {
            shared: Arc::downgrade(&shared),
            members,
            grows,
            types: filter.types,
            since,
        });
        Ok(Subscription { shared })
    }

    fn add(&self, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.shared.strong_count() > 0);
        entries.push(entry);
        self.live.store(entries.len(), Ordering::Release);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let entries = self.entries.get_mut().unwrap_or_else(|p| p.into_inner());
        for e in entries.iter() {
            if let Some(s) = e.shared.upgrade() {
                s.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn ev(seq: u64) -> Event {
        Event {
            session_id: SessionId::new(),
            seq,
            at: Utc::now(),
            kind: EventKind::Custom {
                name: "x".into(),
                payload: serde_json::Value::Null,
            },
        }
    }

    fn shared(cap: usize) -> Shared {
        Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                gap: 0,
                missed_total: 0,
                cap,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    #[test]
    fn gap_marker_sits_where_events_were_lost() {
        let s = shared(3);
        for i in 1..=5 {
            s.offer(&ev(i));
        }
        // Queue holds 1, 2, 3; 4 and 5 were dropped.
        let mut q = s.lock();
        let got: Vec<_> = std::iter::from_fn(|| take(&mut q)).collect();
        drop(q);
        let seqs: Vec<String> = got
            .iter()
            .map(|d| match d {
                Delivery::Event(e) => e.seq.to_string(),
                Delivery::Missed(n) => format!("missed {n}"),
            })
            .collect();
        assert_eq!(seqs, ["1", "2", "3", "missed 2"]);
        // A gap followed by room: the marker is queued before the next event.
        let s = shared(3);
        for i in 1..=4 {
            s.offer(&ev(i));
        }
        let mut q = s.lock();
        assert!(matches!(take(&mut q), Some(Delivery::Event(e)) if e.seq == 1));
        assert!(matches!(take(&mut q), Some(Delivery::Event(e)) if e.seq == 2));
        drop(q);
        s.offer(&ev(5));
        let mut q = s.lock();
        let rest: Vec<_> = std::iter::from_fn(|| take(&mut q)).collect();
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert!(matches!(&rest[1], Delivery::Missed(1)), "{rest:?}");
        let matched = matches!(&rest[2], Delivery::Event(e) if e.seq == 5);
        assert!(matched, "{rest:?}");
        assert_eq!(q.missed_total, 1);
    }

    #[test]
    fn delivery_json_shape() {
        let j = serde_json::to_value(Delivery::Missed(3)).unwrap();
        assert_eq!(j, serde_json::json!({"missed": 3}));
        let j = serde_json::to_value(Delivery::Event(ev(1))).unwrap();
        assert_eq!(j["event"]["type"], "custom");
        assert_eq!(j["event"]["seq"], 1);
    }
}
