//! The `mostro-box` binary: parses the command line and calls into the library.

use anyhow::Context;
use clap::Parser;
use mostro_box::cli::{default_data_dir, BenchKind, Cli, Command};
use mostro_box::config::Settings;
use mostro_box::node;
use nostr::ToBech32;

fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,nostr_relay_pool=warn,nostr_relay_builder=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    match cli.command {
        Command::Init => {
            let (pubkey, wrote_config) = node::init(&data_dir)?;
            println!("Created {}", data_dir.display());
            if wrote_config {
                println!(
                    "  settings: {} (every setting, with its default)",
                    data_dir.join(mostro_box::config::CONFIG_FILE).display()
                );
            }
            println!(
                "  node key: {} (mode 0600; back it up)",
                data_dir.join(mostro_box::keys::NODE_KEY_FILE).display()
            );
            println!("  npub:     {}", pubkey.to_bech32()?);
            println!("Next: edit relay.public_url, then `mostro-box run`.");
            Ok(())
        }
        Command::Run { set } => {
            let settings = Settings::load(&data_dir, std::env::vars(), &set)?;
            serve(&data_dir, settings).await
        }
        Command::Dev { mut set } => {
            let dir = cli
                .data_dir
                .clone()
                .unwrap_or_else(|| default_data_dir().with_file_name(".mostro-box-dev"));
            if !dir.join(mostro_box::keys::NODE_KEY_FILE).exists() {
                node::init(&dir)?;
            }
            let mut dev = vec![
                "lightning.network=regtest".to_string(),
                "relay.listen=127.0.0.1:7777".to_string(),
                "relay.public_url=ws://127.0.0.1:7777".to_string(),
                "mostro.fiat_currencies_accepted=[]".to_string(),
            ];
            dev.append(&mut set);
            let settings = Settings::load(&dir, std::env::vars(), &dev)?;
            serve(&dir, settings).await
        }
        Command::Bench { which } => match which {
            BenchKind::Intake {
                traders,
                orders,
                transport,
            } => mostro_box::bench::intake(traders, orders, &transport)
                .await
                .context("bench intake"),
        },
    }
}

async fn serve(data_dir: &std::path::Path, settings: Settings) -> anyhow::Result<()> {
    let url = settings.relay.public_url.clone();
    let running = node::start(data_dir, settings).await?;
    let npub = running.pubkey.to_bech32()?;
    println!("mostro-box is running");
    println!("  relay:  {url} (listening on {})", running.addr);
    println!("  npub:   {npub}");
    println!("Point mostro-cli at it with:");
    println!("  export MOSTRO_PUBKEY={npub}");
    println!("  export RELAYS={url}");
    tokio::select! {
        r = running.wait() => r.context("the engine stopped")?,
        _ = tokio::signal::ctrl_c() => println!("stopping"),
    }
    Ok(())
}
