//! `CHECKPOINT`: two alternating slots holding the verified head (segment-format.md §3).

use super::{check_slot, newest_slot, short, DecodeError, FORMAT_VERSION};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SLCKPNT\0";
pub const CHECKPOINT_SLOT_BYTES: usize = 64;
/// Slot B sits in another 512-byte sector than slot A, so one torn write damages one slot.
pub const CHECKPOINT_SLOT_STRIDE: u64 = 512;
pub const CHECKPOINT_FILE_BYTES: u64 = 2 * CHECKPOINT_SLOT_STRIDE;
pub const CHECKPOINT_FLAG_CLEAN: u32 = 1;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CheckpointSlot {
    pub magic: [u8; 8],
    pub format_version: U32,
    pub flags: U32,
    pub store_id: U64,
    pub sequence: U64,
    pub head: U64,
    pub journal_sequence: U64,
    pub journal_offset: U64,
    pub reserved: [u8; 4],
    pub crc: U32,
}
const _: () = assert!(size_of::<CheckpointSlot>() == CHECKPOINT_SLOT_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub store_id: u64,
    pub sequence: u64,
    pub head: u64,
    pub clean: bool,
    /// The journal frame replay starts with (segment-format.md §18); 0: nothing to replay.
    pub journal_sequence: u64,
    /// Where in `JOURNAL` that frame starts.
    pub journal_offset: u64,
}

impl Checkpoint {
    /// Offset of the slot this checkpoint is written to: sequences alternate between A and B.
    #[must_use]
    pub fn slot_offset(&self) -> u64 {
        (self.sequence % 2) * CHECKPOINT_SLOT_STRIDE
    }

    #[must_use]
    pub fn encode(&self) -> [u8; CHECKPOINT_SLOT_BYTES] {
        let mut slot = CheckpointSlot {
            magic: CHECKPOINT_MAGIC,
            format_version: FORMAT_VERSION.into(),
            flags: (if self.clean { CHECKPOINT_FLAG_CLEAN } else { 0 }).into(),
            store_id: self.store_id.into(),
            sequence: self.sequence.into(),
            head: self.head.into(),
            journal_sequence: self.journal_sequence.into(),
            journal_offset: self.journal_offset.into(),
            reserved: [0; 4],
            crc: 0.into(),
        };
        slot.crc = crate::format::crc::crc32c(&slot.as_bytes()[..60]).into();
        let mut out = [0u8; CHECKPOINT_SLOT_BYTES];
        out.copy_from_slice(slot.as_bytes());
        out
    }

    /// Decode one slot.
    ///
    /// # Errors
    /// Any `DecodeError` when the slot is not valid.
    pub fn decode_slot(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
        check_slot(bytes, &CHECKPOINT_MAGIC)?;
        let (slot, _) = CheckpointSlot::ref_from_prefix(bytes)
            .map_err(|_| short(CHECKPOINT_SLOT_BYTES, bytes.len()))?;
        Ok(Checkpoint {
            store_id: slot.store_id.get(),
            sequence: slot.sequence.get(),
            head: slot.head.get(),
            clean: slot.flags.get() & CHECKPOINT_FLAG_CLEAN != 0,
            // Zeros in a format-1 or -2 slot: nothing to replay.
            journal_sequence: slot.journal_sequence.get(),
            journal_offset: slot.journal_offset.get(),
        })
    }

    /// Decode the whole file: the valid slot with the higher sequence wins. Returns the winner
    /// and, for each slot, why it did not decode.
    ///
    /// # Errors
    /// When neither slot is valid, the error of slot A (or an unsupported version of either).
    pub fn decode_file(
        bytes: &[u8],
    ) -> Result<(Checkpoint, [Option<DecodeError>; 2]), DecodeError> {
        let stride = CHECKPOINT_SLOT_STRIDE as usize;
        let a = Checkpoint::decode_slot(bytes);
        let b = if bytes.len() > stride {
            Checkpoint::decode_slot(&bytes[stride..])
        } else {
            Err(short(stride + CHECKPOINT_SLOT_BYTES, bytes.len()))
        };
        newest_slot(a, b, |c| c.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(slots: &[Checkpoint]) -> Vec<u8> {
        let mut file = vec![0u8; CHECKPOINT_FILE_BYTES as usize];
        for c in slots {
            let at = c.slot_offset() as usize;
            file[at..at + CHECKPOINT_SLOT_BYTES].copy_from_slice(&c.encode());
        }
        file
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let c1 = Checkpoint {
            store_id: 9,
            sequence: 1,
            head: 10,
            clean: false,
            journal_sequence: 0,
            journal_offset: 0,
        };
        let c2 = Checkpoint {
            store_id: 9,
            sequence: 2,
            head: 20,
            clean: true,
            journal_sequence: 3,
            journal_offset: 64,
        };
        let file = file_with(&[c1, c2]);
        assert_eq!(Checkpoint::decode_file(&file).unwrap().0, c2);
        let mut torn = file.clone();
        torn[c2.slot_offset() as usize + 33] ^= 0x10;
        let (winner, errors) = Checkpoint::decode_file(&torn).unwrap();
        assert_eq!(winner, c1);
        assert!(errors[0].is_some());
        assert!(Checkpoint::decode_file(&vec![0u8; 1024]).is_err());
    }
}
