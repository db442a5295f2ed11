//! `Store`: the public handle.

use crate::catalog::Probe;
use crate::changeset::{ChangesetIter, ChangesetPage};
use crate::compact::IndexCompaction;
use crate::error::{Error, Result};
use crate::layout::{parse_segment_file_name, STREAMS_DIR};
use crate::limits::{PRODUCER_IN_FLIGHT_MAX_DEFAULT, STREAM_ID_BYTES_MAX};
use crate::options::Options;
use crate::persistent::{PersistentSubscription, SubscriptionInfo, Target};
use crate::producer::Producer;
use crate::projection::{IndexStatus, IndexedIter, Selector};
use crate::read::{AllIter, RecordedEvent, StreamIter};
use crate::recovery::{self, RecoveryReport};
use crate::reply::Answer;
use crate::shared::Shared;
use crate::storage::real::RealBackend;
use crate::storage::{Backend, EntryKind};
use crate::subscription::{Filter, Start, Subscription};
use crate::types::{
    validate_event_type, validate_stream_id, Append, AppendResult, Direction, EventData,
    ExpectedVersion, Position,
};
use crate::writer::{AppendRequest, Part, Request, RewriteKind, Writer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// An open store. Cheap to clone; every clone is the same store. The store closes (and leaves a
/// clean checkpoint) when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    sender: Option<crate::writer::Queue>,
    /// The writer thread, started by the first request sent to the channel (`start_writer`):
    /// a handle whose callers commit their own batches, or that only reads, never needs it,
    /// and its start was a twentieth of a reopen's time (`perf`, session 16).
    writer: std::sync::Mutex<WriterThread>,
    /// `writer` is `Running`: read by every send before it takes `writer`'s mutex.
    writer_started: std::sync::atomic::AtomicBool,
    lock: crate::writer::Lock,
    indexer: Option<JoinHandle<()>>,
    recovery: RecoveryReport,
}

/// The writer thread of a handle (segment-format.md §7).
enum WriterThread {
    /// Not started yet: the receiving end it will take.
    NotStarted(crossbeam_channel::Receiver<Request>),
    Running(JoinHandle<()>),
    /// Joined at close (or never started, and closed without it).
    Stopped,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once the queue is drained.
        self.sender.take();
        let thread = std::mem::replace(
            &mut *self
                .writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            WriterThread::Stopped,
        );
        match thread {
            WriterThread::Running(w) => {
                let _ = w.join();
            }
            // No thread ever ran: the batches of this handle ran on their callers' threads,
            // and the close the thread would have made is made here.
            WriterThread::NotStarted(_) => crate::writer::close(&self.lock),
            WriterThread::Stopped => {}
        }
        // A background index compaction still running holds the store (and its lock).
        let compactor = self
            .shared
            .compactor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(c) = compactor {
            let _ = c.join();
        }
        // Live subscribers waiting for the next batch learn that none will come; so does the
        // indexer, which stops.
        self.shared.close();
        if let Some(i) = self.indexer.take() {
            let _ = i.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.shared.root)
            .field("head", &self.inner.shared.head())
            .finish()
    }
}

/// The error for stream `stream` found with no committed event: `StreamNotFound`, unless
/// files exist for it on a poisoned handle. There they may be a rewrite that failed after its
/// rename (its new segment 0 in place, its base record never published), which only the next
/// open settles, old stream or new: `Poisoned`, not "not found" (the `api_model` fuzzer,
/// session 11).
fn no_committed_event(shared: &Shared, stream: &str, probe: &Probe) -> Error {
    match (probe, shared.check_poison()) {
        (Probe::Found(_), Err(poisoned)) => poisoned,
        _ => Error::StreamNotFound {
            stream: stream.to_string(),
        },
    }
}

impl Store {
    /// Open the store in `dir`, creating the folder and the store if missing.
    ///
    /// # Errors
    /// `Locked` when it is open elsewhere, `Corrupt` or `UnsupportedVersion` for files it cannot
    /// trust, `Io` for file-system failures.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Open with options.
    ///
    /// # Errors
    /// As `open`, and `InvalidOptions`.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_with_backend(dir, options, Arc::new(RealBackend))
    }

    /// Open through another storage backend (the simulated one of the crash tests).
    ///
    /// # Errors
    /// As `open_with`.
    #[doc(hidden)]
    pub fn open_with_backend(
        dir: impl AsRef<Path>,
        options: Options,
        backend: Arc<dyn Backend>,
    ) -> Result<Store> {
        let (shared, checkpoint, recovery, mark) = recovery::open(dir.as_ref(), options, backend)?;
        let (tx, rx, queued) = crate::writer::Queue::new();
        let writer = Writer::new(Arc::clone(&shared), rx.clone(), queued, checkpoint, mark)?;
        let lock: crate::writer::Lock = Arc::new(std::sync::Mutex::new(writer));
        let indexer = if shared.options.indexes {
            let thread_shared = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("streamlog-indexer".into())
                    .spawn(move || crate::projection::run(&thread_shared))
                    .map_err(|e| Error::io("start indexer thread", dir.as_ref(), e))?,
            )
        } else {
            None
        };
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                sender: Some(tx),
                writer: std::sync::Mutex::new(WriterThread::NotStarted(rx)),
                writer_started: std::sync::atomic::AtomicBool::new(false),
                lock,
                indexer,
                recovery,
            }),
        })
    }

    /// What the last open found and repaired.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The store's folder.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.shared.root
    }

    /// Append events to a stream, atomically, and return once they are durable.
    ///
    /// # Errors
    /// `WrongExpectedVersion`, `InvalidStreamId`, `InvalidEventType`, `EventTooLarge`,
    /// `AppendTooLarge`, `EmptyAppend`; `Poisoned` after a failed write or sync (the outcome of
    /// that append is unknown: retry it with event ids after reopening to make it idempotent).
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Result<AppendResult> {
        self.append_with(Append::new(stream, expected, events))
    }

    /// Append with commit metadata (or anything else `Append` carries); as `append`.
    ///
    /// # Errors
    /// As `append`, and `InvalidAppend` for oversized commit metadata or keys.
    pub fn append_with(&self, append: Append) -> Result<AppendResult> {
        let answer = self.send_append(vec![append], false, None)?;
        self.wait_one(answer)
    }

    /// Append to several streams at once, all or none (segment-format.md §14): each part's
    /// expected version is checked, and only when every check passes are all parts committed,
    /// at consecutive positions, in one durable batch. After a crash the store holds all of
    /// them or none. Returns one result per part, in order.
    ///
    /// # Errors
    /// As `append` for any part (nothing is then written); `InvalidAppend` when a stream is
    /// named twice or no part is given.
    pub fn append_multi(
        &self,
        parts: impl IntoIterator<Item = Append>,
    ) -> Result<Vec<AppendResult>> {
        let parts: Vec<Append> = parts.into_iter().collect();
        let answer = self.send_append(parts, false, None)?;
        self.wait_answer(answer)
    }

    /// A producer of pipelined appends: submitted without waiting, committed in submission
    /// order, and fail-stop (segment-format.md §14). At most `PRODUCER_IN_FLIGHT_MAX_DEFAULT`
    /// appends are in flight.
    #[must_use]
    pub fn producer(&self) -> Producer {
        Producer::new(self.clone(), PRODUCER_IN_FLIGHT_MAX_DEFAULT)
    }

    /// A producer with at most `in_flight_max` unanswered appends.
    #[must_use]
    pub fn producer_with(&self, in_flight_max: usize) -> Producer {
        Producer::new(self.clone(), in_flight_max)
    }

    /// Check and queue an append of one or more parts (or a close).
    pub(crate) fn send_append(
        &self,
        parts: Vec<Append>,
        close: bool,
        producer: Option<Arc<crate::producer::Link>>,
    ) -> Result<Answer<Result<Vec<AppendResult>>>> {
        self.send_request(parts, close, None, producer)
    }

    /// Check and queue a request of one or more parts, a close or an invalidation.
    fn send_request(
        &self,
        parts: Vec<Append>,
        close: bool,
        invalidate: Option<u64>,
        producer: Option<Arc<crate::producer::Link>>,
    ) -> Result<Answer<Result<Vec<AppendResult>>>> {
        let shared = &self.inner.shared;
        if parts.is_empty() {
            return Err(Error::InvalidAppend {
                reason: "a multi-stream append needs at least one part".into(),
            });
        }
        let mut bytes = 0u64;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            if close {
                validate_stream_id(&part.stream)?;
            } else {
                bytes +=
                    part.validate(shared.options.event_bytes_max, shared.options.segment_bytes)?;
            }
            if !seen.insert(part.stream.clone()) {
                return Err(Error::InvalidAppend {
                    reason: format!(
                        "stream {:?} appears twice in one multi-stream append",
                        part.stream
                    ),
                });
            }
            out.push(Part {
                stream: Arc::from(part.stream.as_str()),
                expected: part.expected,
                events: part.events,
                commit_metadata: part.commit_metadata,
                deduplicate: part.deduplicate,
            });
        }
        shared.check_poison()?;
        let (reply, answer) = crate::reply::slot();
        let pipelined = producer.is_some();
        let mut request = AppendRequest {
            parts: out,
            bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
            close,
            invalidate,
            producer,
            reply,
        };
        // A producer's appends always queue: they must commit in submission order, and its
        // caller does not wait for them.
        if shared.options.caller_commits && !pipelined {
            match crate::writer::commit_on_caller(&self.inner.lock, request) {
                None => return Ok(answer),
                Some(back) => request = back,
            }
        }
        self.send(Request::Append(request))?;
        Ok(answer)
    }

    /// Mark changeset `changeset` of `stream` invalid without removing it (segment-format.md
    /// §16): an invalidation event (type `$invalidate`, the reason as its data, see
    /// `RecordedEvent::invalidates`) is appended to the stream, so subscribers learn of it, and
    /// readers that ask (`skip_invalidated`) skip the changeset's events. Invalidating a
    /// changeset again returns the first invalidation. Returns once durable.
    ///
    /// # Errors
    /// `InvalidAppend` when the stream has no such changeset (or it was removed, or is an
    /// invalidation itself); `StreamNotFound`, `StreamClosed`, `StreamDeleted`,
    /// `EventTooLarge` for a long reason, `Poisoned`.
    pub fn invalidate(
        &self,
        stream: &str,
        changeset: u64,
        reason: impl Into<Vec<u8>>,
    ) -> Result<AppendResult> {
        let part = Append::new(
            stream,
            ExpectedVersion::StreamExists,
            [EventData::new(crate::writer::INVALIDATE_EVENT_TYPE, reason)],
        );
        let answer = self.send_request(vec![part], false, Some(changeset), None)?;
        self.wait_one(answer)
    }

    /// The result of a request of one part.
    pub(crate) fn wait_one(
        &self,
        answer: Answer<Result<Vec<AppendResult>>>,
    ) -> Result<AppendResult> {
        self.wait_answer(answer)?
            .pop()
            .ok_or_else(|| Error::Poisoned {
                cause: "the writer answered an append with no result".into(),
            })
    }

    pub(crate) fn wait_answer<T>(&self, answer: Answer<Result<T>>) -> Result<T> {
        match answer.wait() {
            Some(result) => result,
            None => {
                self.inner.shared.check_poison()?;
                Err(Error::Poisoned {
                    cause: "the writer thread stopped".into(),
                })
            }
        }
    }

    /// The changesets (appends) of a stream, from changeset number `from` on, each with its
    /// events and commit metadata. An error reading an event inside a changeset is yielded in
    /// that changeset's place, never a part of it as if whole.
    ///
    /// # Errors
    /// `StreamNotFound`, `StreamDeleted`, `InvalidStreamId`, `Corrupt`, `Io`; `Poisoned` for a
    /// stream that a failed write left files of on a poisoned handle.
    pub fn read_changesets(&self, stream: &str, from: u64) -> Result<ChangesetIter> {
        validate_stream_id(stream)?;
        let shared = &self.inner.shared;
        match shared.catalog.probe(shared, stream)? {
            Probe::Found(meta) if meta.is_deleted() => Err(Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            Probe::Found(meta) if meta.version() > 0 => ChangesetIter::new(shared, &meta, from),
            probe => Err(no_committed_event(shared, stream, &probe)),
        }
    }

    /// The surface of a stream: its newest event for each key (`EventData::key`), in version
    /// order, read through the stream's keys index (segment-format.md §15), not by scanning the
    /// stream. Events before a snapshot or a truncation are not part of it.
    ///
    /// # Errors
    /// `StreamNotFound`, `StreamDeleted`, `InvalidStreamId`, `Corrupt`, `Io`; `Poisoned` for a
    /// stream that a failed write left files of on a poisoned handle.
    pub fn surface(&self, stream: &str) -> Result<Vec<RecordedEvent>> {
        validate_stream_id(stream)?;
        let shared = &self.inner.shared;
        match shared.catalog.probe(shared, stream)? {
            Probe::Found(meta) if meta.is_deleted() => Err(Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            Probe::Found(meta) if meta.version() > 0 => crate::keys::surface(shared, &meta),
            probe => Err(no_committed_event(shared, stream, &probe)),
        }
    }

    /// The events of one category (streams whose id starts with `category` and a `-`: `order`
    /// holds `order-42`), in global order from `from`: read through the category's index up to
    /// what the indexer has reached, then by filtering the global order up to the head of the
    /// call, so the result is complete either way (segment-format.md §17).
    ///
    /// # Errors
    /// `InvalidStreamId` for an empty category, one holding a `-`, or a too long one; `Corrupt`,
    /// `Io`.
    pub fn read_category(&self, category: &str, from: Position) -> Result<IndexedIter> {
        if category.is_empty() || category.contains('-') || category.len() > STREAM_ID_BYTES_MAX {
            return Err(Error::InvalidStreamId {
                reason: "a category is a non-empty stream id prefix without '-'",
            });
        }
        IndexedIter::new(
            Arc::clone(&self.inner.shared),
            Selector::Category(category.to_string()),
            from,
        )
    }

    /// The events of one type, in global order from `from`, read through the type's index
    /// (as `read_category`).
    ///
    /// # Errors
    /// `InvalidEventType`, `Corrupt`, `Io`.
    pub fn read_event_type(&self, event_type: &str, from: Position) -> Result<IndexedIter> {
        validate_event_type(event_type)?;
        IndexedIter::new(
            Arc::clone(&self.inner.shared),
            Selector::EventType(event_type.to_string()),
            from,
        )
    }

    /// How far the indexer is (segment-format.md §17): its durable position, the head, the lag.
    ///
    /// # Errors
    /// `Corrupt` or `Io` reading the indexes.
    pub fn index_status(&self) -> Result<IndexStatus> {
        let shared = &self.inner.shared;
        shared.indexes.status(shared)
    }

    /// Wait until every event at or below `position` is indexed, at most `timeout`; whether it
    /// is. `false` at once when the indexer stopped or is off.
    ///
    /// # Errors
    /// `Corrupt` or `Io` reading the indexes.
    pub fn wait_indexed(&self, position: Position, timeout: std::time::Duration) -> Result<bool> {
        let shared = &self.inner.shared;
        if self.inner.indexer.is_none() {
            return Ok(shared.indexes.status(shared)?.indexed >= position);
        }
        shared.indexes.wait_indexed(shared, position.get(), timeout)
    }

    /// Throw the indexes away and rebuild them from the global order: returns once they are
    /// reset; the indexer then catches up in the background (`index_status`).
    ///
    /// # Errors
    /// `InvalidOptions` when the store was opened with `indexes` off; `Poisoned` when the
    /// indexer stopped on an I/O error.
    pub fn rebuild_indexes(&self) -> Result<()> {
        if self.inner.indexer.is_none() {
            return Err(Error::InvalidOptions {
                reason: "the store was opened with indexes off".into(),
            });
        }
        let shared = &self.inner.shared;
        shared.indexes.rebuild(shared)
    }

    /// Give back the index space of events removed by snapshots and deletes: every index file
    /// that the durable checkpoint covers whole, and of whose entries at least half belong to
    /// removed events, is rewritten with only its live entries (segment-format.md §4). Atomic
    /// per file (a synced temporary file renamed over the old one); readers are not disturbed.
    /// Truncated events keep their entries (their records stay on disk).
    ///
    /// The same pass gives back the pack space of removed small streams whenever they died:
    /// every whole 4 KiB block of a pack that holds no live record (segment-format.md §19,
    /// "Space back"). The writer gives back such blocks on its own only when all their records
    /// died while it ran; this frees the blocks whose records died in earlier processes. Runs
    /// in the background too, after many removals.
    ///
    /// # Errors
    /// `Io` (a failed write or sync poisons the store, as any), `Corrupt`, `Poisoned`.
    pub fn compact_index(&self) -> Result<IndexCompaction> {
        // First a durable checkpoint of the head: the files it covers can be compacted.
        self.inner.shared.check_poison()?;
        let (reply, answer) = crate::reply::slot();
        self.send(Request::Checkpoint(reply))?;
        self.wait_answer(answer)?;
        crate::compact::compact_index(&self.inner.shared)
    }

    /// Up to `limit` changesets of all streams in commit order, after `checkpoint`
    /// (`Position::START` for the first page); go on from the page's `next_checkpoint`.
    ///
    /// # Errors
    /// `Corrupt`, `Io`.
    pub fn read_all_changesets(&self, checkpoint: Position, limit: usize) -> Result<ChangesetPage> {
        crate::changeset::read_all(&self.inner.shared, checkpoint, limit)
    }

    /// Read a stream from `from_version` (inclusive) forward, or backward from it
    /// (`u64::MAX` reads backward from the newest event).
    ///
    /// # Errors
    /// `StreamNotFound`, `StreamDeleted`, `InvalidStreamId`, `Corrupt`, `Io`; `Poisoned` for a
    /// stream that a failed write left files of on a poisoned handle.
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        direction: Direction,
    ) -> Result<StreamIter> {
        validate_stream_id(stream)?;
        let shared = &self.inner.shared;
        match shared.catalog.probe(shared, stream)? {
            Probe::Found(meta) if meta.is_deleted() => Err(Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            Probe::Found(meta) if meta.version() > 0 => Ok(StreamIter::new(
                Arc::clone(shared),
                &meta,
                from_version,
                direction,
            )),
            probe => Err(no_committed_event(shared, stream, &probe)),
        }
    }

    /// Read every stream's events in global order, from `from` (inclusive) forward, or backward
    /// from it (`Position::END` reads backward from the newest). The iterator reads up to the head
    /// at the time of the call.
    ///
    /// # Errors
    /// None today; reading an event can fail with `Corrupt` or `Io`.
    pub fn read_all(&self, from: Position, direction: Direction) -> Result<AllIter> {
        Ok(AllIter::new(
            Arc::clone(&self.inner.shared),
            from,
            direction,
        ))
    }

    /// The stream's version (its number of events), `None` when it does not exist.
    ///
    /// # Errors
    /// `InvalidStreamId`, `Corrupt`, `Io`; `Poisoned` for a stream that a failed write left
    /// files of on a poisoned handle.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        validate_stream_id(stream)?;
        let shared = &self.inner.shared;
        Ok(match shared.catalog.probe(shared, stream)? {
            Probe::Found(meta) if meta.is_deleted() => {
                return Err(Error::StreamDeleted {
                    stream: stream.to_string(),
                })
            }
            Probe::Found(meta) if meta.version() > 0 => Some(meta.version()),
            // As `no_committed_event`: undecided on a poisoned handle.
            Probe::Found(_) => {
                shared.check_poison()?;
                None
            }
            Probe::Absent { .. } => None,
        })
    }

    /// The position of the newest durable event (`Position::START` for an empty store).
    #[must_use]
    pub fn head_position(&self) -> Position {
        Position(self.inner.shared.head())
    }

    /// Close a stream: it takes no more appends (`Error::StreamClosed`); its events can still
    /// be read. Closing a closed stream does nothing. Returns once durable.
    ///
    /// # Errors
    /// `StreamNotFound`, `StreamDeleted`, `InvalidStreamId`, `Poisoned`.
    pub fn close_stream(&self, stream: &str) -> Result<()> {
        let answer = self.send_append(
            vec![Append::new(stream, ExpectedVersion::Any, [])],
            true,
            None,
        )?;
        self.wait_answer(answer).map(|_| ())
    }

    /// Replace the stream's events up to its current version by one snapshot event that keeps
    /// that version: reading the stream then yields the snapshot first (see
    /// `RecordedEvent::snapshot_of`), then whatever is appended after it. The old segments are
    /// removed; `read_all` and subscriptions skip the removed events (positions do not change)
    /// and yield the snapshot at a position of its own. Returns once durable; crash-safe: the
    /// stream is wholly in its old or its new state.
    ///
    /// # Errors
    /// `StreamNotFound`, `StreamDeleted`, `InvalidEventType`, `EventTooLarge`, `Poisoned`.
    pub fn snapshot_stream(&self, stream: &str, snapshot: EventData) -> Result<AppendResult> {
        validate_stream_id(stream)?;
        validate_event_type(&snapshot.event_type)?;
        let max = self.inner.shared.options.event_bytes_max;
        if snapshot.size() > max {
            return Err(Error::EventTooLarge {
                len: snapshot.size(),
                max,
            });
        }
        self.rewrite(stream, RewriteKind::Snapshot(snapshot))
    }

    /// Delete a stream: its files are removed and their space freed; reading it or appending
    /// to it gives `Error::StreamDeleted` from now on (a deleted id is not reused); `read_all`
    /// and subscriptions skip its events. A tombstone remains: for a stream whose records are
    /// all in packs (a small one), an 88-byte record in the current pack, committed like an
    /// append, and the pack blocks its records held whole are given back at the next durable
    /// checkpoint (segment-format.md §19); for any other, one small segment file.
    ///
    /// # Errors
    /// `StreamNotFound`, `StreamDeleted`, `Poisoned`.
    pub fn delete_stream(&self, stream: &str) -> Result<()> {
        validate_stream_id(stream)?;
        self.rewrite(stream, RewriteKind::Delete).map(|_| ())
    }

    /// Remove the stream's events before `version` (EventStoreDB's `$tb`): reading the stream
    /// starts at `version`, `read_all` and subscriptions skip the removed events, and the
    /// segment files holding only removed events are freed. A version past the stream's end
    /// removes every event (the stream stays, at its version). Truncating no further than
    /// before does nothing. Returns once durable; crash-safe.
    ///
    /// # Errors
    /// `StreamNotFound`, `StreamDeleted`, `InvalidStreamId`, `Poisoned`.
    pub fn truncate_before(&self, stream: &str, version: u64) -> Result<()> {
        validate_stream_id(stream)?;
        self.rewrite(stream, RewriteKind::Truncate(version))
            .map(|_| ())
    }

    fn rewrite(&self, stream: &str, kind: RewriteKind) -> Result<AppendResult> {
        self.inner.shared.check_poison()?;
        let (reply, answer) = crate::reply::slot();
        self.send(Request::Rewrite(crate::writer::RewriteRequest {
            stream: Arc::from(stream),
            kind,
            reply,
        }))?;
        self.wait_answer(answer)
    }

    fn send(&self, request: Request) -> Result<()> {
        let sender = self.inner.sender.as_ref().ok_or(Error::Closed)?;
        self.start_writer()?;
        if sender.send(request).is_err() {
            self.inner.shared.check_poison()?;
            return Err(Error::Poisoned {
                cause: "the writer thread stopped".into(),
            });
        }
        Ok(())
    }

    /// Subscribe to every stream's events in global order: the stored ones from `from` (a
    /// position), then new ones as they are committed, through `filter`.
    ///
    /// # Errors
    /// `InvalidStreamId` or `InvalidEventType` for a bad filter.
    pub fn subscribe_all(&self, from: Start, filter: Filter) -> Result<Subscription> {
        Subscription::all(Arc::clone(&self.inner.shared), from, filter)
    }

    /// Subscribe to one stream's events: the stored ones from `from` (a version), then new
    /// ones as they are committed. The stream need not exist yet.
    ///
    /// # Errors
    /// `InvalidStreamId`, `Corrupt`, `Io`.
    pub fn subscribe_stream(&self, stream: &str, from: Start) -> Result<Subscription> {
        Subscription::stream(Arc::clone(&self.inner.shared), stream, from)
    }

    /// Open the persistent subscription `name`, creating it at `start` when it does not exist
    /// (an existing one resumes after its acknowledged checkpoint; `start` is then ignored).
    ///
    /// # Errors
    /// `SubscriptionInUse` when another subscriber holds it, `SubscriptionTargetMismatch` when
    /// it exists with another target, `InvalidSubscriptionName`, `InvalidStart`, `Corrupt`
    /// for a damaged subscription file, `Io`, `Poisoned`.
    pub fn persistent_subscription(
        &self,
        name: &str,
        target: Target,
        start: Start,
    ) -> Result<PersistentSubscription> {
        PersistentSubscription::open(self.clone(), &self.inner.shared, name, target, start)
    }

    /// Every persistent subscription, by name.
    ///
    /// # Errors
    /// `Corrupt` for a damaged subscription file, `Io`.
    pub fn persistent_subscriptions(&self) -> Result<Vec<SubscriptionInfo>> {
        let shared = &self.inner.shared;
        shared.subscriptions.list(shared)
    }

    /// Delete a persistent subscription and its checkpoint.
    ///
    /// # Errors
    /// `SubscriptionNotFound`, `SubscriptionInUse`, `Io`, `Poisoned`.
    pub fn delete_persistent_subscription(&self, name: &str) -> Result<()> {
        let shared = &self.inner.shared;
        shared.subscriptions.delete(shared, name)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Queue a subscription's newest ack for the writer's next group commit.
    pub(crate) fn send_ack(&self, entry: Arc<crate::persistent::Entry>) -> Result<()> {
        let shared = &self.inner.shared;
        shared.check_poison()?;
        let sender = self.inner.sender.as_ref().ok_or(Error::Closed)?;
        self.start_writer()?;
        sender.send(Request::Ack(entry)).map_err(|_| Error::Closed)
    }

    /// Start the writer thread unless it runs: before the first request is sent to the
    /// channel, so that no request waits there for a thread that does not exist.
    ///
    /// # Errors
    /// `Io` when the thread cannot be started (the request is not sent).
    fn start_writer(&self) -> Result<()> {
        // Every request sent to the channel passes here: once the thread runs, no lock.
        if self
            .inner
            .writer_started
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        let mut thread = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let WriterThread::NotStarted(rx) = &*thread else {
            return Ok(());
        };
        let (lock, rx) = (Arc::clone(&self.inner.lock), rx.clone());
        let handle = std::thread::Builder::new()
            .name("streamlog-writer".into())
            .spawn(move || crate::writer::run(&lock, &rx))
            .map_err(|e| Error::io("start writer thread", &self.inner.shared.root, e))?;
        *thread = WriterThread::Running(handle);
        self.inner
            .writer_started
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Every stream id of the store, in no particular order. This walks the stream folders: it
    /// costs one file open per stream.
    ///
    /// # Errors
    /// `Io` when a folder cannot be listed.
    pub fn streams(&self) -> Result<StreamIds> {
        let shared = Arc::clone(&self.inner.shared);
        let root = shared.root.join(STREAMS_DIR);
        let mut files = Vec::new();
        let mut packed = Vec::new();
        // Table numbers of the store's packed streams (segment-format.md §19).
        let mut tables = Vec::new();
        let fanouts = shared
            .backend
            .read_dir(&root)
            .map_err(|e| Error::io("list folder", &root, e))?;
        for (fanout, kind) in fanouts {
            if kind != EntryKind::Dir {
                continue;
            }
            let dir = root.join(&fanout);
            let names = shared
                .backend
                .read_dir(&dir)
                .map_err(|e| Error::io("list folder", &dir, e))?;
            let mut has_table = false;
            for (name, _) in names {
                has_table |= name == crate::layout::TABLE_FILE;
                if let Some((_, 0)) = parse_segment_file_name(&name) {
                    files.push(dir.join(name));
                }
            }
            if shared.tables() == crate::layout::Tables::PerFanout {
                tables.extend(u16::from_str_radix(&fanout, 16).ok().filter(|_| has_table));
            }
        }
        if shared.tables() == crate::layout::Tables::Grouped {
            let dir = shared.root.join(crate::layout::TABLES_DIR);
            match shared.backend.read_dir(&dir) {
                Ok(names) => tables.extend(
                    names
                        .iter()
                        .filter_map(|(n, _)| crate::layout::Tables::parse_grouped_name(n)),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("list folder", &dir, e)),
            }
        }
        // Packed streams without a segment 0 of their own (a set: a store may have a million
        // of each).
        let with_files: std::collections::HashSet<&PathBuf> = files.iter().collect();
        for number in tables {
            let Some(table) = crate::packs::read_table(&shared, number)? else {
                continue;
            };
            for (e, _) in table.entries() {
                let key = crate::layout::StreamKey {
                    hash: e.stream_hash,
                    collision: e.collision,
                };
                let segment_0 = crate::layout::segment_path(&shared.root, key, 0);
                if !with_files.contains(&segment_0) {
                    packed.push(e.stream_id.to_string());
                }
            }
        }
        Ok(StreamIds {
            shared,
            files: files.into_iter(),
            packed: packed.into_iter(),
        })
    }
}

/// Iterator over stream ids (`Store::streams`).
pub struct StreamIds {
    shared: Arc<Shared>,
    files: std::vec::IntoIter<PathBuf>,
    /// Ids of packed streams without a segment 0, from their fan-out tables.
    packed: std::vec::IntoIter<String>,
}

impl Iterator for StreamIds {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        for path in self.files.by_ref() {
            let header = match crate::catalog::read_header(&self.shared, &path) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            };
            match self.shared.catalog.probe(&self.shared, &header.stream_id) {
                Ok(Probe::Found(meta)) if meta.version() > 0 && !meta.is_deleted() => {
                    return Some(Ok(header.stream_id))
                }
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        for id in self.packed.by_ref() {
            match self.shared.catalog.probe(&self.shared, &id) {
                Ok(Probe::Found(meta)) if meta.version() > 0 && !meta.is_deleted() => {
                    return Some(Ok(id))
                }
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }
}
