//! The order record and its state machine.
//!
//! Status is mostro-core's typed [`Status`]; every change goes through [`Order::move_to`], which
//! knows the transitions of the reference daemon (protocol reference §4.14) and refuses the rest,
//! so no code path compares status strings or jumps states by accident.

use mostro_core::prelude::{Kind, SmallOrder, Status, Transport};
use nostr::PublicKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lightning::{PaymentHash, Preimage};

/// A side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Receives the sats, sends the fiat.
    Buyer,
    /// Sends the sats (into escrow), receives the fiat.
    Seller,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Buyer => Side::Seller,
            Side::Seller => Side::Buyer,
        }
    }
}

/// The seller's escrow: a hold invoice for amount + fee whose preimage only the box knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escrow {
    /// Revealed to the Lightning node only when the trade is released.
    pub preimage: Preimage,
    /// Sats the seller locks: amount + fee.
    pub amount: i64,
    /// Where it stands.
    pub state: EscrowState,
    /// `request_id` of the request that led to the invoice, echoed on the message carrying it.
    pub request_id: Option<u64>,
    /// Side that sent that request.
    pub requested_by: Side,
}

impl Escrow {
    /// The payment hash of the hold invoice.
    pub fn hash(&self) -> PaymentHash {
        self.preimage.hash()
    }
}

/// The life of an escrow. The `-ing` states are decisions the Lightning node has not confirmed
/// yet: they are recorded first, carried out after the commit, and redone after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EscrowState {
    /// The hold invoice must be issued.
    Issuing,
    /// Issued and handed to the seller; not paid yet.
    Open {
        /// The BOLT11 invoice.
        invoice: String,
    },
    /// The seller's payment is held.
    Held {
        /// Block from which the Lightning node would fail it back on its own.
        deadline: u32,
        /// Unix time it was held.
        held_at: i64,
    },
    /// Released: the payment must be settled.
    Settling,
    /// Settled: the sats are the node's until the buyer is paid.
    Settled,
    /// Given back (or never paid): the hold invoice is cancelled.
    Refunded,
}

/// The buyer's payout, after the escrow is settled. A failed payout is never silently dropped:
/// it is retried, then the buyer is asked for a new invoice, and every step is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payout {
    /// Failed attempts so far.
    pub attempts: u32,
    /// Where it stands.
    pub state: PayoutState,
    /// Routing fee of the successful payment, msat.
    pub fee_msat: u64,
    /// Every payment hash this payout has handed to the node, oldest first. The payout moves
    /// to a new attempt only when each of them is known to have failed.
    #[serde(default)]
    pub tried: Vec<PaymentHash>,
}

impl Payout {
    /// A payout due now, before any attempt.
    pub fn due() -> Self {
        Payout {
            attempts: 0,
            state: PayoutState::Due,
            fee_msat: 0,
            tried: Vec::new(),
        }
    }

    /// Remembers a payment hash handed (or about to be handed) to the node.
    pub fn remember(&mut self, hash: PaymentHash) {
        if !self.tried.contains(&hash) {
            self.tried.push(hash);
        }
    }
}

/// Where a payout stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PayoutState {
    /// An attempt is due: resolve the buyer's destination to an invoice, then pay it.
    Due,
    /// Paying this invoice. It is recorded before the node is asked, so a crash can never
    /// lead to paying two different invoices for one trade.
    Paying {
        /// The invoice being paid.
        invoice: String,
        /// Its payment hash.
        hash: PaymentHash,
        /// True once the node has accepted the payment.
        sent: bool,
    },
    /// The last attempt failed; the next one is due at `retry_at`.
    Failed {
        /// Why, from the node.
        reason: String,
        /// Unix time of the next attempt.
        retry_at: i64,
    },
    /// Attempts exhausted: waiting for the buyer's new invoice (`add-invoice`). The sats stay
    /// in the node; the buyer is asked again every `lightning.invoice_reminder_interval`, and
    /// the operator sees the order on the status page and in `mostro_payouts_needing_invoice`.
    NeedsInvoice {
        /// Why the last attempt failed.
        reason: String,
        /// Unix time the buyer was first asked (0 in records from before it was kept).
        #[serde(default)]
        since: i64,
    },
    /// Put aside for the operator: never paid automatically. A restored backup puts every
    /// unfinished payout here, since the box that made the backup may have paid it after the
    /// backup was taken; the operator checks, then resumes it or marks it paid
    /// (`mostro-box order payout`).
    OnHold {
        /// Why, for the operator.
        reason: String,
    },
    /// Paid.
    Paid,
}

impl PayoutState {
    /// Its name, as stored and shown.
    pub fn name(&self) -> &'static str {
        match self {
            PayoutState::Due => "due",
            PayoutState::Paying { .. } => "paying",
            PayoutState::Failed { .. } => "failed",
            PayoutState::NeedsInvoice { .. } => "needs_invoice",
            PayoutState::OnHold { .. } => "on_hold",
            PayoutState::Paid => "paid",
        }
    }
}

/// When the box next acts on an order by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// At this Unix time.
    At(i64),
    /// At this block height (the escrow wind-up).
    Block(u32),
}

/// The next trade key a range maker gives for the order that follows this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextTrade {
    /// Trade key of the child order.
    pub pubkey: PublicKey,
    /// Its trade index.
    pub index: u32,
}

fn direct() -> Transport {
    crate::protocol::DIRECT
}

/// One side of a trade: the per-trade key that signs its messages, the identity key that owns its
/// reputation (equal to the trade key in full-privacy mode) and the trade index it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Party {
    /// Trade key: replies go here.
    pub trade_pubkey: PublicKey,
    /// Identity (master) key: `orders` and `restore-session` look orders up by it.
    pub identity: PublicKey,
    /// Trade index of the key, `None` in full privacy.
    pub trade_index: Option<i64>,
    /// The transport this party's client speaks; every message to it uses it.
    #[serde(default = "direct")]
    pub transport: Transport,
}

impl Party {
    /// True in full-privacy mode: no reputation is kept or shown.
    pub fn full_privacy(&self) -> bool {
        self.identity == self.trade_pubkey
    }
}

/// An order as the box stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Order id, also the `d` tag of its 38383 event.
    pub id: Uuid,
    /// Buy or sell, from the maker's side.
    pub kind: Kind,
    /// Where the order is in its life.
    pub status: Status,
    /// Sats; 0 for market-price orders until taken.
    pub amount: i64,
    /// Fee each side pays, in sats (computed at take for market-price orders).
    pub fee: i64,
    /// True when the sats amount comes from the market price at take time.
    pub price_from_api: bool,
    /// Fiat currency code as the maker gave it.
    pub fiat_code: String,
    /// Fiat amount (0 for a range order until taken).
    pub fiat_amount: i64,
    /// Range lower bound in fiat.
    pub min_amount: Option<i64>,
    /// Range upper bound in fiat.
    pub max_amount: Option<i64>,
    /// Comma-separated payment methods.
    pub payment_method: String,
    /// Premium in percent over the market price.
    pub premium: i64,
    /// The trade key that created the order.
    pub creator_pubkey: PublicKey,
    /// The buyer, once known (the maker of a buy order).
    pub buyer: Option<Party>,
    /// The seller, once known (the maker of a sell order).
    pub seller: Option<Party>,
    /// Buyer's payout invoice or Lightning address, if given.
    pub buyer_invoice: Option<String>,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time after which a pending order expires.
    pub expires_at: i64,
    /// Unix time the order was taken (0 if not).
    pub taken_at: i64,
    /// The order this one was split from (range orders).
    pub range_parent_id: Option<Uuid>,
    /// `created_at` of the last 38383 revision, so the next one is strictly newer.
    pub last_event_at: i64,
    /// What happens once the order is taken: escrow, payout, cancel and dispute, ratings.
    #[serde(flatten)]
    pub trade: Trade,
}

/// The part of an order that only a taken order has. Empty (the default) while it waits in
/// the book, and cleared when a taker walks away.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Trade {
    /// The seller's hold invoice, once the trade reaches it.
    pub escrow: Option<Escrow>,
    /// The buyer's payout, once the escrow is settled.
    pub payout: Option<Payout>,
    /// Who asked first for a cooperative cancel.
    pub cancel_initiator: Option<Side>,
    /// The dispute opened on this trade, if any.
    pub dispute_id: Option<Uuid>,
    /// Sides that have rated their counterparty (one rating each).
    pub rated: Vec<Side>,
    /// Next trade key of a buy-range maker, given with `fiat-sent`.
    pub next_trade: Option<NextTrade>,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order cannot move from {from} to {to}")]
pub struct BadTransition {
    /// Status before.
    pub from: Status,
    /// Status asked for.
    pub to: Status,
}

impl Order {
    /// The maker's side.
    pub fn maker(&self) -> Option<&Party> {
        match self.kind {
            Kind::Buy => self.buyer.as_ref(),
            Kind::Sell => self.seller.as_ref(),
        }
    }

    /// The maker's side of the trade.
    pub fn maker_side(&self) -> Side {
        match self.kind {
            Kind::Buy => Side::Buyer,
            Kind::Sell => Side::Seller,
        }
    }

    /// A party by side.
    pub fn party(&self, side: Side) -> Option<&Party> {
        match side {
            Side::Buyer => self.buyer.as_ref(),
            Side::Seller => self.seller.as_ref(),
        }
    }

    /// The side a trade key plays in this order.
    pub fn side_of(&self, trade_pubkey: &PublicKey) -> Option<Side> {
        if self.buyer.as_ref().map(|p| &p.trade_pubkey) == Some(trade_pubkey) {
            Some(Side::Buyer)
        } else if self.seller.as_ref().map(|p| &p.trade_pubkey) == Some(trade_pubkey) {
            Some(Side::Seller)
        } else {
            None
        }
    }

    /// Sats the seller locks in escrow: amount + fee (reference §4.0).
    pub fn seller_total(&self) -> i64 {
        self.amount + self.fee
    }

    /// Sats the buyer receives: amount − fee.
    pub fn buyer_total(&self) -> i64 {
        self.amount - self.fee
    }

    /// True while the Lightning node has something to do or report for this order: an escrow
    /// to issue, watch or settle, or a payout to make or follow.
    pub fn lightning_pending(&self) -> bool {
        let escrow = matches!(
            self.trade.escrow.as_ref().map(|e| &e.state),
            Some(
                EscrowState::Issuing
                    | EscrowState::Open { .. }
                    | EscrowState::Held { .. }
                    | EscrowState::Settling
            )
        );
        let payout = matches!(
            self.trade.payout.as_ref().map(|p| &p.state),
            Some(PayoutState::Due | PayoutState::Paying { .. })
        );
        escrow || payout
    }

    /// The next moment the box acts on this order by itself (an expiry, a time-out, a payout
    /// retry, the escrow wind-up), so an operator can see what is about to happen.
    pub fn next_deadline(&self, expiration_seconds: i64, margin_blocks: u32) -> Option<Deadline> {
        if let Some(PayoutState::Failed { retry_at, .. }) =
            self.trade.payout.as_ref().map(|p| &p.state)
        {
            return Some(Deadline::At(*retry_at));
        }
        match self.status {
            Status::Pending => Some(Deadline::At(self.expires_at)),
            Status::WaitingPayment | Status::WaitingBuyerInvoice => {
                Some(Deadline::At(self.taken_at + expiration_seconds))
            }
            _ => match self.trade.escrow.as_ref().map(|e| &e.state) {
                Some(EscrowState::Held { deadline, .. }) => {
                    Some(Deadline::Block(deadline.saturating_sub(margin_blocks)))
                }
                _ => None,
            },
        }
    }

    /// Mutable maker side.
    pub fn maker_mut(&mut self) -> Option<&mut Party> {
        match self.kind {
            Kind::Buy => self.buyer.as_mut(),
            Kind::Sell => self.seller.as_mut(),
        }
    }

    /// True for a range order (min and max fiat amounts).
    pub fn is_range(&self) -> bool {
        self.min_amount.is_some() && self.max_amount.is_some()
    }

    /// Statuses after which nothing more happens to the order.
    pub fn is_terminal(&self) -> bool {
        is_terminal(self.status)
    }

    /// Moves to `to` if the reference daemon's state machine allows it.
    pub fn move_to(&mut self, to: Status) -> Result<(), BadTransition> {
        if allowed(self.status, to) {
            self.status = to;
            Ok(())
        } else {
            Err(BadTransition {
                from: self.status,
                to,
            })
        }
    }

    /// The status shown on the relay (`s` tag), or `None` when this status is not published and
    /// the previous revision stays live (reference §1.1).
    pub fn published_status(&self) -> Option<Status> {
        use Status::*;
        match self.status {
            Pending | WaitingTakerBond => Some(Pending),
            WaitingBuyerInvoice if self.kind == Kind::Sell => Some(InProgress),
            WaitingPayment if self.kind == Kind::Buy => Some(InProgress),
            Canceled | CanceledByAdmin | CooperativelyCanceled | Expired => Some(Canceled),
            Success => Some(Success),
            CompletedByAdmin => Some(CompletedByAdmin),
            _ => None,
        }
    }

    /// The wire view sent to traders.
    pub fn small(&self) -> SmallOrder {
        SmallOrder {
            id: Some(self.id),
            kind: Some(self.kind),
            status: Some(self.status),
            amount: self.amount,
            fiat_code: self.fiat_code.clone(),
            min_amount: self.min_amount,
            max_amount: self.max_amount,
            fiat_amount: self.fiat_amount,
            payment_method: self.payment_method.clone(),
            premium: self.premium,
            buyer_trade_pubkey: self.buyer.as_ref().map(|p| p.trade_pubkey.to_hex()),
            seller_trade_pubkey: self.seller.as_ref().map(|p| p.trade_pubkey.to_hex()),
            buyer_invoice: self.buyer_invoice.clone(),
            created_at: Some(self.created_at),
            expires_at: Some(self.expires_at),
        }
    }

    /// The next `created_at` for this order's 38383 event: now, or one second after the last
    /// revision if that is not older, so relays always keep the newest revision.
    pub fn next_event_time(&mut self, now: i64) -> i64 {
        let t = now.max(self.last_event_at + 1);
        self.last_event_at = t;
        t
    }

    /// The trade index the given identity used on this order, if it is a party.
    pub fn trade_index_of(&self, identity: &PublicKey) -> Option<i64> {
        [&self.buyer, &self.seller]
            .into_iter()
            .flatten()
            .find(|p| &p.identity == identity)
            .map(|p| p.trade_index.unwrap_or(0))
    }
}

/// True for statuses after which the order never changes again.
pub fn is_terminal(status: Status) -> bool {
    use Status::*;
    matches!(
        status,
        Canceled
            | CanceledByAdmin
            | CooperativelyCanceled
            | Expired
            | Success
            | CompletedByAdmin
            | SettledByAdmin
    )
}

/// The transition table of the Lightning-mode daemon (no bonds), reference §4.14.
fn allowed(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (
            Pending,
            WaitingBuyerInvoice | WaitingPayment | Canceled | Expired
        ) | (
            WaitingBuyerInvoice,
            WaitingPayment | Active | Pending | Canceled
        ) | (
            WaitingPayment,
            Active | WaitingBuyerInvoice | Pending | Canceled
        ) | (
            Active,
            FiatSent | Dispute | CooperativelyCanceled | Canceled
        ) | (
            FiatSent,
            SettledHoldInvoice | Dispute | CooperativelyCanceled | Canceled
        ) | (
            Dispute,
            SettledHoldInvoice | CanceledByAdmin | CooperativelyCanceled | Canceled
        ) | (SettledHoldInvoice, Success | Canceled)
    )
    // `Canceled` from fiat-sent, dispute and settled-hold-invoice exists for one case only: the
    // held payment was lost (failed back at its deadline), so the seller already has it back.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(kind: Kind, status: Status) -> Order {
        let pk = nostr::Keys::generate().public_key();
        Order {
            id: Uuid::new_v4(),
            kind,
            status,
            amount: 1000,
            fee: 0,
            price_from_api: false,
            fiat_code: "USD".into(),
            fiat_amount: 10,
            min_amount: None,
            max_amount: None,
            payment_method: "cash".into(),
            premium: 0,
            creator_pubkey: pk,
            buyer: None,
            seller: None,
            buyer_invoice: None,
            created_at: 0,
            expires_at: 0,
            taken_at: 0,
            range_parent_id: None,
            last_event_at: 0,
            trade: Default::default(),
        }
    }

    #[test]
    fn terminal_states_do_not_move() {
        for s in [Status::Canceled, Status::Expired, Status::Success] {
            let mut o = order(Kind::Sell, s);
            assert!(o.move_to(Status::Pending).is_err());
            assert!(o.move_to(Status::Active).is_err());
        }
    }

    #[test]
    fn published_status_follows_reference() {
        assert_eq!(
            order(Kind::Sell, Status::WaitingBuyerInvoice).published_status(),
            Some(Status::InProgress)
        );
        assert_eq!(
            order(Kind::Buy, Status::WaitingBuyerInvoice).published_status(),
            None
        );
        assert_eq!(
            order(Kind::Buy, Status::Expired).published_status(),
            Some(Status::Canceled)
        );
        assert_eq!(order(Kind::Buy, Status::Active).published_status(), None);
    }

    #[test]
    fn event_times_are_strictly_increasing() {
        let mut o = order(Kind::Sell, Status::Pending);
        let a = o.next_event_time(100);
        let b = o.next_event_time(100);
        assert!(b > a);
    }
}
