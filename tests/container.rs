//! The container image's life cycle as an operator's engine runs it: the image built by
//! `appliance/build-image.sh` from this build's binary, started with a volume, healthy, stopped
//! by SIGTERM within the grace period, and started again as a new container on the same
//! volume with the same node key.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::service::settings_env;
use common::*;

/// `podman ARGS...` with this host's container settings; panics with its output on failure.
fn podman(conf: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(args)
        .output()
        .expect("podman (apt install podman runc mmdebstrap)");
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The node's npub from `/health`, once it answers (panics if the container exits first).
async fn healthy(conf: &std::path::Path, name: &str, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            let (_, body) = http_get(port, "/health", "application/json").await;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                if v["status"] == "ok" {
                    return v["npub"].as_str().unwrap().to_string();
                }
            }
        }
        let state = podman(conf, &["inspect", "--format", "{{.State.Status}}", name]);
        assert_eq!(
            state,
            "running",
            "{name} stopped while starting: {}",
            podman(conf, &["logs", name])
        );
        assert!(Instant::now() < deadline, "{name} not healthy in 2 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root with podman, runc and mmdebstrap, which .ci/run installs and runs it with \
            (cargo test --test container -- --ignored)"]
async fn image_starts_stops_on_sigterm_and_starts_again_on_its_volume() {
    let chain = start_chain().await;
    let root = temp_dir("container");
    // This machine: runc (crun refuses hybrid cgroups) and limits under the hard ones.
    let conf = root.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let tag = format!("localhost/mostro-box:test-{id}");
    let built = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/appliance/build-image.sh"
    ))
    .env("CONTAINERS_CONF", &conf)
    .args([&tag, env!("CARGO_BIN_EXE_mostro-box")])
    .output()
    .unwrap();
    assert!(
        built.status.success(),
        "build-image.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let volume = format!("mostro-box-test-{id}");
    podman(&conf, &["volume", "create", &volume]);
    let port = free_port();
    // The host's network, so the box reaches the test's bitcoind on loopback.
    let mut run = vec![
        "run".to_string(),
        "-d".into(),
        "--network".into(),
        "host".into(),
        "-v".into(),
        format!("{volume}:/data"),
    ];
    for (k, v) in settings_env(&base_overrides(port, &chain)) {
        run.push("-e".into());
        run.push(format!("{k}={v}"));
    }
    // The Umbrel app's grace period.
    let grace = Duration::from_secs(180);
    let mut npubs = Vec::new();
    for start in ["first", "second"] {
        let name = format!("mostro-box-{start}-{id}");
        let mut args: Vec<&str> = run.iter().map(String::as_str).collect();
        args.extend(["--name", &name, &tag]);
        podman(&conf, &args);
        npubs.push(healthy(&conf, &name, port).await);
        let stopping = Instant::now();
        podman(&conf, &["stop", "-t", &grace.as_secs().to_string(), &name]);
        let took = stopping.elapsed();
        let exit = podman(
            &conf,
            &["inspect", "--format", "{{.State.ExitCode}}", &name],
        );
        let logs = podman(&conf, &["logs", &name]);
        assert_eq!(exit, "0", "{start} start: exit code {exit}: {logs}");
        assert!(took < grace, "{start} start: SIGTERM took {took:?}");
        assert!(logs.contains("stopping"), "{start} start: {logs}");
        if start == "second" {
            // The entrypoint's `init` found the volume initialised and kept it.
            assert!(logs.contains("[kept]"), "{logs}");
        }
        podman(&conf, &["rm", &name]);
    }
    assert_eq!(npubs[0], npubs[1], "the node key changed between starts");
    podman(&conf, &["volume", "rm", &volume]);
    podman(&conf, &["rmi", &tag]);
}
