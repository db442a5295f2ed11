//! RocksDB with `sync = true` on every write. Events are keyed by global position (the primary
//! copy, so reading all streams is one scan); a stream index maps (stream, version) to the
//! position; a stream's version is a key of its own. Appends to different streams run
//! concurrently (RocksDB's own group commit batches their syncs); appends to one stream are
//! serialized by a lock stripe, which makes the expected-version check exact.

use crate::engine::{err, Engine, Event, Expected, Factory, Result};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct RocksFactory;

struct RocksEngine {
    db: DB,
    head: AtomicU64,
    stripes: Vec<Mutex<()>>,
}

fn position_key(p: u64) -> [u8; 9] {
    let mut k = [b'p'; 9];
    k[1..].copy_from_slice(&p.to_be_bytes());
    k
}

fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 10);
    k.push(b's');
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn version_key(stream: &str) -> Vec<u8> {
    let mut k = vec![b'v'];
    k.extend_from_slice(stream.as_bytes());
    k
}

/// The stored event: stream, version, type, data, metadata, length-prefixed.
pub fn encode(stream: &str, version: u64, e: &Event) -> Vec<u8> {
    let mut v = Vec::with_capacity(stream.len() + e.data.len() + e.metadata.len() + 32);
    for part in [stream.as_bytes(), e.event_type.as_bytes(), &e.metadata] {
        v.extend_from_slice(&(part.len() as u32).to_le_bytes());
        v.extend_from_slice(part);
    }
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&e.data);
    v
}

/// The data part of an encoded event.
pub fn data_of(v: &[u8]) -> &[u8] {
    let mut at = 0;
    for _ in 0..3 {
        let len = u32::from_le_bytes(v[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
        at += 4 + len;
    }
    &v[at + 8..]
}

/// Which of 1,024 locks serializes appends to `stream`.
pub fn stripe(stream: &str) -> usize {
    stream.bytes().fold(7usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % 1024
}

impl Factory for RocksFactory {
    fn name(&self) -> &'static str {
        "RocksDB (sync)"
    }

    fn open(&self, dir: &Path) -> Result<Box<dyn Engine>> {
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, dir)?;
        // The head: the last position key.
        let head = match db
            .iterator(IteratorMode::From(
                &position_key(u64::MAX),
                Direction::Reverse,
            ))
            .next()
        {
            Some(Ok((k, _))) if k.first() == Some(&b'p') => u64::from_be_bytes(k[1..9].try_into()?),
            _ => 0,
        };
        Ok(Box::new(RocksEngine {
            db,
            head: AtomicU64::new(head),
            stripes: (0..1024).map(|_| Mutex::new(())).collect(),
        }))
    }
}

impl RocksEngine {
    fn current(&self, stream: &str) -> Result<u64> {
        Ok(match self.db.get(version_key(stream))? {
            Some(v) => u64::from_le_bytes(v.as_slice().try_into()?),
            None => 0,
        })
    }

    fn put_append(
        &self,
        batch: &mut WriteBatch,
        stream: &str,
        current: u64,
        events: &[&Event],
    ) -> u64 {
        let first = self.head.fetch_add(events.len() as u64, Ordering::SeqCst) + 1;
        for (i, e) in events.iter().enumerate() {
            let version = current + 1 + i as u64;
            let position = first + i as u64;
            batch.put(position_key(position), encode(stream, version, e));
            batch.put(stream_key(stream, version), position.to_be_bytes());
        }
        let version = current + events.len() as u64;
        batch.put(version_key(stream), version.to_le_bytes());
        version
    }
}

impl Engine for RocksEngine {
    fn append(&self, stream: &str, expected: Expected, events: &[Event]) -> Result<u64> {
        let _turn = self.stripes[stripe(stream)]
            .lock()
            .map_err(|_| err("stripe"))?;
        let current = self.current(stream)?;
        if let Expected::Exact(v) = expected {
            if v != current {
                return Err(err(format!("{stream}: expected {v}, at {current}")));
            }
        }
        let mut batch = WriteBatch::default();
        let refs: Vec<&Event> = events.iter().collect();
        let version = self.put_append(&mut batch, stream, current, &refs);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync)?;
        Ok(version)
    }

    fn bulk_load(&self, events: &[(String, Event)]) -> Result<()> {
        let mut versions: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for chunk in events.chunks(20_000) {
            let mut batch = WriteBatch::default();
            for (stream, e) in chunk {
                let current = match versions.get(stream.as_str()) {
                    Some(v) => *v,
                    None => self.current(stream)?,
                };
                let v = self.put_append(&mut batch, stream, current, &[e]);
                versions.insert(stream, v);
            }
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            self.db.write_opt(batch, &sync)?;
        }
        Ok(())
    }

    fn read_stream(&self, stream: &str, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let from = stream_key(stream, 1);
        let prefix_len = from.len() - 8;
        let mut positions = Vec::new();
        let mut n = 0;
        let mut flush = |positions: &mut Vec<[u8; 9]>| -> Result<()> {
            for v in self.db.multi_get(positions.iter()) {
                let v = v?.ok_or_else(|| err("indexed event missing"))?;
                visit(data_of(&v));
            }
            positions.clear();
            Ok(())
        };
        for item in self
            .db
            .iterator(IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item?;
            if k.len() != from.len() || k[..prefix_len] != from[..prefix_len] {
                break;
            }
            positions.push(position_key(u64::from_be_bytes(v[..8].try_into()?)));
            n += 1;
            if positions.len() == 1024 {
                flush(&mut positions)?;
            }
        }
        flush(&mut positions)?;
        Ok(n)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let mut n = 0;
        for item in self
            .db
            .iterator(IteratorMode::From(&position_key(1), Direction::Forward))
        {
            let (k, v) = item?;
            if k.first() != Some(&b'p') {
                break;
            }
            visit(data_of(&v));
            n += 1;
        }
        Ok(n)
    }
}
