//! The real binary under a service manager's protocol: it tells `NOTIFY_SOCKET` it is ready
//! only once it serves, and on SIGTERM it says it is stopping and exits cleanly.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

/// The next notification on `sock` (up to a minute).
async fn next(sock: &UnixDatagram) -> String {
    let sock = sock.try_clone().unwrap();
    tokio::task::spawn_blocking(move || {
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification within a minute");
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_ready_and_stops_cleanly_on_sigterm() {
    let chain = start_chain().await;
    let dir = temp_dir("service");
    mostro_box::node::init(&dir, None).unwrap();
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let port = free_port();
    let path = notify.to_string_lossy().to_string();
    let mut b =
        BoxProcess::spawn_env(&dir, port, &chain, &[], &[("NOTIFY_SOCKET", &path)], false).await;

    let ready = next(&sock).await;
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(ready.contains("npub1"), "{ready}");
    // Ready means serving: the relay and the operator API answer at once.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok());
    cli_ok(&dir, &["status"]).await;

    let pid = b.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopping = next(&sock).await;
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = b.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(dir.join("box.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}
