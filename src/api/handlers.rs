//! One function per operator request. Each checks its input first and answers a one-line
//! error naming the problem and the fix; nothing changes on bad input.

use std::str::FromStr;
use std::time::Duration;

use hyper::Method;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::{Address, Network};
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11InvoiceDescription, Description};
use ldk_node::{ChannelDetails, NodeError, UserChannelId};
use redb::ReadableTableMetadata;
use serde_json::{json, Value};

use super::{ApiContext, ApiError};
use crate::lightning::{
    lnurl, pay_and_wait, HoldRequest, HoldState, Lightning, LightningError, PayOutcome,
    PaymentHash, Preimage,
};
use crate::store::OPEN_ORDERS;
use ldk_node::bitcoin::hex::FromHex;

/// Dispatches a request to its handler.
pub async fn route(
    ctx: &ApiContext,
    method: &Method,
    path: &str,
    query: &str,
    input: Value,
) -> Result<Value, ApiError> {
    match (method.as_str(), path) {
        ("GET", "/v1/status") => status(ctx),
        ("POST", "/v1/wallet/address") => wallet_address(ctx),
        ("GET", "/v1/wallet/balance") => Ok(balances(ctx)),
        ("POST", "/v1/wallet/send") => wallet_send(ctx, &input),
        ("POST", "/v1/peer/connect") => peer_connect(ctx, &input),
        ("GET", "/v1/peer/list") => Ok(peer_list(ctx)),
        ("POST", "/v1/peer/disconnect") => peer_disconnect(ctx, &input),
        ("POST", "/v1/channel/open") => channel_open(ctx, &input),
        ("POST", "/v1/channel/close") => channel_close(ctx, &input),
        ("GET", "/v1/channel/list") => Ok(channel_list(ctx)),
        ("POST", "/v1/invoice/create") => invoice_create(ctx, &input),
        ("POST", "/v1/pay") => pay(ctx, &input).await,
        ("POST", "/v1/hold/create") => hold_create(ctx, &input).await,
        ("POST", "/v1/hold/settle") => hold_settle(ctx, &input).await,
        ("POST", "/v1/hold/cancel") => hold_cancel(ctx, &input).await,
        ("GET", "/v1/hold/list") => hold_list(ctx).await,
        ("GET", "/v1/order/list") => super::orders::list(ctx),
        ("GET", "/v1/order/show") => super::orders::show(ctx, query),
        ("POST", "/v1/order/payout") => super::orders::payout(ctx, &input).await,
        ("GET", "/v1/dispute/list") => super::disputes::list(ctx),
        ("GET", "/v1/dispute/show") => super::disputes::show(ctx, query),
        ("POST", "/v1/dispute/take") => super::disputes::take(ctx, &input).await,
        ("POST", "/v1/dispute/settle") => super::disputes::settle(ctx, &input).await,
        ("POST", "/v1/dispute/cancel") => super::disputes::cancel(ctx, &input).await,
        ("POST", "/v1/solver/add") => super::disputes::solver_add(ctx, &input).await,
        ("GET", "/v1/solver/list") => super::disputes::solver_list(ctx),
        ("POST", "/v1/backup/snapshot") => backup_snapshot(ctx),
        ("POST", "/v1/dev/invoice") => super::dev::invoice(ctx, &input),
        ("POST", "/v1/dev/pay") => super::dev::pay(ctx, &input).await,
        ("GET", "/v1/dev/balance") => super::dev::balance(ctx),
        _ => Err(ApiError::not_found(format!(
            "no API endpoint {method} {path}; is the CLI the same version as the daemon?"
        ))),
    }
}

pub(super) fn status(ctx: &ApiContext) -> Result<Value, ApiError> {
    let node = ctx.lightning.node();
    let st = node.status();
    let channels = node.list_channels();
    let read = ctx.store.read().map_err(ApiError::internal)?;
    let open = read.open_table(OPEN_ORDERS).map_err(ApiError::internal)?;
    let pending = open.len().map_err(ApiError::internal)?;
    let open = read
        .open_table(crate::store::OPEN_HOLDS)
        .map_err(ApiError::internal)?;
    let holds = open.len().map_err(ApiError::internal)?;
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": ctx.started.elapsed().as_secs(),
        "npub": ctx.npub,
        "relay_url": ctx.settings.relay.public_url,
        "network": ctx.settings.lightning.network,
        "lightning": {
            "node_id": node.node_id().to_string(),
            "listening": node.listening_addresses().unwrap_or_default()
                .iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "block_height": st.current_best_block.height,
            "last_wallet_sync": st.latest_onchain_wallet_sync_timestamp,
            "channels": channels.len(),
            "usable_channels": channels.iter().filter(|c| c.is_usable).count(),
            "peers": node.list_peers().iter().filter(|p| p.is_connected).count(),
            "open_holds": holds,
        },
        "balances": balances(ctx),
        "disk_free_mb": crate::store::disk::free_bytes(&ctx.data_dir).map(|b| b / (1024 * 1024)),
        "active_orders": pending,
        "status_page": {
            "listen": ctx.status_page.to_string(),
            "require_token": ctx.settings.status.require_token,
        },
    }))
}

fn balances(ctx: &ApiContext) -> Value {
    let b = ctx.lightning.node().list_balances();
    let channels = ctx.lightning.node().list_channels();
    json!({
        "onchain_total_sats": b.total_onchain_balance_sats,
        "onchain_spendable_sats": b.spendable_onchain_balance_sats,
        "anchor_reserve_sats": b.total_anchor_channels_reserve_sats,
        "lightning_sats": b.total_lightning_balance_sats,
        "outbound_sats": channels.iter().map(|c| c.outbound_capacity_msat).sum::<u64>() / 1000,
        "inbound_sats": channels.iter().map(|c| c.inbound_capacity_msat).sum::<u64>() / 1000,
    })
}

fn wallet_address(ctx: &ApiContext) -> Result<Value, ApiError> {
    let addr = ctx
        .lightning
        .node()
        .onchain_payment()
        .new_address()
        .map_err(ln_err)?;
    Ok(json!({ "address": addr.to_string() }))
}

fn wallet_send(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let network = ctx.settings.lightning.bitcoin_network();
    let address = parse_address(str_field(input, "address")?, network)?;
    let onchain = ctx.lightning.node().onchain_payment();
    let txid = if input["all"].as_bool() == Some(true) {
        onchain
            .send_all_to_address(&address, true, None)
            .map_err(ln_err)?
    } else {
        let sats = u64_field(input, "sats")?;
        let spendable = ctx
            .lightning
            .node()
            .list_balances()
            .spendable_onchain_balance_sats;
        if sats > spendable {
            return Err(ApiError::bad(format!(
                "{sats} sats is more than the {spendable} sats the on-chain wallet can spend \
                 (some may be reserved for channels); send less or `all`"
            )));
        }
        onchain
            .send_to_address(&address, sats, None)
            .map_err(ln_err)?
    };
    Ok(json!({ "txid": txid.to_string() }))
}

fn peer_connect(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let (node_id, address) = parse_peer(str_field(input, "peer")?)?;
    let address =
        address.ok_or_else(|| ApiError::bad("give the peer as NODE_ID@HOST:PORT to connect"))?;
    ctx.lightning
        .node()
        .connect(node_id, address, true)
        .map_err(|e| ApiError::bad(format!("cannot connect to {node_id}: {e}")))?;
    Ok(json!({ "connected": node_id.to_string() }))
}

fn peer_list(ctx: &ApiContext) -> Value {
    let peers: Vec<Value> = ctx
        .lightning
        .node()
        .list_peers()
        .iter()
        .map(|p| {
            json!({
                "node_id": p.node_id.to_string(),
                "address": p.address.to_string(),
                "connected": p.is_connected,
                "persisted": p.is_persisted,
            })
        })
        .collect();
    json!({ "peers": peers })
}

fn peer_disconnect(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let (node_id, _) = parse_peer(str_field(input, "peer")?)?;
    let node = ctx.lightning.node();
    if !node.list_peers().iter().any(|p| p.node_id == node_id) {
        return Err(ApiError::not_found(format!(
            "{node_id} is not a peer; `mostro-box peer list` shows the peers"
        )));
    }
    node.disconnect(node_id).map_err(ln_err)?;
    Ok(json!({ "disconnected": node_id.to_string() }))
}

fn channel_open(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let (node_id, address) = parse_peer(str_field(input, "peer")?)?;
    let node = ctx.lightning.node();
    let address = match address {
        Some(a) => a,
        None => node
            .list_peers()
            .into_iter()
            .find(|p| p.node_id == node_id)
            .map(|p| p.address)
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "{node_id} is not a known peer: give it as NODE_ID@HOST:PORT"
                ))
            })?,
    };
    let sats = u64_field(input, "sats")?;
    let push_sats = input["push_sats"].as_u64().unwrap_or(0);
    if push_sats >= sats {
        return Err(ApiError::bad(
            "push_sats must be less than the channel size",
        ));
    }
    let b = node.list_balances();
    if sats > b.spendable_onchain_balance_sats {
        return Err(ApiError::bad(format!(
            "a {sats}-sat channel needs more than the {} sats the on-chain wallet can spend; \
             fund it (`mostro-box wallet address`) or open a smaller channel",
            b.spendable_onchain_balance_sats
        )));
    }
    let push = (push_sats > 0).then_some(push_sats * 1000);
    let id = if input["announce"].as_bool() == Some(true) {
        node.open_announced_channel(node_id, address, sats, push, None)
    } else {
        node.open_channel(node_id, address, sats, push, None)
    }
    .map_err(|e| match e {
        NodeError::InsufficientFunds => ApiError::bad(
            "not enough on-chain funds for the channel plus its fee and anchor reserve",
        ),
        NodeError::ConnectionFailed => {
            ApiError::bad(format!("cannot connect to {node_id}; check the address"))
        }
        e => ApiError::bad(e.to_string()),
    })?;
    Ok(json!({ "user_channel_id": id.0.to_string() }))
}

fn channel_close(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let wanted = str_field(input, "channel_id")?;
    let node = ctx.lightning.node();
    let channels = node.list_channels();
    let channel = find_channel(&channels, wanted).ok_or_else(|| {
        ApiError::not_found(format!(
            "no channel {wanted}; `mostro-box channel list` shows the ids"
        ))
    })?;
    let force = input["force"].as_bool() == Some(true);
    if force {
        node.force_close_channel(
            &channel.user_channel_id,
            channel.counterparty_node_id,
            Some("closed by the operator".into()),
        )
    } else {
        node.close_channel(&channel.user_channel_id, channel.counterparty_node_id)
    }
    .map_err(ln_err)?;
    Ok(json!({ "closing": channel.channel_id.to_string(), "force": force }))
}

/// A channel by its channel id or user channel id.
fn find_channel<'a>(channels: &'a [ChannelDetails], wanted: &str) -> Option<&'a ChannelDetails> {
    let wanted = wanted.trim();
    channels.iter().find(|c| {
        c.channel_id.to_string() == wanted
            || UserChannelId(wanted.parse().unwrap_or(u128::MAX)) == c.user_channel_id
    })
}

/// A channel's life stage as the CLI shows it: `pending` (funding unconfirmed), `confirming`,
/// `ready` (usable) or `offline` (ready but the peer is disconnected).
pub fn channel_state(c: &ChannelDetails) -> &'static str {
    match (
        c.confirmations.unwrap_or(0),
        c.is_channel_ready,
        c.is_usable,
    ) {
        (_, true, true) => "ready",
        (_, true, false) => "offline",
        (0, false, _) => "pending",
        _ => "confirming",
    }
}

pub(super) fn channel_list(ctx: &ApiContext) -> Value {
    let channels: Vec<Value> = ctx
        .lightning
        .node()
        .list_channels()
        .iter()
        .map(|c| {
            json!({
                "channel_id": c.channel_id.to_string(),
                "user_channel_id": c.user_channel_id.0.to_string(),
                "peer": c.counterparty_node_id.to_string(),
                "capacity_sats": c.channel_value_sats,
                "outbound_sats": c.outbound_capacity_msat / 1000,
                "inbound_sats": c.inbound_capacity_msat / 1000,
                "state": channel_state(c),
                "confirmations": c.confirmations.unwrap_or(0),
                "confirmations_required": c.confirmations_required.unwrap_or(0),
                "opened_by_us": c.is_outbound,
                "announced": c.is_announced,
            })
        })
        .collect();
    json!({ "channels": channels })
}

fn invoice_create(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let sats = input["sats"].as_u64().unwrap_or(0);
    let text = input["description"].as_str().unwrap_or("mostro-box");
    let desc = Description::new(text.to_string())
        .map_err(|_| ApiError::bad("description too long (at most 639 bytes)"))?;
    let desc = Bolt11InvoiceDescription::Direct(desc);
    let expiry = input["expiry_secs"]
        .as_u64()
        .unwrap_or(3600)
        .min(u32::MAX as u64) as u32;
    let bolt11 = ctx.lightning.node().bolt11_payment();
    let max_fee = input["max_lsp_fee_sats"].as_u64().map(|s| s * 1000);
    let inv = match (input["jit"].as_bool() == Some(true), sats) {
        (true, _) if ctx.settings.lightning.lsps2_node_id.is_empty() => {
            return Err(ApiError::bad(
                "no LSPS2 provider: set lightning.lsps2_node_id and lightning.lsps2_address \
                 (and lsps2_token if it gives you one), restart, and try again",
            ))
        }
        (true, 0) => {
            return Err(ApiError::bad(
                "give an amount with --jit: the provider sizes the new channel from it",
            ))
        }
        (true, sats) => bolt11.receive_via_jit_channel(sats * 1000, &desc, expiry, max_fee),
        (false, 0) => bolt11.receive_variable_amount(&desc, expiry),
        (false, sats) => bolt11.receive(sats * 1000, &desc, expiry),
    }
    .map_err(ln_err)?;
    Ok(json!({
        "invoice": inv.to_string(),
        "payment_hash": inv.payment_hash().to_string(),
    }))
}

async fn pay(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let target = str_field(input, "invoice")?.trim();
    let sats = input["sats"].as_u64();
    let ln = ctx.lightning.as_ref();
    let text = if crate::lightning::is_lightning_address(target) {
        let sats = sats.ok_or_else(|| ApiError::bad("paying a Lightning address needs --sats"))?;
        let allow_local = ctx.settings.lightning.network == crate::config::Network::Regtest;
        lnurl::resolve(target, sats * 1000, allow_local)
            .await
            .map_err(|e| ApiError::bad(e.to_string()))?
    } else {
        target.to_string()
    };
    let invoice = ln
        .check_invoice(&text, None, 0)
        .map_err(|e| ApiError::bad(format!("{e}")))?;
    let amount_msat = match (invoice.amount_milli_satoshis(), sats) {
        (Some(a), _) => a,
        (None, Some(s)) => s * 1000,
        (None, None) => {
            return Err(ApiError::bad(
                "the invoice has no amount: say how much with --sats",
            ))
        }
    };
    let outbound: u64 = ctx
        .lightning
        .node()
        .list_channels()
        .iter()
        .filter(|c| c.is_usable)
        .map(|c| c.outbound_capacity_msat)
        .sum();
    if amount_msat > outbound {
        return Err(ApiError::bad(format!(
            "{} sats is more than the {} sats the node can send over its channels",
            amount_msat / 1000,
            outbound / 1000
        )));
    }
    let max_fee_msat = match input["max_fee_sats"].as_u64() {
        Some(f) => f * 1000,
        // The reference daemon's default cap: 0.2 % of the amount, at least 10 sats.
        None => (amount_msat / 500).max(10_000),
    };
    let timeout = Duration::from_secs(input["timeout_secs"].as_u64().unwrap_or(60));
    let hash = invoice.payment_hash().to_string();
    let outcome = pay_and_wait(
        ln,
        &invoice,
        invoice
            .amount_milli_satoshis()
            .is_none()
            .then_some(amount_msat),
        max_fee_msat,
        timeout,
    )
    .await
    .map_err(|e| ApiError::bad(e.to_string()))?;
    let mut out = serde_json::to_value(&outcome).map_err(ApiError::internal)?;
    out["payment_hash"] = json!(hash);
    out["amount_sats"] = json!(amount_msat / 1000);
    if let PayOutcome::Failed { reason } = &outcome {
        out["error"] = json!(format!("payment failed: {reason}"));
    }
    Ok(out)
}

async fn hold_create(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let hash: PaymentHash = str_field(input, "hash")?.parse().map_err(ApiError::bad)?;
    let sats = u64_field(input, "sats")?;
    let invoice = ctx
        .lightning
        .create_hold_invoice(HoldRequest {
            hash,
            amount_msat: sats * 1000,
            description: input["description"]
                .as_str()
                .unwrap_or("mostro-box hold test")
                .into(),
            expiry_secs: input["expiry_secs"]
                .as_u64()
                .unwrap_or(3600)
                .min(u32::MAX as u64) as u32,
        })
        .await
        .map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(json!({ "invoice": invoice, "payment_hash": hash }))
}

async fn hold_settle(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let text = str_field(input, "preimage")?;
    let bytes = <[u8; 32]>::from_hex(text.trim())
        .map_err(|_| ApiError::bad(format!("{text} is not a 64-hex-digit preimage")))?;
    let preimage = Preimage(bytes);
    let hash = preimage.hash();
    ctx.lightning
        .settle_hold(preimage)
        .await
        .map_err(hold_err)?;
    // Settled once the node confirms the claim, which takes milliseconds when all is well.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = ctx.lightning.hold(hash).map_err(hold_err)?.map(|r| r.state);
        if state == Some(HoldState::Settled) {
            return Ok(json!({ "settled": hash }));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(hold_err(LightningError::NotClaimed(hash)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hold_cancel(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let hash: PaymentHash = str_field(input, "hash")?.parse().map_err(ApiError::bad)?;
    ctx.lightning.cancel_hold(hash).await.map_err(hold_err)?;
    Ok(json!({ "cancelled": hash }))
}

async fn hold_list(ctx: &ApiContext) -> Result<Value, ApiError> {
    let height = ctx.lightning.height();
    let holds: Vec<Value> = ctx
        .lightning
        .open_holds()
        .await
        .into_iter()
        .map(|h| {
            let (state, deadline) = match h.state {
                HoldState::Open => ("open", None),
                HoldState::Held { deadline, .. } => ("held", Some(deadline)),
                HoldState::Claiming { deadline, .. } => ("claiming", Some(deadline)),
                HoldState::Settled => ("settled", None),
                HoldState::Cancelled { .. } => ("cancelled", None),
            };
            json!({
                "hash": h.hash,
                "amount_sats": h.amount_msat / 1000,
                "state": state,
                "deadline": deadline,
                "blocks_left": deadline.map(|d| d.saturating_sub(height)),
                "expires_at": h.expires_at,
                "invoice": h.invoice,
            })
        })
        .collect();
    Ok(json!({ "holds": holds, "block_height": height }))
}

fn hold_err(e: LightningError) -> ApiError {
    match e {
        LightningError::UnknownHold(_) => ApiError::not_found(e.to_string()),
        e => ApiError::bad(e.to_string()),
    }
}

/// Takes the store snapshot for `mostro-box backup create` (which reads it as the same user).
fn backup_snapshot(ctx: &ApiContext) -> Result<Value, ApiError> {
    let path = crate::backup::snapshot(&ctx.store, &ctx.data_dir).map_err(ApiError::internal)?;
    Ok(json!({ "snapshot": path }))
}

/// The value of `name` in a query string.
pub(super) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

pub(super) fn str_field<'a>(input: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    input[name]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad(format!("missing {name}")))
}

pub(super) fn u64_field(input: &Value, name: &str) -> Result<u64, ApiError> {
    input[name]
        .as_u64()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::bad(format!("{name} must be a positive whole number of sats")))
}

fn parse_address(text: &str, network: Network) -> Result<Address, ApiError> {
    let unchecked = Address::from_str(text.trim())
        .map_err(|_| ApiError::bad(format!("{text} is not a bitcoin address")))?;
    unchecked.require_network(network).map_err(|_| {
        ApiError::bad(format!(
            "{text} is not an address for {network}, the network this node runs on"
        ))
    })
}

/// `NODE_ID` or `NODE_ID@HOST:PORT`.
fn parse_peer(text: &str) -> Result<(PublicKey, Option<SocketAddress>), ApiError> {
    let (id, addr) = match text.trim().split_once('@') {
        Some((id, addr)) => (id, Some(addr)),
        None => (text.trim(), None),
    };
    let node_id = PublicKey::from_str(id)
        .map_err(|_| ApiError::bad(format!("{id} is not a node id (66 hex digits)")))?;
    let address = addr
        .map(|a| {
            SocketAddress::from_str(a).map_err(|_| ApiError::bad(format!("{a} is not HOST:PORT")))
        })
        .transpose()?;
    Ok((node_id, address))
}

fn ln_err(e: NodeError) -> ApiError {
    ApiError::bad(format!("Lightning node: {e}"))
}
