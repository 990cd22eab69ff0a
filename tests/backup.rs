//! `backup create` from a running box and offline, `backup restore` into an empty directory,
//! and a box started from the restored files: same keys, same orders.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use mostro_core::prelude::Kind;
use nostr_sdk::prelude::ToBech32;

const PASS: &str = "correct horse battery";

/// The CLI with the backup passphrase in its environment.
async fn with_pass(dir: &std::path::Path, args: &[&str], pass: &str) -> CliRun {
    cli_env(dir, args, &[("MOSTRO_BOX_BACKUP_PASSPHRASE", pass)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_keys_seed_and_orders() {
    let chain = start_chain().await;
    let b = TestBox::start_on(chain.clone(), &[]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let (i, rid) = t.new_order(fixed_order(Kind::Sell, 20_000, 7)).await;
    let id = order_of(&t.reply(i, Some(rid)).await).id.unwrap();
    let node_id = b.ln().node_id();
    let nsec = mostro_box::keys::load(&b.dir)
        .unwrap()
        .secret_key()
        .to_bech32()
        .unwrap();

    // From the running box: the daemon takes the snapshot while it keeps serving.
    let file = temp_dir("backups").join("box.backup");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let f = file.to_str().unwrap();
    let made = with_pass(&b.dir, &["backup", "create", f], PASS).await;
    assert!(made.ok, "{}", made.stderr);
    // The plain-text snapshot the daemon took for it is gone.
    let snapshots = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("backup-snapshot")
            })
            .count()
    };
    assert_eq!(snapshots(&b.dir), 0);
    assert!(made.stdout.contains("mostro-box.redb"), "{}", made.stdout);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains(&nsec),
        "the key is encrypted"
    );
    let again = with_pass(&b.dir, &["backup", "create", f], PASS).await;
    assert!(
        !again.ok && again.stderr.contains("exists already"),
        "{}",
        again.stderr
    );
    for short in ["short", "abcabcabcabcabc"] {
        let weak = with_pass(&b.dir, &["backup", "create", "/tmp/x.backup"], short).await;
        assert!(
            !weak.ok
                && weak.stderr.contains("at least 12")
                && !std::path::Path::new("/tmp/x.backup").exists(),
            "{}",
            weak.stderr
        );
    }
    // The key is scrypt 2^17: the header says so.
    let header = String::from_utf8_lossy(&bytes)
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let header: serde_json::Value = serde_json::from_str(&header).unwrap();
    assert_eq!(header["log_n"], 17, "{header}");

    // Restores: a wrong passphrase changes nothing; a box's own directory is refused.
    let target = temp_dir("restored");
    let wrong = with_pass(&target, &["backup", "restore", f], "not the passphrase").await;
    assert!(
        !wrong.ok && wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );
    assert!(!target.join("lightning.seed").exists());
    let over = with_pass(&b.dir, &["backup", "restore", f], PASS).await;
    assert!(
        !over.ok && over.stderr.contains("already holds a box"),
        "{}",
        over.stderr
    );
    let restored = with_pass(&target, &["backup", "restore", f], PASS).await;
    assert!(restored.ok, "{}", restored.stderr);
    for name in ["lightning.seed", "nostr.nsec", "mostro-box.redb"] {
        let mode = std::fs::metadata(target.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }

    // Offline backup of the restored directory (no daemon there yet).
    let offline = temp_dir("backups2").join("offline.backup");
    std::fs::create_dir_all(offline.parent().unwrap()).unwrap();
    let run = with_pass(
        &target,
        &["backup", "create", offline.to_str().unwrap()],
        PASS,
    )
    .await;
    assert!(run.ok, "{}", run.stderr);

    // The old box stops; the restored one has the same keys and the order.
    drop(t);
    drop(b);
    // A snapshot a killed `backup create` left behind is removed when the box starts.
    std::fs::write(target.join("backup-snapshot-leftover.redb"), b"plain text").unwrap();
    let r = TestBox::start_in(target.clone(), chain, &[]).await;
    assert_eq!(snapshots(&target), 0);
    assert_eq!(
        r.ln().node_id(),
        node_id,
        "same Lightning node id from the seed"
    );
    assert_eq!(
        mostro_box::keys::load(&target)
            .unwrap()
            .secret_key()
            .to_bech32()
            .unwrap(),
        nsec
    );
    let shown = cli_ok(&target, &["--json", "order", "show", &id.to_string()])
        .await
        .json();
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["amount"], 20_000);
}
