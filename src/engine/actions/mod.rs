//! One file per action group. Each handler checks first and writes after, so a refusal leaves
//! the store as it was.

mod cancel;
mod new_order;
mod session;

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason};
use nostr::PublicKey;

use super::dispatch::{Fail, Request};
use super::order::Order;
use super::tx::Tx;
use super::Ctx;
use crate::protocol::events::order_event;
use crate::store::StoreError;

/// Routes a request to its handler.
pub fn run(
    tx: &mut Tx,
    ctx: &mut Ctx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
) -> Result<(), Fail> {
    match req.kind().action {
        Action::NewOrder => new_order::new_order(tx, ctx, req, active),
        Action::Cancel => cancel::cancel(tx, ctx, req, active),
        Action::Orders => session::orders(tx, ctx, req),
        Action::LastTradeIndex => session::last_trade_index(tx, req),
        Action::RestoreSession => session::restore_session(tx, req),
        Action::TradePubkey => session::trade_pubkey(tx, req, active),
        // Trade steps after the order book need the Lightning node (issues 3 and 4): answer
        // clearly instead of leaving the client to time out.
        Action::TakeSell
        | Action::TakeBuy
        | Action::AddInvoice
        | Action::FiatSent
        | Action::Release
        | Action::Dispute
        | Action::AdminCancel
        | Action::AdminSettle
        | Action::AdminTakeDispute => {
            if let Some(id) = req.kind().id {
                if tx.order(id)?.is_none() && req.kind().action != Action::AdminTakeDispute {
                    return Err(CantDoReason::NotFound.into());
                }
            }
            Err(CantDoReason::InvalidAction.into())
        }
        Action::RateUser | Action::AdminAddSolver => Err(CantDoReason::InvalidAction.into()),
        Action::PayInvoice => Err(CantDoReason::InvalidAction.into()),
        // Node-to-client actions and peer chat are not requests.
        _ => Err(Fail::Ignore("not a client request")),
    }
}

/// Stores `order` and queues its 38383 revision when its status is published.
pub fn save_and_publish(tx: &mut Tx, ctx: &Ctx, order: &mut Order) -> Result<(), StoreError> {
    if order.published_status().is_some() {
        let rating = match order.maker() {
            Some(p) if p.identity != p.trade_pubkey => tx
                .user(&p.identity)?
                .map(|u| (u.total_rating, u.total_reviews, u.created_at))
                .unwrap_or((0.0, 0, 0)),
            _ => (0.0, 0, 0),
        };
        let at = order.next_event_time(ctx.now);
        if let Some(ev) = order_event(order, rating, ctx.facts, ctx.settings, at) {
            tx.send(ev)?;
        }
    }
    tx.put_order(order)
}

/// Keeps the cache of trade keys with an open order in step with `order`.
pub fn track_active(active: &mut HashSet<PublicKey>, order: &Order) {
    for p in [&order.buyer, &order.seller].into_iter().flatten() {
        if order.is_terminal() {
            active.remove(&p.trade_pubkey);
        } else {
            active.insert(p.trade_pubkey);
        }
    }
}
