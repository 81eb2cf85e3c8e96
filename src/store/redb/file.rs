// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The store file: how a path becomes an open redb database, what makes a
//! file ours, and the errors that say what to do when it is not.

use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition, TableHandle, WriteTransaction,
};

use super::contain::quietly;
use super::journal::Expect;
use crate::error::{Error, Result};
use crate::record;

/// The records (format 6): id (its UTF-8 bytes) → value. Keys are bytes,
/// not `&str`, so that a damaged key is read as bytes and reported as
/// [`Error::Corrupt`] by [`key_id`]: redb unwraps the UTF-8 of a `&str`
/// it reads, so a flipped bit there was a panic.
pub(super) const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("waggle_records");
/// The records table, opened for reading.
pub(super) type RecordsTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
/// The metadata (format 6): key → value, both ASCII text kept as bytes
/// ([`RECORDS`] says why); read through [`meta_text`].
pub(super) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("waggle_metadata");
/// The metadata before format 6. A newer file keeps it with only
/// `format`, `format_version` and `schema_version`, so that an older
/// build still refuses the file as newer; this build reads it only to
/// upgrade an older file ([`upgrade_layout`]).
pub(super) const LEGACY_META: TableDefinition<&str, &str> = TableDefinition::new("waggle_meta");
/// The records before format 6, keyed by `&str`.
pub(super) const LEGACY_RECORDS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("waggle_environments");
/// The history (format 5): the first revision of a block of changes → the
/// block ([`history`](super::history)).
pub(super) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("waggle_changes");
/// Each id's revisions, one entry per checkpoint that wrote it
/// ([`history`](super::history)).
pub(super) const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("waggle_history");

/// The metadata keys an older build reads to decide whether it opens a
/// file: kept in [`LEGACY_META`] too.
const IDENTITY: [&str; 3] = ["format", "format_version", "schema_version"];
/// The first format whose tables are keyed by bytes.
const BYTES_LAYOUT: u32 = 6;

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
/// Version 6 keys the records and the metadata by bytes (tables
/// `waggle_records` and `waggle_metadata`), so that a damaged key is
/// reported, not a panic; `waggle_meta` keeps only what tells an older
/// build to refuse the file. An older file is upgraded by its first
/// writable open, in one commit.
pub const FORMAT_VERSION: u32 = 6;

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
    /// Our tables as a build before format 6 wrote them (keyed by `&str`):
    /// upgraded by a writable open ([`upgrade_layout`]), refused by a
    /// read-only one.
    Legacy,
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
        Error::Storage { .. } | Error::Corrupt { .. } => damaged(path, &e),
        e => e,
    })
}

fn inspect(path: &Path, txn: &ReadTransaction) -> Result<Layout> {
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(storage("listing tables"))?
        .map(|t| t.name().to_owned())
        .collect();
    let has = |name: &str| tables.iter().any(|t| t == name);
    let unreadable = |e: redb::TableError| {
        open_error(
            path,
            format!("its metadata table cannot be read: {e}"),
            HINT_CORRUPT,
        )
    };
    if has(META.name()) {
        let meta = txn.open_table(META).map_err(unreadable)?;
        let version = identity(path, |key| meta_text(&meta, key))?;
        if version < BYTES_LAYOUT {
            return Err(open_error(
                path,
                format!(
                    "its format_version is {version}, but it has the tables of format {BYTES_LAYOUT}"
                ),
                HINT_CORRUPT,
            ));
        }
        // Every store has it from its first commit on. Missing, it is
        // damage (a table's name or entry in redb's table of tables, a
        // page nobody checked): a write would make it anew, empty.
        if !has(RECORDS.name()) {
            return Err(open_error(
                path,
                format!("its table {} is missing", RECORDS.name()),
                HINT_CORRUPT,
            ));
        }
        return Ok(Layout::Ours);
    }
    if has(LEGACY_META.name()) {
        let meta = txn.open_table(LEGACY_META).map_err(unreadable)?;
        let version = identity(path, |key| legacy_text(&meta, key))?;
        if version >= BYTES_LAYOUT {
            return Err(open_error(
                path,
                format!(
                    "its format_version is {version}, but its table {} is missing",
                    META.name()
                ),
                HINT_CORRUPT,
            ));
        }
        return Ok(Layout::Legacy);
    }
    if tables.is_empty() {
        return Ok(Layout::Empty);
    }
    Err(open_error(
        path,
        format!(
            "it is a redb database of another application (tables: {})",
            tables.join(", ")
        ),
        HINT_FOREIGN,
    ))
}

/// Whether the metadata `get` reads names a waggle store this build
/// reads; its format version if so.
fn identity(path: &Path, get: impl Fn(&str) -> Result<Option<String>>) -> Result<u32> {
    if get("format")?.as_deref() != Some(FORMAT_NAME) {
        return Err(open_error(
            path,
            "its metadata does not name waggle-store",
            HINT_FOREIGN,
        ));
    }
    let mut format = 0;
    for (key, supported) in [
        ("format_version", FORMAT_VERSION),
        ("schema_version", record::SCHEMA_VERSION),
    ] {
        let found = get(key)?.and_then(|v| v.parse::<u32>().ok());
        match found {
            Some(v) if v <= supported => {
                if key == "format_version" {
                    format = v;
                }
            }
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
    Ok(format)
}

/// A record's key as the id it is. Damage that left bytes which are not
/// UTF-8 is [`Error::Corrupt`], naming the key as best it can be shown.
pub(super) fn key_id(key: &[u8]) -> Result<&str> {
    std::str::from_utf8(key).map_err(|_| Error::Corrupt {
        id: String::from_utf8_lossy(key).into_owned(),
        reason: format!(
            "its key is damaged: the bytes {} are not UTF-8",
            key.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    })
}

/// The metadata value under `key`, as text; damage is
/// [`Error::Corrupt`].
pub(super) fn meta_text<T>(meta: &T, key: &str) -> Result<Option<String>>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let Some(value) = meta
        .get(key.as_bytes())
        .map_err(storage("reading metadata"))?
    else {
        return Ok(None);
    };
    match std::str::from_utf8(value.value()) {
        Ok(text) => Ok(Some(text.to_owned())),
        Err(_) => Err(Error::Corrupt {
            id: format!("(metadata {key})"),
            reason: "its value is damaged: not UTF-8".to_owned(),
        }),
    }
}

/// The number the metadata holds under `key` (0 if missing); damage is
/// [`Error::Corrupt`].
pub(super) fn meta_number_in<T>(meta: &T, key: &str) -> Result<u64>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    match meta_text(meta, key)? {
        None => Ok(0),
        Some(v) => v.parse::<u64>().map_err(|_| Error::Corrupt {
            id: format!("(metadata {key})"),
            reason: format!("{v:?} is not a number"),
        }),
    }
}

/// A value of the metadata before format 6, whose `&str` redb decodes
/// with a panic when damage left bytes that are not UTF-8: the panic is
/// caught [`quietly`] and is [`Error::Corrupt`].
fn legacy_text<T>(meta: &T, key: &str) -> Result<Option<String>>
where
    T: ReadableTable<&'static str, &'static str>,
{
    let Some(value) = meta.get(key).map_err(storage("reading metadata"))? else {
        return Ok(None);
    };
    quietly(|| value.value().to_owned())
        .map(Some)
        .map_err(|_| Error::Corrupt {
            id: format!("(metadata {key})"),
            reason: "its value is damaged: not UTF-8".to_owned(),
        })
}

/// Moves a file written before format 6 to the byte-keyed tables, in one
/// commit: every record and metadata entry as it was, `waggle_meta` left
/// with only what tells an older build to refuse the file. A key or
/// value that is not UTF-8 (damage) is [`Error::Corrupt`] and nothing is
/// written: the file stays as it was, for a backup or the older build.
pub(super) fn upgrade_layout(db: &Database) -> Result<()> {
    let context = "upgrading the store's tables to format 6";
    let txn = db.begin_write().map_err(storage(context))?;
    {
        let legacy = txn.open_table(LEGACY_META).map_err(storage(context))?;
        let mut meta = txn.open_table(META).map_err(storage(context))?;
        for entry in legacy.iter().map_err(storage(context))? {
            let (key, value) = entry.map_err(storage(context))?;
            let (key, value) = quietly(|| (key.value().to_owned(), value.value().to_owned()))
                .map_err(|_| Error::Corrupt {
                    id: "(metadata)".to_owned(),
                    reason: "a key or value is damaged: not UTF-8".to_owned(),
                })?;
            meta.insert(key.as_bytes(), value.as_bytes())
                .map_err(storage(context))?;
        }
        let old = txn.open_table(LEGACY_RECORDS).map_err(storage(context))?;
        let mut records = txn.open_table(RECORDS).map_err(storage(context))?;
        let mut after: Option<String> = None;
        for entry in old.iter().map_err(storage(context))? {
            let (key, value) = entry.map_err(storage(context))?;
            let Ok(id) = quietly(|| key.value().to_owned()) else {
                return Err(Error::Corrupt {
                    id: after.map_or_else(
                        || "(the first record)".to_owned(),
                        |a| format!("(the record after {a:?})"),
                    ),
                    reason: "its key is damaged (not UTF-8) in a file written before format 6, which cannot be upgraded: restore it from a backup, or export it with the build that wrote it".to_owned(),
                });
            };
            records
                .insert(id.as_bytes(), value.value())
                .map_err(storage(context))?;
            after = Some(id);
        }
    }
    txn.delete_table(LEGACY_RECORDS).map_err(storage(context))?;
    let version = FORMAT_VERSION.to_string();
    {
        let mut meta = txn.open_table(META).map_err(storage(context))?;
        meta.insert("format_version".as_bytes(), version.as_bytes())
            .map_err(storage(context))?;
    }
    mirror_identity(&txn, context)?;
    txn.commit().map_err(storage(context))?;
    tracing::info!("upgraded the store's tables to format {FORMAT_VERSION}");
    Ok(())
}

/// Rewrites [`LEGACY_META`] to hold only the [`IDENTITY`] keys, copied
/// from [`META`]: what an older build reads to refuse the file.
fn mirror_identity(txn: &WriteTransaction, context: &'static str) -> Result<()> {
    let meta = txn.open_table(META).map_err(storage(context))?;
    let values = IDENTITY
        .iter()
        .map(|key| Ok((*key, meta_text(&meta, key)?)))
        .collect::<Result<Vec<_>>>()?;
    drop(meta);
    txn.delete_table(LEGACY_META).map_err(storage(context))?;
    let mut legacy = txn.open_table(LEGACY_META).map_err(storage(context))?;
    for (key, value) in values {
        if let Some(value) = value {
            legacy
                .insert(key, value.as_str())
                .map_err(storage(context))?;
        }
    }
    Ok(())
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
/// Whether writers record the history is in that commit too, so a
/// read-only handle never sees a new store without it (and a watcher
/// beside the first writer is never told the history is off).
pub(super) fn initialise(db: &Database, history: bool) -> Result<()> {
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
            (HISTORY_STATE, if history { "on" } else { "off" }),
            (PRUNED_THROUGH, "0"),
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
/// makes sure the records table exists, and keeps what an older build
/// reads in [`LEGACY_META`].
fn put_meta(db: &Database, context: &'static str, pairs: &[(&str, &str)]) -> Result<()> {
    let txn = db.begin_write().map_err(storage(context))?;
    {
        let mut meta = txn.open_table(META).map_err(storage(context))?;
        for (k, v) in pairs {
            meta.insert(k.as_bytes(), v.as_bytes())
                .map_err(storage(context))?;
        }
        txn.open_table(RECORDS).map_err(storage(context))?;
    }
    if pairs.iter().any(|(k, _)| IDENTITY.contains(k)) {
        mirror_identity(&txn, context)?;
    }
    txn.commit().map_err(storage(context))
}

/// What the store says of its journal, if it has one (a version 1 file
/// has none until a writer opens it).
pub(super) fn journal_meta(txn: &ReadTransaction) -> Result<Option<Expect>> {
    let meta = txn.open_table(META).map_err(storage("opening metadata"))?;
    let get = |key: &str| -> Result<Option<u64>> {
        match meta_text(&meta, key)? {
            None => Ok(None),
            Some(_) => meta_number_in(&meta, key).map(Some),
        }
    };
    // Before format 3: nothing is known.
    let required = meta_text(&meta, JOURNAL_STATE)?.as_deref() == Some("open");
    match (get(JOURNAL_ID)?, get(JOURNAL_NEXT)?) {
        (Some(id), Some(next)) => Ok(Some(Expect { id, next, required })),
        _ => Ok(None),
    }
}

/// The number the metadata holds under `key` (0 if missing).
fn meta_number(txn: &ReadTransaction, key: &str) -> Result<u64> {
    let meta = txn.open_table(META).map_err(storage("opening metadata"))?;
    meta_number_in(&meta, key)
}

/// The highest revision the file says was issued (0 before format 4).
pub(super) fn last_revision(txn: &ReadTransaction) -> Result<u64> {
    meta_number(txn, LAST_REVISION)
}

/// What the file says of its history: whether writers record it, and the
/// highest revision whose change may be missing.
pub(super) fn history_meta(txn: &ReadTransaction) -> Result<(bool, u64)> {
    let meta = txn.open_table(META).map_err(storage("opening metadata"))?;
    let on = meta_text(&meta, HISTORY_STATE)?.as_deref() == Some("on");
    Ok((on, meta_number_in(&meta, PRUNED_THROUGH)?))
}

/// Records whether writers record the history from now on. Turning it on
/// where it was off (or a file from before format 5) starts it after
/// `last`: changes up to it are missing, and a follower is told so.
pub(super) fn set_history(db: &Database, on: bool, last: u64) -> Result<()> {
    let txn = db.begin_read().map_err(storage("beginning a read"))?;
    let (was_on, pruned) = history_meta(&txn)?;
    let recorded = {
        let meta = txn.open_table(META).map_err(storage("opening metadata"))?;
        meta_text(&meta, HISTORY_STATE)?.is_some()
    };
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
