//! The escrow worker: carries out on the Lightning node what the engine decided, and brings
//! what the node reports back into the order book.
//!
//! Handlers never call the node. They record a decision on the order (an escrow `issuing`,
//! `settling`, a payout `due`, a hold invoice queued for cancelling) in the same commit as the
//! rest of the state change. After the commit this worker acts on the decision, reads the
//! node's state, and applies what it saw in a new commit. Every step is idempotent: after a
//! crash the worker simply looks at every unfinished order again (the `ln_watch` table) and
//! finishes the job. The payout's own rules are in [`super::payout`].

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use mostro_core::prelude::{Action, Payload, Status};
use nostr::PublicKey;
use redb::ReadableTable;
use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

use super::actions::cancel::{back_to_pending, cancel_trade};
use super::actions::save_and_publish;
use super::actions::take::escrow_held_notices;
use super::actions::trade::close_dispute;
use super::notify::{ask_buyer_for_invoice, seller_view, taker_reputation, tell};
use super::order::{EscrowState, Order, Payout, Side};
use super::payout::{apply_payout, PayoutFact};
use super::tx::{Timer, Tx};
use super::{Ctx, Engine};
use crate::lightning::{HoldRequest, HoldState, LnEvent, PaymentHash};
use crate::store::*;

/// How often every unfinished order is looked at again, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(30);

/// Orders waiting for the worker, and the bell that wakes it.
#[derive(Default)]
pub struct WorkQueue {
    ids: Mutex<BTreeSet<Uuid>>,
    bell: Notify,
}

impl WorkQueue {
    /// Queues orders for a look.
    pub fn push(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut q = self.ids.lock().expect("work queue lock");
        q.extend(ids);
        drop(q);
        self.bell.notify_one();
    }

    /// Wakes the worker without an order (to go through the hold invoices to cancel).
    pub fn ring(&self) {
        self.bell.notify_one();
    }

    fn take(&self) -> BTreeSet<Uuid> {
        std::mem::take(&mut *self.ids.lock().expect("work queue lock"))
    }
}

/// What the worker saw on the node for one order.
#[derive(Debug, Default)]
pub struct Facts {
    /// The escrow hash these facts are about (the order may have moved on meanwhile).
    hash: Option<PaymentHash>,
    /// The invoice the node issued for it.
    issued: Option<String>,
    /// The hold invoice's recorded state.
    hold: Option<HoldState>,
    /// What happened to the payout.
    payout: Option<PayoutFact>,
}

/// The escrow worker could not finish a look at an order; it looks again later.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Lightning node failed.
    #[error(transparent)]
    Lightning(#[from] crate::lightning::LightningError),
}

impl Engine {
    /// Runs the worker until the process ends.
    pub(super) async fn escrow_worker(self) {
        let mut events = self.ln.subscribe();
        self.queue_watched();
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                _ = self.work.bell.notified() => {}
                _ = resync.tick() => self.queue_watched(),
                ev = events.recv() => match ev {
                    Ok(ev) => self.on_ln_event(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.queue_watched(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
            // Events that arrive while a batch is worked on are handled on the next turn.
            while let Ok(ev) = events.try_recv() {
                self.on_ln_event(ev);
            }
            // Different orders are independent: look at them side by side, so one trade's
            // Lightning call does not delay another's reply.
            let mut looks = tokio::task::JoinSet::new();
            for id in self.work.take() {
                let engine = self.clone();
                looks.spawn(async move {
                    tracing::debug!(order = %id, "escrow: looking at the order");
                    if let Err(e) = engine.sync(id).await {
                        tracing::error!(order = %id, "escrow: {e}; will retry");
                    }
                });
            }
            while looks.join_next().await.is_some() {}
            if let Err(e) = self.cancel_queued_holds().await {
                tracing::error!("escrow: cancelling hold invoices: {e}; will retry");
            }
        }
    }

    /// Queues every order with unfinished Lightning business.
    fn queue_watched(&self) {
        let ids = (|| -> Result<Vec<Uuid>, StoreError> {
            let r = self.store.read()?;
            let t = r.open_table(LN_WATCH)?;
            let mut v = Vec::new();
            for e in t.iter()? {
                v.push(Uuid::from_u128(e?.0.value()));
            }
            Ok(v)
        })();
        match ids {
            Ok(ids) => self.work.push(ids),
            Err(e) => tracing::error!("escrow: cannot read the watch list: {e}"),
        }
    }

    fn on_ln_event(&self, ev: LnEvent) {
        let hash = match ev {
            LnEvent::HoldHeld { hash, .. }
            | LnEvent::HoldSettled { hash }
            | LnEvent::HoldCancelled { hash, .. }
            | LnEvent::Paid { hash, .. } => hash,
            _ => return,
        };
        let found = (|| -> Result<Option<Uuid>, StoreError> {
            let r = self.store.read()?;
            let t = r.open_table(HASHES)?;
            Ok(t.get(&hash.0)?.map(|v| Uuid::from_u128(v.value())))
        })();
        match found {
            Ok(Some(id)) => self.work.push([id]),
            Ok(None) => self.work.ring(),
            Err(e) => tracing::error!("escrow: cannot look up payment {hash}: {e}"),
        }
    }

    /// Acts on the order's recorded decisions, reads the node, applies what it saw.
    async fn sync(&self, id: Uuid) -> Result<(), EscrowError> {
        let Some(order) = self.order(id)? else {
            return Ok(());
        };
        let facts = self.observe(&order).await;
        let engine = self.clone();
        let (out, work) = self
            .store
            .writer()
            .write(move |txn| {
                let mut tx = Tx::open(txn)?;
                let ctx = engine.ctx(crate::protocol::now());
                let mut active = engine.active.lock().expect("active keys lock");
                if let Some(mut order) = tx.order(id)? {
                    apply(&mut tx, &ctx, &mut order, facts, &mut active)?;
                }
                Ok((std::mem::take(&mut tx.out), std::mem::take(&mut tx.ln_work)))
            })
            .await?;
        self.deliver(out).await?;
        self.work.push(work);
        Ok(())
    }

    /// Carries out what the order asks of the node and reports what the node says.
    async fn observe(&self, order: &Order) -> Facts {
        let ln = &self.ln;
        let mut f = Facts::default();
        if let Some(e) = &order.trade.escrow {
            let hash = e.hash();
            f.hash = Some(hash);
            let rec = ln.hold(hash).ok().flatten();
            match (&e.state, rec) {
                (EscrowState::Issuing, None) => {
                    let req = HoldRequest {
                        hash,
                        amount_msat: e.amount as u64 * 1000,
                        description: memo(order),
                        expiry_secs: self.hold_invoice_expiry(),
                    };
                    match ln.create_hold_invoice(req).await {
                        Ok(invoice) => f.issued = Some(invoice),
                        Err(err) => {
                            tracing::warn!(order = %order.id, "escrow: cannot issue: {err}")
                        }
                    }
                }
                (EscrowState::Issuing, Some(rec)) => f.issued = Some(rec.invoice),
                (EscrowState::Settling, Some(rec))
                    if matches!(
                        rec.state,
                        HoldState::Held { .. } | HoldState::Claiming { .. }
                    ) =>
                {
                    crash_point("before-settle").await;
                    if let Err(err) = ln.settle_hold(e.preimage).await {
                        tracing::warn!(order = %order.id, "escrow: cannot settle: {err}");
                    }
                    crash_point("after-settle").await;
                }
                _ => {}
            }
            f.hold = ln.hold(hash).ok().flatten().map(|r| r.state);
        }
        f.payout = self.observe_payout(order).await;
        f
    }

    /// Seconds the seller's hold invoice stays payable: past the waiting time-out, so the
    /// time-out (not the invoice's expiry) decides what happens to an unpaid take.
    fn hold_invoice_expiry(&self) -> u32 {
        (self.settings.mostro.expiration_seconds + 300).clamp(600, 86_400) as u32
    }

    /// Cancels every hold invoice queued for cancelling and forgets those the node confirms.
    async fn cancel_queued_holds(&self) -> Result<(), EscrowError> {
        let hashes = (|| -> Result<Vec<PaymentHash>, StoreError> {
            let r = self.store.read()?;
            let t = r.open_table(CANCEL_HOLDS)?;
            let mut v = Vec::new();
            for e in t.iter()? {
                v.push(PaymentHash(*e?.0.value()));
            }
            Ok(v)
        })()?;
        tracing::debug!("escrow: {} hold invoices to cancel", hashes.len());
        if hashes.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        for hash in hashes {
            let state = self.ln.hold(hash)?.map(|r| r.state);
            match state {
                Some(HoldState::Open | HoldState::Held { .. }) => {
                    match self.ln.cancel_hold(hash).await {
                        Ok(()) => done.push(hash),
                        Err(e) => tracing::warn!("escrow: cannot cancel hold {hash}: {e}"),
                    }
                }
                // Never issued, or already over: nothing left to give back. (Being claimed:
                // the claim decides, and the hold settles or comes back cancelled.)
                _ => done.push(hash),
            }
        }
        self.store
            .writer()
            .write(move |txn| {
                let mut tx = Tx::open(txn)?;
                for h in &done {
                    tx.hold_cancelled(h)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// Fault injection for the crash tests (built with the `fault-injection` feature only; a
/// production build has no crash points): with `MOSTRO_BOX_CRASH_AT=<point>` in its environment
/// the process dies on the spot (as in a power cut) when it reaches that point: `before-settle`
/// (release recorded, escrow not settled), `after-settle` (settled, payout not started),
/// `after-pay` (payment sent, not yet recorded as sent).
///
/// The points after a Lightning call first give ldk-node a moment to persist its channel
/// manager: a cut inside ldk-node's own persistence window makes LDK force-close the channel
/// on restart (its documented recovery), which is LDK's crash model, not the box's.
#[cfg(feature = "fault-injection")]
pub(super) async fn crash_point(point: &str) {
    if std::env::var("MOSTRO_BOX_CRASH_AT").as_deref() == Ok(point) {
        if point != "before-settle" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        eprintln!("MOSTRO_BOX_CRASH_AT={point}: dying here");
        std::process::abort();
    }
}

/// No crash points in a production build.
#[cfg(not(feature = "fault-injection"))]
pub(super) async fn crash_point(_point: &str) {}

/// The escrow invoice's description: what it is for and what happens to the sats.
fn memo(order: &Order) -> String {
    format!(
        "mostro order {}: {} {} for {} sats. The sats stay locked in your wallet until you \
         release them, and return to you if the trade is cancelled.",
        order.id, order.fiat_amount, order.fiat_code, order.amount
    )
}

/// Applies what the worker saw to the order as it is now (it may have moved on: a fact about
/// an older state is ignored and the next look acts on the new one).
pub fn apply(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    f: Facts,
    active: &mut HashSet<PublicKey>,
) -> Result<(), StoreError> {
    let before = order.clone();
    let same_escrow = order.trade.escrow.as_ref().map(|e| e.hash()) == f.hash && f.hash.is_some();
    if same_escrow {
        apply_escrow(tx, ctx, order, &f, active)?;
    }
    if let Some(p) = f.payout {
        apply_payout(tx, ctx, order, p)?;
    }
    // Unchanged, or already saved by a step that moved the order on (back to the book...).
    if *order == before || tx.order(order.id)?.as_ref() == Some(&*order) {
        return Ok(());
    }
    if order.status != before.status {
        save_and_publish(tx, ctx, order)?;
        super::actions::track_active(active, order);
        Ok(())
    } else {
        tx.put_order(order)
    }
}

fn apply_escrow(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    f: &Facts,
    active: &mut HashSet<PublicKey>,
) -> Result<(), StoreError> {
    let Some(escrow) = order.trade.escrow.clone() else {
        return Ok(());
    };
    match (&escrow.state, &f.hold) {
        (EscrowState::Issuing, Some(HoldState::Open)) => {
            if let Some(invoice) = &f.issued {
                set_escrow(
                    order,
                    EscrowState::Open {
                        invoice: invoice.clone(),
                    },
                );
                invoice_issued(tx, ctx, order, invoice)?;
            }
        }
        (
            EscrowState::Issuing | EscrowState::Open { .. },
            Some(HoldState::Held { deadline, .. }),
        ) => {
            set_escrow(
                order,
                EscrowState::Held {
                    deadline: *deadline,
                    held_at: ctx.now,
                },
            );
            let margin = ctx.settings.lightning.escrow_deadline_margin_blocks;
            tx.set_escrow_deadline(deadline.saturating_sub(margin), order.id)?;
            seller_paid(tx, ctx, order)?;
        }
        (
            EscrowState::Issuing | EscrowState::Open { .. } | EscrowState::Held { .. },
            Some(HoldState::Cancelled { reason }),
        )
        | (EscrowState::Settling, Some(HoldState::Cancelled { reason })) => {
            tracing::warn!(order = %order.id, "escrow: hold invoice ended: {reason}");
            set_escrow(order, EscrowState::Refunded);
            escrow_gone(tx, ctx, order, active)?;
        }
        (EscrowState::Settling, Some(HoldState::Settled)) => {
            set_escrow(order, EscrowState::Settled);
            order.trade.payout = Some(Payout::due());
        }
        _ => {}
    }
    Ok(())
}

fn set_escrow(order: &mut Order, state: EscrowState) {
    if let Some(e) = &mut order.trade.escrow {
        e.state = state;
    }
}

/// The seller's invoice exists: the seller gets it (after the taker's reputation when the
/// seller is the maker), the buyer learns the seller must pay.
fn invoice_issued(tx: &mut Tx, ctx: &Ctx, order: &Order, invoice: &str) -> Result<(), StoreError> {
    let Some(e) = &order.trade.escrow else {
        return Ok(());
    };
    let rid = |side: Side| e.request_id.filter(|_| e.requested_by == side);
    if order.maker_side() == Side::Seller {
        taker_reputation(tx, order, ctx.now)?;
    }
    let view = seller_view(order, Status::WaitingPayment, false);
    tell(
        tx,
        order,
        Side::Seller,
        rid(Side::Seller),
        Action::PayInvoice,
        Some(Payload::PaymentRequest(
            Some(view),
            invoice.to_string(),
            None,
        )),
    )?;
    tell(
        tx,
        order,
        Side::Buyer,
        rid(Side::Buyer),
        Action::WaitingSellerToPay,
        None,
    )
}

/// The seller's payment is held (reference §4.5): with the buyer's invoice known the trade is
/// active; otherwise the buyer is asked for one.
fn seller_paid(tx: &mut Tx, ctx: &Ctx, order: &mut Order) -> Result<(), StoreError> {
    if order.status != Status::WaitingPayment {
        return Ok(());
    }
    if order.buyer_invoice.is_some() {
        if order.move_to(Status::Active).is_ok() {
            escrow_held_notices(tx, order, None)?;
        }
        return Ok(());
    }
    if order.move_to(Status::WaitingBuyerInvoice).is_err() {
        return Ok(());
    }
    order.taken_at = ctx.now;
    tx.set_timer(
        ctx.now + ctx.settings.mostro.expiration_seconds,
        order.id,
        Timer::WaitingTimeout,
    )?;
    ask_buyer_for_invoice(tx, order, None)?;
    if order.maker_side() == Side::Buyer {
        taker_reputation(tx, order, ctx.now)?;
    }
    Ok(())
}

/// The hold invoice ended without a settlement (expired unpaid, refused, or failed back at its
/// deadline): the seller has the sats back; the order follows.
fn escrow_gone(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    active: &mut HashSet<PublicKey>,
) -> Result<(), StoreError> {
    match order.status {
        Status::WaitingPayment | Status::WaitingBuyerInvoice => {
            waiting_timeout(tx, ctx, order, active)
        }
        Status::Active | Status::FiatSent | Status::Dispute | Status::SettledHoldInvoice => {
            if order.move_to(Status::Canceled).is_ok() {
                close_dispute(
                    tx,
                    ctx,
                    order,
                    mostro_core::prelude::DisputeStatus::SellerRefunded,
                )?;
                for side in [Side::Seller, Side::Buyer] {
                    tell(
                        tx,
                        order,
                        side,
                        None,
                        Action::HoldInvoicePaymentCanceled,
                        None,
                    )?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A taken order waited too long (reference §4.13): if the taker is the one who did not act,
/// the order goes back to the book; if the maker, it is cancelled.
pub fn waiting_timeout(
    tx: &mut Tx,
    ctx: &Ctx,
    order: &mut Order,
    active: &mut HashSet<PublicKey>,
) -> Result<(), StoreError> {
    use mostro_core::prelude::Kind;
    let taker_late = matches!(
        (order.kind, order.status),
        (Kind::Sell, Status::WaitingBuyerInvoice) | (Kind::Buy, Status::WaitingPayment)
    );
    if taker_late {
        back_to_pending(tx, ctx, order, active, None)
    } else {
        match cancel_trade(tx, ctx, order, active, None) {
            Ok(()) | Err(super::dispatch::Fail::CantDo(_) | super::dispatch::Fail::Ignore(_)) => {
                Ok(())
            }
            Err(super::dispatch::Fail::Store(e)) => Err(e),
        }
    }
}
