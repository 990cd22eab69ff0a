//! Copies of the node's public events to public relays, and the periodic discovery events.
//!
//! Public relays are a convenience for discovery: the box's own relay is the source of truth.
//! A relay that is down is retried with back-off; nothing here ever blocks the engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nostr::{Event, Keys, Kind, TagKind};
use nostr_sdk::Client;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::protocol::events::{
    info_event, profile_event, relay_list_event, LightningFacts, NodeFacts,
};
use crate::relay::Relay;

/// Most events waiting for a public relay; older replaceable revisions are dropped first.
const MAX_QUEUED: usize = 10_000;
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Queue of events for the public relays. Cheap to clone; a no-op without relays.
#[derive(Clone)]
pub struct Publisher {
    relays: Vec<mpsc::UnboundedSender<Event>>,
}

impl Publisher {
    /// Starts one publishing task per relay, so a dead relay never delays the others.
    pub fn start(relays: Vec<String>, keys: Keys) -> Self {
        if relays.is_empty() {
            return Self { relays: Vec::new() };
        }
        let client = Client::new(keys);
        let mut senders = Vec::new();
        for url in relays {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(url, client.clone(), rx));
            senders.push(tx);
        }
        Self { relays: senders }
    }

    /// Queues an event for every public relay.
    pub fn queue(&self, event: Event) {
        for tx in &self.relays {
            let _ = tx.send(event.clone());
        }
    }
}

/// Identity of a replaceable revision: later ones make earlier ones pointless to send.
fn slot(ev: &Event) -> (Kind, String) {
    let d = ev
        .tags
        .find(TagKind::d())
        .and_then(|t| t.content())
        .unwrap_or_default()
        .to_string();
    (ev.kind, d)
}

async fn run(url: String, client: Client, mut rx: mpsc::UnboundedReceiver<Event>) {
    if let Err(e) = client.add_relay(url.as_str()).await {
        tracing::warn!("publish: cannot use relay {url}: {e}");
        return;
    }
    let _ = client.connect_relay(url.as_str()).await;
    // Events waiting, keyed by replaceable slot, and the back-off state.
    let mut waiting: HashMap<(Kind, String), Event> = HashMap::new();
    let mut backoff: Option<(Duration, tokio::time::Instant)> = None;
    let mut full_warned = false;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                let key = slot(&ev);
                // A new revision of an event already waiting takes its place; a new event
                // waits only while the queue has room, and the operator hears when it has none.
                if waiting.len() < MAX_QUEUED || waiting.contains_key(&key) {
                    let newer = waiting.get(&key).is_some_and(|old| old.created_at > ev.created_at);
                    if !newer {
                        waiting.insert(key, ev);
                    }
                    full_warned = false;
                } else if !full_warned {
                    tracing::warn!(
                        "public relay {url}: {MAX_QUEUED} events wait for it; new ones are not \
                         copied there until it is reachable (check nostr.publish_relays)"
                    );
                    full_warned = true;
                }
            }
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        if waiting.is_empty() || backoff.is_some_and(|(_, at)| at > now) {
            continue;
        }
        let mut failed = Vec::new();
        for (key, ev) in waiting.drain() {
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                client.send_event_to([url.as_str()], &ev),
            )
            .await;
            match sent {
                Ok(Ok(out)) if !out.success.is_empty() => {}
                _ => failed.push((key, ev)),
            }
        }
        if failed.is_empty() {
            backoff = None;
        } else {
            let wait = backoff
                .map(|(d, _)| (d * 2).min(MAX_BACKOFF))
                .unwrap_or(Duration::from_secs(5));
            tracing::info!(
                "publish: {url} unreachable, {} events wait, retrying in {}s",
                failed.len(),
                wait.as_secs()
            );
            backoff = Some((wait, now + wait));
            waiting.extend(failed);
        }
    }
}

/// Publishes the node's profile once and its info and relay list now and on their intervals.
pub async fn discovery(
    relay: Relay,
    keys: Keys,
    settings: Arc<Settings>,
    facts: Arc<NodeFacts>,
    ln: LightningFacts,
) {
    let sign = |o: crate::protocol::outbound::Outgoing| {
        let keys = keys.clone();
        async move { o.sign(&keys).await }
    };
    if let Some(profile) = profile_event(&settings) {
        if let Ok(ev) = sign(profile).await {
            let _ = relay.publish_now(vec![ev]).await;
        }
    }
    let mut info = tokio::time::interval(Duration::from_secs(
        settings.mostro.publish_mostro_info_interval,
    ));
    let mut list =
        tokio::time::interval(Duration::from_secs(settings.mostro.publish_relays_interval));
    loop {
        let out = tokio::select! {
            _ = info.tick() => info_event(&settings, &facts, &ln),
            _ = list.tick() => relay_list_event(&facts.relays),
        };
        match sign(out).await {
            Ok(ev) => {
                if let Err(e) = relay.publish_now(vec![ev]).await {
                    tracing::warn!("publish: cannot store a discovery event: {e}");
                }
            }
            Err(e) => tracing::warn!("publish: cannot sign a discovery event: {e}"),
        }
    }
}
