//! The group-commit writer (segment-format.md §7). It owns every write of the store; its thread
//! runs the batches, or a lone appender runs its own (`commit_on_caller`).

use crate::catalog::{Probe, SegmentState, StreamMeta, StreamState};
use crate::changeset::ChangesetIter;
use crate::error::{Error, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::index::{
    locate, IndexEntry, IndexHeader, FLAG_CONTROL, FLAG_LINKED, FLAG_PACKED, INDEX_ENTRY_BYTES,
    INDEX_HEADER_BYTES,
};
use crate::format::journal::{FrameBuilder, Target};
use crate::format::keys::{content_hash, KeyEntry, KEYS_HEADER_BYTES};
use crate::format::pack::{PACK_RECORDS_START, TABLE_HEADER_BYTES};
use crate::format::removals::{Removal, REMOVAL_KIND_INVALIDATE};
use crate::format::segment::{
    decode_record, encode_record, packed_record_bytes, record_bytes_padded, segment_header_bytes,
    Control, RecordFields, SegmentHeader, CONTROL_BLOCK_BYTES, CONTROL_OP_INVALIDATE,
    RECORD_FLAG_BEGIN, RECORD_FLAG_END, RECORD_HEADER_BYTES, RECORD_PREFIX_BYTES,
};
use crate::keys::{KeyMap, Loaded};
use crate::layout::{
    fanout_dir, index_path, keys_path, segment_path, StreamKey, CHECKPOINT_FILE, INDEX_DIR,
    STREAMS_DIR,
};
use crate::limits::PACK_BYTES_MAX;
use crate::limits::{CHECKPOINT_INTERVAL_POSITIONS, NOTIFY_THREAD_MIN_ANSWERS};
use crate::options::SyncMode;
use crate::persistent::Entry;
use crate::read::AllIter;
use crate::reply::Reply;
use crate::shared::Shared;
use crate::storage::{FileHandle, OpenMode};
use crate::types::now_us;
use crate::types::{AppendResult, Direction, EventData, ExpectedVersion, Position};
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// One stream's part of an append.
pub struct Part {
    pub stream: Arc<str>,
    pub expected: ExpectedVersion,
    pub events: Vec<EventData>,
    pub commit_metadata: Vec<u8>,
    /// Drop keyed events whose content equals the newest of their key (segment-format.md §15).
    pub deduplicate: bool,
}

/// One append (of one part, or of several: a multi-stream append, committed all or none), as
/// sent by a caller to the writer.
pub struct AppendRequest {
    pub parts: Vec<Part>,
    /// Encoded bytes of the events (for the batch byte limit).
    pub bytes: usize,
    /// Close the stream instead of appending (one part, no events).
    pub close: bool,
    /// Invalidate this changeset of the stream instead of appending (one part, whose one
    /// event's data is the reason; segment-format.md §16).
    pub invalidate: Option<u64>,
    /// The producer that submitted it, for the fail-stop rule (segment-format.md §14).
    pub producer: Option<Arc<crate::producer::Link>>,
    /// One result per part, in order.
    pub reply: Reply<Result<Vec<AppendResult>>>,
}

/// A batch's packed streams' new ends and its packs' new ends (segment-format.md §19).
type BatchPackFields<'a> = (
    &'a HashMap<StreamKey, crate::catalog::PackedState>,
    &'a [(u32, u64)],
);

/// What the writer runs alone, after the batch before it.
enum Alone {
    Rewrite(RewriteRequest),
    Checkpoint(Reply<Result<u64>>),
}

#[path = "rewrite.rs"]
mod rewrite;
pub use rewrite::{RewriteKind, RewriteRequest};

/// The writer's state. Its thread holds it for each batch it runs, and so does an appender that
/// commits its own append (`commit_on_caller`): one batch at a time either way.
pub type Lock = Arc<std::sync::Mutex<Writer>>;

fn guard(lock: &Lock) -> std::sync::MutexGuard<'_, Writer> {
    // A panic in a batch poisons the store (`step_or_poison`): the state left behind only
    // answers `Poisoned` from then on.
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sending end of the writer's channel, with the count of requests sent and not yet taken
/// into a batch (segment-format.md §7, "Who runs the loop").
pub struct Queue {
    tx: Sender<Request>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// The channel to the writer, its receiving end, and the count both ends keep.
    pub fn new() -> (Queue, Receiver<Request>, Arc<AtomicUsize>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        let queue = Queue {
            tx,
            queued: Arc::clone(&queued),
        };
        (queue, rx, queued)
    }

    /// Queue `request` for the writer thread.
    ///
    /// # Errors
    /// `WriterGone` when the writer thread has stopped (the request is dropped: its reply
    /// answers nothing).
    pub fn send(&self, request: Request) -> std::result::Result<(), WriterGone> {
        // Counted before it can be received, so that the count never says "none waits" while
        // one does: a caller holding the writer's mutex that reads 0 knows that every request
        // sent before it looked has been committed.
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(request).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            WriterGone
        })
    }
}

/// The writer thread has stopped: nothing takes requests any more.
#[derive(Debug)]
pub struct WriterGone;

/// The writer thread: run batches until every sender is gone, then leave a clean checkpoint.
/// A panic in a batch poisons the store and the thread goes on answering `Poisoned`, so no
/// request sent later waits for an answer that never comes.
pub fn run(lock: &Lock, rx: &Receiver<Request>) {
    loop {
        // The mutex is held from the look at the carried requests to the end of the batch that
        // takes one: a caller that found none carried (`commit_on_caller`) cannot commit ahead
        // of one the writer thread holds in its hand.
        let mut writer = guard(lock);
        let first = match writer.carried() {
            Some(r) => r,
            None => {
                drop(writer);
                let Ok(r) = rx.recv() else { break };
                writer = guard(lock);
                writer.taken();
                r
            }
        };
        step_or_poison(&mut writer, first, true);
    }
    close(lock);
}

/// The end of a handle, once no request can come: leave a clean checkpoint, and give every
/// answer handed to the notifier before returning (and so before the last handle's drop
/// returns). Run by the writer thread when its channel closes, or by the drop of a handle
/// whose writer thread never started.
pub fn close(lock: &Lock) {
    let mut writer = guard(lock);
    writer.close_clean();
    writer.notifier.take();
}

/// Commit `request` on the caller's thread (segment-format.md §7, "Who runs the loop") when no
/// batch is running, none was carried over and no request sent before waits (in the channel,
/// or in the writer thread's hand between its receive and its taking the mutex); the request
/// back otherwise, for the channel. The batch holds `request` alone: only the writer thread
/// takes requests from the channel, in arrival order, which keeps a producer's appends in order
/// (a caller that took the channel's requests while the writer thread held the one before them
/// would commit them first: the producer test of `tests/concurrent_writers.rs` caught a first
/// version doing that).
pub fn commit_on_caller(lock: &Lock, request: AppendRequest) -> Option<AppendRequest> {
    let Ok(mut writer) = lock.try_lock() else {
        // Busy, or poisoned by a panic: the writer thread answers.
        return Some(request);
    };
    if !writer.carry.is_empty() || writer.queued.load(Ordering::SeqCst) != 0 {
        // Others wait: join them in the writer thread's next batch, and its sync. (This also
        // keeps appenders from taking the mutex again and again while the writer thread waits
        // for it with a request in hand.)
        return Some(request);
    }
    writer.step_alone(Request::Append(request));
    None
}

/// One batch (`Writer::step`); a panic in it poisons the store (every waiter of the batch sees
/// its reply dropped, every later request is answered `Poisoned`).
fn step_or_poison(writer: &mut Writer, first: Request, drain: bool) {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        writer.step(first, drain);
    }));
    if ran.is_err() {
        writer.shared.poison("the writer panicked".into());
    }
}

/// What callers send the writer.
pub enum Request {
    Append(AppendRequest),
    /// A persistent subscription has a new ack to make durable in the next batch.
    Ack(Arc<Entry>),
    /// A snapshot or a delete: run alone, after the batch before it.
    Rewrite(RewriteRequest),
    /// Write and sync a checkpoint claiming the head now (before an index compaction, which
    /// touches only what a durable checkpoint covers); answers that head.
    Checkpoint(Reply<Result<u64>>),
}

type Handle = Arc<dyn FileHandle>;

/// The event type of a close record (segment-format.md §12).
pub const CLOSE_EVENT_TYPE: &str = "$close";
/// The event type of an invalidation event (segment-format.md §16).
pub const INVALIDATE_EVENT_TYPE: &str = "$invalidate";
/// Bytes of a close record, padding included.
const CLOSE_RECORD_BYTES: u64 = crate::format::align8(
    (RECORD_HEADER_BYTES + CONTROL_BLOCK_BYTES + CLOSE_EVENT_TYPE.len()) as u64,
);

/// The writer's view of one stream: its committed state plus where the next record goes.
struct WriterStream {
    meta: Arc<StreamMeta>,
    version: u64,
    changeset: u64,
    segment: u32,
    segment_first_version: u64,
    header_bytes: u64,
    tail: u64,
    /// Segment files that must be created (or rewritten) before the first write to them.
    create: Option<CreateKind>,
    file: Option<Handle>,
    used: u64,
    /// The segment number after segment 0 (segment-format.md §12).
    after_zero: u32,
    closed: bool,
    deleted: bool,
    keys: WriterKeys,
    /// While the stream is packed: where its chain ends (segment-format.md §19). `None` once
    /// its records go to its own segments.
    packed: Option<PackedTail>,
}

/// A packed stream's end, as the writer extends it (segment-format.md §19).
#[derive(Debug, Clone, Copy)]
struct PackedTail {
    /// Its last packed position; 0 before its first record.
    last: u64,
    /// Bytes of its packed records.
    bytes: u64,
    /// Its entry's offset in its fan-out's table; `None` until the entry is planned.
    entry_offset: Option<u64>,
}

/// The current pack, as the writer appends to it.
struct PackCursor {
    number: u32,
    /// Where the next record goes.
    end: u64,
    /// The file must be created (header first) by the next write.
    create: bool,
    handle: Option<Handle>,
}

/// Where the next entry of a fan-out's table goes.
struct TableCursor {
    end: u64,
    /// The file must be created (header first) by the next write.
    create: bool,
}

/// Bytes planned for a pack, or for a fan-out's table, in this batch.
struct FileWrite {
    /// The pack number, or the fan-out number.
    number: u32,
    offset: u64,
    /// The file must be created, with this header, before the write.
    create: Option<Vec<u8>>,
    bytes: Vec<u8>,
}

/// The writer's view of a stream's keys file (segment-format.md §15).
struct WriterKeys {
    /// The newest event of each key, including the batch being planned.
    map: KeyMap,
    /// Where the next entry goes.
    len: u64,
    /// The file exists (else the next keyed event creates it).
    exists: bool,
}

impl WriterKeys {
    fn none() -> WriterKeys {
        WriterKeys {
            map: KeyMap::new(),
            len: KEYS_HEADER_BYTES as u64,
            exists: false,
        }
    }
}

/// Entries planned for one stream's keys file in this batch.
struct KeysWrite {
    key: StreamKey,
    offset: u64,
    /// The file must be created, with a header naming this base record (segment-format.md §15).
    create: Option<u64>,
    bytes: Vec<u8>,
}

/// What planning a batch accumulates.
#[derive(Default)]
struct Planning {
    next_position: u64,
    index_bytes: Vec<u8>,
    writes: Vec<SegmentWrite>,
    write_of: HashMap<(StreamKey, u32), usize>,
    keys_writes: Vec<KeysWrite>,
    keys_of: HashMap<StreamKey, usize>,
    /// `REMOVALS` records of the batch's invalidations (segment-format.md §16).
    invalidations: Vec<Removal>,
    /// Packed records (segment-format.md §19): one write per pack the batch reaches.
    pack_writes: Vec<FileWrite>,
    /// New entries of fan-out tables: one write per table.
    table_writes: Vec<FileWrite>,
    /// The packed streams' new ends, published with the batch.
    packed: HashMap<StreamKey, crate::catalog::PackedState>,
    /// The batch's new table entries, by fan-out, with their offsets: added to the cached
    /// tables once published.
    new_entries: HashMap<u16, Vec<(crate::format::pack::TableEntry, u64)>>,
}

/// What pass 1 of planning decided for one part.
struct PartPlan {
    /// Which events are written (de-duplication drops the others).
    keep: Vec<bool>,
    /// The content hash of each keyed event.
    hashes: Vec<Option<[u8; 16]>>,
    /// When every event was dropped: the result to return (the newest duplicate).
    all_dropped: Option<AppendResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateKind {
    /// The file does not exist.
    New,
    /// A file left by an unacknowledged batch holds the name: cut it and write a fresh header.
    Reset,
}

/// Bytes planned for one segment in this batch.
struct SegmentWrite {
    key: StreamKey,
    segment: u32,
    stream: Arc<str>,
    offset: u64,
    create: Option<(CreateKind, Vec<u8>)>,
    bytes: Vec<u8>,
}

/// A subscription's ack written in a batch: durable once the batch's sync returns.
type AckWritten = (Arc<Entry>, (u64, u64));

/// One planned batch, ready to be written.
struct Batch {
    first_position: u64,
    planning: Planning,
    planned: Vec<Planned>,
    touched: BTreeSet<Arc<str>>,
    acks: Vec<Arc<Entry>>,
}

struct Planned {
    reply: Reply<Result<Vec<AppendResult>>>,
    result: Vec<AppendResult>,
    producer: Option<Arc<crate::producer::Link>>,
}

pub struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Request>,
    /// Requests sent and not yet taken into a batch (`Queue`); counted down under the mutex
    /// by whoever takes one from `rx`.
    queued: Arc<AtomicUsize>,
    streams: HashMap<Arc<str>, WriterStream>,
    tick: u64,
    index_files: HashMap<u64, Handle>,
    checkpoint_file: Handle,
    checkpoint_sequence: u64,
    checkpoint_head: u64,
    head: u64,
    /// Requests deferred to the next batch, in arrival order.
    carry: VecDeque<AppendRequest>,
    /// Keys of the new streams of the batch being planned: not on disk yet, so a probe cannot
    /// see that their slot is taken. Emptied when the batch ends. (A scan of every cached
    /// stream instead cost 75% of the writer's time when creating a million streams.)
    creating: std::collections::HashSet<StreamKey>,
    /// Streams cached in `streams` since the last batch ended with no committed event: the
    /// only ones `drop_uncreated` looks at. (A pass over every cached stream after each batch
    /// cost 14% of the writer's time in the lifecycle bench's deletes.)
    uncreated: Vec<Arc<str>>,
    /// Streams in `streams` holding an open segment file, never fewer than there are: exact
    /// after `evict`, counted up as files are cached, not down when a roll drops one. Keeps
    /// the writer from scanning every cached stream on every batch.
    open_files: usize,
    /// Under `SyncMode::Journal`: the journal (segment-format.md §18).
    journal: Option<crate::journal::Journal>,
    /// Without a journal: the journal sequence every checkpoint names, kept as recovery left
    /// it (a store may switch sync modes between opens).
    journal_sequence: u64,
    /// Answers large batches (engine/notify.rs); started by the first batch that needs it
    /// (a thread started at open was a twentieth of a reopen's time, `perf`, session 16), and
    /// joined when the writer is dropped.
    notifier: Option<crate::notify::Notifier>,
    /// The notifier was started, or its start failed (then the writer answers every batch).
    notifier_started: bool,
    /// The current pack, loaded at the first packed append (segment-format.md §19).
    pack: Option<PackCursor>,
    /// Fan-out tables this writer appended to or looked at.
    tables: HashMap<u16, TableCursor>,
    /// Pack records removed by rewrites, until their whole blocks are given back.
    dead: crate::packs::DeadRanges,
    /// After a clean close: the checkpoint that marks this handle open, written and synced
    /// before the first thing this handle writes (`mark_open`); `None` once it is durable.
    open_mark: Option<Checkpoint>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<Request>,
        queued: Arc<AtomicUsize>,
        checkpoint: Checkpoint,
        mark: crate::recovery::OpenMark,
    ) -> Result<Writer> {
        let path = shared.root.join(CHECKPOINT_FILE);
        let file: Handle = Arc::from(
            shared
                .backend
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open checkpoint", &path, e))?,
        );
        let head = shared.head();
        let journal = if shared.options.sync == SyncMode::Journal {
            Some(crate::journal::Journal::open(
                &shared,
                checkpoint.journal_sequence,
            )?)
        } else {
            None
        };
        Ok(Writer {
            shared,
            rx,
            queued,
            streams: HashMap::new(),
            tick: 0,
            index_files: HashMap::new(),
            checkpoint_file: file,
            checkpoint_sequence: checkpoint.sequence,
            checkpoint_head: checkpoint.head,
            head,
            carry: VecDeque::new(),
            creating: std::collections::HashSet::new(),
            uncreated: Vec::new(),
            open_files: 0,
            journal,
            journal_sequence: checkpoint.journal_sequence,
            notifier: None,
            notifier_started: false,
            pack: None,
            tables: HashMap::new(),
            dead: crate::packs::DeadRanges::default(),
            open_mark: (mark == crate::recovery::OpenMark::Pending).then_some(checkpoint),
        })
    }

    /// The first request deferred by the last batch, if any (it goes first in the next).
    fn carried(&mut self) -> Option<Request> {
        self.carry.pop_front().map(Request::Append)
    }

    /// A request was taken from the channel into the batch this writer runs.
    fn taken(&self) {
        let before = self.queued.fetch_sub(1, Ordering::SeqCst);
        assert!(
            before > 0,
            "a request taken from the channel was not counted"
        );
    }

    /// A batch of `request` alone, on the caller's thread (`commit_on_caller`). A request alone
    /// in its batch is never deferred (only a request before it in the same batch can make it
    /// wait), so nothing is left carried for the writer thread, which looks for carried
    /// requests only before it waits on the channel.
    fn step_alone(&mut self, request: Request) {
        let mut next = Some(request);
        while let Some(r) = next.take() {
            step_or_poison(self, r, false);
            debug_assert!(
                self.carry.is_empty(),
                "a request alone in its batch was deferred"
            );
            // Should one ever be, it is committed here, still without taking requests from
            // the channel, rather than left for a writer thread that may not wake.
            next = self.carried();
        }
    }

    /// One batch: `first`, then (`drain`: the writer thread's batches) whatever else is
    /// waiting, up to the batch limits (§7 step 1); plan, write, sync, publish, answer.
    fn step(&mut self, first: Request, drain: bool) {
        let mut batch: Vec<AppendRequest> = Vec::new();
        let mut acks: Vec<Arc<Entry>> = Vec::new();
        let mut bytes = 0usize;
        let mut rewrite = None;
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Request::Append(r) => {
                    bytes += r.bytes;
                    batch.push(r);
                }
                // At most one request per subscription is queued at a time
                // (segment-format.md §11), so acks cannot flood a batch.
                Request::Ack(e) => acks.push(e),
                Request::Rewrite(r) => {
                    rewrite = Some(Alone::Rewrite(r));
                    break;
                }
                Request::Checkpoint(r) => {
                    rewrite = Some(Alone::Checkpoint(r));
                    break;
                }
            }
            if batch.len() >= self.shared.options.batch_appends_max
                || bytes >= self.shared.options.batch_bytes_max
            {
                break;
            }
            if !drain {
                break;
            }
            next = match self.carry.pop_front() {
                Some(r) => Some(Request::Append(r)),
                None => self.rx.try_recv().ok().inspect(|_| self.taken()),
            };
        }
        // Nothing is written before this handle's open mark is durable.
        let ready = self.shared.check_poison().and_then(|()| self.mark_open());
        if let Err(e) = ready {
            for r in batch {
                if let Some(link) = &r.producer {
                    link.fail(&e);
                }
                r.reply.send(Err(e.duplicate()));
            }
            match rewrite {
                Some(Alone::Rewrite(r)) => r.reply.send(Err(e.duplicate())),
                Some(Alone::Checkpoint(r)) => r.send(Err(e.duplicate())),
                None => {}
            }
            // Waiters on durable acks see the poison.
            self.shared.changed();
            return;
        }
        self.commit(batch, acks);
        // The batch before it may have poisoned the store.
        match (rewrite, self.shared.check_poison()) {
            (Some(Alone::Rewrite(r)), Ok(())) => self.rewrite(r),
            (Some(Alone::Rewrite(r)), Err(e)) => r.reply.send(Err(e)),
            (Some(Alone::Checkpoint(r)), Ok(())) => r.send(self.durable_checkpoint()),
            (Some(Alone::Checkpoint(r)), Err(e)) => r.send(Err(e)),
            (None, _) => {}
        }
    }

    /// Before the first thing a handle opened after a clean close writes: the checkpoint that
    /// marks it open (`CLEAN` clear), written and synced (segment-format.md §8, step 6).
    /// Without it, a batch that failed later would leave files behind a checkpoint still
    /// saying `CLEAN`, and the next open would skip the `syncfs` they need. A failure poisons
    /// the store, as any failed write or sync of the writer does.
    fn mark_open(&mut self) -> Result<()> {
        let Some(mark) = self.open_mark.take() else {
            return Ok(());
        };
        assert!(
            !mark.clean && mark.sequence == self.checkpoint_sequence,
            "the open mark is the checkpoint recovery handed the writer"
        );
        let path = self.shared.root.join(CHECKPOINT_FILE);
        let written = self
            .checkpoint_file
            .write_all_at(&mark.encode(), mark.slot_offset())
            .map_err(|e| Error::io("write checkpoint", &path, e))
            .and_then(|()| {
                self.checkpoint_file
                    .sync_data()
                    .map_err(|e| Error::io("fsync checkpoint", &path, e))
            });
        written.map_err(|e| Error::Poisoned {
            cause: self.poison_with(&e),
        })
    }

    /// After the last sender is gone: leave a clean checkpoint. A handle that wrote nothing
    /// (its open mark still pending) leaves the clean checkpoint it found: it claims the same
    /// head, and the journal is as empty as that close left it.
    fn close_clean(&mut self) {
        if self.open_mark.is_some() {
            return;
        }
        if self.shared.check_poison().is_ok() {
            match self.sync_checkpoint(true) {
                Ok(()) => {
                    if let Some(j) = &mut self.journal {
                        j.shrink();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "clean checkpoint at close failed; the next open verifies the tail");
                }
            }
        }
    }

    /// Write a checkpoint claiming the published head (every published batch is durable in
    /// place) and `fdatasync` it. Under the journal, first make the files its frames cover
    /// durable (a flush, segment-format.md §18): after this, no frame before it is replayed.
    fn sync_checkpoint(&mut self, clean: bool) -> Result<()> {
        let mut written = None;
        if self.journal_dirty() {
            // The packs' in-place fields first: the `syncfs` makes them durable with the rest
            // (segment-format.md §19).
            written = Some(self.write_pack_fields(None)?);
            self.checkpoint_file
                .sync_fs()
                .map_err(|e| Error::io("syncfs", &self.shared.root, e))?;
            crate::killpoint::reached("journal-flushed");
        }
        self.synced_checkpoint(self.head, clean)?;
        if let Some(w) = written {
            self.shared.packs.flushed(self.shared.tables(), &w);
        }
        self.give_back_dead(self.head);
        Ok(())
    }

    /// Give back the whole pack blocks of removed records that the durable checkpoint at
    /// `head` covers (segment-format.md §19, "Space back"). Not synced here: a crash before
    /// the next sync leaves the old bytes, as dead. A failure costs only the space, so it is
    /// logged, not fatal (no write of live data is involved, and no sync failed).
    fn give_back_dead(&mut self, head: u64) {
        let blocks = self.dead.due(head);
        if blocks.is_empty() {
            return;
        }
        let root = &self.shared.root;
        let mut open: HashMap<u32, Box<dyn FileHandle>> = HashMap::new();
        for (pack, offset, len) in blocks {
            let path = crate::layout::pack_path(root, pack);
            let handle = match open.entry(pack) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match self.shared.backend.open(&path, OpenMode::ReadWrite) {
                        Ok(h) => v.insert(h),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot open a pack to give back dead blocks");
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = handle.punch_hole(offset, len) {
                tracing::warn!(path = %path.display(), offset, len, error = %e,
                    "cannot give back dead pack blocks; they stay until pack compaction");
            }
        }
    }

    /// Write a checkpoint claiming `head`, `fdatasync` it; the journal starts over (the
    /// caller has made everything up to `head` durable in place).
    fn synced_checkpoint(&mut self, head: u64, clean: bool) -> Result<()> {
        self.write_checkpoint(head, clean)?;
        self.checkpoint_file
            .sync_data()
            .map_err(|e| Error::io("sync checkpoint", self.shared.root.join(CHECKPOINT_FILE), e))?;
        if let Some(j) = &mut self.journal {
            j.restart();
        }
        Ok(())
    }

    /// Journal frames were written since the last flush.
    pub(crate) fn journal_dirty(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(crate::journal::Journal::dirty)
    }

    /// A checkpoint claiming the published head, synced: every published batch is durable.
    /// A failure poisons the store, as any failed sync.
    fn durable_checkpoint(&mut self) -> Result<u64> {
        match self.sync_checkpoint(false) {
            Ok(()) => {
                self.shared
                    .checkpoint_head
                    .fetch_max(self.checkpoint_head, std::sync::atomic::Ordering::AcqRel);
                Ok(self.checkpoint_head)
            }
            // Fatal to the handle, as a failed sync is anywhere: its caller is told
            // `Poisoned` (until session 12 it was told `Io`, which read as a refusal; the
            // `api_model` fuzzer found a model going on after it).
            Err(e) => Err(Error::Poisoned {
                cause: self.poison_with(&e),
            }),
        }
    }

    fn write_checkpoint(&mut self, head: u64, clean: bool) -> Result<()> {
        let journal_sequence = self
            .journal
            .as_ref()
            .map_or(self.journal_sequence, crate::journal::Journal::sequence);
        let c = Checkpoint {
            store_id: self.shared.manifest.store_id,
            sequence: self.checkpoint_sequence + 1,
            head,
            clean,
            // Replay starts with the next frame, at the start of the journal: a checkpoint is
            // written under the journal only once every frame before is flushed.
            journal_sequence,
            journal_offset: crate::format::journal::JOURNAL_HEADER_BYTES,
        };
        self.checkpoint_file
            .write_all_at(&c.encode(), c.slot_offset())
            .map_err(|e| {
                Error::io(
                    "write checkpoint",
                    self.shared.root.join(CHECKPOINT_FILE),
                    e,
                )
            })?;
        self.checkpoint_sequence = c.sequence;
        self.checkpoint_head = c.head;
        Ok(())
    }

    /// Plan, write, sync and publish one batch; answer every request in it.
    fn commit(&mut self, batch: Vec<AppendRequest>, acks: Vec<Arc<Entry>>) {
        let timestamp_us = now_us();
        let first_position = self.head + 1;
        let mut planning = Planning {
            next_position: first_position,
            ..Planning::default()
        };
        let mut planned: Vec<Planned> = Vec::new();
        let mut touched: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut batch = batch.into_iter();
        while let Some(request) = batch.next() {
            // Fail-stop: nothing of a producer is planned after one of its appends failed.
            if let Some(cause) = request.producer.as_ref().and_then(|p| p.failure()) {
                request.reply.send(Err(Error::ProducerFailed { cause }));
                continue;
            }
            let outcome = self.plan(&request, timestamp_us, &mut planning);
            if let (Some(p), Ok(PlanOutcome::Done(Err(e))) | Err(e)) = (&request.producer, &outcome)
            {
                p.fail(e);
            }
            match outcome {
                Ok(PlanOutcome::Planned(result)) => {
                    for part in &request.parts {
                        touched.insert(Arc::clone(&part.stream));
                    }
                    planned.push(Planned {
                        reply: request.reply,
                        result,
                        producer: request.producer,
                    });
                }
                Ok(PlanOutcome::Done(result)) => {
                    request.reply.send(result);
                }
                Ok(PlanOutcome::Defer) => {
                    // This one and the rest wait for the next batch, in arrival order.
                    let deferred: Vec<AppendRequest> =
                        std::iter::once(request).chain(batch.by_ref()).collect();
                    for r in deferred.into_iter().rev() {
                        self.carry.push_front(r);
                    }
                    break;
                }
                Err(e) => {
                    // A read failure while planning (a damaged stream): this request fails,
                    // nothing was written for it.
                    request.reply.send(Err(e));
                }
            }
        }
        self.finish(Batch {
            first_position,
            planning,
            planned,
            touched,
            acks,
        });
    }

    fn finish(&mut self, batch: Batch) {
        let Batch {
            first_position,
            planning,
            planned,
            touched,
            acks,
        } = batch;
        if planned.is_empty() && acks.is_empty() {
            self.drop_uncreated();
            return;
        }
        let last_position = planning.next_position - 1;
        let invalidations = planning.invalidations.clone();
        let packed = planning.packed.clone();
        let mut planning = planning;
        let new_entries = std::mem::take(&mut planning.new_entries);
        let pack_ends: Vec<(u32, u64)> = planning
            .pack_writes
            .iter()
            .map(|w| (w.number, w.offset + w.bytes.len() as u64))
            .collect();
        match self.write_and_sync(first_position, last_position, planning, &acks) {
            Ok(written) => {
                crate::killpoint::reached("batch-synced");
                // The checkpoint written in this batch is durable now.
                self.shared
                    .checkpoint_head
                    .fetch_max(self.checkpoint_head, std::sync::atomic::Ordering::AcqRel);
                if !planned.is_empty() {
                    // Readers that load a packed stream from disk look here first: before the
                    // head that makes its new records visible (segment-format.md §19).
                    let lasts: Vec<(StreamKey, u64, u64)> = packed
                        .iter()
                        .map(|(k, p)| (*k, p.last, p.entry_offset))
                        .collect();
                    self.shared.packs.publish(&lasts, &pack_ends);
                    for (fanout, entries) in &new_entries {
                        self.shared.packs.add_entries(*fanout, entries);
                    }
                    self.publish(&touched, last_position, &packed);
                    if !new_entries.is_empty() {
                        self.shared.packs.entries_published(new_entries.len());
                    }
                }
                self.shared.removals.published(&invalidations);
                for (entry, acked) in written {
                    entry.made_durable(acked);
                }
                // After the streams' states and the acks: a woken waiter sees all of them.
                self.shared.changed();
                crate::killpoint::reached("batch-published");
                let many = planned.len() >= NOTIFY_THREAD_MIN_ANSWERS;
                let answers = move || {
                    for p in planned {
                        p.reply.send(Ok(p.result));
                    }
                };
                if many && !self.notifier_started {
                    self.notifier_started = true;
                    self.notifier = crate::notify::Notifier::start();
                }
                match &self.notifier {
                    Some(notifier) if many => {
                        if let Err(answers) = notifier.send(Box::new(answers)) {
                            answers();
                        }
                    }
                    _ => answers(),
                }
            }
            Err(e) => {
                let cause = self.poison_with(&e);
                for p in planned {
                    let e = Error::Poisoned {
                        cause: cause.clone(),
                    };
                    if let Some(link) = &p.producer {
                        link.fail(&e);
                    }
                    p.reply.send(Err(e));
                }
            }
        }
        self.drop_uncreated();
        self.evict();
    }

    /// Poison the store after a failure that may have left files half written: the writer
    /// forgets every stream it holds (the next open settles them). Returns the cause every
    /// waiting caller is answered with (`Error::Poisoned`).
    pub(crate) fn poison_with(&mut self, e: &Error) -> String {
        let cause = format!("{e}");
        self.shared.poison(cause.clone());
        self.shared.catalog.clear();
        self.streams.clear();
        self.open_files = 0;
        cause
    }

    /// Streams looked up for an append that was rejected keep no slot reserved.
    fn drop_uncreated(&mut self) {
        self.creating.clear();
        let catalog = &self.shared.catalog;
        for stream in self.uncreated.drain(..) {
            let Some(s) = self.streams.get(&stream) else {
                continue;
            };
            if s.create.is_some() && s.version == 0 {
                // Its slot is not taken on disk: forget it everywhere, so that the slot can go
                // to whichever stream id claims it first.
                catalog.remove(&s.meta);
                self.streams.remove(&stream);
            }
        }
    }

    fn evict(&mut self) {
        let open_max = self.shared.options.open_files_max;
        let streams_max = self
            .shared
            .options
            .streams_cached_max
            .min(crate::limits::WRITER_STREAMS_MAX);
        let count_open = |streams: &HashMap<Arc<str>, WriterStream>| {
            streams.values().filter(|s| s.file.is_some()).count()
        };
        if self.streams.len() > streams_max {
            let mut used: Vec<u64> = self.streams.values().map(|s| s.used).collect();
            let middle = used.len() / 2;
            let cut = *used.select_nth_unstable(middle).1;
            self.streams.retain(|_, s| s.used > cut);
            self.open_files = count_open(&self.streams);
        }
        if self.open_files > open_max {
            // The count may be high (rolls are not counted down): look before closing.
            self.open_files = count_open(&self.streams);
        }
        if self.open_files > open_max {
            let mut used: Vec<u64> = self
                .streams
                .values()
                .filter(|s| s.file.is_some())
                .map(|s| s.used)
                .collect();
            let middle = used.len() / 2;
            let cut = *used.select_nth_unstable(middle).1;
            for s in self.streams.values_mut() {
                if s.used <= cut {
                    s.file = None;
                }
            }
            self.open_files = count_open(&self.streams);
        }
    }

    /// The writer's state of `stream`, loading (and repairing) it on first use.
    fn stream(&mut self, stream: &Arc<str>) -> Result<Option<&mut WriterStream>> {
        self.tick += 1;
        if !self.streams.contains_key(stream) {
            let probe = match self.shared.catalog.probe(&self.shared, stream) {
                Err(Error::Io { source, .. })
                    if crate::storage::real::out_of_descriptors(&source) =>
                {
                    self.close_cached_files();
                    self.shared.catalog.probe(&self.shared, stream)?
                }
                other => other?,
            };
            let ws = match probe {
                Probe::Found(meta) => {
                    let ws = self.repair(meta)?;
                    self.open_files += usize::from(ws.file.is_some());
                    ws
                }
                Probe::Absent {
                    collision,
                    file_exists,
                } => {
                    let hash = crate::layout::stream_hash(&self.shared.manifest.hash_key, stream);
                    let key = StreamKey { hash, collision };
                    if self.creating.contains(&key) {
                        // Another new stream id with the same hash holds this slot in the batch
                        // and is not on disk yet: this one waits for the next batch, when the
                        // slot is settled one way or the other.
                        return Ok(None);
                    }
                    if file_exists {
                        self.cut_leftovers(key)?;
                    }
                    let header_bytes = segment_header_bytes(stream.len());
                    let meta = Arc::new(StreamMeta {
                        id: Arc::clone(stream),
                        key,
                        state: RwLock::new(StreamState::default()),
                    });
                    // Registered before its file exists: a reader then finds it (with no
                    // committed event) instead of loading a file the writer is writing.
                    self.shared.catalog.insert(Arc::clone(&meta));
                    self.creating.insert(key);
                    WriterStream {
                        meta,
                        version: 0,
                        changeset: 0,
                        segment: 0,
                        segment_first_version: 1,
                        header_bytes,
                        tail: header_bytes,
                        create: Some(if file_exists {
                            CreateKind::Reset
                        } else {
                            CreateKind::New
                        }),
                        file: None,
                        used: 0,
                        after_zero: 1,
                        closed: false,
                        deleted: false,
                        keys: WriterKeys::none(),
                        // A new stream starts packed where packs are kept (§19).
                        packed: (self.journal.is_some()
                            && self.shared.options.pack_stream_bytes > 0)
                            .then_some(PackedTail {
                                last: 0,
                                bytes: 0,
                                entry_offset: None,
                            }),
                    }
                }
            };
            if ws.create.is_some() && ws.version == 0 {
                self.uncreated.push(Arc::clone(stream));
            }
            self.streams.insert(Arc::clone(stream), ws);
        }
        let tick = self.tick;
        let ws = self.streams.get_mut(stream);
        if let Some(ws) = ws {
            ws.used = tick;
            return Ok(Some(ws));
        }
        Ok(None)
    }

    /// The segment 0 and keys file an unacknowledged batch left in a stream's slot, with
    /// nothing committed in them: cut to nothing, durably, before the slot is written again.
    /// A leftover record could otherwise carry the very position, segment and offset of the
    /// first new record, and pass for it if a crash kept the new index entry but not the new
    /// record (the model fuzzer found this).
    fn cut_leftovers(&self, key: StreamKey) -> Result<()> {
        for path in [
            segment_path(&self.shared.root, key, 0),
            keys_path(&self.shared.root, key),
        ] {
            let f = match self.shared.backend.open(&path, OpenMode::ReadWrite) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("open leftover file", &path, e)),
            };
            tracing::warn!(path = %path.display(), "cutting a file left by an unacknowledged batch");
            f.set_len(0)
                .map_err(|e| Error::io("cut leftover file", &path, e))?;
            f.sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
        }
        Ok(())
    }

    /// The segment 0 and keys file an unacknowledged batch left for a packed stream (one that
    /// was leaving its pack): removed, durably, before the stream is written again (the
    /// reason of `cut_leftovers`).
    fn remove_leftovers(&self, key: StreamKey) -> Result<()> {
        let mut removed = false;
        for path in [
            segment_path(&self.shared.root, key, 0),
            keys_path(&self.shared.root, key),
        ] {
            match self.shared.backend.remove_file(&path) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "removing a file left by an unacknowledged batch");
                    self.shared.maps.forget_segment(key, 0);
                    removed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove leftover file", &path, e)),
            }
        }
        if removed {
            self.sync_fanout_dir(key)?;
        }
        Ok(())
    }

    /// `fsync` the fan-out folder of `key`: its files' removals (or creations) are durable.
    fn sync_fanout_dir(&self, key: StreamKey) -> Result<()> {
        let dir = fanout_dir(&self.shared.root, key.hash);
        self.shared
            .backend
            .sync_dir(&dir)
            .map_err(|e| Error::io("fsync directory", &dir, e))
    }

    /// First touch of an existing stream: cut what unacknowledged batches left after its
    /// committed end (segment-format.md §9), so that the next record goes right after it.
    fn repair(&self, meta: Arc<StreamMeta>) -> Result<WriterStream> {
        let state = meta.snapshot();
        let key = meta.key;
        let header_bytes = segment_header_bytes(meta.id.len());
        let (segment, first_version, tail, create) = match state.segments.last() {
            Some(last) => (last.number, last.first_version, last.end, None),
            // Files exist but hold nothing committed (or the stream is packed and has none):
            // its segment 0 is written from scratch when it gets one.
            None => {
                if state.packed.is_some() {
                    // A packed stream may go on in its pack for long: a leftover segment 0
                    // is removed rather than kept empty.
                    self.remove_leftovers(key)?;
                } else {
                    self.cut_leftovers(key)?;
                }
                let first = state.packed.map_or(1, |p| p.version + 1);
                (0, first, header_bytes, Some(CreateKind::Reset))
            }
        };
        let packed = match (&state.packed, state.segments.is_empty()) {
            (Some(p), true) => Some(PackedTail {
                last: p.last,
                bytes: p.bytes,
                entry_offset: Some(p.entry_offset),
            }),
            _ => None,
        };
        // Segments a rewrite of segment 0 replaced, left by a crash before it removed them
        // (segment-format.md §12): nothing refers to them.
        let mut removed = false;
        for n in (1..state.after_zero).rev() {
            let path = segment_path(&self.shared.root, key, n);
            match self.shared.backend.kind(&path) {
                Ok(Some(_)) => {
                    tracing::warn!(path = %path.display(), "removing a segment replaced by a rewrite of its stream");
                    self.shared.maps.forget_segment(key, n);
                    self.shared
                        .backend
                        .remove_file(&path)
                        .map_err(|e| Error::io("remove segment", &path, e))?;
                    removed = true;
                }
                Ok(None) => break,
                Err(e) => return Err(Error::io("stat segment", &path, e)),
            }
        }
        // Trailing segments after the committed one hold nothing committed: remove them, newest
        // first, so that segment numbers stay dense even if this is interrupted.
        let mut trailing = Vec::new();
        let first_after = state.next_segment(segment);
        for n in std::iter::once(first_after).chain(first_after.saturating_add(1)..) {
            let path = segment_path(&self.shared.root, key, n);
            match self.shared.backend.kind(&path) {
                Ok(Some(_)) => trailing.push((n, path)),
                Ok(None) => break,
                Err(e) => return Err(Error::io("stat segment", &path, e)),
            }
        }
        for (n, path) in trailing.into_iter().rev() {
            removed = true;
            tracing::warn!(path = %path.display(), "removing a segment left by an unacknowledged batch");
            self.shared.maps.forget_segment(key, n);
            self.shared
                .backend
                .remove_file(&path)
                .map_err(|e| Error::io("remove segment", &path, e))?;
        }
        if removed {
            // Durability: the removals are durable before a new file may take one of the names.
            self.sync_fanout_dir(key)?;
        }
        let keys = self.load_keys(&meta, &state)?;
        let mut file = None;
        if create.is_none() {
            let path = segment_path(&self.shared.root, key, segment);
            let handle: Handle = Arc::from(
                self.shared
                    .backend
                    .open(&path, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open segment", &path, e))?,
            );
            let len = handle
                .len()
                .map_err(|e| Error::io("stat segment", &path, e))?;
            cut_durably(&*handle, &path, tail, len, "records")?;
            file = Some(handle);
        }
        Ok(WriterStream {
            version: state.version,
            changeset: state.changeset,
            segment,
            segment_first_version: first_version,
            header_bytes,
            tail,
            create,
            file,
            used: 0,
            after_zero: state.after_zero,
            closed: state.closed,
            deleted: state.deleted,
            keys,
            meta,
            packed,
        })
    }

    /// The current pack, at the first packed append of this writer (segment-format.md §19):
    /// the highest-numbered pack, with the bytes after its last committed record cut, durably,
    /// before anything is written over them (the reason of §9 holds for packs too).
    fn load_pack(&mut self) -> Result<()> {
        if self.pack.is_some() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let dir = shared.root.join(crate::layout::PACKS_DIR);
        let newest = match shared.backend.read_dir(&dir) {
            Ok(entries) => entries
                .iter()
                .filter_map(|(name, _)| crate::layout::parse_pack_file_name(name))
                .max(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("list packs", &dir, e)),
        };
        let Some(number) = newest else {
            // Before any table or pack exists: lookups read the tables from now on.
            shared.packs.mark_present();
            self.pack = Some(PackCursor {
                number: 0,
                end: PACK_RECORDS_START,
                create: true,
                handle: None,
            });
            return Ok(());
        };
        let path = crate::layout::pack_path(&shared.root, number);
        let handle: Handle = Arc::from(
            shared
                .backend
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open pack", &path, e))?,
        );
        let len = handle.len().map_err(|e| Error::io("stat pack", &path, e))?;
        let mut head = vec![0u8; PACK_RECORDS_START as usize];
        let n = crate::storage::read_full(&*handle, &mut head, 0)
            .map_err(|e| Error::io("read pack header", &path, e))?;
        let header = (n == head.len())
            .then(|| crate::format::pack::PackHeader::decode(&head).ok())
            .flatten();
        let Some(header) =
            header.filter(|h| h.pack == number && h.store_id == shared.manifest.store_id)
        else {
            // A torn creation holds nothing committed (its first record's entry would point
            // into it): it is written again from its header.
            tracing::warn!(path = %path.display(), "pack header of an unacknowledged creation; writing it again");
            self.pack = Some(PackCursor {
                number,
                end: PACK_RECORDS_START,
                create: true,
                handle: None,
            });
            return Ok(());
        };
        let _ = header;
        // From the flushed end (or the start), walk the records the index confirms.
        let flushed = crate::format::pack::decode_pack_end(
            &head[crate::format::pack::PACK_HEADER_BYTES..],
            number,
        )
        .ok()
        .flatten()
        .unwrap_or(PACK_RECORDS_START);
        let mapping = handle
            .map(len)
            .map_err(|e| Error::io("map pack", &path, e))?;
        let head_position = shared.head();
        let mut end = flushed.min(len);
        // The shared prefix only: a compact record may end the pack sooner than a §5 header.
        while end + RECORD_PREFIX_BYTES as u64 <= len {
            let Ok(r) = decode_record(&mapping[end as usize..]) else {
                break;
            };
            let confirmed = r.position <= head_position
                && matches!(shared.maps.index_entry(r.position)?, Ok(Some(e))
                    if e.flags & FLAG_PACKED != 0 && e.segment == number && u64::from(e.offset) == end);
            if !confirmed {
                break;
            }
            end += r.padded_bytes;
        }
        drop(mapping);
        cut_durably(&*handle, &path, end, len, "packed records")?;
        self.pack = Some(PackCursor {
            number,
            end,
            create: false,
            handle: Some(handle),
        });
        Ok(())
    }

    /// Where the next entry of fan-out `fanout`'s table goes: after its last live entry, the
    /// entries of unacknowledged batches after it cut, durably (segment-format.md §19).
    fn load_table(&mut self, fanout: u16) -> Result<()> {
        if self.tables.contains_key(&fanout) {
            return Ok(());
        }
        let cursor = match crate::packs::read_table(&self.shared, fanout)? {
            None => TableCursor {
                end: TABLE_HEADER_BYTES as u64,
                create: true,
            },
            Some(table) if table.end == 0 => TableCursor {
                end: TABLE_HEADER_BYTES as u64,
                create: true,
            },
            Some(table) => {
                let live_end = table
                    .entries()
                    .map(|(e, at)| at + e.entry_bytes() as u64)
                    .max()
                    .unwrap_or(TABLE_HEADER_BYTES as u64);
                let path = self.shared.table_path(fanout);
                let f = self
                    .shared
                    .backend
                    .open(&path, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open table", &path, e))?;
                let len = f.len().map_err(|e| Error::io("stat table", &path, e))?;
                cut_durably(&*f, &path, live_end, len, "table entries")?;
                TableCursor {
                    end: live_end,
                    create: false,
                }
            }
        };
        self.tables.insert(fanout, cursor);
        Ok(())
    }

    /// The writer's view of a stream's keys file: entries of unacknowledged batches cut, a
    /// stale file rebuilt from the stream (segment-format.md §15).
    fn load_keys(&self, meta: &Arc<StreamMeta>, state: &StreamState) -> Result<WriterKeys> {
        let path = keys_path(&self.shared.root, meta.key);
        match crate::keys::load(&self.shared, meta.key, state)? {
            Loaded::Missing => Ok(WriterKeys::none()),
            Loaded::Fresh { map, end, len } => {
                if len > end {
                    let f = self
                        .shared
                        .backend
                        .open(&path, OpenMode::ReadWrite)
                        .map_err(|e| Error::io("open keys file", &path, e))?;
                    cut_durably(&*f, &path, end, len, "key entries")?;
                }
                Ok(WriterKeys {
                    map,
                    len: end,
                    exists: true,
                })
            }
            Loaded::Stale(why) => {
                tracing::warn!(path = %path.display(), %why, "rebuilding a stale keys file from its stream");
                let entries = crate::keys::scan(&self.shared, meta, state)?.ok_or_else(|| {
                    Error::corrupt(
                        &path,
                        0,
                        "stream rewritten while the writer rebuilt its keys",
                    )
                })?;
                let len =
                    crate::keys::write_file(&self.shared, meta.key, state.base_position, &entries)?;
                // Durability: the rebuilt file's name is durable before entries are appended.
                let dir = fanout_dir(&self.shared.root, meta.key.hash);
                self.shared
                    .backend
                    .sync_dir(&dir)
                    .map_err(|e| Error::io("fsync directory", &dir, e))?;
                Ok(WriterKeys {
                    map: crate::keys::newest(entries),
                    len: len.max(KEYS_HEADER_BYTES as u64),
                    exists: len > 0,
                })
            }
        }
    }

    /// Plan one request (segment-format.md §7 step 2, §14): check every part, then, when all
    /// pass, assign versions, changesets and positions part after part.
    fn plan(
        &mut self,
        request: &AppendRequest,
        timestamp_us: u64,
        planning: &mut Planning,
    ) -> Result<PlanOutcome> {
        let shared = Arc::clone(&self.shared);
        // Pass 1: load every part's stream and check it; nothing is assigned yet.
        let mut retries: Vec<Option<AppendResult>> = Vec::with_capacity(request.parts.len());
        let mut plans: Vec<PartPlan> = Vec::with_capacity(request.parts.len());
        let mut mismatch: Option<Error> = None;
        for part in &request.parts {
            let Some(ws) = self.stream(&part.stream)? else {
                return Ok(PlanOutcome::Defer);
            };
            let current = ws.version;
            let exists = current > 0;
            if ws.deleted {
                return Ok(PlanOutcome::Done(Err(Error::StreamDeleted {
                    stream: part.stream.to_string(),
                })));
            }
            if request.close {
                if !exists {
                    return Ok(PlanOutcome::Done(Err(Error::StreamNotFound {
                        stream: part.stream.to_string(),
                    })));
                }
                if ws.closed {
                    // Closing twice is a no-op.
                    return Ok(PlanOutcome::Done(Ok(vec![AppendResult {
                        first_version: current,
                        last_version: current,
                        changeset: ws.changeset,
                        first_position: Position(0),
                        last_position: Position(0),
                        duplicates: 0,
                    }])));
                }
            } else if ws.closed {
                return Ok(PlanOutcome::Done(Err(Error::StreamClosed {
                    stream: part.stream.to_string(),
                })));
            }
            if let Some(target) = request.invalidate {
                if !exists {
                    return Ok(PlanOutcome::Done(Err(Error::StreamNotFound {
                        stream: part.stream.to_string(),
                    })));
                }
                let meta = Arc::clone(&ws.meta);
                if let Some(outcome) =
                    self.check_invalidation(&meta, target, &part.stream, planning)?
                {
                    return Ok(outcome);
                }
            }
            let Some(ws) = self.streams.get_mut(&part.stream) else {
                return Ok(PlanOutcome::Defer);
            };
            let expected_ok = match part.expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => !exists,
                ExpectedVersion::StreamExists => exists,
                ExpectedVersion::Exact(v) => v == current,
                ExpectedVersion::LastChangeset(c) => c == ws.changeset,
            };
            plans.push(plan_keys(&shared, ws, part));
            if expected_ok {
                retries.push(None);
                continue;
            }
            let (meta, changeset) = (Arc::clone(&ws.meta), ws.changeset);
            let retry = retry_result(&shared, &meta, part, current, changeset)?;
            if retry.is_none() && mismatch.is_none() {
                mismatch = Some(Error::WrongExpectedVersion {
                    stream: part.stream.to_string(),
                    expected: part.expected,
                    actual: exists.then_some(current),
                    actual_changeset: changeset,
                });
            }
            retries.push(retry);
        }
        if let Some(e) = mismatch {
            return Ok(PlanOutcome::Done(Err(e)));
        }
        if retries.iter().all(Option::is_some) {
            // Every part is already stored with these event ids: the original results.
            return Ok(PlanOutcome::Done(Ok(retries
                .into_iter()
                .flatten()
                .collect())));
        }
        if retries.iter().any(Option::is_some) {
            // Some parts would commit now, others were committed before: not a retry of one
            // all-or-none commit.
            let i = retries.iter().position(Option::is_some).unwrap_or(0);
            let part = &request.parts[i];
            let ws = self.streams.get(&part.stream);
            return Ok(PlanOutcome::Done(Err(Error::WrongExpectedVersion {
                stream: part.stream.to_string(),
                expected: part.expected,
                actual: ws.map(|w| w.version).filter(|v| *v > 0),
                actual_changeset: ws.map_or(0, |w| w.changeset),
            })));
        }
        if !request.close && plans.iter().all(|p| p.all_dropped.is_some()) {
            // Every event is a duplicate of the newest of its key: nothing to write.
            return Ok(PlanOutcome::Done(Ok(plans
                .into_iter()
                .filter_map(|p| p.all_dropped)
                .collect())));
        }
        // Packed streams need the current pack, and new ones their fan-out's table, loaded
        // (their unacknowledged tails cut) before anything is assigned (segment-format.md §19).
        for part in &request.parts {
            let packed = self.streams.get(&part.stream).and_then(|w| {
                w.packed.map(|p| {
                    (
                        self.shared.table_of(w.meta.key.hash),
                        p.entry_offset.is_none(),
                    )
                })
            });
            if let Some((fanout, new)) = packed {
                self.load_pack()?;
                if new {
                    self.load_table(fanout)?;
                }
            }
        }
        // Pass 2: every part passed; assign and encode. The last part that writes anything
        // ends the atomic unit.
        let last_written = plans
            .iter()
            .rposition(|p| p.all_dropped.is_none())
            .unwrap_or(0);
        let mut results = Vec::with_capacity(request.parts.len());
        for (i, (part, plan)) in request.parts.iter().zip(plans).enumerate() {
            let result = match plan.all_dropped {
                Some(r) if !request.close => r,
                _ if request.invalidate.is_some() => self.encode_invalidation(
                    part,
                    &plan,
                    request.invalidate.unwrap_or(0),
                    timestamp_us,
                    planning,
                ),
                _ => self.encode_part(
                    part,
                    &plan,
                    request.close,
                    i < last_written,
                    timestamp_us,
                    planning,
                ),
            };
            results.push(result);
        }
        Ok(PlanOutcome::Planned(results))
    }

    /// Whether `target` can be invalidated now: `Some` with the answer when it cannot (or was
    /// already), `None` when it can (segment-format.md §16).
    fn check_invalidation(
        &self,
        meta: &Arc<StreamMeta>,
        target: u64,
        stream: &str,
        planning: &Planning,
    ) -> Result<Option<PlanOutcome>> {
        let invalid = |reason: String| {
            Ok(Some(PlanOutcome::Done(Err(Error::InvalidAppend {
                reason,
            }))))
        };
        let published = meta.snapshot().changeset;
        let planned = self.streams.get(stream).map_or(published, |w| w.changeset);
        if target == 0 || target > planned {
            return invalid(format!("stream {stream:?} has no changeset {target}"));
        }
        let key = meta.key;
        let in_batch = planning.invalidations.iter().any(|r| {
            r.stream_hash == key.hash && r.collision == key.collision && r.covers_version == target
        });
        if target > published || in_batch {
            // Planned in this batch (the changeset, or its invalidation): answer once that is
            // published.
            return Ok(Some(PlanOutcome::Defer));
        }
        let invalidations = self.shared.removals.invalidations(&self.shared)?;
        if let Some(position) = invalidations.get(&meta.key).and_then(|m| m.get(&target)) {
            // Invalidated before: the first invalidation's result (a retry after a lost reply).
            let event = AllIter::new(
                Arc::clone(&self.shared),
                Position(*position),
                Direction::Forward,
            )
            .next()
            .transpose()?
            .filter(|e| e.position().get() == *position && e.invalidates() == Some(target))
            .ok_or_else(|| {
                Error::corrupt(
                    &self.shared.root,
                    0,
                    format!("invalidation event at position {position} is missing"),
                )
            })?;
            return Ok(Some(PlanOutcome::Done(Ok(vec![AppendResult {
                first_version: event.version(),
                last_version: event.version(),
                changeset: event.changeset(),
                first_position: event.position(),
                last_position: event.position(),
                duplicates: 0,
            }]))));
        }
        match ChangesetIter::new(&self.shared, meta, target)?
            .next()
            .transpose()?
        {
            Some(c) if c.number() == target && c.events()[0].invalidates().is_none() => Ok(None),
            Some(c) if c.number() == target => invalid(format!(
                "changeset {target} of {stream:?} is an invalidation itself"
            )),
            _ => invalid(format!(
                "changeset {target} of {stream:?} was removed by a snapshot or a truncation"
            )),
        }
    }

    /// Encode an invalidation event and its `REMOVALS` record (segment-format.md §16).
    fn encode_invalidation(
        &mut self,
        part: &Part,
        plan: &PartPlan,
        target: u64,
        timestamp_us: u64,
        planning: &mut Planning,
    ) -> AppendResult {
        // The request's one event (type `$invalidate`, the reason as data) is encoded like any
        // other but for its control block.
        debug_assert!(part.events.len() == 1 && part.events[0].event_type == INVALIDATE_EVENT_TYPE);
        let result = self.encode_part_with(
            part,
            plan,
            false,
            false,
            timestamp_us,
            planning,
            Some(Control {
                op: CONTROL_OP_INVALIDATE,
                flags: 0,
                next_segment: 0,
                covers_version: 0,
                covers_position: 0,
                target_changeset: target,
            }),
        );
        let key = self
            .streams
            .get(&part.stream)
            .expect("pass 1 loaded every part's stream and nothing evicts within a batch")
            .meta
            .key;
        planning.invalidations.push(Removal {
            kind: REMOVAL_KIND_INVALIDATE,
            stream_hash: key.hash,
            collision: key.collision,
            covers_version: target,
            covers_position: result.first_position.get(),
            created_us: timestamp_us,
        });
        result
    }

    /// Encode one checked part of a request behind its stream's tail.
    fn encode_part(
        &mut self,
        part: &Part,
        plan: &PartPlan,
        close: bool,
        linked: bool,
        timestamp_us: u64,
        planning: &mut Planning,
    ) -> AppendResult {
        self.encode_part_with(part, plan, close, linked, timestamp_us, planning, None)
    }

    /// Encode one checked part of a request behind its stream's tail.
    #[allow(clippy::too_many_arguments)]
    fn encode_part_with(
        &mut self,
        part: &Part,
        plan: &PartPlan,
        close: bool,
        linked: bool,
        timestamp_us: u64,
        planning: &mut Planning,
        control: Option<Control>,
    ) -> AppendResult {
        let store_id = self.shared.manifest.store_id;
        let segment_bytes = self.shared.options.segment_bytes;
        let ws = self
            .streams
            .get_mut(&part.stream)
            .expect("pass 1 loaded every part's stream and nothing evicts within a batch");
        let current = ws.version;
        let kept: Vec<(usize, &EventData)> = part
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| plan.keep[*i])
            .collect();
        let n = kept.len() as u64;
        let duplicates = u32::try_from(part.events.len() - kept.len()).unwrap_or(u32::MAX);
        let changeset_after = if close {
            ws.changeset.max(1)
        } else {
            ws.changeset + 1
        };
        // One close record, or the kept events.
        let count = if close { 1 } else { kept.len() };
        let first_position = planning.next_position;
        // Record `i` of the append in a pack behind the stream's last packed position `last`:
        // what is encoded, and what the pack's slot is sized by (the varint header's size
        // depends on the numbers, segment-format.md §19).
        let packed_fields = |i: usize, last: u64| {
            let position = first_position + i as u64;
            let prev = if i == 0 { last } else { position - 1 };
            let event = (!close).then(|| kept[i].1);
            match event {
                None => close_record(current, position, changeset_after, timestamp_us, Some(prev)),
                Some(event) => {
                    let mut flags = 0;
                    if i == 0 {
                        flags |= RECORD_FLAG_BEGIN;
                    }
                    if i + 1 == count {
                        flags |= RECORD_FLAG_END;
                    }
                    RecordFields {
                        flags,
                        version: current + 1 + i as u64,
                        position,
                        changeset: changeset_after,
                        timestamp_us,
                        event_id: event.id,
                        event_type: event.event_type.as_bytes(),
                        key: &[],
                        commit_metadata: if i == 0 { &part.commit_metadata } else { &[] },
                        metadata: &event.metadata,
                        data: &event.data,
                        control: None,
                        prev_position: Some(prev),
                    }
                }
            }
        };
        // The bytes the append takes in a segment, and in a pack (when the stream is packed).
        let append_bytes = if close {
            CLOSE_RECORD_BYTES
        } else {
            kept.iter()
                .enumerate()
                .map(|(i, (_, e))| {
                    let commit = if i == 0 {
                        part.commit_metadata.len()
                    } else {
                        0
                    };
                    record_bytes_padded(e.size() + commit)
                })
                .sum()
        };
        let packed_bytes = ws.packed.map_or(0, |p| {
            (0..count)
                .map(|i| packed_record_bytes(&packed_fields(i, p.last)))
                .sum::<u64>()
        });
        // A packed stream stays packed while its packed records total at most
        // `pack_stream_bytes`; keyed events and invalidations take it out of the pack, since
        // they belong with files of its own. (The varint header of format 7 holds any
        // number: nothing else can push a stream out.)
        let pack_limit = self.shared.options.pack_stream_bytes;
        let into_pack = control.is_none()
            && kept.iter().all(|(_, e)| e.key.is_empty())
            && ws
                .packed
                .is_some_and(|p| p.bytes + packed_bytes <= pack_limit);
        if !into_pack && ws.packed.is_some() {
            // Out of the pack for good: this append opens the stream's own segment 0, which
            // continues the packed prefix.
            ws.packed = None;
            ws.segment = 0;
            ws.segment_first_version = current + 1;
            ws.tail = ws.header_bytes;
        }
        if into_pack {
            let key = ws.meta.key;
            let mut tail = ws.packed.expect("checked above");
            let cursor = self
                .pack
                .as_mut()
                .expect("pass 1 loads the pack for a packed stream");
            let slot = pack_slot(cursor, planning, packed_bytes, store_id, timestamp_us);
            let slot_start = cursor.end;
            let entry_offset = match tail.entry_offset {
                Some(at) => at,
                None => {
                    let fanout = self.shared.table_of(key.hash);
                    let table = self
                        .tables
                        .get_mut(&fanout)
                        .expect("pass 1 loads the table of a new packed stream");
                    let table_entry = crate::format::pack::TableEntry {
                        stream_hash: key.hash,
                        collision: key.collision,
                        first_position: planning.next_position,
                        stream_id: Arc::clone(&part.stream),
                        last_position: None,
                    };
                    let entry = table_entry.encode();
                    planning
                        .new_entries
                        .entry(fanout)
                        .or_default()
                        .push((table_entry, table.end));
                    let t = match planning
                        .table_writes
                        .iter()
                        .position(|w| w.number == u32::from(fanout))
                    {
                        Some(t) => t,
                        None => {
                            let create = table.create.then(|| {
                                crate::format::pack::encode_table_header(
                                    store_id,
                                    u32::from(fanout),
                                )
                                .to_vec()
                            });
                            table.create = false;
                            planning.table_writes.push(FileWrite {
                                number: u32::from(fanout),
                                offset: table.end,
                                create,
                                bytes: Vec::new(),
                            });
                            planning.table_writes.len() - 1
                        }
                    };
                    let at = table.end;
                    table.end += entry.len() as u64;
                    planning.table_writes[t].bytes.extend_from_slice(&entry);
                    at
                }
            };
            tail.entry_offset = Some(entry_offset);
            let pack_number = cursor.number;
            let linked_flag = if linked { FLAG_LINKED } else { 0 };
            let changeset = changeset_after;
            for i in 0..count {
                let last = i + 1 == count;
                let position = planning.next_position;
                let offset = cursor.end;
                let bytes = &mut planning.pack_writes[slot].bytes;
                let before = bytes.len();
                let fields = packed_fields(i, tail.last);
                debug_assert_eq!(fields.position, position);
                let flags = fields.flags;
                encode_record(&fields, bytes);
                let written = (bytes.len() - before) as u64;
                cursor.end += written;
                tail.bytes += written;
                tail.last = position;
                let entry = IndexEntry {
                    stream_hash: key.hash,
                    collision: key.collision,
                    segment: pack_number,
                    offset: u32::try_from(offset).expect("a pack stays below 4 GiB"),
                    flags: flags
                        | FLAG_PACKED
                        | if close { FLAG_CONTROL } else { 0 }
                        | if last { linked_flag } else { 0 },
                };
                planning
                    .index_bytes
                    .extend_from_slice(&entry.encode(position));
                planning.next_position += 1;
            }
            debug_assert!(tail.bytes <= pack_limit);
            assert_eq!(
                cursor.end - slot_start,
                packed_bytes,
                "the records take the bytes planned for them"
            );
            planning.packed.insert(
                key,
                crate::catalog::PackedState {
                    last: tail.last,
                    bytes: tail.bytes,
                    version: if close { current } else { current + n },
                    entry_offset,
                },
            );
            ws.packed = Some(tail);
            if close {
                ws.closed = true;
                return close_result(current, ws.changeset, first_position);
            }
            ws.version = current + n;
            ws.changeset = changeset;
            return AppendResult {
                first_version: current + 1,
                last_version: current + n,
                changeset,
                first_position: Position(first_position),
                last_position: Position(planning.next_position - 1),
                duplicates,
            };
        }
        // An append goes into one segment: roll when it does not fit behind the tail.
        if ws.tail + append_bytes > segment_bytes && ws.tail > ws.header_bytes {
            ws.segment = if ws.segment == 0 {
                ws.after_zero
            } else {
                ws.segment + 1
            };
            ws.segment_first_version = current + 1;
            ws.tail = ws.header_bytes;
            ws.create = Some(CreateKind::New);
            ws.file = None;
        }
        assert!(
            ws.tail + append_bytes <= segment_bytes,
            "append size checked before queueing"
        );
        let key = ws.meta.key;
        let writes = &mut planning.writes;
        let slot = *planning
            .write_of
            .entry((key, ws.segment))
            .or_insert_with(|| {
                let create = ws.create.take().map(|kind| {
                    let header = SegmentHeader {
                        store_id,
                        stream_hash: key.hash,
                        collision: key.collision,
                        segment: ws.segment,
                        first_version: ws.segment_first_version,
                        created_us: timestamp_us,
                        stream_id: part.stream.to_string(),
                    };
                    (kind, header.encode())
                });
                writes.push(SegmentWrite {
                    key,
                    segment: ws.segment,
                    stream: Arc::clone(&part.stream),
                    offset: ws.tail,
                    create,
                    bytes: Vec::new(),
                });
                writes.len() - 1
            });
        let write = &mut planning.writes[slot];
        let linked_flag = if linked { FLAG_LINKED } else { 0 };
        if close {
            // A control record: a position of its own, the version of the event before it.
            let position = planning.next_position;
            let offset = ws.tail;
            let before = write.bytes.len();
            encode_record(
                &close_record(current, position, ws.changeset.max(1), timestamp_us, None),
                &mut write.bytes,
            );
            debug_assert_eq!((write.bytes.len() - before) as u64, CLOSE_RECORD_BYTES);
            ws.tail += (write.bytes.len() - before) as u64;
            let entry = IndexEntry {
                stream_hash: key.hash,
                collision: key.collision,
                segment: ws.segment,
                offset: u32::try_from(offset).expect("segment_bytes fits in u32"),
                flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END | FLAG_CONTROL | linked_flag,
            };
            planning
                .index_bytes
                .extend_from_slice(&entry.encode(position));
            planning.next_position += 1;
            ws.closed = true;
            return close_result(current, ws.changeset, position);
        }
        let changeset = ws.changeset + 1;
        let first_position = planning.next_position;
        let mut key_bytes = Vec::new();
        for (i, (original, event)) in kept.iter().enumerate() {
            let mut flags = 0;
            if i == 0 {
                flags |= RECORD_FLAG_BEGIN;
            }
            let last = i + 1 == kept.len();
            if last {
                flags |= RECORD_FLAG_END;
            }
            let position = planning.next_position;
            let version = current + 1 + i as u64;
            let offset = ws.tail;
            let before = write.bytes.len();
            encode_record(
                &RecordFields {
                    flags,
                    version,
                    position,
                    changeset,
                    timestamp_us,
                    event_id: event.id,
                    event_type: event.event_type.as_bytes(),
                    key: &event.key,
                    commit_metadata: if i == 0 { &part.commit_metadata } else { &[] },
                    metadata: &event.metadata,
                    data: &event.data,
                    control,
                    prev_position: None,
                },
                &mut write.bytes,
            );
            ws.tail += (write.bytes.len() - before) as u64;
            let offset = u32::try_from(offset).expect("segment_bytes fits in u32");
            let entry = IndexEntry {
                stream_hash: key.hash,
                collision: key.collision,
                segment: ws.segment,
                offset,
                flags: flags | if last { linked_flag } else { 0 },
            };
            planning
                .index_bytes
                .extend_from_slice(&entry.encode(position));
            planning.next_position += 1;
            if let Some(hash) = plan.hashes[*original] {
                let entry = KeyEntry {
                    key: event.key.clone(),
                    version,
                    position,
                    changeset,
                    segment: ws.segment,
                    offset,
                    content_hash: hash,
                };
                entry.encode(&mut key_bytes);
                ws.keys.map.insert(event.key.clone(), entry);
            }
        }
        if !key_bytes.is_empty() {
            let keys_writes = &mut planning.keys_writes;
            let k = *planning.keys_of.entry(key).or_insert_with(|| {
                let base_position = ws
                    .meta
                    .state
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .base_position;
                keys_writes.push(KeysWrite {
                    key,
                    offset: ws.keys.len,
                    create: (!ws.keys.exists).then_some(base_position),
                    bytes: Vec::new(),
                });
                keys_writes.len() - 1
            });
            ws.keys.len += key_bytes.len() as u64;
            ws.keys.exists = true;
            planning.keys_writes[k].bytes.extend_from_slice(&key_bytes);
        }
        ws.version = current + n;
        ws.changeset = changeset;
        AppendResult {
            first_version: current + 1,
            last_version: current + n,
            changeset,
            first_position: Position(first_position),
            last_position: Position(planning.next_position - 1),
            duplicates,
        }
    }

    /// Steps 3 and 4 of the commit protocol.
    fn write_and_sync(
        &mut self,
        first_position: u64,
        last_position: u64,
        planning: Planning,
        acks: &[Arc<Entry>],
    ) -> Result<Vec<AckWritten>> {
        let Planning {
            index_bytes,
            writes,
            keys_writes,
            invalidations,
            pack_writes,
            table_writes,
            packed,
            ..
        } = planning;
        let root = self.shared.root.clone();
        let backend = Arc::clone(&self.shared.backend);
        let fdatasync = self.shared.options.sync == SyncMode::Fdatasync;
        let mut to_sync: Vec<(Handle, PathBuf)> = Vec::new();
        let mut dirs_to_sync: BTreeSet<PathBuf> = BTreeSet::new();
        // Under the journal, every write below is also added to the batch's frame, unless the
        // batch carries what the journal does not hold (subscription acks, `REMOVALS` records):
        // such a batch is synced in place. What planning changed outside any frame (cuts of
        // what unacknowledged batches left) is durable already (`repair`).
        let mut frame = (self.journal.is_some() && acks.is_empty() && invalidations.is_empty())
            .then(FrameBuilder::new);
        // Open descriptors stay within the cache bound, even in a batch that touches more
        // streams than that (fault-matrix row 16).
        let open_max = self.shared.options.open_files_max;
        for w in writes {
            let path = segment_path(&root, w.key, w.segment);
            let ws = self
                .streams
                .get(&w.stream)
                .expect("a planned stream stays cached until its batch is published");
            let reuse = match (&w.create, &ws.file) {
                (None, Some(f)) if ws.segment == w.segment => Some(Arc::clone(f)),
                _ => None,
            };
            let handle: Handle = match reuse {
                Some(h) => h,
                None => {
                    let handle = self.with_descriptor(|| match &w.create {
                        None => backend
                            .open(&path, OpenMode::ReadWrite)
                            .map(Arc::from)
                            .map_err(|e| Error::io("open segment", &path, e)),
                        Some((kind, _)) => {
                            let dir = fanout_dir(&root, w.key.hash);
                            create_segment(&*backend, &path, &dir, *kind, &mut dirs_to_sync, &root)
                        }
                    })?;
                    if let Some((_, header)) = &w.create {
                        self.shared.maps.forget_segment(w.key, w.segment);
                        handle
                            .write_all_at(header, 0)
                            .map_err(|e| Error::io("write segment header", &path, e))?;
                        if let Some(f) = &mut frame {
                            f.create(segment_target(w.key, w.segment));
                            f.write(segment_target(w.key, w.segment), 0, header);
                        }
                    }
                    let ws = self
                        .streams
                        .get_mut(&w.stream)
                        .expect("a planned stream stays cached until its batch is published");
                    if ws.segment == w.segment && self.open_files < open_max {
                        ws.file = Some(Arc::clone(&handle));
                        self.open_files += 1;
                    }
                    handle
                }
            };
            handle
                .write_all_at(&w.bytes, w.offset)
                .map_err(|e| Error::io("write segment", &path, e))?;
            if let Some(f) = &mut frame {
                f.write(segment_target(w.key, w.segment), w.offset, &w.bytes);
            }
            if fdatasync {
                to_sync.push((handle, path));
                if to_sync.len() >= open_max / 2 {
                    // Sync early rather than hold more descriptors: still before any answer.
                    for (handle, path) in to_sync.drain(..) {
                        handle
                            .sync_data()
                            .map_err(|e| Error::io("fdatasync", &path, e))?;
                    }
                }
            }
        }
        // Key entries (segment-format.md §15), after the segments: a new stream's fan-out
        // folder exists by now.
        for w in keys_writes {
            let path = keys_path(&root, w.key);
            let handle: Handle = if let Some(base_position) = w.create {
                let h = self.with_descriptor(|| {
                    match backend.open(&path, OpenMode::CreateNew) {
                        Ok(h) => Ok(Arc::from(h)),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            // Left by an unacknowledged batch: start it over.
                            let h: Handle = Arc::from(
                                backend
                                    .open(&path, OpenMode::ReadWrite)
                                    .map_err(|e| Error::io("open keys file", &path, e))?,
                            );
                            h.set_len(0)
                                .map_err(|e| Error::io("cut keys file", &path, e))?;
                            Ok(h)
                        }
                        Err(e) => Err(Error::io("create keys file", &path, e)),
                    }
                })?;
                let header = crate::keys::header(&self.shared, w.key, base_position, false);
                h.write_all_at(&header, 0)
                    .map_err(|e| Error::io("write keys file", &path, e))?;
                if let Some(f) = &mut frame {
                    f.create(keys_target(w.key));
                    f.write(keys_target(w.key), 0, &header);
                }
                dirs_to_sync.insert(fanout_dir(&root, w.key.hash));
                h
            } else {
                self.with_descriptor(|| {
                    backend
                        .open(&path, OpenMode::ReadWrite)
                        .map(Arc::from)
                        .map_err(|e| Error::io("open keys file", &path, e))
                })?
            };
            handle
                .write_all_at(&w.bytes, w.offset)
                .map_err(|e| Error::io("write keys file", &path, e))?;
            if let Some(f) = &mut frame {
                f.write(keys_target(w.key), w.offset, &w.bytes);
            }
            if fdatasync {
                to_sync.push((handle, path));
            }
        }
        // Packed records and new table entries (segment-format.md §19); only under the journal.
        for w in &pack_writes {
            let path = crate::layout::pack_path(&root, w.number);
            let cursor = self
                .pack
                .as_mut()
                .expect("a pack write comes from the pack cursor");
            let reuse = (cursor.number == w.number && w.create.is_none())
                .then(|| cursor.handle.clone())
                .flatten();
            let handle: Handle = match reuse {
                Some(h) => h,
                None => {
                    let h = open_or_create(&*backend, &path, w.create.is_some(), &root)?;
                    if cursor.number == w.number {
                        cursor.handle = Some(Arc::clone(&h));
                    }
                    h
                }
            };
            write_file(
                &*handle,
                &path,
                Target::Pack { pack: w.number },
                w,
                &mut frame,
            )?;
        }
        for w in &table_writes {
            let number = u16::try_from(w.number).expect("table numbers are at most 12 bits");
            let path = self.shared.table_path(number);
            let handle = open_or_create(&*backend, &path, w.create.is_some(), &root)?;
            write_file(&*handle, &path, Target::Table { number }, w, &mut frame)?;
        }
        // Invalidation records ride the batch's sync (segment-format.md §16).
        if let Some(f) = self
            .shared
            .removals
            .write_in_batch(&self.shared, &invalidations)?
        {
            if fdatasync {
                to_sync.push((f, root.join(crate::layout::REMOVALS_FILE)));
            }
        }
        // Index entries, split at index file boundaries.
        let per_file = self.shared.manifest.index_entries_per_file;
        let mut position = first_position;
        let mut done = 0usize;
        while position <= last_position {
            let (file_number, offset) = locate(position, per_file);
            let room = per_file - (offset - INDEX_HEADER_BYTES) / INDEX_ENTRY_BYTES;
            let count = room.min(last_position - position + 1);
            let bytes = &index_bytes[done..done + (count * INDEX_ENTRY_BYTES) as usize];
            let handle = self.index_file(file_number, &mut dirs_to_sync, &mut frame)?;
            let path = index_path(&root, file_number);
            handle
                .write_all_at(bytes, offset)
                .map_err(|e| Error::io("write index", &path, e))?;
            if let Some(f) = &mut frame {
                f.write(Target::Index { file_number }, offset, bytes);
            }
            if fdatasync {
                to_sync.push((handle, path));
            }
            done += bytes.len();
            position += count;
        }
        // Subscription checkpoints ride the same sync (segment-format.md §11).
        let mut written = Vec::with_capacity(acks.len());
        for entry in acks {
            if let Some((acked, handle)) = entry.write_pending(&self.shared)? {
                if fdatasync {
                    to_sync.push((handle, entry.path().to_path_buf()));
                }
                written.push((Arc::clone(entry), acked));
            }
        }
        if self.journal.is_some() {
            let ends: Vec<(u32, u64)> = pack_writes
                .iter()
                .map(|w| (w.number, w.offset + w.bytes.len() as u64))
                .collect();
            self.sync_under_journal(frame, first_position, last_position, &(&packed, &ends[..]))?;
            return Ok(written);
        }
        // The checkpoint claims the head of the previous, completed sync: true even if this
        // sync tears (segment-format.md §3).
        let checkpoint_due = self.head >= self.checkpoint_head + CHECKPOINT_INTERVAL_POSITIONS;
        if checkpoint_due {
            self.write_checkpoint(self.head, false)?;
            if fdatasync {
                to_sync.push((
                    Arc::clone(&self.checkpoint_file),
                    root.join(CHECKPOINT_FILE),
                ));
            }
        }
        crate::killpoint::reached("batch-written");
        // Durability: nothing of this batch is acknowledged before this sync returns.
        if fdatasync {
            for (handle, path) in &to_sync {
                handle
                    .sync_data()
                    .map_err(|e| Error::io("fdatasync", path, e))?;
            }
            // Durability: a new file's directory entry must be durable before the first
            // acknowledgement of anything in it.
            for dir in &dirs_to_sync {
                backend
                    .sync_dir(dir)
                    .map_err(|e| Error::io("fsync directory", dir, e))?;
            }
        } else {
            // One descriptor kept open for the purpose: no open and close per batch.
            self.checkpoint_file
                .sync_fs()
                .map_err(|e| Error::io("syncfs", &root, e))?;
        }
        Ok(written)
    }

    /// Step 4 under `SyncMode::Journal` (segment-format.md §18): the batch's frame is written
    /// to the journal and the journal alone is synced. A batch without a frame, or whose frame
    /// the journal cannot hold, is synced in place by one `syncfs`, followed by a checkpoint
    /// naming it (a flush).
    fn sync_under_journal(
        &mut self,
        frame: Option<FrameBuilder>,
        first_position: u64,
        last_position: u64,
        packed: &BatchPackFields<'_>,
    ) -> Result<()> {
        let store_id = self.shared.manifest.store_id;
        if let Some(frame) = frame {
            let journal = self
                .journal
                .as_ref()
                .expect("a frame is built under the journal");
            if journal.can_hold(frame.len()) {
                if !journal.fits(frame.len()) {
                    // Full: flush what the frames cover, start over (this batch's own writes
                    // stay covered by its frame).
                    self.sync_checkpoint(false)?;
                }
                let journal = self.journal.as_mut().expect("checked above");
                let sealed =
                    frame.finish(store_id, journal.sequence(), first_position, last_position);
                return journal.append(&sealed);
            }
        }
        crate::killpoint::reached("batch-written");
        // The checkpoint below claims this batch: its packs' fields go in place with the
        // others' (segment-format.md §19), recovery will not derive them again.
        let written = self.write_pack_fields(Some(packed))?;
        // Durability: this batch, and every file the journal covers, in place.
        self.checkpoint_file
            .sync_fs()
            .map_err(|e| Error::io("syncfs", &self.shared.root, e))?;
        self.synced_checkpoint(last_position, false)?;
        self.shared.packs.flushed(self.shared.tables(), &written);
        self.give_back_dead(last_position);
        Ok(())
    }

    /// Write the packs' in-place fields (segment-format.md §19) that batches published since
    /// the last flush changed, and those of `batch` (one synced in place, which the coming
    /// checkpoint claims), before a flush's `syncfs`. Returns what it wrote, for
    /// `Packs::flushed` once the checkpoint is durable.
    fn write_pack_fields(
        &self,
        batch: Option<&BatchPackFields<'_>>,
    ) -> Result<crate::packs::Dirty> {
        let mut dirty = self.shared.packs.dirty();
        if let Some((packed, ends)) = batch {
            for (key, p) in packed.iter() {
                dirty.last.insert(*key, (p.last, p.entry_offset));
            }
            for (pack, end) in ends.iter() {
                let e = dirty.ends.entry(*pack).or_insert(*end);
                *e = (*e).max(*end);
            }
        }
        let root = &self.shared.root;
        let backend = &self.shared.backend;
        let mut tables: HashMap<u16, Box<dyn FileHandle>> = HashMap::new();
        for (key, (last, entry_offset)) in &dirty.last {
            let number = self.shared.table_of(key.hash);
            let path = self.shared.table_path(number);
            let handle = match tables.entry(number) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(
                    backend
                        .open(&path, OpenMode::ReadWrite)
                        .map_err(|e| Error::io("open table", &path, e))?,
                ),
            };
            let mut stream_key = [0u8; 10];
            stream_key[..8].copy_from_slice(&key.hash.to_le_bytes());
            stream_key[8..].copy_from_slice(&key.collision.to_le_bytes());
            let slot = crate::format::pack::encode_table_last(&stream_key, *last);
            handle
                .write_all_at(
                    &slot,
                    entry_offset + crate::format::pack::TABLE_LAST_OFFSET as u64,
                )
                .map_err(|e| Error::io("write table slot", &path, e))?;
        }
        for (pack, end) in &dirty.ends {
            let path = crate::layout::pack_path(root, *pack);
            let handle = backend
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open pack", &path, e))?;
            handle
                .write_all_at(
                    &crate::format::pack::encode_pack_end(*pack, *end),
                    crate::format::pack::PACK_HEADER_BYTES as u64,
                )
                .map_err(|e| Error::io("write pack end", &path, e))?;
        }
        Ok(dirty)
    }

    fn close_cached_files(&mut self) {
        tracing::warn!("out of file descriptors: closing the cached segment files");
        for s in self.streams.values_mut() {
            s.file = None;
        }
        self.open_files = 0;
    }

    /// Run `open`; when the process is out of file descriptors, close every cached segment
    /// file and run it once more.
    fn with_descriptor(&mut self, mut open: impl FnMut() -> Result<Handle>) -> Result<Handle> {
        match open() {
            Err(Error::Io { source, .. }) if crate::storage::real::out_of_descriptors(&source) => {
                self.close_cached_files();
                open()
            }
            other => other,
        }
    }

    fn index_file(
        &mut self,
        file_number: u64,
        dirs_to_sync: &mut BTreeSet<PathBuf>,
        frame: &mut Option<FrameBuilder>,
    ) -> Result<Handle> {
        if let Some(h) = self.index_files.get(&file_number) {
            return Ok(Arc::clone(h));
        }
        let path = index_path(&self.shared.root, file_number);
        let backend = &self.shared.backend;
        let handle: Handle = match backend.open(&path, OpenMode::ReadWrite) {
            Ok(h) => Arc::from(h),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let per_file = self.shared.manifest.index_entries_per_file;
                let h: Handle = Arc::from(
                    backend
                        .open(&path, OpenMode::CreateNew)
                        .map_err(|e| Error::io("create index file", &path, e))?,
                );
                let header = IndexHeader {
                    store_id: self.shared.manifest.store_id,
                    file_number,
                    first_position: file_number * per_file + 1,
                    capacity: per_file,
                    sparse: false,
                };
                h.write_all_at(&header.encode(), 0)
                    .map_err(|e| Error::io("write index header", &path, e))?;
                // Full length up front (a hole): a reader maps the file once.
                h.set_len(INDEX_HEADER_BYTES + per_file * INDEX_ENTRY_BYTES)
                    .map_err(|e| Error::io("size index file", &path, e))?;
                if let Some(f) = frame {
                    let target = Target::Index { file_number };
                    f.create(target);
                    f.write(target, 0, &header.encode());
                    f.extend(target, INDEX_HEADER_BYTES + per_file * INDEX_ENTRY_BYTES);
                }
                dirs_to_sync.insert(self.shared.root.join(INDEX_DIR));
                h
            }
            Err(e) => return Err(Error::io("open index file", &path, e)),
        };
        // Keep the current and the next file only.
        self.index_files.retain(|n, _| *n + 1 >= file_number);
        self.index_files.insert(file_number, Arc::clone(&handle));
        Ok(handle)
    }

    /// Step 5: make the batch visible.
    fn publish(
        &mut self,
        touched: &BTreeSet<Arc<str>>,
        last_position: u64,
        packed: &HashMap<StreamKey, crate::catalog::PackedState>,
    ) {
        // The head first: whatever a reader then sees of a stream's state is at or below it.
        assert!(last_position > self.head, "positions strictly increase");
        self.head = last_position;
        self.shared.publish(last_position);
        for stream in touched {
            let Some(ws) = self.streams.get(stream) else {
                continue;
            };
            let mut state = ws
                .meta
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.version = ws.version;
            state.changeset = ws.changeset;
            state.closed = ws.closed;
            if let Some(p) = packed.get(&ws.meta.key) {
                state.packed = Some(*p);
            }
            if ws.deleted && !state.deleted {
                // Deleted in the pack (segment-format.md §19): a reader holding the old state
                // reads on from this one, and learns of the delete.
                state.deleted = true;
                state.first_version = ws.version + 1;
                state.generation += 1;
            }
            if ws.packed.is_some() {
                // Still packed: no segment of its own yet.
                continue;
            }
            match state.segments.last_mut() {
                Some(last) if last.number == ws.segment => {
                    last.end = ws.tail;
                    last.last_version = ws.version;
                }
                _ => state.segments.push(SegmentState {
                    number: ws.segment,
                    first_version: ws.segment_first_version,
                    header_bytes: ws.header_bytes,
                    end: ws.tail,
                    last_version: ws.version,
                }),
            }
        }
    }
}

/// The batch's write to the current pack that records of `bytes` go to: the pack rolls first
/// when they would take it past `PACK_BYTES_MAX` (segment-format.md §19).
fn pack_slot(
    cursor: &mut PackCursor,
    planning: &mut Planning,
    bytes: u64,
    store_id: u64,
    timestamp_us: u64,
) -> usize {
    if cursor.end + bytes > PACK_BYTES_MAX && cursor.end > PACK_RECORDS_START {
        cursor.number += 1;
        cursor.end = PACK_RECORDS_START;
        cursor.create = true;
        cursor.handle = None;
    }
    match planning.pack_writes.last() {
        Some(w) if w.number == cursor.number => planning.pack_writes.len() - 1,
        _ => {
            let create = cursor.create.then(|| {
                crate::format::pack::PackHeader {
                    pack: cursor.number,
                    store_id,
                    first_position: planning.next_position,
                    created_us: timestamp_us,
                }
                .encode()
                .to_vec()
            });
            cursor.create = false;
            planning.pack_writes.push(FileWrite {
                number: cursor.number,
                offset: cursor.end,
                create,
                bytes: Vec::new(),
            });
            planning.pack_writes.len() - 1
        }
    }
}

fn segment_target(key: StreamKey, segment: u32) -> Target {
    Target::Segment {
        hash: key.hash,
        collision: key.collision,
        segment,
    }
}

fn keys_target(key: StreamKey) -> Target {
    Target::Keys {
        hash: key.hash,
        collision: key.collision,
    }
}

enum PlanOutcome {
    Planned(Vec<AppendResult>),
    Done(Result<Vec<AppendResult>>),
    Defer,
}

/// What a close at `position` answers: the stream stays at its version and changeset.
fn close_result(version: u64, changeset: u64, position: u64) -> AppendResult {
    AppendResult {
        first_version: version,
        last_version: version,
        changeset,
        first_position: Position(position),
        last_position: Position(position),
        duplicates: 0,
    }
}

/// A close record (segment-format.md §12): its own position, the version and changeset of the
/// stream it closes; packed when `prev_position` is given (§19).
fn close_record(
    version: u64,
    position: u64,
    changeset: u64,
    timestamp_us: u64,
    prev_position: Option<u64>,
) -> RecordFields<'static> {
    control_record(
        CLOSE_EVENT_TYPE,
        Control::close(),
        (version, position, changeset, timestamp_us),
        prev_position,
    )
}

/// A control record without an event: of type `event_type`, at `(version, position, changeset,
/// timestamp_us)`; packed when `prev_position` is given (§19).
fn control_record(
    event_type: &'static str,
    control: Control,
    (version, position, changeset, timestamp_us): (u64, u64, u64, u64),
    prev_position: Option<u64>,
) -> RecordFields<'static> {
    RecordFields {
        flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END,
        version,
        position,
        changeset,
        timestamp_us,
        event_id: None,
        event_type: event_type.as_bytes(),
        key: &[],
        commit_metadata: &[],
        metadata: &[],
        data: &[],
        control: Some(control),
        prev_position,
    }
}

/// Cut what unacknowledged batches left after `end` in a file of `len` bytes (`what` says
/// which), durably: the cut is durable before anything is written over it. Otherwise a crash
/// could keep a new index entry and lose both the cut and the new record, and a cut record
/// carrying the same position at the same offset would pass for the new one (the model fuzzer
/// found this after a fault and a power cut; segment-format.md §9).
fn cut_durably(
    handle: &dyn FileHandle,
    path: &std::path::Path,
    end: u64,
    len: u64,
    what: &str,
) -> Result<()> {
    if len <= end {
        return Ok(());
    }
    tracing::warn!(path = %path.display(), offset = end, bytes = len - end,
        "cutting {what} of an unacknowledged batch");
    handle.set_len(end).map_err(|e| Error::io("cut", path, e))?;
    handle
        .sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))
}

/// One planned write of a pack or a table: its header first when it creates the file, then its
/// bytes, each also added to the batch's frame (segment-format.md §18).
fn write_file(
    handle: &dyn FileHandle,
    path: &std::path::Path,
    target: Target,
    w: &FileWrite,
    frame: &mut Option<FrameBuilder>,
) -> Result<()> {
    if let Some(header) = &w.create {
        handle
            .write_all_at(header, 0)
            .map_err(|e| Error::io("write header", path, e))?;
        if let Some(f) = frame {
            f.create(target);
            f.write(target, 0, header);
        }
    }
    handle
        .write_all_at(&w.bytes, w.offset)
        .map_err(|e| Error::io("write", path, e))?;
    if let Some(f) = frame {
        f.write(target, w.offset, &w.bytes);
    }
    Ok(())
}

/// A pack or a table, opened to write; with `create`, made (its folder too) or, when a file
/// left by an unacknowledged batch holds the name, cut to nothing. Packing runs under the
/// journal only, whose flush (`syncfs`) makes the new names durable (segment-format.md §19).
fn open_or_create(
    backend: &dyn crate::storage::Backend,
    path: &std::path::Path,
    create: bool,
    root: &std::path::Path,
) -> Result<Handle> {
    if !create {
        return backend
            .open(path, OpenMode::ReadWrite)
            .map(Arc::from)
            .map_err(|e| Error::io("open", path, e));
    }
    if let Some(dir) = path.parent() {
        for d in [dir.parent(), Some(dir)].into_iter().flatten() {
            if d.starts_with(root) && d != root {
                match backend.create_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("create folder", d, e)),
                }
            }
        }
    }
    match backend.open(path, OpenMode::CreateNew) {
        Ok(h) => Ok(Arc::from(h)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tracing::warn!(path = %path.display(), "rewriting a file left by an unacknowledged batch");
            let h: Handle = Arc::from(
                backend
                    .open(path, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open", path, e))?,
            );
            h.set_len(0).map_err(|e| Error::io("cut", path, e))?;
            Ok(h)
        }
        Err(e) => Err(Error::io("create", path, e)),
    }
}

fn create_segment(
    backend: &dyn crate::storage::Backend,
    path: &PathBuf,
    dir: &PathBuf,
    kind: CreateKind,
    dirs_to_sync: &mut BTreeSet<PathBuf>,
    root: &std::path::Path,
) -> Result<Handle> {
    match backend.create_dir(dir) {
        Ok(()) => {
            // Durability: the new fan-out folder's own entry lives in `streams/`.
            dirs_to_sync.insert(root.join(STREAMS_DIR));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create folder", dir, e)),
    }
    let handle: Handle = match backend.open(path, OpenMode::CreateNew) {
        Ok(h) => {
            dirs_to_sync.insert(dir.clone());
            crate::killpoint::reached("segment-created");
            Arc::from(h)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if kind == CreateKind::New {
                tracing::warn!(path = %path.display(), "rewriting a segment left by an unacknowledged batch");
            }
            let h: Handle = Arc::from(
                backend
                    .open(path, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open segment", path, e))?,
            );
            h.set_len(0)
                .map_err(|e| Error::io("cut segment", path, e))?;
            h
        }
        Err(e) => return Err(Error::io("create segment", path, e)),
    };
    Ok(handle)
}

/// When a part that failed its expected version is a retry of an append already stored with
/// the same event ids, the original result.
fn retry_result(
    shared: &Arc<Shared>,
    meta: &Arc<StreamMeta>,
    part: &Part,
    current: u64,
    changeset: u64,
) -> Result<Option<AppendResult>> {
    let n = part.events.len() as u64;
    let from = match part.expected {
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(v) => v,
        ExpectedVersion::LastChangeset(0) => 0,
        ExpectedVersion::LastChangeset(c) if c < changeset => {
            match crate::changeset::version_before(shared, meta, c + 1)? {
                Some(v) => v,
                None => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    // A de-duplicating append may have stored fewer events than it was given.
    if from >= current || (from + n > current && !part.deduplicate) {
        return Ok(None);
    }
    idempotent_result(shared, meta, from, &part.events, part.deduplicate)
}

/// When a retried append carries the ids of the events already stored after version `from`,
/// the original result.
fn idempotent_result(
    shared: &Arc<Shared>,
    meta: &Arc<StreamMeta>,
    from: u64,
    events: &[EventData],
    deduplicate: bool,
) -> Result<Option<AppendResult>> {
    if events.iter().any(|e| e.id.is_none()) {
        return Ok(None);
    }
    let mut stored = crate::read::read_versions(shared, meta, from + 1, events.len())?;
    // The stored append ends at its first `END` record.
    if let Some(end) = stored
        .iter()
        .position(crate::read::RecordedEvent::is_append_end)
    {
        stored.truncate(end + 1);
    }
    if stored.is_empty() || (!deduplicate && stored.len() != events.len()) {
        return Ok(None);
    }
    // Each stored event is the next given event with its id; a given event passed over was
    // dropped as a duplicate when the append was first made, so it has a key.
    let mut given = events.iter();
    for record in &stored {
        loop {
            match given.next() {
                Some(e) if e.id == record.id() => break,
                Some(e) if deduplicate && !e.key.is_empty() => {}
                _ => return Ok(None),
            }
        }
    }
    if given.any(|e| !deduplicate || e.key.is_empty()) {
        return Ok(None);
    }
    let (first, last) = (&stored[0], &stored[stored.len() - 1]);
    if !first.is_append_begin() || !last.is_append_end() {
        // The ids match events of another append: not this one stored before.
        return Ok(None);
    }
    Ok(Some(AppendResult {
        duplicates: u32::try_from(events.len() - stored.len()).unwrap_or(u32::MAX),
        first_version: first.version(),
        last_version: last.version(),
        changeset: first.changeset(),
        first_position: first.position(),
        last_position: last.position(),
    }))
}

/// Pass 1 for the keys of one part: the content hash of each keyed event and, when the append
/// asks for de-duplication, which events repeat the newest of their key (segment-format.md §15).
fn plan_keys(shared: &Shared, ws: &WriterStream, part: &Part) -> PartPlan {
    let mut keep = Vec::with_capacity(part.events.len());
    let mut hashes = Vec::with_capacity(part.events.len());
    // The newest of each key among this part's kept events.
    let mut overlay: HashMap<&[u8], [u8; 16]> = HashMap::new();
    let mut newest_duplicate: Option<&KeyEntry> = None;
    for e in &part.events {
        if e.key.is_empty() {
            keep.push(true);
            hashes.push(None);
            continue;
        }
        let hash = content_hash(
            &shared.manifest.hash_key,
            e.event_type.as_bytes(),
            &e.metadata,
            &e.data,
        );
        hashes.push(Some(hash));
        if part.deduplicate {
            let stored = ws.keys.map.get(&e.key);
            let newest = overlay
                .get(e.key.as_slice())
                .copied()
                .or_else(|| stored.map(|k| k.content_hash));
            if newest == Some(hash) {
                keep.push(false);
                if let Some(k) = stored.filter(|_| !overlay.contains_key(e.key.as_slice())) {
                    if newest_duplicate.is_none_or(|d| d.version < k.version) {
                        newest_duplicate = Some(k);
                    }
                }
                continue;
            }
            overlay.insert(&e.key, hash);
        }
        keep.push(true);
    }
    let all_dropped = if keep.iter().any(|k| *k) {
        None
    } else {
        // Every event is dropped, so none matched an earlier event of this part: each matched
        // a stored (or planned) one.
        newest_duplicate.map(|d| AppendResult {
            first_version: d.version,
            last_version: d.version,
            changeset: d.changeset,
            first_position: Position(d.position),
            last_position: Position(d.position),
            duplicates: u32::try_from(part.events.len()).unwrap_or(u32::MAX),
        })
    };
    PartPlan {
        keep,
        hashes,
        all_dropped,
    }
}
