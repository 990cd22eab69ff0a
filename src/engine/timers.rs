//! Persisted deadlines (reference §4.13). Time-based ones live in the `timers` table; the escrow
//! wind-up is block-based and lives in `escrow_deadlines`. A restart neither resets nor skips
//! them: a deadline that passed while the box was down fires on the first tick.

use std::collections::HashSet;

use mostro_core::prelude::Status;
use nostr::PublicKey;

use super::actions::cancel::cancel_trade;
use super::actions::{open_dispute, save_and_publish, track_active};
use super::escrow::waiting_timeout;
use super::order::{EscrowState, PayoutState, Side};
use super::tx::{Timer, Tx};
use super::Ctx;
use crate::store::StoreError;

/// Fires every deadline due at `ctx.now` and every escrow wind-up due at block `height`.
pub fn fire_due(
    tx: &mut Tx,
    ctx: &Ctx,
    height: u32,
    active: &mut HashSet<PublicKey>,
) -> Result<(), StoreError> {
    for (id, timer) in tx.take_due_timers(ctx.now)? {
        let Some(mut order) = tx.order(id)? else {
            continue;
        };
        match timer {
            // A pending order past its lifetime: `expired`, published as canceled, no message.
            Timer::PendingExpiry => {
                if order.status == Status::Pending
                    && order.expires_at <= ctx.now
                    && order.move_to(Status::Expired).is_ok()
                {
                    save_and_publish(tx, ctx, &mut order)?;
                    track_active(active, &order);
                    tracing::info!(order = %order.id, "order expired");
                }
            }
            Timer::WaitingTimeout => {
                let waiting = matches!(
                    order.status,
                    Status::WaitingPayment | Status::WaitingBuyerInvoice
                );
                // A later `taken_at` (the seller paid and the buyer's clock restarted) means
                // this deadline was superseded by a newer one.
                let due = order.taken_at + ctx.settings.mostro.expiration_seconds <= ctx.now;
                if waiting && due {
                    tracing::info!(order = %order.id, status = %order.status, "taken order timed out");
                    waiting_timeout(tx, ctx, &mut order, active)?;
                }
            }
            // The buyer has not sent a new invoice yet: asked again, and again later.
            Timer::InvoiceReminder => {
                let waiting = order
                    .trade
                    .payout
                    .as_ref()
                    .is_some_and(|p| matches!(p.state, PayoutState::NeedsInvoice { .. }));
                if waiting && order.status == Status::SettledHoldInvoice {
                    super::payout::ask_for_invoice(tx, &order)?;
                    let next = ctx.now + ctx.settings.lightning.invoice_reminder_interval as i64;
                    tx.set_timer(next, order.id, Timer::InvoiceReminder)?;
                    tracing::info!(order = %order.id, "payout still needs the buyer's invoice: asked again");
                }
            }
            Timer::PayoutRetry => {
                if let Some(p) = &mut order.trade.payout {
                    if matches!(p.state, PayoutState::Failed { retry_at, .. } if retry_at <= ctx.now)
                    {
                        p.state = PayoutState::Due;
                        tx.put_order(&order)?;
                    }
                }
            }
        }
    }
    for id in tx.take_due_escrows(height)? {
        let Some(mut order) = tx.order(id)? else {
            continue;
        };
        // An entry was made for the escrow held then. A re-taken order holds a newer escrow,
        // whose own wind-up comes later: the entry moves there instead of firing early.
        let wind_up = match order.trade.escrow.as_ref().map(|e| &e.state) {
            Some(EscrowState::Held { deadline, .. }) => {
                deadline.saturating_sub(ctx.settings.lightning.escrow_deadline_margin_blocks)
            }
            _ => continue,
        };
        if height < wind_up {
            tx.set_escrow_deadline(wind_up, id)?;
            continue;
        }
        match order.status {
            // Nobody said the fiat was sent: the seller gets the sats back.
            Status::Active => {
                tracing::warn!(order = %order.id, "escrow deadline: cancelling the trade");
                if let Err(super::dispatch::Fail::Store(e)) =
                    cancel_trade(tx, ctx, &mut order, active, None)
                {
                    return Err(e);
                }
            }
            // The buyer says it paid: a solver decides before the deadline.
            Status::FiatSent => {
                tracing::warn!(order = %order.id, "escrow deadline: opening a dispute");
                if let Err(super::dispatch::Fail::Store(e)) =
                    open_dispute(tx, ctx, &mut order, Side::Buyer, None)
                {
                    return Err(e);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::order::Escrow;

    /// An order re-taken after its first escrow was given back keeps the first escrow's
    /// wind-up entry: it must not wind up the new trade before the new escrow's own point.
    #[test]
    fn a_stale_wind_up_waits_for_the_current_escrow() {
        let settings = crate::config::Settings::parse(
            "",
            std::path::Path::new("test.toml"),
            Vec::new(),
            &["lightning.network=regtest".to_string()],
        )
        .unwrap();
        let margin = settings.lightning.escrow_deadline_margin_blocks;
        let facts = crate::protocol::events::NodeFacts {
            pubkey: nostr::Keys::generate().public_key(),
            relays: vec![],
            network: "regtest".into(),
        };
        let prices = crate::price::PriceBook::new(60);
        let ctx = Ctx {
            settings: &settings,
            facts: &facts,
            now: crate::protocol::now(),
            prices: &prices,
            disk_low: false,
        };
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        crate::store::create_tables(&txn).unwrap();
        let maker = nostr::Keys::generate().public_key();
        let mut order = crate::fuzzing::pending_order(uuid::Uuid::new_v4(), maker);
        order.status = Status::Active;
        order.trade.escrow = Some(Escrow {
            preimage: crate::lightning::Preimage::random(),
            amount: order.seller_total(),
            state: EscrowState::Held {
                deadline: 1000,
                held_at: ctx.now,
            },
            request_id: None,
            requested_by: Side::Buyer,
        });
        let mut active = HashSet::new();
        let mut tx = Tx::open(&txn).unwrap();
        tx.put_order(&order).unwrap();
        // The first escrow's entry, long before the current escrow's point.
        tx.set_escrow_deadline(500, order.id).unwrap();
        fire_due(&mut tx, &ctx, 500, &mut active).unwrap();
        assert_eq!(tx.order(order.id).unwrap().unwrap().status, Status::Active);
        assert!(tx.take_due_escrows(1000 - margin - 1).unwrap().is_empty());
        // Moved to the current escrow's point, it fires there.
        fire_due(&mut tx, &ctx, 1000 - margin, &mut active).unwrap();
        assert_ne!(tx.order(order.id).unwrap().unwrap().status, Status::Active);
    }
}
