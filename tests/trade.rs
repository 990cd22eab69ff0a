//! Whole trades over the real relay with real Lightning wallets on a real regtest chain: the
//! seller (alice's wallet) pays the hold invoice, the buyer (bob's wallet) is paid, and every
//! balance is checked to the sat.

mod common;

use common::*;
use ldk_node::lightning_invoice::{Bolt11InvoiceDescription, Description};
use ldk_node::Node;
use mostro_core::prelude::*;

/// Fee per side at `mostro.fee = 0.01` for 50,000 sats: round(0.01 × 50,000 / 2).
const AMOUNT: i64 = 50_000;
const FEE: i64 = 250;

/// A market with a 1 % fee and both traders connected.
struct Trade {
    m: Market,
    seller: Trader,
    buyer: Trader,
}

async fn trade(extra: &[&str]) -> Trade {
    let mut settings = vec!["mostro.fee=0.01"];
    settings.extend_from_slice(extra);
    let m = market(&settings, 100_000).await;
    let seller = Trader::new(&m.b.url, m.b.pubkey(), Wire::V2, false).await;
    let buyer = Trader::new(&m.b.url, m.b.pubkey(), Wire::V1, false).await;
    Trade { m, seller, buyer }
}

/// An invoice of `wallet` for `sats`.
fn invoice(wallet: &Node, sats: i64) -> String {
    let desc = Bolt11InvoiceDescription::Direct(Description::new("payout".into()).unwrap());
    wallet
        .bolt11_payment()
        .receive(sats as u64 * 1000, &desc, 7200)
        .unwrap()
        .to_string()
}

/// The invoice inside a `pay-invoice` message, with the order view the seller is shown.
fn pay_request(m: &Message) -> (SmallOrder, String) {
    match &m.get_inner_message_kind().payload {
        Some(Payload::PaymentRequest(Some(o), inv, _)) => (o.clone(), inv.clone()),
        other => panic!("expected a payment request, got {other:?}"),
    }
}

/// Every sat each party owns in its channels, before the trade.
struct Balances {
    seller: u64,
    buyer: u64,
    node: u64,
}

async fn balances(t: &Trade) -> Balances {
    Balances {
        seller: ln_sats(&t.m.alice).await,
        buyer: ln_sats(&t.m.bob).await,
        node: ln_sats(t.m.b.ln()).await,
    }
}

/// Buyer +amount−fee, seller −amount−fee, node +2×fee (direct channels: no routing fee).
async fn assert_paid_to_the_sat(t: &Trade, before: &Balances) {
    let after = balances(t).await;
    assert_eq!(
        after.buyer as i64 - before.buyer as i64,
        AMOUNT - FEE,
        "buyer receives amount − fee"
    );
    assert_eq!(
        before.seller as i64 - after.seller as i64,
        AMOUNT + FEE,
        "seller pays amount + fee"
    );
    assert_eq!(
        after.node as i64 - before.node as i64,
        2 * FEE,
        "node keeps both fees"
    );
}

/// The seller pays the hold invoice from its wallet.
fn seller_pays(t: &Trade, invoice: &str) {
    let inv: ldk_node::lightning_invoice::Bolt11Invoice = invoice.parse().unwrap();
    assert_eq!(
        inv.amount_milli_satoshis(),
        Some((AMOUNT + FEE) as u64 * 1000),
        "hold invoice is for amount + fee"
    );
    t.m.alice.bolt11_payment().send(&inv, None).unwrap();
}

/// Fiat sent, release, payout, ratings: the second half of every trade.
async fn fiat_release_and_rate(t: &Trade, id: uuid::Uuid, s: i64, b: i64) {
    let rid = t.buyer.send(b, Some(id), Action::FiatSent, None).await;
    let ok = t.buyer.expect(b, Action::FiatSentOk).await;
    assert_eq!(ok.get_inner_message_kind().request_id, Some(rid));
    let seller_ok = t.seller.expect(s, Action::FiatSentOk).await;
    match &seller_ok.get_inner_message_kind().payload {
        Some(Payload::Peer(p)) => {
            assert_eq!(p.pubkey, t.buyer.trade_keys(b).await.public_key().to_hex())
        }
        other => panic!("fiat-sent-ok without the buyer's key: {other:?}"),
    }

    let rid = t.seller.send(s, Some(id), Action::Release, None).await;
    let settled = t.seller.expect(s, Action::HoldInvoicePaymentSettled).await;
    assert_eq!(settled.get_inner_message_kind().request_id, Some(rid));
    t.seller.expect(s, Action::Rate).await;
    t.buyer.expect(b, Action::Released).await;
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    t.buyer.expect(b, Action::Rate).await;
    t.seller.wait_order_status(id, "success").await;

    // Ratings: each side once; a second rating is ignored.
    t.seller
        .send(s, Some(id), Action::RateUser, Some(Payload::RatingUser(5)))
        .await;
    let got = t.seller.expect(s, Action::RateReceived).await;
    assert!(matches!(
        got.get_inner_message_kind().payload,
        Some(Payload::RatingUser(5))
    ));
    t.buyer
        .send(b, Some(id), Action::RateUser, Some(Payload::RatingUser(4)))
        .await;
    t.buyer.expect(b, Action::RateReceived).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sell_order_trade_pays_everyone_to_the_sat() {
    let t = trade(&[]).await;
    let before = balances(&t).await;

    // The seller makes a sell order; the buyer takes it without an invoice.
    let (s, rid) = t
        .seller
        .new_order(fixed_order(Kind::Sell, AMOUNT, 10))
        .await;
    let id = order_of(&t.seller.reply(s, Some(rid)).await).id.unwrap();
    let b = t.buyer.take_index();
    let rid = t
        .buyer
        .send(b, Some(id), Action::TakeSell, Some(Payload::Amount(0)))
        .await;
    let ask = t.buyer.expect(b, Action::AddInvoice).await;
    assert_eq!(ask.get_inner_message_kind().request_id, Some(rid));
    assert_eq!(
        order_of(&ask).amount,
        AMOUNT - FEE,
        "buyer asked for amount − fee"
    );
    t.seller.expect(s, Action::WaitingBuyerInvoice).await;
    t.seller.wait_order_status(id, "in-progress").await;

    // The buyer's invoice; the seller gets the taker's reputation, then the hold invoice.
    let rid = t
        .buyer
        .send(
            b,
            Some(id),
            Action::AddInvoice,
            Some(Payload::PaymentRequest(
                None,
                invoice(&t.m.bob, AMOUNT - FEE),
                None,
            )),
        )
        .await;
    let wait = t.buyer.expect(b, Action::WaitingSellerToPay).await;
    assert_eq!(wait.get_inner_message_kind().request_id, Some(rid));
    let notice = t.seller.expect(s, Action::PayInvoice).await;
    assert!(
        matches!(&notice.get_inner_message_kind().payload, Some(Payload::Peer(p)) if p.pubkey.is_empty()),
        "first pay-invoice is the taker's reputation: {notice:?}"
    );
    let (view, hold) = pay_request(&t.seller.expect(s, Action::PayInvoice).await);
    assert_eq!(view.amount, AMOUNT + FEE);

    // The seller pays; both learn each other's trade key.
    seller_pays(&t, &hold);
    let took = order_of(&t.seller.expect(s, Action::BuyerTookOrder).await);
    assert_eq!(
        took.buyer_trade_pubkey,
        Some(t.buyer.trade_keys(b).await.public_key().to_hex())
    );
    let accepted = order_of(&t.buyer.expect(b, Action::HoldInvoicePaymentAccepted).await);
    assert_eq!(
        accepted.seller_trade_pubkey,
        Some(t.seller.trade_keys(s).await.public_key().to_hex())
    );
    assert_eq!(accepted.amount, AMOUNT - FEE);

    fiat_release_and_rate(&t, id, s, b).await;
    assert_paid_to_the_sat(&t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buy_order_trade_pays_everyone_to_the_sat() {
    let t = trade(&[]).await;
    let before = balances(&t).await;

    // The buyer makes a buy order; the seller takes it and gets the hold invoice at once.
    let (b, rid) = t.buyer.new_order(fixed_order(Kind::Buy, AMOUNT, 10)).await;
    let id = order_of(&t.buyer.reply(b, Some(rid)).await).id.unwrap();
    let s = t.seller.take_index();
    let rid = t
        .seller
        .send(s, Some(id), Action::TakeBuy, Some(Payload::Amount(0)))
        .await;
    let pay = t.seller.expect(s, Action::PayInvoice).await;
    assert_eq!(pay.get_inner_message_kind().request_id, Some(rid));
    t.buyer.expect(b, Action::WaitingSellerToPay).await;
    t.buyer.wait_order_status(id, "in-progress").await;
    let (_, hold) = pay_request(&pay);
    seller_pays(&t, &hold);

    // Held: the buyer is asked for its invoice (and told who took its order).
    let ask = order_of(&t.buyer.expect(b, Action::AddInvoice).await);
    assert_eq!(ask.amount, AMOUNT - FEE);
    t.seller.expect(s, Action::WaitingBuyerInvoice).await;
    let notice = t.buyer.expect(b, Action::AddInvoice).await;
    assert!(matches!(
        &notice.get_inner_message_kind().payload,
        Some(Payload::Peer(_))
    ));
    let rid = t
        .buyer
        .send(
            b,
            Some(id),
            Action::AddInvoice,
            Some(Payload::PaymentRequest(
                None,
                invoice(&t.m.bob, AMOUNT - FEE),
                None,
            )),
        )
        .await;
    let accepted = t.buyer.expect(b, Action::HoldInvoicePaymentAccepted).await;
    assert_eq!(accepted.get_inner_message_kind().request_id, Some(rid));
    t.seller.expect(s, Action::BuyerTookOrder).await;

    fiat_release_and_rate(&t, id, s, b).await;
    assert_paid_to_the_sat(&t, &before).await;
}
