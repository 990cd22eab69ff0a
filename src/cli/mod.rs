//! Command-line interface: `init`, `run`, `dev` and `bench`.

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
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, a commented settings file and the node key.
    Init,
    /// Run the node.
    Run {
        /// Override a setting: `--set section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Run a local playground node on 127.0.0.1:7777 (regtest), creating it on first use.
    Dev {
        /// Override a setting: `--set section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Measure the box.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchKind,
    },
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
}

/// The default data directory, `~/.mostro-box`.
pub fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".mostro-box")
}
