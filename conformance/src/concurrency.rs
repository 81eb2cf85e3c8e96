// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Concurrency: many tasks at once, every call recorded, and each id's
//! history checked for linearizability against the model.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use waggle_store::{Environment, Error, Repository, Runtime};

use crate::harness::Harness;

const TASKS: usize = 32;
const OPS_PER_TASK: usize = 8;
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    Save(u64),
    Find,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Found(u64),
    NotFound,
}

/// One call: what, what came back, and when (on one logical clock).
#[derive(Debug, Clone, Copy)]
struct Event {
    call: Call,
    answer: Answer,
    invoked: u64,
    returned: u64,
}

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

/// Every state a linearization of `events` (starting empty) can end in;
/// empty if none exists.
fn linearizations(events: &[Event]) -> HashSet<Option<u64>> {
    fn step(state: Option<u64>, call: Call) -> (Option<u64>, Answer) {
        match (call, state) {
            (Call::Save(v), _) => (Some(v), Answer::Ok),
            (Call::Find, Some(v)) => (state, Answer::Found(v)),
            (Call::Find, None) => (None, Answer::NotFound),
            (Call::Delete, Some(_)) => (None, Answer::Ok),
            (Call::Delete, None) => (None, Answer::NotFound),
        }
    }
    fn search(
        events: &[Event],
        done: &mut Vec<bool>,
        remaining: usize,
        state: Option<u64>,
        seen: &mut HashSet<(Vec<bool>, Option<u64>)>,
        finals: &mut HashSet<Option<u64>>,
    ) {
        if remaining == 0 {
            finals.insert(state);
            return;
        }
        if !seen.insert((done.clone(), state)) {
            return;
        }
        // Only a call invoked before every pending call returned can go next.
        let horizon = events
            .iter()
            .zip(done.iter())
            .filter(|(_, d)| !**d)
            .map(|(e, _)| e.returned)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..events.len() {
            if done[i] || events[i].invoked > horizon {
                continue;
            }
            let (next, answer) = step(state, events[i].call);
            if answer == events[i].answer {
                done[i] = true;
                search(events, done, remaining - 1, next, seen, finals);
                done[i] = false;
            }
        }
    }
    let mut finals = HashSet::new();
    search(
        events,
        &mut vec![false; events.len()],
        events.len(),
        None,
        &mut HashSet::new(),
        &mut finals,
    );
    finals
}

/// ≥ 32 tasks on a multi-thread runtime mix saves, finds, deletes and
/// find_all (projected onto each id) on four shared ids; each id's history must be linearizable, and afterwards
/// count == find_all().len() and each id holds a state some linearization
/// ends in.
pub async fn concurrent_linearizable<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
) {
    let inst = h.fresh().await;
    let clock = Arc::new(AtomicU64::new(0));
    let mut per_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let clock = Arc::clone(&clock);
        let store = inst.shared();
        tasks.spawn(async move {
            let mut events = Vec::new();
            for i in 0..OPS_PER_TASK {
                let key = KEYS[(t + i) % KEYS.len()];
                let tag = (t * 1000 + i) as u64;
                let invoked_at = |clock: &AtomicU64| clock.fetch_add(1, Ordering::SeqCst);
                if (t * 7 + i * 3) % 10 == 7 {
                    // find_all, projected onto each key as a find with the
                    // same interval: it must agree with the per-key histories.
                    let invoked = invoked_at(&clock);
                    let all = store
                        .find_all()
                        .await
                        .unwrap_or_else(|e| panic!("find_all failed: {e}"));
                    let returned = invoked_at(&clock);
                    for key in KEYS {
                        let answer = all
                            .iter()
                            .find(|e| e.id == key)
                            .map_or(Answer::NotFound, |e| Answer::Found(tag_of(e, key)));
                        events.push((
                            key,
                            Event {
                                call: Call::Find,
                                answer,
                                invoked,
                                returned,
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
                let invoked = clock.fetch_add(1, Ordering::SeqCst);
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
                let returned = clock.fetch_add(1, Ordering::SeqCst);
                events.push((
                    key,
                    Event {
                        call,
                        answer,
                        invoked,
                        returned,
                    },
                ));
                if i % 3 == 2 {
                    tokio::task::yield_now().await;
                }
            }
            events
        });
    }
    for events in join(tasks).await {
        for (key, event) in events {
            per_key.entry(key).or_default().push(event);
        }
    }
    let all = quiescent_contents(inst.store()).await;
    for (key, events) in &per_key {
        let finals = linearizations(events);
        assert!(
            !finals.is_empty(),
            "key {key:?}: the history is not linearizable ({} calls):\n{events:#?}",
            events.len()
        );
        let stored = all.iter().find(|e| e.id == *key).map(|e| tag_of(e, key));
        assert!(
            finals.contains(&stored),
            "key {key:?}: after quiescence it holds {stored:?}, but every linearization ends in one of {finals:?}"
        );
    }
}

/// 64 tasks saving distinct ids at once: nothing is lost.
pub async fn concurrent_distinct_writers<S: Repository + 'static, G: Send + 'static>(
    h: &Harness<S, G>,
) {
    const WRITERS: usize = 64;
    const EACH: usize = 4;
    let inst = h.fresh().await;
    let mut writes = tokio::task::JoinSet::new();
    for t in 0..WRITERS {
        let store = inst.shared();
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
    let store = inst.store();
    let all = quiescent_contents(store).await;
    assert_eq!(
        all.len(),
        WRITERS * EACH,
        "find_all and count after {WRITERS} concurrent writers: records lost"
    );
    for (t, i) in (0..WRITERS).flat_map(|t| (0..EACH).map(move |i| (t, i))) {
        let id = format!("w{t:02}-{i}");
        let got = store
            .find_by_id(&id)
            .await
            .unwrap_or_else(|e| panic!("find_by_id({id:?}) failed: {e}"));
        assert_eq!(got, value(&id, (t * EACH + i) as u64), "{id}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(call: Call, answer: Answer, invoked: u64, returned: u64) -> Event {
        Event {
            call,
            answer,
            invoked,
            returned,
        }
    }

    #[test]
    fn checker_accepts_and_refuses() {
        use Answer::*;
        use Call::*;
        // Sequential save then find of the same value: fine, ends in Some(1).
        let ok = [ev(Save(1), Ok, 0, 1), ev(Find, Found(1), 2, 3)];
        assert_eq!(linearizations(&ok), HashSet::from([Some(1)]));
        // A find after the save returned that misses it: not linearizable.
        let stale = [ev(Save(1), Ok, 0, 1), ev(Find, NotFound, 2, 3)];
        assert!(linearizations(&stale).is_empty());
        // Overlapping: the find may go before the save.
        let overlap = [ev(Save(1), Ok, 0, 3), ev(Find, NotFound, 1, 2)];
        assert_eq!(linearizations(&overlap), HashSet::from([Some(1)]));
        // Two deletes of one value both succeeding: not linearizable.
        let double = [
            ev(Save(1), Ok, 0, 1),
            ev(Delete, Ok, 2, 5),
            ev(Delete, Ok, 3, 4),
        ];
        assert!(linearizations(&double).is_empty());
        // Concurrent saves: either may win.
        let race = [ev(Save(1), Ok, 0, 3), ev(Save(2), Ok, 1, 2)];
        assert_eq!(linearizations(&race), HashSet::from([Some(1), Some(2)]));
    }
}
