//! The issue-4 workloads, on streamlog and on the engines people would pick instead, in one run;
//! prints one Markdown table.
//!
//! `cargo run --release -- [--quick] [--engines streamlog,sqlite,rocksdb,fjall,redb,postgres]
//! [--dir DIR]` from `benches/peers/`. `--quick` shrinks every workload for a smoke test. The
//! stores go under `DIR` (default: a temporary folder on the same file system as `target/`).

mod engine;
mod engines {
    pub mod fjall_engine;
    pub mod pg;
    pub mod redb_engine;
    pub mod rocks;
    pub mod sqlite;
    pub mod streamlog_engine;
}

use engine::{Engine, Event, Expected, Factory, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Sizes {
    w1_appends: usize,
    w2_threads: usize,
    /// W2 and W3 run for a fixed time rather than a fixed count: a count that suits the slowest
    /// engine is a twentieth of a second for the fastest, too short to tell ±20% apart.
    w2_w3_duration: Duration,
    w4_events: usize,
    w5_streams: usize,
    w5_per_stream: usize,
}

/// W1's appends are taken in this many turns (`w1_interleaved`).
const W1_ROUNDS: usize = 20;

const FULL: Sizes = Sizes {
    w1_appends: 2_000,
    w2_threads: 64,
    w2_w3_duration: Duration::from_secs(3),
    w4_events: 1_000_000,
    w5_streams: 100_000,
    w5_per_stream: 10,
};

const QUICK: Sizes = Sizes {
    w1_appends: 200,
    w2_threads: 64,
    w2_w3_duration: Duration::from_millis(200),
    w4_events: 20_000,
    w5_streams: 2_000,
    w5_per_stream: 10,
};

/// An event whose bytes do not compress (engines that compress would otherwise shine on disk
/// space for the wrong reason).
fn event(i: usize) -> Event {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    };
    let data = (0..256).map(|_| bytes()).collect();
    let metadata = (0..32).map(|_| bytes()).collect();
    Event {
        event_type: "Bench",
        data,
        metadata,
    }
}

#[derive(Default, Clone)]
struct Figures {
    w1_rate: f64,
    w1_p50_us: f64,
    w1_p99_us: f64,
    w2_rate: f64,
    w3_rate: f64,
    w4_rate: f64,
    w5_rate: f64,
    w6_ms: f64,
    disk_bytes: u64,
    error: Option<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Bytes the folder takes on disk (allocated blocks, as `du` counts).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn touch(sum: &mut u64) -> impl FnMut(&[u8]) + '_ {
    move |data: &[u8]| {
        // Every payload byte is read.
        *sum = sum.wrapping_add(data.iter().map(|b| u64::from(*b)).sum::<u64>());
    }
}

fn run_engine(factory: &dyn Factory, base: &Path, sizes: &Sizes) -> Result<Figures> {
    let mut f = Figures::default();
    let dir = base.join(factory.name().split_whitespace().next().unwrap_or("engine"));
    let _ = std::fs::remove_dir_all(&dir);

    // W2 and W3 on one store (W1 runs before, for every engine at once: `w1_interleaved`).
    {
        let engine = factory.open(&dir.join("appends"))?;
        for t in 0..sizes.w2_threads {
            engine.append(&format!("w2-{t}"), Expected::Exact(0), &[event(t)])?;
        }
        let start = Instant::now();
        let deadline = start + sizes.w2_w3_duration;
        let engine_ref: &dyn Engine = engine.as_ref();
        let appended = std::thread::scope(|scope| -> Result<usize> {
            let handles: Vec<_> = (0..sizes.w2_threads)
                .map(|t| {
                    scope.spawn(move || -> Result<usize> {
                        let stream = format!("w2-{t}");
                        let mut i = 0;
                        while Instant::now() < deadline {
                            engine_ref.append(
                                &stream,
                                Expected::Exact(1 + i as u64),
                                &[event(i)],
                            )?;
                            i += 1;
                        }
                        Ok(i)
                    })
                })
                .collect();
            let mut appended = 0;
            for h in handles {
                appended += h.join().map_err(|_| engine::err("W2 thread panicked"))??;
            }
            Ok(appended)
        })?;
        f.w2_rate = appended as f64 / start.elapsed().as_secs_f64();
        eprintln!("  W2 {:.0} events/s ({appended} appends)", f.w2_rate);

        let batch: Vec<Event> = (0..100).map(event).collect();
        let start = Instant::now();
        let deadline = start + sizes.w2_w3_duration;
        let mut appends = 0;
        while Instant::now() < deadline {
            let stream = format!("w3-{}", appends % 100);
            engine.append(
                &stream,
                Expected::Exact((appends / 100 * 100) as u64),
                &batch,
            )?;
            appends += 1;
        }
        f.w3_rate = (appends * 100) as f64 / start.elapsed().as_secs_f64();
        eprintln!("  W3 {:.0} events/s ({appends} appends)", f.w3_rate);
    }

    // W4: one stream.
    {
        let engine = factory.open(&dir.join("one-stream"))?;
        let events: Vec<(String, Event)> = (0..sizes.w4_events)
            .map(|i| ("w4".to_string(), event(i)))
            .collect();
        engine.bulk_load(&events)?;
        drop(events);
        let mut sum = 0u64;
        let start = Instant::now();
        let n = engine.read_stream("w4", &mut touch(&mut sum))?;
        f.w4_rate = n as f64 / start.elapsed().as_secs_f64();
        if n != sizes.w4_events as u64 {
            return Err(engine::err(format!("W4 read {n} events")));
        }
        eprintln!("  W4 {:.0} events/s (checksum {sum})", f.w4_rate);
    }

    // W5 and W6: many streams, written interleaved.
    let many = dir.join("many-streams");
    {
        let engine = factory.open(&many)?;
        let mut events = Vec::with_capacity(sizes.w5_streams * sizes.w5_per_stream);
        for round in 0..sizes.w5_per_stream {
            for s in 0..sizes.w5_streams {
                events.push((format!("stream-{s}"), event(round * sizes.w5_streams + s)));
            }
        }
        let load = Instant::now();
        engine.bulk_load(&events)?;
        eprintln!(
            "  loaded {} events in {:.1} s",
            events.len(),
            load.elapsed().as_secs_f64()
        );
        drop(events);
        let mut sum = 0u64;
        let start = Instant::now();
        let n = engine.read_all(&mut touch(&mut sum))?;
        f.w5_rate = n as f64 / start.elapsed().as_secs_f64();
        if n != (sizes.w5_streams * sizes.w5_per_stream) as u64 {
            return Err(engine::err(format!("W5 read {n} events")));
        }
        eprintln!("  W5 {:.0} events/s (checksum {sum})", f.w5_rate);
    }
    f.disk_bytes = disk_usage(&many);
    // W6: the first reopen after the load, timed from the open to the end of the first read
    // (what the workload asks: RocksDB and fjall do their recovery work there). One reopen
    // varied by a third from run to run here, so `W6_REOPENS - 1` more are timed and their
    // median printed beside it.
    let mut reopens = Vec::with_capacity(W6_REOPENS);
    for _ in 0..W6_REOPENS {
        let start = Instant::now();
        let engine = factory.open(&many)?;
        let mut first = None;
        engine.read_stream("stream-7", &mut |d: &[u8]| {
            if first.is_none() {
                first = Some(d.len());
            }
        })?;
        reopens.push(start.elapsed().as_secs_f64() * 1e3);
        if first.is_none() {
            return Err(engine::err("W6: the first read found nothing"));
        }
        drop(engine);
    }
    f.w6_ms = reopens[0];
    let mut later = reopens[1..].to_vec();
    later.sort_by(f64::total_cmp);
    eprintln!(
        "  W6 {:.1} ms (the next {} reopens: median {:.1} ms, {:.1} to {:.1})",
        f.w6_ms,
        later.len(),
        later[later.len() / 2],
        later[0],
        later[later.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(f)
}

/// Reopens timed for W6: the first is W6, the median of the others is printed beside it.
const W6_REOPENS: usize = 5;

/// W1 of one engine: appends/s, p50 and p99 in µs.
type W1Figures = (f64, f64, f64);

/// W1 for every engine, and the bare append + `fdatasync` floor, in turns: `W1_ROUNDS` rounds
/// in which each takes its share of appends. This disk's speed drifts by tens of percent over
/// minutes, so engines measured one after the other were compared under different disks; taken
/// in turns, every one sees the same drift.
fn w1_interleaved(
    factories: &[&dyn Factory],
    base: &Path,
    sizes: &Sizes,
) -> (Vec<Result<W1Figures>>, f64) {
    use std::io::Write;
    let per_round = sizes.w1_appends / W1_ROUNDS;
    let mut engines: Vec<Result<Box<dyn Engine>>> = factories
        .iter()
        .map(|f| {
            let name = f.name().split_whitespace().next().unwrap_or("engine");
            let dir = base.join(format!("w1-{name}"));
            let _ = std::fs::remove_dir_all(&dir);
            f.open(&dir)
        })
        .collect();
    let mut latencies: Vec<Vec<Duration>> =
        vec![Vec::with_capacity(sizes.w1_appends); factories.len()];
    let mut spent = vec![Duration::ZERO; factories.len()];
    let floor_path = base.join("floor");
    let mut floor_file = std::fs::File::create(&floor_path).ok();
    let mut floor_latencies = Vec::with_capacity(sizes.w1_appends);
    let record = [0xabu8; 256];
    for round in 0..W1_ROUNDS {
        for (e, slot) in engines.iter_mut().enumerate() {
            let Ok(engine) = slot else { continue };
            let start = Instant::now();
            let mut failed = None;
            for i in round * per_round..(round + 1) * per_round {
                let event = event(i);
                let t = Instant::now();
                if let Err(err) = engine.append("w1", Expected::Exact(i as u64), &[event]) {
                    failed = Some(err);
                    break;
                }
                latencies[e].push(t.elapsed());
            }
            spent[e] += start.elapsed();
            if let Some(err) = failed {
                // Its later turns would only fail again (the expected versions no longer
                // match): it sits them out, and its row reports the error.
                eprintln!("  {}: W1 failed: {err}", factories[e].name());
                *slot = Err(err);
            }
        }
        if let Some(file) = &mut floor_file {
            for _ in 0..per_round {
                let t = Instant::now();
                if file
                    .write_all(&record)
                    .and_then(|()| file.sync_data())
                    .is_err()
                {
                    break;
                }
                floor_latencies.push(t.elapsed());
            }
        }
    }
    drop(floor_file);
    let _ = std::fs::remove_file(&floor_path);
    let results = engines
        .into_iter()
        .zip(latencies)
        .zip(spent)
        .map(|((engine, mut lat), spent)| {
            let engine = engine?;
            drop(engine);
            if lat.len() != per_round * W1_ROUNDS {
                return Err(engine::err("W1 did not finish"));
            }
            lat.sort();
            Ok((
                lat.len() as f64 / spent.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
            ))
        })
        .collect();
    for f in factories {
        let name = f.name().split_whitespace().next().unwrap_or("engine");
        let _ = std::fs::remove_dir_all(base.join(format!("w1-{name}")));
    }
    floor_latencies.sort();
    let floor = if floor_latencies.is_empty() {
        f64::NAN
    } else {
        percentile(&floor_latencies, 0.5)
    };
    (results, floor)
}

/// streamlog's resident set (`VmRSS`) per stream once every stream's state is loaded and idle.
/// It counts the pages of mapped files that loading touched (a packed stream's load maps its
/// pack), and not the heap that earlier work freed and loading reused: the heap per stream is
/// counted by the allocator in `cargo run --release --example memory` (the main crate).
fn memory_per_stream(base: &Path, streams: usize) -> Result<f64> {
    let dir = base.join("memory");
    let _ = std::fs::remove_dir_all(&dir);
    let factory = engines::streamlog_engine::StreamlogFactory;
    {
        let engine = factory.open(&dir)?;
        let events: Vec<(String, Event)> =
            (0..streams).map(|s| (format!("m-{s}"), event(s))).collect();
        engine.bulk_load(&events)?;
    }
    let store = streamlog::Store::open(&dir)?;
    let before = status_bytes("VmRSS:");
    for s in 0..streams {
        store.stream_version(&format!("m-{s}"))?;
    }
    let after = status_bytes("VmRSS:");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(after.saturating_sub(before) as f64 / streams as f64)
}

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut wanted: Option<Vec<String>> = None;
    let mut base: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--engines" => {
                wanted = args
                    .next()
                    .map(|s| s.split(',').map(str::to_lowercase).collect())
            }
            "--dir" => base = args.next().map(PathBuf::from),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let sizes = if quick { &QUICK } else { &FULL };
    let temp = tempfile::tempdir_in(base.clone().unwrap_or_else(|| PathBuf::from("target")))
        .expect("temporary folder");
    let base = temp.path().to_path_buf();
    let all: Vec<(&str, Box<dyn Factory>)> = vec![
        (
            "streamlog",
            Box::new(engines::streamlog_engine::StreamlogFactory),
        ),
        ("sqlite", Box::new(engines::sqlite::SqliteFactory)),
        ("rocksdb", Box::new(engines::rocks::RocksFactory)),
        ("fjall", Box::new(engines::fjall_engine::FjallFactory)),
        ("redb", Box::new(engines::redb_engine::RedbFactory)),
        ("postgres", Box::new(engines::pg::PgFactory)),
    ];
    let mut selected: Vec<&dyn Factory> = Vec::new();
    for (key, factory) in &all {
        if wanted.as_ref().is_some_and(|w| !w.iter().any(|x| x == key)) {
            continue;
        }
        if *key == "postgres" && engines::pg::bin_dir().is_none() {
            eprintln!("PostgreSQL is not installed: skipping it");
            continue;
        }
        selected.push(factory.as_ref());
    }
    eprintln!("W1, every engine in turns");
    let (w1, floor) = w1_interleaved(&selected, &base, sizes);
    let mut rows: Vec<(&'static str, Figures)> = Vec::new();
    for (factory, w1) in selected.iter().zip(w1) {
        eprintln!("{}", factory.name());
        let figures = w1
            .and_then(|(rate, p50, p99)| {
                eprintln!("  W1 {rate:.0} appends/s, p50 {p50:.0} µs");
                let mut f = run_engine(*factory, &base, sizes)?;
                (f.w1_rate, f.w1_p50_us, f.w1_p99_us) = (rate, p50, p99);
                Ok(f)
            })
            .unwrap_or_else(|e| {
                eprintln!("  failed: {e}");
                Figures {
                    error: Some(e.to_string()),
                    ..Figures::default()
                }
            });
        rows.push((factory.name(), figures));
    }
    let memory = if wanted
        .as_ref()
        .is_none_or(|w| w.iter().any(|x| x == "streamlog"))
    {
        memory_per_stream(&base, sizes.w5_streams).ok()
    } else {
        None
    };
    print_table(&rows, sizes, floor, memory);
}

fn fmt_int(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "–".into();
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(rows: &[(&str, Figures)], sizes: &Sizes, floor_us: f64, memory: Option<f64>) {
    let payload = (sizes.w5_streams * sizes.w5_per_stream * 288) as f64;
    println!(
        "| engine | W1 appends/s | W1 p50 µs | W1 p99 µs | W2 events/s | W3 events/s | W4 events/s | W5 events/s | W6 reopen ms | disk for {} events |",
        fmt_int((sizes.w5_streams * sizes.w5_per_stream) as f64)
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, f) in rows {
        if let Some(e) = &f.error {
            println!("| {name} | failed: {} |||||||||", e.replace('|', "/"));
            continue;
        }
        println!(
            "| {name} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.1} | {:.0} MB ({:.2}×) |",
            fmt_int(f.w1_rate),
            f.w1_p50_us,
            f.w1_p99_us,
            fmt_int(f.w2_rate),
            fmt_int(f.w3_rate),
            fmt_int(f.w4_rate),
            fmt_int(f.w5_rate),
            f.w6_ms,
            f.disk_bytes as f64 / 1e6,
            f.disk_bytes as f64 / payload
        );
    }
    let ours = rows
        .iter()
        .find(|(n, f)| *n == "streamlog" && f.error.is_none())
        .map(|(_, f)| f.clone());
    let peers: Vec<&Figures> = rows
        .iter()
        .filter(|(n, f)| *n != "streamlog" && f.error.is_none())
        .map(|(_, f)| f)
        .collect();
    if let (Some(o), false) = (ours, peers.is_empty()) {
        let best_high = |get: fn(&Figures) -> f64| peers.iter().map(|f| get(f)).fold(0.0, f64::max);
        let best_low =
            |get: fn(&Figures) -> f64| peers.iter().map(|f| get(f)).fold(f64::INFINITY, f64::min);
        let high = |get: fn(&Figures) -> f64| format!("{:.2}×", get(&o) / best_high(get));
        let low = |get: fn(&Figures) -> f64| format!("{:.2}×", best_low(get) / get(&o));
        println!(
            "| streamlog ÷ best peer (above 1 is better) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            high(|f| f.w1_rate),
            low(|f| f.w1_p50_us),
            low(|f| f.w1_p99_us),
            high(|f| f.w2_rate),
            high(|f| f.w3_rate),
            high(|f| f.w4_rate),
            high(|f| f.w5_rate),
            low(|f| f.w6_ms),
            low(|f| f.disk_bytes as f64),
        );
    }
    println!();
    println!("Payload MB/s: W4 and W5 read 256-byte payloads; multiply events/s by 256.");
    println!(
        "W1 floor on this disk (append 256 bytes to one file + fdatasync), p50: {floor_us:.0} µs."
    );
    if let Some(resident) = memory {
        println!(
            "streamlog resident set per loaded, idle stream: {resident:.0} bytes (VmRSS growth, mapped pack pages included; the heap per stream: `cargo run --release --example memory`)."
        );
    }
}
