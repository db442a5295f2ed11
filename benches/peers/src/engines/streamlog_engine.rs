//! streamlog itself, through its public API.

use crate::engine::{Engine, Event, Expected, Factory, Result};
use std::path::Path;
use streamlog::{Direction, EventData, ExpectedVersion, Options, Position, Store};

pub struct StreamlogFactory;

struct StreamlogEngine {
    store: Store,
}

fn data(e: &Event) -> EventData {
    EventData::new(e.event_type, e.data.clone()).metadata(e.metadata.clone())
}

impl Factory for StreamlogFactory {
    fn name(&self) -> &'static str {
        "streamlog"
    }

    fn open(&self, dir: &Path) -> Result<Box<dyn Engine>> {
        // `STREAMLOG_CALLER_COMMITS=0`: every append through the writer thread (the option's
        // A/B in the README); the default otherwise.
        let options = Options {
            caller_commits: std::env::var("STREAMLOG_CALLER_COMMITS").map_or(true, |v| v != "0"),
            ..Options::default()
        };
        Ok(Box::new(StreamlogEngine {
            store: Store::open_with(dir, options)?,
        }))
    }
}

impl Engine for StreamlogEngine {
    fn append(&self, stream: &str, expected: Expected, events: &[Event]) -> Result<u64> {
        let expected = match expected {
            Expected::Any => ExpectedVersion::Any,
            Expected::Exact(v) => ExpectedVersion::Exact(v),
        };
        Ok(self
            .store
            .append(stream, expected, events.iter().map(data))?
            .last_version)
    }

    fn bulk_load(&self, events: &[(String, Event)]) -> Result<()> {
        // No multi-stream append yet: runs of one stream go in one append, and 256 threads
        // share the group commit.
        let mut runs: Vec<(&str, Vec<&Event>)> = Vec::new();
        for (stream, event) in events {
            match runs.last_mut() {
                Some((s, run)) if *s == stream.as_str() && run.len() < 1000 => run.push(event),
                _ => runs.push((stream.as_str(), vec![event])),
            }
        }
        let threads = 256;
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let runs = &runs;
                    let store = &self.store;
                    scope.spawn(move || -> Result<()> {
                        // Runs of one stream must stay in order: a stream belongs to one thread.
                        for (stream, run) in runs.iter() {
                            if hash(stream) as usize % threads != t {
                                continue;
                            }
                            store.append(
                                stream,
                                ExpectedVersion::Any,
                                run.iter().map(|e| data(e)),
                            )?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| crate::engine::err("loader thread panicked"))??;
            }
            Ok(())
        })
    }

    fn read_stream(&self, stream: &str, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let mut n = 0;
        for e in self.store.read_stream(stream, 1, Direction::Forward)? {
            visit(e?.data());
            n += 1;
        }
        Ok(n)
    }

    fn read_all(&self, visit: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let mut n = 0;
        for e in self.store.read_all(Position::START, Direction::Forward)? {
            visit(e?.data());
            n += 1;
        }
        Ok(n)
    }
}

/// Any stable spread of stream ids over the loader threads.
fn hash(stream: &str) -> u64 {
    stream.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
