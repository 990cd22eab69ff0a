//! The Lightning boundary the engine uses, and its one implementation on an embedded ldk-node.
//!
//! The engine sees only the [`Lightning`] trait: hold invoices for a payment hash (create,
//! observe, settle, cancel), payouts with a fee cap, and invoice checks. Everything LDK-specific
//! (the re-signed invoices that make the hold window real, the claim-deadline guard, the event
//! loop, reconciliation with redb after a crash) lives in [`ldk`] and [`hold`].

pub mod hold;
pub mod invoice;
pub mod ldk;
pub mod lnurl;
pub mod seed;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use ldk_node::bitcoin::hex::{DisplayHex, FromHex};
use ldk_node::lightning_invoice::Bolt11Invoice;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use invoice::{check_invoice, check_payout_destination, is_lightning_address, InvoiceError};
pub use ldk::LdkNode;

use crate::store::StoreError;

/// A 32-byte payment hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentHash(pub [u8; 32]);

/// The 32-byte secret whose hash locks a payment; revealing it settles the payment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Preimage(pub [u8; 32]);

impl Preimage {
    /// 32 fresh random bytes from the operating system (a secp256k1 secret key is exactly that,
    /// and the nostr crate already draws those from the OS RNG).
    pub fn random() -> Self {
        Preimage(nostr::Keys::generate().secret_key().secret_bytes())
    }

    /// The hash this preimage unlocks.
    pub fn hash(&self) -> PaymentHash {
        use ldk_node::bitcoin::hashes::{sha256, Hash};
        PaymentHash(sha256::Hash::hash(&self.0).to_byte_array())
    }
}

impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never printed: whoever sees it can settle the payment.
        write!(f, "Preimage(..)")
    }
}

impl Preimage {
    /// Hex, for the solver's dispute view and the store.
    pub fn to_hex(&self) -> String {
        self.0.as_hex().to_string()
    }
}

impl Serialize for Preimage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Preimage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        <[u8; 32]>::from_hex(&s)
            .map(Preimage)
            .map_err(|_| serde::de::Error::custom("preimage is not 64 hex digits"))
    }
}

impl fmt::Display for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_hex())
    }
}

impl fmt::Debug for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PaymentHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <[u8; 32]>::from_hex(s.trim())
            .map(PaymentHash)
            .map_err(|_| format!("{s} is not a 64-hex-digit payment hash"))
    }
}

impl Serialize for PaymentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PaymentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What to create a hold invoice for.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    /// The hash the engine keeps the preimage of.
    pub hash: PaymentHash,
    /// Exact amount to hold.
    pub amount_msat: u64,
    /// Shown in the payer's wallet.
    pub description: String,
    /// Seconds the invoice stays payable.
    pub expiry_secs: u32,
}

/// Where a hold invoice stands. Recorded in redb on every change, before anyone hears of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HoldState {
    /// Issued, not paid yet.
    Open,
    /// Paid and held: the payer's HTLC is locked until the box settles or cancels it.
    Held {
        /// Amount held.
        amount_msat: u64,
        /// Block height from which LDK would fail the HTLC back; the box resolves it
        /// [`hold::GUARD_BLOCKS`] earlier.
        deadline: u32,
    },
    /// The box asked LDK to claim it (recorded first): no longer cancelled by anyone, since
    /// LDK claims it on chain if it must. Settled when LDK confirms the claim.
    Claiming {
        /// Amount held.
        amount_msat: u64,
        /// As for `Held`. If LDK has not confirmed the claim when this is past, it never
        /// will: the payer has the sats back.
        deadline: u32,
    },
    /// Settled: the sats are the node's.
    Settled,
    /// Cancelled (by the engine, the guard, expiry, or a payer's too-short lock).
    Cancelled {
        /// Why, for the operator.
        reason: String,
    },
}

impl HoldState {
    /// Settled or cancelled: nothing left to watch.
    pub fn is_final(&self) -> bool {
        matches!(self, HoldState::Settled | HoldState::Cancelled { .. })
    }
}

/// A hold invoice as the box records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    /// Its payment hash.
    pub hash: PaymentHash,
    /// Amount asked for.
    pub amount_msat: u64,
    /// The (re-signed) invoice handed out.
    pub invoice: String,
    /// Unix time it stops being payable.
    pub expires_at: u64,
    /// Current state.
    pub state: HoldState,
}

/// How an outgoing payment ended (or that it has not yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PayOutcome {
    /// Paid; the routing fee it cost.
    Succeeded {
        /// Routing fee paid.
        fee_msat: u64,
    },
    /// Failed for good; no sats left the node.
    Failed {
        /// Why, in words.
        reason: String,
    },
    /// Still in flight (the time-out passed first); the outcome arrives as an event.
    Pending,
}

/// What became of a request to send a payment. Only [`SendOutcome::NotSent`] proves that no
/// sats left for it, in this attempt or any earlier one of the same payment: a payout moves on
/// (to a retry, or to another invoice) only on that proof or on the node's own failure event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The node has the payment in flight, or has already ended it: the outcome arrives as
    /// [`LnEvent::Paid`] and through [`Lightning::payment`].
    Sent,
    /// Nothing left the node for this payment, ever.
    NotSent(NotSent),
    /// The node may have sent it: an error after it may have taken the payment, or a resend
    /// refused while an earlier run's attempt may still be out there. Wait for its outcome.
    Unknown(String),
}

/// Why a payment was certainly not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    /// The invoice has no amount and none was given.
    #[error("the invoice has no amount and none was given")]
    NoAmount,
    /// The invoice cannot be read.
    #[error("unreadable invoice: {0}")]
    Unreadable(String),
    /// LDK found no route within the fee limit, or the invoice has expired.
    #[error(
        "no route to {payee} for this amount within a {max_fee_msat} msat fee limit, or the \
         invoice has expired"
    )]
    NoRoute {
        /// The recipient's node id.
        payee: String,
        /// The routing fee limit.
        max_fee_msat: u64,
    },
    /// The node refused it before taking it (not running, invalid amount or invoice).
    #[error("the Lightning node refused it: {0}")]
    Refused(String),
    /// The box could not record the attempt, so it did not ask the node.
    #[error("not sent: the attempt could not be recorded: {0}")]
    Store(String),
}

/// Something that happened on the Lightning node, for whoever is listening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LnEvent {
    /// A hold invoice was paid and is now held.
    HoldHeld {
        /// Its hash.
        hash: PaymentHash,
        /// Amount held.
        amount_msat: u64,
        /// LDK's claim deadline.
        deadline: u32,
    },
    /// A held payment was settled.
    HoldSettled {
        /// Its hash.
        hash: PaymentHash,
    },
    /// A hold invoice was cancelled (the payer has the sats back, if it had paid).
    HoldCancelled {
        /// Its hash.
        hash: PaymentHash,
        /// Why.
        reason: String,
    },
    /// An outgoing payment ended.
    Paid {
        /// Its hash.
        hash: PaymentHash,
        /// How.
        outcome: PayOutcome,
    },
    /// An ordinary invoice of the node's was paid.
    Received {
        /// Its hash.
        hash: PaymentHash,
        /// Amount received.
        amount_msat: u64,
    },
    /// A channel changed state (`pending`, `ready`, `closed`).
    Channel {
        /// Channel id, hex.
        channel_id: String,
        /// New state.
        state: &'static str,
    },
}

/// A Lightning failure, worded for whoever called.
#[derive(Debug, thiserror::Error)]
pub enum LightningError {
    /// The LDK node refused or failed.
    #[error("Lightning node: {0}")]
    Node(#[from] ldk_node::NodeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node has not confirmed claiming a held payment (yet).
    #[error(
        "the Lightning node has not confirmed claiming the held payment {0}; the buyer is paid \
         once it does, and the payment goes back to the seller at its deadline if it never does"
    )]
    NotClaimed(PaymentHash),
    /// The invoice is unusable.
    #[error(transparent)]
    Invoice(#[from] InvoiceError),
    /// No hold invoice with that hash.
    #[error("no hold invoice with hash {0}")]
    UnknownHold(PaymentHash),
    /// The hold invoice is not in a state that allows this.
    #[error("hold invoice {hash} is {state}, so it cannot be {action}")]
    WrongHoldState {
        /// Its hash.
        hash: PaymentHash,
        /// Its state, in words.
        state: String,
        /// What was asked.
        action: &'static str,
    },
    /// Re-signing a hold invoice failed.
    #[error(transparent)]
    Reissue(#[from] hold::ReissueError),
    /// The node could not be built or started.
    #[error("{0}")]
    Start(String),
}

/// A boxed future, so the trait can be used as `dyn Lightning`.
pub type LnFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LightningError>> + Send + 'a>>;
/// A boxed future of a send's outcome (which carries its own failures).
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// The Lightning operations the escrow engine needs.
pub trait Lightning: Send + Sync {
    /// Creates a hold invoice for `req.hash` whose payment stays held for the configured window,
    /// records it, and returns the BOLT11 text to hand to the payer.
    fn create_hold_invoice(&self, req: HoldRequest) -> LnFuture<'_, String>;
    /// Asks the node to claim a held payment with its preimage. The hold becomes settled, and
    /// [`LnEvent::HoldSettled`] goes out, once the node confirms the claim; asking again is
    /// harmless, and an error once the first request has gone unconfirmed for a while.
    fn settle_hold(&self, preimage: Preimage) -> LnFuture<'_, ()>;
    /// Cancels a hold invoice; a held payment goes back to the payer.
    fn cancel_hold(&self, hash: PaymentHash) -> LnFuture<'_, ()>;
    /// The recorded state of a hold invoice.
    fn hold(&self, hash: PaymentHash) -> Result<Option<HoldRecord>, LightningError>;
    /// Starts paying `invoice` (with `amount_msat` when it has none) for at most `max_fee_msat`
    /// in routing fees; the outcome arrives as [`LnEvent::Paid`] and via [`Lightning::payment`].
    /// `fresh`: a new attempt, which tries the invoice again after a recorded failure; without
    /// it the call only resumes a payment started earlier. Safe to call again, also after a
    /// crash: a payment in flight or paid is never sent twice, and one the node lost before it
    /// left is sent again.
    fn pay<'a>(
        &'a self,
        invoice: &'a Bolt11Invoice,
        amount_msat: Option<u64>,
        max_fee_msat: u64,
        fresh: bool,
    ) -> SendFuture<'a>;
    /// Where an outgoing payment stands: `Failed` only once it is certain that no part of it
    /// can still arrive, `Pending` while it may; `None`: the node was never asked to send it.
    fn payment(&self, hash: PaymentHash) -> Option<PayOutcome>;
    /// Checks an invoice the box is asked to pay: the node's network, the amount due (if
    /// given), valid for at least `valid_for` more seconds, and an acceptable final CLTV.
    fn check_invoice(
        &self,
        text: &str,
        amount_msat: Option<u64>,
        valid_for: u64,
    ) -> Result<Bolt11Invoice, InvoiceError>;
    /// Events from now on.
    fn subscribe(&self) -> broadcast::Receiver<LnEvent>;
    /// The chain tip the node has seen.
    fn height(&self) -> u32;
}

/// Pays and waits up to `timeout` for the outcome (`Pending` if it has not ended by then).
pub async fn pay_and_wait(
    ln: &dyn Lightning,
    invoice: &Bolt11Invoice,
    amount_msat: Option<u64>,
    max_fee_msat: u64,
    timeout: Duration,
) -> Result<PayOutcome, LightningError> {
    use ldk_node::bitcoin::hashes::Hash;
    let mut events = ln.subscribe();
    let hash = PaymentHash(invoice.payment_hash().to_byte_array());
    match ln.pay(invoice, amount_msat, max_fee_msat, true).await {
        SendOutcome::Sent => {}
        SendOutcome::NotSent(why) => {
            return Ok(PayOutcome::Failed {
                reason: why.to_string(),
            })
        }
        SendOutcome::Unknown(why) => {
            tracing::warn!("Lightning: payment {hash}: {why}");
            return Ok(PayOutcome::Pending);
        }
    }
    let wait = async {
        loop {
            if let Some(done) = ln.payment(hash).filter(|o| *o != PayOutcome::Pending) {
                return done;
            }
            match events.recv().await {
                Ok(LnEvent::Paid { hash: h, outcome }) if h == hash => return outcome,
                Err(broadcast::error::RecvError::Closed) => return PayOutcome::Pending,
                _ => {}
            }
        }
    };
    Ok(tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or(PayOutcome::Pending))
}
