// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Model-based property tests: random sequences of operations run against
//! the store and a `BTreeMap` reference model, compared after every step.
//! Sequences come from `proptest-state-machine`, which shrinks a failure to
//! a minimal sequence; the failure message prints it.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use waggle_store::{Environment, Error, Repository};

use crate::checks::assert_contents;
use crate::generate;
use crate::harness::Harness;

/// One step of a generated sequence.
#[derive(Debug, Clone)]
pub enum Step {
    /// Save a value under an id not stored yet.
    Save(Environment),
    /// Save a new value under an id already stored.
    Upsert(Environment),
    /// Find an id that is stored.
    Find(String),
    /// Find an id that is not stored.
    FindMissing(String),
    /// Delete an id that is stored.
    Delete(String),
    /// Delete an id that is not stored.
    DeleteMissing(String),
    /// Count.
    Count,
    /// Read everything.
    FindAll,
    /// Drop the store and open the same storage again.
    Reopen,
}

/// The reference model; `REOPEN` says whether `Reopen` steps are generated.
pub struct Model<const REOPEN: bool>;

const IDS: [&str; 6] = ["a", "b", "c", "ü-☃", "a-", "Z"];

fn pool_id() -> BoxedStrategy<String> {
    prop::sample::select(IDS.to_vec())
        .prop_map(str::to_owned)
        .boxed()
}

impl<const REOPEN: bool> ReferenceStateMachine for Model<REOPEN> {
    type State = BTreeMap<String, Environment>;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Self::State> {
        Just(BTreeMap::new()).boxed()
    }

    fn transitions(state: &Self::State) -> BoxedStrategy<Step> {
        let any_env = pool_id().prop_flat_map(generate::environment_with_id);
        let mut steps = vec![
            (4, any_env.clone().prop_map(Step::Save).boxed()),
            (2, pool_id().prop_map(Step::FindMissing).boxed()),
            (2, pool_id().prop_map(Step::DeleteMissing).boxed()),
            (1, Just(Step::Count).boxed()),
            (1, Just(Step::FindAll).boxed()),
        ];
        if REOPEN {
            steps.push((1, Just(Step::Reopen).boxed()));
        }
        if !state.is_empty() {
            let keys: Vec<String> = state.keys().cloned().collect();
            let existing = prop::sample::select(keys);
            steps.push((
                3,
                existing
                    .clone()
                    .prop_flat_map(generate::environment_with_id)
                    .prop_map(Step::Upsert)
                    .boxed(),
            ));
            steps.push((3, existing.clone().prop_map(Step::Find).boxed()));
            steps.push((2, existing.prop_map(Step::Delete).boxed()));
        }
        prop::strategy::Union::new_weighted(steps).boxed()
    }

    fn preconditions(state: &Self::State, step: &Step) -> bool {
        match step {
            Step::Save(e) => !state.contains_key(&e.id),
            Step::Upsert(e) => state.contains_key(&e.id),
            Step::Find(id) | Step::Delete(id) => state.contains_key(id),
            Step::FindMissing(id) | Step::DeleteMissing(id) => !state.contains_key(id),
            Step::Count | Step::FindAll => true,
            Step::Reopen => REOPEN,
        }
    }

    fn apply(mut state: Self::State, step: &Step) -> Self::State {
        match step {
            Step::Save(e) | Step::Upsert(e) => {
                state.insert(e.id.clone(), e.clone());
            }
            Step::Delete(id) => {
                state.remove(id);
            }
            _ => {}
        }
        state
    }
}

fn fail(i: usize, step: &Step, what: String) -> TestCaseError {
    TestCaseError::fail(format!("step {i} ({step:?}): {what}"))
}

async fn run_steps<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut inst = h.fresh().await;
    let mut model = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let store = inst.store();
        match step {
            Step::Save(e) | Step::Upsert(e) => {
                store
                    .save(e)
                    .await
                    .map_err(|err| fail(i, step, format!("save failed: {err}")))?;
                model.insert(e.id.clone(), e.clone());
            }
            Step::Find(id) => {
                let got = store
                    .find_by_id(id)
                    .await
                    .map_err(|err| fail(i, step, format!("find failed: {err}")))?;
                if model.get(id) != Some(&got) {
                    return Err(fail(i, step, "found a value other than the model's".into()));
                }
            }
            Step::FindMissing(id) | Step::DeleteMissing(id) => {
                let result = if matches!(step, Step::FindMissing(_)) {
                    store.find_by_id(id).await.map(drop)
                } else {
                    store.delete(id).await
                };
                match result {
                    Err(Error::NotFound { id: got }) if &got == id => {}
                    other => {
                        return Err(fail(
                            i,
                            step,
                            format!("expected NotFound carrying the id, got {other:?}"),
                        ));
                    }
                }
            }
            Step::Delete(id) => {
                store
                    .delete(id)
                    .await
                    .map_err(|err| fail(i, step, format!("delete failed: {err}")))?;
                model.remove(id);
            }
            Step::Count => {
                let n = store
                    .count()
                    .await
                    .map_err(|err| fail(i, step, format!("count failed: {err}")))?;
                if n != model.len() {
                    return Err(fail(i, step, format!("count {n}, model {}", model.len())));
                }
            }
            Step::FindAll => {}
            Step::Reopen => inst.reopen().await,
        }
        // After every step the whole contents must agree.
        let all = inst
            .store()
            .find_all()
            .await
            .map_err(|err| fail(i, step, format!("find_all failed: {err}")))?;
        if !all.iter().eq(model.values()) {
            return Err(fail(
                i,
                step,
                format!(
                    "contents disagree: store ids {:?}, model ids {:?}",
                    all.iter().map(|e| &e.id).collect::<Vec<_>>(),
                    model.keys().collect::<Vec<_>>()
                ),
            ));
        }
        let n = inst
            .store()
            .count()
            .await
            .map_err(|err| fail(i, step, format!("count failed: {err}")))?;
        if n != model.len() {
            return Err(fail(
                i,
                step,
                format!("count {n} after the step, model {}", model.len()),
            ));
        }
    }
    // And one last full comparison, find_by_id included.
    assert_contents("end of sequence", inst.store(), &model).await;
    Ok(())
}

fn run_model<const REOPEN: bool, S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    rt: &tokio::runtime::Runtime,
) {
    let config = Config {
        cases: crate::cases(),
        max_shrink_iters: 2048,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(
        &Model::<REOPEN>::sequential_strategy(1..48),
        |(_, steps, seen)| {
            let outcome = rt.block_on(run_steps(h, &steps));
            if let Some(seen) = seen {
                seen.store(steps.len(), std::sync::atomic::Ordering::SeqCst);
            }
            outcome
        },
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (_, steps, _))) => fail_with_sequence(&why, &steps),
        Err(e) => panic!("model check failed: {e}"),
    }
}

/// Fails a model check, listing the minimal failing sequence proptest
/// shrank it to.
pub(crate) fn fail_with_sequence<T: std::fmt::Debug>(
    why: &dyn std::fmt::Display,
    steps: &[T],
) -> ! {
    let listing: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("  {i}: {s:?}"))
        .collect();
    panic!(
        "model check failed: {why}\nminimal failing sequence ({} steps):\n{}",
        steps.len(),
        listing.join("\n")
    );
}

/// Random sequences of every operation agree with the model.
pub fn model_sequences<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    rt: &tokio::runtime::Runtime,
) {
    run_model::<false, S, G>(h, rt);
}

/// Random sequences with reopens agree with the model.
pub fn model_sequences_with_reopen<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    rt: &tokio::runtime::Runtime,
) {
    run_model::<true, S, G>(h, rt);
}
