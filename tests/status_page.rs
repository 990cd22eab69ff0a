//! The operator's status page in a real browser (Debian's headless Chromium): the balances and
//! the orders this test makes appear, an open dispute is highlighted, and without the admin
//! token the page gives nothing away. A phone-sized screenshot is kept for CI in
//! `target/artifacts/status-page.png`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::trade::*;
use common::*;
use mostro_core::prelude::*;
use nostr_sdk::prelude::ToBech32;

/// Debian's Chromium (`apt-get install chromium`; `.ci/run` installs it), or `CHROMIUM_EXE`.
fn chromium() -> PathBuf {
    let exe = std::env::var_os("CHROMIUM_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        exe.exists(),
        "{} not found: install Debian's chromium (`.ci/run` does) or set CHROMIUM_EXE",
        exe.display()
    );
    exe
}

/// Runs headless Chromium on `url` with `args` (a fresh profile each time, so the only way in
/// is the link's token) and returns what it printed.
async fn browse(url: &str, args: &[String]) -> String {
    let profile = temp_dir("chromium");
    let run = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium answered within 90 s")
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One section of the page's DOM, by its id.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id} in the page"));
    let end = dom[start..].find("</section>").unwrap() + start;
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_page_shows_the_box_in_a_browser_and_nothing_without_the_token() {
    let t = trade(&[]).await;
    let dir = t.m.b.dir.clone();
    // A disputed trade, an active trade and an order in the book.
    let (disputed, s, b) = active_trade(&t).await;
    t.seller
        .send(s, Some(disputed), Action::Dispute, None)
        .await;
    t.buyer.expect(b, Action::DisputeInitiatedByPeer).await;
    let (active, _, _) = active_trade(&t).await;
    let (pending, _) = sell_order(&t).await;

    let link = cli_ok(&dir, &["--json", "status-page"]).await.json()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (base, token) = link
        .split_once("/?token=")
        .expect("the link carries the token");
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let token_file = std::fs::metadata(dir.join("admin.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(token_file.permissions().mode() & 0o777, 0o600);

    // Without the token, or with a wrong one or a wrong cookie: 401 and none of the box's data.
    let npub = cli_ok(&dir, &["--json", "status"]).await.json()["npub"]
        .as_str()
        .unwrap()
        .to_string();
    for (path, headers) in [
        ("/", String::new()),
        ("/?token=0000", String::new()),
        ("/", format!("Cookie: mostro_box_token={}\r\n", &token[1..])),
    ] {
        let (status, _, body) = http_request(port, path, &headers).await;
        assert!(status.contains("401"), "{path} {headers}: {status}");
        assert!(!body.contains(&npub) && !body.contains(&pending.to_string()));
        assert!(
            body.contains("mostro-box status-page"),
            "says how to get in"
        );
    }
    // The link logs in once: a cookie, and the token leaves the address bar.
    let (status, headers, _) = http_request(port, &format!("/?token={token}"), "").await;
    assert!(status.contains("303"), "{status}");
    assert!(
        headers.lines().any(|l| l.trim() == "location: /"),
        "{headers}"
    );
    assert!(headers.contains("httponly") && headers.contains("samesite=strict"));
    let (status, _, body) =
        http_request(port, "/", &format!("Cookie: mostro_box_token={token}\r\n")).await;
    assert!(status.contains("200") && body.contains(&npub), "{status}");

    // In the browser: the balances the CLI reports (polled: the on-chain wallet syncs on its
    // own schedule), the three orders and the dispute.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (dom, balance) = loop {
        let balance = cli_ok(&dir, &["--json", "wallet", "balance"]).await.json();
        let dom = browse(&link, &["--dump-dom".into()]).await;
        let shows = |id: &str, key: &str| {
            dom.contains(&format!("id=\"{id}\" data-sats=\"{}\"", balance[key]))
        };
        if (shows("balance-onchain", "onchain_total_sats")
            && shows("balance-lightning", "lightning_sats"))
            || tokio::time::Instant::now() > deadline
        {
            break (dom, balance);
        }
    };
    let balances = section(&dom, "balances");
    for (id, key) in [
        ("balance-onchain", "onchain_total_sats"),
        ("balance-lightning", "lightning_sats"),
        ("balance-inbound", "inbound_sats"),
        ("balance-outbound", "outbound_sats"),
    ] {
        assert!(
            balances.contains(&format!("id=\"{id}\" data-sats=\"{}\"", balance[key])),
            "{id} = {} in {balances}",
            balance[key]
        );
    }
    assert!(balance["lightning_sats"].as_u64().unwrap() > 0);
    let relay = section(&dom, "relay");
    assert!(relay.contains(&t.m.b.url) && relay.contains(&npub) && relay.contains("<svg"));
    assert!(section(&dom, "lightning").contains(&t.m.b.ln().node_id().to_string()));
    assert!(section(&dom, "channels").contains("Channels (2)"));

    let orders = section(&dom, "orders");
    let row = |id: uuid::Uuid| {
        let at = orders
            .find(&id.to_string())
            .unwrap_or_else(|| panic!("order {id} is not on the page"));
        &orders[at..at + orders[at..].find("</tr>").unwrap()]
    };
    // The next deadline: the pending order's expiry, the active trade's escrow wind-up.
    let show = |id: uuid::Uuid| {
        let dir = dir.clone();
        async move {
            cli_ok(&dir, &["--json", "order", "show", &id.to_string()])
                .await
                .json()
        }
    };
    let expires = show(pending).await["expires_at"].clone();
    assert!(row(pending).contains("pending"));
    assert!(
        row(pending).contains(&format!("data-at=\"{expires}\"")),
        "{}",
        row(pending)
    );
    let shown = show(active).await;
    assert!(
        shown["escrow"]["preimage"].is_null(),
        "the operator's view hides the preimage"
    );
    let escrow = shown["escrow"]["state"].clone();
    let margin = t.m.b.settings.lightning.escrow_deadline_margin_blocks;
    let wind_up = escrow["deadline"].as_u64().expect("a held escrow") - margin as u64;
    assert!(row(active).contains("active"));
    assert!(
        row(active).contains(&format!("data-block=\"{wind_up}\"")),
        "{}",
        row(active)
    );
    assert!(row(disputed).contains("dispute"));
    let disputes = section(&dom, "disputes");
    assert!(disputes.contains("class=\"alert\"") && disputes.contains(&disputed.to_string()));
    assert!(dom.contains("1 open dispute"));
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "the page refreshes itself"
    );

    // A phone-sized screenshot for people to look at.
    let artifacts = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &link,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=412,2200".into(),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture"
    );
}

/// Behind Umbrel's app proxy, which logs the operator in itself, the page needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_page_needs_no_token() {
    let b = TestBox::start(&["status.require_token=false"]).await;
    let link = cli_ok(&b.dir, &["--json", "status-page"]).await.json()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!link.contains("token"), "{link}");
    let port: u16 = link
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (status, _, body) = http_request(port, "/", "").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains(
        &mostro_box::keys::load(&b.dir)
            .unwrap()
            .public_key()
            .to_bech32()
            .unwrap()
    ));
    assert!(
        !b.dir.join("admin.token").exists(),
        "no token is made when none is asked for"
    );
}
