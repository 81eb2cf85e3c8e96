// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Concurrency: many tasks at once, every call recorded, and each id's
//! history checked for linearizability against the model — on one handle,
//! and split over two handles on the same storage where the backend offers
//! a second one (`share`), as two servers on one database would be.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use waggle_store::{Environment, Error, Repository, Runtime};

use crate::harness::Harness;
use crate::linearizability::{self, Answer, Call, Event, Verdict};

/// Tasks in the first try; halved when a history is too large to decide.
const TASKS: usize = 32;
/// The fewest tasks tried before the check reports "inconclusive".
const MIN_TASKS: usize = 8;
const OPS_PER_TASK: usize = 8;
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
/// Search nodes the checker may expand per id before it gives up.
const BUDGET: u64 = 2_000_000;

fn value(key: &str, tag: u64) -> Environment {
    let mut e = Environment::new_at(key, format!("v{tag}"), Runtime::Node, Default::default());
    e.ssh_port = (tag % 65_536) as u16;
    e
}

fn tag_of(env: &Environment, key: &str) -> u64 {
    let tag = env.name.strip_prefix('v').and_then(|t| t.parse().ok());
    match tag {
        Some(tag) if *env == value(key, tag) => tag,
        _ => panic!("key {key:?}: read a value that no task saved: {env:?}"),
    }
}

/// What `all` (a `find_all`) says of `key`, as a find's answer.
fn answer_for(all: &[Environment], key: &str) -> Answer {
    all.iter()
        .find(|e| e.id == key)
        .map_or(Answer::NotFound, |e| Answer::Found(tag_of(e, key)))
}

/// Runs the workload with `tasks` tasks, task `t` on `handles[t % n]`;
/// returns each id's history, the quiescent read of it included as a last
/// call.
async fn record_history<S: Repository + 'static>(
    handles: &[Arc<S>],
    tasks: usize,
) -> BTreeMap<&'static str, Vec<Event>> {
    let clock = Arc::new(AtomicU64::new(0));
    let mut per_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    let mut running = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let clock = Arc::clone(&clock);
        let store = Arc::clone(&handles[t % handles.len()]);
        running.spawn(async move {
            let mut events = Vec::new();
            let tick = || clock.fetch_add(1, Ordering::SeqCst);
            for i in 0..OPS_PER_TASK {
                let key = KEYS[(t + i) % KEYS.len()];
                let tag = (t * 1000 + i) as u64;
                if (t * 7 + i * 3) % 10 == 7 {
                    // find_all, projected onto each key as a find with the
                    // same interval: it must agree with the per-key histories.
                    let invoked = tick();
                    let all = store
                        .find_all()
                        .await
                        .unwrap_or_else(|e| panic!("find_all failed: {e}"));
                    let returned = tick();
                    for key in KEYS {
                        events.push((
                            key,
                            Event {
                                call: Call::Find,
                                answer: answer_for(&all, key),
                                invoked,
                                returned,
                                task: t,
                            },
                        ));
                    }
                    continue;
                }
                let call = match (t * 7 + i * 3) % 10 {
                    0..=3 => Call::Save(tag),
                    4..=6 => Call::Find,
                    _ => Call::Delete,
                };
                let invoked = tick();
                let answer = match call {
                    Call::Save(tag) => match store.save(&value(key, tag)).await {
                        Ok(()) => Answer::Ok,
                        Err(e) => panic!("save({key:?}) failed: {e}"),
                    },
                    Call::Find => match store.find_by_id(key).await {
                        Ok(env) => Answer::Found(tag_of(&env, key)),
                        Err(Error::NotFound { .. }) => Answer::NotFound,
                        Err(e) => panic!("find_by_id({key:?}) failed: {e}"),
                    },
                    Call::Delete => match store.delete(key).await {
                        Ok(()) => Answer::Ok,
                        Err(Error::NotFound { .. }) => Answer::NotFound,
                        Err(e) => panic!("delete({key:?}) failed: {e}"),
                    },
                };
                let returned = tick();
                events.push((
                    key,
                    Event {
                        call,
                        answer,
                        invoked,
                        returned,
                        task: t,
                    },
                ));
                if i % 3 == 2 {
                    tokio::task::yield_now().await;
                }
            }
            events
        });
    }
    for events in join(running).await {
        for (key, event) in events {
            per_key.entry(key).or_default().push(event);
        }
    }
    // Once every task is done, what is stored is one more read of each id.
    let all = agreed_contents(handles).await;
    let invoked = clock.fetch_add(1, Ordering::SeqCst);
    for key in KEYS {
        per_key.entry(key).or_default().push(Event {
            call: Call::Find,
            answer: answer_for(&all, key),
            invoked,
            returned: invoked + 1,
            task: usize::MAX,
        });
    }
    per_key
}

/// ≥ 32 tasks on a multi-thread runtime mix saves, finds, deletes and
/// find_all (projected onto each id) on four shared ids; each id's history,
/// ending with what is stored once they are done, must be linearizable,
/// and count must equal find_all's length.
///
/// The search has a budget per id. A history it cannot decide within it is
/// recorded again with half the tasks (down to 8); if even that cannot be
/// decided the check fails as inconclusive, naming the history's size.
pub async fn concurrent_linearizable<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
) {
    linearizable_over(h, Handles::One).await;
}

/// As [`concurrent_linearizable`], with the tasks split over two handles
/// on the same storage (the backend's `share`): a call on one handle is
/// ordered with calls on the other by real time, as if both were one store.
pub async fn shared_linearizable<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    linearizable_over(h, Handles::Two).await;
}

/// How many handles the tasks of a concurrency check are split over.
#[derive(Clone, Copy)]
enum Handles {
    One,
    /// The fresh store and a second from the backend's `share`.
    Two,
}

async fn handles<S: Repository + 'static, G: Send + 'static>(
    inst: &crate::Instance<'_, S, G>,
    handles: Handles,
) -> Vec<Arc<S>> {
    match handles {
        Handles::One => vec![inst.shared()],
        Handles::Two => vec![inst.shared(), inst.second_handle().await],
    }
}

async fn linearizable_over<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    split: Handles,
) {
    let mut tasks = TASKS;
    loop {
        let inst = h.fresh().await;
        let per_key = record_history(&handles(&inst, split).await, tasks).await;
        let mut undecided = None;
        for (key, events) in &per_key {
            match linearizability::check(events, BUDGET) {
                Verdict::Linearizable => {}
                Verdict::NotLinearizable(report) => panic!(
                    "key {key:?}: the history of {} calls ({tasks} tasks; the last is the read after they all finished) is not linearizable:\n{report}",
                    events.len()
                ),
                Verdict::Inconclusive { calls, steps } => {
                    undecided.get_or_insert((*key, calls, steps));
                }
            }
        }
        match undecided {
            None => return,
            Some(_) if tasks > MIN_TASKS => tasks /= 2,
            Some((key, calls, steps)) => panic!(
                "inconclusive: key {key:?}'s history of {calls} calls ({tasks} tasks) could not be decided within {steps} search steps; this is not a pass"
            ),
        }
    }
}

/// 64 tasks saving distinct ids at once: nothing is lost.
pub async fn concurrent_distinct_writers<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
) {
    distinct_writers_over(h, Handles::One).await;
}

/// 64 tasks saving distinct ids at once, split over two handles on the same
/// storage: nothing is lost, and each handle reads every record.
pub async fn shared_distinct_writers<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
) {
    distinct_writers_over(h, Handles::Two).await;
}

async fn distinct_writers_over<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
    split: Handles,
) {
    const WRITERS: usize = 64;
    const EACH: usize = 4;
    let inst = h.fresh().await;
    let handles = handles(&inst, split).await;
    let mut writes = tokio::task::JoinSet::new();
    for t in 0..WRITERS {
        let store = Arc::clone(&handles[t % handles.len()]);
        writes.spawn(async move {
            for i in 0..EACH {
                let e = value(&format!("w{t:02}-{i}"), (t * EACH + i) as u64);
                store
                    .save(&e)
                    .await
                    .unwrap_or_else(|err| panic!("save failed: {err}"));
                tokio::task::yield_now().await;
            }
        });
    }
    join(writes).await;
    let all = agreed_contents(&handles).await;
    assert_eq!(
        all.len(),
        WRITERS * EACH,
        "find_all and count after {WRITERS} concurrent writers: records lost"
    );
    for (n, store) in handles.iter().enumerate() {
        for (t, i) in (0..WRITERS).flat_map(|t| (0..EACH).map(move |i| (t, i))) {
            let id = format!("w{t:02}-{i}");
            let got = store
                .find_by_id(&id)
                .await
                .unwrap_or_else(|e| panic!("handle {n}: find_by_id({id:?}) failed: {e}"));
            assert_eq!(got, value(&id, (t * EACH + i) as u64), "handle {n}: {id}");
        }
    }
}

/// Waits for every task, re-raising the first panic.
async fn join<T: 'static>(mut tasks: tokio::task::JoinSet<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        out.push(done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }
    out
}

/// Everything stored once the tasks are done, as every handle reads it:
/// they must agree.
async fn agreed_contents<S: Repository>(handles: &[Arc<S>]) -> Vec<Environment> {
    let first = quiescent_contents(&*handles[0]).await;
    for (n, other) in handles.iter().enumerate().skip(1) {
        let all = quiescent_contents(&**other).await;
        assert!(
            all == first,
            "after quiescence handle {n} reads {} records, handle 0 reads {}: two handles on one storage disagree",
            all.len(),
            first.len()
        );
    }
    first
}

/// Everything stored once the tasks are done; count must agree with it.
async fn quiescent_contents<S: Repository>(store: &S) -> Vec<Environment> {
    let all = store
        .find_all()
        .await
        .unwrap_or_else(|e| panic!("find_all failed: {e}"));
    let count = store
        .count()
        .await
        .unwrap_or_else(|e| panic!("count failed: {e}"));
    assert_eq!(
        count,
        all.len(),
        "after quiescence count must equal find_all().len()"
    );
    all
}
