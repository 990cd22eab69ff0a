//! The embedded Lightning node against real ldk-node wallets on a real regtest bitcoind:
//! channels both ways, hold invoices held / settled / cancelled, the hold window across 100
//! blocks, the deadline guard, and payouts.

mod common;

use common::*;
use ldk_node::lightning_invoice::Bolt11Invoice;
use ldk_node::Event;
use mostro_box::lightning::hold::{self, GUARD_BLOCKS};
use mostro_box::lightning::{
    pay_and_wait, HoldRequest, HoldState, Lightning, LnEvent, PayOutcome, Preimage,
};

async fn hold_invoice(m: &Market, preimage: &Preimage, sats: u64) -> Bolt11Invoice {
    let text =
        m.b.running
            .lightning
            .create_hold_invoice(HoldRequest {
                hash: preimage.hash(),
                amount_msat: sats * 1000,
                description: "order 1: 50000 sats for 10 USD".into(),
                expiry_secs: 600,
            })
            .await
            .unwrap();
    text.parse().unwrap()
}

/// Alice pays `invoice` and the box reports it held; returns the deadline.
async fn alice_pays_and_box_holds(m: &Market, invoice: &Bolt11Invoice) -> u32 {
    let mut events = m.b.running.lightning.subscribe();
    m.alice.bolt11_payment().send(invoice, None).unwrap();
    let hash = mostro_box::lightning::PaymentHash(*invoice.payment_hash().as_ref());
    box_event(&mut events, "the hold to be held", |e| match e {
        LnEvent::HoldHeld {
            hash: h, deadline, ..
        } if *h == hash => Some(*deadline),
        _ => None,
    })
    .await
}

/// Alice's payment fails and she has every sat back.
async fn alice_is_refunded(m: &Market, before: u64) {
    wallet_event(&m.alice, "alice's payment to fail", |e| match e {
        Event::PaymentFailed { .. } => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(ln_sats(&m.alice).await, before, "alice has every sat back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_invoice_is_held_then_settled_or_cancelled_with_exact_balances() {
    let m = market(&[], 0).await;
    let ln = &m.b.running.lightning;
    assert!(m.b.ln().list_channels().iter().all(|c| c.is_usable));
    assert_eq!(m.b.ln().list_channels().len(), 2, "one channel each way");

    // Settled: the box gains exactly the amount; alice's payment succeeds.
    let preimage = Preimage::random();
    let invoice = hold_invoice(&m, &preimage, 50_000).await;
    assert_eq!(
        invoice.min_final_cltv_expiry_delta(),
        hold::invoice_cltv_delta(144) as u64,
        "the invoice asks for the long lock"
    );
    assert_eq!(
        invoice.recover_payee_pub_key(),
        m.b.ln().node_id(),
        "re-signed by the node key"
    );
    let box_before = ln_sats(m.b.ln()).await;
    let alice_before = ln_sats(&m.alice).await;
    let height = ln.height();
    let deadline = alice_pays_and_box_holds(&m, &invoice).await;
    assert!(
        deadline >= height + 144 + GUARD_BLOCKS,
        "deadline {deadline} leaves the 144-block window from {height}"
    );
    let rec = ln.hold(preimage.hash()).unwrap().unwrap();
    assert!(matches!(
        rec.state,
        HoldState::Held {
            amount_msat: 50_000_000,
            ..
        }
    ));
    ln.settle_hold(preimage).await.unwrap();
    let fee = wallet_event(&m.alice, "alice's payment to succeed", |e| match e {
        Event::PaymentSuccessful { fee_paid_msat, .. } => Some(*fee_paid_msat),
        _ => None,
    })
    .await;
    assert_eq!(fee, Some(0), "a direct channel charges no routing fee");
    assert_eq!(
        ln_sats(m.b.ln()).await,
        box_before + 50_000,
        "the box gained the amount"
    );
    let alice_paid = alice_before - ln_sats(&m.alice).await;
    // Alice opened the channel, so she also funds the box's new anchor output (330 sats) now
    // that the box has a balance on it.
    assert!(
        alice_paid == 50_000 || alice_paid == 50_000 + 330,
        "alice paid {alice_paid}"
    );
    println!("alice paid {alice_paid} sats for a 50000-sat hold");
    // The hold is settled once the box hears LDK confirm the claim (its own event).
    let deadline = tokio::time::Instant::now() + WAIT;
    while ln.hold(preimage.hash()).unwrap().unwrap().state != HoldState::Settled {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Settling twice is refused with the state named.
    let again = ln.settle_hold(preimage).await.unwrap_err().to_string();
    assert!(again.contains("settled"), "{again}");

    // Cancelled: alice gets the sats back to the sat.
    let alice_before = ln_sats(&m.alice).await;
    let box_before = ln_sats(m.b.ln()).await;
    let preimage = Preimage::random();
    let invoice = hold_invoice(&m, &preimage, 30_000).await;
    alice_pays_and_box_holds(&m, &invoice).await;
    ln.cancel_hold(preimage.hash()).await.unwrap();
    alice_is_refunded(&m, alice_before).await;
    assert_eq!(ln_sats(m.b.ln()).await, box_before);
    assert!(matches!(
        ln.hold(preimage.hash()).unwrap().unwrap().state,
        HoldState::Cancelled { .. }
    ));
    // An unknown hash is named.
    let unknown = ln.cancel_hold(Preimage::random().hash()).await.unwrap_err();
    assert!(unknown.to_string().contains("no hold invoice"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_lasts_while_100_blocks_are_mined_then_settles() {
    let m = market(&[], 0).await;
    let ln = &m.b.running.lightning;
    let preimage = Preimage::random();
    let invoice = hold_invoice(&m, &preimage, 40_000).await;
    let start = ln.height();
    let deadline = alice_pays_and_box_holds(&m, &invoice).await;
    let box_before = ln_sats(m.b.ln()).await;
    for _ in 0..10 {
        mine_and_sync(&m.b.chain, 10, &[m.b.ln(), &m.alice]).await;
        let state = ln.hold(preimage.hash()).unwrap().unwrap().state;
        assert!(matches!(state, HoldState::Held { .. }), "{state:?}");
    }
    let now = ln.height();
    assert!(now >= start + 100, "held from {start} to {now}");
    assert!(now + GUARD_BLOCKS < deadline);
    ln.settle_hold(preimage).await.unwrap();
    wallet_event(&m.alice, "alice's payment to succeed", |e| match e {
        Event::PaymentSuccessful { .. } => Some(()),
        Event::PaymentFailed { .. } => panic!(
            "the held payment failed after {} blocks",
            ln.height() - start
        ),
        _ => None,
    })
    .await;
    assert_eq!(ln_sats(m.b.ln()).await, box_before + 40_000);
    assert!(
        m.b.ln().list_channels().iter().all(|c| c.is_usable),
        "no channel was closed"
    );
    println!(
        "hold window: held {} blocks (from {start} to {now}); LDK deadline {deadline}",
        now - start
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guard_cancels_a_held_payment_before_ldk_would() {
    // The shortest window, so the deadline comes within a few blocks.
    let m = market(
        &[
            "lightning.hold_invoice_cltv_delta=13",
            "lightning.escrow_deadline_margin_blocks=12",
        ],
        0,
    )
    .await;
    let ln = &m.b.running.lightning;
    let preimage = Preimage::random();
    let invoice = hold_invoice(&m, &preimage, 20_000).await;
    let alice_before = ln_sats(&m.alice).await;
    let deadline = alice_pays_and_box_holds(&m, &invoice).await;
    let mut events = ln.subscribe();
    let blocks = deadline - GUARD_BLOCKS - ln.height();
    mine_and_sync(&m.b.chain, blocks, &[m.b.ln()]).await;
    let reason = box_event(&mut events, "the guard to cancel", |e| match e {
        LnEvent::HoldCancelled { hash, reason } if *hash == preimage.hash() => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("deadline"), "{reason}");
    assert!(
        ln.height() < deadline,
        "cancelled before LDK's own deadline"
    );
    alice_is_refunded(&m, alice_before).await;
    assert!(m.b.ln().list_channels().iter().all(|c| c.is_usable));
}

/// The amount of bob's next received payment.
async fn bob_receives(m: &Market) -> u64 {
    wallet_event(&m.bob, "bob to receive", |e| match e {
        Event::PaymentReceived { amount_msat, .. } => Some(*amount_msat),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn box_pays_invoices_and_reports_no_route() {
    let m = market(&[], 0).await;
    let ln: &dyn Lightning = m.b.running.lightning.as_ref();
    let timeout = std::time::Duration::from_secs(60);

    // An invoice with an amount.
    let desc = ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
        ldk_node::lightning_invoice::Description::new("payout".into()).unwrap(),
    );
    let inv = m
        .bob
        .bolt11_payment()
        .receive(21_000_000, &desc, 600)
        .unwrap();
    let checked = ln
        .check_invoice(&inv.to_string(), Some(21_000_000), 60)
        .unwrap();
    let outcome = pay_and_wait(ln, &checked, None, 100_000, timeout)
        .await
        .unwrap();
    assert_eq!(outcome, PayOutcome::Succeeded { fee_msat: 0 });
    assert_eq!(bob_receives(&m).await, 21_000_000);

    // An amountless one, paid with the amount the box chooses.
    let inv = m
        .bob
        .bolt11_payment()
        .receive_variable_amount(&desc, 600)
        .unwrap();
    let outcome = pay_and_wait(ln, &inv, Some(7_000_000), 100_000, timeout)
        .await
        .unwrap();
    assert_eq!(outcome, PayOutcome::Succeeded { fee_msat: 0 });
    assert_eq!(bob_receives(&m).await, 7_000_000);

    // Nobody routes to a node without channels: a failure with its reason, no sats gone.
    let carol = wallet(&m.b.chain, "carol");
    let before = ln_sats(m.b.ln()).await;
    let inv = carol
        .bolt11_payment()
        .receive(5_000_000, &desc, 600)
        .unwrap();
    let outcome = pay_and_wait(ln, &inv, None, 100_000, timeout)
        .await
        .unwrap();
    match outcome {
        PayOutcome::Failed { reason } => assert!(reason.contains("no route"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(ln_sats(m.b.ln()).await, before);

    // Invoices for another network, or for the wrong amount, are refused before paying.
    let wrong = ln
        .check_invoice(&inv.to_string(), Some(1_000), 60)
        .unwrap_err();
    assert!(wrong.to_string().contains("amount"), "{wrong}");
}
