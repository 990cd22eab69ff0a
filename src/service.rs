//! Living under a service manager: systemd's readiness protocol (`sd_notify`, for
//! `Type=notify` units) and the signals that ask for a graceful stop.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the socket named by `NOTIFY_SOCKET`;
//! without that variable (not started by systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1\nSTATUS=...`) to systemd, if systemd is listening.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let path = path.to_string_lossy();
        if let Some(name) = path.strip_prefix('@') {
            // An abstract socket (systemd's usual choice).
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &*path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd ({state:?}): {e}");
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM, which is how systemd, Docker and Umbrel ask a
/// service to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
