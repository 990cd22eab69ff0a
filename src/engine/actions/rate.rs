//! `rate-user` (reference §4.11): each side rates the other once after the trade.

use mostro_core::prelude::{Action, CantDoReason, Payload, Status};

use crate::engine::dispatch::{Fail, Request};
use crate::engine::notify::tell;
use crate::engine::order::Side;
use crate::engine::tx::Tx;
use crate::engine::user::User;
use crate::engine::Ctx;
use crate::protocol::events::rating_event;

/// Records a 1–5 rating of the counterparty, updates its reputation and publishes it (38384).
pub fn rate_user(tx: &mut Tx, ctx: &mut Ctx, req: &Request) -> Result<(), Fail> {
    let mut order = super::requested_order(tx, req)?;
    let side = order
        .side_of(&req.sender())
        .ok_or(CantDoReason::InvalidPubkey)?;
    let allowed = order.status == Status::Success
        || (order.status == Status::SettledHoldInvoice && side == Side::Seller);
    if !allowed {
        return Err(CantDoReason::InvalidOrderStatus.into());
    }
    let Some(Payload::RatingUser(rating)) = req.kind().payload else {
        return Err(CantDoReason::InvalidRating.into());
    };
    if !(1..=5).contains(&rating) {
        return Err(CantDoReason::InvalidRating.into());
    }
    if order.trade.rated.contains(&side) {
        return Err(Fail::Ignore("this side has rated already"));
    }
    order.trade.rated.push(side);
    tx.put_order(&order)?;
    let rated = order.party(side.other()).cloned();
    if let Some(rated) = rated.filter(|p| !p.full_privacy()) {
        let mut user = tx.user(&rated.identity)?.unwrap_or(User {
            created_at: ctx.now,
            ..Default::default()
        });
        user.add_rating(rating);
        tx.put_user(&rated.identity, &user)?;
        tx.send(rating_event(&rated.trade_pubkey, &user, ctx.now))?;
    }
    tell(
        tx,
        &order,
        side,
        req.kind().request_id,
        Action::RateReceived,
        Some(Payload::RatingUser(rating)),
    )?;
    Ok(())
}
