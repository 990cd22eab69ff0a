//! Typed access to the engine's tables inside one write transaction.

use std::collections::BTreeMap;

use mostro_core::prelude::Status;
use nostr::PublicKey;
use redb::{MultimapTable, ReadableMultimapTable, ReadableTable, Table, WriteTransaction};
use uuid::Uuid;

use super::dispute::DisputeRecord;
use super::order::{EscrowState, Order, PayoutState};
use super::user::User;
use crate::lightning::PaymentHash;
use crate::protocol::outbound::Outgoing;
use crate::store::*;

/// The [`ORDER_STATS`] key counting orders in `status`.
fn stat_key(status: Status) -> String {
    format!("{STAT_STATUS_PREFIX}{status}")
}

/// What an order going from `before` to `after` adds to each [`ORDER_STATS`] total.
fn stat_deltas(deltas: &mut BTreeMap<String, i64>, before: Option<&Order>, after: &Order) {
    let mut add = |key: &str, n: i64| *deltas.entry(key.to_string()).or_default() += n;
    if before.map(|o| o.status) != Some(after.status) {
        if let Some(o) = before {
            add(&stat_key(o.status), -1);
        }
        add(&stat_key(after.status), 1);
        if after.status == Status::Success {
            add(STAT_TRADES, 1);
            add(STAT_VOLUME, after.amount);
            add(STAT_FEES, 2 * after.fee);
        }
    }
    // A payout's attempts count its failures; a new invoice starts them again at zero.
    let attempts = |o: &Order| o.trade.payout.as_ref().map_or(0, |p| p.attempts as i64);
    let failed = attempts(after) - before.map_or(0, attempts);
    if failed > 0 {
        add(STAT_PAYOUT_FAILURES, failed);
    }
}

/// Kinds of persisted deadlines in [`TIMERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Timer {
    /// A pending order reaches its `expires_at`.
    PendingExpiry = 1,
    /// A taken order has waited `expiration_seconds` for the buyer's invoice or the seller's
    /// payment.
    WaitingTimeout = 2,
    /// A failed payout's next attempt is due.
    PayoutRetry = 3,
    /// A buyer whose payout waits for a new invoice is asked again.
    InvoiceReminder = 4,
}

impl Timer {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Timer::PendingExpiry),
            2 => Some(Timer::WaitingTimeout),
            3 => Some(Timer::PayoutRetry),
            4 => Some(Timer::InvoiceReminder),
            _ => None,
        }
    }
}

/// The engine's tables, opened once for a batch of messages.
pub struct Tx<'t> {
    meta: Table<'t, &'static str, u64>,
    orders: Table<'t, u128, &'static [u8]>,
    open_orders: Table<'t, u128, ()>,
    order_stats: Table<'t, &'static str, u64>,
    users: Table<'t, &'static [u8; 32], &'static [u8]>,
    identity_orders: MultimapTable<'t, &'static [u8; 32], u128>,
    timers: Table<'t, (u64, u128), u8>,
    outbox: Table<'t, u64, &'static [u8]>,
    processed: Table<'t, &'static [u8; 32], u64>,
    inbox: Table<'t, u64, (&'static [u8; 32], u64)>,
    events: Table<'t, &'static [u8; 32], &'static str>,
    disputes: Table<'t, u128, &'static [u8]>,
    hashes: Table<'t, &'static [u8; 32], u128>,
    ln_watch: Table<'t, u128, ()>,
    cancel_holds: Table<'t, &'static [u8; 32], ()>,
    escrow_deadlines: Table<'t, (u32, u128), ()>,
    /// Outgoing messages queued by this batch, with their outbox sequence numbers.
    pub out: Vec<(u64, Outgoing)>,
    /// Orders this batch left with Lightning work to do (the escrow worker gets them after the
    /// commit).
    pub ln_work: Vec<Uuid>,
}

impl<'t> Tx<'t> {
    /// Opens the tables.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            meta: txn.open_table(META)?,
            orders: txn.open_table(ORDERS)?,
            open_orders: txn.open_table(OPEN_ORDERS)?,
            order_stats: txn.open_table(ORDER_STATS)?,
            users: txn.open_table(USERS)?,
            identity_orders: txn.open_multimap_table(IDENTITY_ORDERS)?,
            timers: txn.open_table(TIMERS)?,
            outbox: txn.open_table(OUTBOX)?,
            processed: txn.open_table(PROCESSED)?,
            inbox: txn.open_table(INBOX)?,
            events: txn.open_table(EVENTS)?,
            disputes: txn.open_table(DISPUTES)?,
            hashes: txn.open_table(HASHES)?,
            ln_watch: txn.open_table(LN_WATCH)?,
            cancel_holds: txn.open_table(CANCEL_HOLDS)?,
            escrow_deadlines: txn.open_table(ESCROW_DEADLINES)?,
            out: Vec::new(),
            ln_work: Vec::new(),
        })
    }

    /// An order by id.
    pub fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        match self.orders.get(id.as_u128())? {
            Some(v) => Ok(Some(decode("orders", v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores an order, indexes it under its parties' identities and its payment hashes, and
    /// keeps the Lightning watch list in step with it.
    pub fn put_order(&mut self, order: &Order) -> Result<(), StoreError> {
        let id = order.id.as_u128();
        let before: Option<Order> = match self.orders.insert(id, encode(order).as_slice())? {
            Some(old) => Some(decode("orders", old.value())?),
            None => None,
        };
        self.count(before.as_ref(), order)?;
        for p in [&order.buyer, &order.seller].into_iter().flatten() {
            self.identity_orders.insert(&p.identity.to_bytes(), id)?;
        }
        if let Some(e) = &order.trade.escrow {
            self.hashes.insert(&e.hash().0, id)?;
        }
        if let Some(PayoutState::Paying { hash, .. }) =
            order.trade.payout.as_ref().map(|p| &p.state)
        {
            self.hashes.insert(&hash.0, id)?;
        }
        if order.lightning_pending() {
            self.ln_watch.insert(id, ())?;
            self.ln_work.push(order.id);
        } else {
            self.ln_watch.remove(id)?;
        }
        Ok(())
    }

    /// Keeps [`OPEN_ORDERS`] and [`ORDER_STATS`] in step with an order going from `before` to
    /// `after`.
    fn count(&mut self, before: Option<&Order>, after: &Order) -> Result<(), StoreError> {
        let mut deltas = BTreeMap::new();
        stat_deltas(&mut deltas, before, after);
        self.add_stats(deltas)?;
        let id = after.id.as_u128();
        if after.is_terminal() {
            self.open_orders.remove(id)?;
        } else {
            self.open_orders.insert(id, ())?;
        }
        Ok(())
    }

    fn add_stats(&mut self, deltas: BTreeMap<String, i64>) -> Result<(), StoreError> {
        for (key, delta) in deltas {
            let have = self.order_stats.get(key.as_str())?.map(|v| v.value());
            let have = have.unwrap_or(0);
            self.order_stats
                .insert(key.as_str(), have.saturating_add_signed(delta))?;
        }
        Ok(())
    }

    /// Builds [`OPEN_ORDERS`] and [`ORDER_STATS`] from every stored order, once, for a store
    /// made before they existed. True if there were orders to index.
    pub fn index_orders(&mut self) -> Result<bool, StoreError> {
        if self.meta.get(META_ORDER_INDEX)?.is_some() {
            return Ok(false);
        }
        self.open_orders.retain(|_, _| false)?;
        self.order_stats.retain(|_, _| false)?;
        let mut deltas = BTreeMap::new();
        let mut any = false;
        for entry in self.orders.iter()? {
            let (id, bytes) = entry?;
            let o: Order = decode("orders", bytes.value())?;
            stat_deltas(&mut deltas, None, &o);
            if !o.is_terminal() {
                self.open_orders.insert(id.value(), ())?;
            }
            any = true;
        }
        self.add_stats(deltas)?;
        self.meta.insert(META_ORDER_INDEX, 1)?;
        Ok(any)
    }

    /// The order a payment hash belongs to.
    pub fn order_by_hash(&self, hash: &PaymentHash) -> Result<Option<Uuid>, StoreError> {
        Ok(self
            .hashes
            .get(&hash.0)?
            .map(|v| Uuid::from_u128(v.value())))
    }

    /// Gives the seller's escrow back: the hold invoice is queued for cancelling (the escrow
    /// worker does it after the commit) and the escrow is marked refunded.
    pub fn refund(&mut self, order: &mut Order) -> Result<(), StoreError> {
        if let Some(e) = &mut order.trade.escrow {
            if !matches!(e.state, EscrowState::Settling | EscrowState::Settled) {
                tracing::debug!(order = %order.id, "refund: hold {} to cancel", e.hash());
                self.cancel_holds.insert(&e.hash().0, ())?;
                e.state = EscrowState::Refunded;
                self.ln_work.push(order.id);
            }
        }
        Ok(())
    }

    /// Hold invoices waiting to be cancelled.
    pub fn holds_to_cancel(&self) -> Result<Vec<PaymentHash>, StoreError> {
        let mut v = Vec::new();
        for entry in self.cancel_holds.iter()? {
            v.push(PaymentHash(*entry?.0.value()));
        }
        Ok(v)
    }

    /// The node confirmed a hold invoice is cancelled.
    pub fn hold_cancelled(&mut self, hash: &PaymentHash) -> Result<(), StoreError> {
        self.cancel_holds.remove(&hash.0)?;
        Ok(())
    }

    /// Sets the block at which an unfinished trade is wound up.
    pub fn set_escrow_deadline(&mut self, block: u32, order: Uuid) -> Result<(), StoreError> {
        self.escrow_deadlines.insert((block, order.as_u128()), ())?;
        Ok(())
    }

    /// Removes and returns the orders whose wind-up block is at or below `height`.
    pub fn take_due_escrows(&mut self, height: u32) -> Result<Vec<Uuid>, StoreError> {
        let end = (height, u128::MAX);
        let mut due = Vec::new();
        for entry in self.escrow_deadlines.range((0u32, 0u128)..=end)? {
            let id = Uuid::from_u128(entry?.0.value().1);
            if !due.contains(&id) {
                due.push(id);
            }
        }
        self.escrow_deadlines
            .retain_in((0u32, 0u128)..=end, |_, _| false)?;
        Ok(due)
    }

    /// A dispute by id.
    pub fn dispute(&self, id: Uuid) -> Result<Option<DisputeRecord>, StoreError> {
        match self.disputes.get(id.as_u128())? {
            Some(v) => Ok(Some(decode("disputes", v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a dispute.
    pub fn put_dispute(&mut self, d: &DisputeRecord) -> Result<(), StoreError> {
        self.disputes.insert(d.id.as_u128(), encode(d).as_slice())?;
        Ok(())
    }

    /// Every dispute (solvers and the operator list them; there are few).
    pub fn disputes(&self) -> Result<Vec<DisputeRecord>, StoreError> {
        let mut v = Vec::new();
        for entry in self.disputes.iter()? {
            v.push(decode("disputes", entry?.1.value())?);
        }
        Ok(v)
    }

    /// Ids of the orders an identity takes part in.
    pub fn orders_of(&self, identity: &PublicKey) -> Result<Vec<Uuid>, StoreError> {
        let mut ids = Vec::new();
        for id in self.identity_orders.get(&identity.to_bytes())? {
            ids.push(Uuid::from_u128(id?.value()));
        }
        Ok(ids)
    }

    /// A user by identity key.
    pub fn user(&self, identity: &PublicKey) -> Result<Option<User>, StoreError> {
        match self.users.get(&identity.to_bytes())? {
            Some(v) => Ok(Some(decode("users", v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a user.
    pub fn put_user(&mut self, identity: &PublicKey, user: &User) -> Result<(), StoreError> {
        self.users
            .insert(&identity.to_bytes(), encode(user).as_slice())?;
        Ok(())
    }

    /// Sets a persisted deadline.
    pub fn set_timer(&mut self, at: i64, order: Uuid, timer: Timer) -> Result<(), StoreError> {
        self.timers
            .insert((at.max(0) as u64, order.as_u128()), timer as u8)?;
        Ok(())
    }

    /// Removes a persisted deadline.
    pub fn clear_timer(&mut self, at: i64, order: Uuid) -> Result<(), StoreError> {
        self.timers.remove((at.max(0) as u64, order.as_u128()))?;
        Ok(())
    }

    /// Removes and returns every deadline due at or before `now`.
    pub fn take_due_timers(&mut self, now: i64) -> Result<Vec<(Uuid, Timer)>, StoreError> {
        let mut due = Vec::new();
        let end = (now.max(0) as u64, u128::MAX);
        for entry in self.timers.range((0u64, 0u128)..=end)? {
            let (k, v) = entry?;
            let (_, id) = k.value();
            if let Some(t) = Timer::from_u8(v.value()) {
                due.push((Uuid::from_u128(id), t));
            }
        }
        self.timers.retain_in((0u64, 0u128)..=end, |_, _| false)?;
        Ok(due)
    }

    /// Queues an outgoing message in the durable outbox.
    pub fn send(&mut self, out: Outgoing) -> Result<(), StoreError> {
        let seq = self
            .meta
            .get(META_OUTBOX_NEXT)?
            .map(|v| v.value())
            .unwrap_or(0);
        self.meta.insert(META_OUTBOX_NEXT, seq + 1)?;
        self.outbox.insert(seq, encode(&out).as_slice())?;
        self.out.push((seq, out));
        Ok(())
    }

    /// Takes back the messages queued for `to` (they never leave the box).
    pub fn take_direct_to(
        &mut self,
        to: &PublicKey,
    ) -> Result<Vec<mostro_core::prelude::Message>, StoreError> {
        let mut mine = Vec::new();
        let mut rest = Vec::new();
        for (seq, o) in std::mem::take(&mut self.out) {
            match o {
                Outgoing::Direct {
                    to: dest, message, ..
                } if dest == *to => {
                    self.outbox.remove(seq)?;
                    mine.push(message);
                }
                o => rest.push((seq, o)),
            }
        }
        self.out = rest;
        Ok(mine)
    }

    /// True if this id (outer or inner) was handled before.
    pub fn seen(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.processed.get(id)?.is_some())
    }

    /// Records that a message was handled and removes it from the inbox, in the same commit as
    /// its effects: the engine never handles an id twice, and never skips one.
    pub fn mark_done(&mut self, seq: u64, ids: &[[u8; 32]], now: i64) -> Result<(), StoreError> {
        for id in ids {
            self.processed.insert(id, now.max(0) as u64)?;
        }
        // The request itself goes with its inbox entry: only the engine ever reads it, and a
        // flood of requests must not stay on disk once handled.
        let event = self.inbox.remove(seq)?.map(|v| *v.value().0);
        if let Some(id) = event {
            self.events.remove(&id)?;
        }
        Ok(())
    }

    /// Forgets handled ids older than `before`; stale requests are refused by freshness anyway.
    pub fn prune_processed(&mut self, before: i64) -> Result<u64, StoreError> {
        let before = before.max(0) as u64;
        let mut n = 0;
        self.processed.retain(|_, at| {
            let keep = at >= before;
            if !keep {
                n += 1;
            }
            keep
        })?;
        Ok(n)
    }

    /// Every order that is not finished (for rebuilding the active-key cache).
    pub fn open_orders(&self) -> Result<Vec<Order>, StoreError> {
        let mut v = Vec::new();
        for entry in self.open_orders.iter()? {
            let id = Uuid::from_u128(entry?.0.value());
            v.extend(self.order(id)?);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    fn order(status: Status) -> Order {
        let keys = nostr::Keys::generate();
        let mut o = crate::fuzzing::pending_order(Uuid::new_v4(), keys.public_key());
        o.status = status;
        o
    }

    fn stat(txn: &WriteTransaction, key: &str) -> u64 {
        let t = txn.open_table(ORDER_STATS).unwrap();
        let v = t.get(key).unwrap().map(|v| v.value()).unwrap_or(0);
        v
    }

    #[test]
    fn order_writes_keep_the_open_index_and_totals() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        crate::store::create_tables(&txn).unwrap();
        let mut a = order(Status::Pending);
        let b = order(Status::Pending);
        {
            let mut tx = Tx::open(&txn).unwrap();
            tx.put_order(&a).unwrap();
            tx.put_order(&b).unwrap();
            a.status = Status::Active;
            tx.put_order(&a).unwrap();
            a.status = Status::Success;
            tx.put_order(&a).unwrap();
            assert_eq!(tx.open_orders().unwrap().len(), 1);
            assert_eq!(tx.open_orders().unwrap()[0].id, b.id);
        }
        assert_eq!(stat(&txn, "status:pending"), 1);
        assert_eq!(stat(&txn, "status:active"), 0);
        assert_eq!(stat(&txn, "status:success"), 1);
        assert_eq!(stat(&txn, STAT_TRADES), 1);
        assert_eq!(stat(&txn, STAT_VOLUME), a.amount as u64);
        assert_eq!(stat(&txn, STAT_FEES), 2 * a.fee as u64);

        // A store from before the index: the same figures come out of one pass over the orders.
        txn.open_table(OPEN_ORDERS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        txn.open_table(ORDER_STATS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        {
            let mut tx = Tx::open(&txn).unwrap();
            assert!(tx.index_orders().unwrap());
            assert!(!tx.index_orders().unwrap(), "indexes only once");
        }
        assert_eq!(txn.open_table(OPEN_ORDERS).unwrap().len().unwrap(), 1);
        assert_eq!(stat(&txn, "status:pending"), 1);
        assert_eq!(stat(&txn, "status:success"), 1);
        assert_eq!(stat(&txn, STAT_VOLUME), a.amount as u64);
    }
}
