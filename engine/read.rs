//! The read path: events borrowed straight from mapped segments, read by stream or in global
//! order through the index.

use crate::cache::MappedSegment;
use crate::catalog::{StreamMeta, StreamState};
use crate::error::{Error, Result};
use crate::format::segment::{
    decode_record, peek_record_header, RECORD_FLAG_BEGIN, RECORD_FLAG_END, RECORD_HEADER_BYTES,
};
use crate::layout::{index_path, segment_path, StreamKey};
use crate::shared::Shared;
use crate::types::{Direction, Position};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One stored event. Its data and metadata borrow from the mapped segment (no copy); it stays
/// valid for as long as it is kept, whatever the store does meanwhile.
#[derive(Clone)]
pub struct RecordedEvent {
    segment: Arc<MappedSegment>,
    version: u64,
    position: u64,
    changeset: u64,
    timestamp_us: u64,
    id: Option<[u8; 16]>,
    flags: u8,
    event_type: Range<usize>,
    metadata: Range<usize>,
    data: Range<usize>,
}

impl RecordedEvent {
    #[must_use]
    pub fn stream_id(&self) -> &str {
        &self.segment.stream_id
    }

    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    #[must_use]
    pub fn position(&self) -> Position {
        Position(self.position)
    }

    #[must_use]
    pub fn event_type(&self) -> &str {
        // Checked to be UTF-8 when the event was decoded.
        std::str::from_utf8(&self.segment.mapping[self.event_type.clone()]).unwrap_or("")
    }

    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.segment.mapping[self.data.clone()]
    }

    #[must_use]
    pub fn metadata(&self) -> &[u8] {
        &self.segment.mapping[self.metadata.clone()]
    }

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
    #[must_use]
    pub fn changeset(&self) -> u64 {
        self.changeset
    }

    /// True for the first event of its append.
    #[must_use]
    pub fn is_append_begin(&self) -> bool {
        self.flags & RECORD_FLAG_BEGIN != 0
    }

    /// True for the last event of its append.
    #[must_use]
    pub fn is_append_end(&self) -> bool {
        self.flags & RECORD_FLAG_END != 0
    }
}

impl std::fmt::Debug for RecordedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedEvent")
            .field("stream_id", &self.stream_id())
            .field("version", &self.version)
            .field("position", &self.position)
            .field("event_type", &self.event_type())
            .field("data_len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Decode the record at `offset` of a mapped segment, reading no further than `limit`.
pub(crate) fn event_at(
    segment: &Arc<MappedSegment>,
    offset: u64,
    limit: u64,
) -> Result<(RecordedEvent, u64)> {
    let limit = limit.min(segment.mapping.len() as u64);
    if offset >= limit {
        return Err(Error::corrupt(
            &segment.path,
            offset,
            "record beyond the committed end",
        ));
    }
    let bytes = &segment.mapping[offset as usize..limit as usize];
    let r = decode_record(bytes)
        .map_err(|e| Error::corrupt(&segment.path, offset, format!("committed record: {e}")))?;
    if std::str::from_utf8(r.event_type).is_err() {
        return Err(Error::corrupt(
            &segment.path,
            offset,
            "event type is not UTF-8",
        ));
    }
    let base = offset as usize;
    let type_start = base + RECORD_HEADER_BYTES;
    let metadata_start = type_start + r.event_type.len();
    let data_start = metadata_start + r.metadata.len();
    let event = RecordedEvent {
        segment: Arc::clone(segment),
        version: r.version,
        position: r.position,
        changeset: r.changeset,
        timestamp_us: r.timestamp_us,
        id: r.event_id,
        flags: r.flags,
        event_type: type_start..metadata_start,
        metadata: metadata_start..data_start,
        data: data_start..data_start + r.data.len(),
    };
    Ok((event, offset + r.padded_bytes))
}

/// Lazy iterator over one stream's events (`Store::read_stream`).
pub struct StreamIter {
    shared: Arc<Shared>,
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
}

impl StreamIter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        meta: &StreamMeta,
        from_version: u64,
        direction: Direction,
    ) -> StreamIter {
        let state = meta.snapshot();
        let next_version = match direction {
            Direction::Forward => from_version.max(1),
            Direction::Backward => from_version.min(state.version),
        };
        StreamIter {
            shared,
            key: meta.key,
            state,
            direction,
            next_version,
            current: None,
            offset: 0,
            backward_offsets: Vec::new(),
            failed: false,
        }
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

    /// Position the iterator on the segment holding `next_version`.
    fn seek(&mut self) -> Result<()> {
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
        self.offset = offset;
        self.backward_offsets = offsets;
        self.current = Some((index, segment));
        Ok(())
    }

    fn next_event(&mut self) -> Result<Option<RecordedEvent>> {
        let v = self.next_version;
        if v == 0 || v > self.state.version {
            return Ok(None);
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
        let Some((index, segment)) = &self.current else {
            return Ok(None);
        };
        let end = self.state.segments[*index].end;
        let offset = match self.direction {
            Direction::Forward => self.offset,
            Direction::Backward => self
                .backward_offsets
                .pop()
                .ok_or_else(|| Error::corrupt(&segment.path, 0, "backward read lost its place"))?,
        };
        let (event, next) = event_at(segment, offset, end)?;
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
        match self.next_event() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// The events of versions `from ..` (at most `count`) of a stream.
pub(crate) fn read_versions(
    shared: &Arc<Shared>,
    meta: &StreamMeta,
    from: u64,
    count: usize,
) -> Result<Vec<RecordedEvent>> {
    StreamIter::new(Arc::clone(shared), meta, from, Direction::Forward)
        .take(count)
        .collect()
}

/// Lazy iterator over every stream's events in global order (`Store::read_all`).
pub struct AllIter {
    shared: Arc<Shared>,
    direction: Direction,
    /// Next position to yield (0 when done backward).
    next: u64,
    /// Last position to yield forward: the head when the iterator was made.
    last: u64,
    segment: Option<((StreamKey, u32), Arc<MappedSegment>)>,
    failed: bool,
}

impl AllIter {
    pub(crate) fn new(shared: Arc<Shared>, from: Position, direction: Direction) -> AllIter {
        let head = shared.head();
        let next = match direction {
            Direction::Forward => from.0.max(1),
            Direction::Backward => from.0.min(head),
        };
        AllIter {
            shared,
            direction,
            next,
            last: head,
            segment: None,
            failed: false,
        }
    }

    fn event(&mut self, position: u64) -> Result<RecordedEvent> {
        let entry = self.shared.maps.index_entry(position)?.map_err(|e| {
            let (file, at) =
                crate::format::index::locate(position, self.shared.manifest.index_entries_per_file);
            Error::corrupt(
                index_path(&self.shared.root, file),
                at,
                format!("index entry of position {position}: {e}"),
            )
        })?;
        let key = StreamKey {
            hash: entry.stream_hash,
            collision: entry.collision,
        };
        let offset = u64::from(entry.offset);
        let mut min_len = offset + RECORD_HEADER_BYTES as u64;
        let mut segment = self.cached(key, entry.segment, min_len)?;
        if let Some(h) = peek_record_header(
            &segment.mapping[offset.min(segment.mapping.len() as u64) as usize..],
        ) {
            let record_end = offset + u64::from(h.record_bytes.get());
            if record_end > segment.mapping.len() as u64 {
                min_len = record_end;
                segment = self.cached(key, entry.segment, min_len)?;
            }
        }
        let (event, _) = event_at(&segment, offset, segment.mapping.len() as u64)?;
        if event.position != position {
            return Err(Error::corrupt(
                &segment.path,
                offset,
                format!(
                    "index says position {position}, record says {}",
                    event.position
                ),
            ));
        }
        if event.flags & (RECORD_FLAG_BEGIN | RECORD_FLAG_END) != entry.flags {
            return Err(Error::corrupt(
                &segment.path,
                offset,
                "append boundaries differ between index and record",
            ));
        }
        Ok(event)
    }

    fn cached(&mut self, key: StreamKey, number: u32, min_len: u64) -> Result<Arc<MappedSegment>> {
        if let Some((k, s)) = &self.segment {
            if *k == (key, number) && s.mapping.len() as u64 >= min_len {
                return Ok(Arc::clone(s));
            }
        }
        let s = self
            .shared
            .maps
            .segment(key, number, min_len)?
            .ok_or_else(|| {
                Error::corrupt(
                    segment_path(&self.shared.root, key, number),
                    0,
                    "segment named by a committed index entry is missing",
                )
            })?;
        self.segment = Some(((key, number), Arc::clone(&s)));
        Ok(s)
    }
}

impl Iterator for AllIter {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next == 0 || self.next > self.last {
            return None;
        }
        let position = self.next;
        match self.direction {
            Direction::Forward => self.next += 1,
            Direction::Backward => self.next -= 1,
        }
        match self.event(position) {
            Ok(e) => Some(Ok(e)),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
