//! Building ldk-node from the settings, and reaching the chain source before it starts.

use super::*;
use crate::config::ChainSource;

pub(super) fn build(
    data_dir: &Path,
    s: &LightningSettings,
    seed: &Seed,
) -> Result<Node, LightningError> {
    let start = |what: &str, e: String| LightningError::Start(format!("{what}: {e}"));
    let mut b = Builder::new();
    b.set_network(s.bitcoin_network());
    b.set_storage_dir_path(data_dir.join(LDK_DIR).to_string_lossy().into_owned());
    b.set_entropy_seed_bytes(seed.bytes());
    b.set_runtime(tokio::runtime::Handle::current());
    b.set_log_facade_logger();
    b.set_listening_addresses(vec![socket_address(s.listen)])
        .map_err(|e| start("lightning.listen", e.to_string()))?;
    if !s.alias.is_empty() {
        b.set_node_alias(s.alias.clone())
            .map_err(|e| start("lightning.alias", e.to_string()))?;
    }
    match s.chain_source {
        ChainSource::Electrum => {
            b.set_chain_source_electrum(s.electrum_url.clone(), None);
        }
        ChainSource::Bitcoind => {
            let (host, port, user, password) = s.bitcoind_rpc().ok_or_else(|| {
                start(
                    "lightning.bitcoind_rpc_address",
                    "set HOST:PORT, user and password".into(),
                )
            })?;
            b.set_chain_source_bitcoind_rpc(host, port, user, password);
        }
        ChainSource::Esplora => {
            b.set_chain_source_esplora(s.esplora_url(), None);
        }
    }
    if !s.rgs_url.is_empty() {
        b.set_gossip_source_rgs(s.rgs_url.clone());
    }
    if !s.lsps2_node_id.is_empty() {
        let id: PublicKey = s
            .lsps2_node_id
            .parse()
            .map_err(|_| start("lightning.lsps2_node_id", "not a node id".into()))?;
        let addr: SocketAddress = s
            .lsps2_address
            .parse()
            .map_err(|_| start("lightning.lsps2_address", "not HOST:PORT".into()))?;
        let token = (!s.lsps2_token.is_empty()).then(|| s.lsps2_token.clone());
        b.set_liquidity_source_lsps2(id, addr, token);
    }
    b.build()
        .map_err(|e| start("cannot set up the Lightning node", e.to_string()))
}

/// ldk-node's address type for a socket address.
pub fn socket_address(addr: std::net::SocketAddr) -> SocketAddress {
    match addr {
        std::net::SocketAddr::V4(a) => SocketAddress::TcpIpV4 {
            addr: a.ip().octets(),
            port: a.port(),
        },
        std::net::SocketAddr::V6(a) => SocketAddress::TcpIpV6 {
            addr: a.ip().octets(),
            port: a.port(),
        },
    }
}

/// One cheap request to the configured chain source.
pub(super) async fn chain_source_reachable(s: &LightningSettings) -> Result<(), String> {
    let timeout = Duration::from_secs(10);
    match s.chain_source {
        ChainSource::Bitcoind => {
            let (host, port, user, password) = s
                .bitcoind_rpc()
                .ok_or("bitcoind_rpc_address, user and password must be set")?;
            crate::fetch::json_rpc(
                &format!("http://{host}:{port}/"),
                &user,
                &password,
                "getblockcount",
                serde_json::json!([]),
                timeout,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        ChainSource::Electrum => {
            let hostport = s
                .electrum_url
                .split("://")
                .last()
                .unwrap_or(&s.electrum_url)
                .to_string();
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(hostport))
                .await
                .map_err(|_| "timed out".to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        ChainSource::Esplora => crate::fetch::get(
            &format!(
                "{}/blocks/tip/height",
                s.esplora_url().trim_end_matches('/')
            ),
            timeout,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string()),
    }
}

pub(super) fn describe_chain_source(s: &LightningSettings) -> String {
    match s.chain_source {
        ChainSource::Electrum => format!("electrum {}", s.electrum_url),
        ChainSource::Bitcoind => format!("bitcoind RPC at {}", s.bitcoind_rpc_address),
        ChainSource::Esplora => format!("esplora {}", s.esplora_url()),
    }
}
