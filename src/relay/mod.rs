//! The embedded relay: nostr-relay-builder's `LocalRelay` on redb storage, behind the box's own
//! HTTP front, with a write policy that admits only Mostro traffic.

mod event_store;
pub mod frames;
pub mod http;
pub mod policy;
pub mod private;
pub mod throttle;

use std::sync::Arc;

use nostr::{Event, Keys, Timestamp};
use nostr_relay_builder::builder::RateLimit;
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use tokio::sync::Notify;

pub use event_store::{Backlog, EventStore};

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
    backlog: Backlog,
    retention_secs: u64,
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
        let r = &settings.relay;
        let backlog = Backlog::default();
        let events = EventStore::load(
            store,
            keys.public_key(),
            inbox,
            private_index(settings),
            backlog.clone(),
        )
        .await?;
        let builder = RelayBuilder::default()
            .database(events.clone())
            .write_policy(
                policy::MostroPolicy::new(
                    keys.public_key(),
                    r.max_event_bytes,
                    settings.mostro.pow,
                    r.events_per_minute_per_ip,
                )
                .guarding(disk)
                .with_backlog(backlog.clone(), r.max_inbox_backlog),
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
            backlog,
            retention_secs: r.private_message_retention_days * 86_400,
        })
    }

    /// Requests accepted and not yet handled (the engine counts them out).
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Runs until the process ends: forgets private messages past their retention and expired
    /// events, hourly.
    pub async fn keep_tidy(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let now = nostr::Timestamp::now();
            match tidy(&self.store, now, self.retention_secs).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("relay: forgot {n} expired or old events"),
                Err(e) => tracing::error!("relay: cannot forget expired or old events: {e}"),
            }
        }
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

/// The sweep as it runs at `now`: private messages past `retention_secs`, events past their
/// NIP-40 expiration.
async fn tidy(
    store: &EventStore,
    now: Timestamp,
    retention_secs: u64,
) -> Result<usize, StoreError> {
    let before = now.as_secs().saturating_sub(retention_secs);
    store.tidy(now, before.into()).await
}

/// Runs on a stopped box's store the sweep the running box would run at `at`, and returns how
/// many events it forgot. The flood benchmark uses it to show the store a month after a flood
/// without waiting a month; the box compacts the file when it next starts.
pub async fn tidy_stopped_box(
    store: &Store,
    settings: &Settings,
    node: nostr::PublicKey,
    at: Timestamp,
) -> Result<usize, StoreError> {
    let private = private_index(settings);
    let events = EventStore::load(store, node, Arc::default(), private, Backlog::default()).await?;
    let retention = settings.relay.private_message_retention_days * 86_400;
    tidy(&events, at, retention).await
}

/// The private messages' index, within the settings' bounds: the node's own messages get ten
/// times the room of strangers' chats.
fn private_index(settings: &Settings) -> Arc<private::PrivateMessages> {
    let max = settings.relay.max_private_messages;
    Arc::new(private::PrivateMessages::new(max, max.saturating_mul(10)))
}

fn is_public_kind(ev: &Event) -> bool {
    matches!(ev.kind.as_u16(), 0 | 10002 | 38383 | 38384 | 38385 | 38386)
}
