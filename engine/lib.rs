//! streamlog: an embedded, append-only event store.
//!
//! Each stream lives in its own segment files; one group-commit writer thread assigns global
//! positions and makes batches durable; the global order is an index of fixed-size entries. The
//! on-disk format and the commit protocol are described in `segment-format.md`.
#![deny(unsafe_code)]

pub mod format;
pub mod limits;
