//! fjall (an LSM tree in Rust), the same keys as the RocksDB adapter, `PersistMode::SyncData`
//! after every append.

use crate::engine::{err, Engine, Event, Expected, Factory, Result};
use crate::engines::rocks::{data_of, encode, stripe};
use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct FjallFactory;

struct FjallEngine {
    keyspace: Keyspace,
    events: PartitionHandle,
    streams: PartitionHandle,
    head: AtomicU64,
    stripes: Vec<Mutex<()>>,
}

fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 9);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The version of a stream lives under its id with version 0.
fn version_key(stream: &str) -> Vec<u8> {
    stream_key(stream, 0)
}

impl Factory for FjallFactory {
    fn name(&self) -> &'static str {
        "fjall (SyncData)"
    }

    fn open(&self, dir: &Path) -> Result<Box<dyn Engine>> {
        let keyspace = Config::new(dir).open()?;
        let events = keyspace.open_partition("events", PartitionCreateOptions::default())?;
        let streams = keyspace.open_partition("streams", PartitionCreateOptions::default())?;
        let head = match events.last_key_value()? {
            Some((k, _)) => u64::from_be_bytes(k[..8].try_into()?),
            None => 0,
        };
        Ok(Box::new(FjallEngine {
            keyspace,
            events,
            streams,
            head: AtomicU64::new(head),
            stripes: (0..1024).map(|_| Mutex::new(())).collect(),
        }))
    }
}

impl FjallEngine {
    fn current(&self, stream: &str) -> Result<u64> {
        Ok(match self.streams.get(version_key(stream))? {
            Some(v) => u64::from_be_bytes(v[..8].try_into()?),
            None => 0,
        })
    }

    fn put_append(
        &self,
        batch: &mut fjall::Batch,
        stream: &str,
        current: u64,
        events: &[&Event],
    ) -> u64 {
        let first = self.head.fetch_add(events.len() as u64, Ordering::SeqCst) + 1;
        for (i, e) in events.iter().enumerate() {
            let version = current + 1 + i as u64;
            let position = first + i as u64;
            batch.insert(
                &self.events,
                position.to_be_bytes(),
                encode(stream, version, e),
            );
            batch.insert(
                &self.streams,
                stream_key(stream, version),
                position.to_be_bytes(),
            );
        }
        let version = current + events.len() as u64;
        batch.insert(&self.streams, version_key(stream), version.to_be_bytes());
        version
    }
}

impl Engine for FjallEngine {
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
        let mut batch = self.keyspace.batch();
        let refs: Vec<&Event> = events.iter().collect();
        let version = self.put_append(&mut batch, stream, current, &refs);
        batch.commit()?;
        self.keyspace.persist(PersistMode::SyncData)?;
        Ok(version)
    }

    fn bulk_load(&self, events: &[(String, Event)]) -> Result<()> {
        let mut versions: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for chunk in events.chunks(20_000) {
            let mut batch = self.keyspace.batch();
            for (stream, e) in chunk {
                let current = match versions.get(stream.as_str()) {
                    Some(v) => *v,
                    None => self.current(stream)?,
                };
                let v = self.put_append(&mut batch, stream, current, &[e]);
                versions.insert(stream, v);
            }
            batch.commit()?;
            self.keyspace.persist(PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn read_stream(&self, stream: &str, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let from = stream_key(stream, 1);
        let to = stream_key(stream, u64::MAX);
        let mut n = 0;
        for item in self.streams.range(from..=to) {
            let (_, p) = item?;
            let v = self
                .events
                .get(&p[..8])?
                .ok_or_else(|| err("indexed event missing"))?;
            visit(data_of(&v));
            n += 1;
        }
        Ok(n)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let mut n = 0;
        for item in self.events.iter() {
            let (_, v) = item?;
            visit(data_of(&v));
            n += 1;
        }
        Ok(n)
    }
}
