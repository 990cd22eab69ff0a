//! The node's public events with exactly the reference daemon's tags (reference §1).

use mostro_core::prelude::{Status, NOSTR_INFO_EVENT_KIND, NOSTR_ORDER_EVENT_KIND};
use nostr::PublicKey;

use super::outbound::Outgoing;
use crate::config::Settings;
use crate::engine::order::Order;

/// Retention of non-pending order revisions (reference `order_days` = 30).
pub const ORDER_RETENTION_SECS: i64 = 30 * 86_400;

/// Facts about the node that public events carry.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Node public key.
    pub pubkey: PublicKey,
    /// Relays named in the `source` tag and the relay list: the box's own URL first.
    pub relays: Vec<String>,
    /// Lightning network names for the `network` tag (`mainnet`, `regtest`, ...).
    pub network: String,
}

/// The maker's reputation in a pending order's `rating` tag: (total rating, reviews, first seen).
pub type MakerRating = (f64, i64, i64);

fn tag(name: &str, values: impl IntoIterator<Item = String>) -> Vec<String> {
    std::iter::once(name.to_string()).chain(values).collect()
}

/// `["y","mostro"]` or `["y","mostro","<name>"]`.
pub fn platform_tag(settings: &Settings) -> Vec<String> {
    let name = settings.mostro.name.trim();
    let mut t = vec!["y".to_string(), "mostro".to_string()];
    if !name.is_empty() {
        t.push(name.to_string());
    }
    t
}

/// The 38383 revision for `order` in its current status, or `None` when that status is not
/// published. `created_at` must come from [`Order::next_event_time`].
pub fn order_event(
    order: &Order,
    rating: MakerRating,
    facts: &NodeFacts,
    settings: &Settings,
    created_at: i64,
) -> Option<Outgoing> {
    let status = order.published_status()?;
    let pending = status == Status::Pending;
    let fa = match (order.min_amount, order.max_amount) {
        (Some(min), Some(max)) if pending => vec![min.to_string(), max.to_string()],
        _ => vec![order.fiat_amount.to_string()],
    };
    let expiration = if pending && order.expires_at > 0 {
        order.expires_at
    } else {
        created_at + ORDER_RETENTION_SECS
    };
    let mut tags = vec![
        tag("d", [order.id.to_string()]),
        tag("k", [order.kind.to_string()]),
        tag("f", [order.fiat_code.clone()]),
        tag("s", [status.to_string()]),
        tag("amt", [order.amount.to_string()]),
        tag("fa", fa),
        tag(
            "pm",
            order
                .payment_method
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from),
        ),
        tag("premium", [order.premium.to_string()]),
    ];
    if pending {
        let (total_rating, reviews, first_seen) = rating;
        let days = if first_seen != 0 {
            (created_at - first_seen).max(0) / 86_400
        } else {
            0
        };
        let json = serde_json::json!([
            "rating",
            {"total_reviews": reviews, "total_rating": total_rating, "days": days}
        ]);
        tags.push(tag("rating", [json.to_string()]));
        tags.push(tag(
            "source",
            [format!(
                "mostro:{}?relays={}&mostro={}",
                order.id,
                facts.relays.join(","),
                facts.pubkey.to_hex()
            )],
        ));
    }
    tags.extend([
        tag("network", [facts.network.clone()]),
        tag("layer", ["lightning".to_string()]),
        tag("expires_at", [order.expires_at.to_string()]),
        tag("expiration", [expiration.to_string()]),
        platform_tag(settings),
        tag("z", ["order".to_string()]),
    ]);
    Some(Outgoing::Public {
        kind: NOSTR_ORDER_EVENT_KIND,
        tags,
        content: String::new(),
        created_at: created_at as u64,
    })
}

/// Lightning facts for the info event; empty until the node runs Lightning.
#[derive(Debug, Clone, Default)]
pub struct LightningFacts {
    /// Implementation version.
    pub version: String,
    /// Node public key hex.
    pub node_pubkey: String,
    /// Build commit.
    pub commit_hash: String,
    /// Alias.
    pub alias: String,
    /// Chains (`bitcoin`).
    pub chains: Vec<String>,
    /// Networks (`mainnet`, `regtest`...).
    pub networks: Vec<String>,
    /// Connection URIs.
    pub uris: Vec<String>,
}

/// The 38385 node info event (reference §1.2), tags in the reference order.
pub fn info_event(settings: &Settings, facts: &NodeFacts, ln: &LightningFacts) -> Outgoing {
    let m = &settings.mostro;
    let l = &settings.lightning;
    let tags = vec![
        tag("d", [facts.pubkey.to_hex()]),
        tag("mostro_version", [env!("CARGO_PKG_VERSION").to_string()]),
        tag(
            "mostro_commit_hash",
            [option_env!("MOSTRO_BOX_COMMIT")
                .unwrap_or("unknown")
                .to_string()],
        ),
        tag("max_order_amount", [m.max_order_amount.to_string()]),
        tag("min_order_amount", [m.min_payment_amount.to_string()]),
        tag("expiration_hours", [m.expiration_hours.to_string()]),
        tag("expiration_seconds", [m.expiration_seconds.to_string()]),
        tag(
            "fiat_currencies_accepted",
            [m.fiat_currencies_accepted.join(",")],
        ),
        tag(
            "max_orders_per_response",
            [m.max_orders_per_response.to_string()],
        ),
        tag("fee", [m.fee.to_string()]),
        tag("pow", [m.pow.to_string()]),
        tag(
            "pow_first_contact",
            [m.effective_pow_first_contact().to_string()],
        ),
        tag("protocol_version", [m.protocol_version.to_string()]),
        tag(
            "hold_invoice_expiration_window",
            [l.hold_invoice_expiration_window.to_string()],
        ),
        tag(
            "hold_invoice_cltv_delta",
            [l.hold_invoice_cltv_delta.to_string()],
        ),
        // The reference puts the hold window here too (its quirk, kept for clients).
        tag(
            "invoice_expiration_window",
            [l.hold_invoice_expiration_window.to_string()],
        ),
        tag("lnd_version", [ln.version.clone()]),
        tag("lnd_node_pubkey", [ln.node_pubkey.clone()]),
        tag("lnd_commit_hash", [ln.commit_hash.clone()]),
        tag("lnd_node_alias", [ln.alias.clone()]),
        tag("lnd_chains", [ln.chains.join(",")]),
        tag("lnd_networks", [ln.networks.join(",")]),
        tag("lnd_uris", [ln.uris.join(",")]),
        platform_tag(settings),
        tag("z", ["info".to_string()]),
        tag("bond_enabled", ["false".to_string()]),
    ];
    Outgoing::Public {
        kind: NOSTR_INFO_EVENT_KIND,
        tags,
        content: String::new(),
        created_at: super::now() as u64,
    }
}

/// The NIP-65 relay list (kind 10002): one `r` tag per relay the node is reachable on.
pub fn relay_list_event(relays: &[String]) -> Outgoing {
    Outgoing::Public {
        kind: 10002,
        tags: relays.iter().map(|r| tag("r", [r.clone()])).collect(),
        content: String::new(),
        created_at: super::now() as u64,
    }
}

/// The kind-0 profile, or `None` when no profile field is set.
pub fn profile_event(settings: &Settings) -> Option<Outgoing> {
    let m = &settings.mostro;
    let mut meta = serde_json::Map::new();
    for (k, v) in [
        ("name", &m.name),
        ("about", &m.about),
        ("picture", &m.picture),
        ("website", &m.website),
    ] {
        if !v.trim().is_empty() {
            meta.insert(k.into(), v.trim().into());
        }
    }
    if meta.is_empty() {
        return None;
    }
    Some(Outgoing::Public {
        kind: 0,
        tags: Vec::new(),
        content: serde_json::Value::Object(meta).to_string(),
        created_at: super::now() as u64,
    })
}

/// Retention of dispute and rating events (reference `dispute_days`, `rating_days` = 90).
pub const DISPUTE_RETENTION_SECS: i64 = 90 * 86_400;

/// The 38386 dispute event (reference §1.4). `created_at` must be monotonic per dispute.
pub fn dispute_event(
    d: &crate::engine::dispute::DisputeRecord,
    settings: &Settings,
    created_at: i64,
) -> Outgoing {
    let tags = vec![
        tag("d", [d.id.to_string()]),
        tag(
            "expiration",
            [(created_at + DISPUTE_RETENTION_SECS).to_string()],
        ),
        tag("s", [d.status.to_string()]),
        tag("initiator", [d.initiator_name().to_string()]),
        tag("created_at", [d.created_at.to_string()]),
        platform_tag(settings),
        tag("z", ["dispute".to_string()]),
    ];
    Outgoing::Public {
        kind: mostro_core::prelude::NOSTR_DISPUTE_EVENT_KIND,
        tags,
        content: String::new(),
        created_at: created_at as u64,
    }
}

/// The 38384 rating event for the rated user (reference §1.3, with the documented `d`: the
/// rated user's trade key, not the rater's as the daemon's code has it).
pub fn rating_event(
    rated_trade_key: &PublicKey,
    user: &crate::engine::user::User,
    created_at: i64,
) -> Outgoing {
    let days = (created_at - user.created_at).max(0) / 86_400;
    let tags = vec![
        tag("d", [rated_trade_key.to_hex()]),
        tag(
            "expiration",
            [(created_at + DISPUTE_RETENTION_SECS).to_string()],
        ),
        tag("total_reviews", [user.total_reviews.to_string()]),
        tag("total_rating", [user.total_rating.to_string()]),
        tag("last_rating", [user.last_rating.to_string()]),
        tag("max_rate", [user.max_rating.to_string()]),
        tag("min_rate", [user.min_rating.to_string()]),
        tag("z", ["rating".to_string()]),
        tag("days", [days.to_string()]),
    ];
    Outgoing::Public {
        kind: mostro_core::prelude::NOSTR_RATING_EVENT_KIND,
        tags,
        content: String::new(),
        created_at: created_at as u64,
    }
}
