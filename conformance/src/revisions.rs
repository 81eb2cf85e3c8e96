// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Revisions and conditional writes ([`Revisioned`]): conflicts, revisions
//! that only grow, cancellation of each new operation, no lost update under
//! contention, and random sequences against a model with revisions. Only
//! for backends that give the macro `revisions: true`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use waggle_store::{
    Environment, Error, Expected, Revision, Revisioned, RevisionedExt, Runtime, Versioned,
};

use crate::generate;
use crate::harness::Harness;

/// A write under test, its answer reduced to success or the error.
type Write<'a> = Pin<Box<dyn Future<Output = waggle_store::Result<()>> + Send + 'a>>;

fn value(id: &str, tag: u64) -> Environment {
    let mut e = Environment::new_at(id, format!("v{tag}"), Runtime::Python, Default::default());
    e.ssh_port = (tag % 65_536) as u16;
    e
}

async fn read<S: Revisioned>(store: &S, case: &str, id: &str) -> Option<Versioned> {
    match store.find_revision(id).await {
        Ok(v) => Some(v),
        Err(Error::NotFound { id: got }) if got == id => None,
        Err(e) => panic!("case {case:?}: find_revision({id:?}) failed: {e}"),
    }
}

/// Asserts `result` is a conflict on `id` expecting `expected`, finding
/// `found`.
fn assert_conflict<T: std::fmt::Debug>(
    case: &str,
    result: waggle_store::Result<T>,
    id: &str,
    expected: Expected,
    found: Option<Revision>,
) {
    match result {
        Err(Error::Conflict {
            id: got,
            expected: e,
            found: f,
        }) if got == id && e == expected && f == found => {}
        other => panic!(
            "case {case:?}: expected Conflict {{ id: {id:?}, expected: {expected:?}, found: {found:?} }}, got {other:?}"
        ),
    }
}

/// Conditional writes land only when the stored revision (or absence) is
/// the one expected; otherwise a `Conflict` carrying the id, what was
/// expected and what is stored, and nothing written.
pub async fn revision_conflicts<S: Revisioned + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let s = inst.store();
    let ok = |case: &'static str| move |e: Error| -> Revision { panic!("case {case:?}: {e}") };

    let r1 = s
        .save_if(&value("a", 1), Expected::Absent)
        .await
        .unwrap_or_else(ok("create when absent"));
    let got = read(s, "create when absent", "a").await;
    assert_eq!(
        got,
        Some(Versioned {
            env: value("a", 1),
            revision: r1
        }),
        "case \"create when absent\": find_revision returns the value and the revision save_if returned"
    );

    // Each row: a case, the write, what the conflict must say; after each,
    // the stored value and revision must be unchanged.
    let rows: Vec<(&str, Write<'_>, &str, Expected, Option<Revision>)> = vec![
        (
            "create when present",
            Box::pin(async { s.save_if(&value("a", 2), Expected::Absent).await.map(drop) }),
            "a",
            Expected::Absent,
            Some(r1),
        ),
        (
            "expect a revision when absent",
            Box::pin(async {
                s.save_if(&value("b", 1), Expected::Revision(r1))
                    .await
                    .map(drop)
            }),
            "b",
            Expected::Revision(r1),
            None,
        ),
        (
            "delete_if when absent",
            Box::pin(s.delete_if("b", r1)),
            "b",
            Expected::Revision(r1),
            None,
        ),
    ];
    for (case, write, id, expected, found) in rows {
        assert_conflict(case, write.await, id, expected, found);
        assert_eq!(
            read(s, case, "a").await.map(|v| (v.env, v.revision)),
            Some((value("a", 1), r1)),
            "case {case:?}: a refused write changed the stored value"
        );
        assert_eq!(
            read(s, case, "b").await,
            None,
            "case {case:?}: a refused write stored a value"
        );
    }

    let r2 = s
        .save_if(&value("a", 3), Expected::Revision(r1))
        .await
        .unwrap_or_else(ok("save at the current revision"));
    assert!(
        r2 > r1,
        "case \"save at the current revision\": revision {r2} after {r1}"
    );
    let stale_rows: Vec<(&str, Write<'_>)> = vec![
        (
            "save at a stale revision",
            Box::pin(async {
                s.save_if(&value("a", 4), Expected::Revision(r1))
                    .await
                    .map(drop)
            }),
        ),
        (
            "delete_if at a stale revision",
            Box::pin(s.delete_if("a", r1)),
        ),
    ];
    for (case, write) in stale_rows {
        assert_conflict(case, write.await, "a", Expected::Revision(r1), Some(r2));
        assert_eq!(
            read(s, case, "a").await.map(|v| (v.env, v.revision)),
            Some((value("a", 3), r2)),
            "case {case:?}: a refused write changed the stored value"
        );
    }

    let all = s
        .find_all_revisions()
        .await
        .unwrap_or_else(|e| panic!("case \"find_all_revisions\": {e}"));
    assert_eq!(
        all,
        vec![Versioned {
            env: value("a", 3),
            revision: r2
        }],
        "case \"find_all_revisions\": every value with its revision"
    );

    s.delete_if("a", r2)
        .await
        .unwrap_or_else(|e| panic!("case \"delete_if at the current revision\": {e}"));
    assert_eq!(
        read(s, "delete_if at the current revision", "a").await,
        None
    );

    // An id `save` refuses is never stored: reads and conditional deletes
    // answer as for any id that is not stored; writes that would store it
    // refuse it.
    for (name, id) in generate::invalid_ids() {
        let case = format!("invalid id: {name}");
        match s.find_revision(&id).await {
            Err(Error::NotFound { id: got }) if got == id => {}
            other => panic!(
                "case {case:?}: find_revision of an id save refuses: expected NotFound {{ id: {id:?} }}, got {other:?}"
            ),
        }
        assert_conflict(
            &format!("{case}: delete_if"),
            s.delete_if(&id, r2).await,
            &id,
            Expected::Revision(r2),
            None,
        );
        for expected in [Expected::Absent, Expected::Revision(r2)] {
            match s.save_if(&value(&id, 1), expected).await {
                Err(Error::InvalidId(e)) if e.id == id => {}
                other => panic!(
                    "case {case:?}: save_if expecting {expected}: expected InvalidId carrying the id, got {other:?}"
                ),
            }
        }
    }
    let n = s.count().await.unwrap_or_else(|e| panic!("count: {e}"));
    assert_eq!(
        n, 0,
        "case \"count after the cases\": refused writes stored something"
    );
}

/// Revisions of an id strictly increase across plain and conditional
/// saves, deletes and re-creates — and, where the backend can reopen,
/// across reopens, a delete before one included (no revision issued twice).
/// With writers and readers at once, on one handle and (where the backend
/// offers `share`) over two, no read sees an id's revision go down and a
/// write's revision is above every one visible when it began
/// ([`revision_order`](crate::revision_order)).
pub async fn revisions_increase<S: Revisioned + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    {
        let inst = h.fresh().await;
        crate::revision_order::revisions_in_order(&[inst.shared()]).await;
    }
    if h.can_share() {
        let inst = h.fresh().await;
        let handles = [inst.shared(), inst.second_handle().await];
        crate::revision_order::revisions_in_order(&handles).await;
    }
    let mut inst = h.fresh().await;
    let mut seen: Vec<(&str, Revision)> = Vec::new();
    let mut step = async |inst: &crate::Instance<'_, S, G>, case: &'static str| {
        let s = inst.store();
        let rev = match case {
            "plain save" | "plain upsert" | "plain save after delete" => {
                s.save(&value("m", seen.len() as u64))
                    .await
                    .unwrap_or_else(|e| panic!("case {case:?}: {e}"));
                read(s, case, "m")
                    .await
                    .unwrap_or_else(|| panic!("case {case:?}: the value is gone"))
                    .revision
            }
            "save_if current" => {
                let current = read(s, case, "m").await.map(|v| v.revision);
                let expected = current.map_or(Expected::Absent, Expected::Revision);
                s.save_if(&value("m", seen.len() as u64), expected)
                    .await
                    .unwrap_or_else(|e| panic!("case {case:?}: {e}"))
            }
            _ => unreachable!(),
        };
        if let Some((before, last)) = seen.last() {
            assert!(
                rev > *last,
                "case {case:?}: {rev} does not follow {last} (after {before:?})"
            );
        }
        seen.push((case, rev));
    };
    step(&inst, "plain save").await;
    step(&inst, "plain upsert").await;
    step(&inst, "save_if current").await;
    inst.store()
        .delete("m")
        .await
        .unwrap_or_else(|e| panic!("case \"delete\": {e}"));
    step(&inst, "plain save after delete").await;
    let last = read(inst.store(), "delete_if", "m")
        .await
        .unwrap_or_else(|| panic!("case \"delete_if\": the value is gone"));
    inst.store()
        .delete_if("m", last.revision)
        .await
        .unwrap_or_else(|e| panic!("case \"delete_if\": {e}"));
    step(&inst, "save_if current").await;
    if !h.can_reopen() {
        return;
    }
    let before = read(inst.store(), "before reopen", "m").await;
    inst.reopen().await;
    assert_eq!(
        read(inst.store(), "after reopen", "m").await,
        before,
        "case \"after reopen\": the value or its revision changed"
    );
    step(&inst, "plain upsert").await;
    inst.store()
        .delete("m")
        .await
        .unwrap_or_else(|e| panic!("case \"delete before reopen\": {e}"));
    inst.reopen().await;
    step(&inst, "save_if current").await;
    step(&inst, "plain upsert").await;
}

type Op<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Each new operation dropped after 0…8 polls leaves the value and its
/// revision as before or as fully after (a new value comes with a newer
/// revision), the store usable, and never lands after a later write.
pub async fn revision_cancellation<S: Revisioned + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let s = inst.store();
    for round in 0..9usize {
        for kind in [
            "save_if current",
            "save_if stale",
            "save_if absent",
            "delete_if",
            "update",
            "find_revision",
        ] {
            let case = format!("{kind}, dropped after {round} polls");
            let id = "c";
            if read(s, &case, id).await.is_none() {
                s.save(&value(id, 0))
                    .await
                    .unwrap_or_else(|e| panic!("case {case:?}: seeding: {e}"));
            }
            let before = read(s, &case, id)
                .await
                .unwrap_or_else(|| panic!("case {case:?}: seeded value missing"));
            let new = value(id, 100 + round as u64);
            let (op, after): (Op<'_>, Option<Environment>) = match kind {
                "save_if current" => (
                    Box::pin({
                        let new = new.clone();
                        async move {
                            let _ = s.save_if(&new, Expected::Revision(before.revision)).await;
                        }
                    }),
                    Some(new),
                ),
                "save_if stale" => (
                    Box::pin({
                        let new = new.clone();
                        let stale = Revision::new(before.revision.get().saturating_sub(1));
                        async move {
                            let _ = s.save_if(&new, Expected::Revision(stale)).await;
                        }
                    }),
                    Some(before.env.clone()),
                ),
                "save_if absent" => (
                    Box::pin({
                        let new = new.clone();
                        async move {
                            let _ = s.save_if(&new, Expected::Absent).await;
                        }
                    }),
                    Some(before.env.clone()),
                ),
                "delete_if" => (
                    Box::pin(async move {
                        let _ = s.delete_if(id, before.revision).await;
                    }),
                    None,
                ),
                "update" => {
                    let mut bumped = before.env.clone();
                    bumped.ssh_port = bumped.ssh_port.wrapping_add(1);
                    (
                        Box::pin(async move {
                            let _ = s
                                .update(id, |e| {
                                    e.ssh_port = e.ssh_port.wrapping_add(1);
                                    Ok(())
                                })
                                .await;
                        }),
                        Some(bumped),
                    )
                }
                _ => (
                    Box::pin(async move {
                        let _ = s.find_revision(id).await;
                    }),
                    Some(before.env.clone()),
                ),
            };
            poll_then_drop(op, round).await;
            // A write of our own is the sync point: whatever the dropped
            // call set going has landed or been dropped once it returns.
            s.save(&value("zz-sync", 0))
                .await
                .unwrap_or_else(|e| panic!("case {case:?}: the store did not answer: {e}"));
            let found = read(s, &case, id).await;
            let landed = match (&found, &after) {
                (Some(v), _) if v == &before => false,
                (Some(v), Some(a)) if &v.env == a => {
                    assert!(
                        v.revision > before.revision,
                        "case {case:?}: the value changed but its revision did not grow ({} then {})",
                        before.revision,
                        v.revision
                    );
                    true
                }
                (None, None) => true,
                _ => panic!(
                    "case {case:?}: neither as before nor as after: before {before:?}, found {found:?}"
                ),
            };
            // Usable, and a later write is not overwritten by the dropped one.
            let current = found.as_ref().map(|v| v.revision);
            let later = value(id, 1000 + round as u64);
            let rev = s
                .save_if(&later, current.map_or(Expected::Absent, Expected::Revision))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "case {case:?} (landed: {landed}): a conditional save after it failed: {e}"
                    )
                });
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                read(s, &case, id).await,
                Some(Versioned {
                    env: later,
                    revision: rev
                }),
                "case {case:?}: a later write was overwritten or moved on after the dropped call"
            );
        }
    }
}

/// Polls `op` `polls` times (yielding between), then drops it.
async fn poll_then_drop(mut op: Op<'_>, polls: usize) {
    for _ in 0..polls {
        let done = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx).is_ready())).await;
        if done {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Tasks incrementing one field of one id at once.
const INCREMENTERS: usize = 64;

/// 64 tasks each add one to one field of one id at once — half through
/// `update`, half through their own `find_revision`, a yield (work a
/// server does between reading and writing) and `save_if`, retrying on
/// conflict: none of the increments is lost; where the backend offers a
/// second handle, again with the tasks split over both.
pub async fn lost_updates<S: Revisioned + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let mut rounds = vec![("one handle", vec![inst.shared()])];
    if h.can_share() {
        rounds.push((
            "two handles",
            vec![inst.shared(), inst.second_handle().await],
        ));
    }
    for (case, handles) in rounds {
        let seeded = handles[0]
            .save_if(&value(case_id(case), 0), Expected::Absent)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: seeding: {e}"));
        let after = increment_all(&handles, case_id(case)).await;
        let last = read(&*handles[0], case, case_id(case))
            .await
            .unwrap_or_else(|| panic!("case {case:?}: the value is gone"));
        assert_eq!(
            usize::from(last.env.ssh_port),
            INCREMENTERS,
            "case {case:?}: {INCREMENTERS} increments through update, {} kept: updates were lost",
            last.env.ssh_port
        );
        assert!(
            last.revision > seeded,
            "case {case:?}: the revision did not grow"
        );
        assert_eq!(
            after, INCREMENTERS,
            "case {case:?}: every update must succeed"
        );
    }
}

fn case_id(case: &str) -> &'static str {
    if case == "one handle" {
        "hot-1"
    } else {
        "hot-2"
    }
}

/// Runs the increments; returns how many `update`s succeeded (each must).
async fn increment_all<S: Revisioned + 'static>(handles: &[Arc<S>], id: &'static str) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..INCREMENTERS {
        let store = Arc::clone(&handles[t % handles.len()]);
        tasks.spawn(async move {
            if t % 2 == 0 {
                store
                    .update(id, |e| {
                        e.ssh_port += 1;
                        Ok(())
                    })
                    .await
                    .unwrap_or_else(|e| panic!("update {t} failed: {e}"));
                return;
            }
            for _ in 0..100_000 {
                let read = store
                    .find_revision(id)
                    .await
                    .unwrap_or_else(|e| panic!("task {t}: find_revision failed: {e}"));
                tokio::task::yield_now().await;
                let mut env = read.env;
                env.ssh_port += 1;
                match store.save_if(&env, Expected::Revision(read.revision)).await {
                    Ok(_) => return,
                    Err(Error::Conflict { .. }) => tokio::task::yield_now().await,
                    Err(e) => panic!("task {t}: save_if failed: {e}"),
                }
            }
            panic!("task {t}: 100,000 conflicts in a row");
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        done += 1;
    }
    done
}

/// One step of a generated sequence with revisions.
#[derive(Debug, Clone)]
pub enum RevStep {
    /// Plain save.
    Save(usize, u64),
    /// Conditional save expecting nothing stored.
    SaveIfAbsent(usize, u64),
    /// Conditional save at the revision last read or written.
    SaveIfCurrent(usize, u64),
    /// Conditional save at an older revision of the id, if there is one.
    SaveIfStale(usize, u64),
    /// Plain delete.
    Delete(usize),
    /// Conditional delete at the current revision.
    DeleteIfCurrent(usize),
    /// Conditional delete at an older revision, if there is one.
    DeleteIfStale(usize),
    /// Read the value with its revision.
    Find(usize),
    /// Increment through `update`.
    Update(usize),
    /// Drop the store and open the same storage again
    /// ([`Variant::Reopen`] only).
    Reopen,
}

/// A step and the handle it runs on: 0, or 1 for the second handle
/// ([`Variant::Shared`] only).
#[derive(Clone)]
pub struct Call {
    /// The handle.
    pub handle: usize,
    /// The step.
    pub step: RevStep,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "on handle {}: {:?}", self.handle, self.step)
    }
}

/// Which revision model check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// One handle (`model_revisions`).
    Plain,
    /// One handle, with reopens among the steps
    /// (`model_revisions_with_reopen`).
    Reopen,
    /// Each step on one of two handles on the same storage
    /// (`model_revisions_shared`).
    Shared,
}

const MODEL_IDS: [&str; 3] = ["a", "b", "ü-☃"];

fn rev_step(variant: Variant) -> impl Strategy<Value = Call> {
    let id = 0..MODEL_IDS.len();
    let tag = 0u64..1000;
    let reopen = if variant == Variant::Reopen { 1 } else { 0 };
    let handles: usize = if variant == Variant::Shared { 2 } else { 1 };
    let step = prop_oneof![
        reopen => Just(RevStep::Reopen),
        3 => (id.clone(), tag.clone()).prop_map(|(i, t)| RevStep::Save(i, t)),
        3 => (id.clone(), tag.clone()).prop_map(|(i, t)| RevStep::SaveIfAbsent(i, t)),
        3 => (id.clone(), tag.clone()).prop_map(|(i, t)| RevStep::SaveIfCurrent(i, t)),
        3 => (id.clone(), tag).prop_map(|(i, t)| RevStep::SaveIfStale(i, t)),
        3 => id.clone().prop_map(RevStep::Delete),
        3 => id.clone().prop_map(RevStep::DeleteIfCurrent),
        3 => id.clone().prop_map(RevStep::DeleteIfStale),
        3 => id.clone().prop_map(RevStep::Find),
        3 => id.prop_map(RevStep::Update),
    ];
    (0..handles, step).prop_map(|(handle, step)| Call { handle, step })
}

/// Sequences every run tries before the generated ones, so the defects
/// they aim at are caught every run, not by luck: for reopens, each kind of
/// conditional write and `update` kept; over two handles, a condition or a
/// revision that one handle knows and the other does not.
fn fixed_sequences(variant: Variant) -> Vec<Vec<Call>> {
    use RevStep::*;
    let on = |handle: usize, step: RevStep| Call { handle, step };
    let one = |steps: Vec<RevStep>| steps.into_iter().map(|s| on(0, s)).collect::<Vec<_>>();
    match variant {
        Variant::Plain => Vec::new(),
        Variant::Reopen => vec![
            one(vec![
                SaveIfAbsent(0, 1),
                DeleteIfCurrent(0),
                Reopen,
                Find(0),
            ]),
            one(vec![Save(0, 1), Update(0), Reopen, Find(0), Update(0)]),
            one(vec![
                SaveIfAbsent(0, 1),
                SaveIfCurrent(0, 2),
                Reopen,
                Find(0),
                SaveIfStale(0, 3),
                SaveIfCurrent(0, 4),
            ]),
            one(vec![
                SaveIfAbsent(0, 1),
                Delete(0),
                Reopen,
                SaveIfAbsent(0, 2),
                Reopen,
                Find(0),
            ]),
        ],
        Variant::Shared => vec![
            vec![
                on(0, SaveIfAbsent(0, 1)),
                on(1, SaveIfCurrent(0, 2)),
                on(0, SaveIfStale(0, 3)),
                on(0, DeleteIfStale(0)),
                on(1, Find(0)),
            ],
            vec![
                on(0, SaveIfAbsent(0, 1)),
                on(0, SaveIfCurrent(0, 2)),
                on(0, SaveIfCurrent(0, 3)),
                on(1, Save(0, 4)),
                on(1, Find(0)),
                on(0, Find(0)),
            ],
            vec![
                on(0, SaveIfAbsent(0, 1)),
                on(1, DeleteIfCurrent(0)),
                on(0, Find(0)),
                on(0, SaveIfAbsent(0, 2)),
            ],
            vec![
                on(1, Save(0, 1)),
                on(0, Update(0)),
                on(1, Update(0)),
                on(0, Find(0)),
            ],
        ],
    }
}

/// The model of one id: its value and revision (once the store has told
/// it), and every revision the store ever showed for it.
#[derive(Default)]
struct Slot {
    value: Option<Environment>,
    revision: Option<Revision>,
    history: Vec<Revision>,
}

impl Slot {
    /// The newest revision shown for the id that is not its current one.
    fn stale(&self) -> Option<Revision> {
        self.history
            .iter()
            .rev()
            .find(|r| Some(**r) != self.revision)
            .copied()
    }

    /// Whether a conditional write expecting `expected` must land.
    fn holds(&self, expected: Expected) -> bool {
        match expected {
            Expected::Absent => self.value.is_none(),
            Expected::Revision(r) => self.value.is_some() && self.revision == Some(r),
        }
    }
}

impl RevStep {
    /// The id a conditional step writes, whose revision it must know.
    fn conditional(&self) -> Option<usize> {
        match self {
            RevStep::SaveIfAbsent(n, _)
            | RevStep::SaveIfCurrent(n, _)
            | RevStep::SaveIfStale(n, _)
            | RevStep::DeleteIfCurrent(n)
            | RevStep::DeleteIfStale(n) => Some(*n),
            _ => None,
        }
    }
}

async fn run_rev_steps<S: Revisioned + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    calls: &[Call],
    variant: Variant,
) -> Result<(), TestCaseError> {
    let mut inst = h.fresh().await;
    let second = match variant {
        Variant::Shared => Some(inst.second_handle().await),
        _ => None,
    };
    let mut model: BTreeMap<usize, Slot> = BTreeMap::new();
    for (i, call) in calls.iter().enumerate() {
        let step = &call.step;
        let fail = |why: String| TestCaseError::fail(format!("step {i} ({call:?}): {why}"));
        if let RevStep::Reopen = step {
            inst.reopen().await;
        }
        let s: &S = match (&second, call.handle) {
            (Some(second), 1) => second,
            _ => inst.store(),
        };
        let id_of = |n: usize| MODEL_IDS[n];
        // A newly shown revision must follow every earlier one of the id.
        let fresh = |slot: &mut Slot, r: Revision| -> Result<(), TestCaseError> {
            if let Some(last) = slot.history.last()
                && r <= *last
            {
                return Err(fail(format!("{r} does not follow {last}")));
            }
            slot.history.push(r);
            slot.revision = Some(r);
            Ok(())
        };
        if let Some(n) = step.conditional() {
            let slot = model.entry(n).or_default();
            if slot.value.is_some() && slot.revision.is_none() {
                // Learn the revision of a plain write first.
                let v = s
                    .find_revision(id_of(n))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                fresh(slot, v.revision)?;
            }
        }
        match step {
            RevStep::Save(n, tag) => {
                s.save(&value(id_of(*n), *tag))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let slot = model.entry(*n).or_default();
                slot.value = Some(value(id_of(*n), *tag));
                slot.revision = None;
            }
            RevStep::SaveIfAbsent(n, tag)
            | RevStep::SaveIfCurrent(n, tag)
            | RevStep::SaveIfStale(n, tag) => {
                let slot = model.entry(*n).or_default();
                let expected = match step {
                    RevStep::SaveIfAbsent(..) => Expected::Absent,
                    RevStep::SaveIfCurrent(..) => slot
                        .revision
                        .filter(|_| slot.value.is_some())
                        .map_or(Expected::Absent, Expected::Revision),
                    _ => match slot.stale() {
                        Some(r) => Expected::Revision(r),
                        None => continue,
                    },
                };
                let holds = slot.holds(expected);
                let env = value(id_of(*n), *tag);
                match (s.save_if(&env, expected).await, holds) {
                    (Ok(r), true) => {
                        fresh(slot, r)?;
                        slot.value = Some(env);
                    }
                    (Err(Error::Conflict { found, .. }), false) => {
                        let current = slot.value.as_ref().and(slot.revision);
                        if found != current {
                            return Err(fail(format!(
                                "conflict found {found:?}, model {current:?}"
                            )));
                        }
                    }
                    (other, holds) => {
                        return Err(fail(format!(
                            "got {other:?}; the model says the condition holds: {holds}"
                        )));
                    }
                }
            }
            RevStep::Delete(n) => {
                let slot = model.entry(*n).or_default();
                match (s.delete(id_of(*n)).await, slot.value.is_some()) {
                    (Ok(()), true) | (Err(Error::NotFound { .. }), false) => {}
                    (other, present) => {
                        return Err(fail(format!("got {other:?}, present: {present}")));
                    }
                }
                slot.value = None;
                slot.revision = None;
            }
            RevStep::DeleteIfCurrent(n) | RevStep::DeleteIfStale(n) => {
                let slot = model.entry(*n).or_default();
                let target = match step {
                    RevStep::DeleteIfCurrent(_) => slot.revision.or(slot.history.last().copied()),
                    _ => slot.stale(),
                };
                let Some(target) = target else { continue };
                let holds = slot.holds(Expected::Revision(target));
                match (s.delete_if(id_of(*n), target).await, holds) {
                    (Ok(()), true) => {
                        slot.value = None;
                        slot.revision = None;
                    }
                    (Err(Error::Conflict { .. }), false) => {}
                    (other, holds) => {
                        return Err(fail(format!(
                            "got {other:?}; the model says the condition holds: {holds}"
                        )));
                    }
                }
            }
            RevStep::Find(n) => {
                let slot = model.entry(*n).or_default();
                match (s.find_revision(id_of(*n)).await, &slot.value) {
                    (Ok(v), Some(env)) if &v.env == env => match slot.revision {
                        Some(r) if r != v.revision => {
                            return Err(fail(format!("revision {} read, {r} written", v.revision)));
                        }
                        Some(_) => {}
                        None => fresh(slot, v.revision)?,
                    },
                    (Err(Error::NotFound { .. }), None) => {}
                    (other, _) => {
                        return Err(fail(format!("got {other:?}, model {:?}", slot.value)));
                    }
                }
            }
            RevStep::Reopen => {}
            RevStep::Update(n) => {
                let slot = model.entry(*n).or_default();
                let bump = |e: &mut Environment| {
                    e.ssh_port = e.ssh_port.wrapping_add(1);
                    Ok(())
                };
                match (s.update(id_of(*n), bump).await, &mut slot.value) {
                    (Ok(v), Some(env)) => {
                        env.ssh_port = env.ssh_port.wrapping_add(1);
                        if &v.env != env {
                            return Err(fail(format!("update saved {:?}, model {env:?}", v.env)));
                        }
                        fresh(slot, v.revision)?;
                    }
                    (Err(Error::NotFound { .. }), None) => {}
                    (other, _) => {
                        return Err(fail(format!("got {other:?}, model {:?}", slot.value)));
                    }
                }
            }
        }
        // After every step: every value with its revision agrees, on every
        // handle.
        let mut handles = vec![inst.store()];
        handles.extend(second.as_deref());
        for (handle, s) in handles.into_iter().enumerate() {
            let fail = |why: String| fail(format!("on handle {handle}: {why}"));
            agrees(s, &model, fail).await?;
        }
    }
    Ok(())
}

/// Whether `find_all_revisions` on `s` agrees with the model: every value,
/// and every revision the model knows.
async fn agrees<S: Revisioned>(
    s: &S,
    model: &BTreeMap<usize, Slot>,
    fail: impl Fn(String) -> TestCaseError,
) -> Result<(), TestCaseError> {
    let id_of = |n: usize| MODEL_IDS[n];
    {
        let all = s
            .find_all_revisions()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let expected: Vec<(&str, &Environment)> = model
            .iter()
            .filter_map(|(n, slot)| slot.value.as_ref().map(|v| (id_of(*n), v)))
            .collect();
        let mut expected = expected;
        expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let got: Vec<(&str, &Environment)> =
            all.iter().map(|v| (v.env.id.as_str(), &v.env)).collect();
        if got != expected {
            return Err(fail(format!(
                "contents disagree: {got:?} vs model {expected:?}"
            )));
        }
        for v in &all {
            let n = MODEL_IDS.iter().position(|id| *id == v.env.id).unwrap_or(0);
            if let Some(r) = model.get(&n).and_then(|slot| slot.revision)
                && r != v.revision
            {
                return Err(fail(format!(
                    "{:?}: find_all_revisions says {}, the store said {r}",
                    v.env.id, v.revision
                )));
            }
        }
    }
    Ok(())
}

/// Random sequences of plain and conditional writes, reads and updates
/// agree with a model that tracks each id's value and revision: conditions
/// hold exactly when the model says, conflicts report what is stored, and
/// every revision shown follows the ones before it. With
/// [`Variant::Reopen`] the sequences reopen the store, and a few fixed
/// ones come first; with [`Variant::Shared`] each step runs on one of two
/// handles on the same storage, and every handle must agree after each.
pub fn model_revisions<S: Revisioned + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    rt: &tokio::runtime::Runtime,
    variant: Variant,
) {
    for calls in fixed_sequences(variant) {
        if let Err(TestCaseError::Fail(why)) = rt.block_on(run_rev_steps(h, &calls, variant)) {
            crate::model::fail_with_sequence(&why, &calls);
        }
    }
    let config = Config {
        cases: crate::cases(),
        max_shrink_iters: 1024,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(rev_step(variant), 1..40), |calls| {
        rt.block_on(run_rev_steps(h, &calls, variant))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, calls)) => crate::model::fail_with_sequence(&why, &calls),
        Err(e) => panic!("model check failed: {e}"),
    }
}
