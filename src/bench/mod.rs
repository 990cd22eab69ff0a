//! Benchmarks that print their figures: `bench intake` (new orders through the relay) and
//! `bench trade` (whole trades with real Lightning payments on regtest).

mod intake;
mod trade;

use std::time::Duration;

pub use intake::intake;
pub use trade::trade;

/// The `p`th percentile of sorted durations.
fn pct(v: &[Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) * p) / 100]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
