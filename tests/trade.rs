//! Whole trades over the real relay with real Lightning wallets on a real regtest chain: the
//! seller (alice's wallet) pays the hold invoice, the buyer (bob's wallet) is paid, and every
//! balance is checked to the sat.

mod common;

use common::trade::*;
use common::*;
use mostro_core::prelude::*;

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
    let buyer_key = t.buyer.trade_keys(b).await.public_key();

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
    t.seller
        .send(s, Some(id), Action::RateUser, Some(Payload::RatingUser(1)))
        .await;

    // The buyer's reputation is public (38384, `d` = the rated trade key): one review of 5,
    // counted at half weight as mostro-core does for a first rating.
    let rating = t.seller.wait_rating(&buyer_key).await;
    assert_eq!(tag_value(&rating, "total_reviews").as_deref(), Some("1"));
    assert_eq!(tag_value(&rating, "total_rating").as_deref(), Some("2.5"));
    assert_eq!(tag_value(&rating, "last_rating").as_deref(), Some("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sell_order_trade_pays_everyone_to_the_sat() {
    let t = trade(&[]).await;
    let before = balances(&t).await;

    // The seller makes a sell order; the buyer takes it without an invoice.
    let (id, s) = sell_order(&t).await;
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
    let rid = send_buyer_invoice(&t, b, id, Action::AddInvoice).await;
    let wait = t.buyer.expect(b, Action::WaitingSellerToPay).await;
    assert_eq!(wait.get_inner_message_kind().request_id, Some(rid));
    let notice = t.seller.expect(s, Action::PayInvoice).await;
    assert!(
        matches!(&notice.get_inner_message_kind().payload, Some(Payload::Peer(p)) if p.pubkey.is_empty()),
        "first pay-invoice is the taker's reputation: {notice:?}"
    );
    let (view, hold) = pay_request(&t.seller.expect(s, Action::PayInvoice).await);
    assert_eq!(view.amount, AMOUNT + FEE);

    // The seller pays from the command line, as in the README's playground: `dev pay` answers
    // once the box holds the payment, so the buyer's fiat-sent right after it finds the order
    // active. Both learn each other's trade key.
    let wallets = &t.m.b.running.dev_wallets;
    wallets
        .write()
        .unwrap()
        .insert("alice".into(), t.m.alice.clone());
    let paid = cli_ok(&t.m.b.dir, &["dev", "pay", "alice", &hold]).await;
    assert!(
        paid.stdout.contains("the box holds them"),
        "{}",
        paid.stdout
    );
    let shown = cli_ok(&t.m.b.dir, &["--json", "order", "show", &id.to_string()]).await;
    assert_eq!(shown.json()["status"], "active");
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
    let rid = send_buyer_invoice(&t, b, id, Action::AddInvoice).await;
    let accepted = t.buyer.expect(b, Action::HoldInvoicePaymentAccepted).await;
    assert_eq!(accepted.get_inner_message_kind().request_id, Some(rid));
    t.seller.expect(s, Action::BuyerTookOrder).await;

    fiat_release_and_rate(&t, id, s, b).await;
    assert_paid_to_the_sat(&t, &before).await;
}

/// A buy order made with the buyer's invoice: the invoice must be for what the buyer is paid
/// (amount − fee, as the reference checks it), and that invoice is paid at the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buy_order_made_with_the_buyers_invoice_pays_it() {
    let t = trade(&[]).await;
    let before = balances(&t).await;
    let mut full = fixed_order(Kind::Buy, AMOUNT, 10);
    full.buyer_invoice = Some(invoice(&t.m.bob, AMOUNT));
    let (b, rid) = t.buyer.new_order(full).await;
    assert_eq!(
        cant_do(&t.buyer.reply(b, Some(rid)).await),
        Some(CantDoReason::InvalidInvoice),
        "an invoice for the whole amount would fail at every payout attempt"
    );
    let mut with_invoice = fixed_order(Kind::Buy, AMOUNT, 10);
    with_invoice.buyer_invoice = Some(invoice(&t.m.bob, AMOUNT - FEE));
    let (b, rid) = t.buyer.new_order(with_invoice).await;
    let id = order_of(&t.buyer.reply(b, Some(rid)).await).id.unwrap();
    let s = t.seller.take_index();
    t.seller
        .send(s, Some(id), Action::TakeBuy, Some(Payload::Amount(0)))
        .await;
    let (_, hold) = pay_request(&t.seller.expect(s, Action::PayInvoice).await);
    seller_pays(&t, &hold);
    // The buyer's invoice is known: the trade is active at once.
    t.buyer.expect(b, Action::HoldInvoicePaymentAccepted).await;
    t.seller.expect(s, Action::BuyerTookOrder).await;
    fiat_release_and_rate(&t, id, s, b).await;
    assert_paid_to_the_sat(&t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn market_priced_range_order_is_taken_twice() {
    // 100,000 USD per BTC: 20 USD = 20,000 sats, less a 1 % premium = 19,800 sats.
    let api = price_stub(r#"{"BTC":{"USD":100000.0},"base":"BTC"}"#).await;
    let set_api = format!("price.api_url={api}");
    let t = trade(&[&set_api]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while t.m.b.running.prices.quote("USD", now()).is_err() {
        assert!(tokio::time::Instant::now() < deadline, "no price fetched");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = balances(&t).await;
    let range = SmallOrder {
        amount: 0,
        fiat_amount: 0,
        min_amount: Some(10),
        max_amount: Some(30),
        premium: 1,
        ..fixed_order(Kind::Sell, 0, 0)
    };
    let (s, rid) = t.seller.new_order(range).await;
    let id = order_of(&t.seller.reply(s, Some(rid)).await).id.unwrap();

    // First take: 20 USD, outside the range refused first.
    let b = t.buyer.take_index();
    let rid = t
        .buyer
        .send(b, Some(id), Action::TakeSell, Some(Payload::Amount(31)))
        .await;
    assert_eq!(
        cant_do(&t.buyer.reply(b, Some(rid)).await),
        Some(CantDoReason::OutOfRangeSatsAmount)
    );
    let b = t.buyer.take_index();
    t.buyer
        .send(b, Some(id), Action::TakeSell, Some(Payload::Amount(20)))
        .await;
    let (sats, fee) = (19_800, 99);
    let ask = order_of(&t.buyer.expect(b, Action::AddInvoice).await);
    assert_eq!(
        ask.amount,
        sats - fee,
        "priced at take: 20 USD less 1 % premium, less fee"
    );
    assert_eq!(ask.fiat_amount, 20);
    let inv = invoice(&t.m.bob, sats - fee);
    t.buyer
        .send(
            b,
            Some(id),
            Action::AddInvoice,
            Some(Payload::PaymentRequest(None, inv, None)),
        )
        .await;
    t.seller.expect(s, Action::PayInvoice).await;
    let (view, hold) = pay_request(&t.seller.expect(s, Action::PayInvoice).await);
    assert_eq!(view.amount, sats + fee);
    t.m.alice
        .bolt11_payment()
        .send(&hold.parse().unwrap(), None)
        .unwrap();
    t.seller.expect(s, Action::BuyerTookOrder).await;
    fiat_sent(&t, id, s, b).await;

    // Release with the maker's next trade key: 30 − 20 = 10 = min, so a fixed 10 USD child.
    let next = t.seller.take_index();
    let next_key = t.seller.trade_keys(next).await.public_key().to_hex();
    t.seller
        .send(
            s,
            Some(id),
            Action::Release,
            Some(Payload::NextTrade(next_key, next as u32)),
        )
        .await;
    let child = t.seller.expect(next, Action::NewOrder).await;
    let child_order = order_of(&child);
    assert_eq!(child.get_inner_message_kind().trade_index, Some(next));
    assert_eq!(
        (child_order.fiat_amount, child_order.min_amount),
        (10, None)
    );
    let child_id = child_order.id.unwrap();
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    t.seller.wait_order_status(child_id, "pending").await;
    assert_moved(&t, &before, sats - fee, sats + fee, 2 * fee).await;

    // Second take, of the child: 10 USD = 9,900 sats.
    let before = balances(&t).await;
    let b2 = t.buyer.take_index();
    let inv = invoice(&t.m.bob, 9_900 - 50);
    t.buyer
        .send(
            b2,
            Some(child_id),
            Action::TakeSell,
            Some(Payload::PaymentRequest(None, inv, None)),
        )
        .await;
    t.seller.expect(next, Action::PayInvoice).await;
    let (_, hold) = pay_request(&t.seller.expect(next, Action::PayInvoice).await);
    t.m.alice
        .bolt11_payment()
        .send(&hold.parse().unwrap(), None)
        .unwrap();
    t.seller.expect(next, Action::BuyerTookOrder).await;
    fiat_sent(&t, child_id, next, b2).await;
    t.seller
        .send(next, Some(child_id), Action::Release, None)
        .await;
    t.buyer.expect(b2, Action::PurchaseCompleted).await;
    assert_moved(&t, &before, 9_900 - 50, 9_900 + 50, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_payout_asks_for_a_new_invoice_then_pays_once() {
    let t = trade(&[
        "lightning.payment_attempts=2",
        "lightning.payment_retries_interval=1",
        "lightning.invoice_reminder_interval=2",
    ])
    .await;
    let carol = stranded_wallet(&t);
    let before = balances(&t).await;
    let (id, s) = sell_order(&t).await;
    let b = t.buyer.take_index();
    // An invoice nobody can route to.
    let unroutable = invoice(&carol, AMOUNT - FEE);
    t.buyer
        .send(
            b,
            Some(id),
            Action::TakeSell,
            Some(Payload::PaymentRequest(None, unroutable, None)),
        )
        .await;
    t.seller.expect(s, Action::PayInvoice).await;
    let (_, hold) = pay_request(&t.seller.expect(s, Action::PayInvoice).await);
    seller_pays(&t, &hold);
    t.buyer.expect(b, Action::HoldInvoicePaymentAccepted).await;
    fiat_sent(&t, id, s, b).await;
    t.seller.send(s, Some(id), Action::Release, None).await;
    t.buyer.expect(b, Action::Released).await;

    // First failure is announced with the retries left; once they are used up the buyer is
    // asked for a new invoice. The order stays settled-hold-invoice: nothing is lost.
    let failed = t.buyer.expect(b, Action::PaymentFailed).await;
    match failed.get_inner_message_kind().payload {
        Some(Payload::PaymentFailed(ref info)) => {
            assert_eq!(
                (info.payment_attempts, info.payment_retries_interval),
                (1, 1)
            )
        }
        ref other => panic!("payment-failed without its info: {other:?}"),
    }
    let ask = order_of(&t.buyer.expect(b, Action::AddInvoice).await);
    assert_eq!(ask.amount, AMOUNT - FEE);
    assert_eq!(ask.status, Some(Status::SettledHoldInvoice));

    // A buyer who does not answer is asked again, and the operator sees the trade waiting.
    let again = order_of(&t.buyer.expect(b, Action::AddInvoice).await);
    assert_eq!((again.id, again.amount), (Some(id), AMOUNT - FEE));
    let metrics = common::metrics(&t.m.b.dir).await;
    assert!(
        metrics.contains("mostro_payouts_needing_invoice 1"),
        "{metrics}"
    );
    let html = common::status_page(&t.m.b.dir).await;
    assert!(
        html.contains("needs-invoice") && html.contains(&id.to_string()),
        "{html}"
    );

    // A new invoice: updated, paid once.
    let rid = send_buyer_invoice(&t, b, id, Action::AddInvoice).await;
    let updated = t.buyer.expect(b, Action::InvoiceUpdated).await;
    assert_eq!(updated.get_inner_message_kind().request_id, Some(rid));
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    assert_paid_to_the_sat(&t, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_and_racing_releases_pay_once() {
    let t = trade(&[]).await;
    let before = balances(&t).await;
    let (id, s, b) = active_trade(&t).await;
    fiat_sent(&t, id, s, b).await;

    // The seller's release, sent twice as the same event and once more as a new one, while
    // the buyer asks to cancel at the same moment.
    let release = Message::new_order(Some(id), Some(900), None, Action::Release, None);
    let ev = t.seller.wrap(&release, s).await;
    let again = Message::new_order(Some(id), Some(901), None, Action::Release, None);
    let ev2 = t.seller.wrap(&again, s).await;
    let cancel = Message::new_order(Some(id), Some(902), None, Action::Cancel, None);
    let cev = t.buyer.wrap(&cancel, b).await;
    let (r1, r2, r3, r4) = tokio::join!(
        t.seller.publish(&ev),
        t.buyer.publish(&cev),
        t.seller.publish(&ev),
        t.seller.publish(&ev2)
    );
    assert!(r1.is_ok() && r4.is_ok(), "{r1:?} {r2:?} {r3:?} {r4:?}");
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    // The second release was refused; the exact replay got no answer at all.
    let refused = t.seller.reply(s, Some(901)).await;
    assert_eq!(cant_do(&refused), Some(CantDoReason::NotAllowedByStatus));
    assert_paid_to_the_sat(&t, &before).await;
    let paid: Vec<_> = t.m.b.ln().list_payments_with_filter(|p| {
        p.direction == ldk_node::payment::PaymentDirection::Outbound
            && matches!(p.kind, ldk_node::payment::PaymentKind::Bolt11 { .. })
            && p.status == ldk_node::payment::PaymentStatus::Succeeded
    });
    assert_eq!(paid.len(), 1, "exactly one payout left the node: {paid:#?}");
}

/// A force-close puts the seller's held payment on chain. `order show` then says so, with the
/// block that decides it, and the trade still completes: at the release the box claims the
/// payment on chain and pays the buyer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_payment_in_a_closed_channel_shows_on_chain_and_completes() {
    let t = trade(&[]).await;
    let (id, s, b) = active_trade(&t).await;
    let alice = t.m.alice.node_id();
    let chan =
        t.m.b
            .ln()
            .list_channels()
            .into_iter()
            .find(|c| c.counterparty_node_id == alice)
            .unwrap();
    cli_ok(
        &t.m.b.dir,
        &["channel", "close", &chan.channel_id.to_string(), "--force"],
    )
    .await;
    let show = || async {
        cli_ok(&t.m.b.dir, &["--json", "order", "show", &id.to_string()])
            .await
            .json()
    };
    // Once the commitment transaction confirms, the held HTLC is an output of its own.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let waiting = loop {
        let height = mine_and_sync(&t.m.b.chain, 1, &[t.m.b.ln(), &t.m.alice]).await;
        let o = show().await;
        if let Some(w) = o["on_chain"].as_array().and_then(|a| a.first()).cloned() {
            break (w, height);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never on chain: {o}"
        );
    };
    let (w, height) = waiting;
    println!("at block {height} the order shows on chain: {w}");
    assert_eq!(w["payment"], "escrow", "{w}");
    assert_eq!(w["amount_sats"], AMOUNT + FEE, "{w}");
    assert!(
        w["until_block"].as_u64().unwrap() > height as u64 + 100,
        "{w}"
    );
    assert_eq!(show().await["status"], "active");

    // The release: the box claims on chain with the preimage, then pays the buyer.
    fiat_sent(&t, id, s, b).await;
    t.seller.send(s, Some(id), Action::Release, None).await;
    t.buyer.expect(b, Action::Released).await;
    let deadline = tokio::time::Instant::now() + WAIT * 6;
    while show().await["status"] != "success" {
        assert!(tokio::time::Instant::now() < deadline, "{}", show().await);
        mine_and_sync(&t.m.b.chain, 1, &[t.m.b.ln(), &t.m.alice]).await;
    }
}
