//! The public value types of the API.

use crate::error::{Error, Result};
use crate::limits::{
    COMMIT_METADATA_BYTES_MAX, EVENT_TYPE_BYTES_MAX, KEY_BYTES_MAX, STREAM_ID_BYTES_MAX,
};
use std::fmt;

/// What the caller believes about a stream before appending (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream must be at exactly this version (0 means: must not exist).
    Exact(u64),
    /// The stream's last changeset (its number of appends) must be exactly this: the
    /// serverless seed's `expected_last_changeset` (0 means: no append yet).
    LastChangeset(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => write!(f, "any version"),
            ExpectedVersion::NoStream => write!(f, "no stream"),
            ExpectedVersion::StreamExists => write!(f, "an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
            ExpectedVersion::LastChangeset(c) => write!(f, "last changeset {c}"),
        }
    }
}

/// One event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    pub(crate) event_type: String,
    pub(crate) data: Vec<u8>,
    pub(crate) metadata: Vec<u8>,
    pub(crate) id: Option<[u8; 16]>,
    pub(crate) key: Vec<u8>,
}

impl EventData {
    pub fn new(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> EventData {
        EventData {
            event_type: event_type.into(),
            data: data.into(),
            metadata: Vec::new(),
            id: None,
            key: Vec::new(),
        }
    }

    /// Attach a key (up to `KEY_BYTES_MAX` bytes), such as the id of the entity the event
    /// describes.
    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> EventData {
        self.key = key.into();
        self
    }

    /// Attach metadata bytes.
    #[must_use]
    pub fn metadata(mut self, metadata: impl Into<Vec<u8>>) -> EventData {
        self.metadata = metadata.into();
        self
    }

    /// Attach a 16-byte event id (a UUID); retries with the same ids are idempotent.
    #[must_use]
    pub fn id(mut self, id: [u8; 16]) -> EventData {
        self.id = Some(id);
        self
    }

    /// Bytes this event counts against `event_bytes_max`: type, key, metadata and data.
    #[must_use]
    pub fn size(&self) -> usize {
        self.event_type.len() + self.key.len() + self.metadata.len() + self.data.len()
    }

    /// Check the type, key and size of one event.
    pub(crate) fn validate(&self, event_bytes_max: usize) -> Result<()> {
        validate_event_type(&self.event_type)?;
        if self.key.len() > KEY_BYTES_MAX {
            return Err(Error::InvalidAppend {
                reason: format!(
                    "event key of {} bytes, at most {KEY_BYTES_MAX}",
                    self.key.len()
                ),
            });
        }
        if self.size() > event_bytes_max {
            return Err(Error::EventTooLarge {
                len: self.size(),
                max: event_bytes_max,
            });
        }
        Ok(())
    }
}

/// One append to one stream: its events, what the caller expects of the stream, and the
/// commit metadata stored once for the whole append (segment-format.md §14). Used by
/// `Store::append_with`, `Store::append_multi` and `Producer::submit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub(crate) stream: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<EventData>,
    pub(crate) commit_metadata: Vec<u8>,
    pub(crate) deduplicate: bool,
}

impl Append {
    pub fn new(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Append {
        Append {
            stream: stream.into(),
            expected,
            events: events.into_iter().collect(),
            commit_metadata: Vec::new(),
            deduplicate: false,
        }
    }

    /// Drop each keyed event whose type, metadata and data equal those of the newest event of
    /// its key in the stream (segment-format.md §15). An append whose events are all dropped
    /// writes nothing and returns the newest duplicate's version.
    #[must_use]
    pub fn deduplicate(mut self) -> Append {
        self.deduplicate = true;
        self
    }

    /// Commit metadata (who issued which command), stored once with the append and read back
    /// with its changeset; at most `COMMIT_METADATA_BYTES_MAX` bytes.
    #[must_use]
    pub fn commit_metadata(mut self, metadata: impl Into<Vec<u8>>) -> Append {
        self.commit_metadata = metadata.into();
        self
    }

    #[must_use]
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Check everything that can be checked before the writer sees it; return the bytes its
    /// records take.
    pub(crate) fn validate(&self, event_bytes_max: usize, segment_bytes: u64) -> Result<u64> {
        use crate::format::segment::record_bytes_padded;
        use crate::limits::{APPEND_EVENTS_MAX, RECORD_OVERHEAD_MAX};
        validate_stream_id(&self.stream)?;
        if self.events.is_empty() {
            return Err(Error::EmptyAppend);
        }
        if self.events.len() > APPEND_EVENTS_MAX {
            return Err(Error::AppendTooLarge {
                len: self.events.len(),
                max: APPEND_EVENTS_MAX,
            });
        }
        if self.commit_metadata.len() > COMMIT_METADATA_BYTES_MAX {
            return Err(Error::InvalidAppend {
                reason: format!(
                    "commit metadata of {} bytes, at most {COMMIT_METADATA_BYTES_MAX}",
                    self.commit_metadata.len()
                ),
            });
        }
        let mut bytes = 0u64;
        for (i, e) in self.events.iter().enumerate() {
            e.validate(event_bytes_max)?;
            // The commit metadata rides in the first record.
            let commit = if i == 0 {
                self.commit_metadata.len()
            } else {
                0
            };
            bytes += record_bytes_padded(e.size() + commit);
        }
        let room = segment_bytes - RECORD_OVERHEAD_MAX as u64;
        if bytes > room {
            return Err(Error::AppendTooLarge {
                len: usize::try_from(bytes).unwrap_or(usize::MAX),
                max: usize::try_from(room).unwrap_or(usize::MAX),
            });
        }
        Ok(bytes)
    }
}

/// What a successful append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
    /// The append's changeset number in its stream (1, 2, 3, ...); for a close, the stream's
    /// count of appends.
    pub changeset: u64,
    /// Events dropped as duplicates of the newest event of their key (`Append::deduplicate`).
    /// When every event was dropped, nothing was written and the versions, changeset and
    /// positions are those of the newest duplicate.
    pub duplicates: u32,
    pub first_position: Position,
    pub last_position: Position,
}

/// A global position: the commit order of every event of the store, from 1, dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event: reading forward from here reads everything.
    pub const START: Position = Position(0);
    /// After every event: reading backward from here starts at the newest.
    pub const END: Position = Position(u64::MAX);

    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Position {
    fn from(v: u64) -> Position {
        Position(v)
    }
}

impl From<Position> for u64 {
    fn from(p: Position) -> u64 {
        p.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// Check a stream id: 1 to `STREAM_ID_BYTES_MAX` bytes of UTF-8 without NUL. Everything else is
/// allowed: the id never becomes a path.
///
/// # Errors
/// `Error::InvalidStreamId` with the reason.
pub fn validate_stream_id(stream: &str) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::InvalidStreamId { reason: "empty" });
    }
    if stream.len() > STREAM_ID_BYTES_MAX {
        return Err(Error::InvalidStreamId {
            reason: "longer than 1024 bytes",
        });
    }
    if stream.as_bytes().contains(&0) {
        return Err(Error::InvalidStreamId {
            reason: "contains a NUL byte",
        });
    }
    Ok(())
}

pub(crate) fn validate_event_type(event_type: &str) -> Result<()> {
    if event_type.is_empty() {
        return Err(Error::InvalidEventType { reason: "empty" });
    }
    if event_type.len() > EVENT_TYPE_BYTES_MAX {
        return Err(Error::InvalidEventType {
            reason: "longer than 1024 bytes",
        });
    }
    if event_type.as_bytes().contains(&0) {
        return Err(Error::InvalidEventType {
            reason: "contains a NUL byte",
        });
    }
    Ok(())
}

/// Now, in microseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
