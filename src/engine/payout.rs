//! The buyer's payout: resolving the destination, paying it, and what each outcome does to the
//! order. A payout never pays a second invoice while an earlier one may still arrive: it
//! remembers every payment it handed to the node, and moves on only when each is known to have
//! failed (see `lightning/ldk/payments.rs` for when that is known).

use ldk_node::lightning_invoice::Bolt11Invoice;
use mostro_core::prelude::{Action, Payload, PaymentFailedInfo, Status};

use super::escrow::crash_point;
use super::notify::{buyer_view, tell};
use super::order::{Order, Payout, PayoutState, Side};
use super::tx::{Timer, Tx};
use super::{Ctx, Engine};
use crate::lightning::{
    is_lightning_address, lnurl, NotSent, PayOutcome, PaymentHash, SendOutcome,
};
use crate::store::StoreError;

/// A step of the payout, as the worker saw it.
#[derive(Debug)]
pub(super) enum PayoutFact {
    /// The buyer's destination gave this invoice.
    Resolved { invoice: String, hash: PaymentHash },
    /// No usable invoice (LNURL error, expired, wrong amount...).
    Unusable(String),
    /// The node took the payment of `hash`.
    Sent(PaymentHash),
    /// Certainly not sent, in this attempt or any earlier one of the same invoice.
    NotSent(PaymentHash, NotSent),
    /// The node may have sent it: treated as sent, and its outcome awaited.
    Unknown(PaymentHash, String),
    /// An earlier attempt of this payout (`hash`) may still arrive: no new attempt until it is
    /// known to have failed.
    Waiting(PaymentHash),
    /// The payment of `hash` ended.
    Ended(PaymentHash, PayOutcome),
}

impl Engine {
    /// Carries out what the payout asks of the node and reports what the node says.
    pub(super) async fn observe_payout(&self, order: &Order) -> Option<PayoutFact> {
        let ln = &self.ln;
        let p = order.trade.payout.as_ref()?;
        match &p.state {
            PayoutState::Due => Some(match self.earlier_attempts(p) {
                Some(fact) => fact,
                None => self.resolve_payout(order).await,
            }),
            // A new attempt.
            PayoutState::Paying {
                invoice,
                hash,
                sent: false,
            } => Some(self.send_payout(order, invoice, *hash, true).await),
            PayoutState::Paying {
                invoice,
                hash,
                sent: true,
            } => match ln.payment(*hash) {
                Some(o) if o != PayOutcome::Pending => Some(PayoutFact::Ended(*hash, o)),
                // Still in flight: resuming it is harmless, and after a crash it sends again
                // a payment the node lost before it left (`Lightning::pay`).
                _ => match self.send_payout(order, invoice, *hash, false).await {
                    fact @ PayoutFact::NotSent(..) => Some(fact),
                    PayoutFact::Unknown(_, why) => {
                        tracing::warn!(order = %order.id, "payout: {why}");
                        None
                    }
                    _ => None,
                },
            },
            _ => None,
        }
    }

    /// Before a payout resolves its destination again (a retry, or the buyer's new invoice):
    /// every payment it tried before must be known to have failed. One that succeeded pays
    /// the payout; one that may still arrive holds the payout back. `None`: all failed (or
    /// never left), so a new attempt cannot pay the buyer twice.
    fn earlier_attempts(&self, p: &Payout) -> Option<PayoutFact> {
        for hash in &p.tried {
            match self.ln.payment(*hash) {
                Some(PayOutcome::Failed { .. }) | None => {}
                Some(paid @ PayOutcome::Succeeded { .. }) => {
                    return Some(PayoutFact::Ended(*hash, paid))
                }
                Some(PayOutcome::Pending) => return Some(PayoutFact::Waiting(*hash)),
            }
        }
        None
    }

    /// The buyer's destination as a checked invoice for exactly amount − fee.
    async fn resolve_payout(&self, order: &Order) -> PayoutFact {
        let Some(dest) = order.buyer_invoice.clone() else {
            return PayoutFact::Unusable("the buyer has not given an invoice".into());
        };
        let amount_msat = order.buyer_total() as u64 * 1000;
        let text = if is_lightning_address(&dest) {
            let allow_local = self.settings.lightning.network == crate::config::Network::Regtest;
            match lnurl::resolve(&dest, amount_msat, allow_local).await {
                Ok(pr) => pr,
                Err(e) => return PayoutFact::Unusable(e.to_string()),
            }
        } else {
            dest
        };
        match self.ln.check_invoice(&text, Some(amount_msat), 0) {
            Ok(inv) => {
                use ldk_node::bitcoin::hashes::Hash;
                PayoutFact::Resolved {
                    hash: PaymentHash(inv.payment_hash().to_byte_array()),
                    invoice: text,
                }
            }
            Err(e) => PayoutFact::Unusable(e.to_string()),
        }
    }

    /// Pays the payout invoice. It was checked when it was chosen; it is not checked again
    /// here, so that a payment sent before a crash is never refused on resuming (an invoice
    /// that has expired since is refused by the node itself, as a failed attempt).
    async fn send_payout(
        &self,
        order: &Order,
        invoice: &str,
        hash: PaymentHash,
        fresh: bool,
    ) -> PayoutFact {
        let inv = match invoice.parse::<Bolt11Invoice>() {
            Ok(inv) => inv,
            Err(e) => return PayoutFact::NotSent(hash, NotSent::Unreadable(e.to_string())),
        };
        let amount_msat = order.buyer_total() as u64 * 1000;
        let amount = inv.amount_milli_satoshis().is_none().then_some(amount_msat);
        let cap = routing_fee_cap(order.buyer_total(), self.settings.mostro.max_routing_fee);
        match self.ln.pay(&inv, amount, cap * 1000, fresh).await {
            SendOutcome::Sent => {
                crash_point("after-pay").await;
                PayoutFact::Sent(hash)
            }
            SendOutcome::NotSent(why) => PayoutFact::NotSent(hash, why),
            SendOutcome::Unknown(why) => PayoutFact::Unknown(hash, why),
        }
    }
}

/// The routing fee a payout may spend, in sats (reference §4.0): max(1 %, 10 sats) up to
/// 1000 sats, else `max_routing_fee` of the amount.
pub fn routing_fee_cap(amount: i64, max_routing_fee: f64) -> u64 {
    if amount <= 1000 {
        ((amount as f64 * 0.01) as u64).max(10)
    } else {
        (amount as f64 * max_routing_fee) as u64
    }
}

pub(super) fn apply_payout(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    fact: PayoutFact,
) -> Result<(), StoreError> {
    let Some(payout) = order.trade.payout.as_mut() else {
        return Ok(());
    };
    // Every payment a payout hands to the node is remembered, so that it never moves to
    // another one while this one may still arrive.
    if let PayoutState::Paying { hash, .. } = &payout.state {
        payout.remember(*hash);
    }
    let failure = match (&payout.state, fact) {
        (PayoutState::Due, PayoutFact::Resolved { invoice, hash }) => {
            payout.remember(hash);
            payout.state = PayoutState::Paying {
                invoice,
                hash,
                sent: false,
            };
            None
        }
        (PayoutState::Due, PayoutFact::Unusable(reason)) => Some(reason),
        (PayoutState::Due, PayoutFact::Waiting(h)) => {
            tracing::info!(
                order = %order.id,
                "payout: waiting for the outcome of the earlier payment {h} before a new attempt"
            );
            None
        }
        (
            PayoutState::Paying { hash, sent, .. },
            PayoutFact::Sent(h) | PayoutFact::Unknown(h, _),
        ) if *hash == h && !sent => {
            if let PayoutState::Paying { sent, .. } = &mut payout.state {
                *sent = true;
            }
            None
        }
        (PayoutState::Paying { hash, .. }, PayoutFact::NotSent(h, why)) if *hash == h => {
            Some(why.to_string())
        }
        (
            PayoutState::Paying { .. } | PayoutState::Due,
            PayoutFact::Ended(h, PayOutcome::Succeeded { fee_msat }),
        ) if payout.tried.contains(&h) => {
            paid(tx, order, fee_msat)?;
            None
        }
        (PayoutState::Paying { hash, .. }, PayoutFact::Ended(h, PayOutcome::Failed { reason }))
            if *hash == h =>
        {
            Some(reason)
        }
        _ => None,
    };
    if let Some(reason) = failure {
        payout_failed(tx, ctx, order, reason)?;
    }
    Ok(())
}

/// The buyer has the sats: the trade succeeded, and the buyer hears it and is asked to rate.
fn paid(tx: &mut Tx, order: &mut Order, fee_msat: u64) -> Result<(), StoreError> {
    if let Some(payout) = order.trade.payout.as_mut() {
        payout.state = PayoutState::Paid;
        payout.fee_msat = fee_msat;
    }
    if order.move_to(Status::Success).is_ok() {
        tracing::info!(order = %order.id, fee_msat, "payout: buyer paid");
        tell(
            tx,
            order,
            Side::Buyer,
            None,
            Action::PurchaseCompleted,
            None,
        )?;
        tell(tx, order, Side::Buyer, None, Action::Rate, None)?;
    }
    Ok(())
}

/// What the operator decides for a payout on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutDecision {
    /// Pay it now: the operator checked that the buyer was not paid.
    Resume,
    /// It was paid (by the box that made the backup, or by hand): the trade is complete.
    Paid,
}

/// Why an operator's payout decision changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// No such order.
    #[error("no order {0}")]
    NoOrder(uuid::Uuid),
    /// Only a payout on hold waits for the operator.
    #[error("the payout of order {id} is {state}, not on hold: nothing changed")]
    NotOnHold {
        /// The order.
        id: uuid::Uuid,
        /// Where its payout stands.
        state: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Carries out the operator's decision on a payout on hold, and returns the order as it is
    /// then. `Resume` makes the payout due (paid by the worker as any other); `Paid` completes
    /// the trade without paying.
    pub async fn decide_payout(
        &self,
        id: uuid::Uuid,
        decision: PayoutDecision,
    ) -> Result<Order, DecisionError> {
        let engine = self.clone();
        let (decided, out, work) = self
            .store
            .writer()
            .write(move |txn| {
                let mut tx = Tx::open(txn)?;
                let decided = (|| {
                    let mut order = tx.order(id)?.ok_or(DecisionError::NoOrder(id))?;
                    let state = order.trade.payout.as_ref().map(|p| &p.state);
                    if !matches!(state, Some(PayoutState::OnHold { .. })) {
                        return Err(DecisionError::NotOnHold {
                            id,
                            state: state.map(PayoutState::name).unwrap_or("not started"),
                        });
                    }
                    tracing::warn!(order = %id, "payout: the operator decided {decision:?}");
                    let ctx = engine.ctx(crate::protocol::now());
                    match decision {
                        PayoutDecision::Resume => {
                            if let Some(p) = order.trade.payout.as_mut() {
                                p.attempts = 0;
                                p.state = PayoutState::Due;
                            }
                            tx.put_order(&order)?;
                        }
                        PayoutDecision::Paid => {
                            paid(&mut tx, &mut order, 0)?;
                            super::actions::save_and_publish(&mut tx, &ctx, &mut order)?;
                            let mut active = engine.active.lock().expect("active keys lock");
                            super::actions::track_active(&mut active, &order);
                        }
                    }
                    Ok(order)
                })();
                Ok((
                    decided,
                    std::mem::take(&mut tx.out),
                    std::mem::take(&mut tx.ln_work),
                ))
            })
            .await?;
        self.deliver(out).await?;
        self.work.push(work);
        decided
    }
}

/// A payout attempt failed: retry later, or ask the buyer for a new invoice once the attempts
/// are used up. The buyer hears of the first failure and of the request for a new invoice.
fn payout_failed(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    reason: String,
) -> Result<(), StoreError> {
    let l = &ctx.settings.lightning;
    let Some(payout) = order.trade.payout.as_mut() else {
        return Ok(());
    };
    payout.attempts += 1;
    tracing::warn!(order = %order.id, attempt = payout.attempts, "payout failed: {reason}");
    let first = payout.attempts == 1;
    let exhausted = payout.attempts >= l.payment_attempts;
    if exhausted {
        payout.state = PayoutState::NeedsInvoice {
            reason,
            since: ctx.now,
        };
        let remind_at = ctx.now + l.invoice_reminder_interval as i64;
        tx.set_timer(remind_at, order.id, Timer::InvoiceReminder)?;
    } else {
        let retry_at = ctx.now + l.payment_retries_interval as i64;
        payout.state = PayoutState::Failed { reason, retry_at };
        tx.set_timer(retry_at, order.id, Timer::PayoutRetry)?;
    }
    if first {
        let info = PaymentFailedInfo {
            payment_attempts: l.payment_attempts.saturating_sub(1),
            payment_retries_interval: l.payment_retries_interval,
        };
        tell(
            tx,
            order,
            Side::Buyer,
            None,
            Action::PaymentFailed,
            Some(Payload::PaymentFailed(info)),
        )?;
    }
    if exhausted {
        ask_for_invoice(tx, order)?;
    }
    Ok(())
}

/// Asks the buyer for a new invoice (`add-invoice` with the order as it stands).
pub(super) fn ask_for_invoice(tx: &mut Tx, order: &Order) -> Result<(), StoreError> {
    let view = buyer_view(order, Status::SettledHoldInvoice, false);
    tell(
        tx,
        order,
        Side::Buyer,
        None,
        Action::AddInvoice,
        Some(Payload::Order(view)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_fee_cap_follows_reference() {
        assert_eq!(routing_fee_cap(500, 0.002), 10);
        assert_eq!(routing_fee_cap(1000, 0.002), 10);
        assert_eq!(routing_fee_cap(100_000, 0.002), 200);
    }
}
