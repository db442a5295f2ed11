//! The real backend: POSIX files, `fdatasync`, `syncfs`, `flock`, and `mmap` for reads.

use super::{Backend, EntryKind, FileHandle, OpenMode};
use crate::mapping::Mapping;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug, Default, Clone, Copy)]
pub struct RealBackend;

struct RealFile {
    file: File,
}

impl FileHandle for RealFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        if punch_hole_fd(self.file.as_raw_fd(), offset, len) == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocated_bytes(&self) -> io::Result<Option<u64>> {
        use std::os::unix::fs::MetadataExt;
        // `st_blocks` counts 512-byte units whatever the file system's block size.
        Ok(Some(self.file.metadata()?.blocks() * 512))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_fs(&self) -> io::Result<()> {
        if sync_fs_fd(self.file.as_raw_fd()) == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        Mapping::map_file(&self.file, len)
    }
}

impl Backend for RealBackend {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::CreateNew => {
                options.write(true).create_new(true).mode(0o644);
            }
        }
        // O_CLOEXEC is std's default; O_NOFOLLOW keeps a planted symlink from redirecting writes.
        // O_NOATIME: reading a freshly written file would otherwise update its access time
        // (relatime does so once after each change), and reading all streams then left an
        // inode per stream dirty for the next `syncfs` to write: 150 ms at the next open of a
        // store of 100,000 streams (the peers benchmark, W6). Only the files' owner may ask
        // for it; anyone else opens without it.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME);
        let file = match options.open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                options.custom_flags(libc::O_NOFOLLOW);
                options.open(path)?
            }
            other => other?,
        };
        Ok(Box::new(RealFile { file }))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn sync_fs(&self, path: &Path) -> io::Result<()> {
        let dir = File::open(path)?;
        let rc = sync_fs_fd(dir.as_raw_fd());
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, EntryKind)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let kind = file_kind(&entry.file_type()?);
            out.push((name, kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(file_kind(&m.file_type()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        // A lock held for a moment only is waited for: `flock` locks belong to the open file,
        // and a child process the host forks keeps the file open from the fork to its `exec`
        // (which closes it): a store closed and opened again by one thread while another thread
        // spawns a process can find its own old lock still held, for that moment
        // (`tests/segment_dump.rs`, whose tests spawn `segment-dump`, failed about one run in
        // six with `Locked`, session 11). A second opener still gets `Locked`, that much later.
        let started = std::time::Instant::now();
        loop {
            match flock_exclusive(&file) {
                Ok(()) => break,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && started.elapsed() < crate::limits::LOCK_WAIT_MAX =>
                {
                    std::thread::sleep(crate::limits::LOCK_RETRY_INTERVAL);
                }
                Err(e) => return Err(e),
            }
        }
        // The pid is for people reading the folder; the lock is the flock, not the content.
        // Written over the old one at a fixed width, never by truncating first: ext4 writes back
        // a file that was truncated and rewritten when it is closed (`auto_da_alloc`), and the
        // truncation alone was 5% of a reopen's time (`perf`, session 16).
        let line = format!("{:<width$}\n", std::process::id(), width = LOCK_PID_WIDTH);
        file.write_all_at(line.as_bytes(), 0)?;
        if file.metadata()?.len() > line.len() as u64 {
            file.set_len(line.len() as u64)?;
        }
        Ok(Box::new(file))
    }
}

/// Characters of the pid in `LOCK`, padded with spaces: a `u32` takes at most 10.
const LOCK_PID_WIDTH: usize = 10;

fn file_kind(t: &std::fs::FileType) -> EntryKind {
    if t.is_file() {
        EntryKind::File
    } else if t.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::Other
    }
}

#[allow(unsafe_code)]
fn sync_fs_fd(fd: i32) -> i32 {
    // SAFETY: `syncfs` reads no memory of ours; `fd` is an open descriptor owned by the caller for
    // the duration of the call. An invalid descriptor would only make it return EBADF.
    unsafe { libc::syncfs(fd) }
}

#[allow(unsafe_code)]
fn punch_hole_fd(fd: i32, offset: libc::off_t, len: libc::off_t) -> i32 {
    // SAFETY: `fallocate` reads and writes no memory of ours, only plain integers; `fd` is an
    // open descriptor owned by the caller for the duration of the call (an invalid one would
    // only make it return EBADF).
    unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }
}

#[allow(unsafe_code)]
fn flock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: `flock` reads no memory of ours; the descriptor belongs to `file`, which outlives
    // the call. The lock is released when the descriptor is closed (the guard is dropped).
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The process's soft limit on open files, if it has one.
#[allow(unsafe_code)]
#[must_use]
pub fn open_files_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through the pointer, which points at a live,
    // properly aligned local of that type for the whole call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Whether `e` says the process or the system ran out of file descriptors.
#[must_use]
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
