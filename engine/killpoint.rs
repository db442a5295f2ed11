//! Named crash points for the kill tests (fault-matrix row 2).
//!
//! Built only with the `kill-points` feature. `STREAMLOG_KILL_AT=<name>:<n>` makes the process
//! kill itself with SIGKILL the `n`-th time it reaches point `<name>` (`n` defaults to 1): no
//! destructor runs, no buffer is flushed, exactly as if the machine's operator had sent it.
//! Without the feature, `reached` compiles to nothing.

/// Where the writer or recovery may die: (name, what has happened when it is reached).
pub const POINTS: [(&str, &str); 7] = [
    (
        "segment-created",
        "a new segment file exists, its header not yet written",
    ),
    (
        "batch-written",
        "every write of a batch returned, its sync not started",
    ),
    ("batch-synced", "a batch is durable, not yet published"),
    (
        "batch-published",
        "a batch is visible to readers, no caller answered",
    ),
    (
        "journal-flushed",
        "the files the journal covers are synced, the checkpoint naming it not yet written",
    ),
    (
        "journal-replayed",
        "recovery wrote the journal's frames in place, not yet synced",
    ),
    (
        "recovery-cut",
        "recovery cut the tail and wrote its checkpoint, not yet synced",
    ),
];

/// Where a snapshot, a delete or a truncation may die (segment-format.md §12); reached only by
/// workloads that rewrite streams, so the writer's kill test does not list them.
pub const REWRITE_POINTS: [(&str, &str); 4] = [
    (
        "rewrite-written",
        "the new segment 0 and its index entry are synced under a temporary name",
    ),
    (
        "rewrite-renamed",
        "the rename committed the rewrite, the old segments are still there",
    ),
    (
        "rewrite-removed",
        "the old segments are removed, nothing answered yet",
    ),
    (
        "pack-delete-synced",
        "a tombstone in a pack is durable and published, its REMOVALS record not written",
    ),
];

#[cfg(feature = "kill-points")]
#[allow(unsafe_code)]
pub fn reached(name: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    debug_assert!(
        POINTS
            .iter()
            .chain(&REWRITE_POINTS)
            .any(|(n, _)| *n == name),
        "unknown kill point {name}"
    );
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var("STREAMLOG_KILL_AT").ok()?;
        let (point, n) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
        Some((point.to_string(), n.parse().unwrap_or(1)))
    });
    if let Some((point, n)) = target {
        if point == name && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            // SAFETY: `getpid` and `kill` take and return plain integers; the signal ends the
            // process at once, which is the purpose.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

#[cfg(not(feature = "kill-points"))]
#[inline(always)]
pub fn reached(_name: &'static str) {}
