//! Benchmarks run by `mostro-box bench`.

/// Intake benchmark (filled in below).
pub async fn intake(_traders: usize, _orders: usize, _transport: &str) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
