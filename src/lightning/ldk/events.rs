//! LDK's events: each is recorded in redb before it is acknowledged, then told to listeners.

use super::*;

impl LdkNode {
    pub(super) async fn event_loop(self: Arc<Self>) {
        loop {
            let event = self.node.next_event_async().await;
            if let Err(e) = self.handle(event).await {
                // Not acknowledged: LDK hands the same event out again.
                tracing::error!("Lightning: handling an event failed: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if let Err(e) = self.node.event_handled() {
                tracing::error!("Lightning: cannot acknowledge an event: {e}");
            }
        }
    }

    pub(super) async fn handle(&self, event: Event) -> Result<(), LightningError> {
        match event {
            Event::PaymentClaimable {
                payment_hash,
                claimable_amount_msat,
                claim_deadline,
                ..
            } => {
                self.on_claimable(
                    PaymentHash(payment_hash.0),
                    claimable_amount_msat,
                    claim_deadline.unwrap_or(0),
                )
                .await?
            }
            Event::PaymentReceived {
                payment_hash,
                amount_msat,
                ..
            } => {
                let hash = PaymentHash(payment_hash.0);
                let mut watched = self.watched.lock().await;
                let event = if let Some(rec) = watched.get(&hash).cloned() {
                    self.transition(&mut watched, rec, HoldState::Settled)
                        .await?;
                    LnEvent::HoldSettled { hash }
                } else if let Some(rec) = self.stored_hold(hash)? {
                    if let HoldState::Cancelled { reason } = &rec.state {
                        tracing::error!(
                            "Lightning: LDK claimed hold {hash} after the box had recorded it \
                             cancelled ({reason}): the payer's sats are the node's; a solver \
                             should look at its order"
                        );
                        // Recorded (before the event is acknowledged) where the operator sees
                        // it: the status page and `mostro_holds_claimed_after_cancel`.
                        self.store
                            .writer()
                            .write(move |txn| {
                                txn.open_table(crate::store::LATE_CLAIMS)?
                                    .insert(&hash.0, amount_msat)?;
                                Ok(())
                            })
                            .await?;
                    }
                    LnEvent::HoldSettled { hash }
                } else {
                    LnEvent::Received { hash, amount_msat }
                };
                let _ = self.events.send(event);
            }
            Event::PaymentSuccessful {
                payment_hash,
                fee_paid_msat,
                ..
            } => {
                let outcome = PayOutcome::Succeeded {
                    fee_msat: fee_paid_msat.unwrap_or(0),
                };
                self.payment_ended(PaymentHash(payment_hash.0), outcome)
                    .await?;
            }
            Event::PaymentFailed {
                payment_hash: Some(payment_hash),
                reason,
                ..
            } => {
                let reason = failure_reason(reason);
                self.payment_ended(PaymentHash(payment_hash.0), PayOutcome::Failed { reason })
                    .await?;
            }
            Event::ChannelPending { channel_id, .. } => self.channel_event(channel_id, "pending"),
            Event::ChannelReady { channel_id, .. } => self.channel_event(channel_id, "ready"),
            Event::ChannelClosed { channel_id, .. } => self.channel_event(channel_id, "closed"),
            _ => {}
        }
        Ok(())
    }

    /// Records how an outgoing payment ended (redb first), then tells listeners. A success is
    /// never overwritten: LDK may report a late failure of a payment that succeeded.
    pub(super) async fn payment_ended(
        &self,
        hash: PaymentHash,
        outcome: PayOutcome,
    ) -> Result<(), LightningError> {
        let stored = outcome.clone();
        let recorded = self
            .store
            .writer()
            .write(move |txn| {
                let mut t = txn.open_table(PAYMENTS)?;
                let before: Option<PayOutcome> = match t.get(&hash.0)? {
                    Some(v) => Some(decode("payments", v.value())?),
                    None => None,
                };
                // The outcome is known: the attempt record goes with it.
                txn.open_table(crate::store::SENDS)?.remove(&hash.0)?;
                if let Some(s @ PayOutcome::Succeeded { .. }) = before {
                    return Ok(s);
                }
                t.insert(&hash.0, encode(&stored).as_slice())?;
                Ok(stored)
            })
            .await?;
        self.in_flight().remove(&hash);
        let _ = self.events.send(LnEvent::Paid {
            hash,
            outcome: recorded,
        });
        Ok(())
    }

    pub(super) fn channel_event(
        &self,
        id: ldk_node::lightning::ln::types::ChannelId,
        state: &'static str,
    ) {
        let _ = self.events.send(LnEvent::Channel {
            channel_id: id.to_string(),
            state,
        });
    }
}

pub(super) fn failure_reason(reason: Option<PaymentFailureReason>) -> String {
    match reason {
        Some(PaymentFailureReason::RecipientRejected) => "the recipient rejected the payment",
        Some(PaymentFailureReason::UserAbandoned) => "abandoned",
        Some(PaymentFailureReason::RetriesExhausted) => "no route succeeded before the time-out",
        Some(PaymentFailureReason::PaymentExpired) => "the invoice expired",
        Some(PaymentFailureReason::RouteNotFound) => "no route to the destination",
        Some(PaymentFailureReason::UnexpectedError) => "unexpected error in the Lightning node",
        Some(PaymentFailureReason::UnknownRequiredFeatures) => {
            "the invoice requires features this node lacks"
        }
        Some(PaymentFailureReason::InvoiceRequestExpired) => "the invoice request expired",
        Some(PaymentFailureReason::InvoiceRequestRejected) => "the invoice request was rejected",
        Some(PaymentFailureReason::BlindedPathCreationFailed) => "could not build a blinded path",
        None => "failed",
    }
    .to_string()
}
