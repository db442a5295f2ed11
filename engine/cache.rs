//! Bounded caches of mapped files: index files (mapped once at full length) and segments
//! (mapped at their length when first read, mapped again when a reader needs more).
//!
//! Eviction drops the cache's reference only; a reader still holding an `Arc<Mapping>` keeps it.

use crate::error::{Error, Result};
use crate::format::index::{IndexEntry, IndexHeader, INDEX_ENTRY_BYTES};
use crate::format::segment::SegmentHeader;
use crate::layout::{index_path, segment_path, StreamKey};
use crate::mapping::Mapping;
use crate::storage::{Backend, OpenMode};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A mapped segment file and its decoded header.
#[derive(Debug)]
pub struct MappedSegment {
    /// The segment's bytes from file offset `base` on.
    pub mapping: Arc<Mapping>,
    pub stream_id: Arc<str>,
    /// 0 for a mapped segment; for the records `read_all` read of a small one, the offset of
    /// the first (segment-format.md §4).
    pub base: u64,
    pub path: PathBuf,
}

/// A small bounded map with approximate least-recently-used eviction.
struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    tick: u64,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Lru {
            entries: HashMap::new(),
            tick: 0,
            capacity,
        }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(v, t)| {
            *t = tick;
            v.clone()
        })
    }

    fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            // Evict the older half in one pass, so the cost of a pass is spread over many inserts.
            let mut ticks: Vec<u64> = self.entries.values().map(|(_, t)| *t).collect();
            let middle = ticks.len() / 2;
            let (_, cut, _) = ticks.select_nth_unstable(middle);
            let cut = *cut;
            self.entries.retain(|_, (_, t)| *t > cut);
        }
        self.tick += 1;
        self.entries.insert(key, (value, self.tick));
    }

    fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

thread_local! {
    /// Each thread's buffer for `read_small_segment` (at most `READ_ALL_SMALL_SEGMENT_BYTES`).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves only a cache behind, never on-disk state.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What `read_small_segment` found.
pub enum SmallRead {
    Read(MappedSegment),
    /// Missing, or too large to read whole: map it instead.
    NotSmall,
    /// Segment 0 was rewritten: every position of its stream up to this one was removed.
    Rewritten {
        covers_position: u64,
    },
}

pub struct MapCache {
    root: PathBuf,
    backend: Arc<dyn Backend>,
    store_id: u64,
    entries_per_file: u64,
    index: Mutex<Lru<u64, Arc<Mapping>>>,
    segments: Mutex<Lru<(StreamKey, u32), Arc<MappedSegment>>>,
    /// Counts `forget_segment` calls. A mapping made from a file opened before a forget may be
    /// of the file that was replaced: it is used by its caller but not cached.
    forgets: std::sync::atomic::AtomicU64,
}

impl MapCache {
    pub fn new(
        root: &Path,
        backend: Arc<dyn Backend>,
        store_id: u64,
        entries_per_file: u64,
        capacity: usize,
    ) -> MapCache {
        MapCache {
            root: root.to_path_buf(),
            backend,
            store_id,
            entries_per_file,
            index: Mutex::new(Lru::new(64)),
            segments: Mutex::new(Lru::new(capacity)),
            forgets: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The mapping of index file `file_number` (its whole, preallocated length).
    pub fn index_file(&self, file_number: u64) -> Result<Arc<Mapping>> {
        if let Some(m) = lock(&self.index).get(&file_number) {
            return Ok(m);
        }
        let path = index_path(&self.root, file_number);
        let file = self
            .backend
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open index file", &path, e))?;
        let len = file
            .len()
            .map_err(|e| Error::io("stat index file", &path, e))?;
        let mapping = Arc::new(
            file.map(len)
                .map_err(|e| Error::io("map index file", &path, e))?,
        );
        let header = IndexHeader::decode(&mapping).map_err(|e| decode_error(&path, 0, &e))?;
        if header.store_id != self.store_id {
            return Err(Error::corrupt(&path, 16, "index file of another store"));
        }
        if header.file_number != file_number || header.capacity != self.entries_per_file {
            return Err(Error::corrupt(
                &path,
                24,
                "index header does not match its name",
            ));
        }
        let needed = crate::format::index::INDEX_HEADER_BYTES + header.capacity * INDEX_ENTRY_BYTES;
        let sparse_ragged = header.sparse
            && (len - crate::format::index::INDEX_HEADER_BYTES)
                % crate::format::index::INDEX_SPARSE_ENTRY_BYTES
                != 0;
        if sparse_ragged {
            return Err(Error::corrupt(
                &path,
                len,
                "compacted index file of a ragged length",
            ));
        }
        if !header.sparse && len < needed {
            return Err(Error::corrupt(
                &path,
                len,
                "index file shorter than its capacity",
            ));
        }
        // A real mapping sees later writes; a copy (simulated backend) does not, so it is not kept.
        if !mapping.is_snapshot() {
            lock(&self.index).insert(file_number, Arc::clone(&mapping));
        }
        Ok(mapping)
    }

    /// The decoded index entry of `position`, or the reason it does not decode.
    /// The index entry of `position`: `Ok(Ok(None))` when index compaction removed it (its event
    /// was removed by a snapshot or a delete; segment-format.md §4).
    pub fn index_entry(
        &self,
        position: u64,
    ) -> Result<std::result::Result<Option<IndexEntry>, crate::format::DecodeError>> {
        let (file, _) = crate::format::index::locate(position, self.entries_per_file);
        let mapping = self.index_file(file)?;
        Ok(self.entry_in(&mapping, position))
    }

    /// The entry of `position` in `mapping`, its index file as `index_file` returned it (dense
    /// or compacted): for a reader of many positions, which takes each file's mapping once
    /// rather than a lock and a reference count per entry.
    pub fn entry_in(
        &self,
        mapping: &Mapping,
        position: u64,
    ) -> std::result::Result<Option<IndexEntry>, crate::format::DecodeError> {
        let (_, offset) = crate::format::index::locate(position, self.entries_per_file);
        let header_bytes = crate::format::index::INDEX_HEADER_BYTES as usize;
        if is_compacted(mapping) {
            return crate::format::index::sparse_lookup(&mapping[header_bytes..], position);
        }
        let at = offset as usize;
        IndexEntry::decode(&mapping[at..at + INDEX_ENTRY_BYTES as usize], position).map(Some)
    }

    /// Forget a mapped index file (after the writer or recovery changed its length).
    pub fn forget_index(&self, file_number: u64) {
        lock(&self.index).remove(&file_number);
    }

    /// A mapping of a segment covering at least `min_len` bytes. `Ok(None)` when the file does
    /// not exist.
    pub fn segment(
        &self,
        key: StreamKey,
        segment: u32,
        min_len: u64,
    ) -> Result<Option<Arc<MappedSegment>>> {
        if let Some(s) = lock(&self.segments).get(&(key, segment)) {
            if s.mapping.len() as u64 >= min_len {
                return Ok(Some(s));
            }
        }
        let forgets = self.forgets.load(std::sync::atomic::Ordering::Acquire);
        let path = segment_path(&self.root, key, segment);
        let file = match self.backend.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open segment", &path, e)),
        };
        let len = file
            .len()
            .map_err(|e| Error::io("stat segment", &path, e))?;
        if len < min_len {
            return Err(Error::corrupt(
                &path,
                len,
                format!("segment is {len} bytes, committed data reaches {min_len}"),
            ));
        }
        let mapping = Arc::new(
            file.map(len)
                .map_err(|e| Error::io("map segment", &path, e))?,
        );
        let header = SegmentHeader::decode(&mapping).map_err(|e| decode_error(&path, 0, &e))?;
        check_segment_header(&path, &header, self.store_id, key, segment)?;
        let stream_id: Arc<str> = Arc::from(header.stream_id.as_str());
        let mapped = Arc::new(MappedSegment {
            mapping,
            stream_id,
            base: 0,
            path,
        });
        if !mapped.mapping.is_snapshot() {
            let mut segments = lock(&self.segments);
            // Checked under the lock that `forget_segment` takes: no forget can slip between.
            if self.forgets.load(std::sync::atomic::Ordering::Acquire) == forgets {
                segments.insert((key, segment), Arc::clone(&mapped));
            }
        }
        Ok(Some(mapped))
    }

    /// A mapping of pack `pack` covering at least `min_len` bytes (segment-format.md §19),
    /// cached beside the segments under the pack pseudo-key. Its `stream_id` is empty: a packed
    /// record's stream comes from its index entry. `Ok(None)` when the file does not exist.
    pub fn pack(&self, pack: u32, min_len: u64) -> Result<Option<Arc<MappedSegment>>> {
        let key = crate::layout::PACK_KEY;
        if let Some(s) = lock(&self.segments).get(&(key, pack)) {
            if s.mapping.len() as u64 >= min_len {
                return Ok(Some(s));
            }
        }
        let path = crate::layout::pack_path(&self.root, pack);
        let file = match self.backend.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open pack", &path, e)),
        };
        let len = file.len().map_err(|e| Error::io("stat pack", &path, e))?;
        if len < min_len {
            return Err(Error::corrupt(
                &path,
                len,
                format!("pack is {len} bytes, committed data reaches {min_len}"),
            ));
        }
        let mapping = Arc::new(file.map(len).map_err(|e| Error::io("map pack", &path, e))?);
        let header = crate::format::pack::PackHeader::decode(&mapping)
            .map_err(|e| decode_error(&path, 0, &e))?;
        if header.store_id != self.store_id {
            return Err(Error::corrupt(&path, 16, "pack of another store"));
        }
        if header.pack != pack {
            return Err(Error::corrupt(
                &path,
                12,
                "pack header does not match its name",
            ));
        }
        let mapped = Arc::new(MappedSegment {
            mapping,
            stream_id: Arc::from(""),
            base: 0,
            path,
        });
        // A pack only grows and is never replaced in place: no forget can make this mapping
        // stale, only short, which the length check above handles.
        if !mapped.mapping.is_snapshot() {
            lock(&self.segments).insert((key, pack), Arc::clone(&mapped));
        }
        Ok(Some(mapped))
    }

    /// Pack `pack` mapped far enough to hold the whole record at `offset` (a compact record
    /// can end a pack less than a §5 header after its start: segment-format.md §19).
    /// `Ok(None)` when the pack does not exist.
    ///
    /// # Errors
    /// `Corrupt` when the pack ends before the record does; `Io`.
    pub fn pack_record(&self, pack: u32, offset: u64) -> Result<Option<Arc<MappedSegment>>> {
        let prefix = offset + crate::format::segment::RECORD_PREFIX_BYTES as u64;
        let Some(mapped) = self.pack(pack, prefix)? else {
            return Ok(None);
        };
        let end = crate::format::segment::peek_record_header(&mapped.mapping[offset as usize..])
            .map_or(prefix, |h| offset + u64::from(h.record_bytes));
        if end <= mapped.mapping.len() as u64 {
            return Ok(Some(mapped));
        }
        self.pack(pack, end)
    }

    /// The cached mapping of a segment, if there is one; never maps.
    pub fn cached_segment(&self, key: StreamKey, segment: u32) -> Option<Arc<MappedSegment>> {
        lock(&self.segments).get(&(key, segment))
    }

    /// The first bytes of a small segment, read (not mapped) into memory: at least `min_len`
    /// bytes, more when the record at `last_record` ends later, never more than `max_len`.
    /// `Ok(None)` when the file does not exist or the bytes needed pass `max_len` (map it then).
    ///
    /// Why: `read_all` over many small streams touches each file for a record or two. Mapping a
    /// file costs an open, a stat, an `mmap`, page faults and an `munmap`, and evicts a mapping
    /// the cache may need; one `pread` of the file's first page is several times cheaper.
    pub fn read_small_segment(
        &self,
        key: StreamKey,
        segment: u32,
        first_record: u64,
        last_record: u64,
        max_len: usize,
    ) -> Result<SmallRead> {
        /// What the read found, decided while the bytes are in the scratch buffer.
        enum Got {
            /// The stream id, the file offset of the bytes, the bytes.
            Records(Arc<str>, u64, Vec<u8>),
            /// The file ends here, before the records asked for; with what a rewritten
            /// segment 0's base record covers.
            Short(usize, Option<u64>),
            TooLarge,
        }
        debug_assert!(first_record <= last_record);
        let needed = last_record as usize + crate::format::segment::RECORD_HEADER_BYTES;
        if needed > max_len {
            return Ok(SmallRead::NotSmall);
        }
        let path = segment_path(&self.root, key, segment);
        let file = match self.backend.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SmallRead::NotSmall),
            Err(e) => return Err(Error::io("open segment", &path, e)),
        };
        // A page beyond the last record's offset holds it whole in the common case. Read into
        // this thread's scratch buffer; only the records asked for are copied out, so that a
        // window's budget holds records, not whole files.
        let guess = (last_record as usize + 4096)
            .next_multiple_of(4096)
            .min(max_len);
        let got = SCRATCH.with(|scratch| -> Result<Got> {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < max_len {
                scratch.resize(max_len, 0);
            }
            // One `pread` holds what is needed in the common case (`read_full` would ask once
            // more, to see the end of the file). Only a read that falls short of the last
            // record reads on, so a short read never passes for the end of the file.
            let whole = |bytes: &[u8]| {
                bytes.len() >= needed
                    && crate::format::segment::peek_record_header(&bytes[last_record as usize..])
                        .is_none_or(|h| {
                            last_record as usize + h.record_bytes as usize <= bytes.len()
                        })
            };
            let mut n = file
                .read_at(&mut scratch[..guess], 0)
                .map_err(|e| Error::io("read segment", &path, e))?;
            if n > 0 && n < guess && !whole(&scratch[..n]) {
                n += crate::storage::read_full(&*file, &mut scratch[n..guess], n as u64)
                    .map_err(|e| Error::io("read segment", &path, e))?;
            }
            if n < needed {
                // A rewritten segment 0 (segment-format.md §12): the records asked for were
                // removed, and the base record at hand says so without another read.
                let covers = (segment == 0)
                    .then(|| crate::catalog::base_of(&scratch[..n]))
                    .flatten()
                    .map(|c| c.covers_position);
                return Ok(Got::Short(n, covers));
            }
            let mut len = n;
            if let Some(h) =
                crate::format::segment::peek_record_header(&scratch[last_record as usize..n])
            {
                let end = last_record as usize + h.record_bytes as usize;
                if end > n && n == guess {
                    if end > max_len {
                        return Ok(Got::TooLarge);
                    }
                    let more = crate::storage::read_full(&*file, &mut scratch[n..end], n as u64)
                        .map_err(|e| Error::io("read segment", &path, e))?;
                    len = n + more;
                }
                // The records asked for end here; what follows (later appends) is not copied.
                len = len.min(end);
            }
            let header =
                SegmentHeader::decode(&scratch[..len]).map_err(|e| decode_error(&path, 0, &e))?;
            check_segment_header(&path, &header, self.store_id, key, segment)?;
            let from = (first_record as usize).min(len);
            Ok(Got::Records(
                Arc::from(header.stream_id.as_str()),
                from as u64,
                scratch[from..len].to_vec(),
            ))
        })?;
        match got {
            Got::Records(stream_id, from_offset, bytes) => Ok(SmallRead::Read(MappedSegment {
                stream_id,
                mapping: Arc::new(Mapping::from_bytes(bytes)),
                base: from_offset,
                path,
            })),
            Got::TooLarge => Ok(SmallRead::NotSmall),
            Got::Short(_, Some(covers_position)) => Ok(SmallRead::Rewritten { covers_position }),
            Got::Short(n, None) => Err(Error::corrupt(
                &path,
                n as u64,
                format!("segment is {n} bytes, committed data reaches {needed}"),
            )),
        }
    }

    /// Forget a segment mapping (the writer cut or rewrote the file).
    pub fn forget_segment(&self, key: StreamKey, segment: u32) {
        let mut segments = lock(&self.segments);
        self.forgets
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        segments.remove(&(key, segment));
    }
}

pub fn check_segment_header(
    path: &Path,
    header: &SegmentHeader,
    store_id: u64,
    key: StreamKey,
    segment: u32,
) -> Result<()> {
    if header.store_id != store_id {
        return Err(Error::corrupt(path, 16, "segment of another store"));
    }
    if header.stream_hash != key.hash
        || header.collision != key.collision
        || header.segment != segment
    {
        return Err(Error::corrupt(
            path,
            24,
            "segment header does not match its file name",
        ));
    }
    Ok(())
}

/// Turn a decode failure of a header the store wrote into the right error.
pub fn decode_error(path: &Path, offset: u64, e: &crate::format::DecodeError) -> Error {
    match e {
        crate::format::DecodeError::UnsupportedVersion { found } => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: *found,
            supported: crate::format::FORMAT_VERSION,
        },
        other => Error::corrupt(path, offset, other.to_string()),
    }
}

/// Whether a mapped index file, as `MapCache::index_file` returned it, is compacted
/// (segment-format.md §4): its header was checked when it was mapped, and byte 12 holds
/// `entry_bytes`.
pub fn is_compacted(mapping: &Mapping) -> bool {
    u64::from(mapping[12]) == crate::format::index::INDEX_SPARSE_ENTRY_BYTES
}
