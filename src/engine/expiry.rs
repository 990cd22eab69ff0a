//! Persisted deadlines. A pending order past its `expires_at` becomes `expired` and is
//! republished as `canceled`, without a message to the maker (reference §4.13).

use std::collections::HashSet;

use mostro_core::prelude::Status;
use nostr::PublicKey;

use super::actions::{save_and_publish, track_active};
use super::tx::{Timer, Tx};
use super::Ctx;
use crate::store::StoreError;

/// Fires every deadline due at `ctx.now`.
pub fn fire_due(tx: &mut Tx, ctx: &Ctx, active: &mut HashSet<PublicKey>) -> Result<(), StoreError> {
    for (id, timer) in tx.take_due_timers(ctx.now)? {
        match timer {
            Timer::PendingExpiry => {
                let Some(mut order) = tx.order(id)? else {
                    continue;
                };
                if order.status == Status::Pending
                    && order.expires_at <= ctx.now
                    && order.move_to(Status::Expired).is_ok()
                {
                    save_and_publish(tx, ctx, &mut order)?;
                    track_active(active, &order);
                    tracing::info!(order = %order.id, "order expired");
                }
            }
        }
    }
    Ok(())
}
