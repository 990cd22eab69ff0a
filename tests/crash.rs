//! Power cuts in the middle of a trade: the real binary is killed (`kill -9`, or an abort at a
//! fault-injection point) after the hold is accepted, after the release is recorded, after the
//! settlement before the payout, and during the payout. After each restart the trade goes on,
//! and in the end the buyer is paid exactly once and no sat is lost.

mod common;

use std::sync::Arc;

use common::trade::{invoice, pay_request, AMOUNT, FEE};
use common::*;
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::Node;
use mostro_core::prelude::*;

/// The box as a process, with a channel from alice (the seller) to it and one from it to bob
/// (the buyer), 100,000 sats pushed across each so balance changes are exact.
struct ProcessMarket {
    chain: Arc<mostro_box::regtest::Bitcoind>,
    dir: std::path::PathBuf,
    port: u16,
    extra: Vec<String>,
    alice: Arc<Node>,
    bob: Arc<Node>,
}

impl ProcessMarket {
    /// Starts the box; one set to crash is not waited for (it may die before its relay is up).
    async fn start(&self, crash_at: Option<&str>) -> BoxProcess {
        BoxProcess::spawn_crashing(&self.dir, self.port, &self.chain, &self.extra, crash_at).await
    }

    /// Starts a box set to crash later, once a trader's request reaches it, and waits for it.
    async fn start_and_wait(&self, crash_at: Option<&str>) -> BoxProcess {
        let b = self.start(crash_at).await;
        let deadline = tokio::time::Instant::now() + WAIT * 6;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "box did not start");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        b
    }
}

async fn process_market() -> (ProcessMarket, BoxProcess) {
    let chain = start_chain().await;
    let dir = temp_dir("crash");
    mostro_box::node::init(&dir, None).unwrap();
    let ln_port = free_port();
    let extra = vec![
        format!("lightning.listen=127.0.0.1:{ln_port}"),
        "mostro.fee=0.01".to_string(),
    ];
    let m = ProcessMarket {
        chain: chain.clone(),
        dir: dir.clone(),
        port: free_port(),
        extra,
        alice: wallet(&chain, "alice"),
        bob: wallet(&chain, "bob"),
    };
    let b = m.start(None).await;
    let status = cli_ok(&dir, &["--json", "status"]).await.json();
    let box_id = status["lightning"]["node_id"].as_str().unwrap().to_string();
    let addr = cli_ok(&dir, &["wallet", "address"]).await.stdout;
    chain.mine_to(1, &addr).await.unwrap();
    mostro_box::regtest::fund(&chain, &[&m.alice, &m.bob], 101)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT * 6;
    while cli_ok(&dir, &["--json", "wallet", "balance"]).await.json()["onchain_spendable_sats"]
        .as_u64()
        == Some(0)
    {
        assert!(tokio::time::Instant::now() < deadline, "box never funded");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    m.alice
        .open_channel(
            box_id.parse().unwrap(),
            format!("127.0.0.1:{ln_port}").parse().unwrap(),
            2_000_000,
            Some(100_000_000),
            None,
        )
        .unwrap();
    let bob_uri = format!(
        "{}@{}",
        m.bob.node_id(),
        m.bob.listening_addresses().unwrap()[0]
    );
    cli_ok(
        &dir,
        &[
            "channel",
            "open",
            &bob_uri,
            "2000000",
            "--push-sats",
            "100000",
            "--no-wait",
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while chain
        .rpc("getrawmempool", serde_json::json!([]))
        .await
        .unwrap()
        .as_array()
        .map_or(0, |a| a.len())
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "funding not broadcast"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    chain.mine(6).await.unwrap();
    for w in [&m.alice, &m.bob] {
        mostro_box::regtest::sync_until(w, "its channel with the box usable", |n| {
            n.list_channels().iter().any(|c| c.is_usable)
        })
        .await
        .unwrap();
    }
    (m, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trade_survives_a_crash_at_every_step() {
    let (m, mut b) = process_market().await;
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
