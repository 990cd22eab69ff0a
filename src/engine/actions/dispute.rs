//! Disputes and solvers (reference §4.9–4.10): `dispute` by a party, then `admin-add-solver`,
//! `admin-take-dispute`, `admin-settle` (the buyer is paid) and `admin-cancel` (the seller is
//! refunded). Admin actions are authorised by the sender's identity key: the node key always,
//! solvers as their category allows.

use std::collections::HashSet;

use mostro_core::prelude::{
    Action, CantDoReason, DisputeStatus, Message, Payload, Peer, SolverDisputeInfo, Status,
};
use nostr::{FromBech32, PublicKey};
use uuid::Uuid;

use super::trade::settle_escrow;
use super::{publish_dispute, save_and_publish, track_active};
use crate::engine::dispatch::{Fail, Request};
use crate::engine::dispute::DisputeRecord;
use crate::engine::notify::tell;
use crate::engine::order::{EscrowState, Order, Side};
use crate::engine::tx::Tx;
use crate::engine::user::User;
use crate::engine::Ctx;
use crate::store::StoreError;

/// Solver category that may settle and cancel (1 = read-only).
const READ_WRITE: u8 = 2;

/// A party opens a dispute on an active or fiat-sent trade.
pub fn dispute(tx: &mut Tx, ctx: &mut Ctx, req: &Request) -> Result<(), Fail> {
    let mut order = super::requested_order(tx, req)?;
    if order.trade.dispute_id.is_some() {
        return Err(Fail::Ignore("the order already has a dispute"));
    }
    if !matches!(order.status, Status::Active | Status::FiatSent) {
        return Err(CantDoReason::NotAllowedByStatus.into());
    }
    let side = order
        .side_of(&req.sender())
        .ok_or(CantDoReason::InvalidPubkey)?;
    open_dispute(tx, ctx, &mut order, side, req.kind().request_id)?;
    Ok(())
}

/// Moves the order to `dispute`, records a new dispute (38386 `initiated`) and tells both
/// parties: the counterpart first, then the initiator (with `initiator_rid` echoed).
pub fn open_dispute(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    initiator: Side,
    initiator_rid: Option<u64>,
) -> Result<DisputeRecord, Fail> {
    let previous = order.status;
    order
        .move_to(Status::Dispute)
        .map_err(|_| CantDoReason::NotAllowedByStatus)?;
    let mut d = DisputeRecord {
        id: Uuid::new_v4(),
        order_id: order.id,
        status: DisputeStatus::Initiated,
        order_previous_status: previous,
        initiator: Some(initiator),
        solver: None,
        created_at: ctx.now,
        taken_at: 0,
        last_event_at: 0,
    };
    order.trade.dispute_id = Some(d.id);
    save_and_publish(tx, ctx, order)?;
    publish_dispute(tx, ctx, &mut d)?;
    let payload = || Some(Payload::Dispute(d.id, None));
    tell(
        tx,
        order,
        initiator.other(),
        None,
        Action::DisputeInitiatedByPeer,
        payload(),
    )?;
    tell(
        tx,
        order,
        initiator,
        initiator_rid,
        Action::DisputeInitiatedByYou,
        payload(),
    )?;
    Ok(d)
}

/// The node key adds a solver: `npub1…` (read-write), `npub1…:read` or `npub1…:write`.
pub fn add_solver(tx: &mut Tx, ctx: &Ctx, req: &Request) -> Result<(), Fail> {
    if req.identity() != ctx.facts.pubkey {
        return Err(Fail::Ignore(
            "admin-add-solver from a key other than the node's",
        ));
    }
    let Some(Payload::TextMessage(text)) = &req.kind().payload else {
        return Err(CantDoReason::InvalidTextMessage.into());
    };
    let (pubkey, category) = parse_solver(text).ok_or(CantDoReason::InvalidTextMessage)?;
    put_solver(tx, &pubkey, category, ctx.now)?;
    let k = req.kind();
    let ack = Message::new_dispute(k.id, k.request_id, None, Action::AdminAddSolver, None);
    tx.send(req.direct(ack))?;
    Ok(())
}

/// `npub1…[:read|:write|:read-write]` → (key, category).
pub fn parse_solver(text: &str) -> Option<(PublicKey, u8)> {
    let (key, category) = match text.trim().split_once(':') {
        None => (text.trim(), READ_WRITE),
        Some((k, "read")) => (k, 1),
        Some((k, "write" | "read-write")) => (k, READ_WRITE),
        Some(_) => return None,
    };
    let pubkey = PublicKey::from_bech32(key)
        .or_else(|_| PublicKey::from_hex(key))
        .ok()?;
    Some((pubkey, category))
}

/// Records `pubkey` as a solver of `category`.
pub fn put_solver(
    tx: &mut Tx,
    pubkey: &PublicKey,
    category: u8,
    now: i64,
) -> Result<(), StoreError> {
    let mut user = tx.user(pubkey)?.unwrap_or(User {
        created_at: now,
        ..Default::default()
    });
    user.is_solver = true;
    user.category = category;
    tx.put_user(pubkey, &user)
}

/// A solver (or the node key) takes a dispute and receives everything needed to judge it.
pub fn take_dispute(tx: &mut Tx, ctx: &Ctx, req: &Request) -> Result<(), Fail> {
    let id = req.kind().id.ok_or(CantDoReason::NotFound)?;
    let mut d = tx.dispute(id)?.ok_or(CantDoReason::NotFound)?;
    let me = req.identity();
    let is_node = me == ctx.facts.pubkey;
    let solver = tx.user(&me)?.filter(|u| u.is_solver);
    let current_category = match d.solver {
        Some(s) => tx.user(&s)?.map(|u| u.category).unwrap_or(0),
        None => 0,
    };
    let allowed = match d.status {
        DisputeStatus::Initiated => is_node || solver.is_some(),
        DisputeStatus::InProgress => {
            is_node
                || d.solver == Some(me)
                || (solver.as_ref().map(|u| u.category) == Some(READ_WRITE)
                    && current_category < READ_WRITE)
        }
        _ => false,
    };
    if !allowed {
        return Err(CantDoReason::InvalidPubkey.into());
    }
    let order = tx.order(d.order_id)?.ok_or(CantDoReason::NotFound)?;
    d.status = DisputeStatus::InProgress;
    d.solver = Some(me);
    d.taken_at = ctx.now;
    publish_dispute(tx, ctx, &mut d)?;
    let info = solver_info(tx, &order, &d, ctx.now)?;
    let k = req.kind();
    let msg = Message::new_dispute(
        Some(d.id),
        k.request_id,
        None,
        Action::AdminTookDispute,
        Some(Payload::Dispute(d.id, Some(info))),
    );
    tx.send(req.direct(msg))?;
    for side in [Side::Buyer, Side::Seller] {
        let peer = Peer::new(req.sender().to_hex(), None);
        tell(
            tx,
            &order,
            side,
            None,
            Action::AdminTookDispute,
            Some(Payload::Peer(peer)),
        )?;
    }
    Ok(())
}

/// The dispute view a solver gets (mostro-core's `SolverDisputeInfo`).
fn solver_info(
    tx: &Tx,
    order: &Order,
    d: &DisputeRecord,
    now: i64,
) -> Result<SolverDisputeInfo, StoreError> {
    let initiator = d.initiator.unwrap_or(Side::Buyer);
    let info = |side: Side| -> Result<Option<mostro_core::prelude::UserInfo>, StoreError> {
        match order.party(side) {
            Some(p) if !p.full_privacy() => Ok(tx.user(&p.identity)?.map(|u| u.info(now))),
            _ => Ok(None),
        }
    };
    let key = |side: Side| order.party(side).map(|p| p.trade_pubkey.to_hex());
    let escrow = order.trade.escrow.as_ref();
    let held_at = match escrow.map(|e| &e.state) {
        Some(EscrowState::Held { held_at, .. }) => *held_at,
        _ => 0,
    };
    let initiator_info = info(initiator)?;
    let counterpart_info = info(initiator.other())?;
    Ok(SolverDisputeInfo {
        id: order.id,
        kind: order.kind.to_string(),
        status: order.status.to_string(),
        hash: escrow.map(|e| e.hash().to_string()),
        preimage: None,
        order_previous_status: d.order_previous_status.to_string(),
        initiator_pubkey: key(initiator).unwrap_or_default(),
        buyer_pubkey: key(Side::Buyer),
        seller_pubkey: key(Side::Seller),
        initiator_full_privacy: initiator_info.is_none(),
        counterpart_full_privacy: counterpart_info.is_none(),
        initiator_info,
        counterpart_info,
        premium: order.premium,
        payment_method: order.payment_method.clone(),
        amount: order.amount,
        fiat_amount: order.fiat_amount,
        fee: order.fee,
        routing_fee: 0,
        buyer_invoice: order.buyer_invoice.clone(),
        invoice_held_at: held_at,
        taken_at: order.taken_at,
        created_at: order.created_at,
    })
}

/// Checks that the sender may resolve the order's dispute; returns the order and dispute.
fn authorise_resolution(
    tx: &Tx,
    ctx: &Ctx,
    req: &Request,
) -> Result<(Order, Option<DisputeRecord>), Fail> {
    let order = super::requested_order(tx, req)?;
    let me = req.identity();
    let d = match order.trade.dispute_id {
        Some(did) => tx.dispute(did)?,
        None => None,
    };
    if me == ctx.facts.pubkey {
        return Ok((order, d));
    }
    let Some(dispute) = &d else {
        return Err(CantDoReason::IsNotYourDispute.into());
    };
    if dispute.solver != Some(me) {
        return Err(if dispute.solver == Some(ctx.facts.pubkey) {
            CantDoReason::DisputeTakenByAdmin
        } else {
            CantDoReason::IsNotYourDispute
        }
        .into());
    }
    if tx.user(&me)?.map(|u| u.category) != Some(READ_WRITE) {
        return Err(CantDoReason::NotAuthorized.into());
    }
    Ok((order, d))
}

/// The solver decides for the buyer: the escrow is settled and the buyer paid.
pub fn admin_settle(tx: &mut Tx, ctx: &mut Ctx, req: &Request) -> Result<(), Fail> {
    let (mut order, _) = authorise_resolution(tx, ctx, req)?;
    if order.status == Status::CooperativelyCanceled {
        tx.send(req.reply(Some(order.id), Action::CooperativeCancelAccepted, None))?;
        return Ok(());
    }
    if order.status != Status::Dispute {
        return Err(CantDoReason::NotAllowedByStatus.into());
    }
    settle_escrow(tx, ctx, &mut order, DisputeStatus::Settled)?;
    tx.send(req.reply(Some(order.id), Action::AdminSettled, None))?;
    for side in [Side::Seller, Side::Buyer] {
        tell(tx, &order, side, None, Action::AdminSettled, None)?;
    }
    Ok(())
}

/// The solver decides for the seller: the escrow is cancelled (the seller gets the sats back).
pub fn admin_cancel(
    tx: &mut Tx,
    ctx: &mut Ctx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
) -> Result<(), Fail> {
    let (mut order, _) = authorise_resolution(tx, ctx, req)?;
    if order.status != Status::Dispute {
        return Err(CantDoReason::NotAllowedByStatus.into());
    }
    tx.refund(&mut order)?;
    order
        .move_to(Status::CanceledByAdmin)
        .map_err(|_| CantDoReason::NotAllowedByStatus)?;
    super::trade::close_dispute(tx, ctx, &order, DisputeStatus::SellerRefunded)?;
    save_and_publish(tx, ctx, &mut order)?;
    track_active(active, &order);
    tx.send(req.reply(Some(order.id), Action::AdminCanceled, None))?;
    for side in [Side::Seller, Side::Buyer] {
        tell(tx, &order, side, None, Action::AdminCanceled, None)?;
    }
    Ok(())
}
