// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Blocking, finely: how long each poll of a store's future keeps the
//! executor thread blocked.
//!
//! A store that blocks the thread it is polled on (a sleep, a synchronous
//! fsync or read that waits on the disk, a wait on a contended
//! `std::sync::Mutex`, a network round trip) stalls every other task of
//! that worker for as long as it waits. The check runs each operation many
//! times on a current-thread runtime, measures every `poll` of its future,
//! and judges the median over the calls of each call's longest poll. What
//! a poll is charged, on Linux, is the time its thread was **blocked** in
//! it — neither running nor waiting for a core:
//!
//! * nothing, unless the thread gave up the core of its own accord in the
//!   poll (`getrusage(RUSAGE_THREAD)`'s `ru_nvcsw` grew): only a thread
//!   that waits for something gives it up;
//! * then its wall time, less the CPU time the thread ran in it
//!   (`CLOCK_THREAD_CPUTIME_ID`) and less the time it spent runnable in a
//!   run queue waiting for a core (`/proc/thread-self/schedstat`'s
//!   `run_delay`): what is left is time spent asleep, in an fsync, a
//!   blocking read or a lock wait.
//!
//! Computing is never charged: a store that decodes its records inline
//! spends CPU time that a debug build multiplies, and that is not
//! blocking. A gross CPU stall is `no_executor_stall`'s to catch (a 20 ms
//! timeout must fire within 150 ms). Time the thread waited for a core —
//! another thread's turn, or the hypervisor's — is not the store's doing
//! either. Where the kernel has no `schedstat`, a poll that blocked is
//! charged its wall time less its CPU time if it was never preempted, and
//! nothing otherwise. Outside Linux, where none of this can be seen, every
//! poll is charged its wall time.
//!
//! The median over many calls does the rest: a store that blocks does so
//! in every call; anything else that stretches a poll does not.

use std::future::Future;
use std::time::{Duration, Instant};

use waggle_store::{Environment, Repository, Runtime};

use crate::harness::Harness;

/// A call whose median longest poll keeps the thread blocked this long
/// fails the check. A store that blocks for 1 ms in every call is caught
/// with room to spare.
pub const LIMIT: Duration = Duration::from_micros(500);
/// Calls of each operation measured.
const CALLS: usize = 41;
/// Records stored while measuring.
const RECORDS: usize = 200;

/// A count of context switches, as `getrusage` reports it.
#[cfg(target_os = "linux")]
type Switches = libc::c_long;
#[cfg(not(target_os = "linux"))]
type Switches = i64;

/// What the kernel knows of the calling thread at one instant.
#[derive(Clone, Copy)]
struct ThreadClock {
    wall: Instant,
    /// CPU time this thread has run, if the platform can tell.
    cpu: Option<Duration>,
    /// Time this thread has spent runnable, waiting for a core, if the
    /// kernel keeps `schedstat`.
    waiting: Option<Duration>,
    /// Times the thread gave up the core of its own accord.
    voluntary: Switches,
    /// Times the kernel took the core from it.
    involuntary: Switches,
}

#[cfg(target_os = "linux")]
thread_local! {
    /// `/proc/thread-self/schedstat` of this thread, opened once: its
    /// second field is the time the thread has waited in a run queue.
    static SCHEDSTAT: Option<std::fs::File> = std::fs::File::open("/proc/thread-self/schedstat").ok();
}

/// The calling thread's run-queue wait so far (`schedstat`'s `run_delay`,
/// in nanoseconds), if the kernel keeps it.
#[cfg(target_os = "linux")]
fn run_delay() -> Option<Duration> {
    use std::os::unix::fs::FileExt;
    SCHEDSTAT.with(|file| {
        let mut buf = [0u8; 96];
        let n = file.as_ref()?.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(buf.get(..n)?).ok()?;
        let mut fields = text.split_ascii_whitespace();
        let (_running, waiting, _slices) = (fields.next()?, fields.next()?, fields.next()?);
        waiting.parse().ok().map(Duration::from_nanos)
    })
}

impl ThreadClock {
    #[cfg(target_os = "linux")]
    fn now() -> Self {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a `rusage` into the pointer it is given,
        // which points at one we own; RUSAGE_THREAD names the calling thread.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        // SAFETY: the struct was zeroed and every field is an integer, so it
        // is initialised whether or not getrusage filled it.
        let usage = unsafe { usage.assume_init() };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes a timespec into the one we own.
        let cpu_rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        let cpu = (cpu_rc == 0).then(|| {
            Duration::new(
                u64::try_from(ts.tv_sec).unwrap_or(0),
                u32::try_from(ts.tv_nsec).unwrap_or(0),
            )
        });
        Self {
            wall: Instant::now(),
            cpu: if rc == 0 { cpu } else { None },
            waiting: run_delay(),
            voluntary: usage.ru_nvcsw,
            involuntary: usage.ru_nivcsw,
        }
    }

    /// Elsewhere nothing but wall time can be seen.
    #[cfg(not(target_os = "linux"))]
    fn now() -> Self {
        Self {
            wall: Instant::now(),
            cpu: None,
            waiting: None,
            voluntary: 0,
            involuntary: 0,
        }
    }

    /// How long the thread was blocked in the poll between `self` and
    /// `after` (see the module docs).
    fn charge(self, after: Self) -> Duration {
        let wall = after.wall.duration_since(self.wall);
        let Some((before_cpu, after_cpu)) = self.cpu.zip(after.cpu) else {
            return wall;
        };
        if after.voluntary == self.voluntary {
            // It never waited for anything: it ran, or waited for a core.
            return Duration::ZERO;
        }
        let off_core = wall.saturating_sub(after_cpu.saturating_sub(before_cpu));
        match self.waiting.zip(after.waiting) {
            Some((before, after)) => off_core.saturating_sub(after.saturating_sub(before)),
            None if after.involuntary == self.involuntary => off_core,
            None => Duration::ZERO,
        }
    }
}

/// Runs `fut` to completion and returns the longest charge of its polls.
async fn longest_poll<F: Future>(fut: F) -> Duration {
    let mut fut = std::pin::pin!(fut);
    let mut longest = Duration::ZERO;
    std::future::poll_fn(|cx| {
        let before = ThreadClock::now();
        let out = fut.as_mut().poll(cx);
        longest = longest.max(before.charge(ThreadClock::now()));
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
/// the median over 41 calls of the longest time one poll of a call kept
/// the thread blocked stays under [`LIMIT`]. Computing is not blocking.
pub async fn no_blocking_poll<S: Repository + 'static, G: Send + 'static>(h: &Harness<S, G>) {
    let inst = h.fresh().await;
    for (op, median) in median_longest_polls(inst.store()).await {
        assert!(
            median < LIMIT,
            "case {op:?}: in the median call one poll kept the executor thread blocked (asleep, in I/O or waiting on a lock; not computing) for {median:?} (limit {LIMIT:?}): the store blocks the thread it is polled on"
        );
    }
}
