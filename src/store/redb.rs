// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `RedbStore`: the persistent default. One redb file of JSON records,
//! durable on every acknowledged write, group-committed under concurrency.
//!
//! # How it works
//!
//! * **Layout.** Table `waggle_environments` maps id → JSON [record](crate::record::encode)
//!   bytes; table `waggle_meta` holds `format = "waggle-store"`,
//!   `format_version` and `schema_version`. A file whose metadata is newer
//!   than this build, or a redb file holding other tables and not ours, is
//!   refused before anything is written to it.
//! * **Writes** go to one writer thread. It takes every request waiting in
//!   its queue, applies them in order in one write transaction and commits
//!   once (fsync), then answers each caller. While it commits, new requests
//!   queue up and become the next batch: throughput grows with concurrency,
//!   with no timer. A request whose caller has gone away (its future was
//!   dropped) before the writer takes it is skipped; once taken it is
//!   applied — the *commit point*.
//! * **Reads** run on Tokio's blocking pool in their own MVCC read
//!   transaction: they see the last committed state and never wait for the
//!   writer. `count` reads the table length that redb keeps in the B-tree
//!   root, so it is O(1).
//! * **Processes.** The file is opened in redb's single-writer mode: one
//!   process writes, any number may [open it read-only](RedbStore::open_read_only)
//!   at the same time and see each commit as it lands.
//!
//! A `RedbStore` must be used from within a Tokio runtime (multi-thread or
//! current-thread); its reads use `spawn_blocking`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, StorageError, TableDefinition, TableHandle,
};
use tokio::sync::oneshot;

use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::record::{self, RecordError};
use crate::repository::Repository;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("waggle_environments");
const META: TableDefinition<&str, &str> = TableDefinition::new("waggle_meta");

/// The value of the `format` metadata key in every waggle store.
pub const FORMAT_NAME: &str = "waggle-store";
/// The table layout version this build writes and the newest it opens.
pub const FORMAT_VERSION: u32 = 1;
/// The most requests one write transaction applies.
const MAX_BATCH: usize = 4096;

const HINT_DIR: &str = "point the store path at a file, for example DIR/waggle.db";
const HINT_LOCKED: &str = "another process or handle has it open for writing: stop it (a running Waggle server?), or use the read-only commands";
const HINT_FOREIGN: &str =
    "this file was not written by waggle-store; check the path. The file was not modified";
const HINT_NEWER: &str =
    "it was written by a newer waggle-store: upgrade this one. The file was not modified";
const HINT_CORRUPT: &str =
    "restore it from a backup (waggle-store import) or move it aside to start empty";
const HINT_IO: &str = "check the path, its permissions and the disk";

/// What [`RedbStore::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// redb's page checksums and structure verified; `None` when the file
    /// is open for writing elsewhere and only the records were checked.
    pub integrity: Option<bool>,
    /// Records that decode.
    pub records_ok: usize,
    /// Records that do not, with the reason.
    pub corrupt: Vec<(String, String)>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.integrity != Some(false) && self.corrupt.is_empty()
    }
}

/// Counters of the write path since the store was opened, for observing
/// group commit: under concurrency `commits` grows slower than
/// `saves + deletes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Saves applied and committed.
    pub saves: u64,
    /// Deletes applied and committed (misses excluded).
    pub deletes: u64,
    /// Write transactions committed.
    pub commits: u64,
}

#[derive(Default)]
struct Counters {
    saves: AtomicU64,
    deletes: AtomicU64,
    commits: AtomicU64,
}

enum Handle {
    Write(Database),
    Read(ReadOnlyDatabase),
}

impl Handle {
    fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        match self {
            Handle::Write(db) => db.begin_read(),
            Handle::Read(db) => db.begin_read(),
        }
    }
}

enum Op {
    Save { id: String, bytes: Vec<u8> },
    Delete { id: String },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<()>>,
}

/// A [`Repository`] in one redb file: see the [module docs](self).
///
/// ```
/// use waggle_store::{Environment, RedbStore, Repository, Runtime};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("waggle.db");
/// let store = RedbStore::open(&path)?;
/// store.save(&Environment::new("env-1", "scratch", Runtime::Shell)).await?;
/// store.close()?;
///
/// let reopened = RedbStore::open(&path)?;
/// assert_eq!(reopened.count().await?, 1);
/// # Ok::<(), waggle_store::Error>(())
/// # }).unwrap();
/// ```
pub struct RedbStore {
    path: PathBuf,
    /// `None` once closed.
    db: Option<Arc<Handle>>,
    writer: Option<(mpsc::Sender<Request>, JoinHandle<()>)>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("read_only", &self.writer.is_none())
            .field("stats", &self.stats())
            .finish()
    }
}

fn open_error(path: &Path, reason: impl Into<String>, hint: &'static str) -> Error {
    Error::Open {
        path: path.to_owned(),
        reason: reason.into(),
        hint,
        source: None,
    }
}

fn io_error(path: &Path, what: &str, e: io::Error) -> Error {
    Error::Open {
        path: path.to_owned(),
        reason: format!("{what}: {e}"),
        hint: HINT_IO,
        source: Some(Box::new(e)),
    }
}

fn database_error(path: &Path, e: DatabaseError) -> Error {
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

fn storage<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> Error {
    move |e| Error::storage(context, e)
}

/// What the metadata of an open file says.
enum Layout {
    /// Our tables, at a version we read.
    Ours,
    /// No tables at all: a new file, or one whose initialising commit never
    /// landed. Initialised on a writable open.
    Empty,
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

fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    b
}

/// Creates `dir` and missing parents with mode 0700, fsyncing each parent
/// whose entry was added.
fn create_dirs(dir: &Path) -> io::Result<()> {
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

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

impl RedbStore {
    /// Opens the store at `path` for reading and writing, creating it (mode
    /// 0600, missing directories 0700) if it does not exist. A zero-length
    /// file is initialised as a new store.
    ///
    /// Refuses, with [`Error::Open`] naming the path and what to do, and
    /// without modifying the file: a directory; a file another process or
    /// handle has open for writing; a file that is not a redb database; a
    /// redb database of another application; a store written by a newer
    /// waggle-store; a corrupt file. A file left by a crash (`kill -9`) is
    /// recovered by redb and opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let started = Instant::now();
        let meta = match fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(path, "cannot read its metadata", e)),
        };
        let damaged = |e: &dyn std::fmt::Display| {
            open_error(path, format!("it cannot be read ({e})"), HINT_CORRUPT)
        };
        let check = |txn: &ReadTransaction| {
            inspect(path, txn).map_err(|e| match e {
                Error::Storage { .. } => damaged(&e),
                e => e,
            })
        };
        let db = match meta {
            Some(m) if m.is_dir() => return Err(open_error(path, "it is a directory", HINT_DIR)),
            Some(m) if m.len() == 0 => builder()
                .create(path)
                .map_err(|e| database_error(path, e))?,
            Some(_) => {
                // Look before writing anything: a read-only open changes nothing.
                match builder().open_read_only(path) {
                    Ok(ro) => {
                        let txn = ro.begin_read().map_err(|e| damaged(&e))?;
                        check(&txn)?;
                        drop(txn);
                        ro.close().map_err(|e| database_error(path, e))?;
                    }
                    // Left by a crash: redb must repair it, which needs a writable open.
                    Err(DatabaseError::RepairAborted) => {}
                    Err(e) => return Err(database_error(path, e)),
                }
                builder().open(path).map_err(|e| database_error(path, e))?
            }
            None => {
                if let Some(parent) = path.parent() {
                    create_dirs(parent)
                        .map_err(|e| io_error(path, "cannot create its directory", e))?;
                }
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| io_error(path, "cannot create it", e))?;
                sync_parent(path).map_err(|e| io_error(path, "cannot sync its directory", e))?;
                builder()
                    .create(path)
                    .map_err(|e| database_error(path, e))?
            }
        };
        let layout = {
            let txn = db.begin_read().map_err(|e| damaged(&e))?;
            check(&txn)?
        };
        if let Layout::Empty = layout {
            initialise(&db).map_err(|e| damaged(&e))?;
        }
        let db = Arc::new(Handle::Write(db));
        let counters = Arc::<Counters>::default();
        let (tx, rx) = mpsc::channel();
        let thread = {
            let db = Arc::clone(&db);
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("waggle-redb-writer".into())
                .spawn(move || {
                    if let Handle::Write(db) = &*db {
                        write_loop(db, &rx, &counters);
                    }
                })
                .map_err(storage("starting the writer thread"))?
        };
        tracing::info!(path = %path.display(), elapsed = ?started.elapsed(), "opened redb store");
        Ok(Self {
            path: path.to_owned(),
            db: Some(db),
            writer: Some((tx, thread)),
            counters,
        })
    }

    /// Opens an existing store read-only, beside a process that may be
    /// writing it. Every read sees the last state committed when it began.
    /// `save` and `delete` return [`Error::ReadOnly`].
    ///
    /// Fails like [`open`](Self::open), and also when the file does not
    /// exist or was left by a crash and not yet recovered by a writer.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Err(open_error(path, "it is a directory", HINT_DIR));
        }
        let ro = builder().open_read_only(path).map_err(|e| match e {
            DatabaseError::Storage(StorageError::Io(io))
                if io.kind() == io::ErrorKind::NotFound =>
            {
                open_error(path, "it does not exist", HINT_IO)
            }
            DatabaseError::RepairAborted => open_error(
                path,
                "it was not closed cleanly and needs recovery",
                "open it once for writing (any write command, or start the server) to recover it",
            ),
            e => database_error(path, e),
        })?;
        {
            let txn = ro.begin_read().map_err(storage("beginning a read"))?;
            if let Layout::Empty = inspect(path, &txn)? {
                return Err(open_error(
                    path,
                    "it is an empty redb database, not a waggle store",
                    HINT_FOREIGN,
                ));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            db: Some(Arc::new(Handle::Read(ro))),
            writer: None,
            counters: Arc::default(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write-path counters since open.
    pub fn stats(&self) -> Stats {
        Stats {
            saves: self.counters.saves.load(Ordering::Relaxed),
            deletes: self.counters.deletes.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
        }
    }

    /// Closes the store: waits for the writer to finish what it has taken,
    /// then closes the file cleanly so the next open needs no recovery.
    /// Dropping the store does the same but cannot report errors.
    ///
    /// This blocks the calling thread for at most one commit.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some((tx, thread)) = self.writer.take() {
            drop(tx);
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "the writer thread panicked");
            }
        }
        // Reads already handed to the blocking pool finish in microseconds;
        // wait for them so the file is closed when this returns.
        let Some(db) = self.db.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&db) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        match Arc::try_unwrap(db) {
            Ok(Handle::Write(db)) => db.close().map_err(|e| database_error(&self.path, e)),
            Ok(Handle::Read(db)) => db.close().map_err(|e| database_error(&self.path, e)),
            Err(_) => Ok(()), // still referenced: closed when the last read ends
        }
    }

    /// Checks the store at `path`: redb's integrity check (page checksums
    /// and tree structure), then a decode of every record. When another
    /// process has the file open for writing, only the records are checked
    /// (on a read-only handle) and `integrity` is `None`.
    ///
    /// Blocking: call it from a blocking context.
    pub fn check(path: impl AsRef<Path>) -> Result<CheckReport> {
        let path = path.as_ref();
        let mut report = CheckReport::default();
        let exclusive = Self::open(path).and_then(Self::into_database);
        let handle = match exclusive {
            Ok(mut db) => {
                report.integrity = Some(db.check_integrity().map_err(|e| database_error(path, e))?);
                Handle::Write(db)
            }
            Err(Error::Open { reason, .. }) if reason.contains("locked") => {
                let ro = Self::open_read_only(path)?;
                let Some(db) = ro.db.clone() else {
                    return Err(Error::Closed);
                };
                drop(ro);
                Arc::try_unwrap(db).map_err(|_| Error::Closed)?
            }
            Err(e) => return Err(e),
        };
        let txn = handle.begin_read().map_err(storage("beginning a read"))?;
        let table = open_records(&txn)?;
        for entry in table.iter().map_err(storage("reading"))? {
            let (id, bytes) = entry.map_err(storage("reading"))?;
            match decode(id.value(), bytes.value()) {
                Ok(_) => report.records_ok += 1,
                Err(e) => report.corrupt.push((id.value().to_owned(), e.to_string())),
            }
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
        let mut db = Self::open(path)?.into_database()?;
        let before = size()?;
        while db.compact().map_err(storage("compacting"))? {}
        db.close().map_err(|e| database_error(path, e))?;
        Ok((before, size()?))
    }

    /// Stops the writer and returns the exclusive database handle.
    fn into_database(mut self) -> Result<Database> {
        if let Some((tx, thread)) = self.writer.take() {
            drop(tx);
            let _ = thread.join();
        }
        let db = self.db.take().ok_or(Error::Closed)?;
        match Arc::try_unwrap(db) {
            Ok(Handle::Write(db)) => Ok(db),
            _ => Err(Error::ReadOnly {
                path: self.path.clone(),
            }),
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(self.db.as_ref().ok_or(Error::Closed)?);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage("beginning a read"))?;
            f(&txn)
        })
        .await
        .map_err(storage("running a read"))?
    }

    async fn write(&self, op: Op) -> Result<()> {
        let Some((tx, _)) = &self.writer else {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        };
        let (reply, answer) = oneshot::channel();
        tx.send(Request { op, reply }).map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(path = %self.path.display(), error = %e, "closing the redb store failed");
        }
    }
}

fn initialise(db: &Database) -> Result<()> {
    let txn = db
        .begin_write()
        .map_err(storage("initialising the store"))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(storage("initialising the store"))?;
        let format_version = FORMAT_VERSION.to_string();
        let schema_version = record::SCHEMA_VERSION.to_string();
        for (k, v) in [
            ("format", FORMAT_NAME),
            ("format_version", format_version.as_str()),
            ("schema_version", schema_version.as_str()),
        ] {
            meta.insert(k, v)
                .map_err(storage("initialising the store"))?;
        }
        txn.open_table(RECORDS)
            .map_err(storage("initialising the store"))?;
    }
    txn.commit().map_err(storage("initialising the store"))
}

/// The writer thread: batch, apply, commit once, answer.
fn write_loop(db: &Database, rx: &mpsc::Receiver<Request>, counters: &Counters) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // The commit point: requests whose callers are gone are not applied.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // redb can panic on a damaged file; contain it to this batch.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(db, &batch)))
            .unwrap_or_else(|_| {
                Err(Error::storage(
                    "writing",
                    "the storage engine panicked; run `waggle-store check`",
                ))
            });
        let (results, saves, deletes) = match applied {
            Ok(applied) => applied,
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, ops = batch.len(), "write batch failed");
                let results = batch
                    .iter()
                    .map(|_| Err(Error::storage("committing", message.clone())))
                    .collect();
                (results, 0, 0)
            }
        };
        if saves + deletes > 0 {
            counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        counters.saves.fetch_add(saves, Ordering::Relaxed);
        counters.deletes.fetch_add(deletes, Ordering::Relaxed);
        tracing::trace!(ops = batch.len(), "committed a batch");
        for (request, result) in batch.into_iter().zip(results) {
            let _ = request.reply.send(result); // the caller may have gone since
        }
    }
}

type Applied = (Vec<Result<()>>, u64, u64);

fn apply(db: &Database, batch: &[Request]) -> Result<Applied> {
    let txn = db.begin_write().map_err(storage("beginning a write"))?;
    let mut results = Vec::with_capacity(batch.len());
    let (mut saves, mut deletes) = (0, 0);
    {
        let mut table = txn
            .open_table(RECORDS)
            .map_err(storage("opening the table"))?;
        for request in batch {
            results.push(match &request.op {
                Op::Save { id, bytes } => {
                    table
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(storage("saving"))?;
                    saves += 1;
                    Ok(())
                }
                Op::Delete { id } => {
                    if table
                        .remove(id.as_str())
                        .map_err(storage("deleting"))?
                        .is_some()
                    {
                        deletes += 1;
                        Ok(())
                    } else {
                        Err(Error::not_found(id))
                    }
                }
            });
        }
    }
    if saves + deletes == 0 {
        txn.abort().map_err(storage("aborting an empty write"))?;
    } else {
        txn.commit().map_err(storage("committing"))?;
    }
    Ok((results, saves, deletes))
}

fn decode(id: &str, bytes: &[u8]) -> Result<Environment> {
    let env = record::decode(bytes).map_err(|e| match e {
        RecordError::UnsupportedSchema { found, supported } => Error::UnsupportedSchema {
            id: id.to_owned(),
            found,
            supported,
        },
        other => Error::Corrupt {
            id: id.to_owned(),
            reason: other.to_string(),
        },
    })?;
    if env.id != id {
        return Err(Error::Corrupt {
            id: id.to_owned(),
            reason: format!("the record holds id {:?}", env.id),
        });
    }
    Ok(env)
}

fn open_records(txn: &ReadTransaction) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>> {
    txn.open_table(RECORDS)
        .map_err(storage("opening the table"))
}

#[async_trait]
impl Repository for RedbStore {
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before the writer takes it, nothing is stored;
    /// after, it is committed whole.
    async fn save(&self, env: &Environment) -> Result<()> {
        env.validate()?;
        let bytes = record::encode(env);
        self.write(Op::Save {
            id: env.id.clone(),
            bytes,
        })
        .await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        let id = id.to_owned();
        self.read(move |txn| {
            let table = open_records(txn)?;
            match table.get(id.as_str()).map_err(storage("reading"))? {
                Some(bytes) => decode(&id, bytes.value()),
                None => Err(Error::NotFound { id }),
            }
        })
        .await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        self.read(|txn| {
            let table = open_records(txn)?;
            let mut all =
                Vec::with_capacity(usize::try_from(table.len().unwrap_or(0)).unwrap_or(0));
            for entry in table.iter().map_err(storage("reading"))? {
                let (id, bytes) = entry.map_err(storage("reading"))?;
                all.push(decode(id.value(), bytes.value())?);
            }
            Ok(all)
        })
        .await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: dropped before the writer takes it, nothing is removed;
    /// after, the removal is committed.
    async fn delete(&self, id: &str) -> Result<()> {
        self.write(Op::Delete { id: id.to_owned() }).await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        self.read(|txn| {
            let n = open_records(txn)?.len().map_err(storage("counting"))?;
            usize::try_from(n).map_err(storage("counting"))
        })
        .await
    }
}
