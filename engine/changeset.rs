//! Changesets: one append to one stream, read back as a unit (segment-format.md §14).

use crate::catalog::StreamMeta;
use crate::error::Result;
use crate::read::{AllIter, RecordedEvent, StreamIter};
use crate::shared::Shared;
use crate::types::{Direction, Position};
use std::iter::Peekable;
use std::sync::Arc;

/// One append to one stream, as stored: its events and the commit metadata given with it.
#[derive(Clone, Debug)]
pub struct Changeset {
    events: Vec<RecordedEvent>,
}

impl Changeset {
    fn new(first: RecordedEvent) -> Changeset {
        Changeset {
            events: vec![first],
        }
    }

    fn last(&self) -> &RecordedEvent {
        // Never empty: made from a first event, only ever pushed to.
        &self.events[self.events.len() - 1]
    }

    /// True when `next` belongs to this changeset: the same stream and number, and neither the
    /// end of this one nor the start of another lies between.
    fn continues_with(&self, next: &RecordedEvent) -> bool {
        let last = self.last();
        !last.is_append_end()
            && !next.is_append_begin()
            && next.changeset() == last.changeset()
            && next.stream_id() == last.stream_id()
            && next.snapshot_of().is_none()
    }

    #[must_use]
    pub fn stream_id(&self) -> &str {
        self.events[0].stream_id()
    }

    /// The changeset's number in its stream (1, 2, 3, ...).
    #[must_use]
    pub fn number(&self) -> u64 {
        self.events[0].changeset()
    }

    /// The commit metadata given with the append (`Append::commit_metadata`).
    #[must_use]
    pub fn commit_metadata(&self) -> &[u8] {
        self.events[0].commit_metadata()
    }

    #[must_use]
    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    #[must_use]
    pub fn into_events(self) -> Vec<RecordedEvent> {
        self.events
    }

    #[must_use]
    pub fn first_version(&self) -> u64 {
        self.events[0].version()
    }

    #[must_use]
    pub fn last_version(&self) -> u64 {
        self.last().version()
    }

    #[must_use]
    pub fn first_position(&self) -> Position {
        self.events[0].position()
    }

    #[must_use]
    pub fn last_position(&self) -> Position {
        self.last().position()
    }

    /// True for the snapshot of a stream (`Store::snapshot_stream`): it stands for the
    /// changesets it replaced and carries the number of the last of them.
    #[must_use]
    pub fn is_snapshot(&self) -> bool {
        self.events[0].snapshot_of().is_some()
    }

    /// False when events of the append were removed by `truncate_before`: the changeset then
    /// holds only the events that remain.
    #[must_use]
    pub fn is_whole(&self) -> bool {
        self.events[0].is_append_begin() && self.last().is_append_end()
    }
}

/// Group a stream of events into changesets.
fn next_group<I>(events: &mut Peekable<I>) -> Option<Result<Changeset>>
where
    I: Iterator<Item = Result<RecordedEvent>>,
{
    let mut group = match events.next()? {
        Ok(e) => Changeset::new(e),
        Err(e) => return Some(Err(e)),
    };
    loop {
        match events.peek() {
            Some(Ok(next)) if group.continues_with(next) => {}
            // An error inside the changeset (its last event so far does not end its append):
            // the error comes now, in its place. A changeset cut short by an I/O error would
            // pass for one a truncation cut (`is_whole` false), and a retry with event ids would
            // be refused as a conflict instead of failing with the I/O error (the `api_model`
            // fuzzer found it, session 10).
            Some(Err(_)) if !group.last().is_append_end() => {
                return events.next().map(|r| r.map(|_| group));
            }
            // An error after it is reported on the next call.
            _ => return Some(Ok(group)),
        }
        if let Some(Ok(next)) = events.next() {
            group.events.push(next);
        }
    }
}

/// The changesets of one stream from a changeset number on (`Store::read_changesets`).
pub struct ChangesetIter {
    /// Before the first `next`: the stream read, still open to options.
    unstarted: Option<StreamIter>,
    events: Option<Peekable<StreamIter>>,
    from: u64,
}

impl ChangesetIter {
    pub(crate) fn new(shared: &Arc<Shared>, meta: &Arc<StreamMeta>, from: u64) -> Result<Self> {
        let start = start_version(shared, meta, from)?;
        Ok(ChangesetIter {
            unstarted: Some(StreamIter::new(
                Arc::clone(shared),
                meta,
                start,
                Direction::Forward,
            )),
            events: None,
            from,
        })
    }

    /// Skip invalidated changesets (`Store::invalidate`) as of this call; the invalidation
    /// events themselves are still yielded, as changesets of their own. Call it before
    /// iterating; afterwards it changes nothing.
    ///
    /// # Errors
    /// `Corrupt` or `Io` reading `REMOVALS`.
    pub fn skip_invalidated(mut self) -> Result<ChangesetIter> {
        if let Some(it) = self.unstarted.take() {
            self.unstarted = Some(it.skip_invalidated()?);
        }
        Ok(self)
    }
}

impl Iterator for ChangesetIter {
    type Item = Result<Changeset>;

    fn next(&mut self) -> Option<Result<Changeset>> {
        if let Some(it) = self.unstarted.take() {
            self.events = Some(it.peekable());
        }
        let events = self.events.as_mut()?;
        loop {
            match next_group(events)? {
                Ok(c) if c.number() < self.from => continue,
                other => return Some(other),
            }
        }
    }
}

/// A version at or before the first event of changeset `from`: the first version of the last
/// segment whose first event belongs to an earlier or the same changeset. A changeset number
/// never decreases with the version, so the segments are searched by halves, reading one record
/// per step; the caller then walks one segment at most.
fn start_version(shared: &Arc<Shared>, meta: &Arc<StreamMeta>, from: u64) -> Result<u64> {
    let state = meta.snapshot();
    let firsts: Vec<u64> = state
        .segments
        .iter()
        .map(|s| s.first_version.max(state.first_version))
        .filter(|v| *v <= state.version)
        .collect();
    let changeset_at = |v: u64| -> Result<u64> {
        let mut it = StreamIter::new(Arc::clone(shared), meta, v, Direction::Forward);
        match it.next() {
            Some(Ok(e)) => Ok(e.changeset()),
            Some(Err(e)) => Err(e),
            None => Ok(u64::MAX),
        }
    };
    let (mut low, mut high) = (0usize, firsts.len());
    // Invariant: every segment before `low` starts at or before changeset `from`; every
    // segment from `high` on starts after it.
    while low < high {
        let mid = low + (high - low) / 2;
        if changeset_at(firsts[mid])? <= from {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(low
        .checked_sub(1)
        .map_or(state.first_version, |i| firsts[i]))
}

/// The version after which changeset `changeset` starts, when the stream holds it whole.
pub(crate) fn version_before(
    shared: &Arc<Shared>,
    meta: &Arc<StreamMeta>,
    changeset: u64,
) -> Result<Option<u64>> {
    match ChangesetIter::new(shared, meta, changeset)?.next() {
        Some(Ok(c)) if c.number() == changeset && c.is_whole() && !c.is_snapshot() => {
            Ok(Some(c.first_version() - 1))
        }
        Some(Err(e)) => Err(e),
        _ => Ok(None),
    }
}

/// One page of `Store::read_all_changesets`.
#[derive(Debug, Clone)]
pub struct ChangesetPage {
    /// Changesets of every stream, in commit order.
    pub changesets: Vec<Changeset>,
    /// Pass this to the next call to go on after the last changeset of this page.
    pub next_checkpoint: Position,
}

/// Up to `limit` changesets of all streams after `checkpoint`.
pub(crate) fn read_all(
    shared: &Arc<Shared>,
    checkpoint: Position,
    limit: usize,
) -> Result<ChangesetPage> {
    let all = AllIter::new(
        Arc::clone(shared),
        Position(checkpoint.0.saturating_add(1)),
        Direction::Forward,
    );
    // The head when the read began: every position up to it is read once the events run out.
    let end = Position((all.end() - 1).max(checkpoint.0));
    let mut events = all.peekable();
    let mut changesets = Vec::new();
    let mut exhausted = false;
    while changesets.len() < limit {
        match next_group(&mut events) {
            Some(c) => changesets.push(c?),
            None => {
                exhausted = true;
                break;
            }
        }
    }
    // After the last changeset returned; past skipped positions (closes, removed events) when
    // nothing follows them, so that the next call does not read them again.
    let next_checkpoint = if exhausted {
        end
    } else {
        changesets
            .last()
            .map_or(checkpoint, Changeset::last_position)
    };
    Ok(ChangesetPage {
        changesets,
        next_checkpoint,
    })
}
