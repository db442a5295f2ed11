//! `segment-dump`: a read-only look at a store folder or one of its files. It decodes every
//! header, index entry and record, verifies every checksum, and tells committed data from the
//! unacknowledged tail with the same rules as recovery (segment-format.md §8). It never writes.

use crate::format::checkpoint::{Checkpoint, CHECKPOINT_MAGIC};
use crate::format::index::{
    IndexEntry, IndexHeader, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, INDEX_MAGIC,
};
use crate::format::manifest::{Manifest, MANIFEST_MAGIC};
use crate::format::segment::{
    decode_record, peek_record_header, SegmentHeader, CONTROL_FLAG_CLOSED, CONTROL_OP_CLOSE,
    CONTROL_OP_DELETE, CONTROL_OP_INVALIDATE, CONTROL_OP_SNAPSHOT, SEGMENT_MAGIC,
};
use crate::format::subscription::{
    StoredTarget, SubscriptionCheckpoint, SubscriptionHeader, SUBSCRIPTION_MAGIC,
};
use crate::layout::{
    parse_index_file_name, parse_segment_file_name, StreamKey, CHECKPOINT_FILE, INDEX_DIR,
    MANIFEST_FILE, STREAMS_DIR, SUBSCRIPTIONS_DIR, TEMP_SUFFIX,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a dump found.
#[derive(Debug, Default)]
pub struct Dump {
    /// Human-readable report.
    pub text: String,
    /// The same, for machines.
    pub json: Vec<Value>,
    /// Every corruption found (empty for a healthy store).
    pub corruption: Vec<String>,
    /// Notes that are not corruption (unacknowledged tails, stray files).
    pub notes: Vec<String>,
}

impl Dump {
    fn corrupt(&mut self, path: &Path, offset: u64, reason: impl Into<String>) {
        let msg = format!("CORRUPT {} at {offset}: {}", path.display(), reason.into());
        let _ = writeln!(self.text, "  {msg}");
        self.corruption.push(msg);
    }

    fn note(&mut self, msg: String) {
        let _ = writeln!(self.text, "  note: {msg}");
        self.notes.push(msg);
    }
}

/// The records of a `REMOVALS` file whose header decodes, up to the first that does not, and
/// where that one is when it is not zeros (a torn, unacknowledged record).
fn removal_records(bytes: &[u8]) -> (Vec<crate::format::removals::Removal>, Option<usize>) {
    use crate::format::removals::{Removal, REMOVALS_HEADER_BYTES, REMOVAL_BYTES};
    let mut out = Vec::new();
    let mut at = REMOVALS_HEADER_BYTES as usize;
    while let Some(slice) = bytes.get(at..at + REMOVAL_BYTES as usize) {
        match Removal::decode(slice) {
            Ok(r) => out.push(r),
            Err(_) => return (out, slice.iter().any(|b| *b != 0).then_some(at)),
        }
        at += REMOVAL_BYTES as usize;
    }
    (out, None)
}

/// The tables of packed streams, in either layout (segment-format.md §19): `tables/*`
/// (format 7) and `streams/<fanout>/packed` (stores created by formats 4 to 6).
fn table_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = list(&root.join(crate::layout::TABLES_DIR));
    out.extend(
        list(&root.join(STREAMS_DIR))
            .into_iter()
            .map(|fan| fan.join(crate::layout::TABLE_FILE))
            .filter(|p| p.exists()),
    );
    out
}

/// Every packed stream's id, from the entries of the tables that decode.
fn packed_ids(root: &Path) -> HashMap<StreamKey, String> {
    use crate::format::pack::{TableEntry, TABLE_HEADER_BYTES};
    let mut out = HashMap::new();
    for path in table_files(root) {
        let Ok(bytes) = read(&path) else {
            continue;
        };
        let mut at = TABLE_HEADER_BYTES;
        while let Some(Ok((e, len))) = bytes.get(at..).map(TableEntry::decode) {
            let key = StreamKey {
                hash: e.stream_hash,
                collision: e.collision,
            };
            out.insert(key, e.stream_id.to_string());
            at += len;
        }
    }
    out
}

/// What `REMOVALS` removes, per stream: the last position (the file is listed below).
fn removed_up_to(root: &Path) -> HashMap<StreamKey, u64> {
    let mut out = HashMap::new();
    let Ok(bytes) = read(&root.join(crate::layout::REMOVALS_FILE)) else {
        return out;
    };
    if crate::format::removals::decode_header(&bytes).is_err() {
        return out;
    }
    for r in removal_records(&bytes).0 {
        if r.kind == crate::format::removals::REMOVAL_KIND_TRUNCATE {
            let key = StreamKey {
                hash: r.stream_hash,
                collision: r.collision,
            };
            let e = out.entry(key).or_insert(0);
            *e = (*e).max(r.covers_position);
        }
    }
    out
}

/// An index entry read by the listing: it confirms its record, and is shown.
fn note_entry(
    confirmed: &mut Confirmations,
    packed_streams: &mut HashMap<u64, StreamKey>,
    position: u64,
    e: &IndexEntry,
    show_records: bool,
    d: &mut Dump,
) {
    // A packed record lies in its pack, not in a segment of its stream (segment-format.md §19).
    let key = if e.flags & crate::format::index::FLAG_PACKED != 0 {
        packed_streams.insert(
            position,
            StreamKey {
                hash: e.stream_hash,
                collision: e.collision,
            },
        );
        crate::layout::PACK_KEY
    } else {
        StreamKey {
            hash: e.stream_hash,
            collision: e.collision,
        }
    };
    confirmed.insert((key, e.segment, u64::from(e.offset)), position);
    if show_records {
        let _ = writeln!(
            d.text,
            "    position {position}: stream {:016x}-{:04x} segment {} offset {} flags {:#04x}{}",
            e.stream_hash,
            e.collision,
            e.segment,
            e.offset,
            e.flags,
            entry_flag_names(e.flags)
        );
    }
}

/// The names of an index entry's flags, for the listing.
fn entry_flag_names(flags: u8) -> String {
    use crate::format::index::{FLAG_BEGIN, FLAG_CONTROL, FLAG_END, FLAG_LINKED};
    let names: Vec<&str> = [
        (FLAG_BEGIN, "BEGIN"),
        (FLAG_END, "END"),
        (FLAG_CONTROL, "CONTROL"),
        (FLAG_LINKED, "LINKED"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| *name)
    .collect();
    format!(" ({})", names.join("|"))
}

/// Data as text when printable, hex otherwise (at most `max` bytes shown).
#[must_use]
pub fn preview(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let more = if bytes.len() > max { "…" } else { "" };
    match std::str::from_utf8(shown) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t') => {
            format!("{s:?}{more}")
        }
        _ => {
            let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}{more}")
        }
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// Dump a store folder or a single file.
#[must_use]
pub fn dump_path(path: &Path, show_records: bool) -> Dump {
    let mut d = Dump::default();
    if path.is_dir() {
        dump_store(path, show_records, &mut d);
    } else {
        match read(path) {
            Ok(bytes) => dump_file(path, &bytes, show_records, None, &mut d),
            Err(e) => d.corrupt(path, 0, format!("cannot read: {e}")),
        }
    }
    d
}

/// Where each decodable index entry points: (key, segment, offset) -> position.
type Confirmations = HashMap<(StreamKey, u32, u64), u64>;

struct StoreView {
    confirmed: Confirmations,
    /// The stream of each committed packed record, by position.
    packed_streams: HashMap<u64, StreamKey>,
    /// Per stream, the last position `REMOVALS` says is removed (segment-format.md §12, §19).
    removed_up_to: HashMap<StreamKey, u64>,
    /// Packed streams' ids, from the fan-out tables (listed, and checked, below).
    packed_ids: HashMap<StreamKey, String>,
    /// The highest confirmed offset of each segment.
    last_confirmed: HashMap<(StreamKey, u32), u64>,
}

fn dump_store(root: &Path, show_records: bool, d: &mut Dump) {
    let _ = writeln!(d.text, "store {}", root.display());
    let mpath = root.join(MANIFEST_FILE);
    let manifest = match read(&mpath) {
        Ok(b) => {
            dump_file(&mpath, &b, show_records, None, d);
            Manifest::decode(&b).ok()
        }
        Err(e) => {
            d.corrupt(&mpath, 0, format!("cannot read: {e}"));
            None
        }
    };
    let cpath = root.join(CHECKPOINT_FILE);
    let mut head = 0;
    let mut journal_from = None;
    match read(&cpath) {
        Ok(b) => {
            dump_file(&cpath, &b, show_records, None, d);
            if let Ok((c, _)) = Checkpoint::decode_file(&b) {
                head = c.head;
                journal_from = Some((c.journal_sequence, c.journal_offset));
            }
        }
        Err(e) => d.corrupt(&cpath, 0, format!("cannot read: {e}")),
    }
    let jpath = root.join(crate::layout::JOURNAL_FILE);
    if let (Ok(bytes), Some(m)) = (read(&jpath), manifest) {
        dump_journal(&jpath, &bytes, m.store_id, journal_from, show_records, d);
    }
    let per_file = manifest.map_or(0, |m| m.index_entries_per_file);
    // The index: every entry that decodes, in order; committed up to the checkpoint's head.
    let mut confirmed = Confirmations::new();
    let mut packed_streams = HashMap::new();
    let idir = root.join(INDEX_DIR);
    let mut index_files: Vec<(u64, PathBuf)> = list(&idir)
        .into_iter()
        .filter_map(|p| {
            let n = parse_index_file_name(p.file_name()?.to_str()?);
            if n.is_none() {
                d.note(format!("ignored file {}", p.display()));
            }
            Some((n?, p))
        })
        .collect();
    index_files.sort();
    let mut last_entry = 0;
    'files: for (n, p) in &index_files {
        let Ok(bytes) = read(p) else {
            d.corrupt(p, 0, "cannot read");
            continue;
        };
        dump_file(p, &bytes, false, None, d);
        let Ok(header) = IndexHeader::decode(&bytes) else {
            continue;
        };
        if per_file == 0 {
            continue;
        }
        if header.sparse {
            // A compacted file: only live entries, each with its position.
            let entries = bytes.get(INDEX_HEADER_BYTES as usize..).unwrap_or_default();
            let mut previous = 0;
            for chunk in entries.chunks(crate::format::index::INDEX_SPARSE_ENTRY_BYTES as usize) {
                let position = chunk
                    .get(..8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                let decoded = chunk
                    .get(8..)
                    .ok_or(crate::format::DecodeError::Invalid("ragged"))
                    .and_then(|raw| IndexEntry::decode(raw, position));
                match decoded {
                    Ok(e) if position > previous => {
                        previous = position;
                        note_entry(
                            &mut confirmed,
                            &mut packed_streams,
                            position,
                            &e,
                            show_records,
                            d,
                        );
                        last_entry = position;
                    }
                    Ok(_) => d.corrupt(
                        p,
                        0,
                        format!("compacted entries out of order at position {position}"),
                    ),
                    Err(e) => {
                        d.corrupt(p, 0, format!("compacted entry of position {position}: {e}"))
                    }
                }
            }
            last_entry = last_entry.max((n + 1) * per_file);
            continue;
        }
        for slot in 0..per_file {
            let position = n * per_file + slot + 1;
            let at = (INDEX_HEADER_BYTES + slot * INDEX_ENTRY_BYTES) as usize;
            let Some(raw) = bytes.get(at..at + INDEX_ENTRY_BYTES as usize) else {
                break;
            };
            match IndexEntry::decode(raw, position) {
                Ok(e) => {
                    note_entry(
                        &mut confirmed,
                        &mut packed_streams,
                        position,
                        &e,
                        show_records,
                        d,
                    );
                    last_entry = position;
                }
                Err(e) if position <= head => d.corrupt(
                    p,
                    at as u64,
                    format!("committed entry of position {position}: {e}"),
                ),
                Err(_) => break 'files,
            }
        }
    }
    let _ = writeln!(
        d.text,
        "index: checkpoint head {head}, last decodable entry {last_entry}"
    );
    d.json
        .push(json!({"kind": "index_summary", "checkpoint_head": head, "last_entry": last_entry}));
    let mut last_confirmed: HashMap<(StreamKey, u32), u64> = HashMap::new();
    for (key, segment, offset) in confirmed.keys() {
        let last = last_confirmed.entry((*key, *segment)).or_insert(*offset);
        *last = (*last).max(*offset);
    }
    let view = StoreView {
        confirmed,
        packed_streams,
        removed_up_to: removed_up_to(root),
        packed_ids: packed_ids(root),
        last_confirmed,
    };
    // Every pack (segment-format.md §19).
    for p in list(&root.join(crate::layout::PACKS_DIR)) {
        let number = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(crate::layout::parse_pack_file_name);
        match (number, read(&p)) {
            (Some(n), Ok(bytes)) => dump_pack(&p, n, &bytes, show_records, &view, d),
            (Some(_), Err(e)) => d.corrupt(&p, 0, format!("cannot read: {e}")),
            (None, _) => d.note(format!("ignored file {}", p.display())),
        }
    }
    // The tables of packed streams grouped in `tables/` (format 7); those of older stores are
    // in the fan-out folders, below.
    for p in list(&root.join(crate::layout::TABLES_DIR)) {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if crate::layout::Tables::parse_grouped_name(name).is_none() {
            d.note(format!("ignored file {}", p.display()));
            continue;
        }
        match read(&p) {
            Ok(bytes) => dump_table(&p, &bytes, show_records, &view, d),
            Err(e) => d.corrupt(&p, 0, format!("cannot read: {e}")),
        }
    }
    // Every segment.
    let sdir = root.join(STREAMS_DIR);
    let mut segments = 0u64;
    for fan in list(&sdir) {
        if !fan.is_dir() {
            d.note(format!("ignored file {}", fan.display()));
            continue;
        }
        for p in list(&fan) {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if crate::layout::parse_keys_file_name(&name).is_some() {
                match read(&p) {
                    Ok(bytes) => dump_keys(&p, &bytes, show_records, d),
                    Err(e) => d.corrupt(&p, 0, format!("cannot read: {e}")),
                }
                continue;
            }
            if name == crate::layout::TABLE_FILE {
                match read(&p) {
                    Ok(bytes) => dump_table(&p, &bytes, show_records, &view, d),
                    Err(e) => d.corrupt(&p, 0, format!("cannot read: {e}")),
                }
                continue;
            }
            if parse_segment_file_name(&name).is_none() {
                d.note(format!("ignored file {}", p.display()));
                continue;
            }
            segments += 1;
            match read(&p) {
                Ok(bytes) => dump_file(&p, &bytes, show_records, Some(&view), d),
                Err(e) => d.corrupt(&p, 0, format!("cannot read: {e}")),
            }
        }
    }
    // Truncations (segment-format.md §12).
    let rpath = root.join(crate::layout::REMOVALS_FILE);
    if let Ok(bytes) = read(&rpath) {
        match crate::format::removals::decode_header(&bytes) {
            Ok(_) => {
                let (records, torn_at) = removal_records(&bytes);
                if let Some(at) = torn_at {
                    d.note(format!("{}: a torn record at {at}, an unacknowledged truncation; the next one overwrites it", rpath.display()));
                }
                let count = records.len();
                for r in records {
                    let invalidation = r.kind == crate::format::removals::REMOVAL_KIND_INVALIDATE;
                    if show_records && invalidation {
                        let _ = writeln!(d.text, "    invalidation of key {:016x}-{:04x}: changeset {}, by the event at position {}",
                            r.stream_hash, r.collision, r.covers_version, r.covers_position);
                    } else if show_records {
                        let _ = writeln!(d.text, "    truncation of key {:016x}-{:04x}: versions up to {}, positions up to {}",
                            r.stream_hash, r.collision, r.covers_version, r.covers_position);
                    }
                    d.json.push(
                        json!({"kind": if invalidation { "invalidation" } else { "truncation" },
                        "stream_hash": r.stream_hash, "collision": r.collision,
                        "covers_version": r.covers_version, "covers_position": r.covers_position}),
                    );
                }
                let _ = writeln!(
                    d.text,
                    "{}: {count} truncations and invalidations",
                    rpath.display()
                );
            }
            Err(e) => d.corrupt(&rpath, 0, format!("removals header: {e}")),
        }
    }
    // The indexes by category and type (segment-format.md §17).
    let pdir = root.join(crate::projection::PROJECTIONS_DIR);
    if pdir.is_dir() {
        let cpath = pdir.join(crate::layout::CHECKPOINT_FILE);
        let indexed = match read(&cpath).map(|b| Checkpoint::decode_file(&b)) {
            Ok(Ok((c, _))) => {
                let _ = writeln!(
                    d.text,
                    "{}: indexes reach position {}",
                    cpath.display(),
                    c.head
                );
                Some(c.head)
            }
            Ok(Err(e)) => {
                d.corrupt(&cpath, 0, format!("indexer checkpoint: {e}"));
                None
            }
            Err(_) => Some(0),
        };
        for p in list(&pdir) {
            if p.extension().is_some_and(|e| e == "pos") {
                match read(&p) {
                    Ok(bytes) => dump_postings(&p, &bytes, indexed, show_records, d),
                    Err(e) => d.corrupt(&p, 0, format!("cannot read: {e}")),
                }
            } else if p != cpath {
                d.note(format!("ignored file {}", p.display()));
            }
        }
    }
    // Persistent subscriptions (segment-format.md §11).
    let mut subscriptions = 0u64;
    for p in list(&root.join(SUBSCRIPTIONS_DIR)) {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(TEMP_SUFFIX) {
            d.note(format!(
                "{}: an interrupted subscription creation; removed at the next use",
                p.display()
            ));
            continue;
        }
        if !name.ends_with(".sub") {
            d.note(format!("ignored file {}", p.display()));
            continue;
        }
        subscriptions += 1;
        match read(&p) {
            Ok(bytes) => {
                dump_file(&p, &bytes, show_records, None, d);
                if let Ok(c) = SubscriptionCheckpoint::decode_file(&bytes) {
                    if c.acked_position > head {
                        d.corrupt(
                            &p,
                            c.slot_offset(),
                            format!(
                                "acknowledged position {} beyond the head {head}",
                                c.acked_position
                            ),
                        );
                    }
                }
            }
            Err(e) => d.corrupt(&p, 0, format!("cannot read: {e}")),
        }
    }
    let _ = writeln!(
        d.text,
        "{segments} segment files, {subscriptions} persistent subscriptions, {} corruption(s)",
        d.corruption.len()
    );
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Dump one file, recognised by its magic.
fn dump_file(
    path: &Path,
    bytes: &[u8],
    show_records: bool,
    view: Option<&StoreView>,
    d: &mut Dump,
) {
    let magic: [u8; 8] = bytes
        .get(..8)
        .and_then(|m| m.try_into().ok())
        .unwrap_or([0; 8]);
    // A segment no committed record points to, whose header is incomplete: a creation (a new
    // stream or a segment roll) that a crash interrupted before its batch was acknowledged. The
    // engine treats it the same way (segment-format.md §9): the writer rewrites or removes it.
    let uncommitted_segment = view.and_then(|v| {
        let name = path.file_name()?.to_str()?;
        let (key, segment) = parse_segment_file_name(name)?;
        (!v.last_confirmed.contains_key(&(key, segment))).then_some(())
    });
    if uncommitted_segment.is_some() && SegmentHeader::decode(bytes).is_err() {
        d.note(format!(
            "{}: segment with an incomplete header and no committed record, left by an interrupted creation; the writer rewrites or removes it",
            path.display()
        ));
        return;
    }
    if magic == MANIFEST_MAGIC {
        match Manifest::decode(bytes) {
            Ok(m) => {
                let _ = writeln!(
                    d.text,
                    "{}: manifest, format {}, store id {:016x}, {} index entries per file, tables of packed streams {}",
                    path.display(),
                    m.format_version,
                    m.store_id,
                    m.index_entries_per_file,
                    if m.tables_grouped {
                        "in tables/"
                    } else {
                        "per fan-out folder"
                    }
                );
                d.json.push(json!({"kind": "manifest", "path": path, "format_version": m.format_version, "store_id": m.store_id, "index_entries_per_file": m.index_entries_per_file, "created_us": m.created_us, "tables_grouped": m.tables_grouped}));
            }
            Err(e) => d.corrupt(path, 0, format!("manifest: {e}")),
        }
    } else if magic == CHECKPOINT_MAGIC {
        match Checkpoint::decode_file(bytes) {
            Ok((c, errors)) => {
                let _ = writeln!(
                    d.text,
                    "{}: checkpoint, sequence {}, head {}, clean {}, journal replay from frame {}",
                    path.display(),
                    c.sequence,
                    c.head,
                    c.clean,
                    c.journal_sequence
                );
                for (slot, e) in errors.iter().enumerate() {
                    if let Some(e) = e {
                        if c.sequence > 1 {
                            d.note(format!("{}: checkpoint slot {slot} does not decode ({e}); the other one is used", path.display()));
                        }
                    }
                }
                d.json.push(json!({"kind": "checkpoint", "path": path, "sequence": c.sequence, "head": c.head, "clean": c.clean, "journal_sequence": c.journal_sequence}));
            }
            Err(e) => d.corrupt(path, 0, format!("checkpoint: {e}")),
        }
    } else if magic == INDEX_MAGIC {
        match IndexHeader::decode(bytes) {
            Ok(h) => {
                let _ = writeln!(
                    d.text,
                    "{}: index file {}, positions {}..={}{}",
                    path.display(),
                    h.file_number,
                    h.first_position,
                    h.first_position + h.capacity - 1,
                    if h.sparse {
                        format!(
                            ", compacted: {} live entries",
                            (bytes.len() as u64).saturating_sub(64)
                                / crate::format::index::INDEX_SPARSE_ENTRY_BYTES
                        )
                    } else {
                        String::new()
                    }
                );
                d.json.push(json!({"kind": "index", "path": path, "file_number": h.file_number, "first_position": h.first_position, "capacity": h.capacity, "compacted": h.sparse}));
            }
            Err(e) => d.corrupt(path, 0, format!("index header: {e}")),
        }
    } else if magic == SEGMENT_MAGIC {
        dump_segment(path, bytes, show_records, view, d);
    } else if magic == SUBSCRIPTION_MAGIC {
        dump_subscription(path, bytes, d);
    } else if magic == crate::format::keys::KEYS_MAGIC {
        dump_keys(path, bytes, show_records, d);
    } else if magic == crate::format::projection::POSTINGS_MAGIC {
        dump_postings(path, bytes, None, show_records, d);
    } else if magic == crate::format::journal::JOURNAL_MAGIC {
        let store_id = bytes
            .get(16..24)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        dump_journal(path, bytes, store_id, None, show_records, d);
    } else {
        d.corrupt(path, 0, "not a streamlog file (unknown magic)");
    }
}

/// A pack (segment-format.md §19): its header, its flushed end, its committed records (each
/// checked against its index entry), and what lies past the last of them: an unacknowledged
/// batch's records or torn bytes, which recovery cuts.
fn dump_pack(
    path: &Path,
    number: u32,
    bytes: &[u8],
    show_records: bool,
    view: &StoreView,
    d: &mut Dump,
) {
    use crate::format::pack::{decode_pack_end, PackHeader, PACK_HEADER_BYTES};
    let header = match PackHeader::decode(bytes) {
        Ok(h) if h.pack == number => h,
        Ok(_) => return d.corrupt(path, 12, "pack header does not match its name"),
        Err(e) => {
            if view
                .last_confirmed
                .contains_key(&(crate::layout::PACK_KEY, number))
            {
                return d.corrupt(path, 0, format!("pack header: {e}"));
            }
            return d.note(format!(
                "{}: pack with an incomplete header and no committed record, left by an interrupted creation",
                path.display()
            ));
        }
    };
    let end = bytes
        .get(PACK_HEADER_BYTES..)
        .map(|b| decode_pack_end(b, number));
    let mut committed: Vec<(u64, u64)> = view
        .confirmed
        .iter()
        .filter(|((k, s, _), _)| *k == crate::layout::PACK_KEY && *s == number)
        .map(|((_, _, offset), position)| (*offset, *position))
        .collect();
    committed.sort_unstable();
    let _ = writeln!(
        d.text,
        "{}: pack {number}, first position {}, {} bytes, flushed end {}, {} committed records",
        path.display(),
        header.first_position,
        bytes.len(),
        match end {
            Some(Ok(Some(e))) => e.to_string(),
            Some(Ok(None)) => "none yet".to_string(),
            Some(Err(e)) => format!("unreadable ({e})"),
            None => "missing".to_string(),
        },
        committed.len()
    );
    let mut records = Vec::new();
    let mut removed_records = 0u64;
    let mut after_last = crate::format::pack::PACK_RECORDS_START;
    let mut tail_known = true;
    for (offset, position) in &committed {
        let Some(record) = bytes.get(*offset as usize..) else {
            d.corrupt(
                path,
                *offset,
                format!("record of position {position} past the end"),
            );
            continue;
        };
        // A record of a stream whose packed prefix a snapshot or delete removed: its block
        // may have been given back (segment-format.md §19), and reads as zeros.
        let stream = view.packed_streams.get(position);
        let removed = stream
            .and_then(|k| view.removed_up_to.get(k))
            .is_some_and(|up_to| up_to >= position)
            || record
                .iter()
                .take(crate::format::segment::RECORD_PREFIX_BYTES)
                .all(|b| *b == 0)
                && stream.is_some_and(|k| view.removed_up_to.contains_key(k));
        match decode_record(record) {
            Ok(r) if r.position == *position && r.prev_position.is_some() => {
                let mut json = record_lines(d, *offset, &r, true, show_records);
                // A pack names no stream: its table does.
                if let Some(id) = stream.and_then(|k| view.packed_ids.get(k)) {
                    if show_records {
                        let _ = writeln!(d.text, "      stream {id:?}");
                    }
                    if let Some(o) = json.as_object_mut() {
                        o.insert("stream_id".into(), json!(id));
                    }
                }
                records.push(json);
                after_last = offset + r.padded_bytes;
                tail_known = true;
            }
            Err(_) if removed => {
                removed_records += 1;
                // Its length is gone with it: where the committed records end is not known
                // unless a later one decodes.
                tail_known = false;
                continue;
            }
            Ok(r) => d.corrupt(
                path,
                *offset,
                format!("record holds position {}, its entry {position}", r.position),
            ),
            Err(e) => d.corrupt(path, *offset, format!("record of position {position}: {e}")),
        }
    }
    // Past the last committed record: an unacknowledged batch's records, then torn bytes.
    let mut at = after_last;
    let mut unacknowledged = 0u64;
    while let Some(rest) = bytes
        .get(at as usize..)
        .filter(|r| tail_known && !r.is_empty())
    {
        match decode_record(rest) {
            Ok(r) => {
                records.push(record_lines(d, at, &r, false, show_records));
                unacknowledged += 1;
                at += r.padded_bytes;
            }
            Err(e) => {
                d.note(format!(
                    "{}: unacknowledged torn tail of {} bytes at {at} ({e}); recovery cuts it",
                    path.display(),
                    rest.len()
                ));
                break;
            }
        }
    }
    if unacknowledged > 0 {
        d.note(format!(
            "{}: {unacknowledged} record(s) of unacknowledged batches; recovery cuts them",
            path.display()
        ));
    }
    if removed_records > 0 {
        let _ = writeln!(
            d.text,
            "    {removed_records} removed record(s) whose blocks were given back"
        );
    }
    d.json.push(json!({"kind": "pack", "removed_records_given_back": removed_records, "path": path, "pack": number, "first_position": header.first_position,
        "bytes": bytes.len(), "committed_records": committed.len(), "records": records}));
}

/// One decoded record: its lines when records are shown, and its JSON.
fn record_lines(
    d: &mut Dump,
    at: u64,
    r: &crate::format::segment::RecordView<'_>,
    committed: bool,
    show_records: bool,
) -> serde_json::Value {
    if show_records {
        let _ = writeln!(d.text, "    @{at} v{} pos {}{} changeset {} flags {:#04x} type {:?} data {}B metadata {}B{} data={}",
            r.version, r.position,
            match r.prev_position {
                None => String::new(),
                Some(0) if r.control.is_some_and(|c| c.op == crate::format::segment::CONTROL_OP_DELETE) => {
                    " (tombstone: its stream's chain starts over here)".to_string()
                }
                Some(0) => " (its stream's first packed record)".to_string(),
                Some(p) => format!(" (stream's previous: pos {p})"),
            },
            r.changeset, r.flags, String::from_utf8_lossy(r.event_type), r.data.len(), r.metadata.len(),
            if committed { "" } else { " UNACKNOWLEDGED" }, preview(r.data, 48));
        if !r.commit_metadata.is_empty() {
            let _ = writeln!(
                d.text,
                "      changeset {} commit metadata {}B {}",
                r.changeset,
                r.commit_metadata.len(),
                preview(r.commit_metadata, 64)
            );
        }
        if !r.key.is_empty() {
            let _ = writeln!(d.text, "      key {}", preview(r.key, 64));
        }
    }
    let control = r.control.map(|c| {
        let op = match c.op {
            CONTROL_OP_CLOSE => "close",
            CONTROL_OP_DELETE => "tombstone",
            CONTROL_OP_SNAPSHOT => "snapshot",
            CONTROL_OP_INVALIDATE => "invalidate",
            _ => "truncate",
        };
        if show_records {
            if c.op == CONTROL_OP_INVALIDATE {
                let _ = writeln!(d.text, "      invalidates changeset {}", c.target_changeset);
            } else {
                let _ = writeln!(
                    d.text,
                    "      {op}: covers version {} and position {}{}{}",
                    c.covers_version,
                    c.covers_position,
                    if c.next_segment > 0 {
                        format!(", next segment {}", c.next_segment)
                    } else {
                        String::new()
                    },
                    if c.flags & CONTROL_FLAG_CLOSED != 0 {
                        ", stream closed"
                    } else {
                        ""
                    }
                );
            }
        }
        json!({"op": op, "covers_version": c.covers_version, "covers_position": c.covers_position,
            "next_segment": c.next_segment, "closed": c.flags & CONTROL_FLAG_CLOSED != 0,
            "target_changeset": c.target_changeset})
    });
    json!({"offset": at, "version": r.version, "position": r.position, "changeset": r.changeset,
        "flags": r.flags, "padded_bytes": r.padded_bytes, "event_type": String::from_utf8_lossy(r.event_type), "data_bytes": r.data.len(),
        "metadata_bytes": r.metadata.len(), "key": preview(r.key, 64), "prev_position": r.prev_position,
        "commit_metadata": preview(r.commit_metadata, 256), "committed": committed, "crc_ok": true, "control": control})
}

/// A fan-out's table of packed streams (segment-format.md §19).
fn dump_table(path: &Path, bytes: &[u8], show_records: bool, view: &StoreView, d: &mut Dump) {
    use crate::format::pack::{decode_table_header, TableEntry, TABLE_HEADER_BYTES};
    if bytes.len() < TABLE_HEADER_BYTES {
        return d.note(format!(
            "{}: table with an incomplete header, left by an interrupted creation",
            path.display()
        ));
    }
    if let Err(e) = decode_table_header(bytes) {
        // The engine reads such a table as an unacknowledged creation unless one of its
        // entries is committed (segment-format.md §19); a committed packed record whose table
        // is unreadable shows as damage when its stream is read.
        return d.note(format!(
            "{}: table header does not decode ({e}): an interrupted creation unless an entry in it is committed",
            path.display()
        ));
    }
    let mut at = TABLE_HEADER_BYTES;
    let mut entries = 0u64;
    while at < bytes.len() {
        match TableEntry::decode(&bytes[at..]) {
            Ok((e, len)) => {
                if show_records {
                    let _ = writeln!(
                        d.text,
                        "    stream {:?} ({:016x}-{:04x}): first position {}, last {}",
                        e.stream_id,
                        e.stream_hash,
                        e.collision,
                        e.first_position,
                        e.last_position
                            .map_or_else(|| "not flushed yet".to_string(), |p| p.to_string())
                    );
                }
                entries += 1;
                at += len;
            }
            Err(e) => {
                // Damage when the entry was committed: its first position, read unchecked, is
                // a committed packed record (the engine asks the same of the index).
                let first = crate::format::pack::peek_entry(&bytes[at..]).map(|p| p.first_position);
                let committed = first.is_some_and(|first| {
                    view.confirmed
                        .iter()
                        .any(|((k, _, _), p)| *k == crate::layout::PACK_KEY && *p == first)
                });
                if committed {
                    d.corrupt(
                        path,
                        at as u64,
                        format!("table entry of a committed stream: {e}"),
                    );
                    break;
                }
                d.note(format!(
                    "{}: {} bytes after the last entry that decodes ({e}): an unacknowledged batch's, cut at the next use",
                    path.display(),
                    bytes.len() - at
                ));
                break;
            }
        }
    }
    let _ = writeln!(
        d.text,
        "{}: table of packed streams, {entries} entries",
        path.display()
    );
    d.json
        .push(json!({"kind": "table", "path": path, "entries": entries}));
}

/// The journal (segment-format.md §18): the chain of frames recovery would replay, from the
/// checkpoint's `(sequence, offset)` (`None`: a lone file, shown from its first frame). Frames
/// past the chain are leftovers of earlier laps or an unacknowledged batch: notes, not damage.
fn dump_journal(
    path: &Path,
    bytes: &[u8],
    store_id: u64,
    from: Option<(u64, u64)>,
    show_records: bool,
    d: &mut Dump,
) {
    use crate::format::journal::{decode_file_header, decode_frame, peek_frame, Op, Target};
    match decode_file_header(bytes) {
        Ok(id) if id == store_id => {}
        Ok(_) => return d.corrupt(path, 16, "JOURNAL of another store"),
        Err(e) => return d.corrupt(path, 0, format!("journal header: {e}")),
    }
    let (mut sequence, offset) = from.unwrap_or((0, 64));
    let mut at = usize::try_from(offset.max(64)).unwrap_or(usize::MAX);
    let mut frames = 0u64;
    let mut positions = (0u64, 0u64);
    while let Some(rest) = bytes.get(at..) {
        let Ok(peek) = peek_frame(rest, store_id) else {
            break;
        };
        if sequence != 0 && peek.sequence != sequence {
            break;
        }
        let (frame, ops) = match decode_frame(rest, store_id) {
            Ok(f) => f,
            Err(e) => {
                d.note(format!(
                    "{}: frame {} at {at} does not verify ({e}): the batch being written at the crash, never acknowledged",
                    path.display(),
                    peek.sequence
                ));
                break;
            }
        };
        if show_records {
            let _ = writeln!(
                d.text,
                "    frame {} at {at}: positions {}..={}, {} writes",
                frame.sequence,
                frame.first_position,
                frame.last_position,
                ops.len()
            );
            for op in &ops {
                let name = |t: &Target| match t {
                    Target::Segment {
                        hash,
                        collision,
                        segment,
                    } => format!("segment {hash:016x}-{collision:04x}-{segment:08x}"),
                    Target::Keys { hash, collision } => format!("keys {hash:016x}-{collision:04x}"),
                    Target::Index { file_number } => format!("index {file_number:016x}"),
                    Target::Pack { pack } => format!("pack {pack:08x}"),
                    Target::Table { number } => format!("table {number:03x}"),
                };
                let line = match op {
                    Op::Create(t) => format!("create {}", name(t)),
                    Op::Write(t, o, b) => format!("write {} bytes at {o} of {}", b.len(), name(t)),
                    Op::Extend(t, l) => format!("extend {} to {l} bytes", name(t)),
                };
                let _ = writeln!(d.text, "      {line}");
            }
        }
        d.json.push(
            json!({"kind": "journal_frame", "sequence": frame.sequence, "offset": at,
            "first_position": frame.first_position, "last_position": frame.last_position,
            "writes": ops.len()}),
        );
        if frames == 0 {
            positions.0 = frame.first_position;
        }
        positions.1 = frame.last_position;
        frames += 1;
        sequence = frame.sequence + 1;
        at += frame.frame_bytes as usize;
    }
    if frames == 0 {
        let _ = writeln!(d.text, "{}: no frame to replay", path.display());
    } else {
        let _ = writeln!(
            d.text,
            "{}: {frames} frames to replay at the next open, positions {}..={}",
            path.display(),
            positions.0,
            positions.1
        );
    }
    d.json
        .push(json!({"kind": "journal", "path": path, "frames": frames}));
}

/// A keys file (segment-format.md §15): derived data, so damage is a note (the engine rebuilds
/// it), not corruption.
fn dump_keys(path: &Path, bytes: &[u8], show_records: bool, d: &mut Dump) {
    use crate::format::keys::{decode_entries, KeysHeader};
    let header = match KeysHeader::decode(bytes) {
        Ok(h) => h,
        Err(e) => {
            d.note(format!(
                "{}: keys file header does not decode ({e}); the writer rebuilds it from the stream",
                path.display()
            ));
            return;
        }
    };
    let (entries, end) = decode_entries(bytes);
    let _ = writeln!(
        d.text,
        "{}: keys of stream {:016x}-{:04x}, {} entries, base record at position {}{}",
        path.display(),
        header.stream_hash,
        header.collision,
        entries.len(),
        header.base_position,
        if header.stale {
            ", STALE (rebuilt at next use)"
        } else {
            ""
        }
    );
    if show_records {
        for e in &entries {
            let _ = writeln!(
                d.text,
                "    key {} v{} pos {} changeset {} at segment {} offset {}",
                preview(&e.key, 64),
                e.version,
                e.position,
                e.changeset,
                e.segment,
                e.offset
            );
        }
    }
    if end < bytes.len() as u64 {
        d.note(format!(
            "{}: {} bytes after the last entry that decodes (an unacknowledged batch's, cut at the next use)",
            path.display(),
            bytes.len() as u64 - end
        ));
    }
    d.json.push(
        json!({"kind": "keys", "path": path, "stream_hash": header.stream_hash,
        "collision": header.collision, "entries": entries.len(), "stale": header.stale,
        "base_position": header.base_position}),
    );
}

/// A postings file of the indexes (segment-format.md §17): derived data too.
fn dump_postings(
    path: &Path,
    bytes: &[u8],
    indexed: Option<u64>,
    show_records: bool,
    d: &mut Dump,
) {
    use crate::format::projection::{decode_posting, PostingsHeader};
    let header = match PostingsHeader::decode(bytes) {
        Ok(h) => h,
        Err(e) => {
            d.note(format!(
                "{}: postings header does not decode ({e}): an interrupted creation, removed at the next load",
                path.display()
            ));
            return;
        }
    };
    let start = header.header_bytes() as usize;
    let mut positions = Vec::new();
    let mut stray = 0u64;
    for chunk in bytes.get(start..).unwrap_or_default().chunks(8) {
        match <[u8; 8]>::try_from(chunk)
            .ok()
            .and_then(|b| decode_posting(header.id, b))
        {
            Some(p) if indexed.is_none_or(|i| p <= i) => positions.push(p),
            _ => stray += 1,
        }
    }
    let _ = writeln!(
        d.text,
        "{}: {} {:?}: {} postings{}",
        path.display(),
        match header.kind {
            crate::format::projection::IndexKind::Category => "category",
            crate::format::projection::IndexKind::EventType => "event type",
        },
        header.name,
        positions.len(),
        match (positions.first(), positions.last()) {
            (Some(a), Some(b)) => format!(", positions {a}..={b}"),
            _ => String::new(),
        }
    );
    if show_records {
        let shown: Vec<String> = positions.iter().take(32).map(u64::to_string).collect();
        let _ = writeln!(
            d.text,
            "    {}{}",
            shown.join(" "),
            if positions.len() > 32 { " …" } else { "" }
        );
    }
    if stray > 0 {
        d.note(format!(
            "{}: {stray} postings past the indexer's checkpoint or failing their check; cut at the next load",
            path.display()
        ));
    }
    d.json.push(
        json!({"kind": "postings", "path": path, "name": header.name,
        "category": header.kind == crate::format::projection::IndexKind::Category,
        "postings": positions.len()}),
    );
}

fn dump_subscription(path: &Path, bytes: &[u8], d: &mut Dump) {
    let header = match SubscriptionHeader::decode(bytes) {
        Ok(h) => h,
        Err(e) => {
            d.corrupt(path, 0, format!("subscription header: {e}"));
            return;
        }
    };
    let target = match &header.target {
        StoredTarget::All {
            stream_prefix,
            event_type,
        } => format!("all streams, prefix {stream_prefix:?}, event type {event_type:?}"),
        StoredTarget::Stream(s) => format!("stream {s:?}"),
    };
    match SubscriptionCheckpoint::decode_file(bytes) {
        Ok(c) => {
            let _ = writeln!(
                d.text,
                "{}: persistent subscription {:?} (id {}), {target}, acknowledged up to position {} / version {} (slot sequence {})",
                path.display(),
                header.name,
                header.id,
                c.acked_position,
                c.acked_version,
                c.sequence
            );
            d.json.push(json!({"kind": "subscription", "path": path, "name": header.name, "id": header.id, "target": target, "acked_position": c.acked_position, "acked_version": c.acked_version, "sequence": c.sequence}));
        }
        Err(e) => d.corrupt(
            path,
            crate::format::subscription::SUBSCRIPTION_SLOT_A_OFFSET,
            format!("subscription checkpoint: both slots invalid ({e})"),
        ),
    }
}

fn dump_segment(
    path: &Path,
    bytes: &[u8],
    show_records: bool,
    view: Option<&StoreView>,
    d: &mut Dump,
) {
    let header = match SegmentHeader::decode(bytes) {
        Ok(h) => h,
        Err(e) => {
            d.corrupt(path, 0, format!("segment header: {e}"));
            return;
        }
    };
    let key = StreamKey {
        hash: header.stream_hash,
        collision: header.collision,
    };
    let _ = writeln!(
        d.text,
        "{}: segment {} of stream {:?} (key {:016x}-{:04x}), first version {}",
        path.display(),
        header.segment,
        header.stream_id,
        key.hash,
        key.collision,
        header.first_version
    );
    let confirmed_here = |offset: u64, position: u64| -> bool {
        view.is_some_and(|v| v.confirmed.get(&(key, header.segment, offset)) == Some(&position))
    };
    let last_confirmed = view.and_then(|v| v.last_confirmed.get(&(key, header.segment)).copied());
    let mut at = header.header_bytes();
    let mut records = Vec::new();
    let (mut good, mut unacknowledged) = (0u64, 0u64);
    while (at as usize) < bytes.len() {
        let slice = &bytes[at as usize..];
        match decode_record(slice) {
            Ok(r) => {
                let committed = view.is_none() || confirmed_here(at, r.position);
                if committed {
                    good += 1;
                } else {
                    unacknowledged += 1;
                }
                records.push(record_lines(d, at, &r, committed, show_records));
                at += r.padded_bytes;
            }
            Err(e) => {
                // Damage is corruption when the index shows committed data there or after it.
                let claimed = peek_record_header(slice).and_then(|h| h.position);
                let committed_here = claimed.is_some_and(|p| confirmed_here(at, p));
                let committed_after = last_confirmed.is_some_and(|o| o >= at);
                if committed_here || committed_after || view.is_none() {
                    d.corrupt(path, at, format!("record: {e}"));
                } else {
                    d.note(format!(
                        "{}: unacknowledged torn tail of {} bytes at {at} ({e}); recovery cuts it",
                        path.display(),
                        bytes.len() as u64 - at
                    ));
                }
                records.push(json!({"offset": at, "crc_ok": false, "error": e.to_string()}));
                break;
            }
        }
    }
    if unacknowledged > 0 {
        d.note(format!(
            "{}: {unacknowledged} record(s) of unacknowledged batches; recovery cuts them",
            path.display()
        ));
    }
    let _ = writeln!(d.text, "    {good} committed record(s)");
    d.json.push(json!({"kind": "segment", "path": path, "stream_id": header.stream_id, "segment": header.segment,
        "first_version": header.first_version, "records": records}));
}
