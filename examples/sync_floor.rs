//! The disk's floor for the group commit, without the engine: `files` files each get one
//! 300-byte write (a 256-byte event's record), an index file gets 24 bytes per file, then one
//! `syncfs`; repeated. This is what a batch of one-event appends to `files` different streams
//! costs at least, whatever the engine does.
//! `cargo run --release --example sync_floor -- [files] [batches]`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
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
