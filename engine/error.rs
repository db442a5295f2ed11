//! The one error type of the engine. Corruption is never reported as I/O, so a caller can tell a
//! bad disk from a bad byte; every variant says what, where, and what to do.

use crate::types::ExpectedVersion;
use std::fmt;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file-system call failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Bytes that the store wrote and synced do not read back as written, or a file in the
    /// store folder is not the store's.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A file of a newer format than this build reads.
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Another handle (in this or another process) has the store open.
    Locked { path: PathBuf },
    /// A sync failed or the writer died earlier: the handle refuses writes until reopened.
    Poisoned { cause: String },
    /// The stream is not at the version the append expected.
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        /// The stream's version, `None` when it does not exist.
        actual: Option<u64>,
        /// The stream's last changeset (its number of appends).
        actual_changeset: u64,
    },
    /// The stream id is empty, too long, or holds a NUL byte.
    InvalidStreamId { reason: &'static str },
    /// The event type is empty, too long, or holds a NUL byte.
    InvalidEventType { reason: &'static str },
    /// One event (type + metadata + data) is larger than the store accepts.
    EventTooLarge { len: usize, max: usize },
    /// One append is larger than a segment can hold, or has too many events.
    AppendTooLarge { len: usize, max: usize },
    /// An append with no events.
    EmptyAppend,
    /// The stream does not exist.
    StreamNotFound { stream: String },
    /// The stream is closed: it takes no more appends (its events can still be read).
    StreamClosed { stream: String },
    /// The stream was deleted: it cannot be read, and its id is not reused.
    StreamDeleted { stream: String },
    /// The options are inconsistent.
    InvalidOptions { reason: String },
    /// The store's writer has stopped (the store is shutting down).
    Closed,
    /// A persistent subscription of this name is already being consumed in this process.
    SubscriptionInUse { name: String },
    /// No persistent subscription has this name.
    SubscriptionNotFound { name: String },
    /// A persistent subscription of this name exists with another target or filters.
    SubscriptionTargetMismatch { name: String },
    /// The subscription name is empty, too long, or holds a NUL byte.
    InvalidSubscriptionName { reason: &'static str },
    /// An ack names a position that the subscription has not delivered yet.
    AckBeyondDelivered { position: u64, delivered: u64 },
    /// A start point the call cannot honour.
    InvalidStart { reason: String },
    /// An append the store cannot take as given: an oversized key or commit metadata, a stream
    /// named twice in one multi-stream append, an unknown changeset.
    InvalidAppend { reason: String },
    /// An earlier append of this producer failed, so this one was not committed: a producer's
    /// committed appends are always a prefix of what it submitted (segment-format.md §14).
    ProducerFailed { cause: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        tracing::error!(op, path = %path.display(), error = %source, "file-system call failed");
        Error::Io { op, path, source }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        let path = path.into();
        let reason = reason.into();
        tracing::error!(path = %path.display(), offset, %reason, "corruption");
        Error::Corrupt {
            path,
            offset,
            reason,
        }
    }

    /// True for errors that mean the store's files are damaged (not the caller's input, not I/O).
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::UnsupportedVersion { .. }
        )
    }

    /// A copy for fanning one failure out to every waiter of a batch. `io::Error` is not
    /// `Clone`, so its kind and text are kept.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Corrupt {
                path,
                offset,
                reason,
            } => Error::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::UnsupportedVersion {
                path,
                found,
                supported,
            } => Error::UnsupportedVersion {
                path: path.clone(),
                found: *found,
                supported: *supported,
            },
            Error::Locked { path } => Error::Locked { path: path.clone() },
            Error::Poisoned { cause } => Error::Poisoned {
                cause: cause.clone(),
            },
            Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
                actual_changeset,
            } => Error::WrongExpectedVersion {
                stream: stream.clone(),
                expected: *expected,
                actual: *actual,
                actual_changeset: *actual_changeset,
            },
            Error::InvalidStreamId { reason } => Error::InvalidStreamId { reason },
            Error::InvalidEventType { reason } => Error::InvalidEventType { reason },
            Error::EventTooLarge { len, max } => Error::EventTooLarge {
                len: *len,
                max: *max,
            },
            Error::AppendTooLarge { len, max } => Error::AppendTooLarge {
                len: *len,
                max: *max,
            },
            Error::EmptyAppend => Error::EmptyAppend,
            Error::StreamNotFound { stream } => Error::StreamNotFound {
                stream: stream.clone(),
            },
            Error::StreamClosed { stream } => Error::StreamClosed {
                stream: stream.clone(),
            },
            Error::StreamDeleted { stream } => Error::StreamDeleted {
                stream: stream.clone(),
            },
            Error::InvalidOptions { reason } => Error::InvalidOptions {
                reason: reason.clone(),
            },
            Error::Closed => Error::Closed,
            Error::SubscriptionInUse { name } => Error::SubscriptionInUse { name: name.clone() },
            Error::SubscriptionNotFound { name } => {
                Error::SubscriptionNotFound { name: name.clone() }
            }
            Error::SubscriptionTargetMismatch { name } => {
                Error::SubscriptionTargetMismatch { name: name.clone() }
            }
            Error::InvalidSubscriptionName { reason } => Error::InvalidSubscriptionName { reason },
            Error::AckBeyondDelivered {
                position,
                delivered,
            } => Error::AckBeyondDelivered {
                position: *position,
                delivered: *delivered,
            },
            Error::InvalidStart { reason } => Error::InvalidStart {
                reason: reason.clone(),
            },
            Error::InvalidAppend { reason } => Error::InvalidAppend {
                reason: reason.clone(),
            },
            Error::ProducerFailed { cause } => Error::ProducerFailed {
                cause: cause.clone(),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error during {op} on {}: {source}", path.display())
            }
            Error::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "corrupt store file {} at byte {offset}: {reason} (run segment-dump on the store \
                 folder for details; restore the file from a backup)",
                path.display()
            ),
            Error::UnsupportedVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} has format version {found}; this build of streamlog reads version {supported}: \
                 use a newer streamlog",
                path.display()
            ),
            Error::Locked { path } => write!(
                f,
                "store {} is already open (by this or another process); close the other handle",
                path.display()
            ),
            Error::Poisoned { cause } => write!(
                f,
                "store handle is poisoned after a failed write or sync ({cause}); nothing \
                 unacknowledged can be trusted: drop every handle and reopen the store to recover"
            ),
            Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
                actual_changeset,
            } => match actual {
                Some(v) => write!(
                    f,
                    "wrong expected version for stream {stream:?}: expected {expected}, stream is at version {v}, changeset {actual_changeset}"
                ),
                None => write!(
                    f,
                    "wrong expected version for stream {stream:?}: expected {expected}, stream does not exist"
                ),
            },
            Error::InvalidStreamId { reason } => write!(f, "invalid stream id: {reason}"),
            Error::InvalidEventType { reason } => write!(f, "invalid event type: {reason}"),
            Error::EventTooLarge { len, max } => {
                write!(f, "event of {len} bytes is larger than the limit of {max} bytes")
            }
            Error::AppendTooLarge { len, max } => {
                write!(f, "append of {len} is larger than the limit of {max}")
            }
            Error::EmptyAppend => write!(f, "an append needs at least one event"),
            Error::StreamNotFound { stream } => write!(f, "stream {stream:?} does not exist"),
            Error::StreamClosed { stream } => {
                write!(f, "stream {stream:?} is closed: it takes no more appends")
            }
            Error::StreamDeleted { stream } => write!(
                f,
                "stream {stream:?} was deleted: it cannot be read or appended to, and its id is not reused"
            ),
            Error::InvalidOptions { reason } => write!(f, "invalid options: {reason}"),
            Error::Closed => write!(f, "the store is closed"),
            Error::SubscriptionInUse { name } => write!(
                f,
                "persistent subscription {name:?} already has a subscriber; drop it first"
            ),
            Error::SubscriptionNotFound { name } => {
                write!(f, "persistent subscription {name:?} does not exist")
            }
            Error::SubscriptionTargetMismatch { name } => write!(
                f,
                "persistent subscription {name:?} exists with another target or filters; \
                 delete it or use another name"
            ),
            Error::InvalidSubscriptionName { reason } => {
                write!(f, "invalid subscription name: {reason}")
            }
            Error::AckBeyondDelivered {
                position,
                delivered,
            } => write!(
                f,
                "ack of position {position}, but the subscription has delivered only up to {delivered}"
            ),
            Error::InvalidStart { reason } => write!(f, "invalid start point: {reason}"),
            Error::InvalidAppend { reason } => write!(f, "invalid append: {reason}"),
            Error::ProducerFailed { cause } => write!(
                f,
                "not committed: an earlier append of this producer failed ({cause}); \
                 nothing it submitted after that failure is committed"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
