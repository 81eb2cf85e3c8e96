// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The suite tests itself: deliberately broken stores, each with one defect,
//! must fail exactly the checks named for it — and every check must be
//! failed by at least one of them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use waggle_store::domain::{InvalidId, validate_id};
use waggle_store::{Environment, Error, Repository, Result, async_trait};
use waggle_store_conformance::{CHECKS, Capability, Check, Harness, run_check};

/// One defect each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    /// `delete` of a missing id returns `Ok`.
    DeleteMissingIsOk,
    /// `NotFound` carries an empty id.
    NotFoundWithoutId,
    /// `count` is a counter bumped by every save, upserts included.
    UpsertCountedTwice,
    /// Timestamps are stored to the second.
    TimestampsTruncated,
    /// The last deleted value lingers in `find_all`.
    StaleFindAllAfterDelete,
    /// `find_all` comes back in reverse order.
    FindAllUnsorted,
    /// `save` accepts any id.
    AcceptsInvalidIds,
    /// `find_by_id` touches the stored value as it reads it.
    FindTouchesStoredValue,
    /// Writes are buffered and only flushed every fourth write; a reopen
    /// loses the rest.
    LosesBufferOnReopen,
    /// `save` reads the map, awaits, then writes the whole map back.
    ReadModifyWriteAcrossAwait,
    /// `save` makes a value visible in two steps with an await between.
    TornSaveAcrossAwait,
    /// `count` scans synchronously and blocks the thread on big stores.
    BlockingCount,
    /// `find_by_id` reads a cache that writes update only after an await,
    /// once the change is already visible to `find_all`.
    CacheUpdatedLate,
    /// `save` refuses ids of 128 bytes: an off-by-one in the length limit.
    RefusesLongestIds,
    /// `find_all` lists the ids, then reads each record from the live map,
    /// yielding between records: it mixes states.
    TornFindAll,
    /// `count` reads a counter that writes update after an await, once the
    /// change is already visible to `find_all`.
    CountLagsBehind,
    /// `save` blocks its thread for 1 ms (a synchronous sync, say).
    BlocksEverySave,
    /// A write takes a 1 ms round trip; a dropped one is finished by a
    /// background retry 5 ms later, after whatever the caller did next.
    DroppedWriteLandsLate,
    /// Each handle works on its own copy of the storage, loaded when it was
    /// opened, and writes the whole copy back on every write: alone it is
    /// correct; beside a second handle each overwrites the other's writes.
    HandleKeepsOwnCopy,
    /// `find_by_id` answers from a cache of the handle's own reads and
    /// writes: alone it is correct; another handle's writes never reach it.
    CachesReads,
    /// `count` walks the ids one by one, yielding between them, so a write
    /// meanwhile is half in it.
    TornCount,
    /// A write takes a 100 µs round trip; a dropped one is retried by a
    /// task on the runtime 5 ms later, after whatever the caller did next.
    DroppedWriteRetriedByTask,
}

/// Runs a closure when dropped: finishes a write whose caller went away.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

type Map = BTreeMap<String, Environment>;

#[derive(Default)]
struct Durable {
    map: Mutex<Map>,
}

struct Broken {
    defect: Defect,
    durable: Arc<Durable>,
    /// Writes not yet flushed ([`Defect::LosesBufferOnReopen`] only).
    working: Mutex<Map>,
    writes: AtomicUsize,
    counter: AtomicUsize,
    ghost: Mutex<Option<Environment>>,
    cache: Mutex<Map>,
    /// How many values are stored, as [`Defect::CountLagsBehind`] counts.
    live: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broken {
    fn new(defect: Defect, durable: Arc<Durable>) -> Self {
        let working = Mutex::new(lock(&durable.map).clone());
        let counter_start = lock(&durable.map).len();
        let counter = AtomicUsize::new(counter_start);
        Self {
            defect,
            durable,
            working,
            writes: AtomicUsize::new(0),
            counter,
            ghost: Mutex::new(None),
            cache: Mutex::default(),
            live: AtomicUsize::new(counter_start),
        }
    }

    fn map(&self) -> MutexGuard<'_, Map> {
        if matches!(
            self.defect,
            Defect::LosesBufferOnReopen | Defect::HandleKeepsOwnCopy
        ) {
            lock(&self.working)
        } else {
            lock(&self.durable.map)
        }
    }

    fn wrote(&self) {
        let flush = match self.defect {
            Defect::LosesBufferOnReopen => self.writes.fetch_add(1, Ordering::SeqCst) % 4 == 3,
            Defect::HandleKeepsOwnCopy => true,
            _ => false,
        };
        if flush {
            *lock(&self.durable.map) = lock(&self.working).clone();
        }
    }

    /// A guard that, unless disarmed (`.0.take()`), applies the write 5 ms
    /// later from another thread: a background retry of a dropped call.
    fn retry_if_dropped(
        &self,
        id: &str,
        value: Option<Environment>,
    ) -> OnDrop<impl FnOnce() + use<>> {
        let durable = Arc::clone(&self.durable);
        let id = id.to_owned();
        OnDrop(Some(move || {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                let mut map = lock(&durable.map);
                match value {
                    Some(env) => map.insert(id, env),
                    None => map.remove(&id),
                };
            });
        }))
    }

    /// Like [`retry_if_dropped`](Self::retry_if_dropped), from a task on
    /// the runtime.
    fn retry_on_runtime_if_dropped(
        &self,
        id: &str,
        value: Option<Environment>,
    ) -> OnDrop<impl FnOnce() + use<>> {
        let durable = Arc::clone(&self.durable);
        let id = id.to_owned();
        OnDrop(Some(move || {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut map = lock(&durable.map);
                match value {
                    Some(env) => map.insert(id, env),
                    None => map.remove(&id),
                };
            });
        }))
    }

    fn not_found(&self, id: &str) -> Error {
        let id = if self.defect == Defect::NotFoundWithoutId {
            ""
        } else {
            id
        };
        Error::NotFound { id: id.to_owned() }
    }
}

#[async_trait]
impl Repository for Broken {
    async fn save(&self, env: &Environment) -> Result<()> {
        if self.defect != Defect::AcceptsInvalidIds {
            validate_id(&env.id)?;
        }
        if self.defect == Defect::RefusesLongestIds && env.id.len() >= 128 {
            return Err(InvalidId::new(env.id.clone(), "the id is too long").into());
        }
        if self.defect == Defect::BlocksEverySave {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut env = env.clone();
        if self.defect == Defect::TimestampsTruncated {
            use waggle_store::chrono::Timelike;
            env.created_at = env.created_at.with_nanosecond(0).unwrap_or(env.created_at);
            env.last_used = env.last_used.with_nanosecond(0).unwrap_or(env.last_used);
        }
        match self.defect {
            Defect::ReadModifyWriteAcrossAwait => {
                let mut copy = self.map().clone();
                tokio::task::yield_now().await;
                copy.insert(env.id.clone(), env);
                *self.map() = copy;
            }
            Defect::TornSaveAcrossAwait => {
                let mut half = self
                    .map()
                    .get(&env.id)
                    .cloned()
                    .unwrap_or_else(|| env.clone());
                half.name = env.name.clone();
                self.map().insert(env.id.clone(), half);
                tokio::time::sleep(Duration::from_millis(2)).await;
                self.map().insert(env.id.clone(), env);
            }
            Defect::CacheUpdatedLate => {
                self.map().insert(env.id.clone(), env.clone());
                tokio::time::sleep(Duration::from_millis(3)).await;
                lock(&self.cache).insert(env.id.clone(), env);
            }
            Defect::CountLagsBehind => {
                let new = self.map().insert(env.id.clone(), env).is_none();
                let _bump = OnDrop(Some(move || {
                    if new {
                        self.live.fetch_add(1, Ordering::SeqCst);
                    }
                }));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Defect::DroppedWriteLandsLate => {
                let mut retry = self.retry_if_dropped(&env.id, Some(env.clone()));
                tokio::time::sleep(Duration::from_millis(1)).await;
                retry.0.take();
                self.map().insert(env.id.clone(), env);
            }
            Defect::DroppedWriteRetriedByTask => {
                let mut retry = self.retry_on_runtime_if_dropped(&env.id, Some(env.clone()));
                tokio::time::sleep(Duration::from_micros(100)).await;
                retry.0.take();
                self.map().insert(env.id.clone(), env);
            }
            Defect::CachesReads => {
                let mut map = self.map();
                lock(&self.cache).insert(env.id.clone(), env.clone());
                map.insert(env.id.clone(), env);
            }
            _ => {
                self.map().insert(env.id.clone(), env);
            }
        }
        self.counter.fetch_add(1, Ordering::SeqCst);
        self.wrote();
        Ok(())
    }

    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        if matches!(self.defect, Defect::CacheUpdatedLate | Defect::CachesReads)
            && let Some(env) = lock(&self.cache).get(id).cloned()
        {
            return Ok(env);
        }
        let mut map = self.map();
        let env = map.get_mut(id).ok_or_else(|| self.not_found(id))?;
        if self.defect == Defect::CachesReads {
            lock(&self.cache).insert(id.to_owned(), env.clone());
        }
        if self.defect == Defect::FindTouchesStoredValue {
            env.last_used += Duration::from_millis(1);
        }
        Ok(env.clone())
    }

    async fn find_all(&self) -> Result<Vec<Environment>> {
        if self.defect == Defect::TornFindAll {
            let ids: Vec<String> = self.map().keys().cloned().collect();
            let mut all = Vec::with_capacity(ids.len());
            for id in ids {
                tokio::task::yield_now().await;
                all.extend(self.map().get(&id).cloned());
            }
            return Ok(all);
        }
        let mut all: Vec<Environment> = self.map().values().cloned().collect();
        match self.defect {
            Defect::FindAllUnsorted => all.reverse(),
            Defect::StaleFindAllAfterDelete => all.extend(lock(&self.ghost).clone()),
            _ => {}
        }
        Ok(all)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        if self.defect == Defect::DroppedWriteLandsLate {
            let mut retry = self.retry_if_dropped(id, None);
            tokio::time::sleep(Duration::from_millis(1)).await;
            retry.0.take();
        }
        if self.defect == Defect::DroppedWriteRetriedByTask {
            let mut retry = self.retry_on_runtime_if_dropped(id, None);
            tokio::time::sleep(Duration::from_micros(100)).await;
            retry.0.take();
        }
        let removed = {
            let mut map = self.map();
            if self.defect == Defect::CachesReads {
                lock(&self.cache).remove(id);
            }
            map.remove(id)
        };
        if self.defect == Defect::CountLagsBehind && removed.is_some() {
            let _drop = OnDrop(Some(move || {
                self.live.fetch_sub(1, Ordering::SeqCst);
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if self.defect == Defect::CacheUpdatedLate && removed.is_some() {
            tokio::time::sleep(Duration::from_millis(3)).await;
            lock(&self.cache).remove(id);
        }
        match removed {
            Some(env) => {
                *lock(&self.ghost) = Some(env);
                self.counter.fetch_sub(1, Ordering::SeqCst);
                self.wrote();
                Ok(())
            }
            None if self.defect == Defect::DeleteMissingIsOk => Ok(()),
            None => Err(self.not_found(id)),
        }
    }

    async fn count(&self) -> Result<usize> {
        if self.defect == Defect::TornCount {
            let mut n = 0;
            let mut next = self.map().keys().next().cloned();
            while let Some(id) = next {
                n += 1;
                tokio::task::yield_now().await;
                next = self
                    .map()
                    .range::<String, _>((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded))
                    .next()
                    .map(|(k, _)| k.clone());
            }
            return Ok(n);
        }
        let n = self.map().len();
        match self.defect {
            Defect::UpsertCountedTwice => Ok(self.counter.load(Ordering::SeqCst)),
            Defect::CountLagsBehind => Ok(self.live.load(Ordering::SeqCst)),
            Defect::BlockingCount if n > 100 => {
                std::thread::sleep(Duration::from_millis(400));
                Ok(n)
            }
            _ => Ok(n),
        }
    }
}

fn harness(defect: Defect) -> Harness<Broken, Arc<Durable>> {
    Harness::new(move || async move {
        let durable = Arc::new(Durable::default());
        (Broken::new(defect, Arc::clone(&durable)), durable)
    })
    .with_reopen(move |durable: &Arc<Durable>| {
        let store = Broken::new(defect, Arc::clone(durable));
        async move { store }
    })
    .with_share(move |durable: &Arc<Durable>| {
        let store = Broken::new(defect, Arc::clone(durable));
        async move { store }
    })
}

/// The checks these stores answer: all but the revision checks, which
/// `broken_revisions.rs` tests with stores that implement `Revisioned`.
fn repository_checks() -> impl Iterator<Item = &'static Check> {
    CHECKS
        .iter()
        .filter(|c| !c.needs(Capability::Revisions) && !c.needs(Capability::History))
}

/// Runs every check against the defect; returns the names that failed.
fn failing_checks(defect: Defect) -> BTreeSet<&'static str> {
    let h = harness(defect);
    repository_checks()
        .filter(|check| catch_unwind(AssertUnwindSafe(|| run_check(check.name, &h))).is_err())
        .map(|check| check.name)
        .collect()
}

/// Asserts `defect` fails exactly the checks `must`, plus any of `may`.
fn assert_fails(defect: Defect, must: &[&str], may: &[&str]) {
    support::assert_failed_exactly(&defect, &failing_checks(defect), must, may);
}

macro_rules! broken {
    ($($test:ident: $defect:ident => [$($check:literal),* $(,)?] $(maybe [$($maybe:literal),*])?;)*) => {
        $(
            #[test]
            fn $test() {
                assert_fails(Defect::$defect, &[$($check),*], &[$($($maybe),*)?]);
            }
        )*

        /// Every check of the suite is failed by at least one broken store.
        #[test]
        fn every_check_is_failed_by_some_broken_store() {
            let caught: BTreeSet<&str> = [$($($check,)*)*].into_iter().collect();
            let missing: Vec<&str> = repository_checks().map(|c| c.name).filter(|n| !caught.contains(n)).collect();
            assert!(missing.is_empty(), "no broken store fails {missing:?}");
        }
    };
}

broken! {
    delete_missing_is_ok: DeleteMissingIsOk =>
        ["delete", "model_sequences", "model_sequences_with_reopen", "not_found"]
        maybe ["concurrent_linearizable", "shared_linearizable"];
    not_found_without_id: NotFoundWithoutId =>
        ["delete", "model_sequences", "model_sequences_with_reopen", "not_found", "reopen_persists",
         "valid_ids"];
    upsert_counted_twice: UpsertCountedTwice =>
        ["cancel_after_polls", "cancel_by_timeout", "concurrent_linearizable", "count",
         "model_sequences", "model_sequences_with_reopen", "shared_distinct_writers",
         "shared_linearizable", "upsert"]
        maybe ["snapshot_reads"];
    timestamps_truncated: TimestampsTruncated =>
        ["model_sequences", "model_sequences_with_reopen", "reopen_persists", "round_trip", "upsert"];
    stale_find_all_after_delete: StaleFindAllAfterDelete =>
        ["cancel_after_polls", "cancel_by_timeout", "concurrent_linearizable", "count", "delete",
         "model_sequences", "model_sequences_with_reopen", "shared_linearizable", "snapshot_reads",
         "valid_ids"];
    find_all_unsorted: FindAllUnsorted =>
        ["delete", "find_all_order", "model_sequences", "model_sequences_with_reopen",
         "reopen_persists", "round_trip", "snapshot_reads", "upsert", "valid_ids"];
    accepts_invalid_ids: AcceptsInvalidIds => ["count", "invalid_ids"];
    find_touches_stored_value: FindTouchesStoredValue =>
        ["cancel_after_polls", "cancel_by_timeout", "cancel_settles", "concurrent_distinct_writers",
         "concurrent_linearizable", "copy_isolation", "delete", "find_all_order", "invalid_ids",
         "model_sequences", "model_sequences_with_reopen", "reopen_persists", "round_trip",
         "shared_distinct_writers", "shared_linearizable", "upsert", "valid_ids"];
    loses_buffer_on_reopen: LosesBufferOnReopen =>
        ["model_sequences_with_reopen", "reopen_persists", "shared_distinct_writers",
         "snapshot_reads"]
        maybe ["shared_linearizable"];
    read_modify_write_across_await: ReadModifyWriteAcrossAwait =>
        ["concurrent_distinct_writers", "shared_distinct_writers"]
        maybe ["concurrent_linearizable", "shared_linearizable"];
    torn_save_across_await: TornSaveAcrossAwait =>
        ["cancel_after_polls", "cancel_by_timeout"]
        maybe ["concurrent_linearizable", "shared_linearizable"];
    blocking_count: BlockingCount => ["no_blocking_poll", "no_executor_stall"];
    cache_updated_late: CacheUpdatedLate =>
        ["concurrent_linearizable", "shared_linearizable"]
        maybe ["cancel_after_polls", "cancel_by_timeout"];
    refuses_longest_ids: RefusesLongestIds => ["round_trip", "valid_ids"];
    torn_find_all: TornFindAll => ["snapshot_reads"];
    count_lags_behind: CountLagsBehind => ["shared_distinct_writers", "snapshot_reads"]
        maybe ["shared_linearizable"];
    blocks_every_save: BlocksEverySave => ["no_blocking_poll"];
    dropped_write_lands_late: DroppedWriteLandsLate =>
        ["cancel_settles"] maybe ["cancel_after_polls", "cancel_by_timeout"];
    handle_keeps_own_copy: HandleKeepsOwnCopy =>
        ["shared_distinct_writers", "shared_linearizable", "snapshot_reads"];
    caches_reads: CachesReads => ["shared_linearizable"];
    torn_count: TornCount => ["snapshot_reads"];
    dropped_write_retried_by_task: DroppedWriteRetriedByTask =>
        ["cancel_settles"] maybe ["cancel_after_polls", "cancel_by_timeout"];
}

/// Defects that show only in some interleavings or timings, and the checks
/// that must catch them: every run, with every core busy.
const RACY: &[(Defect, &[&str])] = &[
    (
        Defect::ReadModifyWriteAcrossAwait,
        &["concurrent_distinct_writers", "shared_distinct_writers"],
    ),
    (
        Defect::TornSaveAcrossAwait,
        &["cancel_after_polls", "cancel_by_timeout"],
    ),
    (
        Defect::CacheUpdatedLate,
        &["concurrent_linearizable", "shared_linearizable"],
    ),
    (Defect::TornFindAll, &["snapshot_reads"]),
    (
        Defect::CountLagsBehind,
        &["shared_distinct_writers", "snapshot_reads"],
    ),
    (Defect::DroppedWriteLandsLate, &["cancel_settles"]),
    (Defect::DroppedWriteRetriedByTask, &["cancel_settles"]),
    (
        Defect::HandleKeepsOwnCopy,
        &["shared_distinct_writers", "shared_linearizable"],
    ),
    (Defect::CachesReads, &["shared_linearizable"]),
    (Defect::TornCount, &["snapshot_reads"]),
];

#[test]
fn racy_defects_are_caught_every_run() {
    support::assert_caught_every_run(RACY, |defect, check| run_check(check, &harness(defect)));
}
