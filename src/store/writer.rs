//! The single writer: group commit for every change the box makes.
//!
//! redb allows one write transaction at a time and each commit costs an fsync. The writer runs on
//! its own thread, takes every job queued since the last commit, runs them in one transaction and
//! commits once; only then does each caller get its result. A caller that has heard back knows
//! its change survives a power cut.

use std::sync::Arc;

use redb::WriteTransaction;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Most jobs in one transaction: bounds the latency a large backlog adds to the first caller.
const MAX_BATCH: usize = 2048;

type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Completion, ()> + Send>;

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub(super) fn spawn(db: Arc<redb::Database>) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>(16 * 1024);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(db, rx))
            .expect("spawn the store writer thread");
        Self { jobs }
    }

    /// Runs `f` inside the next grouped transaction and returns its result once committed.
    ///
    /// `f` must do its checks before its writes: if it fails, the whole group is abandoned (its
    /// partial writes with it) and every caller in the group gets an error. A panic in `f` is
    /// caught and fails the group the same way ([`StoreError::Panicked`] for its caller), so a
    /// bug in one change never takes the writer thread, and every later write, with it.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R, StoreError>>();
        let job: Job = Box::new(move |txn| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(txn)))
                .unwrap_or_else(|p| Err(StoreError::Panicked(super::panic_message(&*p))));
            match result {
                Ok(r) => Ok(Box::new(move |failed: Option<&str>| {
                    let _ = tx.send(match failed {
                        None => Ok(r),
                        Some(e) => Err(StoreError::Batch(e.to_string())),
                    });
                })),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    Err(())
                }
            }
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

fn run(db: Arc<redb::Database>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&db, batch);
    }
}

fn commit_batch(db: &redb::Database, batch: Vec<Job>) {
    let txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            // Dropping the jobs drops their reply channels: each caller gets `WriterGone`.
            tracing::error!("store: cannot start a write transaction: {e}");
            return;
        }
    };
    let mut done: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut failed = false;
    for job in batch {
        if failed {
            // The transaction is being abandoned; dropping the job drops its reply channel,
            // which its caller reads as "writer gone" and retries or reports.
            drop(job);
            continue;
        }
        match job(&txn) {
            Ok(c) => done.push(c),
            Err(()) => failed = true,
        }
    }
    if failed {
        let _ = txn.abort();
        for c in done {
            c(Some("another change in the same commit failed; retry"));
        }
        return;
    }
    match txn.commit() {
        Ok(()) => done.into_iter().for_each(|c| c(None)),
        Err(e) => {
            tracing::error!("store: commit failed: {e}");
            let msg = e.to_string();
            done.into_iter().for_each(|c| c(Some(&msg)));
        }
    }
}
