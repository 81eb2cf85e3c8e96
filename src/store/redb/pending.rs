// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Pending writes: what the [journal](super::journal) holds and the redb
//! file does not yet, and how a read merges them over a redb snapshot.
//!
//! The writer process keeps them in memory (updated before each caller
//! hears back); a read-only handle in another process rebuilds them from
//! the journal file on every read.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};

use super::changes::{self, Bytes};
use super::file::{key_id, storage};
use super::journal::Entry;
use super::{decode, open_records};
use crate::error::{Error, Result};
use crate::revisions::{Revision, Versioned};

/// Id → the latest journaled value with its revision; `None` is a delete.
pub(super) type Pending = BTreeMap<String, Option<Versioned>>;

/// The first byte of a format 4 journal payload that carries a revision.
/// Payloads written before revisions start with `{` (a save's record) or
/// an id's first character, and no id starts with a control character.
const REVISED: u8 = 0x02;
/// Bytes in front of a format 4 save's record: the mark and the revision.
const SAVE_HEAD: usize = 1 + 8;

/// A save payload's revision and record; older payloads are at revision 0.
fn parse_save(payload: &[u8]) -> Result<(u64, &[u8])> {
    if payload.first() != Some(&REVISED) {
        return Ok((0, payload));
    }
    let head = payload
        .get(1..SAVE_HEAD)
        .ok_or_else(|| bad_payload("a save's revision is cut short"))?;
    let mut n = [0; 8];
    n.copy_from_slice(head);
    Ok((
        u64::from_le_bytes(n),
        payload.get(SAVE_HEAD..).unwrap_or_default(),
    ))
}

/// A delete payload's revision and id; older payloads are at revision 0.
fn parse_delete(payload: &str) -> Result<(u64, &str)> {
    let Some(rest) = payload.strip_prefix('\u{2}') else {
        return Ok((0, payload));
    };
    let (n, id) = rest
        .split_once('\u{2}')
        .ok_or_else(|| bad_payload("a delete's revision has no end"))?;
    let n = n
        .parse()
        .map_err(|_| bad_payload("a delete's revision is not a number"))?;
    Ok((n, id))
}

fn bad_payload(reason: &str) -> Error {
    Error::Corrupt {
        id: "(journal)".to_owned(),
        reason: reason.to_owned(),
    }
}

/// Changes journaled and not yet in the history tables, in revision order.
pub(super) type Log = Vec<Bytes>;

/// What readers in the writer's process see besides the redb file.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Writes since the last switch of journal files. Replaced whole or
    /// changed copy-on-write, so a reader can hold it.
    pub(super) pending: Arc<Pending>,
    /// Older writes, being checkpointed into the redb file; dropped once
    /// they are there.
    pub(super) frozen: Option<Arc<Pending>>,
    /// The changes of `pending`'s writes (when the history is recorded).
    /// Readers copy what they need under the lock and never hold it, so
    /// appending to it never copies it.
    pub(super) log: Arc<Log>,
    /// The changes of `frozen`'s writes.
    pub(super) frozen_log: Option<Arc<Log>>,
    /// How many environments are stored, pending writes included.
    pub(super) count: usize,
}

impl State {
    /// The newest pending value of `id`, if it has one.
    pub(super) fn get(&self, id: &str) -> Option<&Option<Versioned>> {
        self.pending
            .get(id)
            .or_else(|| self.frozen.as_ref().and_then(|f| f.get(id)))
    }

    /// The journaled changes not yet in the history tables that `keep`
    /// selects, oldest first (copied: the state lock is held).
    pub(super) fn logged(&self, keep: impl Fn(&[u8]) -> bool) -> Log {
        self.frozen_log
            .iter()
            .flat_map(|l| l.iter())
            .chain(self.log.iter())
            .filter(|b| keep(b))
            .cloned()
            .collect()
    }

    /// The layers a read sees over the redb file, newest first.
    pub(super) fn overlay(&self) -> Overlay {
        Overlay(
            std::iter::once(Arc::clone(&self.pending))
                .chain(self.frozen.clone())
                .collect(),
        )
    }
}

/// Pending layers, newest first: a read looks in each before the redb file.
#[derive(Debug, Default, Clone)]
pub(super) struct Overlay(Vec<Arc<Pending>>);

impl Overlay {
    /// One layer.
    pub(super) fn single(pending: Pending) -> Self {
        Self(vec![Arc::new(pending)])
    }

    /// One layer, shared with whoever keeps it.
    pub(super) fn shared(pending: Arc<Pending>) -> Self {
        Self(vec![pending])
    }

    /// The newest pending value of `id`, if any layer has one.
    pub(super) fn get(&self, id: &str) -> Option<&Option<Versioned>> {
        self.0.iter().find_map(|layer| layer.get(id))
    }

    /// One layer holding a copy of all of them; `self` is dropped.
    pub(super) fn detached(self) -> Self {
        Self::single(self.merged().into_owned())
    }

    /// All layers as one, newer values winning.
    fn merged(&self) -> std::borrow::Cow<'_, Pending> {
        match self.0.as_slice() {
            [] => std::borrow::Cow::Owned(Pending::new()),
            [one] => std::borrow::Cow::Borrowed(&**one),
            layers => {
                let mut all = Pending::new();
                for layer in layers.iter().rev() {
                    all.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                std::borrow::Cow::Owned(all)
            }
        }
    }
}

/// Decodes journal entries, applied in order; returns the writes, the
/// highest revision among them (0 if none) and the changes of those that
/// carry one (format 5 frames), in order.
pub(super) fn replay(entries: Vec<Entry>) -> Result<(Pending, u64, Log)> {
    let mut pending = Pending::new();
    let mut last = 0;
    let mut log = Log::new();
    for entry in entries {
        match entry {
            Entry::Save(bytes) => {
                let (revision, record) = parse_save(&bytes)?;
                let env = crate::record::decode(record).map_err(|e| Error::Corrupt {
                    id: "(journal)".to_owned(),
                    reason: e.to_string(),
                })?;
                last = last.max(revision);
                let revision = Revision::new(revision);
                pending.insert(env.id.clone(), Some(Versioned { env, revision }));
            }
            Entry::Delete(payload) => {
                let (revision, id) = parse_delete(&payload)?;
                last = last.max(revision);
                pending.insert(id.to_owned(), None);
            }
            Entry::Change(bytes) => {
                let change = changes::parse(&bytes).map_err(|e| Error::Corrupt {
                    id: "(journal)".to_owned(),
                    reason: e.to_string(),
                })?;
                last = last.max(change.revision);
                let value = match change.kind {
                    crate::history::ChangeKind::Saved => Some(Versioned {
                        env: crate::store::decode_stored(change.id, change.record)?,
                        revision: Revision::new(change.revision),
                    }),
                    _ => None,
                };
                pending.insert(change.id.to_owned(), value);
                log.push(bytes);
            }
        }
    }
    Ok((pending, last, log))
}

/// `id` in the snapshot with `overlay` over it.
pub(super) fn find(txn: &ReadTransaction, overlay: &Overlay, id: &str) -> Result<Versioned> {
    if let Some(value) = overlay.get(id) {
        return value.clone().ok_or_else(|| Error::not_found(id));
    }
    let table = open_records(txn)?;
    match table.get(id.as_bytes()).map_err(storage("reading"))? {
        Some(bytes) => decode(id, bytes.value()),
        None => Err(Error::not_found(id)),
    }
}

/// The most values `find_all` makes room for before it reads them.
const PREALLOCATED: usize = 1 << 16;

/// Every value in the snapshot with `overlay` over it, sorted by id.
pub(super) fn find_all(txn: &ReadTransaction, overlay: &Overlay) -> Result<Vec<Versioned>> {
    let pending = overlay.merged();
    let table = open_records(txn)?;
    // The table's own count sizes the vector, within reason: on a damaged
    // page redb does not check it can say anything, and a vector sized
    // by it would abort the process for want of memory.
    let stored = usize::try_from(table.len().unwrap_or(0)).map_or(0, |n| n.min(PREALLOCATED));
    let mut all = Vec::with_capacity(stored.saturating_add(pending.len()));
    let mut overlay = pending.iter().peekable();
    // Rows seen, and the last id: a damaged page redb does not check on a
    // read can drop rows or repeat them out of order; the table's own
    // count and the key order say so.
    let (mut rows, mut last) = (0_usize, String::new());
    for entry in table.iter().map_err(storage("reading"))? {
        let (key, bytes) = entry.map_err(storage("reading"))?;
        let id = key_id(key.value())?;
        if rows > 0 && last.as_str() >= id {
            return Err(damaged_table(format!("id {id:?} comes after {last:?}")));
        }
        rows += 1;
        last.clear();
        last.push_str(id);
        // Pending ids before this one are new.
        while let Some((_, value)) = overlay.next_if(|(p, _)| p.as_str() < id) {
            all.extend(value.clone());
        }
        match overlay.next_if(|(p, _)| p.as_str() == id) {
            Some((_, value)) => all.extend(value.clone()),
            None => all.push(decode(id, bytes.value())?),
        }
    }
    all.extend(overlay.filter_map(|(_, v)| v.clone()));
    let stored = table.len().map_err(storage("counting"))?;
    if rows as u64 != stored {
        return Err(damaged_table(format!(
            "{rows} rows read, the table says it holds {stored}"
        )));
    }
    Ok(all)
}

fn damaged_table(reason: String) -> Error {
    Error::Corrupt {
        id: "(records table)".to_owned(),
        reason,
    }
}

/// How many values the snapshot with `overlay` over it holds.
pub(super) fn count(txn: &ReadTransaction, overlay: &Overlay) -> Result<usize> {
    let pending = overlay.merged();
    let table = open_records(txn)?;
    let mut n =
        usize::try_from(table.len().map_err(storage("counting"))?).map_err(storage("counting"))?;
    for (id, value) in pending.iter() {
        let stored = table
            .get(id.as_bytes())
            .map_err(storage("reading"))?
            .is_some();
        match (stored, value.is_some()) {
            (false, true) => n = n.saturating_add(1),
            (true, false) => n = n.saturating_sub(1),
            _ => {}
        }
    }
    Ok(n)
}
