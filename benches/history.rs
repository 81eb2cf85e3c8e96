// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! What the history costs on redb, side by side in one run: a save with
//! the history recorded against one without (two stores in one directory,
//! each sample one of each after a raw `pwrite` + `fdatasync`, the
//! yardstick); 64 writers with and without; how fast a follower reads
//! `changes`; and the disk a realistic life of 100,000 environments takes
//! with and without its history (create, running, touches, destroying,
//! delete).
//!
//! `cargo bench --bench history` (full); `cargo test --benches` runs a
//! smoke pass.

#[path = "support/yardstick.rs"]
mod yardstick;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use yardstick::{fmt_time, median, raw_file, raw_sample};

use waggle_store::store::redb::RedbOptions;
use waggle_store::{
    Audited, Environment, HistoryOptions, RedbStore, Repository, Retention, Revision,
    RevisionedExt, Runtime, Status,
};

fn env(i: usize) -> Environment {
    let mut e = Environment::new(
        format!("env-{i:06}"),
        format!("environment {i}"),
        Runtime::Python,
    );
    e.ssh_port = (2000 + i % 60_000) as u16;
    e.capabilities.path = "/usr/local/bin:/usr/bin:/bin".into();
    e.capabilities.python_cmd = Some("python3".into());
    e
}

fn open(path: &Path, history: bool) -> RedbStore {
    let retention = if history {
        Retention::All
    } else {
        Retention::Off
    };
    let options = RedbOptions::default().history(
        HistoryOptions::default()
            .origin("bench")
            .retention(retention),
    );
    RedbStore::open_with(path, options).unwrap_or_else(|e| panic!("{e}"))
}

/// One writer: a save with history, a save without, after a raw sync, in
/// turn; medians of each.
async fn side_by_side(on: &RedbStore, off: &RedbStore, dir: &Path, samples: usize) -> [f64; 3] {
    let file = raw_file(dir, "history");
    let buf = vec![0x5a_u8; 4096];
    let (mut raw, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..samples {
        raw.push(raw_sample(&file, &buf, k));
        let e = env(k % 1_000);
        // Alternate which goes first, so neither always follows the sync.
        for first in [k % 2 == 0, k % 2 == 1] {
            let (store, out) = if first {
                (on, &mut with)
            } else {
                (off, &mut without)
            };
            let started = Instant::now();
            store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
            out.push(started.elapsed().as_secs_f64());
        }
    }
    [median(raw), median(with), median(without)]
}

/// Saves per second with `writers` tasks, each on its own 50 ids.
async fn throughput(store: Arc<RedbStore>, writers: usize, window: Duration) -> f64 {
    let deadline = Instant::now() + window;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                store
                    .save(&env(w * 50 + n % 50))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap_or_else(|e| panic!("{e}"));
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The life of environment `i`: created, running, `touches` touches,
/// destroying, deleted. Returns the writes made.
async fn life(store: &RedbStore, i: usize, touches: usize) -> usize {
    let e = env(i);
    store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
    store
        .transition(&e.id, Status::Running)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..touches {
        store.touch(&e.id).await.unwrap_or_else(|e| panic!("{e}"));
    }
    store
        .transition(&e.id, Status::Destroying)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.delete(&e.id).await.unwrap_or_else(|e| panic!("{e}"));
    4 + touches
}

/// Runs `envs` lives on 64 tasks; returns the writes made and the file's
/// size once closed and compacted, in bytes.
async fn lives(path: &Path, history: bool, envs: usize, touches: usize) -> (usize, u64) {
    let store = Arc::new(open(path, history));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut writes = 0;
            for i in (t..envs).step_by(64) {
                writes += life(&store, i, touches).await;
            }
            writes
        });
    }
    let mut writes = 0;
    while let Some(n) = tasks.join_next().await {
        writes += n.unwrap_or_else(|e| panic!("{e}"));
    }
    Arc::try_unwrap(store)
        .unwrap_or_else(|_| panic!("the store is still shared"))
        .close()
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, size) = RedbStore::compact(path).unwrap_or_else(|e| panic!("{e}"));
    (writes, size)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (samples, window, rounds, envs, touches) = if full {
        (400, Duration::from_secs(2), 5, 100_000, 8)
    } else {
        (10, Duration::from_millis(50), 1, 640, 2)
    };
    let base: PathBuf = std::env::var_os("WAGGLE_BENCH_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("waggle-bench-history-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "# History on redb ({}), directory {}, cores: {}",
        if full { "full" } else { "smoke" },
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    rt.block_on(async {
        let on = open(&dir.path().join("on.db"), true);
        let off = open(&dir.path().join("off.db"), false);
        let [raw, with, without] = side_by_side(&on, &off, dir.path(), samples).await;
        on.close().unwrap_or_else(|e| panic!("{e}"));
        off.close().unwrap_or_else(|e| panic!("{e}"));
        println!("## One writer: a save with the history vs without ({samples} samples each, side by side)");
        println!("| raw 4 KiB fdatasync p50 | save, history on, p50 | save, history off, p50 | on / off |");
        println!("|---:|---:|---:|---:|");
        println!(
            "| {} | {} | {} | {:.2}× |",
            fmt_time(raw),
            fmt_time(with),
            fmt_time(without),
            with / without
        );
        println!();

        // Rounds alternate on and off, each on a new store, and the
        // medians are compared: one pair on this machine ranged over 30 %.
        let mut runs: [[Vec<f64>; 2]; 2] = Default::default();
        for round in 0..rounds {
            for (k, history) in [true, false].into_iter().enumerate() {
                let store = Arc::new(open(
                    &dir.path().join(format!("tp-{history}-{round}.db")),
                    history,
                ));
                runs[k][0].push(throughput(Arc::clone(&store), 1, window).await);
                runs[k][1].push(throughput(Arc::clone(&store), 64, window).await);
            }
        }
        let rows: Vec<(bool, f64, f64)> = [true, false]
            .into_iter()
            .zip(runs)
            .map(|(history, [one, many])| (history, median(one), median(many)))
            .collect();
        println!("## Saves per second (medians of {rounds} alternating rounds of {window:?})");
        println!("| history | 1 writer | 64 writers | 64 / 1 |\n|---|---:|---:|---:|");
        for (history, one, many) in &rows {
            println!(
                "| {} | {one:.0} | {many:.0} | {:.1}× |",
                if *history { "on" } else { "off" },
                many / one
            );
        }
        println!();

        // The realistic mix, with and without the history, then a
        // follower reading every change of the one with it.
        let (writes, size_on) = lives(&dir.path().join("life-on.db"), true, envs, touches).await;
        let (_, size_off) = lives(&dir.path().join("life-off.db"), false, envs, touches).await;
        let store = open(&dir.path().join("life-on.db"), true);
        let started = Instant::now();
        let (mut read, mut cursor) = (0usize, Revision::new(0));
        loop {
            let page = store
                .changes(cursor, 1000)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let Some(last) = page.last() else { break };
            cursor = last.revision;
            read += page.len();
        }
        let rate = read as f64 / started.elapsed().as_secs_f64();
        store.close().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, writes, "the follower read every change");
        let per_change = (size_on.saturating_sub(size_off)) as f64 / writes as f64;
        println!(
            "## {envs} environments, each created, running, touched {touches} times, destroying, deleted ({writes} writes)"
        );
        println!("| | value |\n|---|---:|");
        println!("| file, history off (compacted) | {:.1} MB |", size_off as f64 / 1e6);
        println!("| file, history on, every change kept (compacted) | {:.1} MB |", size_on as f64 / 1e6);
        println!("| disk per change | {per_change:.0} bytes |");
        println!("| a follower reading changes, 1,000 a call | {rate:.0} changes/s |");
        println!();
        println!("## Targets");
        let mark = |ok: bool| if ok { "x" } else { " " };
        println!(
            "- [{}] a save with the history ≤ 1.15 × one without (one writer, same fsync): {:.2}×",
            mark(with <= 1.15 * without),
            with / without
        );
        let (on64, off64) = (rows[0].2, rows[1].2);
        println!(
            "- [{}] 64 writers keep their scaling with the history: {:.1}× one writer (off: {:.1}×), {:.2}× the saves/s without it",
            mark(on64 / rows[0].1 >= 0.85 * (off64 / rows[1].1)),
            on64 / rows[0].1,
            off64 / rows[1].1,
            on64 / off64
        );
        println!(
            "- [{}] changes read at ≥ 100,000 changes/s: {rate:.0}/s",
            mark(rate >= 100_000.0)
        );
        if !full {
            println!("\n(smoke run: too few samples for the targets to mean anything)");
        }
    });
}
