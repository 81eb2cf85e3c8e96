// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `no_blocking_poll` judges blocking, not computing, and is steady on a
//! loaded machine: with every core kept busy by spinning threads it passes,
//! every time, `MemoryStore`, a correct store that decodes a JSON record
//! per value in `find_all` (milliseconds of CPU in a debug build), and one
//! that computes for 1 ms of CPU in every `find_by_id`; and it catches,
//! every time, a store that in every `find_by_id` sleeps, fsyncs, waits on
//! a contended lock or waits on a blocking read for 1 ms or more.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use waggle_store::{Environment, Error, MemoryStore, Repository, Result, async_trait, record};
use waggle_store_conformance::{Harness, run_check};

mod support;

const ROUNDS: usize = 20;
/// How long each stalling store holds its thread in every save.
const STALL: Duration = Duration::from_millis(1);

/// How a [`Stalling`] store holds its thread in every `find_by_id`.
trait Stall: Default + Send + Sync + 'static {
    fn stall(&self);
}

/// Sleeps: a wait on a timer.
#[derive(Default)]
struct Sleep;

impl Stall for Sleep {
    fn stall(&self) {
        std::thread::sleep(STALL);
    }
}

/// Writes 4 KiB and `fdatasync`s it, again and again until the thread
/// has waited on those fsyncs for 1 ms: a synchronous commit on the
/// executor thread.
///
/// Counted as waiting, not as wall time: on a fast (virtual) disk most of
/// an `fdatasync` is CPU spent submitting and completing the write, and on
/// a loaded machine its wall time also holds the wait for a core after
/// the disk answers. Neither is blocking, so a loop bounded by wall time
/// blocks for less than 1 ms there (0.3–0.65 ms measured), and a store
/// that blocks less than the check's limit is not one it must catch.
struct Fsync {
    file: File,
    _dir: tempfile::TempDir,
}

impl Default for Fsync {
    fn default() -> Self {
        // The build's own directory: on the checkout's disk, never a tmpfs
        // where an fsync has nothing to wait for.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let file =
            File::create(dir.path().join("sync")).unwrap_or_else(|e| panic!("a file to sync: {e}"));
        Self { file, _dir: dir }
    }
}

/// The calling thread's CPU time and time spent waiting for a core, from
/// `/proc/thread-self/schedstat`.
fn ran_and_queued() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap_or_else(|e| panic!("/proc/thread-self/schedstat: {e}"));
    let nanos: u64 = text
        .split_whitespace()
        .take(2)
        .map(|field| {
            field
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("schedstat field {field:?}: {e}"))
        })
        .sum();
    Duration::from_nanos(nanos)
}

impl Stall for Fsync {
    fn stall(&self) {
        let mut waited = Duration::ZERO;
        let give_up = Instant::now() + Duration::from_millis(100);
        while waited < STALL && Instant::now() < give_up {
            let (wall, busy) = (Instant::now(), ran_and_queued());
            self.file
                .write_all_at(&[7u8; 4096], 0)
                .and_then(|()| self.file.sync_data())
                .unwrap_or_else(|e| panic!("fdatasync: {e}"));
            waited += wall
                .elapsed()
                .saturating_sub(ran_and_queued().saturating_sub(busy));
        }
    }
}

/// The calling thread's id, for [`wait_until_asleep`].
fn this_thread() -> libc::pid_t {
    // SAFETY: gettid takes nothing and cannot fail.
    unsafe { libc::gettid() }
}

/// Returns once thread `tid` of this process is asleep (`S` or `D` in
/// `/proc`): blocked in the wait its stall is about to make, not still
/// on its way to it or waiting for a core. A peer that then makes it wait
/// 1 ms more makes it block for 1 ms, however loaded the machine.
fn wait_until_asleep(tid: libc::pid_t) {
    let stat = format!("/proc/self/task/{tid}/stat");
    loop {
        let text = std::fs::read_to_string(&stat).unwrap_or_else(|e| panic!("{stat}: {e}"));
        // The state follows the command name, which ends at the last ')'.
        let state = text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('S' | 'D')) {
            return;
        }
        std::thread::yield_now();
    }
}

/// Waits on a `std::sync::Mutex` that another thread holds until this one
/// has been asleep on it for 1 ms.
#[derive(Default)]
struct Lock(Arc<Mutex<()>>);

impl Stall for Lock {
    fn stall(&self) {
        let (held, taken) = std::sync::mpsc::sync_channel(0);
        let (lock, waiter) = (Arc::clone(&self.0), this_thread());
        std::thread::spawn(move || {
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = held.send(());
            wait_until_asleep(waiter);
            std::thread::sleep(STALL);
        });
        let _ = taken.recv();
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A blocking read of a socket whose peer answers once this thread has
/// been asleep in the read for 1 ms: a synchronous network round trip.
#[derive(Default)]
struct BlockingRead;

impl Stall for BlockingRead {
    fn stall(&self) {
        let (mut ours, mut theirs) =
            UnixStream::pair().unwrap_or_else(|e| panic!("a socket pair: {e}"));
        let reader = this_thread();
        std::thread::spawn(move || {
            wait_until_asleep(reader);
            std::thread::sleep(STALL);
            let _ = theirs.write_all(b"x");
        });
        let mut answer = [0u8; 1];
        ours.read_exact(&mut answer)
            .unwrap_or_else(|e| panic!("reading the answer: {e}"));
    }
}

/// Computes for 1 ms of this thread's CPU time: an encode, a scan. It
/// never waits, so it does not block.
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
    fn stall(&self) {
        let start = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - start < STALL {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
}

/// A correct store, except that `find_by_id` holds its thread for 1 ms
/// first (not `save`: the check's 200 seeding saves would pay it too).
#[derive(Default)]
struct Stalling<H: Stall>(MemoryStore, H);

#[async_trait]
impl<H: Stall> Repository for Stalling<H> {
    /// # Cancel safety
    ///
    /// As `MemoryStore`'s.
    async fn save(&self, env: &Environment) -> Result<()> {
        self.0.save(env).await
    }
    /// # Cancel safety
    ///
    /// Cancel safe: read-only; it only stalls first.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        self.1.stall();
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

/// A correct store that keeps each value as its JSON record and decodes
/// them inline, all in one poll, as most embedded key-value backends do.
#[derive(Default)]
struct JsonRecords(Mutex<BTreeMap<String, Vec<u8>>>);

impl JsonRecords {
    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn storage(context: &'static str) -> impl FnOnce(record::RecordError) -> Error {
    move |e| Error::Storage {
        context,
        source: Box::new(e),
    }
}

fn decode(bytes: &[u8]) -> Result<Environment> {
    record::decode(bytes).map_err(storage("decoding"))
}

#[async_trait]
impl Repository for JsonRecords {
    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn save(&self, env: &Environment) -> Result<()> {
        env.validate()?;
        let bytes = record::encode(env).map_err(storage("encoding"))?;
        self.records().insert(env.id.clone(), bytes);
        Ok(())
    }
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_by_id(&self, id: &str) -> Result<Environment> {
        let bytes = self.records().get(id).cloned();
        decode(&bytes.ok_or_else(|| Error::not_found(id))?)
    }
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn find_all(&self) -> Result<Vec<Environment>> {
        let records: Vec<Vec<u8>> = self.records().values().cloned().collect();
        records.iter().map(|bytes| decode(bytes)).collect()
    }
    /// # Cancel safety
    ///
    /// Cancel safe: completes in its first poll.
    async fn delete(&self, id: &str) -> Result<()> {
        self.records()
            .remove(id)
            .map(drop)
            .ok_or_else(|| Error::not_found(id))
    }
    /// # Cancel safety
    ///
    /// Cancel safe: read-only.
    async fn count(&self) -> Result<usize> {
        Ok(self.records().len())
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
fn blocking_is_caught_and_computing_is_not_with_every_core_busy() {
    let load = support::Load::start();
    let passes = [
        ("MemoryStore", failures::<MemoryStore>()),
        (
            "the store decoding JSON in find_all",
            failures::<JsonRecords>(),
        ),
        (
            "the store computing 1 ms per find_by_id",
            failures::<Stalling<Compute>>(),
        ),
    ];
    // Each of these fails the check 20 times by design: its panic's
    // message and backtrace would only bury the counts printed below.
    let loud = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = [
        ("sleeping 1 ms", failures::<Stalling<Sleep>>()),
        ("fsyncing for 1 ms", failures::<Stalling<Fsync>>()),
        ("waiting 1 ms on a lock", failures::<Stalling<Lock>>()),
        (
            "waiting 1 ms on a blocking read",
            failures::<Stalling<BlockingRead>>(),
        ),
    ];
    std::panic::set_hook(loud);
    drop(load);
    let cores = support::cores();
    for (store, failed) in passes {
        println!(
            "no_blocking_poll, {cores} spinning threads, {} build: {store} failed {failed} of {ROUNDS}",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
    for (store, failed) in caught {
        println!(
            "no_blocking_poll, {cores} spinning threads: caught the store {store} per find_by_id {failed} of {ROUNDS}"
        );
    }
    for (store, failed) in passes {
        assert_eq!(failed, 0, "{store} (correct) failed no_blocking_poll");
    }
    for (store, failed) in caught {
        assert_eq!(
            failed, ROUNDS,
            "the store {store} per find_by_id slipped through no_blocking_poll"
        );
    }
}
