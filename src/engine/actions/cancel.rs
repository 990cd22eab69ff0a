//! `cancel` (reference §4.8): the maker withdraws a pending order; before the escrow is held
//! either side can walk away (the taker's cancel puts the order back in the book); once it is
//! held both sides must agree (cooperative cancel), and the seller gets the sats back.

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason, DisputeStatus, Payload, Status};
use nostr::PublicKey;

use super::trade::close_dispute;
use super::{save_and_publish, track_active};
use crate::engine::dispatch::{Fail, Request};
use crate::engine::notify::{maker_view, tell};
use crate::engine::order::{Order, Side};
use crate::engine::tx::{Timer, Tx};
use crate::engine::Ctx;
use crate::store::StoreError;

/// Handles `cancel` from either party.
pub fn cancel(
    tx: &mut Tx,
    ctx: &mut Ctx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
) -> Result<(), Fail> {
    let mut order = super::requested_order(tx, req)?;
    let rid = req.kind().request_id;
    match order.status {
        Status::Canceled | Status::CooperativelyCanceled | Status::CanceledByAdmin => {
            Err(CantDoReason::OrderAlreadyCanceled.into())
        }
        Status::Pending => {
            if order.creator_pubkey != req.sender() {
                return Err(CantDoReason::IsNotYourOrder.into());
            }
            order
                .move_to(Status::Canceled)
                .map_err(|_| CantDoReason::NotAllowedByStatus)?;
            tx.clear_timer(order.expires_at, order.id)?;
            save_and_publish(tx, ctx, &mut order)?;
            track_active(active, &order);
            tx.send(req.reply(Some(order.id), Action::Canceled, None))?;
            Ok(())
        }
        Status::WaitingPayment | Status::WaitingBuyerInvoice => {
            let side = order
                .side_of(&req.sender())
                .ok_or(CantDoReason::InvalidPubkey)?;
            if side == order.maker_side() {
                cancel_trade(tx, ctx, &mut order, active, Some((side, rid)))?;
            } else {
                back_to_pending(tx, ctx, &mut order, active, rid)?;
            }
            Ok(())
        }
        Status::Active | Status::FiatSent | Status::Dispute => {
            let side = order
                .side_of(&req.sender())
                .ok_or(CantDoReason::InvalidPubkey)?;
            match order.trade.cancel_initiator {
                None => {
                    order.trade.cancel_initiator = Some(side);
                    tx.put_order(&order)?;
                    tell(
                        tx,
                        &order,
                        side,
                        rid,
                        Action::CooperativeCancelInitiatedByYou,
                        None,
                    )?;
                    tell(
                        tx,
                        &order,
                        side.other(),
                        None,
                        Action::CooperativeCancelInitiatedByPeer,
                        None,
                    )?;
                    Ok(())
                }
                Some(first) if first == side => Err(CantDoReason::InvalidPubkey.into()),
                Some(_) => {
                    tx.refund(&mut order)?;
                    order
                        .move_to(Status::CooperativelyCanceled)
                        .map_err(|_| CantDoReason::NotAllowedByStatus)?;
                    close_dispute(tx, ctx, &order, DisputeStatus::SellerRefunded)?;
                    save_and_publish(tx, ctx, &mut order)?;
                    track_active(active, &order);
                    tell(
                        tx,
                        &order,
                        side,
                        rid,
                        Action::CooperativeCancelAccepted,
                        None,
                    )?;
                    tell(
                        tx,
                        &order,
                        side.other(),
                        None,
                        Action::CooperativeCancelAccepted,
                        None,
                    )?;
                    Ok(())
                }
            }
        }
        _ => Err(CantDoReason::NotAllowedByStatus.into()),
    }
}

/// Ends a taken trade before the escrow matters: any hold invoice is cancelled, the order is
/// `canceled`, both sides are told. `requester` gets the request id echoed.
pub fn cancel_trade(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    active: &mut HashSet<PublicKey>,
    requester: Option<(Side, Option<u64>)>,
) -> Result<(), Fail> {
    tx.refund(order)?;
    order
        .move_to(Status::Canceled)
        .map_err(|_| CantDoReason::NotAllowedByStatus)?;
    save_and_publish(tx, ctx, order)?;
    track_active(active, order);
    for side in [Side::Seller, Side::Buyer] {
        let rid = requester.filter(|(s, _)| *s == side).and_then(|(_, r)| r);
        tell(tx, order, side, rid, Action::Canceled, None)?;
    }
    Ok(())
}

/// The taker walks away (or timed out): any hold invoice is cancelled and the order goes back
/// to the book as it was, market price and range included. The taker is told `canceled`, the
/// maker gets the order back (`new-order`).
pub fn back_to_pending(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    active: &mut HashSet<PublicKey>,
    taker_rid: Option<u64>,
) -> Result<(), StoreError> {
    let taker_side = order.maker_side().other();
    if order.move_to(Status::Pending).is_err() {
        return Ok(());
    }
    tx.refund(order)?;
    // The taker learns first, while its key is still on the order.
    tell(tx, order, taker_side, taker_rid, Action::Canceled, None)?;
    if let Some(taker) = order.party(taker_side) {
        active.remove(&taker.trade_pubkey);
    }
    match taker_side {
        Side::Buyer => {
            order.buyer = None;
            order.buyer_invoice = None;
        }
        Side::Seller => order.seller = None,
    }
    order.trade = Default::default();
    order.taken_at = 0;
    if order.price_from_api {
        order.amount = 0;
        order.fee = 0;
    }
    if order.is_range() {
        order.fiat_amount = 0;
    }
    save_and_publish(tx, ctx, order)?;
    tx.set_timer(order.expires_at, order.id, Timer::PendingExpiry)?;
    let maker = order.maker_side();
    tell(
        tx,
        order,
        maker,
        None,
        Action::NewOrder,
        Some(Payload::Order(maker_view(order))),
    )?;
    Ok(())
}
