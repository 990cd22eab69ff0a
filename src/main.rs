//! The `mostro-box` binary: parses the command line and calls into the library.

use anyhow::Context;
use clap::Parser;
use mostro_box::cli::{default_data_dir, BackupCommand, BenchKind, Cli, Command, SeedCommand};
use mostro_box::config::Settings;
use mostro_box::lightning::seed::{Seed, PASSPHRASE_ENV, SEED_FILE};
use mostro_box::node;
use nostr::ToBech32;

fn main() {
    let cli = Cli::parse();
    // On regtest bitcoind has no fee estimates and ldk-node logs an error on every sync.
    let regtest_noise = matches!(
        cli.command,
        Command::Dev { what: None, .. } | Command::Bench { .. }
    );
    mostro_box::logging::init(&cli.log_format, regtest_noise);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    match cli.command {
        Command::Init { seed_passphrase } => {
            let passphrase = if seed_passphrase {
                Some(std::env::var(PASSPHRASE_ENV).map_err(|_| {
                    anyhow::anyhow!(
                        "--seed-passphrase reads the passphrase from {PASSPHRASE_ENV}: set it \
                         (and keep it set for `mostro-box run`)"
                    )
                })?)
            } else {
                None
            };
            let made = node::init(&data_dir, passphrase.as_deref())?;
            let fresh = made.created_key && made.created_seed && made.wrote_config;
            let kept = |made_now: bool| if made_now { "" } else { " [kept]" };
            println!(
                "{} {}",
                if fresh { "Created" } else { "Checked" },
                data_dir.display()
            );
            println!(
                "  settings: {}{}",
                data_dir.join(mostro_box::config::CONFIG_FILE).display(),
                if made.wrote_config {
                    " (every setting, with its default)"
                } else {
                    " [kept]"
                }
            );
            println!(
                "  node key: {} (mode 0600; back it up){}",
                data_dir.join(mostro_box::keys::NODE_KEY_FILE).display(),
                kept(made.created_key)
            );
            println!(
                "  seed:     {} (mode 0600; write the words down: `mostro-box seed show`){}",
                data_dir.join(SEED_FILE).display(),
                kept(made.created_seed)
            );
            println!("  npub:     {}", made.pubkey.to_bech32()?);
            println!("  lightning node id: {}", made.ln_node_id);
            if fresh {
                println!(
                    "Next: set relay.public_url and the [lightning] chain source, then \
                     `mostro-box run`."
                );
            } else {
                println!("Nothing was overwritten; `mostro-box run` starts the box.");
            }
            Ok(())
        }
        Command::Run { set } => {
            let settings = Settings::load(&data_dir, std::env::vars(), &set)?;
            serve(&data_dir, settings).await
        }
        Command::Dev { set, what } => {
            let dir = cli
                .data_dir
                .clone()
                .unwrap_or_else(|| default_data_dir().with_file_name(".mostro-box-dev"));
            match what {
                None => mostro_box::cli::dev::run(&dir, set).await,
                Some(cmd) => mostro_box::cli::dev::wallet_command(&dir, cli.json, cmd).await,
            }
        }
        Command::Seed {
            what: SeedCommand::Show { yes },
        } => show_seed(&data_dir, yes),
        Command::Bench { which } => match which {
            BenchKind::Intake {
                traders,
                orders,
                transport,
            } => mostro_box::bench::intake(traders, orders, &transport)
                .await
                .context("bench intake"),
            BenchKind::Trade {
                trades,
                concurrency,
                history,
            } => mostro_box::bench::trade(trades, concurrency, history)
                .await
                .context("bench trade"),
            BenchKind::Flood { requests, chats } => mostro_box::bench::flood(requests, chats)
                .await
                .context("bench flood"),
            BenchKind::Relay {
                url,
                writers,
                events,
                queries,
            } => mostro_box::bench::relay(&url, writers, events, queries)
                .await
                .context("bench relay"),
        },
        Command::Backup { what } => match what {
            BackupCommand::Create { file } => {
                mostro_box::cli::backup::create(&data_dir, &file).await
            }
            BackupCommand::Restore { file } => mostro_box::cli::backup::restore(&data_dir, &file),
        },
        operator => mostro_box::cli::ops::run(&data_dir, cli.json, operator).await,
    }
}

fn show_seed(data_dir: &std::path::Path, yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let seed = Seed::load(data_dir, std::env::var(PASSPHRASE_ENV).ok())?;
    if !yes {
        eprint!(
            "These 24 words control the node's funds: anyone who sees them can take them.\n\
             Make sure nobody is watching your screen. Type `show` to print them: "
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "show" {
            anyhow::bail!("not shown (you did not type `show`)");
        }
    }
    println!("{}", seed.words());
    Ok(())
}

async fn serve(data_dir: &std::path::Path, settings: Settings) -> anyhow::Result<()> {
    let url = settings.relay.public_url.clone();
    let running = node::start(data_dir, settings).await?;
    let npub = running.pubkey.to_bech32()?;
    println!("mostro-box is running");
    println!("  relay:     {url} (listening on {})", running.addr);
    println!("  npub:      {npub}");
    println!("  lightning: {}", running.lightning.node_id());
    println!("Point mostro-cli at it with:");
    println!("  export MOSTRO_PUBKEY={npub}");
    println!("  export RELAYS={url}");
    mostro_box::service::notify(&format!("READY=1\nSTATUS=relay {url}, npub {npub}"));
    let stopped = running
        .run_until(async {
            mostro_box::service::shutdown_signal().await;
            println!("stopping");
            mostro_box::service::notify("STOPPING=1\nSTATUS=stopping: saving Lightning state");
        })
        .await;
    stopped.context("the engine stopped")
}
