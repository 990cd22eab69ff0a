//! The Lightning seed: 24 BIP-39 words in a 0600 file, optionally with a passphrase that lives
//! only in the operator's head (or their service manager's environment).
//!
//! The file also records the node id the words and passphrase give, so a wrong or missing
//! passphrase stops the box at start-up instead of silently starting an empty wallet beside the
//! real one.

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use ldk_node::bip39::Mnemonic;
use ldk_node::bitcoin::bip32::Xpriv;
use ldk_node::bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use ldk_node::bitcoin::Network;
use ldk_node::lightning::sign::KeysManager;

use crate::keys::{create_secret_file, read_secret_file, KeyError};

/// File holding the seed words inside the data directory.
pub const SEED_FILE: &str = "lightning.seed";
/// Environment variable the passphrase is read from at start-up.
pub const PASSPHRASE_ENV: &str = "MOSTRO_BOX_SEED_PASSPHRASE";

/// A seed problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// File-level problem (missing, permissions, exists).
    #[error(transparent)]
    File(#[from] KeyError),
    /// The words, passphrase and recorded node id disagree.
    #[error("the Lightning seed gives node {derived}, but {SEED_FILE} was made for node {recorded}: {hint}")]
    WrongPassphrase {
        /// Node id from words + passphrase.
        derived: String,
        /// Node id recorded at init.
        recorded: String,
        /// What to do.
        hint: &'static str,
    },
}

/// The seed, loaded. Deliberately not `Debug`: it must never reach a log line.
pub struct Seed {
    mnemonic: Mnemonic,
    passphrase: String,
}

impl Seed {
    /// Makes a new 24-word seed and writes it (mode 0600); refuses to overwrite one.
    pub fn create(data_dir: &Path, passphrase: Option<&str>) -> Result<Seed, SeedError> {
        let seed = Seed {
            mnemonic: ldk_node::generate_entropy_mnemonic(None),
            passphrase: passphrase.unwrap_or_default().to_string(),
        };
        let text = format!(
            "# mostro-box Lightning seed (BIP-39). Whoever has these words{} can spend the node's\n\
             # funds: keep an offline copy and show it to nobody.\n\
             {}\n\
             node_id {}\n\
             passphrase {}\n",
            if passphrase.is_some() {
                " and the passphrase"
            } else {
                ""
            },
            seed.mnemonic,
            seed.node_id(),
            if passphrase.is_some() { "yes" } else { "no" },
        );
        create_secret_file(&data_dir.join(SEED_FILE), &text)?;
        Ok(seed)
    }

    /// Reads the seed; `passphrase` must be the one given at init (if any).
    pub fn load(data_dir: &Path, passphrase: Option<String>) -> Result<Seed, SeedError> {
        let path = data_dir.join(SEED_FILE);
        let text = read_secret_file(&path)?;
        let damaged = || SeedError::File(KeyError::Invalid(path.clone()));
        let mut words = None;
        let mut recorded = None;
        let mut wants_passphrase = false;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            } else if let Some(id) = line.strip_prefix("node_id ") {
                recorded = Some(PublicKey::from_str(id.trim()).map_err(|_| damaged())?);
            } else if let Some(flag) = line.strip_prefix("passphrase ") {
                wants_passphrase = flag.trim() == "yes";
            } else {
                words = Some(Mnemonic::from_str(line).map_err(|_| damaged())?);
            }
        }
        let seed = Seed {
            mnemonic: words.ok_or_else(damaged)?,
            passphrase: passphrase.unwrap_or_default(),
        };
        if let Some(recorded) = recorded {
            let derived = seed.node_id();
            if derived != recorded {
                return Err(SeedError::WrongPassphrase {
                    derived: derived.to_string(),
                    recorded: recorded.to_string(),
                    hint: if wants_passphrase {
                        "set MOSTRO_BOX_SEED_PASSPHRASE to the passphrase given at init"
                    } else {
                        "this seed has no passphrase: unset MOSTRO_BOX_SEED_PASSPHRASE"
                    },
                });
            }
        }
        Ok(seed)
    }

    /// The node id of the seed already in `data_dir`, for `init` on an initialised directory:
    /// the id recorded beside the words, or (with `passphrase`, or for a file from before ids
    /// were recorded) the one the words give, checked against the record.
    pub fn existing_node_id(
        data_dir: &Path,
        passphrase: Option<&str>,
    ) -> Result<PublicKey, SeedError> {
        if passphrase.is_none() {
            let path = data_dir.join(SEED_FILE);
            let text = read_secret_file(&path)?;
            let recorded = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("node_id "))
                .map(|id| PublicKey::from_str(id.trim()));
            match recorded {
                Some(Ok(id)) => return Ok(id),
                Some(Err(_)) => return Err(SeedError::File(KeyError::Invalid(path))),
                None => {}
            }
        }
        Ok(Seed::load(data_dir, passphrase.map(str::to_string))?.node_id())
    }

    /// The words, for `mostro-box seed show`.
    pub fn words(&self) -> String {
        self.mnemonic.to_string()
    }

    /// The 64 bytes ldk-node derives every key from.
    pub fn bytes(&self) -> [u8; 64] {
        self.mnemonic.to_seed(&self.passphrase)
    }

    /// The Lightning node's secret key, derived exactly as ldk-node 0.7 derives it (master key
    /// of the seed, then LDK's `KeysManager`). The box needs it to re-sign hold invoices with a
    /// longer CLTV delta; start-up checks it against the running node's id, so a change in
    /// ldk-node's derivation fails loudly instead of issuing invoices nobody can pay.
    pub fn node_secret(&self) -> SecretKey {
        // The network only changes the xpriv's version bytes, never the key material.
        let master = Xpriv::new_master(Network::Bitcoin, &self.bytes()).expect("64-byte seed");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        KeysManager::new(
            &master.private_key.secret_bytes(),
            now.as_secs(),
            now.subsec_nanos(),
            true,
        )
        .get_node_secret_key()
    }

    /// The Lightning node id.
    pub fn node_id(&self) -> PublicKey {
        PublicKey::from_secret_key(&Secp256k1::new(), &self.node_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn passphrase_is_checked_and_file_is_private() {
        let dir = std::env::temp_dir().join(format!("mb-seed-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = Seed::create(&dir, Some("correct horse")).unwrap();
        let mode = std::fs::metadata(dir.join(SEED_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(made.words().split(' ').count(), 24);
        let again = Seed::load(&dir, Some("correct horse".into())).unwrap();
        assert_eq!(again.node_id(), made.node_id());
        let wrong = Seed::load(&dir, None).err().unwrap().to_string();
        assert!(wrong.contains("MOSTRO_BOX_SEED_PASSPHRASE"), "{wrong}");
        assert!(matches!(
            Seed::create(&dir, None),
            Err(SeedError::File(KeyError::Exists(_)))
        ));
        // `init` on an initialised directory reads the recorded id without the passphrase,
        // and checks a passphrase it is given.
        assert_eq!(Seed::existing_node_id(&dir, None).unwrap(), made.node_id());
        assert_eq!(
            Seed::existing_node_id(&dir, Some("correct horse")).unwrap(),
            made.node_id()
        );
        assert!(matches!(
            Seed::existing_node_id(&dir, Some("wrong")),
            Err(SeedError::WrongPassphrase { .. })
        ));
    }
}
