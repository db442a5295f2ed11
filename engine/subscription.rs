//! Catch-up and live subscriptions (segment-format.md §11): a cursor over the stored events that
//! waits for the writer's next batch when it reaches the head.
//!
//! Catching up and following live are the same read, from the next position on, so there is no
//! switch between them that could lose or repeat an event, and a slow subscriber makes the store
//! buffer nothing: it reads older positions from the segments, like `read_all`.

use crate::catalog::Probe;
use crate::error::{Error, Result};
use crate::projection::{IndexedIter, Selector};
use crate::read::{AllIter, RecordedEvent, StreamIter};
use crate::shared::Shared;
use crate::types::{validate_event_type, Direction, Position};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the first event (position 1, or version 1 of a stream).
    Origin,
    /// Only what is committed after the call.
    Head,
    /// From this global position (`subscribe_all`) or stream version (`subscribe_stream`),
    /// inclusive.
    At(u64),
}

/// Which events of all streams a subscription delivers. The default delivers every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    stream_prefix: Option<String>,
    event_type: Option<String>,
    skip_invalidated: bool,
}

impl Filter {
    /// Every event.
    #[must_use]
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Only events of streams whose id starts with `prefix` (a category such as `order-`).
    #[must_use]
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Filter {
        self.stream_prefix = Some(prefix.into()).filter(|p: &String| !p.is_empty());
        self
    }

    /// Only events of one category: streams whose id starts with `category` and a `-`
    /// (`order` holds `order-42`). The same as the prefix `"<category>-"`; such a subscription
    /// catches up through the category's index (segment-format.md §17).
    #[must_use]
    pub fn category(self, category: &str) -> Filter {
        self.stream_prefix(format!("{category}-"))
    }

    /// The index that can serve this filter: a category (a prefix `c-` where `c` holds no
    /// `-`), else an event type. The whole filter is still applied to what it yields.
    pub(crate) fn selector(&self) -> Option<Selector> {
        let category = self
            .stream_prefix
            .as_deref()
            .and_then(|p| p.strip_suffix('-'))
            .filter(|c| !c.is_empty() && !c.contains('-'));
        match (category, &self.event_type) {
            (Some(c), _) => Some(Selector::Category(c.to_string())),
            (None, Some(t)) => Some(Selector::EventType(t.clone())),
            _ => None,
        }
    }

    /// Only events of this type.
    #[must_use]
    pub fn event_type(mut self, event_type: impl Into<String>) -> Filter {
        self.event_type = Some(event_type.into()).filter(|t: &String| !t.is_empty());
        self
    }

    /// Skip the events of invalidated changesets (`Store::invalidate`), as known when each
    /// stored event is read; the invalidation events are still delivered. A read option: a
    /// persistent subscription does not store it.
    #[must_use]
    pub fn skip_invalidated(mut self) -> Filter {
        self.skip_invalidated = true;
        self
    }

    #[must_use]
    pub fn prefix(&self) -> Option<&str> {
        self.stream_prefix.as_deref()
    }

    #[must_use]
    pub fn type_filter(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(p) = &self.stream_prefix {
            if p.len() > crate::limits::STREAM_ID_BYTES_MAX {
                return Err(Error::InvalidStreamId {
                    reason: "stream prefix filter longer than a stream id can be",
                });
            }
        }
        if let Some(t) = &self.event_type {
            validate_event_type(t)?;
        }
        Ok(())
    }

    #[must_use]
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| event.stream_id().starts_with(p))
            && self
                .event_type
                .as_deref()
                .is_none_or(|t| event.event_type() == t)
    }
}

/// How an all-streams subscription reads stored events: the global order, or an index by
/// category or type when its filter names one (segment-format.md §17).
enum Reader {
    Plain(AllIter),
    Indexed(IndexedIter),
}

impl Reader {
    fn next(&mut self) -> Option<Result<RecordedEvent>> {
        match self {
            Reader::Plain(it) => it.next(),
            Reader::Indexed(it) => it.next(),
        }
    }

    /// Once exhausted, every position before this one was read or skipped.
    fn end(&self) -> u64 {
        match self {
            Reader::Plain(it) => it.end(),
            Reader::Indexed(it) => it.end() + 1,
        }
    }
}

enum Source {
    All {
        /// The next position to deliver (or to skip, when filtered out).
        next: u64,
        iter: Option<Reader>,
    },
    Stream {
        stream: String,
        /// The next version to deliver.
        next: u64,
        iter: Option<StreamIter>,
    },
}

/// A catch-up and live subscription (`Store::subscribe_all`, `Store::subscribe_stream`): a
/// blocking iterator of events that replays the stored ones, then delivers new ones as the
/// writer commits them. It ends when the store is closed; after an error it yields that error
/// once and ends.
///
/// It holds the store's files (like a reader): the store's directory lock is released when the
/// last handle, reader and subscription is dropped. Dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<Shared>,
    source: Source,
    filter: Filter,
    failed: bool,
}

impl Subscription {
    pub(crate) fn all(shared: Arc<Shared>, from: Start, filter: Filter) -> Result<Subscription> {
        filter.validate()?;
        let next = match from {
            Start::Origin => 1,
            Start::Head => shared.head() + 1,
            Start::At(p) => p.max(1),
        };
        Ok(Subscription {
            shared,
            source: Source::All { next, iter: None },
            filter,
            failed: false,
        })
    }

    pub(crate) fn stream(shared: Arc<Shared>, stream: &str, from: Start) -> Result<Subscription> {
        crate::types::validate_stream_id(stream)?;
        let next = match from {
            Start::Origin => 1,
            Start::Head => match shared.catalog.probe(&shared, stream)? {
                Probe::Found(meta) => meta.version() + 1,
                Probe::Absent { .. } => 1,
            },
            Start::At(v) => v.max(1),
        };
        Ok(Subscription {
            shared,
            source: Source::Stream {
                stream: stream.to_string(),
                next,
                iter: None,
            },
            filter: Filter::default(),
            failed: false,
        })
    }

    /// The next global position this subscription will look at (for `subscribe_all`), or the
    /// next stream version (for `subscribe_stream`).
    #[must_use]
    pub fn next_position(&self) -> u64 {
        match &self.source {
            Source::All { next, .. } | Source::Stream { next, .. } => *next,
        }
    }

    /// The next stored event, if one is available now.
    fn next_stored(&mut self) -> Result<Option<RecordedEvent>> {
        loop {
            match &mut self.source {
                Source::All { next, iter } => {
                    if let Some(it) = iter {
                        match it.next() {
                            Some(Ok(e)) => {
                                // Removed events and control records take positions that
                                // readers skip: positions only increase.
                                debug_assert!(e.position().0 >= *next, "positions increase");
                                *next = e.position().0 + 1;
                                if self.filter.matches(&e) {
                                    return Ok(Some(e));
                                }
                                continue;
                            }
                            Some(Err(e)) => return Err(e),
                            None => {
                                // Skipped positions (removed events, control records) count
                                // as read.
                                *next = (*next).max(it.end());
                                *iter = None;
                            }
                        }
                    }
                    if *next > self.shared.head() {
                        return Ok(None);
                    }
                    *iter = Some(match self.filter.selector() {
                        Some(selector) => {
                            let it = IndexedIter::new(
                                Arc::clone(&self.shared),
                                selector,
                                Position(*next),
                            )?;
                            Reader::Indexed(if self.filter.skip_invalidated {
                                it.skip_invalidated()
                            } else {
                                it
                            })
                        }
                        None => {
                            let it = AllIter::new(
                                Arc::clone(&self.shared),
                                Position(*next),
                                Direction::Forward,
                            );
                            Reader::Plain(if self.filter.skip_invalidated {
                                it.skip_invalidated()?
                            } else {
                                it
                            })
                        }
                    });
                }
                Source::Stream { stream, next, iter } => {
                    if let Some(it) = iter {
                        match it.next() {
                            Some(Ok(e)) => {
                                // Dense, except across a snapshot read while it was made.
                                debug_assert!(e.version() >= *next, "versions increase");
                                *next = e.version() + 1;
                                return Ok(Some(e));
                            }
                            Some(Err(e)) => return Err(e),
                            None => *iter = None,
                        }
                    }
                    match self.shared.catalog.probe(&self.shared, stream)? {
                        Probe::Found(meta) if meta.is_deleted() => {
                            return Err(Error::StreamDeleted {
                                stream: stream.clone(),
                            });
                        }
                        Probe::Found(meta) if meta.version() >= *next => {
                            // Versions a snapshot replaced are not read: start at the snapshot.
                            *next = (*next).max(meta.first_version());
                            *iter = Some(StreamIter::new(
                                Arc::clone(&self.shared),
                                &meta,
                                *next,
                                Direction::Forward,
                            ));
                        }
                        _ => return Ok(None),
                    }
                }
            }
        }
    }

    /// The next event, waiting until `deadline` (forever when `None`). `Ok(None)`: the deadline
    /// passed. `Err(Closed)`: the store was closed and every event was delivered.
    pub(crate) fn poll(&mut self, deadline: Option<Instant>) -> Result<Option<RecordedEvent>> {
        if self.failed {
            return Err(Error::Closed);
        }
        loop {
            // Read the change count before looking: a batch published after the look changes
            // it, so the wait below cannot sleep through it.
            let seen = self.shared.changes();
            match self.next_stored() {
                Ok(Some(e)) => return Ok(Some(e)),
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
            if self.shared.is_closed() {
                return Err(Error::Closed);
            }
            // A poisoned store commits nothing more: waiting would be forever.
            self.shared.check_poison()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            self.shared.wait_change(seen, deadline);
        }
    }

    /// Wait for the next event.
    ///
    /// # Errors
    /// `Closed` when the store was closed (every event was delivered), `Poisoned` when it
    /// can commit nothing more, `Corrupt` or `Io` when an event cannot be read.
    pub fn recv(&mut self) -> Result<RecordedEvent> {
        self.poll(None)?.ok_or(Error::Closed)
    }

    /// Wait at most `timeout` for the next event; `Ok(None)` when none came.
    ///
    /// # Errors
    /// As `recv`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        self.poll(Some(Instant::now() + timeout))
    }

    /// The next event if one is committed already; `Ok(None)` otherwise.
    ///
    /// # Errors
    /// As `recv`.
    pub fn try_recv(&mut self) -> Result<Option<RecordedEvent>> {
        self.poll(Some(Instant::now()))
    }
}

impl Iterator for Subscription {
    type Item = Result<RecordedEvent>;

    /// Blocks until the next event; `None` once the store is closed (or after an error).
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.poll(None) {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) | Err(Error::Closed) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn subscriptions_can_move_to_another_thread() {
        assert_send::<Subscription>();
    }
}
