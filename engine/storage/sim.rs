//! A simulated file system for crash tests (fault-matrix harness SIM).
//!
//! Every file has a live image (what reads see) and a durable image (what survives a power cut),
//! and remembers the writes and length changes made since it was last synced. Directory entries
//! are durable only once their folder is synced (or after `sync_fs`). A power cut keeps the
//! durable state plus a random subset of the unsynced operations, writes torn at 512-byte sector
//! boundaries and sometimes landing as zeros: what a real disk may do (the ALICE study).
//!
//! `cut_power_after(n)` arms a countdown: the n-th I/O call from then on takes the snapshot and
//! fails, and so does every later call, as if the machine had stopped.

use super::{Backend, EntryKind, FileHandle, OpenMode};
use crate::mapping::Mapping;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const SECTOR_BYTES: usize = 512;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Clone, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    live: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    next_inode: u64,
    locks: Vec<PathBuf>,
    /// Calls left before the power cut; `None` when not armed.
    countdown: Option<u64>,
    /// The image taken at the cut.
    after_cut: Option<Box<State>>,
    /// Calls left before one call fails with `fault`; `None` when not armed.
    fault_countdown: Option<u64>,
    fault: Option<io::ErrorKind>,
    /// Calls that failed by injection.
    faults_injected: u64,
    /// The fault that just fired is a short write: the write that meets it lands in part.
    short_write: bool,
    calls: u64,
    rng: u64,
}

impl State {
    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Count one I/O call; fail it (and all later ones) once the power is cut.
    fn tick(&mut self) -> io::Result<()> {
        self.calls += 1;
        self.short_write = false;
        if self.after_cut.is_some() {
            return Err(io::Error::other("simulated power cut"));
        }
        if let Some(n) = self.fault_countdown.as_mut() {
            if *n == 0 {
                self.fault_countdown = None;
                self.faults_injected += 1;
                let kind = self.fault.unwrap_or(io::ErrorKind::Other);
                self.short_write = kind == io::ErrorKind::WriteZero;
                return Err(match kind {
                    // A short write ends as the next write call would see it: the disk is full.
                    io::ErrorKind::StorageFull | io::ErrorKind::WriteZero => {
                        io::Error::from_raw_os_error(28)
                    }
                    io::ErrorKind::Other => io::Error::from_raw_os_error(5),
                    other => io::Error::from(other),
                });
            }
            *n -= 1;
        }
        if let Some(n) = self.countdown.as_mut() {
            if *n == 0 {
                let image = self.power_cut_image();
                self.after_cut = Some(Box::new(image));
                return Err(io::Error::other("simulated power cut"));
            }
            *n -= 1;
        }
        Ok(())
    }

    /// What the disk holds after a power cut now.
    fn power_cut_image(&mut self) -> State {
        let mut inodes = HashMap::new();
        let ids: Vec<u64> = self.inodes.keys().copied().collect();
        for id in ids {
            let inode = self.inodes[&id].clone();
            let mut image = inode.durable.clone();
            for op in &inode.unsynced {
                if self.rand() % 2 == 0 {
                    continue;
                }
                match op {
                    Op::SetLen(len) => image.resize(*len as usize, 0),
                    Op::Write { offset, bytes } => {
                        let end = *offset as usize + bytes.len();
                        if image.len() < end {
                            image.resize(end, 0);
                        }
                        // Sector by sector: kept, lost, or zeros.
                        let mut at = *offset as usize;
                        while at < end {
                            let sector_end = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
                            let piece_end = sector_end.min(end);
                            match self.rand() % 4 {
                                0 => {}
                                1 => image[at..piece_end].fill(0),
                                _ => image[at..piece_end].copy_from_slice(
                                    &bytes[at - *offset as usize..piece_end - *offset as usize],
                                ),
                            }
                            at = piece_end;
                        }
                    }
                }
            }
            inodes.insert(
                id,
                Inode {
                    live: image.clone(),
                    durable: image,
                    unsynced: Vec::new(),
                },
            );
        }
        State {
            inodes,
            live: self.durable.clone(),
            durable: self.durable.clone(),
            next_inode: self.next_inode,
            rng: self.rand(),
            ..State::default()
        }
    }

    fn file(&self, path: &Path) -> io::Result<u64> {
        match self.live.get(path) {
            Some(Entry::File(id)) => Ok(*id),
            Some(Entry::Dir) => Err(io::Error::from(io::ErrorKind::IsADirectory)),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() && p != Path::new("/") => {
                self.live.get(p) == Some(&Entry::Dir)
            }
            _ => true,
        }
    }
}

/// The simulated file system. Clones share one disk.
#[derive(Debug, Clone, Default)]
pub struct SimBackend {
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SimBackend {
    /// An empty disk; `seed` drives every random choice of power cuts.
    #[must_use]
    pub fn new(seed: u64) -> SimBackend {
        let state = State {
            rng: seed | 1,
            ..State::default()
        };
        SimBackend {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Cut the power at the `n`-th I/O call from now.
    pub fn cut_power_after(&self, n: u64) {
        lock(&self.state).countdown = Some(n);
    }

    /// Fail the `n`-th I/O call from now, once, with `kind` (`Other` gives EIO, `StorageFull`
    /// gives ENOSPC, `WriteZero` a short write: a write lands in part, then ENOSPC); every other
    /// call works.
    pub fn fail_call_after(&self, n: u64, kind: io::ErrorKind) {
        let mut s = lock(&self.state);
        s.fault_countdown = Some(n);
        s.fault = Some(kind);
    }

    /// Disarm an injected fault that has not fired yet.
    pub fn clear_fault(&self) {
        lock(&self.state).fault_countdown = None;
    }

    /// How many injected faults have fired.
    #[must_use]
    pub fn faults_injected(&self) -> u64 {
        lock(&self.state).faults_injected
    }

    /// Paths of every file, in order (for tests and fuzzing that damage a store).
    #[must_use]
    pub fn files(&self) -> Vec<PathBuf> {
        let s = lock(&self.state);
        s.live
            .iter()
            .filter(|(_, e)| matches!(e, Entry::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Damage a file from outside, durably: xor `mask` into the byte at `offset` (when inside),
    /// or cut the file to `offset` when `mask` is 0.
    pub fn damage(&self, path: &Path, offset: u64, mask: u8) {
        let mut s = lock(&self.state);
        let Some(Entry::File(id)) = s.live.get(path).copied() else {
            return;
        };
        if let Some(inode) = s.inodes.get_mut(&id) {
            let at = offset as usize;
            if mask == 0 {
                inode.live.truncate(at);
            } else if at < inode.live.len() {
                inode.live[at] ^= mask;
            }
            inode.durable.clone_from(&inode.live);
            inode.unsynced.clear();
        }
    }

    /// Number of I/O calls so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// After a cut: the disk as it comes back (a new machine). Before a cut: cut now.
    #[must_use]
    pub fn reboot(&self) -> SimBackend {
        let mut state = lock(&self.state);
        let image = match state.after_cut.take() {
            Some(image) => *image,
            None => state.power_cut_image(),
        };
        SimBackend {
            state: Arc::new(Mutex::new(image)),
        }
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    writable: bool,
}

impl SimFile {
    /// This handle's inode (the caller has counted the I/O call).
    fn inode<'a>(&self, s: &'a mut State) -> io::Result<&'a mut Inode> {
        s.inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

impl Inode {
    /// A write to the page cache: live at once, durable at the next sync (or by chance at a cut).
    fn write(&mut self, bytes: &[u8], offset: u64) {
        let end = offset as usize + bytes.len();
        if self.live.len() < end {
            self.live.resize(end, 0);
        }
        self.live[offset as usize..end].copy_from_slice(bytes);
        self.unsynced.push(Op::Write {
            offset,
            bytes: bytes.to_vec(),
        });
    }
}

impl FileHandle for SimFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        if let Err(e) = s.tick() {
            if std::mem::take(&mut s.short_write) && self.writable && buf.len() > 1 {
                // The first half reached the page cache before the error.
                self.inode(&mut s)?.write(&buf[..buf.len() / 2], offset);
            }
            return Err(e);
        }
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        self.inode(&mut s)?.write(buf, offset);
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut s = lock(&self.state);
        s.tick()?;
        let inode = self.inode(&mut s)?;
        let start = (offset as usize).min(inode.live.len());
        let n = buf.len().min(inode.live.len() - start);
        buf[..n].copy_from_slice(&inode.live[start..start + n]);
        Ok(n)
    }

    fn len(&self) -> io::Result<u64> {
        let mut s = lock(&self.state);
        s.tick()?;
        Ok(s.inodes.get(&self.inode).map_or(0, |i| i.live.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        let inode = self.inode(&mut s)?;
        inode.live.resize(len as usize, 0);
        inode.unsynced.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        let inode = self.inode(&mut s)?;
        inode.durable.clone_from(&inode.live);
        inode.unsynced.clear();
        Ok(())
    }

    fn sync_fs(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        sync_everything(&mut s);
        Ok(())
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        let mut s = lock(&self.state);
        s.tick()?;
        let inode = self.inode(&mut s)?;
        if len as usize > inode.live.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        Ok(Mapping::from_bytes(inode.live[..len as usize].to_vec()))
    }
}

fn sync_everything(s: &mut State) {
    for inode in s.inodes.values_mut() {
        inode.durable.clone_from(&inode.live);
        inode.unsynced.clear();
    }
    s.durable = s.live.clone();
}

impl Backend for SimBackend {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut s = lock(&self.state);
        s.tick()?;
        if path == Path::new("/dev/urandom") {
            // The store asks for random bytes: make them from the seed.
            let id = s.next_inode + 1_000_000;
            let bytes: Vec<u8> = (0..64).map(|_| s.rand() as u8).collect();
            s.inodes.insert(
                id,
                Inode {
                    live: bytes.clone(),
                    durable: bytes,
                    unsynced: Vec::new(),
                },
            );
            return Ok(Box::new(SimFile {
                state: Arc::clone(&self.state),
                inode: id,
                writable: false,
            }));
        }
        let inode = match mode {
            OpenMode::Read | OpenMode::ReadWrite => s.file(path)?,
            OpenMode::CreateNew => {
                if s.live.contains_key(path) {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                if !s.parent_exists(path) {
                    return Err(io::Error::from(io::ErrorKind::NotFound));
                }
                s.next_inode += 1;
                let id = s.next_inode;
                s.inodes.insert(id, Inode::default());
                s.live.insert(path.to_path_buf(), Entry::File(id));
                id
            }
        };
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode,
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        if s.live.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if !s.parent_exists(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        s.live.insert(path.to_path_buf(), Entry::Dir);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        // The folder's own entries become durable: added, removed and renamed ones.
        let children = |m: &BTreeMap<PathBuf, Entry>| -> Vec<(PathBuf, Entry)> {
            m.iter()
                .filter(|(p, _)| p.parent() == Some(path))
                .map(|(p, e)| (p.clone(), *e))
                .collect()
        };
        let live = children(&s.live);
        let durable = children(&s.durable);
        for (p, _) in durable {
            s.durable.remove(&p);
        }
        for (p, e) in live {
            s.durable.insert(p, e);
        }
        Ok(())
    }

    fn sync_fs(&self, _path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        sync_everything(&mut s);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        s.file(path)?;
        s.live.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.tick()?;
        let id = s.file(from)?;
        s.live.remove(from);
        s.live.insert(to.to_path_buf(), Entry::File(id));
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, EntryKind)>> {
        let mut s = lock(&self.state);
        s.tick()?;
        if s.live.get(path) != Some(&Entry::Dir)
            && s.parent_exists(path)
            && !s.live.contains_key(path)
        {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(s.live
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .filter_map(|(p, e)| {
                let name = p.file_name()?.to_str()?.to_string();
                Some((
                    name,
                    if matches!(e, Entry::Dir) {
                        EntryKind::Dir
                    } else {
                        EntryKind::File
                    },
                ))
            })
            .collect())
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        let mut s = lock(&self.state);
        s.tick()?;
        if path.parent().is_none() || path == Path::new("/") || path.as_os_str().is_empty() {
            return Ok(Some(EntryKind::Dir));
        }
        Ok(s.live.get(path).map(|e| match e {
            Entry::Dir => EntryKind::Dir,
            Entry::File(_) => EntryKind::File,
        }))
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let mut s = lock(&self.state);
        s.tick()?;
        if s.locks.iter().any(|p| p == path) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        s.locks.push(path.to_path_buf());
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
        }))
    }
}

struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        lock(&self.state).locks.retain(|p| p != &self.path);
    }
}
