//! Indexes as projections: the positions of each category and each event type, kept by a
//! background indexer that follows the global order (segment-format.md §17).

use crate::error::{Error, Result};
use crate::format::checkpoint::{Checkpoint, CHECKPOINT_FILE_BYTES};
use crate::format::projection::{
    decode_posting, encode_posting, IndexKind, PostingsHeader, POSTINGS_NAME_BYTES_MAX,
    POSTING_BYTES, POSTING_POSITION_MAX,
};
use crate::layout::{CHECKPOINT_FILE, TEMP_SUFFIX};
use crate::limits::{
    INDEXER_BATCH_POSITIONS, INDEXER_CHUNK_POSITIONS, INDEXER_DELAY_MS, INDEX_READ_CHUNK_POSTINGS,
};
use crate::options::SyncMode;
use crate::read::{AllIter, RecordedEvent};
use crate::shared::Shared;
use crate::storage::{EntryKind, FileHandle, OpenMode};
use crate::types::{Direction, Position};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const PROJECTIONS_DIR: &str = "projections";

/// The category of a stream: its id up to the first `-` (`order-42` is in `order`); `None` for
/// an id without one, or starting with one.
#[must_use]
pub fn category_of(stream: &str) -> Option<&str> {
    stream
        .split_once('-')
        .map(|(c, _)| c)
        .filter(|c| !c.is_empty())
}

/// What the indexer reports (`Store::index_status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    /// Every event at or below this position is indexed (durably).
    pub indexed: Position,
    /// The store's head when asked.
    pub head: Position,
    /// Positions committed but not indexed yet.
    pub lag: u64,
    /// Why the indexer stopped, if it did (an I/O error); reads stay complete by scanning.
    pub error: Option<String>,
}

struct PostingsFile {
    id: u64,
    path: PathBuf,
    header_bytes: u64,
    /// Where the next posting goes.
    len: u64,
}

#[derive(Default)]
struct State {
    loaded: bool,
    files: HashMap<(IndexKind, String), PostingsFile>,
    next_id: u64,
    /// The last checkpoint written (its `head` is the indexed position).
    checkpoint_sequence: u64,
    error: Option<String>,
}

/// The indexes of a store, shared by the indexer and the readers.
#[derive(Default)]
pub struct Indexes {
    state: Mutex<State>,
    /// Every event at or below this position is indexed; valid once loaded.
    indexed: AtomicU64,
    progress: Condvar,
    rebuild: AtomicBool,
    /// Someone waits for the indexer (`wait_indexed`): index now, do not accumulate.
    waited_for: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn dir(shared: &Shared) -> PathBuf {
    shared.root.join(PROJECTIONS_DIR)
}

fn file_name(kind: IndexKind, id: u64) -> String {
    format!("{}-{id:08x}.pos", kind.letter())
}

fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".pos")?;
    let (letter, id) = stem.split_once('-')?;
    if !(letter == "c" || letter == "t") || id.len() != 8 {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

impl Indexes {
    /// The state, loaded (and repaired: segment-format.md §17) on first use.
    fn load<'a>(&'a self, shared: &Shared) -> Result<MutexGuard<'a, State>> {
        let mut state = lock(&self.state);
        if !state.loaded {
            let (loaded, indexed) = load(shared)?;
            *state = loaded;
            self.indexed.store(indexed, Ordering::Release);
        }
        Ok(state)
    }

    /// How far the indexer is, and how far behind.
    ///
    /// # Errors
    /// `Corrupt` or `Io` loading the indexes.
    pub fn status(&self, shared: &Shared) -> Result<IndexStatus> {
        let state = self.load(shared)?;
        let indexed = self.indexed.load(Ordering::Acquire);
        let head = shared.head();
        Ok(IndexStatus {
            indexed: Position(indexed),
            head: Position(head),
            lag: head.saturating_sub(indexed),
            error: state.error.clone(),
        })
    }

    /// Wait until every event at or below `position` is indexed, or `timeout` passes; whether
    /// it is.
    ///
    /// # Errors
    /// `Corrupt` or `Io` loading the indexes.
    pub fn wait_indexed(&self, shared: &Shared, position: u64, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut state = self.load(shared)?;
        if self.indexed.load(Ordering::Acquire) < position {
            self.waited_for.store(true, Ordering::Release);
            shared.changed();
            shared.nudge();
        }
        // Whatever the outcome, the indexer goes back to accumulating.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&self.waited_for);
        loop {
            if self.indexed.load(Ordering::Acquire) >= position {
                return Ok(true);
            }
            if state.error.is_some() || shared.is_closed() {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            state = self
                .progress
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Ask the indexer to start over from nothing, and wait until it has reset.
    pub fn rebuild(&self, shared: &Shared) -> Result<()> {
        let mut state = self.load(shared)?;
        self.rebuild.store(true, Ordering::Release);
        shared.changed();
        shared.nudge();
        while self.rebuild.load(Ordering::Acquire) {
            if shared.is_closed() {
                return Err(Error::Closed);
            }
            if let Some(e) = &state.error {
                return Err(Error::Poisoned { cause: e.clone() });
            }
            state = self
                .progress
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }

    /// Whether publishing `head` after `previous` made `INDEXER_BATCH_POSITIONS` positions wait
    /// for the indexer, which ends its accumulation.
    pub(crate) fn lag_crossed(&self, previous: u64, head: u64) -> bool {
        let indexed = self.indexed.load(Ordering::Acquire);
        head.saturating_sub(indexed) >= INDEXER_BATCH_POSITIONS
            && previous.saturating_sub(indexed) < INDEXER_BATCH_POSITIONS
    }

    fn set_error(&self, e: &Error) {
        let mut state = lock(&self.state);
        tracing::error!(error = %e, "the indexer stopped; reads by category and type scan the global order instead");
        state.error = Some(e.to_string());
        self.progress.notify_all();
    }
}

/// Read `projections/`: the checkpoint, every postings file's header, and cut what the last
/// checkpoint does not cover.
fn load(shared: &Shared) -> Result<(State, u64)> {
    let dir = dir(shared);
    let mut state = State {
        loaded: true,
        next_id: 1,
        ..State::default()
    };
    let cpath = dir.join(CHECKPOINT_FILE);
    let indexed =
        match crate::storage::read_prefix(&*shared.backend, &cpath, CHECKPOINT_FILE_BYTES as usize)
            .map_err(|e| Error::io("read", &cpath, e))?
        {
            None => 0,
            Some(bytes) => {
                let (c, _) = Checkpoint::decode_file(&bytes)
                    .map_err(|e| Error::corrupt(&cpath, 0, format!("indexer checkpoint: {e}")))?;
                if c.store_id != shared.manifest.store_id {
                    return Err(Error::corrupt(
                        &cpath,
                        16,
                        "indexer checkpoint of another store",
                    ));
                }
                state.checkpoint_sequence = c.sequence;
                c.head
            }
        };
    if indexed > shared.head() {
        return Err(Error::corrupt(
            &cpath,
            32,
            format!(
                "indexer checkpoint {indexed} is past the store's head {}",
                shared.head()
            ),
        ));
    }
    let names = match shared.backend.read_dir(&dir) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((state, indexed)),
        Err(e) => return Err(Error::io("list folder", &dir, e)),
    };
    for (name, kind) in names {
        let path = dir.join(&name);
        if kind == EntryKind::File && name.ends_with(TEMP_SUFFIX) {
            remove(shared, &path)?;
            continue;
        }
        let Some(id) = parse_file_name(&name) else {
            continue;
        };
        let prefix =
            crate::storage::read_prefix(&*shared.backend, &path, 64 + POSTINGS_NAME_BYTES_MAX)
                .map_err(|e| Error::io("read", &path, e))?
                .unwrap_or_default();
        let header = match PostingsHeader::decode(&prefix) {
            Ok(h) => h,
            Err(e) => {
                // Created in a chunk that no checkpoint covers: it holds nothing indexed.
                tracing::warn!(path = %path.display(), error = %e, "removing a postings file whose creation was interrupted");
                remove(shared, &path)?;
                continue;
            }
        };
        if header.store_id != shared.manifest.store_id || header.id != id {
            return Err(Error::corrupt(
                &path,
                16,
                "postings file of another store or name",
            ));
        }
        let len = cut_tail(shared, &path, &header, indexed)?;
        state.next_id = state.next_id.max(id + 1);
        state.files.insert(
            (header.kind, header.name.clone()),
            PostingsFile {
                id,
                path,
                header_bytes: header.header_bytes(),
                len,
            },
        );
    }
    Ok((state, indexed))
}

fn remove(shared: &Shared, path: &Path) -> Result<()> {
    match shared.backend.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Cut postings from the end while they fail their check or name a position above `indexed`;
/// the file's new length.
fn cut_tail(shared: &Shared, path: &Path, header: &PostingsHeader, indexed: u64) -> Result<u64> {
    let f = shared
        .backend
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", path, e))?;
    let len = f.len().map_err(|e| Error::io("stat", path, e))?;
    let start = header.header_bytes();
    let mut end = start + (len.saturating_sub(start) / POSTING_BYTES) * POSTING_BYTES;
    while end > start {
        let mut b = [0u8; 8];
        let n = crate::storage::read_full(&*f, &mut b, end - POSTING_BYTES)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 8 && decode_posting(header.id, b).is_some_and(|p| p <= indexed) {
            break;
        }
        end -= POSTING_BYTES;
    }
    if end != len {
        tracing::warn!(path = %path.display(), offset = end, bytes = len - end, "cutting postings the indexer checkpoint does not cover");
        // Durability: the indexer syncs before its next checkpoint.
        f.set_len(end)
            .map_err(|e| Error::io("cut postings", path, e))?;
    }
    Ok(end)
}

/// The indexer thread: until the store closes, index each chunk of the global order as it is
/// committed. An I/O error stops it (reads stay complete by scanning).
pub fn run(shared: &Arc<Shared>) {
    let indexes = &shared.indexes;
    if let Err(e) = indexes.load(shared) {
        indexes.set_error(&e);
        return;
    }
    // When the oldest position not indexed yet was first seen.
    let mut waiting_since: Option<Instant> = None;
    loop {
        // Read before the checks below: a close (or any change) after them is then seen by
        // the waits, which return at once.
        let seen = shared.changes();
        let nudged = shared.nudges();
        if shared.is_closed() {
            return;
        }
        let result = if indexes.rebuild.load(Ordering::Acquire) {
            reset(shared)
        } else {
            let indexed = indexes.indexed.load(Ordering::Acquire);
            let head = shared.head();
            if indexed >= head {
                waiting_since = None;
                shared.wait_change(seen, None);
                continue;
            }
            // Let commits accumulate into one chunk: two syncs per chunk, however large. While
            // it waits, only a nudge wakes it early, not every commit (engine/shared.rs).
            let since = *waiting_since.get_or_insert_with(Instant::now);
            let deadline = since + Duration::from_millis(INDEXER_DELAY_MS);
            if head - indexed < INDEXER_BATCH_POSITIONS
                && Instant::now() < deadline
                && !indexes.waited_for.load(Ordering::Acquire)
            {
                shared.wait_nudge(nudged, deadline);
                continue;
            }
            waiting_since = None;
            index_chunk(
                shared,
                indexed + 1,
                head.min(indexed + INDEXER_CHUNK_POSITIONS),
            )
        };
        if let Err(e) = result {
            indexes.set_error(&e);
            return;
        }
    }
}

/// Index positions `from ..= to` (segment-format.md §17, steps 1-3).
fn index_chunk(shared: &Arc<Shared>, from: u64, to: u64) -> Result<()> {
    let mut postings: BTreeMap<(IndexKind, String), Vec<u64>> = BTreeMap::new();
    for event in AllIter::new(Arc::clone(shared), Position(from), Direction::Forward) {
        let event = event?;
        let p = event.position().get();
        if p > to {
            break;
        }
        if p > POSTING_POSITION_MAX {
            return Err(Error::InvalidOptions {
                reason: "positions beyond 2^40 cannot be indexed".into(),
            });
        }
        if let Some(c) = category_of(event.stream_id()) {
            if c.len() <= POSTINGS_NAME_BYTES_MAX {
                postings
                    .entry((IndexKind::Category, c.to_string()))
                    .or_default()
                    .push(p);
            }
        }
        postings
            .entry((IndexKind::EventType, event.event_type().to_string()))
            .or_default()
            .push(p);
    }
    let indexes = &shared.indexes;
    let dir = dir(shared);
    let backend = &shared.backend;
    let fdatasync = shared.options.sync == SyncMode::Fdatasync;
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut to_sync: Vec<(Box<dyn FileHandle>, PathBuf)> = Vec::new();
    if !postings.is_empty() {
        ensure_dir(shared, &dir, &mut dirs)?;
    }
    for ((kind, name), positions) in postings {
        let key = (kind, name.clone());
        // Only this thread adds files or grows them: the lock is held for the lookup alone.
        let (id, path, offset, new) = {
            let mut state = indexes.load(shared)?;
            let next = state.next_id;
            let file = state
                .files
                .entry(key.clone())
                .or_insert_with(|| PostingsFile {
                    id: next,
                    path: dir.join(file_name(kind, next)),
                    header_bytes: 0,
                    len: 0,
                });
            let new = file.header_bytes == 0;
            let out = (file.id, file.path.clone(), file.len, new);
            if new {
                state.next_id += 1;
            }
            out
        };
        let mut bytes = Vec::with_capacity(positions.len() * 8 + 64);
        let (f, start) = if new {
            let header = PostingsHeader {
                store_id: shared.manifest.store_id,
                id,
                kind,
                name,
            };
            bytes.extend_from_slice(&header.encode());
            let f = backend
                .open(&path, OpenMode::CreateNew)
                .map_err(|e| Error::io("create postings", &path, e))?;
            dirs.insert(dir.clone());
            (f, 0)
        } else {
            let f = backend
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open postings", &path, e))?;
            (f, offset)
        };
        let header_bytes = bytes.len() as u64;
        for p in &positions {
            bytes.extend_from_slice(&encode_posting(id, *p));
        }
        f.write_all_at(&bytes, start)
            .map_err(|e| Error::io("write postings", &path, e))?;
        {
            let mut state = lock(&indexes.state);
            if let Some(file) = state.files.get_mut(&key) {
                if new {
                    file.header_bytes = header_bytes;
                }
                file.len = start + bytes.len() as u64;
            }
        }
        if fdatasync {
            to_sync.push((f, path));
        } else if to_sync.is_empty() {
            // One descriptor to call `syncfs` through.
            to_sync.push((f, path));
        }
    }
    // Durability: the postings are on disk before a checkpoint claims them.
    if fdatasync {
        for (f, path) in &to_sync {
            f.sync_data().map_err(|e| Error::io("fdatasync", path, e))?;
        }
        for d in &dirs {
            backend
                .sync_dir(d)
                .map_err(|e| Error::io("fsync directory", d, e))?;
        }
    } else if let Some((f, _)) = to_sync.first() {
        f.sync_fs()
            .map_err(|e| Error::io("syncfs", &shared.root, e))?;
    } else if !dirs.is_empty() {
        backend
            .sync_dir(&shared.root)
            .map_err(|e| Error::io("fsync directory", &shared.root, e))?;
    }
    write_checkpoint(shared, to)
}

fn ensure_dir(shared: &Shared, dir: &Path, dirs: &mut BTreeSet<PathBuf>) -> Result<()> {
    match shared.backend.create_dir(dir) {
        Ok(()) => {
            dirs.insert(shared.root.clone());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create folder", dir, e)),
    }
}

/// Write the next checkpoint slot claiming `indexed`, sync it, publish it.
fn write_checkpoint(shared: &Shared, indexed: u64) -> Result<()> {
    let indexes = &shared.indexes;
    let dir = dir(shared);
    let path = dir.join(CHECKPOINT_FILE);
    let sequence = lock(&indexes.state).checkpoint_sequence + 1;
    let c = Checkpoint {
        store_id: shared.manifest.store_id,
        sequence,
        head: indexed,
        clean: false,
        journal_sequence: 0,
        journal_offset: 0,
    };
    match shared.backend.open(&path, OpenMode::ReadWrite) {
        Ok(f) => {
            f.write_all_at(&c.encode(), c.slot_offset())
                .map_err(|e| Error::io("write indexer checkpoint", &path, e))?;
            f.sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Created whole under another name and renamed: a torn creation (found by the
            // power-cut walk: a size change lost with the file) never takes the name.
            let mut dirs = BTreeSet::new();
            ensure_dir(shared, &dir, &mut dirs)?;
            let tmp = dir.join(format!("{CHECKPOINT_FILE}{TEMP_SUFFIX}"));
            remove(shared, &tmp)?;
            let f = shared
                .backend
                .open(&tmp, OpenMode::CreateNew)
                .map_err(|e| Error::io("create", &tmp, e))?;
            f.set_len(CHECKPOINT_FILE_BYTES)
                .map_err(|e| Error::io("size", &tmp, e))?;
            f.write_all_at(&c.encode(), c.slot_offset())
                .map_err(|e| Error::io("write indexer checkpoint", &tmp, e))?;
            f.sync_data().map_err(|e| Error::io("fdatasync", &tmp, e))?;
            shared
                .backend
                .rename(&tmp, &path)
                .map_err(|e| Error::io("rename", &tmp, e))?;
            // Durability: the name is durable before the checkpoint in it is relied on.
            dirs.insert(dir.clone());
            for d in dirs.iter().rev() {
                shared
                    .backend
                    .sync_dir(d)
                    .map_err(|e| Error::io("fsync directory", d, e))?;
            }
        }
        Err(e) => return Err(Error::io("open", &path, e)),
    }
    let mut state = lock(&indexes.state);
    state.checkpoint_sequence = sequence;
    indexes.indexed.store(indexed, Ordering::Release);
    indexes.progress.notify_all();
    Ok(())
}

/// Start over: the checkpoint goes back to 0 first (so a crash in between leaves files that the
/// next load cuts to nothing), then every postings file is removed.
fn reset(shared: &Shared) -> Result<()> {
    let indexes = &shared.indexes;
    write_checkpoint(shared, 0)?;
    let files: Vec<PathBuf> = {
        let mut state = lock(&indexes.state);
        let files = state.files.drain().map(|(_, f)| f.path).collect();
        state.next_id = 1;
        files
    };
    for p in &files {
        remove(shared, p)?;
    }
    let dir = dir(shared);
    if !files.is_empty() {
        shared
            .backend
            .sync_dir(&dir)
            .map_err(|e| Error::io("fsync directory", &dir, e))?;
    }
    indexes.rebuild.store(false, Ordering::Release);
    let _state = lock(&indexes.state);
    indexes.progress.notify_all();
    Ok(())
}

/// What an indexed read selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Category(String),
    EventType(String),
}

impl Selector {
    fn kind(&self) -> (IndexKind, &str) {
        match self {
            Selector::Category(c) => (IndexKind::Category, c),
            Selector::EventType(t) => (IndexKind::EventType, t),
        }
    }

    #[must_use]
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        match self {
            Selector::Category(c) => category_of(event.stream_id()) == Some(c.as_str()),
            Selector::EventType(t) => event.event_type() == t,
        }
    }
}

/// The postings an indexed read has still to read.
struct Postings {
    file: Box<dyn FileHandle>,
    path: PathBuf,
    id: u64,
    /// The next byte to read.
    at: u64,
    /// The file's length when the read began.
    len: u64,
}

/// Events of one category or type in position order, from a position on: through the postings
/// up to the indexed position, then by filtering the global order up to the head of the call
/// (`Store::read_category`, `Store::read_event_type`).
pub struct IndexedIter {
    shared: Arc<Shared>,
    selector: Selector,
    postings: Option<Postings>,
    from: u64,
    indexed: u64,
    /// The last position yielded or skipped: postings must increase.
    last: u64,
    current: Option<AllIter>,
    /// The filtered global order after `indexed` has begun.
    tail: bool,
    end: u64,
    failed: bool,
    skip_invalidated: bool,
}

impl IndexedIter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        selector: Selector,
        from: Position,
    ) -> Result<IndexedIter> {
        let head = shared.head();
        let (indexed, file) = {
            let state = shared.indexes.load(&shared)?;
            let indexed = shared.indexes.indexed.load(Ordering::Acquire).min(head);
            let (kind, name) = selector.kind();
            let file = state
                .files
                .get(&(kind, name.to_string()))
                .filter(|f| f.header_bytes > 0)
                .map(|f| (f.id, f.path.clone(), f.header_bytes, f.len));
            (indexed, file)
        };
        let from = from.get().max(1);
        let mut postings = None;
        if let Some((id, path, header_bytes, len)) = file {
            if from <= indexed {
                let f = shared
                    .backend
                    .open(&path, OpenMode::Read)
                    .map_err(|e| Error::io("open postings", &path, e))?;
                let start = first_at_or_after(&*f, &path, id, header_bytes, len, from)?;
                postings = Some(Postings {
                    file: f,
                    path,
                    id,
                    at: start,
                    len,
                });
            }
        }
        Ok(IndexedIter {
            shared,
            selector,
            postings,
            from,
            indexed,
            last: 0,
            current: None,
            tail: false,
            end: head,
            failed: false,
            skip_invalidated: false,
        })
    }

    /// Skip the events of invalidated changesets (`Store::invalidate`), as known when each
    /// chunk is read; the invalidation events are still yielded.
    #[must_use]
    pub fn skip_invalidated(mut self) -> IndexedIter {
        self.skip_invalidated = true;
        self
    }

    fn reader(&self, it: AllIter) -> Result<AllIter> {
        if self.skip_invalidated {
            it.skip_invalidated()
        } else {
            Ok(it)
        }
    }

    /// The last position this iterator covers (the head when it was made).
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// The next chunk of postings, as an iterator over their events; `None` when the postings
    /// up to the indexed position are read.
    fn next_chunk(&mut self) -> Result<Option<AllIter>> {
        let Some(Postings {
            file: f,
            path,
            id,
            at,
            len,
        }) = &mut self.postings
        else {
            return Ok(None);
        };
        let mut positions = Vec::new();
        while positions.is_empty() && *at < *len {
            let n = ((*len - *at) / POSTING_BYTES).min(INDEX_READ_CHUNK_POSTINGS);
            let mut bytes = vec![0u8; (n * POSTING_BYTES) as usize];
            let got = crate::storage::read_full(&**f, &mut bytes, *at)
                .map_err(|e| Error::io("read postings", path.as_path(), e))?;
            bytes.truncate(got - got % 8);
            if bytes.is_empty() {
                break;
            }
            *at += bytes.len() as u64;
            for chunk in bytes.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                // A stray posting (failing its check, or out of order) is skipped; the events
                // read are checked against the selector anyway.
                let Some(p) = decode_posting(*id, b) else {
                    continue;
                };
                if p > self.indexed {
                    *at = *len;
                    break;
                }
                if p >= self.from && p > self.last {
                    self.last = p;
                    positions.push(p);
                }
            }
        }
        if positions.is_empty() {
            self.postings = None;
            return Ok(None);
        }
        self.reader(AllIter::at_positions(Arc::clone(&self.shared), positions))
            .map(Some)
    }
}

/// The byte offset of the first posting at or after `from` (a binary search: postings
/// increase).
fn first_at_or_after(
    f: &dyn FileHandle,
    path: &Path,
    id: u64,
    header_bytes: u64,
    len: u64,
    from: u64,
) -> Result<u64> {
    let count = len.saturating_sub(header_bytes) / POSTING_BYTES;
    let (mut low, mut high) = (0u64, count);
    while low < high {
        let mid = low + (high - low) / 2;
        let mut b = [0u8; 8];
        crate::storage::read_full(f, &mut b, header_bytes + mid * POSTING_BYTES)
            .map_err(|e| Error::io("read postings", path, e))?;
        // A stray posting reads as 0 here: the search may start early, never late.
        if decode_posting(id, b).unwrap_or(0) < from {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(header_bytes + low * POSTING_BYTES)
}

impl Iterator for IndexedIter {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(it) = &mut self.current {
                match it.next() {
                    Some(Ok(e)) if self.selector.matches(&e) => return Some(Ok(e)),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    None => self.current = None,
                }
            }
            if self.tail {
                return None;
            }
            match self.next_chunk() {
                Ok(Some(it)) => self.current = Some(it),
                Ok(None) => {
                    // The indexer's lag: filter the global order after what it has indexed.
                    self.tail = true;
                    let start = self.from.max(self.indexed + 1);
                    let mut it = AllIter::new(
                        Arc::clone(&self.shared),
                        Position(start),
                        Direction::Forward,
                    );
                    it.stop_at(self.end);
                    match self.reader(it) {
                        Ok(it) => self.current = Some(it),
                        Err(e) => {
                            self.failed = true;
                            return Some(Err(e));
                        }
                    }
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Indexes;
    use crate::limits::INDEXER_BATCH_POSITIONS;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_publish_that_makes_a_batch_of_positions_wait_nudges_the_indexer_once() {
        let indexes = Indexes::default();
        indexes.indexed.store(100, Ordering::Release);
        let full = 100 + INDEXER_BATCH_POSITIONS;
        assert!(!indexes.lag_crossed(100, full - 1));
        assert!(indexes.lag_crossed(100, full));
        assert!(indexes.lag_crossed(full - 1, full + 5));
        // Already past the mark: the nudge was given by the publish that crossed it.
        assert!(!indexes.lag_crossed(full, full + 1));
        // Caught up since: the next crossing nudges again.
        indexes.indexed.store(full, Ordering::Release);
        assert!(!indexes.lag_crossed(full + 1, full + 2));
        assert!(indexes.lag_crossed(full + 1, full + INDEXER_BATCH_POSITIONS));
    }
}
