//! The journal (segment-format.md §18): the writer's one synced file per batch, and its replay
//! at open.

use crate::cache::decode_error;
use crate::error::{Error, Result};
use crate::format::index::{INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};
use crate::format::journal::{
    decode_file_header, decode_frame, encode_file_header, peek_frame, Op, Target,
    FRAME_HEADER_BYTES, JOURNAL_HEADER_BYTES,
};
use crate::layout::{fanout_dir, index_path, keys_path, segment_path, StreamKey, JOURNAL_FILE};
use crate::limits::{JOURNAL_GROW_BYTES, SEGMENT_BYTES_MAX};
use crate::shared::Shared;
use crate::storage::{read_full, FileHandle, OpenMode};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

type Handle = Arc<dyn FileHandle>;

/// The writer's end of the journal.
pub struct Journal {
    file: Handle,
    path: PathBuf,
    /// Where the next frame goes.
    offset: u64,
    /// The next frame's sequence number.
    sequence: u64,
    /// Bytes of the file known to exist (written, zeros ahead of the frames included).
    filled: u64,
    /// Frames were written since the last flush: the files they cover are not durable yet.
    dirty: bool,
    bytes_max: u64,
}

impl Journal {
    /// Open the journal for writing, creating it (durably: its folder entry too) when missing.
    /// `sequence` is the next frame's, from the checkpoint recovery left.
    ///
    /// # Errors
    /// I/O errors; `Corrupt` for a journal of another store.
    pub fn open(shared: &Shared, sequence: u64) -> Result<Journal> {
        let path = shared.root.join(JOURNAL_FILE);
        let header = encode_file_header(shared.manifest.store_id);
        // Created whole under a temporary name, then renamed: a `JOURNAL` without its header
        // never exists (the every-call fault walk failed the header's write of a first version
        // made in place, and the next open called the empty file corrupt).
        let (file, created) =
            crate::recovery::open_or_create_root_file(shared, JOURNAL_FILE, &header)?;
        if !created {
            check_header(shared, &*file, &path)?;
        }
        let filled = file
            .len()
            .map_err(|e| Error::io("stat journal", &path, e))?;
        Ok(Journal {
            file,
            path,
            offset: JOURNAL_HEADER_BYTES,
            sequence,
            filled,
            dirty: false,
            bytes_max: shared.options.journal_bytes,
        })
    }

    /// The sequence number the next frame gets (and the checkpoint names).
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Frames were written since the last flush.
    #[must_use]
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Whether a frame of `len` bytes can ever be journaled (else its batch is synced in place).
    #[must_use]
    pub fn can_hold(&self, len: u64) -> bool {
        JOURNAL_HEADER_BYTES + len <= self.bytes_max
    }

    /// Whether a frame of `len` bytes fits before the journal must start over.
    #[must_use]
    pub fn fits(&self, len: u64) -> bool {
        self.offset + len <= self.bytes_max
    }

    /// Write one sealed frame at the current offset and `fdatasync` the journal. The batch is
    /// durable when this returns.
    ///
    /// # Errors
    /// The I/O error (the caller poisons the store).
    pub fn append(&mut self, frame: &[u8]) -> Result<()> {
        let end = self.offset + frame.len() as u64;
        debug_assert!(
            end <= self
                .bytes_max
                .max(JOURNAL_HEADER_BYTES + frame.len() as u64)
        );
        if end > self.filled {
            // Zeros ahead of the frames: the next frames' syncs change no file size.
            let to = (end + JOURNAL_GROW_BYTES).min(self.bytes_max.max(end));
            let zeros = vec![0u8; (to - self.filled) as usize];
            self.file
                .write_all_at(&zeros, self.filled)
                .map_err(|e| Error::io("grow journal", &self.path, e))?;
            self.filled = to;
        }
        self.file
            .write_all_at(frame, self.offset)
            .map_err(|e| Error::io("write journal", &self.path, e))?;
        crate::killpoint::reached("batch-written");
        // Durability: nothing of this batch is acknowledged before this sync returns.
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        self.offset = end;
        self.sequence += 1;
        self.dirty = true;
        Ok(())
    }

    /// After a flush (every file the frames cover is durable, and a synced checkpoint names the
    /// next sequence at the start): new frames start over at the beginning.
    pub fn restart(&mut self) {
        self.offset = JOURNAL_HEADER_BYTES;
        self.dirty = false;
    }

    /// At a clean close, after the clean checkpoint is durable: give the space back. Nothing in
    /// the file is needed any more, so a failure is only a warning.
    pub fn shrink(&mut self) {
        if let Err(e) = self.file.set_len(JOURNAL_HEADER_BYTES) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not shrink the journal");
        }
    }
}

fn check_header(shared: &Shared, file: &dyn FileHandle, path: &PathBuf) -> Result<()> {
    let mut header = [0u8; JOURNAL_HEADER_BYTES as usize];
    let n = read_full(file, &mut header, 0).map_err(|e| Error::io("read journal", path, e))?;
    let store_id = decode_file_header(&header[..n]).map_err(|e| decode_error(path, 0, &e))?;
    if store_id != shared.manifest.store_id {
        return Err(Error::corrupt(path, 16, "JOURNAL of another store"));
    }
    Ok(())
}

/// What replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub frames: u64,
    /// The sequence the next frame gets.
    pub next_sequence: u64,
    /// The last position a replayed frame covers (0: none).
    pub last_position: u64,
}

/// Replay the frames from the checkpoint's `(sequence, offset)` on, in order, while they
/// verify: each is a whole batch, written at the offsets it names. Stops at the first frame
/// that does not decode or that is not the next in sequence: the torn or absent frame of a
/// batch that was never acknowledged. Replaying writes the same bytes again, so a crash during
/// replay only means replaying again. The caller makes the result durable.
///
/// # Errors
/// I/O errors; `Corrupt` when the journal belongs to another store or a verified frame names an
/// impossible write.
pub fn replay(shared: &Shared, sequence: u64, offset: u64) -> Result<Replayed> {
    let mut out = Replayed {
        frames: 0,
        next_sequence: sequence,
        last_position: 0,
    };
    if sequence == 0 {
        return Ok(out);
    }
    let path = shared.root.join(JOURNAL_FILE);
    let file = match shared.backend.open(&path, OpenMode::Read) {
        Ok(f) => f,
        // Created durably before its first frame: missing means no frame was ever written.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("open journal", &path, e)),
    };
    check_header(shared, &*file, &path)?;
    let len = file
        .len()
        .map_err(|e| Error::io("stat journal", &path, e))?;
    let mut at = offset.max(JOURNAL_HEADER_BYTES);
    let mut files = Files::default();
    let mut head = [0u8; FRAME_HEADER_BYTES];
    while at + FRAME_HEADER_BYTES as u64 <= len {
        let n =
            read_full(&*file, &mut head, at).map_err(|e| Error::io("read journal", &path, e))?;
        let Ok(frame) = peek_frame(&head[..n], shared.manifest.store_id) else {
            break;
        };
        if frame.sequence != out.next_sequence || at + u64::from(frame.frame_bytes) > len {
            break;
        }
        let mut bytes = vec![0u8; frame.frame_bytes as usize];
        let n =
            read_full(&*file, &mut bytes, at).map_err(|e| Error::io("read journal", &path, e))?;
        let Ok((frame, ops)) = decode_frame(&bytes[..n], shared.manifest.store_id) else {
            break;
        };
        for op in ops {
            apply(shared, &mut files, op, &path, at)?;
        }
        out.frames += 1;
        out.next_sequence += 1;
        out.last_position = out.last_position.max(frame.last_position);
        at += u64::from(frame.frame_bytes);
    }
    // The chain ends at `at`: a torn or absent frame, or damage. The writer writes frame `n + 1`
    // only after frame `n`'s sync returned, so a whole frame `n + 1` after a broken frame `n`
    // means synced bytes changed: corruption, not a torn tail.
    if let Some(next_at) = find_frame(&*file, at + 8, len, shared, out.next_sequence + 1, &path)? {
        return Err(Error::corrupt(
            &path,
            at,
            format!(
                "journal frame {} does not verify, but frame {} after it (at {next_at}) does: \
                 synced data was damaged",
                out.next_sequence,
                out.next_sequence + 1
            ),
        ));
    }
    if out.frames > 0 {
        tracing::warn!(
            frames = out.frames,
            last_position = out.last_position,
            "replayed the journal after an unclean close"
        );
    }
    Ok(out)
}

/// The offset of a whole frame with `sequence` at an 8-byte boundary in `from..len`, if any.
fn find_frame(
    file: &dyn FileHandle,
    from: u64,
    len: u64,
    shared: &Shared,
    sequence: u64,
    path: &PathBuf,
) -> Result<Option<u64>> {
    if from >= len {
        return Ok(None);
    }
    let mut rest = vec![0u8; usize::try_from(len - from).unwrap_or(0)];
    let n = read_full(file, &mut rest, from).map_err(|e| Error::io("read journal", path, e))?;
    rest.truncate(n);
    let store_id = shared.manifest.store_id;
    for at in (0..rest.len()).step_by(8) {
        let Ok(frame) = peek_frame(&rest[at..], store_id) else {
            continue;
        };
        if frame.sequence == sequence && decode_frame(&rest[at..], store_id).is_ok() {
            return Ok(Some(from + at as u64));
        }
    }
    Ok(None)
}

/// Files opened during one replay.
#[derive(Default)]
struct Files {
    open: HashMap<PathBuf, Handle>,
}

impl Files {
    fn get(&mut self, shared: &Shared, path: &PathBuf, create: bool) -> Result<Handle> {
        if let Some(h) = self.open.get(path) {
            return Ok(Arc::clone(h));
        }
        if self.open.len() >= crate::limits::REPLAY_OPEN_FILES_MAX {
            self.open.clear();
        }
        let backend = &shared.backend;
        let h: Handle = match backend.open(path, OpenMode::ReadWrite) {
            Ok(h) => Arc::from(h),
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    match backend.create_dir(dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io("create folder", dir, e)),
                    }
                }
                Arc::from(
                    backend
                        .open(path, OpenMode::CreateNew)
                        .map_err(|e| Error::io("create file", path, e))?,
                )
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::corrupt(
                    path,
                    0,
                    "a journal frame writes to this file, which is missing",
                ))
            }
            Err(e) => return Err(Error::io("open file to replay", path, e)),
        };
        self.open.insert(path.clone(), Arc::clone(&h));
        Ok(h)
    }
}

fn apply(
    shared: &Shared,
    files: &mut Files,
    op: Op<'_>,
    journal: &PathBuf,
    frame_at: u64,
) -> Result<()> {
    let bad = |why: &str| Error::corrupt(journal, frame_at, format!("journal frame: {why}"));
    let target = match op {
        Op::Create(t) | Op::Write(t, _, _) | Op::Extend(t, _) => t,
    };
    // Names come from numbers only, so a frame can only name the store's own files.
    let (path, limit) = match target {
        Target::Segment {
            hash,
            collision,
            segment,
        } => (
            segment_path(&shared.root, StreamKey { hash, collision }, segment),
            SEGMENT_BYTES_MAX,
        ),
        Target::Keys { hash, collision } => (
            keys_path(&shared.root, StreamKey { hash, collision }),
            u64::from(u32::MAX),
        ),
        Target::Index { file_number } => (
            index_path(&shared.root, file_number),
            INDEX_HEADER_BYTES + shared.manifest.index_entries_per_file * INDEX_ENTRY_BYTES,
        ),
        Target::Pack { pack } => (
            crate::layout::pack_path(&shared.root, pack),
            SEGMENT_BYTES_MAX,
        ),
        Target::Table { number } => {
            if usize::from(number) >= shared.tables().count() {
                return Err(bad("a table number beyond the store's tables"));
            }
            (shared.table_path(number), u64::from(u32::MAX))
        }
    };
    match op {
        Op::Create(_) => {
            match target {
                Target::Segment { hash, .. } | Target::Keys { hash, .. } => {
                    ensure_dir(shared, &fanout_dir(&shared.root, hash))?;
                }
                Target::Table { number } => {
                    ensure_dir(shared, &shared.tables().dir(&shared.root, number))?;
                }
                Target::Pack { .. } => {
                    ensure_dir(shared, &shared.root.join(crate::layout::PACKS_DIR))?;
                }
                Target::Index { .. } => {}
            }
            let h = files.get(shared, &path, true)?;
            h.set_len(0)
                .map_err(|e| Error::io("replay: cut file", &path, e))?;
        }
        Op::Write(_, offset, data) => {
            if offset
                .checked_add(data.len() as u64)
                .is_none_or(|end| end > limit)
            {
                return Err(bad("a write past the file's limit"));
            }
            let h = files.get(shared, &path, false)?;
            h.write_all_at(data, offset)
                .map_err(|e| Error::io("replay: write", &path, e))?;
        }
        Op::Extend(_, len) => {
            if len > limit {
                return Err(bad("a length past the file's limit"));
            }
            let h = files.get(shared, &path, true)?;
            let now = h.len().map_err(|e| Error::io("replay: stat", &path, e))?;
            if now < len {
                h.set_len(len)
                    .map_err(|e| Error::io("replay: extend", &path, e))?;
            }
        }
    }
    Ok(())
}

fn ensure_dir(shared: &Shared, dir: &std::path::Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        match shared.backend.create_dir(parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create folder", parent, e)),
        }
    }
    match shared.backend.create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create folder", dir, e)),
    }
}
