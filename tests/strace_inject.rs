//! Faults injected by the real kernel path (fault-matrix rows 5 to 7, harness STRACE):
//! `strace -e inject=` makes the n-th `syncfs`, `fdatasync`, `pwrite64` or `openat` of the thread
//! that runs the batches fail with EIO or ENOSPC, in each sync mode. The child appends one event
//! at a time and reports every acknowledgement on stdout; the parent reopens the store without
//! strace and checks that every acknowledged event is there, that the failed append poisoned the
//! handle, and that appending works again after reopening.
//!
//! strace counts calls per thread. Every case runs twice: with `caller_commits` off, the writer
//! thread runs every batch; on, the child's appending thread (a thread of its own, started after
//! the store is open) finds the writer idle at each append and runs the batch itself
//! (segment-format.md §7, "Who runs the loop"). Either thread makes the same calls in the same
//! order, so one count names the same call in both.
//!
//! Needs `strace` (`.ci/run` installs it); without it these tests say so and do nothing.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use streamlog::{Error, EventData, ExpectedVersion, Options, Store, SyncMode};

const APPENDS: u64 = 30;

fn options(mode: &str, caller_commits: bool) -> Options {
    Options {
        caller_commits,
        sync: match mode {
            "fdatasync" => SyncMode::Fdatasync,
            "journal" => SyncMode::Journal,
            _ => SyncMode::SyncFs,
        },
        ..Options::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("event {i}").into_bytes()
}

/// Run under strace by the tests below.
#[test]
#[ignore = "helper run in a child process under strace"]
fn child_appends_under_strace() {
    let dir = std::env::var("STREAMLOG_STRACE_DIR").unwrap();
    let mode = std::env::var("STREAMLOG_STRACE_MODE").unwrap();
    let caller_commits = std::env::var("STREAMLOG_STRACE_CALLER").unwrap() == "1";
    let store = Store::open_with(&dir, options(&mode, caller_commits)).unwrap();
    // The test harness's own line is not ended.
    println!();
    // A thread of its own: its count of calls starts at the first append, as the writer
    // thread's does.
    std::thread::spawn(move || appends(&store)).join().unwrap();
}

fn appends(store: &Store) {
    for i in 0..APPENDS {
        // A new stream every third append, so that file creation is on the path too.
        let stream = format!("s-{}", i / 3);
        match store.append(
            &stream,
            ExpectedVersion::Any,
            [EventData::new("E", payload(i))],
        ) {
            Ok(r) => println!("ack {i} {stream} {}", r.first_position.get()),
            Err(e) => {
                println!("failed {i} {}", kind(&e));
                let again =
                    store.append("other", ExpectedVersion::Any, [EventData::new("E", vec![])]);
                println!("then {}", again.as_ref().map_or_else(kind, |_| "ok"));
                return;
            }
        }
    }
    println!("done");
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Poisoned { .. } => "poisoned",
        Error::Io { .. } => "io",
        _ => "other",
    }
}

fn strace_present() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run the child with `inject`; returns its report lines.
fn run(dir: &Path, mode: &str, caller_commits: bool, syscall: &str, inject: &str) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:{inject}"))
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "child_appends_under_strace",
            "--nocapture",
            "--test-threads=1",
        ])
        // Cargo's library path makes the loader try many folders: its `openat` calls would
        // count towards the injection on the main thread.
        .env_remove("LD_LIBRARY_PATH")
        .env("STREAMLOG_STRACE_DIR", dir)
        .env("STREAMLOG_STRACE_MODE", mode)
        .env(
            "STREAMLOG_STRACE_CALLER",
            if caller_commits { "1" } else { "0" },
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter(|l| {
            l.starts_with("ack ")
                || l.starts_with("failed ")
                || l.starts_with("then ")
                || *l == "done"
        })
        .map(str::to_string)
        .collect()
}

/// The child's report says how the fault ended its run (`expect`: `poisoned`, `io`, or `done`
/// when the engine worked around it); after reopening, every acknowledged event is there and
/// appends work.
fn check(dir: &Path, mode: &str, report: &[String], what: &str, expect: &str) {
    let acked: Vec<(u64, String, u64)> = report
        .iter()
        .filter_map(|l| {
            let mut f = l.strip_prefix("ack ")?.split(' ');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.to_string(),
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    let failed = report.iter().find(|l| l.starts_with("failed "));
    match failed {
        None => {
            assert_eq!(
                expect, "done",
                "{what}: the fault never hit an append: {report:?}"
            );
            assert_eq!(acked.len() as u64, APPENDS, "{what}: {report:?}");
        }
        Some(failed) => {
            let mut fields = failed.split(' ').skip(1);
            let at: u64 = fields.next().and_then(|n| n.parse().ok()).unwrap();
            let got = fields.next().unwrap();
            assert_eq!(got, expect, "{what}: {report:?}");
            // A failed write or sync poisons the handle; a failure before anything was written
            // (looking a new stream up) fails that append only.
            let then = if got == "io" {
                "then ok"
            } else {
                "then poisoned"
            };
            assert!(report.iter().any(|l| l == then), "{what}: {report:?}");
            assert_eq!(
                acked.len() as u64,
                at,
                "{what}: every append before the fault was acknowledged: {report:?}"
            );
        }
    }
    let store = Store::open_with(dir, options(mode, true))
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    check_invariants(&store);
    let all = all(&store);
    for (i, stream, position) in &acked {
        let (s, _, p, d) = all
            .get(*position as usize - 1)
            .unwrap_or_else(|| panic!("{what}: acknowledged append {i} lost"));
        assert_eq!((s, p, d), (stream, position, &payload(*i)), "{what}");
    }
    store
        .append(
            "after",
            ExpectedVersion::Any,
            [EventData::new("E", vec![1])],
        )
        .unwrap_or_else(|e| panic!("{what}: append after reopening: {e}"));
}

fn case(mode: &str, syscall: &str, inject: &str, expect: &str) {
    if !strace_present() {
        eprintln!(
            "strace is not installed: skipping the {syscall} injection (.ci/run installs it)"
        );
        return;
    }
    for caller_commits in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let what = format!("{mode}: {syscall} {inject}, caller_commits {caller_commits}");
        let report = run(dir.path(), mode, caller_commits, syscall, inject);
        eprintln!("{what}: {report:?}");
        check(dir.path(), mode, &report, &what, expect);
    }
}

#[test]
fn syncfs_eio_poisons_and_loses_nothing_acknowledged() {
    // The batches' thread's 6th syncfs and every later one fail.
    case("syncfs", "syncfs", "error=EIO:when=6+", "poisoned");
}

#[test]
fn fdatasync_eio_poisons_and_loses_nothing_acknowledged() {
    case("fdatasync", "fdatasync", "error=EIO:when=9+", "poisoned");
}

/// The journal's own `fdatasync` (the only sync of a batch under `SyncMode::Journal`), and its
/// writes: the batches' thread's 6th `fdatasync`, or 10th `pwrite64`, and every later one fail.
#[test]
fn journal_fdatasync_and_pwrite_failures_poison_and_lose_nothing_acknowledged() {
    case("journal", "fdatasync", "error=EIO:when=6+", "poisoned");
    case("journal", "pwrite64", "error=EIO:when=10+", "poisoned");
    case("journal", "pwrite64", "error=ENOSPC:when=10+", "poisoned");
}

#[test]
fn pwrite_eio_and_enospc_poison_and_lose_nothing_acknowledged() {
    case("syncfs", "pwrite64", "error=EIO:when=10+", "poisoned");
    case("syncfs", "pwrite64", "error=ENOSPC:when=10+", "poisoned");
    case("fdatasync", "pwrite64", "error=ENOSPC:when=13+", "poisoned");
}

#[test]
fn failed_file_creation_poisons_and_loses_nothing_acknowledged() {
    // Counters are per thread: the loader and the open of the store make theirs on other
    // threads. The batches' thread looks each new stream up (an `openat` that finds nothing),
    // then creates its segment: its 15th call looks up the 7th stream, its 16th creates it.
    case("syncfs", "openat", "error=ENOSPC:when=15", "io");
    case("syncfs", "openat", "error=ENOSPC:when=16", "poisoned");
    // Out of descriptors: the writer closes its cached files and tries again.
    case("fdatasync", "openat", "error=EMFILE:when=16", "done");
    case("syncfs", "openat", "error=EMFILE:when=16", "done");
}
