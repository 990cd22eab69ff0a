//! A local regtest chain for the `dev` playground and the integration tests: a real bitcoind
//! child process, a small JSON-RPC client, and helpers that fund ldk-node wallets and open
//! channels between them. Nothing here runs on a real network.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldk_node::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use ldk_node::bitcoin::{Address, CompressedPublicKey, Network};
use ldk_node::{Builder, Node};
use serde_json::{json, Value};

/// The provisioning script, embedded so an installed binary can fetch bitcoind too.
pub const GET_BITCOIND_SCRIPT: &str = include_str!("../scripts/get-bitcoind.sh");

/// A regtest failure, worded for whoever runs the playground or the tests.
#[derive(Debug, thiserror::Error)]
pub enum RegtestError {
    /// bitcoind is missing or would not start.
    #[error("bitcoind: {0}")]
    Bitcoind(String),
    /// A JSON-RPC call failed.
    #[error("bitcoind RPC {method}: {reason}")]
    Rpc {
        /// The method called.
        method: String,
        /// What went wrong.
        reason: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The Lightning wallet refused.
    #[error("Lightning wallet: {0}")]
    Wallet(String),
}

/// Finds a bitcoind: `BITCOIND_EXE`, then `bitcoind` on PATH, then the copy provisioned into
/// `cache` (running the provisioning script into it if needed; progress goes to stderr).
pub fn find_or_provision_bitcoind(cache: &Path) -> Result<PathBuf, RegtestError> {
    if let Some(exe) = std::env::var_os("BITCOIND_EXE") {
        return Ok(PathBuf::from(exe));
    }
    let cached = cache.join("bin/bitcoind");
    if cached.exists() {
        return Ok(cached);
    }
    std::fs::create_dir_all(cache).map_err(|e| RegtestError::Bitcoind(e.to_string()))?;
    let script = cache.join("get-bitcoind.sh");
    std::fs::write(&script, GET_BITCOIND_SCRIPT)
        .map_err(|e| RegtestError::Bitcoind(e.to_string()))?;
    eprintln!(
        "Fetching a regtest bitcoind into {} (once)...",
        cache.display()
    );
    let out = Command::new("sh")
        .arg(&script)
        .arg(cache)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| RegtestError::Bitcoind(e.to_string()))?;
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    if !out.status.success() || path.is_empty() {
        return Err(RegtestError::Bitcoind(format!(
            "provisioning failed; run `sh {} {}` to see why",
            script.display(),
            cache.display()
        )));
    }
    Ok(PathBuf::from(path))
}

/// A bitcoind child process on regtest with its own data directory and free ports.
pub struct Bitcoind {
    /// The running process; `None` between [`Bitcoind::halt`] and [`Bitcoind::resume`].
    child: std::sync::Mutex<Option<Child>>,
    exe: PathBuf,
    dir: PathBuf,
    p2p_port: u16,
    /// RPC port on 127.0.0.1.
    pub rpc_port: u16,
    /// RPC user.
    pub rpc_user: String,
    /// RPC password.
    pub rpc_password: String,
    mine_to: Address,
}

impl Bitcoind {
    /// Starts `exe` on regtest with data in `dir` and waits until its RPC answers.
    pub async fn start(exe: &Path, dir: &Path) -> Result<Bitcoind, RegtestError> {
        std::fs::create_dir_all(dir).map_err(|e| RegtestError::Bitcoind(e.to_string()))?;
        let rpc_port = free_port()?;
        let p2p_port = free_port()?;
        let rpc_user = "mostro".to_string();
        let rpc_password = uuid::Uuid::new_v4().simple().to_string();
        // Coinbase rewards go to a throw-away key; wallets are funded explicitly.
        let burn = SecretKey::from_slice(&[0x42; 32]).expect("valid key");
        let pk = CompressedPublicKey(PublicKey::from_secret_key(&Secp256k1::new(), &burn));
        let this = Bitcoind {
            child: std::sync::Mutex::new(None),
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            p2p_port,
            rpc_port,
            rpc_user,
            rpc_password,
            mine_to: Address::p2wpkh(&pk, Network::Regtest),
        };
        this.resume().await?;
        Ok(this)
    }

    /// Starts the process again on the same data and ports (after [`Bitcoind::halt`]), and
    /// waits until its RPC answers.
    pub async fn resume(&self) -> Result<(), RegtestError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("-regtest")
            .arg(format!("-datadir={}", self.dir.display()))
            .arg(format!("-rpcport={}", self.rpc_port))
            .arg(format!("-port={}", self.p2p_port))
            .arg(format!("-rpcuser={}", self.rpc_user))
            .arg(format!("-rpcpassword={}", self.rpc_password))
            .args([
                "-server=1",
                "-listen=0",
                "-disablewallet=1",
                "-fallbackfee=0.00001",
                "-txindex=0",
                "-printtoconsole=0",
                "-rpcworkqueue=64",
            ])
            .args(core_policy(&self.exe))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            RegtestError::Bitcoind(format!("cannot run {}: {e}", self.exe.display()))
        })?;
        *self.child.lock().expect("child lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.rpc("getblockchaininfo", json!([])).await.is_ok() {
                return Ok(());
            }
            let exited = match self.child.lock().expect("child lock").as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                return Err(RegtestError::Bitcoind(format!(
                    "exited at start ({status}); see {}/regtest/debug.log",
                    self.dir.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(RegtestError::Timeout("bitcoind RPC".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops bitcoind cleanly (so its chain survives), killing it if it has not exited within
    /// 30 s. [`Bitcoind::resume`] starts it again.
    pub async fn halt(&self) {
        let _ = self.rpc("stop", json!([])).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let running = {
                let mut child = self.child.lock().expect("child lock");
                let running = matches!(child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
                if !running {
                    *child = None;
                }
                running
            };
            if !running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(mut child) = self.child.lock().expect("child lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Calls a JSON-RPC method and returns its `result`.
    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value, RegtestError> {
        let url = format!("http://127.0.0.1:{}/", self.rpc_port);
        crate::fetch::json_rpc(
            &url,
            &self.rpc_user,
            &self.rpc_password,
            method,
            params,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| RegtestError::Rpc {
            method: method.into(),
            reason: e.to_string(),
        })
    }

    /// How many transactions wait in the mempool.
    pub async fn mempool_size(&self) -> Result<usize, RegtestError> {
        let pool = self.rpc("getrawmempool", json!([])).await?;
        Ok(pool.as_array().map_or(0, |a| a.len()))
    }

    /// Mines `n` blocks (rewards to a throw-away key) and returns the new height.
    pub async fn mine(&self, n: u32) -> Result<u32, RegtestError> {
        self.mine_to(n, &self.mine_to.to_string()).await?;
        self.height().await
    }

    /// Mines `n` blocks paying their rewards to `address`.
    pub async fn mine_to(&self, n: u32, address: &str) -> Result<(), RegtestError> {
        // Large batches in chunks, so one RPC never runs into the client's time-out.
        let mut left = n;
        while left > 0 {
            let step = left.min(100);
            self.rpc("generatetoaddress", json!([step, address]))
                .await?;
            left -= step;
        }
        Ok(())
    }

    /// The chain height.
    pub async fn height(&self) -> Result<u32, RegtestError> {
        let v = self.rpc("getblockcount", json!([])).await?;
        Ok(v.as_u64().unwrap_or(0) as u32)
    }

    /// Stops bitcoind cleanly, for good (its chain survives for the next run).
    pub async fn stop(self) {
        self.halt().await;
    }

    /// Settings that point an ldk-node at this bitcoind.
    pub fn chain_source(&self) -> (String, u16, String, String) {
        (
            "127.0.0.1".into(),
            self.rpc_port,
            self.rpc_user.clone(),
            self.rpc_password.clone(),
        )
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        if let Ok(Some(child)) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Relay policy as Bitcoin Core has it, when the binary is Bitcoin Knots (which
/// scripts/get-bitcoind.sh fetches): LDK sweeps a closed channel's anchor into a transaction
/// whose only output is an OP_RETURN, which Core relays and Knots refuses by default
/// ("bare-datacarrier"), so a force-closed channel never finished resolving on regtest.
fn core_policy(exe: &Path) -> Vec<&'static str> {
    let version = Command::new(exe).arg("-version").output();
    let knots = version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Knots"));
    if knots {
        vec!["-permitbaredatacarrier=1"]
    } else {
        Vec::new()
    }
}

/// Asks the kernel to kill a child when this thread's process goes away (even by `kill -9`), so
/// a crashed playground or test leaves no bitcoind behind.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A free TCP port on 127.0.0.1 (released before returning, so there is a small race).
pub fn free_port() -> Result<u16, RegtestError> {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Ports are taken from below the kernel's ephemeral range (32768 and up), so a port handed
    // out here is not grabbed by some outgoing connection before its user binds it. Each process
    // starts at its own offset and never hands out the same port twice.
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = (std::process::id() % SPAN as u32) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (base.wrapping_add(n.wrapping_mul(7))) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(RegtestError::Bitcoind("no free local port".into()))
}

/// Starts a plain ldk-node wallet on regtest (a trader's wallet, or the playground's liquidity
/// peer) with its state in `dir`, listening on 127.0.0.1:`port` and announced under `alias`.
pub fn start_wallet(
    dir: &Path,
    bitcoind: &Bitcoind,
    alias: &str,
    port: u16,
) -> Result<Arc<Node>, RegtestError> {
    start_node(dir, bitcoind, alias, port, |_| {})
}

/// As [`start_wallet`], with `customize` applied to the builder first (to make a node that
/// also plays a Lightning service provider, say).
pub fn start_node(
    dir: &Path,
    bitcoind: &Bitcoind,
    alias: &str,
    port: u16,
    customize: impl FnOnce(&mut Builder),
) -> Result<Arc<Node>, RegtestError> {
    let err = |e: String| RegtestError::Wallet(e);
    let mut b = Builder::new();
    customize(&mut b);
    b.set_network(Network::Regtest);
    b.set_storage_dir_path(dir.to_string_lossy().into_owned());
    b.set_runtime(tokio::runtime::Handle::current());
    b.set_log_facade_logger();
    let (host, rpc_port, user, password) = bitcoind.chain_source();
    b.set_chain_source_bitcoind_rpc(host, rpc_port, user, password);
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    b.set_listening_addresses(vec![crate::lightning::ldk::socket_address(listen)])
        .map_err(|e| err(e.to_string()))?;
    b.set_node_alias(alias.into())
        .map_err(|e| err(e.to_string()))?;
    let node = b.build().map_err(|e| err(e.to_string()))?;
    node.start().map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(node))
}

/// Gives each node `blocks` coinbase rewards (50 BTC each on a fresh chain), matures them and
/// waits until every wallet sees its funds.
pub async fn fund(bitcoind: &Bitcoind, nodes: &[&Node], blocks: u32) -> Result<(), RegtestError> {
    let mut before = Vec::new();
    for node in nodes {
        let addr = node
            .onchain_payment()
            .new_address()
            .map_err(|e| RegtestError::Wallet(e.to_string()))?;
        before.push(node.list_balances().total_onchain_balance_sats);
        bitcoind.mine_to(blocks, &addr.to_string()).await?;
    }
    bitcoind.mine(101).await?;
    for (node, before) in nodes.iter().zip(before) {
        sync_until(node, "funds to confirm", |n| {
            n.list_balances().spendable_onchain_balance_sats > before
        })
        .await?;
    }
    Ok(())
}

/// Syncs `node` with the chain and polls `done` until true (60 s at most).
pub async fn sync_until(
    node: &Node,
    what: &str,
    done: impl Fn(&Node) -> bool,
) -> Result<(), RegtestError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = tokio::task::block_in_place(|| node.sync_wallets());
        if done(node) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(RegtestError::Timeout(what.into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens an announced channel from `from` to `to` of `sats` (pushing `push_sats` to `to`), mines
/// it deep enough to be announced, and waits until both sides can use it.
pub async fn open_channel(
    bitcoind: &Bitcoind,
    from: &Node,
    to: &Node,
    sats: u64,
    push_sats: u64,
) -> Result<(), RegtestError> {
    let addr = to
        .listening_addresses()
        .and_then(|a| a.first().cloned())
        .ok_or_else(|| RegtestError::Wallet("peer has no listening address".into()))?;
    let before_from = from.list_channels().len();
    let before_to = to.list_channels().len();
    from.open_announced_channel(to.node_id(), addr, sats, Some(push_sats * 1000), None)
        .map_err(|e| RegtestError::Wallet(format!("open channel: {e}")))?;
    // Wait for the funding transaction to reach the mempool before mining it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if bitcoind.mempool_size().await? > 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(RegtestError::Timeout(
                "funding transaction in the mempool".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bitcoind.mine(6).await?;
    for (node, before) in [(from, before_from), (to, before_to)] {
        sync_until(node, "the channel to be usable", |n| {
            n.list_channels().iter().filter(|c| c.is_usable).count() > before
        })
        .await?;
    }
    Ok(())
}
