// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `RedbStore`: the persistent default. One redb file of JSON records,
//! durable on every acknowledged write, group-committed under concurrency.
//!
//! # How it works
//!
//! * **Layout** ([`file`](self)). Table `waggle_environments` maps id → JSON
//!   [record](crate::record::encode); table `waggle_meta` holds
//!   `format = "waggle-store"`, `format_version` and `schema_version`. A
//!   file whose metadata is newer than this build, or a redb file holding
//!   other tables and not ours, is refused before anything is written to it.
//! * **Writes** go to one writer thread. It takes every request waiting in
//!   its queue, applies them in order in one write transaction and commits
//!   once (fsync), then answers each caller. While it commits, new requests
//!   queue up and become the next batch: throughput grows with concurrency,
//!   with no timer. A request whose caller has gone away (its future was
//!   dropped) before the writer takes it is skipped; once taken it is
//!   applied — the *commit point*.
//! * **Reads** of an id in the decoded-record cache are answered from
//!   memory. Others run on Tokio's blocking pool in their own MVCC read
//!   transaction: they see the last committed state and never wait for the
//!   writer. `count` reads the entry count redb keeps in the B-tree root,
//!   so it is O(1).
//! * **Processes.** By default the file is opened in redb's single-writer
//!   mode: one process writes, any number may
//!   [open it read-only](RedbStore::open_read_only) at the same time and see
//!   each commit as it lands. [`RedbOptions::live_readers`] turns that off
//!   for a cheaper commit (one fsync instead of two).
//!
//! A `RedbStore` must be used from within a Tokio runtime (multi-thread or
//! current-thread); its reads use `spawn_blocking`.

mod cache;
mod file;
mod maintenance;
mod writer;

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, StorageError,
};
use tokio::sync::oneshot;

use self::cache::Cache;
use self::file::{
    HINT_DIR, HINT_FOREIGN, HINT_IO, Layout, RECORDS, create_dirs, damaged, database_error,
    initialise, inspect_opening, io_error, open_error, storage, sync_parent,
};
use self::writer::{Counters, Op, Request, write_loop};
use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::record::{self, RecordError};
use crate::repository::Repository;

pub use self::file::{FORMAT_NAME, FORMAT_VERSION};
pub use self::maintenance::CheckReport;

/// How to open a [`RedbStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedbOptions {
    /// Let other processes open the file read-only while this one writes
    /// (redb's single-writer mode; each commit then takes two fsyncs).
    /// When `false`, the file is locked exclusively and a commit takes one.
    /// Default `true`.
    pub live_readers: bool,
    /// How many decoded records to keep in memory for `find_by_id`
    /// (about half a kilobyte each). `0` disables the cache. Default 100,000.
    pub cache_entries: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            live_readers: true,
            cache_entries: 100_000,
        }
    }
}

impl RedbOptions {
    fn builder(&self) -> redb::Builder {
        let mut b = Database::builder();
        b.set_concurrency_mode(if self.live_readers {
            ConcurrencyMode::SingleWriter
        } else {
            ConcurrencyMode::ExclusiveWriter
        });
        b
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
    cache: Arc<Cache>,
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
        Self::open_with(path, RedbOptions::default())
    }

    /// Like [`open`](Self::open), with explicit [`RedbOptions`].
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self> {
        let path = path.as_ref();
        let started = Instant::now();
        let meta = match fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(path, "cannot read its metadata", e)),
        };
        let db = match meta {
            Some(m) if m.is_dir() => return Err(open_error(path, "it is a directory", HINT_DIR)),
            Some(m) if !m.is_file() => return Err(not_regular(path)),
            Some(m) if m.len() == 0 => options
                .builder()
                .create(path)
                .map_err(|e| database_error(path, e))?,
            Some(_) => {
                // Look before writing anything: a read-only open changes nothing.
                match options.builder().open_read_only(path) {
                    Ok(ro) => {
                        inspect_opening(path, ro.begin_read())?;
                        ro.close().map_err(|e| database_error(path, e))?;
                    }
                    // Left by a crash: redb must repair it, which needs a writable open.
                    Err(DatabaseError::RepairAborted) => {}
                    Err(e) => return Err(database_error(path, e)),
                }
                options
                    .builder()
                    .open(path)
                    .map_err(|e| database_error(path, e))?
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
                options
                    .builder()
                    .create(path)
                    .map_err(|e| database_error(path, e))?
            }
        };
        if let Layout::Empty = inspect_opening(path, db.begin_read())? {
            initialise(&db).map_err(|e| damaged(path, &e))?;
        }
        let db = Arc::new(Handle::Write(db));
        let counters = Arc::<Counters>::default();
        let cache = Arc::new(Cache::new(options.cache_entries));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let db = Arc::clone(&db);
            let counters = Arc::clone(&counters);
            let cache = Arc::clone(&cache);
            std::thread::Builder::new()
                .name("waggle-redb-writer".into())
                .spawn(move || {
                    if let Handle::Write(db) = &*db {
                        write_loop(db, &rx, &counters, &cache);
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
            cache,
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
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(open_error(path, "it is a directory", HINT_DIR)),
            Ok(m) if !m.is_file() => return Err(not_regular(path)),
            _ => {}
        }
        let ro = RedbOptions::default().builder().open_read_only(path).map_err(|e| match e {
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
        if let Layout::Empty = inspect_opening(path, ro.begin_read())? {
            return Err(open_error(
                path,
                "it is an empty redb database, not a waggle store",
                HINT_FOREIGN,
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            db: Some(Arc::new(Handle::Read(ro))),
            writer: None,
            counters: Arc::default(),
            // Another process writes: a cache here would not see its commits.
            cache: Arc::new(Cache::new(0)),
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
    /// Both block the calling thread until the writer's last commit and the
    /// close are done (one commit at most; well under a millisecond when
    /// idle). That is what makes the file free for the next open the
    /// moment they return. In async code at shutdown that is usually fine;
    /// to keep a worker thread free, run it with
    /// `tokio::task::spawn_blocking(move || store.close())`.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Lets the writer finish what it has taken, and waits for it.
    fn stop_writer(&mut self) {
        if let Some((tx, thread)) = self.writer.take() {
            drop(tx);
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "the writer thread panicked");
            }
        }
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop_writer();
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

/// A FIFO, socket or device: reading it could block forever or mean nothing.
fn not_regular(path: &Path) -> Error {
    open_error(
        path,
        "it is not a regular file (a FIFO, socket or device)",
        HINT_DIR,
    )
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(path = %self.path.display(), error = %e, "closing the redb store failed");
        }
    }
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
        let bytes = record::encode(env).map_err(|e| Error::storage("encoding the record", e))?;
        self.write(Op::Save {
            env: Box::new(env.clone()),
            bytes,
        })
        .await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only. (A value read from the file is cached only
    /// if the future completes.)
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        let generation = match self.cache.get(id) {
            Ok(env) => return Ok(env),
            Err(generation) => generation,
        };
        let key = id.to_owned();
        let env = self
            .read(move |txn| {
                let table = open_records(txn)?;
                match table.get(key.as_str()).map_err(storage("reading"))? {
                    Some(bytes) => decode(&key, bytes.value()),
                    None => Err(Error::NotFound { id: key }),
                }
            })
            .await?;
        self.cache.fill(generation, &env);
        Ok(env)
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
