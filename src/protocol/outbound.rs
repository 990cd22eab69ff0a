//! What the node sends: direct replies to trade keys and public events, first as durable intents
//! (the engine stores them in the outbox in the same commit as the state change), then signed.

use mostro_core::prelude::{wrap_message_with, Message, Transport, WrapOptions};
use nostr::{Event, EventBuilder, Keys, Kind, PublicKey, Tag, Timestamp};
use serde::{Deserialize, Serialize};

use super::GIFT_WRAP;

/// Lifetime of the node's direct messages on relays (reference `dm_days` = 30).
pub const DM_LIFETIME_SECS: u64 = 30 * 86_400;

/// Something the node has decided to send, not yet signed.
#[allow(clippy::large_enum_variant)] // short-lived, one per reply; boxing buys nothing here
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outgoing {
    /// A reply or notice to a trader's trade key.
    Direct {
        /// Trade key it goes to.
        to: PublicKey,
        /// Transport the trader used.
        transport: Transport,
        /// The message.
        message: Message,
    },
    /// A public event signed by the node key.
    Public {
        /// Event kind.
        kind: u16,
        /// Tags, each as its list of strings.
        tags: Vec<Vec<String>>,
        /// Content.
        content: String,
        /// `created_at` decided with the state change (monotonic per order).
        created_at: u64,
    },
}

/// Why a queued message could not be signed (a bug: it stays in the outbox and is logged).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// mostro-core could not wrap the message.
    #[error("cannot wrap the message: {0}")]
    Wrap(String),
    /// A tag of a public event is malformed.
    #[error("malformed tag: {0}")]
    Tag(String),
    /// nostr could not sign the event.
    #[error("cannot sign: {0}")]
    Sign(String),
}

impl Outgoing {
    /// A direct message, stamped with the protocol version of its transport (1 for gift wrap,
    /// 2 for NIP-44 direct), as the reference daemon stamps them.
    pub fn direct(to: PublicKey, transport: Transport, mut message: Message) -> Self {
        let version = if transport == GIFT_WRAP { 1 } else { 2 };
        set_version(&mut message, version);
        Outgoing::Direct {
            to,
            transport,
            message,
        }
    }

    /// Signs (and for direct messages encrypts) with the node key.
    pub async fn sign(&self, node: &Keys) -> Result<Event, SignError> {
        match self {
            Outgoing::Direct {
                to,
                transport,
                message,
            } => {
                let opts = WrapOptions {
                    pow: 0,
                    expiration: Some(Timestamp::now() + DM_LIFETIME_SECS),
                    signed: false,
                };
                wrap_message_with(*transport, message, node, node, *to, opts)
                    .await
                    .map_err(|e| SignError::Wrap(e.to_string()))
            }
            Outgoing::Public {
                kind,
                tags,
                content,
                created_at,
            } => {
                let tags = tags
                    .iter()
                    .map(|t| Tag::parse(t.clone()).map_err(|e| SignError::Tag(e.to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                EventBuilder::new(Kind::from(*kind), content.clone())
                    .tags(tags)
                    .custom_created_at(Timestamp::from_secs(*created_at))
                    .sign_with_keys(node)
                    .map_err(|e| SignError::Sign(e.to_string()))
            }
        }
    }
}

fn set_version(message: &mut Message, version: u8) {
    match message {
        Message::Order(k)
        | Message::Dispute(k)
        | Message::CantDo(k)
        | Message::Rate(k)
        | Message::Dm(k)
        | Message::Restore(k) => k.version = version,
    }
}
