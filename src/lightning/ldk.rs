//! The embedded ldk-node: start-up, the event loop, the hold-invoice guard and reconciliation.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldk_node::bitcoin::secp256k1::{PublicKey, SecretKey};
use ldk_node::lightning::events::PaymentFailureReason;
use ldk_node::lightning::ln::channelmanager::PaymentId;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning::routing::router::RouteParametersConfig;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::lightning_types::payment::{PaymentHash as LdkHash, PaymentPreimage};
use ldk_node::payment::{PaymentDirection, PaymentStatus};
use ldk_node::{Builder, Event, Node, NodeError};
use redb::ReadableTable;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::hold::{self, GUARD_BLOCKS};
use super::invoice::{self, InvoiceError, InvoiceRules};
use super::seed::Seed;
use super::{
    HoldRecord, HoldRequest, HoldState, Lightning, LightningError, LnEvent, LnFuture, PayOutcome,
    PaymentHash, Preimage,
};
use crate::config::LightningSettings;
use crate::store::{decode, encode, Store, StoreError, HOLDS, OPEN_HOLDS, PAYMENTS};

/// Directory under the data dir where ldk-node keeps its own state.
pub const LDK_DIR: &str = "lightning";
/// How often the guard looks at the chain tip.
const GUARD_TICK: Duration = Duration::from_secs(1);
/// LDK's default cap on a payment's total CLTV expiry delta (`max_total_cltv_expiry_delta`):
/// no HTLC the box sends is locked for longer.
const LDK_MAX_TOTAL_CLTV: u32 = 1008;
/// Blocks added to that before a payment that cannot be resent is called failed (time for LDK
/// to resolve an expired HTLC and report it).
const RESUME_MARGIN_BLOCKS: u32 = 12;
/// How long the node may take to confirm claiming a held payment (milliseconds when all is
/// well) before a repeated settle reports it.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// The box's Lightning node.
pub struct LdkNode {
    node: Arc<Node>,
    store: Store,
    node_secret: SecretKey,
    settings: LightningSettings,
    events: broadcast::Sender<LnEvent>,
    /// Hold invoices not yet final, mirrored from `OPEN_HOLDS`. Every change goes through
    /// [`LdkNode::transition`], which writes redb first.
    watched: tokio::sync::Mutex<HashMap<PaymentHash, HoldRecord>>,
    /// Outgoing payments LDK has taken (or already had) since this process started, and that
    /// have not ended: sending them again would do nothing (see [`LdkNode::send`]).
    in_flight: Mutex<HashSet<PaymentHash>>,
    /// Payments found "pending" from before a restart and sent again, with the block from which
    /// any part of them that left before the restart has expired (see [`LdkNode::send`]).
    resuming: Mutex<HashMap<PaymentHash, u32>>,
    /// One payment sent at a time, so that the checks in [`LdkNode::send`] hold while it sends.
    sending: tokio::sync::Mutex<()>,
    /// Held payments the box asked LDK to claim, since when (until LDK confirms).
    claims: Mutex<HashMap<PaymentHash, Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl LdkNode {
    /// Builds and starts the node from `seed` in `<data_dir>/lightning`, retrying every
    /// `retry` while the chain source cannot be reached (one log line per attempt), then
    /// reconciles the hold invoices in redb with what LDK knows and starts the event loop and
    /// the deadline guard.
    pub async fn start(
        data_dir: &Path,
        settings: &LightningSettings,
        seed: &Seed,
        store: Store,
        retry: Duration,
    ) -> Result<Arc<Self>, LightningError> {
        // ldk-node starts even when the chain source is down (it falls back to default fee
        // rates and logs errors forever), so the box checks it first and waits for it.
        let mut attempt = 0u32;
        while let Err(e) = chain_source_reachable(settings).await {
            attempt += 1;
            tracing::warn!(
                "Lightning: cannot reach the chain source ({}): {e}; retry {attempt} in {} s \
                 (check lightning.chain_source and its address in mostro-box.toml)",
                describe_chain_source(settings),
                retry.as_secs()
            );
            tokio::time::sleep(retry).await;
        }
        let node = Arc::new(build(data_dir, settings, seed)?);
        // ldk-node derives its node key from the seed; the box re-signs invoices with the key it
        // derives the same way. If they ever differ, invoices would be unpayable: stop here.
        if node.node_id() != seed.node_id() {
            return Err(LightningError::Start(format!(
                "ldk-node derived node id {} but the box derived {}; this ldk-node version \
                 changed its key derivation, so hold invoices cannot be re-signed",
                node.node_id(),
                seed.node_id()
            )));
        }
        loop {
            match node.start() {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(
                        "Lightning: the node did not start ({e}); retrying in {} s",
                        retry.as_secs()
                    );
                    tokio::time::sleep(retry).await;
                }
            }
        }
        let (events, _) = broadcast::channel(1024);
        let this = Arc::new(Self {
            node,
            store,
            node_secret: seed.node_secret(),
            settings: settings.clone(),
            events,
            watched: tokio::sync::Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            claims: Mutex::new(HashMap::new()),
            resuming: Mutex::new(HashMap::new()),
            sending: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
        });
        this.reconcile().await?;
        let tasks = vec![
            tokio::spawn(this.clone().event_loop()),
            tokio::spawn(this.clone().guard_loop()),
        ];
        *this.tasks.lock().expect("tasks lock") = tasks;
        tracing::info!(
            "Lightning: node {} on {} ready at height {}",
            this.node.node_id(),
            settings.network,
            this.height()
        );
        Ok(this)
    }

    /// The ldk-node handle, for the operator API (wallet, peers, channels).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The node id.
    pub fn node_id(&self) -> PublicKey {
        self.node.node_id()
    }

    /// Stops the background tasks and the node, letting LDK persist its state.
    pub fn stop(&self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
        if let Err(e) = self.node.stop() {
            tracing::warn!("Lightning: stop: {e}");
        }
    }

    /// Hold invoices the guard is watching (open or held).
    pub async fn open_holds(&self) -> Vec<HoldRecord> {
        self.watched.lock().await.values().cloned().collect()
    }

    /// Records a hold invoice's new state (redb first, then memory, then listeners).
    async fn transition(
        &self,
        watched: &mut HashMap<PaymentHash, HoldRecord>,
        mut rec: HoldRecord,
        state: HoldState,
    ) -> Result<(), LightningError> {
        rec.state = state;
        let stored = rec.clone();
        self.store
            .writer()
            .write(move |txn| {
                txn.open_table(HOLDS)?
                    .insert(&stored.hash.0, encode(&stored).as_slice())?;
                let mut open = txn.open_table(OPEN_HOLDS)?;
                if stored.state.is_final() {
                    open.remove(&stored.hash.0)?;
                } else {
                    open.insert(&stored.hash.0, ())?;
                }
                Ok(())
            })
            .await?;
        let event = match &rec.state {
            HoldState::Held {
                amount_msat,
                deadline,
            } => Some(LnEvent::HoldHeld {
                hash: rec.hash,
                amount_msat: *amount_msat,
                deadline: *deadline,
            }),
            HoldState::Cancelled { reason } => Some(LnEvent::HoldCancelled {
                hash: rec.hash,
                reason: reason.clone(),
            }),
            // Settled is announced when LDK reports the payment received.
            HoldState::Claiming { .. } | HoldState::Settled | HoldState::Open => None,
        };
        if rec.state.is_final() {
            watched.remove(&rec.hash);
            self.claims.lock().expect("claims lock").remove(&rec.hash);
        } else {
            watched.insert(rec.hash, rec);
        }
        if let Some(e) = event {
            let _ = self.events.send(e);
        }
        Ok(())
    }

    /// After a restart: every hold redb still watches is compared with LDK's payment store.
    async fn reconcile(&self) -> Result<(), LightningError> {
        let records: Vec<HoldRecord> = {
            let read = self.store.read()?;
            let open = read.open_table(OPEN_HOLDS).map_err(StoreError::from)?;
            let holds = read.open_table(HOLDS).map_err(StoreError::from)?;
            let mut out = Vec::new();
            for entry in open.iter().map_err(StoreError::from)? {
                let (hash, _) = entry.map_err(StoreError::from)?;
                if let Some(bytes) = holds.get(hash.value()).map_err(StoreError::from)? {
                    out.push(decode("holds", bytes.value())?);
                }
            }
            out
        };
        let mut watched = self.watched.lock().await;
        let height = self.height();
        for rec in records {
            let ldk = self.node.payment(&PaymentId(rec.hash.0));
            let next = match ldk.map(|p| p.status) {
                Some(PaymentStatus::Succeeded) => Some(HoldState::Settled),
                Some(PaymentStatus::Failed) => Some(HoldState::Cancelled {
                    reason: "failed back by the Lightning node while the box was down".into(),
                }),
                None => Some(HoldState::Cancelled {
                    reason: "unknown to the Lightning node".into(),
                }),
                Some(PaymentStatus::Pending) => None,
            };
            tracing::info!(
                "Lightning: reconciled hold {} ({:?} in redb{})",
                rec.hash,
                rec.state,
                next.as_ref()
                    .map(|n| format!(", now {n:?}"))
                    .unwrap_or_default()
            );
            match next {
                Some(state) => self.transition(&mut watched, rec, state).await?,
                None => {
                    watched.insert(rec.hash, rec);
                }
            }
        }
        drop(watched);
        self.guard(height).await
    }

    async fn event_loop(self: Arc<Self>) {
        loop {
            let event = self.node.next_event_async().await;
            if let Err(e) = self.handle(event).await {
                // Not acknowledged: LDK hands the same event out again.
                tracing::error!("Lightning: handling an event failed: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if let Err(e) = self.node.event_handled() {
                tracing::error!("Lightning: cannot acknowledge an event: {e}");
            }
        }
    }

    async fn handle(&self, event: Event) -> Result<(), LightningError> {
        match event {
            Event::PaymentClaimable {
                payment_hash,
                claimable_amount_msat,
                claim_deadline,
                ..
            } => {
                self.on_claimable(
                    PaymentHash(payment_hash.0),
                    claimable_amount_msat,
                    claim_deadline.unwrap_or(0),
                )
                .await?
            }
            Event::PaymentReceived {
                payment_hash,
                amount_msat,
                ..
            } => {
                let hash = PaymentHash(payment_hash.0);
                let mut watched = self.watched.lock().await;
                let event = if let Some(rec) = watched.get(&hash).cloned() {
                    self.transition(&mut watched, rec, HoldState::Settled)
                        .await?;
                    LnEvent::HoldSettled { hash }
                } else if let Some(rec) = self.stored_hold(hash)? {
                    if let HoldState::Cancelled { reason } = &rec.state {
                        tracing::error!(
                            "Lightning: LDK claimed hold {hash} after the box had recorded it \
                             cancelled ({reason}): the payer's sats are the node's; a solver \
                             should look at its order"
                        );
                    }
                    LnEvent::HoldSettled { hash }
                } else {
                    LnEvent::Received { hash, amount_msat }
                };
                let _ = self.events.send(event);
            }
            Event::PaymentSuccessful {
                payment_hash,
                fee_paid_msat,
                ..
            } => {
                let outcome = PayOutcome::Succeeded {
                    fee_msat: fee_paid_msat.unwrap_or(0),
                };
                self.payment_ended(PaymentHash(payment_hash.0), outcome)
                    .await?;
            }
            Event::PaymentFailed {
                payment_hash: Some(payment_hash),
                reason,
                ..
            } => {
                let reason = failure_reason(reason);
                self.payment_ended(PaymentHash(payment_hash.0), PayOutcome::Failed { reason })
                    .await?;
            }
            Event::ChannelPending { channel_id, .. } => self.channel_event(channel_id, "pending"),
            Event::ChannelReady { channel_id, .. } => self.channel_event(channel_id, "ready"),
            Event::ChannelClosed { channel_id, .. } => self.channel_event(channel_id, "closed"),
            _ => {}
        }
        Ok(())
    }

    /// Records how an outgoing payment ended (redb first), then tells listeners. A success is
    /// never overwritten: LDK may report a late failure of a payment that succeeded.
    async fn payment_ended(
        &self,
        hash: PaymentHash,
        outcome: PayOutcome,
    ) -> Result<(), LightningError> {
        let stored = outcome.clone();
        let recorded = self
            .store
            .writer()
            .write(move |txn| {
                let mut t = txn.open_table(PAYMENTS)?;
                let before: Option<PayOutcome> = match t.get(&hash.0)? {
                    Some(v) => Some(decode("payments", v.value())?),
                    None => None,
                };
                if let Some(s @ PayOutcome::Succeeded { .. }) = before {
                    return Ok(s);
                }
                t.insert(&hash.0, encode(&stored).as_slice())?;
                Ok(stored)
            })
            .await?;
        self.in_flight().remove(&hash);
        let _ = self.events.send(LnEvent::Paid {
            hash,
            outcome: recorded,
        });
        Ok(())
    }

    /// The recorded outcome of an outgoing payment, if it has ended.
    fn payment_outcome(&self, hash: PaymentHash) -> Result<Option<PayOutcome>, LightningError> {
        self.record(PAYMENTS, "payments", hash)
    }

    /// One JSON record of a table keyed by payment hash.
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<&[u8; 32], &[u8]>,
        name: &'static str,
        hash: PaymentHash,
    ) -> Result<Option<T>, LightningError> {
        let read = self.store.read()?;
        let table = read.open_table(table).map_err(StoreError::from)?;
        let rec = table.get(&hash.0).map_err(StoreError::from)?;
        Ok(match rec {
            Some(bytes) => Some(decode(name, bytes.value())?),
            None => None,
        })
    }

    fn channel_event(&self, id: ldk_node::lightning::ln::types::ChannelId, state: &'static str) {
        let _ = self.events.send(LnEvent::Channel {
            channel_id: id.to_string(),
            state,
        });
    }

    /// A payer's HTLC arrived: hold it if it is ours and locked long enough, else fail it.
    async fn on_claimable(
        &self,
        hash: PaymentHash,
        amount_msat: u64,
        deadline: u32,
    ) -> Result<(), LightningError> {
        let mut watched = self.watched.lock().await;
        let Some(rec) = watched.get(&hash).cloned() else {
            // Not a live hold invoice of ours (cancelled, or never issued): give it back.
            tracing::info!("Lightning: refusing a payment for {hash}: no open hold invoice");
            let _ = self.node.bolt11_payment().fail_for_hash(LdkHash(hash.0));
            return Ok(());
        };
        match rec.state {
            HoldState::Held { .. } => {
                // Replayed after a restart: already recorded, tell listeners again.
                let _ = self.events.send(LnEvent::HoldHeld {
                    hash,
                    amount_msat,
                    deadline,
                });
                Ok(())
            }
            HoldState::Open => {
                let height = self.height();
                let window = self.settings.hold_invoice_cltv_delta;
                if amount_msat < rec.amount_msat || !hold::leaves_window(deadline, height, window) {
                    let _ = self.node.bolt11_payment().fail_for_hash(LdkHash(hash.0));
                    let reason = format!(
                        "payment refused: {amount_msat} msat locked for {} blocks, {} msat for \
                         {} blocks needed",
                        deadline.saturating_sub(height),
                        rec.amount_msat,
                        window + GUARD_BLOCKS
                    );
                    tracing::warn!("Lightning: hold {hash}: {reason}");
                    return self
                        .transition(&mut watched, rec, HoldState::Cancelled { reason })
                        .await;
                }
                tracing::info!(
                    "Lightning: hold {hash} held: {amount_msat} msat, deadline {deadline} \
                     ({} blocks)",
                    deadline - height
                );
                self.transition(
                    &mut watched,
                    rec,
                    HoldState::Held {
                        amount_msat,
                        deadline,
                    },
                )
                .await
            }
            // Being claimed (LDK hands a payment out again after a restart), or over.
            HoldState::Claiming { .. } | HoldState::Settled | HoldState::Cancelled { .. } => Ok(()),
        }
    }

    async fn guard_loop(self: Arc<Self>) {
        // The watched set is small and in memory, so checking it every tick is cheaper than
        // tracking what changed since the last one.
        let mut tick = tokio::time::interval(GUARD_TICK);
        loop {
            tick.tick().await;
            if let Err(e) = self.guard(self.height()).await {
                tracing::error!("Lightning: deadline guard: {e}");
            }
        }
    }

    /// Cancels every held payment whose deadline is [`GUARD_BLOCKS`] away, and marks expired
    /// unpaid invoices cancelled, so LDK never fails an HTLC back on its own.
    async fn guard(&self, height: u32) -> Result<(), LightningError> {
        let now = crate::protocol::now() as u64;
        let mut watched = self.watched.lock().await;
        let due: Vec<(HoldRecord, String)> = watched
            .values()
            .filter_map(|r| match r.state {
                HoldState::Held { deadline, .. } if hold::must_resolve_now(deadline, height) => {
                    Some((
                        r.clone(),
                        format!("deadline: block {height} is within {GUARD_BLOCKS} of {deadline}"),
                    ))
                }
                HoldState::Open if r.expires_at <= now => {
                    Some((r.clone(), "expired unpaid".to_string()))
                }
                HoldState::Claiming { deadline, .. } if height >= deadline + GUARD_BLOCKS => {
                    Some((
                        r.clone(),
                        format!(
                            "LDK never confirmed claiming it, and block {height} is past its \
                             deadline {deadline}: the payer has the sats back"
                        ),
                    ))
                }
                _ => None,
            })
            .collect();
        for (rec, reason) in due {
            tracing::warn!("Lightning: cancelling hold {}: {reason}", rec.hash);
            let _ = self
                .node
                .bolt11_payment()
                .fail_for_hash(LdkHash(rec.hash.0));
            self.transition(&mut watched, rec, HoldState::Cancelled { reason })
                .await?;
        }
        Ok(())
    }

    fn stored_hold(&self, hash: PaymentHash) -> Result<Option<HoldRecord>, LightningError> {
        self.record(HOLDS, "holds", hash)
    }

    async fn create_hold(&self, req: HoldRequest) -> Result<String, LightningError> {
        let description = Bolt11InvoiceDescription::Direct(
            Description::new(req.description.clone())
                .unwrap_or_else(|_| Description::new(String::new()).expect("empty is valid")),
        );
        let issued = self.node.bolt11_payment().receive_for_hash(
            req.amount_msat,
            &description,
            req.expiry_secs,
            LdkHash(req.hash.0),
        )?;
        let delta = hold::invoice_cltv_delta(self.settings.hold_invoice_cltv_delta);
        let invoice = hold::with_cltv_delta(&issued, delta, &self.node_secret)?;
        let rec = HoldRecord {
            hash: req.hash,
            amount_msat: req.amount_msat,
            invoice: invoice.to_string(),
            expires_at: crate::protocol::now() as u64 + req.expiry_secs as u64,
            state: HoldState::Open,
        };
        let mut watched = self.watched.lock().await;
        self.transition(&mut watched, rec, HoldState::Open).await?;
        Ok(invoice.to_string())
    }

    /// Asks LDK to claim a held payment. The hold is settled by the event that confirms the
    /// claim (`PaymentReceived`), never by the request alone: after a crash LDK can have lost a
    /// payment it once held, and then the claim does nothing; marking the hold settled anyway
    /// would make the box pay the buyer with sats it never got. A claim still unconfirmed
    /// [`CLAIM_WAIT`] after the first request is reported as an error each time it is repeated.
    async fn settle(&self, preimage: Preimage) -> Result<(), LightningError> {
        let hash = preimage.hash();
        let mut watched = self.watched.lock().await;
        let rec = self.watched_or_err(&watched, hash, "settled")?;
        let (HoldState::Held {
            amount_msat,
            deadline,
        }
        | HoldState::Claiming {
            amount_msat,
            deadline,
        }) = rec.state
        else {
            return Err(wrong_state(&rec, "settled"));
        };
        if matches!(rec.state, HoldState::Held { .. }) {
            let claiming = HoldState::Claiming {
                amount_msat,
                deadline,
            };
            self.transition(&mut watched, rec, claiming).await?;
        }
        self.node.bolt11_payment().claim_for_hash(
            LdkHash(hash.0),
            amount_msat,
            PaymentPreimage(preimage.0),
        )?;
        let first = *self
            .claims
            .lock()
            .expect("claims lock")
            .entry(hash)
            .or_insert_with(Instant::now);
        if first.elapsed() > CLAIM_WAIT {
            return Err(LightningError::NotClaimed(hash));
        }
        Ok(())
    }

    async fn cancel(&self, hash: PaymentHash) -> Result<(), LightningError> {
        let mut watched = self.watched.lock().await;
        let rec = self.watched_or_err(&watched, hash, "cancelled")?;
        if matches!(rec.state, HoldState::Claiming { .. }) {
            return Err(wrong_state(&rec, "cancelled"));
        }
        self.node.bolt11_payment().fail_for_hash(LdkHash(hash.0))?;
        self.transition(
            &mut watched,
            rec,
            HoldState::Cancelled {
                reason: "cancelled".into(),
            },
        )
        .await
    }

    fn watched_or_err(
        &self,
        watched: &HashMap<PaymentHash, HoldRecord>,
        hash: PaymentHash,
        action: &'static str,
    ) -> Result<HoldRecord, LightningError> {
        if let Some(rec) = watched.get(&hash) {
            return Ok(rec.clone());
        }
        match self.stored_hold(hash)? {
            Some(rec) => Err(wrong_state(&rec, action)),
            None => Err(LightningError::UnknownHold(hash)),
        }
    }

    /// Sends a payment, or leaves it be if it is in flight or paid. `fresh` is a new attempt:
    /// a failure recorded for the invoice before is forgotten and the invoice tried again.
    /// Otherwise the call only resumes a payment started earlier, and a recorded outcome
    /// stands.
    ///
    /// After a crash, ldk-node's record of a payment can say "pending" although LDK never kept
    /// the payment (its channel manager was saved before the payment started, ldk-node #171):
    /// it never left the node and nothing would ever end it. Such a record is dropped and the
    /// payment sent again with the same payment id, which LDK refuses if it does have the
    /// payment in flight (or has just paid it). But LDK looks for a route before it checks
    /// that, so "no route" or "expired" for such a payment does not prove that it never left:
    /// it is not counted as a failure until any part that might have left has expired.
    async fn send(
        &self,
        invoice: &Bolt11Invoice,
        amount_msat: Option<u64>,
        max_fee_msat: u64,
        fresh: bool,
    ) -> Result<PaymentHash, LightningError> {
        use ldk_node::bitcoin::hashes::Hash;
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        let id = PaymentId(hash.0);
        // An invoice without an amount is paid the amount given.
        let amount = match (invoice.amount_milli_satoshis(), amount_msat) {
            (Some(_), _) => None,
            (None, Some(amount)) => Some(amount),
            (None, None) => return Err(InvoiceError::WrongAmount.into()),
        };
        let _one_at_a_time = self.sending.lock().await;
        // In this order: an outcome is recorded before the payment leaves `in_flight`.
        if self.in_flight().contains(&hash) {
            return Ok(hash);
        }
        match self.payment_outcome(hash)? {
            Some(PayOutcome::Failed { .. }) if fresh => self.forget_outcome(hash).await?,
            Some(_) => return Ok(hash),
            None => {}
        }
        let record = self
            .node
            .payment(&id)
            .filter(|p| p.direction == PaymentDirection::Outbound)
            .map(|p| p.status);
        let stale = record == Some(PaymentStatus::Pending);
        if stale {
            tracing::info!(
                "Lightning: payment {hash} was in flight before the restart; sending it again \
                 unless the node still has it"
            );
            self.node.remove_payment(&id)?;
        }
        // Resumed with a record but no outcome: it may have left (a "failed" record with no
        // outcome is an earlier run's refused resend).
        if stale || (!fresh && record == Some(PaymentStatus::Failed)) {
            let safe_from = self.height()
                + LDK_MAX_TOTAL_CLTV
                + invoice.min_final_cltv_expiry_delta() as u32
                + RESUME_MARGIN_BLOCKS;
            self.resuming().entry(hash).or_insert(safe_from);
        }
        let params = RouteParametersConfig {
            max_total_routing_fee_msat: Some(max_fee_msat),
            ..Default::default()
        };
        let bolt11 = self.node.bolt11_payment();
        // Before LDK has it, so that its outcome, however fast, finds it there.
        self.in_flight().insert(hash);
        let sent = match amount {
            None => bolt11.send(invoice, Some(params)),
            Some(amount) => bolt11.send_using_amount(invoice, amount, Some(params)),
        };
        if !matches!(sent, Ok(_) | Err(NodeError::DuplicatePayment)) {
            self.in_flight().remove(&hash);
        }
        match sent {
            Ok(_) | Err(NodeError::DuplicatePayment) => {
                self.resuming().remove(&hash);
                Ok(hash)
            }
            Err(NodeError::PaymentSendingFailed) => {
                let resuming = self.resuming().get(&hash).copied();
                match resuming {
                    Some(safe_from) if self.height() < safe_from => {
                        tracing::warn!(
                            "Lightning: payment {hash} cannot be sent again yet (no route, or \
                             the invoice has expired); part of it may have left before the \
                             restart, so it is not counted as failed before block {safe_from}"
                        );
                        return Ok(hash);
                    }
                    Some(_) => {
                        self.resuming().remove(&hash);
                    }
                    None => {}
                }
                let reason = format!(
                    "no route to {} for this amount within a {} msat fee limit, or the invoice \
                     has expired",
                    invoice.recover_payee_pub_key(),
                    max_fee_msat
                );
                self.payment_ended(hash, PayOutcome::Failed { reason })
                    .await?;
                Ok(hash)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<PaymentHash>> {
        self.in_flight.lock().expect("in-flight lock")
    }

    fn resuming(&self) -> std::sync::MutexGuard<'_, HashMap<PaymentHash, u32>> {
        self.resuming.lock().expect("resuming lock")
    }

    async fn forget_outcome(&self, hash: PaymentHash) -> Result<(), LightningError> {
        self.store
            .writer()
            .write(move |txn| {
                txn.open_table(PAYMENTS)?.remove(&hash.0)?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

fn wrong_state(rec: &HoldRecord, action: &'static str) -> LightningError {
    LightningError::WrongHoldState {
        hash: rec.hash,
        state: match &rec.state {
            HoldState::Open => "unpaid".into(),
            HoldState::Held { .. } => "held".into(),
            HoldState::Claiming { .. } => "being claimed".into(),
            HoldState::Settled => "settled".into(),
            HoldState::Cancelled { reason } => format!("cancelled ({reason})"),
        },
        action,
    }
}

impl super::Lightning for LdkNode {
    fn create_hold_invoice(&self, req: HoldRequest) -> LnFuture<'_, String> {
        Box::pin(self.create_hold(req))
    }

    fn settle_hold(&self, preimage: Preimage) -> LnFuture<'_, ()> {
        Box::pin(self.settle(preimage))
    }

    fn cancel_hold(&self, hash: PaymentHash) -> LnFuture<'_, ()> {
        Box::pin(self.cancel(hash))
    }

    fn hold(&self, hash: PaymentHash) -> Result<Option<HoldRecord>, LightningError> {
        self.stored_hold(hash)
    }

    fn pay<'a>(
        &'a self,
        invoice: &'a Bolt11Invoice,
        amount_msat: Option<u64>,
        max_fee_msat: u64,
        fresh: bool,
    ) -> LnFuture<'a, PaymentHash> {
        Box::pin(self.send(invoice, amount_msat, max_fee_msat, fresh))
    }

    fn payment(&self, hash: PaymentHash) -> Option<PayOutcome> {
        match self.payment_outcome(hash) {
            Ok(Some(outcome)) => return Some(outcome),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("Lightning: cannot read payment {hash}: {e}");
                return Some(PayOutcome::Pending);
            }
        }
        let p = self.node.payment(&PaymentId(hash.0))?;
        if p.direction != PaymentDirection::Outbound {
            return None;
        }
        Some(match p.status {
            // Its outcome is recorded in redb when the event comes (or came) in.
            PaymentStatus::Pending | PaymentStatus::Failed => PayOutcome::Pending,
            PaymentStatus::Succeeded => PayOutcome::Succeeded {
                fee_msat: p.fee_paid_msat.unwrap_or(0),
            },
        })
    }

    fn check_invoice(
        &self,
        text: &str,
        amount_msat: Option<u64>,
        valid_for: u64,
    ) -> Result<Bolt11Invoice, InvoiceError> {
        invoice::check_invoice(
            text,
            &InvoiceRules {
                network: self.settings.bitcoin_network(),
                amount_msat,
                valid_until: crate::protocol::now() as u64 + valid_for,
                max_final_cltv: self.settings.max_final_cltv_expiry_delta,
            },
        )
    }

    fn subscribe(&self) -> broadcast::Receiver<LnEvent> {
        self.events.subscribe()
    }

    fn height(&self) -> u32 {
        self.node.status().current_best_block.height
    }
}

fn build(data_dir: &Path, s: &LightningSettings, seed: &Seed) -> Result<Node, LightningError> {
    let start = |what: &str, e: String| LightningError::Start(format!("{what}: {e}"));
    let mut b = Builder::new();
    b.set_network(s.bitcoin_network());
    b.set_storage_dir_path(data_dir.join(LDK_DIR).to_string_lossy().into_owned());
    b.set_entropy_seed_bytes(seed.bytes());
    b.set_runtime(tokio::runtime::Handle::current());
    b.set_log_facade_logger();
    b.set_listening_addresses(vec![socket_address(s.listen)])
        .map_err(|e| start("lightning.listen", e.to_string()))?;
    if !s.alias.is_empty() {
        b.set_node_alias(s.alias.clone())
            .map_err(|e| start("lightning.alias", e.to_string()))?;
    }
    match s.chain_source.as_str() {
        "electrum" => {
            b.set_chain_source_electrum(s.electrum_url.clone(), None);
        }
        "bitcoind" => {
            let (host, port, user, password) = s.bitcoind_rpc().ok_or_else(|| {
                start(
                    "lightning.bitcoind_rpc_address",
                    "set HOST:PORT, user and password".into(),
                )
            })?;
            b.set_chain_source_bitcoind_rpc(host, port, user, password);
        }
        _ => {
            b.set_chain_source_esplora(s.esplora_url(), None);
        }
    }
    if !s.rgs_url.is_empty() {
        b.set_gossip_source_rgs(s.rgs_url.clone());
    }
    if !s.lsps2_node_id.is_empty() {
        let id: PublicKey = s
            .lsps2_node_id
            .parse()
            .map_err(|_| start("lightning.lsps2_node_id", "not a node id".into()))?;
        let addr: SocketAddress = s
            .lsps2_address
            .parse()
            .map_err(|_| start("lightning.lsps2_address", "not HOST:PORT".into()))?;
        let token = (!s.lsps2_token.is_empty()).then(|| s.lsps2_token.clone());
        b.set_liquidity_source_lsps2(id, addr, token);
    }
    b.build()
        .map_err(|e| start("cannot set up the Lightning node", e.to_string()))
}

/// ldk-node's address type for a socket address.
pub fn socket_address(addr: std::net::SocketAddr) -> SocketAddress {
    match addr {
        std::net::SocketAddr::V4(a) => SocketAddress::TcpIpV4 {
            addr: a.ip().octets(),
            port: a.port(),
        },
        std::net::SocketAddr::V6(a) => SocketAddress::TcpIpV6 {
            addr: a.ip().octets(),
            port: a.port(),
        },
    }
}

/// One cheap request to the configured chain source.
async fn chain_source_reachable(s: &LightningSettings) -> Result<(), String> {
    let timeout = Duration::from_secs(10);
    match s.chain_source.as_str() {
        "bitcoind" => {
            let (host, port, user, password) = s
                .bitcoind_rpc()
                .ok_or("bitcoind_rpc_address, user and password must be set")?;
            crate::fetch::json_rpc(
                &format!("http://{host}:{port}/"),
                &user,
                &password,
                "getblockcount",
                serde_json::json!([]),
                timeout,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        "electrum" => {
            let hostport = s
                .electrum_url
                .split("://")
                .last()
                .unwrap_or(&s.electrum_url)
                .to_string();
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(hostport))
                .await
                .map_err(|_| "timed out".to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => crate::fetch::get(
            &format!(
                "{}/blocks/tip/height",
                s.esplora_url().trim_end_matches('/')
            ),
            timeout,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string()),
    }
}

fn describe_chain_source(s: &LightningSettings) -> String {
    match s.chain_source.as_str() {
        "electrum" => format!("electrum {}", s.electrum_url),
        "bitcoind" => format!("bitcoind RPC at {}", s.bitcoind_rpc_address),
        _ => format!("esplora {}", s.esplora_url()),
    }
}

fn failure_reason(reason: Option<PaymentFailureReason>) -> String {
    match reason {
        Some(PaymentFailureReason::RecipientRejected) => "the recipient rejected the payment",
        Some(PaymentFailureReason::UserAbandoned) => "abandoned",
        Some(PaymentFailureReason::RetriesExhausted) => "no route succeeded before the time-out",
        Some(PaymentFailureReason::PaymentExpired) => "the invoice expired",
        Some(PaymentFailureReason::RouteNotFound) => "no route to the destination",
        Some(PaymentFailureReason::UnexpectedError) => "unexpected error in the Lightning node",
        Some(PaymentFailureReason::UnknownRequiredFeatures) => {
            "the invoice requires features this node lacks"
        }
        Some(PaymentFailureReason::InvoiceRequestExpired) => "the invoice request expired",
        Some(PaymentFailureReason::InvoiceRequestRejected) => "the invoice request was rejected",
        Some(PaymentFailureReason::BlindedPathCreationFailed) => "could not build a blinded path",
        None => "failed",
    }
    .to_string()
}
