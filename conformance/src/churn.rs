// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Snapshots under every kind of write: one writer inserts, deletes and
//! overwrites while readers read, and every aggregate read — `count`,
//! `find_all`, `find_all_revisions` — must equal a state the writer passed
//! through. Part of `snapshot_reads` and `revision_snapshots`.
//!
//! The writer slides a window of ids downwards: it inserts an id below
//! every stored one, deletes the highest, overwrites one in the middle, and
//! again. Every state holds 8 or 9 values, so a `count` or a `find_all`
//! that is not one snapshot (it scans ids in order while the writer
//! inserts behind it and deletes ahead of it) shows 7: a state that never
//! existed. With revisions, the writer writes conditionally and knows each
//! value's revision, so a `find_all_revisions` that pairs a value with a
//! revision it never had is caught too.
//!
//! The writer records every state it passed through. A read is judged once
//! the writer is done: it must equal one of the states between the writes
//! acknowledged before it began and the writes begun before it returned,
//! and each reader's reads never go back. Two phases:
//!
//! * **Interleaved, deterministically**: a read is polled `k` times
//!   (k = 1 … 19), then driven together (`join`, the writes polled first)
//!   with an insert and a delete: a read part way through its records when
//!   they ran is torn, however the scheduler interleaves.
//! * **Racing**: readers read while the writer runs.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Instant;

use waggle_store::{Environment, Error, Expected, Repository, Revision, Revisioned, Runtime};

/// Values in every state: the window holds this many, or one more.
const WINDOW: u64 = 8;
/// Writes in the racing phase.
const RACE_WRITES: u64 = 240;
const READERS: usize = 3;

/// One stored value as a state records it: id, tag, and revision when the
/// writer knows it.
type Entry = (String, u64, Option<Revision>);

/// What a read returned, as a state is compared with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// `count`.
    Count(usize),
    /// `find_all`: ids and tags.
    All(Vec<(String, u64)>),
    /// `find_all_revisions`: ids, tags and revisions.
    AllRevisions(Vec<(String, u64, Revision)>),
}

impl Read {
    fn matches(&self, state: &[Entry]) -> bool {
        match self {
            Read::Count(n) => *n == state.len(),
            Read::All(all) => all
                .iter()
                .map(|(id, tag)| (id, tag))
                .eq(state.iter().map(|(id, tag, _)| (id, tag))),
            Read::AllRevisions(all) => all
                .iter()
                .map(|(id, tag, r)| (id, tag, Some(*r)))
                .eq(state.iter().map(|(id, tag, r)| (id, tag, *r))),
        }
    }
}

fn tag_of(env: &Environment) -> u64 {
    env.name
        .strip_prefix('v')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("read a value that no task saved: {env:?}"))
}

fn value(id: &str, tag: u64) -> Environment {
    Environment::new_at(id, format!("v{tag}"), Runtime::Shell, Default::default())
}

/// Reads with `find_all`.
pub(crate) async fn find_all<S: Repository>(store: &S) -> Read {
    let all = store
        .find_all()
        .await
        .unwrap_or_else(|e| panic!("find_all failed: {e}"));
    Read::All(all.iter().map(|e| (e.id.clone(), tag_of(e))).collect())
}

/// Reads with `count`.
pub(crate) async fn count<S: Repository>(store: &S) -> Read {
    Read::Count(
        store
            .count()
            .await
            .unwrap_or_else(|e| panic!("count failed: {e}")),
    )
}

/// Reads with `find_all_revisions`.
pub(crate) async fn find_all_revisions<S: Revisioned>(store: &S) -> Read {
    let all = store
        .find_all_revisions()
        .await
        .unwrap_or_else(|e| panic!("find_all_revisions failed: {e}"));
    Read::AllRevisions(
        all.iter()
            .map(|v| (v.env.id.clone(), tag_of(&v.env), v.revision))
            .collect(),
    )
}

/// How the writer writes: plain calls, or conditional ones that tell it
/// each value's revision.
pub(crate) trait Writes: Send + Sync {
    /// Saves `env`, which is stored at `current` (or absent); its new
    /// revision if the call tells it.
    fn save<'a>(
        &'a self,
        env: &'a Environment,
        current: Option<Revision>,
    ) -> Pin<Box<dyn Future<Output = Option<Revision>> + Send + 'a>>;
    /// Deletes `id`, stored at `current`.
    fn delete<'a>(
        &'a self,
        id: &'a str,
        current: Option<Revision>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// `save` and `delete`.
pub(crate) struct Plain<S>(pub Arc<S>);

impl<S: Repository> Writes for Plain<S> {
    fn save<'a>(
        &'a self,
        env: &'a Environment,
        _: Option<Revision>,
    ) -> Pin<Box<dyn Future<Output = Option<Revision>> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .save(env)
                .await
                .unwrap_or_else(|e| panic!("save({:?}) failed: {e}", env.id));
            None
        })
    }
    fn delete<'a>(
        &'a self,
        id: &'a str,
        _: Option<Revision>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            self.0
                .delete(id)
                .await
                .unwrap_or_else(|e| panic!("delete({id:?}) failed: {e}"));
        })
    }
}

/// `save_if` and `delete_if` at the revision the writer wrote.
pub(crate) struct Conditional<S>(pub Arc<S>);

impl<S: Revisioned> Writes for Conditional<S> {
    fn save<'a>(
        &'a self,
        env: &'a Environment,
        current: Option<Revision>,
    ) -> Pin<Box<dyn Future<Output = Option<Revision>> + Send + 'a>> {
        Box::pin(async move {
            let expected = current.map_or(Expected::Absent, Expected::Revision);
            let r = self
                .0
                .save_if(env, expected)
                .await
                .unwrap_or_else(|e| panic!("save_if({:?}, {expected}) failed: {e}", env.id));
            Some(r)
        })
    }
    fn delete<'a>(
        &'a self,
        id: &'a str,
        current: Option<Revision>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let r = current.unwrap_or_else(|| panic!("the writer lost {id:?}'s revision"));
            match self.0.delete_if(id, r).await {
                Ok(()) => {}
                Err(e @ Error::Conflict { .. }) => {
                    panic!("delete_if({id:?}, {r}) failed although nobody else writes: {e}")
                }
                Err(e) => panic!("delete_if({id:?}, {r}) failed: {e}"),
            }
        })
    }
}

/// The writer: the states it passed through, and how far it is.
pub(crate) struct Timeline {
    /// `states[j]`: what was stored once `j` writes were acknowledged.
    states: Mutex<Vec<Vec<Entry>>>,
    begun: AtomicU64,
    acked: AtomicU64,
    done: AtomicBool,
    /// The next id below the window.
    low: AtomicU64,
    tag: AtomicU64,
    started: Instant,
}

/// A read and the writes around it.
#[derive(Debug)]
struct Observed {
    acked_before: u64,
    begun_after: u64,
    read: Read,
}

impl Timeline {
    /// Seeds the window through `writer`.
    pub(crate) async fn seed<W: Writes>(writer: &W) -> Arc<Self> {
        let start = 5_000;
        let mut state = Vec::new();
        for n in start..start + WINDOW {
            let id = format!("c{n:05}");
            let revision = writer.save(&value(&id, 0), None).await;
            state.push((id, 0, revision));
        }
        Arc::new(Self {
            states: Mutex::new(vec![state]),
            begun: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            done: AtomicBool::new(false),
            low: AtomicU64::new(start - 1),
            tag: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn current(&self) -> Vec<Entry> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states.last().cloned().unwrap_or_default()
    }

    /// The writer's `i`-th write: insert below the window, delete its
    /// highest id, or overwrite its middle one.
    async fn step<W: Writes>(&self, writer: &W, i: u64) {
        let mut state = self.current();
        self.begun.fetch_add(1, Ordering::SeqCst);
        match i % 3 {
            0 => {
                let id = format!("c{:05}", self.low.fetch_sub(1, Ordering::SeqCst));
                let revision = writer.save(&value(&id, 0), None).await;
                state.insert(0, (id, 0, revision));
            }
            1 => {
                let (id, _, revision) = state.pop().unwrap_or_else(|| unreachable!());
                writer.delete(&id, revision).await;
            }
            _ => {
                let middle = state.len() / 2;
                let (id, _, revision) = state[middle].clone();
                let tag = self.tag.fetch_add(1, Ordering::SeqCst) + 1;
                let new = writer.save(&value(&id, tag), revision).await;
                state[middle] = (id, tag, new);
            }
        }
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(state);
        self.acked.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs `read`, noting the writes around it.
    async fn observe<F: Future<Output = Read>>(&self, read: F) -> Observed {
        let acked_before = self.acked.load(Ordering::SeqCst);
        let read = read.await;
        Observed {
            acked_before,
            begun_after: self.begun.load(Ordering::SeqCst),
            read,
        }
    }

    /// Judges one reader's reads, in the order it made them.
    fn judge(&self, what: &str, reads: &[Observed]) {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let mut earliest = 0u64;
        for (n, o) in reads.iter().enumerate() {
            let from = o.acked_before.max(earliest);
            let found = (from..=o.begun_after)
                .find(|j| states.get(*j as usize).is_some_and(|s| o.read.matches(s)));
            match found {
                Some(j) => earliest = j,
                None => {
                    let near: Vec<String> = (o.acked_before
                        ..=o.begun_after.min(o.acked_before + 3))
                        .filter_map(|j| {
                            states
                                .get(j as usize)
                                .map(|s| format!("  after {j} writes: {s:?}"))
                        })
                        .collect();
                    panic!(
                        "{what}: read {n} returned a state that never existed while one task inserted, deleted and overwrote ids (or one older than this reader had already seen): {:?}\nit began after {} writes were acknowledged and returned before write {} began; states then:\n{}",
                        o.read,
                        o.acked_before,
                        o.begun_after + 1,
                        near.join("\n")
                    );
                }
            }
        }
    }
}

/// The reads a phase makes: the `usize` picks which, in turn.
pub(crate) type Reader<S> = fn(Arc<S>, usize) -> Pin<Box<dyn Future<Output = Read> + Send>>;

/// Each read polled `k` times, then joined with an insert and a delete:
/// see the module docs. `kinds` reads are made with `reader`.
pub(crate) async fn interleaved<S, W>(
    what: &str,
    writer: &W,
    readers_on: Arc<S>,
    reader: Reader<S>,
    kinds: usize,
) where
    S: Repository + 'static,
    W: Writes,
{
    let timeline = Timeline::seed(writer).await;
    let mut i = 0;
    for kind in 0..kinds {
        let mut reads = Vec::new();
        for k in 1..=2 * WINDOW + 3 {
            let acked_before = timeline.acked.load(Ordering::SeqCst);
            let mut read = pin!(reader(Arc::clone(&readers_on), kind));
            let mut early = None;
            for _ in 0..k {
                let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
                if let Poll::Ready(got) = polled {
                    early = Some(got);
                    break;
                }
            }
            // An insert then a delete (the step numbers say which).
            let two_steps = async {
                while i % 3 == 2 {
                    timeline.step(writer, i).await;
                    i += 1;
                }
                timeline.step(writer, i).await;
                timeline.step(writer, i + 1).await;
                i += 2;
            };
            let got = match early {
                Some(got) => {
                    two_steps.await;
                    got
                }
                // The writes polled first: a read part way through its
                // records sees them land before it goes on.
                None => tokio::join!(two_steps, read).1,
            };
            reads.push(Observed {
                acked_before,
                begun_after: timeline.begun.load(Ordering::SeqCst),
                read: got,
            });
        }
        timeline.judge(&format!("{what}, interleaved"), &reads);
    }
}

/// Readers read with `reader` (each in turn of `kinds`) while the writer
/// makes [`RACE_WRITES`] writes.
pub(crate) async fn racing<S, W>(
    what: &str,
    writer: Arc<W>,
    readers_on: Arc<S>,
    reader: Reader<S>,
    kinds: usize,
) where
    S: Repository + 'static,
    W: Writes + 'static,
{
    let timeline = Timeline::seed(&*writer).await;
    let writing = {
        let timeline = Arc::clone(&timeline);
        tokio::spawn(async move {
            struct Done(Arc<Timeline>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.done.store(true, Ordering::SeqCst);
                }
            }
            let done = Done(Arc::clone(&timeline));
            for i in 0..RACE_WRITES {
                timeline.step(&*writer, i).await;
                if i % 2 == 1 {
                    tokio::task::yield_now().await;
                }
            }
            drop(done);
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..READERS {
        let timeline = Arc::clone(&timeline);
        let store = Arc::clone(&readers_on);
        tasks.spawn(async move {
            let mut reads = Vec::new();
            let mut n = r;
            loop {
                tokio::task::yield_now().await;
                assert!(
                    timeline.started.elapsed() < crate::snapshot::WRITER_LIMIT,
                    "the writer has not finished after {:?} ({} writes acknowledged): its writes make no progress",
                    crate::snapshot::WRITER_LIMIT,
                    timeline.acked.load(Ordering::SeqCst)
                );
                let last = timeline.done.load(Ordering::SeqCst);
                reads.push(timeline.observe(reader(Arc::clone(&store), n % kinds)).await);
                n += 1;
                if last {
                    return reads;
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.push(done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    writing
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    for (r, reads) in all.iter().enumerate() {
        timeline.judge(&format!("{what}, racing reader {r}"), reads);
    }
}
