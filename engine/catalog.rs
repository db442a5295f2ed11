//! Streams: finding a stream's files from its id, and loading its committed state
//! (segment-format.md §9). Loaded states are shared by the writer and the readers.

use crate::cache::{check_segment_header, decode_error};
use crate::error::{Error, Result};
use crate::format::segment::{
    decode_record, peek_record_header, Control, SegmentHeader, CONTROL_FLAG_CLOSED,
    CONTROL_OP_CLOSE, CONTROL_OP_DELETE, CONTROL_OP_SNAPSHOT, CONTROL_OP_TRUNCATE,
    RECORD_HEADER_BYTES, RECORD_KIND_CONTROL,
};
use crate::format::DecodeError;
use crate::idle::IdleStream;
use crate::layout::{segment_path, stream_hash, StreamKey};
use crate::limits::{SHARED_STREAMS_SWEEP_MIN, STREAM_COLLISIONS_MAX, STREAM_ID_BYTES_MAX};
use crate::shared::Shared;
use crate::storage::OpenMode;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// One segment's committed extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentState {
    pub number: u32,
    pub first_version: u64,
    pub header_bytes: u64,
    /// End of the last committed record (padding included).
    pub end: u64,
    /// Version of the last committed record; `first_version - 1` when it holds none.
    pub last_version: u64,
}

/// A stream's committed state, as readers may see it.
#[derive(Debug, Clone)]
pub struct StreamState {
    /// Last committed version, 0 when the stream holds no committed event.
    pub version: u64,
    /// Number of committed appends.
    pub changeset: u64,
    pub segments: Vec<SegmentState>,
    /// The first version a reader can see: 1, or a snapshot's version (segment-format.md §12).
    pub first_version: u64,
    /// The number of the segment after segment 0: 1, or the `next_segment` of a rewrite.
    pub after_zero: u32,
    pub closed: bool,
    pub deleted: bool,
    /// Counts the rewrites of segment 0 seen by this process: a reader holding an older state
    /// reads on from the new one.
    pub generation: u64,
    /// The position of the base record of a rewritten segment 0 (segment-format.md §12); 0
    /// when it was never rewritten. A keys file written for another base is stale (§15).
    pub base_position: u64,
    /// The stream's packed records (segment-format.md §19), if it has any.
    pub packed: Option<PackedState>,
}

/// Where a stream's packed records end (segment-format.md §19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedState {
    /// The position of its last packed record: its chain starts there.
    pub last: u64,
    /// Bytes its packed records take in their packs.
    pub bytes: u64,
    /// The version of its last packed record: its segments, if any, start after it.
    pub version: u64,
    /// The offset of its entry in its fan-out's table.
    pub entry_offset: u64,
}

impl Default for StreamState {
    fn default() -> StreamState {
        StreamState {
            version: 0,
            changeset: 0,
            segments: Vec::new(),
            first_version: 1,
            after_zero: 1,
            closed: false,
            deleted: false,
            generation: 0,
            base_position: 0,
            packed: None,
        }
    }
}

impl StreamState {
    /// The segment number that follows `n` in this stream.
    #[must_use]
    pub fn next_segment(&self, n: u32) -> u32 {
        if n == 0 {
            self.after_zero
        } else {
            n + 1
        }
    }
}

/// A stream known to have files: its identity and its committed state.
#[derive(Debug)]
pub struct StreamMeta {
    pub id: Arc<str>,
    pub key: StreamKey,
    pub state: RwLock<StreamState>,
}

impl StreamMeta {
    pub fn snapshot(&self) -> StreamState {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn version(&self) -> u64 {
        self.read().version
    }

    pub fn is_deleted(&self) -> bool {
        self.read().deleted
    }

    /// The first version a reader can see (after a snapshot or a truncation).
    pub fn first_version(&self) -> u64 {
        self.read().first_version
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StreamState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The result of looking a stream id up on disk.
pub enum Probe {
    /// Files with this stream id exist (the state's version is 0 when none of their records is
    /// committed: left by an unacknowledged batch).
    Found(Arc<StreamMeta>),
    /// No file holds this id; `collision` is the first free slot, `file_exists` when that slot
    /// holds a file left by an unacknowledged batch that may be overwritten.
    Absent { collision: u16, file_exists: bool },
}

/// The cache of loaded streams: the ones someone may hold as shared `StreamMeta`s, and the
/// idle ones encoded (`idle::IdleStream`), each found again without reading the disk.
pub struct Catalog {
    streams: Mutex<Streams>,
    /// Bound of the streams kept, shared and idle together (`Options::streams_cached_max`).
    capacity: usize,
}

struct Streams {
    /// Streams as shared states: the writer's and readers' (who may hold them), and the ones
    /// loaded since the last sweep.
    shared: HashMap<Arc<str>, Arc<StreamMeta>>,
    /// Streams nobody held at the last sweep, encoded. A stream is in one map or the other,
    /// never both.
    idle: HashSet<IdleStream>,
    /// Size of `shared` at which the next sweep runs: at least `SHARED_STREAMS_SWEEP_MIN` (or
    /// the capacity, if lower), and twice what the last sweep kept, so that streams held by the
    /// writer or by readers (which a sweep cannot encode) do not make every insert a sweep.
    sweep_at: usize,
}

impl Streams {
    fn insert(&mut self, meta: Arc<StreamMeta>, capacity: usize) {
        if self.shared.len() >= self.sweep_at {
            self.sweep(capacity);
        }
        if self.shared.len() + self.idle.len() >= capacity && !self.idle.is_empty() {
            // Over the bound: forget half the idle streams (any half: the set keeps no order of
            // use). Streams that are held stay, and may hold more than the bound.
            let mut keep = true;
            self.idle.retain(|_| {
                keep = !keep;
                keep
            });
            if self.idle.len() < self.idle.capacity() / 4 {
                self.idle.shrink_to_fit();
            }
        }
        let removed = self.idle.remove(meta.id.as_bytes());
        debug_assert!(!removed, "a stream in both maps");
        self.shared.insert(Arc::clone(&meta.id), meta);
    }

    /// Encode the streams nobody holds (a count of one is the map's own: anyone else gets
    /// it through the catalog's lock, which the caller holds).
    fn sweep(&mut self, capacity: usize) {
        let idle = &mut self.idle;
        self.shared.retain(|_, m| {
            if Arc::strong_count(m) > 1 {
                return true;
            }
            idle.insert(IdleStream::encode(m));
            false
        });
        self.sweep_at = (self.shared.len() * 2).max(SHARED_STREAMS_SWEEP_MIN.min(capacity));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Catalog {
    pub fn new(capacity: usize) -> Catalog {
        Catalog {
            streams: Mutex::new(Streams {
                shared: HashMap::new(),
                idle: HashSet::new(),
                sweep_at: SHARED_STREAMS_SWEEP_MIN.min(capacity),
            }),
            capacity,
        }
    }

    /// Find a stream, loading it from disk on first use.
    ///
    /// Loading runs under the catalog lock. That is what makes the scan past the committed end
    /// safe: the writer only writes to a stream whose `StreamMeta` it holds from this catalog, so
    /// no stream being loaded is being written.
    pub fn probe(&self, shared: &Shared, stream: &str) -> Result<Probe> {
        let mut streams = lock(&self.streams);
        if let Some(meta) = streams.shared.get(stream) {
            return Ok(Probe::Found(Arc::clone(meta)));
        }
        if let Some(idle) = streams.idle.take(stream.as_bytes()) {
            let hash = stream_hash(&shared.manifest.hash_key, stream);
            if let Some(meta) = idle.decode(stream, hash) {
                let meta = Arc::new(meta);
                streams.insert(Arc::clone(&meta), self.capacity);
                return Ok(Probe::Found(meta));
            }
            debug_assert!(false, "an idle stream that does not decode");
        }
        let probe = load(shared, stream)?;
        if let Probe::Found(meta) = &probe {
            streams.insert(Arc::clone(meta), self.capacity);
        }
        Ok(probe)
    }

    /// Register a stream the writer has just created.
    pub fn insert(&self, meta: Arc<StreamMeta>) {
        lock(&self.streams).insert(meta, self.capacity);
    }

    /// Forget `meta` if it is still the registered state of its stream.
    pub fn remove(&self, meta: &Arc<StreamMeta>) {
        let mut streams = lock(&self.streams);
        if streams
            .shared
            .get(&meta.id)
            .is_some_and(|m| Arc::ptr_eq(m, meta))
        {
            streams.shared.remove(&meta.id);
        }
    }

    /// Forget everything (the writer poisoned itself: states may be ahead of the disk).
    pub fn clear(&self) {
        let mut streams = lock(&self.streams);
        streams.shared.clear();
        streams.idle.clear();
    }
}

/// Is the record of `position` at this place, according to the index?
pub fn confirmed(
    shared: &Shared,
    key: StreamKey,
    segment: u32,
    offset: u64,
    position: u64,
    head: u64,
) -> Result<bool> {
    if position == 0 || position > head {
        return Ok(false);
    }
    match shared.maps.index_entry(position)? {
        // Compacted away: the event was removed with its stream's old segments.
        Ok(None) => Ok(false),
        Ok(Some(e)) => Ok(e.stream_hash == key.hash
            && e.collision == key.collision
            && e.segment == segment
            && u64::from(e.offset) == offset),
        Err(e) => {
            let (file, at) =
                crate::format::index::locate(position, shared.manifest.index_entries_per_file);
            Err(Error::corrupt(
                crate::layout::index_path(&shared.root, file),
                at,
                format!("committed index entry of position {position}: {e}"),
            ))
        }
    }
}

/// The first 8-byte aligned offset at or after `from` holding a record that the index confirms.
pub fn find_confirmed_after(
    shared: &Shared,
    bytes: &[u8],
    from: u64,
    key: StreamKey,
    segment: u32,
    head: u64,
) -> Result<Option<u64>> {
    let mut at = crate::format::align8(from);
    while at + RECORD_HEADER_BYTES as u64 <= bytes.len() as u64 {
        let slice = &bytes[at as usize..];
        if peek_record_header(slice).is_some() {
            if let Ok(r) = decode_record(slice) {
                if confirmed(shared, key, segment, at, r.position, head)? {
                    return Ok(Some(at));
                }
            }
        }
        at += 8;
    }
    Ok(None)
}

fn read_prefix(shared: &Shared, path: &PathBuf, len: usize) -> Result<Option<Vec<u8>>> {
    crate::storage::read_prefix(&*shared.backend, path, len)
        .map_err(|e| Error::io("read segment header", path, e))
}

/// Look a stream up on disk: probe its collision slots, then load its committed state.
fn load(shared: &Shared, stream: &str) -> Result<Probe> {
    let hash = stream_hash(&shared.manifest.hash_key, stream);
    let head = shared.head();
    // The fan-out's table of packed streams, read when a slot has no segment 0 (§19).
    let mut table: Option<Option<Arc<crate::packs::Table>>> = None;
    for collision in 0..STREAM_COLLISIONS_MAX {
        let key = StreamKey { hash, collision };
        let path = segment_path(&shared.root, key, 0);
        // Whether the slot holds a packed stream (§19): looked at when it has no segment 0,
        // or only one that an unacknowledged batch left torn.
        let mut packed = |file_exists: bool| -> Result<Option<Probe>> {
            if table.is_none() {
                table = Some(crate::packs::table(shared, shared.table_of(hash))?);
            }
            let entry = table
                .as_ref()
                .and_then(Option::as_ref)
                .and_then(|t| t.entry(key));
            Ok(match entry {
                Some((e, at)) if e.stream_id == stream => {
                    let state = packed_state(shared, key, e.last_position, at)?;
                    Some(Probe::Found(Arc::new(StreamMeta {
                        id: Arc::from(stream),
                        key,
                        state: RwLock::new(state),
                    })))
                }
                // Another stream id holds this slot in a pack.
                Some(_) => None,
                None => Some(Probe::Absent {
                    collision,
                    file_exists,
                }),
            })
        };
        let Some(prefix) = read_prefix(shared, &path, 64 + STREAM_ID_BYTES_MAX)? else {
            match packed(false)? {
                Some(probe) => return Ok(probe),
                None => continue,
            }
        };
        match SegmentHeader::decode(&prefix) {
            Ok(header) => {
                check_segment_header(&path, &header, shared.manifest.store_id, key, 0)?;
                if header.stream_id == stream {
                    let state = load_state(shared, key, head, (header, path))?;
                    return Ok(Probe::Found(Arc::new(StreamMeta {
                        id: Arc::from(stream),
                        key,
                        state: RwLock::new(state),
                    })));
                }
            }
            Err(e @ DecodeError::UnsupportedVersion { .. }) => {
                return Err(decode_error(&path, 0, &e))
            }
            Err(e) => {
                // A header that does not decode is either the torn creation of a stream in an
                // unacknowledged batch, or damage. Only a committed record can tell them apart.
                let Some(mapped) = map_whole(shared, &path)? else {
                    return Ok(Probe::Absent {
                        collision,
                        file_exists: false,
                    });
                };
                if find_confirmed_after(shared, &mapped, 64, key, 0, head)?.is_some() {
                    return Err(decode_error(&path, 0, &e));
                }
                tracing::warn!(path = %path.display(), error = %e,
                    "segment header of an unacknowledged stream creation does not decode; the slot will be reused");
                match packed(true)? {
                    Some(probe) => return Ok(probe),
                    None => continue,
                }
            }
        }
    }
    Err(Error::corrupt(
        segment_path(
            &shared.root,
            StreamKey {
                hash,
                collision: STREAM_COLLISIONS_MAX,
            },
            0,
        ),
        0,
        "more stream ids share one hash than the store allows",
    ))
}

/// The committed state of a stream that has only packed records (segment-format.md §19).
fn packed_state(
    shared: &Shared,
    key: StreamKey,
    flushed_last: Option<u64>,
    entry_offset: u64,
) -> Result<StreamState> {
    let packed = packed_prefix(shared, key, flushed_last, entry_offset)?;
    let links = crate::packs::walk(shared, key, packed.last)?;
    let newest = links.first().copied().ok_or_else(|| {
        Error::corrupt(
            shared.table_path(shared.table_of(key.hash)),
            entry_offset,
            "packed stream without a record",
        )
    })?;
    let mut first_version = 1;
    if let Some((covers_version, _)) = shared.removals.get(shared, key)? {
        first_version = covers_version + 1;
    }
    if newest.is_delete {
        // Deleted in the pack: its tombstone restarted the chain (§19).
        first_version = newest.version + 1;
    }
    Ok(StreamState {
        version: newest.version,
        changeset: newest.changeset,
        segments: Vec::new(),
        first_version,
        after_zero: 1,
        closed: newest.is_close,
        deleted: newest.is_delete,
        generation: 0,
        base_position: 0,
        packed: Some(PackedState {
            bytes: links.iter().map(|l| l.padded_bytes).sum(),
            ..packed
        }),
    })
}

/// Where a stream's packed records end: what this process published since the last flush,
/// else the entry's flushed `last_position` (segment-format.md §19). `bytes` is left 0 for
/// the caller, which walks the chain anyway.
fn packed_prefix(
    shared: &Shared,
    key: StreamKey,
    flushed_last: Option<u64>,
    entry_offset: u64,
) -> Result<PackedState> {
    let last = crate::packs::last_position(shared, key)?
        .or(flushed_last)
        .ok_or_else(|| {
            // Recovery wrote the slot of every stream whose records came after the last flush
            // (segment-format.md §19), and a flush the rest: a committed entry without one was
            // damaged.
            Error::corrupt(
                shared.table_path(shared.table_of(key.hash)),
                entry_offset,
                "packed stream whose end no flush wrote",
            )
        })?;
    let links = crate::packs::walk(shared, key, last)?;
    let version = links.first().map_or(0, |l| l.version);
    Ok(PackedState {
        last,
        bytes: links.iter().map(|l| l.padded_bytes).sum(),
        version,
        entry_offset,
    })
}

fn map_whole(shared: &Shared, path: &PathBuf) -> Result<Option<crate::mapping::Mapping>> {
    let file = match shared.backend.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open segment", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat segment", path, e))?;
    Ok(Some(
        file.map(len)
            .map_err(|e| Error::io("map segment", path, e))?,
    ))
}

/// What scanning the tail of a segment found.
struct TailScan {
    /// State of the segment's committed records; `None` when it holds none.
    state: Option<SegmentState>,
    /// The `changeset` field of the last committed record: the stream's count of appends
    /// (segment-format.md §14).
    last_changeset: u64,
    /// A committed close record is among them.
    closed: bool,
}

/// Load the committed state of the stream at `key` (segment-format.md §9).
fn load_state(
    shared: &Shared,
    key: StreamKey,
    head: u64,
    first: (SegmentHeader, PathBuf),
) -> Result<StreamState> {
    // A rewritten segment 0 opens with its base record (a snapshot or a tombstone): it names
    // the segment that follows (segment-format.md §12).
    let base = read_base(shared, &first.1, first.0.header_bytes())?;
    let after_zero = base.map_or(1, |(c, _)| c.next_segment);
    // A segment 0 that starts after version 1 without a base record continues a packed
    // prefix (segment-format.md §19).
    let packed_entry = if base.is_none() && first.0.first_version > 1 {
        find_packed_entry(shared, key)?
    } else {
        None
    };
    // Read every segment header: segment numbers are dense from `after_zero` on, and segment
    // 0's header was read by the caller.
    let mut headers: Vec<(SegmentHeader, PathBuf)> = vec![first];
    for number in std::iter::once(after_zero).chain(after_zero.saturating_add(1)..) {
        let path = segment_path(&shared.root, key, number);
        let Some(prefix) = read_prefix(shared, &path, 64 + STREAM_ID_BYTES_MAX)? else {
            break;
        };
        match SegmentHeader::decode(&prefix) {
            Ok(h) => {
                check_segment_header(&path, &h, shared.manifest.store_id, key, number)?;
                headers.push((h, path));
            }
            Err(e @ DecodeError::UnsupportedVersion { .. }) => {
                return Err(decode_error(&path, 0, &e))
            }
            Err(e) => {
                // Only the last segment can be a torn creation; it must hold nothing committed.
                let next = segment_path(&shared.root, key, number.saturating_add(1));
                let later_exists = shared
                    .backend
                    .kind(&next)
                    .map_err(|e| Error::io("stat segment", &next, e))?
                    .is_some();
                let mapped = map_whole(shared, &path)?;
                let committed = match &mapped {
                    Some(m) => find_confirmed_after(shared, m, 64, key, number, head)?.is_some(),
                    None => false,
                };
                if later_exists || committed {
                    return Err(decode_error(&path, 0, &e));
                }
                tracing::warn!(path = %path.display(), error = %e,
                    "trailing segment of an unacknowledged batch does not decode; it holds nothing committed");
                break;
            }
        }
    }
    // From the last segment back, find the last one holding a committed record.
    let mut last_committed: Option<(usize, TailScan)> = None;
    for i in (0..headers.len()).rev() {
        let (header, path) = &headers[i];
        let scan = scan_tail(shared, key, header, path, head)?;
        if scan.state.is_some() || i == 0 {
            last_committed = Some((i, scan));
            break;
        }
    }
    let Some((last_index, last_scan)) = last_committed else {
        return Ok(StreamState::default());
    };
    let Some(last_state) = last_scan.state else {
        // Nothing committed in its segments: what its packed prefix holds, if it has one.
        return match &packed_entry {
            Some((last, at)) => packed_state(shared, key, *last, *at),
            None => Ok(StreamState::default()),
        };
    };
    let packed = match &packed_entry {
        Some((last, at)) => Some(packed_prefix(shared, key, *last, *at)?),
        None => None,
    };
    let mut segments = Vec::with_capacity(last_index + 1);
    // Every record carries its stream's count of appends so far: no count over the sealed
    // segments (segment-format.md §14).
    let changesets = last_scan.last_changeset;
    for i in 0..last_index {
        let (header, path) = &headers[i];
        let next_first = headers[i + 1].0.first_version;
        // A segment 0 rewritten by a truncation holds no event: the next one starts at its
        // first version.
        let empty_base = i == 0 && base.is_some_and(|(c, _)| c.op == CONTROL_OP_TRUNCATE);
        if next_first < header.first_version || (next_first == header.first_version && !empty_base)
        {
            return Err(Error::corrupt(
                path,
                40,
                "segments' first versions do not increase",
            ));
        }
        let file = shared
            .backend
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io("open segment", path, e))?;
        let end = file.len().map_err(|e| Error::io("stat segment", path, e))?;
        segments.push(SegmentState {
            number: header.segment,
            first_version: header.first_version,
            header_bytes: header.header_bytes(),
            end,
            last_version: next_first - 1,
        });
    }
    segments.push(last_state);
    let (mut first_version, deleted, base_closed) = match base {
        Some((c, _)) if c.op == CONTROL_OP_DELETE => (c.covers_version + 1, true, false),
        // A snapshot is itself the event of the version it covers.
        Some((c, _)) if c.op == CONTROL_OP_SNAPSHOT => {
            (c.covers_version, false, c.flags & CONTROL_FLAG_CLOSED != 0)
        }
        Some((c, _)) => (
            c.covers_version + 1,
            false,
            c.flags & CONTROL_FLAG_CLOSED != 0,
        ),
        None => (1, false, false),
    };
    // A truncation is committed by its record in `REMOVALS`, before segment 0 is rewritten.
    if let Some((covers_version, _)) = shared.removals.get(shared, key)? {
        first_version = first_version.max(covers_version + 1);
    }
    Ok(StreamState {
        version: last_state.last_version,
        changeset: changesets,
        segments,
        first_version,
        after_zero,
        closed: base_closed || last_scan.closed,
        deleted,
        generation: 0,
        base_position: base.map_or(0, |(_, position)| position),
        packed,
    })
}

/// The flushed last position of `key`'s live entry in its fan-out's table, and the entry's
/// offset.
fn find_packed_entry(shared: &Shared, key: StreamKey) -> Result<Option<(Option<u64>, u64)>> {
    let Some(table) = crate::packs::table(shared, shared.table_of(key.hash))? else {
        return Ok(None);
    };
    Ok(table.entry(key).map(|(e, at)| (e.last_position, at)))
}

/// The base record opening a rewritten segment 0, with its position.
fn read_base(shared: &Shared, path: &PathBuf, header_bytes: u64) -> Result<Option<(Control, u64)>> {
    let Some(bytes) = map_whole(shared, path)? else {
        return Ok(None);
    };
    decode_base(&bytes, header_bytes, path)
}

/// The base record at `header_bytes` of segment 0's `bytes`, with its position; `None` when
/// segment 0 was never rewritten. A damaged one is `Corrupt`.
fn decode_base(bytes: &[u8], header_bytes: u64, path: &PathBuf) -> Result<Option<(Control, u64)>> {
    let Some(slice) = bytes.get(header_bytes as usize..) else {
        return Ok(None);
    };
    match peek_record_header(slice) {
        Some(h) if h.kind == RECORD_KIND_CONTROL => {}
        _ => return Ok(None),
    }
    let r = decode_record(slice)
        .map_err(|e| Error::corrupt(path, header_bytes, format!("base record: {e}")))?;
    match r.control {
        Some(c) if c.is_base() => {
            if c.next_segment == 0 {
                return Err(Error::corrupt(
                    path,
                    header_bytes,
                    "base record without next_segment",
                ));
            }
            Ok(Some((c, r.position)))
        }
        _ => Ok(None),
    }
}

/// Scan one segment's records up to the head, keep the prefix the index confirms, and classify
/// whatever follows (segment-format.md §8, decision table).
fn scan_tail(
    shared: &Shared,
    key: StreamKey,
    header: &SegmentHeader,
    path: &PathBuf,
    head: u64,
) -> Result<TailScan> {
    let Some(bytes) = map_whole(shared, path)? else {
        return Err(Error::corrupt(path, 0, "segment disappeared while loading"));
    };
    let header_bytes = header.header_bytes();
    let len = bytes.len() as u64;
    // Offsets and versions of the records up to the head, and where the scan stopped.
    // (offset, end, position, changeset, an event, a close)
    let mut offsets: Vec<(u64, u64, u64, u64, bool, bool)> = Vec::new();
    let mut at = header_bytes;
    let mut expected_version = header.first_version;
    let mut damage: Option<(u64, String)> = None;
    while at < len {
        match decode_record(&bytes[at as usize..]) {
            // A control record (close, tombstone) carries the version of the event before it.
            Ok(r) if !r.is_event() && r.version + 1 != expected_version => {
                damage = Some((
                    at,
                    format!(
                        "control record of version {} where {} was expected",
                        r.version,
                        expected_version - 1
                    ),
                ));
                break;
            }
            Ok(r) if r.is_event() && r.version != expected_version => {
                damage = Some((
                    at,
                    format!(
                        "version {} where {expected_version} was expected",
                        r.version
                    ),
                ));
                break;
            }
            Ok(r) if r.position > head => break,
            Ok(r) => {
                let event = r.is_event();
                let close = r.control.is_some_and(|c| c.op == CONTROL_OP_CLOSE);
                offsets.push((
                    at,
                    at + r.padded_bytes,
                    r.position,
                    r.changeset,
                    event,
                    close,
                ));
                if event {
                    expected_version += 1;
                }
                at += r.padded_bytes;
            }
            Err(e) => {
                damage = Some((at, e.to_string()));
                break;
            }
        }
    }
    // Records are appended in order, so the unconfirmed ones are a suffix: binary search.
    let mut low = 0usize;
    let mut high = offsets.len();
    while low < high {
        let mid = low + (high - low) / 2;
        let (off, _, pos, ..) = offsets[mid];
        if confirmed(shared, key, header.segment, off, pos, head)? {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    let committed = low;
    if let Some((damaged_at, reason)) = &damage {
        let damaged_at = *damaged_at;
        // Damage is corruption when the index shows that a committed record was there.
        if let Some(position) =
            peek_record_header(&bytes[damaged_at as usize..]).and_then(|h| h.position)
        {
            if confirmed(shared, key, header.segment, damaged_at, position, head)? {
                return Err(Error::corrupt(
                    path,
                    damaged_at,
                    format!("committed record: {reason}"),
                ));
            }
        }
        if let Some(next) =
            find_confirmed_after(shared, &bytes, damaged_at + 8, key, header.segment, head)?
        {
            return Err(Error::corrupt(
                path,
                damaged_at,
                format!("{reason}; a committed record follows at {next}"),
            ));
        }
        tracing::warn!(path = %path.display(), offset = damaged_at, %reason,
            "torn tail of an unacknowledged batch; it is not visible and will be cut before the next append");
    }
    if committed < offsets.len() {
        tracing::warn!(path = %path.display(), offset = offsets[committed].0,
            records = offsets.len() - committed,
            "records of an unacknowledged batch; they are not visible and will be cut before the next append");
    }
    if committed == 0 {
        return Ok(TailScan {
            state: None,
            last_changeset: 0,
            closed: false,
        });
    }
    let done = &offsets[..committed];
    let events = done.iter().filter(|o| o.4).count() as u64;
    Ok(TailScan {
        state: Some(SegmentState {
            number: header.segment,
            first_version: header.first_version,
            header_bytes,
            end: done[committed - 1].1,
            last_version: header.first_version + events - 1,
        }),
        last_changeset: done[committed - 1].3,
        closed: done.iter().any(|o| o.5),
    })
}

/// The decoded header of a segment file; `None` when the file is gone or its header does not
/// decode (a torn creation: the stream does not exist).
pub fn read_header(shared: &Shared, path: &PathBuf) -> Result<Option<SegmentHeader>> {
    let Some(prefix) = read_prefix(shared, path, 64 + STREAM_ID_BYTES_MAX)? else {
        return Ok(None);
    };
    match SegmentHeader::decode(&prefix) {
        Ok(h) => Ok(Some(h)),
        Err(e @ DecodeError::UnsupportedVersion { .. }) => Err(decode_error(path, 0, &e)),
        Err(_) => Ok(None),
    }
}

/// The last position of stream `key` that a rewrite (snapshot, delete) removed: the
/// `covers_position` of the base record opening its segment 0, or of its tombstone in a pack
/// (§19); 0 when there is none.
pub fn base_covers(shared: &Shared, key: StreamKey) -> Result<u64> {
    let c = match base_control(shared, key)? {
        Some(c) => Some(c),
        None => crate::packs::packed_base(shared, key)?.map(|(c, _)| c),
    };
    Ok(c.map_or(0, |c| c.covers_position))
}

/// The last position of stream `key` that a rewrite of its segment 0 removed (recovery: a
/// tombstone in a pack removes records only once a checkpoint covers it, §19).
pub fn segment_base_covers(shared: &Shared, key: StreamKey) -> Result<u64> {
    Ok(base_control(shared, key)?.map_or(0, |c| c.covers_position))
}

/// The control block of the base record of the stream's segment 0, when it was rewritten.
pub fn base_control(shared: &Shared, key: StreamKey) -> Result<Option<Control>> {
    let path = segment_path(&shared.root, key, 0);
    // One read holds the header and a tombstone or a small snapshot whole.
    let Some(prefix) = read_prefix(shared, &path, BASE_PREFIX_BYTES)? else {
        return Ok(None);
    };
    let Ok(header) = SegmentHeader::decode(&prefix) else {
        return Ok(None);
    };
    let header_bytes = header.header_bytes();
    let slice = prefix.get(header_bytes as usize..).unwrap_or_default();
    let whole = match peek_record_header(slice) {
        Some(h) if h.kind == RECORD_KIND_CONTROL => h.record_bytes as usize <= slice.len(),
        // An event first: segment 0 was never rewritten.
        _ => return Ok(None),
    };
    // A large snapshot does not fit in the prefix: map the file.
    let base = if whole {
        decode_base(&prefix, header_bytes, &path)?
    } else {
        read_base(shared, &path, header_bytes)?
    };
    Ok(base.map(|(c, _)| c))
}

/// The base record of a segment 0 whose first bytes are `bytes` (header and first record
/// whole), if it was rewritten; `None` otherwise or when the bytes do not decode.
#[must_use]
pub fn base_of(bytes: &[u8]) -> Option<Control> {
    let header = SegmentHeader::decode(bytes).ok()?;
    let r = decode_record(bytes.get(header.header_bytes() as usize..)?).ok()?;
    r.control.filter(Control::is_base)
}

/// Bytes `base_covers` reads from the start of a segment 0.
const BASE_PREFIX_BYTES: usize = 4096;
