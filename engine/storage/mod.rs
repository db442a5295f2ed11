//! The one narrow seam all file I/O goes through (after redb's `StorageBackend`).
//!
//! The engine never calls `std::fs` directly: it asks a `Backend` for files and folders. The real
//! backend (`real.rs`) is plain POSIX I/O plus `mmap`; a simulated backend for crash and fault
//! tests implements the same trait and keeps live and durable copies of every file.

pub mod real;
pub mod sim;

use crate::mapping::Mapping;
use std::io;
use std::path::Path;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet (`O_CREAT | O_EXCL`).
    CreateNew,
}

/// What a folder entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Other,
}

/// An open file.
#[allow(clippy::len_without_is_empty)] // A file's length is what the engine needs; emptiness never.
pub trait FileHandle: Send + Sync {
    /// Write all of `buf` at `offset`.
    ///
    /// # Errors
    /// The OS error; a short write is reported as `WriteZero`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Read up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    ///
    /// # Errors
    /// The OS error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Current length.
    ///
    /// # Errors
    /// The OS error.
    fn len(&self) -> io::Result<u64>;
    /// Set the length (cut or extend with zeros). The engine only cuts bytes it never
    /// published, so no reader's mapped region shrinks (segment-format.md §10).
    ///
    /// # Errors
    /// The OS error.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Give back the blocks of `[offset, offset + len)` (both multiples of the block size): they
    /// read as zeros after, and the file keeps its length. The engine calls it only on bytes no
    /// reader is meant to read again (dead pack blocks, segment-format.md §19). Like a write,
    /// it is durable only after a sync; a crash before leaves the old bytes, which are as dead.
    ///
    /// The default writes zeros (what a file system without holes can do: the bytes read as
    /// after a punch, the space comes back only by compaction).
    ///
    /// # Errors
    /// The OS error; `Unsupported` where the file system has no holes.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 64 << 10;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut at = offset;
        while at < offset + len {
            let n = CHUNK.min(offset + len - at);
            self.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }
    /// The bytes the file takes on the file system (its allocated blocks, holes left out), or
    /// `None` where the backend cannot tell: what a punch gave back is measured by it.
    ///
    /// # Errors
    /// The OS error.
    fn allocated_bytes(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// Make the file's data durable (`fdatasync`).
    ///
    /// # Errors
    /// The OS error; after one, nothing unsynced in this file can be trusted.
    fn sync_data(&self) -> io::Result<()>;
    /// Make everything written on this file's file system durable (`syncfs` on this file's
    /// descriptor): one call for all the files of a batch.
    ///
    /// # Errors
    /// The OS error; after one, nothing unsynced can be trusted.
    fn sync_fs(&self) -> io::Result<()>;
    /// Map the first `len` bytes read-only.
    ///
    /// # Errors
    /// The OS error.
    fn map(&self, len: u64) -> io::Result<Mapping>;
}

/// A file system.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Open a file.
    ///
    /// # Errors
    /// The OS error (`NotFound`, `AlreadyExists`, ...).
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>>;
    /// Create one folder (its parent must exist). `AlreadyExists` when it does.
    ///
    /// # Errors
    /// The OS error.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Make a folder's entries durable (`fsync` on the folder).
    ///
    /// # Errors
    /// The OS error.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Make everything written on the file system holding `path` durable (`syncfs`).
    ///
    /// # Errors
    /// The OS error.
    fn sync_fs(&self, path: &Path) -> io::Result<()>;
    /// Remove a file.
    ///
    /// # Errors
    /// The OS error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Rename a file, replacing the target.
    ///
    /// # Errors
    /// The OS error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The entries of a folder, sorted by name. Names that are not UTF-8 are skipped.
    ///
    /// # Errors
    /// The OS error.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<(String, EntryKind)>>;
    /// What `path` is, or `None` when nothing is there.
    ///
    /// # Errors
    /// The OS error, other than `NotFound`.
    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>>;
    /// Take an exclusive lock on the file at `path` (created if missing), held until the
    /// returned guard is dropped. `WouldBlock` when someone else holds it.
    ///
    /// # Errors
    /// The OS error.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>>;
}

/// The first `len` bytes of a file (fewer if it is shorter); `None` when it does not exist.
///
/// # Errors
/// The OS error other than `NotFound`.
pub fn read_prefix(backend: &dyn Backend, path: &Path, len: usize) -> io::Result<Option<Vec<u8>>> {
    let file = match backend.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; len];
    let n = read_full(&*file, &mut buf, 0)?;
    buf.truncate(n);
    Ok(Some(buf))
}

/// A whole file; `None` when it does not exist.
///
/// # Errors
/// The OS error other than `NotFound`.
pub fn read_whole(backend: &dyn Backend, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match backend.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = usize::try_from(file.len()?).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; len];
    let n = read_full(&*file, &mut buf, 0)?;
    buf.truncate(n);
    Ok(Some(buf))
}

/// Read until `buf` is full or the file ends (`read_at` may return less); the bytes read.
///
/// # Errors
/// The OS error.
pub fn read_full(file: &dyn FileHandle, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}
