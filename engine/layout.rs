//! Where each file of a store lives. Names are made from numbers only (segment-format.md §1).

use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "LOCK";
pub const MANIFEST_FILE: &str = "MANIFEST";
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";
pub const REMOVALS_FILE: &str = "REMOVALS";
pub const JOURNAL_FILE: &str = "JOURNAL";
pub const INDEX_DIR: &str = "index";
pub const STREAMS_DIR: &str = "streams";
/// Small streams' records in shared files (format 4, segment-format.md §19).
pub const PACKS_DIR: &str = "packs";
/// A fan-out folder's table of packed streams.
pub const TABLE_FILE: &str = "packed";
/// The folder of the tables of packed streams when they are grouped (format 7).
pub const TABLES_DIR: &str = "tables";
pub const SUBSCRIPTIONS_DIR: &str = "subscriptions";
pub const TEMP_SUFFIX: &str = ".tmp";

/// A stream's internal id: the keyed hash of its id, plus a collision number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub hash: u64,
    pub collision: u16,
}

/// A hasher for maps keyed by stream keys (and numbers), where SipHash showed in `read_all`'s
/// profile. A stream key's `hash` is already a keyed SipHash of the stream id, which nobody
/// outside the store can predict, so mixing it cheaply keeps such maps safe from chosen
/// collisions.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // FxHash's step: cheap, and enough to spread a few already-random words.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A map keyed by stream keys, hashed with `KeyHasher`.
pub type KeyMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// The keyed hash of a stream id (SipHash-1-3 with the store's random key).
#[must_use]
pub fn stream_hash(key: &[u8; 16], stream: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    h.write(stream.as_bytes());
    h.finish()
}

/// Fan-out folders: one per value of a stream hash's top 12 bits.
pub const FANOUTS: usize = 1 << 12;
const _: () = assert!((u64::MAX >> 52) as usize == FANOUTS - 1);

/// The fan-out folder number of a hash: its top 12 bits.
#[must_use]
pub fn fanout(hash: u64) -> u16 {
    (hash >> 52) as u16
}

#[must_use]
pub fn fanout_dir(root: &Path, hash: u64) -> PathBuf {
    root.join(STREAMS_DIR).join(format!("{:03x}", fanout(hash)))
}

/// Fan-out folder number `fanout` (the top 12 bits of a stream hash).
#[must_use]
pub fn fanout_dir_of(root: &Path, fanout: u16) -> PathBuf {
    root.join(STREAMS_DIR).join(format!("{fanout:03x}"))
}

/// The key under which the mapping cache holds packs (segment = pack number): collision
/// 0xFFFF, which no stream reaches (`STREAM_COLLISIONS_MAX` is far below it).
pub const PACK_KEY: StreamKey = StreamKey {
    hash: 0,
    collision: u16::MAX,
};

/// Pack number `pack` (segment-format.md §19).
#[must_use]
pub fn pack_path(root: &Path, pack: u32) -> PathBuf {
    root.join(PACKS_DIR).join(format!("{pack:08x}.pack"))
}

/// Parse a pack file name back into its number.
#[must_use]
pub fn parse_pack_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".pack")?;
    if stem.len() != 8 {
        return None;
    }
    u32::from_str_radix(stem, 16).ok()
}

/// Where a store keeps the tables of its packed streams (segment-format.md §19): a table per
/// fan-out folder (stores created by formats 4 to 6), or the 256 files of `tables/` (format 7,
/// `MANIFEST`'s `TABLES_GROUPED`). A table's *number* is its fan-out in the first layout, the
/// top 8 bits of its streams' hashes in the second; everything else about a table (its file,
/// its entries, its cache, its journal target) is the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    PerFanout,
    Grouped,
}

/// Tables of a store whose tables are grouped: one per value of a hash's top 8 bits.
pub const TABLE_GROUPS: usize = 1 << 8;

impl Tables {
    /// The layout `manifest` says.
    #[must_use]
    pub fn of(manifest: &crate::format::manifest::Manifest) -> Tables {
        if manifest.tables_grouped {
            Tables::Grouped
        } else {
            Tables::PerFanout
        }
    }

    /// How many table numbers there are.
    #[must_use]
    pub const fn count(self) -> usize {
        match self {
            Tables::PerFanout => FANOUTS,
            Tables::Grouped => TABLE_GROUPS,
        }
    }

    /// The number of the table that holds the stream of hash `hash`.
    #[must_use]
    pub fn number(self, hash: u64) -> u16 {
        match self {
            Tables::PerFanout => fanout(hash),
            Tables::Grouped => (hash >> 56) as u16,
        }
    }

    /// The folder of table `number`.
    #[must_use]
    pub fn dir(self, root: &Path, number: u16) -> PathBuf {
        match self {
            Tables::PerFanout => fanout_dir_of(root, number),
            Tables::Grouped => root.join(TABLES_DIR),
        }
    }

    /// The file of table `number`.
    #[must_use]
    pub fn path(self, root: &Path, number: u16) -> PathBuf {
        match self {
            Tables::PerFanout => fanout_dir_of(root, number).join(TABLE_FILE),
            Tables::Grouped => root.join(TABLES_DIR).join(format!("{number:02x}")),
        }
    }

    /// Table numbers of files in `tables/`: two lowercase hex digits, as `path` spells them
    /// (so that no other name reads as a table a second time).
    #[must_use]
    pub fn parse_grouped_name(name: &str) -> Option<u16> {
        let n = u16::from_str_radix(name, 16).ok()?;
        (name.len() == 2 && format!("{n:02x}") == name).then_some(n)
    }
}

#[must_use]
pub fn segment_file_name(key: StreamKey, segment: u32) -> String {
    let mut name = String::with_capacity(36);
    push_segment_file_name(&mut name, key, segment);
    name
}

/// The one spelling of a segment file's name, appended to `out`.
fn push_segment_file_name(out: &mut String, key: StreamKey, segment: u32) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{:016x}-{:04x}-{:08x}.seg",
        key.hash, key.collision, segment
    );
}

/// Built in one allocation: `read_all` over small streams builds one per stream it reads, from
/// several threads, and the allocator's locks showed in its profile.
#[must_use]
pub fn segment_path(root: &Path, key: StreamKey, segment: u32) -> PathBuf {
    use std::fmt::Write;
    // "streams/fff/" + the 36-byte file name.
    let mut tail = String::with_capacity(STREAMS_DIR.len() + 48);
    let _ = write!(tail, "{STREAMS_DIR}/{:03x}/", fanout(key.hash));
    push_segment_file_name(&mut tail, key, segment);
    let mut path = PathBuf::with_capacity(root.as_os_str().len() + 1 + tail.len());
    path.push(root);
    path.push(tail);
    path
}

/// The keys file of a stream (segment-format.md §15).
#[must_use]
pub fn keys_path(root: &Path, key: StreamKey) -> PathBuf {
    fanout_dir(root, key.hash).join(format!("{:016x}-{:04x}.keys", key.hash, key.collision))
}

/// Parse a keys file name back into its stream key.
#[must_use]
pub fn parse_keys_file_name(name: &str) -> Option<StreamKey> {
    let stem = name.strip_suffix(".keys")?;
    let (h, c) = stem.split_once('-')?;
    if h.len() != 16 || c.len() != 4 {
        return None;
    }
    Some(StreamKey {
        hash: u64::from_str_radix(h, 16).ok()?,
        collision: u16::from_str_radix(c, 16).ok()?,
    })
}

/// Parse a segment file name back into its stream key and segment number.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<(StreamKey, u32)> {
    let stem = name.strip_suffix(".seg")?;
    let mut parts = stem.split('-');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || h.len() != 16 || c.len() != 4 || s.len() != 8 {
        return None;
    }
    let key = StreamKey {
        hash: u64::from_str_radix(h, 16).ok()?,
        collision: u16::from_str_radix(c, 16).ok()?,
    };
    Some((key, u32::from_str_radix(s, 16).ok()?))
}

#[must_use]
pub fn index_path(root: &Path, file_number: u64) -> PathBuf {
    root.join(INDEX_DIR).join(format!("{file_number:016x}.idx"))
}

#[must_use]
pub fn parse_index_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".idx")?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_never_contain_user_text() {
        let key = StreamKey {
            hash: stream_hash(&[1; 16], "../../etc/passwd"),
            collision: 2,
        };
        let name = segment_file_name(key, 7);
        assert!(name.chars().all(|c| c.is_ascii_hexdigit()
            || c == '-'
            || c == '.'
            || c == 's'
            || c == 'g'));
        assert_eq!(parse_segment_file_name(&name), Some((key, 7)));
        assert_eq!(parse_index_file_name("000000000000000a.idx"), Some(10));
        assert_eq!(parse_index_file_name("a.idx"), None);
        assert_eq!(parse_segment_file_name(".DS_Store"), None);
        let p = segment_path(Path::new("/s"), key, 0);
        assert!(p.starts_with("/s/streams"));
        assert_eq!(p.components().count(), 5);
        assert_eq!(
            p,
            fanout_dir(Path::new("/s"), key.hash).join(segment_file_name(key, 0))
        );
    }

    #[test]
    fn both_table_layouts_name_every_table_once() {
        let root = Path::new("/s");
        for hash in [0, 1 << 52, 0xab << 56, u64::MAX] {
            assert_eq!(Tables::PerFanout.number(hash), fanout(hash));
            assert_eq!(Tables::Grouped.number(hash), (hash >> 56) as u16);
        }
        assert_eq!(
            Tables::PerFanout.path(root, 0xabc),
            Path::new("/s/streams/abc/packed")
        );
        assert_eq!(Tables::Grouped.path(root, 0xab), Path::new("/s/tables/ab"));
        assert_eq!(Tables::Grouped.dir(root, 0xab), Path::new("/s/tables"));
        for n in 0..Tables::Grouped.count() as u16 {
            let path = Tables::Grouped.path(root, n);
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(Tables::parse_grouped_name(name), Some(n));
        }
        for other in ["0A", "1", "100", "+1", "zz", "", "ab.tmp"] {
            assert_eq!(Tables::parse_grouped_name(other), None, "{other}");
        }
    }

    #[test]
    fn the_hash_depends_on_the_key() {
        assert_ne!(stream_hash(&[1; 16], "a"), stream_hash(&[2; 16], "a"));
        assert_eq!(stream_hash(&[1; 16], "a"), stream_hash(&[1; 16], "a"));
    }
}
