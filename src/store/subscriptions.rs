//! Subscribing: the store side of `crate::subscribe` (which holds the queues and the hub).

use std::collections::HashSet;

use crate::error::Result;
use crate::ids::SessionId;
use crate::store::Store;
use crate::subscribe::{Subscription, SubscriptionFilter};

impl Store {
    /// Subscribes to events committed from now on that pass `filter`.
    ///
    /// Events arrive in commit order, once the batch that wrote them is durable (see DESIGN.md,
    /// "Write path"). A subscriber that falls behind by more than the filter's capacity loses
    /// events and is told how many with [`Delivery::Missed`](crate::Delivery::Missed); writers
    /// never wait. Events are [`Event`](crate::Event)s, which serialize to JSON with a `type`
    /// field.
    pub fn subscribe(&self, filter: SubscriptionFilter) -> Result<Subscription> {
        filter.validate()?;
        // Hold the write lock while taking the subtree and registering, so that no commit falls
        // between the snapshot and the batch number the subscription starts after.
        let _state = self.lock()?;
        let (members, grows) = match filter.scope() {
            (Some(root), only) => {
                let mut set: HashSet<SessionId> = self.subtree_ids(root)?.into_iter().collect();
                if let Some(one) = only {
                    if !set.contains(&one) {
                        self.session(one)?;
                    }
                    set = HashSet::from([one]);
                    (Some(set), false)
                } else {
                    (Some(set), true)
                }
            }
            (None, Some(one)) => {
                self.session(one)?;
                (Some(HashSet::from([one])), false)
            }
            (None, None) => (None, false),
        };
        let since = self.inner.acks.last_committed();
        self.inner.hub.register(filter, members, grows, since)
    }
}

impl Store {
    /// The seq of the last event in session `id`'s log (0: none yet). A reader that tails the
    /// log from the store itself (another process's writes on a shared engine never reach this
    /// process's subscriptions) starts after it.
    pub fn last_event_seq(&self, id: SessionId) -> Result<u64> {
        self.session(id)?;
        let prefix = crate::keys::Key::new(crate::keys::EVENT).sid(&id).build();
        let last = self
            .backend()
            .scan(&prefix, &crate::backend::prefix_end(&prefix), true, 1)?;
        Ok(match last.first() {
            Some((k, _)) if k.len() == prefix.len() + 8 => {
                crate::keys::u64_value(&k[prefix.len()..])
            }
            _ => 0,
        })
    }
}
