//! The disk's floor for the group commit, without the engine: `files` files each get one
//! 300-byte write (a 256-byte event's record), an index file gets 24 bytes per file, then one
//! `syncfs`; repeated. This is what a batch of one-event appends to `files` different streams
//! costs at least, whatever the engine does.
//! `cargo run --release --example sync_floor -- [files] [batches]`.
//!
//! `cargo run --release --example sync_floor -- journal [bytes] [writes]`: the floor under the
//! journal instead: `bytes` written at the end of what was written before, in a file filled with
//! zeros beforehand (so the sync changes no file size), then `fdatasync`; repeated. One
//! journaled batch of that size costs at least this (W1's frame is about 500 bytes, W3's about
//! 40,000).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn journal_floor(mut args: impl Iterator<Item = String>) {
    let bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let writes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().expect("temporary folder");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("journal"))
        .expect("create");
    let zeros = vec![0u8; 1 << 20];
    let total = bytes as u64 * writes;
    let mut at = 0;
    while at < total {
        file.write_all_at(&zeros, at).expect("fill");
        at += zeros.len() as u64;
    }
    file.sync_all().expect("sync");
    let frame = vec![0xabu8; bytes];
    let mut latencies = Vec::with_capacity(writes as usize);
    let start = Instant::now();
    for w in 0..writes {
        let t = Instant::now();
        file.write_all_at(&frame, w * bytes as u64).expect("write");
        file.sync_data().expect("fdatasync");
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{bytes} bytes per write + fdatasync into a filled file: {:.0} µs on average, p50 {:?}, p99 {:?}",
        elapsed / writes as f64 * 1e6,
        latencies[latencies.len() / 2],
        latencies[(latencies.len() - 1) * 99 / 100]
    );
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("journal") {
        args.next();
        journal_floor(args);
        return;
    }
    let files: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let batches: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().expect("temporary folder");
    let open = |name: String| -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join(name))
            .expect("create")
    };
    let segments: Vec<File> = (0..files).map(|i| open(format!("s{i}"))).collect();
    let index = open("index".into());
    let record = [0xabu8; 300];
    let entries = vec![0xcdu8; 24 * files];
    let start = Instant::now();
    for b in 0..batches {
        for s in &segments {
            s.write_all_at(&record, b * 300).expect("write");
        }
        index
            .write_all_at(&entries, b * entries.len() as u64)
            .expect("write");
        // SAFETY: the descriptor is open for the whole call; syncfs reads nothing from memory.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::syncfs(index.as_raw_fd()) };
        assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{files} files per sync: {:.0} µs per batch, {:.0} events/s",
        elapsed / batches as f64 * 1e6,
        (files as u64 * batches) as f64 / elapsed
    );
}
