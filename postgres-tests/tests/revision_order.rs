// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! Two servers (two pools on one schema) write one id at once while a
//! reader on each watches its revision: it never goes down. Before schema
//! version 4 it did, dozens of times a minute, because an upsert took its
//! revision before waiting for the row.

#[cfg(waggle_postgres_server)]
mod with_server {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use waggle_store::{Environment, Error, Expected, Repository, Revisioned, Runtime};
    use waggle_store_postgres_tests::{connect, unique_schema};

    const WRITERS_PER_POOL: usize = 4;
    const RUN: Duration = Duration::from_secs(3);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn revisions_of_one_id_never_go_down_across_two_pools() {
        let schema = unique_schema("order");
        let pools = [
            Arc::new(connect(&schema).await),
            Arc::new(connect(&schema).await),
        ];
        let value = |tag: u64| {
            let mut e = Environment::new("hot", format!("v{tag}"), Runtime::Shell);
            e.ssh_port = (tag % 65_536) as u16;
            e
        };
        pools[0]
            .save(&value(0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let running = Arc::new(AtomicBool::new(true));
        let writes = Arc::new(AtomicU64::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for (p, pool) in pools.iter().enumerate() {
            for w in 0..WRITERS_PER_POOL {
                let (pool, running, writes) =
                    (Arc::clone(pool), Arc::clone(&running), Arc::clone(&writes));
                writers.spawn(async move {
                    let mut n = 0u64;
                    while running.load(Ordering::Relaxed) {
                        n += 1;
                        let tag = (p * 100 + w) as u64 * 1_000_000 + n;
                        match n % 8 {
                            // Mostly plain saves, as the defect needed.
                            0..=4 => pool.save(&value(tag)).await,
                            5 => match pool.find_revision("hot").await {
                                Ok(v) => pool
                                    .save_if(&value(tag), Expected::Revision(v.revision))
                                    .await
                                    .map(drop),
                                Err(e) => Err(e),
                            },
                            6 => pool.delete("hot").await,
                            _ => pool.save_if(&value(tag), Expected::Absent).await.map(drop),
                        }
                        .or_else(|e| match e {
                            Error::Conflict { .. } | Error::NotFound { .. } => Ok(()),
                            e => Err(e),
                        })
                        .unwrap_or_else(|e| panic!("pool {p}, writer {w}: {e}"));
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
        let mut readers = tokio::task::JoinSet::new();
        for (p, pool) in pools.iter().enumerate() {
            let (pool, running) = (Arc::clone(pool), Arc::clone(&running));
            readers.spawn(async move {
                let (mut last, mut reads, mut down) = (0u64, 0u64, 0u64);
                while running.load(Ordering::Relaxed) {
                    match pool.find_revision("hot").await {
                        Ok(v) => {
                            let r = v.revision.get();
                            if r < last {
                                down += 1;
                                eprintln!("pool {p}: read revision {r} after {last}");
                            }
                            last = last.max(r);
                            reads += 1;
                        }
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("pool {p}, reader: {e}"),
                    }
                }
                (reads, down)
            });
        }
        let started = Instant::now();
        tokio::time::sleep(RUN).await;
        running.store(false, Ordering::Relaxed);
        while let Some(done) = writers.join_next().await {
            done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        }
        let (mut reads, mut down) = (0, 0);
        while let Some(done) = readers.join_next().await {
            let (r, d) = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            reads += r;
            down += d;
        }
        println!(
            "revision order, two pools on one id for {:.1} s: {} writes, {reads} reads, a revision went down {down} times",
            started.elapsed().as_secs_f64(),
            writes.load(Ordering::Relaxed)
        );
        assert!(
            reads > 100,
            "the readers read only {reads} times: nothing was tested"
        );
        assert_eq!(down, 0, "an id's revision went down");
    }
}

#[cfg(not(waggle_postgres_server))]
#[test]
#[ignore = "needs a PostgreSQL server: eval \"$(scripts/test-postgres start)\" sets WAGGLE_TEST_POSTGRES_URL"]
fn postgres_revision_order() {
    panic!("WAGGLE_TEST_POSTGRES_URL was not set when this was built");
}
