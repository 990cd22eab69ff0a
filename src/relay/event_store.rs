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
    Backend, DatabaseError, DatabaseEventResult, DatabaseEventStatus, DatabaseHelper, Events,
    NostrDatabase, RejectedReason, SaveEventStatus,
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
            store
                .writer()
                .write(move |txn| {
                    let mut t = txn.open_table(EVENTS)?;
                    for id in &gone {
                        t.remove(id)?;
                    }
                    Ok(())
                })
                .await?;
        }
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
    /// indexes them. Entries whose signing failed (`None`) are removed too, after being logged.
    pub async fn save_own(
        &self,
        signed: Vec<(u64, Option<Event>)>,
    ) -> Result<Vec<Event>, StoreError> {
        let mut results = Vec::with_capacity(signed.len());
        for (_, ev) in &signed {
            if let Some(ev) = ev {
                results.push((ev.clone(), self.index.index_event(ev).await));
            }
        }
        let to_store: Vec<(Event, DatabaseEventResult)> = results.clone();
        let seqs: Vec<u64> = signed.iter().map(|(s, _)| *s).collect();
        self.writer
            .0
            .write(move |txn| {
                for (ev, res) in &to_store {
                    persist(txn, ev, res, None)?;
                }
                let mut outbox = txn.open_table(OUTBOX)?;
                for s in &seqs {
                    outbox.remove(s)?;
                }
                Ok(())
            })
            .await?;
        Ok(results
            .into_iter()
            .filter(|(_, r)| r.status.is_success())
            .map(|(e, _)| e)
            .collect())
    }
}

/// Writes an accepted event, drops what it replaces, and appends it to the inbox if asked.
fn persist(
    txn: &WriteTransaction,
    event: &Event,
    result: &DatabaseEventResult,
    inbox_at: Option<u64>,
) -> Result<(), StoreError> {
    let mut events = txn.open_table(EVENTS)?;
    if result.status.is_success() {
        events.insert(&event.id.to_bytes(), event.as_json().as_str())?;
    }
    for id in &result.to_discard {
        events.remove(&id.to_bytes())?;
    }
    drop(events);
    if let (Some(at), true) = (inbox_at, result.status.is_success()) {
        let seq = next_seq(txn, META_INBOX_NEXT)?;
        let mut inbox = txn.open_table(INBOX)?;
        inbox.insert(seq, (&event.id.to_bytes(), at))?;
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
            let result = self.index.index_event(event).await;
            if !result.status.is_success() {
                return Ok(result.status);
            }
            let request = self.is_request(event);
            let at = request.then(|| Timestamp::now().as_secs());
            let ev = event.clone();
            let status = result.status;
            self.writer
                .0
                .write(move |txn| persist(txn, &ev, &result, at))
                .await
                .map_err(db_err)?;
            if request {
                self.inbox.notify_one();
            }
            Ok(status)
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
                let ids: Vec<[u8; 32]> = ids.iter().map(|i| i.to_bytes()).collect();
                self.writer
                    .0
                    .write(move |txn| {
                        let mut t = txn.open_table(EVENTS)?;
                        for id in &ids {
                            t.remove(id)?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn wipe(&self) -> nostr::util::BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move { Err(DatabaseError::NotSupported) })
    }
}
