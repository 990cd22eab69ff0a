//! The box's life cycle as an operator's machine runs it: the systemd unit's own command lines
//! (`ExecStartPre` init, `ExecStart` run, `READY=1`, SIGTERM) and the container image's
//! entrypoint, on one data directory, start after start and across an upgrade.

mod common;

use common::service::{install, settings_env, EntryPoint};
use common::*;
use mostro_core::prelude::Kind as OrderKind;

/// What must survive every restart: the node's identities and the bytes of its secrets.
#[derive(Debug, PartialEq)]
struct Identity {
    npub: String,
    ln_node_id: String,
    nsec_file: Vec<u8>,
    seed_file: Vec<u8>,
    settings_file: Vec<u8>,
}

async fn identity(dir: &std::path::Path) -> Identity {
    let status = cli_ok(dir, &["--json", "status"]).await.json();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    Identity {
        npub: status["npub"].as_str().unwrap().to_string(),
        ln_node_id: status["lightning"]["node_id"].as_str().unwrap().to_string(),
        nsec_file: read(mostro_box::keys::NODE_KEY_FILE),
        seed_file: read(mostro_box::lightning::seed::SEED_FILE),
        settings_file: read(mostro_box::config::CONFIG_FILE),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_cycle_through_the_unit_an_upgrade_and_the_container_entrypoint() {
    let chain = start_chain().await;
    let root = temp_dir("life-cycle");
    // Not created by the test: the first start's `init` makes it.
    let dir = root.join("var-lib-mostro-box");
    let bin_dir = root.join("usr-local-bin");
    let log = root.join("box.log");
    let port = free_port();
    let settings = settings_env(&base_overrides(port, &chain));
    let unit = EntryPoint::systemd_unit(&install(&bin_dir), &dir);
    let container = EntryPoint::container(&bin_dir, &dir);

    // First start on an empty machine: the unit's `init` makes the key, seed and settings.
    let mut s = unit.start(&settings, &log).await;
    s.ready(port).await;
    let first = identity(&dir).await;
    assert!(first.npub.starts_with("npub1"), "{first:?}");

    // Something to keep: an order on the book and a channel from a trader's wallet.
    let node = mostro_box::keys::load(&dir).unwrap().public_key();
    let t = Trader::new(&format!("ws://127.0.0.1:{port}"), node, Wire::V2, false).await;
    let (i, rid) = t.new_order(fixed_order(OrderKind::Sell, 10_000, 5)).await;
    let order = order_of(&t.reply(i, Some(rid)).await).id.unwrap();
    let alice = wallet(&chain, "alice");
    mostro_box::regtest::fund(&chain, &[&alice], 1)
        .await
        .unwrap();
    let ln_listen = settings
        .iter()
        .find(|(k, _)| k == "MOSTRO_BOX_LIGHTNING_LISTEN")
        .unwrap()
        .1
        .clone();
    alice
        .open_channel(
            first.ln_node_id.parse().unwrap(),
            ln_listen.parse().unwrap(),
            1_000_000,
            None,
            None,
        )
        .unwrap();
    let channel = wallet_event(&alice, "the channel pending", |e| match e {
        ldk_node::Event::ChannelPending { channel_id, .. } => Some(channel_id.to_string()),
        _ => None,
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT * 6;
    while chain.mempool_size().await.unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no funding transaction"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    mine_and_sync(&chain, 6, &[&alice]).await;
    let channels = |d: std::path::PathBuf| async move {
        cli_ok(&d, &["--json", "channel", "list"]).await.stdout
    };
    assert!(channels(dir.clone()).await.contains(&channel));
    let stopped = s.stop().await;
    assert!(stopped.success(), "first stop: {stopped}");

    // Start again, upgrade (a second install over the first, then start), and the container's
    // entrypoint on the same data: each start is ready and keeps everything.
    for (step, entry, reinstall) in [
        ("restart", &unit, false),
        ("upgrade", &unit, true),
        ("container", &container, false),
    ] {
        if reinstall {
            install(&bin_dir);
        }
        let mut s = entry.start(&settings, &log).await;
        s.ready(port).await;
        assert_eq!(identity(&dir).await, first, "{step}: identity changed");
        let shown = cli_ok(&dir, &["--json", "order", "show", &order.to_string()])
            .await
            .json();
        assert_eq!(shown["status"], "pending", "{step}: {shown}");
        assert!(
            channels(dir.clone()).await.contains(&channel),
            "{step}: the channel is gone"
        );
        let stopped = s.stop().await;
        assert!(stopped.success(), "{step}: stop: {stopped}");
    }
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn init_on_an_initialised_directory_keeps_everything_and_succeeds() {
    let dir = temp_dir("init-twice");
    let first = cli_ok(&dir, &["init"]).await;
    assert!(first.stdout.starts_with("Created"), "{}", first.stdout);
    let files = [
        mostro_box::keys::NODE_KEY_FILE,
        mostro_box::lightning::seed::SEED_FILE,
        mostro_box::config::CONFIG_FILE,
    ];
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let before: Vec<Vec<u8>> = files.iter().map(|f| read(f)).collect();

    let again = cli_ok(&dir, &["init"]).await;
    assert_eq!(
        again.stdout.matches("[kept]").count(),
        3,
        "{}",
        again.stdout
    );
    let npub = |out: &str| {
        out.lines()
            .find(|l| l.contains("npub:"))
            .map(str::to_string)
    };
    assert_eq!(npub(&again.stdout), npub(&first.stdout));
    assert_eq!(files.iter().map(|f| read(f)).collect::<Vec<_>>(), before);

    // What is missing is filled in; the secrets stay.
    std::fs::remove_file(dir.join(mostro_box::config::CONFIG_FILE)).unwrap();
    let refill = cli_ok(&dir, &["init"]).await;
    assert_eq!(
        refill.stdout.matches("[kept]").count(),
        2,
        "{}",
        refill.stdout
    );
    assert_eq!(files.iter().map(|f| read(f)).collect::<Vec<_>>(), before);

    // A damaged key is refused, not replaced.
    std::fs::write(dir.join(mostro_box::keys::NODE_KEY_FILE), "nonsense").unwrap();
    cli_err(&dir, &["init"], "damaged").await;
    assert_eq!(read(mostro_box::keys::NODE_KEY_FILE), b"nonsense");
}
