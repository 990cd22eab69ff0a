//! Payments whose outcome is not known are never called failed: the rule at the Lightning
//! boundary (`lightning/ldk/payments.rs`) against a real ldk-node wallet on a real regtest
//! bitcoind, with the box's Lightning node restarted under a payment the wallet holds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ldk_node::lightning_types::payment::{PaymentHash as LdkHash, PaymentPreimage};
use ldk_node::Event;
use mostro_box::config::Settings;
use mostro_box::lightning::seed::Seed;
use mostro_box::lightning::{LdkNode, Lightning, PayOutcome, Preimage, SendOutcome};
use mostro_box::store::Store;

/// The box's Lightning node alone, on its own store, so a test can stop and start it again.
struct LnBox {
    dir: std::path::PathBuf,
    settings: Settings,
    store: Store,
}

impl LnBox {
    async fn start(&self) -> Arc<LdkNode> {
        let seed = Seed::load(&self.dir, None).unwrap();
        LdkNode::start(
            &self.dir,
            &self.settings.lightning,
            &seed,
            self.store.clone(),
            Duration::from_secs(1),
        )
        .await
        .unwrap()
    }
}

/// Waits (a minute at most) until `ln`'s channel to its peer can carry a payment.
async fn usable(ln: &LdkNode) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ln.node().list_channels().iter().any(|c| c.is_usable) {
        assert!(tokio::time::Instant::now() < deadline, "channel not usable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_in_flight_is_never_called_failed_across_restarts() {
    let chain = start_chain().await;
    let dir = temp_dir("payments");
    mostro_box::node::init(&dir, None).unwrap();
    let settings = Settings::load(
        &dir,
        Vec::<(String, String)>::new(),
        &base_overrides(free_port(), &chain),
    )
    .unwrap();
    let store = Store::open(&dir.join(mostro_box::node::STORE_FILE)).unwrap();
    let lnbox = LnBox {
        dir,
        settings,
        store,
    };
    let ln = lnbox.start().await;
    let bob = wallet(&chain, "bob");
    mostro_box::regtest::fund(&chain, &[ln.node(), &bob], 1)
        .await
        .unwrap();
    mostro_box::regtest::open_channel(&chain, ln.node(), &bob, 2_000_000, 0)
        .await
        .unwrap();

    // Bob holds the box's payment: it is out there, neither paid nor failed.
    let preimage = Preimage::random();
    let hash = preimage.hash();
    let desc = ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
        ldk_node::lightning_invoice::Description::new("payout".into()).unwrap(),
    );
    let amount_msat = 50_000_000;
    let inv = bob
        .bolt11_payment()
        .receive_for_hash(amount_msat, &desc, 3600, LdkHash(hash.0))
        .unwrap();
    let fee_cap = 1_000_000;
    assert_eq!(ln.pay(&inv, None, fee_cap, true).await, SendOutcome::Sent);
    let held = |e: &Event| match e {
        Event::PaymentClaimable { payment_hash, .. } if payment_hash.0 == hash.0 => Some(()),
        _ => None,
    };
    wallet_event(&bob, "bob to hold the payment", held).await;
    assert_eq!(ln.payment(hash), Some(PayOutcome::Pending));

    // Second run, bob online: the resend reaches LDK, which still has the payment.
    ln.stop();
    drop(ln);
    let ln = lnbox.start().await;
    usable(&ln).await;
    assert_eq!(ln.pay(&inv, None, fee_cap, false).await, SendOutcome::Sent);
    assert_eq!(ln.payment(hash), Some(PayOutcome::Pending));

    // Third run, bob offline: no route, and LDK looks for one before it spots a duplicate.
    // The payment may still arrive, so it is not failed, whatever the resend says.
    bob.stop().unwrap();
    ln.stop();
    drop(ln);
    let ln = lnbox.start().await;
    for fresh in [false, true] {
        let resent = ln.pay(&inv, None, fee_cap, fresh).await;
        assert!(
            matches!(resent, SendOutcome::Unknown(_)),
            "fresh {fresh}: {resent:?}"
        );
        assert_eq!(ln.payment(hash), Some(PayOutcome::Pending));
    }

    // Bob comes back and takes it: paid, once.
    bob.start().unwrap();
    let box_addr = ln.node().listening_addresses().unwrap()[0].clone();
    bob.connect(ln.node_id(), box_addr, true).unwrap();
    usable(&ln).await;
    bob.bolt11_payment()
        .claim_for_hash(LdkHash(hash.0), amount_msat, PaymentPreimage(preimage.0))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !matches!(ln.payment(hash), Some(PayOutcome::Succeeded { .. })) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paid: {:?}",
            ln.payment(hash)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received: Vec<Option<u64>> = bob
        .list_payments()
        .iter()
        .filter(|p| p.direction == ldk_node::payment::PaymentDirection::Inbound)
        .filter(|p| matches!(p.kind, ldk_node::payment::PaymentKind::Bolt11 { .. }))
        .filter(|p| p.status == ldk_node::payment::PaymentStatus::Succeeded)
        .map(|p| p.amount_msat)
        .collect();
    assert_eq!(
        received,
        vec![Some(amount_msat)],
        "bob was paid exactly once"
    );
    ln.stop();
    bob.stop().unwrap();
}
