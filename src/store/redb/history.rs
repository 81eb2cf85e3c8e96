// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The history in the redb file: reading it under the journaled changes
//! not yet checkpointed, and pruning what retention lets go.
//!
//! A change reaches the history tables in the checkpoint that moves its
//! write into the records table — the same redb commit — and until then
//! is read from the journal's changes kept in memory (the writer's
//! process) or read from the journal (a read-only handle). Revisions are
//! issued by one writer in the order its batches become durable, so a
//! reader that has seen revision `r` has seen every change below it: a
//! follower of [`changes`] never finds a change at or below its cursor
//! later.

use std::collections::BTreeMap;
use std::time::Duration;

use redb::{Database, ReadTransaction, ReadableTable, TableError};

use super::changes::{self, Bytes};
use super::checksum;
use super::file::{CHANGES, HISTORY, META, PRUNED_THROUGH, RECORDS, history_meta, storage};
use crate::error::{Error, Result};
use crate::history::Change;
use crate::revisions::Revision;

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

fn damaged(revision: u64, e: Error) -> Error {
    Error::Corrupt {
        id: format!("(history, revision {revision})"),
        reason: e.to_string(),
    }
}

/// The change the history table holds at `revision`.
fn stored_change(table: &redb::ReadOnlyTable<u64, &'static [u8]>, revision: u64) -> Result<Change> {
    let value = table
        .get(revision)
        .map_err(storage("reading the history"))?
        .ok_or_else(|| {
            damaged(
                revision,
                Error::storage("reading the history", "the index names a missing change"),
            )
        })?;
    changes::open(value.value())
        .and_then(changes::decode)
        .map_err(|e| damaged(revision, e))
}

/// `id`'s changes: those in the snapshot's tables, then `logged` (the
/// journaled ones of `id`, oldest first), each once.
pub(super) fn history(txn: &ReadTransaction, id: &str, logged: &[Bytes]) -> Result<Vec<Change>> {
    recorded(txn)?;
    let mut found: BTreeMap<u64, Change> = BTreeMap::new();
    if let (Some(index), Some(table)) = (table(txn, HISTORY)?, table(txn, CHANGES)?) {
        let (start, end) = changes::index_range(id);
        for entry in index
            .range(start.as_slice()..end.as_slice())
            .map_err(storage("reading the history"))?
        {
            let (key, _) = entry.map_err(storage("reading the history"))?;
            let revision = changes::revision_of_key(key.value()).ok_or_else(|| {
                damaged(
                    0,
                    Error::storage("reading the history", "a short index key"),
                )
            })?;
            found.insert(revision, stored_change(&table, revision)?);
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
    let mut found: BTreeMap<u64, Change> = BTreeMap::new();
    if let Some(table) = table(txn, CHANGES)? {
        let from = after.saturating_add(1);
        for entry in table
            .range(from..)
            .map_err(storage("reading the history"))?
            .take(limit)
        {
            let (revision, value) = entry.map_err(storage("reading the history"))?;
            let revision = revision.value();
            let change = changes::open(value.value())
                .and_then(changes::decode)
                .map_err(|e| damaged(revision, e))?;
            found.insert(revision, change);
        }
    }
    for bytes in logged {
        if found.len() >= limit
            && found
                .last_key_value()
                .is_some_and(|(r, _)| changes::parse(bytes).is_ok_and(|c| c.revision > *r))
        {
            break;
        }
        let change = changes::decode(bytes)?;
        found.insert(change.revision.get(), change);
    }
    Ok(found.into_values().take(limit).collect())
}

/// Removes the changes older than `window`, except each stored id's
/// latest (its record is at that revision), in one commit that raises
/// `pruned_through`; returns how many it removed. Changes are visited
/// oldest first and the sweep stops at the first one within the window.
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
    let txn = db.begin_write().map_err(storage("pruning the history"))?;
    let removed = {
        let mut table = txn
            .open_table(CHANGES)
            .map_err(storage("pruning the history"))?;
        let mut index = txn
            .open_table(HISTORY)
            .map_err(storage("pruning the history"))?;
        let records = txn
            .open_table(RECORDS)
            .map_err(storage("pruning the history"))?;
        let mut gone: Vec<(u64, String)> = Vec::new();
        for entry in table.iter().map_err(storage("pruning the history"))? {
            let (revision, value) = entry.map_err(storage("pruning the history"))?;
            let revision = revision.value();
            // A damaged change is left for `check` to report.
            let Ok(change) = changes::open(value.value()).and_then(changes::parse) else {
                continue;
            };
            if change.at >= cutoff {
                break;
            }
            let latest = records
                .get(change.id)
                .map_err(storage("pruning the history"))?
                .and_then(|v| checksum::open(v.value()).ok().map(|(r, _)| r))
                == Some(revision);
            if !latest {
                gone.push((revision, change.id.to_owned()));
            }
        }
        for (revision, id) in &gone {
            table
                .remove(*revision)
                .map_err(storage("pruning the history"))?;
            index
                .remove(changes::index_key(id, *revision).as_slice())
                .map_err(storage("pruning the history"))?;
        }
        if let Some(highest) = gone.iter().map(|(r, _)| *r).max() {
            let mut meta = txn
                .open_table(META)
                .map_err(storage("pruning the history"))?;
            let before = meta
                .get(PRUNED_THROUGH)
                .map_err(storage("pruning the history"))?
                .and_then(|v| v.value().parse::<u64>().ok())
                .unwrap_or(0);
            meta.insert(PRUNED_THROUGH, before.max(highest).to_string().as_str())
                .map_err(storage("pruning the history"))?;
        }
        gone.len()
    };
    txn.commit().map_err(storage("pruning the history"))?;
    Ok(removed)
}

/// The history of a snapshot, to judge each stored id's latest change
/// against its record (`check`).
pub(super) struct Latest<'t> {
    pruned: u64,
    index: Option<redb::ReadOnlyTable<&'static [u8], ()>>,
    changes: Option<redb::ReadOnlyTable<u64, &'static [u8]>>,
    _txn: std::marker::PhantomData<&'t ReadTransaction>,
}

/// The snapshot's history for [`Latest::judge`], or `None` if it is not
/// recorded.
pub(super) fn latest_changes(txn: &ReadTransaction) -> Result<Option<Latest<'_>>> {
    let (on, pruned) = history_meta(txn)?;
    if !on {
        return Ok(None);
    }
    Ok(Some(Latest {
        pruned,
        index: table(txn, HISTORY)?,
        changes: table(txn, CHANGES)?,
        _txn: std::marker::PhantomData,
    }))
}

impl Latest<'_> {
    /// Whether `id`'s latest change is `stored` (saved, at its revision):
    /// `Ok(true)` if so, `Ok(false)` if `id` was last written before the
    /// history started (or retention pruned it), and what is wrong if not.
    pub(super) fn judge(&self, id: &str, stored: &crate::Versioned) -> Result<bool, String> {
        if stored.revision.get() <= self.pruned {
            return Ok(false);
        }
        let (start, end) = changes::index_range(id);
        let last = match &self.index {
            Some(index) => index
                .range(start.as_slice()..end.as_slice())
                .map_err(|e| e.to_string())?
                .next_back()
                .transpose()
                .map_err(|e| e.to_string())?
                .and_then(|(key, _)| changes::revision_of_key(key.value())),
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
        let change = stored_change(table, last).map_err(|e| e.to_string())?;
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
