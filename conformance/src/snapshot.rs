// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Snapshot reads: `find_all`, `count` and `find_all_revisions` see a state
//! that existed.
//!
//! Per-id linearizability cannot see a `find_all` that mixes values from
//! before and after a run of saves, nor a `count` that disagrees with the
//! reads around it. Here one task writes in a fixed order while others
//! read, and every read must match a state the writer passed through:
//!
//! * **Inserts** (`count` against `find_all`): the writer saves new ids
//!   `i000, i001, …` in order, so every state is a prefix. Each `find_all`
//!   must be a prefix; each reader's reads never go back; a `count` lies
//!   between the `find_all`s its reader made just before and just after
//!   it; and every read lies between the writes acknowledged before it
//!   began and the writes begun before it ended.
//! * **Upserts** (`find_all` atomicity): the writer saves `s0 … s7` over
//!   and over in that order, each round one version higher. A snapshot can
//!   only show versions that do not increase along the order and differ by
//!   at most one; its position (the sum of the versions) never goes back
//!   for one reader and lies between the writes acknowledged and begun.
//! * **Interleaved, deterministically**: whether the race above catches a
//!   torn `find_all` depends on how the scheduler interleaves the tasks (a
//!   busy machine can run every round before a read begins). So one task
//!   also polls a `find_all` `k` times (k = 1, 2, …) and then drives it
//!   together with a whole round of saves (`join`, so a store whose read
//!   holds a lock its saves need still finishes): a read that was part way
//!   through its records when the round ran shows a later id newer than an
//!   earlier one.
//! * **Inserts, deletes and overwrites** ([`crate::churn`]): a
//!   writer that inserts one id and deletes another keeps every state at 8
//!   or 9 values, so a `count` or `find_all` that walks the ids while it
//!   writes shows 7. Interleaved and racing, with the reads on the writer's
//!   handle and, where the backend offers `share`, on a second one.
//!   `revision_snapshots` runs the same workload with conditional writes
//!   and `find_all_revisions`.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use waggle_store::{Environment, Repository, Revisioned, Runtime};

use crate::churn::{self, Read};
use crate::harness::Harness;

const READERS: usize = 3;
const INSERTS: u64 = 150;
const IDS: u64 = 8;
const ROUNDS: u64 = 100;

fn value(id: String, version: u64) -> Environment {
    Environment::new_at(
        id,
        format!("v{version}"),
        Runtime::Shell,
        Default::default(),
    )
}

fn version_of(env: &Environment) -> u64 {
    env.name
        .strip_prefix('v')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("read a value that no task saved: {env:?}"))
}

/// How long readers wait for the writer before the check gives up on it.
/// Generous: a store whose saves take milliseconds (a networked one)
/// needs seconds here, and must pass.
pub(crate) const WRITER_LIMIT: Duration = Duration::from_secs(120);

/// Sets `done` when dropped, so readers stop even if the writer panics.
struct Finished(Arc<Progress>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::SeqCst);
    }
}

/// Yields (stopping the reader with a failure if the writer is too slow),
/// then calls `find_all`. Returns whether the writer had finished before
/// it began, how many writes were acknowledged then, and what it returned.
async fn read_all<S: Repository>(store: &S, progress: &Progress) -> (bool, u64, Vec<Environment>) {
    tokio::task::yield_now().await;
    assert!(
        progress.started.elapsed() < WRITER_LIMIT,
        "the writer has not finished after {WRITER_LIMIT:?} ({} writes acknowledged): its saves make no progress",
        progress.acked.load(Ordering::SeqCst)
    );
    let last = progress.done.load(Ordering::SeqCst);
    let acked = progress.acked.load(Ordering::SeqCst);
    let all = store
        .find_all()
        .await
        .unwrap_or_else(|e| panic!("find_all failed: {e}"));
    (last, acked, all)
}

/// How far the writer is: writes begun and writes acknowledged.
struct Progress {
    started: Instant,
    begun: AtomicU64,
    acked: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            begun: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            done: AtomicBool::new(false),
        })
    }

    async fn write<S: Repository>(&self, store: &S, env: &Environment) {
        self.begun.fetch_add(1, Ordering::SeqCst);
        store
            .save(env)
            .await
            .unwrap_or_else(|e| panic!("save({:?}) failed: {e}", env.id));
        self.acked.fetch_add(1, Ordering::SeqCst);
    }

    /// Asserts a read that began when `acked_before` writes were
    /// acknowledged saw `position` writes, no more than were begun by now.
    fn bounds(&self, what: &str, acked_before: u64, position: u64) {
        let begun_after = self.begun.load(Ordering::SeqCst);
        assert!(
            (acked_before..=begun_after).contains(&position),
            "{what} saw {position} writes, but {acked_before} were acknowledged before it began and only {begun_after} had begun when it returned"
        );
    }
}

/// Runs `write` in one task and `read` in `READERS` tasks beside it, on
/// `store`; each reader stops once it has read after the writer finished.
/// A panic in any of them is raised here.
async fn race<S, W, WF, R, RF>(store: &Arc<S>, write: W, read: R)
where
    S: Repository + 'static,
    W: FnOnce(Arc<S>, Arc<Progress>) -> WF,
    WF: Future<Output = ()> + Send + 'static,
    R: Fn(Arc<S>, Arc<Progress>) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let progress = Progress::new();
    let writing = write(Arc::clone(store), Arc::clone(&progress));
    let finished = Finished(Arc::clone(&progress));
    let writer = tokio::spawn(async move {
        let _finished = finished;
        writing.await;
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        tasks.spawn(read(Arc::clone(store), Arc::clone(&progress)));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
    writer
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
}

async fn insert_reader<S: Repository>(store: Arc<S>, progress: Arc<Progress>) {
    let mut seen = 0; // the largest state this reader has seen
    loop {
        let (last, acked, all) = read_all(&*store, &progress).await;
        let len = all.len() as u64;
        for (i, env) in all.iter().enumerate() {
            assert_eq!(
                env.id,
                format!("i{i:03}"),
                "find_all during inserts in order must return a prefix of them, got ids {:?}",
                all.iter().map(|e| &e.id).collect::<Vec<_>>()
            );
        }
        assert!(
            len >= seen,
            "find_all saw {len} records after this task had seen {seen}: no record was deleted"
        );
        progress.bounds("find_all", acked, len);
        let acked = progress.acked.load(Ordering::SeqCst);
        let count = store
            .count()
            .await
            .unwrap_or_else(|e| panic!("count failed: {e}")) as u64;
        assert!(
            count >= len,
            "count returned {count} right after find_all returned {len} records: no record was deleted"
        );
        progress.bounds("count", acked, count);
        seen = count;
        if last {
            assert_eq!(count, INSERTS, "count after every insert");
            return;
        }
    }
}

async fn upsert_reader<S: Repository>(store: Arc<S>, progress: Arc<Progress>) {
    let ids: Vec<String> = (0..IDS).map(|i| format!("s{i}")).collect();
    let mut seen = 0;
    loop {
        let (last, acked, all) = read_all(&*store, &progress).await;
        let versions = assert_snapshot(&all, &ids);
        let position: u64 = versions.iter().sum();
        assert!(
            position >= seen,
            "find_all went back in time for one task: versions {versions:?} after it had seen {seen} writes"
        );
        progress.bounds("find_all", acked, position);
        seen = position;
        if last {
            return;
        }
    }
}

/// Asserts `all` is a snapshot of `s0 … s7` saved in order each round.
fn assert_snapshot(all: &[Environment], ids: &[String]) -> Vec<u64> {
    let versions: Vec<u64> = all.iter().map(version_of).collect();
    assert!(
        all.iter().map(|e| &e.id).eq(ids.iter()),
        "find_all must return every id while they are only overwritten, got {:?}",
        all.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    let ordered = versions.windows(2).all(|w| w[0] >= w[1]);
    let close = versions
        .first()
        .zip(versions.last())
        .is_some_and(|(a, b)| a - b <= 1);
    assert!(
        ordered && close,
        "find_all returned a state that never existed: versions {versions:?} of ids saved in order s0…s{} each round (a snapshot shows versions that never increase along the order and differ by at most one)",
        IDS - 1
    );
    versions
}

/// A `find_all` polled `k` times, then driven together with a whole round
/// of saves, for k = 1 … 2 × IDS + 1: see the module docs.
async fn interleaved_reads<S: Repository>(store: &S) {
    let ids: Vec<String> = (0..IDS).map(|i| format!("s{i}")).collect();
    let round = async |version: u64| {
        for id in &ids {
            store
                .save(&value(id.clone(), version))
                .await
                .unwrap_or_else(|e| panic!("save({id:?}) failed: {e}"));
        }
    };
    round(0).await;
    for k in 1..=2 * IDS + 1 {
        let mut read = pin!(store.find_all());
        let mut early = None;
        for _ in 0..k {
            let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            if let Poll::Ready(all) = polled {
                early = Some(all);
                break;
            }
        }
        let all = match early {
            Some(all) => {
                round(k).await;
                all
            }
            None => tokio::join!(read, round(k)).0,
        };
        let all = all.unwrap_or_else(|e| panic!("find_all failed: {e}"));
        assert_snapshot(&all, &ids);
    }
}

/// `find_all` and `count` return states that existed, while one task
/// inserts and then overwrites ids in a fixed order.
pub async fn snapshot_reads<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    // Inserts: count against find_all.
    let inst = h.fresh().await;
    let insert = async |store: Arc<S>, progress: Arc<Progress>| {
        for i in 0..INSERTS {
            progress.write(&*store, &value(format!("i{i:03}"), 0)).await;
            tokio::task::yield_now().await;
        }
    };
    race(&inst.shared(), insert, insert_reader).await;
    drop(inst);

    // Upserts: find_all atomicity.
    let inst = h.fresh().await;
    let store = inst.shared();
    for i in 0..IDS {
        store
            .save(&value(format!("s{i}"), 0))
            .await
            .unwrap_or_else(|e| panic!("seeding: {e}"));
    }
    let upsert = async |store: Arc<S>, progress: Arc<Progress>| {
        for round in 1..=ROUNDS {
            for i in 0..IDS {
                progress
                    .write(&*store, &value(format!("s{i}"), round))
                    .await;
            }
            // Yield between whole rounds only: a torn read that lets a
            // round complete between two of its records sees a later id
            // newer than an earlier one, however the tasks interleave.
            tokio::task::yield_now().await;
        }
    };
    race(&store, upsert, upsert_reader).await;
    drop(store);
    drop(inst);

    // Interleaved in one task: no luck involved.
    let inst = h.fresh().await;
    interleaved_reads(&*inst.shared()).await;
    drop(inst);

    // Inserts, deletes and overwrites: count and find_all.
    churn_phases(
        h,
        "snapshot_reads",
        |s| churn::Plain(s),
        plain_reads::<S>,
        2,
    )
    .await;
}

/// `find_all` or `count`, in turn.
fn plain_reads<S: Repository + 'static>(
    store: Arc<S>,
    n: usize,
) -> Pin<Box<dyn Future<Output = Read> + Send>> {
    Box::pin(async move {
        match n {
            0 => churn::find_all(&*store).await,
            _ => churn::count(&*store).await,
        }
    })
}

/// `find_all_revisions`, `count` or `find_all`, in turn.
fn revision_reads<S: Revisioned + 'static>(
    store: Arc<S>,
    n: usize,
) -> Pin<Box<dyn Future<Output = Read> + Send>> {
    Box::pin(async move {
        match n {
            0 => churn::find_all_revisions(&*store).await,
            1 => churn::count(&*store).await,
            _ => churn::find_all(&*store).await,
        }
    })
}

/// The churn workload ([`churn`]), interleaved then racing, with the
/// readers on the writer's handle and, where the backend offers `share`,
/// on a second handle.
async fn churn_phases<S, G, W>(
    h: &Harness<S, G>,
    what: &str,
    writer: impl Fn(Arc<S>) -> W,
    reader: churn::Reader<S>,
    kinds: usize,
) where
    S: Repository + 'static,
    G: Send + 'static,
    W: churn::Writes + 'static,
{
    let mut splits = vec!["one handle"];
    if h.can_share() {
        splits.push("reads on a second handle");
    }
    for split in splits {
        let what = format!("{what}, {split}");
        for racing in [false, true] {
            let inst = h.fresh().await;
            let writes_on = inst.shared();
            let reads_on = if split == "one handle" {
                Arc::clone(&writes_on)
            } else {
                inst.second_handle().await
            };
            let writer = writer(writes_on);
            if racing {
                churn::racing(&what, Arc::new(writer), reads_on, reader, kinds).await;
            } else {
                churn::interleaved(&what, &writer, reads_on, reader, kinds).await;
            }
        }
    }
}

/// `find_all_revisions` (and `count`, `find_all`) is one snapshot while a
/// writer inserts, overwrites and deletes with `save_if` and `delete_if`:
/// each value comes with the revision it was written at, in a state that
/// existed — read on the writer's handle and, where the backend offers
/// `share`, on a second one.
pub async fn revision_snapshots<S: Revisioned + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    churn_phases(
        h,
        "revision_snapshots",
        |s| churn::Conditional(s),
        revision_reads::<S>,
        3,
    )
    .await;
}
