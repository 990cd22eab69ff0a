//! Users in reputation mode, keyed by identity key. Full-privacy traders never get a record.

use mostro_core::prelude::UserInfo;
use serde::{Deserialize, Serialize};

/// What the box remembers of an identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Highest trade index used; a new order or take must use a larger one.
    pub last_trade_index: i64,
    /// Ratings received.
    pub total_reviews: i64,
    /// Running rating.
    pub total_rating: f64,
    /// Last rating received.
    pub last_rating: i64,
    /// Highest rating received.
    pub max_rating: i64,
    /// Lowest rating received.
    pub min_rating: i64,
    /// Unix time the identity was first seen.
    pub created_at: i64,
    /// Dispute solver (issue 4).
    pub is_solver: bool,
    /// Solver category: 1 read-only, 2 read-write.
    pub category: u8,
}

impl User {
    /// The reputation shown to counterparties.
    pub fn info(&self, now: i64) -> UserInfo {
        UserInfo {
            rating: self.total_rating,
            reviews: self.total_reviews,
            operating_days: ((now - self.created_at).max(0) / 86_400) as u64,
        }
    }
}
