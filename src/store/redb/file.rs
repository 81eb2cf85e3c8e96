// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The store file: how a path becomes an open redb database, what makes a
//! file ours, and the errors that say what to do when it is not.

use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, StorageError, TableDefinition,
    TableHandle,
};

use super::journal::Expect;
use crate::error::{Error, Result};
use crate::record;

pub(super) const RECORDS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("waggle_environments");
pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("waggle_meta");
/// The history (format 5): the first revision of a block of changes → the
/// block ([`history`](super::history)).
pub(super) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("waggle_changes");
/// Each id's revisions, one entry per checkpoint that wrote it
/// ([`history`](super::history)).
pub(super) const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("waggle_history");

/// The value of the `format` metadata key in every waggle store.
pub const FORMAT_NAME: &str = "waggle-store";
/// The table layout version this build writes and the newest it opens.
/// Version 2 added the journal (`journal_id`, `journal_next`): a build that
/// reads only version 1 would ignore a journal's writes, so it must refuse.
/// Version 3 added `journal_state` and a checksum in each record's value
/// (records without one are still read): a version 2 build would leave
/// `journal_state` wrong and read checksummed values as corrupt.
/// Version 4 added revisions: each value carries one, and `last_revision`
/// records the highest issued. A version 3 build would write values without
/// one (revision 0 again for an id that had a higher one), so it must
/// refuse.
/// Version 5 added the history: tables `waggle_changes` and
/// `waggle_history`, metadata `history` and `pruned_through`, and journal
/// frames that carry each write's time and origin. A version 4 build would
/// write without recording changes, a gap nobody would see.
pub const FORMAT_VERSION: u32 = 5;

/// Metadata key: the id in the journal's header, so a journal is never
/// replayed into another store.
pub(super) const JOURNAL_ID: &str = "journal_id";
/// Metadata key: the first journal sequence number the file does not hold.
pub(super) const JOURNAL_NEXT: &str = "journal_next";
/// Metadata key: the highest revision issued by the time of the last
/// checkpoint (the journal's frames carry any later ones); missing before
/// format 4, meaning 0.
pub(super) const LAST_REVISION: &str = "last_revision";
/// Metadata key: `open` while a writer may have journaled writes the file
/// does not hold (the journal must be there), `closed` after a clean close.
pub(super) const JOURNAL_STATE: &str = "journal_state";
/// Metadata key: `on` while writers record the history, `off` (or missing,
/// before format 5) while they do not.
pub(super) const HISTORY_STATE: &str = "history";
/// Metadata key: the highest revision whose change may be missing — pruned
/// by retention, or written while history was off (0: none).
pub(super) const PRUNED_THROUGH: &str = "pruned_through";

pub(super) const HINT_DIR: &str = "point the store path at a file, for example DIR/waggle.db";
pub(super) const HINT_LOCKED: &str = "another process or handle has it open for writing: stop it (a running Waggle server?), or use the read-only commands";
pub(super) const HINT_FOREIGN: &str =
    "this file was not written by waggle-store; check the path. The file was not modified";
pub(super) const HINT_NEWER: &str =
    "it was written by a newer waggle-store: upgrade this one. The file was not modified";
pub(super) const HINT_CORRUPT: &str =
    "restore it from a backup (waggle-store import) or move it aside to start empty";
pub(super) const HINT_IO: &str = "check the path, its permissions and the disk";
pub(super) const HINT_DANGLING: &str = "the store path is a symbolic link to a file that does not exist: point the link at the store, or remove it to start a new store at the path. Nothing was created or modified";

/// The file a store path names: a symbolic link is followed to its target,
/// so the journal always sits beside the store file itself, whichever path
/// it is opened by. A path that does not exist yet is kept as it is (a new
/// store is created there); a link whose target does not exist is refused,
/// naming both.
pub(super) fn resolve(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => {
                tracing::debug!(link = %path.display(), target = %target.display(), "store path is a link");
                Ok(target)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let target = std::fs::read_link(path).map_or_else(
                    |_| "an unreadable target".to_owned(),
                    |t| format!("{}", t.display()),
                );
                Err(open_error(
                    path,
                    format!("it is a symbolic link to {target}, which does not exist"),
                    HINT_DANGLING,
                ))
            }
            Err(e) => Err(io_error(path, "cannot follow its symbolic link", e)),
        },
        Ok(_) => Ok(path.to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path.to_owned()),
        Err(e) => Err(io_error(path, "cannot read its metadata", e)),
    }
}

pub(super) fn open_error(path: &Path, reason: impl Into<String>, hint: &'static str) -> Error {
    Error::Open {
        path: path.to_owned(),
        reason: reason.into(),
        hint,
        source: None,
    }
}

pub(super) fn io_error(path: &Path, what: &str, e: io::Error) -> Error {
    Error::Open {
        path: path.to_owned(),
        reason: format!("{what}: {e}"),
        hint: HINT_IO,
        source: Some(Box::new(e)),
    }
}

pub(super) fn database_error(path: &Path, e: DatabaseError) -> Error {
    let (reason, hint) = match &e {
        DatabaseError::DatabaseAlreadyOpen => ("the file is locked".to_owned(), HINT_LOCKED),
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == io::ErrorKind::InvalidData => {
            ("it is not a redb database".to_owned(), HINT_FOREIGN)
        }
        DatabaseError::Storage(StorageError::Io(io)) => (format!("I/O error: {io}"), HINT_IO),
        DatabaseError::Storage(StorageError::Corrupted(what)) => {
            (format!("the file is corrupt ({what})"), HINT_CORRUPT)
        }
        DatabaseError::UpgradeRequired(v) => (
            format!("redb file format {v} is not supported"),
            HINT_FOREIGN,
        ),
        other => (other.to_string(), HINT_CORRUPT),
    };
    Error::Open {
        path: path.to_owned(),
        reason,
        hint,
        source: Some(Box::new(e)),
    }
}

pub(super) fn storage<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> Error {
    move |e| Error::storage(context, e)
}

/// What the metadata of an open file says.
pub(super) enum Layout {
    /// Our tables, at a version we read.
    Ours,
    /// No tables at all: a new file, or one whose initialising commit never
    /// landed. Initialised on a writable open.
    Empty,
}

/// A file whose layout cannot be read: damage, named with its path.
pub(super) fn damaged(path: &Path, e: &dyn std::fmt::Display) -> Error {
    open_error(path, format!("it cannot be read ({e})"), HINT_CORRUPT)
}

/// A snapshot of a file being opened; a failure is damage, named with
/// its path.
pub(super) fn snapshot(
    path: &Path,
    txn: Result<ReadTransaction, redb::TransactionError>,
) -> Result<ReadTransaction> {
    txn.map_err(|e| damaged(path, &e))
}

/// Reads the layout of a file being opened. Every failure is an
/// [`Error::Open`] naming the path: a storage error here means damage.
pub(super) fn inspect_opening(path: &Path, txn: &ReadTransaction) -> Result<Layout> {
    inspect(path, txn).map_err(|e| match e {
        Error::Storage { .. } => damaged(path, &e),
        e => e,
    })
}

fn inspect(path: &Path, txn: &ReadTransaction) -> Result<Layout> {
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(storage("listing tables"))?
        .map(|t| t.name().to_owned())
        .collect();
    if !tables.iter().any(|t| t == META.name()) {
        if tables.is_empty() {
            return Ok(Layout::Empty);
        }
        return Err(open_error(
            path,
            format!(
                "it is a redb database of another application (tables: {})",
                tables.join(", ")
            ),
            HINT_FOREIGN,
        ));
    }
    let meta = txn.open_table(META).map_err(|e| {
        open_error(
            path,
            format!("its metadata table cannot be read: {e}"),
            HINT_CORRUPT,
        )
    })?;
    let get = |key: &str| -> Result<Option<String>> {
        Ok(meta
            .get(key)
            .map_err(storage("reading metadata"))?
            .map(|v| v.value().to_owned()))
    };
    if get("format")?.as_deref() != Some(FORMAT_NAME) {
        return Err(open_error(
            path,
            "its metadata does not name waggle-store",
            HINT_FOREIGN,
        ));
    }
    for (key, supported) in [
        ("format_version", FORMAT_VERSION),
        ("schema_version", record::SCHEMA_VERSION),
    ] {
        let found = get(key)?.and_then(|v| v.parse::<u32>().ok());
        match found {
            Some(v) if v <= supported => {}
            Some(v) => {
                return Err(open_error(
                    path,
                    format!("its {key} is {v}; this build reads up to {supported}"),
                    HINT_NEWER,
                ));
            }
            None => {
                return Err(open_error(
                    path,
                    format!("its {key} is missing or not a number"),
                    HINT_CORRUPT,
                ));
            }
        }
    }
    Ok(Layout::Ours)
}

/// Creates `dir` and missing parents with mode 0700, fsyncing each parent
/// whose entry was added.
pub(super) fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()?;
    super::io_log::dir_synced(parent);
    Ok(())
}

/// Makes an empty redb file a store: metadata and tables, one commit.
pub(super) fn initialise(db: &Database) -> Result<()> {
    let format_version = FORMAT_VERSION.to_string();
    let schema_version = record::SCHEMA_VERSION.to_string();
    // A new store gets its journal keys here, in the same commit, not in a
    // second one from `ensure_journal_meta`.
    let journal_id = new_journal_id().to_string();
    put_meta(
        db,
        "initialising the store",
        &[
            ("format", FORMAT_NAME),
            ("format_version", &format_version),
            ("schema_version", &schema_version),
            (JOURNAL_ID, &journal_id),
            (JOURNAL_NEXT, "1"),
            (JOURNAL_STATE, "closed"),
        ],
    )
}

/// Records that the journal is in use (`open`: both files exist, synced)
/// or was emptied and may be removed (`closed`), and that the file is at
/// [`FORMAT_VERSION`], in one durable commit.
pub(super) fn set_journal_state(db: &Database, open: bool) -> Result<()> {
    let version = FORMAT_VERSION.to_string();
    put_meta(
        db,
        "recording the journal's state",
        &[
            (JOURNAL_STATE, if open { "open" } else { "closed" }),
            ("format_version", &version),
        ],
    )
}

/// Writes `pairs` into the metadata table in one durable commit that also
/// makes sure the records table exists.
fn put_meta(db: &Database, context: &'static str, pairs: &[(&str, &str)]) -> Result<()> {
    let txn = db.begin_write().map_err(storage(context))?;
    {
        let mut meta = txn.open_table(META).map_err(storage(context))?;
        for (k, v) in pairs {
            meta.insert(*k, *v).map_err(storage(context))?;
        }
        txn.open_table(RECORDS).map_err(storage(context))?;
    }
    txn.commit().map_err(storage(context))
}

/// What the store says of its journal, if it has one (a version 1 file
/// has none until a writer opens it).
pub(super) fn journal_meta(txn: &ReadTransaction) -> Result<Option<Expect>> {
    let meta = txn.open_table(META).map_err(storage("opening metadata"))?;
    let get = |key: &str| -> Result<Option<u64>> {
        match meta.get(key).map_err(storage("reading metadata"))? {
            None => Ok(None),
            Some(v) => v
                .value()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| Error::Corrupt {
                    id: format!("(metadata {key})"),
                    reason: format!("{:?} is not a number", v.value()),
                }),
        }
    };
    let required = match meta
        .get(JOURNAL_STATE)
        .map_err(storage("reading metadata"))?
    {
        Some(v) => v.value() == "open",
        // Before format 3: nothing is known.
        None => false,
    };
    match (get(JOURNAL_ID)?, get(JOURNAL_NEXT)?) {
        (Some(id), Some(next)) => Ok(Some(Expect { id, next, required })),
        _ => Ok(None),
    }
}

/// The number the metadata holds under `key` (0 if missing).
fn meta_number(txn: &ReadTransaction, key: &str) -> Result<u64> {
    let meta = txn.open_table(META).map_err(storage("opening metadata"))?;
    match meta.get(key).map_err(storage("reading metadata"))? {
        None => Ok(0),
        Some(v) => v.value().parse::<u64>().map_err(|_| Error::Corrupt {
            id: format!("(metadata {key})"),
            reason: format!("{:?} is not a number", v.value()),
        }),
    }
}

/// The highest revision the file says was issued (0 before format 4).
pub(super) fn last_revision(txn: &ReadTransaction) -> Result<u64> {
    meta_number(txn, LAST_REVISION)
}

/// What the file says of its history: whether writers record it, and the
/// highest revision whose change may be missing.
pub(super) fn history_meta(txn: &ReadTransaction) -> Result<(bool, u64)> {
    let meta = txn.open_table(META).map_err(storage("opening metadata"))?;
    let on = meta
        .get(HISTORY_STATE)
        .map_err(storage("reading metadata"))?
        .is_some_and(|v| v.value() == "on");
    Ok((on, meta_number(txn, PRUNED_THROUGH)?))
}

/// Records whether writers record the history from now on. Turning it on
/// where it was off (or a file from before format 5) starts it after
/// `last`: changes up to it are missing, and a follower is told so.
pub(super) fn set_history(db: &Database, on: bool, last: u64) -> Result<()> {
    let txn = db.begin_read().map_err(storage("beginning a read"))?;
    let (was_on, pruned) = history_meta(&txn)?;
    let recorded = txn
        .open_table(META)
        .map_err(storage("opening metadata"))?
        .get(HISTORY_STATE)
        .map_err(storage("reading metadata"))?
        .is_some();
    drop(txn);
    if was_on == on && recorded {
        return Ok(());
    }
    let pruned = if on { pruned.max(last) } else { pruned };
    let pruned = pruned.to_string();
    put_meta(
        db,
        "recording the history's state",
        &[
            (HISTORY_STATE, if on { "on" } else { "off" }),
            (PRUNED_THROUGH, &pruned),
        ],
    )
}

/// Gives a version 1 store (which has no journal metadata) its journal id,
/// and returns what it says of its journal.
pub(super) fn ensure_journal_meta(db: &Database) -> Result<Expect> {
    let txn = db.begin_read().map_err(storage("beginning a read"))?;
    if let Some(found) = journal_meta(&txn)? {
        return Ok(found);
    }
    drop(txn);
    let id = new_journal_id();
    let (id_text, version) = (id.to_string(), FORMAT_VERSION.to_string());
    put_meta(
        db,
        "upgrading the store",
        &[
            (JOURNAL_ID, &id_text),
            (JOURNAL_NEXT, "1"),
            ("format_version", &version),
        ],
    )?;
    Ok(Expect {
        id,
        next: 1,
        required: false,
    })
}

/// A journal id unlikely to repeat: std's randomly keyed hasher over the
/// time and the process id.
fn new_journal_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
