//! State shared by the writer thread, the store handles and the readers.

use crate::cache::MapCache;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::format::manifest::Manifest;
use crate::options::Options;
use crate::storage::Backend;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

pub struct Shared {
    pub root: PathBuf,
    pub backend: Arc<dyn Backend>,
    pub manifest: Manifest,
    pub options: Options,
    pub maps: MapCache,
    pub catalog: Catalog,
    /// The published head: every position up to it is durable and readable.
    head: AtomicU64,
    /// Set once, when a write or sync fails or the writer dies.
    poison: OnceLock<String>,
    /// Signalled after each published batch (for waiters on new events).
    pub committed: (Mutex<u64>, Condvar),
    /// Held for the life of the store's files in this process: the directory lock.
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

impl Shared {
    pub fn new(
        root: PathBuf,
        backend: Arc<dyn Backend>,
        manifest: Manifest,
        options: Options,
        head: u64,
        lock: Box<dyn std::any::Any + Send + Sync>,
    ) -> Shared {
        let maps = MapCache::new(
            &root,
            Arc::clone(&backend),
            manifest.store_id,
            manifest.index_entries_per_file,
            options.mapped_segments_max,
        );
        let catalog = Catalog::new(options.streams_cached_max);
        Shared {
            root,
            backend,
            manifest,
            options,
            maps,
            catalog,
            head: AtomicU64::new(head),
            poison: OnceLock::new(),
            committed: (Mutex::new(head), Condvar::new()),
            _lock: lock,
        }
    }

    /// The published head (acquire: a reader that sees head `h` sees every byte up to `h`).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Publish a new head. Only the writer calls this, after the batch is durable.
    pub fn publish(&self, head: u64) {
        let previous = self.head.swap(head, Ordering::AcqRel);
        assert!(head >= previous, "the durable head only moves forward");
        let (lock, signal) = &self.committed;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = head;
        signal.notify_all();
    }

    pub fn poison(&self, cause: String) {
        if self.poison.set(cause.clone()).is_ok() {
            tracing::error!(%cause, "store poisoned: it refuses writes until reopened");
        }
        let (_, signal) = &self.committed;
        signal.notify_all();
    }

    pub fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}
