// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `RedbStore`: the persistent default. One redb file of JSON records
//! (plus a write-ahead journal beside it while open), durable on every
//! acknowledged write, group-committed under concurrency.
//!
//! # How it works
//!
//! * **Layout** ([`file`](self)). Table `waggle_records` maps id (its bytes)
//!   → JSON [record](crate::record::encode); table `waggle_metadata` holds
//!   `format = "waggle-store"`, `format_version`, `schema_version` and the
//!   journal's id and position; `waggle_meta` repeats the first three for
//!   older builds. Keys are bytes, so a damaged one is reported, never a
//!   panic. A file whose metadata is newer than this
//!   build, or a redb file holding other tables and not ours, is refused
//!   before anything is written to it.
//! * **Writes** are group-committed by whoever *leads*
//!   ([`writer`](self)): a write queues its request, and if no one else is
//!   writing, its caller takes every request waiting and appends them, in
//!   order, to the [journal](self#the-journal) with one `pwrite` and one
//!   `fdatasync`, then shows them to readers and answers each caller. While
//!   it syncs, new requests queue up and become the next batch: throughput
//!   grows with concurrency, with no timer and no thread hand-off for a
//!   lone write. A request whose caller has gone away (its future was
//!   dropped) before a leader takes it is skipped; once taken it is applied
//!   — the *commit point*.
//! * **Reads** see the journaled writes first (kept in memory), then the
//!   decoded-record cache, then the redb file, read on Tokio's blocking
//!   pool in an MVCC snapshot that never waits for a write. `count` is
//!   kept by the write path, so it is O(1).
//! * **Processes.** By default the file is opened in redb's single-writer
//!   mode: one process writes, any number may
//!   [open it read-only](RedbStore::open_read_only) at the same time and see
//!   each write as soon as it is acknowledged (they read the journal too).
//!   [`RedbOptions::live_readers`] turns that off and locks the file.
//!
//! # The journal
//!
//! A redb commit is copy-on-write: it writes every page from the changed
//! leaf to the root, and syncs twice in the single-writer mode. One
//! sequential append and one sync is what a durable write needs, so writes
//! go first to the journal, `<path>-wal0` and `<path>-wal1` (format:
//! `src/store/redb/journal.rs`), preallocated so that an append does not
//! change a file's size. When the file in use holds 32 MiB, or 8,192 ids are
//! pending ([`RedbOptions::checkpoint_bytes`], [`RedbOptions::checkpoint_ids`]),
//! the leader switches to the other file and a checkpointer thread
//! moves the pending writes into the redb file in one durable commit that
//! also records how far the journal has been taken in; writers never wait
//! for it. Opening replays what the redb file does not hold yet; a clean
//! close checkpoints and removes the journal, so a closed store is one
//! file. Never delete or copy the `-wal` files by hand while a store is
//! open or after a crash: they hold acknowledged writes.
//!
//! A `RedbStore` must be used from within a Tokio runtime (multi-thread or
//! current-thread); its reads use `spawn_blocking`.

mod cache;
mod changes;
mod checksum;
mod contain;
mod dry_run;
#[cfg(test)]
mod faults;
mod file;
mod history;
mod io_log;
mod journal;
mod maintenance;
mod pending;
#[cfg(test)]
mod power_loss;
mod writer;

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTableMetadata, StorageError,
};
use tokio::sync::oneshot;

use self::file::{
    HINT_CORRUPT, HINT_DIR, HINT_FOREIGN, HINT_IO, HINT_NEWER, Layout, RECORDS, create_dirs,
    damaged, database_error, ensure_journal_meta, history_meta, initialise, inspect_opening,
    io_error, journal_meta, last_revision, open_error, resolve, set_history, set_journal_state,
    snapshot, storage, sync_parent, upgrade_layout,
};
use self::io_log::StoreFile;
use self::journal::{Followed, Follower, Journal, JournalError};
use self::pending::Overlay;
use self::writer::{
    Checkpointer, Lane, Op, Request, Shared, Writer, checkpoint_loop, commit_pending,
};
use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::history::{
    Audited, Change, ChangeStream, HistoryOptions, WATCH_BATCH, follow, validate_origin,
};

/// How often a read-only handle's watcher looks at the writer's journal.
pub const TAIL_POLL: Duration = Duration::from_millis(10);
use crate::record;
use crate::repository::Repository;
use crate::revisions::{Expected, Revision, Revisioned, Versioned};

pub use self::contain::contained_panics;
pub use self::file::{FORMAT_NAME, FORMAT_VERSION};
pub use self::maintenance::CheckReport;

/// Entry points for `cargo fuzz` (`fuzz/`): what a store parses from its
/// files, on arbitrary bytes. Built only under `--cfg fuzzing`.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// A value as the records table stores it, read as a store reads it.
    pub fn stored_value(data: &[u8]) {
        let _ = super::decode("fuzzed", data);
    }

    /// `data` as the rows of a store's records and metadata tables, keys
    /// and values of any bytes (as damage leaves them: a flipped bit in a
    /// key, a value cut short), read as an open, a read and `check` read
    /// them. Each row: a byte whose low bit picks the table, the key's
    /// length (one byte), the value's (two, little-endian), then the key
    /// and the value.
    pub fn stored_tables(data: &[u8]) {
        use redb::ReadableDatabase;
        let Ok(db) =
            redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())
        else {
            return;
        };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let Ok(txn) = db.begin_write() else { return };
        {
            let (Ok(mut records), Ok(mut meta)) = (
                txn.open_table(super::file::RECORDS),
                txn.open_table(super::file::META),
            ) else {
                return;
            };
            let mut rest = data;
            while let [which, k, v0, v1, tail @ ..] = rest {
                let (k, v) = (usize::from(*k), usize::from(u16::from_le_bytes([*v0, *v1])));
                let Some((key, tail)) = tail.split_at_checked(k) else {
                    break;
                };
                let Some((value, tail)) = tail.split_at_checked(v.min(tail.len())) else {
                    break;
                };
                let table = if which & 1 == 0 {
                    &mut records
                } else {
                    &mut meta
                };
                if table.insert(key, value).is_err() {
                    return;
                }
                if which & 1 == 0 {
                    keys.push(key.to_vec());
                }
                rest = tail;
            }
        }
        if txn.commit().is_err() {
            return;
        }
        let Ok(txn) = db.begin_read() else { return };
        let _ = super::file::inspect_opening(std::path::Path::new("fuzzed"), &txn);
        let _ = super::file::journal_meta(&txn);
        let _ = super::file::history_meta(&txn);
        let _ = super::file::last_revision(&txn);
        let overlay = super::pending::Overlay::default();
        let _ = super::pending::find_all(&txn, &overlay);
        let _ = super::pending::count(&txn, &overlay);
        for key in keys {
            if let Ok(id) = super::file::key_id(&key) {
                let _ = super::pending::find(&txn, &overlay, id);
            }
        }
        let mut report = super::CheckReport::default();
        let _ = super::maintenance::check_records(&super::Handle::Write(db), &mut report);
    }

    /// `data` as a journal id, a `journal_next` and two journal files,
    /// scanned as an open scans them; the writes found decoded as a replay.
    pub fn journal(data: &[u8]) {
        let Some((head, files)) = data.split_at_checked(18) else {
            return;
        };
        let mut id = [0; 8];
        id.copy_from_slice(&head[..8]);
        let mut next = [0; 8];
        next.copy_from_slice(&head[8..16]);
        let split = usize::from(u16::from_le_bytes([head[16], head[17]])).min(files.len());
        let (a, b) = files.split_at(split);
        let (id, next) = (u64::from_le_bytes(id), u64::from_le_bytes(next) % 1024);
        if let Ok((super::journal::Scan::Live(entries), ..)) =
            super::journal::scan_pair([a, b], id, next)
        {
            let _ = super::pending::replay(entries);
        }
    }
}

/// How to open a [`RedbStore`]: `RedbOptions::default()` and the setters,
/// e.g. `RedbOptions::default().cache_entries(0)`. New options come with a
/// default, so code that builds options this way keeps compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbOptions {
    /// Let other processes open the file read-only while this one writes
    /// (redb's single-writer mode; each checkpoint then takes two fsyncs).
    /// When `false`, the file is locked exclusively. Default `true`.
    pub live_readers: bool,
    /// How many decoded records to keep in memory for `find_by_id`
    /// (about half a kilobyte each). `0` disables the cache. Default 100,000.
    pub cache_entries: usize,
    /// Journal bytes (in the file being appended to) that start a
    /// checkpoint: bounds the journal files and the replay after a crash.
    /// Default 32 MiB. Both thresholds are looked at after each batch of
    /// writes; one reached while the previous checkpoint still runs starts
    /// with the first batch after that one ends (on a store gone idle, at
    /// the next write or at close).
    pub checkpoint_bytes: u64,
    /// Changed ids that start a checkpoint: bounds the memory the pending
    /// writes take and the length of one checkpoint. Default 8,192.
    pub checkpoint_ids: usize,
    /// Verify every page's checksum when opening for writing, before
    /// anything is written (redb verifies none on a read): a damaged page is
    /// refused at open rather than read as missing or stale records. Costs
    /// one read of the file per open (about 0.7 ms per MB measured; see
    /// BENCHMARKS.md). Default `true`; without it, a crash image is still
    /// verified by redb's repair.
    pub verify_on_open: bool,
    /// The origin this handle's writes carry in the history, and how long
    /// changes are kept. Default: `<host>:<pid>`, 90 days.
    pub history: HistoryOptions,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            live_readers: true,
            cache_entries: 100_000,
            checkpoint_bytes: 32 << 20,
            checkpoint_ids: 8192,
            verify_on_open: true,
            history: HistoryOptions::default(),
        }
    }
}

impl RedbOptions {
    /// With [`live_readers`](Self::live_readers).
    pub fn live_readers(mut self, on: bool) -> Self {
        self.live_readers = on;
        self
    }

    /// With [`cache_entries`](Self::cache_entries).
    pub fn cache_entries(mut self, n: usize) -> Self {
        self.cache_entries = n;
        self
    }

    /// With [`checkpoint_bytes`](Self::checkpoint_bytes).
    pub fn checkpoint_bytes(mut self, n: u64) -> Self {
        self.checkpoint_bytes = n;
        self
    }

    /// With [`checkpoint_ids`](Self::checkpoint_ids).
    pub fn checkpoint_ids(mut self, n: usize) -> Self {
        self.checkpoint_ids = n;
        self
    }

    /// With [`verify_on_open`](Self::verify_on_open).
    pub fn verify_on_open(mut self, on: bool) -> Self {
        self.verify_on_open = on;
        self
    }

    /// With [`history`](Self::history).
    pub fn history(mut self, history: HistoryOptions) -> Self {
        self.history = history;
        self
    }

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
#[non_exhaustive]
pub struct Stats {
    /// Saves applied and committed.
    pub saves: u64,
    /// Deletes applied and committed (misses excluded).
    pub deletes: u64,
    /// Durable journal appends (one `fdatasync` each).
    pub commits: u64,
    /// Checkpoints of the journal into the redb file.
    pub checkpoints: u64,
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
    /// The write path; `None` on a read-only handle and once closed.
    lane: Option<Arc<Lane>>,
    /// What the write path shows readers; `None` on a read-only handle.
    shared: Option<Arc<Shared>>,
    /// What a read-only handle has read of the writer's journal.
    journal_view: Arc<Mutex<JournalView>>,
    /// The origin of this handle's writes (empty on a read-only handle).
    origin: String,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("read_only", &self.lane.is_none())
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
        not_panicking(path, "reading it", || {
            Self::open_inner(&resolve(path)?, options, Some(()), 0)
        })
    }

    /// Opens for writing as maintenance does (`check`, `compact`): whether
    /// the history is recorded stays as the file says.
    fn open_for_maintenance(path: &Path) -> Result<Self> {
        not_panicking(path, "reading it", || {
            Self::open_inner(&resolve(path)?, RedbOptions::default(), None, 0)
        })
    }

    /// Opens `path` (already resolved); `attempt` counts the retries after
    /// another process created the file first.
    /// `switch`: `Some` to record the history or not as `options` say,
    /// `None` to keep what the file says.
    fn open_inner(
        path: &Path,
        options: RedbOptions,
        switch: Option<()>,
        attempt: u32,
    ) -> Result<Self> {
        if attempt > 8 {
            return Err(open_error(
                path,
                "it changed under this open nine times in a row (created and removed by another process?)",
                HINT_IO,
            ));
        }
        let started = Instant::now();
        let meta = match fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(path, "cannot read its metadata", e)),
        };
        let db = match meta {
            Some(m) if m.is_dir() => return Err(open_error(path, "it is a directory", HINT_DIR)),
            Some(m) if !m.is_file() => return Err(not_regular(path)),
            // Empty (a crash of an older version while creating, or made by
            // hand): replaced whole by a new store.
            Some(m) if m.len() == 0 => match create_store(path, &options, Place::OverEmpty)? {
                Some(db) => db,
                None => return Self::open_inner(path, options, switch, attempt + 1),
            },
            Some(_) => {
                vet(path, &options)?;
                let file =
                    StoreFile::open(path).map_err(|e| io_error(path, "cannot open it", e))?;
                options
                    .builder()
                    .create_with_backend(file)
                    .map_err(|e| database_error(path, e))?
            }
            None => {
                if let Some(parent) = path.parent() {
                    create_dirs(parent)
                        .map_err(|e| io_error(path, "cannot create its directory", e))?;
                }
                match create_store(path, &options, Place::New)? {
                    Some(db) => db,
                    // Another process created it meanwhile: open that one.
                    None => return Self::open_inner(path, options, switch, attempt + 1),
                }
            }
        };
        match inspect_opening(path, &snapshot(path, db.begin_read())?)? {
            Layout::Empty => initialise(&db, options.history.retention.records())
                .map_err(|e| damaged(path, &e))?,
            Layout::Legacy => upgrade_layout(&db).map_err(|e| damaged(path, &e))?,
            Layout::Ours => {}
        }
        validate_origin(&options.history.origin)?;
        let (journal, count, last_revision) = recover(path, &db)?;
        let recording = match switch {
            Some(()) => {
                let on = options.history.retention.records();
                set_history(&db, on, last_revision).map_err(|e| damaged(path, &e))?;
                on
            }
            None => {
                let txn = db.begin_read().map_err(|e| damaged(path, &e))?;
                history_meta(&txn)?.0
            }
        };
        let durable_next = journal.next_seq();
        let db = Arc::new(Handle::Write(db));
        let shared = Arc::new(Shared::new(options.cache_entries, count));
        let checkpointer = Arc::new(Checkpointer::default());
        let (jobs, job_rx) = mpsc::channel();
        let sweep = options.history.retention.window();
        let checkpoints = {
            let (db, shared, checkpointer) = (
                Arc::clone(&db),
                Arc::clone(&shared),
                Arc::clone(&checkpointer),
            );
            std::thread::Builder::new()
                .name("waggle-redb-checkpoint".into())
                .spawn(move || checkpoint_loop(&db, &shared, &checkpointer, &job_rx, sweep))
                .map_err(storage("starting the checkpoint thread"))?
        };
        let lane = Lane::new(Writer {
            db: Arc::clone(&db),
            journal,
            shared: Arc::clone(&shared),
            checkpointer,
            jobs: Some((jobs, checkpoints)),
            in_flight: None,
            durable_next,
            last_revision,
            origin: options.history.origin.clone(),
            recording,
            broken: None,
            checkpoint_at: (options.checkpoint_bytes, options.checkpoint_ids),
            lookup: None,
            #[cfg(test)]
            fail_drain: false,
            #[cfg(test)]
            panic_in_drain: false,
            #[cfg(test)]
            panic_in_apply: false,
        });
        tracing::info!(path = %path.display(), elapsed = ?started.elapsed(), "opened redb store");
        Ok(Self {
            path: path.to_owned(),
            db: Some(db),
            lane: Some(lane),
            shared: Some(shared),
            journal_view: Arc::default(),
            origin: options.history.origin,
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
        not_panicking(path, "reading it", || {
            Self::open_read_only_inner(&resolve(path)?)
        })
    }

    fn open_read_only_inner(path: &Path) -> Result<Self> {
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
        match inspect_opening(path, &snapshot(path, ro.begin_read())?)? {
            Layout::Ours => {}
            Layout::Empty => {
                return Err(open_error(
                    path,
                    "it is an empty redb database, not a waggle store",
                    HINT_FOREIGN,
                ));
            }
            Layout::Legacy => {
                return Err(open_error(
                    path,
                    format!(
                        "it was written by an older waggle-store (before format {FORMAT_VERSION}), whose tables are upgraded by its first writable open"
                    ),
                    "open it once for writing (start the server, or run `waggle-store check`), then read it. The file was not modified",
                ));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            db: Some(Arc::new(Handle::Read(ro))),
            lane: None,
            // Another process writes: each read rebuilds its pending writes
            // from the journal.
            shared: None,
            journal_view: Arc::default(),
            origin: String::new(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write-path counters since open.
    pub fn stats(&self) -> Stats {
        let Some(shared) = &self.shared else {
            return Stats::default();
        };
        let c = &shared.counters;
        Stats {
            saves: c.saves.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Closes the store: waits for the write in progress and answers what is
    /// queued, then closes the file cleanly so the next open needs no
    /// recovery.
    /// Dropping the store does the same but cannot report errors.
    ///
    /// Both block the calling thread until the last batch, a last
    /// checkpoint of the journal into the redb file, and the close are done
    /// (milliseconds when the journal is full; well under one when it is
    /// empty). That is what makes the file free for the next open the
    /// moment they return. In async code at shutdown that is usually fine;
    /// to keep a worker thread free, run it with
    /// `tokio::task::spawn_blocking(move || store.close())`.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Closes the write path: what is queued is answered, everything is
    /// checkpointed, the journal removed and the checkpointer stopped.
    fn stop_writer(&mut self) {
        if let Some(lane) = self.lane.take() {
            lane.close();
        }
    }

    /// Closes the store; a panic inside the storage engine (redb, on a
    /// damaged page) becomes an error here, never reaching `close`'s or
    /// `drop`'s caller. After a panic in the last checkpoint the file is
    /// still closed, and the journal is kept and replayed at the next open.
    fn shutdown(&mut self) -> Result<()> {
        let path = self.path.clone();
        let stopped = not_panicking(
            &path,
            "closing it (in the last checkpoint); the journal is kept and replayed at the next open",
            || {
                self.stop_writer();
                Ok(())
            },
        );
        let closed = not_panicking(&path, "closing the file", || self.close_file());
        stopped.and(closed)
    }

    /// Waits for reads in flight and closes the redb file.
    fn close_file(&mut self) -> Result<()> {
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

    /// Runs `f` on the blocking pool over a redb snapshot and the pending
    /// writes that go with it.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction, Overlay) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(self.db.as_ref().ok_or(Error::Closed)?);
        let shared = self.shared.clone();
        let path = self.path.clone();
        let view = Arc::clone(&self.journal_view);
        tokio::task::spawn_blocking(move || {
            read_quietly(|| match shared {
                Some(shared) => {
                    // Under the state lock: a checkpoint commits before it
                    // drops the pending writes, so these two always agree.
                    let (txn, overlay) = {
                        let state = shared.state();
                        let txn = db.begin_read().map_err(storage("beginning a read"))?;
                        (txn, state.overlay())
                    };
                    f(&txn, overlay)
                }
                None => {
                    let (txn, overlay, _) = read_only_view(&db, &path, &view)?;
                    f(&txn, overlay)
                }
            })
        })
        .await
        .map_err(storage("running a read"))?
    }

    async fn write(&self, op: Op) -> Result<Option<Revision>> {
        let Some(lane) = &self.lane else {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        };
        let (reply, answer) = oneshot::channel();
        lane.submit(Request { op, reply })?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// Where [`create_store`] puts a new store.
enum Place {
    /// Where nothing is: it never replaces a file.
    New,
    /// Over an empty file.
    OverEmpty,
}

/// A new store's name while it is being made: beside `path`, unique to
/// this process and this call.
fn creating_path(path: &Path) -> PathBuf {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".creating-{}-{n}", std::process::id()));
    PathBuf::from(name)
}

/// Makes a new store at `path` whole: created and initialised (one durable
/// commit) under a temporary name beside it, then put in place, so that a
/// crash leaves no store or a complete one, never a file later opens
/// refuse (a crash may leave a `<name>.creating-*` file, safe to delete).
/// `None` when another process put a store there first.
fn create_store(path: &Path, options: &RedbOptions, place: Place) -> Result<Option<Database>> {
    let temp = creating_path(path);
    // This process's name: one left there was left by a dead process.
    let _ = io_log::remove_file(&temp);
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| io_error(path, "cannot create it", e))?;
    io_log::created(&temp, &created);
    drop(created);
    let made = StoreFile::open(&temp)
        .map_err(|e| io_error(path, "cannot create it", e))
        .and_then(|file| {
            options
                .builder()
                .create_with_backend(file)
                .map_err(|e| database_error(path, e))
        })
        .and_then(|db| {
            initialise(&db, options.history.retention.records())
                .map(|()| db)
                .map_err(|e| damaged(path, &e))
        });
    let db = match made {
        Ok(db) => db,
        Err(e) => {
            let _ = io_log::remove_file(&temp);
            return Err(e);
        }
    };
    let placed = match place {
        // A link never replaces what another process put there meanwhile.
        Place::New => fs::hard_link(&temp, path).and_then(|()| {
            io_log::linked(&temp, path);
            io_log::remove_file(&temp)
        }),
        Place::OverEmpty => fs::rename(&temp, path).inspect(|()| io_log::renamed(&temp, path)),
    };
    match placed {
        Ok(()) => {
            sync_parent(path).map_err(|e| io_error(path, "cannot sync its directory", e))?;
            Ok(Some(db))
        }
        Err(e) => {
            drop(db);
            let _ = io_log::remove_file(&temp);
            match e.kind() {
                io::ErrorKind::AlreadyExists => Ok(None),
                _ => Err(io_error(path, "cannot put the new store in place", e)),
            }
        }
    }
}

/// Decides whether the store file at `path` and its journal can be opened,
/// before anything writes to either: every refusal leaves both as they
/// were. redb opens the file for writing through a [`DryRun`] view, which
/// takes the real writer's lock (so a file another process writes is
/// refused as locked) but keeps every write in memory; with
/// `check_integrity_on_open` it verifies every page's checksum (redb does
/// not on a read; [`RedbOptions::verify_on_open`]) and repairs a crash
/// image there. The store is judged on that view.
///
/// [`DryRun`]: dry_run::DryRun
fn vet(path: &Path, options: &RedbOptions) -> Result<()> {
    vet_journal_access(path)?;
    let unreadable = |e| io_error(path, "cannot read it", e);
    let reader = fs::File::open(path).map_err(unreadable)?;
    let locker = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(unreadable)?;
    let locks = redb::backends::FileBackend::new(locker).map_err(|e| database_error(path, e))?;
    let view = dry_run::DryRun::new(reader, Some(locks)).map_err(unreadable)?;
    let db = options
        .builder()
        .set_check_integrity_on_open(options.verify_on_open)
        .create_with_backend(view)
        .map_err(|e| database_error(path, e))?;
    // An older file is judged as its upgrade will leave it (in memory).
    if let Layout::Legacy = inspect_opening(path, &snapshot(path, db.begin_read())?)? {
        upgrade_layout(&db).map_err(|e| damaged(path, &e))?;
    }
    vet_snapshot(path, snapshot(path, db.begin_read())?)
}

/// Refuses, before anything is written, a store whose journal this
/// process could not make or write: a journal file missing in a directory
/// it cannot write to (a directory made read-only), or there and not
/// writable. Opening redb for writing writes to the store file, so this
/// must be known first: a refused open changes nothing.
fn vet_journal_access(path: &Path) -> Result<()> {
    for wal in journal::paths_of(path) {
        let (target, what) = match fs::symlink_metadata(&wal) {
            Ok(_) => (wal, "its journal file is not writable by this process"),
            Err(_) => (
                path.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                "its directory is not writable by this process, and the journal must be made there",
            ),
        };
        if !writable(&target) {
            return Err(open_error(
                &target,
                what,
                "give the user running this write access to the store's directory and files, or open it read-only (the read commands do). The store was not modified",
            ));
        }
    }
    Ok(())
}

/// Whether this process (its effective ids) may write `path`, as the
/// kernel judges it: modes, ACLs, a read-only mount.
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: faccessat reads the NUL-terminated path it is given, which
    // lives until the call returns, and writes nothing.
    unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS,
        ) == 0
    }
}

/// Whether a snapshot of a file being opened is a store this build opens,
/// with a journal that can be replayed into it. An empty file (no tables)
/// has none and is initialised by the open.
fn vet_snapshot(path: &Path, txn: ReadTransaction) -> Result<()> {
    if let Layout::Ours = inspect_opening(path, &txn)?
        && let Some(expect) = journal_meta(&txn)?
    {
        let entries = journal::check(path, expect).map_err(|(at, e)| journal_error(&at, e))?;
        pending::replay(entries).map_err(|e| unreadable_journal(path, &e))?;
    }
    Ok(())
}

fn unreadable_journal(path: &Path, e: &Error) -> Error {
    open_error(
        &journal::paths_of(path)[0],
        format!("a journaled write cannot be read ({e})"),
        HINT_CORRUPT,
    )
}

/// Runs `f`, turning a panic inside the storage engine (redb, on a damaged
/// page) into an error naming the file and `during` what it happened.
fn not_panicking<T>(path: &Path, during: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    contain::quietly(f).unwrap_or_else(|what| {
        Err(damaged(
            path,
            &format!("the storage engine failed while {during}: {what}"),
        ))
    })
}

/// Runs a read of pages no open may have checked (a read-only handle, a
/// file opened without `verify_on_open`): a panic inside redb on a damaged
/// page is [`Error::Corrupt`], quietly.
fn read_quietly<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    contain::quietly(f).unwrap_or_else(|what| Err(damaged_page(&what)))
}

/// The error for a page redb could not read.
fn damaged_page(what: &str) -> Error {
    Error::Corrupt {
        id: "(a damaged page)".to_owned(),
        reason: format!(
            "the storage engine could not read a page of the file ({what}); run `waggle-store check`"
        ),
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

/// The environment stored under `id` with its revision: its checksum
/// verified, then its record decoded.
fn decode(id: &str, value: &[u8]) -> Result<Versioned> {
    let (revision, bytes) = checksum::open(value).map_err(|reason| Error::Corrupt {
        id: id.to_owned(),
        reason,
    })?;
    Ok(Versioned {
        env: super::decode_stored(id, bytes)?,
        revision: Revision::new(revision),
    })
}

/// Opens the journal beside a redb file just opened for writing, replays
/// into the file what it does not hold yet, and returns the journal,
/// started over, with the number of stored environments and the highest
/// revision ever issued.
fn recover(path: &Path, db: &Database) -> Result<(Journal, usize, u64)> {
    let expect = ensure_journal_meta(db).map_err(|e| damaged(path, &e))?;
    // Read again, not taken from `vet`: between that check and this open,
    // which takes the writer's lock anew, another writer may have appended.
    let (mut journal, entries) =
        Journal::open(path, expect).map_err(|(at, e)| journal_error(&at, e))?;
    let replayed = entries.len();
    let (pending, replayed_last, log) =
        pending::replay(entries).map_err(|e| unreadable_journal(path, &e))?;
    let (last, recorded) = {
        let txn = db.begin_read().map_err(|e| damaged(path, &e))?;
        (
            last_revision(&txn)?.max(replayed_last),
            history_meta(&txn)?.0,
        )
    };
    if replayed > 0 {
        // The changes go into the history if the writer that journaled
        // them recorded it.
        let log = if recorded { log } else { Vec::new() };
        commit_pending(db, &pending, &log, journal.next_seq(), last)
            .map_err(|e| damaged(path, &e))?;
        tracing::info!(path = %path.display(), replayed, "replayed the journal");
        // Both files are now in the redb file: start over in the other one.
        journal.switch();
    }
    if !expect.required {
        // Both files exist now, synced: from here a crash needs them.
        set_journal_state(db, true).map_err(|e| damaged(path, &e))?;
    }
    let txn = db.begin_read().map_err(|e| damaged(path, &e))?;
    let count = open_records(&txn)?.len().map_err(|e| damaged(path, &e))?;
    Ok((
        journal,
        usize::try_from(count).map_err(storage("counting"))?,
        last,
    ))
}

fn journal_error(path: &Path, e: JournalError) -> Error {
    let hint = match &e {
        JournalError::Ahead { .. } => {
            "the store file was replaced by an older copy: put the newer one back, or move the journal aside to lose its writes"
        }
        JournalError::Io(_) => HINT_IO,
        JournalError::NotAFile => {
            "move it aside: the journal must be a regular file. The store file was not modified"
        }
        JournalError::Foreign => {
            "it is not a waggle-store journal: move it aside. The file was not modified"
        }
        JournalError::Newer(_) => HINT_NEWER,
        JournalError::OtherStore { .. } => {
            "the store file was replaced by another store: put the original back, or move the journal aside to lose its writes"
        }
        JournalError::Missing | JournalError::Unwritten | JournalError::Truncated { .. } => {
            "put back the journal files (<store>-wal0 and -wal1) as the crash left them, or restore the store from a backup (waggle-store import). Nothing was modified"
        }
        JournalError::Damaged { .. } => {
            "acknowledged writes follow the damage, so the store is not opened without them: restore the store and its journal from a backup (waggle-store import), or move the journal aside to open the store without any of its writes. Nothing was modified"
        }
    };
    open_error(path, format!("its journal cannot be used: {e}"), hint)
}

/// The writer's journal as a read-only handle has followed it: the chain
/// read so far and the writes it holds.
#[derive(Debug, Default)]
struct JournalView {
    follower: Follower,
    pending: Arc<pending::Pending>,
    /// The changes of the journal's writes read so far.
    log: Arc<pending::Log>,
}

/// A redb snapshot and the journal's pending writes over it, for a
/// read-only handle beside a writer in another process. Only the frames
/// appended since the last read are read and decoded.
fn read_only_view(
    db: &Handle,
    store: &Path,
    view: &Mutex<JournalView>,
) -> Result<(ReadTransaction, Overlay, Arc<pending::Log>)> {
    let mut view = view.lock().unwrap_or_else(PoisonError::into_inner);
    // A checkpoint between the snapshot and the journal read moves the
    // journal past the snapshot: take a newer one.
    for _ in 0..64 {
        let txn = db.begin_read().map_err(storage("beginning a read"))?;
        let Some(expect) = journal_meta(&txn)? else {
            return Ok((txn, Overlay::default(), Arc::default()));
        };
        match view.follower.follow(store, expect.id, expect.next) {
            Ok(Followed::More { reset, entries }) => {
                let (more, _, log) = pending::replay(entries)?;
                if reset {
                    view.pending = Arc::new(more);
                    view.log = Arc::new(log);
                } else {
                    if !more.is_empty() {
                        Arc::make_mut(&mut view.pending).extend(more);
                    }
                    if !log.is_empty() {
                        Arc::make_mut(&mut view.log).extend(log);
                    }
                }
                return Ok((
                    txn,
                    Overlay::shared(Arc::clone(&view.pending)),
                    Arc::clone(&view.log),
                ));
            }
            Ok(Followed::Ahead) => continue,
            Err(e) => return Err(Error::storage("reading the journal", e)),
        }
    }
    Err(Error::storage(
        "reading the journal",
        "the writer checkpointed faster than this read could follow; try again",
    ))
}

fn open_records(txn: &ReadTransaction) -> Result<file::RecordsTable> {
    txn.open_table(RECORDS)
        .map_err(storage("opening the table"))
}

#[async_trait]
impl Repository for RedbStore {
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before a leader takes it, nothing is stored;
    /// after, it is committed whole — in a batch taken before any write
    /// queued after the drop, so it never overwrites a later write of the
    /// same id. On a multi-thread runtime the caller
    /// may lead the batch itself inside `block_in_place`: other tasks of
    /// its worker move on, but futures joined with this one in the same
    /// task wait for the sync (a fraction of a millisecond).
    async fn save(&self, env: &Environment) -> Result<()> {
        self.save_with(env, None).await.map(drop)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only. (A value read from the file is cached only
    /// if the future completes.)
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.find_versioned(id).await.map(|v| v.env)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        Ok(self
            .find_all_revisions()
            .await?
            .into_iter()
            .map(|v| v.env)
            .collect())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: dropped before a leader takes it, nothing is removed;
    /// after, the removal is committed — in a batch taken before any write
    /// queued after the drop.
    async fn delete(&self, id: &str) -> Result<()> {
        self.write(Op::Delete {
            id: id.to_owned(),
            expected: None,
        })
        .await
        .map(drop)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        if self.db.is_none() {
            return Err(Error::Closed);
        }
        match &self.shared {
            Some(shared) => Ok(shared.state().count),
            None => {
                self.read(|txn, overlay| pending::count(txn, &overlay))
                    .await
            }
        }
    }
}

#[async_trait]
impl Revisioned for RedbStore {
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_revision(&self, id: &str) -> Result<Versioned> {
        self.find_versioned(id).await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all_revisions(&self) -> Result<Vec<Versioned>> {
        // A copy of the pending writes, so that a long scan does not make
        // the leader copy them on each batch while it holds them.
        self.read(|txn, overlay| pending::find_all(txn, &overlay.detached()))
            .await
    }

    /// # Cancel safety
    ///
    /// As [`save`](Repository::save): the leader compares and journals in
    /// one step of its batch, so a dropped call is applied whole or not.
    async fn save_if(&self, env: &Environment, expected: Expected) -> Result<Revision> {
        self.save_with(env, Some(expected))
            .await?
            .ok_or_else(|| Error::storage("saving", "the writer returned no revision"))
    }

    /// # Cancel safety
    ///
    /// As [`delete`](Repository::delete).
    async fn delete_if(&self, id: &str, expected: Revision) -> Result<()> {
        self.write(Op::Delete {
            id: id.to_owned(),
            expected: Some(expected),
        })
        .await
        .map(drop)
    }
}

impl RedbStore {
    /// A save, conditional on `expected` when given; its new revision.
    async fn save_with(
        &self,
        env: &Environment,
        expected: Option<Expected>,
    ) -> Result<Option<Revision>> {
        env.validate()?;
        let record = record::encode(env).map_err(|e| Error::storage("encoding the record", e))?;
        self.write(Op::Save {
            env: Box::new(env.clone()),
            payload: changes::save(&self.origin, &env.id, &record),
            expected,
        })
        .await
    }

    /// `id` with its revision: from the pending writes, the cache, or the
    /// file.
    async fn find_versioned(&self, id: &str) -> Result<Versioned> {
        let Some(shared) = &self.shared else {
            let key = id.to_owned();
            return self
                .read(move |txn, overlay| pending::find(txn, &overlay, &key))
                .await;
        };
        if let Some(value) = shared.state().get(id) {
            return value.clone().ok_or_else(|| Error::not_found(id));
        }
        let generation = match shared.cache.get(id) {
            Ok(env) => return Ok(env),
            Err(generation) => generation,
        };
        let key = id.to_owned();
        let env = self
            .read(move |txn, overlay| pending::find(txn, &overlay, &key))
            .await?;
        shared.cache.fill(generation, &env);
        Ok(env)
    }

    /// Runs `f` on the blocking pool over a redb snapshot and the
    /// journaled changes not in it that `keep` selects, oldest first.
    async fn read_history<T, K, F>(&self, keep: K, f: F) -> Result<T>
    where
        T: Send + 'static,
        K: Fn(&changes::Parsed<'_>) -> bool + Send + 'static,
        F: FnOnce(&ReadTransaction, &[changes::Bytes]) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(self.db.as_ref().ok_or(Error::Closed)?);
        let shared = self.shared.clone();
        let path = self.path.clone();
        let view = Arc::clone(&self.journal_view);
        let keep = move |bytes: &[u8]| changes::parse(bytes).is_ok_and(|c| keep(&c));
        tokio::task::spawn_blocking(move || {
            read_quietly(|| match shared {
                Some(shared) => {
                    // Under the state lock, as for any read: the snapshot
                    // and the journaled changes agree.
                    let (txn, logged) = {
                        let state = shared.state();
                        let txn = db.begin_read().map_err(storage("beginning a read"))?;
                        (txn, state.logged(&keep))
                    };
                    f(&txn, &logged)
                }
                None => {
                    let (txn, _, log) = read_only_view(&db, &path, &view)?;
                    let logged: Vec<changes::Bytes> =
                        log.iter().filter(|b| keep(b)).cloned().collect();
                    f(&txn, &logged)
                }
            })
        })
        .await
        .map_err(storage("running a read"))?
    }
}

#[async_trait]
impl Audited for RedbStore {
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn history(&self, id: &str) -> Result<Vec<Change>> {
        let key = id.to_owned();
        let wanted = id.to_owned();
        self.read_history(
            move |c| c.id == wanted,
            move |txn, logged| history::history(txn, &key, logged),
        )
        .await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>> {
        let after = after.get();
        self.read_history(
            move |c| c.revision > after,
            move |txn, logged| history::changes_after(txn, after, limit, logged),
        )
        .await
    }

    /// # Cancel safety
    ///
    /// Cancel safe: one redb commit on the blocking pool, all or nothing;
    /// dropped, it still finishes there.
    async fn prune(&self, older_than: std::time::Duration) -> Result<usize> {
        let db = Arc::clone(self.db.as_ref().ok_or(Error::Closed)?);
        let path = self.path.clone();
        let lane = self.lane.clone();
        tokio::task::spawn_blocking(move || match (&*db, lane) {
            (Handle::Write(db), Some(lane)) => {
                // The journaled changes first go into the history tables,
                // where pruning sees them.
                lane.checkpoint_now();
                history::prune(db, older_than)
            }
            _ => Err(Error::ReadOnly { path }),
        })
        .await
        .map_err(storage("pruning the history"))?
    }

    /// In the writer's process, woken by every batch the writer publishes;
    /// on a read-only handle beside a writer in another process, the
    /// journal is looked at every [`TAIL_POLL`].
    fn watch(&self, after: Revision) -> ChangeStream<'_> {
        let moved = self.shared.as_ref().map(|s| s.changed.clone());
        follow(after, move |cursor| {
            // Subscribed before reading: a write after the read wakes it.
            let mut moved = moved.as_ref().map(tokio::sync::watch::Sender::subscribe);
            Box::pin(async move {
                loop {
                    let batch = self.changes(cursor, WATCH_BATCH).await?;
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                    match &mut moved {
                        Some(moved) => moved.changed().await.map_err(|_| Error::Closed)?,
                        // Off the executor, and with no timer needed.
                        None => tokio::task::spawn_blocking(|| std::thread::sleep(TAIL_POLL))
                            .await
                            .map_err(storage("waiting for the journal"))?,
                    }
                }
            })
        })
    }
}
