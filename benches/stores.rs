// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Side-by-side benchmark: MemoryStore vs RedbStore vs a SQLite peer, in
//! one run on one disk, with the disk's raw `write + fdatasync` as the
//! yardstick (and, for group commit, the cost of waking a sleeping
//! thread). Prints Markdown tables of medians and ratios, then which
//! targets hold.
//!
//! `cargo bench` runs it in full; `cargo test --benches` (no `--bench`
//! flag) runs a quick smoke pass. `WAGGLE_BENCH_DIR` picks the directory
//! (default: a temporary directory under /var/tmp, which is on disk).

#[path = "support/sqlite_peer.rs"]
mod sqlite_peer;
#[path = "support/yardstick.rs"]
mod yardstick;

use yardstick::{fmt_time, median, raw_file, raw_sample};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlite_peer::SqliteStore;
use waggle_store::store::redb::RedbOptions;
use waggle_store::{Environment, MemoryStore, RedbStore, Repository, Runtime, Status};

/// Sizes and sample counts for one run.
struct Plan {
    sizes: Vec<usize>,
    lookups: usize,
    durable_samples: usize,
    concurrency: Vec<usize>,
    /// How long each throughput level runs.
    window: Duration,
    /// The most a store's warm-up may take (see [`warm_up`]).
    warm_up: Duration,
}

impl Plan {
    fn new(full: bool) -> Self {
        if full {
            Self {
                sizes: vec![10, 1_000, 100_000],
                lookups: 50,
                durable_samples: 300,
                concurrency: vec![1, 8, 64, 256],
                window: Duration::from_secs(1),
                warm_up: Duration::from_secs(1),
            }
        } else {
            Self {
                sizes: vec![10, 200],
                lookups: 5,
                durable_samples: 10,
                concurrency: vec![1, 8],
                window: Duration::from_millis(20),
                warm_up: Duration::from_millis(20),
            }
        }
    }
}

fn env(i: usize) -> Environment {
    let mut e = Environment::new(
        format!("env-{i:08}"),
        format!("environment number {i}"),
        Runtime::Python,
    );
    let _ = e.transition_to(Status::Running);
    e.ssh_port = (2000 + i % 60_000) as u16;
    e.inactivity_timeout = Duration::from_secs(1800);
    e.capabilities.path = "/usr/local/bin:/usr/bin:/bin".into();
    e.capabilities.python_cmd = Some("python3".into());
    e.capabilities.pip_cmd = Some("pip3".into());
    e.capabilities.has_venv = true;
    e.capabilities.has_apt_get = true;
    e.capabilities_detected = true;
    e
}

/// A small deterministic generator, so every store sees the same ids.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Memory,
    Redb,
    Sqlite,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Memory, Kind::Redb, Kind::Sqlite];
    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Redb => "redb",
            Kind::Sqlite => "sqlite",
        }
    }
}

/// RedbStore with the file locked exclusively: one fsync per commit.
fn open_exclusive(dir: &Path, tag: &str) -> Arc<dyn Repository> {
    let options = RedbOptions::default().live_readers(false);
    Arc::new(
        RedbStore::open_with(dir.join(format!("{tag}.redb-exclusive")), options)
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

async fn open(kind: Kind, dir: &Path, tag: &str) -> Arc<dyn Repository> {
    let path = dir.join(format!("{tag}.{}", kind.name()));
    match kind {
        Kind::Memory => Arc::new(MemoryStore::new()),
        Kind::Redb => Arc::new(RedbStore::open(path).unwrap_or_else(|e| panic!("{e}"))),
        Kind::Sqlite => Arc::new(SqliteStore::open(&path).unwrap_or_else(|e| panic!("{e}"))),
    }
}

/// Fills a store with `n` records, many saves in flight so redb batches them.
async fn fill(store: &Arc<dyn Repository>, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..64 {
        let store = Arc::clone(store);
        tasks.spawn(async move {
            for i in (chunk..n).step_by(64) {
                store.save(&env(i)).await.unwrap_or_else(|e| panic!("{e}"));
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Median seconds per call over `samples` batches of `batch` calls.
async fn per_call<F, Fut>(samples: usize, batch: usize, mut call: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(samples);
    let mut k = 0;
    for _ in 0..samples {
        let started = Instant::now();
        for _ in 0..batch {
            call(k).await;
            k += 1;
        }
        times.push(started.elapsed().as_secs_f64() / batch as f64);
    }
    median(times)
}

/// Raw `pwrite` of `len` bytes + `fdatasync`, p50 seconds.
fn raw_fdatasync(dir: &Path, len: usize, samples: usize) -> f64 {
    let file = raw_file(dir, &len.to_string());
    let buf = vec![0x5a_u8; len];
    median((0..samples).map(|i| raw_sample(&file, &buf, i)).collect())
}

/// The machine's other yardstick, for group commit: how long a thread
/// asleep on a channel takes to run after another thread sends to it, and
/// what the send costs the sender. Before each send the sender stays busy
/// for 150 µs, long enough for the receiver to be asleep, as a caller is
/// while its write is being synced. p50 seconds: (until it runs, send).
fn wake_up(samples: usize) -> (f64, f64) {
    let (to_sleeper, inbox) = std::sync::mpsc::channel::<Instant>();
    let (to_waker, replies) = std::sync::mpsc::channel::<f64>();
    let sleeper = std::thread::spawn(move || {
        while let Ok(sent) = inbox.recv() {
            if to_waker.send(sent.elapsed().as_secs_f64()).is_err() {
                return;
            }
        }
    });
    let (mut runs, mut sends) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let busy = Instant::now();
        while busy.elapsed() < Duration::from_micros(150) {
            std::hint::spin_loop();
        }
        let sent = Instant::now();
        to_sleeper.send(sent).unwrap_or_else(|e| panic!("{e}"));
        sends.push(sent.elapsed().as_secs_f64());
        runs.push(replies.recv().unwrap_or_else(|e| panic!("{e}")));
    }
    drop(to_sleeper);
    sleeper
        .join()
        .unwrap_or_else(|_| panic!("the sleeper panicked"));
    (median(runs), median(sends))
}

/// Durable save p50 side by side with the yardstick: each sample is one
/// raw 4 KiB `pwrite` + `fdatasync`, then one save of a stored id, so both
/// see the same disk at the same moment. Returns (raw p50, save p50).
async fn paired_save(
    store: &Arc<dyn Repository>,
    dir: &Path,
    n: usize,
    samples: usize,
) -> (f64, f64) {
    let file = raw_file(dir, "paired");
    let buf = vec![0x5a_u8; 4096];
    let (mut raws, mut saves) = (Vec::new(), Vec::new());
    for k in 0..samples {
        raws.push(raw_sample(&file, &buf, k));
        let mut e = env((k * 7919) % n);
        e.ssh_port = (k % 60_000) as u16;
        let started = Instant::now();
        store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
        saves.push(started.elapsed().as_secs_f64());
    }
    (median(raws), median(saves))
}

struct Row {
    op: &'static str,
    n: usize,
    secs: [f64; 3],
}

async fn micro(plan: &Plan, dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in &plan.sizes {
        let mut by_kind: Vec<[f64; 5]> = Vec::new();
        for kind in Kind::ALL {
            let store = open(kind, dir, &format!("micro-{n}")).await;
            if kind == Kind::Sqlite {
                // One transaction: the peer's fastest load.
                let envs: Vec<Environment> = (0..n).map(env).collect();
                let sqlite = SqliteStore::open(&dir.join(format!("micro-{n}.sqlite")))
                    .unwrap_or_else(|e| panic!("{e}"));
                sqlite.load(&envs).unwrap_or_else(|e| panic!("{e}"));
            } else {
                fill(&store, n).await;
            }
            assert_eq!(store.count().await.ok(), Some(n), "{kind:?} filled");
            let mut rng = Lcg(42);
            let ids: Vec<String> = (0..4096).map(|_| env(rng.next(n)).id).collect();
            // Warm: one pass over the ids read later, as a running server would have.
            for id in &ids {
                let _ = store.find_by_id(id).await;
            }
            let find = per_call(plan.lookups, 100, |k| {
                let (store, id) = (&store, &ids[k % ids.len()]);
                async move {
                    store.find_by_id(id).await.unwrap_or_else(|e| panic!("{e}"));
                }
            })
            .await;
            let count = per_call(plan.lookups, 100, |_| {
                let store = &store;
                async move {
                    store.count().await.unwrap_or_else(|e| panic!("{e}"));
                }
            })
            .await;
            let all_samples = if n >= 100_000 {
                5
            } else {
                plan.lookups.min(20)
            };
            let find_all = per_call(all_samples, 1, |_| {
                let store = &store;
                async move {
                    assert_eq!(store.find_all().await.map(|v| v.len()).ok(), Some(n));
                }
            })
            .await;
            let save = per_call(plan.durable_samples, 1, |k| {
                let (store, i) = (&store, k % n);
                async move {
                    let mut e = env(i);
                    e.ssh_port = (k % 60_000) as u16;
                    store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
                }
            })
            .await;
            // Delete is timed alone; the record is put back between samples.
            let mut deletes = Vec::new();
            for k in 0..plan.durable_samples.min(100) {
                let id = env(k % n).id;
                let started = Instant::now();
                store.delete(&id).await.unwrap_or_else(|e| panic!("{e}"));
                deletes.push(started.elapsed().as_secs_f64());
                store
                    .save(&env(k % n))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            by_kind.push([find, count, find_all, save, median(deletes)]);
        }
        for (i, op) in [
            "find_by_id",
            "count",
            "find_all",
            "save (durable)",
            "delete (durable)",
        ]
        .into_iter()
        .enumerate()
        {
            rows.push(Row {
                op,
                n,
                secs: [by_kind[0][i], by_kind[1][i], by_kind[2][i]],
            });
        }
    }
    rows
}

/// The two write workloads of the throughput table.
#[derive(Clone, Copy)]
enum Workload {
    /// Each task upserts its own 50 existing-style ids, spread over the key space.
    Upsert,
    /// Each task takes new environments through Waggle's lifecycle: save
    /// creating, running, three touches, destroying, then delete (7 writes).
    Lifecycle,
}

/// Durable writes per second with `tasks` concurrent writers, each writing
/// until `window` has passed (a lifecycle finishes its round); the rate is
/// every write over the whole time, the tail included.
async fn throughput(
    store: &Arc<dyn Repository>,
    tasks: usize,
    window: Duration,
    workload: Workload,
) -> f64 {
    run_writers(store, tasks, window, usize::MAX, workload).await
}

/// Writes of a fresh store before it is timed, enough to write each of a
/// redb store's two journal files through once (2 × the default 32 MiB
/// `checkpoint_bytes` of ~500-byte records, with room to spare).
const WARM_UP_WRITES: usize = 150_000;

/// Brings a fresh store to the state a running server's store is in: 64
/// writers run `workload` until [`WARM_UP_WRITES`] writes or `limit` has
/// passed. A redb store grows each journal file by writing zeros the first
/// time its writes reach them (so that later syncs write data only); that
/// happens once in a store's life until it is closed, and is not what the
/// throughput table measures. SQLite's WAL file grows the same way and is
/// warmed up the same.
async fn warm_up(store: &Arc<dyn Repository>, limit: Duration, workload: Workload) {
    run_writers(store, 64, limit, WARM_UP_WRITES, workload).await;
}

/// `tasks` writers running `workload` until `window` has passed or, all
/// together, they have made `max_writes` writes (a lifecycle finishes its
/// round); returns every write over the whole time, the tail included.
async fn run_writers(
    store: &Arc<dyn Repository>,
    tasks: usize,
    window: Duration,
    max_writes: usize,
    workload: Workload,
) -> f64 {
    let started = Instant::now();
    let deadline = started + window;
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let store = Arc::clone(store);
        let written = Arc::clone(&written);
        set.spawn(async move {
            let mut done = 0;
            let mut round = 0;
            while Instant::now() < deadline
                && written.load(std::sync::atomic::Ordering::Relaxed) < max_writes
            {
                let before = done;
                match workload {
                    Workload::Upsert => {
                        store
                            .save(&env(t * 100_000 + done % 50))
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        done += 1;
                    }
                    Workload::Lifecycle => {
                        let mut e = Environment::new(
                            format!("life-{t:03}-{round:06}"),
                            "lifecycle",
                            Runtime::Node,
                        );
                        store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
                        let _ = e.transition_to(Status::Running);
                        store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
                        for _ in 0..3 {
                            e.touch();
                            store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
                        }
                        let _ = e.transition_to(Status::Destroying);
                        store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
                        store.delete(&e.id).await.unwrap_or_else(|e| panic!("{e}"));
                        done += 7;
                        round += 1;
                    }
                }
                written.fetch_add(done - before, std::sync::atomic::Ordering::Relaxed);
            }
            done
        });
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r.unwrap_or_else(|e| panic!("{e}"));
    }
    total as f64 / started.elapsed().as_secs_f64()
}

const CHILD: &str = "WAGGLE_BENCH_CHILD";
const CHILD_JOURNAL: &str = "WAGGLE_BENCH_CHILD_JOURNAL_WRITER";

/// Fills a redb store and then waits to be killed (the kill -9 reopen row).
fn child_fill_and_wait(path: &Path, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let store: Arc<dyn Repository> =
            Arc::new(RedbStore::open(path).unwrap_or_else(|e| panic!("{e}")));
        fill(&store, n).await;
        println!("ready");
        loop {
            // Keep committing so the kill lands mid-write.
            let _ = store.save(&env(0)).await;
        }
    });
}

/// Fills a store with `n` records and closes it, then reopens it and
/// rewrites them until the journal holds about `journal` bytes (no
/// checkpoint runs before 32 MiB), prints "ready", and keeps writing
/// slowly until killed: a busy writer for read-only handles to read beside.
fn child_journal_writer(path: &Path, n: usize, journal: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        {
            let store: Arc<dyn Repository> =
                Arc::new(RedbStore::open(path).unwrap_or_else(|e| panic!("{e}")));
            fill(&store, n).await;
        }
        let redb = Arc::new(RedbStore::open(path).unwrap_or_else(|e| panic!("{e}")));
        let record = waggle_store::record::encode(&env(0)).map_or(600, |r| r.len() + 17) as u64;
        let store: Arc<dyn Repository> = redb.clone();
        while redb.stats().saves * record < journal {
            fill(&store, n.min(10_000)).await;
        }
        println!("ready {}", redb.stats().saves * record);
        for i in 0.. {
            let _ = store.save(&env(i % n)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// find_by_id p50 on a read-only handle beside a writer (in a child
/// process) whose journal holds about `journal` bytes, and on an uncached
/// read-write handle of a store holding the same records.
fn read_only_beside_writer(dir: &Path, n: usize, journal: u64, samples: usize) -> (f64, f64, u64) {
    use std::io::BufRead;
    let path = dir.join("busy.redb");
    let mut child = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")))
        .env(CHILD_JOURNAL, &path)
        .env("WAGGLE_BENCH_CHILD_N", n.to_string())
        .env("WAGGLE_BENCH_CHILD_JOURNAL", journal.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let ready = child.stdout.take().and_then(|out| {
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("ready ").and_then(|b| b.parse::<u64>().ok()))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (read_only, uncached) = rt.block_on(async {
        let ro = RedbStore::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
        let ro_p50 = lookup_p50(&ro, n, samples).await;
        let plain = dir.join("uncached.redb");
        {
            let store: Arc<dyn Repository> =
                Arc::new(RedbStore::open(&plain).unwrap_or_else(|e| panic!("{e}")));
            fill(&store, n).await;
        }
        let options = RedbOptions::default().cache_entries(0);
        let rw = RedbStore::open_with(&plain, options).unwrap_or_else(|e| panic!("{e}"));
        let rw_p50 = lookup_p50(&rw, n, samples).await;
        (ro_p50, rw_p50)
    });
    let _ = child.kill();
    let _ = child.wait();
    (read_only, uncached, ready.unwrap_or(0))
}

/// find_by_id p50 over `samples` ids of the `n` stored, the same ids in
/// the same order for every store.
async fn lookup_p50(store: &RedbStore, n: usize, samples: usize) -> f64 {
    let mut lcg = Lcg(7);
    per_call(samples, 1, |_| {
        let id = env(lcg.next(n)).id;
        async move {
            store
                .find_by_id(&id)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    })
    .await
}

fn reopen_ms(path: &Path) -> (f64, usize) {
    reopen_ms_with(path, RedbOptions::default())
}

fn reopen_ms_with(path: &Path, options: RedbOptions) -> (f64, usize) {
    let started = Instant::now();
    let store = RedbStore::open_with(path, options).unwrap_or_else(|e| panic!("{e}"));
    let secs = started.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let n = rt.block_on(store.count()).unwrap_or(0);
    (secs * 1e3, n)
}

fn kill_9_then_reopen(dir: &Path, n: usize) -> (f64, usize) {
    use std::io::BufRead;
    let path = dir.join("killed.redb");
    let mut child = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("{e}")))
        .env(CHILD, &path)
        .env("WAGGLE_BENCH_CHILD_N", n.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(out) = child.stdout.take() {
        let mut lines = std::io::BufReader::new(out).lines();
        let _ = lines.next(); // "ready"
    }
    std::thread::sleep(Duration::from_millis(50));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    reopen_ms(&path)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    if let Ok(path) = std::env::var(CHILD) {
        let n = std::env::var("WAGGLE_BENCH_CHILD_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        return child_fill_and_wait(Path::new(&path), n);
    }
    if let Ok(path) = std::env::var(CHILD_JOURNAL) {
        let get = |key: &str, default: u64| {
            std::env::var(key)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let n = get("WAGGLE_BENCH_CHILD_N", 1000) as usize;
        return child_journal_writer(
            Path::new(&path),
            n,
            get("WAGGLE_BENCH_CHILD_JOURNAL", 1 << 20),
        );
    }
    let full = std::env::args().any(|a| a == "--bench");
    let plan = Plan::new(full);
    let base: PathBuf = std::env::var_os("WAGGLE_BENCH_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("waggle-bench-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "# waggle-store side-by-side benchmark ({})",
        if full { "full" } else { "smoke" }
    );
    println!(
        "directory: {}; cores: {}",
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    let raw_4k = raw_fdatasync(dir.path(), 4096, plan.durable_samples);
    let raw_512 = raw_fdatasync(dir.path(), 512, plan.durable_samples);
    println!("## Yardstick: raw pwrite + fdatasync, p50");
    println!(
        "| write size | p50 |\n|---|---|\n| 512 B | {} |\n| 4 KiB | {} |",
        fmt_time(raw_512),
        fmt_time(raw_4k)
    );
    println!();
    let (woken, send) = wake_up(plan.durable_samples * 10);
    println!("## Yardstick: waking a sleeping thread, p50");
    println!(
        "| until it runs | the send, for the sender |\n|---|---|\n| {} | {} |",
        fmt_time(woken),
        fmt_time(send)
    );
    println!();

    let rows = rt.block_on(micro(&plan, dir.path()));
    println!("## Operations, median per call");
    println!("| operation | records | memory | redb | sqlite | redb / memory | sqlite / redb |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2}× | {:.2}× |",
            r.op,
            r.n,
            fmt_time(r.secs[0]),
            fmt_time(r.secs[1]),
            fmt_time(r.secs[2]),
            r.secs[1] / r.secs[0],
            r.secs[2] / r.secs[1]
        );
    }
    println!();

    // Durable save against the yardstick, measured side by side.
    let big = *plan.sizes.last().unwrap_or(&10);
    let paired = rt.block_on(async {
        let samples = plan.durable_samples * 3;
        let mut rows = Vec::new();
        for (label, store, n) in [
            (
                "redb (default)",
                open(Kind::Redb, dir.path(), &format!("micro-{big}")).await,
                big,
            ),
            (
                "redb (`live_readers: false`)",
                open_exclusive(dir.path(), "paired"),
                1_000,
            ),
            (
                "sqlite",
                open(Kind::Sqlite, dir.path(), &format!("micro-{big}")).await,
                big,
            ),
        ] {
            if store.count().await.unwrap_or(0) < n {
                fill(&store, n).await;
            }
            let (raw, save) = paired_save(&store, dir.path(), n, samples).await;
            rows.push((label, n, raw, save));
        }
        rows
    });
    println!("## Durable save vs raw fdatasync, side by side");
    println!("Each sample: one raw 4 KiB pwrite + fdatasync, then one save; medians.");
    println!();
    println!("| store | records | raw p50 | save p50 | save / raw |\n|---|---:|---:|---:|---:|");
    for (label, n, raw, save) in &paired {
        println!(
            "| {label} | {n} | {} | {} | {:.2}× |",
            fmt_time(*raw),
            fmt_time(*save),
            save / raw
        );
    }
    println!();

    // tput[w][k]: workload w (upsert, lifecycle), store k (redb, sqlite);
    // the median of `ROUNDS` windows, the levels taking turns so that each
    // sees the disk's good and bad moments alike.
    const ROUNDS: usize = 3;
    let mut samples: Vec<[[Vec<f64>; 2]; 2]> = plan
        .concurrency
        .iter()
        .map(|_| Default::default())
        .collect();
    rt.block_on(async {
        for round in 0..ROUNDS {
            for (l, &tasks) in plan.concurrency.iter().enumerate() {
                for (w, workload) in [Workload::Upsert, Workload::Lifecycle]
                    .into_iter()
                    .enumerate()
                {
                    for (k, kind) in [Kind::Redb, Kind::Sqlite].into_iter().enumerate() {
                        let tag = format!("tput-{tasks}-{w}-{round}");
                        let store = open(kind, dir.path(), &tag).await;
                        warm_up(&store, plan.warm_up, workload).await;
                        samples[l][w][k]
                            .push(throughput(&store, tasks, plan.window, workload).await);
                    }
                }
            }
        }
    });
    let tput: Vec<(usize, [[f64; 2]; 2])> = plan
        .concurrency
        .iter()
        .zip(samples)
        .map(|(&tasks, cell)| (tasks, cell.map(|w| w.map(median))))
        .collect();
    println!("## Durable write throughput (writes/s)");
    println!(
        "Upsert: each writer saves its own 50 ids, spread over the key space. Lifecycle: each"
    );
    println!("writer takes new environments through Waggle's lifecycle (6 saves and a delete).");
    println!(
        "Each cell: the median of {ROUNDS} windows of {:?}, the levels taking turns, each on a",
        plan.window
    );
    println!(
        "fresh store warmed up first (64 writers, up to {WARM_UP_WRITES} writes or {:?}).",
        plan.warm_up
    );
    println!();
    println!(
        "| writers | upsert: redb | vs 1 writer | sqlite | redb / sqlite | lifecycle: redb | vs 1 writer | sqlite | redb / sqlite |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let one = tput
        .first()
        .map_or([f64::NAN; 2], |t| [t.1[0][0], t.1[1][0]]);
    for (tasks, [[ur, us], [lr, ls]]) in &tput {
        println!(
            "| {tasks} | {ur:.0} | {:.1}× | {us:.0} | {:.1}× | {lr:.0} | {:.1}× | {ls:.0} | {:.1}× |",
            ur / one[0],
            ur / us,
            lr / one[1],
            lr / ls
        );
    }
    println!();

    // The option not taken by default: no live readers (the file locked).
    let (excl_save, excl_one, excl_64) = rt.block_on(async {
        let store = open_exclusive(dir.path(), "options");
        fill(&store, 1_000).await;
        let save = per_call(plan.durable_samples, 1, |k| {
            let store = &store;
            async move {
                store
                    .save(&env(k % 1_000))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        })
        .await;
        let mut rates = Vec::new();
        for tasks in [1, 64] {
            let store = open_exclusive(dir.path(), &format!("options-{tasks}"));
            warm_up(&store, plan.warm_up, Workload::Upsert).await;
            rates.push(throughput(&store, tasks, plan.window, Workload::Upsert).await);
        }
        let (one, many) = (rates[0], rates[1]);
        (save, one, many)
    });
    println!(
        "## redb with `live_readers: false` (exclusive lock; a checkpoint syncs once, not twice)"
    );
    println!("| measure | value |\n|---|---:|");
    println!("| save p50 at 1,000 records | {} |", fmt_time(excl_save));
    println!("| upsert writes/s, 1 writer | {excl_one:.0} |");
    println!(
        "| upsert writes/s, 64 writers | {excl_64:.0} ({:.1}× one writer) |",
        excl_64 / excl_one
    );
    println!();

    let small = plan.sizes[0];
    let clean = dir.path().join(format!("micro-{big}.redb"));
    let (clean_ms, clean_n) = reopen_ms(&clean);
    let unverified = RedbOptions::default().verify_on_open(false);
    let (fast_ms, _) = reopen_ms_with(&clean, unverified);
    let clean_mb = std::fs::metadata(&clean).map_or(f64::NAN, |m| m.len() as f64 / 1e6);
    let size_before = std::fs::metadata(&clean).map_or(0, |m| m.len());
    let (_, size_after) = RedbStore::compact(&clean).unwrap_or_else(|e| panic!("{e}"));
    let (killed_ms, killed_n) = if full {
        kill_9_then_reopen(dir.path(), big)
    } else {
        (f64::NAN, 0)
    };
    println!("## File and reopen at {big} records");
    println!("| measure | value |\n|---|---:|");
    println!(
        "| reopen after clean close, every page verified (default) | {clean_ms:.1} ms ({clean_n} records, {clean_mb:.0} MB: {:.2} ms/MB) |",
        clean_ms / clean_mb
    );
    println!("| reopen after clean close, `verify_on_open: false` | {fast_ms:.1} ms |");
    println!("| reopen after kill -9 | {killed_ms:.1} ms ({killed_n} records) |");
    println!(
        "| file bytes per record, before compact | {:.0} |",
        size_before as f64 / big as f64
    );
    println!(
        "| file bytes per record, after compact | {:.0} |",
        size_after as f64 / big as f64
    );
    println!(
        "| peak RSS of this benchmark process | {:.0} MiB |",
        peak_rss_mib()
    );
    println!();

    let (ro_n, ro_journal) = if full {
        (10_000, 28 << 20)
    } else {
        (200, 256 << 10)
    };
    let (ro_p50, rw_uncached_p50, ro_bytes) =
        read_only_beside_writer(dir.path(), ro_n, ro_journal, plan.durable_samples * 3);
    println!("## A read-only handle beside a busy writer");
    println!(
        "The writer (another process) holds {ro_n} records and a journal of about {:.1} MiB and keeps writing.",
        ro_bytes as f64 / f64::from(1 << 20)
    );
    println!("| find_by_id p50 | value |\n|---|---:|");
    println!("| read-only handle | {} |", fmt_time(ro_p50));
    println!(
        "| read-write handle, cache off, same records | {} |",
        fmt_time(rw_uncached_p50)
    );
    println!(
        "| read-only / uncached read-write | {:.2}× |",
        ro_p50 / rw_uncached_p50
    );
    println!();

    let get = |op: &str, n: usize| {
        rows.iter()
            .find(|r| r.op == op && r.n == n)
            .map_or([f64::NAN; 3], |r| r.secs)
    };
    let (raw_paired, save1) = paired.first().map_or((f64::NAN, f64::NAN), |p| (p.2, p.3));
    let find = get("find_by_id", big);
    let count_small = get("count", small)[1];
    let count_big = get("count", big)[1];
    // [upsert redb, upsert sqlite, lifecycle redb, lifecycle sqlite] at `w` writers.
    let at = |w: usize| {
        tput.iter()
            .find(|t| t.0 == w)
            .map(|t| [t.1[0][0], t.1[0][1], t.1[1][0], t.1[1][1]])
    };
    let checks: Vec<(String, bool)> = vec![
        (
            format!(
                "read-only find_by_id ≤ 2 × uncached read-write find_by_id, beside a writer with a {:.0} MiB journal: {:.2}×",
                ro_bytes as f64 / f64::from(1 << 20),
                ro_p50 / rw_uncached_p50
            ),
            ro_p50 <= 2.0 * rw_uncached_p50,
        ),
        (
            format!(
                "durable save p50 ≤ 1.3 × raw 4 KiB fdatasync p50 (side by side, {big} records): {:.2}×",
                save1 / raw_paired
            ),
            save1 <= 1.3 * raw_paired,
        ),
        (
            format!(
                "64 writers ≥ 20 × one writer, upsert: {:.1}×",
                at(64).map_or(f64::NAN, |t| t[0] / one[0])
            ),
            at(64).is_some_and(|t| t[0] >= 20.0 * one[0]),
        ),
        (
            format!(
                "64 writers ≥ 20 × one writer, lifecycle: {:.1}×",
                at(64).map_or(f64::NAN, |t| t[2] / one[1])
            ),
            at(64).is_some_and(|t| t[2] >= 20.0 * one[1]),
        ),
        (
            format!(
                "find_by_id redb ≤ 3 × memory at {big}: {:.2}×",
                find[1] / find[0]
            ),
            find[1] <= 3.0 * find[0],
        ),
        (
            format!(
                "find_by_id redb ≥ 3 × faster than sqlite at {big}: {:.1}×",
                find[2] / find[1]
            ),
            find[2] >= 3.0 * find[1],
        ),
        (
            format!(
                "64 writers: redb ≥ 4 × sqlite, upsert: {:.1}×",
                at(64).map_or(f64::NAN, |t| t[0] / t[1])
            ),
            at(64).is_some_and(|t| t[0] >= 4.0 * t[1]),
        ),
        (
            format!(
                "64 writers: redb ≥ 4 × sqlite, lifecycle: {:.1}×",
                at(64).map_or(f64::NAN, |t| t[2] / t[3])
            ),
            at(64).is_some_and(|t| t[2] >= 4.0 * t[3]),
        ),
        (
            format!(
                "count at {big} within 2 × of count at {small}: {:.2}×",
                count_big / count_small
            ),
            count_big <= 2.0 * count_small,
        ),
        (
            format!(
                "reopen after clean close at {big} ≤ 50 ms (every page verified, the default since 0.3): {clean_ms:.1} ms"
            ),
            clean_ms <= 50.0,
        ),
        (
            format!(
                "reopen after clean close at {big} ≤ 50 ms with `verify_on_open: false`: {fast_ms:.1} ms"
            ),
            fast_ms <= 50.0,
        ),
    ];
    println!("## Targets");
    for (what, holds) in &checks {
        println!("- [{}] {what}", if *holds { "x" } else { " " });
    }
    if !full {
        println!("\n(smoke run: sizes and samples are too small for the targets to mean anything)");
    }
}
