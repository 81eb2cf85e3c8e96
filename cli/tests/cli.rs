// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! The `waggle-store` binary end to end, against temporary stores.

use std::path::Path;
use std::process::{Command, Output};

use waggle_store::{Environment, RedbStore, Repository, Revisioned, Runtime, Status, record};

fn cli(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waggle-store"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("WAGGLE_STORE_PATH")
        .output()
        .unwrap_or_else(|e| panic!("cannot run waggle-store: {e}"))
}

/// An environment as `show` and `list --json` print it: its fields and its
/// `revision`.
fn with_revision(mut json: serde_json::Value) -> (Environment, u64) {
    let revision = json
        .as_object_mut()
        .and_then(|o| o.remove("revision"))
        .and_then(|r| r.as_u64())
        .unwrap_or_else(|| panic!("no revision in {json}"));
    let env = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
    (env, revision)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A store with three environments in different states.
fn seeded(path: &Path) -> Vec<Environment> {
    rt().block_on(async {
        let store = RedbStore::open(path).unwrap_or_else(|e| panic!("{e}"));
        let mut envs = Vec::new();
        for (id, runtime, status) in [
            ("e1", Runtime::Python, Status::Running),
            ("e2", Runtime::Node, Status::Error),
            ("e3", Runtime::Shell, Status::Creating),
        ] {
            let mut e = Environment::new(id, format!("name {id}"), runtime);
            if status != Status::Creating {
                e.transition_to(status).unwrap_or_else(|e| panic!("{e}"));
            }
            store.save(&e).await.unwrap_or_else(|e| panic!("{e}"));
            envs.push(e);
        }
        store.close().unwrap_or_else(|e| panic!("{e}"));
        envs
    })
}

#[test]
fn read_commands() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("w.db");
    let envs = seeded(&path);

    let count = cli(&path, &["count"]);
    assert!(count.status.success(), "{}", stderr(&count));
    assert_eq!(stdout(&count).trim(), "3");

    let list = cli(&path, &["list"]);
    let text = stdout(&list);
    assert!(
        text.lines().next().unwrap_or_default().starts_with("ID"),
        "{text}"
    );
    assert!(
        text.contains("e1") && text.contains("e2") && text.contains("(3 environments)"),
        "{text}"
    );

    // The revisions the store holds, to find in `list --json` and `show`.
    let revisions: Vec<u64> = rt().block_on(async {
        let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let all = store.find_all_revisions().await.unwrap_or_default();
        store.close().unwrap_or_else(|e| panic!("{e}"));
        all.iter().map(|v| v.revision.get()).collect()
    });
    assert_eq!(revisions.len(), 3);
    let filtered = cli(&path, &["list", "--status", "running", "--json"]);
    let parsed: Vec<serde_json::Value> =
        serde_json::from_slice(&filtered.stdout).unwrap_or_else(|e| panic!("{e}"));
    let parsed: Vec<_> = parsed.into_iter().map(with_revision).collect();
    assert_eq!(parsed, vec![(envs[0].clone(), revisions[0])]);
    let by_runtime = cli(&path, &["list", "--runtime", "node", "--json"]);
    let parsed: Vec<serde_json::Value> =
        serde_json::from_slice(&by_runtime.stdout).unwrap_or_else(|e| panic!("{e}"));
    let parsed: Vec<_> = parsed.into_iter().map(with_revision).collect();
    assert_eq!(parsed, vec![(envs[1].clone(), revisions[1])]);

    let show = cli(&path, &["show", "e3"]);
    let one: serde_json::Value =
        serde_json::from_slice(&show.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(with_revision(one), (envs[2].clone(), revisions[2]));
    let missing = cli(&path, &["show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("\"nope\" not found"),
        "{}",
        stderr(&missing)
    );

    let schema_on_redb = cli(&path, &["--schema", "s", "count"]);
    assert_eq!(schema_on_redb.status.code(), Some(1));
    assert!(
        stderr(&schema_on_redb).contains("--schema applies to a PostgreSQL store"),
        "{}",
        stderr(&schema_on_redb)
    );

    let bad_status = cli(&path, &["list", "--status", "sleeping"]);
    assert_eq!(bad_status.status.code(), Some(2), "usage errors exit 2");
    let empty_store = cli(Path::new(""), &["count"]);
    assert_eq!(
        empty_store.status.code(),
        Some(2),
        "an empty --store is a usage error"
    );
}

#[test]
fn export_import_round_trip() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let src = dir.path().join("src.db");
    let envs = seeded(&src);
    let backup = dir.path().join("backup.jsonl");
    let out = cli(
        &src,
        &["export", "--out", backup.to_str().unwrap_or_default()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&backup).unwrap_or_default();
    assert_eq!(text.lines().count(), 3);
    let to_stdout = cli(&src, &["export"]);
    assert_eq!(
        stdout(&to_stdout),
        text,
        "export to stdout and to a file agree"
    );

    let dst = dir.path().join("dst.db");
    let dry = cli(
        &dst,
        &["import", backup.to_str().unwrap_or_default(), "--dry-run"],
    );
    assert!(stdout(&dry).contains("3 records valid"), "{}", stdout(&dry));
    assert!(!dst.exists(), "a dry run creates nothing");
    let imported = cli(&dst, &["import", backup.to_str().unwrap_or_default()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let back = rt().block_on(async {
        RedbStore::open(&dst)
            .unwrap_or_else(|e| panic!("{e}"))
            .find_all()
            .await
            .unwrap_or_default()
    });
    assert_eq!(back, envs, "export then import keeps every field");
    let again = cli(&dst, &["export"]);
    assert_eq!(stdout(&again), text, "and exports identically");

    // `import -` reads standard input: export piped into import.
    let piped = dir.path().join("piped.db");
    let mut import = Command::new(env!("CARGO_BIN_EXE_waggle-store"))
        .arg("--store")
        .arg(&piped)
        .args(["import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut input) = import.stdin.take() {
        use std::io::Write;
        input
            .write_all(stdout(&to_stdout).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let done = import.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(
        stdout(&done).contains("imported 3 records from -"),
        "{}",
        stdout(&done)
    );
    assert_eq!(
        stdout(&cli(&piped, &["export"])),
        text,
        "a pipe moves every record"
    );
}

#[test]
fn malformed_imports_write_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = String::from_utf8(
        record::encode(&Environment::new("ok", "n", Runtime::Shell)).unwrap_or_default(),
    )
    .unwrap_or_default();
    let other = good.replace("\"ok\"", "\"ok2\"");
    let cases = [
        ("bad JSON", format!("{good}\n{{not json\n"), "line 2"),
        (
            "invalid id",
            format!("{good}\n{}\n", good.replace("\"ok\"", "\"bad id\"")),
            "line 2",
        ),
        (
            "newer schema",
            format!(
                "{}\n",
                good.replace("\"schema_version\":1", "\"schema_version\":9")
            ),
            "line 1: record has schema version 9",
        ),
        (
            "duplicate id",
            format!("{good}\n{other}\n{good}\n"),
            "line 3: duplicate id \"ok\" (first on line 1)",
        ),
        ("empty file", String::new(), "holds no records"),
        (
            "blank line",
            format!("{good}\n\n{other}\n"),
            "line 2: empty line",
        ),
    ];
    for (case, content, says) in cases {
        let file = dir.path().join("in.jsonl");
        std::fs::write(&file, content).unwrap_or_else(|e| panic!("{e}"));
        let store = dir.path().join(format!("{}.db", case.replace(' ', "-")));
        let out = cli(&store, &["import", file.to_str().unwrap_or_default()]);
        assert_eq!(out.status.code(), Some(1), "case {case:?}");
        assert!(
            stderr(&out).contains(says),
            "case {case:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("in.jsonl"),
            "case {case:?}: names the file"
        );
        assert!(!store.exists(), "case {case:?}: nothing written");
    }
}

#[test]
fn missing_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("absent.db");
    for cmd in [&["list"][..], &["count"], &["show", "x"], &["export"]] {
        let out = cli(&path, cmd);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let err = stderr(&out);
        assert!(
            err.contains("absent.db") && err.contains("does not exist"),
            "{cmd:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(!path.exists());
}

#[test]
fn check_and_compact() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("w.db");
    seeded(&path);
    let check = cli(&path, &["check"]);
    assert!(check.status.success(), "{}", stdout(&check));
    assert!(stdout(&check).contains("integrity: ok") && stdout(&check).contains("records ok: 3"));
    // Break one record: check exits 3 and names it.
    put_raw(&path, b"e2", b"garbage");
    let check = cli(&path, &["check"]);
    assert_eq!(check.status.code(), Some(3), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("records corrupt: 1") && stdout(&check).contains("e2:"),
        "{}",
        stdout(&check)
    );
    let compact = cli(&path, &["compact"]);
    assert!(compact.status.success(), "{}", stderr(&compact));
    assert!(
        stdout(&compact).contains("bytes before"),
        "{}",
        stdout(&compact)
    );
}

#[test]
fn live_reads_beside_a_writer_and_writes_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("w.db");
    seeded(&path);
    rt().block_on(async {
        // This process plays the server: it holds the file open for writing.
        let server = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
        server
            .save(&Environment::new("live", "n", Runtime::Node))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let count = cli(&path, &["count"]);
        assert_eq!(stdout(&count).trim(), "4", "{}", stderr(&count));
        let show = cli(&path, &["show", "live"]);
        assert!(show.status.success(), "{}", stderr(&show));
        let check = cli(&path, &["check"]);
        assert!(
            stdout(&check).contains("integrity: skipped"),
            "{}",
            stdout(&check)
        );
        let file = dir.path().join("in.jsonl");
        std::fs::write(
            &file,
            record::encode(&Environment::new("x", "n", Runtime::Node)).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for cmd in [
            &["import", file.to_str().unwrap_or_default()][..],
            &["compact"],
        ] {
            let out = cli(&path, cmd);
            assert_eq!(out.status.code(), Some(1), "{cmd:?}");
            assert!(stderr(&out).contains("locked"), "{cmd:?}: {}", stderr(&out));
        }
    });
}

#[test]
fn demo_runs_on_a_temporary_store() {
    let out = Command::new(env!("CARGO_BIN_EXE_waggle-store"))
        .arg("demo")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("After the restart:") && text.contains("All 3 environments survived"),
        "{text}"
    );
}

#[test]
fn bench_runs_on_a_temporary_store_and_writes_json() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let report = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_waggle-store"))
        .args([
            "bench",
            "--records",
            "50",
            "--concurrency",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--json",
        ])
        .arg(&report)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("P99.9"), "{}", stdout(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["concurrency"], 4);
    assert_eq!(json["warmup_seconds"], 0.2);
    let ops = json["ops"].as_array().cloned().unwrap_or_default();
    let saves = ops
        .iter()
        .find(|o| o["op"] == "save")
        .unwrap_or_else(|| panic!("no save row: {json}"));
    assert!(saves["count"].as_u64().unwrap_or(0) > 0);
    assert!(saves["p50_us"].as_f64().unwrap_or(0.0) <= saves["p99_us"].as_f64().unwrap_or(0.0));
    assert!(json["redb_commits"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn bench_refuses_seconds_it_cannot_run_for() {
    for arg in [
        "--duration=-1",
        "--duration=inf",
        "--warmup=NaN",
        "--warmup=1e300",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_waggle-store"))
            .args(["bench", arg])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.status.code(), Some(2), "{arg}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("expected seconds"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        "demo", "list", "show", "count", "export", "import", "check", "compact", "bench",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_waggle-store"))
            .args([cmd, "--help"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success());
        assert!(stdout(&out).contains("Example: waggle-store"), "{cmd}");
    }
}

/// `history` and `changes` on a live store, read-only beside the writer
/// that holds it open (its latest writes still only in the journal): the
/// life of one environment as a table and as JSON, the store-wide changes
/// as JSON Lines resumable with --since, and an import named as such.
#[test]
fn history_and_changes_beside_a_live_writer() {
    use waggle_store::store::redb::RedbOptions;
    use waggle_store::{HistoryOptions, RevisionedExt};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("w.db");
    let rt = rt();
    let options = RedbOptions::default().history(HistoryOptions::default().origin("server-a"));
    let store = RedbStore::open_with(&path, options).unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        store
            .save(&Environment::new("env-7f3a", "analysis", Runtime::Python))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .transition("env-7f3a", Status::Running)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .touch("env-7f3a")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .save(&Environment::new("other", "x", Runtime::Shell))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .transition("env-7f3a", Status::Destroying)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .delete("env-7f3a")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });

    let table = cli(&path, &["history", "env-7f3a"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    for expected in [
        "REVISION",
        "ORIGIN",
        "server-a",
        "created (creating)",
        "creating → running",
        "touched",
        "running → destroying",
        "deleted",
        "(5 changes; deleted)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    let json = cli(&path, &["history", "env-7f3a", "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let life: Vec<serde_json::Value> =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = life.iter().filter_map(|c| c["kind"].as_str()).collect();
    assert_eq!(kinds, ["saved", "saved", "saved", "saved", "deleted"]);
    assert!(life.iter().all(|c| c["origin"] == "server-a"));
    assert!(life[4]["environment"].is_null());

    let lines = |o: &Output| -> Vec<serde_json::Value> {
        stdout(o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    };
    let all = cli(&path, &["changes"]);
    assert!(all.status.success(), "{}", stderr(&all));
    let all = lines(&all);
    assert_eq!(all.len(), 6, "every change, one JSON object a line");
    let revisions: Vec<u64> = all.iter().filter_map(|c| c["revision"].as_u64()).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let first_two = lines(&cli(&path, &["changes", "--limit", "2"]));
    assert_eq!(first_two, all[..2]);
    let since = revisions[1].to_string();
    let rest = lines(&cli(&path, &["changes", "--since", &since]));
    assert_eq!(rest, all[2..], "resuming from the last revision seen");
    let future = lines(&cli(
        &path,
        &["changes", "--since-time", "2999-01-01T00:00:00Z"],
    ));
    assert!(future.is_empty());
    let bad = cli(&path, &["changes", "--since-time", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "a bad time is a usage error");

    // An import is named as the writer of what it restores.
    drop(store);
    let backup = dir.path().join("backup.jsonl");
    let out = cli(&path, &["export", "--out", backup.to_str().unwrap_or("")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restored = dir.path().join("restored.db");
    let out = cli(&restored, &["import", backup.to_str().unwrap_or("")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let life = cli(&restored, &["history", "other", "--json"]);
    let life: Vec<serde_json::Value> =
        serde_json::from_slice(&life.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(life.len(), 1);
    assert_eq!(life[0]["origin"], "import");

    let check = cli(&restored, &["check"]);
    assert!(check.status.success(), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("history: 1 ids' latest change matches what is stored, 0 do not"),
        "{}",
        stdout(&check)
    );
}

/// `changes --follow` beside a live writer: it prints what is there, then
/// each new change within moments of its write, one JSON object a line;
/// Ctrl-C ends it with success, and so does a reader that goes away.
#[test]
fn changes_follow_beside_a_live_writer_ends_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("w.db");
    let rt = rt();
    let store = RedbStore::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let save = |id: &str| {
        rt.block_on(store.save(&Environment::new(id, "x", Runtime::Shell)))
            .unwrap_or_else(|e| panic!("{e}"));
    };
    save("before-1");
    save("before-2");
    let follow = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_waggle-store"))
            .arg("--store")
            .arg(&path)
            .args(["changes", "--follow"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return; // the test stopped reading: the pipe closes
                }
            }
        });
        (child, rx)
    };
    let id_of = |line: &str| -> String {
        let change: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        change["id"].as_str().unwrap_or_default().to_owned()
    };
    let next = |rx: &mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no line from changes --follow: {e}"))
    };

    let (mut child, rx) = follow();
    assert_eq!(id_of(&next(&rx)), "before-1");
    assert_eq!(id_of(&next(&rx)), "before-2");
    for i in 0..3 {
        let id = format!("live-{i}");
        let written = Instant::now();
        save(&id);
        assert_eq!(id_of(&next(&rx)), id);
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "{:?}",
            written.elapsed()
        );
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(interrupted.success());
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "Ctrl-C: {status}");

    // The reader goes away: the next change written ends it, cleanly.
    let (mut child, rx) = follow();
    assert_eq!(id_of(&next(&rx)), "before-1");
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        save(&format!("after-{}", deadline.elapsed().as_nanos()));
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "changes --follow kept running with nobody reading"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a closed pipe: {status}");
}

/// `bench --store` on a real redb store measures a scratch store beside it
/// and leaves the store byte for byte as it was, and nothing behind.
#[test]
fn bench_beside_a_real_store_touches_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("real.db");
    seeded(&path);
    let files = |dir: &Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .map_while(Result::ok)
            .map(|f| {
                (
                    f.file_name().to_string_lossy().into_owned(),
                    std::fs::read(f.path()).unwrap_or_else(|e| panic!("{e}")),
                )
            })
            .collect()
    };
    let before = files(dir.path());
    let out = cli(
        &path,
        &[
            "bench",
            "--records",
            "50",
            "--concurrency",
            "4",
            "--duration",
            "0.3",
            "--warmup",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("scratch store beside"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("scratch store beside"),
        "{}",
        stdout(&out)
    );
    assert!(
        files(dir.path()) == before,
        "the bench changed or left files beside the store"
    );
    assert_eq!(stdout(&cli(&path, &["count"])).trim(), "3");
}

/// A record key damaged to bytes that are not UTF-8 (its page checksum
/// made anew, so only the key is wrong): `check` lists it and exits 3,
/// `list` fails naming it; no panic text on the terminal.
#[test]
fn a_damaged_key_is_listed_never_a_panic() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("w.db");
    seeded(&path);
    put_raw(&path, b"e\xff9", b"anything");
    let check = cli(&path, &["check"]);
    assert_eq!(check.status.code(), Some(3), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("records corrupt: 1") && stdout(&check).contains("key is damaged"),
        "{}",
        stdout(&check)
    );
    let list = cli(&path, &["list"]);
    assert_eq!(list.status.code(), Some(1), "{}", stdout(&list));
    assert!(
        stderr(&list).contains("key is damaged"),
        "{}",
        stderr(&list)
    );
    for out in [&check, &list] {
        assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
    }
}

/// Writes `value` under `key` into a closed store's records table, behind
/// the store's back (its page checksums made anew, as redb does).
fn put_raw(path: &Path, key: &[u8], value: &[u8]) {
    let db = redb::Database::open(path).unwrap_or_else(|e| panic!("{e}"));
    let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
    {
        let t: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("waggle_records");
        let mut t = txn.open_table(t).unwrap_or_else(|e| panic!("{e}"));
        t.insert(key, value).unwrap_or_else(|e| panic!("{e}"));
    }
    txn.commit().unwrap_or_else(|e| panic!("{e}"));
}
