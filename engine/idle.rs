//! Idle streams' states, each encoded into one small allocation (segment-format.md §9).
//!
//! A store of a million small streams keeps many loaded streams that nobody holds. A shared
//! `StreamMeta` costs about 270 bytes of heap (its `Arc`, its id's `Arc<str>`, a lock, a state
//! sized for streams of many segments, a map slot of 24 bytes); an idle stream's state kept here
//! costs its id's bytes plus about 20 bytes of LEB128 fields, and a 16-byte slot. The catalog
//! turns a state back into a `StreamMeta` when someone asks for the stream again: the state is
//! the same as the one it encoded, so nothing is read from disk.

use crate::catalog::{PackedState, SegmentState, StreamMeta, StreamState};
use crate::format::{get_varint as get, put_varint as put};
use crate::layout::StreamKey;
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

/// One idle stream: its id's length and bytes, then its state (see `encode`). Hashed and
/// compared by its id's bytes, so that a set of them is looked up with `stream.as_bytes()`.
pub struct IdleStream(Box<[u8]>);

const FLAG_CLOSED: u8 = 1;
const FLAG_DELETED: u8 = 2;
const FLAG_PACKED: u8 = 4;
/// Never rewritten, no segment: the first readable version 1, the segment after segment 0 is
/// 1, generation and base position 0, no segments; none of them is written. Most small streams.
const FLAG_PLAIN: u8 = 8;
/// Its packed records' version is the stream's (it has no segment): not written again.
const FLAG_PACKED_VERSION_IS_VERSION: u8 = 16;

impl IdleStream {
    /// Encode a stream's identity and state: the id's length and bytes, the collision number, a
    /// flags byte, then the numbers of the state as LEB128 varints, less those the flags say
    /// have their usual values.
    pub fn encode(meta: &StreamMeta) -> IdleStream {
        let state = meta
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::with_capacity(meta.id.len() + 32 + 24 * state.segments.len());
        put(&mut out, meta.id.len() as u64);
        out.extend_from_slice(meta.id.as_bytes());
        put(&mut out, u64::from(meta.key.collision));
        let mut flags = 0;
        if state.closed {
            flags |= FLAG_CLOSED;
        }
        if state.deleted {
            flags |= FLAG_DELETED;
        }
        if state.packed.is_some() {
            flags |= FLAG_PACKED;
        }
        let plain = state.first_version == 1
            && state.after_zero == 1
            && state.generation == 0
            && state.base_position == 0
            && state.segments.is_empty();
        if plain {
            flags |= FLAG_PLAIN;
        }
        let packed_version = state.packed.map(|p| p.version);
        if packed_version == Some(state.version) {
            flags |= FLAG_PACKED_VERSION_IS_VERSION;
        }
        out.push(flags);
        put(&mut out, state.version);
        put(&mut out, state.changeset);
        if !plain {
            for v in [
                state.first_version,
                u64::from(state.after_zero),
                state.generation,
                state.base_position,
                state.segments.len() as u64,
            ] {
                put(&mut out, v);
            }
        }
        for s in &state.segments {
            for v in [
                u64::from(s.number),
                s.first_version,
                s.header_bytes,
                s.end,
                s.last_version,
            ] {
                put(&mut out, v);
            }
        }
        if let Some(p) = state.packed {
            put(&mut out, p.last);
            put(&mut out, p.bytes);
            if flags & FLAG_PACKED_VERSION_IS_VERSION == 0 {
                put(&mut out, p.version);
            }
            put(&mut out, p.entry_offset);
        }
        IdleStream(out.into_boxed_slice())
    }

    /// The stream id's bytes.
    pub fn id(&self) -> &[u8] {
        let mut at = 0;
        let Some(len) = get(&self.0, &mut at) else {
            return &[];
        };
        usize::try_from(len)
            .ok()
            .and_then(|len| self.0.get(at..at.checked_add(len)?))
            .unwrap_or(&[])
    }

    /// The stream again, as `encode` found it. `stream` is its id (the caller looked it up by
    /// it) and `hash` the id's keyed hash. `None` only if the bytes are not an encoding, which
    /// `encode` never makes: the caller then loads the stream from disk.
    pub fn decode(&self, stream: &str, hash: u64) -> Option<StreamMeta> {
        let b = &self.0;
        let mut at = 0;
        let len = usize::try_from(get(b, &mut at)?).ok()?;
        if b.get(at..at.checked_add(len)?)? != stream.as_bytes() {
            return None;
        }
        at += len;
        let collision = u16::try_from(get(b, &mut at)?).ok()?;
        let flags = *b.get(at)?;
        at += 1;
        let mut next = || get(b, &mut at);
        let version = next()?;
        let changeset = next()?;
        let (first_version, after_zero, generation, base_position, count) =
            if flags & FLAG_PLAIN != 0 {
                (1, 1, 0, 0, 0)
            } else {
                (
                    next()?,
                    u32::try_from(next()?).ok()?,
                    next()?,
                    next()?,
                    usize::try_from(next()?).ok()?,
                )
            };
        // Every segment takes at least five bytes: a count beyond them is not an encoding.
        if count > b.len() / 5 {
            return None;
        }
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            segments.push(SegmentState {
                number: u32::try_from(next()?).ok()?,
                first_version: next()?,
                header_bytes: next()?,
                end: next()?,
                last_version: next()?,
            });
        }
        let packed = if flags & FLAG_PACKED != 0 {
            Some(PackedState {
                last: next()?,
                bytes: next()?,
                version: if flags & FLAG_PACKED_VERSION_IS_VERSION != 0 {
                    version
                } else {
                    next()?
                },
                entry_offset: next()?,
            })
        } else {
            None
        };
        if at != b.len() {
            return None;
        }
        Some(StreamMeta {
            id: Arc::from(stream),
            key: StreamKey { hash, collision },
            state: RwLock::new(StreamState {
                version,
                changeset,
                segments,
                first_version,
                after_zero,
                closed: flags & FLAG_CLOSED != 0,
                deleted: flags & FLAG_DELETED != 0,
                generation,
                base_position,
                packed,
            }),
        })
    }

    /// Heap bytes this state takes (the figure the memory example reports is the allocator's).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.0.len()
    }
}

impl Borrow<[u8]> for IdleStream {
    fn borrow(&self) -> &[u8] {
        self.id()
    }
}

impl Hash for IdleStream {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // As `[u8]` hashes: `Borrow` requires the same hash as the borrowed form.
        self.id().hash(h);
    }
}

impl PartialEq for IdleStream {
    fn eq(&self, other: &IdleStream) -> bool {
        self.id() == other.id()
    }
}

impl Eq for IdleStream {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn meta(id: &str, state: StreamState) -> StreamMeta {
        StreamMeta {
            id: Arc::from(id),
            key: StreamKey {
                hash: 0x1234_5678_9abc_def0,
                collision: 3,
            },
            state: RwLock::new(state),
        }
    }

    fn round_trip(m: &StreamMeta) -> StreamMeta {
        let idle = IdleStream::encode(m);
        assert_eq!(idle.id(), m.id.as_bytes());
        idle.decode(&m.id, m.key.hash).expect("decodes")
    }

    fn same(a: &StreamMeta, b: &StreamMeta) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.key, b.key);
        let (a, b) = (a.snapshot(), b.snapshot());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn every_field_of_a_state_comes_back() {
        let packed = meta(
            "order-42",
            StreamState {
                version: 10,
                changeset: 3,
                segments: Vec::new(),
                first_version: 4,
                after_zero: 1,
                closed: true,
                deleted: false,
                generation: 0,
                base_position: 0,
                packed: Some(PackedState {
                    last: 9_876_543,
                    bytes: 3_120,
                    version: 10,
                    entry_offset: 70_000,
                }),
            },
        );
        same(&packed, &round_trip(&packed));
        let files = meta(
            "é-stream",
            StreamState {
                version: u64::MAX,
                changeset: 1 << 40,
                segments: vec![
                    SegmentState {
                        number: 0,
                        first_version: 1,
                        header_bytes: 128,
                        end: 1 << 33,
                        last_version: 77,
                    },
                    SegmentState {
                        number: u32::MAX,
                        first_version: 78,
                        header_bytes: 64,
                        end: 4096,
                        last_version: u64::MAX,
                    },
                ],
                first_version: 1,
                after_zero: 9,
                closed: false,
                deleted: true,
                generation: 5,
                base_position: u64::MAX - 1,
                packed: None,
            },
        );
        same(&files, &round_trip(&files));
        // A packed prefix, then segments of its own: the packed version is not the stream's.
        let both = meta(
            "both",
            StreamState {
                version: 20,
                changeset: 4,
                segments: vec![SegmentState {
                    number: 0,
                    first_version: 11,
                    header_bytes: 64,
                    end: 700,
                    last_version: 20,
                }],
                packed: Some(PackedState {
                    last: 5,
                    bytes: 640,
                    version: 10,
                    entry_offset: 64,
                }),
                ..StreamState::default()
            },
        );
        same(&both, &round_trip(&both));
        // Registered by the writer before its first record is committed.
        let new = meta("", StreamState::default());
        same(&new, &round_trip(&new));
    }

    #[test]
    fn a_small_packed_stream_takes_a_few_dozen_bytes() {
        let m = meta(
            "stream-000123",
            StreamState {
                version: 10,
                changeset: 1,
                packed: Some(PackedState {
                    last: 9_000_000,
                    bytes: 3_120,
                    version: 10,
                    entry_offset: 12_000,
                }),
                ..StreamState::default()
            },
        );
        let idle = IdleStream::encode(&m);
        // 13 id bytes and its length, the collision, the flags, the version and changeset,
        // and the packed records' end (4 bytes), size (2) and entry offset (2).
        assert_eq!(idle.bytes(), 26);
        same(&m, &round_trip(&m));
    }

    #[test]
    fn a_set_of_idle_streams_is_looked_up_by_id() {
        let mut set = HashSet::new();
        for i in 0..100 {
            set.insert(IdleStream::encode(&meta(
                &format!("s-{i}"),
                StreamState::default(),
            )));
        }
        let found = set.get("s-42".as_bytes()).expect("found");
        assert!(found.decode("s-42", 0x1234_5678_9abc_def0).is_some());
        // The id is checked: another id's bytes never decode as this stream.
        assert!(found.decode("s-43", 1).is_none());
        assert!(!set.contains("s-100".as_bytes()));
    }

    #[test]
    fn bytes_that_are_not_an_encoding_decode_as_nothing() {
        let m = meta("abc", StreamState::default());
        let good = IdleStream::encode(&m).0;
        for cut in 0..good.len() {
            let idle = IdleStream(good[..cut].into());
            assert!(idle.decode("abc", 1).is_none(), "cut at {cut}");
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(IdleStream(longer.into()).decode("abc", 1).is_none());
        let endless = IdleStream(vec![0xff; 20].into());
        assert!(endless.id().is_empty());
        assert!(endless.decode("", 1).is_none());
    }
}
