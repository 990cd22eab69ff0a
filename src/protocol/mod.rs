//! The Mostro wire: opening requests on both transports, wrapping replies, and the public events
//! (orders, node info, relay list, profile) with exactly the reference daemon's tags.

pub mod events;
pub mod intake;
pub mod outbound;

#[allow(deprecated)]
use mostro_core::prelude::Transport;

/// The two transports, named once here so the deprecation of v1 in mostro-core is acknowledged
/// in one place. The box accepts both at once and answers in the one each request used.
#[allow(deprecated)]
pub const GIFT_WRAP: Transport = Transport::GiftWrap;
/// Protocol v2, NIP-44 direct messages (kind 14).
pub const DIRECT: Transport = Transport::Nip44Direct;

/// The transport an incoming event kind belongs to.
pub fn transport_of(kind: nostr::Kind) -> Option<Transport> {
    match kind {
        nostr::Kind::GiftWrap => Some(GIFT_WRAP),
        nostr::Kind::PrivateDirectMessage => Some(DIRECT),
        _ => None,
    }
}

/// Unix time now, in seconds.
pub fn now() -> i64 {
    nostr::Timestamp::now().as_secs() as i64
}
