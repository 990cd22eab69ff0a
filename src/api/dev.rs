//! The playground's trader wallets (alice and bob), reachable through the operator API only
//! when the box runs as `mostro-box dev`, so a newcomer can pay a seller's hold invoice and make
//! a buyer's invoice from the command line while trading with mostro-cli.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::Node;
use serde_json::{json, Value};

use super::handlers::{str_field, u64_field};
use super::{ApiContext, ApiError};

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

/// Pays an invoice from the wallet (a seller's hold invoice stays pending until release).
pub fn pay(ctx: &ApiContext, input: &Value) -> Result<Value, ApiError> {
    let w = wallet(ctx, input)?;
    let text = str_field(input, "invoice")?;
    let inv: Bolt11Invoice = text
        .trim()
        .parse()
        .map_err(|_| ApiError::bad("that is not a BOLT11 invoice"))?;
    w.bolt11_payment()
        .send(&inv, None)
        .map_err(|e| ApiError::bad(format!("cannot pay: {e}")))?;
    Ok(json!({ "sent_sats": inv.amount_milli_satoshis().unwrap_or(0) / 1000 }))
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
