// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! What the suite's self-tests share: the verdict on one broken store, and
//! a load that keeps every core busy.

#![allow(dead_code)] // Each test file uses its own part.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Asserts the checks `what` failed are exactly `must`, plus any of `may`:
/// checks whose outcome depends on how tasks interleave (a concurrent
/// history may or may not hit the defect).
pub fn assert_failed_exactly(
    what: &dyn std::fmt::Debug,
    failed: &BTreeSet<&'static str>,
    must: &[&str],
    may: &[&str],
) {
    let must: BTreeSet<&str> = must.iter().copied().collect();
    let may: BTreeSet<&str> = may.iter().copied().collect();
    let missed: Vec<_> = must.iter().filter(|c| !failed.contains(*c)).collect();
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|c| !must.contains(*c) && !may.contains(*c))
        .collect();
    assert!(
        missed.is_empty() && unexpected.is_empty(),
        "{what:?}: checks that should have failed but passed: {missed:?}; checks that failed unexpectedly: {unexpected:?}"
    );
}

/// Keeps every core busy with a spinning thread each until dropped, as a
/// busy CI machine would be.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts one spinning thread per core.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cores())
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The machine's cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs of each racy defect against each check that must catch it.
pub const CATCH_ROUNDS: usize = 20;

/// Runs each check that must catch a racy defect [`CATCH_ROUNDS`] times
/// with every core busy, prints how often each caught it, and fails unless
/// each caught it every time: a check that catches a defect half the time
/// lets it through the other half. `run(defect, check)` panics when the
/// check fails.
pub fn assert_caught_every_run<D: std::fmt::Debug + Copy>(
    racy: &[(D, &[&'static str])],
    run: impl Fn(D, &'static str),
) {
    let load = Load::start();
    let mut missed = Vec::new();
    for (defect, checks) in racy {
        for check in *checks {
            let caught = (0..CATCH_ROUNDS)
                .filter(|_| catch_unwind(AssertUnwindSafe(|| run(*defect, check))).is_err())
                .count();
            println!(
                "catch rate with {} cores busy: {defect:?} caught by {check} in {caught} of {CATCH_ROUNDS} runs",
                cores()
            );
            if caught < CATCH_ROUNDS {
                missed.push(format!("{defect:?} by {check}: {caught} of {CATCH_ROUNDS}"));
            }
        }
    }
    drop(load);
    assert!(
        missed.is_empty(),
        "racy defects not caught every run: {missed:?}"
    );
}
