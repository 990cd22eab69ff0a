//! Trades that do not end in a plain release: cooperative cancel, every time-out, the escrow
//! deadline, and disputes decided by a solver for either side, each with exact balances.

mod common;

use common::trade::*;
use common::*;
use mostro_core::prelude::*;
use nostr_sdk::prelude::ToBech32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_cancel_refunds_the_seller() {
    let t = trade(&[]).await;
    let before = balances(&t).await;
    let (id, s, b) = active_trade(&t).await;

    let rid = t.seller.send(s, Some(id), Action::Cancel, None).await;
    let mine = t
        .seller
        .expect(s, Action::CooperativeCancelInitiatedByYou)
        .await;
    assert_eq!(mine.get_inner_message_kind().request_id, Some(rid));
    t.buyer
        .expect(b, Action::CooperativeCancelInitiatedByPeer)
        .await;
    // Asking twice from the same side is refused.
    let rid = t.seller.send(s, Some(id), Action::Cancel, None).await;
    assert_eq!(
        cant_do(&t.seller.reply(s, Some(rid)).await),
        Some(CantDoReason::InvalidPubkey)
    );
    t.buyer.send(b, Some(id), Action::Cancel, None).await;
    t.buyer.expect(b, Action::CooperativeCancelAccepted).await;
    t.seller.expect(s, Action::CooperativeCancelAccepted).await;
    t.seller.wait_order_status(id, "canceled").await;
    assert_moved(&t, &before, 0, 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn taker_and_maker_cancels_before_the_escrow() {
    let t = trade(&[]).await;
    let before = balances(&t).await;

    // The buyer takes a sell order, then walks away: the order is back in the book.
    let (id, s) = sell_order(&t).await;
    let b = t.buyer.take_index();
    t.buyer
        .send(b, Some(id), Action::TakeSell, Some(Payload::Amount(0)))
        .await;
    t.buyer.expect(b, Action::AddInvoice).await;
    let rid = t.buyer.send(b, Some(id), Action::Cancel, None).await;
    let gone = t.buyer.expect(b, Action::Canceled).await;
    assert_eq!(gone.get_inner_message_kind().request_id, Some(rid));
    assert_eq!(
        order_of(&t.seller.expect(s, Action::NewOrder).await).status,
        Some(Status::Pending)
    );
    t.seller.wait_order_status(id, "pending").await;

    // A stranger cannot cancel it; the seller takes it back after a new take with the hold
    // invoice issued: both are told, and the invoice is cancelled.
    let b2 = t.buyer.take_index();
    send_buyer_invoice(&t, b2, id, Action::TakeSell).await;
    t.seller.expect(s, Action::PayInvoice).await;
    t.seller.expect(s, Action::PayInvoice).await;
    let stranger = Trader::new(&t.m.b.url, t.m.b.pubkey(), Wire::V2, false).await;
    let x = stranger.take_index();
    let rid = stranger.send(x, Some(id), Action::Cancel, None).await;
    assert_eq!(
        cant_do(&stranger.reply(x, Some(rid)).await),
        Some(CantDoReason::InvalidPubkey)
    );
    t.seller.send(s, Some(id), Action::Cancel, None).await;
    t.seller.expect(s, Action::Canceled).await;
    t.buyer.expect(b2, Action::Canceled).await;
    t.seller.wait_order_status(id, "canceled").await;
    assert_moved(&t, &before, 0, 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_timeouts_return_or_cancel_the_order() {
    let t = trade(&["mostro.expiration_seconds=3"]).await;
    let before = balances(&t).await;

    // Sell order, the buyer takes it and never sends an invoice: back to the book.
    let (id, s) = sell_order(&t).await;
    let b = t.buyer.take_index();
    t.buyer
        .send(b, Some(id), Action::TakeSell, Some(Payload::Amount(0)))
        .await;
    t.buyer.expect(b, Action::AddInvoice).await;
    t.buyer.expect(b, Action::Canceled).await;
    let back = order_of(&t.seller.expect(s, Action::NewOrder).await);
    assert_eq!(back.status, Some(Status::Pending));
    t.seller.wait_order_status(id, "pending").await;

    // Buy order, the seller takes it and never pays: back to the book, the invoice cancelled.
    let (b2, rid) = t.buyer.new_order(fixed_order(Kind::Buy, AMOUNT, 10)).await;
    let buy_id = order_of(&t.buyer.reply(b2, Some(rid)).await).id.unwrap();
    let s2 = t.seller.take_index();
    t.seller
        .send(s2, Some(buy_id), Action::TakeBuy, Some(Payload::Amount(0)))
        .await;
    let (_, unpaid) = pay_request(&t.seller.expect(s2, Action::PayInvoice).await);
    t.seller.expect(s2, Action::Canceled).await;
    t.buyer.expect(b2, Action::NewOrder).await;
    let hash = mostro_box::lightning::PaymentHash(
        *unpaid
            .parse::<ldk_node::lightning_invoice::Bolt11Invoice>()
            .unwrap()
            .payment_hash()
            .as_ref(),
    );
    let ln = &t.m.b.running.lightning;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        use mostro_box::lightning::{HoldState, Lightning};
        let state = ln.hold(hash).unwrap().map(|r| r.state);
        if matches!(state, Some(HoldState::Cancelled { .. })) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hold still {state:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Taken again, by a buyer with its invoice; the seller (the maker) never pays: canceled.
    let b3 = t.buyer.take_index();
    send_buyer_invoice(&t, b3, id, Action::TakeSell).await;
    t.buyer.expect(b3, Action::WaitingSellerToPay).await;
    t.buyer.expect(b3, Action::Canceled).await;
    t.seller.expect(s, Action::Canceled).await;
    t.seller.wait_order_status(id, "canceled").await;
    assert_moved(&t, &before, 0, 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escrow_deadline_cancels_active_and_disputes_fiat_sent() {
    // A short hold window: the wind-up comes 25 blocks before the held payment's deadline.
    let t = trade(&[
        "lightning.hold_invoice_cltv_delta=30",
        "lightning.escrow_deadline_margin_blocks=25",
    ])
    .await;
    let before = balances(&t).await;

    // Nobody says the fiat is sent: the seller gets the sats back.
    let (active_id, s1, b1) = active_trade(&t).await;
    mine_to_wind_up(&t).await;
    t.seller.expect(s1, Action::Canceled).await;
    t.buyer.expect(b1, Action::Canceled).await;
    t.seller.wait_order_status(active_id, "canceled").await;
    assert_moved(&t, &before, 0, 0, 0).await;

    // The buyer says it paid: a dispute is opened for a solver to decide in time.
    let (sent_id, s2, b2) = active_trade(&t).await;
    fiat_sent(&t, sent_id, s2, b2).await;
    mine_to_wind_up(&t).await;
    let by_peer = t.seller.expect(s2, Action::DisputeInitiatedByPeer).await;
    t.buyer.expect(b2, Action::DisputeInitiatedByYou).await;
    let Some(Payload::Dispute(dispute_id, None)) = by_peer.get_inner_message_kind().payload else {
        panic!("dispute notice without its id: {by_peer:?}");
    };
    let ev = t
        .seller
        .wait_event(NOSTR_DISPUTE_EVENT_KIND, &dispute_id.to_string(), |_| true)
        .await;
    assert_eq!(tag_value(&ev, "s").as_deref(), Some("initiated"));
    // The seller's sats are still held (out of its balance, not yet in the node's).
    assert_moved(&t, &before, 0, AMOUNT + FEE, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn solver_settles_for_the_buyer_and_cancels_for_the_seller() {
    let t = trade(&[]).await;
    let solver = Trader::new(&t.m.b.url, t.m.b.pubkey(), Wire::V2, false).await;
    let before = balances(&t).await;

    // The operator adds a solver (read-write) and a read-only one with the CLI.
    let npub = solver.identity.public_key().to_bech32().unwrap();
    cli_ok(&t.m.b.dir, &["solver", "add", &npub]).await;
    let reader = nostr_sdk::Keys::generate()
        .public_key()
        .to_bech32()
        .unwrap();
    cli_ok(&t.m.b.dir, &["solver", "add", &reader, "--read-only"]).await;
    let solvers = cli_ok(&t.m.b.dir, &["solver", "list"]).await.stdout;
    assert!(
        solvers.contains(&npub) && solvers.contains("read-write") && solvers.contains(&reader),
        "{solvers}"
    );
    cli_err(
        &t.m.b.dir,
        &["solver", "add", "npub1nonsense"],
        "not a public key",
    )
    .await;

    // Trade 1: the buyer disputes after sending fiat; the solver takes it and settles.
    let (id, s, b) = active_trade(&t).await;
    fiat_sent(&t, id, s, b).await;
    let rid = t.buyer.send(b, Some(id), Action::Dispute, None).await;
    let mine = t.buyer.expect(b, Action::DisputeInitiatedByYou).await;
    assert_eq!(mine.get_inner_message_kind().request_id, Some(rid));
    t.seller.expect(s, Action::DisputeInitiatedByPeer).await;
    let Some(Payload::Dispute(dispute_id, None)) = mine.get_inner_message_kind().payload else {
        panic!("no dispute id in {mine:?}");
    };

    // A stranger cannot take it.
    let stranger = Trader::new(&t.m.b.url, t.m.b.pubkey(), Wire::V2, false).await;
    let x = stranger.take_index();
    let rid = stranger
        .send(x, Some(dispute_id), Action::AdminTakeDispute, None)
        .await;
    assert_eq!(
        cant_do(&stranger.reply(x, Some(rid)).await),
        Some(CantDoReason::InvalidPubkey)
    );

    let v = solver.take_index();
    solver
        .send(v, Some(dispute_id), Action::AdminTakeDispute, None)
        .await;
    let took = solver.expect(v, Action::AdminTookDispute).await;
    match &took.get_inner_message_kind().payload {
        Some(Payload::Dispute(d, Some(info))) => {
            assert_eq!(*d, dispute_id);
            assert_eq!(info.id, id);
            assert_eq!(info.amount, AMOUNT);
            assert_eq!(info.order_previous_status, "fiat-sent");
        }
        other => panic!("solver got no dispute details: {other:?}"),
    }
    t.buyer.expect(b, Action::AdminTookDispute).await;
    t.seller.expect(s, Action::AdminTookDispute).await;
    solver.send(v, Some(id), Action::AdminSettle, None).await;
    solver.expect(v, Action::AdminSettled).await;
    t.seller.expect(s, Action::AdminSettled).await;
    t.buyer.expect(b, Action::AdminSettled).await;
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    let ev = t
        .seller
        .wait_event(NOSTR_DISPUTE_EVENT_KIND, &dispute_id.to_string(), |e| {
            tag_value(e, "s").as_deref() == Some("settled")
        })
        .await;
    assert_eq!(tag_value(&ev, "initiator").as_deref(), Some("buyer"));
    assert_paid_to_the_sat(&t, &before).await;

    // Trade 2: the seller disputes; the node key itself decides for the seller.
    let before = balances(&t).await;
    let (id, s, b) = active_trade(&t).await;
    t.seller.send(s, Some(id), Action::Dispute, None).await;
    t.buyer.expect(b, Action::DisputeInitiatedByPeer).await;
    // The solver has not taken this one: it may not decide it.
    let rid = solver.send(v, Some(id), Action::AdminCancel, None).await;
    assert_eq!(
        cant_do(&solver.reply(v, Some(rid)).await),
        Some(CantDoReason::IsNotYourDispute)
    );
    // The operator decides from the CLI, with the node key.
    let list = cli_ok(&t.m.b.dir, &["dispute", "list"]).await.stdout;
    assert!(
        list.contains(&id.to_string()) && list.contains("seller"),
        "{list}"
    );
    cli_ok(&t.m.b.dir, &["dispute", "take", &id.to_string()]).await;
    let done = cli_ok(&t.m.b.dir, &["dispute", "cancel", &id.to_string()])
        .await
        .stdout;
    assert!(done.contains("seller is refunded"), "{done}");
    cli_err(
        &t.m.b.dir,
        &["dispute", "settle", &id.to_string()],
        "refused",
    )
    .await;
    t.seller.expect(s, Action::AdminCanceled).await;
    t.buyer.expect(b, Action::AdminCanceled).await;
    t.seller.wait_order_status(id, "canceled").await;
    assert_moved(&t, &before, 0, 0, 0).await;
}

/// Mines up to the wind-up height (deadline − 25) of the one held payment.
async fn mine_to_wind_up(t: &Trade) {
    let deadline =
        t.m.b
            .running
            .lightning
            .open_holds()
            .await
            .iter()
            .find_map(|h| match h.state {
                mostro_box::lightning::HoldState::Held { deadline, .. } => Some(deadline),
                _ => None,
            })
            .expect("a held payment");
    let height = t.m.b.ln().status().current_best_block.height;
    let nodes = [t.m.b.ln().as_ref(), t.m.alice.as_ref(), t.m.bob.as_ref()];
    mine_and_sync(&t.m.b.chain, deadline - 25 - height, &nodes).await;
}
