// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Blocking, finely: how long each poll of a store's future holds the
//! executor thread.
//!
//! A store that blocks the thread it is polled on (a synchronous read, a
//! sleep, an fsync) stalls every other task of that worker. The check runs
//! each operation many times on a current-thread runtime, times every
//! `poll` of its future, and judges the median over the calls of each
//! call's longest poll. Two things keep it steady on a loaded machine:
//!
//! * On Linux a poll during which the kernel switched the thread out
//!   *involuntarily* (`getrusage(RUSAGE_THREAD)`'s `ru_nivcsw`: another
//!   thread took the core) is not counted. Blocking is voluntary — a sleep,
//!   a held lock, an fsync — so it is counted.
//! * The median over many calls: a store that blocks does so in every
//!   call; anything else that stretches a poll does not.

use std::future::Future;
use std::time::{Duration, Instant};

use waggle_store::{Environment, Repository, Runtime};

use crate::harness::Harness;

/// A call whose median longest poll reaches this fails the check. A store
/// that blocks for 1 ms in every call is caught with room to spare.
pub const LIMIT: Duration = Duration::from_micros(500);
/// Calls of each operation measured.
const CALLS: usize = 41;
/// Records stored while measuring.
const RECORDS: usize = 200;

/// How many times the kernel has switched this thread out against its will.
#[cfg(target_os = "linux")]
fn involuntary_switches() -> libc::c_long {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given,
    // which points at one we own; RUSAGE_THREAD names the calling thread.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getrusage returned 0, so it filled the struct; it was also
    // zeroed before, and every field is an integer.
    unsafe { usage.assume_init() }.ru_nivcsw
}

/// Elsewhere preemption cannot be seen; every poll counts.
#[cfg(not(target_os = "linux"))]
fn involuntary_switches() -> i64 {
    0
}

/// Runs `fut` to completion and returns the longest of its polls that ran
/// unpreempted.
async fn longest_poll<F: Future>(fut: F) -> Duration {
    let mut fut = std::pin::pin!(fut);
    let mut longest = Duration::ZERO;
    std::future::poll_fn(|cx| {
        let switches = involuntary_switches();
        let started = Instant::now();
        let out = fut.as_mut().poll(cx);
        let took = started.elapsed();
        if involuntary_switches() == switches {
            longest = longest.max(took);
        }
        out.map(|_| longest)
    })
    .await
}

fn record(id: String) -> Environment {
    Environment::new_at(id, "x".repeat(512), Runtime::Shell, Default::default())
}

/// The median of each operation's longest polls, by operation name.
pub async fn median_longest_polls<S: Repository>(store: &S) -> Vec<(&'static str, Duration)> {
    for i in 0..RECORDS {
        store
            .save(&record(format!("b{i:03}")))
            .await
            .unwrap_or_else(|e| panic!("seeding: {e}"));
    }
    let mut results = Vec::new();
    let ops: [&'static str; 8] = [
        "save new",
        "upsert",
        "find_by_id",
        "find_by_id missing",
        "find_all",
        "count",
        "delete",
        "delete missing",
    ];
    for op in ops {
        let mut polls = Vec::with_capacity(CALLS);
        let mut over = 0;
        for i in 0..CALLS {
            let id = format!("b{:03}", i % RECORDS);
            let fresh = format!("new-{i}");
            let took = match op {
                "save new" => longest_poll(store.save(&record(fresh))).await,
                "upsert" => longest_poll(store.save(&record(id))).await,
                "find_by_id" => longest_poll(store.find_by_id(&id)).await,
                "find_by_id missing" => longest_poll(store.find_by_id("missing")).await,
                "find_all" => longest_poll(store.find_all()).await,
                "count" => longest_poll(store.count()).await,
                // Deletes the records "save new" made.
                "delete" => longest_poll(store.delete(&fresh)).await,
                _ => longest_poll(store.delete("missing")).await,
            };
            polls.push(took);
            over += usize::from(took >= LIMIT);
            // Once most calls are over the limit, the median is too.
            if over > CALLS / 2 {
                break;
            }
        }
        polls.sort();
        results.push((op, polls[polls.len() / 2]));
    }
    results
}

/// On a current-thread runtime, no operation's polls block the thread:
/// the median over 41 calls of each call's longest poll stays under
/// [`LIMIT`].
pub async fn no_blocking_poll<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    for (op, median) in median_longest_polls(inst.store()).await {
        assert!(
            median < LIMIT,
            "case {op:?}: the median call holds the executor thread for {median:?} in one poll (limit {LIMIT:?}): the store blocks the thread it is polled on"
        );
    }
}
