//! kill -9 under load (fault-matrix row 1): a child process appends from several threads and
//! reports every acknowledged append on a pipe the moment `append` returns; the parent kills it
//! with SIGKILL after a random number of acknowledgements, reopens the store and checks that
//! every acknowledged event is there byte for byte, that no append is visible in part, that
//! positions are dense and versions contiguous, and that segment-dump finds no corruption. Then
//! the next child appends to the same store, and so on.
//!
//! `STREAMLOG_CRASH_CYCLES` sets the number of cycles (default 20; the long run in the README
//! uses 1,000). The kill only tests what the page cache keeps: a missing fsync is the simulated
//! power-loss test's job.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::process::{Command, Stdio};
use streamlog::{EventData, ExpectedVersion, Options, Store};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: enough to pick sizes and kill points.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

/// Small segments, so that segments roll often under the kills.
fn child_options() -> Options {
    Options {
        segment_bytes: 64 << 10,
        // The smallest journal: flushes (and their kill point) come every few dozen batches.
        journal_bytes: 64 << 10,
        event_bytes_max: 16 << 10,
        pack_stream_bytes: packs(),
        ..Options::default()
    }
}

/// `STREAMLOG_CRASH_PACK_BYTES`: the child's `pack_stream_bytes` (format 4, segment-format.md
/// §19); the default's unless set (0: every stream in segments of its own).
fn packs() -> u64 {
    std::env::var("STREAMLOG_CRASH_PACK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Options::default().pack_stream_bytes)
}

/// `STREAMLOG_CRASH_SMALL=1`: the child writes many small streams with small events, most of
/// which stay packed; otherwise a few streams with large events, in segments (each leaves its
/// pack at its first appends). The parent alternates them, child by child.
fn small_streams() -> bool {
    std::env::var("STREAMLOG_CRASH_SMALL").is_ok_and(|v| v == "1")
}

/// Appends each child thread makes before it stops on its own (when no kill came).
const CHILD_APPENDS: u64 = 5_000;

/// The child: append from 4 threads, print one line per acknowledged append.
#[test]
#[ignore = "helper run in a child process by crash_kill_cycles"]
fn crash_child() {
    let dir = std::env::var("STREAMLOG_CRASH_DIR").unwrap();
    let store = Store::open_with(&dir, child_options()).unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let out = std::sync::Arc::clone(&out);
            std::thread::spawn(move || {
                let mut rng = Rng(seed() ^ ((t + 1) * 0x9e37_79b9));
                let (streams, event_max) = if small_streams() {
                    (400, 300)
                } else {
                    (12, 3000)
                };
                for _ in 0..CHILD_APPENDS {
                    let stream = format!("crash-{}", rng.below(streams));
                    let count = 1 + rng.below(4);
                    let mut crc = 0u32;
                    let events: Vec<EventData> = (0..count)
                        .map(|_| {
                            let len = rng.below(event_max) as usize;
                            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                            crc = crc32c::crc32c_append(crc, &data);
                            EventData::new("Crash", data)
                        })
                        .collect();
                    let r = store.append(&stream, ExpectedVersion::Any, events).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(
                        o,
                        "ACK {stream} {} {} {} {} {crc}",
                        r.first_version,
                        r.last_version,
                        r.first_position.get(),
                        r.last_position.get()
                    )
                    .unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

struct Ack {
    stream: String,
    first_version: u64,
    last_version: u64,
    first_position: u64,
    last_position: u64,
    crc: u32,
}

fn parse(line: &str) -> Option<Ack> {
    let mut p = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        stream: p.next()?.to_string(),
        first_version: p.next()?.parse().ok()?,
        last_version: p.next()?.parse().ok()?,
        first_position: p.next()?.parse().ok()?,
        last_position: p.next()?.parse().ok()?,
        crc: p.next()?.parse().ok()?,
    })
}

fn spawn_child(dir: &std::path::Path, kill_at: Option<&str>, small: bool) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("STREAMLOG_CRASH_DIR", dir)
        .env_remove("STREAMLOG_KILL_AT")
        .env("STREAMLOG_CRASH_PACK_BYTES", packs().to_string())
        .env("STREAMLOG_CRASH_SMALL", if small { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(point) = kill_at {
        command.env("STREAMLOG_KILL_AT", point);
    }
    command.spawn().unwrap()
}

#[test]
fn crash_kill_cycles() {
    let cycles: u64 = std::env::var("STREAMLOG_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let s = seed();
    println!("crash test seed {s}");
    let mut rng = Rng(s);
    let mut acked: Vec<Ack> = Vec::new();
    for cycle in 0..cycles {
        let kill_after = 1 + rng.below(300);
        let mut child = spawn_child(&dir, None, cycle % 2 == 1);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(a) = parse(&line) {
                acked.push(a);
                seen += 1;
            }
        }
        child.kill().unwrap();
        // What the child printed before it died was acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(a) = parse(&line) {
                acked.push(a);
            }
        }
        child.wait().unwrap();
        verify(&dir, &acked, cycle);
    }
    println!(
        "{cycles} kill -9 cycles, {} acknowledged appends verified",
        acked.len()
    );
}

/// Fault-matrix row 2: the child kills itself at a named point of the writer or of recovery
/// (`engine/killpoint.rs`), the n-th time it gets there; then the same checks as above.
/// Needs `--features kill-points` (the README's test command has it).
#[cfg(feature = "kill-points")]
#[test]
fn kill_at_named_points() {
    use std::os::unix::process::ExitStatusExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let mut acked: Vec<Ack> = Vec::new();
    let mut cycle = 0;
    for (point, what) in streamlog::killpoint::POINTS {
        // Recovery runs once per open, and does its work only after an unclean close (a clean
        // one leaves nothing to replay, verify, cut or sync): die mid-batch first, or (for the
        // replay) just after a batch's frame is durable.
        let before = match point {
            "recovery-cut" => Some("batch-written:3"),
            "journal-replayed" => Some("batch-synced:3"),
            _ => None,
        };
        let nths: &[u64] = if before.is_some() { &[1] } else { &[1, 5, 23] };
        for n in nths {
            let mut specs = vec![format!("{point}:{n}")];
            if let Some(before) = before {
                specs.insert(0, before.to_string());
            }
            for spec in &specs {
                let mut child = spawn_child(&dir, Some(spec), *n != 5);
                let lines = BufReader::new(child.stdout.take().unwrap()).lines();
                acked.extend(lines.map_while(Result::ok).filter_map(|l| parse(&l)));
                let status = child.wait().unwrap();
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "{spec} ({what}) was never reached: {status}"
                );
            }
            verify(&dir, &acked, cycle);
            cycle += 1;
        }
    }
    println!(
        "{cycle} kills at named points, {} acknowledged appends verified",
        acked.len()
    );
}

fn verify(dir: &std::path::Path, acked: &[Ack], cycle: u64) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
    check_invariants(&store);
    // No append is visible in part: BEGIN and END alternate in each stream and every stream
    // ends on an END.
    let by_position = events_with_whole_appends(&store, &format!("cycle {cycle}"));
    for a in acked {
        let mut crc = 0u32;
        for (i, p) in (a.first_position..=a.last_position).enumerate() {
            let (stream, version, data) = by_position
                .get(&p)
                .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged position {p} lost"));
            assert_eq!(stream, &a.stream);
            assert_eq!(*version, a.first_version + i as u64);
            crc = crc32c::crc32c_append(crc, data);
        }
        assert_eq!(
            a.last_version - a.first_version,
            a.last_position - a.first_position
        );
        assert_eq!(
            crc, a.crc,
            "cycle {cycle}: data of the append at {} differs",
            a.first_position
        );
    }
    drop(store);
    let out = Command::new(env!("CARGO_BIN_EXE_segment-dump"))
        .args(["--summary", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cycle {cycle}: segment-dump: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
