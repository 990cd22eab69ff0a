//! `new-order` (reference §4.1): fixed sats, market price with premium, and fiat ranges.

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason, Kind, Payload, SmallOrder, Status};
use nostr::PublicKey;
use uuid::Uuid;

use super::{save_and_publish, track_active};
use crate::engine::dispatch::{record_trade_index, Fail, Request};
use crate::engine::order::{Order, Party};
use crate::engine::tx::{Timer, Tx};
use crate::engine::Ctx;

/// Validates the maker's order in the reference's order of checks, stores it as `pending`,
/// publishes it and acknowledges it to the maker's trade key.
pub fn new_order(
    tx: &mut Tx,
    ctx: &mut Ctx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
) -> Result<(), Fail> {
    let Some(Payload::Order(o)) = &req.kind().payload else {
        return Err(Fail::Ignore("new-order without an order"));
    };
    let s = &ctx.settings.mostro;
    if ctx.disk_low {
        // The operator's log says why; the trader can try again later.
        return Err(CantDoReason::TooManyRequests.into());
    }
    if let Some(invoice) = &o.buyer_invoice {
        // The buyer is paid the amount less the buyer's half of the fee (`Order::buyer_total`);
        // a market-price order's amount is not known yet (0: any amount).
        let payout = if o.amount > 0 {
            o.amount - fee_for(ctx, o.amount)
        } else {
            0
        };
        crate::lightning::check_payout_destination(
            invoice,
            payout,
            ctx.now,
            &ctx.settings.lightning,
        )
        .map_err(|_| CantDoReason::InvalidInvoice)?;
    }
    o.check_fiat_currency(&s.fiat_currencies_accepted)?;
    let kind = o.kind.ok_or(CantDoReason::InvalidOrderKind)?;
    if pending_orders_of(tx, &req.identity())? >= s.max_pending_orders_per_identity {
        return Err(CantDoReason::TooManyRequests.into());
    }
    let is_range = o.min_amount.is_some() || o.max_amount.is_some();
    if is_range && !(o.min_amount.is_some() && o.max_amount.is_some()) {
        return Err(CantDoReason::InvalidAmount.into());
    }
    let mut fiat_amounts = vec![o.fiat_amount];
    if !is_range {
        o.check_fiat_amount()?;
    }
    o.check_amount()?;
    o.check_range_order_limits(&mut fiat_amounts)?;
    o.check_zero_amount_with_premium()?;
    check_sats_range(ctx, o, &fiat_amounts)?;

    let now = ctx.now;
    let max_expiry = now + s.max_expiration_days * 86_400;
    let expires_at = match o.expires_at {
        Some(t) if t > now => t.min(max_expiry),
        _ => now + s.expiration_hours * 3600,
    };
    let maker = Party {
        trade_pubkey: req.sender(),
        identity: req.identity(),
        trade_index: req.kind().trade_index.filter(|_| !req.full_privacy()),
        transport: req.inbound.transport,
    };
    let mut order = Order {
        id: Uuid::new_v4(),
        kind,
        status: Status::Pending,
        amount: o.amount,
        fee: fee_for(ctx, o.amount),
        price_from_api: o.amount == 0,
        fiat_code: o.fiat_code.clone(),
        fiat_amount: if is_range { 0 } else { o.fiat_amount },
        min_amount: o.min_amount,
        max_amount: o.max_amount,
        payment_method: o.payment_method.clone(),
        premium: o.premium,
        creator_pubkey: req.sender(),
        buyer: (kind == Kind::Buy).then(|| maker.clone()),
        seller: (kind == Kind::Sell).then(|| maker.clone()),
        buyer_invoice: o.buyer_invoice.clone(),
        created_at: now,
        expires_at,
        taken_at: 0,
        range_parent_id: None,
        last_event_at: 0,
        trade: Default::default(),
    };
    record_trade_index(tx, req, now)?;
    save_and_publish(tx, ctx, &mut order)?;
    tx.set_timer(order.expires_at, order.id, Timer::PendingExpiry)?;
    track_active(active, &order);

    let mut ack = order.small();
    ack.buyer_trade_pubkey = None;
    ack.seller_trade_pubkey = None;
    let reply = req.reply(Some(order.id), Action::NewOrder, Some(Payload::Order(ack)));
    tx.send(reply)?;
    Ok(())
}

/// The fee each side pays, `round(fee × amount / 2)` (reference §4.0).
pub fn fee_for(ctx: &Ctx, amount: i64) -> i64 {
    (ctx.settings.mostro.fee * amount as f64 / 2.0).round() as i64
}

/// The pending orders `identity` made (so one trader cannot fill the book).
fn pending_orders_of(tx: &Tx, identity: &PublicKey) -> Result<usize, Fail> {
    let mut n = 0;
    for id in tx.orders_of(identity)? {
        let Some(o) = tx.order(id)? else { continue };
        let maker = o.party(o.maker_side()).map(|p| p.identity);
        if o.status == Status::Pending && maker.as_ref() == Some(identity) {
            n += 1;
        }
    }
    Ok(n)
}

/// Every amount of the order, in sats, must lie within `[min_payment_amount, max_order_amount]`.
/// Market-price amounts are quoted without the premium, as the reference does at creation.
fn check_sats_range(ctx: &Ctx, o: &SmallOrder, fiat_amounts: &[i64]) -> Result<(), Fail> {
    let s = &ctx.settings.mostro;
    let in_range = |sats: i64| (s.min_payment_amount..=s.max_order_amount).contains(&sats);
    if o.amount != 0 {
        if !in_range(o.amount) {
            return Err(CantDoReason::OutOfRangeSatsAmount.into());
        }
        return Ok(());
    }
    let price = ctx.prices.quote(&o.fiat_code, ctx.now)?;
    for fiat in fiat_amounts {
        let sats = (*fiat as f64 / price * 1e8) as i64;
        if !in_range(sats) {
            return Err(CantDoReason::OutOfRangeSatsAmount.into());
        }
    }
    Ok(())
}
