//! Settings: one schema, layered TOML < `MOSTRO_BOX_*` environment < command-line flags.
//!
//! Names and defaults follow the reference Mostro daemon wherever it has the same setting, so an
//! operator moving from `mostrod` recognises every knob. Everything is validated at start-up:
//! a bad value stops the box with one line naming the key, the value and what is allowed.

mod template;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the settings file inside the data directory.
pub const CONFIG_FILE: &str = "mostro-box.toml";
/// Smallest `lightning.escrow_deadline_margin_blocks`: the Lightning guard's blocks
/// (`lightning::hold::GUARD_BLOCKS`, 6) and 6 more, so a trade is wound up (a dispute for one
/// whose fiat was sent) well before the guard gives the seller the sats back.
pub const MIN_ESCROW_MARGIN_BLOCKS: u32 = 12;

/// Prefix of every environment variable that overrides a setting.
pub const ENV_PREFIX: &str = "MOSTRO_BOX_";

/// A setting that could not be read or is out of range; the message is meant for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file does not parse.
    #[error("cannot read {path}: {reason} (fix the file or delete it and run `mostro-box init`)")]
    Unreadable {
        /// The file that failed.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A key has a value outside what is allowed.
    #[error("setting {key} = {value} is not allowed: {allowed}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// The offending value as given.
        value: String,
        /// What would be accepted.
        allowed: String,
    },
    /// An override did not name a known setting or had no `=`.
    #[error("{0}")]
    BadOverride(String),
}

/// Every setting of the box. Sections mirror the reference daemon's `settings.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Trading rules and node profile.
    pub mostro: MostroSettings,
    /// The embedded Lightning node and the hold invoice windows.
    pub lightning: LightningSettings,
    /// The embedded relay.
    pub relay: RelaySettings,
    /// Public relays the node's public events are copied to.
    pub nostr: NostrSettings,
    /// Market price source.
    pub price: PriceSettings,
    /// The operator's status page.
    pub status: StatusSettings,
}

/// `[mostro]`: trading rules, limits, timers and the node's public profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MostroSettings {
    /// Total fee fraction of a trade, split half buyer / half seller (reference default 0).
    pub fee: f64,
    /// Largest order in sats.
    pub max_order_amount: i64,
    /// Smallest order (and payout) in sats.
    pub min_payment_amount: i64,
    /// Routing fee cap of a buyer payout, as a fraction of the amount (payouts of 1000 sats or
    /// less may spend max(1 %, 10 sats), as in the reference).
    pub max_routing_fee: f64,
    /// Lifetime of a pending order when the maker gives none.
    pub expiration_hours: i64,
    /// Longest lifetime a maker may ask for.
    pub max_expiration_days: i64,
    /// How long a taken order may wait for an invoice or a payment.
    pub expiration_seconds: i64,
    /// NIP-13 proof of work required on incoming messages.
    pub pow: u8,
    /// Proof of work required from a trade key that has no active trade (defaults to `pow`).
    pub pow_first_contact: Option<u8>,
    /// Fiat codes accepted; empty accepts all.
    pub fiat_currencies_accepted: Vec<String>,
    /// Largest number of ids in one `orders` request.
    pub max_orders_per_response: usize,
    /// Free disk space (MB) under which new orders are refused, so trades under way can still
    /// finish and nothing is ever written to a full disk.
    pub min_free_disk_mb: u64,
    /// Pending orders one identity may have on the book at once (a new order past it gets
    /// `cant-do`). Full-privacy traders use a new identity per order, so only proof of work
    /// (`pow`) limits them.
    pub max_pending_orders_per_identity: usize,
    /// Seconds between kind-10002 relay list publications.
    pub publish_relays_interval: u64,
    /// Seconds between kind-38385 info publications.
    pub publish_mostro_info_interval: u64,
    /// Seconds between rating event flushes.
    pub user_rates_sent_interval_seconds: u64,
    /// Protocol version advertised in 38385 (`2` = NIP-44 direct; both transports are accepted).
    pub protocol_version: u8,
    /// Profile name (kind 0 and the `y` tag).
    pub name: String,
    /// Profile description (kind 0).
    pub about: String,
    /// Profile picture URL (kind 0).
    pub picture: String,
    /// Profile website (kind 0).
    pub website: String,
}

/// The Bitcoin network the box runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Real money (`"bitcoin"`, or `"mainnet"` as the reference daemon says).
    #[serde(alias = "mainnet")]
    Bitcoin,
    /// Testnet (3).
    Testnet,
    /// Signet.
    Signet,
    /// A local regtest chain (tests and the playground).
    Regtest,
}

impl Network {
    /// As the settings file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    /// As the reference daemon publishes it (`mainnet` for bitcoin).
    pub fn tag(self) -> &'static str {
        match self {
            Network::Bitcoin => "mainnet",
            other => other.name(),
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the Lightning node learns about the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainSource {
    /// An Esplora HTTP API (a public one by default).
    Esplora,
    /// An Electrum server.
    Electrum,
    /// The operator's own bitcoind, over RPC.
    Bitcoind,
}

impl std::fmt::Display for ChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChainSource::Esplora => "esplora",
            ChainSource::Electrum => "electrum",
            ChainSource::Bitcoind => "bitcoind",
        })
    }
}

/// `[lightning]`: the embedded LDK node, its chain source and the hold invoice windows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LightningSettings {
    /// The Bitcoin network.
    pub network: Network,
    /// Where the Lightning node accepts peer connections.
    pub listen: SocketAddr,
    /// Node alias shown in the Lightning network graph (only announced with public channels).
    pub alias: String,
    /// Where the node learns about the chain.
    pub chain_source: ChainSource,
    /// Esplora API URL; empty means the public default for the network.
    pub esplora_url: String,
    /// Electrum server, e.g. `ssl://electrum.blockstream.info:50002`.
    pub electrum_url: String,
    /// bitcoind RPC `host:port` (Umbrel and full-node owners).
    pub bitcoind_rpc_address: String,
    /// bitcoind RPC user.
    pub bitcoind_rpc_user: String,
    /// bitcoind RPC password.
    pub bitcoind_rpc_password: String,
    /// Rapid Gossip Sync server; empty means gossip from peers.
    pub rgs_url: String,
    /// LSPS2 service for just-in-time inbound channels: node id, `host:port`, optional token.
    pub lsps2_node_id: String,
    /// Address of the LSPS2 service.
    pub lsps2_address: String,
    /// Access token of the LSPS2 service, if it wants one.
    pub lsps2_token: String,
    /// Seconds a hold invoice stays payable (advertised to clients).
    pub hold_invoice_expiration_window: u64,
    /// Blocks a held payment stays claimable once the seller pays it.
    pub hold_invoice_cltv_delta: u32,
    /// Buyer invoices must not expire before now + this many seconds.
    pub invoice_expiration_window: u64,
    /// Largest `min_final_cltv_expiry_delta` accepted in a buyer's invoice.
    pub max_final_cltv_expiry_delta: u64,
    /// Payout attempts before the buyer is asked for a new invoice.
    pub payment_attempts: u32,
    /// Seconds between payout attempts.
    pub payment_retries_interval: u32,
    /// Seconds between reminders to a buyer whose payout waits for a new invoice.
    pub invoice_reminder_interval: u32,
    /// Blocks before a held payment's deadline at which an unfinished trade is wound up: an
    /// active trade is cancelled (seller refunded), a fiat-sent one goes to dispute.
    pub escrow_deadline_margin_blocks: u32,
}

/// `[relay]`: the embedded relay and its abuse limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Address the relay (and its HTTP endpoints) listen on.
    pub listen: SocketAddr,
    /// URL traders use to reach the relay; advertised in 38383 `source`, 10002 and NIP-11.
    pub public_url: String,
    /// Largest event accepted, in bytes of JSON.
    pub max_event_bytes: usize,
    /// Events one IP address may publish per minute.
    pub events_per_minute_per_ip: u32,
    /// WebSocket connections one IP address may hold open at once.
    pub max_connections_per_ip: usize,
    /// New WebSocket connections one IP address may open per minute.
    pub connections_per_minute_per_ip: u32,
    /// Bytes per second the relay reads from one IP address (all its connections together);
    /// beyond it, the address waits.
    pub bytes_per_second_per_ip: u32,
    /// Subscriptions one connection may hold open at once (so one address holds at most
    /// `max_connections_per_ip × max_subscriptions_per_connection`).
    pub max_subscriptions_per_connection: usize,
    /// Open WebSocket connections in total.
    pub max_connections: usize,
    /// Requests to the node accepted and not yet handled; past it the relay asks senders to
    /// retry shortly. Bounds the disk and the wait a flood can cause.
    pub max_inbox_backlog: u64,
    /// Private messages kept for traders (the node's replies, chats between counterparties):
    /// past it the oldest go. Bounds the memory a flood of chats can take.
    pub max_private_messages: usize,
    /// Days private messages are kept.
    pub private_message_retention_days: u64,
    /// Reverse proxies in front of the relay (e.g. `["127.0.0.1"]` for Caddy or nginx on this
    /// machine): only their `X-Forwarded-For` names the trader the per-address limits count.
    /// Empty: the header is ignored (a Tor onion service, for one, forwards no address).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// `[nostr]`: public relays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NostrSettings {
    /// Public relays that receive copies of the node's public events (orders, info, relay list).
    pub publish_relays: Vec<String>,
}

/// `[price]`: a Yadio-compatible market price API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PriceSettings {
    /// Base URL; the box calls `{api_url}/exrates/BTC`.
    pub api_url: String,
    /// Seconds between refreshes.
    pub update_interval_seconds: u64,
    /// Prices older than this are not used (`price_too_stale`).
    pub max_staleness_seconds: u64,
}

/// `[status]`: the operator's status page (read-only, behind the admin token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// Where the page listens. Kept off the relay's port so that forwarding the relay to the
    /// internet does not also publish the operator's page.
    pub listen: SocketAddr,
    /// Ask for the admin token. Only turn this off behind a proxy that logs the operator in
    /// itself (Umbrel's app proxy does).
    pub require_token: bool,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7778)),
            require_token: true,
        }
    }
}

impl Default for MostroSettings {
    fn default() -> Self {
        Self {
            fee: 0.0,
            max_order_amount: 1_000_000,
            min_payment_amount: 100,
            max_routing_fee: 0.002,
            expiration_hours: 24,
            max_expiration_days: 15,
            expiration_seconds: 900,
            pow: 0,
            pow_first_contact: None,
            fiat_currencies_accepted: ["USD", "EUR", "ARS", "CUP"].map(String::from).to_vec(),
            max_orders_per_response: 10,
            min_free_disk_mb: 100,
            max_pending_orders_per_identity: 10,
            publish_relays_interval: 60,
            publish_mostro_info_interval: 300,
            user_rates_sent_interval_seconds: 3600,
            protocol_version: 2,
            name: String::new(),
            about: String::new(),
            picture: String::new(),
            website: String::new(),
        }
    }
}

impl Default for LightningSettings {
    fn default() -> Self {
        Self {
            network: Network::Bitcoin,
            listen: SocketAddr::from(([0, 0, 0, 0], 9735)),
            alias: "mostro-box".into(),
            chain_source: ChainSource::Esplora,
            esplora_url: String::new(),
            electrum_url: String::new(),
            bitcoind_rpc_address: "127.0.0.1:8332".into(),
            bitcoind_rpc_user: String::new(),
            bitcoind_rpc_password: String::new(),
            rgs_url: String::new(),
            lsps2_node_id: String::new(),
            lsps2_address: String::new(),
            lsps2_token: String::new(),
            hold_invoice_expiration_window: 300,
            hold_invoice_cltv_delta: 144,
            invoice_expiration_window: 3600,
            max_final_cltv_expiry_delta: 432,
            payment_attempts: 3,
            payment_retries_interval: 60,
            invoice_reminder_interval: 86_400,
            escrow_deadline_margin_blocks: 24,
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7777)),
            public_url: "ws://127.0.0.1:7777".into(),
            max_event_bytes: 32 * 1024,
            events_per_minute_per_ip: 600,
            max_connections_per_ip: 50,
            connections_per_minute_per_ip: 120,
            bytes_per_second_per_ip: 64 * 1024,
            max_subscriptions_per_connection: 20,
            max_connections: 2000,
            max_inbox_backlog: 10_000,
            max_private_messages: 20_000,
            private_message_retention_days: 30,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for PriceSettings {
    fn default() -> Self {
        Self {
            api_url: "https://api.yadio.io".into(),
            update_interval_seconds: 300,
            max_staleness_seconds: 1800,
        }
    }
}

impl LightningSettings {
    /// The network name as the reference daemon publishes it (`mainnet` for bitcoin).
    pub fn network_tag(&self) -> String {
        self.network.tag().into()
    }

    /// bitcoind RPC `(host, port, user, password)` when all are set.
    pub fn bitcoind_rpc(&self) -> Option<(String, u16, String, String)> {
        let (host, port) = self.bitcoind_rpc_address.rsplit_once(':')?;
        let port = port.parse().ok()?;
        if host.is_empty() || self.bitcoind_rpc_user.is_empty() {
            return None;
        }
        Some((
            host.to_string(),
            port,
            self.bitcoind_rpc_user.clone(),
            self.bitcoind_rpc_password.clone(),
        ))
    }

    /// The network as rust-bitcoin names it.
    pub fn bitcoin_network(&self) -> ldk_node::bitcoin::Network {
        use ldk_node::bitcoin::Network as N;
        match self.network {
            Network::Bitcoin => N::Bitcoin,
            Network::Testnet => N::Testnet,
            Network::Signet => N::Signet,
            Network::Regtest => N::Regtest,
        }
    }

    /// The Esplora URL to use: the configured one, or a public default for the network
    /// (a local esplora on regtest).
    pub fn esplora_url(&self) -> String {
        if !self.esplora_url.trim().is_empty() {
            return self.esplora_url.trim().to_string();
        }
        match self.network {
            Network::Bitcoin => "https://blockstream.info/api",
            Network::Testnet => "https://blockstream.info/testnet/api",
            Network::Signet => "https://mempool.space/signet/api",
            Network::Regtest => "http://127.0.0.1:3002",
        }
        .into()
    }
}

impl MostroSettings {
    /// The proof of work demanded from a trade key with no active trade.
    pub fn effective_pow_first_contact(&self) -> u8 {
        self.pow_first_contact.unwrap_or(self.pow).max(self.pow)
    }
}

impl Settings {
    /// Loads `<data_dir>/mostro-box.toml` (missing file = defaults), then applies
    /// `MOSTRO_BOX_SECTION_KEY` variables from `env`, then `section.key=value` overrides, then
    /// validates.
    pub fn load(
        data_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ConfigError::Unreadable {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Self::parse(&text, &path, env, overrides)
    }

    /// The layering of [`Settings::load`] on a file's text, without touching the disk (`path`
    /// only names the file in errors). Separate so the fuzzer can feed it.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let path = path.to_path_buf();
        let mut doc: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Unreadable {
                    path: path.clone(),
                    reason: e.message().to_string(),
                })?;
        let known = Self::known_keys();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            // DATA_DIR and LOG are read by the binary, not settings.
            if let Some(key) = known.iter().find(|k| k.replace('.', "_") == rest) {
                set_key(&mut doc, key, &value);
            }
        }
        for item in overrides {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                ConfigError::BadOverride(format!(
                    "--set {item}: expected section.key=value, e.g. --set mostro.fee=0.006"
                ))
            })?;
            let key = key.trim();
            if !known.iter().any(|k| k == key) {
                return Err(ConfigError::BadOverride(format!(
                    "--set {key}: unknown setting; known settings are listed in {CONFIG_FILE}"
                )));
            }
            set_key(&mut doc, key, value.trim());
        }
        let settings: Settings =
            toml::Value::Table(doc)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Unreadable {
                    path: path.clone(),
                    reason: e.message().to_string(),
                })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every `section.key` of the schema, from the defaults' serialisation.
    pub fn known_keys() -> Vec<String> {
        let value = toml::Value::try_from(Settings::default()).expect("defaults serialise");
        let mut keys = Vec::new();
        if let toml::Value::Table(sections) = value {
            for (section, table) in sections {
                if let toml::Value::Table(table) = table {
                    keys.extend(table.keys().map(|k| format!("{section}.{k}")));
                }
            }
        }
        // Optional keys are absent from the serialisation of their `None` default.
        keys.push("mostro.pow_first_contact".into());
        keys
    }
}

/// Puts `value` at `section.key`, reading it as a TOML value when it parses as one (numbers,
/// booleans, arrays) and as a plain string otherwise.
fn set_key(doc: &mut toml::Table, key: &str, value: &str) {
    let (section, name) = key.split_once('.').expect("known keys have a section");
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let table = doc
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = table {
        t.insert(name.to_string(), parsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        let parsed: Settings = toml::from_str(&Settings::template()).unwrap();
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn template_mentions_every_key() {
        let t = Settings::template();
        for key in Settings::known_keys() {
            let name = key.split_once('.').unwrap().1;
            assert!(
                t.contains(&format!("{name} =")),
                "{key} missing in template"
            );
        }
    }

    #[test]
    fn layering_file_env_flags() {
        let dir = tempdir();
        std::fs::write(dir.join(CONFIG_FILE), "[mostro]\nfee = 0.01\npow = 3\n").unwrap();
        let env = vec![
            ("MOSTRO_BOX_MOSTRO_FEE".to_string(), "0.02".to_string()),
            (
                "MOSTRO_BOX_MOSTRO_FIAT_CURRENCIES_ACCEPTED".into(),
                "[\"VES\"]".into(),
            ),
            // As the Umbrel app sets it.
            ("MOSTRO_BOX_STATUS_REQUIRE_TOKEN".into(), "false".into()),
            ("MOSTRO_BOX_STATUS_LISTEN".into(), "0.0.0.0:7778".into()),
        ];
        let s = Settings::load(&dir, env, &["mostro.pow=5".into()]).unwrap();
        assert!(!s.status.require_token);
        assert_eq!(s.status.listen.port(), 7778);
        assert_eq!(s.mostro.fee, 0.02);
        assert_eq!(s.mostro.pow, 5);
        assert_eq!(s.mostro.fiat_currencies_accepted, vec!["VES".to_string()]);
    }

    #[test]
    fn bad_value_names_key_value_and_range() {
        let dir = tempdir();
        let err = Settings::load(&dir, vec![], &["mostro.fee=2".into()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mostro.fee") && msg.contains('2') && msg.contains("fraction"));
        let err = Settings::load(&dir, vec![], &["mostro.nope=1".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown setting"));
        // A wind-up margin inside the Lightning guard's blocks would let the guard refund a
        // trade whose fiat was sent, with no dispute.
        let err = Settings::load(
            &dir,
            vec![],
            &["lightning.escrow_deadline_margin_blocks=6".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("escrow_deadline_margin_blocks") && err.contains("at least 12"),
            "{err}"
        );
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mb-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
