//! What the relay accepts: Mostro traffic only, within per-IP limits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use nostr::{Event, JsonUtil, Kind, PublicKey};
use nostr_relay_builder::builder::{PolicyResult, WritePolicy};

use super::throttle::Bucket;
use crate::store::disk::DiskGuard;

/// Kinds the node itself publishes; only the node's key may publish them here.
const NODE_KINDS: [u16; 6] = [0, 10002, 38383, 38384, 38385, 38386];

/// Why the relay refuses an event; the text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Larger than `relay.max_event_bytes`.
    #[error("event is {size} bytes, this relay accepts at most {max}")]
    TooLarge {
        /// The event's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A direct message or gift wrap with no `p` tag.
    #[error("direct messages and gift wraps need a p tag")]
    NoRecipient,
    /// A request without the node's proof of work.
    #[error("requests to this Mostro node need proof of work of {0} bits")]
    ProofOfWork(u8),
    /// One of the node's own kinds, signed by someone else.
    #[error("kind {0} is published only by this Mostro node")]
    NodeKind(u16),
    /// Not Mostro traffic.
    #[error(
        "this relay carries Mostro traffic only (kinds 14 and 1059 with a p tag), not kind {0}"
    )]
    NotMostro(u16),
}

/// Admits direct messages and gift wraps addressed with a `p` tag (requests to the node and
/// trader-to-trader chat), the node's own public kinds, and nothing else; enforces the size
/// limit, the node's proof of work on requests, and a per-IP event rate.
#[derive(Debug)]
pub struct MostroPolicy {
    node: PublicKey,
    max_event_bytes: usize,
    pow: u8,
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    disk: Option<DiskGuard>,
    backlog: Option<(super::Backlog, u64)>,
}

impl MostroPolicy {
    /// A policy for `node` with the relay settings' limits.
    pub fn new(node: PublicKey, max_event_bytes: usize, pow: u8, per_minute: u32) -> Self {
        Self {
            node,
            max_event_bytes,
            pow,
            per_minute,
            buckets: Mutex::new(HashMap::new()),
            disk: None,
            backlog: None,
        }
    }

    /// Refuses requests to the node while `backlog` of them wait (a tenth of that while the
    /// disk is under its floor): a flood waits at the sender, not in the box.
    pub fn with_backlog(mut self, backlog: super::Backlog, max: u64) -> Self {
        self.backlog = Some((backlog, max));
        self
    }

    /// While `disk` is under its floor, keeps only requests to the node (trades under way need
    /// them to finish) and refuses everything else.
    pub fn guarding(mut self, disk: DiskGuard) -> Self {
        self.disk = Some(disk);
        self
    }

    /// The decision, without the rate limit (pure, for tests and the fuzzer).
    pub fn judge(&self, event: &Event) -> Result<(), Refusal> {
        let size = event.as_json().len();
        if size > self.max_event_bytes {
            return Err(Refusal::TooLarge {
                size,
                max: self.max_event_bytes,
            });
        }
        let kind = event.kind.as_u16();
        if matches!(event.kind, Kind::PrivateDirectMessage | Kind::GiftWrap) {
            let mut p = event.tags.public_keys().peekable();
            if p.peek().is_none() {
                return Err(Refusal::NoRecipient);
            }
            let to_node = event.tags.public_keys().any(|p| p == &self.node);
            if to_node && crate::protocol::pow_bits(&event.id) < self.pow {
                return Err(Refusal::ProofOfWork(self.pow));
            }
            return Ok(());
        }
        if NODE_KINDS.contains(&kind) {
            if event.pubkey == self.node {
                return Ok(());
            }
            return Err(Refusal::NodeKind(kind));
        }
        Err(Refusal::NotMostro(kind))
    }

    fn take_token(&self, ip: IpAddr) -> bool {
        let mut buckets = self.buckets.lock().expect("rate buckets lock");
        if buckets.len() > 100_000 {
            // Bound memory under a spray of addresses: forget buckets that are full again.
            buckets.retain(|_, b| !b.is_idle());
        }
        let cap = self.per_minute as f64;
        buckets
            .entry(ip)
            .or_insert_with(|| Bucket::new(cap / 60.0, cap))
            .take(1.0)
    }
}

impl WritePolicy for MostroPolicy {
    fn admit_event<'a>(
        &'a self,
        event: &'a Event,
        addr: &'a SocketAddr,
    ) -> nostr::util::BoxedFuture<'a, PolicyResult> {
        Box::pin(async move {
            if let Err(refusal) = self.judge(event) {
                return PolicyResult::Reject(refusal.to_string());
            }
            let to_node = event.tags.public_keys().any(|p| p == &self.node);
            let disk_low = self.disk.as_ref().is_some_and(|d| d.is_low());
            if !to_node && disk_low {
                return PolicyResult::Reject(
                    "this Mostro box is almost out of disk space; it takes only requests to the node for now".into(),
                );
            }
            if let Some((backlog, max)) = &self.backlog {
                let max = if disk_low { (max / 10).max(10) } else { *max };
                if to_node && backlog.get() >= max {
                    return PolicyResult::Reject(
                        "rate-limited: this Mostro node is busy; send again in a minute".into(),
                    );
                }
            }
            if !self.take_token(super::throttle::address_key(addr.ip())) {
                return PolicyResult::Reject(format!(
                    "rate-limited: at most {} events per minute from one address",
                    self.per_minute
                ));
            }
            PolicyResult::Accept
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, Tag};

    #[test]
    fn admits_mostro_traffic_only() {
        let node = Keys::generate();
        let stranger = Keys::generate();
        let p = MostroPolicy::new(node.public_key(), 4096, 0, 10);
        let note = EventBuilder::text_note("hi")
            .sign_with_keys(&stranger)
            .unwrap();
        assert_eq!(p.judge(&note), Err(Refusal::NotMostro(1)));
        let dm = EventBuilder::new(Kind::PrivateDirectMessage, "x")
            .tag(Tag::public_key(node.public_key()))
            .sign_with_keys(&stranger)
            .unwrap();
        assert!(p.judge(&dm).is_ok());
        let no_p = EventBuilder::new(Kind::PrivateDirectMessage, "x")
            .sign_with_keys(&stranger)
            .unwrap();
        assert!(p.judge(&no_p).is_err());
        let fake_order = EventBuilder::new(Kind::Custom(38383), "")
            .sign_with_keys(&stranger)
            .unwrap();
        assert!(p.judge(&fake_order).is_err());
        let big = EventBuilder::new(Kind::PrivateDirectMessage, "x".repeat(5000))
            .tag(Tag::public_key(node.public_key()))
            .sign_with_keys(&stranger)
            .unwrap();
        assert!(matches!(p.judge(&big), Err(Refusal::TooLarge { .. })));
    }

    #[tokio::test]
    async fn requests_wait_at_the_sender_while_the_inbox_is_full() {
        let node = Keys::generate();
        let backlog = crate::relay::Backlog::default();
        let p =
            MostroPolicy::new(node.public_key(), 4096, 0, 1000).with_backlog(backlog.clone(), 2);
        let addr: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        let request = EventBuilder::new(Kind::GiftWrap, "x")
            .tag(Tag::public_key(node.public_key()))
            .sign_with_keys(&Keys::generate())
            .unwrap();
        let chat = EventBuilder::new(Kind::GiftWrap, "x")
            .tag(Tag::public_key(Keys::generate().public_key()))
            .sign_with_keys(&Keys::generate())
            .unwrap();
        assert!(matches!(
            p.admit_event(&request, &addr).await,
            PolicyResult::Accept
        ));
        backlog.add(2);
        match p.admit_event(&request, &addr).await {
            PolicyResult::Reject(why) => assert!(why.contains("busy"), "{why}"),
            PolicyResult::Accept => panic!("a full inbox takes no more requests"),
        }
        assert!(matches!(
            p.admit_event(&chat, &addr).await,
            PolicyResult::Accept
        ));
        backlog.done(1);
        assert!(matches!(
            p.admit_event(&request, &addr).await,
            PolicyResult::Accept
        ));
    }

    #[test]
    fn rate_limit_is_per_address() {
        let p = MostroPolicy::new(Keys::generate().public_key(), 4096, 0, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| p.take_token(a)));
        assert!(!p.take_token(a));
        assert!(p.take_token(b));
    }
}
