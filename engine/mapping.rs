//! The one place that maps files. Every `unsafe` block of the read path is here.
//!
//! A `Mapping` is a read-only view of the first `len` bytes of a file: an `mmap` for the real
//! backend, owned bytes for the simulated one. Readers hold it through an `Arc`, so an event
//! borrowed from it stays valid as long as the caller keeps it, even after the store appends more
//! or removes the file (a mapping keeps its inode alive).

use std::fs::File;
use std::io;
use std::ops::Deref;

pub struct Mapping {
    inner: Inner,
}

enum Inner {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Mapping {
    /// Map the first `len` bytes of `file` read-only.
    ///
    /// # Errors
    /// The OS error of `mmap`, or `InvalidInput` when `len` is beyond the file's end.
    #[allow(unsafe_code)]
    pub fn map_file(file: &File, len: u64) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping::from_bytes(Vec::new()));
        }
        let file_len = file.metadata()?.len();
        if len > file_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot map {len} bytes of a file of {file_len} bytes"),
            ));
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mapping too large"))?;
        // SAFETY: memmap2 requires that the mapped bytes are not changed or cut while mapped, or
        // the program sees torn values or dies of SIGBUS. That holds for every byte a reader looks
        // at, by the store's protocol (segment-format.md §10):
        // - the directory lock keeps other streamlog handles from writing the store's files;
        // - the writer only appends after the published committed length, and readers only look
        //   at bytes below it, which are never written again;
        // - the engine only cuts (truncates) bytes that were never published, above every range a
        //   reader decodes, so no page a reader touches disappears (a page past the new end is
        //   never accessed, so it cannot fault); the one cut of published-looking bytes, the index
        //   tail at open, happens before the store has readers, and drops the cached mapping;
        // - files are removed by unlinking, which keeps the inode of a live mapping.
        // `len` is at most the file's length when mapping, checked above.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(Mapping {
            inner: Inner::Mapped(map),
        })
    }

    /// True for a copy of the file's bytes (simulated backend): it does not see later writes,
    /// so caches must not keep it.
    #[must_use]
    pub fn is_snapshot(&self) -> bool {
        matches!(self.inner, Inner::Owned(_))
    }

    /// A mapping that owns its bytes (simulated backend, tests, fuzzing).
    #[must_use]
    pub fn from_bytes(bytes: Vec<u8>) -> Mapping {
        Mapping {
            inner: Inner::Owned(bytes),
        }
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Mapped(m) => m,
            Inner::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len()).finish()
    }
}
