//! A failed sync is fatal to the handle: the batch's callers and every later append get
//! `Poisoned`, reads keep working, and reopening recovers everything acknowledged before. A panic
//! in the writer (fault-matrix row 20), on its thread or on an appender's, poisons the same way,
//! and nobody hangs.

mod common;
use common::*;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use streamlog::mapping::Mapping;
use streamlog::storage::real::RealBackend;
use streamlog::storage::{Backend, EntryKind, FileHandle, OpenMode};
use streamlog::{Error, ExpectedVersion, Options, Store, SyncMode};

/// The real backend, except that every sync fails once `fail` is set, and every write panics
/// once `panic` is set (writes run in the writer: on its thread, or on an appender's that found
/// it idle).
#[derive(Debug, Default)]
struct FailingSync {
    fail: Arc<AtomicBool>,
    panic: Arc<AtomicBool>,
}

struct File {
    inner: Box<dyn FileHandle>,
    fail: Arc<AtomicBool>,
    panic: Arc<AtomicBool>,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc_eio())
}

const fn libc_eio() -> i32 {
    5
}

impl FileHandle for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        assert!(
            !self.panic.load(Ordering::SeqCst),
            "injected panic in the writer thread"
        );
        self.inner.write_all_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.inner.sync_data()
    }
    fn sync_fs(&self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        self.inner.sync_fs()
    }
    fn map(&self, len: u64) -> io::Result<Mapping> {
        self.inner.map(len)
    }
}

impl Backend for FailingSync {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        Ok(Box::new(File {
            inner: RealBackend.open(path, mode)?,
            fail: Arc::clone(&self.fail),
            panic: Arc::clone(&self.panic),
        }))
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        RealBackend.create_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        RealBackend.sync_dir(path)
    }
    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(eio());
        }
        RealBackend.sync_fs(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealBackend.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealBackend.rename(from, to)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, EntryKind)>> {
        RealBackend.read_dir(path)
    }
    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        RealBackend.kind(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        RealBackend.lock(path)
    }
}

/// A lone appender's batches run on its own thread (`caller_commits`) or on the writer thread.
fn poison_then_recover(sync: SyncMode, caller_commits: bool) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FailingSync::default());
    let fail = Arc::clone(&backend.fail);
    let options = Options {
        sync,
        caller_commits,
        ..Options::default()
    };
    let store = Store::open_with_backend(dir.path(), options.clone(), backend).unwrap();
    for i in 0..10u64 {
        store
            .append("s", ExpectedVersion::Exact(i), [event(i)])
            .unwrap();
    }
    fail.store(true, Ordering::SeqCst);
    let e = store
        .append("s", ExpectedVersion::Exact(10), [event(10)])
        .unwrap_err();
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    assert!(
        e.to_string().contains("reopen"),
        "the message says what to do: {e}"
    );
    // No retry, even once the disk is fine again: the kernel may have dropped the pages.
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        store.append("t", ExpectedVersion::Any, [event(0)]),
        Err(Error::Poisoned { .. })
    ));
    // Reads of acknowledged events still work.
    assert_eq!(stream_data(&store, "s").len(), 10);
    assert_eq!(store.head_position().get(), 10);
    drop(store);
    let store = Store::open_with(dir.path(), options).unwrap();
    let data = stream_data(&store, "s");
    assert!(
        data.len() == 10 || data.len() == 11,
        "acknowledged events survive; the failed one may or may not"
    );
    assert_eq!(
        &data[..10],
        &(0..10)
            .map(|i| format!("data-{i}").into_bytes())
            .collect::<Vec<_>>()[..]
    );
    let v = store.stream_version("s").unwrap().unwrap();
    store
        .append("s", ExpectedVersion::Exact(v), [event(99)])
        .unwrap();
    check_invariants(&store);
}

#[test]
fn syncfs_failure_poisons_and_reopen_recovers() {
    poison_then_recover(SyncMode::SyncFs, true);
}

#[test]
fn fdatasync_failure_poisons_and_reopen_recovers() {
    poison_then_recover(SyncMode::Fdatasync, true);
}

#[test]
fn journal_fdatasync_failure_poisons_and_reopen_recovers() {
    poison_then_recover(SyncMode::Journal, true);
    poison_then_recover(SyncMode::Journal, false);
}

#[test]
fn concurrent_waiters_of_a_failing_batch_all_get_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FailingSync::default());
    backend.fail.store(true, Ordering::SeqCst);
    let store = Store::open_with_backend(
        dir.path(),
        Options::default(),
        Arc::clone(&backend) as Arc<dyn Backend>,
    );
    // Opening syncs too: a store whose first sync fails does not open.
    assert!(matches!(store, Err(Error::Io { .. })));
    backend.fail.store(false, Ordering::SeqCst);
    let store = Store::open_with_backend(
        dir.path(),
        Options::default(),
        Arc::clone(&backend) as Arc<dyn Backend>,
    )
    .unwrap();
    backend.fail.store(true, Ordering::SeqCst);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.append(&format!("s{t}"), ExpectedVersion::Any, [event(t)])
            })
        })
        .collect();
    for t in threads {
        assert!(matches!(t.join().unwrap(), Err(Error::Poisoned { .. })));
    }
}

#[test]
fn a_writer_panic_poisons_and_nobody_hangs() {
    // On the appenders' threads (each finding the writer idle), and on the writer thread alone.
    for caller_commits in [true, false] {
        a_writer_panic_poisons(caller_commits);
    }
}

fn a_writer_panic_poisons(caller_commits: bool) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FailingSync::default());
    let store = Store::open_with_backend(
        dir.path(),
        Options {
            caller_commits,
            ..Options::default()
        },
        Arc::clone(&backend) as Arc<dyn Backend>,
    )
    .unwrap();
    for i in 0..5u64 {
        store
            .append("s", ExpectedVersion::Exact(i), [event(i)])
            .unwrap();
    }
    backend.panic.store(true, Ordering::SeqCst);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.append(&format!("p{t}"), ExpectedVersion::Any, [event(t)])
            })
        })
        .collect();
    for t in threads {
        let e = t.join().unwrap().unwrap_err();
        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    }
    backend.panic.store(false, Ordering::SeqCst);
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, [event(9)]),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(stream_data(&store, "s").len(), 5);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.stream_version("s").unwrap(), Some(5));
    store
        .append("s", ExpectedVersion::Exact(5), [event(5)])
        .unwrap();
    check_invariants(&store);
}
