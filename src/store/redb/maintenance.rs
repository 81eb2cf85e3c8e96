// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Operator maintenance on a store file: integrity check and compaction.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableTable, StorageError};

use super::contain::quietly;
use super::file::{HINT_CORRUPT, database_error, io_error, key_id, storage};
use super::{Handle, RedbStore, damaged, decode, open_records, read_only_view};
use crate::error::{Error, Result};

/// What [`RedbStore::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// redb's page checksums and structure verified; `None` when the file
    /// is open for writing elsewhere and only the records were checked.
    pub integrity: Option<bool>,
    /// Records that decode.
    pub records_ok: usize,
    /// Records that do not, with the reason.
    pub corrupt: Vec<(String, String)>,
    /// Stored ids whose latest change in the history is not their stored
    /// value at its revision, with what is wrong (when the history is
    /// recorded; ids last written before it started are not judged).
    pub history: Vec<(String, String)>,
    /// Stored ids whose latest change was checked.
    pub history_ok: usize,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.integrity != Some(false) && self.corrupt.is_empty() && self.history.is_empty()
    }
}

impl RedbStore {
    /// Checks the store at `path`: redb's integrity check (page checksums
    /// and tree structure), then a decode of every record, its checksum
    /// verified. When another process has the file open for writing, only
    /// the records are checked (on a read-only handle) and `integrity` is
    /// `None`. A file whose pages fail the check is not modified: its
    /// records are read read-only, when redb can still read them.
    ///
    /// Blocking: call it from a blocking context.
    pub fn check(path: impl AsRef<Path>) -> Result<CheckReport> {
        let path = path.as_ref();
        // Each step below contains what it can name; this is the net under
        // them all (dropping a handle redb panicked in, say).
        quietly(|| Self::check_inner(path)).unwrap_or_else(|what| {
            Err(damaged(
                path,
                &format!("the storage engine failed while checking it: {what}"),
            ))
        })
    }

    fn check_inner(path: &Path) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let handle = match Self::open_for_maintenance(path).and_then(Self::into_database) {
            Ok(mut db) => {
                // The open verified every page; this checks the file as
                // the writer left it after recovery.
                report.integrity = Some(match quietly(|| db.check_integrity()) {
                    Ok(Ok(verified)) => verified,
                    Ok(Err(DatabaseError::Storage(StorageError::Corrupted(what)))) => {
                        tracing::warn!(path = %path.display(), %what, "integrity check failed");
                        false
                    }
                    Ok(Err(e)) => return Err(database_error(path, e)),
                    Err(what) => {
                        tracing::warn!(path = %path.display(), %what, "integrity check failed");
                        false
                    }
                });
                Handle::Write(db)
            }
            // Locked by a writer: only the records are checked. Damaged
            // pages: the open refused it untouched; the records are read
            // read-only, to say which ones are hit.
            Err(Error::Open { reason, hint, .. })
                if reason.contains("locked") || hint == HINT_CORRUPT =>
            {
                if hint == HINT_CORRUPT {
                    report.integrity = Some(false);
                }
                let mut ro = Self::open_read_only(path)?;
                let db = ro.db.take().ok_or(Error::Closed)?;
                Arc::try_unwrap(db).map_err(|_| Error::Closed)?
            }
            Err(e) => return Err(e),
        };
        // Beside a live writer, the journaled writes are checked too; a
        // writable open has already taken them into the file.
        if let Handle::Read(_) = handle {
            match quietly(|| read_only_view(&handle, path, &Default::default()).map(drop)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => report.corrupt.push(("(journal)".to_owned(), e.to_string())),
                Err(what) => report.corrupt.push((
                    "(a damaged page)".to_owned(),
                    format!("the storage engine could not read the journal's metadata ({what})"),
                )),
            }
        }
        // After a failed page check, the pages are read unchecked: a panic
        // inside redb there is one more damage found, quietly.
        if let Err(what) = quietly(|| check_records(&handle, &mut report)) {
            report.corrupt.push((
                "(a damaged page)".to_owned(),
                format!("the storage engine could not read it ({what}); the records it holds are not listed"),
            ));
        }
        Ok(report)
    }

    /// Compacts the store at `path`, which no other process may have open,
    /// and returns the file size before and after, in bytes.
    ///
    /// Blocking: call it from a blocking context.
    pub fn compact(path: impl AsRef<Path>) -> Result<(u64, u64)> {
        let path = path.as_ref();
        let size = || {
            fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| io_error(path, "cannot read its size", e))
        };
        let mut db = Self::open_for_maintenance(path)?.into_database()?;
        let before = size()?;
        while db.compact().map_err(storage("compacting"))? {}
        db.close().map_err(|e| database_error(path, e))?;
        Ok((before, size()?))
    }

    /// Stops the writer and returns the exclusive database handle.
    fn into_database(mut self) -> Result<Database> {
        self.stop_writer();
        let db = self.db.take().ok_or(Error::Closed)?;
        match Arc::try_unwrap(db) {
            Ok(Handle::Write(db)) => Ok(db),
            _ => Err(Error::ReadOnly {
                path: self.path.clone(),
            }),
        }
    }
}

/// Decodes every record of `handle`'s file into `report`, and judges each
/// one's latest change.
pub(super) fn check_records(handle: &Handle, report: &mut CheckReport) -> Result<()> {
    let txn = handle.begin_read().map_err(storage("beginning a read"))?;
    let table = open_records(&txn)?;
    let judged = super::history::latest_changes(&txn)?;
    for entry in table.iter().map_err(storage("reading"))? {
        let (key, bytes) = entry.map_err(storage("reading"))?;
        let id = match key_id(key.value()) {
            Ok(id) => id,
            Err(e) => {
                let shown = e.id().unwrap_or_default().to_owned();
                report.corrupt.push((shown, e.to_string()));
                continue;
            }
        };
        match decode(id, bytes.value()) {
            Ok(stored) => {
                report.records_ok += 1;
                if let Some(latest) = &judged {
                    match latest.judge(id, &stored) {
                        Ok(true) => report.history_ok += 1,
                        Ok(false) => {}
                        Err(why) => report.history.push((id.to_owned(), why)),
                    }
                }
            }
            Err(e) => report.corrupt.push((id.to_owned(), e.to_string())),
        }
    }
    Ok(())
}
