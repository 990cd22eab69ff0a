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

/// The CLI with the backup passphrase in its environment.
async fn with_pass(dir: &std::path::Path, args: &[&str]) -> CliRun {
    cli_env(
        dir,
        args,
        &[("MOSTRO_BOX_BACKUP_PASSPHRASE", "correct horse battery")],
    )
    .await
}

/// A sell order taken with an invoice the buyer's wallet holds (so the payout stays in flight),
/// paid into escrow, fiat sent, released: returns once the buyer's wallet holds the payout, with
/// (order id, seller's and buyer's trade indexes, the payout's preimage).
async fn released_to_a_held_payout(t: &common::trade::Trade) -> (uuid::Uuid, i64, i64, Preimage) {
    use common::trade::*;
    use mostro_core::prelude::{Action, Payload};
    let (id, s) = sell_order(t).await;
    let held = Preimage::random();
    let desc = ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
        ldk_node::lightning_invoice::Description::new("payout".into()).unwrap(),
    );
    let inv =
        t.m.bob
            .bolt11_payment()
            .receive_for_hash(
                (AMOUNT - FEE) as u64 * 1000,
                &desc,
                7200,
                LdkHash(held.hash().0),
            )
            .unwrap();
    let b = t.buyer.take_index();
    t.buyer
        .send(
            b,
            Some(id),
            Action::TakeSell,
            Some(Payload::PaymentRequest(None, inv.to_string(), None)),
        )
        .await;
    t.buyer.expect(b, Action::WaitingSellerToPay).await;
    t.seller.expect(s, Action::PayInvoice).await; // the taker's reputation
    let (_, escrow) = pay_request(&t.seller.expect(s, Action::PayInvoice).await);
    seller_pays(t, &escrow);
    t.buyer.expect(b, Action::HoldInvoicePaymentAccepted).await;
    fiat_sent(t, id, s, b).await;
    t.seller.send(s, Some(id), Action::Release, None).await;
    wallet_event(&t.m.bob, "bob to hold the payout", |e| match e {
        Event::PaymentClaimable { payment_hash, .. } if payment_hash.0 == held.hash().0 => Some(()),
        _ => None,
    })
    .await;
    (id, s, b, held)
}

/// A backup taken while a payout is in flight, restored: the payout is on hold for the
/// operator (the old box may have paid it since), never paid by the restored box, shown by
/// `order show`, the status page and `/metrics`, and completed only by the operator's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_payout_in_flight_waits_for_the_operator() {
    use common::trade::*;
    use std::os::unix::fs::PermissionsExt;

    let t = trade(&[]).await;
    let chain = t.m.b.chain.clone();
    let (id, _, _, _) = released_to_a_held_payout(&t).await;
    let dir = t.m.b.dir.clone();
    let shown = cli_ok(&dir, &["--json", "order", "show", &id.to_string()])
        .await
        .json();
    assert_eq!(shown["payout"]["state"]["state"], "paying", "{shown}");

    let file = temp_dir("payout-backups").join("box.backup");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let f = file.to_str().unwrap();
    let made = with_pass(&dir, &["backup", "create", f]).await;
    assert!(made.ok, "{}", made.stderr);

    // A directory with an old channel state is refused: running it could lose the channels.
    let stale = temp_dir("restore-stale");
    std::fs::create_dir_all(stale.join("lightning")).unwrap();
    let refused = with_pass(&stale, &["backup", "restore", f]).await;
    assert!(
        !refused.ok && refused.stderr.contains("already holds a box"),
        "{}",
        refused.stderr
    );
    assert!(!stale.join("lightning.seed").exists());

    let target = temp_dir("restore-payout");
    let restored = with_pass(&target, &["backup", "restore", f]).await;
    assert!(restored.ok, "{}", restored.stderr);
    assert!(
        restored.stdout.contains(&format!("order {id}")),
        "{}",
        restored.stdout
    );
    let mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "the restored data directory is private"
    );

    // The old box is gone; the restored one starts on the same seed.
    let bob = t.m.bob.clone();
    drop(t);
    let r = TestBox::start_in(target.clone(), chain, &[]).await;
    let shown = cli_ok(&target, &["--json", "order", "show", &id.to_string()])
        .await
        .json();
    assert_eq!(shown["status"], "settled-hold-invoice", "{shown}");
    assert_eq!(shown["payout"]["state"]["state"], "on_hold", "{shown}");
    let port: u16 = r.url.rsplit(':').next().unwrap().parse().unwrap();
    let metrics = common::metrics(&target).await;
    assert!(metrics.contains("mostro_payouts_on_hold 1"), "{metrics}");
    // Never on the relay's port, which faces the internet.
    let (status, _) = http_get(port, "/metrics", "text/plain").await;
    assert!(status.contains("404"), "{status}");
    let html = common::status_page(&target).await;
    assert!(html.contains("payout-on-hold"), "{html}");
    let link = cli_ok(&target, &["--json", "status-page"]).await.json()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let page_port: u16 = link
        .split('/')
        .nth(2)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (status, _, body) = http_request(page_port, "/metrics", "").await;
    assert!(
        status.contains("401") && !body.contains("mostro_"),
        "{status}"
    );
    // Nothing was sent from the restored node.
    assert!(
        !r.ln()
            .list_payments()
            .iter()
            .any(|p| p.direction == ldk_node::payment::PaymentDirection::Outbound),
        "the restored box paid by itself"
    );

    // The operator's decision: bad input changes nothing; `paid` completes the trade.
    let err = cli(
        &target,
        &["order", "payout", &uuid::Uuid::new_v4().to_string(), "paid"],
    )
    .await;
    assert!(!err.ok && err.stderr.contains("no order"), "{}", err.stderr);
    let done = cli_ok(&target, &["order", "payout", &id.to_string(), "paid"]).await;
    assert!(done.stdout.contains("success"), "{}", done.stdout);
    let again = cli(&target, &["order", "payout", &id.to_string(), "resume"]).await;
    assert!(
        !again.ok && again.stderr.contains("not on hold"),
        "{}",
        again.stderr
    );
    let metrics = common::metrics(&target).await;
    assert!(metrics.contains("mostro_payouts_on_hold 0"), "{metrics}");
    drop(r);
    bob.stop().unwrap();
}

/// A buyer's Lightning address, end to end with the real binary: the first invoice its service
/// gives cannot be paid (a certain failure), so the box retries with a second invoice; while
/// that one is held by the buyer's wallet the box is killed twice. It never asks the service
/// for a third invoice while the second may still arrive, and the buyer is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lightning_address_payout_retries_survives_kills_and_pays_once() {
    use common::lnurl::{lnurl_service, Answer};
    use common::process::process_market;
    use mostro_core::prelude::{Action, Kind, Payload};
    const SATS: i64 = 50_000;
    const FEE: i64 = 250;

    let (m, mut b) = process_market(1, &["lightning.payment_retries_interval=1"]).await;
    let carol = wallet(&m.chain, "carol");
    let held = Preimage::random();
    let service = lnurl_service(
        &m.bob,
        vec![Answer::Unpayable(carol.clone()), Answer::Hold(held.hash())],
    )
    .await;
    let node = mostro_box::keys::load(&m.dir).unwrap().public_key();
    let seller = Trader::new(&b.url(), node, Wire::V2, false).await;
    let buyer = Trader::new(&b.url(), node, Wire::V1, false).await;
    let (s, rid) = seller.new_order(fixed_order(Kind::Sell, SATS, 2)).await;
    let id = order_of(&seller.reply(s, Some(rid)).await).id.unwrap();
    let bi = buyer.take_index();
    buyer
        .send(
            bi,
            Some(id),
            Action::TakeSell,
            Some(Payload::PaymentRequest(None, service.address.clone(), None)),
        )
        .await;
    buyer.expect(bi, Action::WaitingSellerToPay).await;
    seller.expect(s, Action::PayInvoice).await; // the taker's reputation
    let (_, hold) = common::trade::pay_request(&seller.expect(s, Action::PayInvoice).await);
    m.alice
        .bolt11_payment()
        .send(&hold.parse().unwrap(), None)
        .unwrap();
    buyer.expect(bi, Action::HoldInvoicePaymentAccepted).await;
    buyer.send(bi, Some(id), Action::FiatSent, None).await;
    buyer.expect(bi, Action::FiatSentOk).await;
    seller.send(s, Some(id), Action::Release, None).await;

    // The first invoice fails for certain; the buyer hears it, and the retry gets a new one.
    buyer.expect(bi, Action::PaymentFailed).await;
    wallet_event(
        &m.bob,
        "bob to hold the second invoice's payment",
        |e| match e {
            Event::PaymentClaimable { payment_hash, .. } if payment_hash.0 == held.hash().0 => {
                Some(())
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(service.issued.lock().unwrap().len(), 2);

    // Killed twice while the payment is out there.
    for _ in 0..2 {
        b.kill9();
        b = m.start_and_wait(None).await;
        cli_ok(&m.dir, &["status"]).await;
    }
    let shown = cli_ok(&m.dir, &["--json", "order", "show", &id.to_string()])
        .await
        .json();
    assert_eq!(shown["payout"]["state"]["state"], "paying", "{shown}");

    // The buyer's wallet takes it once the box is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !m.bob.list_channels().iter().any(|c| c.is_usable) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m.bob
        .bolt11_payment()
        .claim_for_hash(
            LdkHash(held.hash().0),
            (SATS - FEE) as u64 * 1000,
            PaymentPreimage(held.0),
        )
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = cli_ok(&m.dir, &["--json", "order", "show", &id.to_string()])
            .await
            .json();
        if shown["status"] == "success" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paid: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        service.issued.lock().unwrap().len(),
        2,
        "no new invoice while the second one could still be paid"
    );
    let received = |w: &ldk_node::Node| -> Vec<Option<u64>> {
        w.list_payments()
            .iter()
            .filter(|p| p.direction == ldk_node::payment::PaymentDirection::Inbound)
            .filter(|p| matches!(p.kind, ldk_node::payment::PaymentKind::Bolt11 { .. }))
            .filter(|p| p.status == ldk_node::payment::PaymentStatus::Succeeded)
            .map(|p| p.amount_msat)
            .collect()
    };
    assert_eq!(received(&m.bob), vec![Some((SATS - FEE) as u64 * 1000)]);
    assert!(received(&carol).is_empty());
}

/// The engine's Lightning node with a fault at the boundary: the first send of each payment
/// reaches the real node and leaves, and then the call reports an error (as ldk-node does when
/// it fails to save its own record after LDK took the payment).
struct ErrorAfterSend {
    inner: Arc<LdkNode>,
    failed: std::sync::Mutex<std::collections::HashSet<mostro_box::lightning::PaymentHash>>,
}

impl Lightning for ErrorAfterSend {
    fn create_hold_invoice(
        &self,
        req: mostro_box::lightning::HoldRequest,
    ) -> mostro_box::lightning::LnFuture<'_, String> {
        self.inner.create_hold_invoice(req)
    }
    fn settle_hold(&self, preimage: Preimage) -> mostro_box::lightning::LnFuture<'_, ()> {
        self.inner.settle_hold(preimage)
    }
    fn cancel_hold(
        &self,
        hash: mostro_box::lightning::PaymentHash,
    ) -> mostro_box::lightning::LnFuture<'_, ()> {
        self.inner.cancel_hold(hash)
    }
    fn hold(
        &self,
        hash: mostro_box::lightning::PaymentHash,
    ) -> Result<Option<mostro_box::lightning::HoldRecord>, mostro_box::lightning::LightningError>
    {
        self.inner.hold(hash)
    }
    fn pay<'a>(
        &'a self,
        invoice: &'a ldk_node::lightning_invoice::Bolt11Invoice,
        amount_msat: Option<u64>,
        max_fee_msat: u64,
        fresh: bool,
    ) -> mostro_box::lightning::SendFuture<'a> {
        Box::pin(async move {
            let sent = self
                .inner
                .pay(invoice, amount_msat, max_fee_msat, fresh)
                .await;
            let hash = mostro_box::lightning::PaymentHash(*invoice.payment_hash().as_ref());
            if sent == SendOutcome::Sent && self.failed.lock().unwrap().insert(hash) {
                return SendOutcome::Unknown(
                    "injected: the node's record could not be saved".into(),
                );
            }
            sent
        })
    }
    fn payment(&self, hash: mostro_box::lightning::PaymentHash) -> Option<PayOutcome> {
        self.inner.payment(hash)
    }
    fn check_invoice(
        &self,
        text: &str,
        amount_msat: Option<u64>,
        valid_for: u64,
    ) -> Result<ldk_node::lightning_invoice::Bolt11Invoice, mostro_box::lightning::InvoiceError>
    {
        self.inner.check_invoice(text, amount_msat, valid_for)
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<mostro_box::lightning::LnEvent> {
        self.inner.subscribe()
    }
    fn height(&self) -> u32 {
        self.inner.height()
    }
}

/// An error from the Lightning node after the payout left is not a failure: the payout waits
/// for the payment's outcome (no attempt counted, the buyer not told it failed, no second
/// payment) and completes when the buyer's wallet takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_error_after_the_payout_left_is_not_a_failure() {
    use common::trade::*;
    use mostro_core::prelude::Action;
    let chain = start_chain().await;
    let dir = temp_dir("error-after-send");
    mostro_box::node::init(&dir, None).unwrap();
    let layer: mostro_box::node::LightningLayer = Box::new(|inner| {
        Arc::new(ErrorAfterSend {
            inner,
            failed: Default::default(),
        })
    });
    let b = TestBox::start_layered(dir, chain, &settings(&[]), Some(layer)).await;
    let t = trade_on(market_on(b, 100_000).await).await;
    let (id, _, b, held) = released_to_a_held_payout(&t).await;
    // The error came back after the payment left: still paying, nothing counted against it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let shown = loop {
        let shown = cli_ok(&t.m.b.dir, &["--json", "order", "show", &id.to_string()])
            .await
            .json();
        if shown["payout"]["state"]["sent"] == true {
            break shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown["payout"]["state"]["state"], "paying", "{shown}");
    assert_eq!(shown["payout"]["attempts"], 0, "{shown}");
    t.m.bob
        .bolt11_payment()
        .claim_for_hash(
            LdkHash(held.hash().0),
            (AMOUNT - FEE) as u64 * 1000,
            PaymentPreimage(held.0),
        )
        .unwrap();
    // The buyer hears "purchase completed", and never heard "payment failed" before it.
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    assert!(
        !t.buyer
            .received(|_, m| common::action(m) == Action::PaymentFailed),
        "the buyer was told the payment failed"
    );
}
