//! The box's own HTTP front on the relay port: NIP-11, `GET /health`, and WebSocket upgrades
//! handed to the embedded relay.
//!
//! The box accepts sockets itself (not `LocalRelay::run`) to set `TCP_NODELAY` (without it every
//! reply waits ~40 ms for Nagle and delayed ACK) and to give each address its limits: open
//! connections (every TCP connection, upgraded or not), new connections a minute, and bytes
//! read a second. Behind a reverse proxy the operator names (`relay.trusted_proxies`), the
//! address is the one the proxy forwards; from anywhere else `X-Forwarded-For` is ignored.

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

use super::throttle::{address_key, Bucket, Throttled};
use super::Relay;

/// Time a client has to send its request headers (also before a WebSocket upgrade).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `/health` and NIP-11 report; filled by the caller.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the HTTP front serves besides the relay.
#[derive(Clone)]
pub struct Front {
    /// NIP-11 document.
    pub nip11: Arc<String>,
    /// `/health`.
    pub health: StatusFn,
    /// Open WebSocket connections, kept up to date here for `/metrics` (served on the status
    /// page's port, behind the admin token).
    pub websockets: Arc<std::sync::atomic::AtomicUsize>,
}

/// What one IP address may do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// WebSocket connections open at once.
    pub open: usize,
    /// New connections per minute.
    pub per_minute: u32,
    /// Bytes read per second, all its connections together.
    pub bytes_per_second: u32,
    /// The largest event: an address can always send one at once.
    pub max_event_bytes: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<Vec<IpAddr>>,
}

impl From<&crate::config::RelaySettings> for Limits {
    fn from(r: &crate::config::RelaySettings) -> Self {
        Self {
            open: r.max_connections_per_ip,
            per_minute: r.connections_per_minute_per_ip,
            bytes_per_second: r.bytes_per_second_per_ip,
            max_event_bytes: r.max_event_bytes,
            trusted_proxies: Arc::new(r.trusted_proxies.clone()),
        }
    }
}

/// One address's connections and budgets. Kept after its last connection closes, so closing
/// and reopening does not refill them.
struct Peer {
    open: usize,
    connects: Bucket,
    bytes: Arc<Mutex<Bucket>>,
}

type Peers = Arc<Mutex<HashMap<IpAddr, Peer>>>;

impl Limits {
    fn proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.contains(&ip)
    }
}

/// Serves until the listener fails. Each connection is its own task.
pub async fn serve(listener: TcpListener, relay: Relay, front: Front, limits: Limits) {
    let peers: Peers = Arc::default();
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("relay: accept failed: {e}");
                continue;
            }
        };
        // Over its budget of new or open connections, an address is hung up on before a byte
        // is read. A trusted proxy carries many traders: they are counted at the upgrade, by
        // the address it forwards.
        let key = address_key(addr.ip());
        let counted = !limits.proxy(addr.ip());
        if counted && connect(&peers, key, &limits).is_err() {
            continue;
        }
        let _ = socket.set_nodelay(true);
        let relay = relay.clone();
        let front = front.clone();
        let peers = peers.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let service = {
                let peers = peers.clone();
                hyper::service::service_fn(move |req| {
                    handle(
                        req,
                        addr,
                        relay.clone(),
                        front.clone(),
                        peers.clone(),
                        limits.clone(),
                    )
                })
            };
            // A socket that never finishes its request headers is closed: idle sockets would
            // otherwise hold a descriptor each for ever.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("relay: connection from {addr} ended: {e}");
            }
            if counted {
                disconnect(&peers, key);
            }
        });
    }
}

/// The trader's address: the peer's, or for a connection from a trusted reverse proxy the last
/// address in its `X-Forwarded-For`, which the proxy itself added. Per-address limits then
/// apply per trader, not to the proxy as a whole.
fn client_ip(headers: &hyper::HeaderMap, addr: SocketAddr, limits: &Limits) -> IpAddr {
    if !limits.proxy(addr.ip()) {
        return addr.ip();
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok())
        .unwrap_or(addr.ip())
}

/// Counts a new connection from `key`, and returns its byte budget; an error if the address
/// has opened too many lately or has too many open.
fn connect(
    peers: &Peers,
    key: IpAddr,
    limits: &Limits,
) -> Result<Arc<Mutex<Bucket>>, &'static str> {
    let mut peers = peers.lock().expect("peers lock");
    if peers.len() > 100_000 {
        // Bound memory under a spray of addresses: forget the quiet ones.
        peers.retain(|_, p| {
            p.open > 0 || !p.connects.is_idle() || !p.bytes.lock().expect("budget").is_idle()
        });
    }
    let per_minute = limits.per_minute as f64;
    let rate = limits.bytes_per_second as f64;
    let peer = peers.entry(key).or_insert_with(|| Peer {
        open: 0,
        connects: Bucket::new(per_minute / 60.0, (per_minute / 4.0).max(10.0)),
        bytes: Arc::new(Mutex::new(Bucket::new(
            rate,
            (4.0 * rate).max(2.0 * limits.max_event_bytes as f64),
        ))),
    });
    if peer.open >= limits.open {
        return Err("too many connections from your address");
    }
    if !peer.connects.take(1.0) {
        return Err("too many new connections from your address; wait a moment");
    }
    peer.open += 1;
    Ok(peer.bytes.clone())
}

/// A connection counted by [`connect`] has closed.
fn disconnect(peers: &Peers, key: IpAddr) {
    if let Some(p) = peers.lock().expect("peers lock").get_mut(&key) {
        p.open = p.open.saturating_sub(1);
    }
}

/// The byte budget of an address already counted.
fn budget(peers: &Peers, key: IpAddr) -> Option<Arc<Mutex<Bucket>>> {
    peers
        .lock()
        .expect("peers lock")
        .get(&key)
        .map(|p| p.bytes.clone())
}

async fn handle(
    req: Request<Incoming>,
    addr: SocketAddr,
    relay: Relay,
    front: Front,
    peers: Peers,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if is_upgrade(&req) {
        let Some(key) = req.headers().get("sec-websocket-key") else {
            return Ok(text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
        };
        let accept = accept_key(key.as_bytes());
        // Through a trusted proxy, the forwarded address is counted now; otherwise the TCP
        // connection was counted when it was accepted.
        let via_proxy = limits.proxy(addr.ip());
        let ip = client_ip(req.headers(), addr, &limits);
        let key = address_key(ip);
        let budget = if via_proxy {
            connect(&peers, key, &limits)
        } else {
            budget(&peers, key).ok_or("unknown address")
        };
        let budget = match budget {
            Ok(b) => b,
            Err(why) => return Ok(text(StatusCode::TOO_MANY_REQUESTS, why)),
        };
        let addr = SocketAddr::new(ip, addr.port());
        let websockets = front.websockets.clone();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            websockets.fetch_add(1, Relaxed);
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    // An event with the ["EVENT", ...] around it, or a REQ with filters of about
                    // that size (a thousand ids is 66 KB).
                    let max = 2 * limits.max_event_bytes as u64 + 4096;
                    let stream =
                        Throttled::new(TokioIo::new(upgraded), budget).with_message_limit(max);
                    if let Err(e) = relay.local.take_connection(stream, addr).await {
                        tracing::debug!("relay: websocket from {addr} closed: {e}");
                    }
                }
                Err(e) => tracing::debug!("relay: upgrade from {addr} failed: {e}"),
            }
            websockets.fetch_sub(1, Relaxed);
            if via_proxy {
                disconnect(&peers, key);
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
    use super::*;

    fn limits(trusted: &[&str]) -> Limits {
        Limits {
            open: 2,
            per_minute: 600,
            bytes_per_second: 1 << 20,
            max_event_bytes: 1 << 15,
            trusted_proxies: Arc::new(trusted.iter().map(|t| t.parse().unwrap()).collect()),
        }
    }

    #[test]
    fn only_a_named_proxy_speaks_for_its_clients() {
        let mut h = hyper::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let proxied = limits(&["127.0.0.1"]);
        // The last hop is the one the proxy added; earlier ones the client could forge.
        assert_eq!(
            client_ip(&h, local, &proxied),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // From anywhere else the header is the client's word, not evidence: a Tor onion
        // service on this machine, for one, forwards no address.
        assert_eq!(client_ip(&h, remote, &proxied), remote.ip());
        assert_eq!(client_ip(&h, local, &limits(&[])), local.ip());
        let other_loopback: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        assert_eq!(client_ip(&h, other_loopback, &proxied), other_loopback.ip());
    }

    #[test]
    fn every_open_connection_counts() {
        let peers: Peers = Arc::default();
        let l = limits(&[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(connect(&peers, ip, &l).is_ok());
        assert!(connect(&peers, ip, &l).is_ok());
        assert!(connect(&peers, ip, &l).is_err(), "a third open connection");
        disconnect(&peers, ip);
        assert!(connect(&peers, ip, &l).is_ok());
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
