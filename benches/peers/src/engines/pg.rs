//! PostgreSQL 15 with the schema of the seeds' `eventstore` (streams, events, stream_events,
//! and the `$all` stream as stream 0 whose versions are the global positions). The bench starts
//! its own server on a private port and socket folder, with the default durability
//! (`fsync = on`, `synchronous_commit = on`), and stops it when done.

use crate::engine::{err, Engine, Event, Expected, Factory, Result};
use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub struct PgFactory;

const PORT: u16 = 54_329;

/// The folder of the server binaries, when PostgreSQL is installed.
pub fn bin_dir() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    let bin = versions.pop()?.join("bin");
    bin.join("initdb").exists().then_some(bin)
}

/// Run a server binary as the `postgres` user when we are root (initdb refuses root).
fn run_pg(bin: &Path, tool: &str, args: &[&str]) -> Result<()> {
    let tool = bin.join(tool);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&tool);
        c
    } else {
        Command::new(&tool)
    };
    // Not `output()`: the server that `pg_ctl start` leaves running would hold the pipes open.
    let status = command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(err(format!("{} {args:?}: {status}", tool.display())));
    }
    Ok(())
}

fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

struct PgEngine {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    pool: Mutex<Vec<Client>>,
}

impl Factory for PgFactory {
    fn name(&self) -> &'static str {
        "PostgreSQL (seed schema)"
    }

    fn open(&self, dir: &Path) -> Result<Box<dyn Engine>> {
        let bin = bin_dir().ok_or_else(|| err("PostgreSQL is not installed"))?;
        let data = dir.join("data");
        let socket = dir.join("socket");
        let fresh = !data.exists();
        if fresh {
            std::fs::create_dir_all(&socket)?;
            // The server runs as `postgres`: it must reach the folder.
            let mut p = dir.to_path_buf();
            loop {
                let _ = Command::new("chmod").arg("a+rwx").arg(&p).status();
                if !p.pop() || p.as_os_str().len() <= 4 {
                    break;
                }
            }
            let _ = Command::new("chmod").arg("a+rwx").arg(&socket).status();
            run_pg(
                &bin,
                "initdb",
                &[
                    "-D",
                    data.to_str().unwrap_or_default(),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                ],
            )?;
        }
        let options = format!(
            "-p {PORT} -k {} -c listen_addresses= -c max_connections=120",
            socket.display()
        );
        let log = dir.join("server.log");
        run_pg(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-l",
                log.to_str().unwrap_or_default(),
                "-o",
                &options,
                "-w",
                "-s",
                "start",
            ],
        )?;
        let engine = PgEngine {
            bin,
            data,
            socket,
            pool: Mutex::new(Vec::new()),
        };
        if fresh {
            engine.with(|c| {
                c.batch_execute(
                    "CREATE TABLE streams (
                        stream_id bigserial PRIMARY KEY,
                        stream_uuid text NOT NULL UNIQUE,
                        stream_version bigint NOT NULL DEFAULT 0,
                        created_at timestamptz NOT NULL DEFAULT now());
                     INSERT INTO streams (stream_id, stream_uuid, stream_version) VALUES (0, '$all', 0);
                     CREATE TABLE events (
                        event_id uuid PRIMARY KEY,
                        event_type text NOT NULL,
                        causation_id uuid,
                        correlation_id uuid,
                        data bytea NOT NULL,
                        metadata bytea,
                        created_at timestamptz NOT NULL DEFAULT now());
                     CREATE TABLE stream_events (
                        event_id uuid NOT NULL REFERENCES events (event_id),
                        stream_id bigint NOT NULL REFERENCES streams (stream_id),
                        stream_version bigint NOT NULL,
                        original_stream_id bigint REFERENCES streams (stream_id),
                        original_stream_version bigint,
                        PRIMARY KEY (event_id, stream_id));
                     CREATE UNIQUE INDEX ix_stream_events ON stream_events (stream_id, stream_version);",
                )?;
                Ok(())
            })?;
        }
        Ok(Box::new(engine))
    }
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        self.pool.lock().map(|mut p| p.clear()).ok();
        let _ = run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap_or_default(),
                "-m",
                "fast",
                "-w",
                "-s",
                "stop",
            ],
        );
    }
}

impl PgEngine {
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let taken = self.pool.lock().map_err(|_| err("pool"))?.pop();
        let mut c = match taken {
            Some(c) => c,
            None => Client::connect(
                &format!(
                    "host={} port={PORT} user=postgres dbname=postgres",
                    self.socket.display()
                ),
                NoTls,
            )?,
        };
        let r = f(&mut c);
        self.pool.lock().map_err(|_| err("pool"))?.push(c);
        r
    }
}

fn append_in(
    tx: &mut postgres::Transaction,
    stream: &str,
    expected: Expected,
    events: &[&Event],
) -> Result<u64> {
    tx.execute(
        "INSERT INTO streams (stream_uuid) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&stream],
    )?;
    let row = tx.query_one(
        "SELECT stream_id, stream_version FROM streams WHERE stream_uuid = $1 FOR UPDATE",
        &[&stream],
    )?;
    let (stream_id, current): (i64, i64) = (row.get(0), row.get(1));
    if let Expected::Exact(v) = expected {
        if v as i64 != current {
            return Err(err(format!("{stream}: expected {v}, at {current}")));
        }
    }
    // The global order: the `$all` stream's version, under its row lock.
    let all: i64 = tx
        .query_one(
            "SELECT stream_version FROM streams WHERE stream_id = 0 FOR UPDATE",
            &[],
        )?
        .get(0);
    let insert = tx.prepare(
        "WITH e AS (INSERT INTO events (event_id, event_type, data, metadata)
                    VALUES (gen_random_uuid(), $1, $2, $3) RETURNING event_id)
         INSERT INTO stream_events (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
         SELECT e.event_id, x.stream_id, x.version, $4, $5
         FROM e, (VALUES ($4::bigint, $5::bigint), (0::bigint, $6::bigint)) AS x(stream_id, version)",
    )?;
    for (i, e) in events.iter().enumerate() {
        let version = current + 1 + i as i64;
        let position = all + 1 + i as i64;
        tx.execute(
            &insert,
            &[
                &e.event_type,
                &e.data,
                &e.metadata,
                &stream_id,
                &version,
                &position,
            ],
        )?;
    }
    let n = events.len() as i64;
    tx.execute(
        "UPDATE streams SET stream_version = $2 WHERE stream_id = $1",
        &[&stream_id, &(current + n)],
    )?;
    tx.execute(
        "UPDATE streams SET stream_version = $1 WHERE stream_id = 0",
        &[&(all + n)],
    )?;
    Ok((current + n) as u64)
}

impl Engine for PgEngine {
    fn append(&self, stream: &str, expected: Expected, events: &[Event]) -> Result<u64> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let refs: Vec<&Event> = events.iter().collect();
            let v = append_in(&mut tx, stream, expected, &refs)?;
            tx.commit()?;
            Ok(v)
        })
    }

    fn bulk_load(&self, events: &[(String, Event)]) -> Result<()> {
        // Setup only: whole chunks in a few array-valued statements, not a round trip per event.
        self.with(|c| {
            let mut versions: std::collections::HashMap<String, (i64, i64)> = std::collections::HashMap::new();
            let mut id_counter: u64 = 0;
            for chunk in events.chunks(20_000) {
                let mut tx = c.transaction()?;
                let mut names: Vec<String> = chunk.iter().map(|(s, _)| s.clone()).collect();
                names.sort();
                names.dedup();
                tx.execute(
                    "INSERT INTO streams (stream_uuid) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                    &[&names],
                )?;
                for row in tx.query(
                    "SELECT stream_uuid, stream_id, stream_version FROM streams WHERE stream_uuid = ANY($1)",
                    &[&names],
                )? {
                    let name: String = row.get(0);
                    versions.entry(name).or_insert((row.get(1), row.get(2)));
                }
                let all: i64 = tx
                    .query_one("SELECT stream_version FROM streams WHERE stream_id = 0 FOR UPDATE", &[])?
                    .get(0);
                let (mut ids, mut types, mut data, mut metadata) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let (mut sids, mut svers, mut positions) = (Vec::new(), Vec::new(), Vec::new());
                for (i, (stream, e)) in chunk.iter().enumerate() {
                    id_counter += 1;
                    ids.push(format!("{:08x}-0000-4000-8000-{:012x}", all as u64 + 1, id_counter));
                    types.push(e.event_type.to_string());
                    data.push(e.data.clone());
                    metadata.push(e.metadata.clone());
                    let entry = versions.get_mut(stream).ok_or_else(|| err("stream id missing"))?;
                    entry.1 += 1;
                    sids.push(entry.0);
                    svers.push(entry.1);
                    positions.push(all + 1 + i as i64);
                }
                tx.execute(
                    "INSERT INTO events (event_id, event_type, data, metadata)
                     SELECT unnest($1::text[])::uuid, unnest($2::text[]), unnest($3::bytea[]), unnest($4::bytea[])",
                    &[&ids, &types, &data, &metadata],
                )?;
                tx.execute(
                    "INSERT INTO stream_events (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
                     SELECT e::uuid, s, v, s, v FROM unnest($1::text[], $2::int8[], $3::int8[]) AS x(e, s, v)",
                    &[&ids, &sids, &svers],
                )?;
                tx.execute(
                    "INSERT INTO stream_events (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
                     SELECT e::uuid, 0, p, s, v FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS x(e, p, s, v)",
                    &[&ids, &positions, &sids, &svers],
                )?;
                let touched: Vec<(i64, i64)> = names.iter().filter_map(|n| versions.get(n).copied()).collect();
                let (tids, tvers): (Vec<i64>, Vec<i64>) = touched.into_iter().unzip();
                tx.execute(
                    "UPDATE streams SET stream_version = x.v FROM unnest($1::int8[], $2::int8[]) AS x(id, v)
                     WHERE streams.stream_id = x.id",
                    &[&tids, &tvers],
                )?;
                tx.execute(
                    "UPDATE streams SET stream_version = $1 WHERE stream_id = 0",
                    &[&(all + chunk.len() as i64)],
                )?;
                tx.commit()?;
            }
            Ok(())
        })
    }

    fn read_stream(&self, stream: &str, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        self.with(|c| {
            let rows = c.query(
                "SELECT e.data FROM stream_events se
                 JOIN streams s ON s.stream_id = se.stream_id
                 JOIN events e ON e.event_id = se.event_id
                 WHERE s.stream_uuid = $1 ORDER BY se.stream_version",
                &[&stream],
            )?;
            for row in &rows {
                visit(row.get::<_, &[u8]>(0));
            }
            Ok(rows.len() as u64)
        })
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        self.with(|c| {
            let mut n = 0;
            // In windows of positions, so that a million rows are never held at once.
            let mut from = 1i64;
            loop {
                let rows = c.query(
                    "SELECT e.data FROM stream_events se JOIN events e ON e.event_id = se.event_id
                     WHERE se.stream_id = 0 AND se.stream_version >= $1 AND se.stream_version < $2
                     ORDER BY se.stream_version",
                    &[&from, &(from + 50_000)],
                )?;
                if rows.is_empty() {
                    break;
                }
                for row in &rows {
                    visit(row.get::<_, &[u8]>(0));
                }
                n += rows.len() as u64;
                from += 50_000;
            }
            Ok(n)
        })
    }
}
