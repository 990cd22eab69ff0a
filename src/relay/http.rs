//! The box's own HTTP front on the relay port: NIP-11, `GET /health`, and WebSocket upgrades
//! handed to the embedded relay.
//!
//! The box accepts sockets itself (not `LocalRelay::run`) to set `TCP_NODELAY` (without it every
//! reply waits ~40 ms for Nagle and delayed ACK) and to cap connections per IP address.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, CONNECTION, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nostr::hashes::{sha1, Hash, HashEngine};
use tokio::net::TcpListener;

use super::Relay;

/// What `/health` and NIP-11 report; filled by the caller.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The Prometheus text for `/metrics` (loopback clients only); filled by the caller.
pub type MetricsFn = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

/// What the HTTP front serves besides the relay.
#[derive(Clone)]
pub struct Front {
    /// NIP-11 document.
    pub nip11: Arc<String>,
    /// `/health`.
    pub health: StatusFn,
    /// `/metrics`.
    pub metrics: MetricsFn,
}

/// Serves until the listener fails. Each connection is its own task.
pub async fn serve(listener: TcpListener, relay: Relay, front: Front, max_per_ip: usize) {
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("relay: accept failed: {e}");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let relay = relay.clone();
        let front = front.clone();
        let per_ip = per_ip.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                handle(
                    req,
                    addr,
                    relay.clone(),
                    front.clone(),
                    per_ip.clone(),
                    max_per_ip,
                )
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("relay: connection from {addr} ended: {e}");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    addr: SocketAddr,
    relay: Relay,
    front: Front,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if is_upgrade(&req) {
        let Some(key) = req.headers().get("sec-websocket-key") else {
            return Ok(text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
        };
        let accept = accept_key(key.as_bytes());
        let ip = addr.ip();
        {
            let mut counts = per_ip.lock().expect("per-ip lock");
            let n = counts.entry(ip).or_insert(0);
            if *n >= max_per_ip {
                return Ok(text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from your address",
                ));
            }
            *n += 1;
        }
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    if let Err(e) = relay
                        .local
                        .take_connection(TokioIo::new(upgraded), addr)
                        .await
                    {
                        tracing::debug!("relay: websocket from {addr} closed: {e}");
                    }
                }
                Err(e) => tracing::debug!("relay: upgrade from {addr} failed: {e}"),
            }
            let mut counts = per_ip.lock().expect("per-ip lock");
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header"),
        );
        return Ok(resp);
    }
    let wants_nip11 = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/nostr+json"));
    Ok(match (req.method().as_str(), req.uri().path()) {
        ("GET", "/") if wants_nip11 => {
            json(StatusCode::OK, "application/nostr+json", &front.nip11)
        }
        ("GET", "/health") => json(
            StatusCode::OK,
            "application/json",
            &(front.health)().to_string(),
        ),
        ("GET", "/metrics") if addr.ip().is_loopback() => {
            let mut body = (front.metrics)().await;
            let open: usize = per_ip.lock().expect("per-ip lock").values().sum();
            body.push_str(&format!(
                "# HELP mostro_relay_connections Open WebSocket connections.\n\
                 # TYPE mostro_relay_connections gauge\nmostro_relay_connections {open}\n"
            ));
            let mut r = text(StatusCode::OK, &body);
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        ("GET", "/") => text(
            StatusCode::OK,
            "This is a Mostro node's relay. Point a Mostro client (mostro-cli, the Mostro app) at this URL.",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    })
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    let has = |name, want: &str| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains(want))
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, "websocket")
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    let mut engine = sha1::Hash::engine();
    engine.input(key);
    engine.input(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1::Hash::from_engine(engine))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    r
}

fn json(status: StatusCode, ctype: &'static str, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(ctype));
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
