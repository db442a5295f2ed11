//! The public value types of the API.

use crate::error::{Error, Result};
use crate::limits::{EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX};
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
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => write!(f, "any version"),
            ExpectedVersion::NoStream => write!(f, "no stream"),
            ExpectedVersion::StreamExists => write!(f, "an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
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
}

impl EventData {
    pub fn new(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> EventData {
        EventData {
            event_type: event_type.into(),
            data: data.into(),
            metadata: Vec::new(),
            id: None,
        }
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

    /// Bytes this event counts against `event_bytes_max`: type, metadata and data.
    #[must_use]
    pub fn size(&self) -> usize {
        self.event_type.len() + self.metadata.len() + self.data.len()
    }
}

/// What a successful append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
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
