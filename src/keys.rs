//! Secret files (the node's Nostr key, the Lightning seed, the admin token): mode 0600 in the data directory,
//! never overwritten, never logged.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nostr::{FromBech32, Keys, SecretKey, ToBech32};

/// File holding the node's nsec.
pub const NODE_KEY_FILE: &str = "nostr.nsec";
/// File holding the token that opens the status page.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A key file problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key or seed yet.
    #[error("{0} is missing: run `mostro-box init` first (or restore it from your backup)")]
    Missing(PathBuf),
    /// `init` would overwrite a key.
    #[error("{0} already exists; init never overwrites keys (move it away first if you really mean to start over)")]
    Exists(PathBuf),
    /// The file does not hold what it should.
    #[error("{0} is damaged (not a valid key or seed); restore it from your backup")]
    Invalid(PathBuf),
    /// The file is readable by others.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// File.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Any I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a new secret file readable by the owner only (mode 0600); refuses to overwrite one.
pub fn create_secret_file(path: &Path, contents: &str) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
            _ => KeyError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Reads a secret file, refusing one that other users can read.
pub fn read_secret_file(path: &Path) -> Result<String, KeyError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::Missing(path.to_path_buf()))
        }
        Err(e) => return Err(io(path)(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(io(path))
}

/// Creates a new node key file (mode 0600); refuses if one exists.
pub fn create(data_dir: &Path) -> Result<Keys, KeyError> {
    let keys = Keys::generate();
    let nsec = keys
        .secret_key()
        .to_bech32()
        .expect("bech32 of a valid key");
    create_secret_file(&data_dir.join(NODE_KEY_FILE), &format!("{nsec}\n"))?;
    Ok(keys)
}

/// Loads the node key, refusing a file other users can read.
pub fn load(data_dir: &Path) -> Result<Keys, KeyError> {
    let path = data_dir.join(NODE_KEY_FILE);
    let text = read_secret_file(&path)?;
    let secret = SecretKey::from_bech32(text.trim())
        .or_else(|_| SecretKey::parse(text.trim()))
        .map_err(|_| KeyError::Invalid(path.clone()))?;
    Ok(Keys::new(secret))
}

/// The admin token (64 hex digits), created on first use. Delete the file and restart the box
/// to change it: every browser logged in with the old one is logged out.
pub fn admin_token(data_dir: &Path) -> Result<String, KeyError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match read_secret_file(&path) {
        Err(KeyError::Missing(_)) => {
            let token = crate::lightning::Preimage::random().to_hex();
            match create_secret_file(&path, &format!("{token}\n")) {
                // Another process made it first: use theirs.
                Err(KeyError::Exists(_)) => admin_token(data_dir),
                Err(e) => Err(e),
                Ok(()) => Ok(token),
            }
        }
        Err(e) => Err(e),
        Ok(text) if text.trim().len() >= 32 => Ok(text.trim().to_string()),
        Ok(_) => Err(KeyError::Invalid(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_0600_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("mb-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(NODE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(create(&dir), Err(KeyError::Exists(_))));
        assert_eq!(load(&dir).unwrap().public_key(), k.public_key());
        std::fs::set_permissions(
            dir.join(NODE_KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(load(&dir), Err(KeyError::Permissions { .. })));
    }
}
