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

impl User {
    /// Adds a rating: the first counts half (as mostro-core does), later ones move the running
    /// mean towards the new rating (mostro-core 0.17's fix; 0.14 used the previous rating).
    pub fn add_rating(&mut self, rating: u8) {
        let r = rating as i64;
        self.total_reviews += 1;
        if self.total_reviews == 1 {
            self.total_rating = r as f64 / 2.0;
            self.max_rating = r;
            self.min_rating = r;
        } else {
            self.total_rating += (r as f64 - self.total_rating) / self.total_reviews as f64;
            self.max_rating = self.max_rating.max(r);
            self.min_rating = self.min_rating.min(r);
        }
        self.last_rating = r;
    }
}
