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
    /// A URL a stranger gave must be https.
    #[error("{0} is not an https URL")]
    NotHttps(String),
    /// A URL a stranger gave resolves to a private, loopback or otherwise non-public address.
    #[error("{0} points at a private network address; only public services are allowed")]
    Private(String),
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
    fetch_with(&client, uri, timeout).await
}

/// One GET with `client`: the body of a 2xx answer (at most [`MAX_BODY`]) within `timeout`.
async fn fetch_with<C>(
    client: &hyper_util::client::legacy::Client<C, Empty<Bytes>>,
    uri: hyper::Uri,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
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

/// GETs a URL that a stranger gave the box (a buyer's Lightning address and the callback its
/// service names): https only, its host resolved once and every address checked to be public,
/// the connection made to exactly those addresses (no second lookup a rebinding DNS server
/// could answer differently), and no redirect followed (a 3xx is a failure). `allow_local`
/// (regtest only) permits plain http and loopback hosts, for a local test service.
pub async fn get_public(
    url: &str,
    timeout: Duration,
    allow_local: bool,
) -> Result<Vec<u8>, FetchError> {
    let uri: hyper::Uri = url.parse().map_err(|_| FetchError::Url(url.into()))?;
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Url(url.into()))?
        .trim_matches(['[', ']'])
        .to_string();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if allow_local => false,
        _ => return Err(FetchError::NotHttps(url.into())),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let resolve = tokio::net::lookup_host((host.as_str(), port));
    let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(timeout, resolve)
        .await
        .map_err(|_| FetchError::Http(format!("{host}: no DNS answer in time")))?
        .map_err(|e| FetchError::Http(format!("{host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(FetchError::Http(format!("{host}: no address")));
    }
    if addrs
        .iter()
        .any(|a| !(is_public(a.ip()) || allow_local && a.ip().is_loopback()))
    {
        return Err(FetchError::Private(host));
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(Pinned(
        std::sync::Arc::new(addrs),
    ));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    fetch_with(&client, uri, timeout).await
}

/// A resolver that answers every name with the addresses already looked up and checked.
#[derive(Clone)]
struct Pinned(std::sync::Arc<Vec<std::net::SocketAddr>>);

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Pinned {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        std::future::ready(Ok(Vec::clone(&self.0).into_iter()))
    }
}

/// Whether an address is on the public internet: not private, loopback, link-local, shared
/// (CGNAT), multicast, documentation, benchmarking or reserved, including IPv4 addresses
/// written as IPv6 (mapped, NAT64, 6to4).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 198 && o[1] == 51 && o[2] == 100)
                || (o[0] == 203 && o[1] == 0 && o[2] == 113))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[0..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible, deprecated
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local, deprecated
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
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
