//! Power cuts in the middle of a trade: the real binary is killed (`kill -9`, or an abort at a
//! fault-injection point) after the hold is accepted, after the release is recorded, after the
//! settlement before the payout, and during the payout. After each restart the trade goes on,
//! and in the end the buyer is paid exactly once and no sat is lost.

mod common;

use common::process::process_market;
use common::trade::{invoice, pay_request, AMOUNT, FEE};
use common::*;
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use mostro_core::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trade_survives_a_crash_at_every_step() {
    let (m, mut b) = process_market(1, &[]).await;
    let node = mostro_box::keys::load(&m.dir).unwrap().public_key();
    let seller = Trader::new(&b.url(), node, Wire::V2, false).await;
    let buyer = Trader::new(&b.url(), node, Wire::V2, false).await;
    let (seller_before, buyer_before) = (ln_sats(&m.alice).await, ln_sats(&m.bob).await);

    // Up to the held payment, then kill -9.
    let (s, rid) = seller.new_order(fixed_order(Kind::Sell, AMOUNT, 10)).await;
    let id = order_of(&seller.reply(s, Some(rid)).await).id.unwrap();
    let bi = buyer.take_index();
    let inv = invoice(&m.bob, AMOUNT - FEE);
    buyer
        .send(
            bi,
            Some(id),
            Action::TakeSell,
            Some(Payload::PaymentRequest(None, inv, None)),
        )
        .await;
    seller.expect(s, Action::PayInvoice).await;
    let (_, hold) = pay_request(&seller.expect(s, Action::PayInvoice).await);
    m.alice
        .bolt11_payment()
        .send(&hold.parse().unwrap(), None)
        .unwrap();
    seller.expect(s, Action::BuyerTookOrder).await;
    b.kill9();

    // Back up; the trade goes on.
    let mut b = m.start(None).await;
    let seller = seller.reopen(&b.url()).await;
    let buyer = buyer.reopen(&b.url()).await;
    buyer.send(bi, Some(id), Action::FiatSent, None).await;
    buyer.expect(bi, Action::FiatSentOk).await;
    b.kill9();

    // The box dies right after recording the release.
    let mut b = m.start_and_wait(Some("before-settle")).await;
    let seller = seller.reopen(&b.url()).await;
    seller.send(s, Some(id), Action::Release, None).await;
    assert!(b.wait_exit().await, "died at before-settle");

    // Up again: it settles, and dies before starting the payout.
    let mut b = m.start(Some("after-settle")).await;
    assert!(b.wait_exit().await, "died at after-settle");

    // Up again: it starts the payout, and dies before recording that it did.
    let mut b = m.start(Some("after-pay")).await;
    assert!(b.wait_exit().await, "died at after-pay");

    // Up for good: the trade completes.
    let b = m.start(None).await;
    let seller = seller.reopen(&b.url()).await;
    let buyer = buyer.reopen(&b.url()).await;
    buyer.expect(bi, Action::PurchaseCompleted).await;
    seller.wait_order_status(id, "success").await;
    assert_eq!(ln_sats(&m.bob).await - buyer_before, (AMOUNT - FEE) as u64);
    assert_eq!(
        seller_before - ln_sats(&m.alice).await,
        (AMOUNT + FEE) as u64
    );
    let received: Vec<_> = m.bob.list_payments_with_filter(|p| {
        p.direction == PaymentDirection::Inbound
            && p.status == PaymentStatus::Succeeded
            && matches!(p.kind, PaymentKind::Bolt11 { .. })
    });
    assert_eq!(received.len(), 1, "the buyer was paid exactly once");
    let orders = cli_ok(&m.dir, &["--json", "order", "show", &id.to_string()])
        .await
        .json();
    assert_eq!(orders["status"], "success", "{orders}");
    drop(b);
}

/// An engine that stops (here: a panic at its start) ends the process with an error, so systemd
/// (`Restart=on-failure`) or the container engine starts it again; before, a panic in the
/// engine's task was read as a clean stop and the process exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_panic_ends_the_process_with_an_error() {
    let chain = start_chain().await;
    let dir = temp_dir("engine-panic");
    mostro_box::node::init(&dir, None).unwrap();
    let mut b =
        BoxProcess::spawn_crashing(&dir, free_port(), &chain, &[], Some("engine-panic")).await;
    assert!(b.wait_exit().await, "the box exited with an error status");
    let log = std::fs::read_to_string(dir.join("box.log")).unwrap();
    assert!(log.contains("the engine panicked"), "{log}");
}
