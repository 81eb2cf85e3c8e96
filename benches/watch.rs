// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! How soon a watcher hears of a write, on redb, side by side in one run:
//! from a save's acknowledgement to a watcher yielding its change — on the
//! writer's own handle (woken by the write), in another process following
//! the journal (it looks every 10 ms), and a follower polling `changes`
//! once a second, the usual alternative. The other process is this
//! benchmark run again as a child; both sides read the system clock.
//!
//! `cargo bench --bench watch` (full); `cargo test --benches` a smoke pass.

#[path = "support/yardstick.rs"]
mod yardstick;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use yardstick::{fmt_time, median};

use waggle_store::{Audited, ChangeStream, Environment, RedbStore, Repository, Revision, Runtime};

const CHILD: &str = "WAGGLE_BENCH_WATCH_CHILD";

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

async fn next(stream: &mut ChangeStream<'_>) -> waggle_store::Change {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx))
        .await
        .unwrap_or_else(|| panic!("the watcher ended"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The child: watches the store read-only and prints, for each change, its
/// id and when it arrived.
fn child(path: &Path, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let store = RedbStore::open_read_only(path).unwrap_or_else(|e| panic!("{e}"));
        let mut watch = store.watch(Revision::new(0));
        let mut out = std::io::stdout().lock();
        loop {
            let change = next(&mut watch).await;
            let _ = writeln!(out, "{} {}", change.id, now_nanos());
            let _ = out.flush();
        }
    });
}

/// Saves `samples` environments a while apart (`spacing`, plus up to
/// `spread` more, so writes fall at every phase of a poller's cycle); for
/// each, the time from its acknowledgement to `seen(id)` returning the
/// time it was seen.
async fn latencies(
    store: &RedbStore,
    samples: usize,
    spacing: Duration,
    spread: Duration,
    tag: &str,
    mut seen: impl AsyncFnMut(&str) -> u128,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("{tag}-{i}");
        store
            .save(&Environment::new(id.clone(), "x", Runtime::Shell))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let acked = now_nanos();
        let at = seen(&id).await;
        out.push(at.saturating_sub(acked) as f64 / 1e9);
        // Spread over the watcher's polling phase, not in step with it.
        let spread_us = u64::try_from(spread.as_micros()).unwrap_or(1).max(1);
        tokio::time::sleep(spacing + Duration::from_micros((i as u64 * 7_919_311) % spread_us))
            .await;
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(path) = std::env::var_os(CHILD) {
        child(Path::new(&path), &rt);
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (samples, polled) = if full { (200, 30) } else { (10, 3) };
    let base: PathBuf = std::env::var_os("WAGGLE_BENCH_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("waggle-bench-watch-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("watch.db");
    println!(
        "# Watch latency on redb ({}), directory {}, cores: {}",
        if full { "full" } else { "smoke" },
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    let store = Arc::new(RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}")));
    let mut rows = Vec::new();
    rt.block_on(async {
        // The writer's own handle, woken by each write.
        let mut watch = store.watch(Revision::new(0));
        let same = latencies(
            &store,
            samples,
            Duration::from_millis(2),
            Duration::from_millis(10),
            "same",
            async |id| {
                loop {
                    if next(&mut watch).await.id == id {
                        return now_nanos();
                    }
                }
            },
        )
        .await;
        drop(watch);
        rows.push(("redb, the writer's own handle (woken by the write)", same));
    });

    // Another process following the journal.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut watcher = Command::new(exe)
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = watcher.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let (tx, rx) = std::sync::mpsc::channel::<(String, u128)>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some((id, at)) = line.split_once(' ')
                && let Ok(at) = at.parse()
                && tx.send((id.to_owned(), at)).is_err()
            {
                return;
            }
        }
    });
    let rx = std::sync::Mutex::new(rx);
    rt.block_on(async {
        let other = latencies(
            &store,
            samples,
            Duration::from_millis(2),
            Duration::from_millis(10),
            "other",
            async |id| {
                loop {
                    let (got, at) = rx
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .recv_timeout(Duration::from_secs(10))
                        .unwrap_or_else(|e| panic!("the watcher process is silent: {e}"));
                    if got == id {
                        return at;
                    }
                }
            },
        )
        .await;
        rows.push((
            "redb, a watcher in another process (looks every 10 ms)",
            other,
        ));
    });
    let _ = watcher.kill();
    let _ = watcher.wait();

    rt.block_on(async {
        // The alternative: a follower polling `changes` once a second.
        let mut cursor = store
            .changes(Revision::new(0), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .last()
            .map_or(Revision::new(0), |c| c.revision);
        let poll = Duration::from_secs(1);
        let mut next_poll = Instant::now() + poll;
        let polling = latencies(
            &store,
            polled,
            Duration::ZERO,
            Duration::from_secs(1),
            "poll",
            async |id| {
                loop {
                    tokio::time::sleep_until(next_poll.into()).await;
                    next_poll += poll;
                    let page = store
                        .changes(cursor, 1000)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let at = now_nanos();
                    if let Some(last) = page.last() {
                        cursor = last.revision;
                    }
                    if page.iter().any(|c| c.id == id) {
                        return at;
                    }
                }
            },
        )
        .await;
        rows.push((
            "polling changes once a second (the usual alternative)",
            polling,
        ));
    });
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().unwrap_or_else(|e| panic!("{e}"));
    }
    println!("| watcher | p50 | p99 | samples |\n|---|---:|---:|---:|");
    for (what, v) in rows {
        let n = v.len();
        println!(
            "| {what} | {} | {} | {n} |",
            fmt_time(median(v.clone())),
            fmt_time(percentile(v, 0.99))
        );
    }
    if !full {
        println!("\n(smoke run: too few samples for the figures to mean anything)");
    }
}
