//! One file per action group. Each handler checks first and writes after, so a refusal leaves
//! the store as it was.

pub mod cancel;
mod dispute;
pub mod new_order;
mod rate;
mod session;
pub mod take;
pub mod trade;

pub use dispute::{open_dispute, parse_solver, put_solver};

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason, Kind};
use nostr::PublicKey;

use super::dispatch::{Fail, Request};
use super::dispute::DisputeRecord;
use super::order::Order;
use super::tx::Tx;
use super::Ctx;
use crate::protocol::events::{dispute_event, order_event};
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
        Action::TakeSell => take::take(tx, ctx, req, active, Kind::Sell),
        Action::TakeBuy => take::take(tx, ctx, req, active, Kind::Buy),
        Action::AddInvoice => take::add_invoice(tx, ctx, req),
        Action::FiatSent => trade::fiat_sent(tx, ctx, req),
        Action::Release => trade::release(tx, ctx, req, active),
        Action::Dispute => dispute::dispute(tx, ctx, req),
        Action::RateUser => rate::rate_user(tx, ctx, req),
        Action::AdminAddSolver => dispute::add_solver(tx, ctx, req),
        Action::AdminTakeDispute => dispute::take_dispute(tx, ctx, req),
        Action::AdminSettle => dispute::admin_settle(tx, ctx, req),
        Action::AdminCancel => dispute::admin_cancel(tx, ctx, req, active),
        // Bonds and Cashu escrow are not offered by this node.
        Action::PayInvoice | Action::AddBondInvoice | Action::AddCashuEscrow => {
            Err(CantDoReason::InvalidAction.into())
        }
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

/// Stores a dispute and queues its 38386 revision.
pub fn publish_dispute(tx: &mut Tx, ctx: &Ctx, d: &mut DisputeRecord) -> Result<(), StoreError> {
    let at = d.next_event_time(ctx.now);
    tx.send(dispute_event(d, ctx.settings, at))?;
    tx.put_dispute(d)
}

/// The order a request names: `not_found` when it names none or one the store does not have.
pub fn requested_order(tx: &Tx, req: &Request) -> Result<Order, Fail> {
    let id = req.kind().id.ok_or(CantDoReason::NotFound)?;
    Ok(tx.order(id)?.ok_or(CantDoReason::NotFound)?)
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
