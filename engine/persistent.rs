//! Persistent named subscriptions (segment-format.md §11): a subscription whose acknowledged
//! checkpoint lives in `subscriptions/<id>.sub`, so that a subscriber resumes after a crash or a
//! reopen without skipping an event (at-least-once delivery).

use crate::error::{Error, Result};
use crate::format::subscription::{
    StoredTarget, SubscriptionCheckpoint, SubscriptionHeader, SUBSCRIPTION_FILE_BYTES,
};
use crate::layout::{SUBSCRIPTIONS_DIR, TEMP_SUFFIX};
use crate::limits::SUBSCRIPTION_NAME_BYTES_MAX;
use crate::read::RecordedEvent;
use crate::shared::Shared;
use crate::storage::{EntryKind, FileHandle, OpenMode};
use crate::store::Store;
use crate::subscription::{Filter, Start, Subscription};
use crate::types::{now_us, Position};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a persistent subscription follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every stream, through a filter.
    All(Filter),
    /// One stream.
    Stream(String),
}

impl Target {
    fn stored(&self) -> StoredTarget {
        match self {
            Target::All(f) => StoredTarget::All {
                stream_prefix: f.prefix().unwrap_or("").to_string(),
                event_type: f.type_filter().unwrap_or("").to_string(),
            },
            Target::Stream(s) => StoredTarget::Stream(s.clone()),
        }
    }

    fn from_stored(t: &StoredTarget) -> Target {
        match t {
            StoredTarget::All {
                stream_prefix,
                event_type,
            } => Target::All(
                Filter::all()
                    .stream_prefix(stream_prefix.as_str())
                    .event_type(event_type.as_str()),
            ),
            StoredTarget::Stream(s) => Target::Stream(s.clone()),
        }
    }
}

/// A persistent subscription as listed by `Store::persistent_subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub name: String,
    pub target: Target,
    /// Every delivered event at or below this position is acknowledged.
    pub acked_position: Position,
    /// For a stream target: every version at or below this one is acknowledged.
    pub acked_version: u64,
    /// Whether a subscriber holds it now.
    pub in_use: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A checkpoint value: (position, version).
type Acked = (u64, u64);

/// The newest ack of a subscription, and whether a request to write it is queued.
struct Pending {
    acked: Acked,
    queued: bool,
}

/// What only the writer thread touches.
struct WriterSide {
    file: Option<Arc<dyn FileHandle>>,
    sequence: u64,
    written: Acked,
}

/// One persistent subscription, shared by the registry, its subscriber and the writer.
pub(crate) struct Entry {
    name: String,
    target: StoredTarget,
    path: PathBuf,
    store_id: u64,
    in_use: AtomicBool,
    deleted: AtomicBool,
    pending: Mutex<Pending>,
    durable: Mutex<Acked>,
    writer: Mutex<WriterSide>,
}

impl Entry {
    /// A subscription whose durable checkpoint is `acked`, in slot `sequence` of its file.
    fn new(
        name: String,
        target: StoredTarget,
        path: PathBuf,
        store_id: u64,
        acked: Acked,
        sequence: u64,
        in_use: bool,
    ) -> Entry {
        Entry {
            name,
            target,
            path,
            store_id,
            in_use: AtomicBool::new(in_use),
            deleted: AtomicBool::new(false),
            pending: Mutex::new(Pending {
                acked,
                queued: false,
            }),
            durable: Mutex::new(acked),
            writer: Mutex::new(WriterSide {
                file: None,
                sequence,
                written: acked,
            }),
        }
    }

    fn acked(&self) -> Acked {
        lock(&self.pending).acked
    }

    fn durable(&self) -> Acked {
        *lock(&self.durable)
    }

    /// Writer: write the newest ack into the next slot (not synced). `None` when there is
    /// nothing to write (the subscription was deleted); otherwise the value written and the
    /// file to sync.
    pub(crate) fn write_pending(
        &self,
        shared: &Shared,
    ) -> Result<Option<(Acked, Arc<dyn FileHandle>)>> {
        let acked = {
            let mut p = lock(&self.pending);
            // Cleared before the value is read: an ack after this line queues a new request.
            p.queued = false;
            p.acked
        };
        if self.deleted.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut w = lock(&self.writer);
        let file = match &w.file {
            Some(f) => Arc::clone(f),
            None => match shared.backend.open(&self.path, OpenMode::ReadWrite) {
                Ok(f) => {
                    let f: Arc<dyn FileHandle> = Arc::from(f);
                    w.file = Some(Arc::clone(&f));
                    f
                }
                // Deleted meanwhile (the flag is set before the file is removed).
                Err(_) if self.deleted.load(Ordering::Acquire) => return Ok(None),
                Err(e) => return Err(Error::io("open subscription", &self.path, e)),
            },
        };
        if acked != w.written {
            let c = SubscriptionCheckpoint {
                store_id: self.store_id,
                sequence: w.sequence + 1,
                acked_position: acked.0,
                acked_version: acked.1,
            };
            file.write_all_at(&c.encode(), c.slot_offset())
                .map_err(|e| Error::io("write subscription checkpoint", &self.path, e))?;
            w.sequence = c.sequence;
            w.written = acked;
        }
        Ok(Some((acked, file)))
    }

    /// Writer: the sync covering `acked` completed.
    pub(crate) fn made_durable(&self, acked: Acked) {
        let mut d = lock(&self.durable);
        if acked.0 >= d.0 {
            *d = acked;
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The persistent subscriptions of a store, loaded from `subscriptions/` on first use.
#[derive(Default)]
pub struct Registry {
    loaded: Mutex<Option<Loaded>>,
}

struct Loaded {
    by_name: HashMap<String, Arc<Entry>>,
    next_id: u64,
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidSubscriptionName { reason: "empty" });
    }
    if name.len() > SUBSCRIPTION_NAME_BYTES_MAX {
        return Err(Error::InvalidSubscriptionName {
            reason: "longer than 255 bytes",
        });
    }
    if name.contains('\0') {
        return Err(Error::InvalidSubscriptionName {
            reason: "holds a NUL byte",
        });
    }
    Ok(())
}

fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".sub")?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

impl Registry {
    /// The loaded registry, reading the folder on first use.
    fn load<'a>(&'a self, shared: &Shared) -> Result<MutexGuard<'a, Option<Loaded>>> {
        let mut guard = lock(&self.loaded);
        if guard.is_none() {
            *guard = Some(load_dir(shared)?);
        }
        Ok(guard)
    }

    pub(crate) fn list(&self, shared: &Shared) -> Result<Vec<SubscriptionInfo>> {
        let guard = self.load(shared)?;
        let loaded = guard.as_ref().expect("loaded above");
        let mut out: Vec<SubscriptionInfo> = loaded
            .by_name
            .values()
            .map(|e| {
                let acked = e.acked();
                SubscriptionInfo {
                    name: e.name.clone(),
                    target: Target::from_stored(&e.target),
                    acked_position: Position(acked.0),
                    acked_version: acked.1,
                    in_use: e.in_use.load(Ordering::Acquire),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The entry of `name`, created (durably) when missing; marked in use.
    fn take(
        &self,
        shared: &Shared,
        name: &str,
        target: &Target,
        start: Start,
    ) -> Result<Arc<Entry>> {
        validate_name(name)?;
        let stored = target.stored();
        let mut guard = self.load(shared)?;
        let loaded = guard.as_mut().expect("loaded above");
        if let Some(e) = loaded.by_name.get(name) {
            if e.target != stored {
                return Err(Error::SubscriptionTargetMismatch {
                    name: name.to_string(),
                });
            }
            if e.in_use.swap(true, Ordering::AcqRel) {
                return Err(Error::SubscriptionInUse {
                    name: name.to_string(),
                });
            }
            return Ok(Arc::clone(e));
        }
        shared.check_poison()?;
        let head = shared.head();
        let acked: Acked = match (&stored, start) {
            (_, Start::Origin) => (0, 0),
            (StoredTarget::All { .. }, Start::Head) => (head, 0),
            (StoredTarget::All { .. }, Start::At(p)) => {
                if p > head + 1 {
                    return Err(Error::InvalidStart {
                        reason: format!(
                            "position {p} is beyond the next position {} of the store",
                            head + 1
                        ),
                    });
                }
                (p.max(1) - 1, 0)
            }
            (StoredTarget::Stream(s), Start::Head) => {
                let version = match shared.catalog.probe(shared, s)? {
                    crate::catalog::Probe::Found(meta) => meta.version(),
                    crate::catalog::Probe::Absent { .. } => 0,
                };
                (0, version)
            }
            (StoredTarget::Stream(_), Start::At(v)) => (0, v.max(1) - 1),
        };
        let id = loaded.next_id;
        let header = SubscriptionHeader {
            store_id: shared.manifest.store_id,
            id,
            created_us: now_us(),
            name: name.to_string(),
            target: stored.clone(),
        };
        let path = create_file(shared, &header, acked)?;
        let entry = Arc::new(Entry::new(
            name.to_string(),
            stored,
            path,
            shared.manifest.store_id,
            acked,
            1,
            true,
        ));
        loaded.next_id = id + 1;
        loaded.by_name.insert(name.to_string(), Arc::clone(&entry));
        Ok(entry)
    }

    pub(crate) fn delete(&self, shared: &Shared, name: &str) -> Result<()> {
        validate_name(name)?;
        let mut guard = self.load(shared)?;
        let loaded = guard.as_mut().expect("loaded above");
        let Some(e) = loaded.by_name.get(name) else {
            return Err(Error::SubscriptionNotFound {
                name: name.to_string(),
            });
        };
        if e.in_use.load(Ordering::Acquire) {
            return Err(Error::SubscriptionInUse {
                name: name.to_string(),
            });
        }
        shared.check_poison()?;
        // Before the file goes: the writer then skips acks still queued for it.
        e.deleted.store(true, Ordering::Release);
        let path = e.path.clone();
        if let Err(err) = shared.backend.remove_file(&path) {
            // Still there: it stays a subscription, here as after a reopen.
            e.deleted.store(false, Ordering::Release);
            return Err(Error::io("remove subscription", &path, err));
        }
        loaded.by_name.remove(name);
        let dir = shared.root.join(SUBSCRIPTIONS_DIR);
        shared.backend.sync_dir(&dir).map_err(|err| {
            let err = Error::io("fsync directory", &dir, err);
            shared.poison(err.to_string());
            err
        })
    }
}

/// Read every subscription file; remove leftovers of interrupted creations.
fn load_dir(shared: &Shared) -> Result<Loaded> {
    let dir = shared.root.join(SUBSCRIPTIONS_DIR);
    let mut loaded = Loaded {
        by_name: HashMap::new(),
        next_id: 1,
    };
    let backend = &shared.backend;
    let names = match backend.kind(&dir) {
        Ok(Some(EntryKind::Dir)) => backend
            .read_dir(&dir)
            .map_err(|e| Error::io("list folder", &dir, e))?,
        Ok(_) => return Ok(loaded),
        Err(e) => return Err(Error::io("stat", &dir, e)),
    };
    for (name, kind) in names {
        let path = dir.join(&name);
        if kind == EntryKind::File && name.ends_with(TEMP_SUFFIX) {
            tracing::warn!(path = %path.display(), "removing an interrupted subscription creation");
            backend
                .remove_file(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            continue;
        }
        let Some(id) = parse_file_name(&name).filter(|_| kind == EntryKind::File) else {
            tracing::warn!(path = %path.display(), "unknown file in the subscriptions folder");
            continue;
        };
        let bytes =
            crate::storage::read_prefix(&**backend, &path, SUBSCRIPTION_FILE_BYTES as usize)
                .map_err(|e| Error::io("read subscription", &path, e))?
                .unwrap_or_default();
        let header = SubscriptionHeader::decode(&bytes).map_err(|e| match e {
            crate::format::DecodeError::UnsupportedVersion { found } => Error::UnsupportedVersion {
                path: path.clone(),
                found,
                supported: crate::format::FORMAT_VERSION,
            },
            e => Error::corrupt(&path, 0, format!("subscription header: {e}")),
        })?;
        let checkpoint = SubscriptionCheckpoint::decode_file(&bytes).map_err(|e| {
            Error::corrupt(
                &path,
                crate::format::subscription::SUBSCRIPTION_SLOT_A_OFFSET,
                format!("subscription checkpoint: both slots invalid ({e})"),
            )
        })?;
        if header.store_id != shared.manifest.store_id
            || checkpoint.store_id != shared.manifest.store_id
        {
            return Err(Error::corrupt(
                &path,
                16,
                "subscription file of another store",
            ));
        }
        if header.id != id {
            return Err(Error::corrupt(
                &path,
                24,
                "subscription id differs from its file name",
            ));
        }
        if checkpoint.acked_position > shared.head() {
            return Err(Error::corrupt(
                &path,
                checkpoint.slot_offset(),
                format!(
                    "acknowledged position {} is beyond the store's head {}",
                    checkpoint.acked_position,
                    shared.head()
                ),
            ));
        }
        let acked = (checkpoint.acked_position, checkpoint.acked_version);
        loaded.next_id = loaded.next_id.max(id + 1);
        loaded.by_name.insert(
            header.name.clone(),
            Arc::new(Entry::new(
                header.name,
                header.target,
                path,
                shared.manifest.store_id,
                acked,
                checkpoint.sequence,
                false,
            )),
        );
    }
    Ok(loaded)
}

/// Create a subscription file durably: temporary file, synced, renamed, folder synced. A sync
/// failure poisons the store.
fn create_file(shared: &Shared, header: &SubscriptionHeader, acked: Acked) -> Result<PathBuf> {
    let backend = &shared.backend;
    let dir = shared.root.join(SUBSCRIPTIONS_DIR);
    let fail_sync = |e: Error| {
        shared.poison(e.to_string());
        e
    };
    let new_dir = match backend.kind(&dir) {
        Ok(Some(_)) => false,
        Ok(None) => {
            backend
                .create_dir(&dir)
                .map_err(|e| Error::io("create folder", &dir, e))?;
            true
        }
        Err(e) => return Err(Error::io("stat", &dir, e)),
    };
    let name = format!("{:016x}.sub", header.id);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let mut bytes = header.encode();
    bytes.resize(SUBSCRIPTION_FILE_BYTES as usize, 0);
    let first = SubscriptionCheckpoint {
        store_id: header.store_id,
        sequence: 1,
        acked_position: acked.0,
        acked_version: acked.1,
    };
    let at = first.slot_offset() as usize;
    bytes[at..at + first.encode().len()].copy_from_slice(&first.encode());
    let file = match backend.open(&tmp, OpenMode::CreateNew) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            backend
                .remove_file(&tmp)
                .map_err(|e| Error::io("remove", &tmp, e))?;
            backend
                .open(&tmp, OpenMode::CreateNew)
                .map_err(|e| Error::io("create subscription", &tmp, e))?
        }
        Err(e) => return Err(Error::io("create subscription", &tmp, e)),
    };
    file.write_all_at(&bytes, 0)
        .map_err(|e| Error::io("write subscription", &tmp, e))?;
    file.sync_data()
        .map_err(|e| fail_sync(Error::io("fdatasync", &tmp, e)))?;
    drop(file);
    backend
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    backend
        .sync_dir(&dir)
        .map_err(|e| fail_sync(Error::io("fsync directory", &dir, e)))?;
    if new_dir {
        backend
            .sync_dir(&shared.root)
            .map_err(|e| fail_sync(Error::io("fsync directory", &shared.root, e)))?;
    }
    Ok(path)
}

/// Delivered and acknowledged events of one subscriber.
struct FlightState {
    /// Delivered, not yet acknowledged: (position, version), in delivery order.
    unacked: VecDeque<Acked>,
    /// The last event delivered (or the checkpoint it resumed from).
    delivered: Acked,
    acked: Acked,
}

struct Flight {
    state: Mutex<FlightState>,
    acked_signal: Condvar,
}

/// A persistent subscription's subscriber (`Store::persistent_subscription`): a blocking
/// iterator of events from the acknowledged checkpoint on, catch-up then live, at least once.
/// At most `in_flight_max` delivered events wait for an ack; then it waits for acks, which may
/// come from another thread through `acker`. Dropping it releases the name.
pub struct PersistentSubscription {
    store: Store,
    entry: Arc<Entry>,
    sub: Subscription,
    flight: Arc<Flight>,
    in_flight_max: usize,
}

/// Acknowledges a persistent subscription's events from any thread.
#[derive(Clone)]
pub struct Acker {
    store: Store,
    entry: Arc<Entry>,
    flight: Arc<Flight>,
}

impl Drop for PersistentSubscription {
    fn drop(&mut self) {
        self.entry.in_use.store(false, Ordering::Release);
    }
}

impl PersistentSubscription {
    pub(crate) fn open(
        store: Store,
        shared: &Arc<Shared>,
        name: &str,
        target: Target,
        start: Start,
    ) -> Result<PersistentSubscription> {
        if let Target::All(f) = &target {
            f.validate()?;
        }
        if let Target::Stream(s) = &target {
            crate::types::validate_stream_id(s)?;
        }
        let entry = shared.subscriptions.take(shared, name, &target, start)?;
        let acked = entry.acked();
        let sub = match &target {
            Target::All(f) => {
                Subscription::all(Arc::clone(shared), Start::At(acked.0 + 1), f.clone())
            }
            Target::Stream(s) => {
                Subscription::stream(Arc::clone(shared), s, Start::At(acked.1 + 1))
            }
        };
        let sub = match sub {
            Ok(s) => s,
            Err(e) => {
                entry.in_use.store(false, Ordering::Release);
                return Err(e);
            }
        };
        Ok(PersistentSubscription {
            store,
            entry,
            sub,
            flight: Arc::new(Flight {
                state: Mutex::new(FlightState {
                    unacked: VecDeque::new(),
                    delivered: acked,
                    acked,
                }),
                acked_signal: Condvar::new(),
            }),
            in_flight_max: shared.options.subscription_in_flight_max,
        })
    }

    /// Deliver at most `n` unacknowledged events (at least 1).
    #[must_use]
    pub fn with_in_flight_max(mut self, n: usize) -> PersistentSubscription {
        self.in_flight_max = n.max(1);
        self
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// A handle that acknowledges from another thread.
    #[must_use]
    pub fn acker(&self) -> Acker {
        Acker {
            store: self.store.clone(),
            entry: Arc::clone(&self.entry),
            flight: Arc::clone(&self.flight),
        }
    }

    fn poll(&mut self, deadline: Option<Instant>) -> Result<Option<RecordedEvent>> {
        // Back-pressure: wait for acks while the bound is reached.
        {
            let mut f = lock(&self.flight.state);
            while f.unacked.len() >= self.in_flight_max {
                match deadline {
                    None => {
                        f = self
                            .flight
                            .acked_signal
                            .wait(f)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            return Ok(None);
                        }
                        f = self
                            .flight
                            .acked_signal
                            .wait_timeout(f, d - now)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0;
                    }
                }
            }
        }
        let event = self.sub.poll(deadline)?;
        if let Some(e) = &event {
            let mut f = lock(&self.flight.state);
            let at = (e.position().0, e.version());
            f.unacked.push_back(at);
            f.delivered = at;
        }
        Ok(event)
    }

    /// Wait for the next event.
    ///
    /// # Errors
    /// As `Subscription::recv`.
    pub fn recv(&mut self) -> Result<RecordedEvent> {
        self.poll(None)?.ok_or(Error::Closed)
    }

    /// Wait at most `timeout`; `Ok(None)` when no event came (or the in-flight bound holds).
    ///
    /// # Errors
    /// As `Subscription::recv`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        self.poll(Some(Instant::now() + timeout))
    }

    /// The next event if one is committed and the in-flight bound allows it.
    ///
    /// # Errors
    /// As `Subscription::recv`.
    pub fn try_recv(&mut self) -> Result<Option<RecordedEvent>> {
        self.poll(Some(Instant::now()))
    }

    /// Acknowledge every delivered event up to `position` (cumulative). Does not wait: the
    /// checkpoint is written in the writer's next group commit (`flush_acks` waits for it).
    ///
    /// # Errors
    /// `AckBeyondDelivered` when `position` was not delivered yet; `Poisoned`, `Closed`.
    pub fn ack(&self, position: Position) -> Result<()> {
        ack(&self.store, &self.entry, &self.flight, position)
    }

    /// Wait until every ack made so far is durable; returns the durable checkpoint.
    ///
    /// # Errors
    /// `Poisoned` when the store failed before it was, `Closed`.
    pub fn flush_acks(&self) -> Result<Position> {
        flush(&self.store, &self.entry)
    }

    /// The acknowledged position (durable or not yet).
    #[must_use]
    pub fn acked(&self) -> Position {
        Position(self.entry.acked().0)
    }

    /// The acknowledged position known to be durable.
    #[must_use]
    pub fn durable(&self) -> Position {
        Position(self.entry.durable().0)
    }

    /// Events delivered and not yet acknowledged.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        lock(&self.flight.state).unacked.len()
    }
}

impl Acker {
    /// As `PersistentSubscription::ack`.
    ///
    /// # Errors
    /// As `PersistentSubscription::ack`.
    pub fn ack(&self, position: Position) -> Result<()> {
        ack(&self.store, &self.entry, &self.flight, position)
    }

    /// As `PersistentSubscription::flush_acks`.
    ///
    /// # Errors
    /// As `PersistentSubscription::flush_acks`.
    pub fn flush_acks(&self) -> Result<Position> {
        flush(&self.store, &self.entry)
    }
}

impl Iterator for PersistentSubscription {
    type Item = Result<RecordedEvent>;

    /// Blocks until the next event; `None` once the store is closed (or after an error).
    fn next(&mut self) -> Option<Self::Item> {
        match self.poll(None) {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) | Err(Error::Closed) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

fn ack(store: &Store, entry: &Arc<Entry>, flight: &Flight, position: Position) -> Result<()> {
    let acked = {
        let mut f = lock(&flight.state);
        if position.0 > f.delivered.0 {
            return Err(Error::AckBeyondDelivered {
                position: position.0,
                delivered: f.delivered.0,
            });
        }
        if position.0 <= f.acked.0 {
            return Ok(());
        }
        let mut version = f.acked.1;
        while let Some(&(p, v)) = f.unacked.front() {
            if p > position.0 {
                break;
            }
            version = v;
            f.unacked.pop_front();
        }
        f.acked = (position.0, version);
        flight.acked_signal.notify_all();
        f.acked
    };
    let send = {
        let mut p = lock(&entry.pending);
        if acked.0 > p.acked.0 {
            p.acked = acked;
        }
        !std::mem::replace(&mut p.queued, true)
    };
    if send {
        store.send_ack(Arc::clone(entry))?;
    }
    Ok(())
}

fn flush(store: &Store, entry: &Entry) -> Result<Position> {
    let shared = store.shared();
    loop {
        let seen = shared.changes();
        let target = entry.acked();
        let durable = entry.durable();
        if durable.0 >= target.0 {
            return Ok(Position(durable.0));
        }
        shared.check_poison()?;
        if shared.is_closed() {
            return Err(Error::Closed);
        }
        shared.wait_change(seen, None);
    }
}
