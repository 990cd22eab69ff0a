//! The playground's trader wallets (alice and bob), reachable through the operator API only
//! when the box runs as `mostro-box dev`, so a newcomer can pay a seller's hold invoice and make
//! a buyer's invoice from the command line while trading with mostro-cli.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ldk_node::bitcoin::hashes::Hash;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::payment::PaymentStatus;
use ldk_node::Node;
use serde_json::{json, Value};

use super::handlers::{str_field, u64_field};
use super::orders::open_orders;
use super::{ApiContext, ApiError};
use crate::engine::order::EscrowState;
use crate::lightning::PaymentHash;

/// The playground's wallets by name; empty outside the playground.
pub type DevWallets = Arc<RwLock<BTreeMap<String, Arc<Node>>>>;

fn wallet(ctx: &ApiContext, input: &Value) -> Result<Arc<Node>, ApiError> {
    let name = str_field(input, "wallet")?;
    let wallets = ctx.dev_wallets.read().expect("dev wallets lock");
    if wallets.is_empty() {
        return Err(ApiError::bad(
            "trader wallets exist only in the playground: run `mostro-box dev`",
        ));
    }
    wallets.get(name).cloned().ok_or_else(|| {
        let names: Vec<&String> = wallets.keys().collect();
        ApiError::bad(format!("no wallet {name}; the playground has {names:?}"))
    })
}

/// An invoice of the wallet for `sats`, valid two hours (a buyer's payout invoice).
pub fn invoice(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let w = wallet(ctx, input)?;
    let sats = u64_field(input, "sats")?;
    let desc = Bolt11InvoiceDescription::Direct(
        Description::new("mostro-box playground".into()).expect("short description"),
    );
    let inv = w
        .bolt11_payment()
        .receive(sats * 1000, &desc, 7200)
        .map_err(|e| ApiError::bad(format!("cannot make the invoice: {e}")))?;
    Ok(json!({ "invoice": inv.to_string() }))
}

/// Pays an invoice from the wallet. For a hold invoice of one of the box's orders it answers
/// once the box holds the payment (or the payment failed): a newcomer pasting the README's next
/// command (the buyer's `fiat-sent`) right away would otherwise find the order still waiting
/// for the seller and get a puzzling `cant-do` from mostro-cli.
pub async fn pay(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let w = wallet(ctx, input)?;
    let text = str_field(input, "invoice")?;
    let inv: Bolt11Invoice = text
        .trim()
        .parse()
        .map_err(|_| ApiError::bad("that is not a BOLT11 invoice"))?;
    let id = w
        .bolt11_payment()
        .send(&inv, None)
        .map_err(|e| ApiError::bad(format!("cannot pay: {e}")))?;
    let hash = PaymentHash(inv.payment_hash().to_byte_array());
    let deadline = Instant::now() + Duration::from_secs(60);
    let escrow = loop {
        if w.payment(&id)
            .is_some_and(|p| p.status == PaymentStatus::Failed)
        {
            return Err(ApiError::bad(
                "the payment failed: see the box's log; `mostro-box channel list` shows the liquidity",
            ));
        }
        let escrow = escrow_state(ctx, hash)?;
        let waiting = matches!(
            escrow,
            Some(EscrowState::Issuing | EscrowState::Open { .. })
        );
        if !waiting || Instant::now() > deadline {
            break escrow;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(json!({
        "sent_sats": inv.amount_milli_satoshis().unwrap_or(0) / 1000,
        "payment_hash": hash.to_string(),
        "held_by_the_box": matches!(escrow, Some(EscrowState::Held { .. })),
    }))
}

/// Where the escrow with this payment hash stands, if an open order of the box's has it.
fn escrow_state(ctx: &ApiContext, hash: PaymentHash) -> Result<Option<EscrowState>, ApiError> {
    Ok(open_orders(ctx)?
        .into_iter()
        .filter_map(|o| o.trade.escrow)
        .find(|e| e.hash() == hash)
        .map(|e| e.state))
}

/// Each wallet's sats: spendable in channels and on chain.
pub fn balance(ctx: &ApiContext) -> Result<Value, ApiError> {
    let wallets = ctx.dev_wallets.read().expect("dev wallets lock");
    let rows: Vec<Value> = wallets
        .iter()
        .map(|(name, w)| {
            let b = w.list_balances();
            json!({
                "wallet": name,
                "lightning_sats": b.total_lightning_balance_sats,
                "onchain_sats": b.total_onchain_balance_sats,
            })
        })
        .collect();
    Ok(json!({ "wallets": rows }))
}
