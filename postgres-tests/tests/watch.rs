// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! PgStore's watchers against a real server: a watcher listens on a
//! connection of its own and lets go of it the moment the stream is
//! dropped; one whose cursor retention pruned is told so, not given a
//! silent gap; one on a second server hears of each write within
//! milliseconds.

#[cfg(waggle_postgres_server)]
mod with_server {
    use std::time::{Duration, Instant};

    use waggle_store::{Audited, Environment, Error, Repository, Revision, Runtime};
    use waggle_store_postgres_tests::{connect, server_url, unique_schema};

    async fn raw() -> tokio_postgres::Client {
        let url = server_url().unwrap_or_else(|| panic!("no server"));
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(connection);
        client
    }

    /// Connections listening on `schema`'s channel, as the server sees them.
    async fn listening(client: &tokio_postgres::Client, schema: &str) -> i64 {
        let channel: String = client
            .query_one(&format!("SELECT \"{schema}\".watch_channel()"), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' || $1 || '%'",
                &[&channel],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_on_a_second_server_hears_at_once_and_lets_go_when_dropped() {
        let schema = unique_schema("watch");
        let (writer, reader) = (connect(&schema).await, connect(&schema).await);
        let client = raw().await;
        let mut stream = reader.watch(Revision::new(0));
        let mut latencies = Vec::new();
        for i in 0..20 {
            let written = Instant::now();
            writer
                .save(&Environment::new(format!("w{i}"), "x", Runtime::Shell))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let next = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx));
            let change = tokio::time::timeout(Duration::from_secs(5), next)
                .await
                .unwrap_or_else(|_| panic!("no change within 5 s"));
            assert!(matches!(change, Some(Ok(c)) if c.id == format!("w{i}")));
            latencies.push(written.elapsed());
        }
        latencies.sort();
        println!(
            "watch, a second PgStore on loopback: median {:?}, slowest {:?} from a write's acknowledgement to the watcher (20 writes)",
            latencies[10], latencies[19]
        );
        // Notified, not found by the once-a-second look.
        assert!(latencies[10] < Duration::from_millis(500), "{latencies:?}");
        assert_eq!(
            listening(&client, &schema).await,
            1,
            "one connection listens"
        );
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(5);
        while listening(&client, &schema).await > 0 {
            assert!(
                Instant::now() < deadline,
                "the dropped watcher's connection is still open"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_behind_what_was_pruned_is_told() {
        let schema = unique_schema("watchp");
        let store = connect(&schema).await;
        for i in 0..3 {
            store
                .save(&Environment::new(format!("p{i}"), "x", Runtime::Shell))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        store.delete("p0").await.unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let removed = store
            .prune(Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(removed > 0);
        let mut stream = store.watch(Revision::new(0));
        let next = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx));
        match tokio::time::timeout(Duration::from_secs(5), next).await {
            Ok(Some(Err(Error::HistoryPruned { .. }))) => {}
            other => panic!("expected HistoryPruned, got {other:?}"),
        }
        let next = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx));
        assert!(next.await.is_none(), "the stream ends after the error");
    }
}

#[cfg(not(waggle_postgres_server))]
#[test]
#[ignore = "needs a PostgreSQL server: eval \"$(scripts/test-postgres start)\" sets WAGGLE_TEST_POSTGRES_URL"]
fn postgres_watch() {
    panic!("WAGGLE_TEST_POSTGRES_URL was not set when this was built");
}
