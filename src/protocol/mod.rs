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

/// NIP-13 proof of work of an event id: its leading zero bits. nostr's own count overflows on an
/// id of all zeros (256 bits), which only a forged id has, and panics in debug builds: the
/// fuzzer found it. This one stops at 255.
pub fn pow_bits(id: &nostr::EventId) -> u8 {
    let mut bits: u32 = 0;
    for byte in id.as_bytes() {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits.min(255) as u8
}

/// Unix time now, in seconds.
pub fn now() -> i64 {
    nostr::Timestamp::now().as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_bits_counts_leading_zeros_and_stops_at_255() {
        let id = |bytes: [u8; 32]| nostr::EventId::from_byte_array(bytes);
        assert_eq!(pow_bits(&id([0; 32])), 255);
        let mut b = [0xff; 32];
        b[0] = 0;
        b[1] = 0x0f;
        assert_eq!(pow_bits(&id(b)), 12);
        assert_eq!(pow_bits(&id([0xff; 32])), 0);
    }
}
