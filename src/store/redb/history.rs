// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The history in the redb file: writing it at a checkpoint, reading it
//! under the journaled changes not yet checkpointed, and pruning what
//! retention lets go.
//!
//! A change reaches the history tables in the checkpoint that moves its
//! write into the records table — the same redb commit — and until then
//! is read from the journal's changes kept in memory (the writer's
//! process) or read from the journal (a read-only handle). Revisions are
//! issued by one writer in the order its batches become durable, so a
//! reader that has seen revision `r` has seen every change below it: a
//! follower of [`changes_after`] never finds a change at or below its
//! cursor later.
//!
//! # Layout
//!
//! A checkpoint writes its changes in *blocks* of consecutive revisions,
//! so that keeping every write costs a few B-tree entries per checkpoint,
//! not one per write (64 writers lost half their throughput to one insert
//! per change, and another into an index, in the checkpointer):
//!
//! * `waggle_changes`: the first revision of a block → the block, LZ4
//!   compressed (`0x01 | length u32 LE | LZ4 block`): inside, `count u32
//!   LE`, then each change as `length u32 LE | CRC-32 u32 LE |`
//!   [the change](super::changes), in revision order. Compressed, a
//!   checkpoint writes a fraction of the bytes its journal held: JSON
//!   records of one fleet repeat their field names and most values.
//! * `waggle_history`: an id, a zero byte (no id holds one), and the first
//!   revision of the id in one checkpoint (big-endian) → the id's
//!   revisions in that checkpoint (`u64 LE` each, ascending): one entry per
//!   id a checkpoint wrote, as for the records.

use std::collections::BTreeMap;
use std::time::Duration;

use redb::{Database, ReadTransaction, ReadableTable, TableError, WriteTransaction};

use super::changes::{self, Bytes};
use super::checksum;
use super::file::{
    CHANGES, HISTORY, META, PRUNED_THROUGH, RECORDS, history_meta, meta_number_in, storage,
};
use crate::error::{Error, Result};
use crate::history::Change;
use crate::revisions::Revision;

/// A block holds at most this many changes…
const BLOCK_CHANGES: usize = 256;
/// …and starts no new change once it holds this many bytes.
const BLOCK_BYTES: usize = 256 << 10;

fn damaged(what: impl std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        id: format!("(history, {what})"),
        reason: reason.into(),
    }
}

/// The changes of a block, each checked against its CRC.
fn block_changes(first: u64, block: &[u8]) -> Result<Vec<&[u8]>> {
    let bad = |reason: &str| damaged(format_args!("block at revision {first}"), reason);
    let (count, mut rest) = block
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("too short"))?;
    let count = u32::from_le_bytes(*count) as usize;
    let mut out = Vec::with_capacity(count.min(BLOCK_CHANGES));
    for _ in 0..count {
        let (head, tail) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("a change's header is cut short"))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let (change, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| bad("a change is cut short"))?;
        if crc32fast::hash(change) != crc {
            return Err(bad("a change's checksum does not match"));
        }
        out.push(change);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad("bytes after its last change"));
    }
    Ok(out)
}

/// The first byte of a compressed block.
const LZ4: u8 = 0x01;
/// No block unpacks to more than this (a block starts no change past
/// [`BLOCK_BYTES`], and a change is one record): a larger length is damage,
/// never an allocation.
const MAX_UNPACKED: usize = 64 << 20;

/// A block as the table keeps it: compressed.
fn pack(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + block.len() / 2);
    out.push(LZ4);
    out.extend_from_slice(&u32::try_from(block.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&lz4_flex::block::compress(block));
    out
}

/// A stored block, uncompressed.
fn unpack(first: u64, value: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: String| damaged(format_args!("block at revision {first}"), reason);
    let (&mark, rest) = value.split_first().ok_or_else(|| bad("empty".to_owned()))?;
    if mark != LZ4 {
        return Err(bad(format!("unknown encoding {mark:#04x}")));
    }
    let (len, data) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("too short".to_owned()))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_UNPACKED {
        return Err(bad(format!("says it holds {len} bytes")));
    }
    lz4_flex::block::decompress(data, len).map_err(|e| bad(e.to_string()))
}

/// A block of `changes` (in revision order), before compression.
fn encode_block<'a>(changes: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let size: usize = changes.clone().map(|c| 8 + c.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for change in changes {
        out.extend_from_slice(
            &u32::try_from(change.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&crc32fast::hash(change).to_le_bytes());
        out.extend_from_slice(change);
        count += 1;
    }
    out[..4].copy_from_slice(&count.to_le_bytes());
    out
}

/// The index key of `id`'s entry starting at `revision`.
fn index_key(id: &str, revision: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 9);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

/// The index keys of `id`'s entries: `[start, end)`.
fn index_range(id: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = id.as_bytes().to_vec();
    start.push(0);
    let mut end = id.as_bytes().to_vec();
    end.push(1);
    (start, end)
}

fn revisions_of(value: &[u8]) -> Vec<u64> {
    value
        .chunks_exact(8)
        .map(|c| {
            let mut n = [0; 8];
            n.copy_from_slice(c);
            u64::from_le_bytes(n)
        })
        .collect()
}

fn packed(revisions: &[u64]) -> Vec<u8> {
    revisions.iter().flat_map(|r| r.to_le_bytes()).collect()
}

/// Writes the changes of `log` (in revision order) into the history
/// tables of `txn`: the checkpoint's part.
pub(super) fn write(txn: &WriteTransaction, log: &[Bytes]) -> Result<()> {
    if log.is_empty() {
        return Ok(());
    }
    let mut table = txn
        .open_table(CHANGES)
        .map_err(storage("opening the history"))?;
    let mut ids: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut parsed = Vec::with_capacity(log.len());
    for bytes in log {
        let change = changes::parse(bytes)?;
        ids.entry(change.id).or_default().push(change.revision);
        parsed.push((change.revision, &bytes[..]));
    }
    let mut start = 0;
    while start < parsed.len() {
        let mut end = start;
        let mut size = 0;
        while end < parsed.len() && end - start < BLOCK_CHANGES && size < BLOCK_BYTES {
            size += parsed[end].1.len();
            end += 1;
        }
        let block = pack(&encode_block(parsed[start..end].iter().map(|(_, b)| *b)));
        table
            .insert(parsed[start].0, block.as_slice())
            .map_err(storage("checkpointing the history"))?;
        start = end;
    }
    let mut index = txn
        .open_table(HISTORY)
        .map_err(storage("opening the history"))?;
    for (id, revisions) in ids {
        let first = revisions.first().copied().unwrap_or(0);
        index
            .insert(
                index_key(id, first).as_slice(),
                packed(&revisions).as_slice(),
            )
            .map_err(storage("checkpointing the history"))?;
    }
    Ok(())
}

/// A table of the snapshot, or `None` if no checkpoint has made it yet.
fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(Error::storage("opening the history", e)),
    }
}

/// Refuses a read of a store whose writers record no history.
fn recorded(txn: &ReadTransaction) -> Result<u64> {
    match history_meta(txn)? {
        (true, pruned) => Ok(pruned),
        (false, _) => Err(Error::HistoryOff),
    }
}

/// Looks changes up by revision in the blocks of one snapshot, keeping
/// the block last read.
struct Blocks<'t> {
    table: &'t redb::ReadOnlyTable<u64, &'static [u8]>,
    /// The changes of the block last read, with their revisions.
    last: Vec<(u64, Vec<u8>)>,
}

impl<'t> Blocks<'t> {
    fn new(table: &'t redb::ReadOnlyTable<u64, &'static [u8]>) -> Self {
        Self {
            table,
            last: Vec::new(),
        }
    }

    /// The change at `revision`.
    fn get(&mut self, revision: u64) -> Result<Change> {
        if let Some((_, bytes)) = self.last.iter().find(|(r, _)| *r == revision) {
            return changes::decode(bytes);
        }
        let (first, value) = self
            .table
            .range(..=revision)
            .map_err(storage("reading the history"))?
            .next_back()
            .transpose()
            .map_err(storage("reading the history"))?
            .ok_or_else(|| damaged(revision, "the index names a change no block holds"))?;
        let first = first.value();
        let block = unpack(first, value.value())?;
        let changes = block_changes(first, &block)?
            .into_iter()
            .map(|bytes| Ok((changes::parse(bytes)?.revision, bytes.to_vec())))
            .collect::<Result<Vec<_>>>()?;
        let found = changes
            .iter()
            .find(|(r, _)| *r == revision)
            .map(|(_, bytes)| changes::decode(bytes))
            .unwrap_or_else(|| Err(damaged(revision, "the index names a missing change")));
        self.last = changes;
        found
    }
}

/// `id`'s revisions in the snapshot's index, ascending.
fn indexed(
    index: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    id: &str,
) -> Result<Vec<u64>> {
    let (start, end) = index_range(id);
    let mut out = Vec::new();
    for entry in index
        .range(start.as_slice()..end.as_slice())
        .map_err(storage("reading the history"))?
    {
        let (_, value) = entry.map_err(storage("reading the history"))?;
        out.extend(revisions_of(value.value()));
    }
    Ok(out)
}

/// `id`'s changes: those in the snapshot's tables, then `logged` (the
/// journaled ones of `id`, oldest first), each once.
pub(super) fn history(txn: &ReadTransaction, id: &str, logged: &[Bytes]) -> Result<Vec<Change>> {
    recorded(txn)?;
    let mut found: BTreeMap<u64, Change> = BTreeMap::new();
    if let (Some(index), Some(table)) = (table(txn, HISTORY)?, table(txn, CHANGES)?) {
        let mut blocks = Blocks::new(&table);
        for revision in indexed(&index, id)? {
            found.insert(revision, blocks.get(revision)?);
        }
    }
    for bytes in logged {
        let change = changes::decode(bytes)?;
        found.insert(change.revision.get(), change);
    }
    Ok(found.into_values().collect())
}

/// Up to `limit` changes above `after`, in revision order: the snapshot's
/// tables, then `logged` (the journaled ones above `after`), each once.
pub(super) fn changes_after(
    txn: &ReadTransaction,
    after: u64,
    limit: usize,
    logged: &[Bytes],
) -> Result<Vec<Change>> {
    let pruned = recorded(txn)?;
    if after < pruned {
        return Err(Error::HistoryPruned {
            after: Revision::new(after),
            through: Revision::new(pruned),
        });
    }
    let from = after.saturating_add(1);
    let mut found: BTreeMap<u64, Change> = BTreeMap::new();
    if let Some(table) = table(txn, CHANGES)? {
        // The block holding `from`, if one does, then every later one.
        let start = table
            .range(..=from)
            .map_err(storage("reading the history"))?
            .next_back()
            .transpose()
            .map_err(storage("reading the history"))?
            .map_or(from, |(first, _)| first.value());
        'blocks: for entry in table
            .range(start..)
            .map_err(storage("reading the history"))?
        {
            let (first, value) = entry.map_err(storage("reading the history"))?;
            let block = unpack(first.value(), value.value())?;
            for bytes in block_changes(first.value(), &block)? {
                let change = changes::decode(bytes)?;
                if change.revision.get() < from {
                    continue;
                }
                if found.len() >= limit {
                    break 'blocks;
                }
                found.insert(change.revision.get(), change);
            }
        }
    }
    for bytes in logged {
        let change = changes::decode(bytes)?;
        if found.len() >= limit
            && found
                .last_key_value()
                .is_some_and(|(r, _)| change.revision.get() > *r)
        {
            break;
        }
        found.insert(change.revision.get(), change);
    }
    Ok(found.into_values().take(limit).collect())
}

/// Removes the changes older than `window`, except each stored id's
/// latest (its record is at that revision), in one commit that raises
/// `pruned_through`; returns how many it removed. Blocks are visited
/// oldest first and the sweep stops after the first one holding a change
/// within the window; a block keeps the changes it must.
pub(super) fn prune(db: &Database, window: Duration) -> Result<usize> {
    let Ok(window) = chrono::Duration::from_std(window) else {
        return Ok(0);
    };
    let Some(cutoff) = chrono::Utc::now()
        .checked_sub_signed(window)
        .and_then(|c| c.timestamp_nanos_opt())
    else {
        return Ok(0);
    };
    let context = "pruning the history";
    let txn = db.begin_write().map_err(storage(context))?;
    let mut gone: Vec<(u64, String)> = Vec::new();
    {
        let mut table = txn.open_table(CHANGES).map_err(storage(context))?;
        let records = txn.open_table(RECORDS).map_err(storage(context))?;
        // Each block touched: its first revision, and what it keeps.
        let mut rewrites: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
        for entry in table.iter().map_err(storage(context))? {
            let (first, value) = entry.map_err(storage(context))?;
            let first = first.value();
            // A damaged block is left for `check` to report.
            let Ok(unpacked) = unpack(first, value.value()) else {
                continue;
            };
            let Ok(block) = block_changes(first, &unpacked) else {
                continue;
            };
            let mut keep = Vec::with_capacity(block.len());
            let mut newer = false;
            for bytes in block {
                let Ok(change) = changes::parse(bytes) else {
                    keep.push(bytes.to_vec());
                    continue;
                };
                newer |= change.at >= cutoff;
                let latest = records
                    .get(change.id.as_bytes())
                    .map_err(storage(context))?
                    .and_then(|v| checksum::open(v.value()).ok().map(|(r, _)| r))
                    == Some(change.revision);
                if change.at >= cutoff || latest {
                    keep.push(bytes.to_vec());
                } else {
                    gone.push((change.revision, change.id.to_owned()));
                }
            }
            rewrites.push((first, keep));
            if newer {
                break;
            }
        }
        for (first, keep) in rewrites {
            table.remove(first).map_err(storage(context))?;
            if let Some(head) = keep.first() {
                let head = changes::parse(head)?.revision;
                let block = pack(&encode_block(keep.iter().map(Vec::as_slice)));
                table
                    .insert(head, block.as_slice())
                    .map_err(storage(context))?;
            }
        }
    }
    if !gone.is_empty() {
        let mut index = txn.open_table(HISTORY).map_err(storage(context))?;
        let mut by_id: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (revision, id) in &gone {
            by_id.entry(id.as_str()).or_default().push(*revision);
        }
        for (id, revisions) in by_id {
            let (start, end) = index_range(id);
            let entries: Vec<(Vec<u8>, Vec<u64>)> = index
                .range(start.as_slice()..end.as_slice())
                .map_err(storage(context))?
                .map(|e| {
                    e.map(|(k, v)| (k.value().to_vec(), revisions_of(v.value())))
                        .map_err(storage(context))
                })
                .collect::<Result<_>>()?;
            for (key, mut list) in entries {
                let before = list.len();
                list.retain(|r| !revisions.contains(r));
                if list.len() == before {
                    continue;
                }
                if list.is_empty() {
                    index.remove(key.as_slice()).map_err(storage(context))?;
                } else {
                    index
                        .insert(key.as_slice(), packed(&list).as_slice())
                        .map_err(storage(context))?;
                }
            }
        }
        let highest = gone.iter().map(|(r, _)| *r).max().unwrap_or(0);
        let mut meta = txn.open_table(META).map_err(storage(context))?;
        let before = meta_number_in(&meta, PRUNED_THROUGH).unwrap_or(0);
        meta.insert(
            PRUNED_THROUGH.as_bytes(),
            before.max(highest).to_string().as_bytes(),
        )
        .map_err(storage(context))?;
    }
    txn.commit().map_err(storage(context))?;
    Ok(gone.len())
}

/// The history of a snapshot, to judge each stored id's latest change
/// against its record (`check`).
pub(super) struct Latest {
    pruned: u64,
    index: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    changes: Option<redb::ReadOnlyTable<u64, &'static [u8]>>,
}

/// The snapshot's history for [`Latest::judge`], or `None` if it is not
/// recorded.
pub(super) fn latest_changes(txn: &ReadTransaction) -> Result<Option<Latest>> {
    let (on, pruned) = history_meta(txn)?;
    if !on {
        return Ok(None);
    }
    Ok(Some(Latest {
        pruned,
        index: table(txn, HISTORY)?,
        changes: table(txn, CHANGES)?,
    }))
}

impl Latest {
    /// Whether `id`'s latest change is `stored` (saved, at its revision):
    /// `Ok(true)` if so, `Ok(false)` if `id` was last written before the
    /// history started (or retention pruned it), and what is wrong if not.
    pub(super) fn judge(&self, id: &str, stored: &crate::Versioned) -> Result<bool, String> {
        if stored.revision.get() <= self.pruned {
            return Ok(false);
        }
        let last = match &self.index {
            Some(index) => indexed(index, id)
                .map_err(|e| e.to_string())?
                .last()
                .copied(),
            None => None,
        };
        let Some(last) = last else {
            return Err(format!(
                "stored at {} but the history has no change of it",
                stored.revision
            ));
        };
        if last != stored.revision.get() {
            return Err(format!(
                "stored at {} but its latest change is at revision {last}",
                stored.revision
            ));
        }
        let Some(table) = &self.changes else {
            return Err("the history's changes table is missing".to_owned());
        };
        let change = Blocks::new(table).get(last).map_err(|e| e.to_string())?;
        match &change.env {
            Some(env) if *env == stored.env => Ok(true),
            Some(_) => Err(format!(
                "its latest change (revision {last}) saved another value than the one stored"
            )),
            None => Err(format!(
                "stored at {}, but its latest change deletes it",
                stored.revision
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_damage_is_an_error() {
        let changes: Vec<Vec<u8>> = (0..5u8).map(|n| vec![n; usize::from(n) * 3]).collect();
        let block = encode_block(changes.iter().map(Vec::as_slice));
        let stored = pack(&block);
        assert_eq!(unpack(1, &stored).unwrap_or_else(|e| panic!("{e}")), block);
        for n in 0..stored.len() {
            let mut flipped = stored.clone();
            flipped[n] ^= 0x55;
            // Damage to the compressed bytes: an error, or bytes the
            // changes' checksums then judge; never a panic.
            if let Ok(inner) = unpack(1, &flipped) {
                let _ = block_changes(1, &inner);
            }
        }
        let mut huge = stored.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            unpack(1, &huge).is_err(),
            "a huge length is refused, not allocated"
        );
        let read = block_changes(1, &block).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, changes.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for n in 0..block.len() {
            let mut flipped = block.clone();
            flipped[n] ^= 0x55;
            // Never a panic; any change to a change's bytes is caught.
            if let Ok(read) = block_changes(1, &flipped) {
                assert_ne!(read, changes.iter().map(Vec::as_slice).collect::<Vec<_>>());
            }
            let _ = block_changes(1, &block[..n]);
        }
    }

    #[test]
    fn index_keys_sort_by_id_then_revision() {
        let (start, end) = index_range("a");
        let keys = [
            index_key("a", 1),
            index_key("a", 256),
            index_key("a", u64::MAX),
        ];
        for k in &keys {
            assert!(start <= *k && *k < end);
        }
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(index_key("a-", 1) >= end, "another id is outside a's range");
        assert_eq!(revisions_of(&packed(&[3, 9])), [3, 9]);
    }
}
