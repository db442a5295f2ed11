//! Opening a store: create it, or verify the tail after the checkpoint and cut what no
//! acknowledged append needs (segment-format.md §8).

use crate::cache::decode_error;
use crate::error::{Error, Result};
use crate::format::checkpoint::{Checkpoint, CHECKPOINT_FILE_BYTES};
use crate::format::index::{
    locate, FLAG_BEGIN, FLAG_CONTROL, FLAG_END, FLAG_LINKED, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES,
};
use crate::format::manifest::{Manifest, MANIFEST_BYTES};
use crate::format::segment::{
    decode_record, peek_record_header, RECORD_FLAG_BEGIN, RECORD_FLAG_END, RECORD_PREFIX_BYTES,
};
use crate::format::FORMAT_VERSION;
use crate::layout::{
    index_path, parse_index_file_name, StreamKey, CHECKPOINT_FILE, INDEX_DIR, LOCK_FILE,
    MANIFEST_FILE, STREAMS_DIR, TEMP_SUFFIX,
};
use crate::limits::CACHE_BOUND_MIN;
use crate::options::Options;
use crate::shared::Shared;
use crate::storage::{Backend, EntryKind, OpenMode};
use crate::types::now_us;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What recovery did, for logs and `segment-dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The store was created by this open.
    pub created: bool,
    /// The previous close was clean.
    pub clean: bool,
    /// Head from the checkpoint.
    pub checkpoint_head: u64,
    /// Head after verifying the tail.
    pub head: u64,
    /// Positions after the head whose entries were found and cut.
    pub cut_positions: u64,
    /// Why the scan of the tail stopped.
    pub stop_reason: String,
    /// Journal frames replayed (segment-format.md §18).
    pub replayed_frames: u64,
}

fn random_bytes<const N: usize>(backend: &dyn Backend) -> Result<[u8; N]> {
    let path = Path::new("/dev/urandom");
    let file = backend
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("read random bytes", path, e))?;
    let mut out = [0u8; N];
    let n = file
        .read_at(&mut out, 0)
        .map_err(|e| Error::io("read random bytes", path, e))?;
    if n != N {
        return Err(Error::io(
            "read random bytes",
            path,
            io::Error::from(io::ErrorKind::UnexpectedEof),
        ));
    }
    Ok(out)
}

fn create_dir_all(backend: &dyn Backend, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at {
        if p.as_os_str().is_empty() {
            break;
        }
        match backend
            .kind(p)
            .map_err(|e| Error::io("stat folder", p, e))?
        {
            Some(EntryKind::Dir) => break,
            Some(_) => {
                return Err(Error::io(
                    "open store folder",
                    p,
                    io::Error::from(io::ErrorKind::NotADirectory),
                ))
            }
            None => missing.push(p.to_path_buf()),
        }
        at = p.parent();
    }
    for p in missing.iter().rev() {
        match backend.create_dir(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create store folder", p, e)),
        }
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            backend
                .sync_dir(parent)
                .map_err(|e| Error::io("fsync folder", parent, e))?;
        }
    }
    Ok(())
}

/// Whether the checkpoint that marks this handle open (`CLEAN` clear) is on disk yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMark {
    /// Recovery wrote it and synced it (with everything else it did): nothing to do.
    Durable,
    /// After a clean close recovery wrote nothing: the writer writes the checkpoint it was
    /// handed, and syncs it, before the first thing it writes (segment-format.md §8, step 6).
    Pending,
}

fn read_small(backend: &dyn Backend, path: &Path, len: usize) -> Result<Option<Vec<u8>>> {
    crate::storage::read_prefix(backend, path, len).map_err(|e| Error::io("read", path, e))
}

/// Write a new store's files. The manifest is renamed into place last-but-one and the folder
/// synced, so a crash leaves either no manifest (and the next open starts over) or a complete
/// store.
fn create_store(
    backend: &dyn Backend,
    root: &Path,
    options: &Options,
) -> Result<(Manifest, Checkpoint)> {
    let key: [u8; 24] = random_bytes(backend)?;
    let mut hash_key = [0u8; 16];
    hash_key.copy_from_slice(&key[8..]);
    let manifest = Manifest {
        store_id: u64::from_le_bytes(key[..8].try_into().unwrap_or([1; 8])),
        hash_key,
        index_entries_per_file: options.index_entries_per_file,
        created_us: now_us(),
        format_version: FORMAT_VERSION,
        // Format 7 groups the tables of packed streams (segment-format.md §19); a store
        // created before keeps a table per fan-out folder.
        tables_grouped: true,
    };
    for dir in [INDEX_DIR, STREAMS_DIR] {
        let p = root.join(dir);
        match backend.create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create folder", &p, e)),
        }
    }
    // Not `CLEAN`: if this creation fails after its renames, before its folder sync, the next
    // open must not take it for a clean close (and skip the `syncfs` that makes it durable).
    // Found by the fault-injection walk.
    let checkpoint = Checkpoint {
        store_id: manifest.store_id,
        sequence: 1,
        head: 0,
        clean: false,
        // Journal frames are numbered from 1.
        journal_sequence: 1,
        journal_offset: crate::format::journal::JOURNAL_HEADER_BYTES,
    };
    let cpath = root.join(CHECKPOINT_FILE);
    let tmp = root.join(format!("{CHECKPOINT_FILE}{TEMP_SUFFIX}"));
    write_new_file(
        backend,
        &tmp,
        &checkpoint.encode(),
        checkpoint.slot_offset(),
        CHECKPOINT_FILE_BYTES,
    )?;
    backend
        .rename(&tmp, &cpath)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    // Durability: the manifest appears last; a store without it is recreated from scratch.
    put_manifest(backend, root, &manifest)?;
    tracing::info!(path = %root.display(), "created a new store");
    Ok((manifest, checkpoint))
}

/// Write `MANIFEST` atomically.
fn put_manifest(backend: &dyn Backend, root: &Path, manifest: &Manifest) -> Result<()> {
    put_root_file(backend, root, MANIFEST_FILE, &manifest.encode())
}

/// Write the file `name` in the store's root atomically and durably: `bytes` to a temporary
/// file (removed at open if this is interrupted), synced, renamed into place, the root folder
/// synced. The file never exists without all of `bytes`.
fn put_root_file(backend: &dyn Backend, root: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = root.join(format!("{name}{TEMP_SUFFIX}"));
    write_new_file(backend, &tmp, bytes, 0, bytes.len() as u64)?;
    backend
        .rename(&tmp, &root.join(name))
        .map_err(|e| Error::io("rename", &tmp, e))?;
    backend
        .sync_dir(root)
        .map_err(|e| Error::io("fsync folder", root, e))
}

/// A store of an older format: raise `MANIFEST` to this build's version before anything new is
/// written, so that an older build refuses the store instead of misreading what this one adds
/// (segment-format.md §13). Atomic: a temporary file, synced, renamed, the folder synced.
fn upgrade_manifest(backend: &dyn Backend, root: &Path, manifest: Manifest) -> Result<Manifest> {
    let upgraded = Manifest {
        format_version: FORMAT_VERSION,
        ..manifest
    };
    // Durability: the new version is on disk before any file of that version is written.
    put_manifest(backend, root, &upgraded)?;
    tracing::info!(path = %root.display(), from = manifest.format_version, to = FORMAT_VERSION,
        "raised the store's format version");
    Ok(upgraded)
}

/// A file in the store's root, opened for writing; when missing, created with its `header` by
/// `put_root_file` first, so it never exists without it. `true` with the handle when this call
/// created it.
///
/// # Errors
/// The I/O error.
pub(crate) fn open_or_create_root_file(
    shared: &Shared,
    name: &str,
    header: &[u8],
) -> Result<(Arc<dyn crate::storage::FileHandle>, bool)> {
    let backend = &shared.backend;
    let path = shared.root.join(name);
    let created = match backend.open(&path, OpenMode::ReadWrite) {
        Ok(f) => return Ok((Arc::from(f), false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    put_root_file(&**backend, &shared.root, name, header)?;
    let f = backend
        .open(&path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", &path, e))?;
    Ok((Arc::from(f), created))
}

pub(crate) fn write_new_file(
    backend: &dyn Backend,
    path: &Path,
    bytes: &[u8],
    offset: u64,
    len: u64,
) -> Result<()> {
    // A leftover of an interrupted creation; any failure but its absence is reported.
    match backend.remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", path, e)),
    }
    let f = backend
        .open(path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", path, e))?;
    f.set_len(len).map_err(|e| Error::io("size", path, e))?;
    f.write_all_at(bytes, offset)
        .map_err(|e| Error::io("write", path, e))?;
    f.sync_data().map_err(|e| Error::io("fsync", path, e))?;
    Ok(())
}

/// Open (or create) the store at `root`: the lock, the manifest, the checkpoint, and the
/// verification of the index tail.
pub fn open(
    root: &Path,
    mut options: Options,
    backend: Arc<dyn Backend>,
) -> Result<(Arc<Shared>, Checkpoint, RecoveryReport, OpenMark)> {
    options.validate()?;
    // The writer's cache of open segment files keeps to half of the process's descriptor limit:
    // the other half is the embedding program's (fault-matrix row 16).
    if let Some(limit) = crate::storage::real::open_files_soft_limit() {
        let budget = usize::try_from(limit / 2)
            .unwrap_or(usize::MAX)
            .max(CACHE_BOUND_MIN);
        options.open_files_max = options.open_files_max.min(budget);
    }
    create_dir_all(&*backend, root)?;
    let lock_path = root.join(LOCK_FILE);
    let lock = backend.lock(&lock_path).map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            Error::Locked {
                path: root.to_path_buf(),
            }
        } else {
            Error::io("lock store", &lock_path, e)
        }
    })?;
    let mut report = RecoveryReport::default();
    let entries = backend
        .read_dir(root)
        .map_err(|e| Error::io("list store folder", root, e))?;
    for (name, kind) in &entries {
        let p = root.join(name);
        if name.ends_with(TEMP_SUFFIX) && *kind == EntryKind::File {
            tracing::warn!(path = %p.display(), "removing a file left by an interrupted creation");
            backend
                .remove_file(&p)
                .map_err(|e| Error::io("remove temporary file", &p, e))?;
        } else if ![
            LOCK_FILE,
            MANIFEST_FILE,
            CHECKPOINT_FILE,
            crate::layout::JOURNAL_FILE,
            INDEX_DIR,
            STREAMS_DIR,
            crate::layout::PACKS_DIR,
            crate::layout::TABLES_DIR,
            crate::layout::REMOVALS_FILE,
            crate::layout::SUBSCRIPTIONS_DIR,
            crate::projection::PROJECTIONS_DIR,
        ]
        .contains(&name.as_str())
        {
            tracing::warn!(path = %p.display(), "ignoring a file that is not the store's");
        }
    }
    let mpath = root.join(MANIFEST_FILE);
    let cpath = root.join(CHECKPOINT_FILE);
    // A store made by this open: its new folders are made durable by the `syncfs` below.
    let mut created = false;
    let (manifest, checkpoint) = match read_small(&*backend, &mpath, MANIFEST_BYTES * 2)? {
        None => {
            // Data files are only written once the MANIFEST exists: without one, a store whose
            // folders hold no data is an interrupted creation, and starts over.
            for dir in [INDEX_DIR, STREAMS_DIR] {
                let p = root.join(dir);
                if backend
                    .kind(&p)
                    .map_err(|e| Error::io("stat", &p, e))?
                    .is_some()
                    && !backend
                        .read_dir(&p)
                        .map_err(|e| Error::io("list folder", &p, e))?
                        .is_empty()
                {
                    return Err(Error::corrupt(
                        &mpath,
                        0,
                        "MANIFEST is missing but store files exist",
                    ));
                }
            }
            report.created = true;
            created = true;
            create_store(&*backend, root, &options)?
        }
        Some(bytes) => {
            let mut manifest = Manifest::decode(&bytes).map_err(|e| decode_error(&mpath, 0, &e))?;
            if manifest.format_version < FORMAT_VERSION {
                manifest = upgrade_manifest(&*backend, root, manifest)?;
            }
            let cbytes = read_small(&*backend, &cpath, CHECKPOINT_FILE_BYTES as usize)?
                .ok_or_else(|| Error::corrupt(&cpath, 0, "CHECKPOINT is missing"))?;
            let (checkpoint, slot_errors) =
                Checkpoint::decode_file(&cbytes).map_err(|e| decode_error(&cpath, 0, &e))?;
            for (slot, e) in slot_errors.iter().enumerate() {
                if let Some(e) = e {
                    if checkpoint.sequence > 1 || slot == 0 {
                        tracing::warn!(path = %cpath.display(), slot, error = %e, "checkpoint slot does not decode; using the other one");
                    }
                }
            }
            if checkpoint.store_id != manifest.store_id {
                return Err(Error::corrupt(&cpath, 16, "CHECKPOINT of another store"));
            }
            for dir in [INDEX_DIR, STREAMS_DIR] {
                if backend
                    .kind(&root.join(dir))
                    .map_err(|e| Error::io("stat", root.join(dir), e))?
                    != Some(EntryKind::Dir)
                {
                    return Err(Error::corrupt(root.join(dir), 0, "store folder is missing"));
                }
            }
            (manifest, checkpoint)
        }
    };
    report.clean = checkpoint.clean;
    report.checkpoint_head = checkpoint.head;
    let shared = Arc::new(Shared::new(
        root.to_path_buf(),
        Arc::clone(&backend),
        manifest,
        options,
        checkpoint.head,
        lock,
    ));
    // Step 3a (segment-format.md §18): the batches after the checkpoint that only the journal
    // made durable are written in place again, then made durable in place before anything
    // (the fresh checkpoint below) stops naming their frames.
    let replayed = crate::journal::replay(
        &shared,
        checkpoint.journal_sequence,
        checkpoint.journal_offset,
    )?;
    report.replayed_frames = replayed.frames;
    // Packs (segment-format.md §19), replayed or not: whether lookups need the fan-out tables.
    let packs_dir = shared.root.join(crate::layout::PACKS_DIR);
    if shared
        .backend
        .kind(&packs_dir)
        .map_err(|e| Error::io("stat folder", &packs_dir, e))?
        .is_some()
    {
        shared.packs.mark_present();
    }
    if replayed.frames > 0 {
        crate::killpoint::reached("journal-replayed");
        backend
            .sync_fs(root)
            .map_err(|e| Error::io("syncfs", root, e))?;
    }
    let extended = restore_index_lengths(&shared, checkpoint.head)?;
    let head = verify_tail(&shared, checkpoint.head, &mut report)?;
    report.head = head;
    let fresh = Checkpoint {
        store_id: manifest.store_id,
        sequence: checkpoint.sequence + 1,
        head,
        clean: false,
        // The journal starts over; a store of format 1 or 2 starts numbering frames at 1.
        journal_sequence: replayed.next_sequence.max(1),
        journal_offset: crate::format::journal::JOURNAL_HEADER_BYTES,
    };
    if !created
        && checkpoint.clean
        && replayed.frames == 0
        && !extended
        && head == checkpoint.head
        && report.cut_positions == 0
    {
        // After a clean close nothing is unsynced and there is nothing to cut: only the mark
        // that this handle is open (`CLEAN` clear) must be durable before it writes anything,
        // so that a batch failing later is never mistaken for a clean close. The writer writes
        // and syncs that mark before the first thing it writes (`Writer::mark_open`), not
        // here: an open that only reads then writes nothing at all, and an open costs no sync
        // (segment-format.md §8, step 6).
        shared.publish(head);
        shared
            .checkpoint_head
            .store(head, std::sync::atomic::Ordering::Release);
        return Ok((shared, fresh, report, OpenMark::Pending));
    }
    let cfile = backend
        .open(&cpath, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open checkpoint", &cpath, e))?;
    cut_index_after(&shared, head)?;
    // Leave a checkpoint that is not clean: a crash from now on must verify the tail again.
    cfile
        .write_all_at(&fresh.encode(), fresh.slot_offset())
        .map_err(|e| Error::io("write checkpoint", &cpath, e))?;
    crate::killpoint::reached("recovery-cut");
    // Durability: the cuts above, this checkpoint, and whatever an earlier handle left unsynced
    // (a folder entry made by a batch that failed before its sync) are durable before anything
    // new is written: one `syncfs` whatever the sync mode, so no folder is missed.
    cfile.sync_fs().map_err(|e| Error::io("syncfs", root, e))?;
    if report.cut_positions > 0 || (!report.clean && !created) {
        tracing::warn!(checkpoint_head = report.checkpoint_head, head, cut = report.cut_positions,
            reason = %report.stop_reason, "recovered after an unclean close");
    }
    shared.publish(head);
    shared
        .checkpoint_head
        .store(head, std::sync::atomic::Ordering::Release);
    Ok((shared, fresh, report, OpenMark::Durable))
}

/// Step 3: the last position of the last append after `from` whose entries and records all
/// verify.
fn verify_tail(shared: &Shared, from: u64, report: &mut RecoveryReport) -> Result<u64> {
    let per_file = shared.manifest.index_entries_per_file;
    if from > 0 {
        // The checkpoint's head must be readable: otherwise synced data was lost.
        match shared.maps.index_entry(from)? {
            Ok(_) => {}
            Err(e) => {
                let (file, at) = locate(from, per_file);
                return Err(Error::corrupt(
                    index_path(&shared.root, file),
                    at,
                    format!("entry of the checkpoint's head {from}: {e}"),
                ));
            }
        }
    }
    let mut head = from;
    let mut position = from + 1;
    let mut append_open = false;
    let mut seen = 0u64;
    // Fan-out tables as they are on disk, each read once (segment-format.md §19).
    let mut table_keys = crate::packs::TableKeys::default();
    // Keyed records after the checkpoint: (position, stream, version) (segment-format.md §15);
    // invalidation events: (stream, changeset, position) (§16).
    let mut keyed: Vec<(u64, StreamKey, u64)> = Vec::new();
    let mut invalidations: Vec<(StreamKey, u64, u64)> = Vec::new();
    // Packed records after the checkpoint: (position, stream, pack, end) (§19).
    let mut packed: Vec<(u64, StreamKey, u32, u64)> = Vec::new();
    loop {
        let (file, _) = locate(position, per_file);
        if shared
            .backend
            .kind(&index_path(&shared.root, file))
            .map_err(|e| Error::io("stat index file", index_path(&shared.root, file), e))?
            .is_none()
        {
            report.stop_reason = "end of the index files".into();
            break;
        }
        let first_of_file = locate(position, per_file).1 == INDEX_HEADER_BYTES;
        let entry = match shared.maps.index_entry(position) {
            Ok(Ok(Some(e))) => e,
            // Compaction only touches files the checkpoint covers whole.
            Ok(Ok(None)) => {
                let (file, at) = locate(position, per_file);
                return Err(Error::corrupt(
                    index_path(&shared.root, file),
                    at,
                    format!("position {position} after the checkpoint is in a compacted file"),
                ));
            }
            Ok(Err(e)) => {
                report.stop_reason = format!("index entry of position {position}: {e}");
                break;
            }
            // A new index file holds nothing committed yet: a header that does not decode is
            // an interrupted creation by an unacknowledged batch (step 4 removes the file).
            Err(Error::Corrupt { reason, .. }) if first_of_file => {
                report.stop_reason =
                    format!("index file {file} was not completely created: {reason}");
                break;
            }
            Err(e) => return Err(e),
        };
        seen = position - from;
        if (entry.flags & RECORD_FLAG_BEGIN != 0) == append_open {
            report.stop_reason = format!("append boundaries broken at position {position}");
            break;
        }
        let key = StreamKey {
            hash: entry.stream_hash,
            collision: entry.collision,
        };
        // A removed event's record is gone (or replaced) once its stream was rewritten: the
        // base record of the stream's segment 0 vouches for it (segment-format.md §12).
        match verify_record(
            shared,
            &mut table_keys,
            key,
            entry.segment,
            u64::from(entry.offset),
            position,
            entry.flags,
        )? {
            Ok(v) => {
                if let Some(version) = v.keyed {
                    keyed.push((position, key, version));
                }
                if let Some(changeset) = v.invalidates {
                    invalidations.push((key, changeset, position));
                }
                if let Some(end) = v.packed_end {
                    packed.push((position, key, entry.segment, end));
                }
            }
            Err(reason) => {
                if crate::catalog::segment_base_covers(shared, key)? < position {
                    report.stop_reason = format!("record of position {position}: {reason}");
                    break;
                }
            }
        }
        append_open = entry.flags & RECORD_FLAG_END == 0;
        // A multi-stream append is one unit: the head moves only past its last part
        // (segment-format.md §14).
        if !append_open && entry.flags & FLAG_LINKED == 0 {
            head = position;
        }
        position += 1;
    }
    report.cut_positions = seen.saturating_sub(head - from);
    let mut newest: std::collections::HashMap<StreamKey, u64> = std::collections::HashMap::new();
    for (p, key, version) in keyed {
        if p <= head {
            let v = newest.entry(key).or_insert(0);
            *v = (*v).max(version);
        }
    }
    for (key, version) in newest {
        check_keys_file(shared, key, version)?;
    }
    // The packs' in-place fields of the kept packed records: no flush wrote them (§19).
    let mut last: std::collections::HashMap<StreamKey, u64> = std::collections::HashMap::new();
    let mut ends: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for (p, key, pack, end) in packed {
        if p <= head {
            let l = last.entry(key).or_insert(0);
            *l = (*l).max(p);
            let e = ends.entry(pack).or_insert(0);
            *e = (*e).max(end);
        }
    }
    if !last.is_empty() {
        crate::packs::write_recovered(shared, head, &last, &ends)?;
    }
    invalidations.retain(|(_, _, p)| *p <= head);
    // After a clean close nothing follows the head, in the index or in `REMOVALS`.
    if !report.clean || !invalidations.is_empty() {
        crate::removals::recover(shared, head, &invalidations)?;
    }
    Ok(head)
}

/// What recovery learns from a verified record.
#[derive(Default)]
struct Verified {
    /// A packed record: the end of it in its pack (segment-format.md §19).
    packed_end: Option<u64>,
    /// A keyed event: its version.
    keyed: Option<u64>,
    /// An invalidation event: the changeset it invalidates.
    invalidates: Option<u64>,
}

/// A stream kept keyed records after the checkpoint: its keys file must hold an entry for the
/// newest of them (a decoded prefix that reaches it holds the earlier ones too). If it does not
/// (its writes were not durable), mark it stale, creating it if missing, so that it is rebuilt
/// from the stream (segment-format.md §15). Made durable by recovery's `syncfs`.
fn check_keys_file(shared: &Shared, key: StreamKey, version: u64) -> Result<()> {
    use crate::format::keys::{decode_entries, KeysHeader};
    let path = crate::layout::keys_path(&shared.root, key);
    let bytes = crate::storage::read_whole(&*shared.backend, &path)
        .map_err(|e| Error::io("read keys file", &path, e))?;
    if let Some(bytes) = &bytes {
        if KeysHeader::decode(bytes).is_ok_and(|h| !h.stale)
            && decode_entries(bytes).0.iter().any(|e| e.version == version)
        {
            return Ok(());
        }
    }
    tracing::warn!(path = %path.display(), version, "keys file lacks entries of kept records; marked stale");
    let f = match shared.backend.open(&path, OpenMode::ReadWrite) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => shared
            .backend
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create keys file", &path, e))?,
        Err(e) => return Err(Error::io("open keys file", &path, e)),
    };
    f.write_all_at(&crate::keys::header(shared, key, 0, true), 0)
        .map_err(|e| Error::io("write keys file", &path, e))
}

fn verify_record(
    shared: &Shared,
    table_keys: &mut crate::packs::TableKeys,
    key: StreamKey,
    segment: u32,
    offset: u64,
    position: u64,
    flags: u8,
) -> Result<std::result::Result<Verified, String>> {
    // An I/O error stops the open: it says nothing about the bytes, and cutting on it would
    // throw acknowledged appends away (found by the model property test with faults).
    let packed = flags & crate::format::index::FLAG_PACKED != 0;
    let segment_at = |min_len: u64| match if packed {
        shared.maps.pack(segment, min_len)
    } else {
        shared.maps.segment(key, segment, min_len)
    } {
        Ok(Some(m)) => Ok(Ok(m)),
        Ok(None) => Ok(Err("segment or pack file missing".to_string())),
        Err(e @ Error::Io { .. }) => Err(e),
        Err(e) => Ok(Err(e.to_string())),
    };
    // The shared prefix only: a compact record can end its pack sooner than a §5 header would.
    let mapped = match segment_at(offset + RECORD_PREFIX_BYTES as u64)? {
        Ok(m) => m,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut bytes = &mapped.mapping[offset as usize..];
    let Some(h) = peek_record_header(bytes) else {
        return Ok(Err("no record at the offset".into()));
    };
    let end = offset + u64::from(h.record_bytes);
    let remapped;
    if end > mapped.mapping.len() as u64 {
        remapped = match segment_at(end)? {
            Ok(m) => m,
            Err(reason) => return Ok(Err(reason)),
        };
        bytes = &remapped.mapping[offset as usize..];
    }
    let r = match decode_record(bytes) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if packed != r.prev_position.is_some() {
        return Ok(Err("packed flag differs from the index".into()));
    }
    // A packed stream's first record came with its table entry, in the same batch: without
    // it the stream cannot be found, so the batch did not complete (segment-format.md §19).
    // A tombstone restarts its stream's chain: its entry was written by an earlier batch.
    let tombstone = r.prev_position == Some(0)
        && r.control
            .is_some_and(|c| c.op == crate::format::segment::CONTROL_OP_DELETE);
    if r.prev_position == Some(0)
        && !tombstone
        && !table_keys.has_entry_at(shared, key, position)?
    {
        return Ok(Err(
            "the table entry of a new packed stream is missing".into()
        ));
    }
    if tombstone && !table_keys.has_entry(shared, key)? {
        return Ok(Err(
            "the table entry of a deleted packed stream is missing".into()
        ));
    }
    let verified = Verified {
        packed_end: packed.then_some(offset + r.padded_bytes),
        keyed: (r.is_event() && !r.key.is_empty()).then_some(r.version),
        invalidates: r
            .control
            .filter(|c| c.op == crate::format::segment::CONTROL_OP_INVALIDATE)
            .map(|c| c.target_changeset),
    };
    if r.position != position {
        return Ok(Err(format!("record holds position {}", r.position)));
    }
    if r.flags & (RECORD_FLAG_BEGIN | RECORD_FLAG_END) != flags & (FLAG_BEGIN | FLAG_END) {
        return Ok(Err("append boundaries differ from the index".into()));
    }
    if r.is_event() == (flags & FLAG_CONTROL != 0) {
        return Ok(Err("control flag differs from the index".into()));
    }
    if let Some(c) = r.control {
        // A tombstone in a pack: its `REMOVALS` record, written after its batch was durable,
        // may not have been (segment-format.md §19).
        if tombstone {
            crate::packs::cover_packed_prefix(shared, key, c.covers_version, c.covers_position)?;
        }
        // Snapshots and tombstones are otherwise only written as the base of a segment 0.
        if !packed && segment == 0 && c.is_base() {
            remove_replaced_segments(shared, key, c.next_segment)?;
            // A snapshot or delete of a stream with a packed prefix: its `REMOVALS` record
            // may not have been durable yet (segment-format.md §19).
            if c.op != crate::format::segment::CONTROL_OP_TRUNCATE
                && c.covers_position > 0
                && table_keys.has_entry(shared, key)?
            {
                crate::packs::cover_packed_prefix(
                    shared,
                    key,
                    c.covers_version,
                    c.covers_position,
                )?;
            }
        }
    }
    // A torn write that reached the record's bytes but not all of its padding: every reader
    // takes the committed data to end at the padded end (where the next record goes), so the
    // file is extended with the zeros it lacks, durably.
    let padded_end = offset + r.padded_bytes;
    let file_end = offset + bytes.len() as u64;
    if padded_end > file_end {
        let path = if packed {
            crate::layout::pack_path(&shared.root, segment)
        } else {
            crate::layout::segment_path(&shared.root, key, segment)
        };
        tracing::warn!(path = %path.display(), offset = file_end, bytes = padded_end - file_end,
            "restoring the padding of a committed record");
        let file = shared
            .backend
            .open(&path, crate::storage::OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", &path, e))?;
        file.set_len(padded_end)
            .map_err(|e| Error::io("extend", &path, e))?;
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &path, e))?;
    }
    Ok(Ok(verified))
}

/// A rewrite of segment 0 after the checkpoint: the segments it replaced may remain if the
/// crash came before their removal was durable. Remove them (segment-format.md §12).
fn remove_replaced_segments(shared: &Shared, key: StreamKey, next_segment: u32) -> Result<()> {
    for n in (1..next_segment).rev() {
        let path = crate::layout::segment_path(&shared.root, key, n);
        match shared.backend.kind(&path) {
            Ok(Some(_)) => {
                tracing::warn!(path = %path.display(), "removing a segment replaced by a rewrite of its stream");
                shared.maps.forget_segment(key, n);
                shared
                    .backend
                    .remove_file(&path)
                    .map_err(|e| Error::io("remove segment", &path, e))?;
            }
            Ok(None) => break,
            Err(e) => return Err(Error::io("stat segment", &path, e)),
        }
    }
    Ok(())
}

/// `cut_index_after` cuts an index file and extends it back in two calls; a crash or a fault
/// between them leaves the file short. Extend such a file to its full length again when it still
/// holds every committed entry; one cut below them is left for the reader to report as
/// corruption (fault-matrix row 10).
fn restore_index_lengths(shared: &Shared, committed: u64) -> Result<bool> {
    let per_file = shared.manifest.index_entries_per_file;
    let full = INDEX_HEADER_BYTES + per_file * INDEX_ENTRY_BYTES;
    let dir = shared.root.join(INDEX_DIR);
    let names = match shared.backend.read_dir(&dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("list folder", &dir, e)),
    };
    let mut extended = false;
    for (name, kind) in names {
        let path = dir.join(&name);
        if name.ends_with(TEMP_SUFFIX) && kind == EntryKind::File {
            // An index compaction that did not reach its rename (segment-format.md §4).
            tracing::warn!(path = %path.display(), "removing the file of an interrupted index compaction");
            shared
                .backend
                .remove_file(&path)
                .map_err(|e| Error::io("remove temporary file", &path, e))?;
            continue;
        }
        let Some(file) = parse_index_file_name(&name) else {
            continue;
        };
        let f = shared
            .backend
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open index file", &path, e))?;
        let len = f
            .len()
            .map_err(|e| Error::io("stat index file", &path, e))?;
        // A compacted file is short by design, and wholly below the checkpoint.
        let mut head = [0u8; INDEX_HEADER_BYTES as usize];
        let n = crate::storage::read_full(&*f, &mut head, 0)
            .map_err(|e| Error::io("read index file", &path, e))?;
        if n == head.len()
            && crate::format::index::IndexHeader::decode(&head).is_ok_and(|h| h.sparse)
        {
            continue;
        }
        let first = file * per_file + 1;
        let committed_end = if committed < first {
            INDEX_HEADER_BYTES
        } else if committed >= first + per_file - 1 {
            full
        } else {
            locate(committed + 1, per_file).1
        };
        if len < full && len >= committed_end {
            tracing::warn!(path = %path.display(), len, "extending an index file left short by an interrupted recovery");
            // Durability: made durable by the `syncfs` that ends recovery.
            f.set_len(full)
                .map_err(|e| Error::io("extend index", &path, e))?;
            extended = true;
        }
    }
    Ok(extended)
}

/// Step 4: everything after `head` in the index becomes a hole, and later index files go.
fn cut_index_after(shared: &Shared, head: u64) -> Result<()> {
    let per_file = shared.manifest.index_entries_per_file;
    let (file, offset) = locate(head + 1, per_file);
    let full = INDEX_HEADER_BYTES + per_file * INDEX_ENTRY_BYTES;
    let dir = shared.root.join(INDEX_DIR);
    let path = index_path(&shared.root, file);
    if offset == INDEX_HEADER_BYTES {
        // Nothing committed in this file: remove it whole (its header may be torn); the writer
        // creates it again when it needs it.
        shared.maps.forget_index(file);
        match shared.backend.remove_file(&path) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "removing an index file that holds nothing committed")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove index file", &path, e)),
        }
    } else if let Ok(f) = shared.backend.open(&path, OpenMode::ReadWrite) {
        shared.maps.forget_index(file);
        // Cut to the entry of head + 1 and extend back: the stale entries become zeros.
        f.set_len(offset)
            .map_err(|e| Error::io("cut index", &path, e))?;
        f.set_len(full)
            .map_err(|e| Error::io("extend index", &path, e))?;
    }
    let names = shared
        .backend
        .read_dir(&dir)
        .map_err(|e| Error::io("list folder", &dir, e))?;
    let mut later: Vec<PathBuf> = Vec::new();
    for (name, _) in names {
        match parse_index_file_name(&name) {
            Some(n) if n > file => later.push(dir.join(name)),
            Some(_) => {}
            None => {
                tracing::warn!(path = %dir.join(&name).display(), "ignoring a file that is not the store's")
            }
        }
    }
    for p in later.iter().rev() {
        tracing::warn!(path = %p.display(), "removing an index file that holds only cut entries");
        shared
            .backend
            .remove_file(p)
            .map_err(|e| Error::io("remove index file", p, e))?;
    }
    Ok(())
}
