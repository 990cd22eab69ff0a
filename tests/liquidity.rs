//! First inbound liquidity from an LSPS2 provider (the liquidity guide's way in): the box makes
//! a just-in-time invoice with `invoice create --jit`, a payer pays it through the provider, and
//! the provider opens a channel to the box on the spot. The provider is a real ldk-node on the
//! same regtest chain running ldk-node's LSPS2 service.

mod common;

use common::*;
use ldk_node::liquidity::LSPS2ServiceConfig;
use mostro_box::regtest;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jit_channel_from_an_lsps2_provider_gives_the_box_inbound_liquidity() {
    let chain = start_chain().await;
    let fee_ppm = 10_000; // 1 % of the payment
    let lsp = regtest::start_node(
        &temp_dir("lsp"),
        &chain,
        "lsp",
        regtest::free_port().unwrap(),
        |b| {
            b.set_liquidity_provider_lsps2(LSPS2ServiceConfig {
                require_token: None,
                advertise_service: false,
                channel_opening_fee_ppm: fee_ppm,
                channel_over_provisioning_ppm: 1_000_000, // a channel twice the payment
                max_payment_size_msat: 1_000_000_000,
                min_payment_size_msat: 0,
                min_channel_lifetime: 100,
                min_channel_opening_fee_msat: 0,
                max_client_to_self_delay: 1024,
                client_trusts_lsp: false,
            });
        },
    )
    .unwrap();
    let lsp_addr = lsp.listening_addresses().unwrap()[0].to_string();
    let lsp_id = lsp.node_id().to_string();

    // Without a provider in the settings, --jit says what to set.
    let plain = TestBox::start_on(chain.clone(), &[]).await;
    cli_err(
        &plain.dir,
        &["invoice", "create", "100000", "--jit"],
        "lightning.lsps2_node_id",
    )
    .await;
    drop(plain);

    let b = TestBox::start_on(
        chain.clone(),
        &[
            &format!("lightning.lsps2_node_id={lsp_id}"),
            &format!("lightning.lsps2_address={lsp_addr}"),
        ],
    )
    .await;
    let payer = wallet(&chain, "payer");
    regtest::fund(&chain, &[b.ln(), &lsp, &payer], 1)
        .await
        .unwrap();
    regtest::open_channel(&chain, &payer, &lsp, 2_000_000, 0)
        .await
        .unwrap();
    assert!(
        b.ln().list_channels().is_empty(),
        "no channel before the JIT payment"
    );

    let sats = 100_000u64;
    let inv = cli_ok(&b.dir, &["invoice", "create", &sats.to_string(), "--jit"])
        .await
        .stdout;
    let inv: ldk_node::lightning_invoice::Bolt11Invoice = inv.trim().parse().unwrap();
    payer.bolt11_payment().send(&inv, None).unwrap();

    // The box receives the payment less the provider's fee, over a new channel that leaves it
    // able to receive about as much again.
    let fee = sats * fee_ppm as u64 / 1_000_000;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while ln_sats(b.ln()).await < sats - fee && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        ln_sats(b.ln()).await,
        sats - fee,
        "received less the 1 % fee"
    );
    let channels = b.ln().list_channels();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].counterparty_node_id, lsp.node_id());
    let status = cli_ok(&b.dir, &["--json", "status"]).await.json();
    let inbound = status["balances"]["inbound_sats"].as_u64().unwrap();
    assert!(
        inbound >= (sats - fee) * 9 / 10,
        "inbound liquidity {inbound} sats after the JIT channel"
    );
    drop(b);
    lsp.stop().unwrap();
    payer.stop().unwrap();
}
