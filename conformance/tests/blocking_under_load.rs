// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `no_blocking_poll` is steady on a loaded machine: with every core kept
//! busy by spinning threads it still passes `MemoryStore` every time, and
//! still catches a store that blocks for 1 ms in every save every time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use waggle_store::{Environment, MemoryStore, Repository, Result, async_trait};
use waggle_store_conformance::{Harness, run_check};

const ROUNDS: usize = 20;

/// A correct store, except that `save` blocks its thread for 1 ms.
#[derive(Default)]
struct BlockingSave(MemoryStore);

#[async_trait]
impl Repository for BlockingSave {
    /// # Cancel safety
    ///
    /// As `MemoryStore`'s; it only blocks first.
    async fn save(&self, env: &Environment) -> Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        self.0.save(env).await
    }
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.0.find_by_id(id).await
    }
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        self.0.find_all().await
    }
    /// # Cancel safety
    ///
    /// As `MemoryStore`'s.
    async fn delete(&self, id: &str) -> Result<()> {
        self.0.delete(id).await
    }
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        self.0.count().await
    }
}

/// Keeps every core busy until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
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

fn failures<S: Repository + Default + 'static>() -> usize {
    let harness = Harness::new(|| async { (S::default(), ()) });
    (0..ROUNDS)
        .filter(|_| {
            catch_unwind(AssertUnwindSafe(|| run_check("no_blocking_poll", &harness))).is_err()
        })
        .count()
}

#[test]
fn steady_with_every_core_busy() {
    let load = Load::start();
    let memory = failures::<MemoryStore>();
    let blocking = failures::<BlockingSave>();
    drop(load);
    println!(
        "no_blocking_poll under load ({} spinning threads): MemoryStore failed {memory} of {ROUNDS}; the 1 ms blocking store was caught {blocking} of {ROUNDS}",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    assert_eq!(
        memory, 0,
        "a correct store failed no_blocking_poll under load"
    );
    assert_eq!(
        blocking, ROUNDS,
        "the blocking store slipped through under load"
    );
}
