//! Taking an order and getting to escrow (reference §4.2–4.4): `take-sell`, `take-buy`,
//! `add-invoice`, and the hold-invoice step they lead to.

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason, Kind, Payload, Status};
use nostr::PublicKey;

use super::new_order::fee_for;
use super::{save_and_publish, track_active};
use crate::engine::dispatch::{record_trade_index, Fail, Request};
use crate::engine::notify::{ask_buyer_for_invoice, buyer_view, seller_view, tell};
use crate::engine::order::{Escrow, EscrowState, Order, Party, PayoutState, Side};
use crate::engine::tx::{Timer, Tx};
use crate::engine::Ctx;
use crate::lightning::{check_payout_destination, Preimage};

/// `take-sell` (the buyer takes a sell order) and `take-buy` (the seller takes a buy order).
pub fn take(
    tx: &mut Tx,
    ctx: &mut Ctx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
    kind: Kind,
) -> Result<(), Fail> {
    if ctx.disk_low {
        return Err(CantDoReason::TooManyRequests.into());
    }
    let mut order = super::requested_order(tx, req)?;
    let taker_side = match kind {
        Kind::Sell => Side::Buyer,
        Kind::Buy => Side::Seller,
    };
    check_no_waiting_take(tx, req, taker_side)?;
    // One trade key, one trade at a time (clients use a new key for each): a full-privacy
    // taker, whose identity is the trade key, cannot hold several orders with one key.
    if active.contains(&req.sender()) {
        return Err(CantDoReason::PendingOrderExists.into());
    }
    if order.kind != kind {
        return Err(CantDoReason::InvalidOrderKind.into());
    }
    if order.status != Status::Pending || order.expires_at <= ctx.now {
        return Err(CantDoReason::InvalidOrderStatus.into());
    }
    if order.creator_pubkey == req.sender() {
        return Err(CantDoReason::InvalidPubkey.into());
    }
    let (fiat_asked, invoice) = match &req.kind().payload {
        Some(Payload::Amount(a)) => (Some(*a), None),
        Some(Payload::PaymentRequest(_, inv, a)) => (*a, Some(inv.clone())),
        _ => (None, None),
    };
    if order.is_range() {
        let (min, max) = (order.min_amount.unwrap_or(0), order.max_amount.unwrap_or(0));
        match fiat_asked {
            Some(f) if f >= min && f <= max => order.fiat_amount = f,
            _ => return Err(CantDoReason::OutOfRangeSatsAmount.into()),
        }
    }
    if order.price_from_api {
        order.amount = market_sats(ctx, &order)?;
        order.fee = fee_for(ctx, order.amount);
    }
    if let Some(inv) = &invoice {
        if taker_side != Side::Buyer {
            return Err(CantDoReason::InvalidPayload.into());
        }
        check_payout_destination(inv, order.buyer_total(), ctx.now, &ctx.settings.lightning)
            .map_err(|_| CantDoReason::InvalidInvoice)?;
    }

    // Checks done: from here on the take happens.
    let taker = Party {
        trade_pubkey: req.sender(),
        identity: req.identity(),
        trade_index: req.kind().trade_index.filter(|_| !req.full_privacy()),
        transport: req.inbound.transport,
    };
    match taker_side {
        Side::Buyer => order.buyer = Some(taker),
        Side::Seller => order.seller = Some(taker),
    }
    order.taken_at = ctx.now;
    if invoice.is_some() {
        order.buyer_invoice = invoice;
    }
    record_trade_index(tx, req, ctx.now)?;
    tx.set_timer(
        ctx.now + ctx.settings.mostro.expiration_seconds,
        order.id,
        Timer::WaitingTimeout,
    )?;
    let rid = req.kind().request_id;
    if taker_side == Side::Buyer && order.buyer_invoice.is_none() {
        order
            .move_to(Status::WaitingBuyerInvoice)
            .map_err(|_| CantDoReason::NotAllowedByStatus)?;
        save_and_publish(tx, ctx, &mut order)?;
        ask_buyer_for_invoice(tx, &order, rid)?;
    } else {
        begin_escrow(tx, ctx, &mut order, rid, taker_side)?;
    }
    track_active(active, &order);
    Ok(())
}

/// A taker may not start a second take while one of its takes still waits on it (reference:
/// `pending_order_exists`).
fn check_no_waiting_take(tx: &Tx, req: &Request, side: Side) -> Result<(), Fail> {
    let identity = req.identity();
    for id in tx.orders_of(&identity)? {
        let Some(o) = tx.order(id)? else { continue };
        let waiting = match side {
            Side::Buyer => o.status == Status::WaitingBuyerInvoice,
            Side::Seller => o.status == Status::WaitingPayment,
        };
        if waiting && o.party(side).map(|p| p.identity) == Some(identity) {
            return Err(CantDoReason::PendingOrderExists.into());
        }
    }
    Ok(())
}

/// Sats for a market-price order at take time: fiat / price, less the premium, truncated
/// (reference §4.0), within the node's limits.
fn market_sats(ctx: &Ctx, order: &Order) -> Result<i64, Fail> {
    let price = ctx.prices.quote(&order.fiat_code, ctx.now)?;
    let sats = order.fiat_amount as f64 / price * 1e8;
    let sats = (sats - order.premium as f64 / 100.0 * sats) as i64;
    let s = &ctx.settings.mostro;
    if !(s.min_payment_amount..=s.max_order_amount).contains(&sats) {
        return Err(CantDoReason::OutOfRangeSatsAmount.into());
    }
    Ok(sats)
}

/// The hold-invoice step: a fresh preimage is recorded with the order (`waiting-payment`);
/// the escrow worker issues the invoice after the commit and the seller gets it then.
pub fn begin_escrow(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    request_id: Option<u64>,
    requested_by: Side,
) -> Result<(), Fail> {
    order
        .move_to(Status::WaitingPayment)
        .map_err(|_| CantDoReason::NotAllowedByStatus)?;
    order.trade.escrow = Some(Escrow {
        preimage: Preimage::random(),
        amount: order.seller_total(),
        state: EscrowState::Issuing,
        request_id,
        requested_by,
    });
    save_and_publish(tx, ctx, order)?;
    Ok(())
}

/// `add-invoice`: the buyer's payout invoice, while waiting for it or after a failed payout.
pub fn add_invoice(tx: &mut Tx, ctx: &mut Ctx, req: &Request) -> Result<(), Fail> {
    let mut order = super::requested_order(tx, req)?;
    if order.side_of(&req.sender()) != Some(Side::Buyer) {
        return Err(CantDoReason::InvalidPeer.into());
    }
    let Some(Payload::PaymentRequest(_, invoice, _)) = &req.kind().payload else {
        return Err(CantDoReason::InvalidPayload.into());
    };
    check_payout_destination(
        invoice,
        order.buyer_total(),
        ctx.now,
        &ctx.settings.lightning,
    )
    .map_err(|_| CantDoReason::InvalidInvoice)?;
    let rid = req.kind().request_id;
    match order.status {
        Status::SettledHoldInvoice => {
            // Only between attempts: never while a payment may be in flight.
            let payout = order
                .trade
                .payout
                .as_mut()
                .ok_or(CantDoReason::NotAllowedByStatus)?;
            if !matches!(
                payout.state,
                PayoutState::Failed { .. } | PayoutState::NeedsInvoice { .. }
            ) {
                return Err(CantDoReason::NotAllowedByStatus.into());
            }
            payout.attempts = 0;
            payout.state = PayoutState::Due;
            order.buyer_invoice = Some(invoice.clone());
            tx.put_order(&order)?;
            tell(tx, &order, Side::Buyer, rid, Action::InvoiceUpdated, None)?;
            Ok(())
        }
        Status::WaitingBuyerInvoice => {
            order.buyer_invoice = Some(invoice.clone());
            let held = matches!(
                order.trade.escrow.as_ref().map(|e| &e.state),
                Some(EscrowState::Held { .. })
            );
            if held {
                order
                    .move_to(Status::Active)
                    .map_err(|_| CantDoReason::NotAllowedByStatus)?;
                save_and_publish(tx, ctx, &mut order)?;
                escrow_held_notices(tx, &order, rid)?;
            } else {
                begin_escrow(tx, ctx, &mut order, rid, Side::Buyer)?;
            }
            Ok(())
        }
        _ => Err(CantDoReason::NotAllowedByStatus.into()),
    }
}

/// The trade is active: the seller learns the buyer took it (with the buyer's trade key), the
/// buyer that the sats are held (with the seller's). `buyer_rid` echoes the buyer's request.
pub fn escrow_held_notices(
    tx: &mut Tx,
    order: &Order,
    buyer_rid: Option<u64>,
) -> Result<(), crate::store::StoreError> {
    let seller = seller_view(order, Status::Active, true);
    tell(
        tx,
        order,
        Side::Seller,
        None,
        Action::BuyerTookOrder,
        Some(Payload::Order(seller)),
    )?;
    let buyer = buyer_view(order, Status::Active, true);
    tell(
        tx,
        order,
        Side::Buyer,
        buyer_rid,
        Action::HoldInvoicePaymentAccepted,
        Some(Payload::Order(buyer)),
    )
}
