//! Disputes and solvers for the operator: the operator acts with the node key, the root admin,
//! through the engine's own admin handlers (`Engine::act_as_node`), so the CLI obeys exactly
//! the rules a solver's client does.

use mostro_core::prelude::{Action, Message, Payload};
use redb::ReadableTable;
use serde_json::{json, Value};
use uuid::Uuid;

use super::handlers::{query_param, str_field};
use super::{ApiContext, ApiError};
use crate::engine::dispute::DisputeRecord;
use crate::engine::order::Order;
use crate::engine::user::User;
use crate::store::{decode, DISPUTES, USERS};

fn disputes(ctx: &ApiContext) -> Result<Vec<DisputeRecord>, ApiError> {
    ctx.store
        .all(DISPUTES, "disputes")
        .map_err(ApiError::internal)
}

fn order(ctx: &ApiContext, id: Uuid) -> Result<Option<Order>, ApiError> {
    ctx.engine.order(id).map_err(ApiError::internal)
}

/// A dispute given by its id or its order's id.
fn find(ctx: &ApiContext, id: &str) -> Result<DisputeRecord, ApiError> {
    let uuid = Uuid::parse_str(id.trim())
        .map_err(|_| ApiError::bad(format!("{id} is not a dispute or order id (a UUID)")))?;
    disputes(ctx)?
        .into_iter()
        .find(|d| d.id == uuid || d.order_id == uuid)
        .ok_or_else(|| {
            ApiError::not_found(format!("no dispute {uuid}: see `mostro-box dispute list`"))
        })
}

fn summary(d: &DisputeRecord, o: Option<&Order>) -> Value {
    json!({
        "id": d.id.to_string(),
        "order_id": d.order_id.to_string(),
        "status": d.status.to_string(),
        "open": d.is_open(),
        "initiator": d.initiator_name(),
        "solver": d.solver.map(|s| s.to_hex()),
        "order_status": o.map(|o| o.status.to_string()),
        "amount_sats": o.map(|o| o.amount),
        "fiat": o.map(|o| format!("{} {}", o.fiat_amount, o.fiat_code)),
        "created_at": d.created_at,
    })
}

/// Every dispute, oldest first.
pub fn list(ctx: &ApiContext) -> Result<Value, ApiError> {
    let mut all = disputes(ctx)?;
    all.sort_by_key(|d| d.created_at);
    let rows = all
        .iter()
        .map(|d| Ok(summary(d, order(ctx, d.order_id)?.as_ref())))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json!({ "disputes": rows }))
}

/// One dispute with its whole order.
pub fn show(ctx: &ApiContext, query: &str) -> Result<Value, ApiError> {
    let id = query_param(query, "id").ok_or_else(|| ApiError::bad("give the dispute id"))?;
    let d = find(ctx, id)?;
    let o = order(ctx, d.order_id)?;
    let mut v = summary(&d, o.as_ref());
    v["order"] = match &o {
        Some(o) => super::orders::order_view(o)?,
        None => Value::Null,
    };
    Ok(v)
}

/// Runs an admin action as the node key and turns a `cant-do` into an operator error.
async fn act(
    ctx: &ApiContext,
    action: Action,
    id: Uuid,
    payload: Option<Payload>,
) -> Result<Vec<Message>, ApiError> {
    let replies = ctx
        .engine
        .act_as_node(action.clone(), Some(id), payload)
        .await
        .map_err(ApiError::internal)?;
    for m in &replies {
        if let Some(Payload::CantDo(reason)) = &m.get_inner_message_kind().payload {
            let why = reason
                .as_ref()
                .map(|r| format!("{r:?}"))
                .unwrap_or_default();
            return Err(ApiError::bad(format!(
                "{action} refused: {why} (see `mostro-box dispute show {id}`)"
            )));
        }
    }
    Ok(replies)
}

/// Takes a dispute as the node key; returns the solver's view of it.
pub async fn take(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let d = find(ctx, str_field(input, "id")?)?;
    let replies = act(ctx, Action::AdminTakeDispute, d.id, None).await?;
    let info = replies
        .iter()
        .find_map(|m| match &m.get_inner_message_kind().payload {
            Some(Payload::Dispute(_, Some(info))) => Some(info.clone()),
            _ => None,
        });
    Ok(json!({ "id": d.id.to_string(), "taken": true, "details": info }))
}

/// Settles a dispute for the buyer (the escrow is released and the buyer paid).
pub async fn settle(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let d = find(ctx, str_field(input, "id")?)?;
    act(ctx, Action::AdminSettle, d.order_id, None).await?;
    Ok(
        json!({ "id": d.id.to_string(), "order_id": d.order_id.to_string(), "outcome": "settled: the buyer is paid" }),
    )
}

/// Cancels a dispute for the seller (the escrow goes back to the seller).
pub async fn cancel(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let d = find(ctx, str_field(input, "id")?)?;
    act(ctx, Action::AdminCancel, d.order_id, None).await?;
    Ok(
        json!({ "id": d.id.to_string(), "order_id": d.order_id.to_string(), "outcome": "canceled: the seller is refunded" }),
    )
}

/// Adds a solver: `npub` (or hex), read-write unless `read_only`.
pub async fn solver_add(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let key = str_field(input, "pubkey")?;
    let text = if input["read_only"].as_bool() == Some(true) {
        format!("{key}:read")
    } else {
        key.to_string()
    };
    if crate::engine::actions::parse_solver(&text).is_none() {
        return Err(ApiError::bad(format!(
            "{key} is not a public key: give the solver's npub1... key"
        )));
    }
    act(
        ctx,
        Action::AdminAddSolver,
        Uuid::new_v4(),
        Some(Payload::TextMessage(text)),
    )
    .await?;
    Ok(json!({ "pubkey": key, "added": true }))
}

/// Every solver with its permission.
pub fn solver_list(ctx: &ApiContext) -> Result<Value, ApiError> {
    use nostr::ToBech32;
    let read = ctx.store.read().map_err(ApiError::internal)?;
    let table = read.open_table(USERS).map_err(ApiError::internal)?;
    let mut rows = Vec::new();
    for entry in table.iter().map_err(ApiError::internal)? {
        let (key, bytes) = entry.map_err(ApiError::internal)?;
        let user: User = decode("users", bytes.value()).map_err(ApiError::internal)?;
        if !user.is_solver {
            continue;
        }
        let npub = nostr::PublicKey::from_slice(key.value())
            .ok()
            .and_then(|k| k.to_bech32().ok())
            .unwrap_or_default();
        rows.push(json!({
            "npub": npub,
            "permission": if user.category >= 2 { "read-write" } else { "read" },
        }));
    }
    Ok(json!({ "solvers": rows }))
}
