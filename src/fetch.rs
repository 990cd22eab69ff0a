//! Outgoing HTTP(S) GETs (market prices, LNURL-pay) over hyper with rustls and the webpki roots:
//! one client recipe, a time-out and a body limit, so no caller can hang the box or fill memory.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Empty, Full};
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

/// A JSON-RPC 1.0 call with HTTP basic auth (bitcoind's RPC); returns `result`, or the
/// server's `error` as the failure.
pub async fn json_rpc(
    url: &str,
    user: &str,
    password: &str,
    method: &str,
    params: serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, FetchError> {
    let http = |e: String| FetchError::Http(e);
    let body = serde_json::json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params});
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let req = hyper::Request::post(url)
        .header("authorization", format!("Basic {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| http(e.to_string()))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let call = async {
        let resp = client.request(req).await.map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| http(format!("HTTP {status}: not a JSON-RPC answer")))?;
        if !v["error"].is_null() {
            return Err(http(v["error"].to_string()));
        }
        Ok(v["result"].clone())
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| http(format!("timed out after {} s", timeout.as_secs())))?
}
