//! What every engine under test provides: the event-store semantics of issue 4 (an
//! expected-version check per append, one global order, durable before `append` returns).

use std::path::Path;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One event to append: 256 bytes of data and 32 of metadata in the workloads.
pub struct Event {
    pub event_type: &'static str,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
}

/// The expected version of an append: any, or exactly this many events so far.
#[derive(Clone, Copy, Debug)]
pub enum Expected {
    Any,
    Exact(u64),
}

pub trait Engine: Send + Sync {
    /// Append atomically, durably; the stream's new version.
    fn append(&self, stream: &str, expected: Expected, events: &[Event]) -> Result<u64>;
    /// Write many events of many streams, as fast as the engine can, durably at the end (setup
    /// only, never timed). Events of one stream are given in version order.
    fn bulk_load(&self, events: &[(String, Event)]) -> Result<()>;
    /// Call `visit` with the data of every event of `stream`, in version order; the count.
    fn read_stream(&self, stream: &str, visit: &mut dyn FnMut(&[u8])) -> Result<u64>;
    /// Call `visit` with the data of every event in global order; the count.
    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<u64>;
}

pub trait Factory {
    fn name(&self) -> &'static str;
    /// Open (or create) the engine's store in `dir`.
    fn open(&self, dir: &Path) -> Result<Box<dyn Engine>>;
}

pub fn err(message: impl Into<String>) -> Box<dyn std::error::Error + Send + Sync> {
    message.into().into()
}
