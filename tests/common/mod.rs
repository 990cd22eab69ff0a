//! Shared test harness: start a regtest bitcoind, start a box on it (in this process or as the
//! real binary), make Lightning wallets for traders, and make traders that talk to the box over
//! a real WebSocket with mostro-core's own wrap/unwrap.

#![allow(dead_code)]

pub mod lnurl;
pub mod process;
pub mod service;
pub mod trade;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mostro_box::config::Settings;
use mostro_box::node::{self, Running};
use mostro_box::regtest::{self, Bitcoind};
use mostro_core::prelude::*;
use nostr_sdk::prelude::{
    Client, Event, Filter, Keys, Kind, PublicKey, RelayPoolNotification, Timestamp,
};
use tokio::time::Instant;

/// Default time a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh data directory, under one folder per test process in the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = run_dir().join(format!("{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// This test process's folder. The folders of test processes that have ended are removed the
/// first time it is asked for: a failed run's data stays for a look until the next run, and a
/// machine that runs the suite all day does not fill its disk (each bitcoind leaves 18 MB).
fn run_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join("mostro-box-tests");
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        base.join(std::process::id().to_string())
    })
}

/// A free loopback port.
pub fn free_port() -> u16 {
    regtest::free_port().unwrap()
}

/// A regtest bitcoind of the test's own (killed when dropped), with the chain at height 1.
/// The executable comes from `BITCOIND_EXE` or `.cache/bitcoind` (which `.ci/run` fills).
pub async fn start_chain() -> Arc<Bitcoind> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/bitcoind");
    let exe = regtest::find_or_provision_bitcoind(&cache).expect("a regtest bitcoind");
    let chain = Bitcoind::start(&exe, &temp_dir("bitcoind")).await.unwrap();
    chain.mine(1).await.unwrap();
    Arc::new(chain)
}

/// Settings overrides for a box on `port` whose Lightning node uses `chain`.
pub fn base_overrides(port: u16, chain: &Bitcoind) -> Vec<String> {
    let mut o = vec![
        format!("relay.listen=127.0.0.1:{port}"),
        format!("relay.public_url=ws://127.0.0.1:{port}"),
        "mostro.fiat_currencies_accepted=[\"USD\",\"VES\",\"EUR\"]".into(),
        // A price API that answers nothing: tests that need prices start their own stub.
        "price.api_url=http://127.0.0.1:9".into(),
    ];
    o.extend(mostro_box::cli::regtest_overrides(chain).unwrap());
    o
}

impl Drop for TestBox {
    /// Stops the Lightning node while the test's runtime still runs (ldk-node asserts in debug
    /// builds when it is stopped from a runtime that is shutting down).
    fn drop(&mut self) {
        self.running.lightning.stop();
    }
}

/// A box running inside the test process, on its own regtest chain.
pub struct TestBox {
    pub dir: PathBuf,
    pub url: String,
    pub running: Running,
    pub settings: Settings,
    pub chain: Arc<Bitcoind>,
}

impl TestBox {
    pub async fn start(extra: &[&str]) -> Self {
        let chain = start_chain().await;
        Self::start_on(chain, extra).await
    }

    /// A new box on an existing chain.
    pub async fn start_on(chain: Arc<Bitcoind>, extra: &[&str]) -> Self {
        let dir = temp_dir("box");
        node::init(&dir, None).unwrap();
        Self::start_in(dir, chain, extra).await
    }

    pub async fn start_in(dir: PathBuf, chain: Arc<Bitcoind>, extra: &[&str]) -> Self {
        Self::start_layered(dir, chain, extra, None).await
    }

    /// A box whose engine sees its Lightning node through `layer` (faults at that boundary).
    pub async fn start_layered(
        dir: PathBuf,
        chain: Arc<Bitcoind>,
        extra: &[&str],
        layer: Option<node::LightningLayer>,
    ) -> Self {
        // `RUST_LOG=mostro_box=debug cargo test ...` shows the box's logs with a test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let port = free_port();
        let mut o = base_overrides(port, &chain);
        o.extend(extra.iter().map(|s| s.to_string()));
        let settings = Settings::load(&dir, Vec::<(String, String)>::new(), &o).unwrap();
        let running = node::start_layered(&dir, settings.clone(), layer)
            .await
            .unwrap();
        Self {
            dir,
            url: format!("ws://127.0.0.1:{port}"),
            running,
            settings,
            chain,
        }
    }

    /// The box's Lightning node.
    pub fn ln(&self) -> &Arc<ldk_node::Node> {
        self.running.lightning.node()
    }

    pub fn pubkey(&self) -> PublicKey {
        self.running.pubkey
    }
}

/// A box with a channel from alice (who pays hold invoices: the seller) to it and one from it
/// to bob (who gets paid: the buyer). `push_sats` go to the far side of each channel at open,
/// so both sides have an output from the start and later balance changes are exact.
pub struct Market {
    pub b: TestBox,
    pub alice: Arc<ldk_node::Node>,
    pub bob: Arc<ldk_node::Node>,
}

pub async fn market(extra: &[&str], push_sats: u64) -> Market {
    market_on(TestBox::start(extra).await, push_sats).await
}

/// [`market`] around a box already started (on a data directory of the test's choosing).
pub async fn market_on(b: TestBox, push_sats: u64) -> Market {
    let alice = wallet(&b.chain, "alice");
    let bob = wallet(&b.chain, "bob");
    regtest::fund(&b.chain, &[b.ln(), &alice, &bob], 1)
        .await
        .unwrap();
    regtest::open_channel(&b.chain, &alice, b.ln(), 2_000_000, push_sats)
        .await
        .unwrap();
    regtest::open_channel(&b.chain, b.ln(), &bob, 2_000_000, push_sats)
        .await
        .unwrap();
    Market { b, alice, bob }
}

/// The real binary, for crash tests.
pub struct BoxProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl BoxProcess {
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Starts `mostro-box run` on `dir` (which must be initialised) and waits for its relay.
    pub async fn spawn(dir: &Path, port: u16, chain: &Bitcoind, extra: &[String]) -> Self {
        Self::spawn_crashing(dir, port, chain, extra, None).await
    }

    /// As [`BoxProcess::spawn`], set to die at a fault-injection point (`MOSTRO_BOX_CRASH_AT`).
    pub async fn spawn_crashing(
        dir: &Path,
        port: u16,
        chain: &Bitcoind,
        extra: &[String],
        crash_at: Option<&str>,
    ) -> Self {
        let env: Vec<(&str, &str)> = crash_at
            .map(|p| vec![("MOSTRO_BOX_CRASH_AT", p)])
            .unwrap_or_default();
        Self::spawn_env(dir, port, chain, extra, &env, crash_at.is_none()).await
    }

    /// Starts the binary with extra environment; waits for its relay and admin socket if `wait`.
    pub async fn spawn_env(
        dir: &Path,
        port: u16,
        chain: &Bitcoind,
        extra: &[String],
        env: &[(&str, &str)],
        wait: bool,
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mostro-box"));
        cmd.arg("--data-dir").arg(dir).arg("run");
        cmd.envs(env.iter().copied());
        for o in base_overrides(port, chain).iter().chain(extra) {
            cmd.arg("--set").arg(o);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("box.log"))
            .unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let p = Self {
            child,
            dir: dir.to_path_buf(),
            port,
        };
        let mut p = p;
        if !wait {
            // A box set to crash may reach its crash point before the relay is even up.
            return p;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "box exited with {status} while starting: see {}/box.log",
                    dir.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "box did not start: see {}/box.log",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while !dir.join(mostro_box::api::SOCKET_FILE).exists() {
            assert!(
                Instant::now() < deadline,
                "no admin socket: see {}/box.log",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    /// Waits (up to a minute) for the process to die on its own; true if it aborted.
    pub async fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return !status.success();
            }
            assert!(Instant::now() < deadline, "the box did not die");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for BoxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which transport a trader speaks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wire {
    V1,
    V2,
}

impl Wire {
    pub fn transport(self) -> Transport {
        match self {
            Wire::V1 => mostro_box::protocol::GIFT_WRAP,
            Wire::V2 => mostro_box::protocol::DIRECT,
        }
    }
}

/// A trader: an identity, trade keys by index, and a WebSocket client to the box.
pub struct Trader {
    pub identity: Keys,
    pub full_privacy: bool,
    pub wire: Wire,
    pub node: PublicKey,
    pub client: Client,
    by_index: Mutex<HashMap<i64, Keys>>,
    listening: Arc<Mutex<Vec<Keys>>>,
    inbox: Arc<Mutex<Vec<(PublicKey, Message)>>>,
    next_request: Mutex<u64>,
    next_index: Mutex<i64>,
}

impl Trader {
    pub async fn new(url: &str, node: PublicKey, wire: Wire, full_privacy: bool) -> Self {
        let client = Client::default();
        client.add_relay(url).await.unwrap();
        client.connect().await;
        client.wait_for_connection(WAIT).await;
        let t = Self {
            identity: Keys::generate(),
            full_privacy,
            wire,
            node,
            client,
            by_index: Mutex::new(HashMap::new()),
            listening: Arc::default(),
            inbox: Arc::default(),
            next_request: Mutex::new(1),
            next_index: Mutex::new(1),
        };
        let mut notes = t.client.notifications();
        let keys = t.listening.clone();
        let inbox = t.inbox.clone();
        tokio::spawn(async move {
            while let Ok(n) = notes.recv().await {
                if let RelayPoolNotification::Event { event, .. } = n {
                    let candidates = keys.lock().unwrap().clone();
                    for k in candidates {
                        if let Ok(Some(u)) = unwrap_incoming(&event, &k).await {
                            inbox.lock().unwrap().push((k.public_key(), u.message));
                            break;
                        }
                    }
                }
            }
        });
        t
    }

    /// The trade keys for `index` (the identity itself in full privacy), subscribed to.
    pub async fn trade_keys(&self, index: i64) -> Keys {
        let keys = if self.full_privacy {
            self.identity.clone()
        } else {
            self.by_index
                .lock()
                .unwrap()
                .entry(index)
                .or_insert_with(Keys::generate)
                .clone()
        };
        let new = {
            let mut l = self.listening.lock().unwrap();
            if l.iter().any(|k| k.public_key() == keys.public_key()) {
                false
            } else {
                l.push(keys.clone());
                true
            }
        };
        if new {
            let f = Filter::new()
                .kinds([Kind::PrivateDirectMessage, Kind::GiftWrap])
                .pubkey(keys.public_key());
            self.client.subscribe(f, None).await.unwrap();
        }
        keys
    }

    /// Takes the next trade index (1, 2, ...).
    pub fn take_index(&self) -> i64 {
        let mut i = self.next_index.lock().unwrap();
        let v = *i;
        *i += 1;
        v
    }

    fn take_request_id(&self) -> u64 {
        let mut r = self.next_request.lock().unwrap();
        let v = *r;
        *r += 1;
        v
    }

    /// Wraps a message as this trader's client would, without sending it.
    pub async fn wrap(&self, msg: &Message, index: i64) -> Event {
        let trade = self.trade_keys(index).await;
        let identity = if self.full_privacy {
            &trade
        } else {
            &self.identity
        };
        wrap_message_with(
            self.wire.transport(),
            msg,
            identity,
            &trade,
            self.node,
            WrapOptions::default(),
        )
        .await
        .unwrap()
    }

    /// Sends an event and returns whether the relay accepted it.
    pub async fn publish(&self, ev: &Event) -> Result<(), String> {
        match self.client.send_event(ev).await {
            Ok(out) if !out.success.is_empty() => Ok(()),
            Ok(out) => Err(format!("{:?}", out.failed)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends `action` about order `id` with `payload` from trade key `index`; returns request id.
    pub async fn send(
        &self,
        index: i64,
        id: Option<uuid::Uuid>,
        action: Action,
        payload: Option<Payload>,
    ) -> u64 {
        let rid = self.take_request_id();
        let ti = if self.full_privacy { None } else { Some(index) };
        let msg = match action {
            Action::LastTradeIndex | Action::RestoreSession => {
                let mut m = Message::new_restore(None);
                if let Message::Restore(k) = &mut m {
                    k.action = action;
                    k.request_id = Some(rid);
                }
                m
            }
            _ => Message::new_order(id, Some(rid), ti, action, payload),
        };
        let ev = self.wrap(&msg, index).await;
        self.publish(&ev).await.unwrap();
        rid
    }

    /// A new order from a fresh trade index; returns (index, request id).
    pub async fn new_order(&self, order: SmallOrder) -> (i64, u64) {
        let index = self.take_index();
        let rid = self
            .send(index, None, Action::NewOrder, Some(Payload::Order(order)))
            .await;
        (index, rid)
    }

    /// Waits for a message to trade key `index` with `request_id` (or any message when `None`).
    pub async fn reply(&self, index: i64, request_id: Option<u64>) -> Message {
        let to = self.trade_keys(index).await.public_key();
        self.wait_for(|k, m| {
            k == &to
                && (request_id.is_none() || m.get_inner_message_kind().request_id == request_id)
        })
        .await
        .unwrap_or_else(|| panic!("no reply to request {request_id:?} within {WAIT:?}"))
    }

    /// Waits until a received message matches, removing it from the inbox.
    /// Whether a message already received matches `f` (no waiting: the node answers in order,
    /// so what came before a message just awaited is in already).
    pub fn received(&self, f: impl Fn(&PublicKey, &Message) -> bool) -> bool {
        self.inbox.lock().unwrap().iter().any(|(k, m)| f(k, m))
    }

    pub async fn wait_for(&self, f: impl Fn(&PublicKey, &Message) -> bool) -> Option<Message> {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let mut inbox = self.inbox.lock().unwrap();
                if let Some(pos) = inbox.iter().position(|(k, m)| f(k, m)) {
                    return Some(inbox.remove(pos).1);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The same trader on a fresh connection (after the box restarted): same identity, same
    /// trade keys, every subscription made again.
    pub async fn reopen(&self, url: &str) -> Trader {
        let mut t = Trader::new(url, self.node, self.wire, self.full_privacy).await;
        t.identity = self.identity.clone();
        *t.by_index.lock().unwrap() = self.by_index.lock().unwrap().clone();
        *t.next_index.lock().unwrap() = *self.next_index.lock().unwrap();
        *t.next_request.lock().unwrap() = *self.next_request.lock().unwrap() + 100;
        let indexes: Vec<i64> = t.by_index.lock().unwrap().keys().copied().collect();
        for i in indexes {
            t.trade_keys(i).await;
        }
        t
    }

    /// Waits for a message with `action` to trade key `index` (removing it from the inbox).
    pub async fn expect(&self, index: i64, action: Action) -> Message {
        let to = self.trade_keys(index).await.public_key();
        let want = action.clone();
        self.wait_for(move |k, m| k == &to && m.get_inner_message_kind().action == want)
            .await
            .unwrap_or_else(|| {
                let seen: Vec<String> = self
                    .inbox
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, m)| {
                        let k = m.get_inner_message_kind();
                        format!("{} {:?}", k.action, cant_do(m))
                    })
                    .collect();
                panic!("no {action} to trade key {index} within {WAIT:?}; inbox has {seen:?}")
            })
    }

    /// Asserts that nothing arrives for trade key `index`. The box handles requests in the
    /// order it accepted them and answers in that order, so once the answer to a later request
    /// (a sentinel from a fresh key) is in, anything for `index` would be in too.
    pub async fn assert_silent(&self, index: i64) {
        let to = self.trade_keys(index).await.public_key();
        let sentinel = self.take_index();
        let rid = self
            .send(sentinel, None, Action::LastTradeIndex, None)
            .await;
        self.reply(sentinel, Some(rid)).await;
        let inbox = self.inbox.lock().unwrap();
        assert!(
            !inbox.iter().any(|(k, _)| k == &to),
            "unexpected message: {:?}",
            inbox.iter().find(|(k, _)| k == &to)
        );
    }

    /// The live 38383 revision of an order on the relay.
    pub async fn order_event(&self, id: uuid::Uuid) -> Option<Event> {
        let f = Filter::new()
            .kind(Kind::Custom(NOSTR_ORDER_EVENT_KIND))
            .author(self.node)
            .identifier(id.to_string());
        let events = self.client.fetch_events(f, WAIT).await.ok()?;
        events.into_iter().max_by_key(|e| e.created_at)
    }

    /// Polls until the node has published a rating (38384) for `rated`.
    pub async fn wait_rating(&self, rated: &PublicKey) -> Event {
        self.wait_event(NOSTR_RATING_EVENT_KIND, &rated.to_hex(), |_| true)
            .await
    }

    /// Polls until the node's addressable event of `kind` with `d` satisfies `ok`.
    pub async fn wait_event(&self, kind: u16, d: &str, ok: impl Fn(&Event) -> bool) -> Event {
        let f = Filter::new()
            .kind(Kind::Custom(kind))
            .author(self.node)
            .identifier(d);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(events) = self.client.fetch_events(f.clone(), WAIT).await {
                if let Some(ev) = events.into_iter().max_by_key(|e| e.created_at) {
                    if ok(&ev) {
                        return ev;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no event of kind {kind} for {d}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the order's 38383 `s` tag has `status`.
    pub async fn wait_order_status(&self, id: uuid::Uuid, status: &str) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(ev) = self.order_event(id).await {
                if tag_value(&ev, "s").as_deref() == Some(status) {
                    return ev;
                }
            }
            assert!(
                Instant::now() < deadline,
                "order {id} never showed s={status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// First value of the first tag named `name`.
pub fn tag_value(ev: &Event, name: &str) -> Option<String> {
    ev.tags
        .iter()
        .map(|t| t.as_slice())
        .find(|t| t.first().map(String::as_str) == Some(name))
        .and_then(|t| t.get(1).cloned())
}

/// A fixed-sats order.
pub fn fixed_order(kind: mostro_core::prelude::Kind, sats: i64, fiat: i64) -> SmallOrder {
    SmallOrder {
        kind: Some(kind),
        status: Some(Status::Pending),
        amount: sats,
        fiat_code: "USD".into(),
        fiat_amount: fiat,
        payment_method: "bank transfer,cash".into(),
        premium: 0,
        created_at: Some(0),
        ..Default::default()
    }
}

/// The action of a message.
pub fn action(m: &Message) -> Action {
    m.get_inner_message_kind().action.clone()
}

/// The cant-do reason of a message, if it is one.
pub fn cant_do(m: &Message) -> Option<CantDoReason> {
    match &m.get_inner_message_kind().payload {
        Some(Payload::CantDo(r)) => r.clone(),
        _ => None,
    }
}

/// The order in a new-order reply.
pub fn order_of(m: &Message) -> SmallOrder {
    match &m.get_inner_message_kind().payload {
        Some(Payload::Order(o)) => o.clone(),
        other => panic!("expected an order payload, got {other:?} in {m:?}"),
    }
}

/// A Yadio-compatible price API on loopback answering `body` to every request.
pub async fn price_stub(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A plain HTTP GET on loopback: (status line, body).
pub async fn http_get(port: u16, path: &str, accept: &str) -> (String, String) {
    let (status, _, body) = http_request(port, path, &format!("Accept: {accept}\r\n")).await;
    (status, body)
}

/// A GET on loopback with extra header lines (each ending in CRLF): (status line, the other
/// header lines in lower case, body).
pub async fn http_request(port: u16, path: &str, headers: &str) -> (String, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.into(), headers.to_ascii_lowercase(), body.into())
}

/// `/metrics` from the box in `dir`, as its Prometheus reads it: on the status page's port,
/// with the admin token as a bearer token.
pub async fn metrics(dir: &Path) -> String {
    let (port, token) = status_page_port_and_token(dir).await;
    let (status, _, body) = http_request(
        port,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    )
    .await;
    assert!(status.contains("200"), "{status}: {body}");
    body
}

/// The status page of the box in `dir`, as a logged-in browser gets it.
pub async fn status_page(dir: &Path) -> String {
    let (port, token) = status_page_port_and_token(dir).await;
    let (status, _, body) =
        http_request(port, "/", &format!("Cookie: mostro_box_token={token}\r\n")).await;
    assert!(status.contains("200"), "{status}: {body}");
    body
}

async fn status_page_port_and_token(dir: &Path) -> (u16, String) {
    let status = cli_ok(dir, &["--json", "status"]).await.json();
    let listen = status["status_page"]["listen"].as_str().unwrap();
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let token = std::fs::read_to_string(dir.join(mostro_box::keys::ADMIN_TOKEN_FILE)).unwrap();
    (port, token.trim().to_string())
}

/// Unix time now.
pub fn now() -> i64 {
    Timestamp::now().as_secs() as i64
}

/// A trader's own Lightning wallet: a plain ldk-node on `chain`, state in a temp dir.
pub fn wallet(chain: &Bitcoind, name: &str) -> Arc<ldk_node::Node> {
    regtest::start_wallet(&temp_dir(name), chain, name, regtest::free_port().unwrap()).unwrap()
}

/// Waits (up to a minute) for an event of `node` that `pick` accepts, acknowledging every
/// event on the way.
pub async fn wallet_event<T>(
    node: &ldk_node::Node,
    what: &str,
    mut pick: impl FnMut(&ldk_node::Event) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            let e = node.next_event_async().await;
            node.event_handled().unwrap();
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits (up to a minute) for a Lightning event of the box that `pick` accepts.
pub async fn box_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<mostro_box::lightning::LnEvent>,
    what: &str,
    mut pick: impl FnMut(&mostro_box::lightning::LnEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("box events: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Mines `n` blocks and waits until every node in `nodes` has seen them.
pub async fn mine_and_sync(chain: &Bitcoind, n: u32, nodes: &[&ldk_node::Node]) -> u32 {
    let height = chain.mine(n).await.unwrap();
    for node in nodes {
        regtest::sync_until(node, "the new blocks", |n| {
            n.status().current_best_block.height >= height
        })
        .await
        .unwrap();
    }
    height
}

/// The sats a node owns in its channels (its side of each commitment, before the commitment
/// fee that the opener pays and that moves with the feerate), read once no HTLC is in flight on
/// any channel, so it does not catch a commitment mid-update.
pub async fn ln_sats(node: &ldk_node::Node) -> u64 {
    use ldk_node::LightningBalance;
    let deadline = Instant::now() + WAIT;
    loop {
        let b = node.list_balances();
        let quiet = b.lightning_balances.iter().all(|l| match l {
            LightningBalance::ClaimableOnChannelClose {
                outbound_payment_htlc_rounded_msat,
                outbound_forwarded_htlc_rounded_msat,
                inbound_claiming_htlc_rounded_msat,
                inbound_htlc_rounded_msat,
                ..
            } => {
                outbound_payment_htlc_rounded_msat
                    + outbound_forwarded_htlc_rounded_msat
                    + inbound_claiming_htlc_rounded_msat
                    + inbound_htlc_rounded_msat
                    == 0
            }
            _ => true,
        });
        if quiet || Instant::now() > deadline {
            return b
                .lightning_balances
                .iter()
                .map(|l| match l {
                    LightningBalance::ClaimableOnChannelClose {
                        amount_satoshis,
                        transaction_fee_satoshis,
                        ..
                    } => amount_satoshis + transaction_fee_satoshis,
                    // Only open channels count here; the tests that close channels look on chain.
                    _ => 0,
                })
                .sum();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a run of the real binary printed.
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout parsed as JSON (for `--json` runs).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} / {}", self.stdout, self.stderr))
    }
}

/// Runs `mostro-box --data-dir DIR ARGS...` and collects its output.
pub async fn cli(dir: &Path, args: &[&str]) -> CliRun {
    cli_env(dir, args, &[]).await
}

/// As [`cli`], with extra environment variables.
pub async fn cli_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliRun {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mostro-box"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    CliRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// Runs a CLI command that must succeed.
pub async fn cli_ok(dir: &Path, args: &[&str]) -> CliRun {
    let run = cli(dir, args).await;
    assert!(run.ok, "`{}` failed: {}", args.join(" "), run.stderr);
    run
}

/// Runs a CLI command that must fail with one line containing `needle`.
pub async fn cli_err(dir: &Path, args: &[&str], needle: &str) {
    let run = cli(dir, args).await;
    assert!(!run.ok, "`{}` should fail: {}", args.join(" "), run.stdout);
    assert!(
        run.stderr.contains(needle),
        "`{}`: expected {needle:?} in {:?}",
        args.join(" "),
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
}
