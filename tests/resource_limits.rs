//! Fault-matrix rows 16 and 17: a process with few file descriptors, and a bounded number of
//! memory mappings. Each runs in a child process, so that the limit and the count of mappings
//! are the store's alone.

mod common;
use common::*;
use std::path::Path;
use streamlog::{Direction, EventData, ExpectedVersion, Options, Position, Store, SyncMode};

const DESCRIPTORS: u64 = 64;
const THREADS: usize = 8;
const STREAMS_PER_THREAD: usize = 60;

fn run_child(test: &str, dir: &Path, mode: &str) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", test, "--nocapture"])
        .env("STREAMLOG_LIMITS_DIR", dir)
        .env("STREAMLOG_LIMITS_MODE", mode)
        .status()
        .unwrap();
    assert!(status.success(), "{test} {mode}: {status}");
}

fn child_args() -> (std::path::PathBuf, SyncMode) {
    let dir = std::env::var("STREAMLOG_LIMITS_DIR").unwrap().into();
    let sync = match std::env::var("STREAMLOG_LIMITS_MODE").unwrap().as_str() {
        "fdatasync" => SyncMode::Fdatasync,
        _ => SyncMode::SyncFs,
    };
    (dir, sync)
}

/// Appends from several threads at once, so that single batches touch many more streams than
/// there are descriptors.
fn write_many_streams(store: &Store, round: u64) {
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for i in 0..STREAMS_PER_THREAD {
                    let stream = format!("s-{t}-{i}");
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(round),
                            [EventData::new(
                                "E",
                                format!("{stream}/{round}").into_bytes(),
                            )],
                        )
                        .unwrap_or_else(|e| panic!("{stream} round {round}: {e}"));
                }
            });
        }
    });
}

fn check_many_streams(store: &Store, rounds: u64) {
    for t in 0..THREADS {
        for i in 0..STREAMS_PER_THREAD {
            let stream = format!("s-{t}-{i}");
            let data = stream_data(store, &stream);
            let expected: Vec<Vec<u8>> = (0..rounds)
                .map(|r| format!("{stream}/{r}").into_bytes())
                .collect();
            assert_eq!(data, expected, "{stream}");
        }
    }
    check_invariants(store);
    assert_eq!(
        all(store).len() as u64,
        rounds * (THREADS * STREAMS_PER_THREAD) as u64
    );
}

/// Run by `a_process_with_64_descriptors_never_sees_emfile` in a child process.
#[test]
#[ignore = "helper run in a child process"]
fn child_with_few_descriptors() {
    let (dir, sync) = child_args();
    let limit = libc::rlimit {
        rlim_cur: DESCRIPTORS,
        rlim_max: DESCRIPTORS,
    };
    // SAFETY: `setrlimit` reads one `rlimit` through the pointer, a live local of that type.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    let options = Options {
        sync,
        ..Options::default()
    };
    {
        let store = Store::open_with(&dir, options.clone()).unwrap();
        for round in 0..3 {
            write_many_streams(&store, round);
        }
        check_many_streams(&store, 3);
    }
    let store = Store::open_with(&dir, options).unwrap();
    check_many_streams(&store, 3);
    write_many_streams(&store, 3);
    check_many_streams(&store, 4);
}

#[test]
fn a_process_with_64_descriptors_never_sees_emfile() {
    for mode in ["syncfs", "fdatasync"] {
        let dir = tempfile::tempdir().unwrap();
        run_child("child_with_few_descriptors", dir.path(), mode);
    }
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Run by `mappings_stay_within_the_cache_bound` in a child process.
#[test]
#[ignore = "helper run in a child process"]
fn child_counts_mappings() {
    let (dir, sync) = child_args();
    const BOUND: usize = 16;
    let store = Store::open_with(
        &dir,
        Options {
            sync,
            mapped_segments_max: BOUND,
            // Several index files, so that the index cache is exercised too.
            index_entries_per_file: 64,
            ..Options::default()
        },
    )
    .unwrap();
    write_many_streams(&store, 0);
    let before = mappings();
    let mut most = before;
    for _ in 0..2 {
        for t in 0..THREADS {
            for i in 0..STREAMS_PER_THREAD {
                let stream = format!("s-{t}-{i}");
                for ev in store.read_stream(&stream, 1, Direction::Forward).unwrap() {
                    ev.unwrap();
                }
                most = most.max(mappings());
            }
        }
        for ev in store.read_all(Position::START, Direction::Forward).unwrap() {
            ev.unwrap();
            most = most.max(mappings());
        }
    }
    eprintln!("mappings: {before} before, at most {most} while reading");
    // Segments and index files are each bounded by the cache; a few more for the allocator.
    let index_files = (THREADS * STREAMS_PER_THREAD).div_ceil(64);
    assert!(
        most - before <= BOUND + index_files + 8,
        "{} mappings added while reading {} streams",
        most - before,
        THREADS * STREAMS_PER_THREAD
    );
    check_many_streams(&store, 1);
}

#[test]
fn mappings_stay_within_the_cache_bound() {
    let dir = tempfile::tempdir().unwrap();
    run_child("child_counts_mappings", dir.path(), "syncfs");
}
