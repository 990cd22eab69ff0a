//! The operator CLI against the real binary: every command with a running box, bad input with
//! one clear line, a clear error when the box is stopped, and a held payment that survives
//! `kill -9` of the box and is settled after the restart.

mod common;

use std::time::Duration;

use common::*;
use ldk_node::Event;
use mostro_box::regtest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_against_a_stopped_box_say_it_is_not_running() {
    let dir = temp_dir("cli-stopped");
    mostro_box::node::init(&dir, None).unwrap();
    for args in [
        &["status"][..],
        &["wallet", "balance"],
        &["wallet", "address"],
        &["peer", "list"],
        &["channel", "list"],
        &["invoice", "create", "1000"],
        &["pay", "lnbcrt1x"],
        &["order", "list"],
    ] {
        cli_err(&dir, args, "mostro-box is not running").await;
    }
    // The seed is shown only after a confirmation.
    let refused = cli(&dir, &["seed", "show"]).await;
    assert!(!refused.ok && refused.stderr.contains("not shown") && refused.stdout.is_empty());
    let words = cli_ok(&dir, &["seed", "show", "--yes"]).await.stdout;
    assert_eq!(words.split(' ').count(), 24, "{words}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_chain_source_gives_one_clear_line_and_retries() {
    let dir = temp_dir("cli-nochain");
    mostro_box::node::init(&dir, None).unwrap();
    let dead = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mostro-box"))
        .arg("--data-dir")
        .arg(&dir)
        .arg("run")
        .args(["--set", "lightning.network=regtest"])
        .args(["--set", "lightning.chain_source=bitcoind"])
        .args([
            "--set",
            &format!("lightning.bitcoind_rpc_address=127.0.0.1:{dead}"),
        ])
        .args(["--set", "lightning.bitcoind_rpc_user=u"])
        .args([
            "--set",
            &format!("lightning.listen=127.0.0.1:{}", free_port()),
        ])
        .args(["--set", &format!("relay.listen=127.0.0.1:{}", free_port())])
        .args(["--set", "status.listen=127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("box.log")).unwrap())
        .spawn()
        .unwrap();
    // Killed however the test ends.
    let _child = KillOnDrop(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(dir.join("box.log")).unwrap();
        if log.contains("retry 1 in") {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retry line: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let line = log.lines().find(|l| l.contains("retry 1 in")).unwrap();
    assert!(
        line.contains("cannot reach the chain source") && line.contains("lightning.chain_source"),
        "{line}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_against_a_running_box_and_a_hold_survives_kill_9() {
    let chain = start_chain().await;
    let dir = temp_dir("cli");
    mostro_box::node::init(&dir, None).unwrap();
    let port = free_port();
    let mut b = BoxProcess::spawn(&dir, port, &chain, &[]).await;

    let status = cli_ok(&dir, &["--json", "status"]).await.json();
    assert_eq!(status["network"], "regtest");
    let box_id = status["lightning"]["node_id"].as_str().unwrap().to_string();
    let human = cli_ok(&dir, &["status"]).await.stdout;
    assert!(
        human.contains(&box_id) && human.contains("block height"),
        "{human}"
    );

    // Fund the box through its own address and watch the balance arrive.
    let addr = cli_ok(&dir, &["wallet", "address"]).await.stdout;
    chain.mine_to(1, &addr).await.unwrap();
    chain.mine(101).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let bal = cli_ok(&dir, &["--json", "wallet", "balance"]).await.json();
        if bal["onchain_spendable_sats"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "funds never arrived"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(cli_ok(&dir, &["wallet", "balance"])
        .await
        .stdout
        .contains("spendable"));

    let alice = wallet(&chain, "alice");
    regtest::fund(&chain, &[&alice], 1).await.unwrap();
    let alice_addr = alice.listening_addresses().unwrap()[0].to_string();
    let alice_uri = format!("{}@{alice_addr}", alice.node_id());
    cli_ok(&dir, &["peer", "connect", &alice_uri]).await;
    let peers = cli_ok(&dir, &["peer", "list"]).await.stdout;
    assert!(peers.contains(&alice.node_id().to_string()), "{peers}");

    // A channel from the box, followed until ready while blocks are mined.
    let miner = {
        let chain = chain.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let _ = chain.mine(1).await;
            }
        })
    };
    let open = cli_ok(
        &dir,
        &[
            "channel",
            "open",
            &alice_uri,
            "500000",
            "--push-sats",
            "100000",
        ],
    )
    .await
    .stdout;
    miner.abort();
    assert!(open.contains("pending") && open.contains("ready"), "{open}");

    // A channel to the box, so it can receive.
    let box_addr = status["lightning"]["listening"][0].as_str().unwrap();
    let to_box = alice
        .open_channel(
            box_id.parse().unwrap(),
            box_addr.parse().unwrap(),
            500_000,
            None,
            None,
        )
        .unwrap();
    wallet_event(&alice, "the channel to be pending", |e| match e {
        Event::ChannelPending {
            user_channel_id, ..
        } if *user_channel_id == to_box => Some(()),
        _ => None,
    })
    .await;
    chain.mine(6).await.unwrap();
    regtest::sync_until(&alice, "both channels usable", |n| {
        n.list_channels().iter().filter(|c| c.is_usable).count() == 2
    })
    .await
    .unwrap();
    let channels = cli_ok(&dir, &["channel", "list"]).await.stdout;
    assert!(
        channels.contains("INBOUND") && channels.matches("ready").count() == 2,
        "{channels}"
    );

    // Receive and pay, to test liquidity both ways.
    let inv = cli_ok(&dir, &["invoice", "create", "1000"]).await.stdout;
    alice
        .bolt11_payment()
        .send(&inv.parse().unwrap(), None)
        .unwrap();
    wallet_event(&alice, "alice to pay the box", |e| match e {
        Event::PaymentSuccessful { .. } => Some(()),
        Event::PaymentFailed { reason, .. } => panic!("payment failed: {reason:?}"),
        _ => None,
    })
    .await;
    let desc = ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
        ldk_node::lightning_invoice::Description::new("test".into()).unwrap(),
    );
    let alice_inv = alice
        .bolt11_payment()
        .receive(2_000_000, &desc, 600)
        .unwrap();
    let paid = cli_ok(&dir, &["pay", &alice_inv.to_string()]).await.stdout;
    assert!(paid.contains("paid 2000 sats"), "{paid}");

    // A hold invoice, paid and held, then the box dies with kill -9.
    let hold = cli_ok(&dir, &["--json", "invoice", "hold", "25000"])
        .await
        .json();
    let hold_inv: ldk_node::lightning_invoice::Bolt11Invoice =
        hold["invoice"].as_str().unwrap().parse().unwrap();
    let preimage = hold["preimage"].as_str().unwrap().to_string();
    let hash = hold["payment_hash"].as_str().unwrap().to_string();
    alice.bolt11_payment().send(&hold_inv, None).unwrap();
    wait_held(&dir, &hash).await;
    b.kill9();
    let b2 = BoxProcess::spawn(&dir, port, &chain, &[]).await;
    wait_held(&dir, &hash).await;
    let settled = cli_ok(&dir, &["invoice", "settle", &preimage]).await.stdout;
    assert!(settled.contains(&hash), "{settled}");
    wallet_event(
        &alice,
        "the held payment to settle after the restart",
        |e| match e {
            Event::PaymentSuccessful { payment_hash, .. } if payment_hash.to_string() == hash => {
                Some(())
            }
            Event::PaymentFailed { .. } => panic!("the held payment failed across the restart"),
            _ => None,
        },
    )
    .await;
    assert!(cli_ok(&dir, &["invoice", "holds"])
        .await
        .stdout
        .contains("(none)"));

    // Orders (none yet), and bad input: one line naming the problem, nothing changed.
    assert_eq!(cli_ok(&dir, &["order", "list"]).await.stdout, "(none)");
    let unknown = uuid::Uuid::new_v4().to_string();
    cli_err(&dir, &["order", "show", &unknown], "no order").await;
    cli_err(
        &dir,
        &["dev", "invoice", "bob", "1000"],
        "only in the playground",
    )
    .await;
    cli_err(&dir, &["dispute", "take", &unknown], "no dispute").await;
    let stranger = nostr::Keys::generate().public_key().to_hex();
    let stranger = format!("02{}", &stranger);
    cli_err(&dir, &["peer", "disconnect", &stranger], "is not a peer").await;
    cli_err(&dir, &["pay", "lnbcrt1garbage"], "not a BOLT11 invoice").await;
    cli_err(
        &dir,
        &["pay", &mainnet_invoice()],
        "the invoice is for bitcoin",
    )
    .await;
    cli_err(&dir, &["wallet", "send", &addr, "99999999999"], "more than").await;
    cli_err(
        &dir,
        &[
            "wallet",
            "send",
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            "1000",
        ],
        "not an address for regtest",
    )
    .await;
    cli_err(&dir, &["channel", "close", "nope"], "no channel nope").await;
    cli_err(&dir, &["invoice", "settle", &preimage], "settled").await;

    // An unpaid hold invoice cancelled; an on-chain send; a peer disconnected.
    let unpaid = cli_ok(&dir, &["--json", "invoice", "hold", "1000"])
        .await
        .json();
    let unpaid_hash = unpaid["payment_hash"].as_str().unwrap();
    let cancelled = cli_ok(&dir, &["invoice", "cancel", unpaid_hash])
        .await
        .stdout;
    assert!(cancelled.contains(unpaid_hash), "{cancelled}");
    let alice_onchain = alice.onchain_payment().new_address().unwrap().to_string();
    let sent = cli_ok(&dir, &["wallet", "send", &alice_onchain, "10000"])
        .await
        .stdout;
    assert!(sent.starts_with("sent: "), "{sent}");
    let txid = sent.trim_start_matches("sent: ");
    let pool = chain
        .rpc("getrawmempool", serde_json::json!([]))
        .await
        .unwrap();
    assert!(pool.as_array().unwrap().iter().any(|t| t == txid), "{pool}");

    // Close one channel cooperatively and force-close the other.
    let list = cli_ok(&dir, &["--json", "channel", "list"]).await.json();
    let ids: Vec<String> = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel_id"].as_str().unwrap().to_string())
        .collect();
    let closing = cli_ok(&dir, &["channel", "close", &ids[0]]).await.stdout;
    assert!(closing.contains("closing"), "{closing}");
    let forced = cli_ok(&dir, &["channel", "close", "--force", &ids[1]])
        .await
        .stdout;
    assert!(forced.contains("force-closing"), "{forced}");
    let gone = cli_ok(&dir, &["peer", "disconnect", &alice.node_id().to_string()]).await;
    assert!(gone.stdout.contains("disconnected"), "{}", gone.stdout);
    drop(b2);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `invoice holds` until the hold with `hash` is held.
async fn wait_held(dir: &std::path::Path, hash: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let holds = cli_ok(dir, &["--json", "invoice", "holds"]).await.json();
        let held = holds["holds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["hash"] == hash && h["state"] == "held");
        if held {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never held: {holds}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A valid mainnet invoice (signed by a throw-away key).
fn mainnet_invoice() -> String {
    use ldk_node::bitcoin::hashes::{sha256, Hash};
    use ldk_node::bitcoin::secp256k1::{Secp256k1, SecretKey};
    use ldk_node::lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[3; 32]).unwrap();
    InvoiceBuilder::new(Currency::Bitcoin)
        .description("elsewhere".into())
        .payment_hash(sha256::Hash::hash(b"x"))
        .payment_secret(PaymentSecret([2; 32]))
        .current_timestamp()
        .min_final_cltv_expiry_delta(40)
        .amount_milli_satoshis(1_000_000)
        .build_signed(|m| secp.sign_ecdsa_recoverable(m, &key))
        .unwrap()
        .to_string()
}

/// `mostro-box status` run as user `nobody` on a running box's data directory.
async fn status_as_nobody(dir: &std::path::Path) -> (bool, String) {
    let out = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_mostro-box"))
        .arg("--data-dir")
        .arg(dir)
        .arg("status")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_socket_answers_only_the_box_user() {
    use std::os::unix::fs::PermissionsExt;
    if !std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        // CI runs as root, so there this must run; a developer without root skips it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must run there"
        );
        eprintln!("skipped: acting as another user needs root");
        return;
    }
    let b = TestBox::start(&[]).await;
    cli_ok(&b.dir, &["status"]).await;

    // Another local user is stopped by the file modes...
    let (ok, err) = status_as_nobody(&b.dir).await;
    assert!(!ok, "another user got an answer");
    assert!(
        err.contains("permission denied") && err.contains("sudo -u"),
        "{err}"
    );

    // ...and, if someone loosens them, by the box itself, with what to do instead.
    // (Only the folders below the system temp dir: loosening /tmp itself would take its
    // sticky bit and lock every other user, apt's sandbox among them, out of it.)
    let tmp = std::env::temp_dir();
    let tmp_mode = std::fs::metadata(&tmp).unwrap().permissions().mode();
    let mut dir = b.dir.clone();
    while dir.starts_with(&tmp) && dir != tmp {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir.pop();
    }
    for f in ["mostro-box.toml", mostro_box::api::SOCKET_FILE] {
        let path = b.dir.join(f);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
    let (ok, err) = status_as_nobody(&b.dir).await;
    assert!(!ok, "another user got an answer");
    assert!(err.contains("only the box's own user"), "{err}");
    assert_eq!(
        std::fs::metadata(&tmp).unwrap().permissions().mode(),
        tmp_mode,
        "the test left the system temp dir's mode alone"
    );
}
