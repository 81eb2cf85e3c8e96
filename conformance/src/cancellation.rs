// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Cancellation: futures dropped part way, or cut short by a timeout, leave
//! the store as before or as fully after — and never wedge it or the
//! executor.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use waggle_store::{Environment, Repository, Runtime, Status};

use crate::harness::Harness;

type Model = BTreeMap<String, Environment>;
type Op<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The operations tried, each with what it does to the model if it lands.
fn operations<'a, S: Repository>(
    store: &'a S,
    model: &Model,
    round: usize,
) -> Vec<(&'static str, Op<'a>, Model)> {
    let mut ops: Vec<(&'static str, Op<'a>, Model)> = Vec::new();
    let new = Environment::new_at(
        format!("n{round}"),
        format!("new {round}"),
        Runtime::Node,
        Default::default(),
    );
    let mut after = model.clone();
    after.insert(new.id.clone(), new.clone());
    ops.push((
        "save new",
        Box::pin(async move {
            let _ = store.save(&new).await;
        }),
        after,
    ));
    if let Some(existing) = model.values().next() {
        let mut changed = existing.clone();
        changed.name = format!("changed {round} {}", "x".repeat(round % 7 * 100));
        changed.ssh_port = changed.ssh_port.wrapping_add(1);
        let _ = changed.transition_to(Status::Running);
        changed.capabilities.path = format!("/round/{round}");
        let mut after = model.clone();
        after.insert(changed.id.clone(), changed.clone());
        ops.push((
            "upsert",
            Box::pin(async move {
                let _ = store.save(&changed).await;
            }),
            after,
        ));
        let id = existing.id.clone();
        let mut after = model.clone();
        after.remove(&id);
        ops.push((
            "delete",
            Box::pin(async move {
                let _ = store.delete(&id).await;
            }),
            after,
        ));
        let id = existing.id.clone();
        ops.push((
            "find_by_id",
            Box::pin(async move {
                let _ = store.find_by_id(&id).await;
            }),
            model.clone(),
        ));
    }
    ops.push((
        "delete missing",
        Box::pin(async move {
            let _ = store.delete("missing").await;
        }),
        model.clone(),
    ));
    ops.push((
        "find_all",
        Box::pin(async move {
            let _ = store.find_all().await;
        }),
        model.clone(),
    ));
    ops.push((
        "count",
        Box::pin(async move {
            let _ = store.count().await;
        }),
        model.clone(),
    ));
    ops
}

/// Waits for the store to answer a write, then checks its state is `before`
/// or `after` and self-consistent; returns the state found.
async fn settle<S: Repository>(case: &str, store: &S, before: &Model, after: &Model) -> Model {
    // A write of our own, awaited, is the sync point: whatever the cancelled
    // call set going has landed or been dropped by the time it returns.
    let sentinel = Environment::new_at("zz-sync", "sync", Runtime::Shell, Default::default());
    store.save(&sentinel).await.unwrap_or_else(|e| {
        panic!("case {case:?}: the store did not answer a save after cancellation: {e}")
    });
    store.delete("zz-sync").await.unwrap_or_else(|e| {
        panic!("case {case:?}: the store did not answer a delete after cancellation: {e}")
    });
    let all = store
        .find_all()
        .await
        .unwrap_or_else(|e| panic!("case {case:?}: find_all failed after cancellation: {e}"));
    let count = store
        .count()
        .await
        .unwrap_or_else(|e| panic!("case {case:?}: count failed after cancellation: {e}"));
    let found: Model = all.iter().map(|e| (e.id.clone(), e.clone())).collect();
    assert_eq!(
        count,
        all.len(),
        "case {case:?}: count disagrees with find_all after cancellation"
    );
    assert_eq!(
        found.len(),
        all.len(),
        "case {case:?}: find_all returned an id twice"
    );
    assert!(
        found == *before || found == *after,
        "case {case:?}: the store is neither as before nor as after the cancelled call\n  ids before {:?}\n  ids after  {:?}\n  ids found  {:?}",
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        found.keys().collect::<Vec<_>>()
    );
    for (id, env) in &found {
        let one = store
            .find_by_id(id)
            .await
            .unwrap_or_else(|e| panic!("case {case:?}: find_by_id({id:?}) failed: {e}"));
        assert!(
            &one == env,
            "case {case:?}: find_by_id({id:?}) disagrees with find_all"
        );
    }
    found
}

async fn seed<S: Repository>(store: &S) -> Model {
    let mut model = Model::new();
    for i in 0..3 {
        let e = Environment::new_at(
            format!("s{i}"),
            format!("seed {i}"),
            Runtime::Python,
            Default::default(),
        );
        store
            .save(&e)
            .await
            .unwrap_or_else(|err| panic!("seeding: {err}"));
        model.insert(e.id.clone(), e);
    }
    model
}

/// Runs every operation once, cut short by `cancel`, and checks the store
/// after each: as before or as fully after, and usable. `how` describes
/// the cancellation in failure messages.
async fn cancel_each<S: Repository>(
    store: &S,
    model: &mut Model,
    round: &mut usize,
    how: &str,
    mut cancel: impl AsyncFnMut(Op<'_>),
) {
    let count = operations(store, model, *round).len();
    for which in 0..count {
        *round += 1;
        let mut ops = operations(store, model, *round);
        let (name, fut, after) = ops.swap_remove(which);
        drop(ops);
        cancel(fut).await;
        *model = settle(&format!("{name} {how}"), store, model, &after).await;
    }
}

/// Every operation, dropped after k = 0…8 polls, leaves the store as before
/// or as fully after, and usable.
pub async fn cancel_after_polls<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    let mut model = seed(store).await;
    let mut round = 0;
    for k in 0..=8usize {
        let how = format!("dropped after {k} polls");
        cancel_each(store, &mut model, &mut round, &how, async |fut: Op<'_>| {
            poll_then_drop(fut, k).await;
        })
        .await;
    }
}

/// Polls `fut` up to `k` times, yielding or sleeping 200 µs between
/// polls, and drops it (early if it completes).
async fn poll_then_drop<F: Future + Unpin>(mut fut: F, k: usize) {
    for poll in 0..k {
        let done =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx).is_ready())).await;
        if done {
            break;
        }
        if poll % 2 == 1 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// When [`cancel_settles`] looks for a dropped write that landed late,
/// after the last completed call: soon, and again later, so a late write
/// that a busy machine delays is still seen.
pub const SETTLE_WAITS: [Duration; 2] = [Duration::from_millis(30), Duration::from_millis(150)];

/// A dropped write never lands after a later call's write of the same id:
/// for each poll point k = 0…8, drop a save or delete after k polls, run a
/// save or delete of the same id to completion, wait, and require what the
/// completed call wrote.
pub async fn cancel_settles<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    let value = |id: &str, v: &str| Environment::new_at(id, v, Runtime::Node, Default::default());
    let save = async |e: Environment| {
        store
            .save(&e)
            .await
            .unwrap_or_else(|err| panic!("save({:?}) failed: {err}", e.id));
    };
    // (case, dropped call, completed call); `None` in the model is absent.
    let cases: [(&str, bool, bool); 3] = [
        ("dropped save, then save", true, true),
        ("dropped delete, then save", false, true),
        ("dropped save, then delete", true, false),
    ];
    let mut expected = Vec::new();
    for k in 0..=8usize {
        for (case, drop_save, then_save) in cases {
            let id = format!("settle-{k}-{}", case.replace([',', ' '], ""));
            save(value(&id, "v0")).await;
            let dropped: Op<'_> = if drop_save {
                let v1 = value(&id, "v1");
                Box::pin(async move {
                    let _ = store.save(&v1).await;
                })
            } else {
                let id = id.clone();
                Box::pin(async move {
                    let _ = store.delete(&id).await;
                })
            };
            poll_then_drop(dropped, k).await;
            let last = if then_save {
                let v2 = value(&id, "v2");
                save(v2.clone()).await;
                Some(v2)
            } else {
                match store.delete(&id).await {
                    // The dropped save may have landed or not: v0 or v1 is deleted.
                    Ok(()) => None,
                    Err(e) => panic!("case {case:?} after {k} polls: delete failed: {e}"),
                }
            };
            expected.push((format!("{case} after {k} polls"), id, last));
        }
    }
    let done = Instant::now();
    for wait in SETTLE_WAITS {
        tokio::time::sleep(wait.saturating_sub(done.elapsed())).await;
        for (case, id, last) in &expected {
            let got = store.find_by_id(id).await;
            match (last, got) {
                (Some(want), Ok(got)) if got == *want => {}
                (None, Err(waggle_store::Error::NotFound { .. })) => {}
                (want, got) => panic!(
                    "case {case:?}: {wait:?} after the last completed call, {id:?} should be {:?} but is {:?}: the dropped call landed after a later one",
                    want.as_ref().map(|e| &e.name),
                    got.map(|e| e.name)
                ),
            }
        }
    }
}

/// Every operation under `tokio::time::timeout` with tiny deadlines leaves
/// the store as before or as fully after, and usable.
pub async fn cancel_by_timeout<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    let mut model = seed(store).await;
    let mut round = 100;
    for deadline in [0u64, 1, 50, 300, 1_000, 5_000] {
        let how = format!("under a {deadline} µs timeout");
        cancel_each(store, &mut model, &mut round, &how, async |fut: Op<'_>| {
            let _ = tokio::time::timeout(Duration::from_micros(deadline), fut).await;
        })
        .await;
    }
}

/// On a current-thread runtime a 20 ms timeout around any call fires
/// within 150 ms: the store does not block the executor.
pub async fn no_executor_stall<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    let store = inst.store();
    for i in 0..200 {
        let e = Environment::new_at(
            format!("b{i:03}"),
            "x".repeat(512),
            Runtime::Shell,
            Default::default(),
        );
        store
            .save(&e)
            .await
            .unwrap_or_else(|err| panic!("seeding: {err}"));
    }
    let limit = Duration::from_millis(150);
    for round in 0..3 {
        let mut ops = operations(
            store,
            &BTreeMap::from([(
                "b000".to_owned(),
                Environment::new_at("b000", "", Runtime::Shell, Default::default()),
            )]),
            round,
        );
        for (name, fut, _) in ops.drain(..) {
            let started = Instant::now();
            let _ = tokio::time::timeout(Duration::from_millis(20), fut).await;
            let took = started.elapsed();
            assert!(
                took < limit,
                "case {name:?}: a 20 ms timeout took {took:?} to fire: the call blocks the executor thread"
            );
        }
    }
}
