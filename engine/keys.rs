//! Keyed events: each stream's newest event per key, kept in its keys file by the writer, read
//! by `Store::surface`, rebuilt from the stream when stale (segment-format.md §15).

use crate::cache::MappedSegment;
use crate::catalog::{StreamMeta, StreamState};
use crate::error::{Error, Result};
use crate::format::keys::{content_hash, KeyEntry, KeysHeader, KEYS_HEADER_BYTES};
use crate::format::segment::decode_record;
use crate::layout::{keys_path, StreamKey, TEMP_SUFFIX};
use crate::read::{event_at, RecordedEvent};
use crate::shared::Shared;
use crate::storage::OpenMode;
use crate::types::now_us;
use std::collections::HashMap;
use std::sync::Arc;

/// The newest event of one key.
pub type KeyMap = HashMap<Vec<u8>, KeyEntry>;

/// What a stream's keys file says, checked against the stream's state.
pub enum Loaded {
    /// No file: the stream has no keyed event.
    Missing,
    /// The file cannot be trusted (marked stale by recovery, written for another base record,
    /// or its header does not decode): rebuild it, or scan the stream.
    Stale(String),
    /// The newest entry per key among the stream's readable versions; `end` is where the
    /// entries of committed versions end (what follows is an unacknowledged batch's), `len` the
    /// file's length.
    Fresh { map: KeyMap, end: u64, len: u64 },
}

/// Read and check the keys file of the stream at `key`, in the committed state `state`.
pub fn load(shared: &Shared, key: StreamKey, state: &StreamState) -> Result<Loaded> {
    let path = keys_path(&shared.root, key);
    let Some(bytes) = crate::storage::read_whole(&*shared.backend, &path)
        .map_err(|e| Error::io("read keys file", &path, e))?
    else {
        return Ok(Loaded::Missing);
    };
    let header = match KeysHeader::decode(&bytes) {
        Ok(h) => h,
        Err(e) => return Ok(Loaded::Stale(format!("header: {e}"))),
    };
    if header.store_id != shared.manifest.store_id
        || header.stream_hash != key.hash
        || header.collision != key.collision
    {
        return Err(Error::corrupt(
            &path,
            16,
            "keys file of another store or stream",
        ));
    }
    if header.stale {
        return Ok(Loaded::Stale("marked stale by recovery".into()));
    }
    if header.base_position != state.base_position {
        return Ok(Loaded::Stale(format!(
            "written for base record {}, the stream's is {}",
            header.base_position, state.base_position
        )));
    }
    let mut map = KeyMap::new();
    let mut at = KEYS_HEADER_BYTES;
    while at < bytes.len() {
        let Ok((entry, n)) = KeyEntry::decode(&bytes[at..]) else {
            // The end of the entries, or damage: an unacknowledged batch's torn entries name
            // versions above the committed one; a committed entry that does not decode, or one
            // that decodes after it, means the prefix is not the whole index.
            if let Some(why) = damage_at(&bytes, at, state.version) {
                return Ok(Loaded::Stale(why));
            }
            break;
        };
        if entry.version > state.version {
            // Entries are in version order: the rest belongs to an unacknowledged batch.
            break;
        }
        at += n;
        if entry.version >= state.first_version {
            map.insert(entry.key.clone(), entry);
        }
    }
    Ok(Loaded::Fresh {
        map,
        end: at as u64,
        len: bytes.len() as u64,
    })
}

/// Whether the bytes from `at` on, where an entry does not decode, hold damage to committed
/// entries rather than an unacknowledged batch's torn tail.
fn damage_at(bytes: &[u8], at: usize, committed: u64) -> Option<String> {
    use crate::format::keys::{KeyEntryRaw, KEY_ENTRY_MAGIC};
    use zerocopy::FromBytes;
    if let Ok((raw, _)) = KeyEntryRaw::ref_from_prefix(&bytes[at..]) {
        let v = raw.version.get();
        if raw.magic.get() == KEY_ENTRY_MAGIC && (1..=committed).contains(&v) {
            return Some(format!(
                "entry of committed version {v} at {at} does not decode"
            ));
        }
    }
    let mut next = at + 8;
    while next < bytes.len() {
        if let Ok((e, _)) = KeyEntry::decode(&bytes[next..]) {
            if e.version <= committed {
                return Some(format!(
                    "entry at {at} does not decode, a committed one follows at {next}"
                ));
            }
        }
        next += 8;
    }
    None
}

/// Map every segment of `state` (under the stream's state lock, as stream readers do, so that no
/// segment of another generation is paired with it); `None` when the stream was rewritten since.
fn map_segments(
    shared: &Shared,
    meta: &StreamMeta,
    state: &StreamState,
) -> Result<Option<Vec<Arc<MappedSegment>>>> {
    let guard = meta
        .state
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if guard.generation != state.generation {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(state.segments.len());
    for s in &state.segments {
        let m = shared
            .maps
            .segment(meta.key, s.number, s.end)?
            .ok_or_else(|| {
                Error::corrupt(
                    crate::layout::segment_path(&shared.root, meta.key, s.number),
                    0,
                    "segment holding committed events is missing",
                )
            })?;
        out.push(m);
    }
    Ok(Some(out))
}

/// Every keyed event of the stream in `state`, by scanning its segments; `None` when the stream
/// was rewritten meanwhile.
pub fn scan(
    shared: &Shared,
    meta: &StreamMeta,
    state: &StreamState,
) -> Result<Option<Vec<KeyEntry>>> {
    let Some(segments) = map_segments(shared, meta, state)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (s, mapped) in state.segments.iter().zip(&segments) {
        let bytes = &mapped.mapping[..];
        let mut at = s.header_bytes;
        while at < s.end {
            let r = decode_record(&bytes[at as usize..s.end as usize])
                .map_err(|e| Error::corrupt(&mapped.path, at, format!("committed record: {e}")))?;
            if r.is_event()
                && !r.key.is_empty()
                && r.version >= state.first_version
                && r.version <= state.version
            {
                out.push(KeyEntry {
                    key: r.key.to_vec(),
                    version: r.version,
                    position: r.position,
                    changeset: r.changeset,
                    segment: s.number,
                    offset: u32::try_from(at).unwrap_or(u32::MAX),
                    content_hash: content_hash(
                        &shared.manifest.hash_key,
                        r.event_type,
                        r.metadata,
                        r.data,
                    ),
                });
            }
            at += r.padded_bytes;
        }
    }
    Ok(Some(out))
}

/// Write the keys file of a stream from scratch: a temporary file, synced, renamed over the old
/// one. When the stream has no keyed event, the file is removed (its absence says so). No
/// folder sync: losing the rename or the removal in a crash leaves the stale file, which is
/// rebuilt again.
pub fn write_file(
    shared: &Shared,
    key: StreamKey,
    base_position: u64,
    entries: &[KeyEntry],
) -> Result<u64> {
    let path = keys_path(&shared.root, key);
    let backend = &shared.backend;
    if entries.is_empty() {
        match backend.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove keys file", &path, e)),
        }
        return Ok(0);
    }
    let mut bytes = header(shared, key, base_position, false).to_vec();
    for e in entries {
        e.encode(&mut bytes);
    }
    let tmp = path.with_extension(format!("keys{TEMP_SUFFIX}"));
    let _ = backend.remove_file(&tmp);
    let f = backend
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create keys file", &tmp, e))?;
    f.write_all_at(&bytes, 0)
        .map_err(|e| Error::io("write keys file", &tmp, e))?;
    // Durability: the entries are on disk before the name points to them.
    f.sync_data().map_err(|e| Error::io("fdatasync", &tmp, e))?;
    backend
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename keys file", &tmp, e))?;
    Ok(bytes.len() as u64)
}

/// The header of a keys file of this store.
pub fn header(shared: &Shared, key: StreamKey, base_position: u64, stale: bool) -> [u8; 64] {
    KeysHeader {
        store_id: shared.manifest.store_id,
        stream_hash: key.hash,
        collision: key.collision,
        stale,
        base_position,
        created_us: now_us(),
    }
    .encode()
}

/// The newest entry per key of `entries` (in version order).
pub fn newest(entries: Vec<KeyEntry>) -> KeyMap {
    let mut map = KeyMap::new();
    for e in entries {
        map.insert(e.key.clone(), e);
    }
    map
}

/// The surface of a stream: its newest event for each key, in version order.
pub fn surface(shared: &Arc<Shared>, meta: &Arc<StreamMeta>) -> Result<Vec<RecordedEvent>> {
    // A rewrite between reading the state and reading the events starts over (rewrites are
    // rare and each takes a durable commit, so this ends).
    loop {
        let state = meta.snapshot();
        if state.deleted {
            return Err(Error::StreamDeleted {
                stream: meta.id.to_string(),
            });
        }
        let (map, from_file) = match load(shared, meta.key, &state)? {
            Loaded::Missing => return Ok(Vec::new()),
            Loaded::Fresh { map, .. } => (map, true),
            Loaded::Stale(why) => {
                tracing::warn!(stream = %meta.id, %why, "keys file is stale: scanning the stream for its surface");
                match scan(shared, meta, &state)? {
                    Some(entries) => (newest(entries), false),
                    None => continue,
                }
            }
        };
        match read_entries(shared, meta, &state, map)? {
            Read::Events(events) => return Ok(events),
            Read::Rewritten => continue,
            Read::Mismatch(why) if from_file => {
                tracing::warn!(stream = %meta.id, %why, "keys file does not match the stream: scanning it for its surface");
                let Some(entries) = scan(shared, meta, &state)? else {
                    continue;
                };
                match read_entries(shared, meta, &state, newest(entries))? {
                    Read::Events(events) => return Ok(events),
                    Read::Rewritten => continue,
                    Read::Mismatch(why) => {
                        return Err(Error::corrupt(&shared.root, 0, why));
                    }
                }
            }
            Read::Mismatch(why) => return Err(Error::corrupt(&shared.root, 0, why)),
        }
    }
}

enum Read {
    Events(Vec<RecordedEvent>),
    Rewritten,
    Mismatch(String),
}

/// Read the events the entries point to, checking that each is the record they name.
fn read_entries(
    shared: &Shared,
    meta: &StreamMeta,
    state: &StreamState,
    map: KeyMap,
) -> Result<Read> {
    let Some(segments) = map_segments(shared, meta, state)? else {
        return Ok(Read::Rewritten);
    };
    let mut entries: Vec<KeyEntry> = map.into_values().collect();
    entries.sort_by_key(|e| e.version);
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Some(i) = state.segments.iter().position(|s| s.number == e.segment) else {
            return Ok(Read::Mismatch(format!(
                "key entry of version {} names segment {}, not in the stream",
                e.version, e.segment
            )));
        };
        let end = state.segments[i].end;
        let event = match event_at(&segments[i], u64::from(e.offset), end) {
            Ok((event, _)) => event,
            Err(err) => return Ok(Read::Mismatch(err.to_string())),
        };
        if event.version() != e.version
            || event.position().get() != e.position
            || event.key() != e.key.as_slice()
        {
            return Ok(Read::Mismatch(format!(
                "key entry of version {} does not match its record",
                e.version
            )));
        }
        out.push(event);
    }
    Ok(Read::Events(out))
}
