//! Persisted deadlines (reference §4.13). Time-based ones live in the `timers` table; the escrow
//! wind-up is block-based and lives in `escrow_deadlines`. A restart neither resets nor skips
//! them: a deadline that passed while the box was down fires on the first tick.

use std::collections::HashSet;

use mostro_core::prelude::Status;
use nostr::PublicKey;

use super::actions::cancel::cancel_trade;
use super::actions::{open_dispute, save_and_publish, track_active};
use super::escrow::waiting_timeout;
use super::order::{PayoutState, Side};
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
