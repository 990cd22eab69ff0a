//! Opening an incoming request: the cryptographic checks of reference §2.5 that need no state.
//!
//! These run in parallel, outside the store's writer. The checks that need state (replays, trade
//! index, first-contact PoW) happen in the engine, in arrival order.

use mostro_core::prelude::{unwrap_incoming, Message, Transport};
use nostr::hashes::{sha256, Hash};
use nostr::secp256k1::schnorr::Signature;
use nostr::{Event, Keys, PublicKey};

use super::transport_of;

/// Requests older than this, measured from the moment the relay stored them, are dropped.
pub const FRESHNESS_SECS: i64 = 10;

/// A request that passed the stateless checks.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Which transport it came by; the reply goes back the same way.
    pub transport: Transport,
    /// The message.
    pub message: Message,
    /// Trade key (rumor author in v1, event author in v2). Replies go here.
    pub sender: PublicKey,
    /// Identity key (seal signer in v1, identity proof in v2; the sender in full privacy).
    pub identity: PublicKey,
    /// The trade key's signature over the message, if any.
    pub signature: Option<Signature>,
    /// Inner creation time (rumor or kind-14 event).
    pub created_at: i64,
    /// Leading zero bits of the outer event id (NIP-13).
    pub pow: u8,
    /// Hash of sender, time and message: the same request re-wrapped in a new gift wrap has a new
    /// outer id but the same inner id.
    pub inner_id: [u8; 32],
}

/// Why a request was dropped without a reply (the reference daemon answers none of these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Not kind 14 or 1059.
    #[error("not a Mostro transport kind")]
    WrongKind,
    /// Not enough proof of work.
    #[error("proof of work {got} below {need}")]
    Pow {
        /// Bits found.
        got: u8,
        /// Bits required.
        need: u8,
    },
    /// Could not be decrypted with the node key.
    #[error("not addressed to this node")]
    NotForUs,
    /// Signatures, seal or tuple did not verify or parse.
    #[error("invalid envelope: {0}")]
    Invalid(String),
    /// Older than the freshness window.
    #[error("stale: created {age} s before it reached the relay")]
    Stale {
        /// Seconds between creation and arrival.
        age: i64,
    },
    /// Identity differs from the trade key but the message is unsigned.
    #[error("reputation-mode message without a trade signature")]
    Unsigned,
    /// The message shape does not fit its action.
    #[error("message shape does not fit its action")]
    Shape,
}

/// Opens `event` with the node's keys and runs the stateless checks: the outer signature, then
/// those of [`open_verified`] in the reference's order: PoW, kind, unwrap, freshness (against
/// `received_at`), signature presence and message shape.
pub async fn open(
    event: &Event,
    node: &Keys,
    min_pow: u8,
    received_at: i64,
) -> Result<Inbound, Dropped> {
    if !event.verify_signature() {
        return Err(Dropped::Invalid("outer signature".into()));
    }
    open_verified(event, node, min_pow, received_at).await
}

/// [`open`] for an event whose id and signature the relay has already checked: the engine's
/// inbox holds only such events, and checking a signature twice costs a tenth of the node's
/// work per request.
pub async fn open_verified(
    event: &Event,
    node: &Keys,
    min_pow: u8,
    received_at: i64,
) -> Result<Inbound, Dropped> {
    let pow = super::pow_bits(&event.id);
    if pow < min_pow {
        return Err(Dropped::Pow {
            got: pow,
            need: min_pow,
        });
    }
    let transport = transport_of(event.kind).ok_or(Dropped::WrongKind)?;
    let unwrapped = match unwrap_incoming(event, node).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(Dropped::NotForUs),
        Err(e) => return Err(Dropped::Invalid(e.to_string())),
    };
    let created_at = unwrapped.created_at.as_secs() as i64;
    let age = received_at - created_at;
    if age > FRESHNESS_SECS {
        return Err(Dropped::Stale { age });
    }
    if unwrapped.identity != unwrapped.sender && unwrapped.signature.is_none() {
        return Err(Dropped::Unsigned);
    }
    if !unwrapped.message.verify() {
        return Err(Dropped::Shape);
    }
    let json = unwrapped
        .message
        .as_json()
        .map_err(|e| Dropped::Invalid(e.to_string()))?;
    let inner_id = sha256::Hash::hash(
        format!("{}:{}:{}", unwrapped.sender.to_hex(), created_at, json).as_bytes(),
    )
    .to_byte_array();
    Ok(Inbound {
        transport,
        message: unwrapped.message,
        sender: unwrapped.sender,
        identity: unwrapped.identity,
        signature: unwrapped.signature,
        created_at,
        pow,
        inner_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mostro_core::prelude::{wrap_message_with, Action, WrapOptions};

    fn msg() -> Message {
        Message::new_order(None, Some(1), Some(1), Action::LastTradeIndex, None)
    }

    #[tokio::test]
    async fn both_transports_open_with_identity_and_sender() {
        let node = Keys::generate();
        let identity = Keys::generate();
        let trade = Keys::generate();
        for t in [super::super::GIFT_WRAP, super::super::DIRECT] {
            let ev = wrap_message_with(
                t,
                &msg(),
                &identity,
                &trade,
                node.public_key(),
                WrapOptions::default(),
            )
            .await
            .unwrap();
            let now = super::super::now();
            let inb = open(&ev, &node, 0, now).await.unwrap();
            assert_eq!(inb.sender, trade.public_key());
            assert_eq!(inb.identity, identity.public_key());
            assert_eq!(inb.transport, t);
            // Same request, reaching the relay 11 s after it was made: dropped.
            assert!(matches!(
                open(&ev, &node, 0, now + 11).await,
                Err(Dropped::Stale { .. })
            ));
            // Another node cannot read it.
            assert_eq!(
                open(&ev, &Keys::generate(), 0, now).await.unwrap_err(),
                Dropped::NotForUs
            );
            // PoW demanded but absent.
            assert!(matches!(
                open(&ev, &node, 20, now).await,
                Err(Dropped::Pow { .. })
            ));
        }
    }

    #[tokio::test]
    async fn reputation_message_without_signature_is_dropped() {
        let node = Keys::generate();
        let identity = Keys::generate();
        let trade = Keys::generate();
        let ev = wrap_message_with(
            super::super::DIRECT,
            &msg(),
            &identity,
            &trade,
            node.public_key(),
            WrapOptions {
                signed: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            open(&ev, &node, 0, super::super::now()).await.unwrap_err(),
            Dropped::Unsigned
        );
    }
}
