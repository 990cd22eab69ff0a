//! Table definitions and the typed helpers to read and write JSON-encoded records.
//!
//! Keys have fixed layouts (32-byte public keys and event ids, 128-bit UUIDs, sequence numbers)
//! so range scans are cheap; values that are whole records are serde JSON of the engine's typed
//! structs, which keeps migrations readable.

use redb::{MultimapTableDefinition, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// Small counters and markers (schema version, sequence numbers, the engine cursor).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key in [`META`] holding the schema version.
pub const META_SCHEMA_VERSION: &str = "schema_version";
/// Key in [`META`] holding the next inbox sequence number.
pub const META_INBOX_NEXT: &str = "inbox_next";
/// Key in [`META`] holding the next outbox sequence number.
pub const META_OUTBOX_NEXT: &str = "outbox_next";

/// Every event the relay stores, by id, as JSON.
pub const EVENTS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("events");
/// The node's own private messages among [`EVENTS`] (its replies to traders; a gift wrap's
/// random signer does not say it is the node's): kept under their own bound, so a flood of
/// strangers' chats never pushes them out.
pub const OWN_MESSAGES: TableDefinition<&[u8; 32], ()> = TableDefinition::new("own_messages");
/// Messages addressed to the node, in arrival order: seq -> (event id, unix time received).
/// The engine deletes an entry in the same transaction that applies its effects, so the table
/// itself is the persisted intake position.
pub const INBOX: TableDefinition<u64, (&[u8; 32], u64)> = TableDefinition::new("inbox");
/// Ids of messages already handled (outer event id and inner message id) -> unix time handled.
pub const PROCESSED: TableDefinition<&[u8; 32], u64> = TableDefinition::new("processed");
/// Orders by UUID.
pub const ORDERS: TableDefinition<u128, &[u8]> = TableDefinition::new("orders");
/// Orders not finished. Start-up, `status` and the status page read this instead of every order
/// ever made, so they do not slow down as finished trades pile up.
pub const OPEN_ORDERS: TableDefinition<u128, ()> = TableDefinition::new("open_orders");
/// Running totals over all orders, for `/metrics`: `status:<status>` counts, `trades_completed`,
/// `volume_sats`, `fees_sats` and `payout_failures`. Every order write keeps them in step.
pub const ORDER_STATS: TableDefinition<&str, u64> = TableDefinition::new("order_stats");
/// [`ORDER_STATS`] keys: `status:<status>` (orders now in that status) and the totals.
pub const STAT_STATUS_PREFIX: &str = "status:";
/// [`ORDER_STATS`]: trades that ended in success.
pub const STAT_TRADES: &str = "trades_completed";
/// [`ORDER_STATS`]: sats traded in successful trades.
pub const STAT_VOLUME: &str = "volume_sats";
/// [`ORDER_STATS`]: fees of successful trades, both sides.
pub const STAT_FEES: &str = "fees_sats";
/// [`ORDER_STATS`]: failed attempts to pay a buyer.
pub const STAT_PAYOUT_FAILURES: &str = "payout_failures";
/// Key in [`META`] set once [`OPEN_ORDERS`] and [`ORDER_STATS`] cover every order (a store made
/// before they existed is indexed once at start-up).
pub const META_ORDER_INDEX: &str = "order_index";
/// Orders each identity key takes part in (maker or taker), for `orders` and `restore-session`.
pub const IDENTITY_ORDERS: MultimapTableDefinition<&[u8; 32], u128> =
    MultimapTableDefinition::new("identity_orders");
/// Persisted deadlines: (unix time, order id) -> timer kind. Restarts neither skip nor reset them.
pub const TIMERS: TableDefinition<(u64, u128), u8> = TableDefinition::new("timers");
/// Users by identity public key.
pub const USERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("users");
/// Disputes by UUID.
pub const DISPUTES: TableDefinition<u128, &[u8]> = TableDefinition::new("disputes");
/// Replies decided but not yet signed and published: seq -> JSON.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Hold invoices by payment hash, as JSON [`crate::lightning::HoldRecord`]s (kept after they end).
pub const HOLDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("holds");
/// Hold invoices not yet settled or cancelled: what the deadline guard watches. Start-up reads
/// only this, so it does not slow down as finished trades pile up.
pub const OPEN_HOLDS: TableDefinition<&[u8; 32], ()> = TableDefinition::new("open_holds");

/// How the box's outgoing payments ended, as JSON [`crate::lightning::PayOutcome`]s, written
/// from the node's events before they are acknowledged. ldk-node's own record of a payment can
/// be gone (see `LdkNode::send`), and the payout must never be made twice.
pub const PAYMENTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("payments");
/// Outgoing payments handed to the node whose outcome is not yet known: payment hash -> the
/// block from which any part of them that left must have expired. Written before the node is
/// asked, removed with the outcome, so it holds across any number of restarts: until then a
/// refused resend does not prove that the payment never left.
pub const SENDS: TableDefinition<&[u8; 32], u32> = TableDefinition::new("sends");
/// Held payments LDK claimed after the box had recorded them cancelled (so the order was
/// cancelled and the payer told it has the sats back): hash -> msat. Rare, and for a solver to
/// look at; shown on the status page and in `/metrics`.
pub const LATE_CLAIMS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("late_claims");
/// Which order a payment hash belongs to (escrow hold invoices and buyer payouts), so a
/// Lightning event finds its trade.
pub const HASHES: TableDefinition<&[u8; 32], u128> = TableDefinition::new("hashes");
/// Orders whose Lightning side is not finished (an escrow to issue, watch, settle; a payout to
/// make or watch). The escrow worker goes through them at start-up and periodically.
pub const LN_WATCH: TableDefinition<u128, ()> = TableDefinition::new("ln_watch");
/// Hold invoices to cancel (the seller gets the sats back), kept until the node confirms.
pub const CANCEL_HOLDS: TableDefinition<&[u8; 32], ()> = TableDefinition::new("cancel_holds");
/// Escrow wind-up points: (block height, order id). An unfinished trade whose held payment
/// reaches its margin is cancelled or sent to dispute (reference §4.13).
pub const ESCROW_DEADLINES: TableDefinition<(u32, u128), ()> =
    TableDefinition::new("escrow_deadlines");

pub(super) fn create_all(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(EVENTS)?;
    txn.open_table(INBOX)?;
    txn.open_table(PROCESSED)?;
    txn.open_table(ORDERS)?;
    txn.open_table(OPEN_ORDERS)?;
    txn.open_table(ORDER_STATS)?;
    txn.open_multimap_table(IDENTITY_ORDERS)?;
    txn.open_table(TIMERS)?;
    txn.open_table(USERS)?;
    txn.open_table(DISPUTES)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(HOLDS)?;
    txn.open_table(OPEN_HOLDS)?;
    txn.open_table(HASHES)?;
    txn.open_table(LN_WATCH)?;
    txn.open_table(CANCEL_HOLDS)?;
    txn.open_table(ESCROW_DEADLINES)?;
    txn.open_table(PAYMENTS)?;
    txn.open_table(SENDS)?;
    txn.open_table(OWN_MESSAGES)?;
    txn.open_table(LATE_CLAIMS)?;
    Ok(())
}

/// Copies every table of `from` into `to` (a consistent snapshot for backups). A table added
/// to [`create_all`] must be added here too; the backup test restores a store and reads it.
pub(super) fn copy_all(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
) -> Result<(), StoreError> {
    use redb::ReadableMultimapTable;
    macro_rules! copy {
        ($($t:expr),*) => {$({
            let src = from.open_table($t)?;
            let mut dst = to.open_table($t)?;
            for entry in src.iter()? {
                let (k, v) = entry?;
                dst.insert(k.value(), v.value())?;
            }
        })*};
    }
    copy!(META, EVENTS, INBOX, PROCESSED, ORDERS, TIMERS, USERS, DISPUTES, OUTBOX, HOLDS);
    copy!(OPEN_HOLDS, HASHES, LN_WATCH, CANCEL_HOLDS, ESCROW_DEADLINES);
    copy!(
        OPEN_ORDERS,
        ORDER_STATS,
        PAYMENTS,
        SENDS,
        OWN_MESSAGES,
        LATE_CLAIMS
    );
    let src = from.open_multimap_table(IDENTITY_ORDERS)?;
    let mut dst = to.open_multimap_table(IDENTITY_ORDERS)?;
    for entry in src.iter()? {
        let (k, values) = entry?;
        for v in values {
            dst.insert(k.value(), v?.value())?;
        }
    }
    Ok(())
}

/// Encodes a record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

/// Decodes a record, naming the table on failure.
pub fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

/// Takes the next number of a sequence kept in [`META`].
pub fn next_seq(txn: &redb::WriteTransaction, key: &str) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let next = meta.get(key)?.map(|v| v.value()).unwrap_or(0);
    meta.insert(key, next + 1)?;
    Ok(next)
}
