//! Outgoing payments: sending, resuming after a restart, and the rule that decides when a
//! payment whose outcome is not known may be called failed.
//!
//! The rule: a payment is failed only when LDK reports it failed (it does so once every part
//! has come back), or when LDK refuses to send it and no earlier attempt of it can still be out
//! there. Every attempt is recorded in the `sends` table before LDK is asked, with the block
//! from which any part of it that left must have expired, and the record goes only with the
//! payment's outcome. So across any number of restarts, a refused resend of a payment that may
//! have left earlier is "unknown" until that block, never "failed".

use super::*;
use crate::lightning::{NotSent, SendOutcome};
use crate::store::SENDS;

/// LDK's default cap on a payment's total CLTV expiry delta (`max_total_cltv_expiry_delta`):
/// no HTLC the box sends is locked for longer.
const LDK_MAX_TOTAL_CLTV: u32 = 1008;
/// Blocks added to that before a payment that cannot be resent is called failed (time for LDK
/// to resolve an expired HTLC and report it).
const RESUME_MARGIN_BLOCKS: u32 = 12;

/// What the box knew of a payment before asking LDK to send it.
enum Before {
    /// Its outcome is recorded: nothing to send.
    Ended,
    /// To send. `Some(block)`: an earlier attempt may have left, and may still be out there
    /// until `block`.
    Send(Option<u32>),
}

impl LdkNode {
    /// The recorded outcome of an outgoing payment, if it has ended.
    pub(super) fn payment_outcome(
        &self,
        hash: PaymentHash,
    ) -> Result<Option<PayOutcome>, LightningError> {
        self.record(PAYMENTS, "payments", hash)
    }

    /// Where a payment stands (see [`Lightning::payment`]).
    pub(super) fn payment_state(&self, hash: PaymentHash) -> Option<PayOutcome> {
        let known = || -> Result<Option<PayOutcome>, LightningError> {
            if let Some(outcome) = self.payment_outcome(hash)? {
                return Ok(Some(outcome));
            }
            if self.send_guard(hash)?.is_some() {
                return Ok(Some(PayOutcome::Pending));
            }
            Ok(None)
        };
        match known() {
            Ok(Some(outcome)) => return Some(outcome),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("Lightning: cannot read payment {hash}: {e}");
                return Some(PayOutcome::Pending);
            }
        }
        let p = self.node.payment(&PaymentId(hash.0))?;
        if p.direction != PaymentDirection::Outbound {
            return None;
        }
        Some(match p.status {
            // Its outcome is recorded in redb when the event comes (or came) in.
            PaymentStatus::Pending | PaymentStatus::Failed => PayOutcome::Pending,
            PaymentStatus::Succeeded => PayOutcome::Succeeded {
                fee_msat: p.fee_paid_msat.unwrap_or(0),
            },
        })
    }

    /// Sends a payment, or leaves it be if it is in flight or paid. `fresh` is a new attempt:
    /// a failure recorded for the invoice before is forgotten and the invoice tried again.
    /// Otherwise the call only resumes a payment started earlier, and a recorded outcome
    /// stands.
    ///
    /// After a crash, ldk-node's record of a payment can say "pending" although LDK never kept
    /// the payment (its channel manager was saved before the payment started, ldk-node #171):
    /// nothing would ever end it. Such a record is dropped and the payment sent again with the
    /// same payment id, which LDK refuses as a duplicate if it does have the payment. LDK looks
    /// for a route before it checks that, so "no route" or "expired" on a resend proves
    /// nothing: see the module's rule.
    pub(super) async fn send(
        &self,
        invoice: &Bolt11Invoice,
        amount_msat: Option<u64>,
        max_fee_msat: u64,
        fresh: bool,
    ) -> SendOutcome {
        use ldk_node::bitcoin::hashes::Hash;
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        // An invoice without an amount is paid the amount given.
        let amount = match (invoice.amount_milli_satoshis(), amount_msat) {
            (Some(_), _) => None,
            (None, Some(amount)) => Some(amount),
            (None, None) => return SendOutcome::NotSent(NotSent::NoAmount),
        };
        let _one_at_a_time = self.sending.lock().await;
        // In this order: an outcome is recorded before the payment leaves `in_flight`.
        if self.in_flight().contains(&hash) {
            return SendOutcome::Sent;
        }
        let earlier = match self.before_send(invoice, hash, fresh).await {
            Ok(Before::Ended) => return SendOutcome::Sent,
            Ok(Before::Send(earlier)) => earlier,
            // Nothing was asked of LDK.
            Err(e) => return SendOutcome::NotSent(NotSent::Store(e.to_string())),
        };
        let params = RouteParametersConfig {
            max_total_routing_fee_msat: Some(max_fee_msat),
            ..Default::default()
        };
        let bolt11 = self.node.bolt11_payment();
        // Before LDK has it, so that its outcome, however fast, finds it there.
        self.in_flight().insert(hash);
        let sent = match amount {
            None => bolt11.send(invoice, Some(params)),
            Some(amount) => bolt11.send_using_amount(invoice, amount, Some(params)),
        };
        if !matches!(sent, Ok(_) | Err(NodeError::DuplicatePayment)) {
            self.in_flight().remove(&hash);
        }
        let refused = match sent {
            Ok(_) | Err(NodeError::DuplicatePayment) => return SendOutcome::Sent,
            Err(NodeError::PaymentSendingFailed) => NotSent::NoRoute {
                payee: invoice.recover_payee_pub_key().to_string(),
                max_fee_msat,
            },
            Err(
                e @ (NodeError::NotRunning | NodeError::InvalidAmount | NodeError::InvalidInvoice),
            ) => NotSent::Refused(e.to_string()),
            // ldk-node can fail after LDK took the payment (saving its own record of it).
            Err(e) => {
                return SendOutcome::Unknown(format!(
                    "the Lightning node reported \"{e}\" after it may have taken the payment; \
                     waiting for its outcome"
                ))
            }
        };
        // LDK refused this attempt before taking it. An earlier one may still be out there.
        if let Some(until) = earlier.filter(|until| self.height() < *until) {
            return SendOutcome::Unknown(format!(
                "cannot send it again ({refused}); part of it may have left before a restart, \
                 so it is not counted as failed before block {until}"
            ));
        }
        let failed = PayOutcome::Failed {
            reason: refused.to_string(),
        };
        if let Err(e) = self.payment_ended(hash, failed).await {
            // Still certain: nothing left. The attempt record stays, and the next resend or
            // LDK's event decides.
            tracing::error!("Lightning: cannot record that payment {hash} failed: {e}");
        }
        SendOutcome::NotSent(refused)
    }

    /// Records the attempt before LDK is asked, and says whether an earlier attempt may still
    /// be out there (and until which block).
    async fn before_send(
        &self,
        invoice: &Bolt11Invoice,
        hash: PaymentHash,
        fresh: bool,
    ) -> Result<Before, LightningError> {
        let id = PaymentId(hash.0);
        match self.payment_outcome(hash)? {
            Some(PayOutcome::Failed { .. }) if fresh => self.forget_outcome(hash).await?,
            Some(_) => return Ok(Before::Ended),
            None => {}
        }
        let record = self
            .node
            .payment(&id)
            .filter(|p| p.direction == PaymentDirection::Outbound)
            .map(|p| p.status);
        let stale = record == Some(PaymentStatus::Pending);
        if stale {
            tracing::info!(
                "Lightning: payment {hash} was in flight before the restart; sending it again \
                 unless the node still has it"
            );
            self.node.remove_payment(&id)?;
        }
        let until = self.height()
            + LDK_MAX_TOTAL_CLTV
            + invoice.min_final_cltv_expiry_delta() as u32
            + RESUME_MARGIN_BLOCKS;
        let guard = self.send_guard(hash)?;
        // A store from before attempts were recorded: ldk-node's record (or, resuming, a
        // "failed" record with no outcome: an earlier run's refused resend) says it may have
        // left.
        let earlier =
            guard.or((stale || (!fresh && record == Some(PaymentStatus::Failed))).then_some(until));
        self.store
            .writer()
            .write(move |txn| {
                let mut t = txn.open_table(SENDS)?;
                t.insert(&hash.0, earlier.unwrap_or(0).max(until))?;
                Ok(())
            })
            .await?;
        Ok(Before::Send(earlier))
    }

    /// The block until which an attempt of `hash` may still be out there, if one was made and
    /// has no outcome.
    fn send_guard(&self, hash: PaymentHash) -> Result<Option<u32>, LightningError> {
        let read = self.store.read()?;
        let t = read.open_table(SENDS).map_err(StoreError::from)?;
        let until = t.get(&hash.0).map_err(StoreError::from)?.map(|v| v.value());
        Ok(until)
    }

    pub(super) fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<PaymentHash>> {
        self.in_flight.lock().expect("in-flight lock")
    }

    async fn forget_outcome(&self, hash: PaymentHash) -> Result<(), LightningError> {
        self.store
            .writer()
            .write(move |txn| {
                txn.open_table(PAYMENTS)?.remove(&hash.0)?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}
