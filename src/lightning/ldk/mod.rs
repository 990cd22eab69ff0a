//! The embedded ldk-node: start-up, the event loop ([`events`]), hold invoices and their
//! deadline guard ([`holds`]), and outgoing payments with their resume rule ([`payments`]).

mod events;
mod holds;
mod payments;
mod start;

pub use start::socket_address;
use start::{build, chain_source_reachable, describe_chain_source};

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
    PaymentHash, Preimage, SendFuture,
};
use crate::config::LightningSettings;
use crate::store::{decode, encode, Store, StoreError, HOLDS, OPEN_HOLDS, PAYMENTS};

/// Directory under the data dir where ldk-node keeps its own state.
pub const LDK_DIR: &str = "lightning";
/// How often the guard looks at the chain tip.
const GUARD_TICK: Duration = Duration::from_secs(1);
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
    ) -> SendFuture<'a> {
        Box::pin(self.send(invoice, amount_msat, max_fee_msat, fresh))
    }

    fn payment(&self, hash: PaymentHash) -> Option<PayOutcome> {
        self.payment_state(hash)
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
