//! The dispute record: who opened it, who solves it, how it ended.

use mostro_core::prelude::{DisputeStatus, Status};
use nostr::PublicKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::order::Side;

/// A dispute as the box stores it (one per order at most).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisputeRecord {
    /// Dispute id, also the `d` tag of its 38386 event.
    pub id: Uuid,
    /// The order in dispute.
    pub order_id: Uuid,
    /// Where it stands.
    pub status: DisputeStatus,
    /// The order's status when the dispute was opened.
    pub order_previous_status: Status,
    /// Who opened it (`None`: the box, when a fiat-sent trade reached its escrow deadline).
    pub initiator: Option<Side>,
    /// The solver who took it.
    pub solver: Option<PublicKey>,
    /// Unix time opened.
    pub created_at: i64,
    /// Unix time taken by a solver (0 if not).
    pub taken_at: i64,
    /// `created_at` of the last 38386 revision, so the next one is strictly newer.
    pub last_event_at: i64,
}

impl DisputeRecord {
    /// The `initiator` tag value.
    pub fn initiator_name(&self) -> &'static str {
        match self.initiator {
            Some(Side::Buyer) => "buyer",
            Some(Side::Seller) => "seller",
            None => "unknown",
        }
    }

    /// Open (not yet settled or refunded).
    pub fn is_open(&self) -> bool {
        matches!(
            self.status,
            DisputeStatus::Initiated | DisputeStatus::InProgress
        )
    }

    /// The next event time, strictly after the previous revision.
    pub fn next_event_time(&mut self, now: i64) -> i64 {
        let t = now.max(self.last_event_at + 1);
        self.last_event_at = t;
        t
    }
}
