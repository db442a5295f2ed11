//! redb (a copy-on-write B-tree in Rust), `Durability::Immediate` (its default): one write
//! transaction at a time, each durable at commit.

use crate::engine::{err, Engine, Event, Expected, Factory, Result};
use crate::engines::rocks::{data_of, encode};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const STREAM_INDEX: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_index");
const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");

pub struct RedbFactory;

struct RedbEngine {
    db: Database,
}

impl Factory for RedbFactory {
    fn name(&self) -> &'static str {
        "redb (Immediate)"
    }

    fn open(&self, dir: &Path) -> Result<Box<dyn Engine>> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("events.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(EVENTS)?;
        tx.open_table(STREAM_INDEX)?;
        tx.open_table(STREAMS)?;
        tx.commit()?;
        Ok(Box::new(RedbEngine { db }))
    }
}

fn append_in(
    tx: &redb::WriteTransaction,
    stream: &str,
    expected: Expected,
    events: &[&Event],
) -> Result<u64> {
    let mut streams = tx.open_table(STREAMS)?;
    let current = streams.get(stream)?.map_or(0, |v| v.value());
    if let Expected::Exact(v) = expected {
        if v != current {
            return Err(err(format!("{stream}: expected {v}, at {current}")));
        }
    }
    let mut table = tx.open_table(EVENTS)?;
    let mut index = tx.open_table(STREAM_INDEX)?;
    let head = table.last()?.map_or(0, |(k, _)| k.value());
    for (i, e) in events.iter().enumerate() {
        let version = current + 1 + i as u64;
        let position = head + 1 + i as u64;
        table.insert(position, encode(stream, version, e).as_slice())?;
        index.insert((stream, version), position)?;
    }
    let version = current + events.len() as u64;
    streams.insert(stream, version)?;
    Ok(version)
}

impl Engine for RedbEngine {
    fn append(&self, stream: &str, expected: Expected, events: &[Event]) -> Result<u64> {
        let tx = self.db.begin_write()?;
        let refs: Vec<&Event> = events.iter().collect();
        let v = append_in(&tx, stream, expected, &refs)?;
        tx.commit()?;
        Ok(v)
    }

    fn bulk_load(&self, events: &[(String, Event)]) -> Result<()> {
        for chunk in events.chunks(20_000) {
            let tx = self.db.begin_write()?;
            for (stream, e) in chunk {
                append_in(&tx, stream, Expected::Any, &[e])?;
            }
            tx.commit()?;
        }
        Ok(())
    }

    fn read_stream(&self, stream: &str, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(STREAM_INDEX)?;
        let table = tx.open_table(EVENTS)?;
        let mut n = 0;
        for item in index.range((stream, 1)..=(stream, u64::MAX))? {
            let (_, p) = item?;
            let v = table
                .get(p.value())?
                .ok_or_else(|| err("indexed event missing"))?;
            visit(data_of(v.value()));
            n += 1;
        }
        Ok(n)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        let mut n = 0;
        for item in table.iter()? {
            let (_, v) = item?;
            visit(data_of(v.value()));
            n += 1;
        }
        Ok(n)
    }
}
