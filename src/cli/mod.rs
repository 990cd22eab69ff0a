//! Command-line interface: the daemon commands (`init`, `run`, `dev`, `bench`) and the
//! operator commands, which talk to a running daemon through its local API ([`crate::api`]).

pub mod backup;
pub mod dev;
pub mod ops;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mostro-box: a Mostro P2P escrow node with its own relay, in one binary.
#[derive(Debug, Parser)]
#[command(name = "mostro-box", version, about)]
pub struct Cli {
    /// Data directory (settings, keys, store).
    #[arg(long, global = true, env = "MOSTRO_BOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log output: `text` or `json`.
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "MOSTRO_BOX_LOG_FORMAT"
    )]
    pub log_format: String,
    /// Print operator command results as JSON (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, a commented settings file, the node key and the Lightning seed.
    Init {
        /// Protect the Lightning seed with a BIP-39 passphrase, read from
        /// MOSTRO_BOX_SEED_PASSPHRASE (which `run` then needs too).
        #[arg(long)]
        seed_passphrase: bool,
    },
    /// Run the node.
    Run {
        /// Override a setting: `--set section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Run a local playground node on 127.0.0.1:7777 (regtest), creating it on first use; with
    /// a subcommand, use the playground's trader wallets while it runs.
    Dev {
        /// Override a setting: `--set section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A playground wallet command (none: run the playground).
        #[command(subcommand)]
        what: Option<DevCommand>,
    },
    /// The Lightning seed.
    Seed {
        /// What to do with it.
        #[command(subcommand)]
        what: SeedCommand,
    },
    /// Node status: relay, npub, Lightning node, balances, channels, orders.
    Status,
    /// The status page's login link (it holds the admin token: do not share it), and the same
    /// link as a QR code to open it on your phone.
    StatusPage,
    /// The on-chain wallet.
    Wallet {
        /// What to do.
        #[command(subcommand)]
        what: WalletCommand,
    },
    /// Lightning peers.
    Peer {
        /// What to do.
        #[command(subcommand)]
        what: PeerCommand,
    },
    /// Lightning channels.
    Channel {
        /// What to do.
        #[command(subcommand)]
        what: ChannelCommand,
    },
    /// Invoices for receiving (to test inbound liquidity).
    Invoice {
        /// What to do.
        #[command(subcommand)]
        what: InvoiceCommand,
    },
    /// Pay a BOLT11 invoice or Lightning address (to test outbound liquidity).
    Pay {
        /// BOLT11 invoice or user@domain Lightning address.
        invoice: String,
        /// Amount, for amountless invoices and Lightning addresses.
        #[arg(long)]
        sats: Option<u64>,
        /// Most routing fee to pay (default 0.2 % of the amount, at least 10 sats).
        #[arg(long)]
        max_fee_sats: Option<u64>,
        /// Seconds to wait for the outcome.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Orders in the book and in trade.
    Order {
        /// What to do.
        #[command(subcommand)]
        what: OrderCommand,
    },
    /// Encrypted backups of the key, seed, settings and store.
    Backup {
        /// What to do.
        #[command(subcommand)]
        what: BackupCommand,
    },
    /// Disputes: list them, read one, take it, decide it.
    Dispute {
        /// What to do.
        #[command(subcommand)]
        what: DisputeCommand,
    },
    /// Dispute solvers: who may take and decide disputes.
    Solver {
        /// What to do.
        #[command(subcommand)]
        what: SolverCommand,
    },
    /// Measure the box.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchKind,
    },
}

/// Commands for the playground's trader wallets, alice and bob.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Print the environment mostro-cli needs to trade as this trader (use with `eval`).
    Env {
        /// alice or bob.
        trader: String,
    },
    /// Make an invoice in a trader's wallet (a buyer's payout invoice); prints it.
    Invoice {
        /// alice or bob.
        wallet: String,
        /// Amount in sats.
        sats: u64,
    },
    /// Pay an invoice from a trader's wallet (a seller's hold invoice).
    Pay {
        /// alice or bob.
        wallet: String,
        /// The BOLT11 invoice.
        invoice: String,
    },
    /// The traders' balances.
    Balance,
}

/// `seed` subcommands.
#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Print the 24 seed words (asks for confirmation first).
    Show {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// `wallet` subcommands.
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// A new receive address.
    Address,
    /// On-chain and Lightning balances.
    Balance,
    /// Send on-chain.
    Send {
        /// Destination address.
        address: String,
        /// Amount in sats, or `all`.
        amount: String,
    },
}

/// `peer` subcommands.
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Connect to NODE_ID@HOST:PORT (and reconnect after restarts).
    Connect {
        /// NODE_ID@HOST:PORT.
        peer: String,
    },
    /// List peers.
    List,
    /// Disconnect NODE_ID.
    Disconnect {
        /// Node id.
        node_id: String,
    },
}

/// `channel` subcommands.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Open a channel to NODE_ID@HOST:PORT and follow it until it is ready.
    Open {
        /// NODE_ID@HOST:PORT (or NODE_ID of a connected peer).
        peer: String,
        /// Channel size in sats.
        sats: u64,
        /// Sats to give the peer at opening (gives the box inbound liquidity).
        #[arg(long, default_value_t = 0)]
        push_sats: u64,
        /// Announce the channel to the network (for routing nodes with a public address).
        #[arg(long)]
        announce: bool,
        /// Return once the funding transaction is out, without following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Close a channel cooperatively (or unilaterally with --force).
    Close {
        /// Channel id (or user channel id) from `channel list`.
        channel_id: String,
        /// Close without the peer; funds stay locked for the peer's contest delay.
        #[arg(long)]
        force: bool,
    },
    /// List channels with their liquidity.
    List,
}

/// `invoice` subcommands.
#[derive(Debug, Subcommand)]
pub enum InvoiceCommand {
    /// Create an invoice (0 sats = any amount).
    Create {
        /// Amount in sats (0 for any amount).
        sats: u64,
        /// Description.
        #[arg(long, default_value = "mostro-box")]
        description: String,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        expiry: u64,
        /// Receive through a just-in-time channel from the LSPS2 provider in the settings
        /// (`lightning.lsps2_*`): the way to get first inbound liquidity. The provider opens a
        /// channel to the box when the invoice is paid and keeps its fee from the payment.
        #[arg(long)]
        jit: bool,
        /// With --jit: the most the provider may keep, in sats (default: what it asks).
        #[arg(long, requires = "jit")]
        max_lsp_fee: Option<u64>,
    },
    /// Create a hold invoice, the kind sellers pay in a trade: paid sats stay held until
    /// `invoice settle PREIMAGE` or `invoice cancel HASH` (tests the escrow path end to end).
    Hold {
        /// Amount in sats.
        sats: u64,
        /// Seconds until it expires unpaid.
        #[arg(long, default_value_t = 3600)]
        expiry: u64,
    },
    /// Settle a held payment with the preimage `invoice hold` printed.
    Settle {
        /// The 64-hex-digit preimage.
        preimage: String,
    },
    /// Cancel a hold invoice; a held payment goes back to the payer.
    Cancel {
        /// The payment hash.
        hash: String,
    },
    /// Hold invoices not yet settled or cancelled, with the blocks left before their deadline.
    Holds,
}

/// `order` subcommands.
#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Every order, newest last.
    List,
    /// One order in full.
    Show {
        /// Order id.
        id: String,
    },
    /// Decide a payout on hold (after `backup restore`, every unfinished payout is on hold,
    /// because the box that made the backup may have paid it): `resume` pays the buyer now,
    /// `paid` completes the trade without paying. Check the buyer's payment first.
    Payout {
        /// Order id.
        id: String,
        /// `resume` or `paid`.
        #[arg(value_enum)]
        decision: PayoutChoice,
    },
}

/// The operator's decision on a payout on hold.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PayoutChoice {
    /// Pay the buyer now (you checked that the buyer was not paid).
    Resume,
    /// The buyer was paid: complete the trade without paying.
    Paid,
}

/// `backup` subcommands. The passphrase comes from MOSTRO_BOX_BACKUP_PASSPHRASE or is asked.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write one encrypted file with the node key, the Lightning seed, the settings and a
    /// consistent snapshot of the store (taken by the running daemon, or offline).
    Create {
        /// The file to write (never overwritten).
        file: std::path::PathBuf,
    },
    /// Restore a backup into an empty data directory.
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
    },
}

/// `dispute` subcommands. ID is the dispute's id or its order's id.
#[derive(Debug, Subcommand)]
pub enum DisputeCommand {
    /// Every dispute, oldest first.
    List,
    /// One dispute with its order.
    Show {
        /// Dispute or order id.
        id: String,
    },
    /// Take a dispute as the node (the parties are told a solver took it).
    Take {
        /// Dispute or order id.
        id: String,
    },
    /// Decide for the buyer: release the escrow and pay the buyer.
    Settle {
        /// Dispute or order id.
        id: String,
    },
    /// Decide for the seller: cancel the escrow, the seller gets the sats back.
    Cancel {
        /// Dispute or order id.
        id: String,
    },
}

/// `solver` subcommands.
#[derive(Debug, Subcommand)]
pub enum SolverCommand {
    /// Let a Nostr key take and decide disputes.
    Add {
        /// The solver's npub.
        npub: String,
        /// May take disputes and read them, but not settle or cancel.
        #[arg(long)]
        read_only: bool,
    },
    /// Every solver.
    List,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// New orders through the relay: throughput, latency to the ack and to the 38383 event, and
    /// the crypto floor measured in the same run.
    Intake {
        /// Concurrent traders, each on its own connection.
        #[arg(long, default_value_t = 50)]
        traders: usize,
        /// Orders per trader.
        #[arg(long, default_value_t = 40)]
        orders: usize,
        /// Transport: `v1` (gift wrap), `v2` (NIP-44 direct) or `both` (half each).
        #[arg(long, default_value = "both")]
        transport: String,
    },
    /// Whole trades with real Lightning payments on regtest: latency of every step and trades
    /// per minute.
    Trade {
        /// Trades in all.
        #[arg(long, default_value_t = 100)]
        trades: usize,
        /// Trades in progress at once.
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        /// Finished trades written into the store first (how the box fares with a long past).
        #[arg(long, default_value_t = 0)]
        history: usize,
    },
    /// The box as its own process under a flood of unreadable requests and chats from many
    /// addresses (IPv4 and IPv6): its memory and store before and after, a real trader's
    /// new-order latency and the box's time-outs while it lasts.
    Flood {
        /// Requests to the node that nobody can open.
        #[arg(long, default_value_t = 1_000_000)]
        requests: usize,
        /// Chat events to random recipients.
        #[arg(long, default_value_t = 1_000_000)]
        chats: usize,
    },
    /// Event ingest and query latency of a relay (the box's or another), on Mostro's traffic.
    Relay {
        /// The relay, e.g. ws://127.0.0.1:7777.
        url: String,
        /// Concurrent writers, each on its own connection.
        #[arg(long, default_value_t = 20)]
        writers: usize,
        /// Events per writer.
        #[arg(long, default_value_t = 250)]
        events: usize,
        /// Queries afterwards, one after another.
        #[arg(long, default_value_t = 500)]
        queries: usize,
    },
}

/// Where `dev`, `bench` and the tests keep a provisioned bitcoind: `$XDG_CACHE_HOME` or
/// `~/.cache`, under `mostro-box/bitcoind`.
pub fn bitcoind_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"));
    base.join("mostro-box").join("bitcoind")
}

/// Settings that put the box's Lightning node on a local regtest `bitcoind`, listening on a
/// free port, with the status page on a port of the system's choosing (`status` shows it).
pub fn regtest_overrides(
    bitcoind: &crate::regtest::Bitcoind,
) -> Result<Vec<String>, crate::regtest::RegtestError> {
    let (host, port, user, password) = bitcoind.chain_source();
    Ok(vec![
        "lightning.network=regtest".into(),
        "lightning.chain_source=bitcoind".into(),
        format!("lightning.bitcoind_rpc_address={host}:{port}"),
        format!("lightning.bitcoind_rpc_user={user}"),
        format!("lightning.bitcoind_rpc_password={password}"),
        format!(
            "lightning.listen=127.0.0.1:{}",
            crate::regtest::free_port()?
        ),
        "status.listen=127.0.0.1:0".into(),
    ])
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The default data directory, `~/.mostro-box`.
pub fn default_data_dir() -> PathBuf {
    home().join(".mostro-box")
}
