//! `mostro-box backup create|restore`: the encrypted backup file, from the operator's side.
//! With the daemon running the snapshot is taken by it (consistent while it keeps trading);
//! otherwise the CLI opens the store itself.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context};

use crate::api::client::{call, ClientError};
use crate::backup::{self, PASSPHRASE_ENV};

/// Writes the backup of `data_dir` to `out`.
pub async fn create(data_dir: &Path, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!(
            "{} exists already: choose a new file name (a backup never overwrites)",
            out.display()
        );
    }
    let passphrase = passphrase(true)?;
    let snapshot = match call(data_dir, "POST", "/v1/backup/snapshot", None).await {
        Ok(v) => v["snapshot"]
            .as_str()
            .context("the daemon gave no snapshot path")?
            .into(),
        Err(ClientError::NotRunning(_)) => {
            let store = crate::store::Store::open(&data_dir.join(crate::node::STORE_FILE))
                .with_context(|| format!("opening the store in {}", data_dir.display()))?;
            backup::snapshot(&store, data_dir)?
        }
        Err(e) => return Err(e.into()),
    };
    let summary = backup::create(data_dir, &snapshot, out, &passphrase)?;
    println!("backup written to {} (mode 0600):", out.display());
    for (name, size) in summary.entries {
        println!("  {name:<18} {size} bytes");
    }
    println!("It restores the node key, the Lightning seed (same node id, on-chain funds), the");
    println!("settings and every order; not open channels: see the README's backups section.");
    Ok(())
}

/// Restores `file` into `data_dir`.
pub fn restore(data_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let passphrase = passphrase(false)?;
    let restored = backup::restore(file, data_dir, &passphrase)?;
    println!("restored into {}:", data_dir.display());
    for (name, size) in restored.summary.entries {
        println!("  {name:<18} {size} bytes");
    }
    if !restored.payouts_on_hold.is_empty() {
        println!(
            "{} payouts were not finished when the backup was taken; they are on hold, never \
             paid automatically (the old box may have paid them):",
            restored.payouts_on_hold.len()
        );
        for id in &restored.payouts_on_hold {
            println!("  order {id}: `mostro-box order show {id}`, then `mostro-box order payout {id} resume` or `... paid`");
        }
    }
    println!("Start it with `mostro-box run`. Never run it while the old box still runs.");
    Ok(())
}

/// The passphrase: `MOSTRO_BOX_BACKUP_PASSPHRASE`, else asked on the terminal without echo
/// (twice when creating).
fn passphrase(confirm: bool) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: set {PASSPHRASE_ENV} or run this in a terminal");
    }
    let first = ask("Backup passphrase: ")?;
    if confirm && ask("Again: ")? != first {
        bail!("the two passphrases differ: nothing was written");
    }
    Ok(first)
}

fn ask(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let echo = Echo::off();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    drop(echo);
    eprintln!();
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Terminal echo switched off until dropped.
struct Echo(Option<libc::termios>);

impl Echo {
    fn off() -> Self {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios filled by tcgetattr.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Echo(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Echo(Some(saved))
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the settings read in `off`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}
