//! The read path: events borrowed straight from mapped segments, read by stream or in global
//! order through the index.

use crate::cache::{MappedSegment, SmallRead};
use crate::catalog::{StreamMeta, StreamState};
use crate::error::{Error, Result};
use crate::format::index::FLAG_CONTROL;
use crate::format::segment::{
    decode_plain_event, decode_record, peek_record_header, Control, RECORD_FLAG_BEGIN,
    RECORD_FLAG_END, RECORD_HEADER_BYTES,
};
use crate::layout::{index_path, segment_path, KeyMap, StreamKey};
use crate::limits::{
    READ_ALL_FETCH_THREADS_MAX, READ_ALL_PARALLEL_SEGMENTS_MIN, READ_ALL_PARALLEL_TABLES_MIN,
    READ_ALL_POSITIONS_PER_FILE_TO_GROW, READ_ALL_PREFETCH_DISTANCE, READ_ALL_SMALL_SEGMENT_BYTES,
    READ_ALL_WINDOW_POSITIONS, READ_ALL_WINDOW_POSITIONS_MAX, READ_ALL_WINDOW_POSITIONS_MIN,
};
use crate::shared::Shared;
use crate::types::{Direction, Position};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One stored event. Its data and metadata borrow from the mapped segment (no copy); it stays
/// valid for as long as it is kept, whatever the store does meanwhile.
#[derive(Clone)]
pub struct RecordedEvent {
    segment: Arc<MappedSegment>,
    stream: StreamName,
    version: u64,
    position: u64,
    changeset: u64,
    timestamp_us: u64,
    id: Option<[u8; 16]>,
    flags: u8,
    /// Boxed: control records are rare, and every event read is moved a few times on its way
    /// out (W4 spent 14% of its time in `memmove` when this was inline, `perf`, session 11).
    control: Option<Box<Control>>,
    /// Where the body (type, key, commit metadata, metadata, data) starts in the mapping, and
    /// where its parts start in it: smaller than five ranges (a `RecordedEvent` is made per
    /// event read), and the data and metadata, read most, are one addition away.
    body: usize,
    type_len: u16,
    key_len: u16,
    /// Offset of the metadata from `body`; the commit metadata ends there.
    metadata_at: u32,
    /// Offset of the data from `body`; the metadata ends there.
    data_at: u32,
    data_len: u32,
}

/// Where an event's stream id is: a segment names its stream, a pack holds many (§19).
#[derive(Clone)]
enum StreamName {
    /// The segment's stream.
    Segment,
    /// A packed event read from its stream.
    Id(Arc<str>),
    /// A packed event read by `read_all`: entry `entry` of table `table` of the tables its
    /// window met. One count per window, not one per event on the stream's id or its table:
    /// over many small streams each of those was a cache miss (`perf` on W5, session 11).
    Window {
        tables: Arc<Vec<Arc<crate::packs::Table>>>,
        table: u32,
        entry: u32,
    },
}

impl RecordedEvent {
    #[must_use]
    pub fn stream_id(&self) -> &str {
        match &self.stream {
            StreamName::Segment => &self.segment.stream_id,
            StreamName::Id(id) => id,
            StreamName::Window {
                tables,
                table,
                entry,
            } => tables
                .get(*table as usize)
                .and_then(|t| t.stream_id(*entry as usize))
                .unwrap_or(&self.segment.stream_id),
        }
    }

    #[inline]
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    #[inline]
    #[must_use]
    pub fn position(&self) -> Position {
        Position(self.position)
    }

    #[inline]
    #[must_use]
    pub fn event_type(&self) -> &str {
        // Checked to be UTF-8 when the event was decoded.
        std::str::from_utf8(self.part(0, usize::from(self.type_len))).unwrap_or("")
    }

    /// Bytes `len` long at `skip` bytes into the body.
    #[inline]
    fn part(&self, skip: usize, len: usize) -> &[u8] {
        let start = self.body + skip;
        &self.segment.mapping[start..start + len]
    }

    #[inline]
    #[must_use]
    pub fn data(&self) -> &[u8] {
        self.part(self.data_at as usize, self.data_len as usize)
    }

    #[inline]
    #[must_use]
    pub fn metadata(&self) -> &[u8] {
        self.part(
            self.metadata_at as usize,
            (self.data_at - self.metadata_at) as usize,
        )
    }

    /// The event's key (`EventData::key`); empty when it has none.
    #[inline]
    #[must_use]
    pub fn key(&self) -> &[u8] {
        self.part(usize::from(self.type_len), usize::from(self.key_len))
    }

    /// The commit metadata of the append this event belongs to, on its first event only
    /// (`is_append_begin`); empty elsewhere.
    #[inline]
    #[must_use]
    pub fn commit_metadata(&self) -> &[u8] {
        let at = usize::from(self.type_len) + usize::from(self.key_len);
        self.part(at, self.metadata_at as usize - at)
    }

    #[inline]
    #[must_use]
    pub fn id(&self) -> Option<[u8; 16]> {
        self.id
    }

    /// The commit time of the batch that wrote the event.
    #[must_use]
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.timestamp_us)
    }

    /// The number of the append (changeset) within its stream, from 1.
    #[inline]
    #[must_use]
    pub fn changeset(&self) -> u64 {
        self.changeset
    }

    /// True for the first event of its append.
    #[inline]
    #[must_use]
    pub fn is_append_begin(&self) -> bool {
        self.flags & RECORD_FLAG_BEGIN != 0
    }

    /// True for the last event of its append.
    #[inline]
    #[must_use]
    pub fn is_append_end(&self) -> bool {
        self.flags & RECORD_FLAG_END != 0
    }

    /// For a snapshot (`Store::snapshot_stream`): the version and the position of the last
    /// event it replaced. The snapshot itself has that version and a position of its own.
    #[must_use]
    pub fn snapshot_of(&self) -> Option<(u64, Position)> {
        self.control
            .as_deref()
            .filter(|c| c.is_snapshot())
            .map(|c| (c.covers_version, Position(c.covers_position)))
    }

    /// For an invalidation event (`Store::invalidate`): the changeset it marks invalid. Its
    /// data is the reason given.
    #[must_use]
    pub fn invalidates(&self) -> Option<u64> {
        self.control
            .as_deref()
            .filter(|c| c.op == crate::format::segment::CONTROL_OP_INVALIDATE)
            .map(|c| c.target_changeset)
    }

    /// True for a stream control record; readers never yield one.
    pub(crate) fn is_control(&self) -> bool {
        self.control.as_deref().is_some_and(|c| !c.is_event())
    }
}

impl std::fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("stream_id", &self.stream_id())
            .field("version", &self.version)
            .field("position", &self.position)
            .field("event_type", &self.event_type())
            .field("data_len", &self.data_len)
            .finish_non_exhaustive()
    }
}

/// Decode the packed record at `offset` of a mapped pack, an event of `stream`.
pub(crate) fn packed_event_at(
    pack: &Arc<MappedSegment>,
    offset: u64,
    stream: &Arc<str>,
) -> Result<RecordedEvent> {
    let limit = pack.mapping.len() as u64;
    let (mut event, _) = event_at(pack, offset, limit)?;
    event.stream = StreamName::Id(Arc::clone(stream));
    Ok(event)
}

/// Decode the record at `offset` of a mapped segment, reading no further than `limit`.
pub(crate) fn event_at(
    segment: &Arc<MappedSegment>,
    offset: u64,
    limit: u64,
) -> Result<(RecordedEvent, u64)> {
    // `offset` and `limit` are file offsets; the bytes at hand start at the segment's `base`.
    let limit = limit.min(segment.base + segment.mapping.len() as u64);
    if offset >= limit || offset < segment.base {
        return Err(Error::corrupt(
            &segment.path,
            offset,
            "record beyond the committed end",
        ));
    }
    let at = (offset - segment.base) as usize;
    let bytes = &segment.mapping[at..(limit - segment.base) as usize];
    if let Some(p) = decode_plain_event(bytes) {
        let body = p.body_offset;
        let event_type = &bytes[body..body + p.type_len];
        // Types are short and nearly always ASCII: the test is inlined, the call is not.
        if event_type.is_ascii() || std::str::from_utf8(event_type).is_ok() {
            // Lengths checked by the decoder against the record's size, itself a `u32`.
            let metadata_at = p.type_len + p.key_len + p.commit_len;
            let event = RecordedEvent {
                segment: Arc::clone(segment),
                stream: StreamName::Segment,
                version: p.version,
                position: p.position,
                changeset: p.changeset,
                timestamp_us: p.timestamp_us,
                id: p.event_id,
                flags: p.flags,
                control: None,
                body: at + body,
                type_len: p.type_len as u16,
                key_len: p.key_len as u16,
                metadata_at: metadata_at as u32,
                data_at: (metadata_at + p.metadata_len) as u32,
                data_len: p.data_len as u32,
            };
            return Ok((event, offset + p.padded_bytes));
        }
    }
    // Any other record, or one that fails a check: the general decoder says which.
    let r = decode_record(bytes)
        .map_err(|e| Error::corrupt(&segment.path, offset, format!("committed record: {e}")))?;
    if std::str::from_utf8(r.event_type).is_err() {
        return Err(Error::corrupt(
            &segment.path,
            offset,
            "event type is not UTF-8",
        ));
    }
    // Lengths checked by the decoder against the record's size, itself a `u32`.
    let event = RecordedEvent {
        segment: Arc::clone(segment),
        stream: StreamName::Segment,
        version: r.version,
        position: r.position,
        changeset: r.changeset,
        timestamp_us: r.timestamp_us,
        id: r.event_id,
        flags: r.flags,
        control: r.control.map(Box::new),
        body: at + r.body_offset,
        type_len: r.event_type.len() as u16,
        key_len: r.key.len() as u16,
        metadata_at: (r.event_type.len() + r.key.len() + r.commit_metadata.len()) as u32,
        data_at: (r.event_type.len() + r.key.len() + r.commit_metadata.len() + r.metadata.len())
            as u32,
        data_len: r.data.len() as u32,
    };
    Ok((event, offset + r.padded_bytes))
}

/// Lazy iterator over one stream's events (`Store::read_stream`).
pub struct StreamIter {
    shared: Arc<Shared>,
    meta: Arc<StreamMeta>,
    key: StreamKey,
    state: StreamState,
    direction: Direction,
    /// Next version to yield; 0 or past the end when done.
    next_version: u64,
    /// Index into `state.segments` of the current segment, with its mapping.
    current: Option<(usize, Arc<MappedSegment>)>,
    /// Forward: offset of the next record. Backward: offsets of the records still to yield.
    offset: u64,
    backward_offsets: Vec<u64>,
    failed: bool,
    /// With `skip_invalidated`: the stream's invalidated changesets.
    invalid: Option<std::collections::BTreeMap<u64, u64>>,
    /// The events of the stream's packed prefix, oldest first, once its chain was walked
    /// (segment-format.md §19).
    packed: Option<Vec<crate::packs::Link>>,
}

impl StreamIter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        meta: &Arc<StreamMeta>,
        from_version: u64,
        direction: Direction,
    ) -> StreamIter {
        let state = meta.snapshot();
        // Versions before a snapshot are gone: the snapshot stands for them.
        let next_version = match direction {
            Direction::Forward => from_version.max(state.first_version),
            Direction::Backward if from_version < state.first_version => 0,
            Direction::Backward => from_version.min(state.version),
        };
        StreamIter {
            shared,
            meta: Arc::clone(meta),
            key: meta.key,
            state,
            direction,
            next_version,
            current: None,
            offset: 0,
            backward_offsets: Vec::new(),
            failed: false,
            invalid: None,
            packed: None,
        }
    }

    /// Version `v` of the packed prefix.
    fn packed_event(&mut self, v: u64) -> Result<RecordedEvent> {
        let Some(p) = self.state.packed else {
            return Err(Error::corrupt(
                &self.shared.root,
                0,
                "stream has no packed prefix",
            ));
        };
        if self.packed.is_none() {
            let mut links = crate::packs::walk(&self.shared, self.key, p.last)?;
            links.retain(|l| l.is_event);
            links.reverse();
            self.packed = Some(links);
        }
        let links = self.packed.as_deref().unwrap_or_default();
        let first = links.first().map_or(1, |l| l.version);
        let link = v
            .checked_sub(first)
            .and_then(|i| links.get(usize::try_from(i).ok()?))
            .filter(|l| l.version == v)
            .copied()
            .ok_or_else(|| {
                Error::corrupt(
                    &self.shared.root,
                    0,
                    format!(
                        "packed prefix of stream {:?} lacks version {v}",
                        self.meta.id
                    ),
                )
            })?;
        let pack = self
            .shared
            .maps
            .pack_record(link.pack, link.offset)?
            .ok_or_else(|| {
                Error::corrupt(
                    crate::layout::pack_path(&self.shared.root, link.pack),
                    0,
                    "pack of committed events is missing",
                )
            })?;
        crate::read::packed_event_at(&pack, link.offset, &self.meta.id)
    }

    /// Skip the events of changesets invalidated (`Store::invalidate`) when this is called;
    /// the invalidation events themselves are still yielded.
    ///
    /// # Errors
    /// `Corrupt` or `Io` reading `REMOVALS`.
    pub fn skip_invalidated(mut self) -> Result<StreamIter> {
        let all = self.shared.removals.invalidations(&self.shared)?;
        self.invalid = Some(all.get(&self.key).cloned().unwrap_or_default());
        Ok(self)
    }

    fn map_segment(&self, index: usize) -> Result<Arc<MappedSegment>> {
        let s = &self.state.segments[index];
        self.shared
            .maps
            .segment(self.key, s.number, s.end)?
            .ok_or_else(|| {
                Error::corrupt(
                    segment_path(&self.shared.root, self.key, s.number),
                    0,
                    "segment holding committed events is missing",
                )
            })
    }

    /// Whether the stream was rewritten since this iterator took its state; if so, the state
    /// is the new one (`StreamDeleted` if it was deleted) and `next_version` moved past what
    /// the rewrite removed.
    fn rewritten_since(&mut self) -> Result<bool> {
        let guard = self
            .meta
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.generation == self.state.generation {
            return Ok(false);
        }
        if guard.deleted {
            return Err(Error::StreamDeleted {
                stream: self.meta.id.to_string(),
            });
        }
        self.state = guard.clone();
        drop(guard);
        self.current = None;
        match self.direction {
            Direction::Forward => {
                self.next_version = self.next_version.max(self.state.first_version);
            }
            Direction::Backward if self.next_version < self.state.first_version => {
                self.next_version = 0;
            }
            Direction::Backward => {}
        }
        Ok(true)
    }

    /// Position the iterator on the segment holding `next_version`.
    fn seek(&mut self) -> Result<()> {
        // Segments are looked up under the stream's state lock: a rewrite (snapshot, delete)
        // swaps segment 0 under the write lock, so a segment mapped here belongs to the state
        // read here (segment-format.md §12). A rewritten stream is read on from its new state.
        let meta = Arc::clone(&self.meta);
        let guard = meta
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.generation != self.state.generation {
            if guard.deleted {
                return Err(Error::StreamDeleted {
                    stream: meta.id.to_string(),
                });
            }
            self.state = guard.clone();
            self.current = None;
            match self.direction {
                Direction::Forward => {
                    self.next_version = self.next_version.max(self.state.first_version);
                }
                Direction::Backward if self.next_version < self.state.first_version => {
                    return Ok(());
                }
                Direction::Backward => {}
            }
        }
        let v = self.next_version;
        let index = self
            .state
            .segments
            .partition_point(|s| s.first_version <= v)
            .checked_sub(1)
            .ok_or_else(|| Error::corrupt(&self.shared.root, 0, "stream state has no segment"))?;
        let segment = self.map_segment(index)?;
        let s = self.state.segments[index];
        let mut offset = s.header_bytes;
        let mut version = s.first_version;
        let mut offsets = Vec::new();
        // Walk to the version (forward), or collect the offsets up to it (backward).
        while version < v || (self.direction == Direction::Backward && version == v) {
            let (event, next) = event_at(&segment, offset, s.end)?;
            if event.is_control() {
                offset = next;
                continue;
            }
            if event.version != version {
                return Err(Error::corrupt(
                    &segment.path,
                    offset,
                    "stream versions out of sequence",
                ));
            }
            offsets.push(offset);
            offset = next;
            version += 1;
        }
        drop(guard);
        self.offset = offset;
        self.backward_offsets = offsets;
        self.current = Some((index, segment));
        Ok(())
    }

    fn next_event(&mut self) -> Result<Option<RecordedEvent>> {
        let v = self.next_version;
        if v < self.state.first_version || v > self.state.version {
            return Ok(None);
        }
        if self.state.packed.is_some_and(|p| v <= p.version) {
            let event = match self.packed_event(v) {
                Ok(event) => event,
                // A snapshot or delete since this iterator took its state removed the packed
                // prefix, and may have given its blocks back (segment-format.md §19): read on
                // from the new state, as `seek` does for segments.
                Err(e) if self.rewritten_since()? => {
                    drop(e);
                    self.packed = None;
                    return self.next_event();
                }
                Err(e) => return Err(e),
            };
            match self.direction {
                Direction::Forward => self.next_version += 1,
                Direction::Backward => self.next_version -= 1,
            }
            return Ok(Some(event));
        }
        let needs_seek = match &self.current {
            None => true,
            Some((index, _)) => {
                let s = &self.state.segments[*index];
                v < s.first_version || v > s.last_version
            }
        };
        if needs_seek {
            self.seek()?;
        }
        // A seek may have moved to a rewritten stream's new state, and so past `v`.
        let v = self.next_version;
        if v < self.state.first_version || v > self.state.version {
            return Ok(None);
        }
        let Some((index, segment)) = &self.current else {
            return Ok(None);
        };
        let end = self.state.segments[*index].end;
        let (event, offset, next) = loop {
            let offset = match self.direction {
                Direction::Forward => self.offset,
                Direction::Backward => self.backward_offsets.pop().ok_or_else(|| {
                    Error::corrupt(&segment.path, 0, "backward read lost its place")
                })?,
            };
            let (event, next) = event_at(segment, offset, end)?;
            if event.is_control() && self.direction == Direction::Forward {
                // A close record between events: not an event.
                self.offset = next;
                continue;
            }
            break (event, offset, next);
        };
        if event.version != v {
            return Err(Error::corrupt(
                &segment.path,
                offset,
                format!("expected version {v}, found {}", event.version),
            ));
        }
        debug_assert!(
            event.position <= self.shared.head(),
            "only published events are read"
        );
        match self.direction {
            Direction::Forward => {
                self.offset = next;
                self.next_version += 1;
            }
            Direction::Backward => self.next_version -= 1,
        }
        Ok(Some(event))
    }
}

impl Iterator for StreamIter {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            return match self.next_event() {
                Ok(Some(e)) if is_invalidated(self.invalid.as_ref(), &e) => continue,
                Ok(Some(e)) => Some(Ok(e)),
                Ok(None) => None,
                Err(e) => {
                    self.failed = true;
                    Some(Err(e))
                }
            };
        }
    }
}

/// Whether `event` belongs to a changeset in `invalid` (never an invalidation event itself).
fn is_invalidated(
    invalid: Option<&std::collections::BTreeMap<u64, u64>>,
    event: &RecordedEvent,
) -> bool {
    invalid.is_some_and(|m| event.invalidates().is_none() && m.contains_key(&event.changeset))
}

/// The events of versions `from ..` (at most `count`) of a stream.
pub(crate) fn read_versions(
    shared: &Arc<Shared>,
    meta: &Arc<StreamMeta>,
    from: u64,
    count: usize,
) -> Result<Vec<RecordedEvent>> {
    StreamIter::new(Arc::clone(shared), meta, from, Direction::Forward)
        .take(count)
        .collect()
}

/// Lazy iterator over every stream's events in global order (`Store::read_all`).
///
/// It reads the index in windows of positions. Within a window, each segment is fetched once,
/// whatever the number of its records there: small segments (a stream of a few events) are
/// read into memory with one `pread`, larger ones are mapped through the cache. Then the
/// window's events are served in position order. Without windows, a store of many small
/// interleaved streams costs one open and one mapping per event.
pub struct AllIter {
    shared: Arc<Shared>,
    direction: Direction,
    /// Next position to load into a window (0 when done backward).
    next: u64,
    /// Last position to yield forward: the head when the iterator was made.
    last: u64,
    /// The loaded window, in the order the events are yielded.
    window: std::collections::VecDeque<Slot>,
    /// An error met while loading, to be returned once the window before it is served.
    pending: Option<Error>,
    failed: bool,
    /// Streams' base records looked at: the last position each one's rewrite removed.
    covers: KeyMap<StreamKey, u64>,
    /// The truncations (`REMOVALS`), read when the first window is loaded: events they removed
    /// may still be in the segments.
    removals: Option<Arc<KeyMap<StreamKey, crate::removals::Covers>>>,
    /// With `skip_invalidated`: every stream's invalidated changesets.
    invalid: Option<Arc<crate::removals::Invalidations>>,
    /// Read only these positions (increasing), not a range: an index's postings (§17).
    list: Option<std::collections::VecDeque<u64>>,
    /// Positions the next window covers: grown while windows fit their byte budget with room to
    /// spare, cut to what the budget held when one did not (index entries read beyond it would be
    /// read again by the next window).
    span: u64,
    /// The tables of the packed streams met, for their ids (segment-format.md §19): shared
    /// with the store's table cache, at most one per table number; with the window that last
    /// used each and its place in that window's `names`. Indexed by table number
    /// (`Tables::count` slots, allocated at the first packed event): three lookups per packed
    /// event (two prefetches and the name) took a fifth of W5's window loading as hash-map
    /// lookups (session 12).
    tables: Vec<Option<(Arc<crate::packs::Table>, u64, u32)>>,
    /// The store's layout of tables: which table holds a stream.
    table_layout: crate::layout::Tables,
    /// The tables the current window's packed events name their streams in (shared by its
    /// events), and the window's number.
    names: Vec<Arc<crate::packs::Table>>,
    names_shared: Arc<Vec<Arc<crate::packs::Table>>>,
    windows: u64,
}

struct Slot {
    position: u64,
    key: StreamKey,
    segment: Arc<MappedSegment>,
    offset: u64,
    flags: u8,
    /// A packed event's table (in `AllIter::names`) and entry there (its pack names no stream).
    stream: Option<(u32, u32)>,
}

/// One index entry of a window.
struct Entry {
    position: u64,
    key: StreamKey,
    segment: u32,
    offset: u64,
    flags: u8,
    /// A control record: nothing to read (segment-format.md §12).
    skip: bool,
    /// The record is in pack `segment` (segment-format.md §19).
    packed: bool,
    /// Positions the entry stands for: 1, or for a `skip` entry the removed positions from
    /// `position` on that a compacted index file holds no entry for.
    run: u32,
}

impl Entry {
    fn of(position: u64, e: &crate::format::index::IndexEntry) -> Entry {
        Entry {
            position,
            key: StreamKey {
                hash: e.stream_hash,
                collision: e.collision,
            },
            segment: e.segment,
            offset: u64::from(e.offset),
            flags: e.flags & (RECORD_FLAG_BEGIN | RECORD_FLAG_END),
            skip: e.flags & FLAG_CONTROL != 0,
            packed: e.flags & crate::format::index::FLAG_PACKED != 0,
            run: 1,
        }
    }

    /// `run` positions from `position` on that index compaction removed (segment-format.md
    /// §4): nothing to read.
    fn removed(position: u64, run: u32) -> Entry {
        Entry {
            position,
            key: StreamKey {
                hash: 0,
                collision: 0,
            },
            segment: 0,
            offset: 0,
            flags: 0,
            skip: true,
            packed: false,
            run,
        }
    }

    /// The file holding the record: the stream's segment, or the pack.
    fn file(&self) -> (StreamKey, u32) {
        if self.packed {
            (crate::layout::PACK_KEY, self.segment)
        } else {
            (self.key, self.segment)
        }
    }
}

impl AllIter {
    pub(crate) fn new(shared: Arc<Shared>, from: Position, direction: Direction) -> AllIter {
        let head = shared.head();
        let next = match direction {
            Direction::Forward => from.0.max(1),
            Direction::Backward => from.0.min(head),
        };
        AllIter {
            table_layout: shared.tables(),
            shared,
            direction,
            next,
            last: head,
            window: std::collections::VecDeque::new(),
            pending: None,
            failed: false,
            covers: KeyMap::default(),
            removals: None,
            invalid: None,
            list: None,
            span: READ_ALL_WINDOW_POSITIONS,
            tables: Vec::new(),
            names: Vec::new(),
            names_shared: Arc::new(Vec::new()),
            windows: 0,
        }
    }

    /// Read no further than `position` (forward).
    pub(crate) fn stop_at(&mut self, position: u64) {
        self.last = self.last.min(position);
    }

    /// Read the events at these positions (increasing, at most the head), through the same
    /// windows as a range: what an index by category or type names (segment-format.md §17).
    pub(crate) fn at_positions(shared: Arc<Shared>, positions: Vec<u64>) -> AllIter {
        let head = shared.head();
        let mut it = AllIter::new(shared, Position::START, Direction::Forward);
        debug_assert!(positions.windows(2).all(|w| w[0] < w[1]));
        it.list = Some(positions.into_iter().filter(|p| *p <= head).collect());
        it
    }

    /// Skip the events of changesets invalidated (`Store::invalidate`) when this is called;
    /// the invalidation events themselves are still yielded.
    ///
    /// # Errors
    /// `Corrupt` or `Io` reading `REMOVALS`.
    pub fn skip_invalidated(mut self) -> Result<AllIter> {
        self.invalid = Some(self.shared.removals.invalidations(&self.shared)?);
        Ok(self)
    }

    /// Forward: the position after the last one this iterator covers (its head when made).
    /// Once it is exhausted, every position before this one was read or skipped.
    pub(crate) fn end(&self) -> u64 {
        self.last + 1
    }

    fn done_loading(&self) -> bool {
        match &self.list {
            Some(list) => list.is_empty(),
            None => self.next == 0 || self.next > self.last,
        }
    }

    /// The index entries of the next window, in yield order; stops early at an entry that does
    /// not decode (its error becomes `pending`).
    fn entries(&mut self) -> Vec<Entry> {
        let span = self.span;
        let per_file = self.shared.manifest.index_entries_per_file;
        let listed: Vec<u64>;
        let forward_end = self.last.min(self.next.saturating_add(span - 1));
        let backward_end = self.next.saturating_sub(span - 1).max(1);
        let range = self.list.is_none();
        let forward = self.direction == Direction::Forward;
        let mut positions: Box<dyn Iterator<Item = u64>> = match (&self.list, self.direction) {
            (Some(list), _) => {
                listed = list.iter().take(span as usize).copied().collect();
                Box::new(listed.into_iter())
            }
            (None, Direction::Forward) => Box::new(self.next..=forward_end),
            (None, Direction::Backward) => Box::new((backward_end..=self.next).rev()),
        };
        let mut entries = Vec::new();
        let maps = &self.shared.maps;
        // The index file of the positions at hand, taken once per file (a window spans one or
        // two): a lookup per entry took a lock and a reference count each time.
        let mut file: Option<(u64, Arc<crate::mapping::Mapping>)> = None;
        while let Some(position) = positions.next() {
            let (number, _) = crate::format::index::locate(position, per_file);
            if !matches!(&file, Some((n, _)) if *n == number) {
                match maps.index_file(number) {
                    Ok(m) => file = Some((number, m)),
                    Err(e) => {
                        self.pending = Some(e);
                        break;
                    }
                }
            }
            let Some((_, mapping)) = &file else {
                break;
            };
            if range && crate::cache::is_compacted(mapping) {
                // A compacted file holds only live entries: the positions between them are
                // skipped as runs, not looked up one by one (after 90% of the streams were
                // deleted, nine lookups in ten found nothing; session 12).
                let (from, to) = if forward {
                    (position, forward_end.min((number + 1) * per_file))
                } else {
                    (backward_end.max(number * per_file + 1), position)
                };
                let body = &mapping[crate::format::index::INDEX_HEADER_BYTES as usize..];
                let mut live: Vec<(u64, _)> =
                    crate::format::index::sparse_range(body, from, to).collect();
                if !forward {
                    live.reverse();
                }
                // The next position the window expects.
                let mut at = position;
                for (p, e) in live {
                    let in_order = if forward { p >= at } else { p <= at };
                    let e = match e {
                        Ok(e) if in_order => e,
                        Ok(_) => {
                            // Out of order: damage that the entry's CRC did not catch.
                            self.pending = Some(Error::corrupt(
                                index_path(&self.shared.root, number),
                                0,
                                format!("compacted index entries out of order at position {p}"),
                            ));
                            return entries;
                        }
                        Err(e) => {
                            self.pending = Some(Error::corrupt(
                                index_path(&self.shared.root, number),
                                0,
                                format!("index entry of position {p}: {e}"),
                            ));
                            return entries;
                        }
                    };
                    if p != at {
                        entries.push(Entry::removed(at, run_of(p.abs_diff(at))));
                    }
                    entries.push(Entry::of(p, &e));
                    at = if forward { p + 1 } else { p - 1 };
                }
                if forward {
                    if at <= to {
                        entries.push(Entry::removed(at, run_of(to + 1 - at)));
                    }
                    positions = Box::new(to + 1..=forward_end);
                } else {
                    if at >= from {
                        entries.push(Entry::removed(at, run_of(at + 1 - from)));
                    }
                    positions = Box::new((backward_end..from).rev());
                }
                continue;
            }
            match maps.entry_in(mapping, position) {
                Ok(Some(e)) => entries.push(Entry::of(position, &e)),
                // Removed by a rewrite and compacted away (segment-format.md §4): skipped.
                Ok(None) => entries.push(Entry::removed(position, 1)),
                Err(e) => {
                    let (file, at) = crate::format::index::locate(position, per_file);
                    self.pending = Some(Error::corrupt(
                        index_path(&self.shared.root, file),
                        at,
                        format!("index entry of position {position}: {e}"),
                    ));
                    break;
                }
            }
        }
        entries
    }

    /// Was the event at `position` of stream `key` removed by a snapshot or a delete? The
    /// stream's segment 0 then opens with a base record that covers it (segment-format.md §12).
    fn removed(&mut self, key: StreamKey, position: u64) -> Result<bool> {
        if self.known_removed(key, position) {
            return Ok(true);
        }
        // Not known yet, or the stream was rewritten again since it was looked at.
        let covers = crate::catalog::base_covers(&self.shared, key)?;
        self.covers.insert(key, covers);
        self.shared.note_removed(key, covers);
        Ok(position <= covers)
    }

    /// Removed by a truncation, or by a rewrite that this read or this process has seen (the
    /// process's knowledge is copied in once per window, by `load`): no I/O, no lock.
    fn known_removed(&self, key: StreamKey, position: u64) -> bool {
        if self.covers.get(&key).is_some_and(|c| position <= *c) {
            return true;
        }
        if let Some(c) = self.removals.as_ref().and_then(|m| m.get(&key)) {
            if position <= c.1 {
                return true;
            }
        }
        false
    }

    /// Load the next window, and share the tables its packed events name their streams in.
    fn load(&mut self) {
        self.windows += 1;
        self.names.clear();
        self.load_window();
        self.names_shared = Arc::new(std::mem::take(&mut self.names));
    }

    /// Load the next window: fetch every segment it names once, then queue its events.
    fn load_window(&mut self) {
        if self.removals.is_none() {
            match self.shared.removals.map(&self.shared) {
                Ok(m) => self.removals = Some(m),
                Err(e) => {
                    self.pending = Some(e);
                    return;
                }
            }
        }
        let entries = self.entries();
        // What the process knows of rewritten streams, for this window's streams: one lock per
        // window, none per entry.
        self.shared
            .removed_into(entries.iter().map(|e| e.key), &mut self.covers);
        let stop_at = self.pending.is_some();
        // The last record of each segment within the window: how far it must be fetched.
        let mut reach: KeyMap<(StreamKey, u32), u64> = KeyMap::default();
        // And the first: only the records from it to the last are read into memory.
        let mut start: KeyMap<(StreamKey, u32), u64> = KeyMap::default();
        for e in &entries {
            let r = reach.entry(e.file()).or_insert(0);
            *r = (*r).max(e.offset);
            let f = start.entry(e.file()).or_insert(u64::MAX);
            *f = (*f).min(e.offset);
        }
        let mut prefetched = self.prefetch(&entries, &start, &reach);
        self.prefetch_tables(&entries);
        let mut fetched: KeyMap<(StreamKey, u32), Arc<MappedSegment>> = KeyMap::default();
        let mut read_bytes = 0usize;
        let mut mapped = 0usize;
        let mapped_max = (self.shared.options.mapped_segments_max / 4).max(1);
        let mut loaded = 0u64;
        for (i, e) in entries.iter().enumerate() {
            // The lookup of a packed event's stream (below) waited on memory for each event
            // (`perf` on W5, session 11): fetch its table's header two steps ahead, and the
            // table's slot for it one step ahead.
            for (distance, slot) in [
                (2 * READ_ALL_PREFETCH_DISTANCE, false),
                (READ_ALL_PREFETCH_DISTANCE, true),
            ] {
                let Some(ahead) = entries.get(i + distance).filter(|a| a.packed) else {
                    continue;
                };
                if let Some(Some((table, _, _))) = self
                    .tables
                    .get(usize::from(self.table_layout.number(ahead.key.hash)))
                {
                    if slot {
                        table.prefetch(ahead.key);
                    } else {
                        table.prefetch_header();
                    }
                }
            }
            if e.skip {
                loaded += u64::from(e.run);
                continue;
            }
            // Removed by a rewrite already seen: no need to look for its segment.
            if self.known_removed(e.key, e.position) {
                loaded += 1;
                continue;
            }
            let id = e.file();
            let mut retried = false;
            let segment = loop {
                if let Some(s) = fetched.get(&id) {
                    break Some(Arc::clone(s));
                }
                let last_record = reach.get(&id).copied().unwrap_or(e.offset);
                let first_record = start.get(&id).copied().unwrap_or(e.offset).min(last_record);
                let err = match self.fetch(
                    id.0,
                    id.1,
                    first_record,
                    last_record,
                    prefetched.remove(&id),
                    &mut read_bytes,
                    &mut mapped,
                    mapped_max,
                ) {
                    Ok(Some(s)) => {
                        fetched.insert(id, Arc::clone(&s));
                        break Some(s);
                    }
                    // The window's budget is spent: the rest waits for the next window.
                    Ok(None) => {
                        self.span = loaded
                            .clamp(READ_ALL_WINDOW_POSITIONS_MIN, READ_ALL_WINDOW_POSITIONS_MAX);
                        self.advance(loaded);
                        return;
                    }
                    Err(err) => err,
                };
                // A rewritten stream (segment-format.md §12): its removed events are skipped,
                // and the segment is fetched again only as far as the events that remain.
                let removed = match &err {
                    Error::Corrupt { .. } => self.removed(e.key, e.position),
                    _ => Ok(false),
                };
                match removed {
                    Ok(true) => break None,
                    Ok(false) if !retried && matches!(err, Error::Corrupt { .. }) => {
                        retried = true;
                        let covers = self.covers.get(&e.key).copied().unwrap_or(0);
                        let live = entries
                            .iter()
                            .filter(|x| x.file() == id && !x.skip && x.position > covers)
                            .map(|x| x.offset)
                            .max()
                            .unwrap_or(e.offset);
                        reach.insert(id, live);
                    }
                    Ok(false) => {
                        tracing::error!(error = %err, "corruption");
                        self.pending = Some(err);
                        self.advance(loaded);
                        return;
                    }
                    Err(other) => {
                        self.pending = Some(other);
                        self.advance(loaded);
                        return;
                    }
                }
            };
            let Some(segment) = segment else {
                loaded += 1;
                continue;
            };
            let stream = if e.packed {
                match self.stream_name(e.key) {
                    Ok(id) => Some(id),
                    Err(err) => {
                        self.pending = Some(err);
                        self.advance(loaded);
                        return;
                    }
                }
            } else {
                None
            };
            self.window.push_back(Slot {
                position: e.position,
                key: e.key,
                segment,
                offset: e.offset,
                flags: e.flags,
                stream,
            });
            loaded += 1;
        }
        // Larger windows pay when many files are met (a stream's file is fetched once per
        // window, whatever the number of its events in it); over packs or a few large streams
        // they only grow the queue of slots, which then runs out of the caches (W5 over packs:
        // 2.8 M events/s with windows of up to 524,288 positions, 3.1 M with 65,536; session 11).
        let many_files = fetched.len() as u64 * READ_ALL_POSITIONS_PER_FILE_TO_GROW >= loaded;
        let covered: u64 = entries.iter().map(|e| u64::from(e.run)).sum();
        if covered >= self.span
            && many_files
            && read_bytes < self.shared.options.read_all_window_bytes / 2
            && mapped < mapped_max / 2
        {
            self.span = (self.span * 2).min(READ_ALL_WINDOW_POSITIONS_MAX);
        } else if !many_files {
            self.span = self.span.min(READ_ALL_WINDOW_POSITIONS);
        }
        self.advance(loaded);
        if !stop_at && loaded == 0 && self.pending.is_none() && !self.done_loading() {
            self.pending = Some(Error::corrupt(
                &self.shared.root,
                0,
                "read_all made no progress",
            ));
        }
    }

    fn advance(&mut self, loaded: u64) {
        if let Some(list) = &mut self.list {
            list.drain(..(loaded as usize).min(list.len()));
            return;
        }
        match self.direction {
            Direction::Forward => self.next += loaded,
            Direction::Backward => self.next -= loaded,
        }
    }

    /// The window's small segments, read by several threads at once (in the order the window
    /// first names them, within the window's byte budget), for `fetch` to take rather than read
    /// again. Each result is what `read_small_segment` answered for the segment's reach.
    fn prefetch(
        &self,
        entries: &[Entry],
        start: &KeyMap<(StreamKey, u32), u64>,
        reach: &KeyMap<(StreamKey, u32), u64>,
    ) -> KeyMap<(StreamKey, u32), Result<SmallRead>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        if read_threads() < 2 {
            return KeyMap::default();
        }
        let maps = &self.shared.maps;
        let mut seen: KeyMap<(StreamKey, u32), ()> = KeyMap::default();
        let order: Vec<((StreamKey, u32), u64, u64)> = entries
            .iter()
            .filter(|e| !e.skip && !e.packed && !self.known_removed(e.key, e.position))
            .filter_map(|e| {
                let id = (e.key, e.segment);
                let last = reach.get(&id).copied().unwrap_or(e.offset);
                let first = start.get(&id).copied().unwrap_or(e.offset).min(last);
                let small = last as usize + RECORD_HEADER_BYTES <= READ_ALL_SMALL_SEGMENT_BYTES;
                (small && seen.insert(id, ()).is_none()).then_some((id, first, last))
            })
            .collect();
        if order.len() < READ_ALL_PARALLEL_SEGMENTS_MIN {
            return KeyMap::default();
        }
        let budget = self.shared.options.read_all_window_bytes;
        let next = AtomicUsize::new(0);
        let bytes = AtomicUsize::new(0);
        let work = || {
            let mut out = Vec::new();
            while bytes.load(Ordering::Relaxed) < budget {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&((key, number), first, last)) = order.get(i) else {
                    break;
                };
                if maps.cached_segment(key, number).is_some() {
                    continue;
                }
                let r =
                    maps.read_small_segment(key, number, first, last, READ_ALL_SMALL_SEGMENT_BYTES);
                if let Ok(SmallRead::Read(s)) = &r {
                    bytes.fetch_add(s.mapping.len().max(1), Ordering::Relaxed);
                }
                out.push(((key, number), r));
            }
            out
        };
        // The segments nobody read are fetched by `load` as without helpers.
        with_helpers(&self.shared, work)
            .map(|read| read.into_iter().collect())
            .unwrap_or_default()
    }

    /// The fan-out tables this window's packed events name their streams in and the iterator
    /// does not hold yet, read by several threads at once when there are at least
    /// `READ_ALL_PARALLEL_TABLES_MIN`: a fresh handle's first read over many small streams reads
    /// one table per fan-out met, an `open`, a `read` and a `close` each (most of the first
    /// read of the lifecycle bench's pruned store, session 12). What they read is held as if
    /// met by a past window; a table they could not read is read again, and its error
    /// reported, by the lookup that needs it.
    fn prefetch_tables(&mut self, entries: &[Entry]) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        if read_threads() < 2 {
            return;
        }
        let held = |f: u16| matches!(self.tables.get(usize::from(f)), Some(Some(_)));
        let layout = self.table_layout;
        // Held first: that is one load, and in a steady read every table is held.
        let mut wanted: Vec<u16> = entries
            .iter()
            .filter(|e| e.packed && !e.skip && !held(layout.number(e.key.hash)))
            .filter(|e| !self.known_removed(e.key, e.position))
            .map(|e| layout.number(e.key.hash))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.len() < READ_ALL_PARALLEL_TABLES_MIN {
            return;
        }
        let next = AtomicUsize::new(0);
        let shared = &self.shared;
        let work = || {
            let mut out = Vec::new();
            while let Some(&fanout) = wanted.get(next.fetch_add(1, Ordering::Relaxed)) {
                if let Ok(Some(table)) = crate::packs::table(shared, fanout) {
                    out.push((fanout, table));
                }
            }
            out
        };
        let Some(read) = with_helpers(&self.shared, work) else {
            return;
        };
        for (fanout, table) in read {
            // No window has named it: the first event that does puts it in `names`.
            self.hold_table(fanout, table, u64::MAX, 0);
        }
    }

    /// Hold `table` as table number `fanout` (a fan-out in a store created before format 7),
    /// last named by window `window` at `at` in its `names` (the slots, one per table number
    /// of the store's layout, are allocated at the first table held).
    fn hold_table(&mut self, fanout: u16, table: Arc<crate::packs::Table>, window: u64, at: u32) {
        if self.tables.is_empty() {
            self.tables.resize(self.table_layout.count(), None);
        }
        if let Some(slot) = self.tables.get_mut(usize::from(fanout)) {
            *slot = Some((table, window, at));
        }
    }

    /// One segment for the window: read when small, else mapped; `Ok(None)` when the window's
    /// budget would be exceeded (never for the window's first segment). `prefetched`: what
    /// `prefetch` read of it, for this reach.
    #[allow(clippy::too_many_arguments)]
    fn fetch(
        &mut self,
        key: StreamKey,
        number: u32,
        first_record: u64,
        last_record: u64,
        prefetched: Option<Result<SmallRead>>,
        read_bytes: &mut usize,
        mapped: &mut usize,
        mapped_max: usize,
    ) -> Result<Option<Arc<MappedSegment>>> {
        let first = *read_bytes == 0 && *mapped == 0;
        let maps = &self.shared.maps;
        // Not logged here: the caller first asks whether a rewrite removed the segment.
        let missing = || Error::Corrupt {
            path: segment_path(&self.shared.root, key, number),
            offset: 0,
            reason: "segment named by a committed index entry is missing".into(),
        };
        if key == crate::layout::PACK_KEY {
            // A pack is mapped, never read into memory: the window's records of many streams
            // lie in it one after the other (segment-format.md §19).
            if !first && *mapped >= mapped_max {
                return Ok(None);
            }
            *mapped += 1;
            let missing = || Error::Corrupt {
                path: crate::layout::pack_path(&self.shared.root, number),
                offset: 0,
                reason: "pack named by a committed index entry is missing".into(),
            };
            return Ok(Some(
                maps.pack_record(number, last_record)?.ok_or_else(missing)?,
            ));
        }
        if let Some(s) = maps.cached_segment(key, number) {
            // Usable when it holds the last record whole (it may predate later appends).
            let len = s.mapping.len() as u64;
            let whole = len >= last_record + RECORD_HEADER_BYTES as u64
                && peek_record_header(&s.mapping[last_record as usize..])
                    .is_some_and(|h| last_record + u64::from(h.record_bytes) <= len);
            if whole {
                return Ok(Some(s));
            }
        }
        let small = last_record as usize + RECORD_HEADER_BYTES <= READ_ALL_SMALL_SEGMENT_BYTES;
        if small && !first && *read_bytes >= self.shared.options.read_all_window_bytes {
            // The window's bytes are spent: a small segment waits for the next window rather
            // than being mapped (a mapping costs several times a read, and evicts one the
            // cache may need).
            return Ok(None);
        }
        if small {
            let read = match prefetched {
                Some(r) => r,
                None => maps.read_small_segment(
                    key,
                    number,
                    first_record,
                    last_record,
                    READ_ALL_SMALL_SEGMENT_BYTES,
                ),
            };
            match read? {
                SmallRead::Read(s) => {
                    *read_bytes += s.mapping.len().max(1);
                    return Ok(Some(Arc::new(s)));
                }
                SmallRead::Rewritten { covers_position } => {
                    // The caller asks `removed`, which answers from this.
                    self.covers.insert(key, covers_position);
                    self.shared.note_removed(key, covers_position);
                    // Not logged: a removal is no corruption.
                    return Err(Error::Corrupt {
                        path: segment_path(&self.shared.root, key, number),
                        offset: 0,
                        reason: "records removed by a rewrite of the stream".into(),
                    });
                }
                SmallRead::NotSmall => {}
            }
            // `None`: the last record runs past the small size, or the file is missing (the
            // mapping below says so).
        }
        if !first && *mapped >= mapped_max {
            return Ok(None);
        }
        *mapped += 1;
        let mut min_len = last_record + RECORD_HEADER_BYTES as u64;
        let mut segment = maps.segment(key, number, min_len)?.ok_or_else(missing)?;
        // The last record must be mapped whole.
        if let Some(h) = peek_record_header(
            &segment.mapping[(last_record as usize).min(segment.mapping.len())..],
        ) {
            let record_end = last_record + u64::from(h.record_bytes);
            if record_end > segment.mapping.len() as u64 {
                min_len = record_end;
                segment = maps.segment(key, number, min_len)?.ok_or_else(missing)?;
            }
        }
        Ok(Some(segment))
    }

    /// Packed stream `key`'s fan-out table in this window's `names`, and its entry there,
    /// which holds its id (the table is taken from the store's table cache the first time one
    /// of its streams is met, and again when a newer stream is not in the copy held).
    fn stream_name(&mut self, key: StreamKey) -> Result<(u32, u32)> {
        let fanout = self.table_layout.number(key.hash);
        // One lookup, and no count taken on the table, for an event whose table is held.
        if let Some(Some((table, window, at))) = self.tables.get_mut(usize::from(fanout)) {
            if let Some(n) = table.index_of(key) {
                if *window != self.windows {
                    *window = self.windows;
                    *at = names_slot(&self.names);
                    self.names.push(Arc::clone(table));
                }
                return Ok((*at, n));
            }
        }
        let table = crate::packs::table(&self.shared, fanout)?;
        let Some((table, n)) = table.and_then(|t| t.index_of(key).map(|n| (t, n))) else {
            return Err(Error::corrupt(
                self.shared.table_path(fanout),
                0,
                "packed stream of a committed record is not in its table",
            ));
        };
        // A newer copy (or the first): this window's later events name it.
        let at = names_slot(&self.names);
        self.names.push(Arc::clone(&table));
        self.hold_table(fanout, table, self.windows, at);
        Ok((at, n))
    }

    /// The slot's event; `None` when its stream's rewrite removed it.
    fn event(&mut self, slot: Slot) -> Result<Option<RecordedEvent>> {
        let key = slot.key;
        let mut event = match event_at(
            &slot.segment,
            slot.offset,
            slot.segment.base + slot.segment.mapping.len() as u64,
        ) {
            Ok((event, _)) => event,
            Err(e) if self.removed(key, slot.position)? => {
                drop(e);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if event.position != slot.position && self.removed(key, slot.position)? {
            return Ok(None);
        }
        if event.position != slot.position {
            return Err(Error::corrupt(
                &slot.segment.path,
                slot.offset,
                format!(
                    "index says position {}, record says {}",
                    slot.position, event.position
                ),
            ));
        }
        if event.flags & (RECORD_FLAG_BEGIN | RECORD_FLAG_END) != slot.flags {
            return Err(Error::corrupt(
                &slot.segment.path,
                slot.offset,
                "append boundaries differ between index and record",
            ));
        }
        if is_invalidated(self.invalid.as_ref().and_then(|m| m.get(&key)), &event) {
            return Ok(None);
        }
        if let Some((table, entry)) = slot.stream {
            event.stream = StreamName::Window {
                tables: Arc::clone(&self.names_shared),
                table,
                entry,
            };
        }
        Ok(Some(event))
    }
}

/// Helper threads gone back to the store's count when dropped, however their work ends.
struct Helpers<'a>(&'a std::sync::atomic::AtomicU64, u64);

impl Drop for Helpers<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_sub(self.1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Threads a window's reads may run on, the reader's own included.
fn read_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(READ_ALL_FETCH_THREADS_MAX)
}

/// Run `work` (which takes items from a shared list until none is left) on this thread and on
/// the helper threads free (`take_helpers`); every thread's output, in no set order. `None`
/// when no helper is free: the caller then reads alone, as without helpers. A helper that
/// cannot be started leaves its share to the others.
fn with_helpers<T: Send>(shared: &Shared, work: impl Fn() -> Vec<T> + Sync) -> Option<Vec<T>> {
    let release = take_helpers(shared, read_threads())?;
    let work = &work;
    Some(std::thread::scope(|scope| {
        let helpers: Vec<_> = (0..release.1)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut all = work();
        for h in helpers {
            if let Ok(part) = h.join() {
                all.extend(part);
            }
        }
        all
    }))
}

/// Up to `threads - 1` helper threads for one window's reads. Helpers are shared by every
/// iterator of the store: with many reading at once, each gets what is left, down to none
/// (`None`: it reads alone).
fn take_helpers(shared: &Shared, threads: usize) -> Option<Helpers<'_>> {
    use std::sync::atomic::Ordering;
    let wanted = (threads - 1) as u64;
    let helpers = shared
        .read_helpers
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
            let free = wanted.saturating_sub(busy);
            (free > 0).then_some(busy + free)
        })
        .map_or(0, |busy| wanted.saturating_sub(busy));
    (helpers > 0).then_some(Helpers(&shared.read_helpers, helpers))
}

/// A run of removed positions within one window (at most `READ_ALL_WINDOW_POSITIONS_MAX`).
fn run_of(positions: u64) -> u32 {
    debug_assert!(positions <= READ_ALL_WINDOW_POSITIONS_MAX);
    u32::try_from(positions).unwrap_or(u32::MAX)
}

/// The place the next table takes in a window's `names`: one per fan-out, and one more per
/// newer copy taken in the window (at most one per position), far below `u32::MAX`.
fn names_slot(names: &[Arc<crate::packs::Table>]) -> u32 {
    u32::try_from(names.len()).unwrap_or(u32::MAX)
}

impl Iterator for AllIter {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            // A window can hold nothing to yield (only removed events): load the next one.
            while self.window.is_empty() && self.pending.is_none() {
                if self.done_loading() {
                    return None;
                }
                self.load();
            }
            match self.window.pop_front() {
                Some(slot) => match self.event(slot) {
                    Ok(Some(e)) => return Some(Ok(e)),
                    Ok(None) => {}
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                },
                None => {
                    self.failed = true;
                    return self.pending.take().map(Err);
                }
            }
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// Every event read is moved a few times on its way to the caller: past 128 bytes, each move
    /// became a call to `memmove` (W4, `perf`, session 11).
    #[test]
    fn a_recorded_event_stays_within_two_cache_lines() {
        let size = std::mem::size_of::<super::RecordedEvent>();
        assert!(size <= 128, "RecordedEvent takes {size} bytes");
    }
}
