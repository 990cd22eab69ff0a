//! Fault injection on the real binary, on regtest:
//! - `kill -9` at random moments while many trades run at once; after every restart the trades
//!   go on, and in the end every trade completed, no sat was lost and none was paid twice;
//! - bitcoind stopped and started again under the box, in the middle of a trade;
//! - the relay flooded from one address while a trade runs: the trade's steps stay within twice
//!   their quiet time.
//!
//! Sizes come from the environment so the same tests serve CI (one short fault cycle) and
//! scripts/fault-injection.sh (50 trades, 5 kills): FAULT_TRADES, FAULT_KILLS, FAULT_SEED.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{process_market, ProcessMarket};
use common::*;
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::Node;
use mostro_core::prelude::*;
use nostr_sdk::prelude::{Client, EventId, Filter, Keys, Kind, PublicKey, RelayPoolNotification};
use nostr_sdk::RelayOptions;
use tokio::time::Instant;
use uuid::Uuid;

/// Sats per trade, and each side's fee at 1 %.
const SATS: i64 = 2_000;
const FEE: i64 = 10;
/// A request with no answer within this long is sent again (a fresh wrap, so it is fresh).
const RESEND: Duration = Duration::from_secs(8);

/// These tests take turns: each loads the machine, and the flood test compares timings.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One side's desk: every trade key of that side on one connection that reconnects by itself
/// within a second of the box coming back, and what arrived for each key (each event once).
struct Desk {
    client: Client,
    node: PublicKey,
    inbox: Arc<Mutex<HashMap<PublicKey, Vec<Message>>>>,
}

impl Desk {
    async fn open(url: &str, node: PublicKey, keys: &[Keys]) -> Arc<Desk> {
        let client = Client::default();
        let opts = RelayOptions::new()
            .retry_interval(Duration::from_secs(1))
            .adjust_retry_interval(false);
        client.pool().add_relay(url, opts).await.unwrap();
        client.connect().await;
        client.wait_for_connection(WAIT).await;
        let f = Filter::new()
            .kind(Kind::PrivateDirectMessage)
            .pubkeys(keys.iter().map(|k| k.public_key()));
        client.subscribe(f, None).await.unwrap();
        let by_key: HashMap<PublicKey, Keys> =
            keys.iter().map(|k| (k.public_key(), k.clone())).collect();
        let desk = Arc::new(Desk {
            client,
            node,
            inbox: Arc::default(),
        });
        let mut notes = desk.client.notifications();
        let inbox = desk.inbox.clone();
        tokio::spawn(async move {
            let mut seen: HashSet<EventId> = HashSet::new();
            while let Ok(n) = notes.recv().await {
                let RelayPoolNotification::Event { event, .. } = n else {
                    continue;
                };
                if !seen.insert(event.id) {
                    continue;
                }
                let Some(to) = event.tags.public_keys().next().copied() else {
                    continue;
                };
                let Some(k) = by_key.get(&to) else {
                    continue;
                };
                if let Ok(Some(u)) = unwrap_incoming(&event, k).await {
                    inbox.lock().unwrap().entry(to).or_default().push(u.message);
                }
            }
        });
        desk
    }

    /// Wraps and sends; false if the relay is down or refused it (the caller sends again).
    async fn send(&self, trade: &Keys, id: Option<Uuid>, action: Action, payload: Option<Payload>) {
        // Full privacy: each trade key is its own identity, so a resent request cannot trip a
        // trade index, and an answered one that is sent again only gets a cant-do.
        let msg = Message::new_order(id, Some(1), None, action, payload);
        let Ok(ev) = wrap_message_with(
            mostro_box::protocol::DIRECT,
            &msg,
            trade,
            trade,
            self.node,
            WrapOptions::default(),
        )
        .await
        else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.send_event(&ev)).await;
    }

    /// How many messages with `action` arrived for `to`.
    fn count(&self, to: &Keys, action: Action) -> usize {
        let inbox = self.inbox.lock().unwrap();
        inbox.get(&to.public_key()).map_or(0, |msgs| {
            msgs.iter()
                .filter(|m| m.get_inner_message_kind().action == action)
                .count()
        })
    }

    /// The last `n` messages that arrived for `to`, newest first, as action and payload.
    fn heard(&self, to: &Keys, n: usize) -> Vec<String> {
        let inbox = self.inbox.lock().unwrap();
        let msgs = inbox
            .get(&to.public_key())
            .map(Vec::as_slice)
            .unwrap_or_default();
        msgs.iter()
            .rev()
            .take(n)
            .map(|m| {
                let k = m.get_inner_message_kind();
                format!("{:?} {:?}", k.action, k.payload)
            })
            .collect()
    }

    /// The first message with `action` that arrived for `to`.
    fn got(&self, to: &Keys, action: Action) -> Option<Message> {
        self.find(to, |m| {
            (m.get_inner_message_kind().action == action).then(|| m.clone())
        })
    }

    /// The first of `to`'s messages that `f` picks something from.
    fn find<T>(&self, to: &Keys, f: impl Fn(&Message) -> Option<T>) -> Option<T> {
        let inbox = self.inbox.lock().unwrap();
        inbox.get(&to.public_key())?.iter().find_map(f)
    }
}

/// Where one trade stands, as its traders see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    Posting,
    Taking,
    Paying,
    SendingFiat,
    Releasing,
    /// Completed: the buyer has the sats.
    Done,
    /// Cancelled by the box (the seller's payment never arrived in time): nothing moved.
    Refunded,
}

/// Drives one sell trade to the end through any number of box restarts: each step's request
/// is sent again until its answer arrives, the seller pays the hold invoice again if the
/// payment failed while the box was down, and the buyer gives a new invoice whenever the box
/// asks for one (every payout attempt failed, e.g. while a kill had closed a channel).
#[derive(Clone)]
struct TradeRun {
    seller: Keys,
    buyer: Keys,
    /// The buyer's payout invoices, the one given at take first.
    invoices: Vec<String>,
    id: Option<Uuid>,
    phase: Phase,
    hold: Option<String>,
}

async fn drive(
    run: Arc<Mutex<TradeRun>>,
    sellers: Arc<Desk>,
    buyers: Arc<Desk>,
    alice: Arc<Node>,
    bob: Arc<Node>,
    deadline: Instant,
) {
    let mut last_sent: Option<Instant> = None;
    let mut last_phase = Phase::Posting;
    loop {
        let (phase, seller, buyer, id) = {
            let r = run.lock().unwrap();
            (r.phase, r.seller.clone(), r.buyer.clone(), r.id)
        };
        let canceled = phase != Phase::Done
            && (sellers.got(&seller, Action::Canceled).is_some()
                || buyers.got(&buyer, Action::Canceled).is_some());
        if canceled {
            run.lock().unwrap().phase = Phase::Refunded;
            return;
        }
        if phase != last_phase {
            last_sent = None;
            last_phase = phase;
        }
        let due = last_sent.is_none_or(|t| t.elapsed() > RESEND);
        let next = match phase {
            Phase::Posting => match sellers.got(&seller, Action::NewOrder) {
                Some(m) => {
                    run.lock().unwrap().id = order_of(&m).id;
                    Some(Phase::Taking)
                }
                None => {
                    if due {
                        let o = fixed_order(mostro_core::prelude::Kind::Sell, SATS, 2);
                        sellers
                            .send(&seller, None, Action::NewOrder, Some(Payload::Order(o)))
                            .await;
                        last_sent = Some(Instant::now());
                    }
                    None
                }
            },
            Phase::Taking => {
                // The seller hears of the taker first (pay-invoice with a peer), then gets the
                // hold invoice (pay-invoice with a payment request).
                let hold = sellers.find(&seller, |m| match &m.get_inner_message_kind().payload {
                    Some(Payload::PaymentRequest(_, inv, _)) => Some(inv.clone()),
                    _ => None,
                });
                match hold {
                    Some(inv) => {
                        run.lock().unwrap().hold = Some(inv);
                        Some(Phase::Paying)
                    }
                    None => {
                        if due {
                            let inv = run.lock().unwrap().invoices[0].clone();
                            let pr = Payload::PaymentRequest(None, inv, None);
                            buyers.send(&buyer, id, Action::TakeSell, Some(pr)).await;
                            last_sent = Some(Instant::now());
                        }
                        None
                    }
                }
            }
            Phase::Paying => {
                if sellers.got(&seller, Action::BuyerTookOrder).is_some() {
                    Some(Phase::SendingFiat)
                } else {
                    if due {
                        let hold = run.lock().unwrap().hold.clone().unwrap();
                        pay_hold(&alice, &hold);
                        last_sent = Some(Instant::now());
                    }
                    None
                }
            }
            Phase::SendingFiat => {
                if buyers.got(&buyer, Action::FiatSentOk).is_some() {
                    Some(Phase::Releasing)
                } else {
                    if due {
                        buyers.send(&buyer, id, Action::FiatSent, None).await;
                        last_sent = Some(Instant::now());
                    }
                    None
                }
            }
            Phase::Releasing => {
                if buyers.got(&buyer, Action::PurchaseCompleted).is_some() {
                    Some(Phase::Done)
                } else {
                    let asked = buyers.count(&buyer, Action::AddInvoice);
                    let fresh = asked >= run.lock().unwrap().invoices.len();
                    if fresh {
                        let inv = common::trade::invoice(&bob, SATS - FEE);
                        run.lock().unwrap().invoices.push(inv);
                    }
                    if due || fresh {
                        // Once asked for an invoice the trade is released: answer the ask.
                        if asked > 0 {
                            let inv = run.lock().unwrap().invoices.last().cloned();
                            let pr = Payload::PaymentRequest(None, inv.unwrap(), None);
                            buyers.send(&buyer, id, Action::AddInvoice, Some(pr)).await;
                        } else {
                            sellers.send(&seller, id, Action::Release, None).await;
                        }
                        last_sent = Some(Instant::now());
                    }
                    None
                }
            }
            Phase::Done | Phase::Refunded => return,
        };
        if let Some(p) = next {
            run.lock().unwrap().phase = p;
            continue;
        }
        if Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pays the hold invoice unless a payment of it is already under way or done.
fn pay_hold(alice: &Node, hold: &str) {
    let inv: ldk_node::lightning_invoice::Bolt11Invoice = hold.parse().unwrap();
    let hash = ldk_node::lightning_types::payment::PaymentHash(*AsRef::<[u8; 32]>::as_ref(
        inv.payment_hash(),
    ));
    let busy = alice.list_payments_with_filter(|p| {
        matches!(p.kind, PaymentKind::Bolt11 { hash: h, .. } if h == hash)
            && p.status != PaymentStatus::Failed
    });
    if busy.is_empty() {
        let _ = alice.bolt11_payment().send(&inv, None);
    }
}

/// A small xorshift, seeded so a failing run can be repeated (FAULT_SEED).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn phases(runs: &[Arc<Mutex<TradeRun>>]) -> Vec<(Phase, usize)> {
    let mut count: std::collections::BTreeMap<Phase, usize> = Default::default();
    for r in runs {
        *count.entry(r.lock().unwrap().phase).or_default() += 1;
    }
    count.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_during_concurrent_trades() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let trades = env_or("FAULT_TRADES", 6) as usize;
    let kills = env_or("FAULT_KILLS", 1);
    let seed = env_or("FAULT_SEED", now() as u64) | 1;
    eprintln!("faults: {trades} trades, {kills} kills, FAULT_SEED={seed}");
    // FAULT_TRACE=1 (with RUST_LOG=info,lightning=debug, say) also logs the traders' wallets,
    // to put a payment's two sides next to each other; the box's log is its box.log.
    if std::env::var_os("FAULT_TRACE").is_some() {
        mostro_box::logging::init("text", true);
    }
    // A kill -9 between LDK's write of a channel's monitor and of its channel manager makes
    // LDK force-close that channel at restart (rust-lightning #4286). So: several channels,
    // and a short wait for the seller's payment, so trades whose payment was caught in a
    // closing channel end refunded instead of waiting 15 minutes.
    let channels = trades.div_ceil(20).clamp(2, 4);
    // A payout caught in a closed channel fails once its HTLC times out on chain; the next
    // attempt follows in 5 s, not a minute.
    let (m, mut b) = process_market(
        channels,
        &[
            "mostro.expiration_seconds=60",
            "lightning.payment_retries_interval=5",
        ],
    )
    .await;
    let node = mostro_box::keys::load(&m.dir).unwrap().public_key();
    let (alice_before, bob_before) = (ln_sats(&m.alice).await, ln_sats(&m.bob).await);
    let box_before = box_sats(&m).await;

    let runs: Vec<Arc<Mutex<TradeRun>>> = (0..trades)
        .map(|_| {
            Arc::new(Mutex::new(TradeRun {
                seller: Keys::generate(),
                buyer: Keys::generate(),
                invoices: vec![common::trade::invoice(&m.bob, SATS - FEE)],
                id: None,
                phase: Phase::Posting,
                hold: None,
            }))
        })
        .collect();
    let seller_keys: Vec<Keys> = runs
        .iter()
        .map(|r| r.lock().unwrap().seller.clone())
        .collect();
    let buyer_keys: Vec<Keys> = runs
        .iter()
        .map(|r| r.lock().unwrap().buyer.clone())
        .collect();
    let sellers = Desk::open(&b.url(), node, &seller_keys).await;
    let buyers = Desk::open(&b.url(), node, &buyer_keys).await;
    let deadline = Instant::now() + Duration::from_secs(180 + 12 * trades as u64);
    let mut tasks = Vec::new();
    for r in &runs {
        tasks.push(tokio::spawn(drive(
            r.clone(),
            sellers.clone(),
            buyers.clone(),
            m.alice.clone(),
            m.bob.clone(),
            deadline,
        )));
    }

    // Once a kill has force-closed a channel, its payments are settled on chain: the chain
    // moves on (a block a second) while a transaction waits or a channel is closed, so they
    // can: a payout's HTLC times out after about 40 blocks. (The box may close a channel its
    // peer still lists for a minute, until they reconnect; its commitment transaction is in
    // the mempool at once.)
    let miner = {
        let (chain, alice, bob) = (m.chain.clone(), m.alice.clone(), m.bob.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let waiting = chain.mempool_size().await.is_ok_and(|n| n > 0);
                if waiting
                    || alice.list_channels().len() < channels
                    || bob.list_channels().len() < channels
                {
                    let _ = chain.mine(1).await;
                }
            }
        })
    };

    // The killer: kill -9 at a random moment (0.2 to 2.5 s after the box is up), start again.
    let mut rng = Rng(seed);
    for k in 0..kills {
        let wait = Duration::from_millis(200 + rng.below(2_300));
        tokio::time::sleep(wait).await;
        eprintln!("faults: kill {} at {:?}: {:?}", k + 1, wait, phases(&runs));
        b.kill9();
        b = m.start(None).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    miner.abort();
    let end = phases(&runs);
    // Closed as the box sees it (its peers may not have noticed yet).
    let open = cli_ok(&m.dir, &["--json", "channel", "list"]).await.json()["channels"]
        .as_array()
        .map_or(0, |c| c.len());
    let closed = (2 * channels).saturating_sub(open);
    eprintln!("faults: end: {end:?}; channels force-closed by the kills: {closed}");
    // What an unfinished trade's traders last heard, for the one who reads a failure.
    for r in &runs {
        let r = r.lock().unwrap().clone();
        if !matches!(r.phase, Phase::Done | Phase::Refunded) {
            eprintln!(
                "faults: unfinished {:?} order {:?}: seller heard {:?}; buyer heard {:?}",
                r.phase,
                r.id,
                sellers.heard(&r.seller, 4),
                buyers.heard(&r.buyer, 4)
            );
        }
    }
    assert!(
        end.iter()
            .all(|(p, _)| matches!(p, Phase::Done | Phase::Refunded)),
        "every trade completes or is refunded: {end:?}"
    );

    // Payments caught in a force-closed channel are settled or failed on chain: mine until the
    // seller has none in flight.
    // (An unpaid invoice is a pending inbound payment for ever: only payments sent count.)
    let pending = |n: &Node| {
        n.list_payments_with_filter(|p| {
            p.status == PaymentStatus::Pending && p.direction == PaymentDirection::Outbound
        })
        .len()
    };
    // First the wallets reconnect to the box, as a wallet does when it is opened (on its own
    // ldk-node retries once a minute), so that what can settle off chain does: mining past a
    // claimed HTLC's expiry while its payer is away would make the box claim it on chain, in a
    // race with the payer's time-out.
    let status = cli_ok(&m.dir, &["--json", "status"]).await.json();
    let box_id: ldk_node::bitcoin::secp256k1::PublicKey = status["lightning"]["node_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let box_addr: ldk_node::lightning::ln::msgs::SocketAddress = status["lightning"]["listening"]
        [0]
    .as_str()
    .unwrap()
    .parse()
    .unwrap();
    for w in [&m.alice, &m.bob] {
        w.connect(box_id, box_addr.clone(), true).unwrap();
    }
    let deadline = Instant::now() + WAIT * 12;
    while pending(&m.alice) > 0 {
        assert!(
            Instant::now() < deadline,
            "payments still in flight on chain"
        );
        mine_and_sync(&m.chain, 6, &[&m.alice, &m.bob]).await;
    }

    // Each trade, as the box recorded it and as the traders' wallets saw it.
    let hash_of = |inv: &str| {
        let inv: ldk_node::lightning_invoice::Bolt11Invoice = inv.parse().unwrap();
        ldk_node::lightning_types::payment::PaymentHash(*AsRef::<[u8; 32]>::as_ref(
            inv.payment_hash(),
        ))
    };
    let paid = |n: &Node, hash, dir| {
        n.list_payments_with_filter(|p| {
            p.direction == dir
                && p.status == PaymentStatus::Succeeded
                && matches!(p.kind, PaymentKind::Bolt11 { hash: h, .. } if h == hash)
        })
        .len()
    };
    let mut done = 0u64;
    for r in &runs {
        let r = r.lock().unwrap().clone();
        let o = cli_ok(
            &m.dir,
            &["--json", "order", "show", &r.id.unwrap().to_string()],
        )
        .await
        .json();
        // A sender hears of a claimed payment a moment after the box moved on (and, after a
        // kill, may have marked it failed before the claim reached it): wait for the wallets
        // to agree, with a deadline.
        let counts = || {
            let payout: usize = r
                .invoices
                .iter()
                .map(|i| paid(&m.bob, hash_of(i), PaymentDirection::Inbound))
                .sum();
            let escrow = r.hold.as_deref().map_or(0, |h| {
                paid(&m.alice, hash_of(h), PaymentDirection::Outbound)
            });
            (payout, escrow)
        };
        let expected = if r.phase == Phase::Done {
            (1, 1)
        } else {
            (0, 0)
        };
        let until = Instant::now() + WAIT;
        let mut seen = counts();
        while seen != expected && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
            seen = counts();
        }
        let seller_side = r.hold.as_deref().map(|h| {
            let hash = hash_of(h);
            m.alice.list_payments_with_filter(
                |p| matches!(p.kind, PaymentKind::Bolt11 { hash: x, .. } if x == hash),
            )
        });
        let (payout, escrow) = seen;
        if r.phase == Phase::Done {
            done += 1;
            assert_eq!(o["status"], "success", "{o}");
            assert_eq!(
                (payout, escrow),
                (1, 1),
                "paid once, into escrow and out; the seller's payment: {seller_side:?}"
            );
        } else {
            assert_eq!(o["status"], "canceled", "{o}");
            assert_eq!((payout, escrow), (0, 0), "refunded: nothing moved");
        }
    }
    // A kill refunds at most the trades whose payment it cut off; a run where most trades end
    // refunded means the box lost them, not the kills.
    assert!(
        done * 2 >= trades as u64,
        "only {done} of {trades} trades completed: {end:?}"
    );
    let metrics = common::metrics(&m.dir).await;
    assert!(
        metrics.contains(&format!("mostro_trades_completed_total {done}")),
        "{metrics}"
    );
    // With every channel still open, the sats moved exactly: the buyer got amount − fee per
    // trade, the seller paid amount + fee, and the box kept the fees.
    if closed == 0 {
        assert_eq!(
            ln_sats(&m.bob).await - bob_before,
            done * (SATS - FEE) as u64
        );
        assert_eq!(
            alice_before - ln_sats(&m.alice).await,
            done * (SATS + FEE) as u64
        );
        assert_eq!(box_sats(&m).await - box_before, done * 2 * FEE as u64);
    }
    drop(b);
}

/// The box's Lightning balance, once no payment is in flight.
async fn box_sats(m: &ProcessMarket) -> u64 {
    let b = cli_ok(&m.dir, &["--json", "wallet", "balance"])
        .await
        .json();
    b["lightning_sats"].as_u64().unwrap()
}

/// A raw WebSocket client bound to another loopback address (127.0.0.2), as an attacker's
/// script would be: it writes frames as fast as the socket takes them and never reads more than
/// it must. Per-IP limits see it apart from the honest traders on 127.0.0.1.
mod flood {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    pub struct Stats {
        pub frames: AtomicU64,
        pub connections: AtomicU64,
    }

    async fn connect(port: u16) -> Option<TcpStream> {
        let s = TcpSocket::new_v4().ok()?;
        s.bind("127.0.0.2:0".parse().unwrap()).ok()?;
        let mut c = s.connect(([127, 0, 0, 1], port).into()).await.ok()?;
        let req = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut b))
                .await
                .ok()?
                .ok()?;
            head.push(b[0]);
        }
        head.starts_with(b"HTTP/1.1 101").then_some(c)
    }

    /// A masked text frame (mask key zero: the payload goes as it is).
    fn frame(text: &str) -> Vec<u8> {
        let mut f = vec![0x81];
        let n = text.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n < 65_536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(text.as_bytes());
        f
    }

    /// Sends `messages` round and round on one connection (reconnecting when the relay drops
    /// it) until `stop`; the relay's answers are read and thrown away.
    async fn spam(
        port: u16,
        messages: Arc<Vec<Vec<u8>>>,
        stop: Arc<AtomicBool>,
        stats: Arc<Stats>,
    ) {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let Some(c) = connect(port).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let (mut r, mut w) = c.into_split();
            let drain = tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
            });
            while !stop.load(Ordering::Relaxed) {
                let m = &messages[i % messages.len()];
                i += 1;
                if w.write_all(m).await.is_err() {
                    break;
                }
                stats.frames.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            drain.abort();
        }
    }

    /// Opens and drops connections as fast as it can.
    async fn churn(port: u16, stop: Arc<AtomicBool>, stats: Arc<Stats>) {
        while !stop.load(Ordering::Relaxed) {
            if connect(port).await.is_some() {
                stats.connections.fetch_add(1, Ordering::Relaxed);
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Starts every kind of flood at once: events (to strangers and to the node), new
    /// subscriptions, oversized events, and connection churn.
    pub fn start(
        port: u16,
        events: Vec<String>,
        to_node: Vec<String>,
    ) -> (Arc<AtomicBool>, Arc<Stats>) {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats {
            frames: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let ev = |list: Vec<String>| {
            Arc::new(
                list.iter()
                    .map(|e| frame(&format!("[\"EVENT\",{e}]")))
                    .collect::<Vec<_>>(),
            )
        };
        let subs: Vec<Vec<u8>> = (0..1_000)
            .map(|i| {
                frame(&format!(
                    "[\"REQ\",\"s{i}\",{{\"kinds\":[14,1059,38383]}},{{\"authors\":[\"{:064x}\"]}},{{\"#p\":[\"{:064x}\"]}}]",
                    i, i
                ))
            })
            .collect();
        let huge = vec![frame(&format!(
            "[\"EVENT\",{{\"kind\":14,\"content\":\"{}\"}}]",
            "x".repeat(2 << 20)
        ))];
        let plans = [ev(events), ev(to_node), Arc::new(subs), Arc::new(huge)];
        for plan in plans {
            for _ in 0..2 {
                tokio::spawn(spam(port, plan.clone(), stop.clone(), stats.clone()));
            }
        }
        for _ in 0..4 {
            tokio::spawn(churn(port, stop.clone(), stats.clone()));
        }
        (stop, stats)
    }
}

/// The box-side steps of one trade through `t`'s traders, timed from each request leaving to
/// its answer arriving: new-order, take-sell, fiat-sent, release (through the buyer's payout).
async fn timed_trade(seller: &Trader, buyer: &Trader, m: &ProcessMarket) -> [Duration; 4] {
    let t0 = Instant::now();
    let (s, rid) = seller
        .new_order(fixed_order(mostro_core::prelude::Kind::Sell, SATS, 2))
        .await;
    let id = order_of(&seller.reply(s, Some(rid)).await).id.unwrap();
    let posted = t0.elapsed();
    let b = buyer.take_index();
    let inv = common::trade::invoice(&m.bob, SATS - FEE);
    let t0 = Instant::now();
    buyer
        .send(
            b,
            Some(id),
            Action::TakeSell,
            Some(Payload::PaymentRequest(None, inv, None)),
        )
        .await;
    buyer.expect(b, Action::WaitingSellerToPay).await;
    let taken = t0.elapsed();
    seller.expect(s, Action::PayInvoice).await;
    let (_, hold) = common::trade::pay_request(&seller.expect(s, Action::PayInvoice).await);
    m.alice
        .bolt11_payment()
        .send(&hold.parse().unwrap(), None)
        .unwrap();
    buyer.expect(b, Action::HoldInvoicePaymentAccepted).await;
    let t0 = Instant::now();
    buyer.send(b, Some(id), Action::FiatSent, None).await;
    buyer.expect(b, Action::FiatSentOk).await;
    let fiat = t0.elapsed();
    let t0 = Instant::now();
    seller.send(s, Some(id), Action::Release, None).await;
    buyer.expect(b, Action::PurchaseCompleted).await;
    [posted, taken, fiat, t0.elapsed()]
}

fn total(steps: &[[Duration; 4]]) -> Duration {
    let mut sums: Vec<Duration> = steps.iter().map(|s| s.iter().sum()).collect();
    sums.sort();
    sums[sums.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trade_keeps_its_pace_while_one_address_floods_the_relay() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (m, b) = process_market(1, &[]).await;
    let node = mostro_box::keys::load(&m.dir).unwrap().public_key();
    let seller = Trader::new(&b.url(), node, Wire::V2, false).await;
    let buyer = Trader::new(&b.url(), node, Wire::V1, false).await;
    let rounds = 5;
    let mut quiet = Vec::new();
    for _ in 0..rounds {
        quiet.push(timed_trade(&seller, &buyer, &m).await);
    }

    // Signed before the flood starts: the attacker's own work is not the box's.
    let spammer = Keys::generate();
    let sign = |to: PublicKey, i: usize| {
        nostr_sdk::EventBuilder::new(Kind::PrivateDirectMessage, format!("spam {i}"))
            .tag(nostr_sdk::Tag::public_key(to))
            .sign_with_keys(&spammer)
            .unwrap()
            .as_json()
    };
    use nostr_sdk::JsonUtil;
    let strangers: Vec<String> = (0..2_000)
        .map(|i| sign(Keys::generate().public_key(), i))
        .collect();
    let to_node: Vec<String> = (0..2_000).map(|i| sign(node, i)).collect();
    let (stop, stats) = flood::start(m.port, strangers, to_node);
    let deadline = Instant::now() + WAIT;
    while stats.frames.load(std::sync::atomic::Ordering::Relaxed) < 1_000 {
        assert!(Instant::now() < deadline, "the flood never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut flooded = Vec::new();
    for _ in 0..rounds {
        flooded.push(timed_trade(&seller, &buyer, &m).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (q, f) = (total(&quiet), total(&flooded));
    eprintln!(
        "flood: {} frames on {} connections from 127.0.0.2; trade steps quiet {quiet:?}, flooded {flooded:?}; median sum quiet {q:?}, flooded {f:?} ({:.2}x)",
        stats.frames.load(std::sync::atomic::Ordering::Relaxed),
        stats.connections.load(std::sync::atomic::Ordering::Relaxed),
        f.as_secs_f64() / q.as_secs_f64()
    );
    // Twice the quiet time, with 100 ms for the scheduling noise of a two-core machine.
    assert!(
        f <= q * 2 + Duration::from_millis(100),
        "flooded trade took {f:?}, quiet {q:?}"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bitcoind_stops_and_comes_back_under_the_box() {
    let _turn = ONE_AT_A_TIME.lock().await;
    use common::trade::*;
    let t = trade(&[]).await;
    let before = balances(&t).await;
    let (id, s, b) = active_trade(&t).await;
    t.m.b.chain.halt().await;

    // Without its chain the box still trades: requests are answered, a new order is posted.
    fiat_sent(&t, id, s, b).await;
    let (other, _) = sell_order(&t).await;
    let status = t.m.b.ln().status();
    let height = status.current_best_block.height;

    t.m.b.chain.resume().await.unwrap();
    t.m.b.chain.mine(2).await.unwrap();
    let deadline = Instant::now() + WAIT * 3;
    while t.m.b.ln().status().current_best_block.height < height + 2 {
        assert!(
            Instant::now() < deadline,
            "the box never saw the chain again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.seller.send(s, Some(id), Action::Release, None).await;
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    assert_paid_to_the_sat(&t, &before).await;
    let o = t.m.b.running.engine.order(other).unwrap().unwrap();
    assert_eq!(o.status, Status::Pending);
}

/// A tmpfs of `mb` MB mounted for the test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(mb: u32) -> Option<SmallDisk> {
        let dir = temp_dir("disk");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nearly_full_disk_stops_new_orders_and_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    use common::trade::*;
    let Some(disk) = SmallDisk::mount(128) else {
        // CI runs as root, so there this must work; a developer without root skips it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: mounting a small disk (tmpfs) must work"
        );
        eprintln!("skipped: mounting a small disk (tmpfs) needs root");
        return;
    };
    let dir = disk.0.join("box");
    mostro_box::node::init(&dir, None).unwrap();
    let extra = settings(&["mostro.min_free_disk_mb=48"]);
    let b = TestBox::start_in(dir.clone(), start_chain().await, &extra).await;
    let t = trade_on(market_on(b, 100_000).await).await;
    let before = balances(&t).await;
    let (id, s, b) = active_trade(&t).await;

    // Fill the disk to 32 MB free: under the box's 48 MB floor.
    let free = mostro_box::store::disk::free_bytes(&dir).unwrap();
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![1u8; (free - (32 << 20)) as usize]).unwrap();

    // A new order gets a cant-do; chat between traders is refused at the relay; the status says
    // how much is left.
    let (i, rid) = t
        .seller
        .new_order(fixed_order(mostro_core::prelude::Kind::Sell, AMOUNT, 10))
        .await;
    let reply = t.seller.reply(i, Some(rid)).await;
    assert_eq!(
        cant_do(&reply),
        Some(CantDoReason::TooManyRequests),
        "{reply:?}"
    );
    let chat = nostr_sdk::EventBuilder::new(Kind::PrivateDirectMessage, "hello")
        .tag(nostr_sdk::Tag::public_key(Keys::generate().public_key()))
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let refused = t.seller.publish(&chat).await.unwrap_err();
    assert!(refused.contains("disk"), "{refused}");
    let status = cli_ok(&t.m.b.dir, &["--json", "status"]).await.json();
    assert!(status["disk_free_mb"].as_u64().unwrap() < 48, "{status}");

    // The trade under way still finishes, to the sat.
    fiat_sent(&t, id, s, b).await;
    t.seller.send(s, Some(id), Action::Release, None).await;
    t.buyer.expect(b, Action::PurchaseCompleted).await;
    assert_paid_to_the_sat(&t, &before).await;

    // Space back: new orders are taken again.
    std::fs::remove_file(&filler).unwrap();
    let (id2, _) = sell_order(&t).await;
    let o = t.m.b.running.engine.order(id2).unwrap().unwrap();
    assert_eq!(o.status, Status::Pending);
    drop(t);
    drop(disk);
}
