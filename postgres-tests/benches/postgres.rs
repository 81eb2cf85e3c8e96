// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! PgStore against the floor under it: a bare `tokio-postgres` prepared
//! upsert on the same server, measured side by side (each sample one bare
//! upsert, then one save), then throughput at 1 and 64 writers, and
//! find_by_id and count at 100,000 records. Prints Markdown; needs
//! `WAGGLE_TEST_POSTGRES_URL` (`eval "$(scripts/test-postgres start)"`).
//!
//! `cargo bench -p waggle-store-postgres-tests` runs it in full;
//! `cargo test --benches` a quick smoke pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use waggle_store::store::postgres::{PgOptions, PgStore};
use waggle_store::{Audited, Environment, HistoryOptions, Repository, Retention, Runtime, record};
use waggle_store_postgres_tests::{server_url, unique_schema};

fn env(i: usize) -> Environment {
    let mut e = Environment::new(
        format!("env-{i:08}"),
        format!("environment number {i}"),
        Runtime::Python,
    );
    e.ssh_port = (2000 + i % 60_000) as u16;
    e.capabilities.path = "/usr/local/bin:/usr/bin:/bin".into();
    e.capabilities.python_cmd = Some("python3".into());
    e
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn us(secs: f64) -> String {
    format!("{:.1} µs", secs * 1e6)
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

async fn store(url: &str, tag: &str) -> Arc<PgStore> {
    store_with(url, tag, Retention::default()).await
}

/// A store in a schema of its own whose history is kept as `retention`
/// says (recording is a schema's).
async fn store_with(url: &str, tag: &str, retention: Retention) -> Arc<PgStore> {
    let options = PgOptions::default()
        .schema(unique_schema(tag))
        .pool_size(64)
        .history(HistoryOptions::default().retention(retention));
    Arc::new(
        PgStore::connect(url, options)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Writes per second: a task per writer, each writing its own 50 ids with
/// `write` until `window` is over.
async fn writes_per_second<W, F, Fut>(writers: Vec<W>, window: Duration, write: F) -> f64
where
    W: Send + Sync + 'static,
    F: Fn(Arc<W>, Environment) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let deadline = Instant::now() + window;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, writer) in writers.into_iter().enumerate() {
        let (writer, write) = (Arc::new(writer), write.clone());
        tasks.spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                write(Arc::clone(&writer), env(w * 50 + n % 50)).await;
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap_or(0);
    }
    total as f64 / window.as_secs_f64()
}

/// Saves per second with `writers` tasks sharing `store`.
async fn throughput(store: &Arc<PgStore>, writers: usize, window: Duration) -> f64 {
    let handles = (0..writers).map(|_| Arc::clone(store)).collect();
    writes_per_second(handles, window, |store, e| async move {
        store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
    })
    .await
}

/// Upserts per second with `writers` bare `tokio-postgres` clients, each on
/// its own connection, into `table`: the machine's ceiling for the same
/// workload.
async fn bare_throughput(url: &str, table: &str, writers: usize, window: Duration) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..writers {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(connection);
        let upsert = client
            .prepare(&format!(
                "INSERT INTO {table} (id, record) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        clients.push((client, upsert));
    }
    writes_per_second(clients, window, |client, e| async move {
        let text = String::from_utf8(record::encode(&e).unwrap_or_default()).unwrap_or_default();
        let (client, upsert) = &*client;
        client
            .execute(upsert, &[&e.id, &text])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    })
    .await
}

/// Each sample: the bare prepared upsert of one id, then a save of the
/// same value by each store in turn. The medians, the bare one first.
async fn side_by_side(
    client: &tokio_postgres::Client,
    upsert: &tokio_postgres::Statement,
    stores: &[&PgStore],
    ids: impl Iterator<Item = usize>,
) -> Vec<f64> {
    let mut times = vec![Vec::new(); stores.len() + 1];
    for i in ids {
        let e = env(i);
        let text = String::from_utf8(record::encode(&e).unwrap_or_default()).unwrap_or_default();
        let t = Instant::now();
        client
            .execute(upsert, &[&e.id, &text])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        times[0].push(t.elapsed().as_secs_f64());
        for (store, samples) in stores.iter().zip(&mut times[1..]) {
            let t = Instant::now();
            store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
            samples.push(t.elapsed().as_secs_f64());
        }
    }
    times.into_iter().map(median).collect()
}

/// Saves ids `0..n` with `writers` tasks (each holds a connection: the
/// server takes 100 in all).
async fn fill(store: &Arc<PgStore>, n: usize, writers: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..writers {
        let store = Arc::clone(store);
        tasks.spawn(async move {
            for i in (chunk..n).step_by(writers) {
                store.save(&env(i)).await.unwrap_or_else(|e| panic!("{e}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }
}

fn main() {
    let Some(url) = server_url() else {
        println!("no WAGGLE_TEST_POSTGRES_URL: start a server with scripts/test-postgres");
        return;
    };
    let full = std::env::args().any(|a| a == "--bench");
    let (samples, window, rounds, big) = if full {
        (400, Duration::from_secs(2), 3, 100_000)
    } else {
        (20, Duration::from_millis(200), 1, 500)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        println!(
            "# PgStore benchmark ({}), cores: {}",
            if full { "full" } else { "smoke" },
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        // The floor: a bare prepared upsert on its own connection and table.
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(connection);
        let bare_schema = unique_schema("bare");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA \"{bare_schema}\"; CREATE TABLE \"{bare_schema}\".t \
                 (id text COLLATE \"C\" PRIMARY KEY, record text NOT NULL)"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let upsert = client
            .prepare(&format!(
                "INSERT INTO \"{bare_schema}\".t (id, record) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record"
            ))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Unencrypted like the bare client, for a like-for-like floor; and
        // the same over TLS, to show what encryption costs.
        let plain = with_param(&url, "sslmode=disable");
        let pg = store(&plain, "bench").await;
        fill(&pg, 1_000, 4).await;
        let tls = store(&with_param(&url, "sslmode=require"), "bench-tls").await;
        let off = store_with(&plain, "bench-off", Retention::Off).await;
        fill(&off, 1_000, 4).await;
        let upserts = side_by_side(
            &client,
            &upsert,
            &[&pg, &tls, &off],
            (0..samples).map(|k| k % 1_000),
        )
        .await;
        drop(tls);
        // New ids: an insert, which also moves the count slot (a trigger
        // the bare table does not have).
        let inserts = side_by_side(&client, &upsert, &[&pg], (0..samples).map(|k| 1_000_000 + k)).await;
        let (bare, ours, ours_tls, ours_off) = (upserts[0], upserts[1], upserts[2], upserts[3]);
        let (bare_new, ours_new) = (inserts[0], inserts[1]);
        println!("## Save vs a bare prepared upsert, side by side ({samples} samples each)");
        println!(
            "| bare upsert p50 | PgStore save p50 | save / bare | PgStore over TLS p50 | TLS / bare |\n|---:|---:|---:|---:|---:|"
        );
        println!(
            "| {} | {} | {:.2}× | {} | {:.2}× |",
            us(bare),
            us(ours),
            ours / bare,
            us(ours_tls),
            ours_tls / bare
        );
        println!();
        println!("## Save with the history vs without, side by side ({samples} samples each)");
        println!("| save, history on, p50 | save, history off, p50 | on / off |\n|---:|---:|---:|");
        println!("| {} | {} | {:.2}× |", us(ours), us(ours_off), ours / ours_off);
        println!();
        println!("## Save of a new id vs a bare insert ({samples} samples each)");
        println!("| bare insert p50 | PgStore save p50 | save / bare |\n|---:|---:|---:|");
        println!(
            "| {} | {} | {:.2}× |",
            us(bare_new),
            us(ours_new),
            ours_new / bare_new
        );
        println!();

        // One pool at a time (the server takes 100 connections), a new
        // schema each round, history on and off in turn; medians, as one
        // pair of runs on this machine can differ by a third.
        drop(pg);
        drop(off);
        let mut runs: [[Vec<f64>; 2]; 2] = Default::default();
        for _ in 0..rounds {
            for (k, retention) in [Retention::default(), Retention::Off].into_iter().enumerate() {
                let st = store_with(&plain, "tp", retention).await;
                runs[k][0].push(throughput(&st, 1, window).await);
                runs[k][1].push(throughput(&st, 64, window).await);
            }
        }
        let [[on_one, on_many], [off_one, off_many]] = runs;
        let (one, many) = (median(on_one), median(on_many));
        let (off_one, off_many) = (median(off_one), median(off_many));
        let bare_table = format!("\"{bare_schema}\".t");
        let bare_one = bare_throughput(&url, &bare_table, 1, window).await;
        let bare_many = bare_throughput(&url, &bare_table, 64, window).await;
        println!("## Save throughput ({window:?} each; PgStore: medians of {rounds} rounds), beside bare clients on their own connections");
        println!(
            "| writers | PgStore saves/s | vs 1 writer | bare upserts/s | vs 1 writer |\n|---:|---:|---:|---:|---:|"
        );
        println!("| 1 | {one:.0} | 1.0× | {bare_one:.0} | 1.0× |");
        println!(
            "| 64 | {many:.0} | {:.1}× | {bare_many:.0} | {:.1}× |",
            many / one,
            bare_many / bare_one
        );
        println!();
        println!("## History on vs off: saves/s (medians of {rounds} alternating rounds of {window:?})");
        println!("| history | 1 writer | 64 writers | 64 / 1 |\n|---|---:|---:|---:|");
        println!("| on | {one:.0} | {many:.0} | {:.1}× |", many / one);
        println!("| off | {off_one:.0} | {off_many:.0} | {:.1}× |", off_many / off_one);
        println!();

        // Watch latency: a second pool on the schema watches; each write's
        // acknowledgement to the watcher yielding it.
        let schema = unique_schema("watch");
        let open_on = |schema: String| {
            let plain = plain.clone();
            async move {
                PgStore::connect(&plain, PgOptions::default().schema(schema).pool_size(4))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let (writer, reader) = (open_on(schema.clone()).await, open_on(schema).await);
        let mut stream = reader.watch(waggle_store::Revision::new(0));
        let mut seen = Vec::new();
        for i in 0..samples.min(200) {
            let e = env(i);
            writer.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
            let acked = Instant::now();
            loop {
                let change = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx))
                    .await
                    .unwrap_or_else(|| panic!("the watcher ended"))
                    .unwrap_or_else(|e| panic!("{e}"));
                if change.id == e.id {
                    break;
                }
            }
            seen.push(acked.elapsed().as_secs_f64());
            tokio::time::sleep(Duration::from_millis(2 + (i as u64 * 7) % 5)).await;
        }
        drop(stream);
        let n = seen.len();
        seen.sort_by(f64::total_cmp);
        let p99 = seen[((n as f64 - 1.0) * 0.99).round() as usize];
        println!("## Watch: a write's acknowledgement to a watcher on a second pool ({n} writes)");
        println!("| p50 | p99 |\n|---:|---:|");
        println!("| {} | {} |", us(median(seen)), us(p99));
        println!();

        let at = store(&plain, "big").await;
        let started = Instant::now();
        fill(&at, big, 64).await;
        let filled = started.elapsed();
        let mut finds = Vec::new();
        for k in 0..samples {
            let id = env((k * 7919) % big).id;
            let t = Instant::now();
            at.find_by_id(&id).await.unwrap_or_else(|e| panic!("{e}"));
            finds.push(t.elapsed().as_secs_f64());
        }
        let mut counts = Vec::new();
        for _ in 0..(samples / 10).max(5) {
            let t = Instant::now();
            let n = at.count().await.unwrap_or_else(|e| panic!("{e}"));
            counts.push(t.elapsed().as_secs_f64());
            assert_eq!(n, big);
        }
        println!("## At {big} records (filled by 64 writers in {filled:.1?})");
        println!("| operation | p50 |\n|---|---:|");
        println!("| find_by_id | {} |", us(median(finds)));
        println!("| count (exact: 64 trigger-kept slots) | {} |", us(median(counts)));
        println!();
        println!("## Targets");
        for (what, holds) in [
            (
                format!("save p50 ≤ 1.2 × the bare upsert: {:.2}×", ours / bare),
                ours <= 1.2 * bare,
            ),
            (
                format!(
                    "a save with the history ≤ 1.2 × one without: {:.2}×",
                    ours / ours_off
                ),
                ours <= 1.2 * ours_off,
            ),
            (
                format!(
                    "64 writers keep their scaling with the history: {:.1}× one writer (off: {:.1}×)",
                    many / one,
                    off_many / off_one
                ),
                many / one >= 0.85 * (off_many / off_one),
            ),
            (
                format!(
                    "64 writers ≥ 10 × one writer: {:.1}× (bare clients on this machine: {:.1}×)",
                    many / one,
                    bare_many / bare_one
                ),
                many >= 10.0 * one,
            ),
        ] {
            println!("- [{}] {what}", if holds { "x" } else { " " });
        }
    });
}
