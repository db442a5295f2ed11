//! Rewriting a stream's segment 0: snapshot and delete (segment-format.md §12). The writer runs
//! one rewrite at a time, alone, after the batch before it was published.
//!
//! The commit point is the rename of the new segment 0 over the old one: before it is durable
//! the stream is wholly in its old state, after it wholly in the new one. Removing the old
//! segments comes after and is redone when a crash interrupts it; readers tell removed events
//! by the base record that opens segment 0.

use super::{Handle, Writer};
use crate::error::{Error, Result};
use crate::format::index::{locate, IndexEntry, FLAG_CONTROL, FLAG_PACKED};
use crate::format::keys::KEYS_HEADER_BYTES;
use crate::format::removals::Removal;
use crate::format::segment::{
    decode_record, encode_record, Control, RecordFields, SegmentHeader, CONTROL_FLAG_CLOSED,
    CONTROL_OP_DELETE, CONTROL_OP_SNAPSHOT, CONTROL_OP_TRUNCATE, RECORD_FLAG_BEGIN,
    RECORD_FLAG_END,
};
use crate::layout::{fanout_dir, index_path, segment_path, TEMP_SUFFIX};
use crate::options::SyncMode;
use crate::packs::Link;
use crate::reply::Reply;
use crate::storage::OpenMode;
use crate::types::{now_us, AppendResult, EventData, Position};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// The event type of a tombstone.
pub const DELETE_EVENT_TYPE: &str = "$delete";

/// The most bytes a tombstone in a pack takes, padding included (segment-format.md §19).
const TOMBSTONE_RECORD_BYTES_MAX: u64 =
    crate::format::segment::packed_record_bytes_max(DELETE_EVENT_TYPE.len(), false, true);

/// The event type of the record opening a segment 0 rewritten by a truncation.
pub const TRUNCATE_EVENT_TYPE: &str = "$truncate";

/// What a rewrite does to its stream.
pub enum RewriteKind {
    Snapshot(EventData),
    Delete,
    /// Remove the events before this version (`truncate_before`).
    Truncate(u64),
}

/// A snapshot, a delete or a truncation of one stream.
pub struct RewriteRequest {
    pub stream: Arc<str>,
    pub kind: RewriteKind,
    pub reply: Reply<Result<AppendResult>>,
}

/// Why a rewrite failed: before anything was written (the caller's error), or after (the
/// store is poisoned).
enum Failure {
    Refused(Error),
    Fatal(Error),
}

impl Writer {
    pub(super) fn rewrite(&mut self, request: RewriteRequest) {
        // A delete of a stream that lives wholly in a pack is a batch of its own: its
        // tombstone goes to the pack (segment-format.md §19), no file is written or renamed.
        if matches!(request.kind, RewriteKind::Delete) {
            match self.packed_chain_to_delete(&request.stream) {
                Ok(Some(links)) => {
                    let result = self.delete_in_pack(&request.stream, &links);
                    request.reply.send(result);
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    request.reply.send(Err(e));
                    return;
                }
            }
        }
        // A rewrite changes files outside any journal frame: first flush, so that no frame
        // written before it is ever replayed over what it wrote (segment-format.md §18). The
        // flush also gives back the pack blocks the previous rewrites freed (§19): a run of
        // deletes gets its space back as it goes, not only at the next append's flush.
        if self.journal_dirty() || self.dead.has_pending() {
            if let Err(e) = self.durable_checkpoint() {
                // `Poisoned`: a failed sync is fatal to the handle.
                request.reply.send(Err(e));
                return;
            }
        }
        match self.try_rewrite(&request) {
            Ok(result) => request.reply.send(Ok(result)),
            Err(Failure::Refused(e)) => request.reply.send(Err(e)),
            Err(Failure::Fatal(e)) => request.reply.send(Err(Error::Poisoned {
                cause: self.poison_with(&e),
            })),
        }
    }

    fn try_rewrite(&mut self, request: &RewriteRequest) -> Result<AppendResult, Failure> {
        let stream = &request.stream;
        let root = self.shared.root.clone();
        let backend = Arc::clone(&self.shared.backend);
        let fdatasync = self.shared.options.sync == SyncMode::Fdatasync;
        let ws = match self.stream(stream) {
            Ok(Some(ws)) => ws,
            Ok(None) => {
                return Err(Failure::Refused(Error::StreamNotFound {
                    stream: stream.to_string(),
                }))
            }
            Err(e) => return Err(Failure::Refused(e)),
        };
        if ws.deleted {
            return Err(Failure::Refused(Error::StreamDeleted {
                stream: stream.to_string(),
            }));
        }
        if ws.version == 0 {
            return Err(Failure::Refused(Error::StreamNotFound {
                stream: stream.to_string(),
            }));
        }
        let meta = Arc::clone(&ws.meta);
        let key = meta.key;
        let version = ws.version;
        let changeset = ws.changeset.max(1);
        let closed = ws.closed;
        let header_bytes = ws.header_bytes;
        let state = meta.snapshot();
        // A truncation covers the events before its version; the others every event.
        let cut = match request.kind {
            RewriteKind::Truncate(before) => {
                let cut = before.min(version + 1);
                if cut <= state.first_version {
                    // Nothing more to remove.
                    return Ok(AppendResult {
                        first_version: state.first_version,
                        last_version: version,
                        changeset: state.changeset,
                        first_position: Position(0),
                        last_position: Position(0),
                        duplicates: 0,
                    });
                }
                Some(cut)
            }
            _ => None,
        };
        let covers_version = cut.map_or(version, |c| c - 1);
        // The segment where a truncation keeps events (every other one before it goes).
        let keep = cut.map_or(0, |c| {
            state
                .segments
                .iter()
                .position(|s| s.last_version >= c)
                .unwrap_or(state.segments.len().saturating_sub(1))
        });
        // The position of the last event covered.
        let mut covers_position = 0;
        for s in &state.segments {
            let mapped = self
                .shared
                .maps
                .segment(key, s.number, s.end)
                .map_err(Failure::Refused)?
                .ok_or_else(|| {
                    Failure::Refused(Error::corrupt(
                        segment_path(&root, key, s.number),
                        0,
                        "segment holding committed events is missing",
                    ))
                })?;
            let mut at = s.header_bytes;
            while at < s.end {
                let r =
                    decode_record(&mapped.mapping[at as usize..s.end as usize]).map_err(|e| {
                        Failure::Refused(Error::corrupt(
                            &mapped.path,
                            at,
                            format!("committed record: {e}"),
                        ))
                    })?;
                if r.is_event() && r.version == covers_version {
                    covers_position = r.position;
                }
                at += r.padded_bytes;
            }
        }
        // The packed prefix's records (segment-format.md §19).
        let packed_links = match state.packed {
            Some(p) => crate::packs::walk(&self.shared, key, p.last).map_err(Failure::Refused)?,
            None => Vec::new(),
        };
        if let Some(l) = packed_links
            .iter()
            .find(|l| l.is_event && l.version == covers_version)
        {
            covers_position = l.position;
        }
        if let Some(cut) = cut {
            // A truncation is committed by its record in `REMOVALS`; freeing the segments
            // before it comes after, and a crash in between leaves them to the next one.
            self.shared
                .removals
                .append(
                    &self.shared,
                    Removal {
                        kind: crate::format::removals::REMOVAL_KIND_TRUNCATE,
                        stream_hash: key.hash,
                        collision: key.collision,
                        covers_version,
                        covers_position,
                        created_us: now_us(),
                    },
                )
                .map_err(Failure::Fatal)?;
            self.shared.note_removed(key, covers_position);
            let mut guard = meta
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.first_version = cut;
            guard.generation += 1;
            drop(guard);
            if let Some(ws) = self.streams.get_mut(stream) {
                // The removed events leave the key map (the keys file's entries for them are
                // skipped by version from now on).
                ws.keys.map.retain(|_, e| e.version >= cut);
            }
            if keep == 0 {
                // No whole segment before the version: nothing to free.
                self.shared.changed();
                return Ok(AppendResult {
                    first_version: cut,
                    last_version: version,
                    changeset: state.changeset,
                    first_position: Position(0),
                    last_position: Position(0),
                    duplicates: 0,
                });
            }
        }
        let last_number = state.segments.last().map_or(0, |s| s.number);
        let next_segment = if cut.is_some() {
            state.segments[keep].number
        } else {
            (last_number + 1).max(state.after_zero)
        };
        let position = self.head + 1;
        let (op, first_version, record_version, event_type, event_key, metadata, data, event_id) =
            match &request.kind {
                RewriteKind::Snapshot(e) => (
                    CONTROL_OP_SNAPSHOT,
                    version,
                    version,
                    e.event_type.as_bytes(),
                    e.key.as_slice(),
                    e.metadata.as_slice(),
                    e.data.as_slice(),
                    e.id,
                ),
                RewriteKind::Delete => (
                    CONTROL_OP_DELETE,
                    version + 1,
                    version,
                    DELETE_EVENT_TYPE.as_bytes(),
                    &[][..],
                    &[][..],
                    &[][..],
                    None,
                ),
                RewriteKind::Truncate(_) => {
                    let kept_first = state.segments[keep].first_version;
                    (
                        CONTROL_OP_TRUNCATE,
                        kept_first,
                        kept_first - 1,
                        TRUNCATE_EVENT_TYPE.as_bytes(),
                        &[][..],
                        &[][..],
                        &[][..],
                        None,
                    )
                }
            };
        let header = SegmentHeader {
            store_id: self.shared.manifest.store_id,
            stream_hash: key.hash,
            collision: key.collision,
            segment: 0,
            first_version,
            created_us: now_us(),
            stream_id: stream.to_string(),
        };
        let mut bytes = header.encode();
        debug_assert_eq!(bytes.len() as u64, header_bytes);
        encode_record(
            &RecordFields {
                flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END,
                version: record_version,
                position,
                changeset,
                timestamp_us: now_us(),
                event_id,
                event_type,
                key: event_key,
                commit_metadata: &[],
                metadata,
                data,
                control: Some(Control {
                    op,
                    flags: if closed { CONTROL_FLAG_CLOSED } else { 0 },
                    next_segment,
                    covers_version,
                    covers_position,
                    target_changeset: 0,
                }),
                prev_position: None,
            },
            &mut bytes,
        );
        let end = bytes.len() as u64;
        // From here on, a failure leaves files behind: the store is poisoned and the next open
        // settles the stream (wholly old or wholly new).
        let fatal = Failure::Fatal;
        let tmp = root.join(format!(
            "{:016x}-{:04x}.rewrite{TEMP_SUFFIX}",
            key.hash, key.collision
        ));
        match backend.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fatal(Error::io("remove", &tmp, e))),
        }
        let file: Handle = Arc::from(
            backend
                .open(&tmp, OpenMode::CreateNew)
                .map_err(|e| fatal(Error::io("create segment", &tmp, e)))?,
        );
        file.write_all_at(&bytes, 0)
            .map_err(|e| fatal(Error::io("write segment", &tmp, e)))?;
        let mut dirs_to_sync = BTreeSet::new();
        let (file_number, offset) = locate(position, self.shared.manifest.index_entries_per_file);
        let index = self
            .index_file(file_number, &mut dirs_to_sync, &mut None)
            .map_err(fatal)?;
        let entry = IndexEntry {
            stream_hash: key.hash,
            collision: key.collision,
            segment: 0,
            offset: u32::try_from(header_bytes).expect("a segment header fits in u32"),
            flags: RECORD_FLAG_BEGIN
                | RECORD_FLAG_END
                | if matches!(request.kind, RewriteKind::Snapshot(_)) {
                    0
                } else {
                    FLAG_CONTROL
                },
        };
        index
            .write_all_at(&entry.encode(position), offset)
            .map_err(|e| fatal(Error::io("write index", index_path(&root, file_number), e)))?;
        // Durability: the new segment 0 and its index entry are durable before the rename that
        // commits them.
        if fdatasync {
            file.sync_data()
                .map_err(|e| fatal(Error::io("fdatasync", &tmp, e)))?;
            index
                .sync_data()
                .map_err(|e| fatal(Error::io("fdatasync", index_path(&root, file_number), e)))?;
            for dir in &dirs_to_sync {
                backend
                    .sync_dir(dir)
                    .map_err(|e| fatal(Error::io("fsync directory", dir, e)))?;
            }
        } else {
            self.checkpoint_file
                .sync_fs()
                .map_err(|e| fatal(Error::io("syncfs", &root, e)))?;
        }
        drop(file);
        crate::killpoint::reached("rewrite-written");
        let seg0 = segment_path(&root, key, 0);
        let fanout = fanout_dir(&root, key.hash);
        // A packed stream of a store of format 7 may have no fan-out folder yet (its table is
        // in `tables/`): created, and its entry in `streams/` made durable, before the rename
        // puts segment 0 in it.
        match backend.create_dir(&fanout) {
            Ok(()) => self
                .sync_dir_or_fs(&root.join(crate::layout::STREAMS_DIR))
                .map_err(fatal)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fatal(Error::io("create folder", &fanout, e))),
        }
        let deleted = matches!(request.kind, RewriteKind::Delete);
        let mut segments = vec![crate::catalog::SegmentState {
            number: 0,
            first_version,
            header_bytes,
            end,
            last_version: record_version.max(if cut.is_some() { 0 } else { version }),
        }];
        // A truncation keeps the segments from `keep` on; the others keep nothing.
        let removed: Vec<u32> = if cut.is_some() {
            segments.extend_from_slice(&state.segments[keep..]);
            state.segments[1..keep].iter().map(|s| s.number).collect()
        } else {
            // (A packed stream may have no segment at all.)
            state
                .segments
                .get(1..)
                .unwrap_or_default()
                .iter()
                .map(|s| s.number)
                .collect()
        };
        let new_state = crate::catalog::StreamState {
            version,
            changeset: state.changeset,
            segments,
            // A snapshot is the event of its version; a delete or a truncation keeps none.
            first_version: cut.unwrap_or(if deleted { version + 1 } else { first_version }),
            after_zero: next_segment,
            closed,
            deleted,
            // Set under the state lock below, from the state it replaces.
            generation: 0,
            base_position: position,
            // A snapshot or a delete covers the packed prefix whole; a truncation keeps what
            // follows its cut.
            packed: if cut.is_some() { state.packed } else { None },
        };
        {
            // Readers map this stream's segments under its state lock: none maps the new
            // segment 0 with the old state, or the reverse.
            let mut guard = meta
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            backend
                .rename(&tmp, &seg0)
                .map_err(|e| fatal(Error::io("rename", &tmp, e)))?;
            // Its sync's outcome waits until the new state is published: once the rename has
            // replaced segment 0, this handle's readers can only find the new one there, and
            // the old state would show them the stream half removed (its packed prefix still
            // there, its segments' events gone: the `api_model` fuzzer found it after a failed
            // `syncfs`). Whether the rename is durable, the next open settles.
            let synced = self.sync_dir_or_fs(&fanout);
            if synced.is_ok() {
                crate::killpoint::reached("rewrite-renamed");
            }
            // Committed: publish the head (the base record's position), then the new state;
            // no cached mapping of the old files outlives the old state.
            self.head = position;
            self.shared.publish(position);
            for s in &state.segments {
                self.shared.maps.forget_segment(key, s.number);
            }
            self.shared.note_removed(key, covers_position);
            *guard = crate::catalog::StreamState {
                generation: guard.generation + 1,
                ..new_state
            };
            synced.map_err(fatal)?;
        }
        // A packed prefix stays in its pack, where `read_all` would find it: a `REMOVALS`
        // record says what the base record covers (segment-format.md §19). A crash before it
        // is durable leaves recovery to write it (it verifies the base record after the
        // checkpoint).
        if cut.is_none() && state.packed.is_some() {
            crate::packs::cover_packed_prefix(&self.shared, key, covers_version, covers_position)
                .map_err(fatal)?;
            // Every packed record of the stream is dead now (its close record too): their
            // whole blocks are given back once a checkpoint covers this rewrite. A truncation's
            // packed records stay: the chain of the records it keeps runs through them.
            for l in &packed_links {
                self.dead
                    .add(self.head, l.pack, l.offset, l.offset + l.padded_bytes);
            }
        }
        // The old files go; a crash from here on leaves them for the next open (or the next
        // use of the stream) to remove. Their index entries stay as they are: an overwrite of a
        // committed entry could tear it and its neighbours (segment-format.md §10); readers
        // tell removed events by the base record.
        if cut.is_none() {
            if let Some(ws) = self.streams.get_mut(stream) {
                if ws.file.take().is_some() {
                    self.open_files = self.open_files.saturating_sub(1);
                }
            }
        }
        for number in removed {
            let path = segment_path(&root, key, number);
            match backend.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fatal(Error::io("remove segment", &path, e))),
            }
        }
        // The keys file follows the new state (segment-format.md §15): rebuilt from it (a
        // snapshot leaves at most its own entry, a truncation the kept events'), or removed.
        // A crash before this leaves a file naming the old base record: stale, rebuilt later.
        let snapshot_keyed = matches!(&request.kind, RewriteKind::Snapshot(e) if !e.key.is_empty());
        let had_keys = self.streams.get(stream).is_some_and(|ws| ws.keys.exists);
        if had_keys || snapshot_keyed {
            let entries = if deleted {
                Vec::new()
            } else {
                crate::keys::scan(&self.shared, &meta, &meta.snapshot())
                    .map_err(fatal)?
                    .ok_or_else(|| {
                        fatal(Error::corrupt(
                            &seg0,
                            0,
                            "stream changed during its rewrite",
                        ))
                    })?
            };
            let len =
                crate::keys::write_file(&self.shared, key, position, &entries).map_err(fatal)?;
            if let Some(ws) = self.streams.get_mut(stream) {
                ws.keys = super::WriterKeys {
                    map: crate::keys::newest(entries),
                    len: len.max(KEYS_HEADER_BYTES as u64),
                    exists: len > 0,
                };
            }
        }
        self.sync_dir_or_fs(&fanout).map_err(fatal)?;
        crate::killpoint::reached("rewrite-removed");
        if let Some(ws) = self.streams.get_mut(stream) {
            ws.after_zero = next_segment;
            if cut.is_none() {
                ws.segment = 0;
                ws.segment_first_version = first_version;
                ws.tail = end;
                ws.create = None;
                ws.deleted = deleted;
                // It goes on in its new segment 0, out of any pack.
                ws.packed = None;
            }
        }
        self.shared.changed();
        if cut.is_none() {
            // A snapshot or a delete: its events' index entries can be compacted away.
            self.note_removed((version + 1).saturating_sub(state.first_version));
        }
        Ok(AppendResult {
            first_version: cut.unwrap_or(version),
            last_version: version,
            changeset,
            first_position: Position(position),
            last_position: Position(position),
            duplicates: 0,
        })
    }

    /// The packed records of `stream`, newest first, when a delete can leave its tombstone in
    /// the pack: the stream has no file of its own and the tombstone fits its pack bound.
    /// `None` sends the delete the way of a segment 0 rewrite (which also answers the errors).
    fn packed_chain_to_delete(&mut self, stream: &Arc<str>) -> Result<Option<Vec<Link>>> {
        let fits = TOMBSTONE_RECORD_BYTES_MAX <= self.shared.options.pack_stream_bytes;
        let Some(ws) = self.stream(stream)? else {
            return Ok(None);
        };
        let Some(tail) = ws.packed.filter(|t| t.last > 0 && t.entry_offset.is_some()) else {
            return Ok(None);
        };
        if ws.deleted || ws.version == 0 || !fits {
            return Ok(None);
        }
        let key = ws.meta.key;
        crate::packs::walk(&self.shared, key, tail.last).map(Some)
    }

    /// Delete a stream whose records are all in packs: one batch appends its tombstone to the
    /// current pack, restarting its chain (`prev_position` 0), and commits like any other
    /// (through the journal); then its `REMOVALS` record, which recovery writes again when a
    /// crash comes first; then the dead records' blocks wait for the next checkpoint to be
    /// given back (segment-format.md §19, "Tombstones in the pack").
    fn delete_in_pack(&mut self, stream: &Arc<str>, links: &[Link]) -> Result<AppendResult> {
        self.load_pack()?;
        let store_id = self.shared.manifest.store_id;
        let timestamp_us = now_us();
        let first_position = self.head + 1;
        let mut planning = super::Planning {
            next_position: first_position,
            ..super::Planning::default()
        };
        let ws = self
            .streams
            .get_mut(stream)
            .expect("looked up by packed_chain_to_delete just before");
        let key = ws.meta.key;
        let version = ws.version;
        let changeset = ws.changeset.max(1);
        let first_version = ws.meta.first_version();
        let mut tail = ws.packed.expect("checked by packed_chain_to_delete");
        let entry_offset = tail
            .entry_offset
            .expect("checked by packed_chain_to_delete");
        // The position of the stream's last event: everything up to it is removed.
        let covers_position = links
            .iter()
            .find(|l| l.is_event && l.version == version)
            .map_or(0, |l| l.position);
        let position = planning.next_position;
        let tombstone = super::control_record(
            DELETE_EVENT_TYPE,
            Control {
                op: CONTROL_OP_DELETE,
                flags: if ws.closed { CONTROL_FLAG_CLOSED } else { 0 },
                next_segment: 0,
                covers_version: version,
                covers_position,
                target_changeset: 0,
            },
            (version, position, changeset, timestamp_us),
            // The chain starts over: a load walks the tombstone alone.
            Some(0),
        );
        let tombstone_bytes = crate::format::segment::packed_record_bytes(&tombstone);
        debug_assert!(tombstone_bytes <= TOMBSTONE_RECORD_BYTES_MAX);
        let cursor = self
            .pack
            .as_mut()
            .expect("load_pack loaded the current pack");
        let slot = super::pack_slot(
            cursor,
            &mut planning,
            tombstone_bytes,
            store_id,
            timestamp_us,
        );
        let offset = cursor.end;
        let bytes = &mut planning.pack_writes[slot].bytes;
        let before = bytes.len();
        encode_record(&tombstone, bytes);
        let written = (bytes.len() - before) as u64;
        assert_eq!(
            written, tombstone_bytes,
            "the tombstone takes the bytes planned for it"
        );
        cursor.end += written;
        planning.index_bytes.extend_from_slice(
            &IndexEntry {
                stream_hash: key.hash,
                collision: key.collision,
                segment: cursor.number,
                offset: u32::try_from(offset).expect("a pack stays below 4 GiB"),
                flags: RECORD_FLAG_BEGIN | RECORD_FLAG_END | FLAG_CONTROL | FLAG_PACKED,
            }
            .encode(position),
        );
        planning.next_position += 1;
        tail.last = position;
        tail.bytes = written;
        planning.packed.insert(
            key,
            crate::catalog::PackedState {
                last: position,
                bytes: written,
                version,
                entry_offset,
            },
        );
        ws.packed = Some(tail);
        ws.deleted = true;
        // A delete answers as a close does: the stream stays at its version.
        let result = super::close_result(version, changeset, position);
        let (reply, answer) = crate::reply::slot();
        self.finish(super::Batch {
            first_position,
            planning,
            planned: vec![super::Planned {
                reply,
                result: vec![result],
                producer: None,
            }],
            touched: BTreeSet::from([Arc::clone(stream)]),
            acks: Vec::new(),
        });
        // One answer is given by `finish` itself, never by the notifier thread.
        match answer.wait() {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => {
                return Err(self
                    .shared
                    .check_poison()
                    .err()
                    .unwrap_or_else(|| Error::Poisoned {
                        cause: "the delete's batch was not answered".into(),
                    }))
            }
        }
        // Durable and published. Readers of `read_all` skip the dead records from now on; the
        // record below says so to later processes.
        self.shared.note_removed(key, covers_position);
        crate::killpoint::reached("pack-delete-synced");
        if let Err(e) =
            crate::packs::cover_packed_prefix(&self.shared, key, version, covers_position)
        {
            return Err(Error::Poisoned {
                cause: self.poison_with(&e),
            });
        }
        for l in links {
            self.dead
                .add(position, l.pack, l.offset, l.offset + l.padded_bytes);
        }
        self.note_removed((version + 1).saturating_sub(first_version));
        Ok(result)
    }

    /// `events` events were removed by a snapshot or a delete, now published: once enough
    /// were, compact the index in the background. A durable checkpoint first: the compaction
    /// covers only what one covers, and a tombstone in a pack counts only once one does
    /// (segment-format.md §19); a store that only deletes writes none for long (tombstones
    /// fill neither the journal nor `CHECKPOINT_INTERVAL_POSITIONS` quickly), and 180,000
    /// removed events of the lifecycle bench left every index file dense (session 12).
    fn note_removed(&mut self, events: u64) {
        if !crate::compact::compaction_due(&self.shared, events) {
            return;
        }
        // Its failure poisons the store (as any failed sync); what was removed is durable,
        // and its caller is answered so.
        if self.durable_checkpoint().is_ok() {
            crate::compact::start_background(&self.shared);
        }
    }

    /// Make a folder's new entries durable: its `fsync` (fdatasync mode) or one `syncfs`.
    fn sync_dir_or_fs(&self, dir: &PathBuf) -> Result<()> {
        if self.shared.options.sync == SyncMode::Fdatasync {
            self.shared
                .backend
                .sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))
        } else {
            self.checkpoint_file
                .sync_fs()
                .map_err(|e| Error::io("syncfs", &self.shared.root, e))
        }
    }
}
