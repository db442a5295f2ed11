//! Index compaction: give back the index space of events removed by snapshots and deletes
//! (segment-format.md §4, "Compacted index files").

use crate::error::{Error, Result};
use crate::format::index::{
    encode_sparse, IndexEntry, IndexHeader, FLAG_PACKED, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES,
    INDEX_SPARSE_ENTRY_BYTES,
};
use crate::format::pack::PACK_RECORDS_START;
use crate::format::segment::{CONTROL_OP_DELETE, CONTROL_OP_SNAPSHOT};
use crate::format::DecodeError;
use crate::layout::{index_path, parse_index_file_name, StreamKey, INDEX_DIR, TEMP_SUFFIX};
use crate::limits::{INDEX_COMPACT_MIN_REMOVED_PERCENT, PACK_PUNCH_BLOCK_BYTES};
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
    /// Packs in which the scan found whole 4 KiB blocks holding only removed records, and gave
    /// them back (segment-format.md §19, "Space back"): blocks given back before are given
    /// back again, at no cost.
    pub packs_punched: u64,
    /// Bytes those packs took on disk (their allocated blocks) before and after; both 0 where
    /// the storage cannot tell.
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
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
    let mut packs = PackScan::default();
    // Files from 0 with none missing: a pack's records below its last seen entry are then all
    // accounted for by the scan (segment-format.md §19, "Space back").
    let mut next_file = 0u64;
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
        if file != next_file {
            packs.stop(&format!("index file {next_file} is missing"));
        }
        next_file = file + 1;
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
            packs.note(shared, &mut report, position, &entry, position > up_to);
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
    packs.finish(shared, &mut report);
    Ok(report)
}

/// The pack records the scan met, one pack at a time, and the whole blocks of each that hold
/// no live record, given back (segment-format.md §19, "Space back"). This is what frees the
/// records of streams removed in an earlier process, or more than the writer's ranges could
/// hold: the writer gives back only the blocks whose records all died in its own lifetime.
///
/// Why a block the scan gives back holds only dead bytes. The scan sees every present entry
/// of positions `1 ..= last` of a file the durable checkpoint covers whole; a pack holds its
/// records in position order, and a pack's positions all come before the next pack's (§19,
/// "Pack file"). So every record below the last entry the scan saw of a pack has its
/// position in the scanned range: either its entry is present, and says whether it is live by
/// the rule compaction uses to drop entries, or compaction dropped it, because it was dead.
/// The records of a truncation, and any record whose length cannot be read, count as live.
/// A present index entry of a packed record, as the scan saw it.
#[derive(Clone, Copy)]
struct PackEntry {
    offset: u64,
    position: u64,
    live: bool,
}

#[derive(Default)]
struct PackScan {
    /// The pack being scanned and its present entries in offset order.
    current: Option<(u32, Vec<PackEntry>)>,
    /// Packs already finished: the scan gives a pack's blocks back only once it has passed it.
    finished_up_to: Option<u32>,
    stopped: bool,
}

impl PackScan {
    fn note(
        &mut self,
        shared: &Shared,
        report: &mut IndexCompaction,
        position: u64,
        entry: &IndexEntry,
        live: bool,
    ) {
        if self.stopped || entry.flags & FLAG_PACKED == 0 {
            return;
        }
        let (pack, offset) = (entry.segment, u64::from(entry.offset));
        if let Some((current, entries)) = &mut self.current {
            if *current == pack {
                if entries.last().is_some_and(|e| e.offset >= offset) {
                    self.stop(&format!("pack {pack}'s records are not in position order"));
                    return;
                }
                entries.push(PackEntry {
                    offset,
                    position,
                    live,
                });
                return;
            }
        }
        if self.finished_up_to.is_some_and(|done| pack <= done)
            || self.current.as_ref().is_some_and(|(c, _)| pack < *c)
        {
            self.stop(&format!("pack {pack} holds positions after a later pack's"));
            return;
        }
        self.finish(shared, report);
        self.current = Some((
            pack,
            vec![PackEntry {
                offset,
                position,
                live,
            }],
        ));
    }

    /// Something the format rules out: give nothing more back in this scan.
    fn stop(&mut self, why: &str) {
        if !self.stopped {
            tracing::error!(why, "pack space is not given back by this compaction");
        }
        self.stopped = true;
        self.current = None;
    }

    /// The scan has passed the current pack: give back its dead blocks.
    fn finish(&mut self, shared: &Shared, report: &mut IndexCompaction) {
        let Some((pack, entries)) = self.current.take() else {
            return;
        };
        self.finished_up_to = Some(pack);
        if self.stopped || (entries.iter().all(|e| e.live) && dense(&entries)) {
            return;
        }
        let holes = dead_holes(shared, pack, &entries);
        if holes.is_empty() {
            return;
        }
        let path = crate::layout::pack_path(&shared.root, pack);
        let file = match shared.backend.open(&path, OpenMode::ReadWrite) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open a pack to give back dead blocks");
                return;
            }
        };
        let before = file.allocated_bytes().ok().flatten();
        for (offset, len) in holes {
            if let Err(e) = file.punch_hole(offset, len) {
                tracing::warn!(path = %path.display(), offset, len, error = %e,
                    "cannot give back dead pack blocks");
                return;
            }
        }
        report.packs_punched += 1;
        if let (Some(b), Ok(Some(a))) = (before, file.allocated_bytes()) {
            report.pack_bytes_before += b;
            report.pack_bytes_after += a;
        }
    }
}

/// Whether a pack's live entries lie with no gap of a whole block between them: then it has
/// no dead block (a cheap test of the common case, before any record is read).
fn dense(entries: &[PackEntry]) -> bool {
    let block = PACK_PUNCH_BLOCK_BYTES;
    entries
        .first()
        .is_some_and(|e| e.offset < PACK_RECORDS_START + block)
        && entries
            .windows(2)
            .all(|w| w[1].offset - w[0].offset <= block)
}

/// The whole blocks of `pack` below its last scanned entry that no live record touches, as
/// merged `(offset, len)` ranges. `entries` are its present entries in offset order.
fn dead_holes(shared: &Shared, pack: u32, entries: &[PackEntry]) -> Vec<(u64, u64)> {
    let block = PACK_PUNCH_BLOCK_BYTES;
    let mut holes = Vec::new();
    // Where the bytes not known to be live start.
    let mut at = PACK_RECORDS_START;
    for (i, e) in entries.iter().enumerate() {
        let next = entries.get(i + 1).map(|n| n.offset);
        if e.live {
            if e.offset > at {
                holes.push((at, e.offset));
            }
            // A live record's end: the next entry's offset when no whole block fits between
            // them, else its own length, read and verified; unknown means live to the next.
            let end = match next {
                Some(n) if n - e.offset <= block => n,
                _ => record_end(shared, pack, e.offset, e.position)
                    .unwrap_or_else(|| next.unwrap_or(u64::MAX)),
            };
            at = at.max(end);
        } else if next.is_none() && e.offset > at {
            // The last entry the scan saw is dead: its own length is not known, so the bytes
            // up to its start are the last ones known.
            holes.push((at, e.offset));
        }
    }
    holes
        .into_iter()
        .filter_map(|(s, e)| {
            let (first, last) = crate::packs::whole_blocks(s, e);
            (last > first).then_some((first, last - first))
        })
        .collect()
}

/// The end (padding included) of the live record of `position` at `offset` of `pack`, when it
/// verifies; `None` otherwise (the caller then keeps more).
fn record_end(shared: &Shared, pack: u32, offset: u64, position: u64) -> Option<u64> {
    let mapped = shared.maps.pack_record(pack, offset).ok()??;
    let bytes = mapped.mapping.get(usize::try_from(offset).ok()?..)?;
    let r = crate::format::segment::decode_record(bytes).ok()?;
    (r.position == position).then_some(offset + r.padded_bytes)
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
