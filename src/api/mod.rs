//! The operator's local JSON API: HTTP/1 on a Unix socket in the data directory (mode 0600, so
//! only the box's own user can use it). Every CLI command goes through it; the CLI never opens
//! the stores itself, so it works while the daemon holds them.
//!
//! Adding an endpoint: a handler in [`handlers`], a line in [`handlers::route`], a command in
//! `cli/`, and a test in `tests/cli.rs`.

pub mod client;
pub mod dev;
mod disputes;
pub mod handlers;
mod orders;
pub mod page;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use crate::config::Settings;
use crate::lightning::LdkNode;
use crate::store::Store;

/// Socket file name inside the data directory.
pub const SOCKET_FILE: &str = "admin.sock";
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// What the handlers can reach.
pub struct ApiContext {
    /// The Lightning node.
    pub lightning: Arc<LdkNode>,
    /// The store (read-only use).
    pub store: Store,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The engine, for the operator's admin actions (disputes, solvers).
    pub engine: crate::engine::Engine,
    /// The playground's trader wallets (empty unless running as `mostro-box dev`).
    pub dev_wallets: dev::DevWallets,
    /// Effective settings.
    pub settings: Arc<Settings>,
    /// The node's npub.
    pub npub: String,
    /// When the box started.
    pub started: Instant,
    /// Where the status page listens.
    pub status_page: std::net::SocketAddr,
    /// Open WebSocket connections on the relay, for `/metrics`.
    pub websockets: Arc<std::sync::atomic::AtomicUsize>,
}

/// An API failure: an HTTP status and one line for the operator.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400: the operator's input is wrong.
    pub fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 500: the box failed.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.to_string(),
        }
    }
}

/// Binds the socket at `<data_dir>/admin.sock` (replacing a stale one) with mode 0600.
pub fn bind(data_dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(SOCKET_FILE);
    // A socket file left by a crash: nobody can be listening, because the store lock taken
    // before this point guarantees that no other box runs on this data directory.
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

/// Serves the API until the task is aborted.
pub async fn serve(listener: UnixListener, ctx: Arc<ApiContext>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("api: accept: {e}");
                continue;
            }
        };
        let ctx = ctx.clone();
        // The socket's mode already keeps other users out; this holds even if someone loosens
        // it (a `chmod` to share the box, a careless backup restore).
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let peer = stream.peer_cred().map(|c| c.uid()).ok();
        if !matches!(peer, Some(uid) if uid == me || uid == 0) {
            tracing::warn!("api: refused a connection from uid {peer:?}: not the box's user");
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_| async move {
                    Ok::<_, std::convert::Infallible>(reply(Err(ApiError {
                        status: StatusCode::FORBIDDEN,
                        message: format!(
                            "only the box's own user (uid {me}) may use this socket: run the command as that user, e.g. sudo -u mostro-box mostro-box ..."
                        ),
                    })))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            continue;
        }
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(ctx.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    ctx: Arc<ApiContext>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(Err(ApiError::bad("request body too large")))),
    };
    let input = if body.is_empty() {
        Ok(serde_json::Value::Null)
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("bad JSON: {e}")))
    };
    let result = match input {
        Ok(input) => handlers::route(&ctx, &method, &path, &query, input).await,
        Err(e) => Err(e),
    };
    Ok(reply(result))
}

fn reply(result: Result<serde_json::Value, ApiError>) -> Response<Full<Bytes>> {
    let (status, body) = match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (e.status, serde_json::json!({ "error": e.message })),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts")
}
