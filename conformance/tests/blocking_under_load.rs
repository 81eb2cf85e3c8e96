// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `no_blocking_poll` is steady on a loaded machine: with every core kept
//! busy by spinning threads it still passes `MemoryStore` every time, and
//! still catches, every time, a store that sleeps for 1 ms in every save
//! and one that computes for 1 ms of CPU time in every save.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use waggle_store::{Environment, MemoryStore, Repository, Result, async_trait};
use waggle_store_conformance::{Harness, run_check};

const ROUNDS: usize = 20;

/// How a [`Stalling`] store holds its thread in every `save`.
trait Stall: Default + Send + Sync + 'static {
    fn stall();
}

/// Sleeps 1 ms: a synchronous fsync or read, say.
#[derive(Default)]
struct Sleep;

impl Stall for Sleep {
    fn stall() {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Computes for 1 ms of this thread's CPU time: a synchronous scan or
/// encode, or a spin lock. It never gives up the core of its own accord.
#[derive(Default)]
struct Compute;

/// CPU time the calling thread has run.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the one we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

impl Stall for Compute {
    fn stall() {
        let start = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - start < Duration::from_millis(1) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
}

/// A correct store, except that `save` holds its thread for 1 ms first.
#[derive(Default)]
struct Stalling<H: Stall>(MemoryStore, H);

#[async_trait]
impl<H: Stall> Repository for Stalling<H> {
    /// # Cancel safety
    ///
    /// As `MemoryStore`'s; it only stalls first.
    async fn save(&self, env: &Environment) -> Result<()> {
        H::stall();
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
    let sleeping = failures::<Stalling<Sleep>>();
    let computing = failures::<Stalling<Compute>>();
    drop(load);
    println!(
        "no_blocking_poll under load ({} spinning threads): MemoryStore failed {memory} of {ROUNDS}; caught the store sleeping 1 ms {sleeping} of {ROUNDS}, the store computing 1 ms {computing} of {ROUNDS}",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    assert_eq!(
        memory, 0,
        "a correct store failed no_blocking_poll under load"
    );
    assert_eq!(
        sleeping, ROUNDS,
        "the sleeping store slipped through under load"
    );
    assert_eq!(
        computing, ROUNDS,
        "the computing store slipped through under load"
    );
}
