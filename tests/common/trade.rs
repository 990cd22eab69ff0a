//! The trade harness: a market (box, seller wallet, buyer wallet), two traders, exact balances,
//! and the steps every trade test repeats.

use ldk_node::lightning_invoice::{Bolt11InvoiceDescription, Description};
use ldk_node::Node;
use mostro_core::prelude::*;
use uuid::Uuid;

use super::{fixed_order, ln_sats, market, order_of, wallet, Market, Trader, Wire};

/// Fee per side at `mostro.fee = 0.01` for 50,000 sats: round(0.01 × 50,000 / 2).
pub const AMOUNT: i64 = 50_000;
pub const FEE: i64 = 250;

/// A market with a 1 % fee and both traders connected.
pub struct Trade {
    pub m: Market,
    pub seller: Trader,
    pub buyer: Trader,
}

pub async fn trade(extra: &[&str]) -> Trade {
    trade_on(market(&settings(extra), 100_000).await).await
}

/// The trade harness's settings (a 1 % fee) plus `extra`.
pub fn settings<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut settings = vec!["mostro.fee=0.01"];
    settings.extend_from_slice(extra);
    settings
}

/// Two traders on a market made elsewhere.
pub async fn trade_on(m: Market) -> Trade {
    let seller = Trader::new(&m.b.url, m.b.pubkey(), Wire::V2, false).await;
    let buyer = Trader::new(&m.b.url, m.b.pubkey(), Wire::V1, false).await;
    Trade { m, seller, buyer }
}

/// An invoice of `wallet` for `sats`.
pub fn invoice(wallet: &Node, sats: i64) -> String {
    let desc = Bolt11InvoiceDescription::Direct(Description::new("payout".into()).unwrap());
    wallet
        .bolt11_payment()
        .receive(sats as u64 * 1000, &desc, 7200)
        .unwrap()
        .to_string()
}

/// The invoice inside a `pay-invoice` message, with the order view the seller is shown.
pub fn pay_request(m: &Message) -> (SmallOrder, String) {
    match &m.get_inner_message_kind().payload {
        Some(Payload::PaymentRequest(Some(o), inv, _)) => (o.clone(), inv.clone()),
        other => panic!("expected a payment request, got {other:?}"),
    }
}

/// Every sat each party owns in its channels, before the trade.
pub struct Balances {
    pub seller: u64,
    pub buyer: u64,
    pub node: u64,
}

pub async fn balances(t: &Trade) -> Balances {
    Balances {
        seller: ln_sats(&t.m.alice).await,
        buyer: ln_sats(&t.m.bob).await,
        node: ln_sats(t.m.b.ln()).await,
    }
}

/// Buyer +amount−fee, seller −amount−fee, node +2×fee (direct channels: no routing fee).
pub async fn assert_paid_to_the_sat(t: &Trade, before: &Balances) {
    assert_moved(t, before, AMOUNT - FEE, AMOUNT + FEE, 2 * FEE).await;
}

/// The seller pays the hold invoice from its wallet.
pub fn seller_pays(t: &Trade, invoice: &str) {
    let inv: ldk_node::lightning_invoice::Bolt11Invoice = invoice.parse().unwrap();
    assert_eq!(
        inv.amount_milli_satoshis(),
        Some((AMOUNT + FEE) as u64 * 1000),
        "hold invoice is for amount + fee"
    );
    t.m.alice.bolt11_payment().send(&inv, None).unwrap();
}

/// Moves of each balance since `before`: buyer gain, seller loss, node gain, in sats.
/// Payments settle or fail back a moment after the messages that announce them, so this polls
/// (with a deadline) until the balances match, then asserts.
pub async fn assert_moved(t: &Trade, before: &Balances, buyer: i64, seller: i64, node: i64) {
    let moved = |a: &Balances| {
        (
            a.buyer as i64 - before.buyer as i64,
            before.seller as i64 - a.seller as i64,
            a.node as i64 - before.node as i64,
        )
    };
    let deadline = tokio::time::Instant::now() + super::WAIT;
    let mut after = balances(t).await;
    while moved(&after) != (buyer, seller, node) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = balances(t).await;
    }
    assert_eq!(
        after.buyer as i64 - before.buyer as i64,
        buyer,
        "buyer's gain"
    );
    assert_eq!(
        before.seller as i64 - after.seller as i64,
        seller,
        "seller's loss"
    );
    assert_eq!(after.node as i64 - before.node as i64, node, "node's gain");
}

/// The seller makes a sell order of AMOUNT for 10 USD; returns (order id, trade index).
pub async fn sell_order(t: &Trade) -> (Uuid, i64) {
    let (s, rid) = t
        .seller
        .new_order(fixed_order(Kind::Sell, AMOUNT, 10))
        .await;
    (order_of(&t.seller.reply(s, Some(rid)).await).id.unwrap(), s)
}

/// The buyer sends `action` (take-sell or add-invoice) on order `id` from trade key `b`, with
/// a fresh invoice of its wallet for amount − fee; returns the request id.
pub async fn send_buyer_invoice(t: &Trade, b: i64, id: Uuid, action: Action) -> u64 {
    let inv = invoice(&t.m.bob, AMOUNT - FEE);
    t.buyer
        .send(
            b,
            Some(id),
            action,
            Some(Payload::PaymentRequest(None, inv, None)),
        )
        .await
}

/// A sell order of AMOUNT taken by the buyer with its invoice, and the hold invoice paid: the
/// trade is active. Returns (order id, seller's trade index, buyer's trade index).
pub async fn active_trade(t: &Trade) -> (Uuid, i64, i64) {
    let (id, s) = sell_order(t).await;
    let b = t.buyer.take_index();
    send_buyer_invoice(t, b, id, Action::TakeSell).await;
    t.buyer.expect(b, Action::WaitingSellerToPay).await;
    t.seller.expect(s, Action::PayInvoice).await; // the taker's reputation
    let (_, hold) = pay_request(&t.seller.expect(s, Action::PayInvoice).await);
    seller_pays(t, &hold);
    t.seller.expect(s, Action::BuyerTookOrder).await;
    t.buyer.expect(b, Action::HoldInvoicePaymentAccepted).await;
    (id, s, b)
}

/// The buyer says the fiat is sent; both get `fiat-sent-ok`.
pub async fn fiat_sent(t: &Trade, id: Uuid, s: i64, b: i64) {
    t.buyer.send(b, Some(id), Action::FiatSent, None).await;
    t.buyer.expect(b, Action::FiatSentOk).await;
    t.seller.expect(s, Action::FiatSentOk).await;
}

/// A third wallet with no channels: payments to it always fail.
pub fn stranded_wallet(t: &Trade) -> std::sync::Arc<Node> {
    wallet(&t.m.b.chain, "carol")
}
