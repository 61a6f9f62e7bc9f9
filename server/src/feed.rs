//! Event notices across servers (with `--metadata postgres://...`): a write on one server must
//! reach an event stream open on another. Each server runs one listener thread per tenant
//! (`LISTEN` on the tenant's channel, see [`cairn::EventListener`]); a notice only says
//! "session X has events up to seq N", and the streams read the events themselves from the
//! database, so a lost notice (a dropped connection) loses nothing: the thread also ticks a
//! backstop every [`BACKSTOP`], on which streams re-read every session they follow.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use cairn::SessionId;

/// The longest a stream goes without reading the database for its sessions, notices or not.
pub const BACKSTOP: Duration = Duration::from_secs(2);
/// Sessions remembered in the hints; beyond it they are forgotten (the backstop still finds
/// their events), so memory stays bounded however many sessions a server sees.
const MAX_HINTS: usize = 65_536;
/// How long the listener waits before connecting again after a failure.
const RECONNECT: Duration = Duration::from_millis(500);

/// What the listener has seen, shared with the streams of one tenant.
#[derive(Default)]
pub struct FeedState {
    /// Bumped on every notice and every backstop tick.
    pub generation: u64,
    /// Bumped on every backstop tick (streams then re-read all their sessions).
    pub backstop: u64,
    /// The highest seq announced per session.
    pub hints: HashMap<SessionId, u64>,
}

/// The notices of one tenant, fed by a listener thread that ends when the feed is dropped.
#[derive(Default)]
pub struct Feed {
    state: Mutex<FeedState>,
    changed: Condvar,
}

impl Feed {
    /// Starts the listener thread on `listener`.
    pub fn start(mut listener: cairn::EventListener) -> Arc<Feed> {
        let feed = Arc::new(Feed::default());
        let weak: Weak<Feed> = Arc::downgrade(&feed);
        std::thread::Builder::new()
            .name("cairn-feed".into())
            .spawn(move || {
                let mut last_tick = Instant::now();
                loop {
                    let got = listener.wait(BACKSTOP);
                    let Some(feed) = weak.upgrade() else { return };
                    let failed = got.is_err();
                    let tick = failed || last_tick.elapsed() >= BACKSTOP;
                    {
                        let mut st = feed.lock();
                        if let Ok(notices) = got {
                            if st.hints.len() > MAX_HINTS {
                                st.hints.clear();
                            }
                            for (s, n) in notices {
                                let h = st.hints.entry(s).or_insert(0);
                                *h = (*h).max(n);
                            }
                        }
                        if tick {
                            st.backstop += 1;
                            last_tick = Instant::now();
                        }
                        st.generation += 1;
                    }
                    feed.changed.notify_all();
                    drop(feed);
                    if failed {
                        std::thread::sleep(RECONNECT);
                    }
                }
            })
            .ok();
        feed
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // Plain counters and a map of maxima: consistent after any panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `timeout` for a generation after `seen`; returns the current generation, the
    /// backstop count and the hints for `sessions`.
    pub fn wait(
        &self,
        seen: u64,
        timeout: Duration,
        sessions: &HashMap<SessionId, u64>,
    ) -> (u64, u64, Vec<(SessionId, u64)>) {
        let st = self.lock();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |s| s.generation == seen)
            .unwrap_or_else(|p| p.into_inner());
        let hints = st
            .hints
            .iter()
            .filter(|(s, _)| sessions.contains_key(s))
            .map(|(s, n)| (*s, *n))
            .collect();
        (st.generation, st.backstop, hints)
    }

    /// Sessions announced that are not in `known` (candidates for a growing subtree).
    pub fn unknown(&self, known: &HashMap<SessionId, u64>) -> Vec<SessionId> {
        self.lock()
            .hints
            .keys()
            .filter(|s| !known.contains_key(s))
            .copied()
            .collect()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }
}
