//! `mostro-box bench relay URL`: event ingest and query latency of any Nostr relay, so the box's
//! relay and another relay can be measured with the same workload on the same machine
//! (scripts/bench-relay.sh runs it against both).
//!
//! The workload is Mostro's: kind-14 direct messages with a `p` tag (the only traffic the box's
//! relay carries besides its own events). Writers each send their events one after another and
//! wait for the relay's OK; then one reader asks for each recipient's messages and waits for
//! the end of stored events. Every event is signed before the clock starts.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nostr::{EventBuilder, Filter, Keys, Kind, Tag};
use nostr_sdk::Client;

use super::{ms, pct};

/// Recipients the messages are spread over (the reader queries each).
const RECIPIENTS: usize = 100;

/// Runs the relay benchmark against `url` and prints its figures.
pub async fn relay(
    url: &str,
    writers: usize,
    per_writer: usize,
    queries: usize,
) -> anyhow::Result<()> {
    if writers == 0 || per_writer == 0 {
        bail!("--writers and --events must be at least 1");
    }
    let recipients: Vec<Keys> = (0..RECIPIENTS).map(|_| Keys::generate()).collect();
    eprintln!("bench: signing {} events...", writers * per_writer);
    let mut plans = Vec::new();
    for w in 0..writers {
        let author = Keys::generate();
        let mut events = Vec::new();
        for i in 0..per_writer {
            let to = recipients[(w * per_writer + i) % RECIPIENTS].public_key();
            // About the size of a NIP-44 Mostro message.
            let content = format!("{:0>600}", format!("{w}-{i}"));
            let ev = EventBuilder::new(Kind::PrivateDirectMessage, content)
                .tag(Tag::public_key(to))
                .sign_with_keys(&author)?;
            events.push(ev);
        }
        plans.push(events);
    }
    let mut clients = Vec::new();
    for _ in 0..writers {
        let c = Client::default();
        c.add_relay(url).await?;
        c.connect().await;
        c.wait_for_connection(Duration::from_secs(10)).await;
        clients.push(c);
    }

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, events) in clients.iter().cloned().zip(plans) {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(events.len());
            for ev in events {
                let t = Instant::now();
                let out = client.send_event(&ev).await?;
                if out.success.is_empty() {
                    bail!("the relay refused an event: {:?}", out.failed);
                }
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut write_lat = Vec::new();
    for t in tasks {
        write_lat.extend(t.await.context("writer task")??);
    }
    let elapsed = started.elapsed();
    for c in &clients {
        c.disconnect().await;
    }
    write_lat.sort();

    let reader = Client::default();
    reader.add_relay(url).await?;
    reader.connect().await;
    reader.wait_for_connection(Duration::from_secs(10)).await;
    let expected = writers * per_writer / RECIPIENTS;
    let mut read_lat = Vec::new();
    let mut found = 0;
    for q in 0..queries {
        let to = recipients[q % RECIPIENTS].public_key();
        let f = Filter::new()
            .kind(Kind::PrivateDirectMessage)
            .pubkey(to)
            .limit(50);
        let t = Instant::now();
        let events = reader.fetch_events(f, Duration::from_secs(10)).await?;
        read_lat.push(t.elapsed());
        found += events.len();
    }
    reader.disconnect().await;
    read_lat.sort();

    let n = write_lat.len();
    println!("mostro-box bench relay {url}: {writers} writers x {per_writer} kind-14 events, then {queries} queries");
    println!(
        "  ingest:                {n} events in {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  OK latency:            p50 {:.1} ms, p99 {:.1} ms",
        ms(pct(&write_lat, 50)),
        ms(pct(&write_lat, 99))
    );
    println!(
        "  query to EOSE:         p50 {:.1} ms, p99 {:.1} ms ({:.0} events per query, {} expected up to 50)",
        ms(pct(&read_lat, 50)),
        ms(pct(&read_lat, 99)),
        found as f64 / queries.max(1) as f64,
        expected.min(50)
    );
    Ok(())
}
