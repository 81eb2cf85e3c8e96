// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! What conditional writes cost, side by side in one run: a `save_if` at
//! the current revision against a plain `save` on the same redb store (one
//! writer, each sample one of each), with the raw `pwrite` + `fdatasync`
//! as the yardstick; and the lost-update workload — 64 tasks incrementing
//! one id through `update` — on memory and redb, with every increment
//! accounted for.
//!
//! `cargo bench --bench revisions` (full); `cargo test --benches` runs a
//! smoke pass.

#[path = "support/yardstick.rs"]
mod yardstick;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use yardstick::{fmt_time, median, raw_file, raw_sample};

use waggle_store::{
    Environment, Expected, MemoryStore, RedbStore, Repository, Revision, Revisioned, RevisionedExt,
    Runtime,
};

fn env(i: usize) -> Environment {
    let mut e = Environment::new(
        format!("env-{i:06}"),
        format!("environment {i}"),
        Runtime::Node,
    );
    e.capabilities.path = "/usr/local/bin:/usr/bin:/bin".into();
    e
}

/// Plain save vs conditional save at the current revision, alternating on
/// one store, each sample after a raw sync: medians of each.
async fn conditional_vs_plain(store: &RedbStore, dir: &Path, samples: usize) -> [f64; 3] {
    const IDS: usize = 1_000;
    let mut revisions: HashMap<String, Revision> = HashMap::new();
    for i in 0..IDS {
        let r = store
            .save_if(&env(i), Expected::Absent)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        revisions.insert(env(i).id, r);
    }
    let file = raw_file(dir, "revisions");
    let buf = vec![0x5a_u8; 4096];
    let (mut raw, mut plain, mut conditional) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..samples {
        raw.push(raw_sample(&file, &buf, k));
        let mut a = env((k * 7919) % IDS);
        a.ssh_port = (k % 60_000) as u16;
        let started = Instant::now();
        store.save(&a).await.unwrap_or_else(|e| panic!("{e}"));
        plain.push(started.elapsed().as_secs_f64());
        // The plain save moved a's revision: learn it off the clock.
        let now = store
            .find_revision(&a.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        revisions.insert(a.id.clone(), now.revision);
        let mut b = env((k * 7919 + 500) % IDS);
        b.ssh_port = (k % 60_000) as u16;
        let expected = revisions
            .get(&b.id)
            .copied()
            .map_or(Expected::Absent, Expected::Revision);
        let started = Instant::now();
        let r = store
            .save_if(&b, expected)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        conditional.push(started.elapsed().as_secs_f64());
        revisions.insert(b.id.clone(), r);
    }
    [median(raw), median(plain), median(conditional)]
}

/// `tasks` tasks incrementing one id through `update` for `window`: the
/// increments per second, after checking none was lost.
async fn lost_update_workload<S: Revisioned + 'static>(
    store: Arc<S>,
    tasks: usize,
    window: Duration,
) -> f64 {
    store
        .save(&Environment::new("hot", "x", Runtime::Shell))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        running.spawn(async move {
            while Instant::now() < deadline {
                store
                    .update("hot", |e| {
                        e.ssh_port = e.ssh_port.wrapping_add(1);
                        Ok(())
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while running.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let port = store
        .find_by_id("hot")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .ssh_port;
    assert_eq!(
        u64::from(port),
        n % 65_536,
        "{n} increments acknowledged, the value says {port}: updates were lost"
    );
    n as f64 / elapsed
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (samples, window) = if full {
        (400, Duration::from_secs(3))
    } else {
        (10, Duration::from_millis(50))
    };
    let base: PathBuf = std::env::var_os("WAGGLE_BENCH_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let dir = tempfile::Builder::new()
        .prefix("waggle-bench-rev-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "# Conditional writes ({}), directory {}, cores: {}",
        if full { "full" } else { "smoke" },
        dir.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    rt.block_on(async {
        let store = RedbStore::open(dir.path().join("side.db")).unwrap_or_else(|e| panic!("{e}"));
        let [raw, plain, conditional] = conditional_vs_plain(&store, dir.path(), samples).await;
        store.close().unwrap_or_else(|e| panic!("{e}"));
        println!("## redb, one writer: save_if at the current revision vs save ({samples} samples each)");
        println!(
            "| raw 4 KiB fdatasync p50 | save p50 | save_if p50 | save_if / save |\n|---:|---:|---:|---:|"
        );
        println!(
            "| {} | {} | {} | {:.2}× |",
            fmt_time(raw),
            fmt_time(plain),
            fmt_time(conditional),
            conditional / plain
        );
        println!();

        let mut rows = Vec::new();
        for tasks in [1, 64] {
            let memory = lost_update_workload(Arc::new(MemoryStore::new()), tasks, window).await;
            let redb = Arc::new(
                RedbStore::open(dir.path().join(format!("hot-{tasks}.db")))
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            let durable = lost_update_workload(Arc::clone(&redb), tasks, window).await;
            rows.push((tasks, memory, durable));
        }
        println!("## Lost-update workload: tasks incrementing one id through update ({window:?} each; none lost)");
        println!("| tasks | memory updates/s | redb updates/s |\n|---:|---:|---:|");
        for (tasks, memory, durable) in &rows {
            println!("| {tasks} | {memory:.0} | {durable:.0} |");
        }
        println!();
        println!("## Targets");
        let holds = conditional <= 1.1 * plain;
        println!(
            "- [{}] a conditional save costs ≤ 1.1 × a plain save on redb (one writer): {:.2}×",
            if holds { "x" } else { " " },
            conditional / plain
        );
        if !full {
            println!("\n(smoke run: too few samples for the target to mean anything)");
        }
    });
}
