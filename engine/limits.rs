//! Every limit of the engine, named with its unit last. The same numbers are in
//! `segment-format.md` §6.

/// Longest stream id, in bytes of UTF-8.
pub const STREAM_ID_BYTES_MAX: usize = 1024;
/// Longest event type, in bytes of UTF-8.
pub const EVENT_TYPE_BYTES_MAX: usize = 1024;
/// Longest event key, in bytes (segment-format.md §6).
pub const KEY_BYTES_MAX: usize = 1024;
/// Longest commit metadata of one append, in bytes.
pub const COMMIT_METADATA_BYTES_MAX: usize = 64 << 10;
/// Default bound of appends a `Producer` has submitted and not seen answered.
pub const PRODUCER_IN_FLIGHT_MAX_DEFAULT: usize = 4096;
/// Most positions the indexer reads before it syncs and checkpoints (segment-format.md §17).
pub const INDEXER_CHUNK_POSITIONS: u64 = 1 << 20;
/// The indexer lets commits accumulate until this many positions wait...
pub const INDEXER_BATCH_POSITIONS: u64 = 65_536;
/// ...or the oldest waiting one is this old (ms): each chunk costs two syncs, which the writer
/// competes with, so chunks of a few positions would halve W2 (measured).
pub const INDEXER_DELAY_MS: u64 = 50;
/// Postings an indexed read fetches at a time.
pub const INDEX_READ_CHUNK_POSTINGS: u64 = 65_536;
/// Index compaction rewrites a file when at least this share of its entries (percent) belong to
/// removed events: a compacted entry takes 32 bytes, a dense one 24, so below half removed the
/// gain is small.
pub const INDEX_COMPACT_MIN_REMOVED_PERCENT: u64 = 50;
/// Events removed by snapshots and deletes after which the index is compacted in the
/// background (at least half an index file's worth).
pub const INDEX_AUTO_COMPACT_REMOVED_MIN: u64 = 65_536;
/// Default largest event (type + metadata + data), in bytes.
pub const EVENT_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Hard ceiling for the `event_bytes_max` option.
pub const EVENT_BYTES_MAX_CEILING: usize = 16 << 20;
/// Most events in one append.
pub const APPEND_EVENTS_MAX: usize = 10_000;
/// Largest segment: offsets in index entries are `u32`.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
/// Smallest segment the options accept.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default number of entries per index file (24 MiB files).
pub const INDEX_ENTRIES_PER_FILE_DEFAULT: u64 = 1 << 20;
/// Smallest number of entries per index file the options accept.
pub const INDEX_ENTRIES_PER_FILE_MIN: u64 = 64;
/// Default limit of appends gathered into one group commit.
pub const BATCH_APPENDS_MAX_DEFAULT: usize = 4096;
/// Default limit of encoded bytes gathered into one group commit.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Default bound of the cache of mapped segments and index files.
pub const MAPPED_SEGMENTS_MAX_DEFAULT: usize = 4096;
/// Default bound of the writer's cache of open segment files.
pub const OPEN_FILES_MAX_DEFAULT: usize = 1024;
/// Positions of `read_all`'s first window of the index (segment-format.md §4); later windows
/// grow or shrink to what the window's byte budget holds, within the bounds below.
pub const READ_ALL_WINDOW_POSITIONS: u64 = 65_536;
/// Fewest positions of a `read_all` window.
pub const READ_ALL_WINDOW_POSITIONS_MIN: u64 = 1_024;
/// Most positions of a `read_all` window (its entries take about 40 bytes each in memory).
pub const READ_ALL_WINDOW_POSITIONS_MAX: u64 = 524_288;
/// Fewest slots of a fan-out table's index of its streams (a power of two).
pub const KEY_INDEX_SLOTS_MIN: usize = 16;
/// How many events ahead `read_all` asks the CPU to fetch a packed event's table slot.
pub const READ_ALL_PREFETCH_DISTANCE: usize = 16;
/// A `read_all` window grows past `READ_ALL_WINDOW_POSITIONS` only while it meets at least one
/// file per this many positions (small streams with files of their own).
pub const READ_ALL_POSITIONS_PER_FILE_TO_GROW: u64 = 16;
/// Default of the option `read_all_window_bytes`: bytes of small segments' records `read_all`
/// holds in memory for one window.
pub const READ_ALL_WINDOW_BYTES_DEFAULT: usize = 64 << 20;
/// Smallest `read_all_window_bytes` accepted.
pub const READ_ALL_WINDOW_BYTES_MIN: usize = 1 << 20;
/// Segments whose records in a window lie in their first this many bytes are read, not mapped.
pub const READ_ALL_SMALL_SEGMENT_BYTES: usize = 64 << 10;
/// Threads (the reader's own included) that read one `read_all` window's small segments:
/// opening, reading and closing a file per stream is system-call bound, and the calls of
/// different files run in parallel.
pub const READ_ALL_FETCH_THREADS_MAX: usize = 4;
/// Fewer distinct small segments than this in a window are read by the reader alone: a thread
/// costs more than it saves.
pub const READ_ALL_PARALLEL_SEGMENTS_MIN: usize = 256;
/// A `read_all` window reads the fan-out tables it needs with helper threads when it needs at
/// least this many it does not hold (engine/read.rs, `prefetch_tables`).
pub const READ_ALL_PARALLEL_TABLES_MIN: usize = 64;
/// A batch of at least this many appends is answered by the notifier thread, not the writer
/// (engine/notify.rs): fewer are answered at once, without a hop.
pub const NOTIFY_THREAD_MIN_ANSWERS: usize = 8;
/// Smallest bound any cache accepts.
pub const CACHE_BOUND_MIN: usize = 4;
/// Default bound of the cache of loaded stream states.
pub const STREAMS_CACHED_MAX_DEFAULT: usize = 100_000;
/// The catalog encodes the loaded streams nobody holds (engine/idle.rs) once it holds this many
/// as shared states (or twice what its last sweep kept): the shared ones cost about 270 bytes
/// each, the encoded ones about 70.
pub const SHARED_STREAMS_SWEEP_MIN: usize = 4_096;
/// Streams whose full state the writer keeps between batches (at most `streams_cached_max`):
/// the least recently appended half goes past it, and the catalog may then keep them encoded
/// (about 90 bytes each instead of about 550). One batch may hold more for its duration.
pub const WRITER_STREAMS_MAX: usize = 4_096;
/// How many positions the writer lets pass between two checkpoints under `SyncMode::Fdatasync`.
pub const CHECKPOINT_INTERVAL_POSITIONS: u64 = 65_536;
/// Default size the journal may reach before the writer flushes the files it covers and starts
/// it over (segment-format.md §18): the most a crash leaves to replay.
pub const JOURNAL_BYTES_DEFAULT: u64 = 8 << 20;
/// Smallest `journal_bytes`: room for a few ordinary batches between two flushes.
pub const JOURNAL_BYTES_MIN: u64 = 64 << 10;
/// The journal is filled with zeros this far ahead of its frames, so that the `fdatasync` of
/// a frame changes no file size (and writes no inode) except once per this many bytes.
pub const JOURNAL_GROW_BYTES: u64 = 1 << 20;
/// Files replay keeps open at once (a frame touches one file per stream of its batch); past
/// it they are all closed and reopened as needed.
pub const REPLAY_OPEN_FILES_MAX: usize = 256;
/// Stream hashes sharing one value get collision numbers below this bound.
pub const STREAM_COLLISIONS_MAX: u16 = 1024;
/// Most bytes a segment header plus one record's header and padding can add to an event.
pub const RECORD_OVERHEAD_MAX: usize = 64 + STREAM_ID_BYTES_MAX + 72 + 32 + 8;
/// Longest persistent subscription name, in bytes of UTF-8.
pub const SUBSCRIPTION_NAME_BYTES_MAX: usize = 255;
/// Default bound of events a persistent subscription delivers before they are acknowledged.
pub const SUBSCRIPTION_IN_FLIGHT_MAX_DEFAULT: usize = 1000;

/// A pack rolls to the next number past this size (segment-format.md §19).
pub const PACK_BYTES_MAX: u64 = 64 << 20;
/// Most fan-out table entries (one per packed stream) the store keeps in memory for lookups and
/// `read_all`'s stream ids, each 64 bytes and its id's allocation: a store of a million packed streams keeps
/// them all; a larger one reads tables again as their streams are met.
pub const TABLE_CACHE_ENTRIES_MAX: usize = 1 << 20;
/// The unit in which dead pack bytes are given back (`fallocate(PUNCH_HOLE)`): ext4's block.
pub const PACK_PUNCH_BLOCK_BYTES: u64 = 4096;
/// Most merged ranges of removed pack records the writer keeps in memory until their blocks
/// are whole (about 64 bytes each); past it, the pack with the most is forgotten.
pub const PACK_DEAD_RANGES_MAX: usize = 262_144;
/// Default `pack_stream_bytes`: a stream stays packed while its packed records total this much
/// (a 4 KiB block is what a file of its own would take at least).
pub const PACK_STREAM_BYTES_DEFAULT: u64 = 4096;
/// Largest `pack_stream_bytes`: a packed stream's chain is walked on every load.
pub const PACK_STREAM_BYTES_MAX: u64 = 1 << 20;

/// How long opening a store waits for a `LOCK` held by someone else before it answers
/// `Locked`: a child process forked by the host holds the lock file from its fork to its `exec`.
pub const LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(200);
/// How often that wait tries the lock again.
pub const LOCK_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);
