//! The box as a real process (for tests that kill it), on its own regtest chain, with channels
//! from alice (the seller) to it and from it to bob (the buyer).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldk_node::Node;
use mostro_box::regtest::Bitcoind;
use tokio::time::Instant;

use super::{cli_ok, free_port, start_chain, temp_dir, wallet, BoxProcess, WAIT};

/// Everything needed to start the box again after killing it.
pub struct ProcessMarket {
    pub chain: Arc<Bitcoind>,
    pub dir: PathBuf,
    pub port: u16,
    pub extra: Vec<String>,
    pub alice: Arc<Node>,
    pub bob: Arc<Node>,
}

impl ProcessMarket {
    /// Starts the box; one set to crash is not waited for (it may die before its relay is up).
    pub async fn start(&self, crash_at: Option<&str>) -> BoxProcess {
        BoxProcess::spawn_crashing(&self.dir, self.port, &self.chain, &self.extra, crash_at).await
    }

    /// Starts a box set to crash later, once a trader's request reaches it, and waits for it.
    pub async fn start_and_wait(&self, crash_at: Option<&str>) -> BoxProcess {
        let b = self.start(crash_at).await;
        let deadline = Instant::now() + WAIT * 6;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "box did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }
}

/// A box process at a 1 % fee (and `extra` settings) with `channels` channels of 2,000,000 sats
/// from alice to it and as many from it to bob, 100,000 sats pushed across each so balance
/// changes are exact.
pub async fn process_market(channels: usize, extra: &[&str]) -> (ProcessMarket, BoxProcess) {
    let chain = start_chain().await;
    let dir = temp_dir("process");
    mostro_box::node::init(&dir, None).unwrap();
    let ln_port = free_port();
    let mut settings = vec![
        format!("lightning.listen=127.0.0.1:{ln_port}"),
        "mostro.fee=0.01".to_string(),
    ];
    settings.extend(extra.iter().map(|s| s.to_string()));
    let m = ProcessMarket {
        chain: chain.clone(),
        dir: dir.clone(),
        port: free_port(),
        extra: settings,
        alice: wallet(&chain, "alice"),
        bob: wallet(&chain, "bob"),
    };
    let b = m.start(None).await;
    let status = cli_ok(&dir, &["--json", "status"]).await.json();
    let box_id = status["lightning"]["node_id"].as_str().unwrap().to_string();
    // One coinbase output per channel the box opens.
    let addr = cli_ok(&dir, &["wallet", "address"]).await.stdout;
    chain.mine_to(channels as u32, &addr).await.unwrap();
    mostro_box::regtest::fund(&chain, &[&m.alice, &m.bob], 101)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT * 6;
    while cli_ok(&dir, &["--json", "wallet", "balance"]).await.json()["onchain_spendable_sats"]
        .as_u64()
        == Some(0)
    {
        assert!(Instant::now() < deadline, "box never funded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bob_uri = format!(
        "{}@{}",
        m.bob.node_id(),
        m.bob.listening_addresses().unwrap()[0]
    );
    // One at a time, each confirmed and seen by its wallet before the next: a wallet that has
    // not yet seen its last funding transaction spends the same coin again.
    let onchain = |d: PathBuf| async move {
        let b = cli_ok(&d, &["--json", "wallet", "balance"]).await.json();
        b["onchain_total_sats"].as_u64().unwrap()
    };
    for _ in 0..channels {
        let alice_before = m.alice.list_balances().total_onchain_balance_sats;
        m.alice
            .open_channel(
                box_id.parse().unwrap(),
                format!("127.0.0.1:{ln_port}").parse().unwrap(),
                2_000_000,
                Some(100_000_000),
                None,
            )
            .unwrap();
        in_mempool(&chain, 1).await;
        chain.mine(1).await.unwrap();
        mostro_box::regtest::sync_until(&m.alice, "its funding transaction", |n| {
            n.list_balances().total_onchain_balance_sats < alice_before
        })
        .await
        .unwrap();
        let box_before = onchain(dir.clone()).await;
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
        in_mempool(&chain, 1).await;
        chain.mine(1).await.unwrap();
        let deadline = Instant::now() + WAIT * 6;
        while onchain(dir.clone()).await >= box_before {
            assert!(
                Instant::now() < deadline,
                "the box never saw its funding transaction"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    chain.mine(6).await.unwrap();
    for w in [&m.alice, &m.bob] {
        mostro_box::regtest::sync_until(w, "its channels with the box usable", |n| {
            n.list_channels().iter().filter(|c| c.is_usable).count() == channels
        })
        .await
        .unwrap();
    }
    (m, b)
}

/// Waits until the mempool holds `n` transactions.
async fn in_mempool(chain: &Bitcoind, n: usize) {
    let deadline = Instant::now() + WAIT * 6;
    while chain.mempool_size().await.unwrap() < n {
        assert!(
            Instant::now() < deadline,
            "funding transaction {n} not broadcast"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
