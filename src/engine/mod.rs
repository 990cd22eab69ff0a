//! The Mostro engine: reads requests from the durable inbox in arrival order, applies them to the
//! order book and queues replies and public events in the outbox, all in one commit per batch;
//! then signs and publishes what it queued.
//!
//! Crash safety comes from the ordering: a request leaves the inbox in the same commit that
//! records its effects and its replies, and replies leave the outbox in the same commit that
//! stores them as relay events. After a crash the engine resumes from whatever is left in both.

pub mod actions;
pub mod dispatch;
pub mod dispute;
pub mod escrow;
pub mod notify;
pub mod order;
pub mod payout;
pub use payout::PayoutDecision;
mod timers;
pub mod tx;
pub mod user;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr::{Event, JsonUtil, Keys, PublicKey};
use redb::ReadableTable;
use tokio::sync::Notify;

use crate::config::Settings;
use crate::lightning::Lightning;
use crate::price::PriceBook;
use crate::protocol::events::NodeFacts;
use crate::protocol::intake::{self, Dropped, Inbound};
use crate::protocol::outbound::Outgoing;
use crate::relay::Relay;
use crate::store::disk::DiskGuard;
use crate::store::*;

/// Most inbox entries taken into one batch.
const BATCH: usize = 512;
/// How often due timers are checked.
const TICK: Duration = Duration::from_secs(1);
/// Handled ids are kept this long, far beyond the freshness window.
const PROCESSED_RETENTION_SECS: i64 = 86_400;

/// What handlers see of the world for one batch.
pub struct Ctx<'a> {
    /// Settings in force.
    pub settings: &'a Settings,
    /// Node key, relays and network for public events.
    pub facts: &'a NodeFacts,
    /// Unix time of the batch.
    pub now: i64,
    /// Market prices.
    pub prices: &'a PriceBook,
    /// True while the disk is under its floor: no new orders or takes.
    pub disk_low: bool,
}

/// Everything the engine task needs.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    relay: Relay,
    keys: Keys,
    settings: Arc<Settings>,
    facts: Arc<NodeFacts>,
    prices: PriceBook,
    active: Arc<Mutex<HashSet<PublicKey>>>,
    inbox: Arc<Notify>,
    ln: Arc<dyn Lightning>,
    work: Arc<escrow::WorkQueue>,
    disk: DiskGuard,
}

/// What the engine is built from.
pub struct Parts {
    /// The store.
    pub store: Store,
    /// The embedded relay, where replies and public events go.
    pub relay: Relay,
    /// The node key.
    pub keys: Keys,
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// Facts public events carry.
    pub facts: Arc<NodeFacts>,
    /// Market prices.
    pub prices: PriceBook,
    /// Notified by the relay store whenever a request arrives.
    pub inbox: Arc<Notify>,
    /// The Lightning node that holds escrows and pays buyers.
    pub ln: Arc<dyn Lightning>,
    /// Free disk space under the data directory.
    pub disk: DiskGuard,
}

/// Why the engine stopped. It runs for as long as the process does, so any of these ends the
/// process with an error, and its supervisor (systemd, the container engine) starts it again.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The escrow worker ended: payouts and escrows would stop while orders still came in.
    #[error("the escrow worker stopped: {0}")]
    Worker(String),
    /// The engine's task panicked (a bug).
    #[error("the engine panicked: {0}")]
    Panicked(String),
}

/// What a commit leaves to do: messages to sign and send, orders for the escrow worker.
type Effects = (Vec<(u64, Outgoing)>, Vec<uuid::Uuid>);

/// An inbox entry with its event, ready to open.
struct Pending {
    seq: u64,
    event: Option<Event>,
    received_at: i64,
}

impl Engine {
    /// Builds the engine from the parts the node started.
    pub fn new(p: Parts) -> Self {
        Self {
            store: p.store,
            relay: p.relay,
            keys: p.keys,
            settings: p.settings,
            facts: p.facts,
            prices: p.prices,
            active: Arc::default(),
            inbox: p.inbox,
            ln: p.ln,
            work: Arc::default(),
            disk: p.disk,
        }
    }

    /// Runs until something stops it, and says what: first finishes what a previous run left
    /// in the outbox and inbox, then follows new requests and due timers.
    ///
    /// Timers run at least once a [`TICK`] between batches, so a flood of requests cannot hold
    /// back time-outs, payout retries and the escrow wind-up.
    pub async fn run(self) -> Stopped {
        match self.serve().await {
            Ok(never) => match never {},
            Err(stopped) => stopped,
        }
    }

    async fn serve(self) -> Result<std::convert::Infallible, Stopped> {
        #[cfg(feature = "fault-injection")]
        if std::env::var("MOSTRO_BOX_CRASH_AT").as_deref() == Ok("engine-panic") {
            panic!("MOSTRO_BOX_CRASH_AT=engine-panic");
        }
        self.rebuild_active().await?;
        let backlog = (|| -> Result<u64, StoreError> {
            use redb::ReadableTableMetadata;
            Ok(self.store.read()?.open_table(INBOX)?.len()?)
        })()?;
        if backlog > 0 {
            tracing::info!("engine: resuming {backlog} requests that arrived before the last stop");
        }
        self.flush_outbox().await?;
        let mut worker = tokio::spawn(self.clone().escrow_worker());
        let mut tick = tokio::time::interval(TICK);
        let mut timers_due = 0;
        let mut last_prune = 0;
        loop {
            let took = self.step().await?;
            let now = crate::protocol::now();
            if now >= timers_due {
                self.run_timers(now).await?;
                timers_due = now + TICK.as_secs() as i64;
            }
            if now - last_prune > 3600 {
                self.prune(now).await?;
                last_prune = now;
            }
            if took > 0 {
                continue;
            }
            tokio::select! {
                _ = self.inbox.notified() => {}
                _ = tick.tick() => {}
                ended = &mut worker => {
                    return Err(Stopped::Worker(match ended {
                        Ok(()) => "the Lightning node's events ended".into(),
                        Err(e) if e.is_panic() => {
                            format!("it panicked: {}", panic_message(&*e.into_panic()))
                        }
                        Err(e) => e.to_string(),
                    }));
                }
            }
        }
    }

    /// Handles one batch from the inbox; returns how many requests it took.
    ///
    /// If handling the batch panics (a bug), nothing of it is committed and its requests are
    /// handled again one at a time, so that only the request that panics is dropped (with a
    /// log line) and the inbox never sticks on it.
    pub async fn step(&self) -> Result<usize, StoreError> {
        let batch = self.read_inbox(BATCH)?;
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match self.handle_batch(batch).await {
            Err(StoreError::Panicked(why)) if n > 1 => {
                tracing::error!(
                    "engine: a batch of {n} requests panicked ({why}); handling them one by one"
                );
                for _ in 0..n {
                    let one = self.read_inbox(1)?;
                    if one.is_empty() {
                        break;
                    }
                    self.handle_batch(one).await?;
                }
                Ok(n)
            }
            r => r.map(|()| n),
        }
    }

    /// Opens and applies `batch`; a lone request whose opening or handling panics is dropped.
    async fn handle_batch(&self, batch: Vec<Pending>) -> Result<(), StoreError> {
        let n = batch.len() as u64;
        let lone =
            (batch.len() == 1).then(|| (batch[0].seq, batch[0].event.as_ref().map(|e| e.id)));
        let applied = match self.open_all(batch).await {
            Some(opened) => {
                let engine = self.clone();
                self.store
                    .writer()
                    .write(move |txn| engine.apply(txn, opened))
                    .await
            }
            None => Err(StoreError::Panicked("opening a request".into())),
        };
        let (out, work) = match (applied, lone) {
            (Err(StoreError::Panicked(why)), Some((seq, id))) => {
                tracing::error!(
                    "engine: dropped request {} (inbox entry {seq}): handling it panicked: {why}",
                    id.map(|id| id.to_hex()).unwrap_or_default()
                );
                let ids: Vec<[u8; 32]> = id.map(|id| id.to_bytes()).into_iter().collect();
                let now = crate::protocol::now();
                self.store
                    .writer()
                    .write(move |txn| tx::Tx::open(txn)?.mark_done(seq, &ids, now))
                    .await?;
                self.relay.backlog().done(n);
                return Ok(());
            }
            (r, _) => r?,
        };
        self.relay.backlog().done(n);
        self.deliver(out).await?;
        self.work.push(work);
        Ok(())
    }

    fn read_inbox(&self, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let rtx = self.store.read()?;
        let inbox = rtx.open_table(INBOX)?;
        let events = rtx.open_table(EVENTS)?;
        let mut batch = Vec::new();
        for entry in inbox.iter()?.take(limit) {
            let (seq, v) = entry?;
            let (id, received_at) = v.value();
            let event = events
                .get(id)?
                .and_then(|json| Event::from_json(json.value()).ok());
            batch.push(Pending {
                seq: seq.value(),
                event,
                received_at: received_at as i64,
            });
        }
        Ok(batch)
    }

    /// Opens every request of a batch in parallel: the expensive, stateless part. `None` if
    /// opening one of them panicked (a bug): the batch is then handled one request at a time,
    /// as when applying it panics, so only that request is dropped.
    async fn open_all(
        &self,
        batch: Vec<Pending>,
    ) -> Option<Vec<(Pending, Result<Inbound, Dropped>)>> {
        let keys = self.keys.clone();
        let pow = self.settings.mostro.pow;
        let n = batch.len();
        let opened = in_parallel(batch, move |p: Pending| {
            let keys = keys.clone();
            async move {
                let r = match &p.event {
                    // The relay verified the event's id and signature before storing it.
                    Some(ev) => intake::open_verified(ev, &keys, pow, p.received_at).await,
                    None => Err(Dropped::Invalid("event no longer stored".into())),
                };
                (p, r)
            }
        })
        .await;
        (opened.len() == n).then_some(opened)
    }

    /// Applies a batch inside the writer's transaction.
    fn apply(
        &self,
        txn: &redb::WriteTransaction,
        opened: Vec<(Pending, Result<Inbound, Dropped>)>,
    ) -> Result<Effects, StoreError> {
        let mut tx = tx::Tx::open(txn)?;
        let now = crate::protocol::now();
        let mut ctx = self.ctx(now);
        let mut active = self.active.lock().expect("active keys lock");
        for (p, result) in opened {
            // Handled ids are remembered (replays are refused); a dropped request's id is not,
            // so a flood of undecryptable requests leaves nothing behind.
            let mut ids = Vec::with_capacity(2);
            match result {
                Ok(inbound) => {
                    ids.extend(p.event.as_ref().map(|ev| ev.id.to_bytes()));
                    if tx.seen(&inbound.inner_id)? {
                        tracing::debug!("intake: replayed request dropped");
                    } else {
                        dispatch::handle(&mut tx, &mut ctx, &inbound, &mut active)?;
                        ids.push(inbound.inner_id);
                    }
                }
                Err(why) => tracing::debug!("intake: dropped: {why}"),
            }
            tx.mark_done(p.seq, &ids, now)?;
        }
        Ok((std::mem::take(&mut tx.out), std::mem::take(&mut tx.ln_work)))
    }

    fn ctx(&self, now: i64) -> Ctx<'_> {
        Ctx {
            settings: &self.settings,
            facts: &self.facts,
            now,
            prices: &self.prices,
            // Read now, not at the last tick: a batch never starts new work on a full disk.
            disk_low: self.disk.check(),
        }
    }

    /// Signs queued messages in parallel, stores them as relay events (removing them from the
    /// outbox in the same commit), then hands them to subscribers and public relays.
    pub async fn deliver(&self, out: Vec<(u64, Outgoing)>) -> Result<(), StoreError> {
        if out.is_empty() {
            return Ok(());
        }
        let keys = self.keys.clone();
        let signed = in_parallel(out, move |(seq, o): (u64, Outgoing)| {
            let keys = keys.clone();
            async move {
                let ev = o.sign(&keys).await;
                if let Err(e) = &ev {
                    tracing::error!("outbox: cannot sign message {seq}: {e}");
                }
                (seq, ev.ok())
            }
        })
        .await;
        let done = signed.iter().map(|(seq, _)| *seq).collect();
        let events = signed.into_iter().filter_map(|(_, ev)| ev).collect();
        self.relay.publish_own(events, done).await
    }

    /// Re-sends what a previous run queued but did not publish.
    async fn flush_outbox(&self) -> Result<(), StoreError> {
        let rtx = self.store.read()?;
        let outbox = rtx.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for entry in outbox.iter()? {
            let (seq, bytes) = entry?;
            out.push((seq.value(), decode::<Outgoing>("outbox", bytes.value())?));
        }
        drop(outbox);
        drop(rtx);
        if !out.is_empty() {
            tracing::info!(
                "outbox: publishing {} messages left by the last run",
                out.len()
            );
        }
        self.deliver(out).await
    }

    /// Fills the active-key cache from the orders still open (indexing a store made before the
    /// open-order index existed, once).
    async fn rebuild_active(&self) -> Result<(), StoreError> {
        let (indexed, open) = self
            .store
            .writer()
            .write(|txn| {
                let mut tx = tx::Tx::open(txn)?;
                Ok((tx.index_orders()?, tx.open_orders()?))
            })
            .await?;
        if indexed {
            tracing::info!("store: indexed the open orders and order totals (once)");
        }
        let mut active = self.active.lock().expect("active keys lock");
        for o in &open {
            actions::track_active(&mut active, o);
        }
        Ok(())
    }

    /// Fires due deadlines: time-based ones at `now`, escrow wind-ups at the node's height.
    pub async fn run_timers(&self, now: i64) -> Result<(), StoreError> {
        let engine = self.clone();
        let height = self.ln.height();
        let (out, work) = self
            .store
            .writer()
            .write(move |txn| {
                let mut tx = tx::Tx::open(txn)?;
                let ctx = engine.ctx(now);
                let mut active = engine.active.lock().expect("active keys lock");
                timers::fire_due(&mut tx, &ctx, height, &mut active)?;
                Ok((std::mem::take(&mut tx.out), std::mem::take(&mut tx.ln_work)))
            })
            .await?;
        self.deliver(out).await?;
        self.work.push(work);
        Ok(())
    }

    /// Runs an admin action as the node key, for the operator's CLI: the same handlers and
    /// checks as a solver's request over the relay. What the handlers address to the node
    /// itself (its acknowledgement or `cant-do`) comes back here instead of going out; notices
    /// to the traders and public events go out as usual.
    pub async fn act_as_node(
        &self,
        action: mostro_core::prelude::Action,
        id: Option<uuid::Uuid>,
        payload: Option<mostro_core::prelude::Payload>,
    ) -> Result<Vec<mostro_core::prelude::Message>, StoreError> {
        use mostro_core::prelude::{Action, Message};
        let me = self.keys.public_key();
        let message = match action {
            Action::AdminTakeDispute | Action::AdminAddSolver => {
                Message::new_dispute(id, None, None, action, payload)
            }
            _ => Message::new_order(id, None, None, action, payload),
        };
        let inbound = Inbound {
            transport: crate::protocol::DIRECT,
            message,
            sender: me,
            identity: me,
            signature: None,
            created_at: crate::protocol::now(),
            pow: u8::MAX,
            inner_id: crate::lightning::Preimage::random().0,
        };
        let engine = self.clone();
        let (mine, out, work) = self
            .store
            .writer()
            .write(move |txn| {
                let mut tx = tx::Tx::open(txn)?;
                let mut ctx = engine.ctx(crate::protocol::now());
                let mut active = engine.active.lock().expect("active keys lock");
                dispatch::handle(&mut tx, &mut ctx, &inbound, &mut active)?;
                let mine = tx.take_direct_to(&me)?;
                Ok((
                    mine,
                    std::mem::take(&mut tx.out),
                    std::mem::take(&mut tx.ln_work),
                ))
            })
            .await?;
        self.deliver(out).await?;
        self.work.push(work);
        Ok(mine)
    }

    /// An order as last committed.
    pub fn order(&self, id: uuid::Uuid) -> Result<Option<order::Order>, StoreError> {
        let r = self.store.read()?;
        let t = r.open_table(ORDERS)?;
        match t.get(id.as_u128())? {
            Some(v) => Ok(Some(decode("orders", v.value())?)),
            None => Ok(None),
        }
    }

    /// Number of orders in the store, finished or not.
    pub fn order_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        Ok(self.store.read()?.open_table(ORDERS)?.len()?)
    }

    async fn prune(&self, now: i64) -> Result<(), StoreError> {
        let n = self
            .store
            .writer()
            .write(move |txn| tx::Tx::open(txn)?.prune_processed(now - PROCESSED_RETENTION_SECS))
            .await?;
        if n > 0 {
            tracing::debug!("store: forgot {n} old handled ids");
        }
        Ok(())
    }
}

/// Runs `f` over `items` split into one chunk per core, each chunk on its own task; results
/// keep the input order. A chunk whose task panicked is left out (callers notice the shorter
/// result).
async fn in_parallel<T, R, F, Fut>(mut items: Vec<T>, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = R> + Send,
{
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let chunk = items.len().div_ceil(workers).max(1);
    let mut tasks = Vec::new();
    while !items.is_empty() {
        let tail = items.split_off(chunk.min(items.len()));
        let part = std::mem::replace(&mut items, tail);
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(part.len());
            for item in part {
                out.push(f(item).await);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(part) = t.await {
            all.extend(part);
        }
    }
    all
}
