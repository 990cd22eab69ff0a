//! The relay's event storage on redb.
//!
//! Every accepted event is committed to redb through the grouped writer before the relay says
//! OK. Three kinds of event are kept three ways:
//! - a request to the node goes to the engine's inbox in that same commit, so nothing the relay
//!   accepted can be missed; it is never indexed for queries (only the engine reads it) and the
//!   engine deletes it in the commit that handles it;
//! - private messages to others (the node's replies, chats) are indexed in
//!   [`PrivateMessages`], bounded in number and age;
//! - everything else (the node's public events) is indexed in nostr-database's in-memory
//!   index, loaded from redb at start.

use std::collections::BTreeSet;
use std::sync::Arc;

use nostr::{Event, EventId, Filter, JsonUtil, Kind, PublicKey, Timestamp};
use nostr_database::{
    Backend, DatabaseError, DatabaseEventStatus, DatabaseHelper, Events, NostrDatabase,
    RejectedReason, SaveEventStatus,
};
use redb::{ReadableTable, WriteTransaction};
use tokio::sync::Notify;

use super::private::PrivateMessages;
use crate::store::*;

/// Relay storage backed by the box's redb file.
#[derive(Debug, Clone)]
pub struct EventStore {
    index: DatabaseHelper,
    private: Arc<PrivateMessages>,
    writer: WriterHandle,
    store: StoreHandle,
    node: PublicKey,
    inbox: Arc<Notify>,
    backlog: Backlog,
}

/// How an event is kept (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Request,
    Private,
    /// The node's own private messages.
    Own,
    Public,
}

#[derive(Clone)]
struct StoreHandle(Store);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Requests accepted and not yet handled: the relay counts them in, the engine counts them
/// out, and the write policy refuses requests while it is full. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<std::sync::atomic::AtomicU64>);

impl Backlog {
    /// Requests waiting now.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `n` requests accepted.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// `n` requests handled.
    pub fn done(&self, n: u64) {
        let _ = self.0.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |v| Some(v.saturating_sub(n)),
        );
    }
}

#[derive(Clone)]
struct WriterHandle(Writer);

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl EventStore {
    /// Loads the stored events into the indexes, dropping from disk what is expired, replaced,
    /// past the private messages' bounds, or a request already handled (stores from before
    /// handled requests were deleted kept them all).
    #[allow(clippy::mutable_key_type)] // nostr-database's bulk_load takes a BTreeSet<Event>
    pub async fn load(
        store: &Store,
        node: PublicKey,
        inbox: Arc<Notify>,
        private: Arc<PrivateMessages>,
        backlog: Backlog,
    ) -> Result<Self, StoreError> {
        let mut events = BTreeSet::new();
        let mut gone: Vec<[u8; 32]> = Vec::new();
        {
            let rtx = store.read()?;
            let queued: std::collections::HashSet<[u8; 32]> = {
                let inbox = rtx.open_table(INBOX)?;
                let mut ids = std::collections::HashSet::new();
                for entry in inbox.iter()? {
                    ids.insert(*entry?.1.value().0);
                }
                ids
            };
            backlog.add(queued.len() as u64);
            let own = rtx.open_table(OWN_MESSAGES)?;
            let table = rtx.open_table(EVENTS)?;
            for entry in table.iter()? {
                let (id, json) = entry?;
                match Event::from_json(json.value()) {
                    Ok(ev) if !ev.is_expired() => match class(&node, &ev) {
                        _ if own.get(id.value())?.is_some() => {
                            gone.extend(private.insert(ev, true).iter().map(|i| i.to_bytes()))
                        }
                        Class::Request if !queued.contains(id.value()) => gone.push(*id.value()),
                        Class::Request | Class::Own => {}
                        Class::Private => {
                            let own = ev.pubkey == node;
                            gone.extend(private.insert(ev, own).iter().map(|i| i.to_bytes()))
                        }
                        Class::Public => {
                            events.insert(ev);
                        }
                    },
                    _ => gone.push(*id.value()),
                }
            }
        }
        let index = DatabaseHelper::unbounded();
        let discarded = index.bulk_load(events).await;
        gone.extend(discarded.iter().map(|id| id.to_bytes()));
        if !gone.is_empty() {
            tracing::info!(
                "relay: removing {} expired, replaced or handled events",
                gone.len()
            );
        }
        delete_events(store.writer(), gone).await?;
        Ok(Self {
            index,
            private,
            writer: WriterHandle(store.writer().clone()),
            store: StoreHandle(store.clone()),
            node,
            inbox,
            backlog,
        })
    }

    /// Forgets private messages older than `before` (the retention) and every event whose
    /// NIP-40 expiration is before `now` (expired orders' events, among others), from memory
    /// and disk; returns how many.
    pub async fn tidy(&self, now: Timestamp, before: Timestamp) -> Result<usize, StoreError> {
        let mut gone: Vec<[u8; 32]> = self
            .private
            .expire(before)
            .iter()
            .map(|id| id.to_bytes())
            .collect();
        let expired: Vec<EventId> = self
            .index
            .query(Filter::new())
            .await
            .into_iter()
            .filter(|e| e.is_expired_at(&now))
            .map(|e| e.id)
            .collect();
        if !expired.is_empty() {
            gone.extend(expired.iter().map(|id| id.to_bytes()));
            self.index.delete(Filter::new().ids(expired)).await;
        }
        let n = gone.len();
        delete_events(&self.writer.0, gone).await?;
        Ok(n)
    }

    /// True when a request with this id is stored or was handled already.
    fn request_known(&self, id: &EventId) -> Result<bool, StoreError> {
        let read = self.store.0.read()?;
        let bytes = id.to_bytes();
        Ok(read.open_table(EVENTS)?.get(&bytes)?.is_some()
            || read.open_table(PROCESSED)?.get(&bytes)?.is_some())
    }

    /// Stores the node's own signed events and removes them from the outbox in one commit, then
    /// indexes them; only then may anyone see them. Returns the events that are now live.
    pub async fn save_own(
        &self,
        events: Vec<Event>,
        done: Vec<u64>,
    ) -> Result<Vec<Event>, StoreError> {
        let to_store = events.clone();
        self.writer
            .0
            .write(move |txn| {
                persist(txn, &to_store, None)?;
                let mut own = txn.open_table(OWN_MESSAGES)?;
                for ev in to_store.iter().filter(|e| is_private(e)) {
                    own.insert(&ev.id.to_bytes(), ())?;
                }
                let mut outbox = txn.open_table(OUTBOX)?;
                for s in &done {
                    outbox.remove(s)?;
                }
                Ok(())
            })
            .await?;
        let mut live = Vec::with_capacity(events.len());
        for ev in events {
            // The node's own messages are for traders (even one to its own key, which a gift
            // wrap's random signer does not tell apart from a request).
            let class = if is_private(&ev) {
                Class::Own
            } else {
                Class::Public
            };
            if self.index(&ev, class).await? {
                live.push(ev);
            }
        }
        Ok(live)
    }

    /// Adds a stored event to its query index and deletes from disk what it replaces (or, for
    /// private messages, pushes out). False if the index refused it (an older revision of a
    /// replaceable event) or pushed it out at once.
    async fn index(&self, event: &Event, class: Class) -> Result<bool, StoreError> {
        match class {
            Class::Request => return Ok(true),
            Class::Private | Class::Own => {
                let out = self.private.insert(event.clone(), class == Class::Own);
                let live = !out.contains(&event.id);
                let gone = out.iter().map(|id| id.to_bytes()).collect();
                delete_events(&self.writer.0, gone).await?;
                return Ok(live);
            }
            Class::Public => {}
        }
        let result = self.index.index_event(event).await;
        let mut gone: Vec<[u8; 32]> = result.to_discard.iter().map(|id| id.to_bytes()).collect();
        let duplicate = result.status == SaveEventStatus::Rejected(RejectedReason::Duplicate);
        if !result.status.is_success() && !duplicate {
            gone.push(event.id.to_bytes());
        }
        delete_events(&self.writer.0, gone).await?;
        Ok(result.status.is_success())
    }
}

/// How an event someone sent is kept: a request to `node`, a private message to someone else,
/// or public. (The node's own events are never requests: see [`EventStore::save_own`].)
fn class(node: &PublicKey, event: &Event) -> Class {
    if !is_private(event) {
        Class::Public
    } else if event.pubkey != *node && event.tags.public_keys().any(|p| p == node) {
        Class::Request
    } else {
        Class::Private
    }
}

fn is_private(event: &Event) -> bool {
    is_private_kind(&event.kind)
}

/// Direct messages and gift wraps: the kinds the private index holds.
fn is_private_kind(kind: &Kind) -> bool {
    matches!(kind, Kind::GiftWrap | Kind::PrivateDirectMessage)
}

/// Removes events from disk by id (nothing to do for an empty list).
async fn delete_events(writer: &Writer, ids: Vec<[u8; 32]>) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    writer
        .write(move |txn| {
            let mut t = txn.open_table(EVENTS)?;
            let mut own = txn.open_table(OWN_MESSAGES)?;
            for id in &ids {
                t.remove(id)?;
                own.remove(id)?;
            }
            Ok(())
        })
        .await
}

/// Writes events and, when `inbox_at` is given, appends them to the engine's inbox.
fn persist(
    txn: &WriteTransaction,
    events: &[Event],
    inbox_at: Option<u64>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(EVENTS)?;
    for ev in events {
        table.insert(&ev.id.to_bytes(), ev.as_json().as_str())?;
    }
    drop(table);
    if let Some(at) = inbox_at {
        for ev in events {
            let seq = next_seq(txn, META_INBOX_NEXT)?;
            let mut inbox = txn.open_table(INBOX)?;
            inbox.insert(seq, (&ev.id.to_bytes(), at))?;
        }
    }
    Ok(())
}

impl EventStore {
    /// A query over both indexes: only the one its kinds can match, when it names kinds.
    async fn query_both(&self, filter: Filter) -> Events {
        let (private, public) = match &filter.kinds {
            Some(kinds) => (
                kinds.iter().any(is_private_kind),
                kinds.iter().any(|k| !is_private_kind(k)),
            ),
            None => (true, true),
        };
        match (private, public) {
            (true, false) => self.private.query(&filter),
            (false, _) => self.index.query(filter).await,
            (true, true) => {
                let mine = self.private.query(&filter);
                self.index.query(filter).await.merge(mine)
            }
        }
    }
}

fn db_err(e: StoreError) -> DatabaseError {
    DatabaseError::backend(e)
}

impl NostrDatabase for EventStore {
    fn backend(&self) -> Backend {
        Backend::Custom("redb".into())
    }

    fn save_event<'a>(
        &'a self,
        event: &'a Event,
    ) -> nostr::util::BoxedFuture<'a, Result<SaveEventStatus, DatabaseError>> {
        Box::pin(async move {
            if event.kind.is_ephemeral() {
                return Ok(SaveEventStatus::Rejected(RejectedReason::Ephemeral));
            }
            // The policy admits only direct messages, gift wraps and the node's own kinds, so a
            // stored copy with the same id is the only reason to refuse here.
            let class = class(&self.node, event);
            let known = match class {
                Class::Request => self.request_known(&event.id).map_err(db_err)?,
                Class::Private | Class::Own => self.private.contains(&event.id),
                Class::Public => self.index.has_event(&event.id).await,
            };
            if known {
                return Ok(SaveEventStatus::Rejected(RejectedReason::Duplicate));
            }
            let request = class == Class::Request;
            let at = request.then(|| Timestamp::now().as_secs());
            let ev = vec![event.clone()];
            self.writer
                .0
                .write(move |txn| persist(txn, &ev, at))
                .await
                .map_err(db_err)?;
            if request {
                self.backlog.add(1);
                self.inbox.notify_one();
                return Ok(SaveEventStatus::Success);
            }
            let live = self.index(event, class).await.map_err(db_err)?;
            Ok(if live {
                SaveEventStatus::Success
            } else {
                SaveEventStatus::Rejected(RejectedReason::Replaced)
            })
        })
    }

    fn check_id<'a>(
        &'a self,
        event_id: &'a EventId,
    ) -> nostr::util::BoxedFuture<'a, Result<DatabaseEventStatus, DatabaseError>> {
        Box::pin(async move {
            Ok(if self.index.has_event_id_been_deleted(event_id).await {
                DatabaseEventStatus::Deleted
            } else if self.index.has_event(event_id).await || self.private.contains(event_id) {
                DatabaseEventStatus::Saved
            } else {
                DatabaseEventStatus::NotExistent
            })
        })
    }

    fn event_by_id<'a>(
        &'a self,
        event_id: &'a EventId,
    ) -> nostr::util::BoxedFuture<'a, Result<Option<Event>, DatabaseError>> {
        Box::pin(async move {
            Ok(match self.index.event_by_id(event_id).await {
                Some(ev) => Some(ev),
                None => self.private.get(event_id),
            })
        })
    }

    fn count(&self, filter: Filter) -> nostr::util::BoxedFuture<'_, Result<usize, DatabaseError>> {
        Box::pin(async move { Ok(self.query_both(filter).await.len()) })
    }

    fn query(&self, filter: Filter) -> nostr::util::BoxedFuture<'_, Result<Events, DatabaseError>> {
        Box::pin(async move { Ok(self.query_both(filter).await) })
    }

    fn delete(&self, filter: Filter) -> nostr::util::BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move {
            let mut ids: Vec<[u8; 32]> = self
                .private
                .delete(&filter)
                .iter()
                .map(|i| i.to_bytes())
                .collect();
            if let Some(public) = self.index.delete(filter).await {
                ids.extend(public.iter().map(|i| i.to_bytes()));
            }
            delete_events(&self.writer.0, ids).await.map_err(db_err)?;
            Ok(())
        })
    }

    fn wipe(&self) -> nostr::util::BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move { Err(DatabaseError::NotSupported) })
    }
}
