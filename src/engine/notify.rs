//! Messages to a trade's parties, and the views of the order each side is shown.
//!
//! Amounts differ per side (reference §4.0): the seller sees what it locks (amount + fee), the
//! buyer what it receives (amount − fee). Trade keys are disclosed only once the escrow is held,
//! which is how the parties learn each other's key for their chat.

use mostro_core::prelude::{Action, Message, Payload, Peer, SmallOrder, Status};

use super::order::{Order, Side};
use super::tx::Tx;
use crate::protocol::outbound::Outgoing;
use crate::store::StoreError;

/// Queues a message about `order` to one of its parties, in the transport that party speaks.
/// `request_id` is set only on the direct reply to that party's own request.
pub fn tell(
    tx: &mut Tx,
    order: &Order,
    side: Side,
    request_id: Option<u64>,
    action: Action,
    payload: Option<Payload>,
) -> Result<(), StoreError> {
    if let Some(p) = order.party(side) {
        let msg = Message::new_order(Some(order.id), request_id, None, action, payload);
        tx.send(Outgoing::direct(p.trade_pubkey, p.transport, msg))?;
    }
    Ok(())
}

/// The buyer is asked for its payout invoice (`add-invoice` with what it will receive) and the
/// seller is told the trade waits on it. `buyer_rid` echoes the buyer's own request.
pub fn ask_buyer_for_invoice(
    tx: &mut Tx,
    order: &Order,
    buyer_rid: Option<u64>,
) -> Result<(), StoreError> {
    let view = buyer_view(order, Status::WaitingBuyerInvoice, false);
    tell(
        tx,
        order,
        Side::Buyer,
        buyer_rid,
        Action::AddInvoice,
        Some(Payload::Order(view)),
    )?;
    tell(
        tx,
        order,
        Side::Seller,
        None,
        Action::WaitingBuyerInvoice,
        None,
    )
}

/// The order as the buyer sees it: the sats it will receive.
pub fn buyer_view(order: &Order, status: Status, with_keys: bool) -> SmallOrder {
    view(order, status, order.buyer_total(), with_keys)
}

/// The order as the seller sees it: the sats it locks.
pub fn seller_view(order: &Order, status: Status, with_keys: bool) -> SmallOrder {
    view(order, status, order.seller_total(), with_keys)
}

fn view(order: &Order, status: Status, amount: i64, with_keys: bool) -> SmallOrder {
    let mut s = order.small();
    s.status = Some(status);
    s.amount = amount;
    s.buyer_invoice = None;
    if !with_keys {
        s.buyer_trade_pubkey = None;
        s.seller_trade_pubkey = None;
    }
    s
}

/// The maker's pending-order view, without trade keys (`new-order` acks and returns to pending).
pub fn maker_view(order: &Order) -> SmallOrder {
    let mut s = order.small();
    s.buyer_trade_pubkey = None;
    s.seller_trade_pubkey = None;
    s
}

/// Tells the maker who took the order: the taker's reputation in a `Peer` with an empty key,
/// riding on `pay-invoice` (sell orders) or `add-invoice` (buy orders) as the reference does.
pub fn taker_reputation(tx: &mut Tx, order: &Order, now: i64) -> Result<(), StoreError> {
    let maker = order.maker_side();
    let Some(taker) = order.party(maker.other()) else {
        return Ok(());
    };
    let reputation = if taker.full_privacy() {
        None
    } else {
        tx.user(&taker.identity)?.map(|u| u.info(now))
    };
    let action = match maker {
        Side::Seller => Action::PayInvoice,
        Side::Buyer => Action::AddInvoice,
    };
    let peer = Payload::Peer(Peer::new(String::new(), reputation));
    tell(tx, order, maker, None, action, Some(peer))
}
