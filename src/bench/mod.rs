//! Benchmarks that print their figures: `bench intake` (new orders through the relay),
//! `bench trade` (whole trades with real Lightning payments on regtest, optionally after a long
//! history), `bench relay` (any relay's ingest and query latency, for comparisons) and
//! `bench flood` (the box's memory, store, a trader's latency and its timers under a flood).

mod flood;
mod history;
mod intake;
mod relay;
mod trade;

use std::time::Duration;

pub use flood::flood;
pub use intake::intake;
pub use relay::relay;
pub use trade::trade;

/// A fresh data directory with the node's keys, and a regtest bitcoind at height 1 (in it) for
/// the box's Lightning node, which always runs.
async fn fresh_box(tag: &str) -> anyhow::Result<(std::path::PathBuf, crate::regtest::Bitcoind)> {
    let dir = std::env::temp_dir().join(format!("mostro-box-{tag}-{}", uuid::Uuid::new_v4()));
    crate::node::init(&dir, None)?;
    let exe = crate::regtest::find_or_provision_bitcoind(&crate::cli::bitcoind_cache())?;
    let bitcoind = crate::regtest::Bitcoind::start(&exe, &dir.join("bitcoind")).await?;
    bitcoind.mine(1).await?;
    Ok((dir, bitcoind))
}

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

/// Peak resident memory of this process (VmHWM), MB.
fn peak_rss_mb() -> f64 {
    rss_mb("VmHWM:")
}

/// Resident memory of this process now (VmRSS), MB.
fn rss_now_mb() -> f64 {
    rss_mb("VmRSS:")
}

fn rss_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
