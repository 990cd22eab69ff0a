//! Prometheus metrics (text format 0.0.4) for `GET /metrics` on the status page's port, behind
//! the admin token (a bearer token for Prometheus): never on the relay's port, which faces the
//! internet (behind a local reverse proxy every request comes from loopback), so nobody else
//! learns the node's volumes and balances.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata};

use crate::engine::dispute::DisputeRecord;
use crate::engine::order::{Order, PayoutState};
use crate::lightning::{HoldState, LdkNode};
use crate::store::*;

/// Held payments claimed after the box had recorded them cancelled: (hash, msat, order).
pub fn late_claims(
    read: &redb::ReadTransaction,
) -> Result<Vec<(crate::lightning::PaymentHash, u64, Option<uuid::Uuid>)>, StoreError> {
    let claims = read.open_table(LATE_CLAIMS)?;
    let hashes = read.open_table(HASHES)?;
    let mut out = Vec::new();
    for entry in claims.iter()? {
        let (hash, msat) = entry?;
        let order = hashes
            .get(hash.value())?
            .map(|v| uuid::Uuid::from_u128(v.value()));
        out.push((
            crate::lightning::PaymentHash(*hash.value()),
            msat.value(),
            order,
        ));
    }
    Ok(out)
}

/// Among `orders`, those whose payout is in a state `pick` keeps, with that state: those on
/// hold for the operator, those waiting for a buyer's new invoice.
pub fn payouts_in(
    orders: &[Order],
    pick: fn(&PayoutState) -> bool,
) -> Vec<(uuid::Uuid, &PayoutState)> {
    orders
        .iter()
        .filter_map(|o| Some((o.id, &o.trade.payout.as_ref()?.state)))
        .filter(|(_, state)| pick(state))
        .collect()
}

/// A payout put aside for the operator's decision.
pub fn on_hold(state: &PayoutState) -> bool {
    matches!(state, PayoutState::OnHold { .. })
}

/// A payout waiting for the buyer's new invoice.
pub fn needs_invoice(state: &PayoutState) -> bool {
    matches!(state, PayoutState::NeedsInvoice { .. })
}

/// What the metrics are read from.
#[derive(Clone)]
pub struct Metrics {
    /// The store: orders, disputes, sequence counters, relay events.
    pub store: Store,
    /// The Lightning node: balances, channels, held payments.
    pub ln: Arc<LdkNode>,
}

impl Metrics {
    /// Every metric, rendered.
    pub async fn render(&self) -> Result<String, StoreError> {
        let mut out = String::new();
        self.trades(&mut out)?;
        self.relay(&mut out)?;
        self.lightning(&mut out).await;
        Ok(out)
    }

    fn trades(&self, out: &mut String) -> Result<(), StoreError> {
        let read = self.store.read()?;
        let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
        let stats = read.open_table(ORDER_STATS)?;
        for entry in stats.range(STAT_STATUS_PREFIX..)? {
            let (key, n) = entry?;
            let Some(status) = key.value().strip_prefix(STAT_STATUS_PREFIX) else {
                break;
            };
            if n.value() > 0 {
                by_status.insert(status.to_string(), n.value());
            }
        }
        let total = |key| -> Result<u64, StoreError> {
            Ok(stats.get(key)?.map(|v| v.value()).unwrap_or(0))
        };
        let (done, volume, fees, failures) = (
            total(STAT_TRADES)?,
            total(STAT_VOLUME)?,
            total(STAT_FEES)?,
            total(STAT_PAYOUT_FAILURES)?,
        );
        metric(out, "mostro_orders", "gauge", "Orders by status.");
        for (status, n) in &by_status {
            let _ = writeln!(out, "mostro_orders{{status=\"{status}\"}} {n}");
        }
        counter(
            out,
            "mostro_trades_completed_total",
            "Trades that ended in success.",
            done,
        );
        counter(
            out,
            "mostro_volume_sats_total",
            "Sats traded in successful trades.",
            volume,
        );
        counter(
            out,
            "mostro_fees_earned_sats_total",
            "Fees of successful trades (both sides), before routing.",
            fees,
        );
        counter(
            out,
            "mostro_payout_failures_total",
            "Failed attempts to pay a buyer.",
            failures,
        );
        let mut open = 0u64;
        for entry in read.open_table(DISPUTES)?.iter()? {
            let d: DisputeRecord = decode("disputes", entry?.1.value())?;
            if d.is_open() {
                open += 1;
            }
        }
        gauge(
            out,
            "mostro_disputes_open",
            "Disputes not yet decided.",
            open,
        );
        gauge(
            out,
            "mostro_holds_claimed_after_cancel",
            "Held payments the Lightning node claimed after the box had given them back: a solver should look at their orders.",
            read.open_table(LATE_CLAIMS)?.len()?,
        );
        // Read once for both payout gauges.
        let open: Vec<Order> = self.store.open_orders()?;
        gauge(
            out,
            "mostro_payouts_on_hold",
            "Payouts put aside for the operator (after a restore): never paid automatically.",
            payouts_in(&open, on_hold).len() as u64,
        );
        gauge(
            out,
            "mostro_payouts_needing_invoice",
            "Trades whose payout failed and waits for the buyer's new invoice (the sats are in the node).",
            payouts_in(&open, needs_invoice).len() as u64,
        );
        Ok(())
    }

    fn relay(&self, out: &mut String) -> Result<(), StoreError> {
        let read = self.store.read()?;
        let meta = read.open_table(META)?;
        let seq =
            |key| -> Result<u64, StoreError> { Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0)) };
        counter(
            out,
            "mostro_requests_received_total",
            "Messages to the node accepted by the relay.",
            seq(META_INBOX_NEXT)?,
        );
        counter(
            out,
            "mostro_messages_sent_total",
            "Replies and public events the node sent.",
            seq(META_OUTBOX_NEXT)?,
        );
        gauge(
            out,
            "mostro_requests_waiting",
            "Requests accepted and not yet handled.",
            read.open_table(INBOX)?.len()?,
        );
        gauge(
            out,
            "mostro_relay_events_stored",
            "Events the relay stores.",
            read.open_table(EVENTS)?.len()?,
        );
        Ok(())
    }

    async fn lightning(&self, out: &mut String) {
        let node = self.ln.node();
        let b = node.list_balances();
        gauge(
            out,
            "mostro_ln_onchain_sats",
            "On-chain wallet balance.",
            b.total_onchain_balance_sats,
        );
        gauge(
            out,
            "mostro_ln_channel_sats",
            "Sats the node owns in its channels.",
            b.total_lightning_balance_sats,
        );
        let channels = node.list_channels();
        let (mut outbound, mut inbound) = (0u64, 0u64);
        for c in &channels {
            outbound += c.outbound_capacity_msat / 1000;
            inbound += c.inbound_capacity_msat / 1000;
        }
        gauge(
            out,
            "mostro_ln_channels_usable",
            "Channels ready to route.",
            channels.iter().filter(|c| c.is_usable).count() as u64,
        );
        gauge(
            out,
            "mostro_ln_outbound_sats",
            "What the node can send now.",
            outbound,
        );
        gauge(
            out,
            "mostro_ln_inbound_sats",
            "What the node can receive now.",
            inbound,
        );
        let height = node.status().current_best_block.height;
        gauge(
            out,
            "mostro_block_height",
            "Chain tip the node has seen.",
            height as u64,
        );
        let deadlines: Vec<u32> = self
            .ln
            .open_holds()
            .await
            .iter()
            .filter_map(|h| match h.state {
                HoldState::Held { deadline, .. } | HoldState::Claiming { deadline, .. } => {
                    Some(deadline)
                }
                _ => None,
            })
            .collect();
        gauge(
            out,
            "mostro_htlcs_held",
            "Sellers' payments held in escrow.",
            deadlines.len() as u64,
        );
        if let Some(nearest) = deadlines.iter().min() {
            gauge(
                out,
                "mostro_htlc_nearest_deadline_blocks",
                "Blocks until the nearest held payment's deadline.",
                nearest.saturating_sub(height) as u64,
            );
        }
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    metric(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    metric(out, name, "counter", help);
    let _ = writeln!(out, "{name} {v}");
}
