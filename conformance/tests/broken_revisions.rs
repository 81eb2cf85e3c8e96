// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The revision checks test themselves: a correct revisioned store passes
//! every check of the suite, and stores with one revision defect each fail
//! exactly the checks named for them — every revision check failed by at
//! least one. Among them, `save_if` that ignores its condition: `update`
//! then is the blind read-modify-write a plain `save` gives, and
//! `lost_updates` catches the increments it loses.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use waggle_store::domain::validate_id;
use waggle_store::{
    Environment, Error, Expected, Repository, Result, Revision, Revisioned, Versioned, async_trait,
};
use waggle_store_conformance::{CHECKS, Capability, Harness, run_check, run_revision_check};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    /// None: the store is correct.
    Correct,
    /// `save_if` writes whatever is stored: `update` is a blind
    /// read-modify-write.
    IgnoresCondition,
    /// `save_if` compares, awaits, then writes without comparing again.
    CompareNotAtomic,
    /// A refused `save_if` still writes the value (and reports Conflict).
    ConflictStillWrites,
    /// An id's revision counts its own writes: a re-created id starts over.
    RevisionReusedAfterDelete,
    /// Revisions continue from the highest one stored after a reopen: a
    /// deleted id's revisions are issued again.
    CounterNotPersisted,
    /// `save_if` writes the value, awaits, then its revision.
    RevisionBumpedLate,
    /// A plain `save` takes its revision, then waits for the id (an await)
    /// and writes: two saves of one id can land in the other order than
    /// their revisions (`PgStore` before schema version 4).
    NumberBeforeRow,
    /// `save_if` compares against the revisions this handle wrote, when it
    /// wrote the id, and writes to the shared storage: alone it is
    /// correct; beside a second handle it misses the other's writes.
    ComparesCachedRevision,
    /// Each handle counts revisions on its own, from what was stored when
    /// it opened: alone it is correct; beside a second handle revisions go
    /// back and are issued twice.
    CounterPerHandle,
    /// `delete_if` hides the id in this handle's memory and never removes
    /// it from storage: a reopen, or another handle, still finds it.
    DeleteIfOnlyInMemory,
    /// `find_all_revisions` reads the values, awaits, then reads each
    /// one's revision.
    TwoPassRevisions,
    /// `find_revision` and `delete_if` refuse an id `save` would refuse
    /// with `InvalidId`, where `find_by_id` and `delete` say it is not
    /// stored.
    InvalidIdRefusedOnRead,
}

#[derive(Default)]
struct Durable {
    state: Mutex<State>,
}

#[derive(Default, Clone)]
struct State {
    map: BTreeMap<String, Versioned>,
    /// The last revision issued.
    last: u64,
}

/// Stores a copy of `env` at `revision`.
fn put(state: &mut State, env: &Environment, revision: Revision) {
    state.map.insert(
        env.id.clone(),
        Versioned {
            env: env.clone(),
            revision,
        },
    );
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Store {
    defect: Defect,
    durable: Arc<Durable>,
    /// What this handle alone knows.
    local: Mutex<Local>,
}

/// A handle's own memory (the per-handle defects only).
#[derive(Default)]
struct Local {
    /// The revision this handle last wrote of each id.
    written: BTreeMap<String, Revision>,
    /// The last revision this handle issued.
    last: u64,
    /// Ids this handle's `delete_if` hid.
    hidden: BTreeSet<String>,
}

impl Store {
    fn open(defect: Defect, durable: &Arc<Durable>) -> Self {
        if defect == Defect::CounterNotPersisted {
            let mut state = lock(&durable.state);
            state.last = state
                .map
                .values()
                .map(|v| v.revision.get())
                .max()
                .unwrap_or(0);
        }
        let last = lock(&durable.state).last;
        Self {
            defect,
            durable: Arc::clone(durable),
            local: Mutex::new(Local {
                last,
                ..Local::default()
            }),
        }
    }

    /// The value stored under `id`, as this handle shows it.
    fn lookup(&self, id: &str) -> Result<Versioned> {
        if self.hidden(id) {
            return Err(Error::not_found(id));
        }
        self.state()
            .map
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(id))
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        lock(&self.local)
    }

    /// Whether this handle's `delete_if` hid `id` ([`Defect::DeleteIfOnlyInMemory`]).
    fn hidden(&self, id: &str) -> bool {
        self.defect == Defect::DeleteIfOnlyInMemory && self.local().hidden.contains(id)
    }

    /// What this handle shows of `state`: all of it but the ids it hid.
    fn visible(&self, state: &State) -> Vec<Versioned> {
        state
            .map
            .values()
            .filter(|v| !self.hidden(&v.env.id))
            .cloned()
            .collect()
    }

    /// Stores `env` at `revision`, as this handle saw it written.
    fn put(&self, state: &mut State, env: &Environment, revision: Revision) {
        put(state, env, revision);
        let mut local = self.local();
        local.written.insert(env.id.clone(), revision);
        local.hidden.remove(&env.id);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.durable.state)
    }

    /// The revision a write of `id` gets, given `state`.
    fn next(&self, state: &mut State, id: &str) -> Revision {
        match self.defect {
            Defect::RevisionReusedAfterDelete => {
                let n = state.map.get(id).map_or(1, |v| v.revision.get() + 1);
                Revision::new(n)
            }
            Defect::CounterPerHandle => {
                let mut local = self.local();
                local.last += 1;
                Revision::new(local.last)
            }
            _ => {
                state.last += 1;
                Revision::new(state.last)
            }
        }
    }

    /// The revision stored under `id`, as this handle judges a condition.
    fn found(&self, state: &State, id: &str) -> Option<Revision> {
        if self.hidden(id) {
            return None;
        }
        let stored = state.map.get(id).map(|v| v.revision);
        if self.defect == Defect::ComparesCachedRevision && stored.is_some() {
            return self.local().written.get(id).copied().or(stored);
        }
        stored
    }

    fn conflict(&self, state: &State, id: &str, expected: Expected) -> Error {
        Error::Conflict {
            id: id.to_owned(),
            expected,
            found: self.found(state, id),
        }
    }

    fn holds(&self, state: &State, id: &str, expected: Expected) -> bool {
        let found = self.found(state, id);
        match expected {
            Expected::Absent => found.is_none(),
            Expected::Revision(r) => found == Some(r),
        }
    }
}

#[async_trait]
impl Repository for Store {
    async fn save(&self, env: &Environment) -> Result<()> {
        validate_id(&env.id)?;
        if self.defect == Defect::NumberBeforeRow {
            let revision = self.next(&mut self.state(), &env.id);
            tokio::task::yield_now().await;
            self.put(&mut self.state(), env, revision);
            return Ok(());
        }
        let mut state = self.state();
        let revision = self.next(&mut state, &env.id);
        self.put(&mut state, env, revision);
        Ok(())
    }
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.lookup(id).map(|v| v.env)
    }
    async fn find_all(&self) -> Result<Vec<Environment>> {
        Ok(self
            .visible(&self.state())
            .into_iter()
            .map(|v| v.env)
            .collect())
    }
    async fn delete(&self, id: &str) -> Result<()> {
        if self.hidden(id) {
            return Err(Error::not_found(id));
        }
        let mut state = self.state();
        state.map.remove(id).ok_or_else(|| Error::not_found(id))?;
        self.local().written.remove(id);
        if self.defect != Defect::RevisionReusedAfterDelete {
            self.next(&mut state, id);
        }
        Ok(())
    }
    async fn count(&self) -> Result<usize> {
        Ok(self.visible(&self.state()).len())
    }
}

#[async_trait]
impl Revisioned for Store {
    async fn find_revision(&self, id: &str) -> Result<Versioned> {
        if self.defect == Defect::InvalidIdRefusedOnRead {
            validate_id(id)?;
        }
        self.lookup(id)
    }
    async fn find_all_revisions(&self) -> Result<Vec<Versioned>> {
        if self.defect == Defect::TwoPassRevisions {
            let values: Vec<Environment> = self
                .visible(&self.state())
                .into_iter()
                .map(|v| v.env)
                .collect();
            tokio::task::yield_now().await;
            let state = self.state();
            return Ok(values
                .into_iter()
                .filter_map(|env| {
                    let revision = state.map.get(&env.id)?.revision;
                    Some(Versioned { env, revision })
                })
                .collect());
        }
        Ok(self.visible(&self.state()))
    }
    async fn save_if(&self, env: &Environment, expected: Expected) -> Result<Revision> {
        validate_id(&env.id)?;
        match self.defect {
            Defect::CompareNotAtomic => {
                if !self.holds(&self.state(), &env.id, expected) {
                    return Err(self.conflict(&self.state(), &env.id, expected));
                }
                tokio::task::yield_now().await;
            }
            Defect::RevisionBumpedLate => {
                {
                    let mut state = self.state();
                    if !self.holds(&state, &env.id, expected) {
                        return Err(self.conflict(&state, &env.id, expected));
                    }
                    let old = state.map.get(&env.id).map(|v| v.revision);
                    put(&mut state, env, old.unwrap_or(Revision::new(0)));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut state = self.state();
                let revision = self.next(&mut state, &env.id);
                if let Some(v) = state.map.get_mut(&env.id) {
                    v.revision = revision;
                }
                return Ok(revision);
            }
            _ => {}
        }
        let mut state = self.state();
        // CompareNotAtomic compared before its await, and does not again.
        let compares = !matches!(
            self.defect,
            Defect::IgnoresCondition | Defect::CompareNotAtomic
        );
        if compares && !self.holds(&state, &env.id, expected) {
            let conflict = self.conflict(&state, &env.id, expected);
            if self.defect == Defect::ConflictStillWrites {
                let revision = self.next(&mut state, &env.id);
                self.put(&mut state, env, revision);
            }
            return Err(conflict);
        }
        let revision = self.next(&mut state, &env.id);
        self.put(&mut state, env, revision);
        Ok(revision)
    }
    async fn delete_if(&self, id: &str, expected: Revision) -> Result<()> {
        if self.defect == Defect::InvalidIdRefusedOnRead {
            validate_id(id)?;
        }
        let mut state = self.state();
        if !self.holds(&state, id, Expected::Revision(expected)) {
            return Err(self.conflict(&state, id, Expected::Revision(expected)));
        }
        if self.defect == Defect::DeleteIfOnlyInMemory {
            self.local().hidden.insert(id.to_owned());
            return Ok(());
        }
        state.map.remove(id);
        self.local().written.remove(id);
        if self.defect != Defect::RevisionReusedAfterDelete {
            self.next(&mut state, id);
        }
        Ok(())
    }
}

fn harness(defect: Defect) -> Harness<Store, Arc<Durable>> {
    Harness::new(move || async move {
        let durable = Arc::new(Durable::default());
        (Store::open(defect, &durable), durable)
    })
    .with_reopen(move |durable: &Arc<Durable>| {
        let store = Store::open(defect, durable);
        async move { store }
    })
    .with_share(move |durable: &Arc<Durable>| {
        let store = Store::open(defect, durable);
        async move { store }
    })
}

/// Runs every check (revision checks included; not the history checks,
/// which `broken_history.rs` runs) against the defect; returns the names
/// that failed.
fn failing_checks(defect: Defect) -> BTreeSet<&'static str> {
    let h = harness(defect);
    CHECKS
        .iter()
        .filter(|check| !check.needs(Capability::History))
        .filter(|check| {
            catch_unwind(AssertUnwindSafe(|| {
                if check.needs(Capability::Revisions) {
                    run_revision_check(check.name, &h);
                } else {
                    run_check(check.name, &h);
                }
            }))
            .is_err()
        })
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

        /// Every revision check is failed by at least one broken store.
        #[test]
        fn every_revision_check_is_failed_by_some_broken_store() {
            let caught: BTreeSet<&str> = [$($($check,)*)*].into_iter().collect();
            let missing: Vec<&str> = CHECKS
                .iter()
                .filter(|c| c.needs(Capability::Revisions))
                .map(|c| c.name)
                .filter(|n| !caught.contains(n))
                .collect();
            assert!(missing.is_empty(), "no broken store fails {missing:?}");
        }
    };
}

broken! {
    correct_store_passes_everything: Correct => [];
    ignores_condition: IgnoresCondition =>
        ["lost_updates", "model_revisions", "model_revisions_shared",
         "model_revisions_with_reopen", "revision_cancellation", "revision_conflicts"];
    compare_not_atomic: CompareNotAtomic => ["lost_updates"];
    conflict_still_writes: ConflictStillWrites =>
        ["lost_updates", "model_revisions", "model_revisions_shared",
         "model_revisions_with_reopen", "revision_cancellation", "revision_conflicts"];
    revision_reused_after_delete: RevisionReusedAfterDelete =>
        ["model_revisions", "model_revisions_shared", "model_revisions_with_reopen",
         "revisions_increase"];
    counter_not_persisted: CounterNotPersisted =>
        ["model_revisions_with_reopen", "revisions_increase"];
    revision_bumped_late: RevisionBumpedLate => ["revision_cancellation"]
        maybe ["lost_updates", "revision_snapshots", "revisions_increase"];
    number_before_row: NumberBeforeRow => ["revisions_increase"];
    compares_cached_revision: ComparesCachedRevision => ["model_revisions_shared"]
        maybe ["lost_updates"];
    counter_per_handle: CounterPerHandle =>
        ["model_revisions_shared", "model_revisions_with_reopen", "revisions_increase"]
        maybe ["lost_updates"];
    delete_if_only_in_memory: DeleteIfOnlyInMemory =>
        ["model_revisions_shared", "model_revisions_with_reopen", "revision_snapshots"];
    two_pass_revisions: TwoPassRevisions => ["revision_snapshots"];
    invalid_id_refused_on_read: InvalidIdRefusedOnRead => ["revision_conflicts"];
}

/// The lost update `Revisioned` exists for, shown on a correct store:
/// 64 tasks incrementing one field with a blind `find_by_id` + `save`
/// (a yield between, as a server works between reading and writing) lose
/// increments; the same 64 through `update` lose none.
#[test]
fn a_blind_save_loses_updates_and_update_does_not() {
    use waggle_store::{MemoryStore, RevisionedExt, Runtime};
    const TASKS: u16 = 64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let run = |conditional: bool| -> u16 {
        rt.block_on(async {
            let store = Arc::new(MemoryStore::new());
            store
                .save(&Environment::new("hot", "x", Runtime::Shell))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..TASKS {
                let store = Arc::clone(&store);
                tasks.spawn(async move {
                    if conditional {
                        store
                            .update("hot", |e| {
                                e.ssh_port += 1;
                                Ok(())
                            })
                            .await
                            .map(drop)
                    } else {
                        let mut env = store.find_by_id("hot").await?;
                        tokio::task::yield_now().await;
                        env.ssh_port += 1;
                        store.save(&env).await
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap_or_else(|e| panic!("{e}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            store
                .find_by_id("hot")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .ssh_port
        })
    };
    let blind = run(false);
    let updated = run(true);
    println!(
        "{TASKS} increments: a blind find_by_id + save kept {blind} ({} lost); update kept {updated}",
        TASKS - blind
    );
    assert!(
        blind < TASKS,
        "the blind read-modify-write lost nothing this time"
    );
    assert_eq!(updated, TASKS, "update lost increments");
}

/// Defects that show only in some interleavings or timings, and the checks
/// that must catch them: every run, with every core busy.
const RACY: &[(Defect, &[&str])] = &[
    (Defect::CompareNotAtomic, &["lost_updates"]),
    (Defect::RevisionBumpedLate, &["revision_cancellation"]),
    (Defect::NumberBeforeRow, &["revisions_increase"]),
    (
        Defect::CounterPerHandle,
        &["revisions_increase", "model_revisions_shared"],
    ),
    (Defect::ComparesCachedRevision, &["model_revisions_shared"]),
    (Defect::TwoPassRevisions, &["revision_snapshots"]),
    (Defect::DeleteIfOnlyInMemory, &["revision_snapshots"]),
];

#[test]
fn racy_defects_are_caught_every_run() {
    support::assert_caught_every_run(RACY, |defect, check| {
        run_revision_check(check, &harness(defect))
    });
}
