//! `subscriptions/<id>.sub`: one persistent subscription, its target and its acknowledged
//! checkpoint in two alternating slots (segment-format.md §11).

use super::{align8, check_slot, check_version, newest_slot, short, DecodeError, FORMAT_VERSION};
use crate::limits::{EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX, SUBSCRIPTION_NAME_BYTES_MAX};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const SUBSCRIPTION_MAGIC: [u8; 8] = *b"SLSUBSC\0";
pub const SUBSCRIPTION_SLOT_MAGIC: [u8; 8] = *b"SLSUBCK\0";
pub const SUBSCRIPTION_FIXED_BYTES: usize = 64;
/// The header never reaches the first slot.
pub const SUBSCRIPTION_HEADER_BYTES_MAX: u64 = 4096;
pub const SUBSCRIPTION_SLOT_BYTES: usize = 64;
/// Slot A; slot B sits one 512-byte sector further, so one torn write damages one slot.
pub const SUBSCRIPTION_SLOT_A_OFFSET: u64 = 4096;
pub const SUBSCRIPTION_SLOT_STRIDE: u64 = 512;
pub const SUBSCRIPTION_FILE_BYTES: u64 = SUBSCRIPTION_SLOT_A_OFFSET + 2 * SUBSCRIPTION_SLOT_STRIDE;

pub const TARGET_ALL: u8 = 0;
pub const TARGET_STREAM: u8 = 1;

// The longest header must fit before slot A.
const _: () = assert!(
    SUBSCRIPTION_FIXED_BYTES
        + SUBSCRIPTION_NAME_BYTES_MAX
        + STREAM_ID_BYTES_MAX
        + EVENT_TYPE_BYTES_MAX
        + 7
        <= SUBSCRIPTION_HEADER_BYTES_MAX as usize
);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SubscriptionFileHeader {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub header_bytes: U32,
    pub store_id: U64,
    pub id: U64,
    pub created_us: U64,
    pub target: u8,
    pub reserved0: u8,
    pub name_len: U16,
    pub stream_len: U16,
    pub type_len: U16,
    pub reserved1: [u8; 12],
    pub crc: U32,
}
const _: () = assert!(size_of::<SubscriptionFileHeader>() == SUBSCRIPTION_FIXED_BYTES);

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SubscriptionSlotRaw {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub reserved0: U32,
    pub store_id: U64,
    pub sequence: U64,
    pub acked_position: U64,
    pub acked_version: U64,
    pub reserved1: [u8; 12],
    pub crc: U32,
}
const _: () = assert!(size_of::<SubscriptionSlotRaw>() == SUBSCRIPTION_SLOT_BYTES);

/// What a subscription follows, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredTarget {
    /// All streams, with optional filters (empty = none).
    All {
        stream_prefix: String,
        event_type: String,
    },
    Stream(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionHeader {
    pub store_id: u64,
    pub id: u64,
    pub created_us: u64,
    pub name: String,
    pub target: StoredTarget,
}

impl SubscriptionHeader {
    /// The encoded header, `header_bytes` long.
    ///
    /// # Panics
    /// When a field is longer than its limit: callers validate before encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (target, stream, event_type) = match &self.target {
            StoredTarget::All {
                stream_prefix,
                event_type,
            } => (TARGET_ALL, stream_prefix.as_str(), event_type.as_str()),
            StoredTarget::Stream(s) => (TARGET_STREAM, s.as_str(), ""),
        };
        assert!(self.name.len() <= SUBSCRIPTION_NAME_BYTES_MAX && !self.name.is_empty());
        assert!(stream.len() <= STREAM_ID_BYTES_MAX && event_type.len() <= EVENT_TYPE_BYTES_MAX);
        let var = self.name.len() + stream.len() + event_type.len();
        let header_bytes = align8((SUBSCRIPTION_FIXED_BYTES + var) as u64);
        let mut fixed = SubscriptionFileHeader {
            magic: SUBSCRIPTION_MAGIC,
            format_version: FORMAT_VERSION.into(),
            header_bytes: u32::try_from(header_bytes).unwrap_or(u32::MAX).into(),
            store_id: self.store_id.into(),
            id: self.id.into(),
            created_us: self.created_us.into(),
            target,
            reserved0: 0,
            name_len: u16::try_from(self.name.len()).unwrap_or(u16::MAX).into(),
            stream_len: u16::try_from(stream.len()).unwrap_or(u16::MAX).into(),
            type_len: u16::try_from(event_type.len()).unwrap_or(u16::MAX).into(),
            reserved1: [0; 12],
            crc: 0.into(),
        };
        let mut out = Vec::with_capacity(header_bytes as usize);
        out.extend_from_slice(fixed.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(stream.as_bytes());
        out.extend_from_slice(event_type.as_bytes());
        let mut crc = crate::format::crc::crc32c(&out[..60]);
        crc = crate::format::crc::crc32c_append(crc, &out[SUBSCRIPTION_FIXED_BYTES..]);
        fixed.crc = crc.into();
        out[..SUBSCRIPTION_FIXED_BYTES].copy_from_slice(fixed.as_bytes());
        out.resize(header_bytes as usize, 0);
        out
    }

    /// Decode a header from the start of a file.
    ///
    /// # Errors
    /// Any `DecodeError` when the bytes are not a valid header.
    pub fn decode(bytes: &[u8]) -> Result<SubscriptionHeader, DecodeError> {
        let (h, _) = SubscriptionFileHeader::ref_from_prefix(bytes)
            .map_err(|_| short(SUBSCRIPTION_FIXED_BYTES, bytes.len()))?;
        if h.magic != SUBSCRIPTION_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        check_version(h.format_version.get())?;
        let name_len = usize::from(h.name_len.get());
        let stream_len = usize::from(h.stream_len.get());
        let type_len = usize::from(h.type_len.get());
        if name_len == 0 || name_len > SUBSCRIPTION_NAME_BYTES_MAX {
            return Err(DecodeError::Invalid("subscription name length"));
        }
        if stream_len > STREAM_ID_BYTES_MAX || type_len > EVENT_TYPE_BYTES_MAX {
            return Err(DecodeError::Invalid("subscription filter length"));
        }
        let var_end = SUBSCRIPTION_FIXED_BYTES + name_len + stream_len + type_len;
        if u64::from(h.header_bytes.get()) != align8(var_end as u64) {
            return Err(DecodeError::Invalid("subscription header_bytes"));
        }
        if bytes.len() < var_end {
            return Err(short(var_end, bytes.len()));
        }
        let crc = crate::format::crc::crc32c_append(
            crate::format::crc::crc32c(&bytes[..60]),
            &bytes[SUBSCRIPTION_FIXED_BYTES..var_end],
        );
        if crc != h.crc.get() {
            return Err(DecodeError::BadChecksum {
                stored: h.crc.get(),
                computed: crc,
            });
        }
        let text = |range: std::ops::Range<usize>| {
            std::str::from_utf8(&bytes[range])
                .map(str::to_string)
                .map_err(|_| DecodeError::Invalid("subscription text is not UTF-8"))
        };
        let a = SUBSCRIPTION_FIXED_BYTES;
        let name = text(a..a + name_len)?;
        let stream = text(a + name_len..a + name_len + stream_len)?;
        let event_type = text(a + name_len + stream_len..var_end)?;
        let target = match h.target {
            TARGET_ALL => StoredTarget::All {
                stream_prefix: stream,
                event_type,
            },
            TARGET_STREAM if type_len == 0 && stream_len > 0 => StoredTarget::Stream(stream),
            _ => return Err(DecodeError::Invalid("subscription target")),
        };
        Ok(SubscriptionHeader {
            store_id: h.store_id.get(),
            id: h.id.get(),
            created_us: h.created_us.get(),
            name,
            target,
        })
    }
}

/// One acknowledged checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionCheckpoint {
    pub store_id: u64,
    pub sequence: u64,
    pub acked_position: u64,
    pub acked_version: u64,
}

impl SubscriptionCheckpoint {
    /// Offset of the slot this checkpoint goes to: sequences alternate between A and B.
    #[must_use]
    pub fn slot_offset(&self) -> u64 {
        SUBSCRIPTION_SLOT_A_OFFSET + (self.sequence % 2) * SUBSCRIPTION_SLOT_STRIDE
    }

    #[must_use]
    pub fn encode(&self) -> [u8; SUBSCRIPTION_SLOT_BYTES] {
        let mut slot = SubscriptionSlotRaw {
            magic: SUBSCRIPTION_SLOT_MAGIC,
            format_version: FORMAT_VERSION.into(),
            reserved0: 0.into(),
            store_id: self.store_id.into(),
            sequence: self.sequence.into(),
            acked_position: self.acked_position.into(),
            acked_version: self.acked_version.into(),
            reserved1: [0; 12],
            crc: 0.into(),
        };
        slot.crc = crate::format::crc::crc32c(&slot.as_bytes()[..60]).into();
        let mut out = [0u8; SUBSCRIPTION_SLOT_BYTES];
        out.copy_from_slice(slot.as_bytes());
        out
    }

    /// Decode one slot.
    ///
    /// # Errors
    /// Any `DecodeError` when the slot is not valid.
    pub fn decode_slot(bytes: &[u8]) -> Result<SubscriptionCheckpoint, DecodeError> {
        check_slot(bytes, &SUBSCRIPTION_SLOT_MAGIC)?;
        let (slot, _) = SubscriptionSlotRaw::ref_from_prefix(bytes)
            .map_err(|_| short(SUBSCRIPTION_SLOT_BYTES, bytes.len()))?;
        Ok(SubscriptionCheckpoint {
            store_id: slot.store_id.get(),
            sequence: slot.sequence.get(),
            acked_position: slot.acked_position.get(),
            acked_version: slot.acked_version.get(),
        })
    }

    /// The winning slot of a whole file (the valid one with the higher sequence).
    ///
    /// # Errors
    /// When neither slot is valid, the error of slot A (or an unsupported version of either).
    pub fn decode_file(file: &[u8]) -> Result<SubscriptionCheckpoint, DecodeError> {
        let slot = |at: u64| {
            let at = at as usize;
            if file.len() < at + SUBSCRIPTION_SLOT_BYTES {
                Err(short(at + SUBSCRIPTION_SLOT_BYTES, file.len()))
            } else {
                SubscriptionCheckpoint::decode_slot(&file[at..])
            }
        };
        let a = slot(SUBSCRIPTION_SLOT_A_OFFSET);
        let b = slot(SUBSCRIPTION_SLOT_A_OFFSET + SUBSCRIPTION_SLOT_STRIDE);
        newest_slot(a, b, |c| c.sequence).map(|(winner, _)| winner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        for target in [
            StoredTarget::All {
                stream_prefix: "order-".into(),
                event_type: "Placed".into(),
            },
            StoredTarget::All {
                stream_prefix: String::new(),
                event_type: String::new(),
            },
            StoredTarget::Stream("ü/../x".into()),
        ] {
            let h = SubscriptionHeader {
                store_id: 7,
                id: 3,
                created_us: 99,
                name: "projection".into(),
                target,
            };
            let bytes = h.encode();
            assert_eq!(bytes.len() % 8, 0);
            let (stream, event_type) = match &h.target {
                StoredTarget::All {
                    stream_prefix,
                    event_type,
                } => (stream_prefix.len(), event_type.len()),
                StoredTarget::Stream(s) => (s.len(), 0),
            };
            let var_end = SUBSCRIPTION_FIXED_BYTES + h.name.len() + stream + event_type;
            assert_eq!(SubscriptionHeader::decode(&bytes).unwrap(), h);
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x40;
                if i >= var_end {
                    continue; // padding
                }
                assert!(SubscriptionHeader::decode(&bad).is_err(), "flip at {i}");
            }
        }
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let mut file = vec![0u8; SUBSCRIPTION_FILE_BYTES as usize];
        let c = |sequence, acked_position| SubscriptionCheckpoint {
            store_id: 1,
            sequence,
            acked_position,
            acked_version: 0,
        };
        for s in [c(1, 10), c(2, 20)] {
            let at = s.slot_offset() as usize;
            file[at..at + SUBSCRIPTION_SLOT_BYTES].copy_from_slice(&s.encode());
        }
        assert_eq!(
            SubscriptionCheckpoint::decode_file(&file).unwrap(),
            c(2, 20)
        );
        let torn = c(2, 20).slot_offset() as usize + 35;
        file[torn] ^= 1;
        assert_eq!(
            SubscriptionCheckpoint::decode_file(&file).unwrap(),
            c(1, 10)
        );
        let other = c(1, 10).slot_offset() as usize + 3;
        file[other] ^= 1;
        assert!(SubscriptionCheckpoint::decode_file(&file).is_err());
    }
}
