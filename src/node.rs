//! Starting the box: store, relay, engine, price feed and discovery, wired in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nostr::{Keys, PublicKey, ToBech32};
use redb::ReadableTableMetadata;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{Settings, CONFIG_FILE};
use crate::engine::{Engine, Stopped};
use crate::keys::{self, KeyError};
use crate::lightning::seed::{Seed, SeedError, PASSPHRASE_ENV};
use crate::lightning::{LdkNode, Lightning, LightningError};
use crate::price::PriceBook;
use crate::protocol::events::{LightningFacts, NodeFacts};
use crate::publish::{self, Publisher};
use crate::relay::{http, Relay};
use crate::store::disk::DiskGuard;
use crate::store::{Store, StoreError, INBOX};

pub use crate::store::STORE_FILE;

/// A start-up failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Key file problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Seed file or passphrase problem.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The Lightning node could not start.
    #[error(transparent)]
    Lightning(#[from] LightningError),
    /// Store problem.
    #[error("{path}: {source}")]
    Store {
        /// The store file.
        path: PathBuf,
        /// Cause.
        source: StoreError,
    },
    /// Another process holds the store.
    #[error(
        "{0} is in use by another mostro-box; stop it first (never run two boxes on one data dir)"
    )]
    InUse(PathBuf),
    /// The relay's or the status page's port is taken or not allowed.
    #[error(
        "cannot listen on {addr}: {source}; set {key} in {CONFIG_FILE} or pass --set {key}=IP:PORT"
    )]
    Listen {
        /// The setting that names the address.
        key: &'static str,
        /// Address tried.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The data directory cannot be created.
    #[error("cannot create {path}: {source}")]
    DataDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// What `init` made and what it found already there.
pub struct Initialised {
    /// The node's Nostr public key.
    pub pubkey: PublicKey,
    /// The Lightning node id.
    pub ln_node_id: ldk_node::bitcoin::secp256k1::PublicKey,
    /// Whether the node key was made now (an existing one is kept).
    pub created_key: bool,
    /// Whether the seed was made now (an existing one is kept).
    pub created_seed: bool,
    /// Whether a settings file was written (an existing one is kept).
    pub wrote_config: bool,
}

/// Makes whatever the data directory lacks of the settings file, the node key and the
/// Lightning seed (protected by `seed_passphrase` if given), and keeps what it has.
///
/// Idempotent: the systemd unit, the container's entrypoint and the installer run it before
/// every start, so on an initialised directory it changes nothing and succeeds. It never
/// overwrites a secret, and it refuses a damaged key or seed (and a passphrase that does not
/// fit the seed) instead of starting beside them.
pub fn init(data_dir: &Path, seed_passphrase: Option<&str>) -> Result<Initialised, StartError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    // The directory holds the key and the trade records: the operator's eyes only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
        |source| StartError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        },
    )?;
    let key_path = data_dir.join(keys::NODE_KEY_FILE);
    let seed_path = data_dir.join(crate::lightning::seed::SEED_FILE);
    let created_key = !key_path.exists();
    let keys = if created_key {
        keys::create(data_dir)?
    } else {
        keys::load(data_dir)?
    };
    let created_seed = !seed_path.exists();
    let ln_node_id = if created_seed {
        Seed::create(data_dir, seed_passphrase)?.node_id()
    } else {
        Seed::existing_node_id(data_dir, seed_passphrase)?
    };
    let config = data_dir.join(CONFIG_FILE);
    let wrote_config = !config.exists();
    if wrote_config {
        std::fs::write(&config, Settings::template()).map_err(|source| StartError::DataDir {
            path: config.clone(),
            source,
        })?;
    }
    Ok(Initialised {
        pubkey: keys.public_key(),
        ln_node_id,
        created_key,
        created_seed,
        wrote_config,
    })
}

/// A running box.
pub struct Running {
    /// Where the relay listens.
    pub addr: SocketAddr,
    /// The node's public key.
    pub pubkey: PublicKey,
    /// The relay handle (tests and the bench query it).
    pub relay: Relay,
    /// The engine (tests drive timers through it).
    pub engine: Engine,
    /// Market prices (tests set them).
    pub prices: PriceBook,
    /// The Lightning node.
    pub lightning: Arc<LdkNode>,
    /// The playground's trader wallets, served by the operator API (`mostro-box dev` fills it).
    pub dev_wallets: crate::api::dev::DevWallets,
    tasks: Vec<JoinHandle<()>>,
    engine_task: JoinHandle<Stopped>,
}

impl Running {
    /// Runs until `shutdown` completes, or the engine stops (a store failure, a panic, the
    /// escrow worker gone), then stops every task and the Lightning node, which persists its
    /// state before returning. An engine that stopped is an error: the process must exit
    /// non-zero so that its supervisor starts it again.
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Stopped> {
        let r = tokio::select! {
            r = &mut self.engine_task => Err(match r {
                Ok(stopped) => stopped,
                Err(e) if e.is_panic() => {
                    Stopped::Panicked(crate::store::panic_message(&*e.into_panic()))
                }
                Err(e) => Stopped::Panicked(e.to_string()),
            }),
            _ = shutdown => Ok(()),
        };
        self.stop();
        r
    }

    /// Stops every task and the Lightning node (which persists its state first).
    pub fn stop(self) {
        self.engine_task.abort();
        for t in self.tasks {
            t.abort();
        }
        self.lightning.stop();
    }
}

/// Starts the box from `data_dir` with `settings`.
///
/// The Lightning seed's passphrase, if it has one, comes from `MOSTRO_BOX_SEED_PASSPHRASE`.
pub async fn start(data_dir: &Path, settings: Settings) -> Result<Running, StartError> {
    start_layered(data_dir, settings, None).await
}

/// Wraps the Lightning node the engine sees. Tests put faults at this boundary (an error
/// after a payment left, say); the production binary starts with none.
pub type LightningLayer = Box<dyn FnOnce(Arc<LdkNode>) -> Arc<dyn Lightning> + Send>;

/// [`start`], with the engine's Lightning node wrapped by `layer`.
pub async fn start_layered(
    data_dir: &Path,
    settings: Settings,
    layer: Option<LightningLayer>,
) -> Result<Running, StartError> {
    let keys = keys::load(data_dir)?;
    let seed = Seed::load(data_dir, std::env::var(PASSPHRASE_ENV).ok())?;
    crate::backup::remove_stale_snapshots(data_dir);
    let path = data_dir.join(STORE_FILE);
    let store = Store::open(&path).map_err(|source| match source {
        StoreError::Redb(redb::Error::DatabaseAlreadyOpen) => StartError::InUse(path.clone()),
        source => StartError::Store {
            path: path.clone(),
            source,
        },
    })?;
    let store_err = |source| StartError::Store {
        path: path.clone(),
        source,
    };
    let settings = Arc::new(settings);
    let lightning = LdkNode::start(
        data_dir,
        &settings.lightning,
        &seed,
        store.clone(),
        std::time::Duration::from_secs(10),
    )
    .await?;
    let inbox = Arc::new(Notify::new());
    let publisher = Publisher::start(settings.nostr.publish_relays.clone(), keys.clone());
    let disk = DiskGuard::new(data_dir, settings.mostro.min_free_disk_mb);
    let relay = Relay::new(
        &settings,
        &keys,
        &store,
        inbox.clone(),
        publisher,
        disk.clone(),
    )
    .await
    .map_err(store_err)?;
    let listen = settings.relay.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen {
            key: "relay.listen",
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");

    let mut relays = vec![settings.relay.public_url.clone()];
    relays.extend(settings.nostr.publish_relays.iter().cloned());
    let facts = Arc::new(NodeFacts {
        pubkey: keys.public_key(),
        relays,
        network: settings.lightning.network_tag(),
    });
    let prices = PriceBook::new(settings.price.max_staleness_seconds);
    let engine = Engine::new(crate::engine::Parts {
        store: store.clone(),
        relay: relay.clone(),
        keys: keys.clone(),
        settings: settings.clone(),
        facts: facts.clone(),
        prices: prices.clone(),
        inbox,
        ln: match layer {
            Some(layer) => layer(lightning.clone()),
            None => lightning.clone(),
        },
        disk: disk.clone(),
    });
    let engine_task = tokio::spawn(engine.clone().run());

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(disk.watch()));
    tasks.push(tokio::spawn(relay.clone().keep_tidy()));
    tasks.push(tokio::spawn(prices.clone().keep_fresh(
        settings.price.api_url.clone(),
        settings.price.update_interval_seconds,
    )));
    let started = Instant::now();
    let dev_wallets = crate::api::dev::DevWallets::default();
    let npub = keys.public_key().to_bech32().expect("bech32 npub");
    let (api_listener, api_path) =
        crate::api::bind(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.join(crate::api::SOCKET_FILE),
            source,
        })?;
    tracing::info!("operator API on {}", api_path.display());
    let page_listen = settings.status.listen;
    let page_listener =
        TcpListener::bind(page_listen)
            .await
            .map_err(|source| StartError::Listen {
                key: "status.listen",
                addr: page_listen,
                source,
            })?;
    let status_page = page_listener
        .local_addr()
        .expect("bound listener has an address");
    let token = if settings.status.require_token {
        Some(Arc::new(crate::keys::admin_token(data_dir)?))
    } else {
        None
    };
    tracing::info!(
        "status page on http://{status_page}/ (`mostro-box status-page` prints its link)"
    );
    let websockets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let api_ctx = Arc::new(crate::api::ApiContext {
        websockets: websockets.clone(),
        lightning: lightning.clone(),
        store: store.clone(),
        data_dir: data_dir.to_path_buf(),
        engine: engine.clone(),
        dev_wallets: dev_wallets.clone(),
        settings: settings.clone(),
        npub: npub.clone(),
        started,
        status_page,
    });
    tasks.push(tokio::spawn(crate::api::serve(
        api_listener,
        api_ctx.clone(),
    )));
    tasks.push(tokio::spawn(crate::api::page::serve(
        page_listener,
        api_ctx,
        token,
    )));
    let health_store = store.clone();
    let public_url = settings.relay.public_url.clone();
    let health: http::StatusFn = Arc::new(move || {
        let backlog = health_store
            .read()
            .ok()
            .and_then(|r| r.open_table(INBOX).ok().and_then(|t| t.len().ok()));
        serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "npub": npub,
            "relay_url": public_url,
            "uptime_seconds": started.elapsed().as_secs(),
            "inbox_backlog": backlog,
        })
    });
    let front = http::Front {
        nip11: Arc::new(nip11(&settings, &keys).to_string()),
        health,
        websockets,
    };
    tasks.push(tokio::spawn(http::serve(
        listener,
        relay.clone(),
        front,
        http::Limits::from(&settings.relay),
    )));
    tasks.push(tokio::spawn(publish::discovery(
        relay.clone(),
        keys.clone(),
        settings.clone(),
        facts,
        lightning_facts(&settings, &lightning),
    )));
    Ok(Running {
        addr,
        pubkey: keys.public_key(),
        relay,
        engine,
        prices,
        lightning,
        dev_wallets,
        tasks,
        engine_task,
    })
}

/// What the 38385 info event says about the Lightning node (the reference's `lnd_*` tags).
fn lightning_facts(settings: &Settings, ln: &LdkNode) -> LightningFacts {
    let id = ln.node_id().to_string();
    let uris = ln
        .node()
        .announcement_addresses()
        .or_else(|| ln.node().listening_addresses())
        .unwrap_or_default()
        .iter()
        .map(|a| format!("{id}@{a}"))
        .collect();
    LightningFacts {
        version: "ldk-node 0.7.1".into(),
        node_pubkey: id,
        commit_hash: String::new(),
        alias: settings.lightning.alias.clone(),
        chains: vec!["bitcoin".into()],
        networks: vec![settings.lightning.network_tag()],
        uris,
    }
}

/// The NIP-11 relay information document.
fn nip11(settings: &Settings, keys: &Keys) -> serde_json::Value {
    let m = &settings.mostro;
    let name = if m.name.trim().is_empty() {
        "mostro-box"
    } else {
        m.name.trim()
    };
    serde_json::json!({
        "name": name,
        "description": if m.about.trim().is_empty() {
            "Private relay of a Mostro P2P escrow node. It carries Mostro traffic only."
        } else {
            m.about.trim()
        },
        "pubkey": keys.public_key().to_hex(),
        "software": "mostro-box",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": [1, 11, 13, 40, 42, 44, 59, 65, 69],
        "limitation": {
            "max_message_length": settings.relay.max_event_bytes,
            "max_subscriptions": settings.relay.max_subscriptions_per_connection,
            "min_pow_difficulty": m.pow,
            "auth_required": false,
            "payment_required": false,
            "restricted_writes": true,
        },
    })
}
