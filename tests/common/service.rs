//! The box started as an operator's machine starts it: the command lines of the systemd unit
//! and of the container image's entrypoint, read from the files that ship, run against a copy
//! of the binary installed as the installer installs it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Where the unit and the image expect the binary.
const INSTALLED: &str = "/usr/local/bin/mostro-box";

/// One way of starting the box, as its files describe it.
pub struct EntryPoint {
    /// "systemd unit" or "container entrypoint", for messages.
    pub name: &'static str,
    env: Vec<(String, String)>,
    /// Commands that must succeed before the start (the unit's `ExecStartPre`).
    before: Vec<Vec<String>>,
    start: Vec<String>,
    /// How long the manager waits after SIGTERM before it kills.
    pub stop_grace: Duration,
    /// The unit is `Type=notify`: ready is what the box tells `NOTIFY_SOCKET`.
    notify: bool,
}

/// Copies the test build to `bin_dir/mostro-box` with mode 0755, replacing what is there, as
/// `install -m 0755` in the installer and the image's `COPY` do.
pub fn install(bin_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(bin_dir).unwrap();
    let to = bin_dir.join("mostro-box");
    let tmp = bin_dir.join(".mostro-box.new");
    std::fs::copy(env!("CARGO_BIN_EXE_mostro-box"), &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A rename, as `install` does: the running file is never written in place.
    std::fs::rename(&tmp, &to).unwrap();
    to
}

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// systemd's time spans as the unit uses them ("3min", "15s", "90").
fn span(v: &str) -> Duration {
    let v = v.trim();
    if let Some(m) = v.strip_suffix("min").or_else(|| v.strip_suffix('m')) {
        Duration::from_secs(m.parse::<u64>().unwrap() * 60)
    } else {
        Duration::from_secs(v.trim_end_matches('s').parse().unwrap())
    }
}

impl EntryPoint {
    /// `systemd/mostro-box.service` with the binary at `bin` and its data in `data_dir`.
    pub fn systemd_unit(bin: &Path, data_dir: &Path) -> Self {
        let text = repo_file("systemd/mostro-box.service");
        let command = |line: &str| -> Vec<String> {
            assert!(
                !line.starts_with('-'),
                "a failing `{line}` must fail the start"
            );
            line.split_whitespace()
                .map(|w| w.replace(INSTALLED, &bin.to_string_lossy()))
                .collect()
        };
        let mut e = EntryPoint {
            name: "systemd unit",
            env: Vec::new(),
            before: Vec::new(),
            start: Vec::new(),
            stop_grace: Duration::from_secs(90),
            notify: false,
        };
        for line in text.lines().map(str::trim) {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "Environment" => {
                    let (k, v) = value.split_once('=').unwrap();
                    e.env.push((k.to_string(), v.to_string()));
                }
                "ExecStartPre" => e.before.push(command(value)),
                "ExecStart" => e.start = command(value),
                "TimeoutStopSec" => e.stop_grace = span(value),
                "Type" => e.notify = value == "notify",
                _ => {}
            }
        }
        e.set_data_dir(data_dir);
        assert!(!e.start.is_empty(), "the unit has an ExecStart");
        e
    }

    /// The image's `ENV` and `ENTRYPOINT` (`appliance/Containerfile`, which the multi-stage
    /// `appliance/Dockerfile` must match), with the binary found in `bin_dir` (as on the image's
    /// PATH) and its data in `data_dir`; the grace period is the Umbrel app's.
    pub fn container(bin_dir: &Path, data_dir: &Path) -> Self {
        let text = repo_file("appliance/Containerfile");
        let entrypoint = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("ENTRYPOINT "))
                .map(str::to_string)
        };
        assert_eq!(
            entrypoint(&text),
            entrypoint(&repo_file("appliance/Dockerfile")),
            "both image definitions start the box the same way"
        );
        let mut e = EntryPoint {
            name: "container entrypoint",
            env: vec![(
                "PATH".into(),
                format!("{}:/usr/bin:/bin", bin_dir.display()),
            )],
            before: Vec::new(),
            start: Vec::new(),
            stop_grace: Duration::from_secs(180),
            notify: false,
        };
        for line in text.lines().map(str::trim) {
            if let Some(kv) = line.strip_prefix("ENV ") {
                let (k, v) = kv.split_once('=').unwrap();
                if k != "PATH" {
                    e.env.push((k.to_string(), v.to_string()));
                }
            } else if let Some(json) = line.strip_prefix("ENTRYPOINT ") {
                e.start = serde_json::from_str(json).unwrap();
            }
        }
        let compose = repo_file("appliance/umbrel/mostro-box/docker-compose.yml");
        if let Some(v) = compose
            .lines()
            .find_map(|l| l.trim().strip_prefix("stop_grace_period:"))
        {
            e.stop_grace = span(v);
        }
        e.set_data_dir(data_dir);
        assert!(!e.start.is_empty(), "the image has an ENTRYPOINT");
        e
    }

    fn set_data_dir(&mut self, data_dir: &Path) {
        let var = self
            .env
            .iter_mut()
            .find(|(k, _)| k == "MOSTRO_BOX_DATA_DIR")
            .unwrap_or_else(|| panic!("{} sets MOSTRO_BOX_DATA_DIR", self.name));
        var.1 = data_dir.to_string_lossy().to_string();
    }

    /// Runs the start: the commands before it (each must succeed), then the box itself with
    /// `settings` as environment (as an operator's drop-in or `-e` flags would set them), its
    /// output appended to `log`.
    pub async fn start(&self, settings: &[(String, String)], log: &Path) -> Service {
        let output = || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            (Stdio::from(f.try_clone().unwrap()), Stdio::from(f))
        };
        let command = |argv: &[String]| {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..])
                .env_clear()
                .envs(self.env.iter().cloned())
                .envs(settings.iter().cloned())
                .stdin(Stdio::null());
            if let Ok(v) = std::env::var("RUST_LOG") {
                c.env("RUST_LOG", v);
            }
            c
        };
        for argv in &self.before {
            let (out, err) = output();
            let status = command(argv)
                .stdout(out)
                .stderr(err)
                .status()
                .await
                .unwrap();
            assert!(
                status.success(),
                "{}: `{}` failed ({status}): see {}",
                self.name,
                argv.join(" "),
                log.display()
            );
        }
        let mut c = command(&self.start);
        let notify = self.notify.then(|| {
            // Short: a socket path has a 108-byte limit.
            let path = log.with_file_name(format!(
                "n{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ));
            let sock = UnixDatagram::bind(&path).unwrap();
            c.env("NOTIFY_SOCKET", &path);
            sock
        });
        let (out, err) = output();
        let child = c.stdout(out).stderr(err).spawn().unwrap();
        Service {
            name: self.name,
            child,
            notify,
            log: log.to_path_buf(),
            stop_grace: self.stop_grace,
        }
    }
}

/// The box as its manager runs it.
pub struct Service {
    name: &'static str,
    child: Child,
    notify: Option<UnixDatagram>,
    log: PathBuf,
    stop_grace: Duration,
}

impl Service {
    /// Waits until the box is ready as its manager sees it: `READY=1` for the unit, then (for
    /// both) `/health` answering on the relay port. Fails at once if the process exits.
    pub async fn ready(&mut self, relay_port: u16) {
        let deadline = Instant::now() + Duration::from_secs(120);
        if let Some(sock) = self.notify.as_ref().map(|s| s.try_clone().unwrap()) {
            sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            loop {
                if let Ok(n) = sock.recv(&mut buf) {
                    if String::from_utf8_lossy(&buf[..n]).starts_with("READY=1") {
                        break;
                    }
                }
                self.still_running(deadline);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", relay_port))
                .await
                .is_ok()
            {
                let (_, body) = super::http_get(relay_port, "/health", "application/json").await;
                if body.contains("\"status\":\"ok\"") {
                    return;
                }
            }
            self.still_running(deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn still_running(&mut self, deadline: Instant) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{}: the box exited with {status} while starting: see {}",
                self.name,
                self.log.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{}: not ready in time: see {}",
            self.name,
            self.log.display()
        );
    }

    /// Stops it as its manager does (SIGTERM, then the grace period) and returns how it exited;
    /// panics if it had to be killed.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        match tokio::time::timeout(self.stop_grace, self.child.wait()).await {
            Ok(status) => {
                if let Some(sock) = &self.notify {
                    // A notify unit says it is stopping, so systemd shows it while LDK saves.
                    let mut buf = [0u8; 4096];
                    let mut said = Vec::new();
                    while let Ok(n) = sock.recv(&mut buf) {
                        said.push(String::from_utf8_lossy(&buf[..n]).to_string());
                    }
                    assert!(
                        said.iter().any(|m| m.starts_with("STOPPING=1")),
                        "{}: no STOPPING=1 on SIGTERM, only {said:?}",
                        self.name
                    );
                }
                status.unwrap()
            }
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "{}: still running {:?} after SIGTERM: see {}",
                    self.name,
                    self.stop_grace,
                    self.log.display()
                );
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `section.key=value` settings as the `MOSTRO_BOX_SECTION_KEY` variables an operator would
/// give a service.
pub fn settings_env(overrides: &[String]) -> Vec<(String, String)> {
    overrides
        .iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap();
            (
                format!("MOSTRO_BOX_{}", k.replace('.', "_").to_ascii_uppercase()),
                v.to_string(),
            )
        })
        .collect()
}
