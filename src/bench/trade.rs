//! `mostro-box bench trade`: whole trades on regtest with real Lightning payments.
//!
//! A box runs in this process on a fresh regtest chain, with a seller wallet that has a channel
//! to it and a buyer wallet it has a channel to. Sellers make sell orders, buyers take them with
//! an invoice, the seller wallet pays the hold invoice, the buyer says the fiat is sent, the
//! seller releases, and the box pays the buyer. `concurrency` trades run at once. Every step is
//! timed from the request leaving the trader to its reply arriving; the steps that wait on a
//! Lightning payment (the seller paying, the buyer being paid) are reported apart, since the
//! target is the box's own handling time.
//!
//! Many trades at once need many channels: the box accepts at most 10 % of a channel's size in
//! held payments and LDK at most 50 HTLCs per channel, so the seller gets one channel to the
//! box per 40 concurrent trades (and the box as many to the buyer). `--history N` first writes
//! N finished trades into the store, to see how start-up and every step fare with a long past.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ldk_node::lightning_invoice::{Bolt11InvoiceDescription, Description};
use ldk_node::Node;
use mostro_core::prelude::{
    unwrap_incoming, wrap_message_with, Action, Kind as OrderKind, Message, Payload, SmallOrder,
    Status, WrapOptions,
};
use nostr::{Event, EventId, Filter, Keys, Kind, PublicKey};
use nostr_sdk::{Client, RelayPoolNotification};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{ms, pct};
use crate::config::Settings;
use crate::protocol::DIRECT;
use crate::regtest::{self, Bitcoind};

/// Sats per trade; fee 0.6 % as a real node would charge.
const AMOUNT: i64 = 10_000;
const FEE_RATE: &str = "mostro.fee=0.006";

/// The steps timed, in trade order.
const STEPS: [&str; 7] = [
    "new-order -> new-order",
    "take-sell -> waiting-seller-to-pay",
    "take-sell -> pay-invoice (hold invoice issued)",
    "fiat-sent -> fiat-sent-ok",
    "release -> hold-invoice-payment-settled",
    "seller pays -> buyer-took-order (Lightning)",
    "release -> purchase-completed (Lightning payout)",
];

/// One side's connection: the trade keys it listens on and what arrived for each. Every trade
/// uses a fresh identity (trade index 1), so concurrent trades never race on trade indexes.
struct Side {
    client: Client,
    node: PublicKey,
    unused: Mutex<Vec<Keys>>,
    post: Arc<Postbox>,
}

/// Where a side's events are opened and sorted into mailboxes, each event once (it may come
/// both live and from a re-fetch).
struct Postbox {
    keys: HashMap<PublicKey, Keys>,
    seen: Mutex<HashSet<EventId>>,
    inbox: Mutex<HashMap<PublicKey, Mailbox>>,
    /// Replies that only a re-fetch of stored events brought (the live copy was lost).
    recovered: AtomicUsize,
}

impl Postbox {
    async fn deliver(&self, event: &Event, at: Instant) -> bool {
        if !self.seen.lock().expect("seen lock").insert(event.id) {
            return false;
        }
        let Some(to) = event.tags.public_keys().next().copied() else {
            return false;
        };
        let Some(k) = self.keys.get(&to) else {
            return false;
        };
        let Ok(Some(u)) = unwrap_incoming(event, k).await else {
            return false;
        };
        let mut inbox = self.inbox.lock().expect("inbox lock");
        let mailbox = inbox.entry(to).or_default();
        mailbox.messages.push((u.message, at));
        mailbox.bell.notify_one();
        true
    }
}

/// Messages that arrived for one trade key, and the bell its waiter sleeps on.
#[derive(Default)]
struct Mailbox {
    messages: Vec<(Message, Instant)>,
    bell: Arc<Notify>,
}

/// Longest wait for one reply: with hundreds of trades at once, replies queue.
const REPLY_WAIT: Duration = Duration::from_secs(300);
/// Silence after which a waiting trader re-fetches its stored messages.
const REFETCH_AFTER: Duration = Duration::from_secs(10);

impl Side {
    /// Connects with `trades` trade keys, all in one subscription (a relay limits how many
    /// subscriptions a connection may hold).
    async fn connect(url: &str, node: PublicKey, trades: usize) -> anyhow::Result<Arc<Self>> {
        let client = Client::default();
        client.add_relay(url).await?;
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(10)).await;
        let keys: Vec<Keys> = (0..trades).map(|_| Keys::generate()).collect();
        let f = Filter::new()
            .kind(Kind::PrivateDirectMessage)
            .pubkeys(keys.iter().map(|k| k.public_key()));
        client.subscribe(f, None).await?;
        let post = Arc::new(Postbox {
            keys: keys.iter().map(|k| (k.public_key(), k.clone())).collect(),
            seen: Mutex::default(),
            inbox: Mutex::default(),
            recovered: AtomicUsize::new(0),
        });
        let side = Arc::new(Self {
            client,
            node,
            unused: Mutex::new(keys),
            post: post.clone(),
        });
        let mut notes = side.client.notifications();
        tokio::spawn(async move {
            while let Ok(n) = notes.recv().await {
                if let RelayPoolNotification::Event { event, .. } = n {
                    post.deliver(&event, Instant::now()).await;
                }
            }
        });
        Ok(side)
    }

    /// A fresh identity and one of the subscribed trade keys.
    fn trader(&self) -> anyhow::Result<(Keys, Keys)> {
        let k = self
            .unused
            .lock()
            .expect("keys lock")
            .pop()
            .context("out of trade keys")?;
        Ok((Keys::generate(), k))
    }

    /// Sends a request from `trade` (of identity `who`, trade index 1); returns when it left.
    async fn send(
        &self,
        (who, trade): &(Keys, Keys),
        rid: u64,
        id: Option<Uuid>,
        action: Action,
        payload: Option<Payload>,
    ) -> anyhow::Result<Instant> {
        let msg = Message::new_order(id, Some(rid), Some(1), action, payload);
        let ev = wrap_message_with(DIRECT, &msg, who, trade, self.node, WrapOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let at = Instant::now();
        let out = self.client.send_event(&ev).await?;
        if out.success.is_empty() {
            bail!("relay refused a request: {:?}", out.failed);
        }
        Ok(at)
    }

    /// Waits for `action` to `trade`; returns it with its arrival time.
    async fn wait(
        &self,
        (_, trade): &(Keys, Keys),
        action: Action,
    ) -> anyhow::Result<(Message, Instant)> {
        let pk = trade.public_key();
        let deadline = tokio::time::Instant::now() + REPLY_WAIT;
        loop {
            let bell = {
                let mut inbox = self.post.inbox.lock().expect("inbox lock");
                let mailbox = inbox.entry(pk).or_default();
                let pos = mailbox
                    .messages
                    .iter()
                    .position(|(m, _)| m.get_inner_message_kind().action == action);
                if let Some(pos) = pos {
                    return Ok(mailbox.messages.remove(pos));
                }
                mailbox.bell.clone()
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("no {action} within {} s", REPLY_WAIT.as_secs());
            }
            if tokio::time::timeout(REFETCH_AFTER, bell.notified())
                .await
                .is_err()
            {
                // What a client does when an answer is late: ask again for what is stored. The
                // relay library drops live events for a connection that falls 1,024 behind.
                let f = Filter::new().kind(Kind::PrivateDirectMessage).pubkey(pk);
                for ev in self.client.fetch_events(f, Duration::from_secs(10)).await? {
                    if self.post.deliver(&ev, Instant::now()).await {
                        self.post.recovered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Trades one channel carries at once: 10 % of it in held payments, under LDK's 50 HTLCs.
const TRADES_PER_CHANNEL: usize = 40;
/// Largest channel without large-channel support.
const MAX_CHANNEL: u64 = 16_000_000;

/// Runs the trade benchmark and prints its figures.
pub async fn trade(trades: usize, concurrency: usize, history: usize) -> anyhow::Result<()> {
    if trades == 0 || concurrency == 0 {
        bail!("--trades and --concurrency must be at least 1");
    }
    if trades > 10_000 || concurrency > 1_000 {
        bail!(
            "--trades {trades} --concurrency {concurrency}: at most 10000 trades, 1000 at a time"
        );
    }
    let dir = std::env::temp_dir().join(format!("mostro-box-bench-{}", Uuid::new_v4()));
    crate::node::init(&dir, None)?;
    let store_path = dir.join(crate::node::STORE_FILE);
    if history > 0 {
        eprintln!("bench: writing {history} finished trades into the store...");
        let t = Instant::now();
        let bytes = super::history::fill(&store_path, history)?;
        println!(
            "  history:               {history} finished trades written in {:.1} s; store {:.1} MB = {:.0} bytes per order",
            t.elapsed().as_secs_f64(),
            bytes as f64 / 1e6,
            bytes as f64 / history as f64
        );
    }
    let exe = regtest::find_or_provision_bitcoind(&crate::cli::bitcoind_cache())?;
    let chain = Bitcoind::start(&exe, &dir.join("bitcoind")).await?;
    chain.mine(1).await?;
    let port = regtest::free_port()?;
    let url = format!("ws://127.0.0.1:{port}");
    let overrides = [
        vec![
            format!("relay.listen=127.0.0.1:{port}"),
            format!("relay.public_url={url}"),
            // Every trader here shares one address: lift the per-address limits.
            "relay.events_per_minute_per_ip=100000000".into(),
            "relay.connections_per_minute_per_ip=100000000".into(),
            "relay.max_connections_per_ip=100000".into(),
            "relay.bytes_per_second_per_ip=1000000000".into(),
            "mostro.max_pending_orders_per_identity=1000000".into(),
            "mostro.fiat_currencies_accepted=[]".into(),
            "price.api_url=http://127.0.0.1:9".into(),
            FEE_RATE.into(),
        ],
        crate::cli::regtest_overrides(&chain)?,
    ]
    .concat();
    let settings = Settings::load(&dir, Vec::<(String, String)>::new(), &overrides)?;
    let t = Instant::now();
    let running = crate::node::start(&dir, settings).await?;
    let started_in = t.elapsed();
    let node = running.pubkey;

    // Size the channels for both the held payments and the volume.
    let volume = trades as u64 * AMOUNT as u64 * 12 / 10;
    let channels = concurrency
        .div_ceil(TRADES_PER_CHANNEL)
        .max(volume.div_ceil(MAX_CHANNEL) as usize);
    let per_channel = concurrency.div_ceil(channels) as u64;
    let size = (per_channel * AMOUNT as u64 * 11)
        .max(volume / channels as u64)
        .clamp(1_000_000, MAX_CHANNEL);
    eprintln!(
        "bench: funding wallets and opening {channels} channel(s) each way of {size} sats on regtest..."
    );
    let seller_wallet =
        regtest::start_wallet(&dir.join("seller"), &chain, "seller", regtest::free_port()?)?;
    let buyer_wallet =
        regtest::start_wallet(&dir.join("buyer"), &chain, "buyer", regtest::free_port()?)?;
    let the_box = running.lightning.node().clone();
    regtest::fund(&chain, &[&the_box, &seller_wallet, &buyer_wallet], 1).await?;
    for _ in 0..channels {
        regtest::open_channel(&chain, &seller_wallet, &the_box, size, 0).await?;
        regtest::open_channel(&chain, &the_box, &buyer_wallet, size, 0).await?;
    }

    let seller = Side::connect(&url, node, trades).await?;
    let buyer = Side::connect(&url, node, trades).await?;
    eprintln!("bench: {trades} trades, {concurrency} at a time...");
    let timings: Arc<Mutex<HashMap<&'static str, Vec<Duration>>>> = Arc::default();
    let next = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (seller, buyer) = (seller.clone(), buyer.clone());
        let (sw, bw) = (seller_wallet.clone(), buyer_wallet.clone());
        let (timings, next) = (timings.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = {
                    let mut n = next.lock().expect("counter lock");
                    if *n >= trades {
                        return Ok::<(), anyhow::Error>(());
                    }
                    *n += 1;
                    *n
                };
                one_trade(&seller, &buyer, &sw, &bw, n as u64, &timings).await?;
            }
        }));
    }
    for w in workers {
        w.await.context("trade task")??;
    }
    let elapsed = started.elapsed();
    let done = running.engine.order_count()?;
    let (rss, rss_now) = (super::peak_rss_mb(), super::rss_now_mb());
    running.stop();
    for w in [seller_wallet, buyer_wallet] {
        let _ = w.stop();
    }
    chain.stop().await;
    let store_bytes = std::fs::metadata(&store_path).map(|m| m.len()).unwrap_or(0);

    println!("mostro-box bench trade: {trades} trades of {AMOUNT} sats, {concurrency} at a time, {history} finished trades before (regtest, real Lightning, {channels} channel(s) each way)");
    println!(
        "  start-up:              node::start returned in {:.2} s",
        started_in.as_secs_f64()
    );
    println!(
        "  trades completed:      {trades} in {:.1} s = {:.0} trades/min ({done} orders in the store)",
        elapsed.as_secs_f64(),
        trades as f64 * 60.0 / elapsed.as_secs_f64()
    );
    let mut timings = std::mem::take(&mut *timings.lock().expect("timings lock"));
    for step in STEPS {
        let v = timings.entry(step).or_default();
        v.sort();
        println!(
            "  {step:<48} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            ms(pct(v, 50)),
            ms(pct(v, 99)),
            ms(v.last().copied().unwrap_or_default())
        );
    }
    let recovered = seller.post.recovered.load(Ordering::Relaxed)
        + buyer.post.recovered.load(Ordering::Relaxed);
    println!("  replies re-fetched:    {recovered} (their live copy never arrived)");
    println!(
        "  store afterwards:      {:.1} MB; RSS of this process (box, both wallets, traders): {rss_now:.0} MB at the end, {rss:.0} MB at the peak",
        store_bytes as f64 / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One whole trade; every step's time goes into `timings`.
async fn one_trade(
    seller: &Side,
    buyer: &Side,
    seller_wallet: &Node,
    buyer_wallet: &Node,
    index: u64,
    timings: &Mutex<HashMap<&'static str, Vec<Duration>>>,
) -> anyhow::Result<()> {
    let record = |step: &'static str, from: Instant, to: Instant| {
        timings
            .lock()
            .expect("timings lock")
            .entry(step)
            .or_default()
            .push(to.saturating_duration_since(from));
    };
    let s = seller.trader()?;
    let b = buyer.trader()?;
    let order = SmallOrder {
        kind: Some(OrderKind::Sell),
        status: Some(Status::Pending),
        amount: AMOUNT,
        fiat_code: "USD".into(),
        fiat_amount: 5,
        payment_method: "cash".into(),
        created_at: Some(0),
        ..Default::default()
    };
    let t = seller
        .send(
            &s,
            index,
            None,
            Action::NewOrder,
            Some(Payload::Order(order)),
        )
        .await?;
    let (ack, at) = seller.wait(&s, Action::NewOrder).await?;
    record(STEPS[0], t, at);
    let Some(Payload::Order(o)) = &ack.get_inner_message_kind().payload else {
        bail!("new-order ack without the order");
    };
    let id = o.id.context("ack without an id")?;

    let fee = (AMOUNT as f64 * 0.006 / 2.0).round() as i64;
    let desc = Bolt11InvoiceDescription::Direct(Description::new("bench".into())?);
    let inv = buyer_wallet
        .bolt11_payment()
        .receive((AMOUNT - fee) as u64 * 1000, &desc, 7200)?;
    let t = buyer
        .send(
            &b,
            index,
            Some(id),
            Action::TakeSell,
            Some(Payload::PaymentRequest(None, inv.to_string(), None)),
        )
        .await?;
    let (_, at) = buyer.wait(&b, Action::WaitingSellerToPay).await?;
    record(STEPS[1], t, at);
    // The seller gets the taker's reputation first, then the invoice: keep the one with it.
    let hold = loop {
        let (m, at) = seller.wait(&s, Action::PayInvoice).await?;
        if let Some(Payload::PaymentRequest(_, hold, _)) = &m.get_inner_message_kind().payload {
            record(STEPS[2], t, at);
            break hold.clone();
        }
    };

    let paid_at = Instant::now();
    seller_wallet.bolt11_payment().send(
        &hold
            .parse()
            .map_err(|_| anyhow::anyhow!("bad hold invoice"))?,
        None,
    )?;
    let (_, at) = seller.wait(&s, Action::BuyerTookOrder).await?;
    record(STEPS[5], paid_at, at);

    let t = buyer
        .send(&b, index, Some(id), Action::FiatSent, None)
        .await?;
    let (_, at) = buyer.wait(&b, Action::FiatSentOk).await?;
    record(STEPS[3], t, at);

    let t = seller
        .send(&s, index, Some(id), Action::Release, None)
        .await?;
    let (_, at) = seller.wait(&s, Action::HoldInvoicePaymentSettled).await?;
    record(STEPS[4], t, at);
    let (_, at) = buyer.wait(&b, Action::PurchaseCompleted).await?;
    record(STEPS[6], t, at);
    Ok(())
}
