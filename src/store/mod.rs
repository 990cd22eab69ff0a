//! Durable state in one redb file: relay events, the engine's inbox and cursor, orders, users,
//! disputes and the outbox.
//!
//! All writes go through one [`Writer`] task that groups whatever is queued into a single
//! transaction, so many messages share one fsync while every caller still hears back only after
//! its change is on disk.

pub mod disk;
mod tables;
mod writer;

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};
use std::sync::Arc;

pub use tables::*;
pub use writer::Writer;

/// A storage failure. The box cannot go on safely without its store, so callers surface these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error.
    #[error("database error: {0}")]
    Redb(#[from] redb::Error),
    /// A stored record did not decode: the file was written by an incompatible version.
    #[error("corrupt record in table {table}: {reason}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// What failed.
        reason: String,
    },
    /// The file was written by a newer mostro-box.
    #[error("the store has schema version {found}, this mostro-box knows up to {known}: upgrade mostro-box")]
    TooNew {
        /// Version in the file.
        found: u64,
        /// Highest version this build knows.
        known: u64,
    },
    /// Another change in the same grouped commit failed, or the commit itself failed.
    #[error("commit failed: {0}")]
    Batch(String),
    /// The writer task is gone (the box is shutting down).
    #[error("the store writer has stopped")]
    WriterGone,
    /// The change panicked while being written: a bug. Nothing of it was committed.
    #[error("a change panicked while being written (a bug; nothing of it was saved): {0}")]
    Panicked(String),
}

/// The message a caught panic carries, for a log line.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// File name of the redb store inside the data directory.
pub const STORE_FILE: &str = "mostro-box.redb";

/// Schema version this build writes. Bump it and add a step to [`migrate`] when a table layout
/// or record encoding changes.
pub const SCHEMA_VERSION: u64 = 1;

/// Creates every table in `txn` (the fuzzer's in-memory store).
pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    tables::create_all(txn)
}

/// redb's page cache. Its default, 1 GiB, is most of a small Raspberry Pi's memory; the box's
/// working set (open orders, recent events) is a few megabytes.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The open database plus its writer. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
    writer: Writer,
}

impl Store {
    /// Opens (or creates) `path`, creates missing tables, runs migrations and starts the writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        tables::create_all(&txn)?;
        migrate(&txn)?;
        let stats = txn.stats()?;
        txn.commit()?;
        compact_if_mostly_free(&mut db, path, &stats)?;
        let db = Arc::new(db);
        let writer = Writer::spawn(db.clone());
        Ok(Self { db, writer })
    }

    /// A consistent read-only snapshot.
    pub fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Every record of a table keyed by UUID (orders, disputes), decoded: for the operator's
    /// lists, which read them all.
    pub fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<u128, &[u8]>,
        name: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(table)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(decode(name, entry?.1.value())?);
        }
        Ok(out)
    }

    /// Every order not yet finished, from the open-order index (decoded as `T`, the engine's
    /// order type), for the operator's views and the metrics: they never read finished ones.
    pub fn open_orders<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let read = self.read()?;
        let index = read.open_table(OPEN_ORDERS)?;
        let orders = read.open_table(ORDERS)?;
        let mut out = Vec::new();
        for entry in index.iter()? {
            if let Some(bytes) = orders.get(entry?.0.value())? {
                out.push(decode("orders", bytes.value())?);
            }
        }
        Ok(out)
    }

    /// The grouped-commit writer.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Writes a consistent copy of every table, as of one read transaction, to a new redb file
    /// at `path` (for backups: the box keeps running while it is taken).
    pub fn snapshot_to(&self, path: &Path) -> Result<(), StoreError> {
        let from = self.db.begin_read()?;
        let to_db = redb::Database::create(path)?;
        let to = to_db.begin_write()?;
        tables::copy_all(&from, &to)?;
        to.commit()?;
        Ok(())
    }
}

/// Compacts the file at start-up when most of it is free space (a flood's handled requests and
/// pushed-out chats, or messages past their retention, leave free pages that redb reuses but
/// never returns), so the file shrinks back after every restart. Nothing else is open yet.
fn compact_if_mostly_free(
    db: &mut redb::Database,
    path: &Path,
    stats: &redb::DatabaseStats,
) -> Result<(), StoreError> {
    let file = std::fs::metadata(path).map_or(0, |m| m.len());
    // Fragmented bytes are the waste itself (free space in pages redb keeps), not live data.
    let live = stats.stored_bytes() + stats.metadata_bytes();
    if file < 8 << 20 || live * 2 > file {
        return Ok(());
    }
    let before = file;
    db.compact()
        .map_err(|e| StoreError::Redb(redb::Error::from(e)))?;
    let after = std::fs::metadata(path).map_or(0, |m| m.len());
    tracing::info!(
        "store: compacted {} from {:.1} MB to {:.1} MB",
        path.display(),
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    Ok(())
}

/// Brings an older file up to [`SCHEMA_VERSION`]. Version 1 is the first layout, so the only
/// step today is stamping a new file.
fn migrate(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let found = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
    match found {
        None => {
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::TooNew {
                found: v,
                known: SCHEMA_VERSION,
            })
        }
        Some(_) => {
            // Future migrations go here, one `if v < N` step each.
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    /// A file that a flood filled and retention emptied shrinks back at the next start.
    #[test]
    fn a_mostly_free_file_is_compacted_when_opened() {
        let dir = std::env::temp_dir().join(format!("compact-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STORE_FILE);
        let chat = "x".repeat(1000);
        let id = |i: u32| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id
        };
        // Written the way the writer thread writes, with the file to itself.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            for i in 0..20_100 {
                events.insert(&id(i), chat.as_str()).unwrap();
            }
        }
        txn.commit().unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        assert!(full > 16 << 20, "{full}");
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            for i in 100..20_100 {
                events.remove(&id(i)).unwrap();
            }
        }
        txn.commit().unwrap();
        drop(db);
        let store = Store::open(&path).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 4 < full, "{full} bytes before, {after} after");
        assert_eq!(
            store
                .read()
                .unwrap()
                .open_table(EVENTS)
                .unwrap()
                .len()
                .unwrap(),
            100
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
