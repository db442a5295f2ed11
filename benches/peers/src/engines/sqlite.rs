//! SQLite: WAL, `synchronous=FULL`, one table of events keyed by global position, a unique
//! index on (stream, version), and a table of stream versions for the expected-version check.

use crate::engine::{err, Engine, Event, Expected, Factory, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct SqliteFactory;

struct SqliteEngine {
    path: PathBuf,
    /// SQLite admits one writer at a time; with a connection per thread, 64 writers spin in
    /// the busy handler (384 appends/s measured). One writer connection behind a mutex is how
    /// an application would use it.
    writer: Mutex<Connection>,
    /// Readers: one connection per concurrent caller, taken and given back.
    pool: Mutex<Vec<Connection>>,
}

fn connect(path: &Path) -> Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.busy_timeout(std::time::Duration::from_secs(60))?;
    Ok(c)
}

impl Factory for SqliteFactory {
    fn name(&self) -> &'static str {
        "SQLite (WAL, FULL)"
    }

    fn open(&self, dir: &Path) -> Result<Box<dyn Engine>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("events.db");
        let c = connect(&path)?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                position INTEGER PRIMARY KEY,
                stream TEXT NOT NULL,
                version INTEGER NOT NULL,
                event_type TEXT NOT NULL,
                data BLOB NOT NULL,
                metadata BLOB NOT NULL);
             CREATE UNIQUE INDEX IF NOT EXISTS events_stream ON events (stream, version);
             CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, version INTEGER NOT NULL);",
        )?;
        Ok(Box::new(SqliteEngine {
            writer: Mutex::new(connect(&path)?),
            path,
            pool: Mutex::new(vec![c]),
        }))
    }
}

impl SqliteEngine {
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let taken = self.pool.lock().map_err(|_| err("pool"))?.pop();
        let mut c = match taken {
            Some(c) => c,
            None => connect(&self.path)?,
        };
        let r = f(&mut c);
        self.pool.lock().map_err(|_| err("pool"))?.push(c);
        r
    }
}

fn append_in(
    tx: &rusqlite::Transaction,
    stream: &str,
    expected: Expected,
    events: &[&Event],
) -> Result<u64> {
    let current: u64 = tx
        .query_row(
            "SELECT version FROM streams WHERE stream = ?1",
            [stream],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    if let Expected::Exact(v) = expected {
        if v != current {
            return Err(err(format!("{stream}: expected {v}, at {current}")));
        }
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (stream, version, event_type, data, metadata) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (i, e) in events.iter().enumerate() {
        insert.execute(params![
            stream,
            current + 1 + i as u64,
            e.event_type,
            e.data,
            e.metadata
        ])?;
    }
    let version = current + events.len() as u64;
    tx.prepare_cached(
        "INSERT INTO streams (stream, version) VALUES (?1, ?2)
         ON CONFLICT (stream) DO UPDATE SET version = excluded.version",
    )?
    .execute(params![stream, version])?;
    Ok(version)
}

impl Engine for SqliteEngine {
    fn append(&self, stream: &str, expected: Expected, events: &[Event]) -> Result<u64> {
        let mut c = self.writer.lock().map_err(|_| err("writer"))?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let refs: Vec<&Event> = events.iter().collect();
        let v = append_in(&tx, stream, expected, &refs)?;
        tx.commit()?;
        Ok(v)
    }

    fn bulk_load(&self, events: &[(String, Event)]) -> Result<()> {
        let mut c = self.writer.lock().map_err(|_| err("writer"))?;
        for chunk in events.chunks(20_000) {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (stream, e) in chunk {
                append_in(&tx, stream, Expected::Any, &[e])?;
            }
            tx.commit()?;
        }
        Ok(())
    }

    fn read_stream(&self, stream: &str, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        self.with(|c| {
            let mut q =
                c.prepare_cached("SELECT data FROM events WHERE stream = ?1 ORDER BY version")?;
            let mut rows = q.query([stream])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                visit(row.get_ref(0)?.as_blob()?);
                n += 1;
            }
            Ok(n)
        })
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        self.with(|c| {
            let mut q = c.prepare_cached("SELECT data FROM events ORDER BY position")?;
            let mut rows = q.query([])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                visit(row.get_ref(0)?.as_blob()?);
                n += 1;
            }
            Ok(n)
        })
    }
}
