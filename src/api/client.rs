//! The CLI's side of the API: one request over the Unix socket, JSON in and out.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::SOCKET_FILE;

/// Why a CLI request failed, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listening.
    #[error("mostro-box is not running on {0} (no admin socket): start it with `mostro-box run` (or `mostro-box dev`), or pass the right --data-dir")]
    NotRunning(String),
    /// This user may not use the socket (another user runs the box).
    #[error("permission denied on {0}: the box runs as another user; run the command as that user (the owner of the data directory), e.g. `sudo -u mostro-box mostro-box --data-dir DIR ...`")]
    NotYours(String),
    /// The daemon refused the request; its message names the problem.
    #[error("{0}")]
    Refused(String),
    /// Transport failure.
    #[error("talking to mostro-box failed: {0}")]
    Io(String),
}

/// Sends `method path` with an optional JSON body to the daemon of `data_dir`.
pub async fn call(
    data_dir: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    let socket = data_dir.join(SOCKET_FILE);
    let stream = UnixStream::connect(&socket).await.map_err(|e| {
        let dir = data_dir.display().to_string();
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => ClientError::NotYours(dir),
            _ => ClientError::NotRunning(dir),
        }
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mostro-box")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| ClientError::Io(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    let ok = resp.status().is_success();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?
        .to_bytes();
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Io(e.to_string()))?;
    if ok {
        Ok(value)
    } else {
        Err(ClientError::Refused(
            value["error"]
                .as_str()
                .unwrap_or("request refused")
                .to_string(),
        ))
    }
}
