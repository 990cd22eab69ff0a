//! Outgoing payments: sending, resuming after a restart, and the rule that decides when a
//! payment whose outcome is not known may be called failed.

use super::*;

impl LdkNode {
    /// The recorded outcome of an outgoing payment, if it has ended.
    pub(super) fn payment_outcome(
        &self,
        hash: PaymentHash,
    ) -> Result<Option<PayOutcome>, LightningError> {
        self.record(PAYMENTS, "payments", hash)
    }

    /// Sends a payment, or leaves it be if it is in flight or paid. `fresh` is a new attempt:
    /// a failure recorded for the invoice before is forgotten and the invoice tried again.
    /// Otherwise the call only resumes a payment started earlier, and a recorded outcome
    /// stands.
    ///
    /// After a crash, ldk-node's record of a payment can say "pending" although LDK never kept
    /// the payment (its channel manager was saved before the payment started, ldk-node #171):
    /// it never left the node and nothing would ever end it. Such a record is dropped and the
    /// payment sent again with the same payment id, which LDK refuses if it does have the
    /// payment in flight (or has just paid it). But LDK looks for a route before it checks
    /// that, so "no route" or "expired" for such a payment does not prove that it never left:
    /// it is not counted as a failure until any part that might have left has expired.
    pub(super) async fn send(
        &self,
        invoice: &Bolt11Invoice,
        amount_msat: Option<u64>,
        max_fee_msat: u64,
        fresh: bool,
    ) -> Result<PaymentHash, LightningError> {
        use ldk_node::bitcoin::hashes::Hash;
        let hash = PaymentHash(invoice.payment_hash().to_byte_array());
        let id = PaymentId(hash.0);
        // An invoice without an amount is paid the amount given.
        let amount = match (invoice.amount_milli_satoshis(), amount_msat) {
            (Some(_), _) => None,
            (None, Some(amount)) => Some(amount),
            (None, None) => return Err(InvoiceError::WrongAmount.into()),
        };
        let _one_at_a_time = self.sending.lock().await;
        // In this order: an outcome is recorded before the payment leaves `in_flight`.
        if self.in_flight().contains(&hash) {
            return Ok(hash);
        }
        match self.payment_outcome(hash)? {
            Some(PayOutcome::Failed { .. }) if fresh => self.forget_outcome(hash).await?,
            Some(_) => return Ok(hash),
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
        // Resumed with a record but no outcome: it may have left (a "failed" record with no
        // outcome is an earlier run's refused resend).
        if stale || (!fresh && record == Some(PaymentStatus::Failed)) {
            let safe_from = self.height()
                + LDK_MAX_TOTAL_CLTV
                + invoice.min_final_cltv_expiry_delta() as u32
                + RESUME_MARGIN_BLOCKS;
            self.resuming().entry(hash).or_insert(safe_from);
        }
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
        match sent {
            Ok(_) | Err(NodeError::DuplicatePayment) => {
                self.resuming().remove(&hash);
                Ok(hash)
            }
            Err(NodeError::PaymentSendingFailed) => {
                let resuming = self.resuming().get(&hash).copied();
                match resuming {
                    Some(safe_from) if self.height() < safe_from => {
                        tracing::warn!(
                            "Lightning: payment {hash} cannot be sent again yet (no route, or \
                             the invoice has expired); part of it may have left before the \
                             restart, so it is not counted as failed before block {safe_from}"
                        );
                        return Ok(hash);
                    }
                    Some(_) => {
                        self.resuming().remove(&hash);
                    }
                    None => {}
                }
                let reason = format!(
                    "no route to {} for this amount within a {} msat fee limit, or the invoice \
                     has expired",
                    invoice.recover_payee_pub_key(),
                    max_fee_msat
                );
                self.payment_ended(hash, PayOutcome::Failed { reason })
                    .await?;
                Ok(hash)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<PaymentHash>> {
        self.in_flight.lock().expect("in-flight lock")
    }

    pub(super) fn resuming(&self) -> std::sync::MutexGuard<'_, HashMap<PaymentHash, u32>> {
        self.resuming.lock().expect("resuming lock")
    }

    pub(super) async fn forget_outcome(&self, hash: PaymentHash) -> Result<(), LightningError> {
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
