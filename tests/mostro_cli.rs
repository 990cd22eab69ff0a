//! A whole trade driven by the real Mostro client, mostro-cli 0.16.3 (which `.ci/run` installs
//! into `.cache/mostro-cli`), against the box over its relay: wire compatibility with today's
//! client, checked by balances to the sat.

mod common;

use std::path::{Path, PathBuf};

use common::trade::{AMOUNT, FEE};
use common::*;
use nostr_sdk::prelude::ToBech32;

/// The mostro-cli executable: `MOSTRO_CLI_EXE`, or the one `.ci/run` installs.
fn mostro_cli_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("MOSTRO_CLI_EXE") {
        return exe.into();
    }
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/mostro-cli/bin/mostro-cli");
    assert!(
        exe.exists(),
        "mostro-cli is not installed: run .ci/run (it installs mostro-cli 0.16.3 into \
         .cache/mostro-cli), or set MOSTRO_CLI_EXE"
    );
    exe
}

/// One trader's mostro-cli: its own database directory (identity and trade keys).
struct Client {
    dir: PathBuf,
    npub: String,
    relay: String,
}

impl Client {
    /// Runs `mostro-cli ARGS` as this trader; returns its output, failing on an error exit.
    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(mostro_cli_exe())
            .args(args)
            .env("MOSTRO_PUBKEY", &self.npub)
            .env("RELAYS", &self.relay)
            .env("MCLI_DIR", &self.dir)
            .env_remove("TRANSPORT")
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains("Unexpected response") && !text.contains('❌'),
            "mostro-cli {} failed:\n{text}",
            args.join(" ")
        );
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mostro_cli_trades_on_the_box_to_the_sat() {
    let m = market(&["mostro.fee=0.01"], 100_000).await;
    let npub = m.b.pubkey().to_bech32().unwrap();
    let traders = temp_dir("mcli");
    let client = |name: &str| Client {
        dir: traders.join(name),
        npub: npub.clone(),
        relay: m.b.url.clone(),
    };
    let (alice, bob) = (client("alice"), client("bob"));
    let (seller_before, buyer_before) = (ln_sats(&m.alice).await, ln_sats(&m.bob).await);

    let made = alice
        .run(&[
            "neworder", "-k", "sell", "-c", "USD", "-f", "10", "-a", "50000", "-m", "cash",
        ])
        .await;
    let id = made
        .lines()
        .find_map(|l| l.strip_prefix("Order ")?.strip_suffix(" created"))
        .unwrap_or_else(|| panic!("no order id in:\n{made}"))
        .to_string();

    let took = bob.run(&["takesell", "-o", &id]).await;
    assert!(took.contains(&format!("{}", AMOUNT - FEE)), "{took}");
    let invoice = common::trade::invoice(&m.bob, AMOUNT - FEE);
    bob.run(&["addinvoice", "-o", &id, "-i", &invoice]).await;

    // The seller's client shows the hold invoice; the seller's wallet pays it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let hold = loop {
        let dms = alice.run(&["getdm"]).await;
        if let Some(h) = dms.split_whitespace().find(|w| w.starts_with("lnbcrt")) {
            break h.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hold invoice in:\n{dms}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    m.alice
        .bolt11_payment()
        .send(&hold.parse().unwrap(), None)
        .unwrap();
    let order = uuid::Uuid::parse_str(&id).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while order_status(&m, order).await != "active" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trade never became active"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let sent = bob.run(&["fiatsent", "-o", &id]).await;
    assert!(
        sent.contains("Fiat payment confirmation received"),
        "{sent}"
    );
    let released = alice.run(&["release", "-o", &id]).await;
    assert!(released.contains("settled"), "{released}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while order_status(&m, order).await != "success" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trade never completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bob.run(&["rate", "-o", &id, "-r", "5"]).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (seller, buyer) = (ln_sats(&m.alice).await, ln_sats(&m.bob).await);
        let moved = (seller_before - seller, buyer - buyer_before);
        if moved == ((AMOUNT + FEE) as u64, (AMOUNT - FEE) as u64) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seller paid {}, buyer got {}",
            moved.0,
            moved.1
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The order's status as the box stores it.
async fn order_status(m: &Market, id: uuid::Uuid) -> String {
    let run = cli_ok(&m.b.dir, &["--json", "order", "show", &id.to_string()]).await;
    run.json()["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
