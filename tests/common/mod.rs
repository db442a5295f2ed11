//! Helpers shared by the integration tests.
#![allow(dead_code)]

use streamlog::{Direction, EventData, Options, Position, Store};

pub fn event(i: u64) -> EventData {
    EventData::new(format!("Type{}", i % 3), format!("data-{i}").into_bytes())
        .metadata(format!("{{\"i\":{i}}}").into_bytes())
}

/// Every event of the store in global order, as (stream, version, position, data).
pub fn all(store: &Store) -> Vec<(String, u64, u64, Vec<u8>)> {
    store
        .read_all(Position::START, Direction::Forward)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.stream_id().to_string(),
                e.version(),
                e.position().get(),
                e.data().to_vec(),
            )
        })
        .collect()
}

/// The data of every event of a stream, forward.
pub fn stream_data(store: &Store, stream: &str) -> Vec<Vec<u8>> {
    store
        .read_stream(stream, 1, Direction::Forward)
        .unwrap()
        .map(|e| e.unwrap().data().to_vec())
        .collect()
}

/// Check what must hold of any store: positions dense from 1, versions contiguous per stream,
/// every stream's own read agreeing with the global order.
pub fn check_invariants(store: &Store) {
    let events = all(store);
    let mut versions = std::collections::HashMap::<String, u64>::new();
    for (i, (stream, version, position, _)) in events.iter().enumerate() {
        assert_eq!(*position, i as u64 + 1, "positions are dense from 1");
        let v = versions.entry(stream.clone()).or_insert(0);
        assert_eq!(*version, *v + 1, "versions are contiguous in {stream}");
        *v = *version;
    }
    assert_eq!(store.head_position().get(), events.len() as u64);
    for (stream, version) in &versions {
        assert_eq!(store.stream_version(stream).unwrap(), Some(*version));
        let from_stream: Vec<u64> = store
            .read_stream(stream, 1, Direction::Forward)
            .unwrap()
            .map(|e| e.unwrap().position().get())
            .collect();
        let from_all: Vec<u64> = events
            .iter()
            .filter(|e| &e.0 == stream)
            .map(|e| e.2)
            .collect();
        assert_eq!(
            from_stream, from_all,
            "stream {stream} agrees with the global order"
        );
    }
}

/// Path of segment `segment` of `stream` in the store at `dir` (first collision slot).
pub fn segment_path_of(dir: &std::path::Path, stream: &str, segment: u32) -> std::path::PathBuf {
    let bytes = std::fs::read(dir.join("MANIFEST")).unwrap();
    let manifest = streamlog::format::manifest::Manifest::decode(&bytes).unwrap();
    let hash = streamlog::layout::stream_hash(&manifest.hash_key, stream);
    streamlog::layout::segment_path(
        dir,
        streamlog::layout::StreamKey { hash, collision: 0 },
        segment,
    )
}

/// Path of the table that holds packed stream `stream` (segment-format.md §19: `tables/<nn>` in
/// a store created by format 7).
pub fn table_path_of(dir: &std::path::Path, stream: &str) -> std::path::PathBuf {
    let bytes = std::fs::read(dir.join("MANIFEST")).unwrap();
    let manifest = streamlog::format::manifest::Manifest::decode(&bytes).unwrap();
    let hash = streamlog::layout::stream_hash(&manifest.hash_key, stream);
    let tables = streamlog::layout::Tables::of(&manifest);
    tables.path(dir, tables.number(hash))
}

/// Path of the index file holding position 1.
pub fn index_path_of(dir: &std::path::Path) -> std::path::PathBuf {
    streamlog::layout::index_path(dir, 0)
}

/// Copy a store folder (files and folders, no lock holder needed: the copy is a new store
/// image).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// Byte ranges [start, end) of the file `p` that differ from `q` or exist only in `p`.
pub fn tail_after(p: &std::path::Path, from: u64) -> Vec<u8> {
    let bytes = std::fs::read(p).unwrap();
    bytes[from as usize..].to_vec()
}

pub fn write_at(p: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

pub fn flip_bit(p: &std::path::Path, offset: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, offset).unwrap();
}

/// Every event by position, as (stream, version, data), after checking that no append is
/// visible in part: in each stream BEGIN and END alternate, and every stream ends on an END.
pub fn events_with_whole_appends(
    store: &Store,
    what: &str,
) -> std::collections::HashMap<u64, (String, u64, Vec<u8>)> {
    let mut open_append = std::collections::HashMap::<String, bool>::new();
    let mut by_position = std::collections::HashMap::new();
    for e in store.read_all(Position::START, Direction::Forward).unwrap() {
        let e = e.unwrap();
        let open = open_append
            .entry(e.stream_id().to_string())
            .or_insert(false);
        assert_eq!(
            e.is_append_begin(),
            !*open,
            "{what}: append boundary at {}",
            e.position()
        );
        *open = !e.is_append_end();
        by_position.insert(
            e.position().get(),
            (e.stream_id().to_string(), e.version(), e.data().to_vec()),
        );
    }
    assert!(
        open_append.values().all(|open| !open),
        "{what}: an append is visible in part"
    );
    by_position
}

/// Run the ignored test `child` of this test binary in a child process with `envs`, collect the
/// numbers it prints after `prefix` (one acknowledged operation per line), kill it with SIGKILL
/// once `kill_after` of them came, and return every number it printed before it died.
pub fn acknowledged_before_kill(
    child: &str,
    envs: &[(&str, String)],
    kill_after: u64,
    prefix: &str,
) -> Vec<u64> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", child, "--nocapture"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut process = cmd.spawn().unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    while (out.len() as u64) < kill_after {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(n) = line.strip_prefix(prefix) {
            out.push(n.trim().parse().unwrap());
        }
    }
    process.kill().unwrap();
    // What it printed before it died was acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix(prefix) {
            out.push(n.trim().parse().unwrap());
        }
    }
    process.wait().unwrap();
    out
}

/// Every stream in files of its own (no packs, segment-format.md §19): for the tests that damage,
/// cut or inspect a small stream's segment file.
pub fn own_segments() -> Options {
    Options {
        pack_stream_bytes: 0,
        ..Options::default()
    }
}

/// Small segments (64 KiB), events up to 16 KiB, index files of 64 entries: rolls and new files
/// come after a few events.
pub fn small_segments() -> Options {
    Options {
        segment_bytes: 64 << 10,
        event_bytes_max: 16 << 10,
        index_entries_per_file: 64,
        ..Options::default()
    }
}
