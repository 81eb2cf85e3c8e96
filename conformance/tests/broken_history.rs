// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The history checks test themselves: a correct audited store passes
//! every check of the suite, and stores with one history defect each fail
//! exactly the checks named for them — every history check failed by at
//! least one — every run, with every core busy where the defect is racy.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use waggle_store::chrono::Utc;
use waggle_store::domain::validate_id;
use waggle_store::{
    Audited, Change, Environment, Error, Expected, Repository, Result, Revision, Revisioned,
    Versioned, async_trait,
};
use waggle_store_conformance::{
    CHECKS, Capability, Harness, run_check, run_history_check, run_revision_check,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    /// None: the store is correct.
    Correct,
    /// A refused conditional save still records a change.
    RefusedWriteRecorded,
    /// A delete records no change.
    DeleteNotRecorded,
    /// A plain save or delete records its change, awaits, then writes:
    /// dropped in between, the history holds a write that never landed.
    ChangeBeforeWrite,
    /// Each handle keeps the history in its own memory: a reopen loses it.
    HistoryNotPersisted,
    /// A plain save takes its revision, awaits, then lands: a follower
    /// that read a later revision meanwhile never sees it (revisions that
    /// commit out of order, followed without care).
    FollowerSkips,
    /// Pruning removes a stored id's latest change too.
    PruneDropsLatest,
    /// After pruning, `changes` from before it returns what is left, with
    /// no error: a silent gap.
    PruneSilent,
    /// `watch` reads the history, then (after an await) subscribes to new
    /// writes: a write in between is never yielded until another comes.
    WatchLosesHandover,
    /// `watch` starts one change after its cursor.
    WatchOffByOne,
}

const ORIGIN: &str = "self-test";

#[derive(Default)]
struct State {
    envs: BTreeMap<String, Versioned>,
    last: u64,
    changes: BTreeMap<u64, Change>,
    pruned: u64,
}

struct Durable {
    state: Mutex<State>,
    /// The last revision written: watchers wait for it to move.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Durable {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Store {
    defect: Defect,
    durable: Arc<Durable>,
    /// The history, for [`Defect::HistoryNotPersisted`].
    own: Mutex<BTreeMap<u64, Change>>,
}

impl Store {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.durable.state)
    }

    /// Records `change` where this store keeps its history.
    fn record(&self, state: &mut State, change: Change) {
        self.durable.changed.send_replace(change.revision.get());
        if self.defect == Defect::HistoryNotPersisted {
            lock(&self.own).insert(change.revision.get(), change);
        } else {
            state.changes.insert(change.revision.get(), change);
        }
    }

    fn changes(&self, state: &State) -> BTreeMap<u64, Change> {
        if self.defect == Defect::HistoryNotPersisted {
            lock(&self.own).clone()
        } else {
            state.changes.clone()
        }
    }

    fn next(state: &mut State) -> Revision {
        state.last += 1;
        Revision::new(state.last)
    }

    fn put(&self, state: &mut State, env: &Environment, revision: Revision) {
        state.envs.insert(
            env.id.clone(),
            Versioned {
                env: env.clone(),
                revision,
            },
        );
        self.record(
            state,
            Change::saved(revision, env.clone(), Utc::now(), ORIGIN),
        );
    }

    fn remove(&self, state: &mut State, id: &str) {
        state.envs.remove(id);
        let revision = Self::next(state);
        if self.defect != Defect::DeleteNotRecorded {
            self.record(state, Change::deleted(revision, id, Utc::now(), ORIGIN));
        }
    }

    fn found(state: &State, id: &str) -> Option<Revision> {
        state.envs.get(id).map(|v| v.revision)
    }
}

#[async_trait]
impl Repository for Store {
    async fn save(&self, env: &Environment) -> Result<()> {
        validate_id(&env.id)?;
        match self.defect {
            Defect::FollowerSkips => {
                let revision = Self::next(&mut self.state());
                tokio::task::yield_now().await;
                self.put(&mut self.state(), env, revision);
            }
            Defect::ChangeBeforeWrite => {
                let revision = {
                    let mut state = self.state();
                    let revision = Self::next(&mut state);
                    let change = Change::saved(revision, env.clone(), Utc::now(), ORIGIN);
                    self.record(&mut state, change);
                    revision
                };
                tokio::task::yield_now().await;
                let mut state = self.state();
                state.envs.insert(
                    env.id.clone(),
                    Versioned {
                        env: env.clone(),
                        revision,
                    },
                );
            }
            _ => {
                let mut state = self.state();
                let revision = Self::next(&mut state);
                self.put(&mut state, env, revision);
            }
        }
        Ok(())
    }
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.find_revision(id).await.map(|v| v.env)
    }
    async fn find_all(&self) -> Result<Vec<Environment>> {
        Ok(self.state().envs.values().map(|v| v.env.clone()).collect())
    }
    async fn delete(&self, id: &str) -> Result<()> {
        if self.defect == Defect::ChangeBeforeWrite {
            {
                let mut state = self.state();
                if !state.envs.contains_key(id) {
                    return Err(Error::not_found(id));
                }
                let revision = Self::next(&mut state);
                self.record(
                    &mut state,
                    Change::deleted(revision, id, Utc::now(), ORIGIN),
                );
            }
            tokio::task::yield_now().await;
            self.state().envs.remove(id);
            return Ok(());
        }
        let mut state = self.state();
        if !state.envs.contains_key(id) {
            return Err(Error::not_found(id));
        }
        self.remove(&mut state, id);
        Ok(())
    }
    async fn count(&self) -> Result<usize> {
        Ok(self.state().envs.len())
    }
}

#[async_trait]
impl Revisioned for Store {
    async fn find_revision(&self, id: &str) -> Result<Versioned> {
        self.state()
            .envs
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(id))
    }
    async fn find_all_revisions(&self) -> Result<Vec<Versioned>> {
        Ok(self.state().envs.values().cloned().collect())
    }
    async fn save_if(&self, env: &Environment, expected: Expected) -> Result<Revision> {
        validate_id(&env.id)?;
        let mut state = self.state();
        let found = Self::found(&state, &env.id);
        let holds = match expected {
            Expected::Absent => found.is_none(),
            Expected::Revision(r) => found == Some(r),
        };
        if !holds {
            if self.defect == Defect::RefusedWriteRecorded {
                let revision = Self::next(&mut state);
                let change = Change::saved(revision, env.clone(), Utc::now(), ORIGIN);
                self.record(&mut state, change);
            }
            return Err(Error::Conflict {
                id: env.id.clone(),
                expected,
                found,
            });
        }
        let revision = Self::next(&mut state);
        self.put(&mut state, env, revision);
        Ok(revision)
    }
    async fn delete_if(&self, id: &str, expected: Revision) -> Result<()> {
        let mut state = self.state();
        let found = Self::found(&state, id);
        if found != Some(expected) {
            return Err(Error::Conflict {
                id: id.to_owned(),
                expected: Expected::Revision(expected),
                found,
            });
        }
        self.remove(&mut state, id);
        Ok(())
    }
}

#[async_trait]
impl Audited for Store {
    async fn history(&self, id: &str) -> Result<Vec<Change>> {
        let state = self.state();
        Ok(self
            .changes(&state)
            .into_values()
            .filter(|c| c.id == id)
            .collect())
    }
    async fn changes(&self, after: Revision, limit: usize) -> Result<Vec<Change>> {
        let state = self.state();
        if after.get() < state.pruned && self.defect != Defect::PruneSilent {
            return Err(Error::HistoryPruned {
                after,
                through: Revision::new(state.pruned),
            });
        }
        Ok(self
            .changes(&state)
            .range(after.get().saturating_add(1)..)
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect())
    }
    async fn prune(&self, older_than: Duration) -> Result<usize> {
        let cutoff =
            Utc::now() - waggle_store::chrono::Duration::from_std(older_than).unwrap_or_default();
        let mut state = self.state();
        let gone: Vec<u64> = self
            .changes(&state)
            .iter()
            .filter(|(_, c)| c.at < cutoff)
            .filter(|(r, c)| {
                self.defect == Defect::PruneDropsLatest
                    || Self::found(&state, &c.id).map(Revision::get) != Some(**r)
            })
            .map(|(r, _)| *r)
            .collect();
        for r in &gone {
            state.changes.remove(r);
            lock(&self.own).remove(r);
            state.pruned = state.pruned.max(*r);
        }
        Ok(gone.len())
    }
    fn watch(&self, after: Revision) -> waggle_store::ChangeStream<'_> {
        let after = match self.defect {
            Defect::WatchOffByOne => Revision::new(after.get() + 1),
            _ => after,
        };
        waggle_store::history::follow(after, move |cursor| {
            let early = (self.defect != Defect::WatchLosesHandover)
                .then(|| self.durable.changed.subscribe());
            Box::pin(async move {
                let mut moved = early;
                loop {
                    let batch = Audited::changes(self, cursor, 64).await?;
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                    let moved = match &mut moved {
                        Some(moved) => moved,
                        None => {
                            // Subscribes late: a write meanwhile is missed.
                            tokio::task::yield_now().await;
                            moved.insert(self.durable.changed.subscribe())
                        }
                    };
                    moved.changed().await.map_err(|_| Error::Closed)?;
                }
            })
        })
    }
}

fn harness(defect: Defect) -> Harness<Store, Arc<Durable>> {
    let open = move |durable: &Arc<Durable>| Store {
        defect,
        durable: Arc::clone(durable),
        own: Mutex::default(),
    };
    Harness::new(move || async move {
        let durable = Arc::new(Durable::default());
        (open(&durable), durable)
    })
    .with_reopen(move |durable: &Arc<Durable>| {
        let store = open(durable);
        async move { store }
    })
    .with_share(move |durable: &Arc<Durable>| {
        let store = open(durable);
        async move { store }
    })
}

/// Runs one check of any kind against `defect`; panics if it fails.
fn run(defect: Defect, name: &str) {
    let h = harness(defect);
    let check = CHECKS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"));
    if check.needs(Capability::History) {
        run_history_check(name, &h);
    } else if check.needs(Capability::Revisions) {
        run_revision_check(name, &h);
    } else {
        run_check(name, &h);
    }
}

/// Runs every check against the defect; returns the names that failed.
fn failing_checks(defect: Defect) -> BTreeSet<&'static str> {
    CHECKS
        .iter()
        .filter(|check| catch_unwind(AssertUnwindSafe(|| run(defect, check.name))).is_err())
        .map(|check| check.name)
        .collect()
}

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

        /// Every history check is failed by at least one broken store.
        #[test]
        fn every_history_check_is_failed_by_some_broken_store() {
            let caught: BTreeSet<&str> = [$($($check,)*)*].into_iter().collect();
            let missing: Vec<&str> = CHECKS
                .iter()
                .filter(|c| c.needs(Capability::History))
                .map(|c| c.name)
                .filter(|n| !caught.contains(n))
                .collect();
            assert!(missing.is_empty(), "no broken store fails {missing:?}");
        }
    };
}

broken! {
    correct_store_passes_everything: Correct => [];
    refused_write_recorded: RefusedWriteRecorded => ["history_complete"]
        maybe ["changes_follower"];
    delete_not_recorded: DeleteNotRecorded =>
        ["changes_follower", "history_cancellation", "history_complete", "history_retention",
         "history_with_reopen", "watch_changes"];
    change_before_write: ChangeBeforeWrite => ["history_cancellation", "revisions_increase"]
        maybe ["concurrent_linearizable", "shared_linearizable"];
    history_not_persisted: HistoryNotPersisted =>
        ["changes_follower", "history_with_reopen", "watch_changes"];
    follower_skips: FollowerSkips => ["changes_follower"]
        maybe ["revisions_increase", "watch_changes"];
    prune_drops_latest: PruneDropsLatest => ["history_retention"];
    prune_silent: PruneSilent => ["history_retention"];
    watch_loses_handover: WatchLosesHandover => ["watch_changes"];
    watch_off_by_one: WatchOffByOne => ["watch_changes"];
}

/// Defects that show only in some interleavings or timings, and the checks
/// that must catch them: every run, with every core busy.
const RACY: &[(Defect, &[&str])] = &[
    (Defect::ChangeBeforeWrite, &["history_cancellation"]),
    (Defect::FollowerSkips, &["changes_follower"]),
];

#[test]
fn racy_defects_are_caught_every_run() {
    support::assert_caught_every_run(RACY, run);
}
