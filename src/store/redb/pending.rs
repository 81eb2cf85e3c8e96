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

use super::file::storage;
use super::journal::Entry;
use super::{decode, open_records};
use crate::domain::Environment;
use crate::error::{Error, Result};

/// Id → the latest journaled value; `None` is a delete.
pub(super) type Pending = BTreeMap<String, Option<Environment>>;

/// What readers in the writer's process see besides the redb file.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Writes since the last switch of journal files. Replaced whole or
    /// changed copy-on-write, so a reader can hold it.
    pub(super) pending: Arc<Pending>,
    /// Older writes, being checkpointed into the redb file; dropped once
    /// they are there.
    pub(super) frozen: Option<Arc<Pending>>,
    /// How many environments are stored, pending writes included.
    pub(super) count: usize,
}

impl State {
    /// The newest pending value of `id`, if it has one.
    pub(super) fn get(&self, id: &str) -> Option<&Option<Environment>> {
        self.pending
            .get(id)
            .or_else(|| self.frozen.as_ref().and_then(|f| f.get(id)))
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
    pub(super) fn get(&self, id: &str) -> Option<&Option<Environment>> {
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

/// Decodes journal entries, applied in order.
pub(super) fn replay(entries: Vec<Entry>) -> Result<Pending> {
    let mut pending = Pending::new();
    for entry in entries {
        match entry {
            Entry::Save(bytes) => {
                let env = crate::record::decode(&bytes).map_err(|e| Error::Corrupt {
                    id: "(journal)".to_owned(),
                    reason: e.to_string(),
                })?;
                pending.insert(env.id.clone(), Some(env));
            }
            Entry::Delete(id) => {
                pending.insert(id, None);
            }
        }
    }
    Ok(pending)
}

/// `id` in the snapshot with `overlay` over it.
pub(super) fn find(txn: &ReadTransaction, overlay: &Overlay, id: &str) -> Result<Environment> {
    if let Some(value) = overlay.get(id) {
        return value.clone().ok_or_else(|| Error::not_found(id));
    }
    let table = open_records(txn)?;
    match table.get(id).map_err(storage("reading"))? {
        Some(bytes) => decode(id, bytes.value()),
        None => Err(Error::not_found(id)),
    }
}

/// Every value in the snapshot with `overlay` over it, sorted by id.
pub(super) fn find_all(txn: &ReadTransaction, overlay: &Overlay) -> Result<Vec<Environment>> {
    let pending = overlay.merged();
    let table = open_records(txn)?;
    let stored = usize::try_from(table.len().unwrap_or(0)).unwrap_or(0);
    let mut all = Vec::with_capacity(stored + pending.len());
    let mut overlay = pending.iter().peekable();
    // Rows seen, and the last id: a damaged page redb does not check on a
    // read can drop rows or repeat them out of order; the table's own
    // count and the key order say so.
    let (mut rows, mut last) = (0_usize, String::new());
    for entry in table.iter().map_err(storage("reading"))? {
        let (id, bytes) = entry.map_err(storage("reading"))?;
        let id = id.value();
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
            .get(id.as_str())
            .map_err(storage("reading"))?
            .is_some();
        match (stored, value.is_some()) {
            (false, true) => n += 1,
            (true, false) => n = n.saturating_sub(1),
            _ => {}
        }
    }
    Ok(n)
}
