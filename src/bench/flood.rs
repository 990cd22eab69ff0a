//! `mostro-box bench flood`: the box as its own process (`mostro-box run`, so the memory
//! measured is the box's alone) under a flood from many addresses, while a real trader trades.
//!
//! The flood is `requests` "requests" to the node that nobody can open and `chats` chat events
//! to random recipients, sent from `requests + chats` / [`PER_ADDRESS`] addresses, half IPv4
//! and half IPv6 (each its own /64), each within the default per-address limits. The addresses
//! come through `X-Forwarded-For` from a reverse proxy on loopback that the box is told to
//! trust, which is how a box behind Caddy or a tunnel sees its traders. Meanwhile a trader makes
//! an order every second (the time to its ack is measured), and every few seconds makes an
//! order and takes it with a second key without paying, so the box's waiting time-out fires:
//! how late each time-out's public event comes is measured. Last, the store as it is a month
//! later: the relay's retention sweep run on the stopped box as of 31 days on, then a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mostro_core::prelude::{
    unwrap_incoming, wrap_message_with, Action, Kind as OrderKind, Message, Payload, SmallOrder,
    WrapOptions,
};
use nostr::{EventBuilder, Filter, JsonUtil, Keys, Kind, PublicKey, Tag};
use nostr_sdk::{Client, RelayPoolNotification};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ms, pct};
use crate::protocol::DIRECT;

/// Events each flooding address sends: within its default budget of 600 a minute.
const PER_ADDRESS: usize = 500;
/// Flooding connections at once.
const SENDERS: usize = 32;
/// The waiting time-out the box runs with here, seconds.
const TIMEOUT: u64 = 20;

/// Runs the flood benchmark and prints its figures.
pub async fn flood(requests: usize, chats: usize) -> anyhow::Result<()> {
    let (dir, bitcoind) = super::fresh_box("flood").await?;
    let port = crate::regtest::free_port()?;
    let url = format!("ws://127.0.0.1:{port}");
    let mut set = vec![
        format!("relay.listen=127.0.0.1:{port}"),
        format!("relay.public_url={url}"),
        "relay.trusted_proxies=[\"127.0.0.1\"]".into(),
        format!("mostro.expiration_seconds={TIMEOUT}"),
        "mostro.fiat_currencies_accepted=[]".into(),
        "price.api_url=http://127.0.0.1:9".into(),
    ];
    set.extend(crate::cli::regtest_overrides(&bitcoind)?);
    let log = std::fs::File::create(dir.join("box.log"))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--data-dir").arg(&dir).arg("run");
    for s in &set {
        cmd.arg("--set").arg(s);
    }
    let mut child = cmd
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the box")?;
    let pid = child.id();
    let result = measure(&dir, port, pid, requests, chats).await;
    // Stopped as its service manager stops it.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let result = match result {
        Ok(before) => after_retention(&dir, &set, &mut cmd, port, before).await,
        Err(e) => Err(e),
    };
    bitcoind.stop().await;
    result
}

/// The store a month after the flood: the relay's own retention sweep, run on the stopped
/// box's store as of 31 days later (the flood's chats are then past the 30-day retention),
/// then the box started again as its service manager starts it; it compacts a file that is
/// mostly free space.
async fn after_retention(
    dir: &std::path::Path,
    set: &[String],
    cmd: &mut std::process::Command,
    port: u16,
    before_mb: f64,
) -> anyhow::Result<()> {
    let path = dir.join(crate::node::STORE_FILE);
    let size_mb = || std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1e6);
    let settings = crate::config::Settings::parse("", dir, Vec::new(), set)?;
    let node = crate::keys::load(dir)?.public_key();
    let later = nostr::Timestamp::from(crate::protocol::now() as u64 + 31 * 86_400);
    let forgot = {
        let store = crate::store::Store::open(&path)?;
        crate::relay::tidy_stopped_box(&store, &settings, node, later).await?
    };
    let mut again = cmd.spawn().context("starting the box again")?;
    let started = Instant::now();
    while health(port).await.is_none() && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = size_mb();
    println!(
        "31 days later: the retention sweep forgot {forgot} events; store file after a restart \
         {after:.1} MB ({:.2}x its {before_mb:.1} MB before the flood); box RSS {:.0} MB",
        after / before_mb,
        rss_of(again.id())
    );
    let _ = again.kill();
    let _ = again.wait();
    Ok(())
}

async fn measure(
    dir: &std::path::Path,
    port: u16,
    pid: u32,
    requests: usize,
    chats: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    while health(port).await.is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the box did not start: see {}/box.log", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let node = crate::keys::load(dir)?.public_key();
    let store = dir.join(crate::node::STORE_FILE);
    let size_mb = || std::fs::metadata(&store).map_or(0.0, |m| m.len() as f64 / 1e6);
    let (rss_before, store_before) = (rss_of(pid), size_mb());

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let waiting = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (done, peak, waiting) = (done.clone(), peak.clone(), waiting.clone());
        tokio::spawn(async move {
            while !done.load(Relaxed) {
                peak.fetch_max((rss_of(pid) * 1024.0) as u64, Relaxed);
                if let Some(n) = health(port).await.and_then(|h| h["inbox_backlog"].as_u64()) {
                    waiting.lock().expect("samples").push(n);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let url = format!("ws://127.0.0.1:{port}");
    let trader = tokio::spawn(trade_while(url.clone(), node, done.clone()));
    let timers = tokio::spawn(time_outs_while(url, node, done.clone()));

    eprintln!("bench: flooding with {requests} requests and {chats} chats...");
    let t0 = Instant::now();
    let counts = send_flood(port, node, requests, chats).await;
    let flood_time = t0.elapsed();
    done.store(true, Relaxed);
    let acks = trader.await??;
    let lateness = timers.await??;
    // The backlog the flood left is handled before the figures after it.
    let deadline = Instant::now() + Duration::from_secs(600);
    while health(port).await.and_then(|h| h["inbox_backlog"].as_u64()) != Some(0) {
        if Instant::now() > deadline {
            bail!("the inbox was not empty 10 minutes after the flood");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sampler.abort();
    let (rss_after, store_after) = (rss_of(pid), size_mb());

    let peak_mb = (peak.load(Relaxed) as f64 / 1024.0).max(rss_after);
    let addresses = (requests + chats).div_ceil(PER_ADDRESS);
    let sent = requests + chats;
    println!(
        "flood: {requests} requests + {chats} chats from {addresses} addresses \
         ({} IPv4, {} IPv6) in {:.0} s ({:.0} events/s); accepted {}, refused {} \
         (busy: {}, rate-limited: {}, other: {})",
        addresses.div_ceil(2),
        addresses / 2,
        flood_time.as_secs_f64(),
        sent as f64 / flood_time.as_secs_f64(),
        counts.accepted.load(Relaxed),
        sent - counts.accepted.load(Relaxed),
        counts.busy.load(Relaxed),
        counts.rate.load(Relaxed),
        counts.other.load(Relaxed),
    );
    println!(
        "box RSS: before {rss_before:.0} MB, peak {peak_mb:.0} MB, after {rss_after:.0} MB \
         (growth {:.0} MB at the peak, {:.0} MB after)",
        peak_mb - rss_before,
        rss_after - rss_before
    );
    println!("store file: before {store_before:.1} MB, after {store_after:.1} MB");
    let mut waiting = std::mem::take(&mut *waiting.lock().expect("samples"));
    waiting.sort_unstable();
    println!(
        "requests waiting in the inbox during the flood (sampled every 250 ms): p50 {}, p99 {}, \
         max {}",
        waiting.get(waiting.len() / 2).copied().unwrap_or(0),
        waiting.get(waiting.len() * 99 / 100).copied().unwrap_or(0),
        waiting.last().copied().unwrap_or(0),
    );
    let mut acks = acks;
    acks.sort();
    println!(
        "trader's new-order during the flood: {} orders, ack p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        acks.len(),
        ms(pct(&acks, 50)),
        ms(pct(&acks, 99)),
        ms(acks.last().copied().unwrap_or_default()),
    );
    let mut late = lateness;
    late.sort_by(|a, b| a.total_cmp(b));
    println!(
        "timers: {} waiting time-outs ({TIMEOUT} s) seen on the relay, late by p50 {:.2} s, max \
         {:.2} s; every one within 2 s: {}",
        late.len(),
        late.get(late.len() / 2).copied().unwrap_or(0.0),
        late.last().copied().unwrap_or(0.0),
        if late.iter().all(|l| *l <= 2.0) && !late.is_empty() {
            "yes"
        } else {
            "no"
        },
    );
    Ok(store_before)
}

/// The box's `/health`, once it answers.
async fn health(port: u16) -> Option<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    serde_json::from_str(out.split("\r\n\r\n").nth(1)?).ok()
}

/// A process's resident memory now, MB.
fn rss_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    busy: AtomicUsize,
    rate: AtomicUsize,
    other: AtomicUsize,
}

/// Sends the flood from [`SENDERS`] connections at a time, one address per connection.
async fn send_flood(port: u16, node: PublicKey, requests: usize, chats: usize) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let next = Arc::new(AtomicUsize::new(0));
    let addresses = (requests + chats).div_ceil(PER_ADDRESS);
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (counts, next) = (counts.clone(), next.clone());
        senders.spawn(async move {
            loop {
                let a = next.fetch_add(1, Relaxed);
                if a >= addresses {
                    return;
                }
                // Requests first, then chats, PER_ADDRESS events an address.
                let first = a * PER_ADDRESS;
                let last = (first + PER_ADDRESS).min(requests + chats);
                let to_node = requests.saturating_sub(first).min(last - first);
                if let Err(e) = flood_from(
                    port,
                    address(a),
                    node,
                    to_node,
                    last - first - to_node,
                    &counts,
                )
                .await
                {
                    eprintln!("bench: address {a}: {e}");
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
    counts
}

/// Address number `a`: even ones IPv4, odd ones IPv6, each its own /64.
fn address(a: usize) -> String {
    let n = a / 2;
    if a % 2 == 0 {
        format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
    } else {
        format!("2001:db8:{:x}:{:x}::1", (n >> 16) & 0xffff, n & 0xffff)
    }
}

/// One address's part: `to_node` junk requests and `chats` chats on one connection.
async fn flood_from(
    port: u16,
    from: String,
    node: PublicKey,
    to_node: usize,
    chats: usize,
    counts: &Counts,
) -> std::io::Result<()> {
    // Signing 500 events takes tens of milliseconds: off the runtime's threads, so that the
    // trader measured in this same process is not kept waiting behind it.
    let frames = tokio::task::spawn_blocking(move || {
        let keys = Keys::generate();
        let mut frames = Vec::with_capacity(to_node + chats);
        for i in 0..to_node + chats {
            let to = if i < to_node {
                node
            } else {
                Keys::generate().public_key()
            };
            let junk = format!("{:064x}{i:08x}", rand_u128());
            let ev = EventBuilder::new(Kind::GiftWrap, junk)
                .tag(Tag::public_key(to))
                .sign_with_keys(&keys)
                .map_err(std::io::Error::other)?;
            frames.push(format!("[\"EVENT\",{}]", ev.as_json()));
        }
        Ok::<_, std::io::Error>(frames)
    })
    .await
    .map_err(std::io::Error::other)??;
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let _ = s.set_nodelay(true);
    let (mut rd, mut wr) = tokio::io::split(s);
    wr.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             X-Forwarded-For: {from}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        rd.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        counts.rate.fetch_add(frames.len(), Relaxed);
        return Ok(());
    }
    let n = frames.len();
    let writer = async move {
        for f in frames {
            wr.write_all(&client_frame(f.as_bytes())).await?;
        }
        wr.flush().await?;
        Ok::<_, std::io::Error>(wr)
    };
    let reader = async {
        let mut seen = 0;
        while seen < n {
            let Some(text) = read_frame(&mut rd).await? else {
                break;
            };
            if !text.starts_with("[\"OK\"") {
                continue;
            }
            seen += 1;
            if text.contains(",true,") {
                counts.accepted.fetch_add(1, Relaxed);
            } else if text.contains("busy") {
                counts.busy.fetch_add(1, Relaxed);
            } else if text.contains("rate-limited") {
                counts.rate.fetch_add(1, Relaxed);
            } else {
                counts.other.fetch_add(1, Relaxed);
            }
        }
        counts.other.fetch_add(n - seen, Relaxed);
        Ok::<_, std::io::Error>(())
    };
    let (w, r) = tokio::join!(writer, reader);
    drop(w?);
    r
}

fn rand_u128() -> u128 {
    u128::from_le_bytes(
        crate::lightning::Preimage::random().0[..16]
            .try_into()
            .expect("16"),
    )
}

/// A masked text frame, as a client sends it (a zero mask leaves the payload as it is).
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The next text frame from the server (`None` when it closes).
async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R) -> std::io::Result<Option<String>> {
    loop {
        let mut h = [0u8; 2];
        rd.read_exact(&mut h).await?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                rd.read_exact(&mut b).await?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                rd.read_exact(&mut b).await?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await?;
        match h[0] & 0x0f {
            8 => return Ok(None),
            1 => return Ok(Some(String::from_utf8_lossy(&payload).into_owned())),
            _ => continue,
        }
    }
}

/// A trader's client, subscribed to what the node sends `keys`.
async fn client_for(url: &str, keys: &[PublicKey]) -> anyhow::Result<Client> {
    let c = Client::default();
    c.add_relay(url).await?;
    c.connect().await;
    c.wait_for_connection(Duration::from_secs(10)).await;
    c.subscribe(
        Filter::new()
            .kind(Kind::PrivateDirectMessage)
            .pubkeys(keys.iter().copied()),
        None,
    )
    .await?;
    Ok(c)
}

fn sample_order(kind: OrderKind) -> SmallOrder {
    SmallOrder {
        kind: Some(kind),
        amount: 10_000,
        fiat_code: "USD".into(),
        fiat_amount: 10,
        payment_method: "cash".into(),
        ..Default::default()
    }
}

/// Sends `msg` from full-privacy `keys` and waits (30 s at most) for the node's first answer.
async fn ask(
    client: &Client,
    notes: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    node: PublicKey,
    keys: &Keys,
    msg: Message,
) -> anyhow::Result<(Duration, nostr::Event)> {
    let ev = wrap_message_with(DIRECT, &msg, keys, keys, node, WrapOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t0 = Instant::now();
    client.send_event(&ev).await?;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), notes.recv())
            .await
            .context("no answer within 30 s")??;
        if let RelayPoolNotification::Event { event, .. } = n {
            if event.tags.public_keys().any(|p| *p == keys.public_key()) {
                return Ok((t0.elapsed(), *event));
            }
        }
    }
}

/// New orders, one a second, until `done`: the time to each ack.
async fn trade_while(
    url: String,
    node: PublicKey,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let keys: Vec<Keys> = (0..400).map(|_| Keys::generate()).collect();
    let pubs: Vec<PublicKey> = keys.iter().map(|k| k.public_key()).collect();
    let client = client_for(&url, &pubs).await?;
    let mut notes = client.notifications();
    let mut acks = Vec::new();
    for k in &keys {
        if done.load(Relaxed) {
            break;
        }
        let msg = Message::new_order(
            None,
            Some(1),
            None,
            Action::NewOrder,
            Some(Payload::Order(sample_order(OrderKind::Buy))),
        );
        acks.push(ask(&client, &mut notes, node, k, msg).await?.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(acks)
}

/// Every 5 s until `done`: a sell order made and taken without the buyer's invoice, so its
/// waiting time-out fires and the order goes back to the book; returns how late, in seconds,
/// each order's new `pending` event reached the relay.
async fn time_outs_while(
    url: String,
    node: PublicKey,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Vec<f64>> {
    let pairs: Vec<(Keys, Keys)> = (0..100)
        .map(|_| (Keys::generate(), Keys::generate()))
        .collect();
    let pubs: Vec<PublicKey> = pairs
        .iter()
        .flat_map(|(m, t)| [m.public_key(), t.public_key()])
        .collect();
    let client = client_for(&url, &pubs).await?;
    client
        .subscribe(Filter::new().kind(Kind::Custom(38383)).author(node), None)
        .await?;
    let pending: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let mut notes = client.notifications();
    {
        let pending = pending.clone();
        let mut events = client.notifications();
        tokio::spawn(async move {
            while let Ok(n) = events.recv().await {
                if let RelayPoolNotification::Event { event, .. } = n {
                    let status = event
                        .tags
                        .iter()
                        .find(|t| t.kind().to_string() == "s")
                        .and_then(|t| t.content().map(str::to_string));
                    if let (Some(d), Some("pending")) = (event.tags.identifier(), status.as_deref())
                    {
                        pending
                            .lock()
                            .expect("lock")
                            .entry(d.to_string())
                            .or_default()
                            .push(Instant::now());
                    }
                }
            }
        });
    }
    let mut due = Vec::new();
    for (maker, taker) in &pairs {
        if done.load(Relaxed) {
            break;
        }
        let make = Message::new_order(
            None,
            Some(1),
            None,
            Action::NewOrder,
            Some(Payload::Order(sample_order(OrderKind::Sell))),
        );
        let (_, ack) = ask(&client, &mut notes, node, maker, make).await?;
        let Ok(Some(u)) = unwrap_incoming(&ack, maker).await else {
            bail!("the node's answer did not decrypt");
        };
        let Some(Payload::Order(o)) = &u.message.get_inner_message_kind().payload else {
            bail!("the new order was refused: {:?}", u.message);
        };
        let id = o.id.context("an order without id")?;
        let take = Message::new_order(Some(id), Some(2), None, Action::TakeSell, None);
        let (_, answer) = ask(&client, &mut notes, node, taker, take).await?;
        if let Ok(Some(u)) = unwrap_incoming(&answer, taker).await {
            let action = &u.message.get_inner_message_kind().action;
            if !matches!(action, Action::WaitingSellerToPay | Action::AddInvoice) {
                bail!("the take was answered {action:?}");
            }
        }
        due.push((
            id.to_string(),
            Instant::now(),
            Instant::now() + Duration::from_secs(TIMEOUT),
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // Every time-out due by now has its event, or is counted as very late.
    let deadline = Instant::now() + Duration::from_secs(TIMEOUT + 30);
    let mut late = Vec::new();
    for (id, taken, at) in due {
        loop {
            let back = pending
                .lock()
                .expect("lock")
                .get(&id)
                .and_then(|seen| seen.iter().find(|t| **t > taken).copied());
            if let Some(seen) = back {
                late.push(seen.saturating_duration_since(at).as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                late.push(f64::INFINITY);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(late)
}
