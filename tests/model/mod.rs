//! An in-memory model of a store, and a harness that runs one sequence of operations against
//! the model and a real store on the simulated disk, with injected I/O faults and power cuts,
//! and says where they disagree. Shared by the property test (`tests/model_proptest.rs`) and
//! the `api_model` fuzz target (`fuzz/fuzz_targets/api_model.rs`), which include this file.
//!
//! What the model allows: an append that returned `Ok` is there, forever, byte for byte, at
//! the versions and positions it was given; an append that failed with `WrongExpectedVersion`,
//! `Io` (a failed lookup, before anything was written) or `Poisoned` on an already poisoned
//! handle wrote nothing; the one append whose failure poisoned the handle (or that a power cut
//! interrupted) is, after reopening, either wholly there, as the newest append, or absent.
//!
//! Closes and deletes (issue 6) follow the same rules: one that returned `Ok` took one position
//! (its control record, which readers never see); a closed stream refuses appends with
//! `StreamClosed`, a deleted one refuses appends and reads with `StreamDeleted` and `read_all`
//! skips its events; the one whose failure poisoned the handle is, after reopening, done (it
//! took the next position) or not. A delete can poison the handle after its commit (its
//! `REMOVALS` record failed): until the reopen, the handle may already show the stream
//! deleted, and the model accepts both.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use streamlog::storage::sim::SimBackend;
use streamlog::{
    Append, AppendResult, Direction, Error, EventData, ExpectedVersion, Options, Position, Store,
};

/// One operation, decoded from a few bytes so that fuzzers and property tests share it.
#[derive(Debug, Clone)]
pub enum Op {
    Append {
        stream: u8,
        expected: u8,
        events: Vec<(u8, u16)>,
        with_ids: bool,
        /// The events carry keys (`k0`, `k1`, from their type).
        keyed: bool,
        /// The append asks for de-duplication.
        dedup: bool,
    },
    /// The last append again, as after a lost reply.
    Retry,
    /// A multi-stream append of two parts, all or none.
    Multi {
        streams: (u8, u8),
        expected: (u8, u8),
        lens: (u8, u8),
    },
    ReadStream {
        stream: u8,
        from: u8,
        backward: bool,
    },
    ReadAll {
        from: u8,
        backward: bool,
    },
    /// Close and open again on the same disk.
    Reopen,
    /// `close_stream`: no more appends; one control record takes a position.
    Close {
        stream: u8,
    },
    /// `delete_stream`: reads and appends give `StreamDeleted`, `read_all` skips its events; the
    /// tombstone takes a position.
    Delete {
        stream: u8,
    },
    /// `compact_index`: a durable checkpoint, the index files it covers compacted, and the
    /// pack blocks that hold no live record given back; nothing a reader sees changes.
    CompactIndex,
    /// Fail the n-th I/O call from now: EIO, ENOSPC, or a short write.
    Fault {
        after: u16,
        kind: u8,
    },
    /// Cut the power at the n-th I/O call from now; the next reopen boots the disk as it was
    /// left.
    PowerCut {
        after: u16,
    },
}

/// Decode operations: each starts with a tag byte; missing bytes read as zero.
#[must_use]
pub fn decode(bytes: &[u8], faults: bool) -> Vec<Op> {
    struct Cursor<'a>(&'a [u8], usize);
    impl Cursor<'_> {
        fn next(&mut self) -> u8 {
            let b = self.0.get(self.1).copied().unwrap_or(0);
            self.1 += 1;
            b
        }
    }
    let mut c = Cursor(bytes, 0);
    let mut ops = Vec::new();
    while c.1 < bytes.len() && ops.len() < 64 {
        let tag = c.next();
        let op = match tag % 16 {
            0..=6 => {
                let stream = c.next() % 4;
                let expected = c.next() % 8;
                let shape = c.next();
                let n = 1 + shape % 3;
                let events = (0..n)
                    .map(|k| (c.next() % 3, u16::from(c.next()) * 8 + u16::from(k)))
                    .collect();
                Op::Append {
                    stream,
                    expected,
                    events,
                    with_ids: shape & 0x80 != 0,
                    keyed: shape & 0x40 != 0,
                    dedup: shape & 0x20 != 0,
                }
            }
            7 => Op::Retry,
            11 => Op::Multi {
                streams: (c.next() % 4, c.next() % 4),
                expected: (c.next() % 8, c.next() % 8),
                lens: (1 + c.next() % 3, 1 + c.next() % 3),
            },
            8 | 9 => {
                let stream = c.next() % 4;
                let from = c.next();
                Op::ReadStream {
                    stream,
                    from: from % 16,
                    backward: from & 0x80 != 0,
                }
            }
            10 => {
                let from = c.next();
                Op::ReadAll {
                    from: from % 64,
                    backward: from & 0x80 != 0,
                }
            }
            // Tag 12 with its high bit: a lifecycle operation (tag 12 alone reopens, as it did
            // before lifecycle operations came: earlier findings keep their meaning).
            12 if tag & 0x80 != 0 => {
                let b = c.next();
                let stream = (b >> 1) % 4;
                // Bits 3-5 at 2: a value none of `tests/fuzz_findings/` uses there, so that
                // they decode as they did before this operation came (session 17).
                if (b >> 3) & 7 == 2 {
                    Op::CompactIndex
                } else if b & 1 == 0 {
                    Op::Close { stream }
                } else {
                    Op::Delete { stream }
                }
            }
            13 | 14 if faults => {
                let after = u16::from(c.next() % 64);
                Op::Fault {
                    after,
                    kind: c.next() % 3,
                }
            }
            15 if faults => Op::PowerCut {
                after: u16::from(c.next() % 64),
            },
            _ => Op::Reopen,
        };
        ops.push(op);
    }
    ops
}

#[must_use]
pub fn options() -> Options {
    Options {
        index_entries_per_file: 64,
        segment_bytes: 64 << 10,
        event_bytes_max: 4096,
        ..Options::default()
    }
}

/// One event of the model: type, data, id, position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelEvent {
    event_type: String,
    data: Vec<u8>,
    id: Option<[u8; 16]>,
    position: u64,
    key: Option<u8>,
}

/// An operation whose outcome is unknown until the next open: all of it is there, or none.
enum Maybe {
    /// An append, of one part or of the parts of a multi-stream append.
    Append {
        parts: Vec<(String, Vec<ModelEvent>)>,
    },
    /// A close (`delete` false) or a delete of `stream`: one control record, one position.
    Control { stream: String, delete: bool },
}

/// Why a stream refuses appends.
#[derive(Debug, Clone, Copy)]
enum Blocked {
    Deleted,
    Closed,
}

struct LastAppend {
    stream: String,
    expected: ExpectedVersion,
    /// The events given (a de-duplicating append may have stored fewer).
    events: Vec<ModelEvent>,
    dedup: bool,
    result: AppendResult,
}

pub struct Harness {
    path: &'static Path,
    sim: SimBackend,
    store: Option<Store>,
    streams: BTreeMap<String, Vec<ModelEvent>>,
    /// Appends committed per stream: its last changeset number.
    changesets: BTreeMap<String, u64>,
    /// (stream, version) by position - 1; `None` for a control record's position (a close,
    /// a tombstone), which readers never see.
    global: Vec<Option<(String, u64)>>,
    closed: BTreeSet<String>,
    /// Deleted streams keep their events here (their positions stay taken), unread.
    deleted: BTreeSet<String>,
    poisoned: bool,
    maybe: Option<Maybe>,
    power_cut_armed: bool,
    last: Option<LastAppend>,
    counter: u32,
}

fn event_of(e: &ModelEvent) -> EventData {
    let mut d = EventData::new(e.event_type.clone(), e.data.clone());
    if let Some(k) = e.key {
        d = d.key(vec![b'k', b'0' + k]);
    }
    match e.id {
        Some(id) => d.id(id),
        None => d,
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

impl Harness {
    /// # Panics
    /// If a fresh simulated disk cannot hold a new store.
    #[must_use]
    pub fn new(seed: u64) -> Harness {
        let path = Path::new("/model/store");
        let sim = SimBackend::new(seed);
        let store = Store::open_with_backend(path, options(), Arc::new(sim.clone()))
            .expect("a new store on an empty disk");
        Harness {
            path,
            sim,
            store: Some(store),
            streams: BTreeMap::new(),
            global: Vec::new(),
            changesets: BTreeMap::new(),
            closed: BTreeSet::new(),
            deleted: BTreeSet::new(),
            poisoned: false,
            maybe: None,
            power_cut_armed: false,
            last: None,
            counter: 0,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the harness keeps a store open")
    }

    /// Whether an error on a read can come from an injected fault or a cut.
    fn faulty(&self) -> bool {
        self.sim.faults_injected() > 0 || self.power_cut_armed
    }

    /// Run one operation; `Err` says how the store and the model disagree.
    ///
    /// # Errors
    /// A disagreement between the store and the model.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!("OP {op:?}");
        }
        match op {
            Op::Append {
                stream,
                expected,
                events,
                with_ids,
                keyed,
                dedup,
            } => self.append(*stream, *expected, events, *with_ids, *keyed, *dedup),
            Op::Retry => self.retry(),
            Op::Multi {
                streams,
                expected,
                lens,
            } => self.multi(*streams, *expected, *lens),
            Op::ReadStream {
                stream,
                from,
                backward,
            } => self.read_stream(*stream, *from, *backward),
            Op::ReadAll { from, backward } => self.read_all(*from, *backward),
            Op::Reopen => self.reopen(),
            Op::Close { stream } => self.control(*stream, false),
            Op::Delete { stream } => self.control(*stream, true),
            Op::CompactIndex => self.compact(),
            Op::Fault { after, kind } => {
                let kind = [
                    ErrorKind::Other,
                    ErrorKind::StorageFull,
                    ErrorKind::WriteZero,
                ][usize::from(*kind % 3)];
                self.sim.fail_call_after(u64::from(*after), kind);
                Ok(())
            }
            Op::PowerCut { after } => {
                self.sim.cut_power_after(u64::from(*after));
                self.power_cut_armed = true;
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        stream: u8,
        expected: u8,
        events: &[(u8, u16)],
        with_ids: bool,
        keyed: bool,
        dedup: bool,
    ) -> Result<(), String> {
        let stream = format!("m-{stream}");
        let current = self.streams.get(&stream).map_or(0, Vec::len) as u64;
        let changeset = self.changesets.get(&stream).copied().unwrap_or(0);
        let (expected, ok) = Self::expectation(expected, current, changeset);
        let model_events: Vec<ModelEvent> = events
            .iter()
            .map(|(t, len)| {
                self.counter += 1;
                ModelEvent {
                    event_type: format!("T{t}"),
                    // Keyed events take few shapes, so that some repeat the newest of their key.
                    data: if keyed {
                        vec![*t; usize::from(*len % 3) * 16]
                    } else {
                        vec![*t; usize::from(*len) % 3000]
                    },
                    id: with_ids.then(|| {
                        let mut id = [0u8; 16];
                        id[..4].copy_from_slice(&self.counter.to_le_bytes());
                        id
                    }),
                    position: 0,
                    key: keyed.then_some(t % 2),
                }
            })
            .collect();
        // De-duplication (segment-format.md §15): an event equal to the newest of its key (in
        // the stream, or earlier in this append) is dropped.
        let all_events = model_events.clone();
        let mut newest: BTreeMap<u8, (String, Vec<u8>, u64)> = BTreeMap::new();
        for (v, e) in self.streams.get(&stream).into_iter().flatten().enumerate() {
            if let Some(k) = e.key {
                newest.insert(k, (e.event_type.clone(), e.data.clone(), v as u64 + 1));
            }
        }
        let mut newest_duplicate = 0u64;
        let model_events: Vec<ModelEvent> = if dedup {
            let mut kept = Vec::new();
            for e in model_events {
                let Some(k) = e.key else {
                    kept.push(e);
                    continue;
                };
                match newest.get(&k) {
                    Some((t, d, v)) if *t == e.event_type && *d == e.data => {
                        newest_duplicate = newest_duplicate.max(*v);
                    }
                    _ => {
                        newest.insert(k, (e.event_type.clone(), e.data.clone(), u64::MAX));
                        kept.push(e);
                    }
                }
            }
            kept
        } else {
            model_events
        };
        let dropped = (all_events.len() - model_events.len()) as u32;
        let mut request = Append::new(&stream, expected, all_events.iter().map(event_of));
        if dedup {
            request = request.deduplicate();
        }
        let result = self.store().append_with(request);
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!("append to {stream}: {result:?}");
        }
        if let Some(blocked) = self.blocked(&stream) {
            self.last = None;
            return self.refused(&stream, blocked, result.map(|_| ()));
        }
        match result {
            Ok(r) if ok && model_events.is_empty() => {
                // Every event repeats the newest of its key: nothing written.
                ensure!(!self.poisoned, "an append succeeded on a poisoned handle");
                ensure!(
                    r.duplicates == dropped && r.last_version == newest_duplicate,
                    "{stream}: all duplicates, result {r:?}, model newest {newest_duplicate}"
                );
                self.last = None;
                Ok(())
            }
            Ok(r) => {
                ensure!(
                    r.duplicates == dropped,
                    "{stream}: {} dropped, model {dropped}",
                    r.duplicates
                );
                ensure!(ok, "{stream}: {expected:?} at version {current} succeeded");
                ensure!(!self.poisoned, "an append succeeded on a poisoned handle");
                ensure!(
                    r.changeset == changeset + 1,
                    "{stream}: changeset {} after {changeset}",
                    r.changeset
                );
                ensure!(
                    r.first_version == current + 1
                        && r.last_version == current + model_events.len() as u64
                        && r.first_position.get() == self.global.len() as u64 + 1
                        && r.last_position.get() - r.first_position.get()
                            == r.last_version - r.first_version,
                    "{stream}: result {r:?} after version {current}, head {}",
                    self.global.len()
                );
                let mut stored = model_events;
                for (i, e) in stored.iter_mut().enumerate() {
                    e.position = r.first_position.get() + i as u64;
                }
                self.commit(&stream, stored);
                // A retry of an append that dropped events is not modelled.
                self.last = Some(LastAppend {
                    stream,
                    // A retry checks the version, or the changeset when the append did.
                    expected: if matches!(expected, ExpectedVersion::LastChangeset(_)) {
                        ExpectedVersion::LastChangeset(changeset)
                    } else {
                        ExpectedVersion::Exact(current)
                    },
                    events: all_events,
                    dedup,
                    result: r,
                });
                Ok(())
            }
            Err(Error::WrongExpectedVersion {
                actual,
                actual_changeset,
                ..
            }) => {
                ensure!(!ok, "{stream}: {expected:?} at version {current} refused");
                ensure!(
                    actual_changeset == changeset,
                    "{stream}: actual changeset {actual_changeset}, model {changeset}"
                );
                ensure!(
                    actual == (current > 0).then_some(current),
                    "{stream}: actual {actual:?}, model {current}"
                );
                self.last = None;
                Ok(())
            }
            Err(Error::Poisoned { .. }) => {
                ensure!(self.faulty(), "{stream}: poisoned with no fault injected");
                if !self.poisoned && ok && !model_events.is_empty() {
                    // The append that met the fault: its outcome is settled at the next open.
                    self.maybe = Some(Maybe::Append {
                        parts: vec![(stream, model_events)],
                    });
                }
                self.poisoned = true;
                self.last = None;
                Ok(())
            }
            Err(Error::Io { .. }) => {
                ensure!(self.faulty(), "{stream}: I/O error with no fault injected");
                self.last = None;
                Ok(())
            }
            Err(e) => Err(format!("{stream}: unexpected error {e}")),
        }
    }

    /// The expectation coded by `code` for a stream at `current` with `changeset` appends.
    fn expectation(code: u8, current: u64, changeset: u64) -> (ExpectedVersion, bool) {
        let e = match code {
            6 => ExpectedVersion::LastChangeset(changeset),
            7 => ExpectedVersion::LastChangeset(changeset + 1),
            0 => ExpectedVersion::Any,
            1 => ExpectedVersion::NoStream,
            2 => ExpectedVersion::StreamExists,
            3 => ExpectedVersion::Exact(current),
            4 => ExpectedVersion::Exact(current + 1),
            _ => ExpectedVersion::Exact(current.saturating_sub(1)),
        };
        let ok = match e {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(v) => v == current,
            ExpectedVersion::LastChangeset(c) => c == changeset,
        };
        (e, ok)
    }

    /// A multi-stream append: both parts or neither (segment-format.md §14).
    fn multi(
        &mut self,
        streams: (u8, u8),
        expected: (u8, u8),
        lens: (u8, u8),
    ) -> Result<(), String> {
        self.last = None;
        let names = [format!("m-{}", streams.0), format!("m-{}", streams.1)];
        let mut parts = Vec::new();
        let mut model_parts = Vec::new();
        let mut all_ok = true;
        for (i, (name, (code, len))) in names
            .iter()
            .zip([(expected.0, lens.0), (expected.1, lens.1)])
            .enumerate()
        {
            let current = self.streams.get(name).map_or(0, Vec::len) as u64;
            let changeset = self.changesets.get(name).copied().unwrap_or(0);
            let (e, ok) = Self::expectation(code, current, changeset);
            all_ok &= ok;
            let events: Vec<ModelEvent> = (0..len)
                .map(|k| {
                    self.counter += 1;
                    ModelEvent {
                        event_type: format!("M{i}"),
                        data: vec![k; 10 + usize::from(k)],
                        id: None,
                        position: 0,
                        key: None,
                    }
                })
                .collect();
            parts.push(Append::new(name.clone(), e, events.iter().map(event_of)));
            model_parts.push((name.clone(), events));
        }
        let result = self.store().append_multi(parts);
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!("multi-stream append to {names:?}: {result:?}");
        }
        if names[0] == names[1] {
            ensure!(
                matches!(result, Err(Error::InvalidAppend { .. })),
                "a stream twice in one multi-stream append: {result:?}"
            );
            return Ok(());
        }
        // The first part, in order, whose stream is deleted or closed refuses the whole unit.
        if let Some((name, blocked)) = names
            .iter()
            .find_map(|n| self.blocked(n).map(|b| (n.clone(), b)))
        {
            return self.refused(&name, blocked, result.map(|_| ()));
        }
        match result {
            Ok(rs) => {
                ensure!(
                    all_ok,
                    "multi-stream append succeeded against its expectations"
                );
                ensure!(!self.poisoned, "an append succeeded on a poisoned handle");
                let mut next = self.global.len() as u64 + 1;
                for ((name, mut events), r) in model_parts.into_iter().zip(rs) {
                    ensure!(
                        r.first_position.get() == next
                            && r.last_position.get() == next + events.len() as u64 - 1,
                        "{name}: {r:?}, expected from position {next}"
                    );
                    for e in &mut events {
                        e.position = next;
                        next += 1;
                    }
                    self.commit(&name, events);
                }
                Ok(())
            }
            Err(Error::WrongExpectedVersion { .. }) => {
                ensure!(
                    !all_ok,
                    "multi-stream append refused though every part passed"
                );
                Ok(())
            }
            Err(Error::Poisoned { .. }) => {
                ensure!(self.faulty(), "poisoned with no fault injected");
                if !self.poisoned && all_ok {
                    self.maybe = Some(Maybe::Append { parts: model_parts });
                }
                self.poisoned = true;
                Ok(())
            }
            Err(Error::Io { .. }) => {
                ensure!(self.faulty(), "I/O error with no fault injected");
                Ok(())
            }
            Err(e) => Err(format!("multi-stream append: unexpected error {e}")),
        }
    }

    /// What refuses any append to `stream` before its expectation is looked at.
    fn blocked(&self, stream: &str) -> Option<Blocked> {
        if self.deleted.contains(stream) {
            Some(Blocked::Deleted)
        } else if self.closed.contains(stream) {
            Some(Blocked::Closed)
        } else {
            None
        }
    }

    /// An append to a deleted or closed stream: refused with that error, or an I/O error or
    /// the poison of a fault.
    fn refused(
        &mut self,
        stream: &str,
        blocked: Blocked,
        result: streamlog::Result<()>,
    ) -> Result<(), String> {
        match (result, blocked) {
            (Err(Error::StreamDeleted { .. }), Blocked::Deleted)
            | (Err(Error::StreamClosed { .. }), Blocked::Closed) => Ok(()),
            (Err(Error::Io { .. }), _) if self.faulty() => Ok(()),
            (Err(Error::Poisoned { .. }), _) if self.faulty() => {
                self.poisoned = true;
                Ok(())
            }
            (other, _) => Err(format!("{stream}: {blocked:?}, an append gave {other:?}")),
        }
    }

    /// The stream of a delete whose outcome the next open settles.
    fn maybe_deleted(&self) -> Option<&String> {
        match &self.maybe {
            Some(Maybe::Control {
                stream,
                delete: true,
            }) => Some(stream),
            _ => None,
        }
    }

    /// The stream and version of the event at position `p`, when readers see it.
    fn visible(&self, p: u64) -> Option<(&String, &u64)> {
        let (stream, version) = self
            .global
            .get(usize::try_from(p).ok()?.checked_sub(1)?)?
            .as_ref()?;
        (!self.deleted.contains(stream)).then_some((stream, version))
    }

    /// Close (`delete` false) or delete stream `m-<stream>`.
    fn compact(&mut self) -> Result<(), String> {
        let result = self.store().compact_index();
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!("compact_index: {result:?}");
        }
        match result {
            Ok(_) => {
                ensure!(
                    !self.poisoned,
                    "a compaction succeeded on a poisoned handle"
                );
                Ok(())
            }
            Err(Error::Poisoned { .. }) => {
                ensure!(self.faulty(), "compaction: poisoned with no fault injected");
                self.poisoned = true;
                Ok(())
            }
            // A failed write or sync of a compacted index file poisons the handle too.
            Err(Error::Io { .. }) => {
                ensure!(
                    self.faulty(),
                    "compaction: I/O error with no fault injected"
                );
                Ok(())
            }
            Err(e) => Err(format!("compaction: unexpected error {e}")),
        }
    }

    fn control(&mut self, stream: u8, delete: bool) -> Result<(), String> {
        self.last = None;
        let stream = format!("m-{stream}");
        let what = if delete { "delete" } else { "close" };
        let exists = self.streams.get(&stream).is_some_and(|e| !e.is_empty());
        let deleted = self.deleted.contains(&stream);
        let result = if delete {
            self.store().delete_stream(&stream)
        } else {
            self.store().close_stream(&stream)
        };
        if std::env::var("MODEL_TRACE").is_ok() {
            eprintln!("{what} of {stream}: {result:?}");
        }
        match result {
            Ok(()) => {
                ensure!(!self.poisoned, "a {what} succeeded on a poisoned handle");
                ensure!(
                    exists && !deleted,
                    "{what} of {stream} succeeded (exists {exists}, deleted {deleted})"
                );
                // Closing a closed stream does nothing.
                if delete || !self.closed.contains(&stream) {
                    self.apply_control(&stream, delete);
                }
                ensure!(
                    self.store().head_position().get() == self.global.len() as u64,
                    "{what} of {stream}: head {}, model {}",
                    self.store().head_position().get(),
                    self.global.len()
                );
                Ok(())
            }
            Err(Error::StreamDeleted { .. }) => {
                ensure!(
                    deleted,
                    "{what} of {stream}: StreamDeleted, model not deleted"
                );
                Ok(())
            }
            Err(Error::StreamNotFound { .. }) => {
                ensure!(
                    !exists && !deleted,
                    "{what} of {stream}: StreamNotFound, model has it"
                );
                Ok(())
            }
            Err(Error::Poisoned { .. }) => {
                ensure!(
                    self.faulty(),
                    "{what} of {stream}: poisoned with no fault injected"
                );
                let changes = exists && !deleted && (delete || !self.closed.contains(&stream));
                if !self.poisoned && changes {
                    self.maybe = Some(Maybe::Control { stream, delete });
                }
                self.poisoned = true;
                Ok(())
            }
            Err(Error::Io { .. }) => {
                ensure!(
                    self.faulty(),
                    "{what} of {stream}: I/O error with no fault injected"
                );
                Ok(())
            }
            Err(e) => Err(format!("{what} of {stream}: unexpected error {e}")),
        }
    }

    fn apply_control(&mut self, stream: &str, delete: bool) {
        self.global.push(None);
        if delete {
            self.deleted.insert(stream.to_string());
        } else {
            self.closed.insert(stream.to_string());
        }
    }

    fn commit(&mut self, stream: &str, events: Vec<ModelEvent>) {
        *self.changesets.entry(stream.to_string()).or_default() += 1;
        let entry = self.streams.entry(stream.to_string()).or_default();
        for e in events {
            entry.push(e);
            self.global
                .push(Some((stream.to_string(), entry.len() as u64)));
        }
    }

    fn retry(&mut self) -> Result<(), String> {
        let Some(last) = &self.last else {
            return Ok(());
        };
        let with_ids = last.events.iter().all(|e| e.id.is_some());
        let mut request = Append::new(
            last.stream.clone(),
            last.expected,
            last.events.iter().map(event_of),
        );
        if last.dedup {
            request = request.deduplicate();
        }
        let result = self.store().append_with(request);
        if let Some(blocked) = self.blocked(&last.stream) {
            let stream = last.stream.clone();
            return self.refused(&stream, blocked, result.map(|_| ()));
        }
        match result {
            Ok(again) => {
                ensure!(with_ids, "a retry without ids succeeded");
                ensure!(
                    again == last.result,
                    "retry gave {again:?}, first {:?}",
                    last.result
                );
            }
            Err(Error::WrongExpectedVersion { .. }) => {
                ensure!(!with_ids, "a retry with ids is idempotent");
            }
            Err(Error::Io { .. } | Error::Poisoned { .. }) if self.faulty() => {}
            Err(e) => return Err(format!("retry failed: {e}")),
        }
        Ok(())
    }

    fn read_stream(&self, stream: u8, from: u8, backward: bool) -> Result<(), String> {
        let stream = format!("m-{stream}");
        let direction = if backward {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let result = self
            .store()
            .read_stream(&stream, u64::from(from), direction);
        // A delete that poisoned the handle after its commit shows until the next open.
        let maybe_deleted = self.maybe_deleted() == Some(&stream);
        // Or the handle cannot tell until then: a segment 0 rewritten in place, its base
        // record not published.
        if maybe_deleted
            && matches!(
                result,
                Err(Error::StreamDeleted { .. } | Error::Poisoned { .. })
            )
        {
            return Ok(());
        }
        if self.deleted.contains(&stream) {
            return match result {
                Err(Error::StreamDeleted { .. }) => Ok(()),
                Err(Error::Io { .. }) if self.faulty() => Ok(()),
                other => Err(format!(
                    "{stream}: deleted, read gave {:?}",
                    other.map(|_| "an iterator")
                )),
            };
        }
        let events = match (result, self.streams.get(&stream)) {
            (Err(Error::StreamNotFound { .. }), None) => return Ok(()),
            // Files with no committed record on a poisoned handle: an append that failed, which
            // only the next open settles.
            (Err(Error::Poisoned { .. }), None) if self.poisoned => return Ok(()),
            (Err(Error::Io { .. }), _) if self.faulty() => return Ok(()),
            (Ok(iter), Some(model)) => (iter, model),
            (r, model) => {
                return Err(format!(
                    "{stream}: read gave {:?}, model has {} events",
                    r.err(),
                    model.map_or(0, Vec::len)
                ))
            }
        };
        let (iter, model) = events;
        let from = u64::from(from);
        let expected: Vec<u64> = if backward {
            (1..=from.min(model.len() as u64)).rev().collect()
        } else {
            (from.max(1)..=model.len() as u64).collect()
        };
        let mut got = Vec::new();
        for e in iter {
            match e {
                Ok(e) => {
                    let m = &model[e.version() as usize - 1];
                    ensure!(
                        e.event_type() == m.event_type
                            && e.data() == m.data.as_slice()
                            && e.id() == m.id
                            && e.position().get() == m.position,
                        "{stream}@{}: differs from the model",
                        e.version()
                    );
                    got.push(e.version());
                }
                Err(Error::Io { .. }) if self.faulty() => return Ok(()),
                Err(e) => return Err(format!("{stream}: {e}")),
            }
        }
        ensure!(
            got == expected,
            "{stream} from {from}: versions {got:?}, model {expected:?}"
        );
        Ok(())
    }

    fn read_all(&self, from: u8, backward: bool) -> Result<(), String> {
        let head = self.global.len() as u64;
        let from = u64::from(from);
        let (start, direction, expected): (Position, Direction, Vec<u64>) = if backward {
            (
                Position::from(from),
                Direction::Backward,
                (1..=from.min(head))
                    .rev()
                    .filter(|p| self.visible(*p).is_some())
                    .collect(),
            )
        } else {
            (
                Position::from(from),
                Direction::Forward,
                (from.max(1)..=head)
                    .filter(|p| self.visible(*p).is_some())
                    .collect(),
            )
        };
        let iter = match self.store().read_all(start, direction) {
            Ok(iter) => iter,
            Err(Error::Io { .. }) if self.faulty() => return Ok(()),
            Err(e) => return Err(format!("read_all: {e}")),
        };
        let mut got = Vec::new();
        for e in iter {
            match e {
                Ok(e) => {
                    let p = e.position().get();
                    let (stream, version) = self.visible(p).ok_or_else(|| {
                        format!("read_all: position {p} is no visible event of the model")
                    })?;
                    ensure!(
                        e.stream_id() == stream && e.version() == *version,
                        "read_all: position {p} is {}@{}, model {stream}@{version}",
                        e.stream_id(),
                        e.version()
                    );
                    let m = &self.streams[stream][*version as usize - 1];
                    ensure!(
                        e.data() == m.data.as_slice() && e.event_type() == m.event_type,
                        "read_all: position {p} differs from the model"
                    );
                    got.push(p);
                }
                Err(Error::Io { .. }) if self.faulty() => return Ok(()),
                Err(e) => return Err(format!("read_all: {e}")),
            }
        }
        // A delete that poisoned the handle after its commit may hide its stream already.
        let hidden = self.maybe_deleted().is_some_and(|gone| {
            let without: Vec<u64> = expected
                .iter()
                .copied()
                .filter(|p| self.visible(*p).is_some_and(|(s, _)| s != gone))
                .collect();
            got == without
        });
        ensure!(
            got == expected || hidden,
            "read_all from {from}: positions {got:?}, model {expected:?}"
        );
        Ok(())
    }

    /// Close (or lose the power), open again, settle the unknown append, compare everything.
    ///
    /// # Errors
    /// A disagreement, or a store that does not open once the faults are gone.
    pub fn reopen(&mut self) -> Result<(), String> {
        if self.power_cut_armed {
            // The machine dies with the store open: the disk comes back as a power cut leaves
            // it (what was synced, plus random pieces of what was not).
            let disk = self.sim.reboot();
            self.store = None;
            self.sim = disk;
        } else {
            self.store = None;
        }
        self.power_cut_armed = false;
        // A fault still armed may hit the open: a clean error, then the next open works.
        let store = match Store::open_with_backend(self.path, options(), Arc::new(self.sim.clone()))
        {
            Ok(store) => store,
            Err(Error::Io { .. }) if self.sim.faults_injected() > 0 => {
                self.sim.clear_fault();
                Store::open_with_backend(self.path, options(), Arc::new(self.sim.clone()))
                    .map_err(|e| format!("open after a failed open: {e}"))?
            }
            Err(e) => return Err(format!("open: {e}")),
        };
        self.sim.clear_fault();
        self.store = Some(store);
        self.poisoned = false;
        self.last = None;
        self.settle()?;
        self.check()
    }

    /// The append whose failure poisoned the handle: wholly there as the newest, or absent.
    fn settle(&mut self) -> Result<(), String> {
        let parts = match self.maybe.take() {
            None => return Ok(()),
            Some(Maybe::Append { parts }) => parts,
            Some(Maybe::Control { stream, delete }) => {
                // Nothing else committed after it (the handle was poisoned): it took the next
                // position, or none.
                let head = self.store().head_position().get();
                let len = self.global.len() as u64;
                ensure!(
                    head == len || head == len + 1,
                    "{stream}: head {head} after a failed control record at {len}"
                );
                if head == len + 1 {
                    self.apply_control(&stream, delete);
                }
                return Ok(());
            }
        };
        let mut present = Vec::new();
        for (stream, events) in &parts {
            let current = self.streams.get(stream).map_or(0, Vec::len) as u64;
            let stored = self
                .store()
                .stream_version(stream)
                .map_err(|e| format!("{stream}: {e}"))?
                .unwrap_or(0);
            let n = events.len() as u64;
            ensure!(
                stored == current || stored == current + n,
                "{stream}: version {stored} after a failed append of {n} at version {current}"
            );
            present.push(stored != current);
        }
        ensure!(
            present.iter().all(|p| *p) || present.iter().all(|p| !*p),
            "a failed multi-stream append is there in part: {present:?}"
        );
        if !present.first().copied().unwrap_or(false) {
            return Ok(());
        }
        let mut next = self.global.len() as u64 + 1;
        for (stream, mut events) in parts {
            for e in &mut events {
                e.position = next;
                next += 1;
            }
            self.commit(&stream, events);
        }
        Ok(())
    }

    /// Everything the store holds equals the model.
    ///
    /// # Errors
    /// The first difference.
    pub fn check(&self) -> Result<(), String> {
        let store = self.store();
        let all: Vec<_> = store
            .read_all(Position::START, Direction::Forward)
            .map_err(|e| format!("read_all: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("read_all: {e}"))?;
        let visible: Vec<(&String, &u64)> = (1..=self.global.len() as u64)
            .filter_map(|p| self.visible(p))
            .collect();
        ensure!(
            all.len() == visible.len(),
            "{} events, model {}",
            all.len(),
            visible.len()
        );
        ensure!(
            store.head_position().get() == self.global.len() as u64,
            "head {}, model {}",
            store.head_position().get(),
            self.global.len()
        );
        for (e, (stream, version)) in all.iter().zip(visible) {
            let m = &self.streams[stream][*version as usize - 1];
            ensure!(
                e.stream_id() == stream
                    && e.version() == *version
                    && e.position().get() == m.position
                    && e.event_type() == m.event_type
                    && e.data() == m.data.as_slice()
                    && e.id() == m.id,
                "position {}: {}@{} differs from the model {stream}@{version} \
                 (position {} / {}, type {:?} / {:?}, {} / {} data bytes, id {:?} / {:?})",
                e.position().get(),
                e.stream_id(),
                e.version(),
                e.position().get(),
                m.position,
                e.event_type(),
                m.event_type,
                e.data().len(),
                m.data.len(),
                e.id(),
                m.id
            );
        }
        for (stream, events) in &self.streams {
            if self.deleted.contains(stream) {
                ensure!(
                    matches!(
                        store.stream_version(stream),
                        Err(Error::StreamDeleted { .. })
                    ),
                    "{stream}: deleted, the store says otherwise"
                );
                continue;
            }
            // A closed stream refuses an append before looking at its expectation; an open one
            // refuses this expectation: nothing is written either way.
            let probe = store.append(
                stream,
                ExpectedVersion::Exact(u64::MAX),
                [event_of(&events[0])],
            );
            let closed = self.closed.contains(stream);
            ensure!(
                matches!(
                    (&probe, closed),
                    (Err(Error::StreamClosed { .. }), true)
                        | (Err(Error::WrongExpectedVersion { .. }), false)
                ),
                "{stream}: closed {closed} in the model, an append gave {probe:?}"
            );
            let v = store
                .stream_version(stream)
                .map_err(|e| format!("{stream}: {e}"))?;
            ensure!(
                v == Some(events.len() as u64),
                "{stream}: version {v:?}, model {}",
                events.len()
            );
            // The surface (segment-format.md §15): the newest event of each key.
            let mut newest: BTreeMap<u8, u64> = BTreeMap::new();
            for (i, e) in events.iter().enumerate() {
                if let Some(k) = e.key {
                    newest.insert(k, i as u64 + 1);
                }
            }
            let mut want: Vec<(Vec<u8>, u64)> = newest
                .into_iter()
                .map(|(k, v)| (vec![b'k', b'0' + k], v))
                .collect();
            want.sort_by_key(|(_, v)| *v);
            let got: Vec<(Vec<u8>, u64)> = store
                .surface(stream)
                .map_err(|e| format!("{stream}: surface: {e}"))?
                .iter()
                .map(|e| (e.key().to_vec(), e.version()))
                .collect();
            ensure!(got == want, "{stream}: surface {got:?}, model {want:?}");
        }
        Ok(())
    }

    /// Run a whole sequence, then reopen and compare once more.
    ///
    /// # Errors
    /// The first disagreement, with the operation that showed it.
    pub fn run(seed: u64, ops: &[Op]) -> Result<(), String> {
        let mut h = Harness::new(seed);
        for (i, op) in ops.iter().enumerate() {
            h.apply(op).map_err(|e| format!("op {i} {op:?}: {e}"))?;
        }
        h.reopen().map_err(|e| format!("final reopen: {e}"))?;
        if std::env::var("MODEL_STATS").is_ok() {
            eprintln!(
                "STATS ops {} events {} streams {} faults {}",
                ops.len(),
                h.global.len(),
                h.streams.len(),
                h.sim.faults_injected()
            );
        }
        Ok(())
    }
}
