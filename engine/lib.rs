//! streamlog: an embedded, append-only event store.
//!
//! Each stream lives in its own segment files; one group-commit writer thread assigns global
//! positions and makes batches durable; the global order is an index of fixed-size entries. The
//! on-disk format and the commit protocol are described in `segment-format.md`.
//!
//! ```no_run
//! use streamlog::{Store, ExpectedVersion, EventData, Direction, Position};
//! let store = Store::open("./data")?;
//! let r = store.append("order-42", ExpectedVersion::NoStream, [
//!     EventData::new("OrderPlaced", br#"{"total":12}"#.to_vec()).metadata(b"{}".to_vec()),
//! ])?;
//! assert_eq!(r.first_version, 1);
//! for ev in store.read_stream("order-42", 1, Direction::Forward)? {
//!     let ev = ev?;
//!     println!("{} {}", ev.event_type(), String::from_utf8_lossy(ev.data()));
//! }
//! for ev in store.read_all(Position::START, Direction::Forward)? {
//!     let ev = ev?;
//!     println!("{} {}@{}", ev.position(), ev.stream_id(), ev.version());
//! }
//! # Ok::<(), streamlog::Error>(())
//! ```
#![deny(unsafe_code)]

mod cache;
mod catalog;
mod changeset;
mod compact;
pub mod dump;
mod error;
pub mod format;
mod idle;
mod journal;
mod keys;
#[doc(hidden)]
pub mod killpoint;
pub mod layout;
pub mod limits;
pub mod mapping;
mod notify;
mod options;
mod packs;
mod persistent;
mod prefetch;
mod producer;
mod projection;
mod read;
mod recovery;
mod removals;
mod reply;
mod shared;
pub mod storage;
mod store;
mod subscription;
mod types;
mod writer;

pub use changeset::{Changeset, ChangesetIter, ChangesetPage};
pub use compact::IndexCompaction;
pub use error::{Error, Result};
pub use options::{Options, SyncMode};
pub use persistent::{Acker, PersistentSubscription, SubscriptionInfo, Target};
pub use producer::{Pending, Producer};
pub use projection::{category_of, IndexStatus, IndexedIter};
pub use read::{AllIter, RecordedEvent, StreamIter};
pub use recovery::RecoveryReport;
pub use store::{Store, StreamIds};
pub use subscription::{Filter, Start, Subscription};
pub use types::{
    validate_stream_id, Append, AppendResult, Direction, EventData, ExpectedVersion, Position,
};
