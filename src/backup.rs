//! Encrypted backups: one file holding the Lightning seed, the node key, the settings and a
//! consistent snapshot of the redb store (orders, disputes, users, relay events).
//!
//! What it cannot hold is the Lightning channel state: an old copy of it is dangerous (a peer
//! can punish a node that broadcasts an outdated channel state), so it is left out on purpose.
//! From the seed a restored box has the same Lightning node id and its on-chain funds; open
//! channels are closed by the peers and their funds come back on chain (see the README).
//!
//! Format: the magic line, a JSON header line (scrypt parameters, salt, nonce), then the
//! XChaCha20-Poly1305 ciphertext of the entries, each as (name length u32, name, data length
//! u64, data), all little-endian. The key is scrypt(passphrase, salt).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::config::CONFIG_FILE;
use crate::keys::NODE_KEY_FILE;
use crate::lightning::seed::SEED_FILE;
use crate::store::{Store, StoreError, STORE_FILE};

/// The environment variable a passphrase may come from (for scripts).
pub const PASSPHRASE_ENV: &str = "MOSTRO_BOX_BACKUP_PASSPHRASE";
const MAGIC: &[u8] = b"mostro-box backup v1\n";
/// scrypt cost: 2^17 × 8 × 128 B = 128 MiB and a few seconds on a Raspberry Pi 4, for a file
/// that holds the seed (backups made before used 2^15 and still restore).
const LOG_N: u8 = 17;
/// Fewest characters, and fewest different ones, a backup passphrase may have.
const MIN_PASSPHRASE: (usize, usize) = (12, 6);

/// Why a backup or a restore failed, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The data directory lacks what a backup needs.
    #[error("{0} is missing: is this an initialised data directory? (`mostro-box init`)")]
    Missing(PathBuf),
    /// The output file exists.
    #[error("{0} exists already: choose a new file name (a backup never overwrites)")]
    Exists(PathBuf),
    /// Restoring over a box would run two copies of one seed.
    #[error("{0} already holds a box (a key, a seed or a store): restore into an empty data directory; never run two copies of one seed")]
    NotEmpty(PathBuf),
    /// Not a backup file.
    #[error("{0} is not a mostro-box backup")]
    NotABackup(PathBuf),
    /// Decryption failed.
    #[error("wrong passphrase, or the backup file is damaged")]
    WrongPassphrase,
    /// The passphrase is too weak to protect a seed.
    #[error(
        "the passphrase is too weak for a file that holds the node's seed: use at least {} \
         characters with at least {} different ones (four random words work well)",
        MIN_PASSPHRASE.0,
        MIN_PASSPHRASE.1
    )]
    WeakPassphrase,
    /// The file asks for key-stretching costs no backup of the box uses (a crafted file could
    /// otherwise make the restore allocate gigabytes).
    #[error("{0} asks for scrypt parameters this box never writes: not a backup of a mostro-box")]
    Unsupported(PathBuf),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Serialize, Deserialize)]
struct Header {
    log_n: u8,
    r: u32,
    p: u32,
    salt: String,
    nonce: String,
    /// Unix time the backup was taken (absent in backups from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<i64>,
}

/// Largest scrypt cost a restore accepts: 2^18 × 8 × 128 B = 256 MiB (backups use 2^17).
const MAX_LOG_N: u8 = 18;

/// What a backup or a restore covered.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The file names inside, with their sizes.
    pub entries: Vec<(String, u64)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Start of the name of a store snapshot for a backup: inside the data directory, the one place
/// a sandboxed daemon may write. It holds every live preimage in plain text until the backup
/// has read it (see [`remove_stale_snapshots`]).
pub const SNAPSHOT_PREFIX: &str = "backup-snapshot-";

/// Takes the store snapshot a backup needs into a new file of its own (two backups at once
/// do not share one), readable by the box's user only.
pub fn snapshot(store: &Store, data_dir: &Path) -> Result<PathBuf, BackupError> {
    let path = data_dir.join(format!(
        "{SNAPSHOT_PREFIX}{}.redb",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    if let Err(e) = store.snapshot_to(&path) {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    Ok(path)
}

/// Removes snapshots a backup left behind (a `backup create` killed before it read its
/// snapshot): plain-text copies of the store must not linger. The box calls it at start-up.
pub fn remove_stale_snapshots(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(SNAPSHOT_PREFIX) {
            tracing::info!(
                "backup: removing the leftover snapshot {}",
                e.path().display()
            );
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes an encrypted backup of `data_dir` to `out`, with the store snapshot at `snapshot`
/// (which it removes).
pub fn create(
    data_dir: &Path,
    snapshot: &Path,
    out: &Path,
    passphrase: &str,
) -> Result<Summary, BackupError> {
    if !strong_enough(passphrase) {
        return Err(BackupError::WeakPassphrase);
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let mut entries = Vec::new();
    for name in [SEED_FILE, NODE_KEY_FILE, CONFIG_FILE] {
        let path = data_dir.join(name);
        match std::fs::read(&path) {
            Ok(data) => entries.push((name.to_string(), data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == CONFIG_FILE => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::Missing(path))
            }
            Err(e) => return Err(io(&path)(e)),
        }
    }
    let data = std::fs::read(snapshot).map_err(io(snapshot));
    let _ = std::fs::remove_file(snapshot);
    entries.push((STORE_FILE.to_string(), data?));

    let mut plain = Vec::new();
    for (name, data) in &entries {
        plain.extend_from_slice(&(name.len() as u32).to_le_bytes());
        plain.extend_from_slice(name.as_bytes());
        plain.extend_from_slice(&(data.len() as u64).to_le_bytes());
        plain.extend_from_slice(data);
    }
    let salt = random::<16>();
    let nonce = random::<24>();
    let cipher = XChaCha20Poly1305::new(&key(passphrase, &salt, LOG_N, 8, 1)?.into());
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
        .map_err(|_| BackupError::WrongPassphrase)?;
    let header = Header {
        log_n: LOG_N,
        r: 8,
        p: 1,
        salt: hex(&salt),
        nonce: hex(&nonce),
        created_at: Some(crate::protocol::now()),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io(out))?;
    f.write_all(MAGIC).map_err(io(out))?;
    f.write_all(serde_json::to_string(&header).expect("header").as_bytes())
        .map_err(io(out))?;
    f.write_all(b"\n").map_err(io(out))?;
    f.write_all(&sealed).map_err(io(out))?;
    f.sync_all().map_err(io(out))?;
    Ok(Summary {
        entries: entries
            .iter()
            .map(|(n, d)| (n.clone(), d.len() as u64))
            .collect(),
    })
}

/// What a restore wrote, and the payouts it put aside for the operator.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The files written.
    #[serde(flatten)]
    pub summary: Summary,
    /// Orders whose payout was not finished when the backup was taken: on hold until the
    /// operator decides (`mostro-box order payout`).
    pub payouts_on_hold: Vec<uuid::Uuid>,
}

/// Restores `file` into `data_dir`, which must not hold a box already (not even an old
/// Lightning channel state: running it would risk the channels' funds). The directory and
/// every file are private to the operator (0700 and 0600).
///
/// Every payout that was not finished when the backup was taken is put on hold: the box that
/// made the backup may have paid it since, and the restored node cannot know.
pub fn restore(file: &Path, data_dir: &Path, passphrase: &str) -> Result<Restored, BackupError> {
    let ldk = data_dir.join(crate::lightning::ldk::LDK_DIR);
    for path in [SEED_FILE, NODE_KEY_FILE, STORE_FILE]
        .iter()
        .map(|n| data_dir.join(n))
        .chain([ldk])
    {
        if path.exists() {
            return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
        }
    }
    let bytes = std::fs::read(file).map_err(io(file))?;
    let not_backup = || BackupError::NotABackup(file.to_path_buf());
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(not_backup)?;
    let split = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(not_backup)?;
    let header: Header = serde_json::from_slice(&rest[..split]).map_err(|_| not_backup())?;
    if header.log_n > MAX_LOG_N || header.r != 8 || header.p != 1 {
        return Err(BackupError::Unsupported(file.to_path_buf()));
    }
    let salt = unhex(&header.salt).ok_or_else(not_backup)?;
    let nonce: [u8; 24] = unhex(&header.nonce)
        .and_then(|n| n.try_into().ok())
        .ok_or_else(not_backup)?;
    let cipher =
        XChaCha20Poly1305::new(&key(passphrase, &salt, header.log_n, header.r, header.p)?.into());
    let plain = cipher
        .decrypt(XNonce::from_slice(&nonce), &rest[split + 1..])
        .map_err(|_| BackupError::WrongPassphrase)?;
    let entries = parse(&plain).ok_or_else(not_backup)?;
    if entries.iter().any(|(name, _)| {
        ![SEED_FILE, NODE_KEY_FILE, CONFIG_FILE, STORE_FILE].contains(&name.as_str())
    }) {
        // Only the names a backup writes: nothing can land outside the data directory.
        return Err(not_backup());
    }
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io(data_dir))?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(data_dir))?;
    }
    for (name, data) in &entries {
        let path = data_dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(data).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
    }
    let payouts_on_hold = hold_payouts(&data_dir.join(STORE_FILE), header.created_at)?;
    Ok(Restored {
        summary: Summary {
            entries: entries
                .iter()
                .map(|(n, d)| (n.clone(), d.len() as u64))
                .collect(),
        },
        payouts_on_hold,
    })
}

/// Puts every unfinished payout in the restored store on hold, in one commit.
fn hold_payouts(store: &Path, taken_at: Option<i64>) -> Result<Vec<uuid::Uuid>, BackupError> {
    use crate::engine::order::PayoutState;
    let db = redb::Database::create(store).map_err(StoreError::from)?;
    let txn = db.begin_write().map_err(StoreError::from)?;
    let mut held = Vec::new();
    {
        let mut tx = crate::engine::tx::Tx::open(&txn)?;
        let when = taken_at
            .map(|t| format!("taken at unix time {t}"))
            .unwrap_or_else(|| "of unknown date".into());
        for mut order in tx.open_orders()? {
            let Some(payout) = order.trade.payout.as_mut() else {
                continue;
            };
            if matches!(payout.state, PayoutState::Paid | PayoutState::OnHold { .. }) {
                continue;
            }
            payout.state = PayoutState::OnHold {
                reason: format!(
                    "restored from a backup {when}: the box that made it may have paid this \
                     buyer since. Check, then `mostro-box order payout {} resume` (pay it) or \
                     `... paid` (it was paid)",
                    order.id
                ),
            };
            tx.put_order(&order)?;
            held.push(order.id);
        }
    }
    // The old node's attempt records say nothing about the restored node, which never had
    // those payments; what the old node may have done is what the hold is for.
    txn.open_table(crate::store::SENDS)
        .map_err(StoreError::from)?
        .retain(|_, _| false)
        .map_err(StoreError::from)?;
    txn.commit().map_err(StoreError::from)?;
    Ok(held)
}

fn parse(mut b: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let name = String::from_utf8(b.get(4..4 + n)?.to_vec()).ok()?;
        b = &b[4 + n..];
        let len = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
        let data = b.get(8..8 + len)?.to_vec();
        b = &b[8 + len..];
        out.push((name, data));
    }
    Some(out)
}

/// The passphrase rule: long enough, and not one or two characters repeated.
fn strong_enough(passphrase: &str) -> bool {
    let distinct: std::collections::HashSet<char> = passphrase.chars().collect();
    passphrase.chars().count() >= MIN_PASSPHRASE.0 && distinct.len() >= MIN_PASSPHRASE.1
}

fn key(passphrase: &str, salt: &[u8], log_n: u8, r: u32, p: u32) -> Result<[u8; 32], BackupError> {
    let params = scrypt::Params::new(log_n, r, p, 32).map_err(|_| BackupError::WrongPassphrase)?;
    let mut key = [0u8; 32];
    scrypt::scrypt(passphrase.as_bytes(), salt, &params, &mut key)
        .map_err(|_| BackupError::WrongPassphrase)?;
    Ok(key)
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(32) {
        let bytes = crate::lightning::Preimage::random().0;
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let mut plain = Vec::new();
        for (name, data) in [("a", b"xyz".to_vec()), ("b", vec![])] {
            plain.extend_from_slice(&(name.len() as u32).to_le_bytes());
            plain.extend_from_slice(name.as_bytes());
            plain.extend_from_slice(&(data.len() as u64).to_le_bytes());
            plain.extend_from_slice(&data);
        }
        let back = super::parse(&plain).unwrap();
        assert_eq!(back[0], ("a".to_string(), b"xyz".to_vec()));
        assert_eq!(back[1].1.len(), 0);
        assert!(super::parse(&plain[..plain.len() - 1]).is_none());
        assert!(super::parse(&[255, 255, 255, 255]).is_none());
        assert_eq!(super::unhex("0aff"), Some(vec![10, 255]));
    }

    #[test]
    fn a_passphrase_must_be_long_and_varied() {
        assert!(!super::strong_enough("correct1"));
        assert!(!super::strong_enough("abababababababab"));
        assert!(!super::strong_enough("aaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(super::strong_enough("correct horse battery"));
    }
}
