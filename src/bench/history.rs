//! Finished trades written straight into a store, so the benchmarks can ask how the box behaves
//! with a long history behind it.

use std::path::Path;

use mostro_core::prelude::Status;
use nostr::Keys;
use uuid::Uuid;

use crate::engine::order::{Escrow, EscrowState, Party, Payout, PayoutState, Side};
use crate::engine::tx::Tx;
use crate::lightning::Preimage;

/// Orders per transaction while filling.
const BATCH: usize = 20_000;

/// Writes `n` finished trades into the store at `path` (nine in ten successful with their
/// escrow and payout recorded, one in ten cancelled), among 1,000 returning traders, the way
/// the engine stores them. Prints progress; returns the file's size in bytes.
pub fn fill(path: &Path, n: usize) -> anyhow::Result<u64> {
    let db = redb::Database::builder()
        .set_cache_size(64 << 20)
        .create(path)?;
    let traders: Vec<Keys> = (0..1_000).map(|_| Keys::generate()).collect();
    let now = crate::protocol::now();
    let mut done = 0;
    while done < n {
        let txn = db.begin_write()?;
        crate::store::create_tables(&txn)?;
        // put_order keeps the open-order index and totals: nothing to index at start-up.
        txn.open_table(crate::store::META)?
            .insert(crate::store::META_ORDER_INDEX, 1)?;
        {
            let mut tx = Tx::open(&txn)?;
            for i in done..(done + BATCH).min(n) {
                let seller = &traders[i % traders.len()];
                let buyer = &traders[(i * 7 + 1) % traders.len()];
                tx.put_order(&finished(i, seller, buyer, now))?;
            }
        }
        txn.commit()?;
        done = (done + BATCH).min(n);
        if n >= 100_000 {
            eprintln!("bench: history {done}/{n} orders written");
        }
    }
    drop(db);
    Ok(std::fs::metadata(path)?.len())
}

fn finished(i: usize, seller: &Keys, buyer: &Keys, now: i64) -> crate::engine::order::Order {
    let party = |k: &Keys| Party {
        trade_pubkey: Keys::generate().public_key(),
        identity: k.public_key(),
        trade_index: Some(i as i64 + 1),
        transport: crate::protocol::DIRECT,
    };
    let age = (i as i64 % 365) * 86_400;
    let mut o = crate::fuzzing::pending_order(Uuid::new_v4(), seller.public_key());
    o.seller = Some(party(seller));
    o.buyer = Some(party(buyer));
    o.created_at = now - age - 3_600;
    o.expires_at = o.created_at + 86_400;
    o.taken_at = o.created_at + 600;
    if i % 10 == 9 {
        o.status = Status::Canceled;
        return o;
    }
    o.status = Status::Success;
    o.buyer_invoice = Some(format!("buyer{}@example.com", i % 1_000));
    o.trade.escrow = Some(Escrow {
        preimage: Preimage::random(),
        amount: o.amount + o.fee,
        state: EscrowState::Settled,
        request_id: Some(1),
        requested_by: Side::Buyer,
    });
    o.trade.payout = Some(Payout {
        state: PayoutState::Paid,
        fee_msat: 1_000,
        ..Payout::due()
    });
    o.trade.rated = vec![Side::Buyer, Side::Seller];
    o
}
