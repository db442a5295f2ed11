//! Packs at run time (segment-format.md §19): the published state not written in place yet,
//! finding a packed stream in its fan-out's table, and walking its chain of records.

use crate::error::{Error, Result};
use crate::format::index::FLAG_PACKED;
use crate::format::pack::{
    decode_entry, decode_table_header, TableEntry, TableEntryRef, TABLE_HEADER_BYTES,
};
use crate::format::segment::decode_record;
use crate::layout::{StreamKey, Tables};
use crate::limits::{
    KEY_INDEX_SLOTS_MIN, PACK_DEAD_RANGES_MAX, PACK_PUNCH_BLOCK_BYTES, TABLE_CACHE_ENTRIES_MAX,
};
use crate::shared::Shared;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// What batches published since the last flush changed in the two in-place fields (§19):
/// readers look here first, and the flush writes it in place before its `syncfs`.
#[derive(Default, Debug)]
pub struct Dirty {
    /// Stream key → its last packed position, and its entry's offset in its fan-out's table.
    pub last: HashMap<StreamKey, (u64, u64)>,
    /// Pack → the end of its last published record.
    pub ends: HashMap<u32, u64>,
}

#[derive(Default)]
pub struct Packs {
    dirty: Mutex<Dirty>,
    /// Fan-out tables read by lookups, kept up to date by the writer as it adds entries; at
    /// most `TABLE_CACHE_ENTRIES_MAX` entries in all. Without it every new stream's lookup
    /// read its fan-out's whole table (the million-stream create took 120 s instead of 77 s).
    tables: Mutex<TableCache>,
    /// Counts `add_entries` calls: a table read while one ran may lack its entries and is not
    /// cached.
    adds: std::sync::atomic::AtomicU64,
    /// `add_entries` calls whose batch's head is not published yet (`entries_published`): a
    /// table read meanwhile does not count their entries as committed, and is not cached
    /// either (else the cache would lack them once the head is published: a later lookup of
    /// the stream would find no entry, session 11's review).
    unpublished: std::sync::atomic::AtomicU64,
    /// The store has a `packs/` folder: looking a stream up must then read its fan-out's
    /// table when it has no segment 0. A store that never packed pays no extra `open` per
    /// new stream (the million-stream create makes a million of them).
    present: std::sync::atomic::AtomicBool,
}

/// The cached tables, and how many entries they hold together.
struct TableCache {
    map: HashMap<u16, std::sync::Arc<Table>>,
    entries: usize,
    /// `TABLE_CACHE_ENTRIES_MAX` (smaller in a unit test).
    max: usize,
}

impl Default for TableCache {
    fn default() -> TableCache {
        TableCache {
            map: HashMap::new(),
            entries: 0,
            max: TABLE_CACHE_ENTRIES_MAX,
        }
    }
}

impl TableCache {
    /// Cache `table`, then drop other tables while the cache is past its bound.
    fn insert(&mut self, fanout: u16, table: std::sync::Arc<Table>) {
        if let Some(old) = self.map.remove(&fanout) {
            self.entries -= old.len();
        }
        self.entries += table.len();
        self.map.insert(fanout, table);
        self.shrink_to_bound(Some(fanout));
    }

    /// Drop tables other than `keep` while the cache holds more than its bound (which ones
    /// does not matter: a table dropped is read again at its next lookup).
    fn shrink_to_bound(&mut self, keep: Option<u16>) {
        while self.entries > self.max {
            let Some(&victim) = self.map.keys().find(|k| Some(**k) != keep) else {
                break;
            };
            if let Some(t) = self.map.remove(&victim) {
                self.entries -= t.len();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Packs {
    pub fn present(&self) -> bool {
        self.present.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Set at open when `packs/` exists, and by the writer before it creates the first pack.
    pub fn mark_present(&self) {
        self.present
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Entries the writer added to fan-out `fanout`'s table, committed now: added to the cached
    /// table, if there is one.
    pub fn add_entries(&self, fanout: u16, entries: &[(TableEntry, u64)]) {
        let mut tables = lock(&self.tables);
        self.adds.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.unpublished
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(t) = tables.map.get_mut(&fanout) {
            let t = std::sync::Arc::make_mut(t);
            for (e, at) in entries {
                t.end = t.end.max(at + e.entry_bytes() as u64);
                t.push(e.as_ref(), *at);
            }
            tables.entries += entries.len();
            tables.shrink_to_bound(Some(fanout));
        }
    }

    /// The head that makes the entries of `calls` `add_entries` calls committed is published.
    pub fn entries_published(&self, calls: usize) {
        let _tables = lock(&self.tables);
        self.unpublished
            .fetch_sub(calls as u64, std::sync::atomic::Ordering::AcqRel);
    }

    /// Taken before a table is read from disk, under the cache's lock: whether a read now may
    /// be cached (no entries wait for their head), and the count of adds to compare after it.
    fn read_token(&self) -> (u64, bool) {
        (
            self.adds.load(std::sync::atomic::Ordering::Acquire),
            self.unpublished.load(std::sync::atomic::Ordering::Acquire) == 0,
        )
    }

    /// May a table read after `read_token` returned `token` be cached? Only when no entries
    /// waited for their head then and none were added since (call under the cache's lock).
    fn cacheable(&self, token: (u64, bool)) -> bool {
        token.1 && self.adds.load(std::sync::atomic::Ordering::Acquire) == token.0
    }

    /// The last packed position of `key` published since the last flush.
    pub fn last_of(&self, key: StreamKey) -> Option<u64> {
        lock(&self.dirty).last.get(&key).map(|(p, _)| *p)
    }

    /// Called by the writer when it publishes a batch: before the new head is visible.
    pub fn publish(&self, last: &[(StreamKey, u64, u64)], ends: &[(u32, u64)]) {
        let mut dirty = lock(&self.dirty);
        for (key, position, entry_offset) in last {
            dirty.last.insert(*key, (*position, *entry_offset));
        }
        for (pack, end) in ends {
            let e = dirty.ends.entry(*pack).or_insert(*end);
            *e = (*e).max(*end);
        }
    }

    /// A copy of what the next flush must write in place. The flush clears it only once its
    /// checkpoint is durable (`flushed`): until then readers still need it.
    pub fn dirty(&self) -> Dirty {
        let d = lock(&self.dirty);
        Dirty {
            last: d.last.clone(),
            ends: d.ends.clone(),
        }
    }

    /// The flush that wrote `written` in place is durable: forget what it covered (a batch
    /// published since may have moved a field on: keep that).
    ///
    /// The cached tables learn the new `last_position`s first. A stream looked up later finds
    /// its last position in one of the two (`last_position` asks in that order): without this,
    /// a stream loaded again after the flush (evicted from the catalog, or the catalog cleared
    /// by a poison) read the cached entry as the table was before it, and found no end, or an
    /// older one (the `api_model` fuzzer found it, session 10).
    pub fn flushed(&self, layout: Tables, written: &Dirty) {
        {
            let mut tables = lock(&self.tables);
            // A table read from disk before this flush wrote in place must not be cached after
            // this update: `table` caches a read only if no change came meanwhile.
            self.adds.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            for (key, (last, entry_offset)) in &written.last {
                let Some(t) = tables.map.get_mut(&layout.number(key.hash)) else {
                    continue;
                };
                // Copied (`make_mut`) only when it changes: readers may hold it.
                if t.needs_last_position(*entry_offset, *key, *last) {
                    std::sync::Arc::make_mut(t).set_last_position(*entry_offset, *key, *last);
                }
            }
        }
        let mut d = lock(&self.dirty);
        for (key, value) in &written.last {
            if d.last.get(key) == Some(value) {
                d.last.remove(key);
            }
        }
        for (pack, end) in &written.ends {
            if d.ends.get(pack) == Some(end) {
                d.ends.remove(pack);
            }
        }
    }
}

/// The last packed position of `key`: what this process published since the last flush, else
/// what a flush (or recovery) wrote in its table entry; `None` for a stream not in a table, or
/// whose entry no flush wrote. The published state is asked first: a flush updates the cached
/// table before it forgets the published value (`Packs::flushed`), so a miss there means the
/// table, from the cache or read now, holds the newest.
///
/// # Errors
/// Reading the table.
pub fn last_position(shared: &Shared, key: StreamKey) -> Result<Option<u64>> {
    if let Some(last) = shared.packs.last_of(key) {
        return Ok(Some(last));
    }
    let Some(table) = table(shared, shared.table_of(key.hash))? else {
        return Ok(None);
    };
    Ok(table.entry(key).and_then(|(e, _)| e.last_position))
}

/// Fan-out `fanout`'s table, from the cache or read (and cached); `None` when it does not
/// exist.
pub fn table(shared: &Shared, fanout: u16) -> Result<Option<std::sync::Arc<Table>>> {
    if !shared.packs.present() {
        return Ok(None);
    }
    let token = {
        let tables = lock(&shared.packs.tables);
        if let Some(t) = tables.map.get(&fanout) {
            return Ok(Some(std::sync::Arc::clone(t)));
        }
        shared.packs.read_token()
    };
    let Some(t) = read_table(shared, fanout)? else {
        return Ok(None);
    };
    let t = std::sync::Arc::new(t);
    let mut tables = lock(&shared.packs.tables);
    // Read under no lock: if the writer added entries meanwhile, or added some whose head was
    // not published when it began, this read may lack them; it answers this lookup (which
    // began before they were published) but is not kept.
    if !shared.packs.cacheable(token) {
        return Ok(Some(t));
    }
    tables.insert(fanout, std::sync::Arc::clone(&t));
    Ok(Some(t))
}

/// A fan-out's table as read: its live entries, with their offsets, and where the last entry
/// that decodes ends (the next entry goes there once the tail after it is cut).
#[derive(Clone)]
pub struct Table {
    /// The entries' fixed fields, in file order (increasing offsets).
    slots: Vec<EntrySlot>,
    /// Every entry's stream id, one after another (`EntrySlot::id_start`): an `Arc<str>` per
    /// entry cost about 40 bytes more per cached entry (session 12: the table cache holds up
    /// to `TABLE_CACHE_ENTRIES_MAX` entries, one per packed stream looked up).
    ids: String,
    /// Each stream's entry in `entries`: `read_all` looks one up for every packed event, and a
    /// search through the table's entries took a fifth of W5's time (`perf`, session 11).
    /// Built by the first `index_of` (a `read_all`): it costs 32-64 bytes per entry, which a
    /// store whose streams are only loaded one by one (a search per load) need not hold.
    by_key: std::sync::OnceLock<KeyIndex>,
    pub end: u64,
}

/// An entry of a `Table`: what lookups need of it once the table is read (its first position
/// only tells, at the read, whether it is committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub stream_hash: u64,
    pub collision: u16,
    pub stream_id: &'a str,
    /// The last packed position a flush wrote in place, `None` before the first.
    pub last_position: Option<u64>,
}

impl Entry<'_> {
    /// Bytes the entry takes in the table file.
    pub fn entry_bytes(&self) -> usize {
        crate::format::pack::TABLE_ENTRY_FIXED_BYTES
            + crate::format::align8(self.stream_id.len() as u64) as usize
    }
}

/// A table entry as a table holds it: 32 bytes, its id in the table's `ids`.
#[derive(Clone, Copy, Debug)]
struct EntrySlot {
    stream_hash: u64,
    /// 0 for none: positions start at 1.
    last_position: u64,
    /// The entry's offset in the table file.
    at: u64,
    id_start: u32,
    id_len: u16,
    collision: u16,
}

/// A slot of `KeyIndex`: a key and its entry's index plus one (0: empty).
#[derive(Clone, Copy, Default)]
struct KeySlot {
    hash: u64,
    entry: u32,
    collision: u16,
}

/// Open addressing (linear probing, at most half full) from a stream key to its entry: a
/// lookup reads one slot of 16 bytes, mostly, whose place a reader can compute ahead and ask
/// the CPU to fetch (`prefetch`). Over many small streams, the lookup of each event's table
/// entry missed the caches (a third of W5's time after the CRC work, `perf`, session 11).
#[derive(Clone, Default)]
struct KeyIndex {
    slots: Vec<KeySlot>,
    len: usize,
}

impl KeyIndex {
    fn home(&self, hash: u64) -> usize {
        // The low bits: the fan-out is the top 12, the same for every key of a table.
        (hash as usize) & (self.slots.len() - 1)
    }

    fn get(&self, key: StreamKey) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(key.hash);
        loop {
            let s = self.slots[i];
            if s.entry == 0 {
                return None;
            }
            if s.hash == key.hash && s.collision == key.collision {
                return Some(s.entry - 1);
            }
            i = (i + 1) & (self.slots.len() - 1);
        }
    }

    /// Insert `key` at `entry` unless it is there already (the first entry of a key answers).
    fn insert(&mut self, key: StreamKey, entry: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            self.slots = vec![KeySlot::default(); (old.len() * 2).max(KEY_INDEX_SLOTS_MIN)];
            self.len = 0;
            for s in old.into_iter().filter(|s| s.entry != 0) {
                self.place(s);
            }
        }
        if self.get(key).is_none() {
            self.place(KeySlot {
                hash: key.hash,
                entry: entry.saturating_add(1),
                collision: key.collision,
            });
        }
    }

    fn place(&mut self, slot: KeySlot) {
        debug_assert!(self.len * 2 < self.slots.len());
        let mut i = self.home(slot.hash);
        while self.slots[i].entry != 0 {
            i = (i + 1) & (self.slots.len() - 1);
        }
        self.slots[i] = slot;
        self.len += 1;
    }

    /// Ask the CPU to fetch the slot where `key`'s lookup starts.
    fn prefetch(&self, key: StreamKey) {
        if !self.slots.is_empty() {
            crate::prefetch::read(&self.slots[self.home(key.hash)]);
        }
    }
}

impl Table {
    pub fn new(entries: Vec<(TableEntry, u64)>, end: u64) -> Table {
        debug_assert!(entries.windows(2).all(|w| w[0].1 < w[1].1));
        Table::of(entries.iter().map(|(e, at)| (e.as_ref(), *at)), end)
    }

    /// A table of exactly these entries (cached tables keep no spare capacity).
    fn of<'a, I>(entries: I, end: u64) -> Table
    where
        I: Iterator<Item = (TableEntryRef<'a>, u64)> + Clone,
    {
        let mut t = Table::empty(end);
        t.slots.reserve_exact(entries.clone().count());
        t.ids
            .reserve_exact(entries.clone().map(|(e, _)| e.stream_id.len()).sum());
        for (e, at) in entries {
            t.push(e, at);
        }
        t
    }

    fn empty(end: u64) -> Table {
        Table {
            slots: Vec::new(),
            ids: String::new(),
            by_key: std::sync::OnceLock::new(),
            end,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Entry `i` (in file order) and its offset.
    pub fn get(&self, i: usize) -> Option<(Entry<'_>, u64)> {
        let s = self.slots.get(i)?;
        Some((
            Entry {
                stream_hash: s.stream_hash,
                collision: s.collision,
                stream_id: self.id_of(s),
                last_position: (s.last_position != 0).then_some(s.last_position),
            },
            s.at,
        ))
    }

    /// The stream id of entry `i` (`read_all` names a packed event's stream by it).
    pub fn stream_id(&self, i: usize) -> Option<&str> {
        self.slots.get(i).map(|s| self.id_of(s))
    }

    fn id_of(&self, s: &EntrySlot) -> &str {
        let start = s.id_start as usize;
        // Ids are pushed whole, so their bounds are char boundaries; `get` never panics.
        self.ids
            .get(start..start + usize::from(s.id_len))
            .unwrap_or_default()
    }

    /// The entries, in file order, with their offsets.
    pub fn entries(&self) -> impl Iterator<Item = (Entry<'_>, u64)> + '_ {
        (0..self.slots.len()).filter_map(|i| self.get(i))
    }

    fn push(&mut self, e: TableEntryRef<'_>, at: u64) {
        debug_assert!(self.slots.last().is_none_or(|last| last.at < at));
        // Ids are at most `STREAM_ID_BYTES_MAX` bytes and a table's ids fit in `u32` bytes
        // (4 GiB of ids is 4 million times the cache's bound of entries).
        let id_start = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        let id_len = u16::try_from(e.stream_id.len()).unwrap_or(u16::MAX);
        debug_assert!(id_start < u32::MAX && usize::from(id_len) == e.stream_id.len());
        self.ids.push_str(e.stream_id);
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let key = StreamKey {
            hash: e.stream_hash,
            collision: e.collision,
        };
        self.slots.push(EntrySlot {
            stream_hash: e.stream_hash,
            last_position: e.last_position.unwrap_or(0),
            at,
            id_start,
            id_len,
            collision: e.collision,
        });
        if let Some(index) = self.by_key.get_mut() {
            index.insert(key, i);
        }
    }

    fn index(&self) -> &KeyIndex {
        self.by_key.get_or_init(|| {
            let mut index = KeyIndex::default();
            for (i, s) in self.slots.iter().enumerate() {
                // A table holds a key once; were it twice, the first entry answers, as a
                // search would.
                index.insert(slot_key(s), u32::try_from(i).unwrap_or(u32::MAX));
            }
            index
        })
    }

    /// Packed stream `key`'s entry and its offset, if it is in this table: through the index
    /// when a `read_all` built it, else by a search.
    pub fn entry(&self, key: StreamKey) -> Option<(Entry<'_>, u64)> {
        let i = match self.by_key.get() {
            Some(index) => index.get(key)? as usize,
            None => self.slots.iter().position(|s| slot_key(s) == key)?,
        };
        self.get(i)
    }

    /// Where packed stream `key`'s entry is in `entries()`, if it is in this table (the first
    /// call builds the table's index).
    pub fn index_of(&self, key: StreamKey) -> Option<u32> {
        self.index().get(key)
    }

    /// Ask the CPU to fetch what `index_of(key)` will read first (`read_all` asks a few
    /// events ahead).
    pub fn prefetch(&self, key: StreamKey) {
        self.index().prefetch(key);
    }

    /// Ask the CPU to fetch what `prefetch` and `index_of` read of the table itself (its index's
    /// state, slots and length), some events before them: in W5 the table's first cache line
    /// was fetched but the index lies in its second, and the slot's prefetch waited for it
    /// (7% of `read_all`'s samples, `perf`, session 12).
    pub fn prefetch_header(&self) {
        crate::prefetch::read(&self.by_key);
    }

    /// A flush wrote `last` in place in the entry at offset `at`, of stream `key`: the cached
    /// table learns it, unless it holds a later one.
    fn set_last_position(&mut self, at: u64, key: StreamKey, last: u64) {
        let Ok(i) = self.slots.binary_search_by_key(&at, |s| s.at) else {
            return;
        };
        let s = &mut self.slots[i];
        if slot_key(s) == key && s.last_position < last {
            s.last_position = last;
        }
    }

    /// Whether a flush would change the entry at `at` (see `set_last_position`).
    fn needs_last_position(&self, at: u64, key: StreamKey, last: u64) -> bool {
        self.slots
            .binary_search_by_key(&at, |s| s.at)
            .is_ok_and(|i| slot_key(&self.slots[i]) == key && self.slots[i].last_position < last)
    }
}

fn slot_key(s: &EntrySlot) -> StreamKey {
    StreamKey {
        hash: s.stream_hash,
        collision: s.collision,
    }
}

/// Read fan-out `fanout`'s table; `None` when it does not exist. An entry counts only when its
/// first position is committed and its index entry is `PACKED` with its key (§19); entries
/// that do not are an unacknowledged batch's, at the tail.
pub fn read_table(shared: &Shared, fanout: u16) -> Result<Option<Table>> {
    read_table_at(shared, fanout, shared.head())
}

/// `read_table` with the committed head given (recovery knows it before it is published).
pub fn read_table_at(shared: &Shared, fanout: u16, head: u64) -> Result<Option<Table>> {
    if !shared.packs.present() {
        return Ok(None);
    }
    let path = shared.table_path(fanout);
    let bytes = match crate::storage::read_whole(&*shared.backend, &path) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) => return Err(Error::io("read table", &path, e)),
    };
    if bytes.len() < TABLE_HEADER_BYTES {
        // A torn creation: nothing in it was ever committed.
        return Ok(Some(Table::new(Vec::new(), 0)));
    }
    let (store_id, number) = match decode_table_header(&bytes) {
        Ok(h) => h,
        Err(e) => {
            // A table is created by the batch of its first entry, whose frame rewrites the
            // header at replay: a header that does not decode now is the torn creation of an
            // unacknowledged batch, unless an entry after it is committed (then it is damage).
            let mut at = TABLE_HEADER_BYTES;
            while at < bytes.len() {
                let Ok((entry, len)) = decode_entry(&bytes[at..]) else {
                    break;
                };
                if is_live(shared, &entry, head)? {
                    return Err(crate::cache::decode_error(&path, 0, &e));
                }
                at += len;
            }
            tracing::warn!(path = %path.display(), error = %e,
                "table header of an unacknowledged creation does not decode; it is written again");
            return Ok(Some(Table::new(Vec::new(), 0)));
        }
    };
    if store_id != shared.manifest.store_id || number != u32::from(fanout) {
        return Err(Error::corrupt(
            &path,
            8,
            "table of another store or fan-out",
        ));
    }
    let mut entries = Vec::new();
    let mut at = TABLE_HEADER_BYTES;
    while at < bytes.len() {
        let (entry, len) = match decode_entry(&bytes[at..]) {
            Ok(decoded) => decoded,
            Err(e) => {
                if damaged_entry_is_committed(shared, &bytes[at..], head)? {
                    return Err(crate::cache::decode_error(&path, at as u64, &e));
                }
                break;
            }
        };
        entries.push((entry, at as u64));
        at += len;
    }
    // Entries of unacknowledged batches can only be at the tail: the writer cuts them before
    // it appends an entry. So only the tail needs the index's word, back to a live entry.
    while let Some((last, _)) = entries.last() {
        if is_live(shared, last, head)? {
            break;
        }
        entries.pop();
    }
    Ok(Some(Table::of(entries.iter().copied(), at as u64)))
}

/// An entry counts when its stream's first record is committed, or, once that record's index
/// entry was compacted away (its stream deleted in the pack), when the last record a flush or
/// recovery wrote in its `last_position` is: only committed records are ever written there.
fn is_live(shared: &Shared, entry: &TableEntryRef<'_>, head: u64) -> Result<bool> {
    if is_live_at(
        shared,
        entry.first_position,
        entry.stream_hash,
        entry.collision,
        head,
    )? {
        return Ok(true);
    }
    match entry.last_position {
        Some(last) => is_live_at(shared, last, entry.stream_hash, entry.collision, head),
        None => Ok(false),
    }
}

/// Whether the committed index entry at `first_position` is a packed record of the stream.
fn is_live_at(
    shared: &Shared,
    first_position: u64,
    stream_hash: u64,
    collision: u16,
    head: u64,
) -> Result<bool> {
    if first_position == 0 || first_position > head {
        return Ok(false);
    }
    Ok(match shared.maps.index_entry(first_position)? {
        Ok(Some(e)) => {
            e.flags & FLAG_PACKED != 0 && e.stream_hash == stream_hash && e.collision == collision
        }
        _ => false,
    })
}

/// An entry that does not decode ends the table when it is an unacknowledged batch's torn
/// write. It is damage when it was committed: its own fields, read unchecked, name a committed
/// first record of its stream, or the entry its length leads to decodes and is committed (the
/// writer cuts dead entries before it appends one, so only committed entries precede a live
/// one). Damage to exactly the fields that tell is beyond what can be told apart here.
fn damaged_entry_is_committed(shared: &Shared, bytes: &[u8], head: u64) -> Result<bool> {
    let Some(peek) = crate::format::pack::peek_entry(bytes) else {
        return Ok(false);
    };
    if is_live_at(
        shared,
        peek.first_position,
        peek.stream_hash,
        peek.collision,
        head,
    )? {
        return Ok(true);
    }
    match peek
        .entry_bytes
        .and_then(|len| bytes.get(len..))
        .map(decode_entry)
    {
        Some(Ok((next, _))) => is_live(shared, &next, head),
        _ => Ok(false),
    }
}

/// One packed record of a stream, as its chain found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub position: u64,
    pub pack: u32,
    pub offset: u64,
    pub version: u64,
    pub changeset: u64,
    /// Bytes the record takes in its pack, padding included.
    pub padded_bytes: u64,
    /// An event of its stream (not a close record).
    pub is_event: bool,
    pub is_close: bool,
    /// A tombstone that restarted the chain: the stream was deleted in the pack.
    pub is_delete: bool,
}

/// Walk `key`'s chain back from `last`: its packed records, newest first (§19).
///
/// # Errors
/// `Corrupt` when a link does not verify: every position on a chain is committed.
pub fn walk(shared: &Shared, key: StreamKey, last: u64) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    let mut position = last;
    while position != 0 {
        let (link, prev, _) = link_at(shared, key, position)?;
        links.push(link);
        position = prev;
    }
    Ok(links)
}

/// The packed record of `key` at `position`, verified against its index entry: its link, its
/// `prev_position`, and its control block if it has one.
///
/// # Errors
/// `Corrupt` when it does not verify: every position a chain or a table names is committed.
fn link_at(
    shared: &Shared,
    key: StreamKey,
    position: u64,
) -> Result<(Link, u64, Option<crate::format::segment::Control>)> {
    let (file, at) = crate::format::index::locate(position, shared.manifest.index_entries_per_file);
    let index_path = crate::layout::index_path(&shared.root, file);
    let entry = match shared.maps.index_entry(position)? {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Err(Error::corrupt(
                index_path,
                at,
                format!("packed chain of a stream reaches removed position {position}"),
            ))
        }
        Err(e) => return Err(crate::cache::decode_error(&index_path, at, &e)),
    };
    if entry.flags & FLAG_PACKED == 0
        || entry.stream_hash != key.hash
        || entry.collision != key.collision
    {
        return Err(Error::corrupt(
            index_path,
            at,
            format!("packed chain reaches position {position}, which is not its stream's"),
        ));
    }
    let offset = u64::from(entry.offset);
    let pack = shared
        .maps
        .pack_record(entry.segment, offset)?
        .ok_or_else(|| {
            Error::corrupt(
                crate::layout::pack_path(&shared.root, entry.segment),
                0,
                "pack of a committed record is missing",
            )
        })?;
    let bytes = &pack.mapping[offset as usize..];
    let r = decode_record(bytes).map_err(|e| crate::cache::decode_error(&pack.path, offset, &e))?;
    let Some(prev) = r.prev_position.filter(|p| *p < position) else {
        return Err(Error::corrupt(
            &pack.path,
            offset,
            "packed record without a chain link to an earlier position",
        ));
    };
    if r.position != position {
        return Err(Error::corrupt(
            &pack.path,
            offset,
            format!("record holds position {}, its entry {position}", r.position),
        ));
    }
    let op = r.control.map(|c| c.op);
    let link = Link {
        position,
        pack: entry.segment,
        offset,
        version: r.version,
        changeset: r.changeset,
        padded_bytes: r.padded_bytes,
        is_event: r.is_event(),
        is_close: op == Some(crate::format::segment::CONTROL_OP_CLOSE),
        is_delete: prev == 0 && op == Some(crate::format::segment::CONTROL_OP_DELETE),
    };
    Ok((link, prev, r.control))
}

/// The tombstone of a stream deleted in the pack (§19, "Tombstones in the pack"): the control
/// block of its chain's newest record when that record restarted the chain as a tombstone, and
/// its position; `None` for any other stream, packed or not.
///
/// # Errors
/// `Corrupt` when the chain's newest record does not verify.
pub fn packed_base(
    shared: &Shared,
    key: StreamKey,
) -> Result<Option<(crate::format::segment::Control, u64)>> {
    let Some(last) = last_position(shared, key)? else {
        return Ok(None);
    };
    // The newest record only: `walk` would go on down a chain a tombstone does not have.
    let (link, _, control) = link_at(shared, key, last)?;
    Ok(control.filter(|_| link.is_delete).map(|c| (c, last)))
}

/// Recovery (segment-format.md §19): write in place the fields of the packed records it
/// verified after the checkpoint, `last` (stream key -> its last packed position) and `ends`
/// (pack -> the end of its last record), before its `syncfs` makes them durable.
pub fn write_recovered(
    shared: &Shared,
    head: u64,
    last: &HashMap<StreamKey, u64>,
    ends: &HashMap<u32, u64>,
) -> Result<()> {
    let mut by_fanout: HashMap<u16, Vec<(StreamKey, u64)>> = HashMap::new();
    for (key, position) in last {
        by_fanout
            .entry(shared.table_of(key.hash))
            .or_default()
            .push((*key, *position));
    }
    for (fanout, streams) in by_fanout {
        let path = shared.table_path(fanout);
        let table = read_table_at(shared, fanout, head)?.ok_or_else(|| {
            Error::corrupt(&path, 0, "table of committed packed streams is missing")
        })?;
        let file = shared
            .backend
            .open(&path, crate::storage::OpenMode::ReadWrite)
            .map_err(|e| Error::io("open table", &path, e))?;
        for (key, position) in streams {
            let Some((_, at)) = table.entry(key) else {
                return Err(Error::corrupt(
                    &path,
                    0,
                    "packed stream of a committed record is not in its table",
                ));
            };
            let mut stream_key = [0u8; 10];
            stream_key[..8].copy_from_slice(&key.hash.to_le_bytes());
            stream_key[8..].copy_from_slice(&key.collision.to_le_bytes());
            let slot = crate::format::pack::encode_table_last(&stream_key, position);
            file.write_all_at(&slot, at + crate::format::pack::TABLE_LAST_OFFSET as u64)
                .map_err(|e| Error::io("write table slot", &path, e))?;
        }
    }
    for (pack, end) in ends {
        let path = crate::layout::pack_path(&shared.root, *pack);
        let file = shared
            .backend
            .open(&path, crate::storage::OpenMode::ReadWrite)
            .map_err(|e| Error::io("open pack", &path, e))?;
        file.write_all_at(
            &crate::format::pack::encode_pack_end(*pack, *end),
            crate::format::pack::PACK_HEADER_BYTES as u64,
        )
        .map_err(|e| Error::io("write pack end", &path, e))?;
    }
    Ok(())
}

/// Record in `REMOVALS` that a rewrite's base record covers `key`'s packed records up to
/// `covers_position` (segment-format.md §19), unless a record there already covers them. The
/// versions it names stop before the base's own (`covers_version - 1`): a snapshot is the event
/// of its version.
pub(crate) fn cover_packed_prefix(
    shared: &Shared,
    key: StreamKey,
    covers_version: u64,
    covers_position: u64,
) -> Result<()> {
    if shared
        .removals
        .get(shared, key)?
        .is_some_and(|(_, p)| p >= covers_position)
    {
        return Ok(());
    }
    shared.removals.append(
        shared,
        crate::format::removals::Removal {
            kind: crate::format::removals::REMOVAL_KIND_TRUNCATE,
            stream_hash: key.hash,
            collision: key.collision,
            covers_version: covers_version.saturating_sub(1),
            covers_position,
            created_us: crate::types::now_us(),
        },
    )
}

/// The fan-out tables' entries as they are on disk (every entry that decodes, committed or
/// not: stream key and first position), each table read once: recovery asks about every new
/// packed stream and every base record after the checkpoint, many of them in the same tables.
#[derive(Default)]
pub struct TableKeys(HashMap<u16, Vec<(StreamKey, u64)>>);

impl TableKeys {
    fn of(&mut self, shared: &Shared, key: StreamKey) -> Result<&[(StreamKey, u64)]> {
        let fanout = shared.table_of(key.hash);
        Ok(match self.0.entry(fanout) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let path = shared.table_path(fanout);
                let bytes = crate::storage::read_whole(&*shared.backend, &path)
                    .map_err(|e| Error::io("read table", &path, e))?
                    .unwrap_or_default();
                let mut entries = Vec::new();
                if bytes.len() >= TABLE_HEADER_BYTES && decode_table_header(&bytes).is_ok() {
                    let mut at = TABLE_HEADER_BYTES;
                    while let Some(Ok((e, len))) = bytes.get(at..).map(TableEntry::decode) {
                        let k = StreamKey {
                            hash: e.stream_hash,
                            collision: e.collision,
                        };
                        entries.push((k, e.first_position));
                        at += len;
                    }
                }
                v.insert(entries)
            }
        })
    }

    /// Whether `key` has an entry in its fan-out's table: it has (or had) a packed prefix.
    pub fn has_entry(&mut self, shared: &Shared, key: StreamKey) -> Result<bool> {
        Ok(self.of(shared, key)?.iter().any(|(k, _)| *k == key))
    }

    /// Whether `key`'s fan-out table holds its entry naming `first_position`, whatever the
    /// head: recovery asks it of a packed stream's first record, whose batch wrote the entry
    /// with it (a torn or failed write of the entry fails the record's verification).
    pub fn has_entry_at(
        &mut self,
        shared: &Shared,
        key: StreamKey,
        first_position: u64,
    ) -> Result<bool> {
        Ok(self.of(shared, key)?.contains(&(key, first_position)))
    }
}

/// Byte ranges of packs whose records a committed rewrite removed (segment-format.md §19,
/// "Space back"), kept by the writer until the 4 KiB blocks they cover whole are given back.
/// In memory only: blocks whose records died in more than one process's lifetime are given back
/// by index compaction's scan of the packs (`compact.rs`), not here.
#[derive(Default)]
pub struct DeadRanges {
    /// Registered, waiting for a durable checkpoint at or past the head of their rewrite:
    /// recovery reads the records after the checkpoint again, and must find them whole.
    pending: Vec<(u64, u32, u64, u64)>,
    /// Per pack, merged ranges `start -> end` (records are contiguous: ranges that touch
    /// merge).
    ranges: HashMap<u32, std::collections::BTreeMap<u64, u64>>,
    count: usize,
}

/// The span of whole blocks inside `[start, end)`, empty when there is none.
pub(crate) fn whole_blocks(start: u64, end: u64) -> (u64, u64) {
    let block = PACK_PUNCH_BLOCK_BYTES;
    let first = start.div_ceil(block) * block;
    let last = end / block * block;
    (first, last.max(first))
}

impl DeadRanges {
    /// The records at `[start, end)` of `pack` were removed by a rewrite committed with the
    /// head at `head`.
    pub fn add(&mut self, head: u64, pack: u32, start: u64, end: u64) {
        debug_assert!(start >= crate::format::pack::PACK_RECORDS_START && start < end);
        self.pending.push((head, pack, start, end));
    }

    /// Ranges wait for a checkpoint.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A checkpoint claiming `head` is durable: the ranges it covers are merged, and the whole
    /// blocks they newly cover are returned as `(pack, offset, len)`, to be given back.
    pub fn due(&mut self, head: u64) -> Vec<(u32, u64, u64)> {
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (after, pack, start, end) in pending {
            if after > head {
                self.pending.push((after, pack, start, end));
                continue;
            }
            let map = self.ranges.entry(pack).or_default();
            // The ranges this one touches, merged into it.
            let (mut s, mut e) = (start, end);
            let touching: Vec<(u64, u64)> = map
                .range(..=end)
                .rev()
                .take_while(|(_, re)| **re >= start)
                .map(|(rs, re)| (*rs, *re))
                .collect();
            let mut covered = Vec::new();
            for (rs, re) in touching {
                map.remove(&rs);
                self.count -= 1;
                s = s.min(rs);
                e = e.max(re);
                covered.push(whole_blocks(rs, re));
            }
            map.insert(s, e);
            self.count += 1;
            // The merged range's whole blocks, less those its parts covered already (given
            // back before). Parts are disjoint and sorted by their start.
            let (first, last) = whole_blocks(s, e);
            covered.sort_unstable();
            let mut at = first;
            for (cs, ce) in covered {
                if cs >= ce {
                    continue; // a part without a whole block
                }
                if cs > at {
                    out.push((pack, at, cs - at));
                }
                at = at.max(ce);
            }
            if at < last {
                out.push((pack, at, last - at));
            }
        }
        if self.count > PACK_DEAD_RANGES_MAX {
            // Scattered deaths: forget the pack with the most ranges (its blocks wait for pack
            // compaction) rather than grow without bound.
            if let Some((&pack, map)) = self.ranges.iter().max_by_key(|(_, m)| m.len()) {
                self.count -= map.len();
                self.ranges.remove(&pack);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{DeadRanges, KeyIndex, Table, TableCache};
    use crate::format::pack::TableEntry;
    use crate::layout::StreamKey;

    /// Entries `from..n` of `table(n)`, as the writer hands them over.
    fn owned(n: usize, from: usize) -> Vec<(TableEntry, u64)> {
        entries(n).into_iter().skip(from).collect()
    }

    fn entries(n: usize) -> Vec<(TableEntry, u64)> {
        (0..n as u64)
            .map(|i| {
                let e = TableEntry {
                    stream_hash: i,
                    collision: 0,
                    first_position: i + 1,
                    stream_id: format!("s-{i}").into(),
                    last_position: None,
                };
                (e, 64 + i * 56)
            })
            .collect()
    }

    fn table(n: usize) -> std::sync::Arc<Table> {
        std::sync::Arc::new(Table::new(entries(n), 0))
    }

    /// A table keeps every id in one buffer and each entry's fields in a slot of its own: each
    /// entry reads back as it went in, in file order, and a flush's last position reaches only
    /// the entry at its offset and of its key, never backwards.
    #[test]
    fn a_table_reads_back_every_entry_as_it_went_in() {
        let ids = ["a", "", "ordre-é-42", "x".repeat(1024).leak()];
        let given: Vec<(TableEntry, u64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let e = TableEntry {
                    stream_hash: 1000 + i as u64,
                    collision: i as u16,
                    first_position: 7,
                    stream_id: (*id).into(),
                    last_position: (i % 2 == 1).then_some(90 + i as u64),
                };
                (e, 64 + 2000 * i as u64)
            })
            .collect();
        let mut t = Table::new(given.clone(), 9000);
        let check = |t: &Table, lasts: [Option<u64>; 4]| {
            assert_eq!(t.len(), 4);
            for (i, ((e, at), (g, gat))) in t.entries().zip(&given).enumerate() {
                assert_eq!(
                    (e.stream_hash, e.collision, e.stream_id, at),
                    (g.stream_hash, g.collision, &*g.stream_id, *gat)
                );
                assert_eq!(e.entry_bytes(), g.entry_bytes());
                assert_eq!(e.last_position, lasts[i], "entry {i}");
                assert_eq!(t.stream_id(i), Some(&*g.stream_id));
                let key = StreamKey {
                    hash: g.stream_hash,
                    collision: g.collision,
                };
                assert_eq!(t.entry(key).map(|(_, at)| at), Some(*gat));
            }
            assert_eq!(t.stream_id(4), None);
        };
        check(&t, [None, Some(91), None, Some(93)]);
        let key = |i: u64| StreamKey {
            hash: 1000 + i,
            collision: i as u16,
        };
        // Another key at that offset, a later position, an earlier one, a missing offset.
        t.set_last_position(64, key(1), 500);
        t.set_last_position(64, key(0), 500);
        t.set_last_position(2064, key(1), 80);
        t.set_last_position(65, key(0), 600);
        assert!(!t.needs_last_position(2064, key(1), 91));
        assert!(t.needs_last_position(6064, key(3), 94));
        check(&t, [Some(500), Some(91), None, Some(93)]);
    }

    #[test]
    fn the_table_cache_holds_at_most_its_bound_of_entries() {
        let mut c = TableCache {
            max: 100,
            ..TableCache::default()
        };
        for fanout in 0..10 {
            c.insert(fanout, table(30));
            assert!(c.entries <= 100, "{} entries", c.entries);
            assert_eq!(c.entries, c.map.values().map(|t| t.len()).sum::<usize>());
            assert!(c.map.contains_key(&fanout), "the table just read is kept");
        }
        assert_eq!(c.map.len(), 3);
        // A table read again replaces its old copy's count.
        c.insert(9, table(10));
        assert_eq!(c.entries, c.map.values().map(|t| t.len()).sum::<usize>());
        // The writer's new entries count too, and push other tables out.
        let packs = super::Packs {
            tables: std::sync::Mutex::new(c),
            ..super::Packs::default()
        };
        // Appended after the table's 10 entries, as the writer appends them.
        let more = owned(70, 10);
        packs.add_entries(9, &more);
        let c = super::lock(&packs.tables);
        assert!(c.entries <= 100, "{} entries", c.entries);
        assert_eq!(c.map[&9].len(), 70);
    }

    #[test]
    fn dead_ranges_give_back_each_whole_block_once_after_their_checkpoint() {
        let mut d = DeadRanges::default();
        // Records of pack 3 at [128, 3000) and [3000, 5000), removed with the head at 10.
        d.add(10, 3, 128, 3000);
        d.add(10, 3, 3000, 5000);
        assert!(d.due(9).is_empty(), "not before a checkpoint covers them");
        // Block 0 holds the header; block 1 is only partly dead.
        assert!(d.due(10).is_empty());
        // [5000, 8200) completes block 1 ([4096, 8192)).
        d.add(11, 3, 5000, 8200);
        assert_eq!(d.due(11), vec![(3, 4096, 4096)]);
        // A range apart from it, then the gap between: blocks 2 to 4, and block 2 is new.
        d.add(12, 3, 12_288, 20_480);
        assert_eq!(d.due(12), vec![(3, 12_288, 8192)]);
        d.add(13, 3, 8200, 12_288);
        assert_eq!(d.due(13), vec![(3, 8192, 4096)]);
        // Another pack is its own.
        d.add(14, 4, 128, 9000);
        assert_eq!(d.due(20), vec![(4, 4096, 4096)]);
        assert_eq!(d.count, 2);
    }

    #[test]
    fn the_key_index_finds_every_key_and_only_those_it_holds() {
        let mut index = KeyIndex::default();
        let key = |i: u64| StreamKey {
            // Keys that share their low bits (one home slot) and keys that differ only in
            // their collision number, as well as spread ones.
            hash: if i % 3 == 0 {
                (i << 40) | 5
            } else {
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            },
            collision: (i % 2) as u16,
        };
        assert_eq!(index.get(key(1)), None);
        index.prefetch(key(1));
        for i in 0..1_000u64 {
            index.insert(key(i), i as u32);
            // The first entry of a key answers.
            index.insert(key(i), u32::MAX - 1);
            assert!(index.len * 2 <= index.slots.len());
        }
        for i in 0..1_000u64 {
            assert_eq!(index.get(key(i)), Some(i as u32), "key {i}");
            let other = StreamKey {
                collision: key(i).collision + 2,
                ..key(i)
            };
            assert_eq!(index.get(other), None);
            index.prefetch(key(i));
        }
        assert_eq!(index.get(key(1_000)), None);
        assert_eq!(index.len, 1_000);
    }

    #[test]
    fn a_table_answers_the_same_before_and_after_its_index_is_built() {
        let key = |i: u64| StreamKey {
            hash: i,
            collision: 0,
        };
        let mut t = (*table(50)).clone();
        let found = |t: &Table, i: u64| t.entry(key(i)).map(|(_, at)| at);
        for i in 0..60 {
            assert_eq!(
                found(&t, i),
                (i < 50).then_some(64 + i * 56),
                "search, key {i}"
            );
        }
        assert!(t.by_key.get().is_none());
        assert_eq!(t.index_of(key(7)), Some(7));
        assert!(t.by_key.get().is_some());
        // Entries added after the index was built are found through it.
        let more = owned(60, 50);
        for (e, at) in more {
            t.push(e.as_ref(), at);
        }
        for i in 0..70 {
            assert_eq!(
                found(&t, i),
                (i < 60).then_some(64 + i * 56),
                "index, key {i}"
            );
            assert_eq!(t.index_of(key(i)), (i < 60).then_some(i as u32));
        }
    }

    #[test]
    fn a_table_read_while_added_entries_wait_for_their_head_is_not_cached() {
        let packs = super::Packs::default();
        let entries = owned(1, 0);
        // Clean: a read may be cached, unless an add comes during it.
        let token = packs.read_token();
        assert!(packs.cacheable(token));
        packs.add_entries(3, &entries);
        assert!(!packs.cacheable(token), "an add during the read");
        // Added, head not published: a read now would miss them as uncommitted.
        let token = packs.read_token();
        assert!(!packs.cacheable(token), "entries waiting for their head");
        packs.entries_published(1);
        assert!(!packs.cacheable(token), "the read began before the head");
        let token = packs.read_token();
        assert!(packs.cacheable(token), "published: reads see the entries");
    }
}
