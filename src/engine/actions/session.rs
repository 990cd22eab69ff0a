//! Session actions (reference §4.12): `orders`, `last-trade-index`, `restore-session` and
//! `trade-pubkey`.

use std::collections::HashSet;

use mostro_core::prelude::{
    Action, CantDoReason, Payload, RestoreSessionInfo, RestoredOrdersInfo, Status,
};
use nostr::PublicKey;

use super::track_active;
use crate::engine::dispatch::{Fail, Request};
use crate::engine::tx::Tx;
use crate::engine::Ctx;

/// The sender's own orders among the ids asked for, in request order.
pub fn orders(tx: &mut Tx, ctx: &Ctx, req: &Request) -> Result<(), Fail> {
    let Some(Payload::Ids(ids)) = &req.kind().payload else {
        return Err(CantDoReason::InvalidParameters.into());
    };
    if ids.is_empty() {
        return Err(CantDoReason::InvalidParameters.into());
    }
    if ids.len() > ctx.settings.mostro.max_orders_per_response {
        return Err(CantDoReason::TooManyRequests.into());
    }
    let identity = req.identity();
    let mut found = Vec::new();
    for id in ids {
        if let Some(order) = tx.order(*id)? {
            if order.trade_index_of(&identity).is_some() {
                let mut small = order.small();
                small.buyer_invoice = None;
                found.push(small);
            }
        }
    }
    if found.is_empty() {
        return Err(CantDoReason::NotFound.into());
    }
    tx.send(req.reply(None, Action::Orders, Some(Payload::Orders(found))))?;
    Ok(())
}

/// The highest trade index the box has seen from the sender's identity.
pub fn last_trade_index(tx: &mut Tx, req: &Request) -> Result<(), Fail> {
    let user = tx.user(&req.identity())?.ok_or(CantDoReason::NotFound)?;
    if user.last_trade_index == 0 {
        return Err(CantDoReason::InvalidTradeIndex.into());
    }
    tx.send(req.reply_restore(Some(user.last_trade_index), Action::LastTradeIndex, None))?;
    Ok(())
}

/// Every unfinished order of the sender's identity with the trade index it used, so a client
/// restored from its mnemonic finds its trades again. Unlike the reference (whose filter misses
/// admin- and cooperatively-canceled orders), finished orders of every kind are left out.
pub fn restore_session(tx: &mut Tx, req: &Request) -> Result<(), Fail> {
    let identity = req.identity();
    let mut info = RestoreSessionInfo::default();
    for id in tx.orders_of(&identity)? {
        let Some(order) = tx.order(id)? else { continue };
        if order.is_terminal() {
            continue;
        }
        if let Some(trade_index) = order.trade_index_of(&identity) {
            info.restore_orders.push(RestoredOrdersInfo {
                order_id: order.id,
                trade_index,
                status: order.status.to_string(),
            });
        }
    }
    tx.send(req.reply_restore(
        None,
        Action::RestoreSession,
        Some(Payload::RestoreData(info)),
    ))?;
    Ok(())
}

/// The maker moves a pending order to a new trade key (same identity).
pub fn trade_pubkey(
    tx: &mut Tx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
) -> Result<(), Fail> {
    let mut order = super::requested_order(tx, req)?;
    if !matches!(order.status, Status::Pending | Status::WaitingTakerBond) {
        return Err(CantDoReason::NotAllowedByStatus.into());
    }
    let sender = req.sender();
    let identity = req.identity();
    let maker = order.maker_mut().ok_or(CantDoReason::IsNotYourOrder)?;
    if maker.identity != identity {
        return Err(CantDoReason::IsNotYourOrder.into());
    }
    active.remove(&maker.trade_pubkey);
    maker.trade_pubkey = sender;
    order.creator_pubkey = sender;
    tx.put_order(&order)?;
    track_active(active, &order);
    // The published tags carry no trade keys, so the order needs no new revision.
    tx.send(req.reply(Some(order.id), Action::TradePubkey, None))?;
    Ok(())
}
