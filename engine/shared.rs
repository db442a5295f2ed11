//! State shared by the writer thread, the store handles and the readers.

use crate::cache::MapCache;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::format::manifest::Manifest;
use crate::options::Options;
use crate::persistent::Registry;
use crate::storage::Backend;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

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
    /// Counts published batches, poisonings and the close; signalled on each (for subscribers
    /// waiting on new events and for waiters on durable acks). Always changed under its lock,
    /// so a waiter that checked its condition under the lock cannot miss a change.
    changes: (Mutex<Changes>, Condvar),
    /// Counts the events that end the indexer's accumulation early (engine/projection.rs):
    /// someone waits for it, a rebuild, the close, or enough positions waiting. The indexer
    /// waits on this rather than on every commit: a commit that wakes a sleeping thread costs
    /// the writer a system call and the appender a share of a core (about 7 µs per one-event
    /// append, measured with `examples/w2 -- 1 2` with and without the indexer).
    nudges: (Mutex<u64>, Condvar),
    /// Set when the last handle closed the store (its writer has stopped).
    closed: AtomicBool,
    /// The persistent subscriptions, loaded on first use.
    pub subscriptions: Registry,
    /// The truncations of streams, loaded on first use.
    pub removals: crate::removals::Removals,
    /// The head claimed by the newest checkpoint made durable: index files wholly at or below
    /// it can be compacted (recovery never reads them again).
    pub checkpoint_head: std::sync::atomic::AtomicU64,
    /// One index compaction at a time.
    pub compacting: Mutex<()>,
    /// Events removed by snapshots and deletes since the last background compaction started.
    pub removed_since_compaction: AtomicU64,
    /// The background compaction thread, joined when the store closes.
    pub compactor: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The indexes by category and event type (segment-format.md §17).
    pub indexes: crate::projection::Indexes,
    /// Packs' published state not yet written in place (segment-format.md §19).
    pub packs: crate::packs::Packs,
    /// Rewritten streams seen by this process: the last position each rewrite removed
    /// (segment-format.md §12). Lets `read_all` skip a removed event without opening its
    /// stream's segment 0. Bounded; a miss costs one read of the base record.
    removed: Mutex<std::collections::HashMap<crate::layout::StreamKey, u64>>,
    /// Helper threads reading `read_all` windows right now, for all iterators together: at
    /// most `READ_ALL_FETCH_THREADS_MAX - 1`, however many iterators read at once.
    pub read_helpers: AtomicU64,
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
            changes: (Mutex::new(Changes::default()), Condvar::new()),
            nudges: (Mutex::new(0), Condvar::new()),
            closed: AtomicBool::new(false),
            subscriptions: Registry::default(),
            removals: crate::removals::Removals::default(),
            indexes: crate::projection::Indexes::default(),
            packs: crate::packs::Packs::default(),
            checkpoint_head: std::sync::atomic::AtomicU64::new(head),
            compacting: Mutex::new(()),
            removed_since_compaction: AtomicU64::new(0),
            compactor: Mutex::new(None),
            removed: Mutex::new(std::collections::HashMap::new()),
            read_helpers: AtomicU64::new(0),
            _lock: lock,
        }
    }

    /// Copy into `covers` what the process knows the rewrites of `keys` removed (only ever
    /// more than `covers` holds).
    pub fn removed_into(
        &self,
        keys: impl Iterator<Item = crate::layout::StreamKey>,
        covers: &mut crate::layout::KeyMap<crate::layout::StreamKey, u64>,
    ) {
        let removed = self
            .removed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if removed.is_empty() {
            return;
        }
        for key in keys {
            if let Some(c) = removed.get(&key) {
                let known = covers.entry(key).or_insert(0);
                *known = (*known).max(*c);
            }
        }
    }

    /// Remember what a rewrite of `key` removed (only ever more).
    pub fn note_removed(&self, key: crate::layout::StreamKey, covers_position: u64) {
        if covers_position == 0 {
            return;
        }
        let mut removed = self
            .removed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if removed.len() >= self.options.streams_cached_max {
            // Rewritten streams are few next to streams; when they are not, start over.
            removed.clear();
        }
        let c = removed.entry(key).or_insert(0);
        *c = (*c).max(covers_position);
    }

    /// Where this store keeps the tables of its packed streams.
    pub fn tables(&self) -> crate::layout::Tables {
        crate::layout::Tables::of(&self.manifest)
    }

    /// The number of the table holding the packed stream of hash `hash`.
    pub fn table_of(&self, hash: u64) -> u16 {
        self.tables().number(hash)
    }

    /// The file of table `number`.
    pub fn table_path(&self, number: u16) -> std::path::PathBuf {
        self.tables().path(&self.root, number)
    }

    /// The published head (acquire: a reader that sees head `h` sees every byte up to `h`).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Publish a new head. Only the writer calls this, after the batch is durable; it calls
    /// `changed` once the streams' states are updated too.
    pub fn publish(&self, head: u64) {
        let previous = self.head.swap(head, Ordering::AcqRel);
        assert!(head >= previous, "the durable head only moves forward");
        if self.indexes.lag_crossed(previous, head) {
            self.nudge();
        }
    }

    /// The change count, to be read *before* a waiter checks its condition.
    pub fn changes(&self) -> u64 {
        self.changes
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .count
    }

    /// Wake every waiter: a batch was published, acks became durable, or the store was poisoned
    /// or closed. Without waiters it makes no system call.
    pub fn changed(&self) {
        let (lock, signal) = &self.changes;
        let mut changes = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        changes.count += 1;
        let waiters = changes.waiters;
        drop(changes);
        if waiters > 0 {
            signal.notify_all();
        }
    }

    /// Block until the change count differs from `seen` or the deadline passes. No polling:
    /// a waiter costs no CPU.
    pub fn wait_change(&self, seen: u64, deadline: Option<Instant>) {
        let (lock, signal) = &self.changes;
        let mut changes = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Counted under the lock that `changed` bumps the count under: a waiter registered
        // before a change is seen by it, and one registering after sees the new count.
        changes.waiters += 1;
        while changes.count == seen {
            match deadline {
                None => {
                    changes = signal
                        .wait(changes)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Some(d) => {
                    let (guard, timed_out) = wait_before(signal, changes, d);
                    changes = guard;
                    if timed_out {
                        break;
                    }
                }
            }
        }
        changes.waiters -= 1;
    }

    /// The nudge count, to be read before the indexer checks whether to index now.
    pub fn nudges(&self) -> u64 {
        *self
            .nudges
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// End the indexer's accumulation now (see `nudges`).
    pub fn nudge(&self) {
        let (lock, signal) = &self.nudges;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        signal.notify_all();
    }

    /// Block until the nudge count differs from `seen` or the deadline passes.
    pub fn wait_nudge(&self, seen: u64, deadline: Instant) {
        let (lock, signal) = &self.nudges;
        let mut count = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *count == seen {
            let (guard, timed_out) = wait_before(signal, count, deadline);
            count = guard;
            if timed_out {
                return;
            }
        }
    }

    /// Mark the store closed (its writer has stopped) and wake every waiter.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed();
        self.nudge();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn poison(&self, cause: String) {
        if self.poison.set(cause.clone()).is_ok() {
            tracing::error!(%cause, "store poisoned: it refuses writes until reopened");
        }
        self.changed();
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

/// Wait on `signal` with `guard` until woken or `deadline`; the guard again, and whether the
/// deadline had passed (then it did not wait).
fn wait_before<'a, T>(
    signal: &Condvar,
    guard: std::sync::MutexGuard<'a, T>,
    deadline: Instant,
) -> (std::sync::MutexGuard<'a, T>, bool) {
    let now = Instant::now();
    if now >= deadline {
        return (guard, true);
    }
    let guard = signal
        .wait_timeout(guard, deadline - now)
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .0;
    (guard, false)
}

/// The change signal's state: how many changes, and how many threads wait for the next.
#[derive(Default)]
struct Changes {
    count: u64,
    waiters: u32,
}
