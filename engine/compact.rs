//! Index compaction: give back the index space of events removed by snapshots and deletes
//! (segment-format.md §4, "Compacted index files").

use crate::error::{Error, Result};
use crate::format::index::{
    encode_sparse, IndexEntry, IndexHeader, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES,
    INDEX_SPARSE_ENTRY_BYTES,
};
use crate::format::segment::{CONTROL_OP_DELETE, CONTROL_OP_SNAPSHOT};
use crate::format::DecodeError;
use crate::layout::{index_path, parse_index_file_name, StreamKey, INDEX_DIR, TEMP_SUFFIX};
use crate::limits::INDEX_COMPACT_MIN_REMOVED_PERCENT;
use crate::shared::Shared;
use crate::storage::OpenMode;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What `Store::compact_index` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCompaction {
    /// Index files rewritten.
    pub files: u64,
    /// Entries of removed events dropped.
    pub entries_removed: u64,
    /// Bytes of the index files before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Compact every index file that the durable checkpoint covers whole and in which at least
/// `INDEX_COMPACT_MIN_REMOVED_PERCENT` of the entries belong to events removed by a snapshot or a
/// delete. Each is rewritten as a compacted file (a temporary file, synced, renamed over the old
/// one, the folder synced): the rename is atomic, so a crash leaves the old file or the new one,
/// and both read the same.
pub fn compact_index(shared: &Shared) -> Result<IndexCompaction> {
    let _one_at_a_time = shared
        .compacting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    shared.check_poison()?;
    let per_file = shared.manifest.index_entries_per_file;
    let covered = shared.checkpoint_head.load(Ordering::Acquire);
    let dir = shared.root.join(INDEX_DIR);
    let names = shared
        .backend
        .read_dir(&dir)
        .map_err(|e| Error::io("list folder", &dir, e))?;
    let mut report = IndexCompaction::default();
    // Whether a stream's old events are gone: its segment 0 opens with a snapshot or a
    // tombstone covering them, or its tombstone is in a pack (a truncation keeps events in
    // place: their entries stay).
    let mut removed_up_to: HashMap<StreamKey, u64> = HashMap::new();
    for (name, _) in names {
        let Some(file) = parse_index_file_name(&name) else {
            continue;
        };
        let last = (file + 1) * per_file;
        if last > covered {
            continue;
        }
        let mapping = shared.maps.index_file(file)?;
        let header = IndexHeader::decode(&mapping).map_err(|e| {
            Error::corrupt(
                index_path(&shared.root, file),
                0,
                format!("index header: {e}"),
            )
        })?;
        let mut live: Vec<(u64, IndexEntry)> = Vec::new();
        let mut present = 0u64;
        for (position, entry) in entries_of(&mapping, &header, last) {
            let entry = entry.map_err(|e| {
                Error::corrupt(
                    index_path(&shared.root, file),
                    0,
                    format!("committed index entry of position {position}: {e}"),
                )
            })?;
            present += 1;
            let key = StreamKey {
                hash: entry.stream_hash,
                collision: entry.collision,
            };
            let up_to = match removed_up_to.get(&key) {
                Some(c) => *c,
                None => {
                    let segment_base = crate::catalog::base_control(shared, key)?
                        .filter(|c| c.op == CONTROL_OP_DELETE || c.op == CONTROL_OP_SNAPSHOT);
                    // A tombstone in a pack (§19) counts once the durable checkpoint covers
                    // it: its table entry's `last_position` names it by then, which keeps the
                    // entry live when its first record's index entry goes.
                    let base = match segment_base {
                        Some(c) => Some(c),
                        None => crate::packs::packed_base(shared, key)?
                            .filter(|(_, at)| *at <= covered)
                            .map(|(c, _)| c),
                    };
                    let c = base.map_or(0, |c| c.covers_position);
                    removed_up_to.insert(key, c);
                    c
                }
            };
            if position > up_to {
                live.push((position, entry));
            }
        }
        let removed = present - live.len() as u64;
        if removed == 0 || removed * 100 < present * INDEX_COMPACT_MIN_REMOVED_PERCENT {
            continue;
        }
        let path = index_path(&shared.root, file);
        let before = mapping.len() as u64;
        let mut bytes = IndexHeader {
            sparse: true,
            ..header
        }
        .encode()
        .to_vec();
        for (position, entry) in &live {
            bytes.extend_from_slice(&encode_sparse(*position, entry));
        }
        let tmp = dir.join(format!("{name}{TEMP_SUFFIX}"));
        let _ = shared.backend.remove_file(&tmp);
        let f = shared
            .backend
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let result = f
            .write_all_at(&bytes, 0)
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io("write compacted index", &tmp, e))
            .and_then(|()| {
                shared
                    .backend
                    .rename(&tmp, &path)
                    .map_err(|e| Error::io("rename", &tmp, e))
            })
            .and_then(|()| {
                shared
                    .backend
                    .sync_dir(&dir)
                    .map_err(|e| Error::io("fsync directory", &dir, e))
            });
        if let Err(e) = result {
            // The dense file and the compacted one read the same, so nothing acknowledged is
            // at stake; but a failed sync leaves the file system's state unknown: poison, as
            // for any sync failure.
            shared.poison(format!("{e}"));
            return Err(e);
        }
        // Readers holding the old mapping go on reading the old (unlinked) file, which says the
        // same; new lookups map the compacted one.
        shared.maps.forget_index(file);
        tracing::info!(path = %path.display(), removed, kept = live.len(), "compacted an index file");
        report.files += 1;
        report.entries_removed += removed;
        report.bytes_before += before;
        report.bytes_after += bytes.len() as u64;
    }
    Ok(report)
}

/// The entries of a mapped index file up to `last`, dense or compacted, with their positions
/// (a compacted file holds only the live ones).
fn entries_of<'a>(
    bytes: &'a [u8],
    header: &IndexHeader,
    last: u64,
) -> Box<dyn Iterator<Item = (u64, std::result::Result<IndexEntry, DecodeError>)> + 'a> {
    let body = bytes.get(INDEX_HEADER_BYTES as usize..).unwrap_or_default();
    if header.sparse {
        Box::new(
            body.chunks_exact(INDEX_SPARSE_ENTRY_BYTES as usize)
                .map(|c| {
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&c[..8]);
                    let position = u64::from_le_bytes(p);
                    (position, IndexEntry::decode(&c[8..], position))
                })
                .filter(move |(p, _)| *p <= last),
        )
    } else {
        let first = header.first_position;
        Box::new(
            body.chunks_exact(INDEX_ENTRY_BYTES as usize)
                .enumerate()
                .map(move |(i, c)| {
                    let position = first + i as u64;
                    (position, IndexEntry::decode(c, position))
                })
                .filter(move |(p, _)| *p <= last),
        )
    }
}

/// The writer removed `events` events by a snapshot or a delete: whether a background
/// compaction is due, once enough have been removed (`INDEX_AUTO_COMPACT_REMOVED_MIN`, at least
/// half an index file) and none is running. The writer then writes a durable checkpoint (the
/// compaction covers only what one covers) and calls `start_background`.
pub fn compaction_due(shared: &Arc<Shared>, events: u64) -> bool {
    let threshold = crate::limits::INDEX_AUTO_COMPACT_REMOVED_MIN
        .max(shared.manifest.index_entries_per_file / 2);
    let removed = shared
        .removed_since_compaction
        .fetch_add(events, Ordering::AcqRel)
        + events;
    if removed < threshold {
        return false;
    }
    let slot = shared
        .compactor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.as_ref().is_none_or(|h| h.is_finished())
}

/// Compact the index in a background thread, off the writer's path; the store joins it when it
/// closes. It compacts what the last durable checkpoint covers.
pub fn start_background(shared: &Arc<Shared>) {
    let mut slot = shared
        .compactor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    if let Some(done) = slot.take() {
        let _ = done.join();
    }
    shared.removed_since_compaction.store(0, Ordering::Release);
    let background = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("streamlog-compact".into())
        .spawn(move || match compact_index(&background) {
            Ok(r) if r.files > 0 => tracing::info!(
                files = r.files,
                removed = r.entries_removed,
                bytes_before = r.bytes_before,
                bytes_after = r.bytes_after,
                "index compacted in the background"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background index compaction failed"),
        });
    match spawned {
        Ok(handle) => *slot = Some(handle),
        Err(e) => tracing::warn!(error = %e, "could not start the background index compaction"),
    }
}
