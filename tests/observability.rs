//! What an operator watches: Prometheus `/metrics` during and after a real trade, and the logs
//! of that whole trade searched for every secret the box holds.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::trade::*;
use common::*;
use mostro_core::prelude::*;
use nostr_sdk::prelude::ToBech32;

/// Every log line of this test binary, at debug level for the box and the libraries' defaults
/// one level more verbose than the daemon's.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Logs {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug,nostr_relay_pool=info,nostr_relay_builder=info,ldk_node=info,lightning=info,h2=info,hyper=info,rustls=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("this test binary installs the only subscriber");
    logs
}

/// `/metrics` as the operator's Prometheus sees it.
async fn metrics_of(t: &Trade) -> String {
    common::metrics(&t.m.b.dir).await
}

fn value(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_a_trade_and_no_secret_reaches_the_logs() {
    let logs = capture_logs();
    let t = trade(&[]).await;
    let (id, s, b) = active_trade(&t).await;

    // While the seller's payment is held.
    let m = metrics_of(&t).await;
    assert_eq!(value(&m, "mostro_htlcs_held"), Some(1), "{m}");
    assert!(
        value(&m, "mostro_htlc_nearest_deadline_blocks").unwrap() > 144,
        "{m}"
    );
    assert_eq!(
        value(&m, "mostro_orders{status=\"active\"}"),
        Some(1),
        "{m}"
    );
    assert!(value(&m, "mostro_relay_connections").unwrap() >= 2, "{m}");

    fiat_sent(&t, id, s, b).await;
    t.seller.send(s, Some(id), Action::Release, None).await;
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    let m = metrics_of(&t).await;
    assert_eq!(
        value(&m, "mostro_orders{status=\"success\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(value(&m, "mostro_trades_completed_total"), Some(1), "{m}");
    assert_eq!(
        value(&m, "mostro_volume_sats_total"),
        Some(AMOUNT as u64),
        "{m}"
    );
    assert_eq!(
        value(&m, "mostro_fees_earned_sats_total"),
        Some(2 * FEE as u64),
        "{m}"
    );
    assert_eq!(value(&m, "mostro_htlcs_held"), Some(0), "{m}");
    assert_eq!(value(&m, "mostro_payout_failures_total"), Some(0), "{m}");
    // new-order, take-sell, fiat-sent, release.
    assert_eq!(value(&m, "mostro_requests_received_total"), Some(4), "{m}");

    // The logs of the whole trade hold none of the box's secrets.
    // The operator's `order show` hides the preimage; the engine's record has it.
    let shown = cli_ok(&t.m.b.dir, &["--json", "order", "show", &id.to_string()]).await;
    let order = t.m.b.running.engine.order(id).unwrap().expect("the order");
    let preimage = order.trade.escrow.expect("an escrow").preimage.to_hex();
    let node = mostro_box::keys::load(&t.m.b.dir).unwrap();
    let seed = mostro_box::lightning::seed::Seed::load(&t.m.b.dir, None).unwrap();
    let words = seed.words();
    assert!(
        !shown.stdout.contains(&preimage),
        "order show reveals the preimage"
    );
    let some_words: Vec<&str> = words.split_whitespace().take(4).collect();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("payout: buyer paid"),
        "the capture holds the trade's logs"
    );
    for (what, secret) in [
        ("escrow preimage", preimage),
        ("node nsec", node.secret_key().to_bech32().unwrap()),
        ("node secret hex", node.secret_key().to_secret_hex()),
        ("seed words", some_words.join(" ")),
        (
            "seed bytes",
            ldk_node::bitcoin::hex::DisplayHex::to_lower_hex_string(&seed.bytes()[..16]),
        ),
    ] {
        assert!(!text.contains(&secret), "the logs contain the {what}");
    }
}
