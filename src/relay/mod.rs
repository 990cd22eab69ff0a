//! The embedded relay: nostr-relay-builder's `LocalRelay` on redb storage, behind the box's own
//! HTTP front, with a write policy that admits only Mostro traffic.

mod event_store;
pub mod http;
pub mod policy;
pub mod throttle;

use std::sync::Arc;

use nostr::{Event, Keys};
use nostr_relay_builder::builder::RateLimit;
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use tokio::sync::Notify;

pub use event_store::EventStore;

use crate::config::Settings;
use crate::publish::Publisher;
use crate::store::disk::DiskGuard;
use crate::store::{Store, StoreError};

/// Handle to the running relay. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    local: LocalRelay,
    store: EventStore,
    publisher: Publisher,
}

impl Relay {
    /// Builds the relay on the box's store; `inbox` is notified when a request is stored.
    pub async fn new(
        settings: &Settings,
        keys: &Keys,
        store: &Store,
        inbox: Arc<Notify>,
        publisher: Publisher,
        disk: DiskGuard,
    ) -> Result<Self, StoreError> {
        let events = EventStore::load(store, keys.public_key(), inbox).await?;
        let r = &settings.relay;
        let builder = RelayBuilder::default()
            .database(events.clone())
            .write_policy(
                policy::MostroPolicy::new(
                    keys.public_key(),
                    r.max_event_bytes,
                    settings.mostro.pow,
                    r.events_per_minute_per_ip,
                )
                .guarding(disk),
            )
            .rate_limit(RateLimit {
                max_reqs: r.max_subscriptions_per_connection,
                notes_per_minute: r.events_per_minute_per_ip,
            })
            .max_connections(r.max_connections)
            .max_filter_limit(1000);
        Ok(Self {
            local: LocalRelay::new(builder),
            store: events,
            publisher,
        })
    }

    /// Stores the node's signed events and clears the outbox entries `done` in the same commit,
    /// then sends them to subscribers and queues the public ones for the public relays.
    pub async fn publish_own(&self, events: Vec<Event>, done: Vec<u64>) -> Result<(), StoreError> {
        let stored = self.store.save_own(events, done).await?;
        for ev in stored {
            if is_public_kind(&ev) {
                self.publisher.queue(ev.clone());
            }
            self.local.notify_event(ev);
        }
        Ok(())
    }

    /// Publishes events that need no outbox (info, relay list, profile: regenerated on every
    /// start).
    pub async fn publish_now(&self, events: Vec<Event>) -> Result<(), StoreError> {
        self.publish_own(events, Vec::new()).await
    }

    /// The relay's event store (for queries by the box itself).
    pub fn events(&self) -> &EventStore {
        &self.store
    }
}

fn is_public_kind(ev: &Event) -> bool {
    matches!(ev.kind.as_u16(), 0 | 10002 | 38383 | 38384 | 38385 | 38386)
}
