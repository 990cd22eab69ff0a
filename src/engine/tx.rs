//! Typed access to the engine's tables inside one write transaction.

use nostr::PublicKey;
use redb::{MultimapTable, ReadableMultimapTable, ReadableTable, Table, WriteTransaction};
use uuid::Uuid;

use super::order::Order;
use super::user::User;
use crate::protocol::outbound::Outgoing;
use crate::store::*;

/// Kinds of persisted deadlines in [`TIMERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Timer {
    /// A pending order reaches its `expires_at`.
    PendingExpiry = 1,
}

impl Timer {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Timer::PendingExpiry),
            _ => None,
        }
    }
}

/// The engine's tables, opened once for a batch of messages.
pub struct Tx<'t> {
    meta: Table<'t, &'static str, u64>,
    orders: Table<'t, u128, &'static [u8]>,
    users: Table<'t, &'static [u8; 32], &'static [u8]>,
    identity_orders: MultimapTable<'t, &'static [u8; 32], u128>,
    timers: Table<'t, (u64, u128), u8>,
    outbox: Table<'t, u64, &'static [u8]>,
    processed: Table<'t, &'static [u8; 32], u64>,
    inbox: Table<'t, u64, (&'static [u8; 32], u64)>,
    /// Outgoing messages queued by this batch, with their outbox sequence numbers.
    pub out: Vec<(u64, Outgoing)>,
}

impl<'t> Tx<'t> {
    /// Opens the tables.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            meta: txn.open_table(META)?,
            orders: txn.open_table(ORDERS)?,
            users: txn.open_table(USERS)?,
            identity_orders: txn.open_multimap_table(IDENTITY_ORDERS)?,
            timers: txn.open_table(TIMERS)?,
            outbox: txn.open_table(OUTBOX)?,
            processed: txn.open_table(PROCESSED)?,
            inbox: txn.open_table(INBOX)?,
            out: Vec::new(),
        })
    }

    /// An order by id.
    pub fn order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        match self.orders.get(id.as_u128())? {
            Some(v) => Ok(Some(decode("orders", v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores an order and indexes it under its parties' identities.
    pub fn put_order(&mut self, order: &Order) -> Result<(), StoreError> {
        self.orders
            .insert(order.id.as_u128(), encode(order).as_slice())?;
        for p in [&order.buyer, &order.seller].into_iter().flatten() {
            self.identity_orders
                .insert(&p.identity.to_bytes(), order.id.as_u128())?;
        }
        Ok(())
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
        self.inbox.remove(seq)?;
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
        for entry in self.orders.iter()? {
            let (_, bytes) = entry?;
            let o: Order = decode("orders", bytes.value())?;
            if !o.is_terminal() {
                v.push(o);
            }
        }
        Ok(v)
    }
}
