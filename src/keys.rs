//! The node's Nostr key: one secret in a 0600 file in the data directory, never logged.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nostr::{FromBech32, Keys, SecretKey, ToBech32};

/// File holding the node's nsec.
pub const NODE_KEY_FILE: &str = "nostr.nsec";

/// A key file problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key yet.
    #[error("no node key at {0}: run `mostro-box init` first")]
    Missing(PathBuf),
    /// `init` would overwrite a key.
    #[error("a node key already exists at {0}; init never overwrites keys (move it away first if you really mean to start over)")]
    Exists(PathBuf),
    /// The file does not hold an nsec.
    #[error("{0} does not hold a valid nsec; restore it from your backup")]
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

/// Creates a new key file (mode 0600); refuses if one exists.
pub fn create(data_dir: &Path) -> Result<Keys, KeyError> {
    let path = data_dir.join(NODE_KEY_FILE);
    let keys = Keys::generate();
    let nsec = keys
        .secret_key()
        .to_bech32()
        .expect("bech32 of a valid key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.clone()),
            _ => KeyError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
    writeln!(f, "{nsec}").map_err(io(&path))?;
    f.sync_all().map_err(io(&path))?;
    Ok(keys)
}

/// Loads the key, refusing a file other users can read.
pub fn load(data_dir: &Path) -> Result<Keys, KeyError> {
    let path = data_dir.join(NODE_KEY_FILE);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Missing(path)),
        Err(e) => return Err(KeyError::Io { path, source: e }),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path, mode });
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let secret = SecretKey::from_bech32(text.trim())
        .or_else(|_| SecretKey::parse(text.trim()))
        .map_err(|_| KeyError::Invalid(path.clone()))?;
    Ok(Keys::new(secret))
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
