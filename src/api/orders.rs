//! The operator's view of orders, and the decisions only the operator can take on them.

use serde_json::{json, Value};

use super::handlers::{query_param, str_field};
use super::{ApiContext, ApiError};
use crate::engine::order::Order;
use crate::engine::PayoutDecision;
use crate::store::ORDERS;

/// The orders not yet finished, from the open-order index.
pub(super) fn open_orders(ctx: &ApiContext) -> Result<Vec<Order>, ApiError> {
    ctx.store.open_orders().map_err(ApiError::internal)
}

/// Every stored order, finished or not.
fn all(ctx: &ApiContext) -> Result<Vec<Order>, ApiError> {
    ctx.store.all(ORDERS, "orders").map_err(ApiError::internal)
}

pub(super) fn list(ctx: &ApiContext) -> Result<Value, ApiError> {
    let orders: Vec<Value> = all(ctx)?
        .iter()
        .map(|o| {
            json!({
                "id": o.id.to_string(),
                "kind": o.kind.to_string(),
                "status": o.status.to_string(),
                "amount_sats": o.amount,
                "fiat": format!("{} {}", o.fiat_amount, o.fiat_code),
                "created_at": o.created_at,
            })
        })
        .collect();
    Ok(json!({ "orders": orders }))
}

pub(super) fn show(ctx: &ApiContext, query: &str) -> Result<Value, ApiError> {
    let id = query_param(query, "id").ok_or_else(|| ApiError::bad("give the order id"))?;
    let uuid = uuid::Uuid::parse_str(id)
        .map_err(|_| ApiError::bad(format!("{id} is not an order id (a UUID)")))?;
    let o = ctx
        .engine
        .order(uuid)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no order {uuid}")))?;
    let mut v = order_view(&o)?;
    v["on_chain"] = on_chain(ctx, &o);
    Ok(v)
}

/// The order's payments that wait on chain in a force-closed channel, each with the block that
/// decides it: the operator's answer to "why is this trade not finished?" (such a payment
/// takes blocks, not seconds, and the box logs nothing while it waits).
fn on_chain(ctx: &ApiContext, o: &Order) -> Value {
    use crate::engine::order::PayoutState;
    use ldk_node::LightningBalance as B;
    let mut ours = Vec::new();
    if let Some(e) = &o.trade.escrow {
        ours.push(("escrow", e.hash()));
    }
    if let Some(PayoutState::Paying { hash, .. }) = o.trade.payout.as_ref().map(|p| &p.state) {
        ours.push(("payout", *hash));
    }
    let balances = ctx.lightning.node().list_balances().lightning_balances;
    let waiting: Vec<Value> = balances
        .iter()
        .filter_map(|b| {
            let (hash, sats, block, what) = match b {
                B::ContentiousClaimable {
                    payment_hash,
                    amount_satoshis,
                    timeout_height,
                    ..
                } => (
                    payment_hash,
                    amount_satoshis,
                    timeout_height,
                    "the box is claiming it on chain; from this block the payer could take it back",
                ),
                B::MaybeTimeoutClaimableHTLC {
                    payment_hash,
                    amount_satoshis,
                    claimable_height,
                    ..
                } => (
                    payment_hash,
                    amount_satoshis,
                    claimable_height,
                    "the payee can claim it on chain; from this block it comes back to the box",
                ),
                B::MaybePreimageClaimableHTLC {
                    payment_hash,
                    amount_satoshis,
                    expiry_height,
                    ..
                } => (
                    payment_hash,
                    amount_satoshis,
                    expiry_height,
                    "held on chain without a claim; from this block it goes back to the payer",
                ),
                _ => return None,
            };
            let (payment, _) = ours.iter().find(|(_, h)| h.0 == hash.0)?;
            Some(json!({
                "payment": payment,
                "amount_sats": sats,
                "until_block": block,
                "what": what,
            }))
        })
        .collect();
    Value::Array(waiting)
}

/// An order as the operator sees it: everything but the escrow's preimage, which must stay
/// secret until the release (a routing node that learnt it could take the seller's payment),
/// shown as its payment hash instead.
pub(super) fn order_view(o: &Order) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(o).map_err(ApiError::internal)?;
    if let Some(escrow) = &o.trade.escrow {
        v["escrow"]["preimage"] = Value::Null;
        v["escrow"]["payment_hash"] = json!(escrow.hash().to_string());
    }
    Ok(v)
}

/// `POST /v1/order/payout {"id", "decision": "resume" | "paid"}`: the operator's decision on a
/// payout on hold (after a restore). Nothing changes unless the payout is on hold.
pub(super) async fn payout(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let id = str_field(input, "id")?;
    let uuid = uuid::Uuid::parse_str(id.trim())
        .map_err(|_| ApiError::bad(format!("{id} is not an order id (a UUID)")))?;
    let decision = match str_field(input, "decision")? {
        "resume" => PayoutDecision::Resume,
        "paid" => PayoutDecision::Paid,
        other => {
            return Err(ApiError::bad(format!(
            "{other}: the decision is `resume` (pay the buyer now) or `paid` (the buyer was paid)"
        )))
        }
    };
    use crate::engine::payout::DecisionError;
    let order = ctx
        .engine
        .decide_payout(uuid, decision)
        .await
        .map_err(|e| match e {
            DecisionError::NoOrder(_) => ApiError::not_found(e.to_string()),
            DecisionError::NotOnHold { .. } => ApiError::bad(e.to_string()),
            DecisionError::Store(e) => ApiError::internal(e),
        })?;
    order_view(&order)
}
