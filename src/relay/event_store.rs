//! The relay's event storage on redb.
//!
//! Queries are answered from nostr-database's in-memory index (the same one its memory backend
//! uses), loaded from redb at start; every accepted event is committed to redb through the
//! grouped writer before the relay says OK. A request addressed to the node is also appended to
//! the engine's inbox in that same commit, so nothing the relay accepted can be missed.

use std::collections::BTreeSet;
use std::sync::Arc;

use nostr::{Event, EventId, Filter, JsonUtil, Kind, PublicKey, Timestamp};
use nostr_database::{
    Backend, DatabaseError, DatabaseEventStatus, DatabaseHelper, Events, NostrDatabase,
    RejectedReason, SaveEventStatus,
};
use redb::{ReadableTable, WriteTransaction};
use tokio::sync::Notify;

use crate::store::*;

/// Relay storage backed by the box's redb file.
#[derive(Debug, Clone)]
pub struct EventStore {
    index: DatabaseHelper,
    writer: WriterHandle,
    node: PublicKey,
    inbox: Arc<Notify>,
}

#[derive(Clone)]
struct WriterHandle(Writer);

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl EventStore {
    /// Loads the stored events into the index, dropping expired and superseded ones from disk.
    #[allow(clippy::mutable_key_type)] // nostr-database's bulk_load takes a BTreeSet<Event>
    pub async fn load(
        store: &Store,
        node: PublicKey,
        inbox: Arc<Notify>,
    ) -> Result<Self, StoreError> {
        let mut events = BTreeSet::new();
        let mut gone: Vec<[u8; 32]> = Vec::new();
        {
            let rtx = store.read()?;
            let table = rtx.open_table(EVENTS)?;
            for entry in table.iter()? {
                let (id, json) = entry?;
                match Event::from_json(json.value()) {
                    Ok(ev) if !ev.is_expired() => {
                        events.insert(ev);
                    }
                    _ => gone.push(*id.value()),
                }
            }
        }
        let index = DatabaseHelper::unbounded();
        let discarded = index.bulk_load(events).await;
        gone.extend(discarded.iter().map(|id| id.to_bytes()));
        if !gone.is_empty() {
            tracing::info!("relay: removing {} expired or replaced events", gone.len());
        }
        delete_events(store.writer(), gone).await?;
        Ok(Self {
            index,
            writer: WriterHandle(store.writer().clone()),
            node,
            inbox,
        })
    }

    /// True when the event is a request to the node that the engine must handle.
    fn is_request(&self, event: &Event) -> bool {
        matches!(event.kind, Kind::GiftWrap | Kind::PrivateDirectMessage)
            && event.tags.public_keys().any(|p| p == &self.node)
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
                let mut outbox = txn.open_table(OUTBOX)?;
                for s in &done {
                    outbox.remove(s)?;
                }
                Ok(())
            })
            .await?;
        let mut live = Vec::with_capacity(events.len());
        for ev in events {
            if self.index(&ev).await? {
                live.push(ev);
            }
        }
        Ok(live)
    }

    /// Adds a stored event to the query index and deletes from disk what it replaces. False if
    /// the index refused it (an older revision of a replaceable event).
    async fn index(&self, event: &Event) -> Result<bool, StoreError> {
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

/// Removes events from disk by id (nothing to do for an empty list).
async fn delete_events(writer: &Writer, ids: Vec<[u8; 32]>) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    writer
        .write(move |txn| {
            let mut t = txn.open_table(EVENTS)?;
            for id in &ids {
                t.remove(id)?;
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
            if self.index.has_event(&event.id).await {
                return Ok(SaveEventStatus::Rejected(RejectedReason::Duplicate));
            }
            let request = self.is_request(event);
            let at = request.then(|| Timestamp::now().as_secs());
            let ev = vec![event.clone()];
            self.writer
                .0
                .write(move |txn| persist(txn, &ev, at))
                .await
                .map_err(db_err)?;
            let live = self.index(event).await.map_err(db_err)?;
            if request {
                self.inbox.notify_one();
            }
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
            } else if self.index.has_event(event_id).await {
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
        Box::pin(async move { Ok(self.index.event_by_id(event_id).await) })
    }

    fn count(&self, filter: Filter) -> nostr::util::BoxedFuture<'_, Result<usize, DatabaseError>> {
        Box::pin(async move { Ok(self.index.count(filter).await) })
    }

    fn query(&self, filter: Filter) -> nostr::util::BoxedFuture<'_, Result<Events, DatabaseError>> {
        Box::pin(async move { Ok(self.index.query(filter).await) })
    }

    fn delete(&self, filter: Filter) -> nostr::util::BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move {
            if let Some(ids) = self.index.delete(filter).await {
                let ids = ids.iter().map(|i| i.to_bytes()).collect();
                delete_events(&self.writer.0, ids).await.map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn wipe(&self) -> nostr::util::BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move { Err(DatabaseError::NotSupported) })
    }
}
