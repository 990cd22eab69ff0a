//! Outgoing HTTP(S) GETs (market prices, LNURL-pay) over hyper with rustls and the webpki roots:
//! one client recipe, a time-out and a body limit, so no caller can hang the box or fill memory.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// Largest body read.
const MAX_BODY: usize = 1 << 20;

/// Why a GET failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Not an http(s) URL.
    #[error("bad URL {0}")]
    Url(String),
    /// Network failure, time-out or non-2xx status.
    #[error("{0}")]
    Http(String),
}

/// GETs `url` and returns the body; fails after `timeout` or on a non-2xx status.
pub async fn get(url: &str, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    let uri: hyper::Uri = url.parse().map_err(|_| FetchError::Url(url.into()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(FetchError::Url(url.into()));
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(https);
    let req = hyper::Request::get(uri)
        .header(
            "user-agent",
            concat!("mostro-box/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let fetch = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(FetchError::Http(format!("HTTP {}", resp.status())));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| FetchError::Http(format!("timed out after {} s", timeout.as_secs())))?
}
