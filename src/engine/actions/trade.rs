//! Fiat and release (reference §4.6–4.7): `fiat-sent`, `release`, and the child order a range
//! order leaves behind.

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason, DisputeStatus, Payload, Peer, Status};
use nostr::PublicKey;
use uuid::Uuid;

use super::{publish_dispute, save_and_publish, track_active};
use crate::engine::dispatch::{Fail, Request};
use crate::engine::notify::{maker_view, tell};
use crate::engine::order::{EscrowState, NextTrade, Order, Party, Side};
use crate::engine::tx::{Timer, Tx};
use crate::engine::Ctx;
use crate::store::StoreError;

/// The buyer says the fiat is sent.
pub fn fiat_sent(tx: &mut Tx, ctx: &mut Ctx, req: &Request) -> Result<(), Fail> {
    let mut order = super::requested_order(tx, req)?;
    if order.status != Status::Active {
        return Err(CantDoReason::InvalidOrderStatus.into());
    }
    if order.side_of(&req.sender()) != Some(Side::Buyer) {
        return Err(CantDoReason::InvalidPubkey.into());
    }
    let next_trade = next_trade_of(req)?;
    order
        .move_to(Status::FiatSent)
        .map_err(|_| CantDoReason::NotAllowedByStatus)?;
    if order.is_range() && next_trade.is_some() {
        order.trade.next_trade = next_trade;
    }
    save_and_publish(tx, ctx, &mut order)?;
    let key = |side| {
        order
            .party(side)
            .map(|p: &Party| p.trade_pubkey.to_hex())
            .unwrap_or_default()
    };
    let (buyer_key, seller_key) = (key(Side::Buyer), key(Side::Seller));
    tell(
        tx,
        &order,
        Side::Seller,
        None,
        Action::FiatSentOk,
        Some(Payload::Peer(Peer::new(buyer_key, None))),
    )?;
    tell(
        tx,
        &order,
        Side::Buyer,
        req.kind().request_id,
        Action::FiatSentOk,
        Some(Payload::Peer(Peer::new(seller_key, None))),
    )?;
    Ok(())
}

/// The `next_trade` payload, if any, checked.
fn next_trade_of(req: &Request) -> Result<Option<NextTrade>, Fail> {
    match &req.kind().payload {
        Some(Payload::NextTrade(key, index)) => {
            let pubkey = PublicKey::parse(key).map_err(|_| CantDoReason::InvalidPubkey)?;
            Ok(Some(NextTrade {
                pubkey,
                index: *index,
            }))
        }
        _ => Ok(None),
    }
}

/// The seller releases: the escrow is settled (after the commit, by the escrow worker) and
/// the buyer's payout follows once the node confirms the settlement.
pub fn release(
    tx: &mut Tx,
    ctx: &mut Ctx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
) -> Result<(), Fail> {
    let mut order = super::requested_order(tx, req)?;
    if order.side_of(&req.sender()) != Some(Side::Seller) {
        return Err(CantDoReason::InvalidPeer.into());
    }
    if !matches!(order.status, Status::FiatSent | Status::Dispute) {
        return Err(CantDoReason::NotAllowedByStatus.into());
    }
    let next_trade = next_trade_of(req)?;
    settle_escrow(tx, ctx, &mut order, DisputeStatus::Released)?;
    tell(tx, &order, Side::Buyer, None, Action::Released, None)?;
    if order.is_range() {
        let next = match order.maker_side() {
            Side::Seller => next_trade,
            Side::Buyer => order.trade.next_trade.clone(),
        };
        range_child(tx, ctx, &order, next, active)?;
    }
    tell(
        tx,
        &order,
        Side::Seller,
        req.kind().request_id,
        Action::HoldInvoicePaymentSettled,
        None,
    )?;
    tell(tx, &order, Side::Seller, None, Action::Rate, None)?;
    Ok(())
}

/// Records the decision to settle: `settled-hold-invoice`, escrow `settling`, and an open
/// dispute closed as `dispute_outcome`. Refused unless the seller's payment is held.
pub fn settle_escrow(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    dispute_outcome: DisputeStatus,
) -> Result<(), Fail> {
    let escrow = order
        .trade
        .escrow
        .as_mut()
        .ok_or(CantDoReason::NotAllowedByStatus)?;
    if !matches!(escrow.state, EscrowState::Held { .. }) {
        return Err(CantDoReason::NotAllowedByStatus.into());
    }
    escrow.state = EscrowState::Settling;
    order
        .move_to(Status::SettledHoldInvoice)
        .map_err(|_| CantDoReason::NotAllowedByStatus)?;
    close_dispute(tx, ctx, order, dispute_outcome)?;
    save_and_publish(tx, ctx, order)?;
    Ok(())
}

/// Closes the order's open dispute, if it has one, with `status` (38386 republished).
pub fn close_dispute(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &Order,
    status: DisputeStatus,
) -> Result<(), StoreError> {
    let Some(id) = order.trade.dispute_id else {
        return Ok(());
    };
    let Some(mut d) = tx.dispute(id)? else {
        return Ok(());
    };
    if d.is_open() {
        d.status = status;
        publish_dispute(tx, ctx, &mut d)?;
    }
    Ok(())
}

/// What is left of a range order after a take becomes a new pending order for the maker's
/// next trade key (reference §4.7). Without a next key there is no child (logged).
fn range_child(
    tx: &mut Tx,
    ctx: &Ctx,
    parent: &Order,
    next: Option<NextTrade>,
    active: &mut HashSet<PublicKey>,
) -> Result<(), StoreError> {
    let (Some(min), Some(max)) = (parent.min_amount, parent.max_amount) else {
        return Ok(());
    };
    let new_max = max - parent.fiat_amount;
    if new_max < min {
        return Ok(());
    }
    let Some(next) = next else {
        tracing::info!(order = %parent.id, "range order: no next trade key given, no child order");
        return Ok(());
    };
    let Some(maker) = parent.maker() else {
        return Ok(());
    };
    let full_privacy = maker.full_privacy();
    let new_maker = Party {
        trade_pubkey: next.pubkey,
        identity: if full_privacy {
            next.pubkey
        } else {
            maker.identity
        },
        trade_index: (!full_privacy).then_some(next.index as i64),
        transport: maker.transport,
    };
    let (min_amount, max_amount, fiat_amount) = if new_max > min {
        (Some(min), Some(new_max), 0)
    } else {
        (None, None, min)
    };
    let mut child = Order {
        id: Uuid::new_v4(),
        status: Status::Pending,
        amount: 0,
        fee: 0,
        fiat_amount,
        min_amount,
        max_amount,
        creator_pubkey: next.pubkey,
        buyer: None,
        seller: None,
        buyer_invoice: None,
        created_at: ctx.now,
        expires_at: ctx.now + ctx.settings.mostro.expiration_hours * 3600,
        taken_at: 0,
        range_parent_id: Some(parent.id),
        last_event_at: 0,
        trade: Default::default(),
        ..parent.clone()
    };
    match child.maker_side() {
        Side::Buyer => child.buyer = Some(new_maker.clone()),
        Side::Seller => child.seller = Some(new_maker.clone()),
    }
    if !full_privacy {
        let mut user = tx.user(&new_maker.identity)?.unwrap_or_default();
        user.last_trade_index = user.last_trade_index.max(next.index as i64);
        tx.put_user(&new_maker.identity, &user)?;
    }
    save_and_publish(tx, ctx, &mut child)?;
    tx.set_timer(child.expires_at, child.id, Timer::PendingExpiry)?;
    track_active(active, &child);
    let msg = mostro_core::prelude::Message::new_order(
        Some(child.id),
        None,
        new_maker.trade_index,
        Action::NewOrder,
        Some(Payload::Order(maker_view(&child))),
    );
    tx.send(crate::protocol::outbound::Outgoing::direct(
        new_maker.trade_pubkey,
        new_maker.transport,
        msg,
    ))?;
    Ok(())
}
