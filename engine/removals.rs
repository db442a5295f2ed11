//! The log of stream truncations and invalidations, `REMOVALS` (segment-format.md §12, §16):
//! which versions and positions of which streams `truncate_before` removed, and which changesets
//! were invalidated. Loaded on first use; a truncation is committed by its record here, an
//! invalidation by its batch.

use crate::error::{Error, Result};
use crate::format::removals::{
    decode_header, encode_header, Removal, REMOVALS_HEADER_BYTES, REMOVAL_BYTES,
    REMOVAL_KIND_INVALIDATE, REMOVAL_KIND_TRUNCATE,
};
use crate::layout::{KeyMap, StreamKey, REMOVALS_FILE};
use crate::options::SyncMode;
use crate::shared::Shared;
use crate::storage::{FileHandle, OpenMode};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// What was removed from one stream: (covers_version, covers_position).
pub type Covers = (u64, u64);

/// The invalidated changesets of each stream, with the position of each invalidation event.
pub type Invalidations = HashMap<StreamKey, BTreeMap<u64, u64>>;

#[derive(Default)]
pub struct Removals {
    loaded: Mutex<Option<Loaded>>,
}

struct Loaded {
    /// Shared with readers, which hold it; changed in place when none does, else copied.
    map: Arc<KeyMap<StreamKey, Covers>>,
    /// Likewise.
    invalid: Arc<Invalidations>,
    /// Where the next record goes: after the last valid one.
    end: u64,
    file: Option<Arc<dyn FileHandle>>,
}

impl Loaded {
    /// The file, opened (and created durably when missing) on first write.
    fn writable(&mut self, shared: &Shared) -> Result<Arc<dyn FileHandle>> {
        if let Some(f) = &self.file {
            return Ok(Arc::clone(f));
        }
        let f = open_or_create(shared)?;
        self.file = Some(Arc::clone(&f));
        Ok(f)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Removals {
    fn load<'a>(&'a self, shared: &Shared) -> Result<MutexGuard<'a, Option<Loaded>>> {
        let mut guard = lock(&self.loaded);
        if guard.is_none() {
            *guard = Some(load(shared)?);
        }
        Ok(guard)
    }

    /// Every truncation, as one map (shared, not copied).
    pub fn map(&self, shared: &Shared) -> Result<Arc<KeyMap<StreamKey, Covers>>> {
        let guard = self.load(shared)?;
        Ok(Arc::clone(&guard.as_ref().expect("loaded above").map))
    }

    /// Drop what was loaded: the next use reads the file again (after recovery changed it).
    pub fn forget(&self) {
        *lock(&self.loaded) = None;
    }

    /// Every invalidation, as one map (shared, not copied).
    pub fn invalidations(&self, shared: &Shared) -> Result<Arc<Invalidations>> {
        let guard = self.load(shared)?;
        Ok(Arc::clone(&guard.as_ref().expect("loaded above").invalid))
    }

    /// Writer only: write invalidation records in the batch being written, without syncing:
    /// the batch's sync makes them durable. Returns the file to `fdatasync` in that mode.
    pub fn write_in_batch(
        &self,
        shared: &Shared,
        records: &[Removal],
    ) -> Result<Option<Arc<dyn FileHandle>>> {
        if records.is_empty() {
            return Ok(None);
        }
        let mut guard = self.load(shared)?;
        let loaded = guard.as_mut().expect("loaded above");
        let path = shared.root.join(REMOVALS_FILE);
        let file = loaded.writable(shared)?;
        let mut bytes = Vec::with_capacity(records.len() * REMOVAL_BYTES as usize);
        for r in records {
            bytes.extend_from_slice(&r.encode());
        }
        file.write_all_at(&bytes, loaded.end)
            .map_err(|e| Error::io("write invalidation", &path, e))?;
        loaded.end += bytes.len() as u64;
        Ok(Some(file))
    }

    /// Writer only: the batch holding these invalidation records was published.
    pub fn published(&self, records: &[Removal]) {
        let mut guard = lock(&self.loaded);
        // Not loaded: the first load reads them from the file.
        if let Some(loaded) = guard.as_mut() {
            // Copied only while a reader holds the old map.
            let invalid = Arc::make_mut(&mut loaded.invalid);
            for r in records {
                add_invalidation(invalid, r);
            }
        }
    }

    /// What truncations removed from `key`.
    pub fn get(&self, shared: &Shared, key: StreamKey) -> Result<Option<Covers>> {
        let guard = self.load(shared)?;
        Ok(guard.as_ref().expect("loaded above").map.get(&key).copied())
    }

    /// Writer only: append a truncation and make it durable. Any error leaves the store to be
    /// poisoned by the caller: the record may be partly written.
    pub fn append(&self, shared: &Shared, removal: Removal) -> Result<()> {
        let mut guard = self.load(shared)?;
        let loaded = guard.as_mut().expect("loaded above");
        let path = shared.root.join(REMOVALS_FILE);
        let file = loaded.writable(shared)?;
        file.write_all_at(&removal.encode(), loaded.end)
            .map_err(|e| Error::io("write removal", &path, e))?;
        // Durability: the truncation is committed by this sync. The file's entry in its folder
        // is durable since `open_or_create`: only its data needs syncing, except with
        // `SyncMode::SyncFs`, whose promise is one `syncfs` per sync.
        if shared.options.sync != SyncMode::SyncFs {
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
        } else {
            file.sync_fs()
                .map_err(|e| Error::io("syncfs", &shared.root, e))?;
        }
        loaded.end += REMOVAL_BYTES;
        let key = StreamKey {
            hash: removal.stream_hash,
            collision: removal.collision,
        };
        // Copied only while a reader holds the old map: every delete of a packed stream appends
        // a record, and a copy per append made a run of deletes quadratic.
        let map = Arc::make_mut(&mut loaded.map);
        let c = map.entry(key).or_insert((0, 0));
        debug_assert_eq!(removal.kind, REMOVAL_KIND_TRUNCATE);
        c.0 = c.0.max(removal.covers_version);
        c.1 = c.1.max(removal.covers_position);
        Ok(())
    }
}

fn load(shared: &Shared) -> Result<Loaded> {
    let path = shared.root.join(REMOVALS_FILE);
    let file = match shared.backend.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                map: Arc::new(KeyMap::default()),
                invalid: Arc::new(HashMap::new()),
                end: REMOVALS_HEADER_BYTES,
                file: None,
            })
        }
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
    // Whole: a short read would drop truncations, and the next append would overwrite them.
    let n = crate::storage::read_full(&*file, &mut bytes, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    bytes.truncate(n);
    let store_id = decode_header(&bytes)
        .map_err(|e| Error::corrupt(&path, 0, format!("removals header: {e}")))?;
    if store_id != shared.manifest.store_id {
        return Err(Error::corrupt(&path, 16, "removals file of another store"));
    }
    let mut map: KeyMap<StreamKey, Covers> = KeyMap::default();
    let mut invalid = Invalidations::new();
    // Invalidations of batches not published yet are added when they are.
    let head = shared.head();
    let mut at = REMOVALS_HEADER_BYTES;
    // Records until the first that does not decode: a torn tail is an unacknowledged
    // truncation, and the next append overwrites it.
    while let Some(slice) = bytes.get(at as usize..(at + REMOVAL_BYTES) as usize) {
        let Ok(r) = Removal::decode(slice) else {
            break;
        };
        at += REMOVAL_BYTES;
        if r.kind == REMOVAL_KIND_INVALIDATE {
            if r.covers_position <= head {
                add_invalidation(&mut invalid, &r);
            }
            continue;
        }
        let c = map
            .entry(StreamKey {
                hash: r.stream_hash,
                collision: r.collision,
            })
            .or_insert((0, 0));
        c.0 = c.0.max(r.covers_version);
        c.1 = c.1.max(r.covers_position);
    }
    Ok(Loaded {
        map: Arc::new(map),
        invalid: Arc::new(invalid),
        end: at,
        file: None,
    })
}

fn add_invalidation(invalid: &mut Invalidations, r: &Removal) {
    invalid
        .entry(StreamKey {
            hash: r.stream_hash,
            collision: r.collision,
        })
        .or_default()
        .insert(r.covers_version, r.covers_position);
}

/// Recovery (segment-format.md §16): cut the invalidation records of batches after the head,
/// then add the records that the kept invalidation events lack. `kept` holds (stream, changeset,
/// position) of the invalidation events in the kept index tail. Made durable by recovery's
/// `syncfs`.
pub fn recover(shared: &Shared, head: u64, kept: &[(StreamKey, u64, u64)]) -> Result<()> {
    let path = shared.root.join(REMOVALS_FILE);
    let bytes = crate::storage::read_whole(&*shared.backend, &path)
        .map_err(|e| Error::io("read", &path, e))?;
    let mut present = std::collections::HashSet::new();
    if let Some(bytes) = &bytes {
        if decode_header(bytes).is_err() {
            // A torn creation holds nothing: `open_or_create` renames a synced file into place.
            return Err(Error::corrupt(&path, 0, "removals header does not decode"));
        }
        let mut at = REMOVALS_HEADER_BYTES;
        while let Some(slice) = bytes.get(at as usize..(at + REMOVAL_BYTES) as usize) {
            let Ok(r) = Removal::decode(slice) else {
                break;
            };
            if r.kind == REMOVAL_KIND_INVALIDATE && r.covers_position > head {
                break;
            }
            if r.kind == REMOVAL_KIND_INVALIDATE {
                present.insert(r.covers_position);
            }
            at += REMOVAL_BYTES;
        }
        if at < bytes.len() as u64 {
            tracing::warn!(path = %path.display(), offset = at, "cutting records of an unacknowledged batch");
            let f = shared
                .backend
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open", &path, e))?;
            f.set_len(at)
                .map_err(|e| Error::io("cut removals", &path, e))?;
        }
    }
    let missing: Vec<Removal> = kept
        .iter()
        .filter(|(_, _, position)| !present.contains(position))
        .map(|(key, changeset, position)| Removal {
            kind: REMOVAL_KIND_INVALIDATE,
            stream_hash: key.hash,
            collision: key.collision,
            covers_version: *changeset,
            covers_position: *position,
            created_us: crate::types::now_us(),
        })
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            records = missing.len(),
            "adding invalidation records their batch did not make durable"
        );
        shared.removals.write_in_batch(shared, &missing)?;
    }
    // Loaded above with the checkpoint's head, not the recovered one.
    shared.removals.forget();
    Ok(())
}

/// Open `REMOVALS` for writing, creating it durably (temporary file, synced, renamed, folder
/// synced) when it does not exist.
fn open_or_create(shared: &Shared) -> Result<Arc<dyn FileHandle>> {
    let header = encode_header(shared.manifest.store_id);
    crate::recovery::open_or_create_root_file(shared, REMOVALS_FILE, &header).map(|(f, _)| f)
}
