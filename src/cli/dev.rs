//! `mostro-box dev`: a whole Lightning + Nostr playground on this machine. It provisions and
//! starts a regtest bitcoind, starts the box on it, a liquidity peer with channels to and from
//! the box, and two funded trader wallets (alice and bob) with channels to the peer, then prints
//! how to point mostro-cli at it. Ctrl-C stops all of it; state is kept in the dev data
//! directory, so the next run starts where this one stopped.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ldk_node::Node;
use nostr::ToBech32;

use crate::config::Settings;
use crate::node;
use crate::regtest::{self, Bitcoind};

/// Sats in each channel the playground opens; half is pushed to the other side so money can
/// flow both ways from the start.
const CHANNEL_SATS: u64 = 2_000_000;
/// The box's Lightning port in the playground; the peers take the next three.
const BOX_LN_PORT: u16 = 19735;

/// Runs the playground in `dir` with extra `--set` overrides until Ctrl-C.
pub async fn run(dir: &Path, mut overrides: Vec<String>) -> anyhow::Result<()> {
    node::init(dir, None)?;
    let exe = regtest::find_or_provision_bitcoind(&super::bitcoind_cache())?;
    let bitcoind = Bitcoind::start(&exe, &dir.join("bitcoind"))
        .await
        .context("starting bitcoind")?;
    if bitcoind.height().await? == 0 {
        bitcoind.mine(1).await?;
    }
    // Fixed ports, so the peers each node remembers are still there on the next run.
    let mut set = vec![
        "relay.listen=127.0.0.1:7777".to_string(),
        "relay.public_url=ws://127.0.0.1:7777".to_string(),
        "mostro.fiat_currencies_accepted=[]".to_string(),
    ];
    set.extend(super::regtest_overrides(&bitcoind)?);
    set.push(format!("lightning.listen=127.0.0.1:{BOX_LN_PORT}"));
    set.push("status.listen=127.0.0.1:7778".into());
    set.append(&mut overrides);
    let settings = Settings::load(dir, std::env::vars(), &set)?;
    let url = settings.relay.public_url.clone();
    let running = node::start(dir, settings).await?;
    let peers = dir.join("peers");
    let lsp = regtest::start_wallet(
        &peers.join("liquidity"),
        &bitcoind,
        "liquidity-peer",
        BOX_LN_PORT + 1,
    )?;
    let alice = regtest::start_wallet(&peers.join("alice"), &bitcoind, "alice", BOX_LN_PORT + 2)?;
    let bob = regtest::start_wallet(&peers.join("bob"), &bitcoind, "bob", BOX_LN_PORT + 3)?;
    running
        .dev_wallets
        .write()
        .expect("dev wallets lock")
        .extend([
            ("alice".to_string(), alice.clone()),
            ("bob".to_string(), bob.clone()),
        ]);
    let the_box = running.lightning.node().clone();
    let all = [&the_box, &lsp, &alice, &bob];
    for n in &all[1..] {
        connect(n, &the_box)?;
    }
    connect(&alice, &lsp)?;
    connect(&bob, &lsp)?;
    if the_box.list_channels().is_empty() {
        eprintln!("First run: funding the wallets and opening channels on regtest...");
        let nodes: Vec<&Node> = all.iter().map(|n| n.as_ref()).collect();
        regtest::fund(&bitcoind, &nodes, 1).await?;
        eprintln!("  box <-> liquidity peer");
        regtest::open_channel(&bitcoind, &the_box, &lsp, CHANNEL_SATS, CHANNEL_SATS / 2).await?;
        for (name, trader) in [("alice", &alice), ("bob", &bob)] {
            eprintln!("  {name} <-> liquidity peer");
            regtest::open_channel(&bitcoind, trader, &lsp, CHANNEL_SATS, CHANNEL_SATS / 2).await?;
        }
    }
    let npub = running.pubkey.to_bech32()?;
    println!("mostro-box dev playground is running (regtest)");
    println!("  relay:     {url}");
    println!("  npub:      {npub}");
    println!("  lightning: {}", the_box.node_id());
    println!(
        "  liquidity peer {} with channels to the box and to alice ({}) and bob ({})",
        lsp.node_id(),
        alice.node_id(),
        bob.node_id()
    );
    println!(
        "  operator:  mostro-box --data-dir {} status   (also: channel list, order list, ...)",
        dir.display()
    );
    println!(
        "  status page: mostro-box --data-dir {} status-page   (prints its login link)",
        dir.display()
    );
    println!("Point mostro-cli at it with:");
    println!("  export MOSTRO_PUBKEY={npub}");
    println!("  export RELAYS={url}");
    println!("or trade as alice or bob (each with its own mostro-cli identity and wallet):");
    println!("  eval \"$(mostro-box dev env alice)\"      # then mostro-cli neworder ...");
    println!("  mostro-box dev pay alice INVOICE         # the seller pays the hold invoice");
    println!("  mostro-box dev invoice bob SATS          # the buyer's payout invoice");
    println!("Ctrl-C stops everything.");
    let result = running.run_until(crate::service::shutdown_signal()).await;
    println!("stopping");
    for n in [lsp, alice, bob] {
        stop(n);
    }
    bitcoind.stop().await;
    result.context("the engine stopped")
}

/// Runs a playground wallet command against the running playground in `dir`.
pub async fn wallet_command(
    dir: &Path,
    as_json: bool,
    cmd: super::DevCommand,
) -> anyhow::Result<()> {
    use super::DevCommand;
    use crate::api::client::call;
    use serde_json::json;
    let value = match cmd {
        DevCommand::Env { trader } => {
            if !matches!(trader.as_str(), "alice" | "bob") {
                anyhow::bail!("no trader {trader}: the playground has alice and bob");
            }
            let npub = crate::keys::load(dir)?.public_key().to_bech32()?;
            // mostro-cli creates its own directory but not the ones above it.
            std::fs::create_dir_all(dir.join("traders"))?;
            println!("export MOSTRO_PUBKEY={npub}");
            println!("export RELAYS=ws://127.0.0.1:7777");
            println!(
                "export MCLI_DIR={}",
                dir.join("traders").join(&trader).display()
            );
            return Ok(());
        }
        DevCommand::Invoice { wallet, sats } => {
            let v = call(
                dir,
                "POST",
                "/v1/dev/invoice",
                Some(json!({ "wallet": wallet, "sats": sats })),
            )
            .await?;
            if !as_json {
                println!("{}", v["invoice"].as_str().unwrap_or_default());
                return Ok(());
            }
            v
        }
        DevCommand::Pay { wallet, invoice } => {
            let v = call(
                dir,
                "POST",
                "/v1/dev/pay",
                Some(json!({ "wallet": wallet, "invoice": invoice })),
            )
            .await?;
            if !as_json {
                if v["held_by_the_box"] == true {
                    println!("{wallet} paid {} sats: the box holds them", v["sent_sats"]);
                } else {
                    println!("{wallet} sent {} sats", v["sent_sats"]);
                }
                return Ok(());
            }
            v
        }
        DevCommand::Balance => {
            let v = call(dir, "GET", "/v1/dev/balance", None).await?;
            if !as_json {
                for w in v["wallets"].as_array().into_iter().flatten() {
                    println!(
                        "{}: {} sats in channels, {} on chain",
                        w["wallet"].as_str().unwrap_or_default(),
                        w["lightning_sats"],
                        w["onchain_sats"]
                    );
                }
                return Ok(());
            }
            v
        }
    };
    println!("{value}");
    Ok(())
}

fn connect(from: &Node, to: &Node) -> anyhow::Result<()> {
    let addr = to
        .listening_addresses()
        .and_then(|a| a.first().cloned())
        .context("peer has no listening address")?;
    from.connect(to.node_id(), addr, true)
        .with_context(|| format!("connecting to {}", to.node_id()))
}

fn stop(node: Arc<Node>) {
    if let Err(e) = node.stop() {
        tracing::warn!("stopping a playground wallet: {e}");
    }
}
