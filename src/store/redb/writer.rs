// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The write path: group commit into the journal, led by the callers
//! themselves, and the checkpointer thread (journal into the redb file).
//!
//! A write puts its request on the [`Lane`]'s queue and then tries to
//! *lead*: whoever takes the lane's lock takes every request waiting (its
//! own and others'), appends them to the [journal](super::journal), makes
//! them durable with one `fdatasync`, applies them to the
//! [pending](super::pending) state readers see, and only then answers each
//! caller. Callers that find the lock taken wait for their answer; what
//! they queued is taken by the leader's next round, and a leader looks
//! again after it lets go, so nothing is left waiting. A lone write is led
//! by its own caller, with no thread hand-off in the way of its sync: on a
//! multi-thread Tokio runtime through `block_in_place` (Tokio moves the
//! worker's other tasks elsewhere meanwhile), on a current-thread runtime
//! on the blocking pool.
//!
//! When the journal file in use has grown past
//! [`RedbOptions::checkpoint_bytes`](super::RedbOptions) or that many ids
//! ([`checkpoint_ids`](super::RedbOptions)) are pending, the leader
//! *freezes* the pending
//! writes and switches journal files; the checkpointer thread writes the
//! frozen writes into the redb file in one durable commit that also
//! records how far the journal has been taken in. Writers never wait for a
//! checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, TryLockError, mpsc};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase};
use tokio::sync::oneshot;

use super::cache::Cache;
use super::changes::{self, Bytes};
use super::checksum;
use super::contain::quietly;
use super::file::{META, RECORDS, RecordsTable, meta_number_in, set_journal_state, storage};
use super::journal::{AppendError, Entry, Journal};
use super::pending::{Log, Pending, State};
use crate::domain::Environment;
use crate::error::{Error, Result};
use crate::record;
use crate::revisions::{Expected, Revision, Versioned};
use crate::store::redb::Handle;

/// The most requests one batch takes.
const MAX_BATCH: usize = 4096;

pub(super) enum Op {
    /// `env` rides along so readers get it without decoding.
    Save {
        env: Box<Environment>,
        /// The journal payload, a [change](changes::save): the leader
        /// stamps its revision and time into it.
        payload: Vec<u8>,
        /// Only if this is what is stored (a conditional save).
        expected: Option<Expected>,
    },
    Delete {
        id: String,
        /// Only if the value is at this revision (a conditional delete).
        expected: Option<Revision>,
    },
}

pub(super) struct Request {
    pub(super) op: Op,
    /// A save's new revision; `None` for a delete.
    pub(super) reply: oneshot::Sender<Result<Option<Revision>>>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) saves: AtomicU64,
    pub(super) deletes: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) checkpoints: AtomicU64,
}

/// What the writer shares with the store's readers.
pub(super) struct Shared {
    pub(super) state: RwLock<State>,
    pub(super) cache: Cache,
    pub(super) counters: Counters,
    /// The last revision published: watchers in this process wait for it
    /// to move.
    pub(super) changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub(super) fn new(cache_entries: usize, count: usize) -> Self {
        Self {
            state: RwLock::new(State {
                count,
                ..State::default()
            }),
            cache: Cache::new(cache_entries),
            counters: Counters::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    pub(super) fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes `pending` and the changes in `log` into the redb file in one
/// durable commit that records `next` as the first journal sequence number
/// the file does not hold, and `last` as the highest revision issued (if
/// higher than the file's).
pub(super) fn commit_pending(
    db: &Database,
    pending: &Pending,
    log: &Log,
    next: u64,
    last: u64,
) -> Result<()> {
    let txn = db
        .begin_write()
        .map_err(storage("beginning a checkpoint"))?;
    {
        super::history::write(&txn, log)?;
        let mut table = txn
            .open_table(RECORDS)
            .map_err(storage("opening the table"))?;
        for (id, value) in pending {
            match value {
                Some(v) => {
                    let record = record::encode(&v.env).map_err(storage("encoding the record"))?;
                    table
                        .insert(
                            id.as_bytes(),
                            checksum::seal(v.revision.get(), &record).as_slice(),
                        )
                        .map_err(storage("checkpointing"))?;
                }
                None => {
                    table
                        .remove(id.as_bytes())
                        .map_err(storage("checkpointing"))?;
                }
            }
        }
        let mut meta = txn.open_table(META).map_err(storage("opening metadata"))?;
        meta.insert(
            super::file::JOURNAL_NEXT.as_bytes(),
            next.to_string().as_bytes(),
        )
        .map_err(storage("checkpointing"))?;
        // A damaged value is replaced: `last` is at least what it said.
        let stored = meta_number_in(&meta, super::file::LAST_REVISION).unwrap_or(0);
        if last > stored {
            meta.insert(
                super::file::LAST_REVISION.as_bytes(),
                last.to_string().as_bytes(),
            )
            .map_err(storage("checkpointing"))?;
        }
    }
    txn.commit().map_err(storage("committing a checkpoint"))
}

/// A checkpoint: pending writes, and the first journal sequence number
/// after them.
#[derive(Clone)]
pub(super) struct Job {
    /// Which job: two jobs can end at the same `next` (the second with
    /// nothing new), so outcomes are told apart by this.
    id: u64,
    pending: Arc<Pending>,
    /// The changes of `pending`'s writes.
    log: Arc<Log>,
    next: u64,
    /// The highest revision issued when the job was made: at least every
    /// one its writes (and the deletes among them) carry.
    last: u64,
}

/// What the checkpointer tells the writer.
#[derive(Default)]
struct Outcome {
    /// The id of the job it last finished, and whether it succeeded.
    finished: Option<(u64, std::result::Result<(), String>)>,
}

/// The channel between the writer and the checkpointer thread.
#[derive(Default)]
pub(super) struct Checkpointer {
    outcome: Mutex<Outcome>,
    done: Condvar,
    /// Jobs made so far: the next job's id.
    jobs: AtomicU64,
}

impl Checkpointer {
    /// A job for `pending` and its `log`, ending at `next`, with revisions
    /// up to `last`.
    fn job(&self, pending: Arc<Pending>, log: Arc<Log>, next: u64, last: u64) -> Job {
        Job {
            id: self.jobs.fetch_add(1, Ordering::Relaxed),
            pending,
            log,
            next,
            last,
        }
    }

    fn finish(&self, id: u64, result: std::result::Result<(), String>) {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        o.finished = Some((id, result));
        self.done.notify_all();
    }

    /// Forgets a failed outcome before the job is sent again.
    fn retrying(&self) {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        o.finished = None;
    }

    /// The outcome of job `id`: waits for it if `wait`.
    fn outcome(&self, id: u64, wait: bool) -> Option<std::result::Result<(), String>> {
        let mut o = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match &o.finished {
                Some((n, result)) if *n == id => return Some(result.clone()),
                _ if !wait => return None,
                _ => o = self.done.wait(o).unwrap_or_else(PoisonError::into_inner),
            }
        }
    }
}

/// Writes the frozen or the active pending writes of `job` into the redb
/// file, keeping the cache coherent, then drops them from the state.
fn run_checkpoint(db: &Database, shared: &Shared, job: &Job, frozen: bool) -> Result<()> {
    let started = Instant::now();
    let cache = &shared.cache;
    cache.begin_commit(job.pending.keys().map(String::as_str));
    // redb can panic on a damaged file; contain it.
    let committed = quietly(|| commit_pending(db, &job.pending, &job.log, job.next, job.last))
        .unwrap_or_else(|what| {
            Err(Error::storage(
                "checkpointing",
                format!("the storage engine failed ({what}); run `waggle-store check`"),
            ))
        });
    cache.end_commit(committed.as_ref().ok().map(|()| &*job.pending));
    committed?;
    {
        let mut state = shared.state_mut();
        if frozen {
            state.frozen = None;
            state.frozen_log = None;
        } else if Arc::ptr_eq(&state.pending, &job.pending) {
            state.pending = Arc::default();
            state.log = Arc::default();
        }
    }
    shared.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(writes = job.pending.len(), next = job.next, elapsed = ?started.elapsed(), "checkpointed the journal");
    Ok(())
}

/// How often the checkpointer sweeps the history for changes retention
/// lets go (also once when the store opens).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The checkpointer thread: runs each frozen job it is sent, and, when
/// the history's retention is a window (`sweep`), prunes it when the store
/// opens and then at most every [`SWEEP_EVERY`].
pub(super) fn checkpoint_loop(
    db: &Handle,
    shared: &Shared,
    checkpointer: &Checkpointer,
    rx: &mpsc::Receiver<Job>,
    sweep: Option<Duration>,
) {
    let Handle::Write(db) = db else {
        return;
    };
    let mut swept: Option<Instant> = None;
    let maybe_sweep = |swept: &mut Option<Instant>| {
        let Some(window) = sweep else { return };
        if swept.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        *swept = Some(Instant::now());
        // redb can panic on a damaged file; contain it.
        match quietly(|| super::history::prune(db, window)) {
            Ok(Ok(n)) => tracing::debug!(removed = n, "pruned the history"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pruning the history failed; trying again later")
            }
            Err(what) => tracing::warn!(
                panic = %what,
                "pruning the history failed on a damaged page; run `waggle-store check`"
            ),
        }
    };
    maybe_sweep(&mut swept);
    while let Ok(job) = rx.recv() {
        let result = run_checkpoint(db, shared, &job, true).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "checkpoint failed; the journal keeps every write, retrying");
        }
        checkpointer.finish(job.id, result);
        maybe_sweep(&mut swept);
    }
}

/// How long after a failed checkpoint the writer tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Leader rounds a caller runs before it hands leading to the blocking
/// pool and goes back to its own task.
const CALLER_ROUNDS: usize = 2;

/// The write path's entry: the request queue, and the writer behind a lock
/// that whoever leads holds.
pub(super) struct Lane {
    sender: mpsc::Sender<Request>,
    /// Requests sent and not yet taken by a leader. A sender counts its
    /// request after sending it, so this can dip below zero for a moment;
    /// above zero, a request is waiting.
    queued: AtomicIsize,
    core: Mutex<Core>,
}

struct Core {
    queue: mpsc::Receiver<Request>,
    /// `None` once the store is closed.
    writer: Option<Writer>,
}

impl Lane {
    pub(super) fn new(writer: Writer) -> Arc<Self> {
        let (sender, queue) = mpsc::channel();
        Arc::new(Self {
            sender,
            queued: AtomicIsize::new(0),
            core: Mutex::new(Core {
                queue,
                writer: Some(writer),
            }),
        })
    }

    /// Queues `request` and sees that it is led: by this thread if the
    /// lane is free, else by the leader at work.
    pub(super) fn submit(self: &Arc<Self>, request: Request) -> Result<()> {
        self.sender.send(request).map_err(|_| Error::Closed)?;
        self.queued.fetch_add(1, Ordering::SeqCst);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                let lane = Arc::clone(self);
                // Detached: it leads whatever the caller does meanwhile.
                drop(tokio::task::spawn_blocking(move || lane.lead(usize::MAX)));
            }
            Ok(_) => {
                // Only a caller that gets the lock blocks, and then through
                // `block_in_place`, so that the worker's other tasks move on.
                if let Some(core) = self.try_core() {
                    tokio::task::block_in_place(|| self.lead_with(core, CALLER_ROUNDS));
                }
            }
            // Not in a runtime: blocking here blocks no executor.
            Err(_) => self.lead(usize::MAX),
        }
        Ok(())
    }

    fn try_core(&self) -> Option<std::sync::MutexGuard<'_, Core>> {
        match self.core.try_lock() {
            Ok(core) => Some(core),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Leads if the lane is free.
    fn lead(self: &Arc<Self>, rounds: usize) {
        if let Some(core) = self.try_core() {
            self.lead_with(core, rounds);
        }
    }

    /// Runs up to `rounds` batches while requests wait, then lets go and
    /// looks again. A sender that found the lock taken had counted its
    /// request before this leader lets go, so it is seen here; one that
    /// counts later finds the lock free. Past `rounds`, a blocking-pool
    /// thread takes over.
    fn lead_with<'a>(
        self: &'a Arc<Self>,
        mut core: std::sync::MutexGuard<'a, Core>,
        rounds: usize,
    ) {
        let mut done = 0;
        loop {
            while done < rounds && self.queued.load(Ordering::SeqCst) > 0 {
                let Core { queue, writer } = &mut *core;
                let Some(writer) = writer else {
                    return; // closed: `close` answered everything
                };
                let taken = self.round(writer, queue);
                done += 1;
                if taken == 0 {
                    break;
                }
            }
            drop(core);
            if self.queued.load(Ordering::SeqCst) <= 0 {
                return;
            }
            if done >= rounds {
                if tokio::runtime::Handle::try_current().is_ok() {
                    let lane = Arc::clone(self);
                    drop(tokio::task::spawn_blocking(move || lane.lead(usize::MAX)));
                    return;
                }
                done = 0;
            }
            match self.try_core() {
                Some(again) => core = again,
                None => return, // another leader has it, and looks again too
            }
        }
    }

    /// One round of `writer`, and the requests it took no longer counted
    /// as queued.
    fn round(&self, writer: &mut Writer, queue: &mpsc::Receiver<Request>) -> usize {
        let taken = writer.round(queue);
        self.queued.fetch_sub(
            isize::try_from(taken).unwrap_or(isize::MAX),
            Ordering::SeqCst,
        );
        taken
    }

    /// Makes the next journal append fail with `fault`, and if
    /// `fence_fails`, the checkpoint that fences it off too.
    #[cfg(test)]
    pub(super) fn inject(&self, fault: super::journal::Fault, fence_fails: bool) {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = &mut core.writer {
            writer.journal.fault = Some(fault);
            writer.fail_drain = fence_fails;
        }
    }

    /// Makes the next batch panic inside the write, as redb can on a
    /// damaged page.
    #[cfg(test)]
    pub(super) fn panic_on_next_write(&self) {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = &mut core.writer {
            writer.panic_in_apply = true;
        }
    }

    /// Makes the checkpoint that closing runs panic.
    #[cfg(test)]
    pub(super) fn panic_on_close(&self) {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = &mut core.writer {
            writer.panic_in_drain = true;
        }
    }

    /// Checkpoints now (which switches journal files) and waits for it:
    /// afterwards the redb file holds every write acknowledged before.
    /// Blocking.
    pub(super) fn checkpoint_now(&self) {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = &mut core.writer {
            // The checkpoint in flight first: only then may another start.
            writer.settle(true);
            let at = std::mem::take(&mut writer.checkpoint_at);
            writer.maybe_checkpoint();
            writer.checkpoint_at = at;
            writer.settle(true);
        }
    }

    /// Queues `requests` and leads them on this thread as one batch.
    #[cfg(test)]
    pub(super) fn submit_batch(self: &Arc<Self>, requests: Vec<Request>) {
        let core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        for request in requests {
            if self.sender.send(request).is_ok() {
                self.queued.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.lead_with(core, usize::MAX);
    }

    /// Closes the write path: waits for any leader, answers what is queued,
    /// checkpoints everything and removes the journal, stops the
    /// checkpointer. Blocking.
    pub(super) fn close(&self) {
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        let Core { queue, writer } = &mut *core;
        if let Some(mut writer) = writer.take() {
            while self.round(&mut writer, queue) > 0 {}
            writer.finish();
        }
    }
}

/// The writer: what the leader works with.
pub(super) struct Writer {
    pub(super) db: Arc<Handle>,
    pub(super) journal: Journal,
    pub(super) shared: Arc<Shared>,
    pub(super) checkpointer: Arc<Checkpointer>,
    /// The checkpointer thread's queue and the thread; `None` once stopped.
    pub(super) jobs: Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
    /// The frozen job sent to the checkpointer and not yet known done, and
    /// when it last failed.
    pub(super) in_flight: Option<(Job, Option<Instant>)>,
    /// The `journal_next` the redb file holds.
    pub(super) durable_next: u64,
    /// The highest revision issued: the next write gets the one after.
    pub(super) last_revision: u64,
    /// The origin of this handle's writes, in their changes.
    pub(super) origin: String,
    /// Whether changes go into the history (else only into the journal).
    pub(super) recording: bool,
    /// Set when a failed append could not be fenced off by a checkpoint:
    /// writes are refused until the store is reopened.
    pub(super) broken: Option<String>,
    /// Journal bytes and pending ids that start a checkpoint.
    pub(super) checkpoint_at: (u64, usize),
    /// A snapshot of the records table for existence checks, and the cache
    /// generation it was taken at.
    pub(super) lookup: Option<(u64, RecordsTable)>,
    /// Makes the next drain fail.
    #[cfg(test)]
    pub(super) fail_drain: bool,
    /// Makes the last checkpoint panic, as redb can on a damaged page.
    #[cfg(test)]
    pub(super) panic_in_drain: bool,
    /// Makes the next batch panic.
    #[cfg(test)]
    pub(super) panic_in_apply: bool,
}

impl Writer {
    fn db(&self) -> Result<&Database> {
        match &*self.db {
            Handle::Write(db) => Ok(db),
            // `RedbStore` gives a writer only a writable handle.
            Handle::Read(_) => Err(Error::storage("writing", "the store is open read-only")),
        }
    }

    /// One batch: takes every request waiting (up to [`MAX_BATCH`]),
    /// journals, applies, answers. Returns how many it took.
    fn round(&mut self, queue: &mpsc::Receiver<Request>) -> usize {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let taken = batch.len();
        // The commit point: requests whose callers are gone are not applied.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            return taken;
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        let n = ops.len();
        // redb can panic on a damaged file; contain it to this batch.
        let results = quietly(|| self.apply(ops)).unwrap_or_else(|what| {
                let reason = format!("the storage engine failed ({what}; a damaged page?): reopen the store; `waggle-store check` says what is damaged");
                // Its state may be half-changed: no further write goes to it.
                self.broken = Some(reason.clone());
                let e = Error::storage("writing", reason);
                (0..n).map(|_| Err(same_failure(&e))).collect()
            });
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result); // the caller may have gone since
        }
        self.maybe_checkpoint();
        taken
    }

    /// At close: a last checkpoint, the journal removed, the checkpointer
    /// stopped.
    fn finish(mut self) {
        // `closed` is durable before the files go: a crash between the two
        // leaves an empty journal that is not needed, never a missing one
        // that is.
        match self
            .drain()
            .and_then(|()| set_journal_state(self.db()?, false))
        {
            Ok(()) => {
                if let Err(e) = self.journal.remove() {
                    tracing::warn!(error = %e, "could not remove the emptied journal");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "last checkpoint failed; the journal is replayed at the next open")
            }
        }
        if let Some((jobs, thread)) = self.jobs.take() {
            drop(jobs);
            if thread.join().is_err() {
                tracing::error!("the checkpoint thread panicked");
            }
        }
    }

    /// Learns how the job in flight went; `true` when none is left.
    fn settle(&mut self, wait: bool) -> bool {
        let Some((job, failed_at)) = &mut self.in_flight else {
            return true;
        };
        match self.checkpointer.outcome(job.id, wait) {
            Some(Ok(())) => {
                self.durable_next = job.next;
                self.in_flight = None;
                true
            }
            Some(Err(_)) if failed_at.is_none_or(|t| t.elapsed() >= RETRY) => {
                // Try again: the frozen writes stay visible meanwhile.
                *failed_at = Some(Instant::now());
                self.checkpointer.retrying();
                if let Some((jobs, _)) = &self.jobs {
                    let _ = jobs.send(job.clone());
                }
                false
            }
            _ => false,
        }
    }

    /// Freezes the pending writes and hands them to the checkpointer when
    /// the journal file in use is big enough and no checkpoint is running.
    fn maybe_checkpoint(&mut self) {
        let (bytes, ids) = self.checkpoint_at;
        let due = self.journal.live_bytes() >= bytes || self.shared.state().pending.len() >= ids;
        if !due || !self.settle(false) {
            return;
        }
        let (pending, log) = {
            let mut state = self.shared.state_mut();
            let pending = std::mem::take(&mut state.pending);
            let log = std::mem::take(&mut state.log);
            state.frozen = Some(Arc::clone(&pending));
            state.frozen_log = Some(Arc::clone(&log));
            (pending, log)
        };
        self.journal.switch();
        let job = self
            .checkpointer
            .job(pending, log, self.journal.next_seq(), self.last_revision);
        if let Some((jobs, _)) = &self.jobs
            && jobs.send(job.clone()).is_ok()
        {
            self.in_flight = Some((job, None));
        }
    }

    /// Waits for the job in flight (one more try if it failed), then writes
    /// what is pending into the redb file on this thread. Afterwards both
    /// journal files hold nothing the redb file lacks.
    fn drain(&mut self) -> Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_drain) {
            return Err(Error::storage("checkpointing", "injected fault"));
        }
        #[cfg(test)]
        if self.panic_in_drain {
            panic!("injected panic in the last checkpoint");
        }
        if let Some((job, _)) = self.in_flight.take() {
            if let Some(Err(_)) = self.checkpointer.outcome(job.id, true) {
                run_checkpoint(self.db()?, &self.shared, &job, true)?;
            }
            self.durable_next = job.next;
        }
        let (pending, log) = {
            let state = self.shared.state();
            (Arc::clone(&state.pending), Arc::clone(&state.log))
        };
        let job = self
            .checkpointer
            .job(pending, log, self.journal.next_seq(), self.last_revision);
        if !job.pending.is_empty() || job.next != self.durable_next {
            run_checkpoint(self.db()?, &self.shared, &job, false)?;
            self.durable_next = job.next;
        }
        Ok(())
    }

    /// What is stored under `id`, as of the pending writes.
    fn stored(&mut self, overlay: &super::pending::Overlay, id: &str) -> Result<Held> {
        if let Some(value) = overlay.get(id) {
            return Ok(value
                .as_ref()
                .map_or(Held::Absent, |v| Held::At(v.revision)));
        }
        if let Some(revision) = self.shared.cache.revision(id) {
            return Ok(Held::At(revision));
        }
        // The redb file changes only at checkpoints: one snapshot serves
        // until the next. The overlay was taken first, so a checkpoint
        // whose writes it no longer holds has moved the generation.
        let generation = self.shared.cache.generation();
        if self.lookup.as_ref().is_none_or(|(g, _)| *g != generation) {
            let txn = self
                .db()?
                .begin_read()
                .map_err(storage("beginning a read"))?;
            let table = txn
                .open_table(RECORDS)
                .map_err(storage("opening the table"))?;
            self.lookup = Some((generation, table));
        }
        match &self.lookup {
            Some((_, table)) => match table.get(id.as_bytes()).map_err(storage("reading"))? {
                None => Ok(Held::Absent),
                Some(value) => Ok(match checksum::open(value.value()) {
                    Ok((revision, _)) => Held::At(Revision::new(revision)),
                    Err(reason) => Held::Unreadable(reason),
                }),
            },
            None => Err(Error::storage("reading", "no snapshot of the table")),
        }
    }

    /// One batch: each op's result, in order.
    fn apply(&mut self, ops: Vec<Op>) -> Vec<Result<Option<Revision>>> {
        #[cfg(test)]
        if std::mem::take(&mut self.panic_in_apply) {
            panic!("injected panic while writing");
        }
        if let Some(reason) = &self.broken {
            let e = Error::storage("writing", reason.clone());
            return ops.iter().map(|_| Err(same_failure(&e))).collect();
        }
        let n = ops.len();
        match self.decide(ops) {
            Ok(Decision {
                results,
                entries,
                effects,
                delta,
                last,
            }) => {
                if entries.is_empty() {
                    return results;
                }
                match self.append(&entries) {
                    Ok(()) => {
                        self.last_revision = last;
                        self.publish(effects, delta);
                        results
                    }
                    Err(e) => {
                        tracing::error!(error = %e, ops = n, "journal write failed");
                        results.into_iter().map(|_| Err(same_failure(&e))).collect()
                    }
                }
            }
            Err(e) => (0..n).map(|_| Err(same_failure(&e))).collect(),
        }
    }

    /// What each op of a batch does: whether it writes (a miss of a
    /// delete, or a condition that does not hold, writes nothing), and the
    /// revision each write gets. Conditions are judged against the ops
    /// before them in the batch, so the batch is as if its ops ran one at
    /// a time, in order. A plain write replaces a damaged value; a
    /// conditional one, which needs its revision, is refused as `Corrupt`.
    fn decide(&mut self, ops: Vec<Op>) -> Result<Decision> {
        // First by reference, so that the batch's own ids need no copies:
        // each op's verdict, as of the ops before it.
        let mut last = self.last_revision;
        let mut delta = 0_isize;
        let mut verdicts = Vec::with_capacity(ops.len());
        {
            let overlay = self.shared.state().overlay();
            let mut after: HashMap<&str, Held> = HashMap::with_capacity(ops.len());
            for op in &ops {
                let id = match op {
                    Op::Save { env, .. } => env.id.as_str(),
                    Op::Delete { id, .. } => id.as_str(),
                };
                let held = match after.remove(id) {
                    Some(held) => held,
                    None => self.stored(&overlay, id)?,
                };
                let expected = match op {
                    Op::Save { expected, .. } => *expected,
                    Op::Delete { expected, .. } => expected.map(Expected::Revision),
                };
                let verdict = match (&held, expected) {
                    (Held::Unreadable(reason), Some(_)) => Verdict::Refused(Error::Corrupt {
                        id: id.to_owned(),
                        reason: reason.clone(),
                    }),
                    (_, Some(expected)) if !held.satisfies(expected) => {
                        Verdict::Refused(Error::Conflict {
                            id: id.to_owned(),
                            expected,
                            found: held.revision(),
                        })
                    }
                    (Held::Absent, None) if matches!(op, Op::Delete { .. }) => {
                        Verdict::Refused(Error::NotFound { id: id.to_owned() })
                    }
                    _ => {
                        last += 1;
                        let saves = matches!(op, Op::Save { .. });
                        let present = !matches!(held, Held::Absent);
                        delta += isize::from(saves && !present) - isize::from(!saves);
                        Verdict::Writes(Revision::new(last))
                    }
                };
                let now = match (&verdict, op) {
                    (Verdict::Writes(r), Op::Save { .. }) => Held::At(*r),
                    (Verdict::Writes(_), Op::Delete { .. }) => Held::Absent,
                    (Verdict::Refused(_), _) => held,
                };
                after.insert(id, now);
                verdicts.push(verdict);
            }
        }
        // One clock reading for the batch: its writes happen together.
        let at = chrono::Utc::now();
        let mut decision = Decision {
            results: Vec::with_capacity(ops.len()),
            entries: Vec::with_capacity(ops.len()),
            effects: Vec::with_capacity(ops.len()),
            delta,
            last,
        };
        for (op, verdict) in ops.into_iter().zip(verdicts) {
            let revision = match verdict {
                Verdict::Refused(e) => {
                    decision.results.push(Err(e));
                    continue;
                }
                Verdict::Writes(revision) => revision,
            };
            let (mut payload, effect, result) = match op {
                Op::Save { env, payload, .. } => (
                    payload,
                    Effect::Save(Box::new(Versioned {
                        env: *env,
                        revision,
                    })),
                    Some(revision),
                ),
                Op::Delete { id, .. } => {
                    (changes::delete(&self.origin, &id), Effect::Delete(id), None)
                }
            };
            changes::stamp(&mut payload, revision, at);
            let change: Bytes = payload.into();
            decision.entries.push(Entry::Change(Arc::clone(&change)));
            decision.effects.push((effect, change));
            decision.results.push(Ok(result));
        }
        Ok(decision)
    }

    /// Makes `entries` durable in the journal. A failure that may have left
    /// frames on disk is fenced off: their numbers are given up, everything
    /// pending goes into the redb file, and appends start over in the other
    /// journal file, so no later write can be mistaken for them.
    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let failed = match self.journal.append(entries.iter()) {
            Ok(()) => return Ok(()),
            // Nothing was written.
            Err(AppendError::Grow(e)) => return Err(Error::storage("writing the journal", e)),
            Err(AppendError::Write(e)) => e,
        };
        self.journal.skip(entries.len() as u64);
        match self.drain() {
            Ok(()) => self.journal.switch(),
            Err(e) => {
                // Not fenced: at least keep a replay from taking them.
                if let Err(erase) = self.journal.erase_failed() {
                    tracing::error!(error = %erase, "could not erase the refused frames; a replay may apply them");
                }
                self.broken = Some(format!(
                    "a journal write failed ({failed}) and the checkpoint after it too ({e}); reopen the store"
                ));
            }
        }
        Err(Error::storage("writing the journal", failed))
    }

    /// Shows a durable batch to readers, before its callers hear back.
    fn publish(&self, effects: Vec<(Effect, Bytes)>, delta: isize) {
        let saves = effects
            .iter()
            .filter(|(e, _)| matches!(e, Effect::Save(_)))
            .count() as u64;
        let deletes = effects.len() as u64 - saves;
        {
            let mut state = self.shared.state_mut();
            if self.recording {
                Arc::make_mut(&mut state.log).extend(effects.iter().map(|(_, c)| Arc::clone(c)));
            }
            let pending = Arc::make_mut(&mut state.pending);
            for (effect, _) in effects {
                match effect {
                    // An id already pending keeps its key: no copy of it.
                    Effect::Save(v) => match pending.get_mut(v.env.id.as_str()) {
                        Some(slot) => *slot = Some(*v),
                        None => {
                            pending.insert(v.env.id.clone(), Some(*v));
                        }
                    },
                    Effect::Delete(id) => {
                        pending.insert(id, None);
                    }
                }
            }
            state.count = state.count.saturating_add_signed(delta);
        }
        self.shared.changed.send_replace(self.last_revision);
        let c = &self.shared.counters;
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.saves.fetch_add(saves, Ordering::Relaxed);
        c.deletes.fetch_add(deletes, Ordering::Relaxed);
    }
}

/// What the writer finds stored under an id.
enum Held {
    /// Nothing.
    Absent,
    /// A value at this revision.
    At(Revision),
    /// A value whose checksum fails: replaceable by a plain write, but its
    /// revision is unknown.
    Unreadable(String),
}

impl Held {
    fn revision(&self) -> Option<Revision> {
        match self {
            Held::At(r) => Some(*r),
            Held::Absent | Held::Unreadable(_) => None,
        }
    }

    fn satisfies(&self, expected: Expected) -> bool {
        match expected {
            Expected::Absent => matches!(self, Held::Absent),
            Expected::Revision(r) => self.revision() == Some(r),
        }
    }
}

/// What one op of a batch does, decided before anything is written.
enum Verdict {
    /// It writes, at this revision.
    Writes(Revision),
    /// It writes nothing; its caller gets this.
    Refused(Error),
}

/// What readers will see of one op.
enum Effect {
    Save(Box<Versioned>),
    Delete(String),
}

/// What a batch does, decided before anything is written.
struct Decision {
    /// Each op's answer, in order: a save's new revision.
    results: Vec<Result<Option<Revision>>>,
    /// The journal frames to write (misses of `delete` write none).
    entries: Vec<Entry>,
    /// What readers will see, in order, each with its change.
    effects: Vec<(Effect, Bytes)>,
    /// The change to the count.
    delta: isize,
    /// The highest revision issued once the batch is durable.
    last: u64,
}

/// The batch's failure, once for each of its callers.
fn same_failure(e: &Error) -> Error {
    match e {
        Error::Storage { context, source } => Error::storage(context, source.to_string()),
        other => Error::storage("committing", other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::faults::{env, ids, runtime, save};
    use super::super::{RedbOptions, RedbStore};
    use super::*;
    use crate::repository::Repository;

    /// One batch that touches the same ids several times: each op is
    /// decided as of the ops before it, the count follows, and a reopen
    /// agrees.
    #[test]
    fn a_batch_sees_its_own_earlier_ops() {
        let rt = runtime();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let store = RedbStore::open_with(&path, RedbOptions::default()).expect("open");
        let lane = store.lane.clone().expect("a writable store");
        // `b` in the redb file, `k` only pending in the journal.
        rt.block_on(store.save(&env("b"))).expect("save b");
        lane.checkpoint_now();
        rt.block_on(store.save(&env("k"))).expect("save k");
        let delete = |id: &str| Op::Delete {
            id: id.into(),
            expected: None,
        };
        let ops = [
            (save("a"), true),
            (save("a"), true),
            (delete("a"), true),
            (delete("a"), false),
            (save("a"), true),
            (delete("b"), true),
            (delete("b"), false),
            (save("b"), true),
            (delete("c"), false),
            (delete("k"), true),
        ];
        let (requests, expected): (Vec<_>, Vec<_>) = ops
            .into_iter()
            .map(|(op, ok)| {
                let (reply, answer) = oneshot::channel();
                (Request { op, reply }, (answer, ok))
            })
            .unzip();
        lane.submit_batch(requests);
        for (i, (answer, ok)) in expected.into_iter().enumerate() {
            let result = answer.blocking_recv().expect("an answer");
            match (ok, &result) {
                (true, Ok(_)) | (false, Err(Error::NotFound { .. })) => {}
                _ => panic!("op {i}: {result:?}, expected ok: {ok}"),
            }
        }
        let want: std::collections::BTreeSet<String> = ["a", "b"].map(String::from).into();
        assert_eq!(ids(&rt, &store), want, "live");
        store.close().expect("close");
        let reopened = RedbStore::open(&path).expect("reopen");
        assert_eq!(ids(&rt, &reopened), want, "reopened");
    }

    /// Conditional writes in one batch are judged against the ops before
    /// them in it, and each write gets a higher revision than the last.
    #[test]
    fn conditions_in_one_batch_see_the_ops_before_them() {
        use crate::revisions::{Expected, Revision};
        let rt = runtime();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path().join("s.redb")).expect("open");
        let lane = store.lane.clone().expect("a writable store");
        let save_if = |id: &str, expected: Expected| match save(id) {
            Op::Save { env, payload, .. } => Op::Save {
                env,
                payload,
                expected: Some(expected),
            },
            other => other,
        };
        let delete_if = |id: &str, r: u64| Op::Delete {
            id: id.into(),
            expected: Some(Revision::new(r)),
        };
        // Revisions start at 1 in a new store.
        let ops = [
            save_if("n", Expected::Absent),                     // 1
            save_if("n", Expected::Absent),                     // conflict, found 1
            save_if("n", Expected::Revision(Revision::new(1))), // 2
            save_if("n", Expected::Revision(Revision::new(1))), // conflict, found 2
            delete_if("n", 1),                                  // conflict, found 2
            delete_if("n", 2),                                  // 3 (a delete)
            save_if("n", Expected::Revision(Revision::new(2))), // conflict, found none
            save_if("n", Expected::Absent),                     // 4
        ];
        let (requests, answers): (Vec<_>, Vec<_>) = ops
            .into_iter()
            .map(|op| {
                let (reply, answer) = oneshot::channel();
                (Request { op, reply }, answer)
            })
            .unzip();
        lane.submit_batch(requests);
        let got: Vec<String> = answers
            .into_iter()
            .map(|a| match a.blocking_recv().expect("an answer") {
                Ok(r) => format!("ok {:?}", r.map(Revision::get)),
                Err(Error::Conflict { found, .. }) => {
                    format!("conflict {:?}", found.map(Revision::get))
                }
                Err(e) => format!("error {e}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                "ok Some(1)",
                "conflict Some(1)",
                "ok Some(2)",
                "conflict Some(2)",
                "conflict Some(2)",
                "ok None",
                "conflict None",
                "ok Some(4)",
            ]
        );
        let v = rt
            .block_on(crate::Revisioned::find_revision(&store, "n"))
            .expect("find");
        assert_eq!(v.revision, Revision::new(4));
    }

    #[test]
    fn a_job_ending_where_the_last_one_did_has_its_own_outcome() {
        let checkpointer = Checkpointer::default();
        let first = checkpointer.job(Arc::default(), Arc::default(), 5, 0);
        checkpointer.finish(first.id, Ok(()));
        // Nothing written since: the next job ends at the same number.
        let second = checkpointer.job(Arc::default(), Arc::default(), 5, 0);
        assert_eq!(checkpointer.outcome(first.id, false), Some(Ok(())));
        assert_eq!(checkpointer.outcome(second.id, false), None);
        checkpointer.finish(second.id, Err("disk".into()));
        assert_eq!(
            checkpointer.outcome(second.id, false),
            Some(Err("disk".into()))
        );
    }
}
