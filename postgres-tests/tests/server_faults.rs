// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The PostgreSQL server stopped (`pg_ctl stop -m immediate`, a crash of
//! the server) while writers run, then started again: every acknowledged
//! write is there, every failure is a typed error within the timeout (no
//! hang), and the same store works again without being reopened. Alone in
//! its test binary: it stops the server the other tests use.

#[cfg(waggle_postgres_server)]
mod with_server {
    use std::collections::BTreeSet;
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use waggle_store::store::postgres::{PgOptions, PgStore};
    use waggle_store::{Audited, Environment, Repository, Runtime};
    use waggle_store_postgres_tests::{server_url, unique_schema};

    /// `pg_ctl` on the test server's data directory, as its owner.
    fn pg_ctl(args: &[&str]) {
        let dir = std::env::var("WAGGLE_TEST_POSTGRES_DIR")
            .unwrap_or_else(|_| panic!("WAGGLE_TEST_POSTGRES_DIR is not set"));
        let pg_ctl =
            std::env::var("WAGGLE_TEST_POSTGRES_PG_CTL").unwrap_or_else(|_| "pg_ctl".into());
        let data = format!("{dir}/data");
        let mut cmd = if std::env::var("USER").as_deref() == Ok("root")
            || std::fs::metadata("/proc/self").is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            }) {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        // The server must not hold this process's output open: its own log.
        let status = cmd
            .args(["-D", &data, "-w", "-l", &format!("{dir}/server.log")])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
        assert!(status.success(), "pg_ctl {args:?}: {status}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_crash_loses_no_acknowledged_write_and_the_pool_recovers() {
        let url = server_url().unwrap_or_default();
        let timeout = Duration::from_secs(2);
        let options = PgOptions::default()
            .schema(unique_schema("crash"))
            .pool_size(8)
            .connect_timeout(timeout)
            .statement_timeout(timeout);
        let store = Arc::new(
            PgStore::connect(&url, options)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let (failures, hangs) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0)));
        let restarted = Arc::new(Mutex::new(None::<Instant>));
        let ok_after_restart = Arc::new(Mutex::new(0));
        // A watcher across the crash: it must end with every change once.
        let watched = Arc::new(Mutex::new(Vec::new()));
        let watcher = {
            let (store, watched) = (Arc::clone(&store), Arc::clone(&watched));
            tokio::spawn(async move {
                let mut changes = store.watch(waggle_store::Revision::new(0));
                while let Some(change) =
                    std::future::poll_fn(|cx| changes.as_mut().poll_next(cx)).await
                {
                    match change {
                        Ok(change) => watched
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(change),
                        Err(e) => panic!("the watcher gave up: {e}"),
                    }
                }
            })
        };
        let mut writers = Vec::new();
        for w in 0..8 {
            let (store, acked, failures, hangs, restarted, ok_after_restart) = (
                Arc::clone(&store),
                Arc::clone(&acked),
                Arc::clone(&failures),
                Arc::clone(&hangs),
                Arc::clone(&restarted),
                Arc::clone(&ok_after_restart),
            );
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let since_restart = *restarted.lock().unwrap_or_else(|e| e.into_inner());
                    if since_restart.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
                        break;
                    }
                    let id = format!("w{w}-{n}");
                    let env = Environment::new(id.clone(), "crash test", Runtime::Shell);
                    // The store's own timeouts bound every call; this one
                    // only catches a hang past them.
                    match tokio::time::timeout(timeout * 4, store.save(&env)).await {
                        Ok(Ok(())) => {
                            acked.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
                            if since_restart.is_some() {
                                *ok_after_restart.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                            }
                        }
                        Ok(Err(e)) => failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(e.to_string()),
                        Err(_) => *hangs.lock().unwrap_or_else(|e| e.into_inner()) += 1,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
        tokio::task::spawn_blocking(|| pg_ctl(&["stop", "-m", "immediate"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::spawn_blocking(|| pg_ctl(&["restart"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        *restarted.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        for w in writers {
            w.await.unwrap_or_else(|e| panic!("{e}"));
        }
        let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let hangs = *hangs.lock().unwrap_or_else(|e| e.into_inner());
        let after = *ok_after_restart.lock().unwrap_or_else(|e| e.into_inner());
        // Every acknowledged write is there, read through the same store.
        let stored: BTreeSet<String> = store
            .find_all()
            .await
            .unwrap_or_else(|e| panic!("find_all after the restart: {e}"))
            .into_iter()
            .map(|e| e.id)
            .collect();
        let lost: Vec<&String> = acked.difference(&stored).collect();
        // The history, followed from the start: one change per stored
        // record (each acknowledged save among them), none for a write
        // that did not land, each once.
        let mut changes = Vec::new();
        let mut cursor = waggle_store::Revision::new(0);
        loop {
            let page = store
                .changes(cursor, 500)
                .await
                .unwrap_or_else(|e| panic!("changes after the restart: {e}"));
            let Some(last) = page.last() else { break };
            cursor = last.revision;
            changes.extend(page);
        }
        let changed: BTreeSet<String> = changes.iter().map(|c| c.id.clone()).collect();
        // The watcher catches up on its own (it rides out the restart).
        let deadline = Instant::now() + Duration::from_secs(30);
        while watched.lock().unwrap_or_else(|e| e.into_inner()).len() < changes.len()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        watcher.abort();
        let watched = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(
            watched == changes,
            "the watcher across the restart saw {} changes, the history holds {} (repeated or missing)",
            watched.len(),
            changes.len()
        );
        let missing: Vec<&String> = acked.difference(&changed).collect();
        let unlanded: Vec<&String> = changed.difference(&stored).collect();
        let report = store.check().await.unwrap_or_else(|e| panic!("check: {e}"));
        println!(
            "server crash: {} saves acknowledged ({before} before the stop, {after} after the restart), {} refused with a typed error (first: {}), hangs: {hangs}, acknowledged writes lost: {}; history: {} changes, acknowledged missing {}, without their write {}, repeated {}; a watcher across the restart: {} changes, each once",
            acked.len(),
            failures.len(),
            failures.first().map_or("none", String::as_str),
            lost.len(),
            changes.len(),
            missing.len(),
            unlanded.len(),
            changes.len() - changed.len(),
            watched.len()
        );
        assert!(
            missing.is_empty(),
            "acknowledged writes missing from the history: {missing:?}"
        );
        assert!(
            unlanded.is_empty(),
            "changes of writes that did not land: {unlanded:?}"
        );
        assert_eq!(changes.len(), changed.len(), "a change was returned twice");
        assert!(report.is_ok(), "check after the restart: {report:?}");
        assert!(before > 0, "nothing was written before the stop");
        assert!(
            !failures.is_empty(),
            "the stop caused no failure: was it stopped?"
        );
        assert_eq!(hangs, 0, "calls hung past the timeout");
        assert!(after > 0, "the store did not work again after the restart");
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    }
}

#[cfg(not(waggle_postgres_server))]
#[test]
#[ignore = "needs a PostgreSQL server: eval \"$(scripts/test-postgres start)\" sets WAGGLE_TEST_POSTGRES_URL"]
fn postgres_server_faults() {
    panic!("WAGGLE_TEST_POSTGRES_URL was not set when this was built");
}
