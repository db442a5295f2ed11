//! Store options.

use crate::error::{Error, Result};
use crate::limits::{
    BATCH_APPENDS_MAX_DEFAULT, BATCH_BYTES_MAX_DEFAULT, CACHE_BOUND_MIN, EVENT_BYTES_MAX_CEILING,
    EVENT_BYTES_MAX_DEFAULT, INDEX_ENTRIES_PER_FILE_DEFAULT, INDEX_ENTRIES_PER_FILE_MIN,
    JOURNAL_BYTES_DEFAULT, JOURNAL_BYTES_MIN, MAPPED_SEGMENTS_MAX_DEFAULT, OPEN_FILES_MAX_DEFAULT,
    READ_ALL_WINDOW_BYTES_DEFAULT, READ_ALL_WINDOW_BYTES_MIN, RECORD_OVERHEAD_MAX,
    SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, STREAMS_CACHED_MAX_DEFAULT,
};

/// How the writer makes a batch durable (segment-format.md §7, step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// The default. The batch's writes go to their files unsynced and, as one frame, to the
    /// journal (segment-format.md §18), which alone is `fdatasync`ed: one sync of one
    /// preallocated file per batch, whatever the number of streams it touched. The files the
    /// journal covers are made durable by one `syncfs` when the journal is full (option
    /// `journal_bytes`), before a stream is rewritten, and at close; recovery replays the
    /// journal. See the README for the figures behind the default.
    Journal,
    /// One `syncfs(2)` per batch over the store's file system: one call, whatever the number of
    /// files and new directory entries the batch touched; no journal.
    SyncFs,
    /// `fdatasync(2)` of every file the batch wrote, then `fsync(2)` of every folder that gained
    /// an entry. Touches only the store's files, so it suits a file system shared with other busy
    /// writers.
    Fdatasync,
}

/// Options for `Store::open_with`.
#[derive(Debug, Clone)]
pub struct Options {
    /// How batches are made durable.
    pub sync: SyncMode,
    /// Under `SyncMode::Journal`, the size the journal reaches before the files it covers are
    /// flushed and it starts over: what a crash may leave to replay.
    pub journal_bytes: u64,
    /// Largest event (type + metadata + data) in bytes.
    pub event_bytes_max: usize,
    /// Size at which a stream's segment is sealed and the next one started.
    pub segment_bytes: u64,
    /// Entries per index file, for a new store (an existing store keeps its own).
    pub index_entries_per_file: u64,
    /// Most appends gathered into one group commit.
    pub batch_appends_max: usize,
    /// Most encoded bytes gathered into one group commit.
    pub batch_bytes_max: usize,
    /// Bound of the cache of mapped segment and index files.
    pub mapped_segments_max: usize,
    /// Bound of the writer's cache of open segment files.
    pub open_files_max: usize,
    /// Bound of the cache of loaded stream states. The writer keeps the full state of at most
    /// `limits::WRITER_STREAMS_MAX` (4,096) of them between batches; the catalog keeps the
    /// others that nobody holds encoded (segment-format.md §9).
    pub streams_cached_max: usize,
    /// Bytes of small streams' records one `read_all` iterator holds in memory at once (one
    /// window of the index, segment-format.md §4). Over many small streams written interleaved,
    /// a larger window reads each stream's file once for more of its events: the README gives
    /// the figures.
    pub read_all_window_bytes: usize,
    /// Default bound of events a persistent subscription delivers before they are acknowledged
    /// (`PersistentSubscription::with_in_flight_max` sets it per subscriber).
    pub subscription_in_flight_max: usize,
    /// Keep the indexes by category and event type with a background indexer
    /// (segment-format.md §17). Off by default (as EventStoreDB's system projections are): reads
    /// by category or type then scan the global order past what was indexed before.
    pub indexes: bool,
    /// Under `SyncMode::Journal`, a new stream's records go to shared pack files while they total
    /// at most this many bytes (segment-format.md §19); 0: every stream has files of its own.
    /// Default `PACK_STREAM_BYTES_DEFAULT` (4,096), at most `PACK_STREAM_BYTES_MAX`.
    pub pack_stream_bytes: u64,
    /// An append that finds the writer idle (no batch running, none waiting) is committed on
    /// its caller's thread, which waits for it anyway, instead of being handed to the writer
    /// thread and answered back: two thread hand-offs fewer per append for a lone appender
    /// (segment-format.md §7, "Who runs the loop"; the README has the figures). Appends that
    /// find a batch running still queue for the writer thread, and a producer's always do.
    /// Default on; off, every append goes through the writer thread.
    pub caller_commits: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync: SyncMode::Journal,
            journal_bytes: JOURNAL_BYTES_DEFAULT,
            event_bytes_max: EVENT_BYTES_MAX_DEFAULT,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            index_entries_per_file: INDEX_ENTRIES_PER_FILE_DEFAULT,
            batch_appends_max: BATCH_APPENDS_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            mapped_segments_max: MAPPED_SEGMENTS_MAX_DEFAULT,
            open_files_max: OPEN_FILES_MAX_DEFAULT,
            streams_cached_max: STREAMS_CACHED_MAX_DEFAULT,
            read_all_window_bytes: READ_ALL_WINDOW_BYTES_DEFAULT,
            subscription_in_flight_max: crate::limits::SUBSCRIPTION_IN_FLIGHT_MAX_DEFAULT,
            indexes: false,
            pack_stream_bytes: crate::limits::PACK_STREAM_BYTES_DEFAULT,
            caller_commits: true,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidOptions { reason });
        if self.event_bytes_max == 0 || self.event_bytes_max > EVENT_BYTES_MAX_CEILING {
            return bad(format!(
                "event_bytes_max must be 1..={EVENT_BYTES_MAX_CEILING}"
            ));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes must be {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
            ));
        }
        if (self.event_bytes_max + RECORD_OVERHEAD_MAX) as u64 > self.segment_bytes {
            return bad("segment_bytes must hold at least one event of event_bytes_max".into());
        }
        if self.index_entries_per_file < INDEX_ENTRIES_PER_FILE_MIN
            || self.index_entries_per_file > u64::from(u32::MAX)
        {
            return bad(format!(
                "index_entries_per_file must be {INDEX_ENTRIES_PER_FILE_MIN}..={}",
                u32::MAX
            ));
        }
        if !(JOURNAL_BYTES_MIN..=u64::from(u32::MAX)).contains(&self.journal_bytes) {
            return bad(format!(
                "journal_bytes must be {JOURNAL_BYTES_MIN}..={}",
                u32::MAX
            ));
        }
        if self.read_all_window_bytes < READ_ALL_WINDOW_BYTES_MIN {
            return bad(format!(
                "read_all_window_bytes must be at least {READ_ALL_WINDOW_BYTES_MIN}"
            ));
        }
        if self.pack_stream_bytes > crate::limits::PACK_STREAM_BYTES_MAX {
            return bad(format!(
                "pack_stream_bytes must be at most {}",
                crate::limits::PACK_STREAM_BYTES_MAX
            ));
        }
        if self.subscription_in_flight_max == 0 {
            return bad("subscription_in_flight_max must be positive".into());
        }
        if self.batch_appends_max == 0 || self.batch_bytes_max == 0 {
            return bad("batch limits must be positive".into());
        }
        if self.mapped_segments_max < CACHE_BOUND_MIN
            || self.open_files_max < CACHE_BOUND_MIN
            || self.streams_cached_max < CACHE_BOUND_MIN
        {
            return bad(format!("cache bounds must be at least {CACHE_BOUND_MIN}"));
        }
        Ok(())
    }
}
