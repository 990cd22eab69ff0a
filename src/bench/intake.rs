//! `mostro-box bench intake`: new orders through the real relay, measured from the traders' side.
//!
//! A box runs in this process on loopback with a fresh store; N traders each open their own
//! WebSocket and send orders one after another (each waits for its ack before the next), so
//! N is the number of requests in flight. All requests are wrapped before the clock starts. In
//! the same run it measures the crypto floor: what one core needs per message for the node's
//! own cryptography (open the request with every check, wrap the ack, sign the 38383 event).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mostro_core::prelude::{
    unwrap_incoming, wrap_message_with, Action, Kind as OrderKind, Message, Payload, SmallOrder,
    Status, Transport, WrapOptions,
};
use nostr::{Event, Filter, Keys, Kind, PublicKey};
use nostr_sdk::{Client, RelayPoolNotification};

use super::{ms, pct};
use crate::config::Settings;
use crate::protocol::outbound::Outgoing;
use crate::protocol::{intake, DIRECT, GIFT_WRAP};

struct Request {
    event: Event,
    trade: Keys,
}

/// Runs the intake benchmark and prints its figures.
pub async fn intake(traders: usize, per_trader: usize, transport: &str) -> anyhow::Result<()> {
    let transports: Vec<Transport> = match transport {
        "v1" => vec![GIFT_WRAP],
        "v2" => vec![DIRECT],
        "both" => vec![GIFT_WRAP, DIRECT],
        other => bail!("--transport {other}: use v1, v2 or both"),
    };
    if traders == 0 || per_trader == 0 {
        bail!("--traders and --orders must be at least 1");
    }
    let (dir, bitcoind) = super::fresh_box("bench").await?;
    let port = crate::regtest::free_port()?;
    let url = format!("ws://127.0.0.1:{port}");
    let overrides = vec![
        format!("relay.listen=127.0.0.1:{port}"),
        format!("relay.public_url={url}"),
        "relay.events_per_minute_per_ip=100000000".into(),
        "relay.connections_per_minute_per_ip=100000000".into(),
        "relay.bytes_per_second_per_ip=1000000000".into(),
        format!("relay.max_connections_per_ip={}", traders + 10),
        "mostro.max_pending_orders_per_identity=1000000".into(),
        "mostro.fiat_currencies_accepted=[]".into(),
        "price.api_url=http://127.0.0.1:9".into(),
    ];
    let overrides = [overrides, crate::cli::regtest_overrides(&bitcoind)?].concat();
    let settings = Settings::load(&dir, Vec::<(String, String)>::new(), &overrides)?;
    let node_keys = crate::keys::load(&dir)?;
    let node = node_keys.public_key();

    eprintln!("bench: wrapping {} requests...", traders * per_trader);
    let mut plans: Vec<Vec<Request>> = Vec::new();
    for t in 0..traders {
        let identity = Keys::generate();
        let wire = transports[t % transports.len()];
        let mut reqs = Vec::new();
        for i in 0..per_trader {
            let trade = Keys::generate();
            let index = i as i64 + 1;
            let msg = Message::new_order(
                None,
                Some(index as u64),
                Some(index),
                Action::NewOrder,
                Some(Payload::Order(sample_order())),
            );
            let event =
                wrap_message_with(wire, &msg, &identity, &trade, node, WrapOptions::default())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            reqs.push(Request { event, trade });
        }
        plans.push(reqs);
    }
    let floor = crypto_floor(&node_keys, &plans, &settings).await?;

    let running = crate::node::start(&dir, settings).await?;
    let observer = Client::default();
    observer.add_relay(url.as_str()).await?;
    observer.connect().await;
    observer.wait_for_connection(Duration::from_secs(10)).await;
    let seen_events: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let seen = seen_events.clone();
        let mut notes = observer.notifications();
        observer
            .subscribe(Filter::new().kind(Kind::Custom(38383)).author(node), None)
            .await?;
        tokio::spawn(async move {
            while let Ok(n) = notes.recv().await {
                if let RelayPoolNotification::Event { event, .. } = n {
                    if let Some(d) = event.tags.identifier() {
                        seen.lock()
                            .expect("lock")
                            .entry(d.to_string())
                            .or_insert_with(Instant::now);
                    }
                }
            }
        });
    }

    let mut clients = Vec::new();
    for reqs in &plans {
        let c = Client::default();
        c.add_relay(url.as_str()).await?;
        c.connect().await;
        c.wait_for_connection(Duration::from_secs(10)).await;
        let f = Filter::new()
            .kinds([Kind::PrivateDirectMessage, Kind::GiftWrap])
            .pubkeys(reqs.iter().map(|r| r.trade.public_key()));
        c.subscribe(f, None).await?;
        clients.push(c);
    }

    eprintln!("bench: {traders} traders x {per_trader} orders ({transport})...");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, reqs) in clients.into_iter().zip(plans) {
        tasks.push(tokio::spawn(run_trader(client, reqs)));
    }
    let mut acks: Vec<(Duration, Instant, Event, Keys)> = Vec::new();
    for t in tasks {
        acks.extend(t.await.context("trader task")??);
    }
    let elapsed = started.elapsed();

    // Afterwards (off the clock): which order each ack created, and when its 38383 arrived.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut to_event = Vec::new();
    for (_, sent_at, ack, trade) in &acks {
        let Ok(Some(u)) = unwrap_incoming(ack, trade).await else {
            bail!("an ack did not decrypt");
        };
        let Some(Payload::Order(o)) = &u.message.get_inner_message_kind().payload else {
            bail!("reply was not an order: {:?}", u.message);
        };
        let id = o.id.context("ack without id")?.to_string();
        loop {
            if let Some(at) = seen_events.lock().expect("lock").get(&id) {
                to_event.push(at.saturating_duration_since(*sent_at));
                break;
            }
            if Instant::now() > deadline {
                bail!("order {id} never appeared as a 38383 event");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let stored = running.engine.order_count()?;
    running.stop();

    let n = acks.len();
    let mut ack_lat: Vec<Duration> = acks.iter().map(|a| a.0).collect();
    ack_lat.sort();
    to_event.sort();
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "mostro-box bench intake: {traders} traders x {per_trader} orders, transport {transport}"
    );
    println!(
        "  orders acked:          {n} in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!("  throughput:            {rate:.0} orders/s");
    println!(
        "  latency to ack:        p50 {:.1} ms, p99 {:.1} ms",
        ms(pct(&ack_lat, 50)),
        ms(pct(&ack_lat, 99))
    );
    println!(
        "  latency to 38383:      p50 {:.1} ms, p99 {:.1} ms",
        ms(pct(&to_event, 50)),
        ms(pct(&to_event, 99))
    );
    println!("  orders durable in store: {stored} (every ack is sent after its commit)");
    println!(
        "  crypto floor (1 core): {floor:.0} msgs/s  -> box reaches {:.0}% of one core's floor, {:.0}% of two",
        100.0 * rate / floor,
        50.0 * rate / floor
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn run_trader(
    client: Client,
    reqs: Vec<Request>,
) -> anyhow::Result<Vec<(Duration, Instant, Event, Keys)>> {
    let mut notes = client.notifications();
    let mut out = Vec::with_capacity(reqs.len());
    let mut early: HashMap<PublicKey, Event> = HashMap::new();
    for r in reqs {
        let pk = r.trade.public_key();
        let t0 = Instant::now();
        let sent = client.send_event(&r.event).await?;
        if sent.success.is_empty() {
            bail!("relay refused a request: {:?}", sent.failed);
        }
        let ack = loop {
            if let Some(ev) = early.remove(&pk) {
                break ev;
            }
            let n = tokio::time::timeout(Duration::from_secs(30), notes.recv())
                .await
                .context("no ack within 30 s")??;
            if let RelayPoolNotification::Event { event, .. } = n {
                let to = event.tags.public_keys().next().copied();
                match to {
                    Some(p) if p == pk => break *event,
                    Some(p) => {
                        early.insert(p, *event);
                    }
                    None => {}
                }
            }
        };
        out.push((t0.elapsed(), t0, ack, r.trade));
    }
    Ok(out)
}

/// One core's rate for the node's own cryptography per message.
async fn crypto_floor(
    node: &Keys,
    plans: &[Vec<Request>],
    settings: &Settings,
) -> anyhow::Result<f64> {
    let sample: Vec<&Request> = plans.iter().flatten().take(400).collect();
    let now = crate::protocol::now();
    let facts = crate::protocol::events::NodeFacts {
        pubkey: node.public_key(),
        relays: vec![settings.relay.public_url.clone()],
        network: "regtest".into(),
    };
    let started = Instant::now();
    for r in &sample {
        let inb = intake::open(&r.event, node, 0, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let order = crate::fuzzing::pending_order(uuid::Uuid::new_v4(), inb.sender);
        let ack = Outgoing::direct(
            inb.sender,
            inb.transport,
            Message::new_order(Some(order.id), None, None, Action::NewOrder, None),
        );
        ack.sign(node).await.map_err(|e| anyhow::anyhow!(e))?;
        let ev = crate::protocol::events::order_event(&order, (0.0, 0, 0), &facts, settings, now)
            .context("order event")?;
        ev.sign(node).await.map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(sample.len() as f64 / started.elapsed().as_secs_f64())
}

fn sample_order() -> SmallOrder {
    SmallOrder {
        kind: Some(OrderKind::Sell),
        status: Some(Status::Pending),
        amount: 10_000,
        fiat_code: "USD".into(),
        fiat_amount: 5,
        payment_method: "cash".into(),
        created_at: Some(0),
        ..Default::default()
    }
}
