//! `cancel` (reference §4.8). Before Lightning, only pending orders exist to cancel.

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason, Status};
use nostr::PublicKey;

use super::{save_and_publish, track_active};
use crate::engine::dispatch::{Fail, Request};
use crate::engine::tx::Tx;
use crate::engine::Ctx;

/// The maker cancels a pending order; anyone else is told it is not theirs.
pub fn cancel(
    tx: &mut Tx,
    ctx: &mut Ctx,
    req: &Request,
    active: &mut HashSet<PublicKey>,
) -> Result<(), Fail> {
    let id = req.kind().id.ok_or(CantDoReason::NotFound)?;
    let mut order = tx.order(id)?.ok_or(CantDoReason::NotFound)?;
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
        _ => Err(CantDoReason::NotAllowedByStatus.into()),
    }
}
