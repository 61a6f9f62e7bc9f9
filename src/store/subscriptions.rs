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
