// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Watching ([`Audited::watch`]): from any cursor a watcher yields every
//! later change once, in order; one that has caught up is woken by the
//! next write (no gap between catch-up and live); dropped, it leaves
//! nothing behind; and while writers run — on one handle, and over two
//! where the backend offers `share` — it ends with exactly the history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use waggle_store::{Audited, Change, ChangeStream, Environment, Error, Revision, Runtime};

use crate::harness::Harness;
use crate::history::all_changes;

/// How long a watcher may take to yield a change that is there. A store
/// that is only woken by polling must poll more often than this (PgStore
/// looks every second besides listening).
pub const WATCH_WITHIN: Duration = Duration::from_secs(5);

fn value(id: &str, tag: u64) -> Environment {
    let mut e = Environment::new_at(id, format!("v{tag}"), Runtime::Python, Default::default());
    e.ssh_port = (tag % 65_536) as u16;
    e
}

/// The watcher's next change, or a failure naming `case` if none comes
/// within [`WATCH_WITHIN`].
async fn next_change(stream: &mut ChangeStream<'_>, case: &str) -> Change {
    let next = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx));
    match tokio::time::timeout(WATCH_WITHIN, next).await {
        Ok(Some(Ok(change))) => change,
        Ok(Some(Err(e))) => panic!("case {case:?}: the watcher failed: {e}"),
        Ok(None) => panic!("case {case:?}: the watcher ended"),
        Err(_) => panic!(
            "case {case:?}: no change from the watcher within {WATCH_WITHIN:?} although one was acknowledged"
        ),
    }
}

/// Whether the stream has nothing ready: polled a few times, with yields
/// between, it stays pending.
async fn nothing_ready(stream: &mut ChangeStream<'_>) -> Option<Change> {
    polled(stream, 8).await
}

/// Polls the stream `polls` times, with yields between: a change if one
/// was ready, else `None`.
async fn polled(stream: &mut ChangeStream<'_>, polls: usize) -> Option<Change> {
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(stream.as_mut().poll_next(cx))).await;
        match polled {
            Poll::Pending => tokio::task::yield_now().await,
            Poll::Ready(Some(Ok(change))) => return Some(change),
            Poll::Ready(other) => panic!("an idle watcher returned {other:?}"),
        }
    }
    None
}

/// The whole check: resume from every cursor, the hand-over from catch-up
/// to live, drop and resume, then writers racing a watcher.
pub async fn watch_changes<S: Audited + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    {
        let inst = h.fresh().await;
        let s = inst.store();
        for i in 0..4 {
            s.save(&value("w", i))
                .await
                .unwrap_or_else(|e| panic!("case \"writes before\": {e}"));
        }
        s.delete("w")
            .await
            .unwrap_or_else(|e| panic!("case \"writes before\": {e}"));
        let all = all_changes(s, "writes before").await;
        // From every cursor: the rest, in order, then nothing.
        for k in 0..=all.len() {
            let cursor = k
                .checked_sub(1)
                .map_or(Revision::new(0), |i| all[i].revision);
            let case = format!("watch from {cursor}");
            let mut w = s.watch(cursor);
            for expected in &all[k..] {
                let got = next_change(&mut w, &case).await;
                assert_eq!(
                    &got, expected,
                    "case {case:?}: out of order, repeated or changed"
                );
            }
            if let Some(extra) = nothing_ready(&mut w).await {
                panic!("case {case:?}: after the last change the watcher yielded {extra:?}");
            }
        }
        // Caught up and waiting — polled 1, 2, … times, so a write lands at
        // each point of its hand-over from catch-up to live — the next
        // write wakes it, and the one after.
        let mut last = all.last().map_or(Revision::new(0), |c| c.revision);
        for polls in 1..=4 {
            let mut w = s.watch(last);
            if let Some(extra) = polled(&mut w, polls).await {
                panic!("case \"caught up\": the watcher yielded {extra:?}");
            }
            for tag in 0..2 {
                let case = format!("live write {tag} after {polls} polls");
                s.save(&value("live", tag))
                    .await
                    .unwrap_or_else(|e| panic!("case {case:?}: {e}"));
                let got = next_change(&mut w, &case).await;
                assert_eq!(
                    got.env.as_ref(),
                    Some(&value("live", tag)),
                    "case {case:?}: the watcher yielded another change"
                );
                assert!(got.revision > last, "case {case:?}");
                last = got.revision;
            }
        }
        // Dropped part way: nothing held, and a new watcher from the last
        // change yielded goes on from there.
        let resume = {
            let mut w = s.watch(Revision::new(0));
            let first = next_change(&mut w, "drop part way").await;
            drop(w);
            first.revision
        };
        s.save(&value("after-drop", 1))
            .await
            .unwrap_or_else(|e| panic!("case \"after drop\": {e}"));
        let everything = all_changes(s, "after drop").await;
        let mut w = s.watch(resume);
        for expected in everything.iter().filter(|c| c.revision > resume) {
            let got = next_change(&mut w, "resumed after a drop").await;
            assert_eq!(&got, expected, "case \"resumed after a drop\"");
        }
    }
    let mut splits = vec![false];
    if h.can_share() {
        splits.push(true);
    }
    for two in splits {
        let inst = h.fresh().await;
        let handles = if two {
            vec![inst.shared(), inst.second_handle().await]
        } else {
            vec![inst.shared()]
        };
        racing_watch(&handles, if two { "two handles" } else { "one handle" }).await;
    }
}

const WRITERS: usize = 6;
const WRITES: u64 = 20;

/// A watcher on the last handle while writers write on every handle: it
/// ends with exactly the history, in order, once each.
async fn racing_watch<S: Audited + 'static>(handles: &[Arc<S>], case: &str) {
    let acked = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let mut writers = tokio::task::JoinSet::new();
    for t in 0..WRITERS {
        let store = Arc::clone(&handles[t % handles.len()]);
        let acked = Arc::clone(&acked);
        writers.spawn(async move {
            for i in 0..WRITES {
                let id = format!("r{}", (t as u64 + i) % 4);
                let result = if i % 5 == 4 {
                    store.delete(&id).await
                } else {
                    store.save(&value(&id, t as u64 * 100 + i)).await
                };
                match result {
                    Ok(()) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => panic!("a writer failed: {e}"),
                }
                tokio::task::yield_now().await;
            }
        });
    }
    let watching = Arc::clone(&handles[handles.len() - 1]);
    let mut w = watching.watch(Revision::new(0));
    let mut got: Vec<Change> = Vec::new();
    // Read while they write, then until the watcher has as many changes as
    // writes were acknowledged.
    let mut done = false;
    loop {
        if !done && writers.is_empty() {
            done = true;
        }
        if done && got.len() as u64 >= acked.load(Ordering::SeqCst) {
            break;
        }
        tokio::select! {
            change = next_change(&mut w, case) => {
                if let Some(last) = got.last() {
                    assert!(
                        change.revision > last.revision,
                        "case {case:?}: {} after {}: a watcher must yield in revision order, once each",
                        change.revision,
                        last.revision
                    );
                }
                got.push(change);
            }
            finished = writers.join_next(), if !writers.is_empty() => {
                if let Some(Err(e)) = finished {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }
    writing.store(false, Ordering::SeqCst);
    if let Some(extra) = nothing_ready(&mut w).await {
        panic!(
            "case {case:?}: the watcher yielded {extra:?} after one change per acknowledged write ({})",
            acked.load(Ordering::SeqCst)
        );
    }
    let all = all_changes(&*handles[0], case).await;
    assert!(
        got == all,
        "case {case:?}: the watcher yielded {} changes, the history holds {}",
        got.len(),
        all.len()
    );
}
