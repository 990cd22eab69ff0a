//! Market prices from a Yadio-compatible API (`GET {api_url}/exrates/BTC`), cached with a
//! staleness limit. When the API cannot be reached, market-price orders are refused with
//! `price_too_stale` and fixed-sats orders are unaffected.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mostro_core::prelude::CantDoReason;

/// Prices of one BTC in each fiat currency, with the time they were fetched.
#[derive(Clone, Default)]
pub struct PriceBook {
    inner: Arc<RwLock<Prices>>,
    max_age: i64,
}

#[derive(Default)]
struct Prices {
    per_btc: HashMap<String, f64>,
    fetched_at: i64,
}

/// Why a fetch failed, for the log.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// Network or HTTP failure.
    #[error("price API unreachable: {0}")]
    Http(String),
    /// The answer was not the Yadio shape.
    #[error("price API answered something unexpected: {0}")]
    Shape(String),
}

impl PriceBook {
    /// An empty book whose prices expire after `max_age` seconds.
    pub fn new(max_age: u64) -> Self {
        Self {
            inner: Arc::default(),
            max_age: max_age as i64,
        }
    }

    /// Price of one BTC in `fiat_code`, if known and fresh at `now`.
    pub fn quote(&self, fiat_code: &str, now: i64) -> Result<f64, CantDoReason> {
        let p = self.inner.read().expect("price lock");
        if now - p.fetched_at > self.max_age {
            return Err(CantDoReason::PriceTooStale);
        }
        p.per_btc
            .get(&fiat_code.to_ascii_uppercase())
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or(CantDoReason::PriceTooStale)
    }

    /// Replaces the prices (used by the fetcher and by tests).
    pub fn set(&self, per_btc: HashMap<String, f64>, fetched_at: i64) {
        let mut p = self.inner.write().expect("price lock");
        p.per_btc = per_btc;
        p.fetched_at = fetched_at;
    }

    /// Fetches once from `api_url`.
    pub async fn refresh(&self, api_url: &str) -> Result<usize, PriceError> {
        let url = format!("{}/exrates/BTC", api_url.trim_end_matches('/'));
        let body = crate::fetch::get(&url, Duration::from_secs(10))
            .await
            .map_err(|e| PriceError::Http(e.to_string()))?;
        let per_btc = parse_yadio(&body)?;
        let n = per_btc.len();
        self.set(per_btc, crate::protocol::now());
        Ok(n)
    }

    /// Refreshes every `every` seconds forever; failures are logged and the old prices age out.
    pub async fn keep_fresh(self, api_url: String, every: u64) {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        loop {
            tick.tick().await;
            match self.refresh(&api_url).await {
                Ok(n) => tracing::debug!("price: {n} currencies from {api_url}"),
                Err(e) => tracing::warn!("price: {e}; market-price orders wait for a fresh price"),
            }
        }
    }
}

/// Parses `{"BTC": {"USD": 97000.5, ...}, ...}`.
pub fn parse_yadio(body: &[u8]) -> Result<HashMap<String, f64>, PriceError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PriceError::Shape(e.to_string()))?;
    let rates = v
        .get("BTC")
        .and_then(|b| b.as_object())
        .ok_or_else(|| PriceError::Shape("no BTC object".into()))?;
    Ok(rates
        .iter()
        .filter_map(|(k, v)| v.as_f64().map(|f| (k.to_ascii_uppercase(), f)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yadio_and_goes_stale() {
        let book = PriceBook::new(60);
        let rates = parse_yadio(br#"{"BTC":{"USD":100000,"ves":5000000.5},"base":"BTC"}"#).unwrap();
        book.set(rates, 1000);
        assert_eq!(book.quote("USD", 1010).unwrap(), 100000.0);
        assert_eq!(book.quote("VES", 1010).unwrap(), 5000000.5);
        assert_eq!(book.quote("USD", 1100), Err(CantDoReason::PriceTooStale));
        assert_eq!(book.quote("EUR", 1010), Err(CantDoReason::PriceTooStale));
        assert!(parse_yadio(b"<html>").is_err());
    }
}
