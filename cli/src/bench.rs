// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! `waggle-store bench`: a workload for operators to measure their own disk
//! and backend. Tasks run Waggle's lifecycle (or another mix) against a
//! store for a while; it prints throughput and p50/p99/p99.9 latency per
//! operation from HDR histograms.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use waggle_store::config::StoreKind;
use waggle_store::store::redb::Stats;
use waggle_store::{Environment, MemoryStore, RedbStore, Repository, Runtime, Status, StoreConfig};

/// The operation mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Save creating, find, save running, three touches (find + save),
    /// save destroying, delete.
    Lifecycle,
    /// Nine finds for every save of an existing environment.
    ReadHeavy,
    /// Saves of existing environments only.
    WriteOnly,
}

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Environments stored before the run starts.
    #[arg(long, default_value_t = 1000)]
    pub records: usize,
    /// Concurrent tasks (1 to 256 is the interesting range).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    pub duration: f64,
    /// Seconds to run the same workload, untimed, before the run: a new
    /// redb store grows its journal files (writing zeros) the first time
    /// writes reach their end, which a store that has been running for a
    /// while no longer does. 0 measures a cold store.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    pub warmup: f64,
    /// The operation mix.
    #[arg(long, value_enum, default_value_t = Mix::Lifecycle)]
    pub mix: Mix,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// A number of seconds from 0 to a day.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("expected seconds from 0 to 86400, got `{s}`")),
    }
}

const OPS: [&str; 5] = ["save", "find_by_id", "find_all", "delete", "count"];

#[derive(Debug, Serialize)]
struct OpReport {
    op: &'static str,
    count: u64,
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    store: String,
    records: usize,
    concurrency: u16,
    mix: String,
    seconds: f64,
    /// Seconds the same workload ran, untimed, before the run.
    warmup_seconds: f64,
    total_per_second: f64,
    ops: Vec<OpReport>,
    redb_commits: Option<u64>,
    redb_saves_and_deletes: Option<u64>,
}

struct Recorder {
    hist: Vec<Histogram<u64>>,
}

impl Recorder {
    fn new() -> anyhow::Result<Self> {
        let hist = OPS
            .iter()
            .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3))
            .collect::<Result<_, _>>()
            .context("cannot create a histogram")?;
        Ok(Self { hist })
    }

    async fn time<T>(
        &mut self,
        op: usize,
        f: impl std::future::Future<Output = waggle_store::Result<T>>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let out = f.await?;
        let micros = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.hist[op].saturating_record(micros);
        Ok(out)
    }
}

fn env(id: String, runtime: Runtime) -> Environment {
    let mut e = Environment::new(id, "bench environment", runtime);
    e.inactivity_timeout = Duration::from_secs(1800);
    e
}

/// `args.concurrency` workers running the mix until `deadline`.
fn workers(
    store: &Arc<dyn Repository>,
    args: &BenchArgs,
    deadline: Instant,
) -> tokio::task::JoinSet<anyhow::Result<Recorder>> {
    let mut set = tokio::task::JoinSet::new();
    for task in 0..usize::from(args.concurrency) {
        set.spawn(worker(Arc::clone(store), task, args.clone(), deadline));
    }
    set
}

async fn worker(
    store: Arc<dyn Repository>,
    task: usize,
    args: BenchArgs,
    deadline: Instant,
) -> anyhow::Result<Recorder> {
    const SAVE: usize = 0;
    const FIND: usize = 1;
    const DELETE: usize = 3;
    let mut rec = Recorder::new()?;
    let mut round = 0usize;
    let existing = |k: usize| format!("bench-{:08}", k % args.records.max(1));
    while Instant::now() < deadline {
        round += 1;
        match args.mix {
            Mix::Lifecycle => {
                let mut e = env(format!("life-{task}-{round}"), Runtime::Python);
                rec.time(SAVE, store.save(&e)).await?;
                rec.time(FIND, store.find_by_id(&e.id)).await?;
                e.transition_to(Status::Running)?;
                e.ssh_port = 2222;
                rec.time(SAVE, store.save(&e)).await?;
                for _ in 0..3 {
                    rec.time(FIND, store.find_by_id(&e.id)).await?;
                    e.touch();
                    rec.time(SAVE, store.save(&e)).await?;
                }
                e.transition_to(Status::Destroying)?;
                rec.time(SAVE, store.save(&e)).await?;
                rec.time(DELETE, store.delete(&e.id)).await?;
            }
            Mix::ReadHeavy => {
                for k in 0..9 {
                    rec.time(
                        FIND,
                        store.find_by_id(&existing(task * 7919 + round * 13 + k)),
                    )
                    .await?;
                }
                rec.time(
                    SAVE,
                    store.save(&env(existing(task + round), Runtime::Node)),
                )
                .await?;
            }
            Mix::WriteOnly => {
                rec.time(
                    SAVE,
                    store.save(&env(existing(task * 7919 + round), Runtime::Shell)),
                )
                .await?;
            }
        }
    }
    Ok(rec)
}

/// A name no other benchmark uses: the process id and the time.
fn scratch_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("waggle_bench_{}_{nanos}", std::process::id())
}

/// A scratch redb store beside the store it stands in for: removed, with
/// its journal files, when dropped.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let mut names = vec![self.0.clone()];
        for n in 0..2 {
            let mut wal = self.0.clone().into_os_string();
            wal.push(format!("-wal{n}"));
            names.push(PathBuf::from(wal));
        }
        for name in names {
            if let Err(e) = std::fs::remove_file(&name)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("could not remove the scratch file {}: {e}", name.display());
            }
        }
    }
}

/// Runs the benchmark — never on real data. On PostgreSQL it runs in a
/// scratch schema of its own on the same server, dropped at the end; with a
/// redb `--store`, in a scratch file beside it (the same file system and
/// disk), removed at the end; both also on Ctrl-C and on error. Without
/// `--store`, on a temporary redb store.
pub async fn run(config: Option<&StoreConfig>, args: BenchArgs) -> anyhow::Result<()> {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("interrupted: cleaning up");
    };
    match config.map(|c| &c.kind) {
        Some(StoreKind::Memory) => {
            measure(Arc::new(MemoryStore::new()), None, "memory".into(), &args).await
        }
        #[cfg(feature = "postgres")]
        Some(StoreKind::Postgres { url, schema, pool }) => {
            use waggle_store::store::postgres::{PgOptions, PgStore};
            let scratch = scratch_name();
            eprintln!(
                "benchmarking in the scratch schema {scratch} on the server of {url}; schema {schema} is not touched, and the scratch schema is dropped at the end"
            );
            let options = PgOptions::default()
                .schema(scratch.as_str())
                .pool_size(pool.size)
                .connect_timeout(pool.connect_timeout)
                .statement_timeout(pool.statement_timeout);
            let store = Arc::new(PgStore::connect(url.expose(), options).await?);
            let label = format!("postgres {url} (scratch schema {scratch})");
            let result = tokio::select! {
                result = measure(store.clone(), None, label, &args) => result,
                () = interrupted => Ok(()),
            };
            let dropped = store.drop_schema().await;
            match (&result, dropped) {
                (_, Ok(())) => eprintln!("dropped the scratch schema {scratch}"),
                (Ok(()), Err(e)) => {
                    return Err(e).context(format!("dropping the scratch schema {scratch}"));
                }
                (Err(_), Err(e)) => eprintln!("could not drop the scratch schema {scratch}: {e}"),
            }
            result
        }
        #[cfg(not(feature = "postgres"))]
        Some(StoreKind::Postgres { url, .. }) => {
            anyhow::bail!("{url}: this build has no PostgreSQL support")
        }
        Some(StoreKind::Redb { path }) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let scratch = ScratchFile(dir.join(format!(".{}.db", scratch_name())));
            eprintln!(
                "benchmarking a scratch store beside {} (the same disk): {}; the store is not touched, and the scratch file is removed at the end",
                path.display(),
                scratch.0.display()
            );
            let redb = Arc::new(RedbStore::open(&scratch.0).with_context(|| {
                format!("cannot make a scratch store beside {}", path.display())
            })?);
            let label = format!("redb, a scratch store beside {}", path.display());
            let result = tokio::select! {
                result = measure(redb.clone(), Some(redb.clone()), label, &args) => result,
                () = interrupted => Ok(()),
            };
            // Closed before its files go.
            if let Ok(redb) = Arc::try_unwrap(redb) {
                let _ = tokio::task::spawn_blocking(move || redb.close()).await;
            }
            drop(scratch);
            result
        }
        _ => {
            let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            let path = temp.path().join("bench.db");
            let redb = Arc::new(RedbStore::open(&path)?);
            let label = format!("redb {}", path.display());
            let result = tokio::select! {
                result = measure(redb.clone(), Some(redb.clone()), label, &args) => result,
                () = interrupted => Ok(()),
            };
            drop(redb);
            result
        }
    }
}

/// The benchmark itself, on `store` (and its redb counters, if it is one).
async fn measure(
    store: Arc<dyn Repository>,
    redb: Option<Arc<RedbStore>>,
    label: String,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    eprintln!("preloading {} environments into {label} ...", args.records);
    let mut load = tokio::task::JoinSet::new();
    for chunk in 0..64 {
        let (store, records) = (Arc::clone(&store), args.records);
        load.spawn(async move {
            for k in (chunk..records).step_by(64) {
                store
                    .save(&env(format!("bench-{k:08}"), Runtime::Python))
                    .await?;
            }
            Ok::<_, waggle_store::Error>(())
        });
    }
    while let Some(done) = load.join_next().await {
        done??;
    }
    if args.warmup > 0.0 {
        eprintln!("warming up for {} s ...", args.warmup);
        let deadline = Instant::now() + Duration::from_secs_f64(args.warmup);
        let mut warm = workers(&store, args, deadline);
        while let Some(done) = warm.join_next().await {
            done??;
        }
    }
    let before = redb.as_ref().map(|r| r.stats()).unwrap_or_default();
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = workers(&store, args, deadline);
    let bar = crate::commands::progress(duration.as_secs() as usize, "bench (seconds)");
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut merged = Recorder::new()?;
    loop {
        tokio::select! {
            _ = ticker.tick() => bar.set_position(started.elapsed().as_secs()),
            done = tasks.join_next() => match done {
                Some(rec) => {
                    let rec = rec??;
                    for (into, from) in merged.hist.iter_mut().zip(&rec.hist) {
                        into.add(from).context("cannot merge histograms")?;
                    }
                }
                None => break,
            },
        }
    }
    bar.finish_and_clear();
    // A final read of the whole store and the count, timed once each.
    merged.time(2, store.find_all()).await?;
    merged.time(4, store.count()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after: Stats = redb.as_ref().map(|r| r.stats()).unwrap_or_default();
    let mut ops = Vec::new();
    for (op, h) in OPS.iter().zip(&merged.hist) {
        if h.is_empty() {
            continue;
        }
        ops.push(OpReport {
            op,
            count: h.len(),
            per_second: h.len() as f64 / seconds,
            p50_us: h.value_at_quantile(0.5) as f64,
            p99_us: h.value_at_quantile(0.99) as f64,
            p999_us: h.value_at_quantile(0.999) as f64,
            max_us: h.max() as f64,
        });
    }
    let report = Report {
        store: label,
        records: args.records,
        concurrency: args.concurrency,
        mix: format!("{:?}", args.mix).to_lowercase(),
        seconds,
        warmup_seconds: args.warmup,
        total_per_second: ops.iter().map(|o| o.count).sum::<u64>() as f64 / seconds,
        ops,
        redb_commits: redb.as_ref().map(|_| after.commits - before.commits),
        redb_saves_and_deletes: redb
            .as_ref()
            .map(|_| after.saves + after.deletes - before.saves - before.deletes),
    };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "store: {}; {} records preloaded; {} tasks; mix {}; {:.1} s after {:.1} s of warm-up",
        r.store, r.records, r.concurrency, r.mix, r.seconds, r.warmup_seconds
    );
    println!(
        "{:<11} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10}",
        "OP", "COUNT", "OPS/S", "P50 µs", "P99 µs", "P99.9 µs", "MAX µs"
    );
    for o in &r.ops {
        println!(
            "{:<11} {:>9} {:>11.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            o.op, o.count, o.per_second, o.p50_us, o.p99_us, o.p999_us, o.max_us
        );
    }
    println!("total: {:.0} ops/s", r.total_per_second);
    if let (Some(commits), Some(writes)) = (r.redb_commits, r.redb_saves_and_deletes) {
        println!(
            "redb: {writes} writes in {commits} commits ({:.1} writes per commit)",
            writes as f64 / commits.max(1) as f64
        );
    }
}
