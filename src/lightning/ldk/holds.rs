//! Hold invoices: the state machine recorded in redb (open, held, claiming, settled,
//! cancelled), reconciliation with LDK after a restart, and the deadline guard that resolves a
//! held payment before LDK would fail it back on its own.

use super::*;

impl LdkNode {
    /// Hold invoices the guard is watching (open or held).
    pub async fn open_holds(&self) -> Vec<HoldRecord> {
        self.watched.lock().await.values().cloned().collect()
    }

    /// Records a hold invoice's new state (redb first, then memory, then listeners).
    pub(super) async fn transition(
        &self,
        watched: &mut HashMap<PaymentHash, HoldRecord>,
        mut rec: HoldRecord,
        state: HoldState,
    ) -> Result<(), LightningError> {
        rec.state = state;
        let stored = rec.clone();
        self.store
            .writer()
            .write(move |txn| {
                txn.open_table(HOLDS)?
                    .insert(&stored.hash.0, encode(&stored).as_slice())?;
                let mut open = txn.open_table(OPEN_HOLDS)?;
                if stored.state.is_final() {
                    open.remove(&stored.hash.0)?;
                } else {
                    open.insert(&stored.hash.0, ())?;
                }
                Ok(())
            })
            .await?;
        let event = match &rec.state {
            HoldState::Held {
                amount_msat,
                deadline,
            } => Some(LnEvent::HoldHeld {
                hash: rec.hash,
                amount_msat: *amount_msat,
                deadline: *deadline,
            }),
            HoldState::Cancelled { reason } => Some(LnEvent::HoldCancelled {
                hash: rec.hash,
                reason: reason.clone(),
            }),
            // Settled is announced when LDK reports the payment received.
            HoldState::Claiming { .. } | HoldState::Settled | HoldState::Open => None,
        };
        if rec.state.is_final() {
            watched.remove(&rec.hash);
            self.claims.lock().expect("claims lock").remove(&rec.hash);
        } else {
            watched.insert(rec.hash, rec);
        }
        if let Some(e) = event {
            let _ = self.events.send(e);
        }
        Ok(())
    }

    /// After a restart: every hold redb still watches is compared with LDK's payment store.
    pub(super) async fn reconcile(&self) -> Result<(), LightningError> {
        let records: Vec<HoldRecord> = {
            let read = self.store.read()?;
            let open = read.open_table(OPEN_HOLDS).map_err(StoreError::from)?;
            let holds = read.open_table(HOLDS).map_err(StoreError::from)?;
            let mut out = Vec::new();
            for entry in open.iter().map_err(StoreError::from)? {
                let (hash, _) = entry.map_err(StoreError::from)?;
                if let Some(bytes) = holds.get(hash.value()).map_err(StoreError::from)? {
                    out.push(decode("holds", bytes.value())?);
                }
            }
            out
        };
        let mut watched = self.watched.lock().await;
        let height = self.height();
        for rec in records {
            let ldk = self.node.payment(&PaymentId(rec.hash.0));
            let next = match ldk.map(|p| p.status) {
                Some(PaymentStatus::Succeeded) => Some(HoldState::Settled),
                Some(PaymentStatus::Failed) => Some(HoldState::Cancelled {
                    reason: "failed back by the Lightning node while the box was down".into(),
                }),
                None => Some(HoldState::Cancelled {
                    reason: "unknown to the Lightning node".into(),
                }),
                Some(PaymentStatus::Pending) => None,
            };
            tracing::info!(
                "Lightning: reconciled hold {} ({:?} in redb{})",
                rec.hash,
                rec.state,
                next.as_ref()
                    .map(|n| format!(", now {n:?}"))
                    .unwrap_or_default()
            );
            match next {
                Some(state) => self.transition(&mut watched, rec, state).await?,
                None => {
                    watched.insert(rec.hash, rec);
                }
            }
        }
        drop(watched);
        self.guard(height).await
    }

    /// A payer's HTLC arrived: hold it if it is ours and locked long enough, else fail it.
    pub(super) async fn on_claimable(
        &self,
        hash: PaymentHash,
        amount_msat: u64,
        deadline: u32,
    ) -> Result<(), LightningError> {
        let mut watched = self.watched.lock().await;
        let Some(rec) = watched.get(&hash).cloned() else {
            // Not a live hold invoice of ours (cancelled, or never issued): give it back.
            tracing::info!("Lightning: refusing a payment for {hash}: no open hold invoice");
            let _ = self.node.bolt11_payment().fail_for_hash(LdkHash(hash.0));
            return Ok(());
        };
        match rec.state {
            HoldState::Held { .. } => {
                // Replayed after a restart: already recorded, tell listeners again.
                let _ = self.events.send(LnEvent::HoldHeld {
                    hash,
                    amount_msat,
                    deadline,
                });
                Ok(())
            }
            HoldState::Open => {
                let height = self.height();
                let window = self.settings.hold_invoice_cltv_delta;
                if amount_msat < rec.amount_msat || !hold::leaves_window(deadline, height, window) {
                    let _ = self.node.bolt11_payment().fail_for_hash(LdkHash(hash.0));
                    let reason = format!(
                        "payment refused: {amount_msat} msat locked for {} blocks, {} msat for \
                         {} blocks needed",
                        deadline.saturating_sub(height),
                        rec.amount_msat,
                        window + GUARD_BLOCKS
                    );
                    tracing::warn!("Lightning: hold {hash}: {reason}");
                    return self
                        .transition(&mut watched, rec, HoldState::Cancelled { reason })
                        .await;
                }
                tracing::info!(
                    "Lightning: hold {hash} held: {amount_msat} msat, deadline {deadline} \
                     ({} blocks)",
                    deadline - height
                );
                self.transition(
                    &mut watched,
                    rec,
                    HoldState::Held {
                        amount_msat,
                        deadline,
                    },
                )
                .await
            }
            // Being claimed (LDK hands a payment out again after a restart), or over.
            HoldState::Claiming { .. } | HoldState::Settled | HoldState::Cancelled { .. } => Ok(()),
        }
    }

    pub(super) async fn guard_loop(self: Arc<Self>) {
        // The watched set is small and in memory, so checking it every tick is cheaper than
        // tracking what changed since the last one.
        let mut tick = tokio::time::interval(GUARD_TICK);
        loop {
            tick.tick().await;
            if let Err(e) = self.guard(self.height()).await {
                tracing::error!("Lightning: deadline guard: {e}");
            }
        }
    }

    /// Cancels every held payment whose deadline is [`GUARD_BLOCKS`] away, and marks expired
    /// unpaid invoices cancelled, so LDK never fails an HTLC back on its own.
    pub(super) async fn guard(&self, height: u32) -> Result<(), LightningError> {
        let now = crate::protocol::now() as u64;
        let mut watched = self.watched.lock().await;
        let due: Vec<(HoldRecord, String)> = watched
            .values()
            .filter_map(|r| match r.state {
                HoldState::Held { deadline, .. } if hold::must_resolve_now(deadline, height) => {
                    Some((
                        r.clone(),
                        format!("deadline: block {height} is within {GUARD_BLOCKS} of {deadline}"),
                    ))
                }
                HoldState::Open if r.expires_at <= now => {
                    Some((r.clone(), "expired unpaid".to_string()))
                }
                HoldState::Claiming { deadline, .. } if height >= deadline + GUARD_BLOCKS => {
                    Some((
                        r.clone(),
                        format!(
                            "LDK never confirmed claiming it, and block {height} is past its \
                             deadline {deadline}: the payer has the sats back"
                        ),
                    ))
                }
                _ => None,
            })
            .collect();
        for (rec, reason) in due {
            tracing::warn!("Lightning: cancelling hold {}: {reason}", rec.hash);
            let _ = self
                .node
                .bolt11_payment()
                .fail_for_hash(LdkHash(rec.hash.0));
            self.transition(&mut watched, rec, HoldState::Cancelled { reason })
                .await?;
        }
        Ok(())
    }

    pub(super) fn stored_hold(
        &self,
        hash: PaymentHash,
    ) -> Result<Option<HoldRecord>, LightningError> {
        self.record(HOLDS, "holds", hash)
    }

    pub(super) async fn create_hold(&self, req: HoldRequest) -> Result<String, LightningError> {
        let description = Bolt11InvoiceDescription::Direct(
            Description::new(req.description.clone())
                .unwrap_or_else(|_| Description::new(String::new()).expect("empty is valid")),
        );
        let issued = self.node.bolt11_payment().receive_for_hash(
            req.amount_msat,
            &description,
            req.expiry_secs,
            LdkHash(req.hash.0),
        )?;
        let delta = hold::invoice_cltv_delta(self.settings.hold_invoice_cltv_delta);
        let invoice = hold::with_cltv_delta(&issued, delta, &self.node_secret)?;
        let rec = HoldRecord {
            hash: req.hash,
            amount_msat: req.amount_msat,
            invoice: invoice.to_string(),
            expires_at: crate::protocol::now() as u64 + req.expiry_secs as u64,
            state: HoldState::Open,
        };
        let mut watched = self.watched.lock().await;
        self.transition(&mut watched, rec, HoldState::Open).await?;
        Ok(invoice.to_string())
    }

    /// Asks LDK to claim a held payment. The hold is settled by the event that confirms the
    /// claim (`PaymentReceived`), never by the request alone: after a crash LDK can have lost a
    /// payment it once held, and then the claim does nothing; marking the hold settled anyway
    /// would make the box pay the buyer with sats it never got. A claim still unconfirmed
    /// [`CLAIM_WAIT`] after the first request is reported as an error each time it is repeated.
    pub(super) async fn settle(&self, preimage: Preimage) -> Result<(), LightningError> {
        let hash = preimage.hash();
        let mut watched = self.watched.lock().await;
        let rec = self.watched_or_err(&watched, hash, "settled")?;
        let (HoldState::Held {
            amount_msat,
            deadline,
        }
        | HoldState::Claiming {
            amount_msat,
            deadline,
        }) = rec.state
        else {
            return Err(wrong_state(&rec, "settled"));
        };
        if matches!(rec.state, HoldState::Held { .. }) {
            let claiming = HoldState::Claiming {
                amount_msat,
                deadline,
            };
            self.transition(&mut watched, rec, claiming).await?;
        }
        self.node.bolt11_payment().claim_for_hash(
            LdkHash(hash.0),
            amount_msat,
            PaymentPreimage(preimage.0),
        )?;
        let first = *self
            .claims
            .lock()
            .expect("claims lock")
            .entry(hash)
            .or_insert_with(Instant::now);
        if first.elapsed() > CLAIM_WAIT {
            return Err(LightningError::NotClaimed(hash));
        }
        Ok(())
    }

    pub(super) async fn cancel(&self, hash: PaymentHash) -> Result<(), LightningError> {
        let mut watched = self.watched.lock().await;
        let rec = self.watched_or_err(&watched, hash, "cancelled")?;
        if matches!(rec.state, HoldState::Claiming { .. }) {
            return Err(wrong_state(&rec, "cancelled"));
        }
        self.node.bolt11_payment().fail_for_hash(LdkHash(hash.0))?;
        self.transition(
            &mut watched,
            rec,
            HoldState::Cancelled {
                reason: "cancelled".into(),
            },
        )
        .await
    }

    pub(super) fn watched_or_err(
        &self,
        watched: &HashMap<PaymentHash, HoldRecord>,
        hash: PaymentHash,
        action: &'static str,
    ) -> Result<HoldRecord, LightningError> {
        if let Some(rec) = watched.get(&hash) {
            return Ok(rec.clone());
        }
        match self.stored_hold(hash)? {
            Some(rec) => Err(wrong_state(&rec, action)),
            None => Err(LightningError::UnknownHold(hash)),
        }
    }
}

pub(super) fn wrong_state(rec: &HoldRecord, action: &'static str) -> LightningError {
    LightningError::WrongHoldState {
        hash: rec.hash,
        state: match &rec.state {
            HoldState::Open => "unpaid".into(),
            HoldState::Held { .. } => "held".into(),
            HoldState::Claiming { .. } => "being claimed".into(),
            HoldState::Settled => "settled".into(),
            HoldState::Cancelled { reason } => format!("cancelled ({reason})"),
        },
        action,
    }
}
